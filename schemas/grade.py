"""POST /v1/grade: the problem object plus a student's submission, and the verdict."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from .base import StrictModel, binary_value
from .errors import RequestInvalid, pointer
from .problem import ProblemIn

Tol = Annotated[float, Field(ge=0)]
GRADIENT_NAMES = ("V", "W", "U", "b_h", "b_y", "h_init")
ANSWER = "a number or an array of numbers, as the student computed it"


class GradientsSubmission(StrictModel):
    V: Any = Field(None, description="H×D")
    W: Any = Field(None, description="H×H")
    U: Any = Field(None, description="N×H")
    b_h: Any = Field(None, description="H entries")
    b_y: Any = Field(None, description="N entries")
    h_init: Any = Field(None, description="H entries")


class Submission(StrictModel):
    """Any non-empty subset of the reference's fields. Values are kept as submitted: a wrong
    shape is a failed check, but anything that is not a number is a 422."""
    loss: Any = Field(None, description="a number")
    step_losses: Any = Field(None, description="T numbers; null allowed on unscored steps")
    outputs: Any = Field(None, description="T×N")
    hidden: Any = Field(None, description="T×H")
    gradients: GradientsSubmission | None = None


class Tolerance(StrictModel):
    rtol: Tol = Field(1e-5, description="|got − expected| ≤ atol + rtol·|expected|")
    atol: Tol = Field(1e-8)


class GradeIn(ProblemIn):
    targets: list[Any] = Field(description="T entries: a class index, a vector of N numbers, or null")
    submission: Submission
    tolerance: Tolerance = Field(default_factory=Tolerance)
    format: Literal["default", "gradescope"] = "default"

    def submitted(self) -> dict[str, np.ndarray | str]:
        """Each submitted field as a float64 array (step_losses: NaN for null), or a sentence
        when it is not rectangular; 422 with pointers for anything that is not a number."""
        s = self.submission
        given = [(name, getattr(s, name), ("submission", name)) for name in
                 ("loss", "step_losses", "outputs", "hidden") if name in s.model_fields_set]
        if s.gradients is not None:
            if not s.gradients.model_fields_set:
                raise RequestInvalid([("/submission/gradients", "give at least one of V, W, U, b_h, "
                                                                 "b_y, h_init (or leave gradients out)")])
            given += [(f"gradients.{n}", getattr(s.gradients, n), ("submission", "gradients", n))
                      for n in GRADIENT_NAMES if n in s.gradients.model_fields_set]
        if not given:
            raise RequestInvalid([("/submission", "give at least one of loss, step_losses, outputs, "
                                                  "hidden, gradients.{V, W, U, b_h, b_y, h_init}")])
        errors: list[tuple[str, str]] = []
        out = {name: answer(value, where, errors, nulls=name == "step_losses")
               for name, value, where in given}
        if errors:
            raise RequestInvalid(errors)
        return out


def _is_number(x) -> bool:
    return type(x) in (int, float)


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:          # an integer beyond float64
        return False


def _bad_entries(value, where: tuple, errors: list, nulls: bool, depth: int = 0) -> None:
    """Record a pointer to every entry that is neither a finite number nor an array (nor a
    null, where allowed), at most 50."""
    if len(errors) >= 50:
        return
    if isinstance(value, list):
        if all(_is_number(x) for x in value):          # the common case, checked fast
            bad = next((i for i, x in enumerate(value) if not _finite(x)), None)
            if bad is not None:
                errors.append((pointer(*where, bad), "must be a finite number"))
            return
        for i, x in enumerate(value):
            if not (nulls and depth == 0 and x is None):
                _bad_entries(x, where + (i,), errors, nulls, depth + 1)
    elif not _is_number(value):
        errors.append((pointer(*where), f"must be {ANSWER}" + (" (or null on an unscored step)"
                                                                 if nulls and depth == 1 else "")))
    elif not _finite(value):
        errors.append((pointer(*where), "must be a finite number"))


def answer(value, where: tuple, errors: list, nulls: bool = False) -> np.ndarray | str | None:
    """A submitted value as an array; a ragged list becomes a sentence (a failed check)."""
    n = len(errors)
    if isinstance(value, dict) and value.keys() & {"dtype", "shape", "data"}:   # a binary array, any shape
        return binary_value(value, where, errors)
    _bad_entries(value, where, errors, nulls)
    if len(errors) > n:
        return None
    if nulls and isinstance(value, list):
        value = [math.nan if x is None else x for x in value]
    try:
        return np.array(value, dtype=np.float64)
    except ValueError:          # numpy refuses ragged lists and more than 64 dimensions
        return ("nested more than 64 levels deep" if _depth(value) > 64 else
                "the rows have different lengths (not a rectangular array)")


def _depth(value) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth


# --- responses (built with model_construct; they document the shapes) ---

class Diagnosis(BaseModel):
    id: Literal["no_bptt", "truncated_bptt", "no_jacobian_product", "final_loss_only", "zero",
                "sign_flipped", "transposed", "scaled"]
    detail: str = Field(description="one sentence for the student")
    window: int | None = Field(None, description="truncated_bptt only: the K that reproduces it")
    factor: float | None = Field(None, description="scaled only: c with submission ≈ c·gradient")


class Check(BaseModel):
    name: str = Field(description="e.g. gradients.b_h")
    passed: bool
    max_abs_error: float | None = Field(description="null when the shape is wrong")
    max_rel_error: float | None = Field(description="|got − expected| / max(|got|, |expected|)")
    worst_index: list[int] | None = Field(description="the element furthest past its tolerance")
    expected_at_worst: float | None
    got_at_worst: float | None
    error: str | None = Field(description="why the value could not be compared (wrong shape)")
    diagnosis: Diagnosis | None = Field(description="failed gradients: the mistake it reproduces")


class GradeOut(BaseModel):
    passed: bool
    score: float = Field(description="fraction of checks passed")
    checks: list[Check]


class GradescopeTest(BaseModel):
    name: str
    score: float
    max_score: float
    status: Literal["passed", "failed"]
    output: str


class GradescopeOut(BaseModel):
    score: float
    max_score: float
    output: str
    tests: list[GradescopeTest]
