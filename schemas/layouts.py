"""Layouts: the names and orientations other courses and frameworks give the same arrays.

A layout is data (LAYOUTS below): the cells it has; per cell its weight names with symbolic
shapes and the fields that fix H, D and N; its "pieces", each mapping a block of one of the
caller's arrays onto a block of one canonical array (V, W, U, b_h, b_y, b_hn) with an optional
transpose; and the axis order of every per-step array and initial state. Everything else here
is generic:

  to_canonical    adds every piece into its canonical block (so PyTorch's two biases sum);
  from_canonical  copies each canonical block back into every piece that took from it (so
                  both PyTorch biases receive the gradient of their sum, and a Coursera
                  gate's Wf receives [∂L/∂W_f | ∂L/∂V_f]);
  index maps      which canonical element each element of a layout array is (gradcheck).

The engine, the views and the diagnoses never see a layout: ProblemIn.arrays maps a request
onto the lecture's problem here, and `respond` maps every answer back. Adding a layout is one
entry of LAYOUTS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pydantic import Field, ValidationError, create_model

from .arrays import depth, shaped
from .base import Matrix, StrictModel, Vector, errors_of, matrix
from .errors import RequestInvalid, pointer

CANONICAL = ("V", "W", "U", "b_h", "b_y", "b_hn")
# the canonical shapes, symbolically
CANON_SHAPES = {"V": ("G·H", "D"), "W": ("G·H", "H"), "U": ("N", "H"), "b_h": ("G·H",),
                "b_y": ("N",), "b_hn": ("H",)}
LECTURE_GATES = {"rnn": ("",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
# per-step arrays and initial states, canonical axes (batched; one sequence drops B)
CANON_AXES = {"inputs": ("B", "T", "D"), "hidden": ("B", "T", "H"), "outputs": ("B", "T", "N"),
              "state": ("B", "H")}
STATE_FIELDS = ("h_init", "c_init")


def size_of(expr: str, sizes: dict) -> int:
    """A symbolic extent ("G·H", "H+D", "1") for the sizes known."""
    return int(eval(expr.replace("·", "*"), {"__builtins__": {}}, dict(sizes)))   # noqa: S307 (constants here)


def _slice(expr: str, sizes: dict) -> slice:
    if expr == ":":
        return slice(None)
    lo, hi = expr.split(":")
    return slice(size_of(lo, sizes), size_of(hi, sizes))


@dataclass(frozen=True)
class Piece:
    """Block `block` of the caller's array `field` (one "lo:hi" or ":" per axis) is block
    `to` of canonical array `canon`, transposed first if `transpose`."""
    field: str
    block: tuple[str, ...]
    canon: str
    to: tuple[str, ...]
    transpose: bool = False

    def source(self, sizes):
        return tuple(_slice(e, sizes) for e in self.block)

    def target(self, sizes):
        return tuple(_slice(e, sizes) for e in self.to)


def gates(field: str, canon: str, order: str, G: int, transpose: bool = False) -> list[Piece]:
    """One piece per gate: column block j of the caller's `field` (gates in `order`, e.g.
    "ifog") is row block k of canonical `canon` (gates in the lecture's order)."""
    lecture = {4: "ifgo", 3: "rzn", 1: "x"}[G]
    return [Piece(field, (":", f"{order.index(g)}*H:{order.index(g) + 1}*H"), canon,
                  (f"{k}*H:{k + 1}*H", ":"), transpose) for k, g in enumerate(lecture)]


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    cells: tuple[str, ...]
    weights: dict          # cell -> {field: symbolic shape}
    fixes: dict            # cell -> {size: (field, axis)}: where H, D and N are read
    pieces: dict           # cell -> [Piece]
    output: dict           # cell -> (the output layer's two fields): both or neither
    axes: dict             # kind (inputs, hidden, outputs, state) -> the caller's axes, batched
    axes_one: dict | None  # the same for one sequence; None: always batched
    batches: bool = True   # False: one sequence only
    shared_state: str = "H"            # the state's axes when one state is shared by every sequence
    symbols: dict = field(default_factory=dict)   # how the layout names H, D, N, B, T
    gru_after_only: bool = False
    describe: dict = field(default_factory=dict)  # field -> a sentence for openapi

    def fields(self, cell: str) -> dict:
        return self.weights[cell]


def _vector_gates(field, canon, order, G, column=False):
    """Bias gate blocks: a vector (G·H) or a column (G·H × 1)."""
    lecture = {4: "ifgo", 3: "rzn", 1: "x"}[G]
    out = []
    for k, gate in enumerate(lecture):
        j = order.index(gate) if G > 1 else 0
        block = (f"{j}*H:{j + 1}*H",) + ((":",) if column else ())
        out.append(Piece(field, block, canon, (f"{k}*H:{k + 1}*H",)))
    return out


def _cs231n(cell: str) -> list[Piece]:
    G = {"rnn": 1, "lstm": 4}[cell]
    order = "ifog" if G == 4 else "x"
    return (gates("Wx", "V", order, G, transpose=True) + gates("Wh", "W", order, G, transpose=True)
            + _vector_gates("b", "b_h", order, G)
            + [Piece("W_vocab", (":", ":"), "U", (":", ":"), True),
               Piece("b_vocab", (":",), "b_y", (":",))])


def _coursera(cell: str) -> list[Piece]:
    if cell == "rnn":
        return [Piece("Wax", (":", ":"), "V", (":", ":")), Piece("Waa", (":", ":"), "W", (":", ":")),
                Piece("ba", (":", ":"), "b_h", (":",)), Piece("Wya", (":", ":"), "U", (":", ":")),
                Piece("by", (":", ":"), "b_y", (":",))]
    out = []
    for k, gate in enumerate("ifco"):          # Coursera's c is the lecture's g, block k
        rows = f"{k}*H:{k + 1}*H"
        out += [Piece(f"W{gate}", (":", "0:H"), "W", (rows, ":")),
                Piece(f"W{gate}", (":", "H:H+D"), "V", (rows, ":")),
                Piece(f"b{gate}", (":", ":"), "b_h", (rows,))]
    return out + [Piece("Wy", (":", ":"), "U", (":", ":")), Piece("by", (":", ":"), "b_y", (":",))]


def _pytorch(cell: str) -> list[Piece]:
    out = [Piece("weight_ih_l0", (":", ":"), "V", (":", ":")),
           Piece("weight_hh_l0", (":", ":"), "W", (":", ":")),
           Piece("bias_ih_l0", (":",), "b_h", (":",))]
    if cell == "gru":                           # the n block of bias_hh sits inside r ⊙ (…)
        out += [Piece("bias_hh_l0", ("0:2*H",), "b_h", ("0:2*H",)),
                Piece("bias_hh_l0", ("2*H:3*H",), "b_hn", (":",))]
    else:
        out.append(Piece("bias_hh_l0", (":",), "b_h", (":",)))
    return out + [Piece("fc.weight", (":", ":"), "U", (":", ":")), Piece("fc.bias", (":",), "b_y", (":",))]


def _min_char_rnn(cell: str) -> list[Piece]:
    return [Piece("Wxh", (":", ":"), "V", (":", ":")), Piece("Whh", (":", ":"), "W", (":", ":")),
            Piece("Why", (":", ":"), "U", (":", ":")), Piece("bh", (":", ":"), "b_h", (":",)),
            Piece("by", (":", ":"), "b_y", (":",))]


LECTURE_AXES = {"inputs": ("B", "T", "D"), "hidden": ("B", "T", "H"), "outputs": ("B", "T", "N"),
                "state": ("B", "H")}
LECTURE_ONE = {"inputs": ("T", "D"), "hidden": ("T", "H"), "outputs": ("T", "N"), "state": ("H",)}
_COURSERA_LSTM = {f"W{g}": ("H", "H+D") for g in "fico"} | {f"b{g}": ("H", "1") for g in "fico"} \
    | {"Wy": ("N", "H"), "by": ("N", "1")}

LAYOUTS: dict[str, Layout] = {
    "lecture": Layout(
        "lecture", "the lecture's names (V, W, U, b_h, b_y; b_hn)", ("rnn", "lstm", "gru"),
        weights={c: {"V": ("G·H", "D"), "W": ("G·H", "H"), "U": ("N", "H"), "b_h": ("G·H",),
                     "b_y": ("N",)} | ({"b_hn": ("H",)} if c == "gru" else {})
                 for c in ("rnn", "lstm", "gru")},
        fixes={}, pieces={}, output={c: ("U", "b_y") for c in ("rnn", "lstm", "gru")},
        axes=LECTURE_AXES, axes_one=LECTURE_ONE, shared_state="H"),
    "cs231n": Layout(
        "cs231n", "CS231n assignment 3 (rnn_layers.py): row vectors, LSTM gates i, f, o, g",
        ("rnn", "lstm"),
        weights={c: {"Wx": ("D", "G·H"), "Wh": ("H", "G·H"), "b": ("G·H",), "W_vocab": ("H", "N"),
                     "b_vocab": ("N",)} for c in ("rnn", "lstm")},
        fixes={c: {"H": ("Wh", 0), "D": ("Wx", 0), "N": ("W_vocab", 1)} for c in ("rnn", "lstm")},
        pieces={c: _cs231n(c) for c in ("rnn", "lstm")},
        output={c: ("W_vocab", "b_vocab") for c in ("rnn", "lstm")},
        axes=LECTURE_AXES, axes_one=LECTURE_ONE,
        describe={"Wx": "D×G·H = Vᵀ (x.dot(Wx)); lstm column blocks i, f, o, g",
                  "Wh": "H×G·H = Wᵀ (prev_h.dot(Wh)); lstm column blocks i, f, o, g",
                  "b": "G·H = b_h; lstm blocks i, f, o, g",
                  "W_vocab": "H×N = Uᵀ (temporal_affine_forward)", "b_vocab": "N = b_y"}),
    "coursera": Layout(
        "coursera", "Coursera Deep Learning Specialization, course 5 week 1: column vectors, "
                    "time last", ("rnn", "lstm"),
        weights={"rnn": {"Wax": ("H", "D"), "Waa": ("H", "H"), "ba": ("H", "1"), "Wya": ("N", "H"),
                         "by": ("N", "1")},
                 "lstm": _COURSERA_LSTM},
        fixes={"rnn": {"H": ("Waa", 0), "D": ("Wax", 1), "N": ("Wya", 0)},
               "lstm": {"H": ("Wf", 0), "D": ("Wf", 1), "N": ("Wy", 0)}},
        pieces={c: _coursera(c) for c in ("rnn", "lstm")},
        output={"rnn": ("Wya", "by"), "lstm": ("Wy", "by")},
        axes={"inputs": ("D", "B", "T"), "hidden": ("H", "B", "T"), "outputs": ("N", "B", "T"),
              "state": ("H", "B")},
        axes_one=None, shared_state="H,1",
        symbols={"H": "n_a", "D": "n_x", "N": "n_y", "B": "m", "T": "T_x"},
        describe={"Wax": "n_a×n_x = V", "Waa": "n_a×n_a = W", "ba": "n_a×1 = b_h",
                  "Wya": "n_y×n_a = U", "by": "n_y×1 = b_y",
                  **{f"W{g}": f"n_a×(n_a+n_x): gate {g} acting on [a_prev; x_t]: its first n_a "
                              f"columns are the {'g' if g == 'c' else g} block of W, the rest of V"
                     for g in "fico"},
                  **{f"b{g}": f"n_a×1: the {'g' if g == 'c' else g} block of b_h" for g in "fico"},
                  "Wy": "n_y×n_a = U"}),
    "pytorch": Layout(
        "pytorch", "torch.nn.RNN/LSTM/GRU (batch_first=True, one layer) and an nn.Linear head "
                   "named fc", ("rnn", "lstm", "gru"),
        weights={c: {"weight_ih_l0": ("G·H", "D"), "weight_hh_l0": ("G·H", "H"),
                     "bias_ih_l0": ("G·H",), "bias_hh_l0": ("G·H",), "fc.weight": ("N", "H"),
                     "fc.bias": ("N",)} for c in ("rnn", "lstm", "gru")},
        fixes={c: {"H": ("weight_hh_l0", 1), "D": ("weight_ih_l0", 1), "N": ("fc.weight", 0)}
               for c in ("rnn", "lstm", "gru")},
        pieces={c: _pytorch(c) for c in ("rnn", "lstm", "gru")},
        output={c: ("fc.weight", "fc.bias") for c in ("rnn", "lstm", "gru")},
        axes=LECTURE_AXES | {"state": ("1", "B", "H")},
        axes_one=LECTURE_ONE | {"state": ("1", "H")}, shared_state="1,H", gru_after_only=True,
        describe={"weight_ih_l0": "G·H×D = V (lstm gates i, f, g, o; gru r, z, n)",
                  "weight_hh_l0": "G·H×H = W", "bias_ih_l0": "G·H: b_h is bias_ih + bias_hh "
                  "(gru: the n block of bias_ih is b_n)", "bias_hh_l0": "G·H (gru: its n block "
                  "is b_hn, inside r ⊙ (…))", "fc.weight": "N×H = U", "fc.bias": "N = b_y"}),
    "min-char-rnn": Layout(
        "min-char-rnn", "Karpathy's min-char-rnn.py: column vectors, one sequence", ("rnn",),
        weights={"rnn": {"Wxh": ("H", "D"), "Whh": ("H", "H"), "Why": ("N", "H"), "bh": ("H", "1"),
                         "by": ("N", "1")}},
        fixes={"rnn": {"H": ("Whh", 0), "D": ("Wxh", 1), "N": ("Why", 0)}},
        pieces={"rnn": _min_char_rnn("rnn")}, output={"rnn": ("Why", "by")},
        axes=LECTURE_AXES, axes_one=LECTURE_ONE | {"state": ("H", "1")}, batches=False, shared_state="H,1",
        symbols={"D": "V", "N": "V"},
        describe={"Wxh": "H×V = V (V: the vocabulary size)", "Whh": "H×H = W", "Why": "V×H = U",
                  "bh": "H×1 = b_h", "by": "V×1 = b_y"}),
}
NAMES = tuple(LAYOUTS)
GATE_COUNT = {"rnn": 1, "lstm": 4, "gru": 3}


# --- the request: the caller's arrays onto the canonical problem ---

def _shape_text(shape: tuple, sizes: dict, symbols: dict) -> str:
    def show(e):
        text = e
        for s, name in symbols.items():
            if name != s:
                text = text.replace(s, name) if len(s) == 1 else text
        return text
    values = []
    for e in shape:
        try:
            values.append(str(size_of(e, sizes)))
        except (NameError, TypeError, ZeroDivisionError):
            values.append(show(e))
    return f"[{', '.join(show(e) for e in shape)}] = [{', '.join(values)}]" \
        if values != [show(e) for e in shape] else f"[{', '.join(values)}]"


def _array(value, where: tuple, rank: int, errors: list) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    try:
        a = np.array(value, dtype=np.float64)
        if a.ndim == rank and 0 not in a.shape:
            return a
    except (ValueError, TypeError):
        pass
    if rank == 2:
        return matrix(value, where, errors)        # names the ragged row
    errors.append((pointer(*where), "must not be empty" if not value else "must be an array of numbers",
                   "size" if not value else "type"))
    return None


def _solve(expr: str, n: int, unknown: str, sizes: dict) -> int | None:
    """The extent `unknown` that makes `expr` equal n (expr is linear in it), or None."""
    f0, f1 = size_of(expr, {**sizes, unknown: 0}), size_of(expr, {**sizes, unknown: 1})
    if f1 == f0 or (n - f0) % (f1 - f0):
        return None
    x = (n - f0) // (f1 - f0)
    return x if x >= 1 else None


def weights_to_canonical(layout: Layout, cell: str, sent: dict, errors: list):
    """(canonical weights, sizes, sent arrays) from the caller's weights {field: list or
    ndarray}; shape errors point at the caller's fields."""
    spec = layout.fields(cell)
    base = ("model", "weights")
    G = GATE_COUNT[cell]
    arrays = {}
    for name, shape in spec.items():
        if sent.get(name) is not None:
            a = _array(sent[name], (*base, name), len(shape), errors)
            if a is not None and a.ndim != len(shape):
                errors.append((pointer(*base, name), f"{name} must have shape "
                                                     f"[{', '.join(shape)}]: {len(shape)} axes, got {a.ndim}", "shape"))
                a = None
            arrays[name] = a
    sizes: dict = {"G": G}
    for symbol, (name, axis) in layout.fixes[cell].items():
        a = arrays.get(name)
        if a is None:
            continue
        value = _solve(spec[name][axis], a.shape[axis], symbol, sizes)
        if value is None:
            errors.append((pointer(*base, name), f"{name} must have shape {_shape_text(spec[name], sizes, layout.symbols)}"
                                                 f" ({layout.describe.get(name, '')}), got {list(a.shape)}", "shape"))
            return None, sizes, arrays
        sizes[symbol] = value
    fixers: dict = {}
    for symbol, (name, _) in layout.fixes[cell].items():
        fixers.setdefault(name, []).append(symbol)
    # fields that fix a size first: a size read from a wrong field is not held against others
    for name in sorted(arrays, key=lambda n: n not in fixers):
        a = arrays[name]
        if a is None:
            continue
        try:
            want = tuple(size_of(e, sizes) for e in spec[name])
        except NameError:
            continue
        if a.shape != want:
            what = layout.describe.get(name)
            errors.append((pointer(*base, name), f"{name} must have shape {_shape_text(spec[name], sizes, layout.symbols)}"
                                                 + (f" ({what})" if what else "") + f", got {list(a.shape)}", "shape"))
            for symbol in fixers.get(name, ()):
                if symbol != "H":
                    sizes.pop(symbol, None)
    if errors or any(a is None for a in arrays.values()):
        return None, sizes, arrays
    canon: dict = {}
    out_names = layout.output[cell]
    head = all(arrays.get(n) is not None for n in out_names)
    for piece in layout.pieces[cell]:
        if piece.field not in arrays:
            continue
        if piece.canon not in canon:
            try:
                shape = tuple(size_of(e, sizes) for e in CANON_SHAPES[piece.canon])
            except NameError:            # N unknown: half an output layer (arrays() says so)
                continue
            canon[piece.canon] = np.zeros(shape)
        block = arrays[piece.field][piece.source(sizes)]
        if piece.transpose:
            block = block.T
        target = canon[piece.canon][piece.target(sizes)]
        target += block.reshape(target.shape)
    if not head:
        canon.pop("U", None), canon.pop("b_y", None)
    return canon, sizes, arrays


def weights_from_canonical(layout: Layout, cell: str, grads: dict, sizes: dict, shapes: dict) -> dict:
    """The caller's fields (with the shapes they sent) from canonical gradients: every piece
    receives its canonical block."""
    out = {}
    for piece in layout.pieces[cell]:
        if piece.field not in shapes or piece.canon not in grads:
            continue
        if piece.field not in out:
            out[piece.field] = np.zeros(shapes[piece.field])
        target = out[piece.field][piece.source(sizes)]
        block = grads[piece.canon][piece.target(sizes)]
        shape = target.T.shape if piece.transpose else target.shape
        block = block.reshape(shape)
        target[...] = block.T if piece.transpose else block
    return {name: out[name] for name in layout.fields(cell) if name in out}


# --- per-step arrays and initial states ---

def _named(axes: tuple, symbols: dict) -> tuple:
    return tuple(symbols.get(a, a) for a in axes)


def step_to_canonical(a: np.ndarray, axes: tuple, canon: tuple) -> np.ndarray:
    """An array with the caller's axes (names; "1": an axis of one) in the canonical order."""
    keep = [i for i, x in enumerate(axes) if x != "1"]
    a = a.reshape([a.shape[i] for i in keep])
    names = [axes[i] for i in keep]
    return np.ascontiguousarray(np.transpose(a, [names.index(x) for x in canon]))


def step_from_canonical(a: np.ndarray, axes: tuple, canon: tuple) -> np.ndarray:
    names = [x for x in axes if x != "1"]
    a = np.transpose(a, [canon.index(x) for x in names])
    shape = [a.shape[names.index(x)] if x != "1" else 1 for x in axes]
    return np.ascontiguousarray(a.reshape(shape))


def _kind_axes(layout: Layout, kind: str, batched: bool):
    table = layout.axes if batched or layout.axes_one is None else layout.axes_one
    return table[kind], (CANON_AXES if batched else LECTURE_ONE)[kind]


def state_axes(layout: Layout, batched: bool, shared: bool):
    """(the caller's axes, canonical axes) of an initial state."""
    if shared:
        return tuple(layout.shared_state.split(",")), ("H",)
    return _kind_axes(layout, "state", batched)


# --- the answer ---

def respond(layout: Layout, cell: str, body: dict, ctx: dict) -> dict:
    """An answer of /v1/forward or /v1/gradients in the layout's names and orientations
    (`bptt` stays the lecture's)."""
    batched = ctx["batched"]
    out = dict(body)
    for name, kind in (("outputs", "outputs"), ("hidden", "hidden"), ("cell", "hidden")):
        if out.get(name) is not None:
            mine, canon = _kind_axes(layout, kind, batched)
            out[name] = step_from_canonical(np.asarray(out[name]), mine, canon)
    grads = out.get("gradients")
    if grads is not None:
        mapped = weights_from_canonical(layout, cell, grads, ctx["sizes"], ctx["shapes"])
        for name in ("h_init", "c_init"):
            if name in grads:
                mine, canon = state_axes(layout, batched, grads[name].ndim == 1)
                mapped[name] = step_from_canonical(grads[name], mine, canon)
        if "inputs" in grads:
            mine, canon = _kind_axes(layout, "inputs", batched)
            mapped["inputs"] = step_from_canonical(grads["inputs"], mine, canon)
        out["gradients"] = mapped
    return out


# --- gradcheck: which canonical element each element of a layout array is ---

def index_map(layout: Layout, cell: str, name: str, ctx: dict, canon_shapes: dict):
    """(canonical names, canonical flat indices), each with the shape of the caller's `name`:
    element e of the caller's array is element flat[e] of canonical array names[e]."""
    if name in ("h_init", "c_init", "inputs"):
        shape = canon_shapes[name]
        idx = np.arange(int(np.prod(shape))).reshape(shape)
        if name == "inputs":
            mine, canon = _kind_axes(layout, "inputs", ctx["batched"])
        else:
            mine, canon = state_axes(layout, ctx["batched"], len(shape) == 1)
        flat = step_from_canonical(idx, mine, canon)
        return np.full(flat.shape, name, dtype=object), flat
    shape = ctx["shapes"][name]
    names = np.full(shape, None, dtype=object)
    flat = np.full(shape, -1, dtype=np.int64)
    sizes = ctx["sizes"]
    for piece in layout.pieces[cell]:
        if piece.field != name or piece.canon not in canon_shapes:
            continue
        cshape = canon_shapes[piece.canon]
        idx = np.arange(int(np.prod(cshape))).reshape(cshape)[piece.target(sizes)]
        target = flat[piece.source(sizes)]
        block = idx.reshape(target.T.shape if piece.transpose else target.shape)
        target[...] = block.T if piece.transpose else block
        names[piece.source(sizes)] = piece.canon
    return names, flat


def parameter_names(layout: Layout, cell: str) -> tuple[str, ...]:
    """What gradcheck may check in this layout, in order (seeds use the position)."""
    return tuple(layout.fields(cell)) + ("h_init", "c_init", "inputs")




# --- validation of a request in a layout (ProblemIn calls these) ---

_MODELS: dict = {}


def weights_model(layout: Layout, cell: str):
    """The pydantic model of `model.weights` in a layout and cell: its names (unknown ones
    refused), each a matrix or vector of JSON numbers or a binary array."""
    key = (layout.name, cell)
    if key not in _MODELS:
        head = set(layout.output[cell])
        fields = {}
        for i, (name, shape) in enumerate(layout.fields(cell).items()):
            typ = Matrix if len(shape) == 2 else Vector
            text = f"{'×'.join(shape)}" + (f": {layout.describe[name]}" if name in layout.describe else "")
            fields[f"f{i}"] = ((typ | None, Field(None, alias=name, description=text)) if name in head
                               else (typ, Field(alias=name, description=text)))
        title = "".join(p.capitalize() for p in layout.name.replace("-", "_").split("_"))
        _MODELS[key] = create_model(f"{title}{cell.capitalize()}Weights", __base__=StrictModel, **fields)
    return _MODELS[key]


PLACEHOLDER = {"V": [[0.0]], "W": [[0.0]], "b_h": [0.0]}


def validate(data: dict, handler):
    """ProblemIn's validation of a body whose layout is not the lecture's: model.weights in
    the layout's names (pointers as sent), the rest as ProblemIn has it. Returns the model,
    with the caller's weights kept for arrays()."""
    layout = LAYOUTS[data["layout"]]
    model = data.get("model")
    errors, sent, grads = [], None, None
    if isinstance(model, dict) and isinstance(model.get("weights"), dict):
        cell = model.get("cell", "rnn")
        cell = cell if isinstance(cell, str) else None          # not a string: ModelIn says so
        if cell in layout.cells:
            try:
                parsed = weights_model(layout, cell).model_validate(model["weights"])
                sent = {f.alias: getattr(parsed, n) for n, f in type(parsed).model_fields.items()}
            except ValidationError as exc:
                errors += [_lecture_name(e, layout, cell) for e in errors_of(exc, ("model", "weights"))]
        elif cell in GATE_COUNT:
            errors.append(("/model/cell", f"the {layout.name} layout has no {cell} cell (its cells: "
                                          f"{', '.join(layout.cells)})", "depends"))
        data = {**data, "model": {**model, "weights": PLACEHOLDER}}
        if "submission" in data and cell in layout.cells:
            grads, data["submission"] = validate_submission(layout, cell, data["submission"], errors)
    try:
        req = handler(data)
    except ValidationError as exc:
        if not errors:
            raise
        raise RequestInvalid(errors + errors_of(exc)) from None
    if errors:
        raise RequestInvalid(errors)
    req._layout_sent = sent
    if grads is not None:
        req._layout_gradients = grads
    return req


def _lecture_name(e: tuple, layout: Layout, cell: str) -> tuple:
    """An unknown field that is a lecture name says so."""
    where, detail, code = e
    parts = where.split("/")
    if code == "unknown_field" and len(parts) == 4 and parts[3] in CANONICAL + ("b_hn",):
        detail = (f"unknown field: {parts[3]} is the lecture's name; the {layout.name} layout's "
                  f"weights are {', '.join(layout.fields(cell))}")
    return where, detail, code


def _sequence_batched(req, layout: Layout, errors: list) -> bool:
    seq = req.inputs if req.inputs is not None else req.tokens
    if seq is None:
        return False
    where = "/inputs" if req.inputs is not None else "/tokens"
    rank = depth(seq)
    full = 3 if req.inputs is not None else 2
    if layout.axes_one is None and rank != full:
        errors.append((where, f"the {layout.name} layout is always batched: "
                              + ("inputs are n_x×m×T_x" if req.inputs is not None else "tokens are m×T_x")
                              + f", got {rank} levels of arrays", "shape"))
    if not layout.batches and rank == full:
        errors.append((where, f"the {layout.name} layout takes one sequence: "
                              + ("inputs T×V" if req.inputs is not None else "tokens T"), "shape"))
    return rank == full


def _oriented(value, where: tuple, mine: tuple, canon: tuple, sizes: dict, layout: Layout,
              errors: list, what: str):
    """A per-step array or state from the caller's axes to the canonical ones (shape checked
    with pointers as sent), or the value untouched when the layout's axes are the lecture's."""
    if value is None or mine == canon:
        return value
    named = {layout.symbols.get(k, k): v for k, v in sizes.items() if v is not None}
    named["1"] = 1
    a = shaped(value, where, errors, _named(mine, layout.symbols), named, what=what)
    for k in ("B", "T"):
        if layout.symbols.get(k, k) in named and k not in sizes:
            sizes[k] = named[layout.symbols.get(k, k)]
    return None if a is None else step_to_canonical(a, mine, canon)


def arrays(req, limits, targets_required: bool):
    """The engine Problem's fields of a request in a layout: the caller's arrays checked in
    their own names and axes, mapped onto the lecture's, then checked as the lecture's are."""
    layout, m = LAYOUTS[req.layout], req.model
    cell = m.cell
    errors: list = []
    if layout.gru_after_only and cell == "gru" and m.gru_reset == "before":
        errors.append(("/model/gru_reset", f"the {layout.name} layout's GRU applies r after W_hn h "
                                           "(gru_reset after): bias_hh's n block is b_hn", "depends"))
    canon, sizes, sent = weights_to_canonical(layout, cell, req._layout_sent, errors)
    out_names = layout.output[cell]
    present = [n for n in out_names if req._layout_sent.get(n) is not None]
    if len(present) == 1:
        missing = next(n for n in out_names if n not in present)
        errors.append((pointer("model", "weights", missing),
                       f"required field is missing: {' and '.join(out_names)} come together, both (an "
                       "output layer) or neither (a layer alone, with upstream)", "depends"))
    batched = _sequence_batched(req, layout, errors)
    if errors:
        raise RequestInvalid(errors)
    sizes = {k: sizes.get(k) for k in ("H", "D", "N")}
    update = {"layout": "lecture"}
    if req.inputs is not None:
        mine, c = _kind_axes(layout, "inputs", batched)
        update["inputs"] = _oriented(req.inputs, ("inputs",), mine, c, sizes, layout, errors, "inputs")
    elif req.tokens is not None and depth(req.tokens) >= 1:
        tok = req.tokens[0] if batched and len(req.tokens) else req.tokens
        sizes["T"] = len(tok)
        if batched:
            sizes["B"] = len(req.tokens)
    shared = {}
    for name in STATE_FIELDS:
        value = getattr(req, name)
        if value is None:
            continue
        two = depth(value) == 2
        last = (value.shape[-1] if isinstance(value, np.ndarray) else (len(value[0]) if value and
                isinstance(value[0], list) else 0))
        shared[name] = layout.shared_state == "H,1" and two and last == 1
        mine, c = state_axes(layout, batched, shared[name])
        update[name] = _oriented(value, (name,), mine, c, sizes, layout, errors, name)
    if req.upstream is not None:
        mine, c = _kind_axes(layout, "hidden", batched)
        hidden = _oriented(req.upstream.hidden, ("upstream", "hidden"), mine, c, sizes, layout, errors,
                           "upstream.hidden")
        update["upstream"] = type(req.upstream).model_construct(hidden=hidden)
    if errors:
        raise RequestInvalid(errors)
    weights = type(m.weights).model_construct(V=canon["V"], W=canon["W"], U=canon.get("U"), b_h=canon["b_h"],
                                              b_y=canon.get("b_y"), b_hn=canon.get("b_hn"))
    update["model"] = m.model_copy(update={"weights": weights})
    lecture = req.model_copy(update=update)
    try:
        fields = lecture.arrays(limits, targets_required)
    except RequestInvalid as exc:
        raise RequestInvalid([_translated(e, layout, cell) for e in exc.errors]) from None
    seq = fields["inputs"] if fields["inputs"] is not None else fields["tokens"]
    req._layout_ctx = {"batched": seq.ndim == (3 if fields["inputs"] is not None else 2),
                       "sizes": {**{k: v for k, v in sizes.items() if v is not None}, "G": GATE_COUNT[cell]},
                       "shapes": {n: a.shape for n, a in sent.items() if a is not None},
                       "state_ndim": {n: fields["weights"][n].ndim for n in STATE_FIELDS
                                      if fields["weights"].get(n) is not None}}
    return fields


def _translated(e: dict, layout: Layout, cell: str) -> dict:
    """A canonical weight's pointer as the caller's field that holds it."""
    parts = e["pointer"].split("/")
    if len(parts) >= 4 and parts[1:3] == ["model", "weights"] and parts[3] in CANONICAL:
        field_ = next((p.field for p in layout.pieces[cell] if p.canon == parts[3]), None)
        if field_ is not None:
            # the output layer a layout leaves optional (layer mode) is needed only without upstream
            code = "depends" if e.get("code") == "required" else e.get("code")
            return {**e, "pointer": pointer("model", "weights", field_), "code": code}
    return e


# --- gradcheck in a layout: each of the caller's arrays is a selection of canonical elements ---

def layout_parameters(layout: Layout, cell: str, ctx: dict, has: dict) -> tuple[str, ...]:
    """The caller's arrays that gradcheck can check (in the layout's order): the weights
    whose every piece is a canonical parameter with a gradient, and the states and inputs."""
    out = []
    for name in parameter_names(layout, cell):
        if name in STATE_FIELDS + ("inputs",):
            if name in has:
                out.append(name)
        elif name in ctx["shapes"] and all(p.canon in has for p in layout.pieces[cell] if p.field == name):
            out.append(name)
    return tuple(out)


def check_parameters(layout: Layout, cell: str, ctx: dict, requested, has: dict) -> tuple[tuple, tuple]:
    """(the caller's arrays to check, the canonical parameters they touch), 422 at
    /check/parameters/i for a name this problem does not have."""
    available = layout_parameters(layout, cell, ctx, has)
    if requested is not None:
        absent = [(i, n) for i, n in enumerate(requested) if n not in available]
        if absent:
            raise RequestInvalid([(f"/check/parameters/{i}", f"this problem has no {n} in the {layout.name} "
                                                             f"layout: its parameters are {', '.join(available)}",
                                   "parameter_absent") for i, n in absent])
    names = tuple(n for n in available if requested is None or n in requested)
    touched = set()
    for n in names:
        touched |= set(np.unique(index_map(layout, cell, n, ctx, has)[0]))
    return names, tuple(n for n in has if n in touched)


def selections(layout: Layout, cell: str, ctx: dict, names: tuple, has: dict, mode: str, samples: int,
               seed: int) -> dict:
    """What gradcheck_items checks for each of the caller's arrays: its elements (full), a
    sample of them, or random unit directions in its own shape, as canonical elements or
    directions. Array number k of parameter_names draws from default_rng([seed, k])."""
    order = parameter_names(layout, cell)
    out = {}
    for name in names:
        cnames, flat = index_map(layout, cell, name, ctx, has)
        shape = flat.shape
        rng = np.random.default_rng([seed, order.index(name)])
        if mode == "directional":
            u = rng.standard_normal((samples, flat.size))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            dirs = {}
            for c in np.unique(cnames):
                mine = (cnames == c).ravel()
                d = np.zeros((samples, int(np.prod(has[c]))))
                np.add.at(d, (slice(None), flat.ravel()[mine]), u[:, mine])
                dirs[c] = d
            out[name] = {"directions": dirs, "index": lambda k: [int(k)]}
            continue
        picked = np.arange(flat.size) if mode == "full" else \
            np.sort(rng.choice(flat.size, size=min(samples, flat.size), replace=False))
        out[name] = {"names": cnames.ravel()[picked], "flat": flat.ravel()[picked],
                     "index": (lambda picked, shape: lambda k: [int(i) for i in np.unravel_index(picked[k], shape)])(
                         picked, shape)}
    return out


# --- grade in a layout: submissions in the caller's names and shapes ---

GRADE_STEP_FIELDS = {"outputs": "outputs", "hidden": "hidden", "cell": "hidden"}


def _canon_shapes(ctx: dict) -> dict:
    sizes = ctx["sizes"]
    out = {}
    for name, shape in CANON_SHAPES.items():
        try:
            out[name] = tuple(size_of(e, sizes) for e in shape)
        except NameError:
            pass
    return out


def grade_items(layout: Layout, cell: str, ctx: dict, submitted: dict) -> list:
    """service.engine.grade.grade_mapped's items for the submitted fields: each compared in
    the caller's orientation, gradients diagnosed as the canonical array they are a
    rearrangement of (when they are all of one)."""
    batched = ctx["batched"]
    items = []
    for label, got in submitted.items():
        if not label.startswith("gradients."):
            if label in GRADE_STEP_FIELDS:
                mine, canon = _kind_axes(layout, GRADE_STEP_FIELDS[label], batched)
                items.append((label, [label], (lambda lab, mine, canon: lambda v: step_from_canonical(
                    np.asarray(v[lab]), mine, canon))(label, mine, canon), got, None, None))
            else:
                items.append((label, [label], (lambda lab: lambda v: v[lab])(label), got, None, None))
            continue
        name = label.split(".", 1)[1]
        if name in STATE_FIELDS + ("inputs",):
            field = f"gradients.{name}"
            if name == "inputs":
                mine, canon = _kind_axes(layout, "inputs", batched)
            else:
                mine, canon = state_axes(layout, batched, ctx["state_ndim"].get(name, 1) == 1)
            items.append((label, [field], (lambda f, mine, canon: lambda v: step_from_canonical(
                np.asarray(v[f]), mine, canon))(field, mine, canon), got, field,
                (lambda mine, canon: lambda g: step_to_canonical(g, mine, canon))(mine, canon)))
            continue
        canon_names = sorted({p.canon for p in layout.pieces[cell] if p.field == name})
        fields = [f"gradients.{c}" for c in canon_names]

        def arrange(v, name=name, canon_names=canon_names):
            grads = {c: np.asarray(v[f"gradients.{c}"]) for c in canon_names}
            return weights_from_canonical(layout, cell, grads, ctx["sizes"], ctx["shapes"])[name]
        shapes = _canon_shapes(ctx)
        names, flat = index_map(layout, cell, name, ctx, shapes)
        one = len(canon_names) == 1 and np.array_equal(np.sort(flat.ravel()), np.arange(int(np.prod(shapes[canon_names[0]]))))
        if one:
            c = canon_names[0]

            def to_field(got, flat=flat, shape=shapes[c]):
                out = np.empty(int(np.prod(shape)))
                out[flat.ravel()] = np.asarray(got).ravel()
                return out.reshape(shape)
            items.append((label, fields, arrange, got, f"gradients.{c}", to_field))
        else:
            items.append((label, fields, arrange, got, None, None))
    return items


SUBMISSION_EXTRA = ("h_init", "c_init", "inputs")


def validate_submission(layout: Layout, cell: str, submission, errors: list):
    """A grade submission's gradients in the layout's names: (the gradients as sent, the
    submission with a placeholder), unknown names 422 with their pointer."""
    if not isinstance(submission, dict) or not isinstance(submission.get("gradients"), dict):
        return None, submission
    grads = submission["gradients"]
    allowed = tuple(layout.fields(cell)) + SUBMISSION_EXTRA
    for n in grads:
        if n not in allowed:
            note = f": {n} is the lecture's name" if n in CANONICAL else ""
            errors.append((pointer("submission", "gradients", n), f"unknown field{note}; the {layout.name} layout's "
                                                                  f"gradients are {', '.join(allowed)}", "unknown_field"))
    return dict(grads), {**submission, "gradients": {}}


# --- /v1/problems: a generated lecture problem written in a layout ---

def weights_from_lecture(layout: Layout, cell: str, canon: dict, sizes: dict) -> dict:
    """The caller's fields holding the canonical weights `canon`: every canonical element is
    written into the first piece that takes it, and 0 into any later one (pytorch: bias_ih
    = b_h, bias_hh = 0; the GRU's n block: bias_ih = b_n, bias_hh = b_hn)."""
    shapes = {}
    for name, shape in layout.fields(cell).items():
        try:
            shapes[name] = tuple(size_of(e, sizes) for e in shape)
        except NameError:                     # N: no output layer (a layer alone)
            pass
    out: dict = {}
    taken = {c: np.zeros(np.shape(v), dtype=bool) for c, v in canon.items()}
    for piece in layout.pieces[cell]:
        if piece.canon not in canon:
            continue
        if piece.field not in out:
            out[piece.field] = np.zeros(shapes[piece.field])
        target = out[piece.field][piece.source(sizes)]
        where = piece.target(sizes)
        block = np.where(taken[piece.canon][where], 0.0, np.asarray(canon[piece.canon])[where])
        taken[piece.canon][where] = True
        shape = target.T.shape if piece.transpose else target.shape
        block = block.reshape(shape)
        target[...] = block.T if piece.transpose else block
    return {n: out[n] for n in layout.fields(cell) if n in out}


def write_problem(name: str, problem: dict) -> dict:
    """A lecture problem object (JSON-ready) in layout `name`: the weights under its names,
    every per-step array in its axes (Coursera: a single sequence as a batch of one)."""
    layout = LAYOUTS[name]
    if name == "lecture":
        return problem
    model = problem["model"]
    cell = model.get("cell", "rnn")
    w = {k: np.asarray(v, dtype=np.float64) for k, v in model["weights"].items()}
    G = GATE_COUNT[cell]
    sizes = {"G": G, "H": w["W"].shape[1], "D": w["V"].shape[1]}
    if "U" in w:
        sizes["N"] = w["U"].shape[0]
    out = {"layout": name, **problem}
    seq = problem.get("inputs", problem.get("tokens"))
    batched = depth(seq) == (3 if "inputs" in problem else 2)
    if layout.axes_one is None and not batched:              # always batched: a batch of one
        for key in ("inputs", "tokens", "targets"):
            if key in out:
                out[key] = [out[key]]
        if "upstream" in out:
            out["upstream"] = {"hidden": [out["upstream"]["hidden"]]}
        batched = True
    out["model"] = {**model, "weights": {k: v.tolist() for k, v in weights_from_lecture(layout, cell, w, sizes).items()}}
    if "inputs" in out:
        mine, canon = _kind_axes(layout, "inputs", batched)
        out["inputs"] = step_from_canonical(np.asarray(out["inputs"], dtype=np.float64), mine, canon).tolist()
    if "upstream" in out:
        mine, canon = _kind_axes(layout, "hidden", batched)
        out["upstream"] = {"hidden": step_from_canonical(np.asarray(out["upstream"]["hidden"], dtype=np.float64),
                                                         mine, canon).tolist()}
    for key in STATE_FIELDS:
        if key in out:
            h = np.asarray(out[key], dtype=np.float64)
            mine, canon = state_axes(layout, batched, h.ndim == 1)
            out[key] = step_from_canonical(h, mine, canon).tolist()
    return out


def problem_rules(name: str, cell: str, gru_reset, batch_size) -> list:
    """/v1/problems: what a layout cannot write (422 with pointers)."""
    layout, errors = LAYOUTS[name], []
    if cell not in layout.cells:
        errors.append(("/cell", f"the {name} layout has no {cell} cell (its cells: {', '.join(layout.cells)})",
                       "depends"))
    if layout.gru_after_only and cell == "gru" and gru_reset == "before":
        errors.append(("/gru_reset", f"the {name} layout's GRU applies r after W_hn h (gru_reset after)", "depends"))
    if not layout.batches and batch_size is not None:
        errors.append(("/batch_size", f"the {name} layout takes one sequence", "depends"))
    return errors
