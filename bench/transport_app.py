"""The HTTP transport alone, for bench/floor.py: a bare WSGI app (no Flask) under the same gunicorn
settings that reads the whole body and answers X-Response-Bytes bytes of prebuilt JSON-safe
filler. Its round trip is what gunicorn, loopback TCP and the client cost for a request and a
response of those sizes, with no work at all."""
from __future__ import annotations

_FILLER: dict[int, bytes] = {}


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    while length > 0:
        length -= len(stream.read(min(length, 1 << 20)) or b"") or length
    n = int(environ.get("HTTP_X_RESPONSE_BYTES") or 2)
    body = _FILLER.get(n)
    if body is None:
        body = _FILLER[n] = b'"' + b"0" * max(n - 2, 0) + b'"'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
