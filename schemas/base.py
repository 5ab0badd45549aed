"""Parsing a request body into a Pydantic model, with every error as a JSON Pointer."""
from __future__ import annotations

from typing import Annotated, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import LimitExceeded, MalformedJSON, RequestInvalid, pointer

Vector = list[float]
Matrix = list[list[float]]
PositiveInt = Annotated[int, Field(ge=1)]


class StrictModel(BaseModel):
    """Numbers must be JSON numbers (no strings, no booleans, no NaN/Infinity) and unknown
    fields are rejected, so a typo never passes silently."""
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid",
                              frozen=True)


M = TypeVar("M", bound=BaseModel)

_MESSAGES = {
    "float_type": "must be a JSON number",
    "int_type": "must be a JSON integer",
    "finite_number": "must be a finite number",
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "list_type": "must be a JSON array",
    "model_type": "must be a JSON object",
    "string_type": "must be a JSON string",
    "bool_type": "must be true or false",
}


def _error(e: dict) -> tuple[str, str]:
    msg = _MESSAGES.get(e["type"]) or e["msg"]
    if e["type"] == "literal_error":
        msg = f"must be one of {e['ctx']['expected']}"
    return pointer(*e["loc"]), msg


def parse(model: type[M], body: bytes, max_errors: int = 50) -> M:
    """Validate a JSON body: 400 if it is not JSON, 422 with pointers if it does not fit."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        bad_json = [e for e in errors if e["type"] == "json_invalid"]
        if bad_json:
            raise MalformedJSON(f"the body is not valid JSON: {bad_json[0]['msg']}") from None
        if errors and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise RequestInvalid([("", "the body must be a JSON object")]) from None
        raise RequestInvalid([_error(e) for e in errors[:max_errors]]) from None


def matrix(rows: list[list[float]], where: tuple, errors: list, rows_expected: int | None = None,
           cols_expected: int | None = None, name: str = "") -> np.ndarray | None:
    """A rectangular float64 array from a list of rows, or None after recording what is wrong."""
    if not rows:
        errors.append((pointer(*where), "must have at least one row"))
        return None
    cols = len(rows[0]) if cols_expected is None else cols_expected
    ok = True
    if cols == 0:
        errors.append((pointer(*where, 0), "a row must have at least one entry"))
        return None
    if rows_expected is not None and len(rows) != rows_expected:
        errors.append((pointer(*where), f"{name or where[-1]} must have {rows_expected} rows, got {len(rows)}"))
        ok = False
    for i, row in enumerate(rows):
        if len(row) != cols:
            errors.append((pointer(*where, i), f"row {i} has {len(row)} entries, expected {cols}"))
            ok = False
            break
    return np.array(rows, dtype=np.float64) if ok else None


def vector(values: list[float], where: tuple, errors: list, length: int | None) -> np.ndarray | None:
    if length is not None and len(values) != length:
        errors.append((pointer(*where), f"must have {length} entries, got {len(values)}"))
        return None
    if not values:
        errors.append((pointer(*where), "must have at least one entry"))
        return None
    return np.array(values, dtype=np.float64)


def check_limit(value: int, limit: int, what: str, where: str) -> None:
    if value > limit:
        raise LimitExceeded(f"{what} is {value}, over the limit of {limit}", where)
