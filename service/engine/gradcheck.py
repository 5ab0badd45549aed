"""Numerical gradient checking of the RNN engine, batched (plain numpy, no web imports).

Every method compares the analytic BPTT gradient with derivatives computed from loss values
of perturbed models:

    central       (L(θ+ε) − L(θ−ε)) / 2ε                         2 evaluations per item
    forward       (L(θ+ε) − L(θ)) / ε                             1 per item
    complex_step  Im L(θ+iε) / ε, the same code on complex128      1 per item
    richardson    central differences at ε, ε/2, ε/4 extrapolated to ε→0 (error O(ε⁶)); the gap
                  between the last two extrapolations is the error estimate    6 per item
    taylor        remainders r(h) = |L(θ+hu) − L(θ) − h·gᵀu| for h = ε, ε/2, … ε/16: a correct
                  gradient gives r ∝ h², the fitted slope is `convergence_order`; the
                  one-sided differences extrapolated to h→0 give the numerical value   5 per item

Speed: a full check does not run one forward pass per element. Perturbing one weight is a
rank-one change: V_ij adds ε·x_t[j] to a_t[i], W_ij adds ε·h_{t−1}[j] (of the perturbed
trajectory), b_h_i adds ε to a_t[i], h_init_i adds ε to h_{−1}[i]; U_ij adds ε·h_t[j] to z_t[i]
and b_y_i adds ε to z_t[i]. So thousands of perturbed sequences run as one recurrence on a
(B, H) state, one GEMM per step, in chunks that keep memory bounded; U and b_y leave h alone
and need only the outputs of the base trajectory. Each perturbed model joins the batch at the
first step its perturbation reaches (a column of V for a token that never occurs: never, its
loss is the base loss), and carries only its difference from the base model, Δh_t, through
exact difference formulas (tanh(a+d) − tanh(a) = tanh(d)(1 − h²)/(1 + h·tanh(d)), log Σ ŷ e^Δz
for softmax cross-entropy, …): no large loss is subtracted from another, so a central check
at ε = 1e-6 is accurate to ~1e-11 instead of ~1e-8. The elementwise work of a real step
(those formulas over the (B, H) and (B, N) arrays) runs in compiled loops, one pass per
row (gradcheck_kernels); complex steps and relu/identity units use numpy. Directional mode
perturbs whole matrices and runs the engine's own batched forward pass.

Randomness (modes sample and directional): parameter number k in (V, W, U, b_h, b_y, h_init)
draws from np.random.default_rng([seed, k]), so the same seed gives the same elements and
directions for a parameter whichever other parameters are checked. `sample` takes
min(samples, size) distinct flat indices (rng.choice without replacement, then sorted);
`directional` takes `samples` standard normal vectors of the parameter's shape, each scaled
to unit Frobenius norm.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import gradcheck_kernels as kernels
from . import rnn
from .problem import PARAMETERS as ALL_PARAMETERS
from .gradcheck_kernels import EXPM1_SERIES, SMALL, TANH_SERIES

METHODS = ("central", "forward", "complex_step", "richardson", "taylor")
MODES = ("full", "sample", "directional")
# default step sizes: central/forward near the float64 optimum for O(1) weights; complex step
# has no cancellation, so ε can be tiny; richardson and taylor start from a larger step that
# they then shrink (by halving).
DEFAULT_EPS = {"central": 1e-6, "forward": 1e-7, "complex_step": 1e-20,
               "richardson": 1e-3, "taylor": 1e-2}
DEFAULT_RTOL, DEFAULT_ATOL = 1e-5, 1e-8
TAYLOR_STEPS = 5
HIDDEN_PATH = ("V", "W", "b_h", "h_init")     # perturbations that change the hidden states
CHUNK_BYTES = 64 * 2 ** 20                    # memory of one batch of perturbed sequences
CHUNK_ITEMS = 2048                            # beyond this, bigger GEMMs stop getting faster
CACHE_BYTES = 2 ** 20
# real steps of the perturbed recurrence run gradcheck_kernels' compiled loops (tanh and
# sigmoid hidden units, every head); False: the numpy functions, for tests and benchmarks
FUSED = True
# The work model, in multiply-adds of a GEMM: one elementwise operation per hidden unit or
# class costs ELEMENTWISE; a time step of one chunk has a fixed cost of STEP_OVERHEAD (its
# numpy calls); a U or b_y perturbation costs OUTPUT per scored step (only z_t[i] moves); a
# complex evaluation costs COMPLEX real ones; the per-item matrices of directional mode run
# DIRECTIONAL times slower than one shared GEMM. Calibrated against CPU time on this 2-core
# machine: at most about 0.1 ns per unit, so the default budget of 4e10 is ≤ ~4 s. The
# compiled steps (FUSED: real methods, hidden tanh/sigmoid, every head) do their part of the
# elementwise work at ELEMENTWISE_FUSED (char-rnn full check: ~0.06 ns per unit with it).
ELEMENTWISE = 60.0
ELEMENTWISE_FUSED = 15.0
STEP_OVERHEAD = 6e5
OUTPUT = 100.0
COMPLEX = 2.5
DIRECTIONAL = 40.0
# remainders below this multiple of eps·|L| are rounding noise, not Taylor terms
TAYLOR_NOISE = 1e4


@dataclass(frozen=True)
class CheckSpec:
    method: str = "central"
    mode: str = "full"
    eps: float | None = None                  # None: DEFAULT_EPS[method]
    samples: int = 10
    seed: int = 0
    parameters: tuple[str, ...] = rnn.PARAMETERS
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL

    @property
    def step(self) -> float:
        return DEFAULT_EPS[self.method] if self.eps is None else self.eps


@dataclass
class ParameterReport:
    passed: bool
    checked: int
    failed: int
    max_abs_error: float
    max_rel_error: float
    worst_index: list[int]
    analytic_at_worst: float
    numerical_at_worst: float
    error_estimate: float | None = None       # richardson: the largest estimate among items
    convergence_order: float | None = None    # taylor: median observed order of the remainder


@dataclass
class Report:
    passed: bool
    method: str
    mode: str
    eps: float
    rtol: float
    atol: float
    samples: int | None
    seed: int | None
    evaluations: int
    parameters: dict[str, ParameterReport] = field(default_factory=dict)
    convergence_order: float | None = None


class NonFiniteLoss(ArithmeticError):
    """The base model (parameter None) or a perturbed one overflowed float64, or a
    numerical derivative did (eps far too large or too small)."""

    def __init__(self, parameter: str | None):
        super().__init__(parameter)
        self.parameter = parameter


# --- stencils: the step multipliers each method evaluates per item, and how they combine ---

def offsets(method: str, eps: float) -> np.ndarray:
    if method == "central":
        return np.array([eps, -eps])
    if method == "forward":
        return np.array([eps])
    if method == "complex_step":
        return np.array([1j * eps])
    if method == "richardson":
        h = eps / np.array([1.0, 2.0, 4.0])
        return np.stack([h, -h], axis=1).ravel()        # +h0, −h0, +h1, −h1, +h2, −h2
    return eps / 2.0 ** np.arange(TAYLOR_STEPS)          # taylor: one-sided, halving


def evaluations_per_item(method: str) -> int:
    return len(offsets(method, 1.0))


@dataclass
class Numerical:
    values: np.ndarray                        # derivative estimates, one per item
    error_estimate: np.ndarray | None = None
    order: np.ndarray | None = None           # taylor: per item, NaN where unmeasurable


def combine(method: str, eps: float, losses: np.ndarray, analytic: np.ndarray,
            loss_size: float = 1.0) -> Numerical:
    """Derivatives from the loss changes L(θ + s·u) − L(θ) (items × offsets) of one
    stencil; `loss_size` is scale · Σ_t |L_t|, the scale of rounding noise in L."""
    if method == "central":
        return Numerical((losses[:, 0] - losses[:, 1]).real / (2 * eps))
    if method == "forward":
        return Numerical(losses[:, 0].real / eps)
    if method == "complex_step":
        return Numerical(losses[:, 0].imag / eps)
    if method == "richardson":
        h = eps / np.array([1.0, 2.0, 4.0])
        d = (losses[:, 0::2] - losses[:, 1::2]).real / (2 * h)   # central at h0, h1, h2
        r1 = (4 * d[:, 1:] - d[:, :-1]) / 3                        # O(h⁴)
        r2 = (16 * r1[:, 1] - r1[:, 0]) / 15                       # O(h⁶)
        return Numerical(r2, error_estimate=np.abs(r2 - r1[:, 1]))
    return _taylor(eps, losses.real, analytic, loss_size)


def _taylor(eps: float, losses: np.ndarray, analytic: np.ndarray, loss_size: float) -> Numerical:
    h = eps / 2.0 ** np.arange(losses.shape[1])
    remainder = np.abs(losses - analytic[:, None] * h)
    order = _fitted_order(h, remainder, TAYLOR_NOISE * np.finfo(float).eps * loss_size)
    # one-sided differences f(h) = g + c1·h + c2·h² + …; eliminate one power per level
    table = losses / h
    for level in range(1, table.shape[1]):
        table = (2.0 ** level * table[:, 1:] - table[:, :-1]) / (2.0 ** level - 1)
    return Numerical(table[:, 0], order=order)


def _fitted_order(h: np.ndarray, r: np.ndarray, noise: float) -> np.ndarray:
    """Least-squares slope of log r against log h over the points above the noise floor,
    per item; NaN with fewer than two such points (a loss that does not change)."""
    ok = r > noise
    x = np.where(ok, np.log(h), 0.0)
    y = np.where(ok, np.log(np.where(ok, r, 1.0)), 0.0)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = x.sum(1) / n, y.sum(1) / n
        sxx = (ok * (x - mx[:, None]) ** 2).sum(1)
        sxy = (ok * (x - mx[:, None]) * (y - my[:, None])).sum(1)
        slope = sxy / sxx
    return np.where(n >= 2, slope, np.nan)


# --- batched perturbed losses ---

def _chunk_size(width: int) -> int:
    """Items per chunk: about six (B, width) complex arrays live at once, and a (B, width)
    state of about CACHE_BYTES, so the elementwise passes of a step stay in cache."""
    return int(max(1, min(CHUNK_ITEMS, CHUNK_BYTES // (6 * 16 * max(width, 1)),
                          max(CACHE_BYTES // (8 * max(width, 1)), 64))))


def element_losses(problem: rnn.Problem, name: str, flat: np.ndarray, steps: np.ndarray,
                   cache: rnn.Cache) -> np.ndarray:
    """L(θ + s·e_k) − L(θ) for every flat index k of parameter `name` and every step s in
    `steps` (real or imaginary): an array items × steps, computed in batches.

    The perturbed models carry only their difference from the base model (Δh_t, Δz_t, ΔL_t,
    computed by exact difference formulas), never L(θ + s·e_k) − L(θ) as the difference of
    two totals: the rounding of a large L would swamp an ε-sized change."""
    shape = getattr(problem.weights, name).shape
    rows, cols = (flat // shape[1], flat % shape[1]) if len(shape) == 2 else (flat, flat)
    K = len(steps)
    rows, cols = np.repeat(rows, K), np.repeat(cols, K)
    deltas = np.tile(steps, len(flat))
    out = np.zeros(len(deltas), dtype=np.result_type(deltas, float))
    if name in HIDDEN_PATH:
        start = np.repeat(start_steps(problem, cache, name, flat), K)
        # run items in order of their first affected step, so a chunk's early steps are short
        order = np.argsort(start, kind="stable")
        order = order[start[order] <= last_scored(problem)]      # the others leave L unchanged
        size = _chunk_size(problem.H + problem.N)
        # one Δh and one product buffer for every chunk (see _hidden_path)
        buffers = (np.empty((min(size, len(order)), problem.H), dtype=deltas.dtype),
                   np.empty((min(size, len(order)), problem.H + problem.N), dtype=deltas.dtype))
        for i in range(0, len(order), size):
            part = order[i:i + size]
            out[part] = _hidden_path(problem, cache, name, rows[part], cols[part], deltas[part],
                                     start[part], buffers)
    else:
        size = _chunk_size(int(problem.scored.sum()) * problem.N)
        for i in range(0, len(deltas), size):
            part = slice(i, i + size)
            out[part] = _output_path(problem, cache, name, rows[part], cols[part], deltas[part])
    return out.reshape(len(flat), K)


def last_scored(p: rnn.Problem) -> int:
    return int(np.flatnonzero(p.scored)[-1])


def start_steps(p: rnn.Problem, cache: rnn.Cache, name: str, flat: np.ndarray) -> np.ndarray:
    """The first step whose pre-activation a perturbation of `name`[flat] changes (T: none).
    Before it the perturbed model's states are the base model's: V_ij waits for the first
    x_t[j] ≠ 0 (for tokens, the first occurrence of token j), W_ij for h_{t−1}[j] ≠ 0."""
    if name in ("b_h", "h_init"):
        return np.zeros(len(flat), dtype=np.int64)
    if name == "V":
        first = first_nonzero_input(p, p.T)
    else:
        first = first_nonzero(rnn.h_prev(cache) != 0)
    return first[flat % len(first)]


def first_nonzero(x: np.ndarray) -> np.ndarray:
    """Per column of a T × n bool array, the first row that is True (T: none)."""
    return np.where(x.any(axis=0), np.argmax(x, axis=0), x.shape[0])


def first_nonzero_input(p: rnn.Problem, T: int) -> np.ndarray:
    """Per input j, the first t < T with x_t[j] ≠ 0 (T: none); O(T) for tokens."""
    if p.inputs is not None:
        return first_nonzero(p.inputs[:T] != 0)
    first = np.full(p.D, T)
    np.minimum.at(first, p.tokens[:T], np.arange(min(T, len(p.tokens))))
    return first


def _hidden_path(p: rnn.Problem, cache: rnn.Cache, name: str, rows, cols, deltas,
                 start, buffers) -> np.ndarray:
    """Loss changes of B models that differ from the base in one V, W, b_h or h_init entry
    each. Items are sorted by `start`: item b joins the batch at step start[b] (before it,
    its states are the base model's). The state carried is Δh_t = h_t(perturbed) − h_t(base).
    `buffers`: arrays of at least B rows for Δh (B × H) and each step's product (B × (H+N))."""
    w = p.weights
    B = len(deltas)
    items = np.arange(B)
    complex_ = np.iscomplexobj(deltas)
    steps = _Steps(p, cache, complex_)
    h_before = np.concatenate([w.h_init[None], cache.h])          # base h_{t−1} at index t
    # reused, not fresh: a new (B, H+N) product every step was ~1 MB of page faults each
    # time, more than the step's elementwise work (24k faults in a 23k-parameter check)
    dh, product = buffers[0][:B], buffers[1][:B]
    dh.fill(0)
    # one GEMM per step: Δh_{t−1} [Wᵀ | Uᵀ] gives Δa_t and Δz_{t−1} together
    WU = np.concatenate([w.W.T, w.U.T], axis=1)
    total = np.zeros(B, dtype=deltas.dtype)
    first, last = int(start[0]), last_scored(p)
    n = 0
    for t in range(first, last + 1):
        joining = int(np.searchsorted(start, t, side="right"))
        if joining > n and name == "h_init":                      # Δh_{−1} = ε e_i
            dh[items[n:joining], rows[n:joining]] = deltas[n:joining]
        n = joining
        both = _gemm(dh[:n], WU, complex_, product[:n])
        if t > first and p.scored[t - 1]:                         # items joining now add 0
            steps.add_loss(t - 1, both, p.H, total)
        # Δa_t = W Δh_{t−1} + kick
        kick = _kick(p, name, t, cols[:n], deltas[:n], h_before[t], dh) if name != "h_init" \
            else deltas[:0]
        dh = steps.hidden(t, both, rows[:len(kick)], kick, dh)
    steps.add_loss(last, _gemm(dh[:n], w.U.T, complex_), 0, total)
    return total


class _Steps:
    """One step's elementwise work: the compiled kernels for real steps of the activations
    and heads they cover (FUSED), else the numpy functions below."""

    def __init__(self, p: rnn.Problem, cache: rnn.Cache, complex_: bool):
        self.p, self.cache = p, cache
        fused = FUSED and not complex_
        self.hidden_code = kernels.HIDDEN.get(p.hidden_activation) if fused else None
        if self.hidden_code is not None:
            self.a, self.h = np.ascontiguousarray(cache.a), np.ascontiguousarray(cache.h)
        self.loss_code = kernels.LOSSES.get((p.loss, p.output_activation)) if fused else None
        if self.loss_code is not None:
            self.yhat = np.ascontiguousarray(cache.yhat, dtype=float)
            self.y = np.ascontiguousarray(p.targets, dtype=float)

    def hidden(self, t: int, both: np.ndarray, rows, kick, dh: np.ndarray) -> np.ndarray:
        """Δh_t of the first n = len(both) items into dh (returned) from Δa_t, which is
        both[:, :H] plus kick[b] at [b, rows[b]]."""
        n, H = len(both), self.p.H
        if self.hidden_code is not None:
            kernels.hidden_step(self.hidden_code, both, rows.astype(np.int64, copy=False),
                                _real(kick), self.a[t], self.h[t], dh)
            return dh
        both[np.arange(len(kick)), rows] += kick
        change = hidden_change(self.p.hidden_activation, self.cache.a[t], self.cache.h[t],
                               both[:, :H])
        dh[:n] = change        # not dh = change: identity's change is a view of `both`, which
        return dh              # the next step's product overwrites before reading Δh again

    def add_loss(self, t: int, x: np.ndarray, offset: int, total: np.ndarray) -> None:
        """total[:n] += ΔL_t for Δz_t = x[:, offset:offset + N] (n rows)."""
        n, p = len(x), self.p
        if self.loss_code is None:
            total[:n] += loss_change(p, self.cache, t, x[:, offset:offset + p.N])
            return
        direct = np.empty(n, dtype=np.int64)
        k = kernels.loss_step(self.loss_code, x, offset, self.yhat[t], self.y[t],
                              p.loss_scale(), total, direct)
        if k:                                                     # past the series: numpy
            rows = direct[:k]
            total[rows] += loss_change(p, self.cache, t, x[rows, offset:offset + p.N])


def _real(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=float)


def _kick(p: rnn.Problem, name: str, t: int, cols, deltas, h_prev, dh):
    """What the perturbation adds to a_t[i]: ε·x_t[j] (V_ij), ε·h_{t−1}[j] of the perturbed
    model (W_ij: base h_prev plus the item's Δh_{t−1}), ε (b_h_i)."""
    if name == "W":
        return deltas * (h_prev[cols] + dh[np.arange(len(cols)), cols])
    if name == "V":
        return deltas * (p.tokens[t] == cols if p.tokens is not None else p.inputs[t, cols])
    return deltas


def _gemm(x: np.ndarray, MT: np.ndarray, complex_: bool, out: np.ndarray | None = None) -> np.ndarray:
    """x @ MT with a real MT, into `out` if given (numpy copies an x that overlaps it): two
    real GEMMs for a complex x, not one complex GEMM."""
    if not complex_:
        return x @ MT if out is None else np.matmul(x, MT, out=out)
    out = np.empty((x.shape[0], MT.shape[1]), dtype=complex) if out is None else out
    out.real = x.real @ MT
    out.imag = x.imag @ MT
    return out


# --- exact changes of f_h and of L_t for a change of their argument ---
# Written as differences (tanh(a+d) − tanh(a) = tanh(d)(1 − h²)/(1 + h·tanh(d)), …) they
# are exact for any d, cancel nothing, and for small d need only multiplications: the
# series below (truncated where the next term is < 1e-17 relative, for |d| ≤ SMALL) replace
# np.tanh and np.expm1, which are an order of magnitude slower per element in numpy's
# float64 without AVX-512.

# SMALL, TANH_SERIES (in powers of d²) and EXPM1_SERIES (in powers of d) live in
# gradcheck_kernels, whose compiled steps use them too.


def _largest(d) -> float:
    """max |d|: the series below apply up to SMALL; larger changes are computed as
    f(x + d) − f(x) with the engine's own functions (their rounding is then negligible
    against the change)."""
    if not d.size:
        return 0.0
    return float(np.abs(d).max()) if np.iscomplexobj(d) else max(float(d.max()), -float(d.min()))


def _terms(m: float, series, power: int) -> int:
    """How many terms of `series` bring the truncation below 1e-17 relative for every
    |d| ≤ m ≤ SMALL. The tiny perturbations of a check need one to three terms."""
    for k in range(1, len(series)):
        if abs(series[k]) * m ** (power * k) <= 1e-17:
            return k
    return len(series)


def _odd_series(x, x_power, coefficients, own_power: bool = False):
    """x · Σ_k c_k (x_power)^k by Horner's rule, in place on one new array (with two
    terms, x_power's own if the caller hands it over)."""
    if len(coefficients) == 1:
        return x * coefficients[0]
    if own_power and len(coefficients) == 2:          # x_power is read once: reuse it
        out = x_power
        out *= coefficients[-1]
    else:
        out = x_power * coefficients[-1]
    for i in range(len(coefficients) - 2, -1, -1):
        out += coefficients[i]
        if i:
            out *= x_power
    out *= x
    return out


def tanh_of(d, largest: float):
    """tanh(d) for |d| ≤ largest ≤ SMALL."""
    return _odd_series(d, d * d, TANH_SERIES[:_terms(largest, TANH_SERIES, 2)], own_power=True)


def expm1_of(d, largest: float):
    """e^d − 1 for |d| ≤ largest ≤ SMALL."""
    return _odd_series(d, d, EXPM1_SERIES[:_terms(largest, EXPM1_SERIES, 1)])


def hidden_change(name: str, a, h, d):
    """f_h(a + d) − f_h(a) for base pre-activations a and states h = f_h(a)."""
    if name == "identity":
        return d
    m = _largest(d)
    if name == "relu" or m > SMALL:      # relu: the engine's convention, f(0) = 0, f'(0) = 0
        return rnn.hidden(name, a + d) - h
    if name == "tanh":
        t = tanh_of(d, m)
        den = h * t
        den += 1
        t *= 1 - h * h
        t /= den
        return t
    e = expm1_of(d, m)                   # sigmoid: σ(a+d) = σ e^d / (1 − σ + σ e^d)
    return h * (1 - h) * e / (1 + h * e)


def output_change(name: str, yhat, dz, largest: float):
    """f_y(z + dz) − f_y(z) for |dz| ≤ largest ≤ SMALL, and for softmax
    S = Σ_k ŷ_k (e^{dz_k} − 1)."""
    if name == "identity":
        return dz, None
    m = expm1_of(dz, largest)
    if name == "sigmoid":
        return yhat * (1 - yhat) * m / (1 + yhat * m), None
    S = (m * yhat).sum(axis=-1, keepdims=True)            # softmax(z+dz)_k = ŷ_k e^{dz_k}/(1+S)
    return yhat * (m - S) / (1 + S), S


def loss_change(p: rnn.Problem, cache: rnn.Cache, t, dz):
    """L_t(z_t + dz) − L_t(z_t) per row of dz (the reduction applied); t may be an index
    array (dz then S × B × N)."""
    yhat, y = cache.yhat[t], p.targets[t]
    if np.ndim(t):
        yhat, y = yhat[:, None, :], y[:, None, :]
    m = _largest(dz)
    if m > SMALL:
        z = cache.z[t][:, None, :] if np.ndim(t) else cache.z[t]
        change = rnn.step_losses(p.loss, p.output_activation, z + dz, y) \
            - rnn.step_losses(p.loss, p.output_activation, z, y)
    elif p.loss == "cross_entropy" and not np.ndim(t):     # log Σ ŷ e^{dz} − y·dz, as GEMVs
        change = np.log1p(expm1_of(dz, m) @ yhat) - dz @ y
    elif p.loss == "cross_entropy":
        change = np.log1p((expm1_of(dz, m) * yhat).sum(axis=-1)) - (dz * y).sum(axis=-1)
    elif p.loss == "binary_cross_entropy":   # softplus(z + dz) − softplus(z) − y·dz
        change = (np.log1p(yhat * expm1_of(dz, m)) - y * dz).sum(axis=-1)
    else:                                # ½‖ŷ + Δŷ − y‖² − ½‖ŷ − y‖²
        dy = output_change(p.output_activation, yhat, dz, m)[0]
        change = (dy * (yhat - y + 0.5 * dy)).sum(axis=-1)
    return change * p.loss_scale()


def _output_path(p: rnn.Problem, cache: rnn.Cache, name: str, rows, cols, deltas) -> np.ndarray:
    """Loss changes of B models that differ in one U or b_y entry each: the hidden states are
    the base model's, only z_t[i] moves (by ε·h_t[j] for U_ij, by ε for b_y_i)."""
    S = np.flatnonzero(p.scored)
    B = len(deltas)
    dzi = deltas * cache.h[S][:, cols] if name == "U" else np.broadcast_to(deltas, (len(S), B))
    m = _largest(dzi)
    if (p.output_activation == "softmax" and p.loss == "squared_error") or m > SMALL:
        dz = np.zeros((len(S), B, p.N), dtype=deltas.dtype)
        dz[:, np.arange(B), rows] = dzi                   # every ŷ_k moves, or a large step
        return loss_change(p, cache, S, dz).sum(axis=0)
    # otherwise L_t changes through z_t[i] alone: one number per item and step
    yhat, y = cache.yhat[S][:, rows], p.targets[S][:, rows]
    if p.loss == "squared_error":
        dy = output_change(p.output_activation, yhat, dzi, m)[0]
        change = dy * (yhat - y + 0.5 * dy)
    else:               # cross-entropy: log(1 + ŷ_i(e^dz − 1)) − y_i dz; BCE's softplus: the same
        change = np.log1p(yhat * expm1_of(dzi, m)) - y * dzi
    return change.sum(axis=0) * p.loss_scale()


def directional_losses(problem: rnn.Problem, name: str, directions: np.ndarray,
                       steps: np.ndarray, cache: rnn.Cache) -> np.ndarray:
    """L(θ + s·u) − L(θ) for every direction u (rows of `directions`, flattened) and step s."""
    theta = getattr(problem.weights, name)
    K = len(steps)
    size = _directional_chunk(theta.size, problem.T, problem.H, problem.N)
    deltas = np.tile(steps, len(directions))
    dirs = np.repeat(directions, K, axis=0)
    parts = []
    for start in range(0, len(deltas), size):
        d = deltas[start:start + size]
        batch = theta[None] + (d[:, None] * dirs[start:start + size]).reshape(-1, *theta.shape)
        parts.append(_batched_model_losses(problem, name, batch, cache))
    return np.concatenate(parts).reshape(len(directions), K)


def _directional_chunk(size: int, T: int, H: int, N: int) -> int:
    """Models per batch: the weights and the forward pass's a, h, z, ŷ of each."""
    return max(1, min(CHUNK_ITEMS, CHUNK_BYTES // (16 * (size + T * (2 * H + 2 * N)))))


def _batched_model_losses(p: rnn.Problem, name: str, batch: np.ndarray, cache: rnn.Cache):
    if name in HIDDEN_PATH:                         # the engine's own batched forward
        steps = rnn.forward(p, p.weights.replace(**{name: batch})).step_losses   # unreduced L_t
        return (steps - cache.step_losses[:, None]).sum(axis=0) * p.loss_scale()
    S = np.flatnonzero(p.scored)                    # U, b_y: the base hidden states suffice
    h = cache.h[S]
    if name == "U":
        z = np.einsum("bnh,sh->sbn", batch, h) + p.weights.b_y
    else:
        z = (h @ p.weights.U.T)[:, None, :] + batch[None]
    per_step = rnn.step_losses(p.loss, p.output_activation, z, p.targets[S][:, None, :])
    return (per_step - cache.step_losses[S][:, None]).sum(axis=0) * p.loss_scale()


# --- choosing what to check ---

def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, ALL_PARAMETERS.index(name)])   # v1's six come first


def sampled_indices(size: int, samples: int, seed: int, name: str) -> np.ndarray:
    k = min(samples, size)
    return np.sort(rng_for(seed, name).choice(size, size=k, replace=False))


def directions(shape: tuple[int, ...], samples: int, seed: int, name: str) -> np.ndarray:
    u = rng_for(seed, name).standard_normal((samples, int(np.prod(shape))))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


# --- the check ---

def gradcheck(problem: rnn.Problem, spec: CheckSpec) -> Report:
    """Analytic gradients (full BPTT) against numerical ones, per parameter, for the
    lecture's cell on one sequence and v1's parameters (gradcheck_cells.gradcheck takes any
    problem and hands those here)."""
    eps = spec.step
    with np.errstate(all="ignore"):
        cache = rnn.forward(problem)
        grads = rnn.backward(cache).as_dict()
    if not (np.isfinite(cache.loss) and all(np.isfinite(g).all() for g in grads.values())):
        raise NonFiniteLoss(None)
    steps = offsets(spec.method, eps)
    report = Report(True, spec.method, spec.mode, eps, spec.rtol, spec.atol,
                    spec.samples if spec.mode != "full" else None,
                    spec.seed if spec.mode != "full" else None, evaluations=1)
    for name in spec.parameters:
        g = grads[name]
        which, analytic, index = _items(spec, name, g)
        losses = _losses(problem, spec, name, cache, steps, which)
        report.evaluations += losses.size
        with np.errstate(all="ignore"):
            numerical = combine(spec.method, eps, losses, analytic,
                                problem.loss_scale() * float(np.abs(cache.step_losses).sum()))
        if not np.all(np.isfinite(numerical.values)):
            raise NonFiniteLoss(name)
        report.parameters[name] = summarise(analytic, numerical, index, spec)
        report.passed &= report.parameters[name].passed
    if spec.method == "taylor":
        orders = [r.convergence_order for r in report.parameters.values()
                  if r.convergence_order is not None]
        report.convergence_order = float(np.median(orders)) if orders else None
    return report


def _items(spec: CheckSpec, name: str, g: np.ndarray):
    """What is checked for one parameter: directions or flat indices, the analytic values
    there (gᵀu or g[k]), and a function naming item k for the report."""
    if spec.mode == "directional":
        u = directions(g.shape, spec.samples, spec.seed, name)
        return u, u @ g.ravel(), lambda k: [int(k)]               # direction number k
    flat = np.arange(g.size) if spec.mode == "full" else \
        sampled_indices(g.size, spec.samples, spec.seed, name)
    return flat, g.ravel()[flat], lambda k: [int(i) for i in np.unravel_index(flat[k], g.shape)]


def _losses(problem, spec, name, cache, steps, which):
    """Loss changes items × steps; `which` is directions (directional) or flat indices."""
    with np.errstate(all="ignore"):
        if spec.mode == "directional":
            return directional_losses(problem, name, which, steps, cache)
        return element_losses(problem, name, which, steps, cache)


def summarise(analytic: np.ndarray, num: Numerical, index,
              spec: CheckSpec) -> ParameterReport:
    """Per-parameter figures; the worst item is the one that most exceeds its tolerance
    (`index(k)` names item k)."""
    n = num.values
    err = np.abs(analytic - n)
    tol = spec.atol + spec.rtol * np.abs(n)
    ok = err <= tol
    scale = np.maximum(np.abs(analytic), np.abs(n))
    rel = np.divide(err, scale, out=np.zeros_like(err), where=scale > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(err > 0, err / tol, 0.0)        # inf where tol is 0 and err is not
    worst = int(np.lexsort((err, excess))[-1])
    order = None
    if num.order is not None:
        measured = num.order[np.isfinite(num.order)]
        order = float(np.median(measured)) if measured.size else None
    passed = bool(ok.all()) and (order is None or order >= 1.5)
    return ParameterReport(
        passed=passed, checked=int(n.size), failed=int((~ok).sum()),
        max_abs_error=float(err.max()), max_rel_error=float(rel.max()),
        worst_index=index(worst), analytic_at_worst=float(analytic[worst]),
        numerical_at_worst=float(n[worst]),
        error_estimate=None if num.error_estimate is None else float(num.error_estimate.max()),
        convergence_order=order)


# --- the work budget: estimated before any work ---

@dataclass(frozen=True)
class Sizes:
    T: int              # steps run: up to the last scored step
    S: int              # scored steps
    H: int
    D: int
    N: int
    dense: bool         # dense inputs (else tokens)
    v_steps: float      # mean steps a perturbation of V runs (from the first x_t[j] ≠ 0)
    every_output: bool = False    # softmax with squared error: one z_t[i] moves every ŷ_k
    fused_hidden: bool = False    # real steps of f_h and of the loss run compiled (FUSED)
    fused_loss: bool = False

    @classmethod
    def of(cls, p: rnn.Problem) -> "Sizes":
        """Sizes from the problem's shapes, tokens and targets: no forward pass (a vanilla
        one-sequence problem; gradcheck_cells.CellSizes sizes any problem)."""
        T = last_scored(p) + 1
        first = first_nonzero_input(p, T)
        return cls(T, int(p.scored.sum()), p.H, p.D, p.N, p.inputs is not None,
                   float(np.mean(T - first)),
                   p.output_activation == "softmax" and p.loss == "squared_error",
                   FUSED and p.hidden_activation in kernels.HIDDEN,
                   FUSED and (p.loss, p.output_activation) in kernels.LOSSES)

    def size(self, name: str) -> int:
        return {"V": self.H * self.D, "W": self.H * self.H, "U": self.N * self.H,
                "b_h": self.H, "b_y": self.N, "h_init": self.H}[name]


def evaluation_cost(s: Sizes, name: str, method: str, mode: str) -> float:
    """Multiply-adds (elementwise work weighted by ELEMENTWISE) of one perturbed loss."""
    compiled = mode != "directional" and method != "complex_step"    # the _Steps kernels
    hidden = ELEMENTWISE_FUSED if compiled and s.fused_hidden else ELEMENTWISE
    loss = ELEMENTWISE_FUSED if compiled and s.fused_loss else ELEMENTWISE
    step = s.H * s.H + hidden * s.H                      # one step of the recurrence
    out = s.S * (s.N * s.H + loss * s.N)                 # outputs and losses
    if mode == "directional":
        if name in HIDDEN_PATH:
            cost = DIRECTIONAL * s.T * step + out + s.T * s.H * (s.D if s.dense else 1)
        else:
            cost = 3 * out
        cost += s.size(name)
    elif name in HIDDEN_PATH:
        steps = s.v_steps if name == "V" else s.T
        cost = steps * step + out * steps / s.T
    else:                                                # only z_t[i] moves
        cost = s.S * (ELEMENTWISE * s.N if s.every_output else OUTPUT)
    return cost * (COMPLEX if method == "complex_step" else 1.0)


def chunk_items(s: Sizes, name: str, mode: str) -> int:
    if mode == "directional":
        return _directional_chunk(s.size(name), s.T, s.H, s.N)
    return _chunk_size(s.H + s.N if name in HIDDEN_PATH else s.S * s.N)


def items(s: Sizes, name: str, mode: str, samples: int) -> int:
    if mode == "full":
        return s.size(name)
    return samples if mode == "directional" else min(samples, s.size(name))


def estimate(s: Sizes, spec: CheckSpec) -> tuple[float, int]:
    """(work, evaluations) of a check, from the sizes only (gradcheck_cells.CellSizes, the
    sizes of any problem, estimates itself)."""
    if hasattr(s, "estimate"):
        return s.estimate(spec)
    work = rnn.estimate_work(s.T, s.H, s.D, s.N, dense_inputs=s.dense)
    evaluations = 1
    per_item = evaluations_per_item(spec.method)
    for name in spec.parameters:
        n = items(s, name, spec.mode, spec.samples) * per_item
        evaluations += n
        work += n * evaluation_cost(s, name, spec.method, spec.mode)
        work += -(-n // chunk_items(s, name, spec.mode)) * s.T * STEP_OVERHEAD
    return work, evaluations


def what_fits(s: Sizes, spec: CheckSpec, budget: float) -> str:
    """A sentence saying which smaller check would fit the budget."""
    mode = "sample" if spec.mode == "full" else spec.mode
    largest = max(s.size(n) for n in spec.parameters) if mode == "sample" else 10 ** 9
    lo, hi = 0, largest
    while lo < hi:                                   # the largest samples that fits
        mid = (lo + hi + 1) // 2
        if estimate(s, CheckSpec(spec.method, mode, spec.eps, mid, spec.seed,
                                 spec.parameters))[0] <= budget:
            lo = mid
        else:
            hi = mid - 1
    hints = []
    if lo >= 1:
        hints.append(f"use mode={mode} with samples ≤ {lo}")
    if spec.mode == "full":
        fit = [n for n in spec.parameters
               if estimate(s, CheckSpec(spec.method, "full", spec.eps, 1, 0, (n,)))[0] <= budget]
        if fit and len(fit) < len(spec.parameters):
            hints.append(f"check fewer parameters at a time (each of {fit} fits on its own)")
    if spec.method in ("richardson", "taylor") and \
            estimate(s, CheckSpec("central", spec.mode, None, spec.samples, 0, spec.parameters))[0] <= budget:
        hints.append("use method=central (fewer evaluations per element)")
    if not hints:
        hints.append("send a shorter sequence or a smaller model: not even one sample fits")
    return "; or ".join(hints)
