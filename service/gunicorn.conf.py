"""gunicorn settings for `make run` and the container: single-threaded workers that keep
connections alive (service/worker.py), one BLAS thread each."""
import os
import shutil
import signal
import tempfile
from pathlib import Path

# numpy reads these when it is first imported, which happens after this file (in the master:
# preload_app)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")



def _seed_numba_cache(env=os.environ) -> None:
    """numba writes compiled kernels to NUMBA_CACHE_DIR, which must be writable (a tmpfs in
    docker-compose's read-only container). The image compiles them once at build time into
    NUMBA_CACHE_SEED; copied here, before the master imports the app, a container starts in
    about a second instead of compiling for ~20 s."""
    seed, target = env.get("NUMBA_CACHE_SEED"), env.get("NUMBA_CACHE_DIR")
    if seed and target and os.path.isdir(seed) and not os.path.exists(target):
        shutil.copytree(seed, target)


_seed_numba_cache()

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# one request at a time per worker, as sync workers, with connections kept alive between
# requests (service/worker.py)
worker_class = "service.worker.KeepAliveWorker"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# idle seconds a kept-alive connection stays open; nginx (deploy/nginx.conf) closes its own
# upstream connections sooner, so it never reuses one gunicorn is closing
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
wsgi_app = "service:create_app()"
# the app is imported once in the master and forked: a worker that dies is replaced in
# milliseconds instead of re-importing numpy, pydantic and flask (about a second on a busy core)
preload_app = True
# gunicorn's control socket lives at one path per user ($HOME/.gunicorn): several servers on a
# host (replicas, tests) would fight over it, and the image's home is read-only. Not used here.
control_socket_disable = True

# prometheus-client multiprocess mode: each worker writes its samples under this directory and
# /metrics aggregates them. Set before the workers import prometheus_client (they inherit it).
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rnn-metrics-")


def on_starting(server):
    # samples left by an earlier run would be counted again: start from an empty directory
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def on_exit(server):
    if _OWN_METRICS_DIR:            # a directory this file made is removed with the server
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # SIGTERM: /readyz answers 503 from now on, then gunicorn's own handler stops the worker
    # gracefully (the request in flight finishes)
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        from service import lifecycle
        lifecycle.begin_shutdown()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


def worker_int(worker):
    from service import lifecycle
    lifecycle.begin_shutdown()


def worker_exit(server, worker):
    from service import lifecycle
    lifecycle.begin_shutdown()
