"""orjson as Flask's JSON provider: numpy arrays serialise natively, floats round-trip."""
from __future__ import annotations

import numpy as np
import orjson
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


class OrjsonProvider(JSONProvider):
    def dumps(self, obj, **kwargs) -> str:
        return dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps(obj), mimetype="application/json")
