"""POST /v1/grade: the problem object plus a student's submission, and the verdict."""
from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from .base import (BinaryArray, BinaryMatrixAnswer, BinaryScalarAnswer, BinaryVectorAnswer, StrictModel,
                   binary_value)
from .errors import RequestInvalid, pointer
from . import layouts
from .problem import ProblemIn

Tol = Annotated[float, Field(ge=0)]
GRADIENT_NAMES = ("V", "W", "U", "b_h", "b_y", "h_init", "b_hn", "c_init", "inputs")
ANSWER = "a number or an array of numbers, as the student computed it"


class BinaryAnswer3(BinaryArray):
    ndim: ClassVar[int] = 3


class BinaryStateAnswer(BinaryArray):
    ndim: ClassVar = (1, 2)


# the rank a binary answer must have (a JSON answer may have any shape: a wrong one fails its
# check), for one sequence and for a batch
RANKS = {"loss": (BinaryScalarAnswer, BinaryScalarAnswer),
         "step_losses": (BinaryVectorAnswer, BinaryMatrixAnswer),
         **{n: (BinaryMatrixAnswer, BinaryAnswer3) for n in ("outputs", "hidden", "cell", "gradients.inputs")},
         **{f"gradients.{n}": (BinaryMatrixAnswer, BinaryMatrixAnswer) for n in ("V", "W", "U")},
         **{f"gradients.{n}": (BinaryVectorAnswer, BinaryVectorAnswer) for n in ("b_h", "b_y", "b_hn")},
         **{f"gradients.{n}": (BinaryVectorAnswer, BinaryStateAnswer) for n in ("h_init", "c_init")}}


class GradientsSubmission(StrictModel):
    V: Any = Field(None, description="G·H×D")
    W: Any = Field(None, description="G·H×H")
    U: Any = Field(None, description="N×H")
    b_h: Any = Field(None, description="G·H entries")
    b_y: Any = Field(None, description="N entries")
    h_init: Any = Field(None, description="H entries, or B×H when h_init was sent B×H")
    b_hn: Any = Field(None, description="gru with gru_reset after: H entries")
    c_init: Any = Field(None, description="lstm: H entries, or B×H when c_init was sent B×H")
    inputs: Any = Field(None, description="dense inputs: ∂L/∂x_t, the shape of inputs (T×D or B×T×D)")


class Submission(StrictModel):
    """Any non-empty subset of the reference's fields. Values are kept as submitted: a wrong
    shape is a failed check, but anything that is not a number is a 422."""
    loss: Any = Field(None, description="a number")
    step_losses: Any = Field(None, description="T (or B×T) numbers; null allowed on unscored steps")
    outputs: Any = Field(None, description="T×N (or B×T×N)")
    hidden: Any = Field(None, description="T×H (or B×T×H)")
    cell: Any = Field(None, description="lstm: c_t, T×H (or B×T×H)")
    gradients: GradientsSubmission = Field(None, description="not null: leave it out instead")


class Tolerance(StrictModel):
    rtol: Tol = Field(1e-5, description="|got − expected| ≤ atol + rtol·|expected|")
    atol: Tol = Field(1e-8)


class GradeIn(ProblemIn):
    """In a layout other than the lecture's, submission.gradients has that layout's names
    (and h_init, c_init, inputs), in its shapes; checks are named gradients.<its name>."""
    submission: Submission
    tolerance: Tolerance = Field(default_factory=Tolerance)
    format: Literal["default", "gradescope", "prairielearn"] = "default"

    def submitted(self, batched: bool = False) -> dict[str, np.ndarray | str]:
        """Each submitted field as a float64 array (step_losses: NaN for null), or a sentence
        when it is not rectangular; 422 with pointers for anything that is not a number.
        `batched`: the problem is a batch (the rank a binary answer must have)."""
        s = self.submission
        given = [(name, getattr(s, name), ("submission", name)) for name in
                 ("loss", "step_losses", "outputs", "hidden", "cell") if name in s.model_fields_set]
        if s.gradients is not None:
            grads = self._layout_gradients if self._layout_gradients is not None else \
                {n: getattr(s.gradients, n) for n in GRADIENT_NAMES if n in s.gradients.model_fields_set}
            if not grads:
                raise RequestInvalid([("/submission/gradients", "give at least one of "
                                       + ", ".join(GRADIENT_NAMES) + " (or leave gradients out)", "size")])
            given += [(f"gradients.{n}", v, ("submission", "gradients", n)) for n, v in grads.items()]
        if not given:
            raise RequestInvalid([("/submission", "give at least one of loss, step_losses, outputs, "
                                                  "hidden, cell, gradients.{" + ", ".join(GRADIENT_NAMES)
                                   + "}", "size")])
        errors: list[tuple[str, str]] = []
        out = {name: answer(value, where, errors, nulls=name == "step_losses",
                            kind=RANKS[name][batched] if name in RANKS else BinaryArray)
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
                errors.append((pointer(*where, bad), "must be a finite number", "range"))
            return
        for i, x in enumerate(value):
            if not (nulls and depth <= 1 and x is None):
                _bad_entries(x, where + (i,), errors, nulls, depth + 1)
    elif not _is_number(value):
        errors.append((pointer(*where), f"must be {ANSWER}" + (" (or null on an unscored step)"
                                                                 if nulls and depth in (1, 2) else ""), "type"))
    elif not _finite(value):
        errors.append((pointer(*where), "must be a finite number", "range"))


def answer(value, where: tuple, errors: list, nulls: bool = False,
           kind: type = BinaryMatrixAnswer) -> np.ndarray | str | None:
    """A submitted value as an array; a ragged list becomes a sentence (a failed check). A
    binary array must have the rank of `kind` (any extents: a wrong size fails the check)."""
    n = len(errors)
    if isinstance(value, dict) and value.keys() & {"dtype", "shape", "data"}:   # a binary array
        return binary_value(value, where, errors, kind)
    _bad_entries(value, where, errors, nulls)
    if len(errors) > n:
        return None
    if nulls and isinstance(value, list):           # T entries, or B rows of T
        value = [math.nan if x is None else [math.nan if y is None else y for y in x]
                 if isinstance(x, list) else x for x in value]
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
                "sign_flipped", "transposed", "scaled", "no_cell_path", "no_hidden_path", "gate_order",
                "batch_not_averaged", "batch_averaged"]
    detail: str = Field(description="one sentence for the student")
    window: int | None = Field(None, description="truncated_bptt only: the K that reproduces it")
    factor: float | None = Field(None, description="scaled, batch_not_averaged (B), batch_averaged "
                                                   "(1/B): c with submission ≈ c·gradient")
    order: str | None = Field(None, description="gate_order only: the submission's gate blocks, "
                                                "e.g. \"i, f, o, g\"")


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


class PrairieLearnTest(BaseModel):
    name: str
    description: str
    points: int
    max_points: int
    message: str = Field(description="the diagnosis or what is wrong, for the student")
    output: str


class PrairieLearnOut(BaseModel):
    """PrairieLearn's external-grading results.json (docs.prairielearn.com, External Grading)."""
    gradable: bool = Field(description="true: every submission that reaches grading is gradable")
    score: float = Field(ge=0, le=1, description="the fraction of checks passed")
    message: str
    output: str
    tests: list[PrairieLearnTest]


def grade_items(req: GradeIn, submitted: dict) -> list | None:
    """In a layout: service.engine.grade.grade_mapped's items (None in the lecture's)."""
    if req._layout_ctx is None:
        return None
    return layouts.grade_items(layouts.LAYOUTS[req.layout], req.model.cell, req._layout_ctx, submitted)
