"""Prometheus metrics (GET /metrics) and one structured JSON log line per request.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set up in gunicorn.conf.py before any worker imports
prometheus_client) makes every worker write its samples to files that /metrics aggregates, so any
worker answers for all of them. Without it (Flask's test client, `flask run`) the ordinary
single-process registry is used.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, multiprocess)

from .jsonio import dumps

SIZES = ("T", "H", "D", "N")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = tuple(float(2 ** k) for k in range(15))          # 1 … 16,384

REQUESTS = Counter("rnn_http_requests_total", "HTTP requests answered",
                   ("method", "endpoint", "status"))
LATENCY = Histogram("rnn_http_request_duration_seconds", "Time from request start to response",
                    ("method", "endpoint", "status"), buckets=LATENCY_BUCKETS)
COMPUTE = Histogram("rnn_compute_seconds",
                    "Time from a validated problem to the response (engine and serialisation)",
                    ("endpoint", "status"), buckets=LATENCY_BUCKETS)
PROBLEM_SIZE = Histogram("rnn_problem_size", "Problem sizes of validated requests (dim: T, H, D, N)",
                         ("endpoint", "dim"), buckets=SIZE_BUCKETS)

bp = Blueprint("observability", __name__)
log = logging.getLogger("service.access")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (gunicorn's, or a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_access_log() -> None:
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False            # gunicorn's error log must not repeat each line


def registry():
    """The registry to expose: every worker's files under gunicorn, this process's otherwise."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return reg


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(registry()), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Cache-Control": "no-store"})


def mark_compute_start(sizes: dict) -> None:
    """Called once a problem has passed validation: its sizes are known, the work starts now."""
    g.sizes = {k: int(v) for k, v in sizes.items()}
    g.compute_started = time.perf_counter()


def _endpoint() -> str:
    # the route pattern, never the raw path: unknown paths must not create new label values
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _record(response):
    now = time.perf_counter()
    started = g.get("request_started", now)
    endpoint, status, method = _endpoint(), str(response.status_code), request.method
    REQUESTS.labels(method, endpoint, status).inc()
    LATENCY.labels(method, endpoint, status).observe(now - started)
    sizes = g.get("sizes")
    if sizes:
        for dim in SIZES:
            if dim in sizes:
                PROBLEM_SIZE.labels(endpoint, dim).observe(sizes[dim])
        COMPUTE.labels(endpoint, status).observe(now - g.compute_started)
    line = {"ts": round(time.time(), 3), "request_id": g.get("request_id"), "method": method,
            "endpoint": endpoint, "path": request.path, "status": response.status_code,
            "duration_ms": round((now - started) * 1000, 3),
            "bytes_in": request.content_length, "pid": os.getpid()}
    if sizes:
        line.update(sizes)
    log.info(dumps(line).decode())
    return response


def init_app(app: Flask) -> None:
    _setup_access_log()

    @app.before_request
    def start_clock():
        g.request_started = time.perf_counter()

    app.after_request(_record)
    app.register_blueprint(bp)
