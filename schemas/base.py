"""Parsing a request body into a Pydantic model, with every error as a JSON Pointer."""
from __future__ import annotations

import binascii
import json
import math
from typing import Annotated, ClassVar, Literal, TypeVar, Union

import numpy as np
import orjson
import pybase64
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)
from pydantic_core import PydanticCustomError, core_schema

from .arrays import TAG, strip_tags
from .errors import CODES, LimitExceeded, MalformedJSON, RequestInvalid, pointer


# --- integers as JSON Schema has them ---------------------------------------------------------
# In JSON Schema (and so OpenAPI 3.1) a number with a zero fractional part is an integer: 3.0
# is one, 2.5 and true are not. `Integer(ge, le)` is that integer, for every integer a body
# takes: an int passes in Rust; a float in int64's range is converted in Rust (2.5 is refused
# there); only a larger integral float (1e19) takes a Python step. The three branches' errors
# are merged back into one per value by _integer_errors.
_INT_BRANCHES = ("integer", "integral-number", "large-integral-number")


def _large_integral(x: float) -> int:
    if not x.is_integer():
        raise PydanticCustomError("int_from_float", "has a fractional part")
    return int(x)


class _IntegerSchema:
    def __init__(self, ge: int | None = None, le: int | None = None):
        self.ge, self.le = ge, le

    def __get_pydantic_core_schema__(self, source, handler):
        bounds = {"ge": self.ge, "le": self.le}
        return core_schema.union_schema([
            (core_schema.int_schema(strict=True, **bounds), _INT_BRANCHES[0]),
            (core_schema.chain_schema([core_schema.float_schema(strict=True, allow_inf_nan=False),
                                       core_schema.int_schema(strict=False, **bounds)]), _INT_BRANCHES[1]),
            (core_schema.chain_schema([core_schema.float_schema(strict=True, allow_inf_nan=False),
                                       core_schema.no_info_plain_validator_function(_large_integral),
                                       core_schema.int_schema(strict=True, **bounds)]), _INT_BRANCHES[2]),
        ], mode="left_to_right")

    def __get_pydantic_json_schema__(self, schema, handler):
        bounds = {"minimum": self.ge, "maximum": self.le}
        return {"type": "integer", **{k: v for k, v in bounds.items() if v is not None}}


def Integer(ge: int | None = None, le: int | None = None):   # noqa: N802 (a type)
    """An integer field with JSON Schema's meaning (3.0 is 3), optionally bounded."""
    return Annotated[int, _IntegerSchema(ge, le)]


def is_integer(x) -> bool:
    """The same rule for values typed Any (class-index targets): an int that is not a bool, or
    an integral float."""
    return type(x) is int or (type(x) is float and x.is_integer())


PositiveInt = Integer(ge=1)
# the largest finite float64: JSON numbers beyond it are refused (the schemas state it)
FLOAT_MAX = float(np.finfo(np.float64).max)


class StrictModel(BaseModel):
    """Numbers must be JSON numbers (no strings, no booleans, no NaN/Infinity) and unknown
    fields are rejected, so a typo never passes silently."""
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid",
                              frozen=True)


class BinaryArray(StrictModel):
    """A float64 array as base64 of its little-endian bytes, row-major: large arrays skip
    decimal text. Validated into a numpy array (so a field holds a list or an ndarray)."""
    ndim: ClassVar[int | None] = None      # None: any rank
    dtype: Literal["float64"] = Field(description="only float64")
    shape: list[Integer(ge=0)] = Field(description="e.g. [H, D] for a matrix")
    data: str = Field(description="base64 (RFC 4648) of the little-endian float64 values")

    @field_validator("shape")
    @classmethod
    def _rank(cls, shape: list[int]) -> list[int]:
        if isinstance(cls.ndim, tuple):          # a rank that varies (one sequence or a batch)
            if len(shape) not in cls.ndim:
                raise PydanticCustomError("rank", f"needs a shape of {' or '.join(map(str, cls.ndim))} "
                                                  f"entries, got {len(shape)}")
            return shape
        if cls.ndim is not None and len(shape) != cls.ndim:
            kind, entries = {0: ("number", "no entries ([])"), 1: ("vector", "1 entry")}.get(
                cls.ndim, ("matrix" if cls.ndim == 2 else f"{cls.ndim}-d array", f"{cls.ndim} entries"))
            raise PydanticCustomError("rank", f"a {kind} needs a shape of {entries}, got {len(shape)}")
        return shape

    @field_validator("data")
    @classmethod
    def _bytes(cls, data: str, info: ValidationInfo) -> np.ndarray:
        try:
            raw = pybase64.b64decode(data, validate=True)   # SIMD: ~50× the standard library's
        except (binascii.Error, ValueError):
            raise PydanticCustomError("base64", "must be base64 (RFC 4648, with padding)") from None
        shape = info.data.get("shape")
        if shape is None:                        # the shape's own error is already reported
            return np.empty(0)
        expected = 8 * math.prod(shape)
        if len(raw) != expected:
            raise PydanticCustomError(
                "binary_size", f"holds {len(raw)} bytes; shape {shape} of float64 needs {expected}")
        values = np.frombuffer(raw, dtype="<f8").astype(np.float64)   # a writable native copy
        finite = np.isfinite(values)
        if not finite.all():
            raise PydanticCustomError(
                "binary_finite", f"element {int(np.argmin(finite))} (row-major) is not a finite number")
        return values.reshape(shape)


class BinaryVector(BinaryArray):
    """A vector of a request: a shape of one entry, at least 1."""
    ndim: ClassVar[int] = 1
    shape: list[Integer(ge=1)] = Field(description="[n]")


class BinaryMatrix(BinaryArray):
    """A matrix of a request: a shape of two entries [rows, columns], each at least 1."""
    ndim: ClassVar[int] = 2
    shape: list[Integer(ge=1)] = Field(description="[rows, columns]")


class BinarySequence(BinaryArray):
    """Per-step arrays of a request: T × F for one sequence, B × T × F for a batch."""
    ndim: ClassVar = (2, 3)
    shape: list[Integer(ge=1)] = Field(description="[T, F] or [B, T, F]")


class BinaryState(BinaryArray):
    """An initial state of a request: H numbers shared by every sequence, or B × H."""
    ndim: ClassVar = (1, 2)
    shape: list[Integer(ge=1)] = Field(description="[H] or [B, H]")


# A submitted answer's rank is the expected one (any extents: a wrong size is a failed check)
class BinaryScalarAnswer(BinaryArray):
    ndim: ClassVar[int] = 0


class BinaryVectorAnswer(BinaryArray):
    ndim: ClassVar[int] = 1


class BinaryMatrixAnswer(BinaryArray):
    ndim: ClassVar[int] = 2


def _values(b: BinaryArray) -> np.ndarray:
    return b.data


def binary_value(value: dict, where: tuple, errors: list, kind: type[BinaryArray] = BinaryArray):
    """A binary array inside a field typed Any (a target, a submitted answer) as an ndarray,
    or None after recording its errors with pointers below `where`."""
    try:
        return kind.model_validate(value).data
    except ValidationError as exc:
        errors += errors_of(exc, where)
        return None


# A field typed Vector or Matrix holds a list (JSON numbers) or a float64 ndarray (binary).
# The list comes first so that plain JSON validates exactly as before.
Vector = Annotated[Union[list[float], Annotated[BinaryVector, AfterValidator(_values)]],
                   Field(union_mode="left_to_right")]
Matrix = Annotated[Union[list[list[float]], Annotated[BinaryMatrix, AfterValidator(_values)]],
                   Field(union_mode="left_to_right")]
# The union members' names as pydantic puts them in an error's location
_LIST_BRANCHES = ("list[float]", "list[list[float]]")
_BINARY_BRANCHES = tuple(f"function-after[_values(), {c.__name__}]" for c in (BinaryVector, BinaryMatrix))


M = TypeVar("M", bound=BaseModel)

_MESSAGES = {
    "float_type": "must be a JSON number",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer: this number has a fractional part",
    "finite_number": "must be a finite number",
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "list_type": "must be a JSON array",
    "model_type": "must be a JSON object",
    "string_type": "must be a JSON string",
    "bool_type": "must be true or false",
}
# pydantic's error types -> the codes of schemas.errors.CODES (custom types are codes already)
_CODES = {"float_type": "type", "int_type": "type", "int_from_float": "type", "list_type": "type",
          "model_type": "type", "string_type": "type", "bool_type": "type", "array_type": "type",
          "dict_type": "type", "finite_number": "range", "int_parsing_size": "range",
          "greater_than_equal": "range", "less_than_equal": "range", "greater_than": "range",
          "less_than": "range", "extra_forbidden": "unknown_field", "missing": "required",
          "literal_error": "enum", "too_short": "size", "too_long": "size"}


def _error(e: dict) -> tuple[str, str, str]:
    msg = _MESSAGES.get(e["type"]) or e["msg"]
    if e["type"] == "literal_error":
        msg = f"must be one of {e['ctx']['expected']}"
    code = e["type"] if e["type"] in CODES else _CODES.get(e["type"], "invalid")
    return pointer(*e["loc"]), msg, code


def errors_of(exc: ValidationError, where: tuple = ()) -> list[tuple[str, str, str]]:
    """A ValidationError's errors as (pointer, detail, code), the union members' names dropped."""
    errors = [{**e, "loc": (*where, *e["loc"])} for e in exc.errors(include_url=False, include_input=False)]
    return [_error(e) for e in _array_errors(_integer_errors(errors))]


def parse(model: type[M], body: bytes, max_errors: int = 50, fast_road: bool = True) -> M:
    """Validate a JSON body: 400 if it is not JSON, 422 with pointers if it does not fit.

    A valid body takes the fast road: orjson, then the model in Python mode (about half the
    time of validate_json on a small body, the same on a large one). Anything either refuses
    is validated again by validate_json, whose errors are the ones reported: NaN, Infinity and
    1e400 are not JSON to orjson, but pydantic's parser reads them and points at the number.
    fast_road=False: the caller took the fast road itself and it refused (service.api.common
    .body(), which times the two steps for Server-Timing)."""
    if fast_road:
        try:
            return model.model_validate(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            pass
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        bad_json = [e for e in errors if e["type"] == "json_invalid"]
        if bad_json and "number out of range" in bad_json[0]["msg"]:
            # valid JSON with a number beyond float64: the standard library reads it as ±inf,
            # and the model in Python mode points at it
            located = _out_of_range(model, body, max_errors)
            raise RequestInvalid(located or [("", f"a number is too large for float64: {bad_json[0]['msg']}",
                                              "range")]) from None
        if bad_json:
            raise MalformedJSON(f"the body is not valid JSON: {bad_json[0]['msg']}") from None
        if errors and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise RequestInvalid([("", "the body must be a JSON object", "type")]) from None
        raise RequestInvalid(errors_of(exc)[:max_errors]) from None


def _out_of_range(model: type[BaseModel], body: bytes, max_errors: int) -> list | None:
    """Pointers to the numbers beyond float64 of a body that pydantic's parser cannot read
    for one (the standard library reads them as ±inf), or None if it cannot read it either."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found: list = []

    def visit(node, path):
        if len(found) >= max_errors:
            return
        if isinstance(node, float) and not math.isfinite(node):
            found.append((pointer(*path), "must be a finite number (within float64's range)", "range"))
        elif isinstance(node, dict):
            for k, v in node.items():
                visit(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, (*path, i))
    try:
        visit(value, ())
    except RecursionError:
        return None
    return found or None


def _integer_errors(errors: list[dict]) -> list[dict]:
    """An Integer's three union branches each report a failed value: keep one error per value,
    the most telling (a bound or a fractional part before "must be an integer")."""
    groups: dict[tuple, list[dict]] = {}
    out: list = []
    for e in errors:
        loc = e["loc"]
        i = next((i for i, part in enumerate(loc) if part in _INT_BRANCHES), None)
        if i is None:
            out.append(e)
            continue
        key = loc[:i]
        if key not in groups:
            groups[key] = []
            out.append(key)                      # placeholder keeps the errors' order
        groups[key].append({**e, "loc": key + loc[i + 1:]})
    merged = []
    for item in out:
        if isinstance(item, dict):
            merged.append(item)
            continue
        telling = [e for e in groups[item] if e["type"] not in ("int_type", "float_type", "int_parsing_size")]
        merged.append(telling[0] if telling else {"type": "int_type", "loc": item, "msg": ""})
    return merged


def _branch(part) -> str | None:
    """Which member of an array's union a location part names: "list", "binary" or None.
    (arrays.ranked's members are tagged "array:rank<n>" and "array:binary".)"""
    if part in _LIST_BRANCHES or (isinstance(part, str) and part.startswith(TAG + "rank")):
        return "list"
    if part in _BINARY_BRANCHES or part == TAG + "binary":
        return "binary"
    return None


def _array_errors(errors: list[dict]) -> list[dict]:
    """Errors inside a Vector or Matrix come from both members of its union: keep the member
    the caller meant (a JSON array or a binary object) and drop the member's name from the
    location, so pointers are plain paths into the body."""
    by_field: dict[tuple, dict[str, list[dict]]] = {}
    out = []
    for e in errors:
        loc = strip_tags(e["loc"], keep_arrays=True)
        i = next((i for i, part in enumerate(loc) if _branch(part)), None)
        if i is None:
            out.append({**e, "loc": loc})
            continue
        branch = _branch(loc[i])
        field = by_field.setdefault(loc[:i], {"list": [], "binary": []})
        if not field["list"] and not field["binary"]:
            out.append(field)                    # placeholder keeps the errors' order
        field[branch].append({**e, "loc": loc[:i] + loc[i + 1:]})
    flat = []
    for item in out:
        if "type" in item:
            flat.append(item)
            continue
        at_root = {b: [e for e in es if e["type"] in ("list_type", "model_type")] for b, es in item.items()}
        if item["list"] and len(at_root["list"]) < len(item["list"]):
            flat += item["list"]                 # a JSON array with bad entries
        elif item["binary"] and len(at_root["binary"]) < len(item["binary"]):
            flat += item["binary"]               # a binary object with bad fields
        else:
            loc = (item["list"] or item["binary"])[0]["loc"]
            flat.append({"type": "array_type", "loc": loc,
                         "msg": "must be a JSON array of numbers or a binary array object "
                                '{"dtype": "float64", "shape": [...], "data": "<base64>"}'})
    return flat


def matrix(rows: list[list[float]], where: tuple, errors: list, rows_expected: int | None = None,
           cols_expected: int | None = None, name: str = "") -> np.ndarray | None:
    """A rectangular float64 array from a list of rows (or a decoded binary array), or None
    after recording what is wrong."""
    if isinstance(rows, np.ndarray):
        return _checked_shape(rows, where, errors, (rows_expected, cols_expected), name)
    fast = _rectangular(rows, rows_expected, cols_expected)
    if fast is not None:
        return fast
    if not rows:
        errors.append((pointer(*where), "must have at least one row", "size"))
        return None
    cols = len(rows[0]) if cols_expected is None else cols_expected
    ok = True
    if cols == 0:
        errors.append((pointer(*where, 0), "a row must have at least one entry", "size"))
        return None
    if rows_expected is not None and len(rows) != rows_expected:
        errors.append((pointer(*where), f"{name or where[-1]} must have {rows_expected} rows, got {len(rows)}",
                       "shape"))
        ok = False
    for i, row in enumerate(rows):
        if len(row) != cols:
            errors.append((pointer(*where, i), f"row {i} has {len(row)} entries, expected {cols}",
                           "size" if not row else "shape"))
            ok = False
            break
    return np.array(rows, dtype=np.float64) if ok else None


def _rectangular(rows: list[list[float]], rows_expected: int | None, cols_expected: int | None):
    """The common valid case in one numpy call: numpy refuses ragged rows itself, so the
    row-by-row checks below only run to say what is wrong."""
    try:
        a = np.array(rows, dtype=np.float64)
    except ValueError:
        return None
    if a.ndim != 2 or 0 in a.shape or rows_expected not in (None, a.shape[0]) or \
            cols_expected not in (None, a.shape[1]):
        return None
    return a


def _checked_shape(a: np.ndarray, where: tuple, errors: list, expected: tuple, name: str = ""):
    """A binary array's shape against the expected one (None: any size ≥ 1), errors at the field."""
    for axis, (got, want) in enumerate(zip(a.shape, expected)):
        if want is not None and got != want:
            what = ("rows", "columns")[axis] if a.ndim == 2 else "entries"
            errors.append((pointer(*where), f"{name or where[-1]} must have {want} {what}, "
                                            f"got shape {list(a.shape)}", "shape"))
            return None
        if got == 0:
            errors.append((pointer(*where), f"shape {list(a.shape)} is empty: every axis needs ≥ 1", "size"))
            return None
    return a


def vector(values: list[float], where: tuple, errors: list, length: int | None) -> np.ndarray | None:
    if isinstance(values, np.ndarray):
        return _checked_shape(values, where, errors, (length,))
    if length is not None and len(values) != length:
        errors.append((pointer(*where), f"must have {length} entries, got {len(values)}",
                       "shape" if values else "size"))
        return None
    if not values:
        errors.append((pointer(*where), "must have at least one entry", "size"))
        return None
    return np.array(values, dtype=np.float64)


def check_limit(value: int, limit: int, what: str, where: str) -> None:
    if value > limit:
        raise LimitExceeded(f"{what} is {value}, over the limit of {limit}", where)
