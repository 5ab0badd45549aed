# The API image: gunicorn serving service:create_app() with service/gunicorn.conf.py.
# Build stage: pinned dependencies into a virtual environment (compilers stay out of the image).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# Runtime stage: the venv and the code, run as an unprivileged user.
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=2
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init --no-create-home \
       --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY schemas/ schemas/
COPY service/ service/
# numba's compiled kernels, built once here; gunicorn.conf.py copies them into NUMBA_CACHE_DIR
RUN NUMBA_CACHE_DIR=/opt/numba-cache python -c "import service.engine.fused, service.engine.gradcheck_kernels, service.engine.sequence, service.engine.gradcheck_cells"
ENV NUMBA_CACHE_SEED=/opt/numba-cache
COPY examples/ examples/
COPY openapi.yaml pyproject.toml ./
USER 10001:10001
EXPOSE 8000
# no curl in a slim image: the standard library asks /readyz (503 while shutting down)
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["gunicorn", "-c", "service/gunicorn.conf.py"]
