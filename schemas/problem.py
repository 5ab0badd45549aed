"""The problem object every compute endpoint takes: a recurrent network (the lecture's RNN,
an LSTM or a GRU), one sequence or a batch, and its targets or the upstream gradient of a
layer alone. Validation yields the keyword arguments of the engine's Problem."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from . import layouts
from .arrays import depth, ranked, shaped
from .base import (BinarySequence, BinaryState, BinaryVector, Integer, Matrix, PositiveInt, StrictModel, Vector,
                   binary_value, check_limit, is_integer, matrix, vector)
from .errors import RequestInvalid, pointer
from .limits import Limits

Cell = Literal["rnn", "lstm", "gru"]
GruReset = Literal["after", "before"]
HiddenActivation = Literal["tanh", "sigmoid", "relu", "identity"]
OutputActivation = Literal["softmax", "sigmoid", "identity"]
LayoutName = Literal["lecture", "cs231n", "coursera", "pytorch", "min-char-rnn"]
LossName = Literal["cross_entropy", "binary_cross_entropy", "squared_error"]
Reduction = Literal["sum", "mean", "batch_mean"]
ParameterName = Literal["V", "W", "U", "b_h", "b_y", "h_init", "b_hn", "c_init", "inputs"]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GATE_NAMES = {"rnn": "", "lstm": "i, f, g, o", "gru": "r, z, n"}
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                "identity": "squared_error"}
LOSS_NEEDS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


Sequence = ranked({2: list[list[float]], 3: list[list[list[float]]]}, BinarySequence)


class BinaryInitialState(BinaryState):
    """An initial state: H or B×H in the lecture's layout; a layout may orient it otherwise
    (pytorch's h_0 is 1×B×H)."""
    ndim: ClassVar = (1, 2, 3)
    shape: list[Integer(ge=1)] = Field(description="[H] or [B, H] (a layout's own: pytorch [1, B, H])")


State = ranked({1: list[float], 2: list[list[float]], 3: list[list[list[float]]]}, BinaryInitialState)
Tokens = ranked({1: list[Integer(ge=0, le=2**31)], 2: list[list[Integer(ge=0, le=2**31)]]}, None)


class WeightsIn(StrictModel):
    V: Matrix = Field(description="G·H×D input-to-hidden weights (G gate blocks: 1 for rnn, "
                                  "4 for lstm (i, f, g, o), 3 for gru (r, z, n))")
    W: Matrix = Field(description="G·H×H hidden-to-hidden weights")
    # U, b_y, b_hn: absent or an array, never null (the schema's dependentRequired counts presence)
    U: Matrix = Field(None, description="N×H hidden-to-output weights (with b_y, or "
                                        "neither for a layer alone)")
    b_h: Vector = Field(description="G·H hidden biases")
    b_y: Vector = Field(None, description="N output biases")
    b_hn: Vector = Field(None, description="gru with gru_reset after: H biases of W_n h "
                                                  "inside r ⊙ (…); zeros when absent")


class ModelIn(StrictModel):
    weights: WeightsIn
    cell: Cell = "rnn"
    gru_reset: GruReset | None = Field(None, description="gru only: after (default) or before")
    hidden_activation: HiddenActivation = Field("tanh", description="rnn only; gated cells: tanh")
    output_activation: OutputActivation = "softmax"


class UpstreamIn(StrictModel):
    hidden: Sequence = Field(description="∂L/∂h_t from the layers above, the shape of `hidden`")


class ProblemIn(StrictModel):
    layout: LayoutName = Field("lecture", description=(
        "the names inside model.weights and the orientation of every array, in the request and "
        "the answer (schemas/layouts.py; bptt diagnostics stay the lecture's)"))
    model: ModelIn
    h_init: State | None = Field(None, description="H numbers, or B×H; zeros when absent")
    c_init: State | None = Field(None, description="lstm only: H numbers, or B×H; zeros when absent")
    inputs: Sequence | None = Field(
        None, description="T×D, or B×T×D, dense inputs (exactly one of inputs, tokens)")
    tokens: Tokens | None = Field(None, description="T, or B×T, integers in [0, D): x_t is one-hot")
    targets: list[Any] | None = Field(
        None, description="T (or B×T) entries: a class index (cross_entropy), a vector of N "
                          "numbers, or null")
    upstream: UpstreamIn | None = Field(None, description="layer mode: instead of targets")
    loss: LossName | None = Field(None, description="default follows output_activation")
    reduction: Reduction = "sum"

    _layout_sent: dict | None = PrivateAttr(None)     # the caller's weights, in their layout
    _layout_ctx: dict | None = PrivateAttr(None)      # what answers need to be mapped back
    _layout_gradients: dict | None = PrivateAttr(None)   # grade: submission.gradients as sent

    @model_validator(mode="wrap")
    @classmethod
    def _layout_weights(cls, data, handler):
        """In a layout other than the lecture's, model.weights has that layout's names."""
        layout = data.get("layout", "lecture") if isinstance(data, dict) else "lecture"
        if isinstance(layout, str) and layout != "lecture" and layout in layouts.LAYOUTS:
            return layouts.validate(data, handler)
        return handler(data)

    def respond(self, body: dict) -> dict:
        """An answer (forward or gradients body) in the request's layout."""
        if self._layout_ctx is None:
            return body
        return layouts.respond(layouts.LAYOUTS[self.layout], self.model.cell, body, self._layout_ctx)

    def arrays(self, limits: Limits, targets_required: bool = True) -> dict:
        """Check every shape against the others and every value's range (422 with pointers,
        413 over a size limit); the engine Problem's fields as float64 arrays."""
        if self.layout != "lecture":
            return layouts.arrays(self, limits, targets_required)
        errors: list[tuple] = []
        m, w = self.model, self.model.weights
        cell, out_act = m.cell, m.output_activation
        layer, head = self.upstream is not None, w.U is not None and w.b_y is not None
        _cell_rules(self, errors)
        loss = _loss_rules(self, head, targets_required, errors)
        # sizes first, so limits are checked before large arrays are built
        G = GATES[cell]
        H = _columns(w.W) if G > 1 else len(w.W)
        D, N = _columns(w.V), len(w.U) if w.U is not None else None
        seq = self.inputs if self.inputs is not None else self.tokens
        batched = seq is not None and depth(seq) == (3 if self.inputs is not None else 2)
        B = _length(seq) if batched else 1
        T = _length(seq[0] if batched and _length(seq) else seq) if seq is not None else 0
        where_T = "/inputs" if self.inputs is not None else "/tokens"
        for value, name, where in ((T, "T (sequence length)", where_T),
                                   (H, "H (hidden size)", "/model/weights/W"),
                                   (D, "D (input size)", "/model/weights/V"),
                                   (N or 0, "N (output size)", "/model/weights/U"),
                                   (B, "B (batch size)", where_T)):
            check_limit(value, getattr(limits, "max_" + name[0]), name, where)

        base = ("model", "weights")
        blocks = f"G·H = {G}·{H} rows: the {cell} cell's gate blocks {GATE_NAMES[cell]}" if G > 1 else ""
        W = matrix(w.W, base + ("W",), errors, rows_expected=G * H if G > 1 else None,
                   cols_expected=H or None, name=f"W ({blocks})" if G > 1 else "")
        V = matrix(w.V, base + ("V",), errors, rows_expected=G * H,
                   name=f"V ({blocks})" if G > 1 else "")
        U = matrix(w.U, base + ("U",), errors, cols_expected=H or None) if w.U is not None else None
        b_h = vector(w.b_h, base + ("b_h",), errors, G * H)
        b_y = vector(w.b_y, base + ("b_y",), errors, N) if w.b_y is not None and N else None
        b_hn = None
        if cell == "gru" and (m.gru_reset or "after") == "after":
            b_hn = vector(w.b_hn, base + ("b_hn",), errors, H) if w.b_hn is not None else np.zeros(H)
        sizes = {"H": H, "D": D, "T": T, **({"B": B} if batched else {})}
        h_init = _state(self.h_init, "h_init", batched, sizes, errors)
        c_init = _state(self.c_init, "c_init", batched, sizes, errors) if cell == "lstm" else None

        inputs = tokens = None
        if (self.inputs is None) == (self.tokens is None):
            errors.append(("", "give exactly one of inputs and tokens", "exactly_one"))
        elif self.inputs is not None:
            inputs = shaped(self.inputs, ("inputs",), errors, ("B", "T", "D") if batched else ("T", "D"),
                            dict(sizes)) if batched or isinstance(self.inputs, np.ndarray) \
                else matrix(self.inputs, ("inputs",), errors, cols_expected=D or None)
        else:
            tokens = _tokens(self.tokens, batched, sizes, errors)

        targets = scored = upstream = None
        have_sequence = (inputs is not None or tokens is not None) and T >= 1
        if self.targets is not None and have_sequence and not layer and head:
            # without a valid sequence T is unknown: "must have 0 entries" would mislead
            targets, scored = _batch_targets(self.targets, loss, T, N, errors, B) if batched \
                else _targets(self.targets, loss, T, N, errors)
        if layer and have_sequence:
            upstream = shaped(self.upstream.hidden, ("upstream", "hidden"), errors,
                              ("B", "T", "H") if batched else ("T", "H"), dict(sizes), what="upstream.hidden")
        if errors:
            raise RequestInvalid(errors)
        return {"weights": {"V": V, "W": W, "U": U, "b_h": b_h, "b_y": b_y, "h_init": h_init,
                            "c_init": c_init, "b_hn": b_hn},
                "cell": cell, "gru_reset": m.gru_reset or "after",
                "hidden_activation": m.hidden_activation, "output_activation": out_act,
                "inputs": inputs, "tokens": tokens, "targets": targets, "scored": scored,
                "upstream": upstream, "loss": loss if targets is not None else None,
                "reduction": self.reduction}


def _cell_rules(req: ProblemIn, errors: list) -> None:
    """Fields that go only with a cell (JSON Schema states these with if/then)."""
    m = req.model
    cell, reset = m.cell, m.gru_reset or "after"
    if cell != "rnn" and m.hidden_activation != "tanh":
        errors.append(("/model/hidden_activation", f"the {cell} cell's activations are fixed (σ gates, "
                                                   f"tanh); hidden_activation must be tanh or left out",
                       "depends"))
    if m.gru_reset is not None and cell != "gru":
        errors.append(("/model/gru_reset", f"gru_reset applies to the gru cell only (cell is {cell})",
                       "depends"))
    if m.weights.b_hn is not None and (cell != "gru" or reset != "after"):
        errors.append(("/model/weights/b_hn", "b_hn exists only in the gru cell with gru_reset after "
                                              "(with before, W_n multiplies r ⊙ h and has no bias of its own)",
                       "depends"))
    if req.c_init is not None and cell != "lstm":
        errors.append(("/c_init", f"only the lstm cell has a cell state (cell is {cell})", "depends"))


def _loss_rules(req: ProblemIn, head: bool, targets_required: bool, errors: list) -> str | None:
    """Targets or upstream (layer mode), the output layer they need, and the loss (None in
    layer mode)."""
    w, sent = req.model.weights, req.model_fields_set
    if (w.U is None) != (w.b_y is None):
        missing = "b_y" if w.b_y is None else "U"
        errors.append((f"/model/weights/{missing}", "required field is missing: U and b_y come together, "
                                                    "both (an output layer) or neither (a layer alone, "
                                                    "with upstream)", "required"))
    if req.upstream is not None:
        if req.targets is not None:
            errors.append(("/targets", "send targets or upstream, not both: upstream (∂L/∂h_t) replaces "
                                       "the loss", "depends"))
        for name in ("loss", "reduction"):
            if name in sent:
                errors.append((f"/{name}", f"layer mode (upstream) has no {name}: L = Σ_t ⟨upstream_t, h_t⟩",
                               "depends"))
        return None
    out_act = req.model.output_activation
    loss = req.loss or DEFAULT_LOSS[out_act]
    if head and loss in LOSS_NEEDS and LOSS_NEEDS[loss] != out_act:
        errors.append((pointer("loss"), f"{loss} needs output_activation {LOSS_NEEDS[loss]}, "
                                        f"got {out_act}", "loss_activation"))
    if (w.U is None) != (w.b_y is None):
        return loss
    if not head and req.targets is not None:
        errors.append(("/targets", "targets need an output layer: send model.weights.U and b_y "
                                   "(or upstream for a layer alone)", "depends"))
    elif not head and targets_required:
        errors.append(("/model/weights/U", "required field is missing (without an output layer, send "
                                           "upstream: a layer alone)", "required"))
    elif head and req.targets is None and targets_required:
        errors.append(("/targets", "required field is missing (or upstream, for a layer alone)", "required"))
    return loss


def _length(x) -> int:
    return x.shape[0] if isinstance(x, np.ndarray) else len(x)


def _state(value, name: str, batched: bool, sizes: dict, errors: list) -> np.ndarray:
    """An initial state: H numbers shared by every sequence, or B × H (batches only); zeros(H)."""
    if value is None:
        return np.zeros(sizes["H"])
    if depth(value) == 1:
        return vector(value, (name,), errors, sizes["H"])
    if not batched:
        errors.append((f"/{name}", f"one sequence takes H = {sizes['H']} numbers; B×H needs a batch "
                                   "(inputs B×T×D or tokens B×T)", "shape"))
        return None
    return shaped(value, (name,), errors, ("B", "H"), dict(sizes))


def _tokens(values, batched: bool, sizes: dict, errors: list) -> np.ndarray | None:
    T, D = sizes["T"], sizes["D"]
    if T == 0:
        errors.append(("/tokens/0" if batched else "/tokens", "must have at least one token (T ≥ 1)", "size"))
        return None
    if batched:
        for b, row in enumerate(values):
            if len(row) != T:
                errors.append((pointer("tokens", b), f"sequence {b} has {len(row)} tokens, expected T = {T} "
                                                     "(pad shorter sequences; give their padded steps null "
                                                     "targets)", "shape" if row else "size"))
                return None
    tokens = np.array(values, dtype=np.int64)
    if tokens.size and tokens.min() >= 0 and tokens.max() < D:
        return tokens
    bad = np.argwhere((tokens < 0) | (tokens >= max(D, 1)))
    if len(bad):
        errors.append((pointer("tokens", *map(int, bad[0])),
                       f"token {int(tokens[tuple(bad[0])])} is outside [0, {D}) (D = columns of V)",
                       "token_range"))
    return None


def _batch_targets(entries: list, loss: str, T: int, N: int, errors: list, B: int):
    """B × T × N targets and the B × T scored mask: each sequence's as _targets checks them,
    padding sequences with only null targets allowed."""
    if len(entries) != B:
        errors.append(("/targets", f"must have B = {B} entries (one list of T targets per sequence), "
                                   f"got {len(entries)}", "shape" if entries else "size"))
        return None, None
    Y, scored = np.zeros((B, T, N)), np.zeros((B, T), dtype=bool)
    for b, row in enumerate(entries):
        flat = loss != "cross_entropy" and isinstance(row, list) and row and all(map(_is_real, row))
        if not isinstance(row, list) or flat:      # flat: one step's vector target, not a sequence's T
            errors.append((pointer("targets", b), f"must be the T = {T} targets of sequence {b} "
                                                  "(the inputs are a batch: targets are B×T)", "shape"))
            return None, None
        y, s = _targets(row, loss, T, N, errors, at=("targets", b), all_null_ok=True)
        if y is None:
            return None, None
        Y[b], scored[b] = y, s
    if not scored.any():
        errors.append(("/targets", "every target is null: at least one step must be scored "
                                   "(omit targets for no loss)", "all_null"))
        return None, None
    return Y, scored


def _columns(m) -> int:
    """Columns of a matrix given as a list of rows or as a decoded binary array."""
    if isinstance(m, np.ndarray):
        return m.shape[1]
    return len(m[0]) if m else 0


def _is_real(x) -> bool:
    """A JSON number (finite or not), not a boolean."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _fast_targets(entries: list, loss: str, N: int, scored: np.ndarray, Y: np.ndarray) -> bool:
    """Fill Y in bulk when every target is valid (the common case); False leaves the
    entry-by-entry checks to find and point at what is wrong."""
    given = entries if None not in entries else [e for e in entries if e is not None]
    if loss == "cross_entropy":
        # type(True) is bool, not int: booleans fall through to the checks that name them
        kinds = set(map(type, given))
        if not given or not kinds <= {int, float}:
            return False
        if kinds == {int}:
            if min(given) < 0 or max(given) >= N:
                return False
            classes = given
        else:                                    # integral floats (numpy's tolist()): one vector check
            values = np.array(given, dtype=np.float64)
            if not (np.isfinite(values).all() and (values == np.floor(values)).all()
                    and values.min() >= 0 and values.max() < N):
                return False
            classes = values.astype(np.int64)
        steps = np.arange(len(entries)) if len(given) == len(entries) else np.flatnonzero(scored)
        Y[steps, classes] = 1.0
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


def _targets(entries: list, loss: str, T: int, N: int, errors: list, at: tuple = ("targets",),
             all_null_ok: bool = False):
    """T×N target array (class indices one-hot) and the scored-step mask; `at` is where the
    entries are in the body (one sequence of a batch may be all null: padding)."""
    if len(entries) != T:
        errors.append((pointer(*at), f"must have {T} entries (one per step), got {len(entries)}",
                       "shape" if entries else "size"))
        return None, None
    Y = np.zeros((T, N))
    present = [e is not None for e in entries] if None in entries else None
    if present is not None and not any(present) and not all_null_ok:
        errors.append((pointer(*at), "every target is null: at least one step must be scored "
                                   "(omit targets for no loss)", "all_null"))
        return None, None
    scored = np.ones(T, dtype=bool) if present is None else np.array(present, dtype=bool)
    try:
        if _fast_targets(entries, loss, N, scored, Y):
            return Y, scored
    except OverflowError:                         # an integer beyond float64: the checks name it
        pass
    for t, e in enumerate(entries):
        if e is None:
            continue
        where = pointer(*at, t)
        if loss == "cross_entropy":
            if is_integer(e) and e >= 0:
                if e < N:
                    Y[t, int(e)] = 1.0
                else:
                    errors.append((where, f"class {e:.0f} is outside [0, {N}) (N = rows of U)", "class_range"))
            elif is_integer(e):
                errors.append((where, f"class {e:.0f} is outside [0, {N}): a class index is ≥ 0", "range"))
            elif isinstance(e, (list, dict)):         # a vector target: it fits another loss
                errors.append((where, "must be a class index (an integer) or null for cross_entropy",
                               "target_kind"))
            else:
                errors.append((where, "must be a class index (an integer) or null for cross_entropy",
                               "type"))
        elif isinstance(e, dict):                     # a binary vector
            values = _binary_target(e, (*at, t), N, loss, errors)
            if values is not None:
                Y[t] = values
        elif not isinstance(e, list):
            errors.append((where, f"must be a vector of {N} numbers or null for {loss}",
                           "target_kind" if is_integer(e) and e >= 0 else "type"))
        elif len(e) != N:
            errors.append((where, f"must be a vector of {N} numbers or null for {loss}",
                           "shape" if e else "size"))
        else:
            bad = [j for j, x in enumerate(e) if not _is_number(x)]
            if bad:
                errors.append((pointer(*at, t, bad[0]), "must be a finite JSON number",
                               "range" if isinstance(e[bad[0]], (int, float)) and
                               not isinstance(e[bad[0]], bool) else "type"))
            elif loss == "binary_cross_entropy" and not all(0.0 <= x <= 1.0 for x in e):
                j = next(j for j, x in enumerate(e) if not 0.0 <= x <= 1.0)
                errors.append((pointer(*at, t, j), "must be in [0, 1] for binary_cross_entropy",
                               "target_kind"))
            else:
                Y[t] = e
        if len(errors) >= 50:
            break
    return Y, scored


def _binary_target(e: dict, at: tuple, N: int, loss: str, errors: list) -> np.ndarray | None:
    """Target t sent as {"dtype": "float64", "shape": [N], "data": ...}, or None after
    recording what is wrong (pointers into /targets/t)."""
    values = binary_value(e, at, errors, BinaryVector)
    if values is None:
        return None
    if len(values) != N:
        errors.append((pointer(*at), f"must have {N} entries, got shape {list(values.shape)}",
                       "shape"))
        return None
    outside = np.flatnonzero((values < 0) | (values > 1))
    if loss == "binary_cross_entropy" and outside.size:
        errors.append((pointer(*at, "data"), f"element {int(outside[0])} is outside [0, 1] "
                                                      "for binary_cross_entropy", "target_kind"))
        return None
    return values


class ForwardIn(ProblemIn):
    """POST /v1/forward: the problem object (targets optional)."""


Include = Literal["b_h_terms", "jacobian_norms"]


class GradientsIn(ProblemIn):
    """POST /v1/gradients: the problem object (targets or upstream required) plus truncation
    and diagnostics."""
    truncate: PositiveInt | None = Field(None, description="K: keep only terms with t − k < K")
    include: list[Include] = Field(default_factory=list, description="optional diagnostics")
