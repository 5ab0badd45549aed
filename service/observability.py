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
import uuid

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter,
                               Histogram, generate_latest, multiprocess)

from .jsonio import dumps

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WORK_BUCKETS = tuple(10.0 ** k for k in range(3, 13))            # 1e3 … 1e12 multiply-adds

REQUESTS = Counter("rnn_http_requests_total", "HTTP requests answered",
                   ("method", "endpoint", "status"))
LATENCY = Histogram("rnn_http_request_duration_seconds", "Time from request start to response",
                    ("method", "endpoint", "status"), buckets=LATENCY_BUCKETS)
COMPUTE = Histogram("rnn_compute_seconds",
                    "Time from a validated problem to the response (engine and serialisation)",
                    ("endpoint", "status"), buckets=LATENCY_BUCKETS)
# One histogram of the estimated work rather than one per size (T, H, D, N): the unit of the
# budgets (RNN_MAX_WORK), and one observation a request instead of four (~5 µs each in
# multiprocess mode). The sizes themselves are on every access line.
# Requests by API key name (RNN_API_KEYS_FILE; "anonymous" when the service is open or no valid
# key was sent): a counter of its own, so that the series of the two metrics above keep their
# labels. The names come from the keys file, a bounded set; never the key or the header.
KEY_REQUESTS = Counter("rnn_http_requests_by_key_total",
                       "HTTP requests answered, by the name of the API key that sent them",
                       ("key", "endpoint", "status"))
PROBLEM_WORK = Histogram("rnn_problem_work", "Estimated multiply-adds of validated requests "
                         "(the unit of RNN_MAX_WORK and RNN_GRADCHECK_MAX_WORK)",
                         ("endpoint",), buckets=WORK_BUCKETS)

ANONYMOUS = "anonymous"
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


_PLAIN = logging.Formatter("%(message)s")
_own_handler: _StderrHandler | None = None


def _setup_access_log() -> None:
    global _own_handler
    if not log.handlers:
        _own_handler = _StderrHandler()
        _own_handler.setFormatter(_PLAIN)
        log.addHandler(_own_handler)
        log.setLevel(logging.INFO)
        log.propagate = False            # gunicorn's error log must not repeat each line


def _access_line(message: str) -> None:
    """Log one access line. While the stderr handler set up here is the logger's only
    consumer (no filters, plain format), the record would just be formatted back into
    `message`: write it the same way directly, skipping the LogRecord (findCaller, thread
    and process names), ~20–40 µs of a small request's CPU. Any other setup (a test's
    handler, a filter, a level) goes through logging as usual."""
    handler = _own_handler
    if (handler is None or log.handlers != [handler] or log.filters or handler.filters
            or handler.formatter is not _PLAIN or handler.level > logging.INFO
            or not log.isEnabledFor(logging.INFO)):
        log.info(message)
        return
    try:
        with handler.lock:
            stream = handler.stream
            stream.write(message + handler.terminator)
            stream.flush()
    except Exception:                    # as StreamHandler.emit: report, never fail the request
        handler.handleError(logging.makeLogRecord({"msg": message, "name": log.name}))


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
    """Called once a problem has passed validation: its sizes are known, the work starts now
    (the end of Server-Timing's `validate`, the start of its `compute`)."""
    g.sizes = sizes                      # plain ints (the access line is JSON)
    g.compute_started = time.perf_counter()


# Server-Timing (W3C) on every /v1/ answer: the phases between the boundaries the request path
# already has, each a perf_counter() stored on g by the code that reaches it —
#   parse_started, parsed     api.common.body(): before and after orjson.loads of the body
#   compute_started           mark_compute_start(): the problem passed validation
#   serialize_started, _ended jsonio.serialize(): around the response's (or error's) orjson.dumps
# A phase lasts from its boundary to the next one reached (an error skips the rest), so the
# durations never overlap and add up to at most the request's time; one never reached is 0.
SERVER_TIMING_PHASES = ("parse", "validate", "compute", "serialize")
_SERVER_TIMING = ", ".join(f"{phase};dur=%.3f" for phase in SERVER_TIMING_PHASES)


def server_timing(ctx, now: float) -> str:
    """The Server-Timing header's value for the request whose `g` is ctx (durations in ms).
    Straight-line code, one format: ~2 µs (a loop over the phases took 9)."""
    marks = ctx.__dict__
    parse0, parsed = marks.get("parse_started"), marks.get("parsed")
    compute0 = marks.get("compute_started")
    serialize0, serialized = marks.get("serialize_started"), marks.get("serialize_ended")
    end = now if serialized is None else serialized
    serialize_ = 0.0 if serialize0 is None else end - serialize0
    end = end if serialize0 is None else serialize0
    compute = 0.0 if compute0 is None else end - compute0
    end = end if compute0 is None else compute0
    validate = 0.0 if parsed is None else end - parsed
    end = end if parsed is None else parsed
    parse_ = 0.0 if parse0 is None else end - parse0
    return _SERVER_TIMING % (max(parse_, 0.0) * 1e3, max(validate, 0.0) * 1e3, max(compute, 0.0) * 1e3,
                             max(serialize_, 0.0) * 1e3)


def mark_work(work: float) -> None:
    """The request's estimated multiply-adds, as its budget check computed them."""
    g.work = float(work)


def _endpoint(req) -> str:
    # the route pattern, never the raw path: unknown paths must not create new label values
    rule = req.url_rule
    return rule.rule if rule is not None else "unmatched"


# Bound label children, looked up once per label set: Metric.labels() costs ~7 µs a call
# (it re-validates and str()s the values under a lock), six calls a request. The keys are
# route patterns, methods and status codes, a small set; the cap only guards against a
# client inventing methods. A child is made only when first observed, as labels() would:
# /metrics lists no empty series.
_CHILDREN: dict[tuple, tuple] = {}
_CHILDREN_CAP = 1024


def _children(key: tuple, make) -> tuple:
    found = _CHILDREN.get(key)
    if found is None:
        found = make()
        if len(_CHILDREN) < _CHILDREN_CAP:
            _CHILDREN[key] = found
    return found


def _http_children(method: str, endpoint: str, status: str, key: str) -> tuple:
    return _children(("http", method, endpoint, status, key), lambda: (
        REQUESTS.labels(method, endpoint, status), LATENCY.labels(method, endpoint, status),
        KEY_REQUESTS.labels(key, endpoint, status)))


def _compute_children(endpoint: str, status: str) -> tuple:
    return _children(("compute", endpoint, status), lambda: (
        COMPUTE.labels(endpoint, status), PROBLEM_WORK.labels(endpoint)))


def request_id(environ: dict) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")    # the header's WSGI key: no Headers view
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


def _start():
    ctx = g._get_current_object()
    ctx.request_started = time.perf_counter()
    ctx.request_id = request_id(request.environ)


def _record(response):
    """After every response, errors included: the X-Request-ID header, the metrics and the
    access line (one hook, not three: each costs a dispatch and proxy lookups)."""
    now = time.perf_counter()
    req, ctx = request._get_current_object(), g._get_current_object()   # one proxy lookup each
    rid = getattr(ctx, "request_id", None) or request_id(req.environ)
    response.headers["X-Request-ID"] = rid
    path = req.path                                  # not cached by werkzeug: ~2.5 µs a read
    if path.startswith("/v1/"):
        response.headers.add("Server-Timing", server_timing(ctx, now))
    started = getattr(ctx, "request_started", now)
    endpoint, status, method = _endpoint(req), response.status_code, req.method
    key = getattr(ctx, "key_name", ANONYMOUS)       # set by service/auth.py: a name, never a key
    requests_total, latency, by_key = _http_children(method, endpoint, str(status), key)
    requests_total.inc()
    by_key.inc()
    latency.observe(now - started)
    sizes = getattr(ctx, "sizes", None)
    work = getattr(ctx, "work", None)
    if sizes:
        compute, problem_work = _compute_children(endpoint, str(status))
        if work is not None:
            problem_work.observe(work)
        compute.observe(now - ctx.compute_started)
    line = {"ts": round(time.time(), 3), "request_id": rid,
            "method": method, "endpoint": endpoint, "path": path, "status": status,
            "duration_ms": round((now - started) * 1000, 3),
            "bytes_in": req.content_length, "pid": os.getpid(), "key": key}
    if sizes:
        line.update(sizes)
        if work is not None:
            line["work"] = work
    _access_line(dumps(line).decode())
    return response


def init_app(app: Flask) -> None:
    _setup_access_log()

    app.before_request(_start)
    app.after_request(_record)
    app.register_blueprint(bp)
