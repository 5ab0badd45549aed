"""The lecture's vanilla RNN, forward and backpropagation through time, in plain numpy.

    a_t = V x_t + W h_{t-1} + b_h      h_t = f_h(a_t)
    z_t = U h_t + b_y                  y^_t = f_y(z_t)        L = sum_t L_t(y^_t, y_t)

The forward pass runs on float64 or complex128 arrays (complex step differentiation) and
on weights with a leading batch axis (many perturbed models at once); backward is float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import fused
# the engine's one problem type: this module takes its vanilla, one-sequence instances (the
# cell rnn, no batch axis, an output layer); evaluate.py routes the rest to sequence.py
from .problem import Problem, Weights

HIDDEN_ACTIVATIONS = ("tanh", "sigmoid", "relu", "identity")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "identity")
LOSSES = ("cross_entropy", "binary_cross_entropy", "squared_error")
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                "identity": "squared_error"}
# loss -> the output activations it is defined for (None: any)
LOSS_NEEDS = {"cross_entropy": ("softmax",), "binary_cross_entropy": ("sigmoid",),
              "squared_error": None}
PARAMETERS = ("V", "W", "U", "b_h", "b_y", "h_init")


# --- activations: f(a) and f'(a) written with the output h = f(a), so backward needs no a ---

def sigmoid(x):
    if np.iscomplexobj(x):            # tanh is analytic and stable for complex arguments
        return 0.5 + 0.5 * np.tanh(0.5 * x)
    return np.exp(-np.logaddexp(0.0, -x))


def hidden(name: str, a):
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return sigmoid(a)
    if name == "relu":
        return np.where(a.real > 0, a, 0)
    return a


def hidden_slope(name: str, a, h):
    """f_h'(a) elementwise; relu's derivative is 0 at 0."""
    if name == "tanh":
        s = h * h
        return np.subtract(1.0, s, out=s)
    if name == "sigmoid":
        s = 1.0 - h
        s *= h
        return s
    if name == "relu":
        return (a.real > 0).astype(a.dtype)
    return np.ones_like(a)


def logsumexp(z):
    # a constant shift keeps it analytic; .max() of a real array skips np.max's wrapper
    m = z.real.max(axis=-1, keepdims=True) if np.iscomplexobj(z) else z.max(axis=-1, keepdims=True)
    return m[..., 0] + np.log(np.sum(np.exp(z - m), axis=-1))


def softplus(z):
    """log(1 + e^z) without overflow; analytic in z for complex step."""
    m = np.maximum(z.real, 0.0)
    return m + np.log(np.exp(-m) + np.exp(z - m))


def output(name: str, z):
    if name == "softmax":
        return np.exp(z - logsumexp(z)[..., None])
    if name == "sigmoid":
        return sigmoid(z)
    return z


def step_losses(loss: str, output_activation: str, z, y):
    """L_t for every step (and batch item), computed from the logits z."""
    if loss == "cross_entropy":                      # -log softmax(z)[y], y one-hot
        return logsumexp(z) - np.sum(y * z, axis=-1)
    if loss == "binary_cross_entropy":               # -y log s(z) - (1-y) log(1-s(z))
        return np.sum(softplus(z) - y * z, axis=-1)
    r = output(output_activation, z) - y
    return 0.5 * np.sum(r * r, axis=-1)


def loss_grad_z(loss: str, output_activation: str, z, yhat, y):
    """dL_t/dz_t for every step (float64, no batch axis)."""
    if loss in ("cross_entropy", "binary_cross_entropy"):
        return yhat - y
    r = yhat - y                                     # dL_t/dy^_t
    if output_activation == "softmax":
        return yhat * (r - np.sum(r * yhat, axis=-1, keepdims=True))
    if output_activation == "sigmoid":
        return r * yhat * (1.0 - yhat)
    return r


# --- forward ---

def _mv(M, v):
    """M v for a matrix or a batch of matrices M and a vector or batch of vectors v."""
    if M.ndim == 2:
        return v @ M.T
    return np.einsum("...ij,...j->...i", M, v)


def input_drive(problem: Problem, V) -> np.ndarray:
    """V x_t for every t: T x (batch) x H, a fresh array (forward adds b_h in place)."""
    if problem.tokens is not None:                           # columns of V, no one-hot product
        return V.T[problem.tokens] if V.ndim == 2 else np.moveaxis(V[..., problem.tokens], -1, 0)
    return np.moveaxis(_mv(V[..., None, :, :], problem.inputs), -2, 0) if V.ndim == 3 \
        else problem.inputs @ V.T


def _recur(activation: str, W, h_init, a, h) -> None:
    """The float64 unbatched recurrence, in place: `a` holds V x_t + b_h on entry and a_t on
    return. The step loop is the engine's hot path, so one BLAS call and two ufuncs per step
    into one scratch vector: no fresh memory, whose page faults cost more than the arithmetic."""
    h_prev, Wh = h_init, np.empty(a.shape[1])
    for t in range(len(a)):
        np.dot(W, h_prev, out=Wh)
        a[t] += Wh
        if activation == "tanh":
            np.tanh(a[t], out=h[t])
        else:
            h[t] = hidden(activation, a[t])
        h_prev = h[t]


@dataclass
class Cache:
    """What backward needs: every pre-activation and hidden state, and the outputs."""
    problem: Problem
    a: np.ndarray            # T x (batch) x H
    h: np.ndarray            # T x (batch) x H
    z: np.ndarray            # T x (batch) x N
    yhat: np.ndarray         # T x (batch) x N
    step_losses: np.ndarray | None = None   # T x (batch): L_t unreduced, 0 on unscored steps
    # L = loss_scale() · Σ_t step_losses
    loss: np.ndarray | float | None = None
    extras: dict = field(default_factory=dict)


def forward(problem: Problem, weights: Weights | None = None) -> Cache:
    """Run the RNN. `weights` overrides problem.weights (possibly batched or complex)."""
    w = weights or problem.weights
    if FUSED and fits_fused(problem, w):
        return _forward_fused(problem, w)
    drive = input_drive(problem, w.V)
    if drive.ndim == 2 and w.W.ndim == 2 and w.b_h.ndim == 1 and w.h_init.ndim == 1:
        batch = ()                                   # the common case, without broadcasting
    else:
        batch = np.broadcast_shapes(*(x.shape[:-1] for x in (w.b_h, w.h_init)),
                                    w.W.shape[:-2], w.V.shape[:-2], drive.shape[1:-1])
    arrays = (w.V, w.W, w.U, w.b_h, w.b_y, w.h_init, drive)
    dtype = np.float64 if all(x.dtype == np.float64 for x in arrays) else np.result_type(*arrays)
    T, H = problem.T, w.W.shape[-1]
    if batch == () and dtype == np.float64:
        # in place wherever the arrays are fresh: at H 512 a page fault costs more than the
        # arithmetic on its 512 values
        a = drive                                   # V x_t, fresh from input_drive
        a += w.b_h
        h = np.empty_like(a)
        _recur(problem.hidden_activation, w.W, w.h_init, a, h)
        z = h @ w.U.T
        z += w.b_y
    else:
        a = np.empty((T, *batch, H), dtype=dtype)
        h = np.empty_like(a)
        h_prev = w.h_init
        for t in range(T):
            a[t] = drive[t] + _mv(w.W, h_prev) + w.b_h
            h[t] = h_prev = hidden(problem.hidden_activation, a[t])
        z = _mv(w.U, h) + w.b_y
    # softmax and its cross-entropy share log-sum-exp(z): compute it once
    lse = None
    if problem.output_activation == "softmax" and z.dtype == np.float64:
        m = z.max(axis=-1, keepdims=True)         # one exp pass serves both (0.2 ms at T 100, N 256)
        e = z - m
        np.exp(e, out=e)
        s = e.sum(axis=-1, keepdims=True)
        lse, yhat = (m + np.log(s))[..., 0], e
        yhat /= s
    elif problem.output_activation == "softmax":
        lse = logsumexp(z)
        yhat = np.exp(z - lse[..., None])
    else:
        yhat = output(problem.output_activation, z)
    cache = Cache(problem, a, h, z, yhat)
    if problem.has_loss:
        y = problem.targets.reshape(T, *([1] * len(batch)), -1)
        if lse is not None and problem.loss == "cross_entropy":
            per_step = lse - np.einsum("...n,...n->...", y, z)
        else:
            per_step = step_losses(problem.loss, problem.output_activation, z, y)
        mask = problem.scored.reshape(T, *([1] * len(batch)))
        scale = problem.loss_scale()
        # step_losses are the unreduced L_t (PyTorch's reduction="none"); L applies the scale
        cache.step_losses = per_step if problem.scored.all() else np.where(mask, per_step, 0)
        cache.loss = cache.step_losses.sum(axis=0)
        if scale != 1.0:
            cache.loss = cache.loss * scale
    return cache


# --- the compiled path (fused.py) for small float64 problems, where numpy's ~1-2 µs per call
# outweighs the arithmetic ---

FUSED = True            # False: numpy only (tests run both paths; benchmarks compare them)
# Where the compiled loops beat numpy + BLAS: H <= FUSED_MAX_H and the multiply-adds of
# forward + full BPTT with diagnostics, 3 T H (H + N + D or 1) + T H^2 min(T, H), at most
# FUSED_MAX_WORK. Measured (forward + backward_with_diagnostics, tokens, min of many runs,
# OPENBLAS_NUM_THREADS=1, 2 shared cores) numpy / fused time: H 16 T 10 6x; H 100 T 25
# (work 7.5e6) 1.1-1.3x; H 64 T 100 (2.9e7) 1.2x; H 128 T 25 (1.2e7) 1.0x; H 100 T 50
# (2.8e7) 0.85x; H 256 T 10 (9e6) 0.95x; H 512 T 100 0.43x.
FUSED_MAX_H = 128
FUSED_MAX_WORK = 10_000_000
_NO_TOKENS, _NO_MATRIX, _NO_MASK = np.empty(0, np.int64), np.empty((0, 0)), np.empty(0, bool)
_NO_DIAGNOSTICS = (np.empty((0, 0)), np.empty(0))


def fits_fused(problem: Problem, w: Weights) -> bool:
    """float64, no batch axis, and small enough that the compiled loops win."""
    V, W, U, x = w.V, w.W, w.U, problem.inputs
    if not (V.ndim == W.ndim == U.ndim == 2 and w.b_h.ndim == w.b_y.ndim == w.h_init.ndim == 1
            and V.dtype == W.dtype == U.dtype == w.b_h.dtype == w.b_y.dtype == w.h_init.dtype
            == _F8 and (x is None or (x.dtype == _F8 and x.ndim == 2))):
        return False
    T, (N, H) = problem.T, U.shape
    step = H * (H + N + (V.shape[1] if x is not None else 1))
    return H <= FUSED_MAX_H and 3 * T * step + T * H * H * min(T, H) <= FUSED_MAX_WORK


_F8 = np.dtype(np.float64)


def _call(kernel, *args):
    """kernel(*args); inputs numba has no signature for (read-only, strided, other dtypes) are
    copied into the C-contiguous float64 / int64 / bool arrays it has (the outputs, allocated
    here, always fit)."""
    try:
        return kernel(*args)
    except TypeError:
        return kernel(*map(_conform, args))


_KERNEL_DTYPE = {"i": np.dtype(np.int64), "u": np.dtype(np.int64), "b": np.dtype(np.bool_)}


def _conform(x):
    if not isinstance(x, np.ndarray):
        return x
    dtype = _KERNEL_DTYPE.get(x.dtype.kind, _F8)
    if x.dtype == dtype and x.flags.c_contiguous and x.flags.writeable:
        return x
    return np.array(x, dtype=dtype, order="C")


def _sequence(p: Problem) -> tuple:
    """The kernels' sequence arguments: tokens, inputs, targets, scored (empty where None),
    the activations' and the loss's codes, and whether the reduction is mean."""
    return (_NO_TOKENS if p.tokens is None else p.tokens,
            _NO_MATRIX if p.inputs is None else p.inputs,
            _NO_MATRIX if p.targets is None else p.targets,
            _NO_MASK if p.scored is None else p.scored,
            fused.HIDDEN[p.hidden_activation], fused.OUTPUT[p.output_activation],
            fused.LOSS[p.loss if p.targets is not None else None], p.reduction == "mean")


def _forward_fused(problem: Problem, w: Weights) -> Cache:
    T, (N, H) = problem.T, w.U.shape
    a, h, z = np.empty((T, H)), np.empty((T, H)), np.empty((T, N))
    yhat = z if problem.output_activation == "identity" else np.empty((T, N))
    steps = np.empty(T if problem.targets is not None else 0)
    total = _call(fused.forward, w.V, w.W, w.U, w.b_h, w.b_y, w.h_init, *_sequence(problem),
                  a, h, z, yhat, steps)
    if problem.targets is None:
        return Cache(problem, a, h, z, yhat)
    return Cache(problem, a, h, z, yhat, steps, total)


def _backward_fused(cache: Cache, diagnostics: bool) -> tuple[Gradients, "BPTT"]:
    p = cache.problem
    w = p.weights
    (N, H), D, T = w.U.shape, w.V.shape[1], p.T
    dz = np.empty((T, N))
    g = Gradients(V=np.empty((H, D)), W=np.empty((H, H)), U=None, b_h=np.empty(H), b_y=None,
                  h_init=np.empty(H))
    bptt = BPTT(np.empty((T, H)), np.empty(T)) if diagnostics else None
    if p.inputs is not None:
        g.inputs = np.empty((T, D))
    _call(fused.backward, w.V, w.W, w.U, w.h_init, cache.a, cache.h, cache.z, cache.yhat,
          *_sequence(p), dz, g.V, g.W, g.b_h, g.h_init, getattr(g, "inputs", _NO_MATRIX),
          *((bptt.b_h_by_step, bptt.hidden_grad_norms) if diagnostics else _NO_DIAGNOSTICS))
    g.U, g.b_y = output_layer_grads(cache, dz)
    return g, bptt


def _use_fused_backward(cache: Cache, truncate: int | None) -> bool:
    p = cache.problem
    return FUSED and (truncate is None or truncate >= p.T) and p.has_loss \
        and cache.a.ndim == 2 and cache.a.dtype == np.float64 and fits_fused(p, p.weights)


def loss(problem: Problem, weights: Weights | None = None):
    """L for the problem (a number, or one per batch item)."""
    return forward(problem, weights).loss


# --- backward ---

class Gradients(Weights):
    """dL/dθ: one array per parameter, each shaped like the parameter; with dense inputs
    also `inputs` (dL/dx_t, T x D), which as_dict leaves out (it is not a weight)."""


def output_grads(cache: Cache):
    """dL/dz_t (T x N, reduction and null targets applied) and the immediate dL_t/dh_t (T x H)."""
    p = cache.problem
    dz = loss_grad_z(p.loss, p.output_activation, cache.z, cache.yhat, p.targets)
    scale = p.loss_scale()
    if scale != 1.0 or not p.scored.all():
        dz = dz * (p.scored[:, None] * scale)
    return dz, dz @ p.weights.U


def input_grad(problem: Problem, da: np.ndarray) -> np.ndarray:
    """dL/dV from dL/da_t (T x H)."""
    tokens = problem.tokens
    if tokens is not None and da.size * problem.D <= 2 ** 18:
        onehot = np.zeros((len(tokens), problem.D))  # the x_t: one small BLAS call
        onehot[np.arange(len(tokens)), tokens] = 1.0
        return da.T @ onehot
    if tokens is not None:
        # column j of dV sums da_t over the steps with token j; adding rows of dV^T one step
        # at a time is ~4x faster than np.add.at or the one-hot product at large sizes
        dVT = np.zeros((problem.D, da.shape[1]))
        for t, j in enumerate(tokens.tolist()):
            dVT[j] += da[t]
        return dVT.T
    return da.T @ problem.inputs


def h_prev(cache: Cache) -> np.ndarray:
    return np.concatenate([cache.problem.weights.h_init[None], cache.h[:-1]])


def recurrent_grad(cache: Cache, da: np.ndarray) -> np.ndarray:
    """dL/dW = Σ_t dL/da_t h_{t-1}ᵀ from the shifted views of h, without h_prev's copy."""
    dW = da[1:].T @ cache.h[:-1]
    h_init = cache.problem.weights.h_init
    if h_init.any():
        dW += np.outer(da[0], h_init)
    return dW


def backward(cache: Cache, truncate: int | None = None) -> Gradients:
    """dL/dθ by BPTT. `truncate` K keeps only the terms of L_t through a_k with t - k < K."""
    if _use_fused_backward(cache, truncate):
        return _backward_fused(cache, False)[0]
    p = cache.problem
    dz, dh_out = output_grads(cache)
    slope = hidden_slope(p.hidden_activation, cache.a, cache.h)
    if truncate is None or truncate >= p.T:
        da, dh_init, _ = _reverse(dh_out, slope, p.weights.W, keep_dh=False)
    else:
        da, dh_init = windowed_chain(dh_out, slope, p.weights.W, truncate)[:2]
    return _gradients(cache, dz, da, dh_init)


def _gradients(cache: Cache, dz, da, dh_init) -> Gradients:
    p = cache.problem
    U, b_y = output_layer_grads(cache, dz)
    g = Gradients(V=input_grad(p, da), W=recurrent_grad(cache, da), U=U, b_h=da.sum(axis=0),
                  b_y=b_y, h_init=dh_init)
    if p.inputs is not None:
        g.inputs = da @ p.weights.V               # dL/dx_t: CS231n's and Coursera's dx
    return g


def output_layer_grads(cache: Cache, dz) -> tuple[np.ndarray, np.ndarray]:
    """dL/dU and dL/db_y from dL/dz_t: truncation never changes them, and both backward
    paths (numpy and fused) take them from here, so they agree bit for bit."""
    return dz.T @ cache.h, dz.sum(axis=0)


def _reverse(dh_out, slope, W, keep_dh=True):
    """Full BPTT's reverse sweep: dL/da_t, dL/dh_init and dL/dh_t (the total derivative; None
    unless kept)."""
    T, H = dh_out.shape
    da = np.empty((T, H))
    dh = np.empty((T, H)) if keep_dh else None
    carry = np.zeros(H)                           # dL/dh_t arriving from step t+1
    for t in range(T - 1, -1, -1):
        dh_t = np.add(dh_out[t], carry, out=dh[t] if keep_dh else carry)
        np.multiply(dh_t, slope[t], out=da[t])
        carry = np.dot(da[t], W)
    return da, carry, dh


def backward_with_diagnostics(cache: Cache, truncate: int | None = None,
                              include: tuple[str, ...] = ()) -> tuple[Gradients, "BPTT"]:
    """backward() and bptt_diagnostics() in one sweep: what /v1/gradients returns."""
    if _use_fused_backward(cache, truncate):     # the same gradients as backward()'s
        grads, bptt = _backward_fused(cache, not include)
        return grads, bptt or bptt_diagnostics(cache, truncate, include)
    p = cache.problem
    dz, dh_out = output_grads(cache)
    slope = hidden_slope(p.hidden_activation, cache.a, cache.h)
    if truncate is None or truncate >= p.T:
        da, dh_init, dh = _reverse(dh_out, slope, p.weights.W)
        bptt = _diagnostics(cache, dh_out, slope, include, dh)
    else:
        da, dh_init = windowed_chain(dh_out, slope, p.weights.W, truncate)[:2]
        bptt = _diagnostics(cache, dh_out, slope, include, truncate=truncate)
    return _gradients(cache, dz, da, dh_init), bptt


def windowed_chain(dh_out, slope, W, window=None, keep_terms=False):
    """Backpropagate every L_t on its own, as rows of one matrix, through at most `window` steps.

    Row t of G is dL_t/dh_k while k runs from T-1 down to 0. Returns dL/da_k summed over t
    (T x H), dL/dh_init, dL_t/db_h by step t (T x H), ||dL/dh_k|| (T), and, if asked, the
    lecture's unrolled terms dL_t/da_k (T x T x H). Cost T x window x H^2.
    """
    T, H = dh_out.shape
    window = T if window is None else min(window, T)
    G = np.zeros((T, H))
    da = np.empty((T, H))
    by_step = np.zeros((T, H))
    norms = np.empty(T)
    terms = np.zeros((T, T, H)) if keep_terms else None
    for k in reversed(range(T)):
        G[k] = dh_out[k]
        rows = slice(k, min(k + window, T))          # the L_t that still reach step k
        norms[k] = np.linalg.norm(G[rows].sum(axis=0))
        term = G[rows] * slope[k]                    # dL_t/da_k = dL_t/dh_k . dh_k/db_h
        by_step[rows] += term
        if keep_terms:
            terms[rows, k] = term
        da[k] = term.sum(axis=0)
        G[rows] = term @ W                           # dL_t/dh_{k-1}
    dh_init = G[:window].sum(axis=0)
    return da, dh_init, by_step, norms, terms


def b_h_by_step_forward_mode(dh_out, slope, W):
    """dL_t/db_h for every t by forward-mode Jacobians J_t = dh_t/db_h: cost T x H^3,
    cheaper than the T^2 x H^2 chain when T > H (full BPTT only)."""
    T, H = dh_out.shape
    J = np.zeros((H, H))
    out = np.empty((T, H))
    for t in range(T):
        J = slope[t][:, None] * (W @ J + np.eye(H))
        out[t] = dh_out[t] @ J
    return out


def b_h_by_step_reverse(dh_out, slope, W):
    """dL_t/db_h for every t by reverse mode, all L_t at once as the rows of G: cost T^2 H^2 / 2,
    cheaper than forward mode while T <= H. Row t of G is dL_t/dh_k as k runs down."""
    T, H = dh_out.shape
    G = dh_out.copy()                 # row k is dL_k/dh_k until step k starts using it
    term = np.empty((T, H))
    by_step = np.zeros((T, H))
    for k in range(T - 1, -1, -1):
        np.multiply(G[k:], slope[k], out=term[k:])   # dL_t/da_k for t >= k
        by_step[k:] += term[k:]
        np.dot(term[k:], W, out=G[k:])                # dL_t/dh_{k-1}
    return by_step


def dh_norms(dh_out, slope, W) -> np.ndarray:
    """||dL/dh_t||, the total derivative (full BPTT whatever the truncation), in O(T H^2)."""
    T, H = dh_out.shape
    norms = np.empty(T)
    carry = np.zeros(H)
    for t in reversed(range(T)):
        dh = dh_out[t] + carry
        norms[t] = np.linalg.norm(dh)
        carry = (dh * slope[t]) @ W
    return norms


def jacobian_norms(cache: Cache) -> np.ndarray:
    """||prod_{i=k+1..t} dh_i/dh_{i-1}||_2 for k <= t (1 on the diagonal), NaN above it
    (the API turns those into null)."""
    p = cache.problem
    slope = hidden_slope(p.hidden_activation, cache.a, cache.h)
    T, H = p.T, p.H
    out = np.full((T, T), np.nan)
    for k in range(T):
        P = np.eye(H)
        products = [P]
        for t in range(k + 1, T):
            P = slope[t][:, None] * (p.weights.W @ P)   # dh_t/dh_{t-1} = diag(f'(a_t)) W
            products.append(P)
        out[k:, k] = np.linalg.svd(np.stack(products), compute_uv=False)[:, 0]
    return out


@dataclass
class BPTT:
    b_h_by_step: np.ndarray
    hidden_grad_norms: np.ndarray
    b_h_terms: np.ndarray | None = None
    jacobian_norms: np.ndarray | None = None


def bptt_diagnostics(cache: Cache, truncate: int | None = None,
                     include: tuple[str, ...] = ()) -> BPTT:
    """The per-step view of BPTT that the lecture draws: dL_t/db_h per t, ||dL/dh_t||,
    the unrolled terms and the Jacobian products' norms."""
    p = cache.problem
    _, dh_out = output_grads(cache)
    slope = hidden_slope(p.hidden_activation, cache.a, cache.h)
    return _diagnostics(cache, dh_out, slope, include, truncate=truncate)


def _diagnostics(cache: Cache, dh_out, slope, include, dh=None, truncate=None) -> BPTT:
    """`dh`: dL/dh_t from a full reverse sweep already done (its row norms are the norms)."""
    p = cache.problem
    full = truncate is None or truncate >= p.T
    want_terms = "b_h_terms" in include
    if full and not want_terms:
        norms = np.sqrt(np.einsum("ij,ij->i", dh, dh)) if dh is not None \
            else dh_norms(dh_out, slope, p.weights.W)
        by_step = b_h_by_step_forward_mode(dh_out, slope, p.weights.W) if p.T > p.H \
            else b_h_by_step_reverse(dh_out, slope, p.weights.W)
        out = BPTT(by_step, norms)
    else:
        _, _, by_step, norms, terms = windowed_chain(dh_out, slope, p.weights.W, truncate,
                                                     keep_terms=want_terms)
        if not full:    # the norms stay the total derivative: what vanishes or explodes
            norms = dh_norms(dh_out, slope, p.weights.W)
        out = BPTT(by_step, norms, terms)
    if "jacobian_norms" in include:
        out.jacobian_norms = jacobian_norms(cache)
    return out


def estimate_work(T: int, H: int, D: int, N: int, *, truncate: int | None = None,
                  include: tuple[str, ...] = (), dense_inputs: bool = True) -> float:
    """Multiply-adds a /v1/gradients request will cost, for the work limit (a rough count)."""
    step = H * H + N * H + (D * H if dense_inputs else H)
    work = 3.0 * T * step                                   # forward + backward
    window = T if truncate is None else min(truncate, T)
    chain = T * window * H * H
    if window == T and "b_h_terms" not in include:
        chain = min(chain, T * H ** 3)
    work += chain
    if "jacobian_norms" in include:
        work += T * T / 2 * H ** 3 * 4                       # products plus their SVDs
    return work
