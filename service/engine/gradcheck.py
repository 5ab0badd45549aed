"""Numerical gradient checking of the RNN engine, batched (plain numpy, no web imports).

Every method compares the analytic BPTT gradient with derivatives computed from loss values
of perturbed models:

    central       (L(θ+ε) − L(θ−ε)) / 2ε                         2 evaluations per item
    forward       (L(θ+ε) − L(θ)) / ε                             1 per item (+1 base)
    complex_step  Im L(θ+iε) / ε, the engine run on complex128   1 per item
    richardson    central differences at ε, ε/2, ε/4 extrapolated to ε→0 (error O(ε⁶)); the gap
                  between the last two extrapolations is the error estimate    6 per item
    taylor        remainders r(h) = |L(θ+hu) − L(θ) − h·gᵀu| for h = ε, ε/2, … ε/16: a correct
                  gradient gives r ∝ h², the fitted slope is `convergence_order`; the
                  one-sided differences extrapolated to h→0 give the numerical value   5 per item (+1)

Speed: a full check does not run one forward pass per element. Perturbing one weight is a
rank-one change: V_ij adds ε·x_t[j] to a_t[i], W_ij adds ε·h_{t−1}[j] (of the perturbed
trajectory), b_h_i adds ε to a_t[i], h_init_i adds ε to h_{−1}[i]; U_ij adds ε·h_t[j] to z_t[i]
and b_y_i adds ε to z_t[i]. So thousands of perturbed sequences run as one recurrence on a
(B, H) state, one GEMM per step, in chunks that keep memory bounded; U and b_y leave h alone
and need only the outputs of the base trajectory.

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

from . import rnn

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
# the work model, in multiply-adds of a GEMM: an elementwise operation (tanh, exp, …) per
# hidden unit costs ELEMENTWISE, the fixed cost of a time step of a chunk STEP_OVERHEAD, the loss of one perturbed z_t (U, b_y) OUTPUT per class;
# a complex evaluation COMPLEX real ones; per-item matrices (directional) run DIRECTIONAL
# times slower than one shared GEMM. Calibrated on this engine against CPU time
# (bench/gradcheck_vs_torch.py prints the estimate next to the time it took).
ELEMENTWISE = 60.0
STEP_OVERHEAD = 2e5                           # numpy calls of one step of one chunk
OUTPUT = 100.0
COMPLEX = 2.5
DIRECTIONAL = 10.0
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


def needs_base(method: str) -> bool:
    return method in ("forward", "taylor")


def evaluations_per_item(method: str) -> int:
    return len(offsets(method, 1.0))


@dataclass
class Numerical:
    values: np.ndarray                        # derivative estimates, one per item
    error_estimate: np.ndarray | None = None
    order: np.ndarray | None = None           # taylor: per item, NaN where unmeasurable


def combine(method: str, eps: float, losses: np.ndarray, base: complex | float | None,
            analytic: np.ndarray, loss_size: float = 1.0) -> Numerical:
    """Derivatives from the loss changes (items × offsets) of one stencil; `base` is the
    change with no perturbation (rounding noise, on the same code path), `loss_size`
    Σ_t |L_t| (the scale of that noise)."""
    if method == "central":
        return Numerical((losses[:, 0] - losses[:, 1]).real / (2 * eps))
    if method == "forward":
        return Numerical((losses[:, 0] - base).real / eps)
    if method == "complex_step":
        return Numerical(losses[:, 0].imag / eps)
    if method == "richardson":
        h = eps / np.array([1.0, 2.0, 4.0])
        d = (losses[:, 0::2] - losses[:, 1::2]).real / (2 * h)   # central at h0, h1, h2
        r1 = (4 * d[:, 1:] - d[:, :-1]) / 3                        # O(h⁴)
        r2 = (16 * r1[:, 1] - r1[:, 0]) / 15                       # O(h⁶)
        return Numerical(r2, error_estimate=np.abs(r2 - r1[:, 1]))
    return _taylor(eps, losses.real, float(np.real(base)), analytic, loss_size)


def _taylor(eps: float, losses: np.ndarray, base: float, analytic: np.ndarray,
            loss_size: float) -> Numerical:
    h = eps / 2.0 ** np.arange(losses.shape[1])
    remainder = np.abs(losses - base - analytic[:, None] * h)
    order = _fitted_order(h, remainder, TAYLOR_NOISE * np.finfo(float).eps * loss_size)
    # one-sided differences f(h) = g + c1·h + c2·h² + …; eliminate one power per level
    table = (losses - base) / h
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

def _chunk_size(problem: rnn.Problem, width: int) -> int:
    """Items per chunk: about six (B, width) complex arrays live at once."""
    return int(max(1, min(CHUNK_ITEMS, CHUNK_BYTES // (6 * 16 * max(width, 1)))))


def element_losses(problem: rnn.Problem, name: str, flat: np.ndarray, steps: np.ndarray,
                   cache: rnn.Cache) -> np.ndarray:
    """L(θ + s·e_k) − L(θ) for every flat index k of parameter `name` and every step s in
    `steps` (real or imaginary): an array items × steps, computed in batches.

    The change is summed step by step (L_t perturbed − L_t base), never as the difference of
    two totals: rounding the running total of a large L would swamp an ε-sized change."""
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
        size = _chunk_size(problem, problem.H + problem.N)
        for i in range(0, len(order), size):
            part = order[i:i + size]
            out[part] = _hidden_path(problem, cache, name, rows[part], cols[part], deltas[part],
                                     start[part])
    else:
        size = _chunk_size(problem, int(problem.scored.sum()) * problem.N)
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
        x = (p.tokens[:, None] == np.arange(p.D)) if p.tokens is not None else p.inputs != 0
    else:
        x = np.concatenate([p.weights.h_init[None], cache.h[:-1]]) != 0
    first = np.where(x.any(axis=0), np.argmax(x, axis=0), p.T)    # per column j
    return first[flat % x.shape[1]]


def _hidden_path(p: rnn.Problem, cache: rnn.Cache, name: str, rows, cols, deltas,
                 start) -> np.ndarray:
    """Loss changes of B models that differ from the base in one V, W, b_h or h_init entry
    each. Items are sorted by `start`: item b joins the batch at step start[b] from the base
    model's state there (before it, its states are the base model's)."""
    w = p.weights
    B = len(deltas)
    items = np.arange(B)
    complex_ = np.iscomplexobj(deltas)
    drive = rnn.input_drive(p, w.V) + w.b_h                      # T × H, base model
    h_before = np.concatenate([w.h_init[None], cache.h])          # h_{t−1} at index t
    h = np.empty((B, p.H), dtype=deltas.dtype)
    if name == "V":                                               # ε·x_t[j] for every t
        x = (p.tokens[:, None] == cols[None, :]) if p.tokens is not None else p.inputs[:, cols]
        kicks = deltas * x
    WT, UT, base = w.W.T, w.U.T, cache.step_losses
    total = np.zeros(B, dtype=deltas.dtype)
    n = 0
    for t in range(int(start[0]), last_scored(p) + 1):
        joining = int(np.searchsorted(start, t, side="right"))
        if joining > n:
            h[n:joining] = h_before[t]
            if name == "h_init":
                h[items[n:joining], rows[n:joining]] += deltas[n:joining]
            n = joining
        live = slice(0, n)
        a = _gemm(h[live], WT, complex_)
        a += drive[t]
        if name == "W":
            a[items[live], rows[live]] += deltas[live] * h[items[live], cols[live]]
        elif name == "V":
            a[items[live], rows[live]] += kicks[t, live]
        elif name == "b_h":
            a[items[live], rows[live]] += deltas[live]
        h[live] = rnn.hidden(p.hidden_activation, a)
        if p.scored[t]:
            z = _gemm(h[live], UT, complex_)
            z += w.b_y
            total[live] += rnn.step_losses(p.loss, p.output_activation, z, p.targets[t]) \
                * p.loss_scale() - base[t]
    return total


def _gemm(x: np.ndarray, MT: np.ndarray, complex_: bool) -> np.ndarray:
    """x @ MT with a real MT: two real GEMMs for a complex x, not one complex GEMM."""
    if not complex_:
        return x @ MT
    out = np.empty((x.shape[0], MT.shape[1]), dtype=complex)
    out.real = x.real @ MT
    out.imag = x.imag @ MT
    return out


def _output_path(p: rnn.Problem, cache: rnn.Cache, name: str, rows, cols, deltas) -> np.ndarray:
    """Losses of B models that differ in one U or b_y entry each: the hidden states are the
    base model's, only row `rows` of z_t moves (by ε·h_t[j] for U_ij, by ε for b_y_i)."""
    S = np.flatnonzero(p.scored)
    B = len(deltas)
    z = np.repeat(cache.z[S][:, None, :].astype(deltas.dtype), B, axis=1)   # S × B × N
    kick = deltas * cache.h[S][:, cols] if name == "U" else np.broadcast_to(deltas, (len(S), B))
    z[:, np.arange(B), rows] += kick
    per_step = rnn.step_losses(p.loss, p.output_activation, z, p.targets[S][:, None, :])
    return (per_step * p.loss_scale() - cache.step_losses[S][:, None]).sum(axis=0)


def directional_losses(problem: rnn.Problem, name: str, directions: np.ndarray,
                       steps: np.ndarray, cache: rnn.Cache) -> np.ndarray:
    """L(θ + s·u) − L(θ) for every direction u (rows of `directions`, flattened) and step s."""
    theta = getattr(problem.weights, name)
    K = len(steps)
    per_model = theta.size + problem.T * (2 * problem.H + 2 * problem.N)
    size = max(1, min(CHUNK_ITEMS, CHUNK_BYTES // (16 * per_model)))
    deltas = np.tile(steps, len(directions))
    dirs = np.repeat(directions, K, axis=0)
    parts = []
    for start in range(0, len(deltas), size):
        d = deltas[start:start + size]
        batch = theta[None] + (d[:, None] * dirs[start:start + size]).reshape(-1, *theta.shape)
        parts.append(_batched_model_losses(problem, name, batch, cache))
    return np.concatenate(parts).reshape(len(directions), K)


def _batched_model_losses(p: rnn.Problem, name: str, batch: np.ndarray, cache: rnn.Cache):
    if name in HIDDEN_PATH:                         # the engine's own batched forward
        steps = rnn.forward(p, p.weights.replace(**{name: batch})).step_losses
        return (steps - cache.step_losses[:, None]).sum(axis=0)
    S = np.flatnonzero(p.scored)                    # U, b_y: the base hidden states suffice
    h = cache.h[S]
    if name == "U":
        z = np.einsum("bnh,sh->sbn", batch, h) + p.weights.b_y
    else:
        z = (h @ p.weights.U.T)[:, None, :] + batch[None]
    per_step = rnn.step_losses(p.loss, p.output_activation, z, p.targets[S][:, None, :])
    return (per_step * p.loss_scale() - cache.step_losses[S][:, None]).sum(axis=0)


# --- choosing what to check ---

def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, rnn.PARAMETERS.index(name)])


def sampled_indices(size: int, samples: int, seed: int, name: str) -> np.ndarray:
    k = min(samples, size)
    return np.sort(rng_for(seed, name).choice(size, size=k, replace=False))


def directions(shape: tuple[int, ...], samples: int, seed: int, name: str) -> np.ndarray:
    u = rng_for(seed, name).standard_normal((samples, int(np.prod(shape))))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


# --- the check ---

def gradcheck(problem: rnn.Problem, spec: CheckSpec) -> Report:
    """Analytic gradients (full BPTT) against numerical ones, per parameter."""
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
        base = None
        if spec.mode == "directional":
            u = directions(g.shape, spec.samples, spec.seed, name)
            analytic = u @ g.ravel()
            index = [[k] for k in range(len(u))]
        else:
            flat = np.arange(g.size) if spec.mode == "full" else \
                sampled_indices(g.size, spec.samples, spec.seed, name)
            analytic = g.ravel()[flat]
            index = [list(map(int, np.unravel_index(k, g.shape))) for k in flat]
        if needs_base(spec.method):        # the base loss on the same code path as the others
            base = _losses(problem, spec, name, cache, np.zeros(1), None)[0, 0]
            report.evaluations += 1
        losses = _losses(problem, spec, name, cache, steps,
                         u if spec.mode == "directional" else flat)
        report.evaluations += losses.size
        with np.errstate(all="ignore"):
            numerical = combine(spec.method, eps, losses, base, analytic,
                                float(np.abs(cache.step_losses).sum()))
        if not np.all(np.isfinite(numerical.values)):
            raise NonFiniteLoss(name)
        report.parameters[name] = summarise(analytic, numerical, index, spec)
        report.passed &= report.parameters[name].passed
    if spec.method == "taylor":
        orders = [r.convergence_order for r in report.parameters.values()
                  if r.convergence_order is not None]
        report.convergence_order = float(np.median(orders)) if orders else None
    return report


def _losses(problem, spec, name, cache, steps, which):
    """Losses items × steps; `which` is directions (directional mode) or flat indices.
    steps [0] gives the base loss on the same code path as the perturbed ones."""
    with np.errstate(all="ignore"):
        if spec.mode == "directional":
            which = which if which is not None else np.zeros((1, getattr(problem.weights, name).size))
            return directional_losses(problem, name, which, steps, cache)
        which = which if which is not None else np.zeros(1, dtype=np.int64)
        return element_losses(problem, name, which, steps, cache)


def summarise(analytic: np.ndarray, num: Numerical, index: list[list[int]],
              spec: CheckSpec) -> ParameterReport:
    """Per-parameter figures; the worst item is the one that most exceeds its tolerance."""
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
        worst_index=index[worst], analytic_at_worst=float(analytic[worst]),
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

    @classmethod
    def of(cls, p: rnn.Problem) -> "Sizes":
        """Sizes from the problem's shapes, tokens and targets: no forward pass."""
        T = last_scored(p) + 1
        x = (p.tokens[:T, None] == np.arange(p.D)) if p.tokens is not None else p.inputs[:T] != 0
        first = np.where(x.any(axis=0), np.argmax(x, axis=0), T)
        return cls(T, int(p.scored.sum()), p.H, p.D, p.N, p.inputs is not None,
                   float(np.mean(T - first)))

    def size(self, name: str) -> int:
        return {"V": self.H * self.D, "W": self.H * self.H, "U": self.N * self.H,
                "b_h": self.H, "b_y": self.N, "h_init": self.H}[name]


def evaluation_cost(s: Sizes, name: str, method: str, mode: str) -> float:
    """Multiply-adds (elementwise work weighted by ELEMENTWISE) of one perturbed loss."""
    step = s.H * s.H + ELEMENTWISE * s.H                 # one step of the recurrence
    out = s.S * (s.N * s.H + ELEMENTWISE * s.N)          # outputs and losses
    if mode == "directional":
        if name in HIDDEN_PATH:
            cost = DIRECTIONAL * s.T * step + out + s.T * s.H * (s.D if s.dense else 1)
        else:
            cost = 3 * out
        cost += s.size(name)
    elif name in HIDDEN_PATH:
        steps = s.v_steps if name == "V" else s.T
        cost = steps * step + out * steps / s.T
    else:
        cost = s.S * OUTPUT * s.N
    return cost * (COMPLEX if method == "complex_step" else 1.0)


def items(s: Sizes, name: str, mode: str, samples: int) -> int:
    if mode == "full":
        return s.size(name)
    return samples if mode == "directional" else min(samples, s.size(name))


def estimate(s: Sizes, spec: CheckSpec) -> tuple[float, int]:
    """(work, evaluations) of a check, from the sizes only."""
    work = rnn.estimate_work(s.T, s.H, s.D, s.N, dense_inputs=s.dense)
    evaluations = 1
    per_item = evaluations_per_item(spec.method)
    for name in spec.parameters:
        n = items(s, name, spec.mode, spec.samples) * per_item + needs_base(spec.method)
        evaluations += n
        work += n * evaluation_cost(s, name, spec.method, spec.mode)
        work += -(-n // CHUNK_ITEMS) * s.T * STEP_OVERHEAD
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
