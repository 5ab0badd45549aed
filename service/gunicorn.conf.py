"""gunicorn settings for `make run` and the container: sync workers, one BLAS thread each."""
import os

# numpy reads these when it is first imported, which happens in the workers, after this file
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
wsgi_app = "service:create_app()"


def worker_int(worker):
    from service import lifecycle
    lifecycle.begin_shutdown()


def worker_exit(server, worker):
    from service import lifecycle
    lifecycle.begin_shutdown()
