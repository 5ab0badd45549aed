"""Numerical gradient checking of the v1.1 problems (plain numpy, no web imports): the gated
cells (lstm, gru after/before), mini-batches, layer mode and dense-input gradients, i.e.
every `problem.Problem` that gradcheck.py's vanilla fast path does not take.

The methods, modes, stencils, selection of items and the report are gradcheck.py's
(offsets, combine, _items, summarise, Report); what differs is how the loss changes
L(θ + s·u) − L(θ) are computed, always as Σ_t [L_t(θ + s·u) − L_t(θ)] (per step, never the
difference of two large totals):

  rank-one recurrence (full and sample modes, V, W, b_h, h_init, c_init, inputs): many
      perturbed models run as one recurrence on a (rows, state) array through the cell's own
      step_forward (one GEMM per step inside it), each row one sequence of one perturbed
      model. A V_ij or b_h_i perturbation adds ε·x_t[j] or ε to row i of the input drive
      V x_t + b_h at every step, a W_ij one adds ε·h_{t−1}[j] of the perturbed row's own
      state; an entry of x_t (inputs) adds ε·V[:, j] to step t's drive only; h_init / c_init
      move the initial state. A shared weight or initial state perturbs all B sequences of
      its model (B rows); inputs and per-sequence initial states only their sequence (one
      row). A model joins at the first step its perturbation reaches (V_ij: the first
      x_t[j] ≠ 0 in any sequence; W_ij: the first h_{t−1}[j] ≠ 0) and runs up to the last
      step with a loss. The loss change is taken per step from Δh_t = h_t − h_t(base):
      ⟨upstream_t, Δh_t⟩ in layer mode, else gradcheck's exact differences for
      Δz_t = Δh_t Uᵀ (log Σ ŷ e^Δz − y·Δz, …; its compiled loss_step on real rows), so no
      L_t is subtracted from another. Real steps run the cells' compiled kernels into
      preallocated buffers (sequence.FAST), complex ones the cells' numpy steps.
  output layer (U, b_y): the hidden states are the base model's and only z_t[i] moves:
      gradcheck.element_losses' exact output path on the T·B steps taken as one sequence.
  perturbed copies (the GRU's n block of W, and b_hn, whose change is multiplied by r
      inside the cell; directional mode for every parameter): P parameter copies with a
      leading axis through sequence.forward(problem, params={name: P × shape}), the loss
      change from Δz_t as above (U and b_y: on the base hidden states, no forward pass).

complex_step runs complex128 through the same cells (the kicks are i·ε).

Accuracy: the perturbed states are whole states rounded at every step (unlike gradcheck.py's
exact Δh formulas), so ΔL carries a rounding floor of roughly ulp(L) whatever the per-step
bookkeeping: a central difference at ε = 1e-6 is good to ~4e-10 on a one-sequence LSTM
(H 32, T 12, L ≈ 40) but only ~3e-8 at B 8, H 48, T 30 (L ≈ 470; an 80-bit trajectory gives
2e-10 there, the truncation error), past the default atol on tiny gradient entries.
complex_step has no such floor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import gradcheck as gc
from . import gradcheck_kernels as kernels
from . import rnn, sequence
from .cells import CELLS, StepParams
from .problem import Problem

OUTPUT_PATH = ("U", "b_y")
INITS = ("h_init", "c_init")
# rows of a chunk of the rank-one recurrence: numpy's per-call cost (~15 calls a step with
# the compiled cells, ~40 without) is shared by many rows; 256-2048 measured alike
CHUNK_ROWS = 1024


# --- the vanilla fast path ---

def as_vanilla(p: Problem) -> rnn.Problem | None:
    """The v1 problem when gradcheck.py's fast path takes this one's v1 parameters (the
    vanilla cell, one sequence, an output layer), else None."""
    w = p.weights
    if p.cell != "rnn" or p.batched or p.layer or w.U is None or w.h_init.ndim != 1:
        return None
    scored = np.ones(p.T, dtype=bool) if p.scored is None else p.scored
    # batch_mean of one sequence is the sum
    return dataclasses.replace(p, scored=scored, reduction="mean" if p.reduction == "mean" else "sum")


# --- the base model, time-major ---

def _time_major(x, batched: bool) -> np.ndarray:
    """(B ×) T (× F) as a contiguous T × B (× F)."""
    if not batched:
        x = x[None]
    return np.ascontiguousarray(np.moveaxis(x, 1, 0))


class _Base:
    """The base trajectory and what every perturbed run shares, T × B × … whether the
    problem is batched or not."""

    def __init__(self, p: Problem, cache: sequence.Cache):
        w = p.weights
        T, B, H = p.T, p.B, p.H
        self.p, self.cache, self.B, self.H = p, cache, B, H
        self.cell = CELLS[p.cell]
        self.fast = getattr(sequence, "FAST", False) and hasattr(self.cell, "scratch")
        self.GH = w.W.shape[0]
        tm = lambda x: _time_major(x, p.batched)                      # noqa: E731
        self.h = tm(cache.h)
        init = [np.broadcast_to(w.h_init, (B, H))]
        s = self.h
        if p.cell == "lstm":
            c_init = np.zeros(H) if w.c_init is None else w.c_init
            init.append(np.broadcast_to(c_init, (B, H)))
            s = np.concatenate([self.h, tm(cache.c)], axis=-1)
        self.s_prev = np.concatenate([np.concatenate(init, axis=-1)[None], s[:-1]])  # T × B × S
        self.S = self.s_prev.shape[-1]
        b_hn = w.b_hn if w.b_hn is not None else np.zeros(H)
        self.step = StepParams(w.W, p.hidden_activation, p.gru_reset, b_hn)
        self.VT = np.ascontiguousarray(w.V.T)
        if p.tokens is not None:
            self.tokens = tm(p.tokens)                                 # T × B
            self.xd = self.VT[self.tokens] + w.b_h
        else:
            self.x = tm(p.inputs)                                      # T × B × D
            self.xd = (self.x.reshape(T * B, -1) @ self.VT).reshape(T, B, -1) + w.b_h
        self.scale = p.loss_scale()
        if p.layer:
            self.up = tm(p.upstream)
            self.scored = np.ones((T, B), dtype=bool)
            active = np.any(self.up != 0, axis=(1, 2))
        else:
            self.scored = np.ones((T, B), dtype=bool) if p.scored is None else tm(p.scored)
            self.y, self.z = tm(p.targets), tm(cache.z)
            self.UT = np.ascontiguousarray(w.U.T)
            self.yhat = tm(cache.yhat)
            self.steps_as_one, self.steps_cache = self._as_one_sequence()
            self.loss_code = kernels.LOSSES.get((p.loss, p.output_activation)) if gc.FUSED \
                else None
            active = self.scored.any(axis=1)
        self.all_scored = bool(self.scored.all())
        self.active = active
        self.last = int(np.flatnonzero(active)[-1]) if active.any() else -1
        self.loss_size = self.scale * float(np.abs(cache.step_losses).sum())

    def _as_one_sequence(self):
        """The output layer over the T·B steps (index t·B + b) as one v1 sequence, for
        gradcheck's exact loss changes (reduction sum: the scale is applied by the caller)."""
        p, w = self.p, self.p.weights
        N, H = p.N, p.H
        one = Problem(w, output_activation=p.output_activation, targets=self.y.reshape(-1, N),
                      scored=self.scored.reshape(-1), loss=p.loss, reduction="sum")
        return one, rnn.Cache(one, None, self.h.reshape(-1, H), self.z.reshape(-1, N),
                              self.yhat.reshape(-1, N))

    def loss_change(self, index, dz):
        """L_t(z + dz) − L_t(z) at flat steps `index` (S) for dz S × M × N, unscored steps
        0, unscaled: gradcheck's exact differences (log Σ ŷ e^Δz − y·Δz, …), no L_t
        subtracted from another."""
        change = gc.loss_change(self.steps_as_one, self.steps_cache, index, dz)
        if not self.all_scored:
            change *= self.steps_as_one.scored[index][:, None]
        return change

    def first_input(self) -> np.ndarray:
        """Per input j, the first step with x_t[j] ≠ 0 in any sequence (T: never)."""
        T = len(self.xd)
        if self.p.tokens is None:
            return gc.first_nonzero(np.any(self.x != 0, axis=1))
        first = np.full(self.p.D, T)
        np.minimum.at(first, self.tokens.ravel(), np.repeat(np.arange(T), self.B))
        return first

    def first_hidden(self) -> np.ndarray:
        """Per hidden unit j, the first step with h_{t−1}[j] ≠ 0 in any sequence."""
        return gc.first_nonzero(np.any(self.s_prev[:, :, :self.H] != 0, axis=1))


# --- the rank-one recurrence ---

@dataclass
class _Items:
    """Perturbed models of one parameter, sorted by the step they join at."""
    start: np.ndarray        # first step the perturbation reaches
    seq: np.ndarray | None   # the one sequence each perturbs (None: all B, shared)
    i: np.ndarray            # the drive row it kicks (V, W, b_h) or the state entry (inits)
    j: np.ndarray            # the input or hidden unit it reads (V, W, inputs)
    delta: np.ndarray        # its step s (real or imaginary)
    index: np.ndarray = field(default=None)   # its position in the caller's items × steps


def element_items(base: _Base, name: str, flat: np.ndarray, steps: np.ndarray) -> _Items:
    """One model per flat index of `name` and step: where it joins and what it kicks."""
    p, H, B = base.p, base.H, base.B
    zero = np.zeros(len(flat), dtype=np.int64)
    seq = None
    if name == "V":
        i, j = np.divmod(flat, p.D)
        start = base.first_input()[j]
    elif name == "W":
        i, j = np.divmod(flat, H)
        start = base.first_hidden()[j]
    elif name == "b_h":
        i, j, start = flat, zero, zero
    elif name in INITS:
        seq, i = np.divmod(flat, H)
        if getattr(p.weights, name).ndim == 1:
            seq = None
        i, j, start = i + (H if name == "c_init" else 0), zero, zero
    else:                                                  # inputs: (b,) t, j
        shape = (B, p.T, p.D)
        seq, start, j = np.unravel_index(flat, shape)
        i = zero
    K = len(steps)
    rep = lambda a: None if a is None else np.repeat(a, K)            # noqa: E731
    items = _Items(rep(start), rep(seq), rep(i), rep(j), np.tile(steps, len(flat)),
                   np.arange(len(flat) * K))
    order = np.argsort(items.start, kind="stable")
    order = order[items.start[order] <= base.last]         # the others leave L unchanged
    return _Items(*(None if a is None else a[order] for a in
                    (items.start, items.seq, items.i, items.j, items.delta, items.index)))


def recurrent_losses(base: _Base, name: str, items: _Items) -> np.ndarray:
    """Σ_t ΔL_t of every model in `items`, in chunks of about CHUNK_ROWS rows."""
    R = base.B if items.seq is None else 1
    per_chunk = max(1, CHUNK_ROWS // R)
    out = np.zeros(len(items.delta), dtype=items.delta.dtype)
    buffers = _Buffers(base, min(per_chunk, len(out)) * R, items.delta.dtype)
    for lo in range(0, len(out), per_chunk):
        part = slice(lo, lo + per_chunk)
        chunk = _Items(items.start[part], None if items.seq is None else items.seq[part],
                       items.i[part], items.j[part], items.delta[part])
        out[part] = _run(base, name, chunk, R, buffers)
    return out


class _Buffers:
    """Arrays one chunk's steps write into, reused by every step and chunk: two states
    (s_{t−1} and s_t, swapped every step), the drive, and for the cells' compiled steps
    (float64: `fast`) their extra numbers and scratch."""

    def __init__(self, base: _Base, rows: int, dtype):
        self.fast = base.fast and dtype == np.float64
        self.s = np.empty((2, rows, base.S), dtype=dtype)
        if self.fast:
            self.extra = np.empty((rows, base.cell.EXTRA * base.H))
            self.work = base.cell.scratch((rows,), base.H)
        self.xd = np.empty((rows, base.GH), dtype=dtype)
        self.dh = np.empty((rows, base.H), dtype=dtype)
        self.z = None if base.p.layer else np.empty((rows, base.p.N), dtype=dtype)
        self.direct = np.empty(rows, dtype=np.int64)


def _run(base: _Base, name: str, it: _Items, R: int, buf: _Buffers) -> np.ndarray:
    """Σ_t ΔL_t of the models of one chunk: model m is rows m·R … m·R + R − 1, one per
    sequence it perturbs; it joins at step it.start[m] with the base state."""
    n_all = len(it.delta)
    rows = n_all * R
    shared = R == base.B
    row_seq = np.tile(np.arange(base.B), n_all) if shared else it.seq
    r_i, r_j, r_d = (np.repeat(a, R) for a in (it.i, it.j, it.delta))
    s, s_next, xd = buf.s[0, :rows], buf.s[1, :rows], buf.xd[:rows]
    xd_flat = xd.reshape(-1)
    kick_at = np.arange(rows) * base.GH + r_i               # drive entry each row kicks
    read_at = np.arange(rows) * base.S + r_j                # W: the state entry it reads
    total = np.zeros(n_all, dtype=it.delta.dtype)
    joined = 0
    for t in range(int(it.start[0]), base.last + 1):
        n = int(np.searchsorted(it.start, t, side="right"))
        r = n * R
        if r > joined:                                      # models joining: the base state
            s[joined:r] = base.s_prev[t][row_seq[joined:r]]
            if name in INITS:
                s[np.arange(joined, r), r_i[joined:r]] += r_d[joined:r]
        if shared:
            xd[:r].reshape(n, R, base.GH)[...] = base.xd[t]
        else:
            xd[:r] = base.xd[t][row_seq[:r]]
        if name == "inputs":                                 # x_t of the rows joining now
            lo = int(np.searchsorted(it.start, t, side="left")) * R
            xd[lo:r] += r_d[lo:r, None] * base.VT[r_j[lo:r]]
        elif name == "W":
            xd_flat[kick_at[:r]] += r_d[:r] * s.reshape(-1)[read_at[:r]]
        elif name == "V":
            xd_flat[kick_at[:r]] += r_d[:r] * _input_at(base, t, row_seq[:r], r_j[:r])
        elif name == "b_h":
            xd_flat[kick_at[:r]] += r_d[:r]
        joined = r
        if buf.fast:                                         # in place, xd becomes the gates
            out = (s_next[:r], buf.extra[:r], tuple(w[:r] for w in buf.work))
            base.cell.step_forward(xd[:r], s[:r], base.step, out)
        else:
            s_next[:r] = base.cell.step_forward(xd[:r], s[:r], base.step)[0]
        if base.active[t]:
            _add_loss_change(base, t, s_next[:r], n, R, shared, row_seq[:r], buf, total)
        s, s_next = s_next, s
    return total * base.scale


def _input_at(base: _Base, t: int, seq, j):
    """x_t[j] of each row's sequence."""
    if base.p.tokens is not None:
        return base.tokens[t][seq] == j
    return base.x[t][seq, j]


def _add_loss_change(base: _Base, t, s_t, n, R, shared, seq, buf, total) -> None:
    """total[:n] += Σ over each model's rows of L_t(perturbed) − L_t(base) (unscaled), from
    Δh_t = h_t − h_t(base): ⟨upstream_t, Δh_t⟩, or the loss change for Δz_t = Δh_t Uᵀ."""
    H = base.H
    r = n * R
    dh = buf.dh[:r].reshape(n, R, H)
    base_h = base.h[t] if shared else base.h[t][seq][:, None]
    np.subtract(s_t[:, :H].reshape(n, R, H), base_h, out=dh)
    if base.p.layer:
        up = base.up[t] if shared else base.up[t][seq][:, None]
        total[:n] += np.einsum("nrh,nrh->n", dh, np.broadcast_to(up, dh.shape))
    elif shared and base.loss_code is not None and total.dtype == np.float64:
        for b in np.flatnonzero(base.scored[t]):          # gradcheck's compiled loss step
            dz = buf.z[:n]
            np.matmul(dh[:, b], base.UT, out=dz)
            k = kernels.loss_step(base.loss_code, dz, 0, base.yhat[t, b], base.y[t, b], 1.0,
                                  total[:n], buf.direct)
            if k:                                          # past its series: numpy
                rows = buf.direct[:k]
                total[rows] += base.loss_change(np.array([t * base.B + b]), dz[rows][None])[0]
    else:
        dz = buf.z[:r].reshape(n, R, -1)
        np.matmul(dh, base.UT, out=dz)
        if shared:                                         # sequences × models
            index = t * base.B + np.arange(base.B)
            total[:n] += base.loss_change(index, dz.transpose(1, 0, 2)).sum(axis=0)
        else:
            total[:n] += base.loss_change(t * base.B + seq, dz)[:, 0]


# --- perturbed copies through the engine's own forward pass ---

def _is_copy(p: Problem, name: str, flat: np.ndarray) -> np.ndarray:
    """Per flat index: True where the perturbation acts inside the cell's r ⊙ (…)."""
    if name == "b_hn":
        return np.ones(len(flat), dtype=bool)
    if name == "W" and p.cell == "gru":
        return flat // p.H >= 2 * p.H
    return np.zeros(len(flat), dtype=bool)


def copies_losses(base: _Base, name: str, count: int, changes) -> np.ndarray:
    """Σ_t ΔL_t for θ + d_k, k < count, in chunks: changes(ks) gives the d_k (len(ks) ×
    shape, real or complex) of one chunk, so memory stays bounded."""
    p = base.p
    theta = _parameter(p, name)
    size = _copies_chunk(p, theta.size)
    out = []
    for lo in range(0, count, size):
        d = changes(np.arange(lo, min(lo + size, count)))
        if name in OUTPUT_PATH:
            out.append(_output_changes(base, name, d))
            continue
        c = sequence.forward(p, {name: theta[None] + d})
        if p.layer:
            dh = np.moveaxis(c.h - base.cache.h, 0, -1)                # (B ×) T × H × P
            up = p.upstream[..., None]
            out.append((dh * up).reshape(-1, len(d)).sum(axis=0))
        else:                                  # Δz_t per step and sequence, exact ΔL_t
            dz = _time_major(np.moveaxis(c.z - base.cache.z, 0, -2), p.batched)  # T × B × P × N
            dz = dz.reshape(-1, len(d), p.N)
            out.append(base.loss_change(np.arange(len(dz)), dz).sum(axis=0) * base.scale)
    return np.concatenate(out) if out else np.zeros(0)


def _output_changes(base: _Base, name: str, d: np.ndarray) -> np.ndarray:
    """Σ_t ΔL_t for U + d[k] or b_y + d[k] on the base hidden states (only z moves)."""
    if name == "U":
        dz = np.einsum("sh,pnh->spn", base.h.reshape(-1, base.H), d)
    else:
        dz = np.broadcast_to(d[None], (base.z.shape[0] * base.B, *d.shape))
    return base.loss_change(np.arange(len(dz)), dz).sum(axis=0) * base.scale


def _copies_chunk(p: Problem, size: int) -> int:
    return _copies_chunk_of(p.T, p.B, p.G, p.H, p.N or 0, size)


def _copies_chunk_of(T: int, B: int, G: int, H: int, N: int, size: int) -> int:
    """Models per forward pass: each one's parameter copy and the pass's per-step arrays
    (the cell's caches, about 3·G·H + 8·H numbers per row and step, and the outputs)."""
    per_model = size + T * B * (3 * G * H + 8 * H + 3 * N)
    return max(1, min(gc.CHUNK_ITEMS, gc.CHUNK_BYTES // (16 * per_model)))


def _parameter(p: Problem, name: str) -> np.ndarray:
    return p.inputs if name == "inputs" else getattr(p.weights, name)


def _unit_changes(shape, flat: np.ndarray, steps: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Item k = (flat index flat[k // K], step steps[k % K]) as s·e_i, for the ks: ks × shape."""
    K = len(steps)
    d = np.zeros((len(ks), int(np.prod(shape))), dtype=steps.dtype)
    d[np.arange(len(ks)), flat[ks // K]] = steps[ks % K]
    return d.reshape(-1, *shape)


# --- the output layer: gradcheck.element_losses on the T·B steps as one sequence ---

def _output_losses(base: _Base, name: str, flat: np.ndarray, steps: np.ndarray) -> np.ndarray:
    return gc.element_losses(base.steps_as_one, name, flat, steps, base.steps_cache) * base.scale


# --- the loss changes of one parameter ---

def element_losses(base: _Base, name: str, flat: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """L(θ + s·e_k) − L(θ) for every flat index k of `name` and step s: items × steps."""
    if name in OUTPUT_PATH:
        return _output_losses(base, name, flat, steps)
    K = len(steps)
    out = np.zeros(len(flat) * K, dtype=np.result_type(steps, float))
    copy = _is_copy(base.p, name, flat)
    if copy.any():
        shape = _parameter(base.p, name).shape
        where = np.flatnonzero(np.repeat(copy, K))
        out[where] = copies_losses(base, name, len(where),
                                   lambda ks: _unit_changes(shape, flat[copy], steps, ks))
    if not copy.all():
        rank_one = np.flatnonzero(~copy)
        items = element_items(base, name, flat[rank_one], steps)
        into = np.repeat(rank_one * K, K) + np.tile(np.arange(K), len(rank_one))
        out[into[items.index]] = recurrent_losses(base, name, items)
    return out.reshape(len(flat), K)


def directional_losses(base: _Base, name: str, directions: np.ndarray,
                       steps: np.ndarray) -> np.ndarray:
    """L(θ + s·u) − L(θ) for every direction u (rows, flattened) and step s."""
    shape = _parameter(base.p, name).shape
    K = len(steps)

    def changes(ks):
        return (directions[ks // K] * steps[ks % K][:, None]).reshape(-1, *shape)
    return copies_losses(base, name, len(directions) * K, changes).reshape(len(directions), K)


# --- the check ---

def gradcheck(problem: Problem, spec: gc.CheckSpec) -> gc.Report:
    """Analytic gradients (full BPTT) against numerical ones. A problem gradcheck.py's fast
    path takes has its v1 parameters checked there (exact Δh differences, compiled steps)
    and only `inputs` here. Names in spec.parameters that the problem has no gradient for
    (U in layer mode, inputs with tokens, c_init but for lstm, b_hn but for gru "after") are
    skipped."""
    vanilla = as_vanilla(problem)
    if vanilla is None:
        return _gradcheck(problem, spec)
    v1, rest = _split(spec)
    reports = ([gc.gradcheck(vanilla, v1)] if v1.parameters else []) + \
        ([_gradcheck(problem, rest)] if rest.parameters else [])
    return reports[0] if len(reports) == 1 else _merged(spec, *reports)


def _split(spec: gc.CheckSpec) -> tuple[gc.CheckSpec, gc.CheckSpec]:
    """The check of v1's parameters and of the others (inputs)."""
    v1 = tuple(n for n in spec.parameters if n in rnn.PARAMETERS)
    rest = tuple(n for n in spec.parameters if n not in rnn.PARAMETERS)
    return dataclasses.replace(spec, parameters=v1), dataclasses.replace(spec, parameters=rest)


def _merged(spec: gc.CheckSpec, a: gc.Report, b: gc.Report) -> gc.Report:
    """Two reports on one problem as one: the base evaluation counted once, the parameters
    in spec's order."""
    both = {**a.parameters, **b.parameters}
    report = dataclasses.replace(a, passed=a.passed and b.passed,
                                 evaluations=a.evaluations + b.evaluations - 1,
                                 parameters={n: both[n] for n in spec.parameters if n in both})
    if spec.method == "taylor":
        orders = [r.convergence_order for r in report.parameters.values()
                  if r.convergence_order is not None]
        report.convergence_order = float(np.median(orders)) if orders else None
    return report


def _gradcheck(problem: Problem, spec: gc.CheckSpec) -> gc.Report:
    """The check of any problem by the sequence runner's forward and backward."""
    eps = spec.step
    with np.errstate(all="ignore"):
        cache = sequence.forward(problem)
        grads, _ = sequence.backward(cache, diagnostics=False)
    if not (np.isfinite(cache.loss) and all(np.isfinite(g).all() for g in grads.values())):
        raise gc.NonFiniteLoss(None)
    base = _Base(problem, cache)
    steps = gc.offsets(spec.method, eps)
    report = gc.Report(True, spec.method, spec.mode, eps, spec.rtol, spec.atol,
                       spec.samples if spec.mode != "full" else None,
                       spec.seed if spec.mode != "full" else None, evaluations=1)
    for name in (n for n in spec.parameters if n in grads):
        which, analytic, index = gc._items(spec, name, grads[name])
        with np.errstate(all="ignore"):
            losses = (directional_losses if spec.mode == "directional" else element_losses)(
                base, name, which, steps)
            numerical = gc.combine(spec.method, eps, losses, analytic, base.loss_size)
        report.evaluations += losses.size
        if not np.all(np.isfinite(numerical.values)):
            raise gc.NonFiniteLoss(name)
        report.parameters[name] = gc.summarise(analytic, numerical, index, spec)
        report.passed &= report.parameters[name].passed
    if spec.method == "taylor":
        orders = [r.convergence_order for r in report.parameters.values()
                  if r.convergence_order is not None]
        report.convergence_order = float(np.median(orders)) if orders else None
    return report


# --- the work budget: estimated before any work, from the sizes only ---

# In gradcheck.py's units (multiply-adds of a GEMM, ~0.1 ns each at most on this machine).
# A row of the perturbed recurrence costs per step the cell's GEMM (G·H·H) plus CELL per gate
# unit (its numpy elementwise work: the lstm's sigmoids cost ~45 ns per unit, tanh ~15 ns;
# CELL_FAST for the cells' compiled float64 steps, ~1.3 µs a row for the lstm at H 32) plus
# ROW per number of state and drive the loop copies; perturbed copies through
# sequence.forward run their per-model GEMMs COPIES times slower than one shared GEMM; a step
# of one chunk costs STEP_OVERHEAD (~50 numpy calls: the cell's, the loop's, the loss's),
# STEP_OVERHEAD_FAST with the compiled cells and loss (~15 calls). A complex step costs
# COMPLEX real ones (complex numpy cells, a real W cast for each complex GEMM).
# Calibrated on this machine, loaded (/tmp-style sweep over cells, sizes, methods and modes):
# measured time 0.2-1.0 × work · 0.1 ns for checks over 0.1 s, up to 2.6 × on those of ~10 ms.
CELL = {"rnn": 200.0, "lstm": 450.0, "gru": 450.0}
CELL_FAST = {"rnn": 60.0, "lstm": 130.0, "gru": 130.0}
ROW = 20.0
COPIES = 3.0
STEP_OVERHEAD = 1.5e6
STEP_OVERHEAD_FAST = 6e5
COMPLEX = 3.5


@dataclass(frozen=True)
class CellSizes:
    T: int              # steps run: up to the last step with a loss
    S: int              # scored (step, sequence) pairs
    B: int
    H: int
    D: int
    N: int              # 0 without an output layer
    G: int
    cell: str
    dense: bool
    layer: bool
    v_steps: float      # mean steps a perturbation of V runs (from the first x_t[j] ≠ 0)
    sizes: tuple        # (name, elements) of every parameter with a gradient
    per_sequence: tuple  # parameters whose elements each perturb one sequence
    copies: tuple       # (name, elements run as perturbed copies in full mode)
    base: float         # forward and backward of the problem
    every_output: bool = False
    fast: bool = False                  # real steps run the cells' compiled kernels
    vanilla: gc.Sizes | None = None     # gradcheck.py's sizes when its fast path applies

    @classmethod
    def of(cls, p: Problem) -> "CellSizes":
        """Sizes from the problem's shapes, tokens and targets: no forward pass."""
        w, H, B, G = p.weights, p.H, p.B, p.G
        if p.layer:
            active = np.any(_time_major(p.upstream, p.batched) != 0, axis=(1, 2))
            scored = np.ones((p.T, B), dtype=bool)
        else:
            scored = np.ones((p.T, B), dtype=bool) if p.scored is None \
                else _time_major(p.scored, p.batched)
            active = scored.any(axis=1)
        T = int(np.flatnonzero(active)[-1]) + 1 if active.any() else 0
        sizes = {"V": w.V.size, "W": w.W.size, "b_h": w.b_h.size, "h_init": w.h_init.size}
        if not p.layer:
            sizes.update(U=w.U.size, b_y=w.b_y.size)
        if p.cell == "lstm":
            sizes["c_init"] = H if w.c_init is None else w.c_init.size
        if p.cell == "gru" and p.gru_reset == "after":
            sizes["b_hn"] = H
        if p.inputs is not None:
            sizes["inputs"] = p.inputs.size
        per_sequence = ("inputs",) + tuple(n for n in INITS if n in sizes and sizes[n] > H)
        copies = (("W", H * H), ("b_hn", H)) if p.cell == "gru" else ()
        vanilla = as_vanilla(p)
        return cls(T, int(scored[:T].sum()), B, H, p.D, p.N or 0, G, p.cell,
                   p.inputs is not None, p.layer, _v_steps(p, T), tuple(sizes.items()),
                   per_sequence, copies, sequence.estimate_work(p),
                   p.output_activation == "softmax" and p.loss == "squared_error",
                   getattr(sequence, "FAST", False) and hasattr(CELLS[p.cell], "scratch"),
                   None if vanilla is None else gc.Sizes.of(vanilla))

    def size(self, name: str) -> int:
        return dict(self.sizes).get(name, 0)

    def estimate(self, spec: gc.CheckSpec) -> tuple[float, int]:
        """(work, evaluations) of a check; gradcheck.estimate hands CellSizes here. With
        gradcheck.py's fast path, its estimate for v1's parameters plus this one's for the
        others (the base evaluation counted once)."""
        if self.vanilla is None:
            return self._estimate(spec)
        v1, rest = _split(spec)
        work, evaluations = gc.estimate(self.vanilla, v1) if v1.parameters else (0.0, 1)
        if rest.parameters:
            more, extra = self._estimate(rest)
            work, evaluations = work + more, evaluations + extra - 1
        return work, evaluations

    def _estimate(self, spec: gc.CheckSpec) -> tuple[float, int]:
        work, evaluations = self.base, 1
        per_item = gc.evaluations_per_item(spec.method)
        factor = COMPLEX if spec.method == "complex_step" else 1.0
        for name in spec.parameters:
            n = gc.items(self, name, spec.mode, spec.samples) if self.size(name) else 0
            copies = n if spec.mode == "directional" or name in OUTPUT_PATH else \
                round(n * dict(self.copies).get(name, 0) / max(self.size(name), 1))
            evaluations += n * per_item
            for k, path in ((copies, "copies"), (n - copies, "rank-one")):
                k *= per_item
                work += k * factor * self.evaluation_cost(name, path, spec.method)
                compiled = self.fast and path == "rank-one" and spec.method != "complex_step"
                overhead = STEP_OVERHEAD_FAST if compiled else STEP_OVERHEAD
                work += -(-k // self.chunk(name, path)) * self.T * overhead
        return work, evaluations

    def evaluation_cost(self, name: str, path: str, method: str = "central") -> float:
        """Work of one perturbed loss on `path` (copies or rank-one)."""
        compiled = self.fast and path == "rank-one" and method != "complex_step"
        step = self.G * self.H * self.H + (CELL_FAST if compiled else CELL)[self.cell] * self.G * self.H
        head = self.H if self.layer else self.N * self.H + gc.ELEMENTWISE * self.N
        if name in OUTPUT_PATH:
            if path == "copies":                    # directional: z on the base states
                return 3.0 * self.S * head + self.size(name)
            return self.S * (gc.ELEMENTWISE * self.N if self.every_output else gc.OUTPUT)
        if path == "copies":
            drive = self.T * self.B * self.G * self.H * (self.D if self.dense else 1)
            return COPIES * self.T * self.B * step + self.S * head + drive + self.size(name)
        rows = 1 if name in self.per_sequence else self.B
        steps = {"V": self.v_steps, "inputs": (self.T + 1) / 2}.get(name, self.T)
        row = step + ROW * (self.G * self.H + 2 * self.H)
        return rows * steps * row + self.S * head * (steps / max(self.T, 1)) * rows / self.B

    def chunk(self, name: str, path: str) -> int:
        """Models per chunk (their rows share each step's numpy calls)."""
        if path == "copies":
            return _copies_chunk_of(self.T, self.B, self.G, self.H, self.N, self.size(name))
        return max(1, CHUNK_ROWS // (1 if name in self.per_sequence else self.B))


def _v_steps(p: Problem, T: int) -> float:
    """Mean over the inputs j of the steps from the first x_t[j] ≠ 0 to T."""
    if T == 0:
        return 0.0
    if p.tokens is not None:
        first = np.full(p.D, T)
        tok = _time_major(p.tokens, p.batched)[:T]
        np.minimum.at(first, tok.ravel(), np.repeat(np.arange(T), p.B))
    else:
        first = gc.first_nonzero(np.any(_time_major(p.inputs, p.batched)[:T] != 0, axis=1))
    return float(np.mean(T - first))
