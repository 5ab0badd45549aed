"""orjson as Flask's JSON provider: numpy arrays serialise natively, floats round-trip.

A caller that sends `Accept: application/json; arrays=base64` (or `?arrays=base64`) gets
every float array of a response as {"dtype": "float64", "shape": [...], "data": "<base64>"}
(little-endian, row-major), the encoding requests may use too; scalars and lists that hold
nulls stay JSON."""
from __future__ import annotations

from time import perf_counter

import numpy as np
import orjson
import pybase64
from flask import has_request_context, request
from flask.globals import _cv_app
from flask.json.provider import JSONProvider
from pydantic import BaseModel

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj):
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, np.ndarray):          # non-contiguous or non-native arrays
        return np.ascontiguousarray(obj, dtype=np.float64 if obj.dtype.kind == "f" else None)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def dumps(obj) -> bytes:
    return orjson.dumps(obj, default=_default, option=OPTIONS)


def binary_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, dtype="<f8")
    return {"dtype": "float64", "shape": list(a.shape),
            "data": pybase64.b64encode_as_string(a.data)}     # SIMD base64


def _binary_default(obj):
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f" and obj.ndim:
        return binary_array(obj)
    return _default(obj)


def dumps_binary(obj) -> bytes:
    """Like dumps, with float arrays as base64 objects (numpy arrays reach `default` only
    when OPT_SERIALIZE_NUMPY is off)."""
    return orjson.dumps(obj, default=_binary_default, option=orjson.OPT_NON_STR_KEYS)


def wants_binary_arrays() -> bool:
    """`Accept: application/json; arrays=base64` or the query parameter `arrays=base64`."""
    environ = request.environ                    # the WSGI keys: no query or header parsing when absent
    if "arrays=base64" in environ.get("QUERY_STRING", "") and request.args.get("arrays") == "base64":
        return True
    accept = environ.get("HTTP_ACCEPT", "")
    if "arrays" not in accept:                   # the common case, without parsing
        return False
    for media_range in accept.split(","):
        kind, *params = (part.strip().lower() for part in media_range.split(";"))
        if kind in ("application/json", "application/*", "*/*") and "arrays=base64" in \
                (p.replace(" ", "") for p in params):
            return True
    return False


def serialize(obj, binary: bool = False) -> bytes:
    """A response body (dumps, or dumps_binary), timed for Server-Timing's `serialize` when in
    a request (observability.server_timing reads the two marks)."""
    started = perf_counter()
    out = (dumps_binary if binary else dumps)(obj)
    app_ctx = _cv_app.get(None)                  # flask.g without the proxy (~0.4 µs less)
    if app_ctx is not None:
        app_ctx.g.serialize_started, app_ctx.g.serialize_ended = started, perf_counter()
    return out


class OrjsonProvider(JSONProvider):
    def dumps(self, obj, **kwargs) -> str:
        return dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        binary = has_request_context() and wants_binary_arrays()
        response = self._app.response_class(serialize(obj, binary), mimetype="application/json")
        response.headers["Vary"] = "Accept"      # the body depends on Accept (arrays=base64)
        return response
