"""The one sequence runner for every cell (rnn, lstm, gru): forward over T steps of B
sequences, the output layer and losses, full and truncated BPTT, the per-step and unrolled
diagnostics, layer mode and input gradients.

Inside, every per-step array is time-major, T × (P) × B × F, so step t is one contiguous
block; the results are handed out in the problem's shapes (P × B × T × F, the B axis dropped
for an unbatched problem). The state s_t is h_t, or [h_t; c_t] for the lstm.
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from . import rnn
from .cells import CELLS, StepParams
from .cells._kernels import scatter_add_rows, softmax_rows
from .problem import PARAMETERS, Problem

FAST = True     # float64 steps in compiled kernels (False: numpy only; the tests run both)


@dataclass
class Cache:
    problem: Problem
    h: np.ndarray                       # T × H / B × T × H (leading P when perturbed)
    c: np.ndarray | None                # lstm: like h
    z: np.ndarray | None                # T × N / B × T × N; None without an output layer
    yhat: np.ndarray | None
    step_losses: np.ndarray | None      # T / B × T, unreduced; None without a loss
    loss: float | np.ndarray | None     # loss_scale() · Σ step_losses
    # what backward needs, time-major
    perturbed: bool = False
    fast: bool = False                  # the steps' caches come from the compiled kernels
    step: StepParams | None = None
    steps: list = field(default_factory=list)   # the cells' per-step caches
    s: np.ndarray | None = None         # T × B × S states
    s_init: np.ndarray | None = None    # B × S
    z_tm: np.ndarray | None = None      # T × B × N
    yhat_tm: np.ndarray | None = None


@dataclass
class BPTT:
    b_h_by_step: np.ndarray             # T × G·H, summed over the batch
    hidden_grad_norms: np.ndarray       # T / B × T: ‖∂L/∂s_t‖, full BPTT
    b_h_terms: np.ndarray | None = None        # T × T × G·H
    jacobian_norms: np.ndarray | None = None   # T × T / B × T × T, NaN above the diagonal


class Buffers:
    """float64 work arrays handed out again once nothing references them any more.

    On this VM every fresh 4 KiB page costs a fault of ~3 µs, more than the arithmetic a step
    does on it: at B 32, H 100, T 25 a forward + backward touched ~2,400 fresh pages (~40% of
    its time). The runner takes its time-major arrays from here; a buffer is reused only when
    its reference count shows that no view of it is left (every numpy view holds its base), so
    the arrays a Cache hands out stay valid for as long as anyone holds them.
    """

    def __init__(self, limit: int = 48 << 20, largest: int = 12 << 20):
        self.limit, self.largest = limit, largest      # bytes pooled at most; per buffer
        self._bufs: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape) -> np.ndarray:
        n = math.prod(shape)
        if n * 8 > self.largest:
            return np.empty(shape)
        with self._lock:
            best = None
            for buf in self._bufs:          # 3 references: the list, `buf`, getrefcount's own
                if buf.size >= n and sys.getrefcount(buf) == 3 and (best is None or buf.size < best.size):
                    best = buf
            if best is None:
                best = self._grow(-(-n // 8192) * 8192)        # 64 KiB steps: sizes recur
                if best is None:
                    return np.empty(shape)
            return best[:n].reshape(shape)

    def zeros(self, shape) -> np.ndarray:
        out = self.empty(shape)
        out.fill(0.0)
        return out

    def _grow(self, n: int):
        """A new pooled buffer of n numbers, dropping unused ones if over the limit."""
        total = sum(b.size for b in self._bufs) * 8
        if total + n * 8 > self.limit:
            keep = [b for b in self._bufs if sys.getrefcount(b) > 3]
            self._bufs = keep
            total = sum(b.size for b in keep) * 8
            if total + n * 8 > self.limit:
                return None
        buf = np.empty(n)
        self._bufs.append(buf)
        return buf


BUFFERS = Buffers()


# --- forward ---

def forward(problem: Problem, params: dict[str, np.ndarray] | None = None) -> Cache:
    """Run the cell over every sequence. `params` overrides any of PARAMETERS, possibly
    complex and possibly with one leading perturbation axis P shared by all overrides."""
    arrays, P = _arrays(problem, params)
    cell = CELLS[problem.cell]
    T, H, B = problem.T, problem.H, problem.B
    lead = (B,) if P is None else (P, B)
    dtype = np.result_type(*(x for x in arrays.values() if x is not None))
    pb = (lambda x: x) if P is None else (lambda x: x if x.ndim == 1 else x[:, None])  # (P,1,F)

    fast = FAST and P is None and dtype == np.float64
    new = BUFFERS.empty if fast else np.empty
    xd = _input_drive(problem, arrays["V"], pb(arrays["b_h"]), arrays["inputs"], P, new)
    b_hn = arrays["b_hn"] if arrays["b_hn"] is not None else np.zeros(H)
    step = StepParams(arrays["W"], problem.hidden_activation, problem.gru_reset, pb(b_hn))
    s_init = _initial_state(problem, arrays, lead, dtype)

    S = s_init.shape[-1]
    s = new((T, *lead, S)) if fast else np.empty((T, *lead, S), dtype=dtype)
    steps = []
    s_prev = s_init
    if fast:        # compiled gate kernels writing into buffers; the gates overwrite xd
        extra = new((T, B, cell.EXTRA * H))
        work = cell.scratch(lead, H)
        for t in range(T):
            s_prev, cache_t = cell.step_forward(xd[t], s_prev, step, (s[t], extra[t], work))
            steps.append(cache_t)
    else:
        for t in range(T):
            s_t, cache_t = cell.step_forward(xd[t], s_prev, step)
            s[t] = s_t
            steps.append(cache_t)
            s_prev = s_t
    h_tm = s[..., :H]

    z_tm = yhat_tm = lse = None
    U = arrays["U"]
    if U is not None and fast:
        z_tm = new((T, B, U.shape[0]))
        np.matmul(h_tm.reshape(T * B, H), U.T, out=z_tm.reshape(T * B, -1))  # h rows: a view
        z_tm += arrays["b_y"]
        yhat_tm, lse = _softmax(z_tm, new(z_tm.shape)) if problem.output_activation == "softmax" \
            else (rnn.output(problem.output_activation, z_tm), None)
    elif U is not None:
        z_tm = h_tm @ np.swapaxes(U, -1, -2) + pb(arrays["b_y"])
        yhat_tm = rnn.output(problem.output_activation, z_tm)
    per_step = _step_losses(problem, h_tm, z_tm, P, lse)
    out = _external(problem.batched)
    cache = Cache(problem, out(h_tm), out(s[..., H:]) if S > H else None,
                  None if z_tm is None else out(z_tm), None if z_tm is None else out(yhat_tm),
                  None, None, P is not None, fast, step, steps, s, s_init, z_tm, yhat_tm)
    if per_step is not None:
        cache.step_losses = _external(problem.batched, feature=False)(per_step)
        total = per_step.sum(axis=(0, -1))
        cache.loss = total * problem.loss_scale()
    return cache


def _arrays(problem: Problem, params) -> tuple[dict, int | None]:
    """Every parameter by name, overrides applied, and the perturbation axis's length."""
    w = problem.weights
    arrays = {name: getattr(w, name) for name in PARAMETERS if name != "inputs"}
    arrays["inputs"] = problem.inputs
    P = None
    for name, value in (params or {}).items():
        if name not in arrays or arrays[name] is None:
            raise ValueError(f"no parameter {name!r} in this problem")
        value = np.asarray(value)
        base = arrays[name]
        if value.ndim == base.ndim + 1:
            if P is not None and value.shape[0] != P:
                raise ValueError("the overrides' leading P axes differ")
            P = value.shape[0]
        elif value.shape != base.shape:
            raise ValueError(f"{name}: shape {value.shape}, expected {base.shape}")
        arrays[name] = value
    return arrays, P


def _tm(x, batched: bool, feature: bool = True):
    """A problem's per-step array, (P ×) (B ×) T (× F), as T × (P ×) B (× F) (a view)."""
    if not batched:
        x = np.expand_dims(x, -3 if feature else -2)
    return np.moveaxis(x, -2 if feature else -1, 0)


def _input_drive(problem: Problem, V, b_h, inputs, P, new=np.empty) -> np.ndarray:
    """V x_t + b_h for every step and sequence, T × (P ×) B × G·H, a fresh array (`new`
    allocates it on the float64 path without P)."""
    VT = np.swapaxes(V, -1, -2)
    if problem.tokens is not None:
        tok = _tm(problem.tokens, problem.batched, feature=False)
        table = VT + b_h                             # D rows: b_h added once, not T B times
        if table.ndim == 2 and table.dtype == np.float64:
            return np.take(table, tok, axis=0, out=new((*tok.shape, table.shape[1])))
        if table.ndim == 2:
            return table[tok]
        return np.ascontiguousarray(np.moveaxis(table[:, tok], 1, 0))
    x = _tm(inputs, problem.batched)
    if VT.ndim == 2 and b_h.ndim == 1 and x.ndim == 3 and np.result_type(x, VT, b_h) == np.float64:
        T, B, D = x.shape
        out = new((T, B, VT.shape[1]))
        np.matmul(x.reshape(T * B, D), VT, out=out.reshape(T * B, -1))       # one GEMM
        out += b_h
        return out
    if x.ndim == 3 and P is not None:                # P only in the weights: T × 1 × B × D
        x = x[:, None]
    return x @ VT + b_h


def _initial_state(problem: Problem, arrays, lead, dtype) -> np.ndarray:
    """s_{-1} on every row: h_init (and c_init) broadcast to lead × H."""
    w = problem.weights
    parts = [("h_init", w.h_init)] + ([("c_init", w.c_init)] if problem.cell == "lstm" else [])
    out = []
    for name, base in parts:
        x = arrays[name] if arrays[name] is not None else np.zeros(problem.H)
        if base is None or base.ndim == 1:          # shared by every sequence
            x = x[..., None, :]
        out.append(np.broadcast_to(x, (*lead, problem.H)))
    s_init = np.concatenate(out, axis=-1) if len(out) > 1 else out[0]
    return np.array(s_init, dtype=dtype, order="C")          # a fresh C-ordered copy


def _softmax(z, out):
    """softmax(z) and log-sum-exp(z) from one exp pass (float64 T × B × N, compiled)."""
    lse = np.empty(z.shape[:-1])
    softmax_rows(z.reshape(-1, z.shape[-1]), out.reshape(-1, z.shape[-1]), lse.reshape(-1))
    return out, lse


def _step_losses(problem: Problem, h_tm, z_tm, P, lse=None):
    """The unreduced L_t, T × (P ×) B; 0 on unscored steps; None without a loss. `lse`:
    log-sum-exp(z) when the forward has it (cross-entropy is then lse − ⟨y, z⟩)."""
    lift = (lambda x: x) if P is None else (lambda x: x[:, None])   # T × 1 × B (× F)
    if problem.layer:
        return np.sum(lift(_tm(problem.upstream, problem.batched)) * h_tm, axis=-1)
    if problem.targets is None:
        return None
    y = lift(_tm(problem.targets, problem.batched))
    if lse is not None and problem.loss == "cross_entropy":
        per_step = lse - np.einsum("...n,...n->...", y, z_tm)
    else:
        per_step = rnn.step_losses(problem.loss, problem.output_activation, z_tm, y)
    if problem.scored is not None and not problem.scored.all():
        per_step = np.where(lift(_tm(problem.scored, problem.batched, feature=False)),
                            per_step, 0.0)
    return per_step


def _external(batched: bool, feature: bool = True):
    """Time-major T × (P ×) B (× F) back to the problem's (P ×) (B ×) T (× F), as views."""
    def out(x):
        x = np.moveaxis(x, 0, -2 if feature else -1)
        if not batched:
            x = x[..., 0, :, :] if feature else x[..., 0, :]
        return x
    return out


# --- backward ---

def backward(cache: Cache, truncate: int | None = None, include: tuple[str, ...] = (),
             diagnostics: bool = True, carry=None) -> tuple[dict[str, np.ndarray], BPTT | None]:
    """dL/dθ by BPTT (truncated to K = `truncate` steps of the state), and the diagnostics.

    `carry(t, ds_t, ds_prev) -> ds_prev` is a hook for grading: it may change what step t
    hands back to step t − 1 (ds_t is the total dL/ds_t at step t, ds_prev the correct
    dL/ds_{t−1} through step t; a known mistake leaves a term of it out). Full BPTT without
    diagnostics only; it runs the cells' numpy steps."""
    p = cache.problem
    if carry is not None:
        if truncate is not None or diagnostics or include:
            raise ValueError("a carry hook needs full BPTT without diagnostics")
        if cache.perturbed or cache.s.dtype != np.float64 or not p.has_loss:
            raise ValueError("backward needs a float64 forward without a perturbation axis, "
                             "and targets or upstream")
        dz, ds_out = _output_grads(cache)
        dxd, d_rec, ds_init, _ = _reverse(cache, ds_out, carry)
        return _gradients(cache, dz, dxd, d_rec, ds_init), None
    if cache.perturbed or cache.s.dtype != np.float64:
        raise ValueError("backward needs a float64 forward without a perturbation axis")
    if not p.has_loss:
        raise ValueError("backward needs targets or upstream")
    T = p.T
    K = T if truncate is None else min(int(truncate), T)
    want_terms = "b_h_terms" in include
    dz, ds_out = _output_grads(cache)
    norms = by_step = terms = None
    if K == T and not diagnostics:
        dxd, d_rec, ds_init, _ = _reverse(cache, ds_out)
    else:
        dxd, d_rec, ds_init, by_step, terms, norms = _rows_sweep(
            cache, ds_out, K, keep_terms=diagnostics and want_terms, norms=K == T)
        if diagnostics and norms is None:            # the total derivative: full BPTT
            norms = _reverse(cache, ds_out.copy())[3]
    grads = _gradients(cache, dz, dxd, d_rec, ds_init)
    if not diagnostics:
        return grads, None
    bptt = BPTT(by_step, norms.T if p.batched else norms[:, 0], terms)
    if "jacobian_norms" in include:
        J = jacobian_norms(cache)
        bptt.jacobian_norms = J if p.batched else J[0]
    return grads, bptt


def _output_grads(cache: Cache):
    """dL/dz_t (T × B × N, scale and null targets applied; None in layer mode) and the
    immediate dL_t/ds_t (T × B × S, a fresh array: the reverse sweep writes on it)."""
    p = cache.problem
    T, B, S = cache.s.shape
    H = p.H
    ds = BUFFERS.empty((T, B, S)) if S == H else BUFFERS.zeros((T, B, S))   # L_t reaches c_t only through h_t
    if p.layer:
        ds[..., :H] = _tm(p.upstream, p.batched)
        return None, ds
    y = _tm(p.targets, p.batched)
    if p.loss in ("cross_entropy", "binary_cross_entropy"):     # rnn.loss_grad_z's ŷ − y
        dz = np.subtract(cache.yhat_tm, y, out=BUFFERS.empty(cache.z_tm.shape))
    else:
        dz = rnn.loss_grad_z(p.loss, p.output_activation, cache.z_tm, cache.yhat_tm, y)
    scale = p.loss_scale()
    if p.scored is not None and not p.scored.all():
        dz *= _tm(p.scored, p.batched, feature=False)[..., None] * scale
    elif scale != 1.0:
        dz *= scale
    np.matmul(dz.reshape(T * B, -1), p.weights.U, out=ds.reshape(T * B, S)[:, :H])
    return dz, ds


def _backward_step(cache: Cache):
    return CELLS[cache.problem.cell].step_backward


def _reverse(cache: Cache, ds_out, hook=None):
    """Full BPTT in one reverse sweep: dL/dxd_t, d_rec_t, dL/ds_init, ‖dL/ds_t‖ (T × B).
    `ds_out` (fresh) is overwritten with the total dL/ds_t. `hook`: backward's `carry`."""
    p, step = cache.problem, cache.step
    cell = CELLS[p.cell]
    T, B, S = ds_out.shape
    GH = step.W.shape[0]
    dxd = BUFFERS.empty((T, B, GH))
    d_rec = dxd if cell.rec_is_drive(step) else BUFFERS.empty((T, B, GH))
    carry = np.zeros((B, S))                       # dL/ds_t arriving from step t+1
    if cache.fast and FAST and hook is None:
        work = cell.scratch((B,), step.H)
        for t in range(T - 1, -1, -1):
            ds = np.add(ds_out[t], carry, out=ds_out[t])
            cell.step_backward(ds, cache.steps[t], step, (dxd[t], d_rec[t], carry, work))
    else:
        for t in range(T - 1, -1, -1):
            ds = np.add(ds_out[t], carry, out=ds_out[t])
            dxd[t], carry, d_rec[t] = cell.step_backward(ds, cache.steps[t], step)
            if hook is not None:
                carry = np.array(hook(t, ds, carry), dtype=np.float64)
    norms = np.sqrt(np.einsum("tbs,tbs->tb", ds_out, ds_out))
    return dxd, d_rec, carry, norms


def _rows_sweep(cache: Cache, ds_out, K: int, keep_terms: bool, norms: bool):
    """Every L_t backpropagated on its own, as row t of R (dL_t/ds_k while k runs down),
    through at most K steps: the truncated gradient, dL_t/db_h by t, the unrolled terms."""
    step, cell = cache.step, CELLS[cache.problem.cell]
    T, B, S = ds_out.shape
    GH = step.W.shape[0]
    R = np.zeros((T, B, S))
    dxd = BUFFERS.empty((T, B, GH))
    d_rec = BUFFERS.empty((T, B, GH))
    by_step = np.zeros((T, GH))
    terms = np.zeros((T, T, GH)) if keep_terms else None
    total = np.empty((T, B)) if norms else None
    fast = cache.fast and FAST
    if fast:        # the compiled steps on K·B rows (the kernels map row r to sequence r % B)
        m = min(K, T) * B
        work = cell.scratch((m,), step.H)
        bufs = (np.empty((m, GH)), np.empty((m, GH)), np.empty((m, S)))
    for k in range(T - 1, -1, -1):
        R[k] = ds_out[k]
        lo, hi = k, min(k + K, T)                    # the L_t that still reach step k
        if norms:
            ds = R[lo:hi].sum(axis=0)
            total[k] = np.sqrt(np.einsum("bs,bs->b", ds, ds))
        if fast:
            m = (hi - lo) * B
            out = (bufs[0][:m], bufs[1][:m], bufs[2][:m], tuple(w[:m] for w in work))
            dxd_r, ds_prev, d_rec_r = cell.step_backward(R[lo:hi].reshape(m, S), cache.steps[k],
                                                         step, out)
            R[lo:hi] = ds_prev.reshape(hi - lo, B, S)
            dxd_r, d_rec_r = dxd_r.reshape(hi - lo, B, GH), d_rec_r.reshape(hi - lo, B, GH)
        else:
            dxd_r, R[lo:hi], d_rec_r = cell.step_backward(R[lo:hi], cache.steps[k], step)
        term = dxd_r.sum(axis=1)                     # dL_t/da_k · ∂a_k/∂b_h, over the batch
        by_step[lo:hi] += term
        if keep_terms:
            terms[lo:hi, k] = term
        dxd[k] = dxd_r.sum(axis=0)
        d_rec[k] = d_rec_r.sum(axis=0)
    return dxd, d_rec, R[:K].sum(axis=0), by_step, terms, total


def _gradients(cache: Cache, dz, dxd, d_rec, ds_init) -> dict[str, np.ndarray]:
    p = cache.problem
    w = p.weights
    cell = CELLS[p.cell]
    T, B, GH = dxd.shape
    H = p.H
    flat = dxd.reshape(T * B, GH)
    grads = {"b_h": flat.sum(axis=0)}
    if p.tokens is not None:
        dVT = np.zeros((p.D, GH))                   # row j: the sum of dL/dxd over token j's steps
        scatter_add_rows(dVT, np.ascontiguousarray(_tm(p.tokens, p.batched, feature=False).reshape(-1), dtype=np.int64), flat)
        grads["V"] = dVT.T
    else:
        x = _tm(p.inputs, p.batched)
        grads["V"] = flat.T @ x.reshape(T * B, -1)
        grads["inputs"] = _external(p.batched)(dxd @ w.V)
    h_tm = cache.s[..., :H]
    grads.update(cell.weight_grads(d_rec, h_tm, cache.s_init[:, :H], cache.steps, cache.step))
    for name, part in (("h_init", ds_init[:, :H]), ("c_init", ds_init[:, H:])):
        if name == "c_init" and p.cell != "lstm":
            continue
        base = getattr(w, name)
        grads[name] = part.sum(axis=0) if base is None or base.ndim == 1 else part.copy()
    if dz is not None and w.U is not None:
        N = dz.shape[-1]
        grads["U"] = dz.reshape(-1, N).T @ h_tm.reshape(-1, H)       # a view: no copy of h
        grads["b_y"] = dz.reshape(-1, N).sum(axis=0)
    if p.cell == "gru" and p.gru_reset != "after":
        grads.pop("b_hn", None)
    return grads


def state_jacobians(cache: Cache) -> np.ndarray:
    """∂s_t/∂s_{t-1} for every step and sequence, T × B × S × S: an identity pushed through
    each step's backward as S rows (row j of the result is e_jᵀ ∂s_t/∂s_{t-1})."""
    step_backward, step = _backward_step(cache), cache.step
    T, B, S = cache.s.shape
    eye = np.broadcast_to(np.eye(S)[:, None, :], (S, B, S))
    J = np.empty((T, B, S, S))
    for t in range(T):
        J[t] = np.moveaxis(step_backward(eye, cache.steps[t], step)[1], 0, 1)
    return J


def jacobian_norms(cache: Cache) -> np.ndarray:
    """B × T × T: [b, t, k] = ‖Π_{i=k+1..t} ∂s_i/∂s_{i-1}‖₂ (1 on the diagonal), NaN for k > t."""
    J = state_jacobians(cache)
    T, B, S, _ = J.shape
    out = np.full((B, T, T), np.nan)
    for k in range(T):
        prods = np.empty((T - k, B, S, S))
        prods[0] = np.eye(S)
        for t in range(k + 1, T):
            np.matmul(J[t], prods[t - k - 1], out=prods[t - k])
        out[:, k:, k] = np.linalg.svd(prods, compute_uv=False)[..., 0].T
    return out


def estimate_work(problem: Problem, truncate: int | None = None,
                  include: tuple[str, ...] = ()) -> float:
    """Multiply-adds of forward + backward with the diagnostics (a rough count, as
    rnn.estimate_work counts them; the gated cells cost about G× the vanilla cell)."""
    T, H, B, G = problem.T, problem.H, problem.B, problem.G
    S = 2 * H if problem.cell == "lstm" else H
    N = problem.N or 0
    D = problem.D if problem.inputs is not None else 1
    step = G * H * H + N * H + G * H * D
    work = 3.0 * T * B * step
    window = T if truncate is None else min(truncate, T)
    work += T * window * B * G * H * S              # every L_t as a row, through the window
    if "jacobian_norms" in include:
        work += T * B * S * G * H * S + T * T / 2 * B * S ** 3 * 4   # Jacobians, products, SVDs
    return work
