"""The problem object every compute endpoint takes: an RNN, a sequence and its targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from .base import (BinaryVector, Matrix, PositiveInt, StrictModel, Vector, binary_value, check_limit,
                   matrix, vector)
from .errors import RequestInvalid, pointer
from .limits import Limits

HiddenActivation = Literal["tanh", "sigmoid", "relu", "identity"]
OutputActivation = Literal["softmax", "sigmoid", "identity"]
LossName = Literal["cross_entropy", "binary_cross_entropy", "squared_error"]
Reduction = Literal["sum", "mean"]
ParameterName = Literal["V", "W", "U", "b_h", "b_y", "h_init"]

DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                "identity": "squared_error"}
LOSS_NEEDS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


class WeightsIn(StrictModel):
    V: Matrix = Field(description="H×D input-to-hidden weights")
    W: Matrix = Field(description="H×H hidden-to-hidden weights")
    U: Matrix = Field(description="N×H hidden-to-output weights")
    b_h: Vector = Field(description="H hidden biases")
    b_y: Vector = Field(description="N output biases")


class ModelIn(StrictModel):
    weights: WeightsIn
    hidden_activation: HiddenActivation = "tanh"
    output_activation: OutputActivation = "softmax"


@dataclass
class ProblemArrays:
    """A validated problem as float64 arrays, ready for the engine."""
    V: np.ndarray
    W: np.ndarray
    U: np.ndarray
    b_h: np.ndarray
    b_y: np.ndarray
    h_init: np.ndarray
    hidden_activation: str
    output_activation: str
    inputs: np.ndarray | None
    tokens: np.ndarray | None
    targets: np.ndarray | None     # T×N (class indices one-hot)
    scored: np.ndarray | None      # T bools
    loss: str | None
    reduction: str

    @property
    def T(self) -> int:
        return len(self.tokens) if self.tokens is not None else self.inputs.shape[0]

    @property
    def sizes(self) -> dict[str, int]:
        return {"T": self.T, "H": self.W.shape[0], "D": self.V.shape[1], "N": self.U.shape[0]}


class ProblemIn(StrictModel):
    model: ModelIn
    h_init: Vector | None = Field(None, description="H numbers; zeros when absent")
    inputs: Matrix | None = Field(None, description="T×D dense inputs (exactly one of inputs, tokens)")
    tokens: list[Annotated[int, Field(ge=0, le=2**31)]] | None = Field(
        None, description="T integers in [0, D): x_t is one-hot")
    targets: list[Any] | None = Field(
        None, description="T entries: a class index (cross_entropy), a vector of N numbers, or null")
    loss: LossName | None = Field(None, description="default follows output_activation")
    reduction: Reduction = "sum"

    def arrays(self, limits: Limits, targets_required: bool = True) -> ProblemArrays:
        """Check every shape against the others and every value's range (422 with pointers,
        413 over a size limit) and return float64 arrays."""
        errors: list[tuple[str, str]] = []
        w = self.model.weights
        out_act = self.model.output_activation
        loss = self.loss or DEFAULT_LOSS[out_act]
        if loss in LOSS_NEEDS and LOSS_NEEDS[loss] != out_act:
            errors.append((pointer("loss"), f"{loss} needs output_activation {LOSS_NEEDS[loss]}, "
                                            f"got {out_act}"))
        # sizes first, so limits are checked before large arrays are built
        H, D, N = len(w.W), _columns(w.V), len(w.U)
        T = len(self.tokens) if self.tokens is not None else len(self.inputs if self.inputs is not None else [])
        for value, name, where in ((T, "T (sequence length)", "/inputs" if self.inputs is not None else "/tokens"),
                                   (H, "H (hidden size)", "/model/weights/W"),
                                   (D, "D (input size)", "/model/weights/V"),
                                   (N, "N (output size)", "/model/weights/U")):
            check_limit(value, getattr(limits, "max_" + name[0]), name, where)

        base = ("model", "weights")
        W = matrix(w.W, base + ("W",), errors, cols_expected=H or None)
        V = matrix(w.V, base + ("V",), errors, rows_expected=H)
        U = matrix(w.U, base + ("U",), errors, cols_expected=H or None)
        b_h = vector(w.b_h, base + ("b_h",), errors, H)
        b_y = vector(w.b_y, base + ("b_y",), errors, N)
        h_init = vector(self.h_init, ("h_init",), errors, H) if self.h_init is not None \
            else np.zeros(H)

        inputs = tokens = None
        if (self.inputs is None) == (self.tokens is None):
            errors.append(("", "give exactly one of inputs and tokens"))
        elif self.inputs is not None:
            inputs = matrix(self.inputs, ("inputs",), errors, cols_expected=D or None)
        else:
            tokens = np.array(self.tokens, dtype=np.int64)
            if T == 0:
                errors.append(("/tokens", "must have at least one token (T ≥ 1)"))
            in_range = T and min(self.tokens) >= 0 and max(self.tokens) < D   # no numpy temporaries
            bad = () if in_range else np.flatnonzero((tokens < 0) | (tokens >= max(D, 1)))
            if len(bad):
                errors.append((pointer("tokens", int(bad[0])),
                               f"token {int(tokens[bad[0]])} is outside [0, {D}) (D = columns of V)"))

        targets = scored = None
        if self.targets is not None:
            if (inputs is not None or tokens is not None) and T >= 1:
                # without a valid sequence T is unknown: "must have 0 entries" would mislead
                targets, scored = _targets(self.targets, loss, T, N, errors)
        elif targets_required:
            errors.append(("/targets", "required field is missing"))
        if errors:
            raise RequestInvalid(errors)
        return ProblemArrays(V, W, U, b_h, b_y, h_init, self.model.hidden_activation, out_act,
                             inputs, tokens, targets, scored, loss if targets is not None else None,
                             self.reduction)


def _columns(m) -> int:
    """Columns of a matrix given as a list of rows or as a decoded binary array."""
    if isinstance(m, np.ndarray):
        return m.shape[1]
    return len(m[0]) if m else 0


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _fast_targets(entries: list, loss: str, N: int, scored: np.ndarray, Y: np.ndarray) -> bool:
    """Fill Y in bulk when every target is valid (the common case); False leaves the
    entry-by-entry checks to find and point at what is wrong."""
    given = entries if None not in entries else [e for e in entries if e is not None]
    if loss == "cross_entropy":
        # type(True) is bool, not int: booleans fall through to the checks that name them
        if not given or set(map(type, given)) != {int} or min(given) < 0 or max(given) >= N:
            return False
        steps = np.arange(len(entries)) if len(given) == len(entries) else np.flatnonzero(scored)
        Y[steps, given] = 1.0
        return True
    if not all(type(e) is list and len(e) == N for e in given) or \
            not {type(x) for e in given for x in e} <= {int, float}:
        return False
    values = np.array(given, dtype=np.float64)
    if not np.isfinite(values).all() or (
            loss == "binary_cross_entropy" and not ((values >= 0) & (values <= 1)).all()):
        return False
    Y[scored] = values
    return True


def _targets(entries: list, loss: str, T: int, N: int, errors: list):
    """T×N target array (class indices one-hot) and the scored-step mask."""
    if len(entries) != T:
        errors.append(("/targets", f"must have {T} entries (one per step), got {len(entries)}"))
        return None, None
    Y = np.zeros((T, N))
    present = [e is not None for e in entries] if None in entries else None
    if present is not None and not any(present):
        errors.append(("/targets", "every target is null: at least one step must be scored "
                                   "(omit targets for no loss)"))
        return None, None
    scored = np.ones(T, dtype=bool) if present is None else np.array(present, dtype=bool)
    if _fast_targets(entries, loss, N, scored, Y):
        return Y, scored
    for t, e in enumerate(entries):
        if e is None:
            continue
        where = pointer("targets", t)
        if loss == "cross_entropy":
            if not isinstance(e, int) or isinstance(e, bool):
                errors.append((where, "must be a class index (an integer) or null for cross_entropy"))
            elif not 0 <= e < N:
                errors.append((where, f"class {e} is outside [0, {N}) (N = rows of U)"))
            else:
                Y[t, e] = 1.0
        elif isinstance(e, dict):                     # a binary vector
            values = _binary_target(e, t, N, loss, errors)
            if values is not None:
                Y[t] = values
        elif not isinstance(e, list) or len(e) != N:
            errors.append((where, f"must be a vector of {N} numbers or null for {loss}"))
        else:
            bad = [j for j, x in enumerate(e) if not _is_number(x)]
            if bad:
                errors.append((pointer("targets", t, bad[0]), "must be a finite JSON number"))
            elif loss == "binary_cross_entropy" and not all(0.0 <= x <= 1.0 for x in e):
                j = next(j for j, x in enumerate(e) if not 0.0 <= x <= 1.0)
                errors.append((pointer("targets", t, j), "must be in [0, 1] for binary_cross_entropy"))
            else:
                Y[t] = e
        if len(errors) >= 50:
            break
    return Y, scored


def _binary_target(e: dict, t: int, N: int, loss: str, errors: list) -> np.ndarray | None:
    """Target t sent as {"dtype": "float64", "shape": [N], "data": ...}, or None after
    recording what is wrong (pointers into /targets/t)."""
    values = binary_value(e, ("targets", t), errors, BinaryVector)
    if values is None:
        return None
    if len(values) != N:
        errors.append((pointer("targets", t), f"must have {N} entries, got shape {list(values.shape)}"))
        return None
    outside = np.flatnonzero((values < 0) | (values > 1))
    if loss == "binary_cross_entropy" and outside.size:
        errors.append((pointer("targets", t, "data"), f"element {int(outside[0])} is outside [0, 1] "
                                                      "for binary_cross_entropy"))
        return None
    return values


class ForwardIn(ProblemIn):
    """POST /v1/forward: the problem object (targets optional)."""


Include = Literal["b_h_terms", "jacobian_norms"]


class GradientsIn(ProblemIn):
    """POST /v1/gradients: the problem object (targets required) plus truncation and diagnostics."""
    targets: list[Any] = Field(description="T entries: a class index, a vector of N numbers, or null")
    truncate: PositiveInt | None = Field(None, description="K: keep only terms with t − k < K")
    include: list[Include] = Field(default_factory=list, description="optional diagnostics")
