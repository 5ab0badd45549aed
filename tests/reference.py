"""An independent reference for the tests: the lecture's RNN written again in plain numpy,
one step at a time, without importing service.engine, plus derivative helpers built on it.

    a_t = V x_t + W h_{t-1} + b_h      h_t = f_h(a_t)
    z_t = U h_t + b_y                  y^_t = f_y(z_t)        L = sum_t L_t

Every function is analytic in the parameters (no abs, no conj, constant shifts taken from the
real part), so the same code runs on complex128 for complex-step derivatives, which are exact
to rounding (~1e-15 relative) because there is no subtraction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAMS = ("V", "W", "U", "b_h", "b_y", "h_init")
# (output activation, loss) pairs the contract allows
VALID_HEADS = (("softmax", "cross_entropy"), ("softmax", "squared_error"),
               ("sigmoid", "binary_cross_entropy"), ("sigmoid", "squared_error"),
               ("identity", "squared_error"))
HIDDEN = ("tanh", "sigmoid", "relu", "identity")
STEP = 1e-30            # complex step: no cancellation, so it can be tiny


@dataclass
class Spec:
    """Everything but the parameters: activations, loss, the sequence and its targets."""
    hidden: str
    output: str
    loss: str
    reduction: str
    T: int
    D: int
    tokens: list[int] | None = None
    inputs: np.ndarray | None = None
    targets: list | None = None          # class index, N-vector or None per step


# --- activations and losses, each written from its textbook definition ---

def logistic(x):
    """1 / (1 + e^-x), choosing the form whose exponential cannot overflow."""
    x = np.asarray(x)
    with np.errstate(all="ignore"):        # the branch np.where discards may overflow
        return np.where(x.real >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def f_hidden(name: str, a):
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return logistic(a)
    if name == "relu":
        return np.where(a.real > 0, a, 0.0 * a)
    return a


def log_sum_exp(z):
    m = np.max(z.real)
    return m + np.log(np.sum(np.exp(z - m)))


def log1p_exp(x):
    """log(1 + e^x) elementwise without overflow."""
    x = np.asarray(x)
    with np.errstate(all="ignore"):
        return np.where(x.real > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x)))


def f_output(name: str, z):
    if name == "softmax":
        return np.exp(z - log_sum_exp(z))
    if name == "sigmoid":
        return logistic(z)
    return z


def step_loss(loss: str, output: str, z, y):
    """L_t from the logits: -log softmax(z)[y], BCE via log-sigmoid, or 1/2 ||y^ - y||^2."""
    if loss == "cross_entropy":
        return log_sum_exp(z) - z[y]
    if loss == "binary_cross_entropy":        # -log s(z) = log1p_exp(-z), -log(1-s(z)) = log1p_exp(z)
        y = np.asarray(y, dtype=float)
        return np.sum(y * log1p_exp(-z) + (1.0 - y) * log1p_exp(z))
    r = f_output(output, z) - np.asarray(y, dtype=float)
    return 0.5 * np.sum(r * r)


# --- forward ---

def x_at(spec: Spec, t: int) -> np.ndarray:
    if spec.tokens is not None:
        x = np.zeros(spec.D)
        x[spec.tokens[t]] = 1.0
        return x
    return np.asarray(spec.inputs[t], dtype=float)


def run(spec: Spec, p: dict, h_shift: dict | None = None, a_shift: dict | None = None) -> dict:
    """The forward pass. `a_shift[k]` / `h_shift[k]` are added to a_k / h_k (after f_h), so the
    derivative with respect to them is dL/da_k (the lecture's b_h term at step k) and the
    total derivative dL/dh_k."""
    h = p["h_init"]
    out = {"a": [], "h": [], "z": [], "yhat": [], "L_t": []}
    targets = spec.targets if spec.targets is not None else [None] * spec.T
    scored = sum(y is not None for y in targets)
    scale = 1.0 / scored if spec.reduction == "mean" and scored else 1.0
    for t in range(spec.T):
        a = p["V"] @ x_at(spec, t) + p["W"] @ h + p["b_h"]
        if a_shift and t in a_shift:
            a = a + a_shift[t]
        h = f_hidden(spec.hidden, a)
        if h_shift and t in h_shift:
            h = h + h_shift[t]
        z = p["U"] @ h + p["b_y"]
        y = targets[t]
        out["a"].append(a)
        out["h"].append(h)
        out["z"].append(z)
        out["yhat"].append(f_output(spec.output, z))
        out["L_t"].append(0.0 * z[0] if y is None else scale * step_loss(spec.loss, spec.output, z, y))
    out = {k: np.array(v) for k, v in out.items()}
    out["L"] = np.sum(out["L_t"])
    return out


# --- derivatives of any output of `run` with respect to any input array ---

def complex_step(fun, x: np.ndarray, step: float = STEP) -> np.ndarray:
    """d fun / d x by the complex step: Im f(x + i s e_j) / s, shape x.shape + f.shape."""
    rows = []
    for j in range(x.size):
        xc = x.astype(complex).ravel()
        xc[j] += 1j * step
        rows.append(np.imag(fun(xc.reshape(x.shape))) / step)
    return np.array(rows).reshape(x.shape + np.shape(rows[0]))


def central(fun, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d fun / d x by central differences (f(x + e) - f(x - e)) / 2e."""
    rows = []
    for j in range(x.size):
        up, down = x.astype(float).ravel(), x.astype(float).ravel()
        up[j] += eps
        down[j] -= eps
        rows.append((np.asarray(fun(up.reshape(x.shape))) - fun(down.reshape(x.shape))) / (2 * eps))
    return np.array(rows).reshape(x.shape + np.shape(rows[0]))


def param_grad(spec: Spec, p: dict, name: str, method=complex_step, of=lambda r: r["L"], **kw):
    """d of(run) / d p[name]."""
    return method(lambda v: of(run(spec, {**p, name: v})), p[name], **kw)


def all_grads(spec: Spec, p: dict, method=complex_step, **kw) -> dict:
    return {name: param_grad(spec, p, name, method, **kw) for name in PARAMS}


def b_h_by_step(spec: Spec, p: dict) -> np.ndarray:
    """Row t is dL_t/db_h (reduction applied): complex step on every L_t at once."""
    return param_grad(spec, p, "b_h", of=lambda r: r["L_t"])


def hidden_grad_norms(spec: Spec, p: dict) -> np.ndarray:
    """||dL/dh_t||: the total derivative, from a perturbation added to h_t."""
    H = len(p["b_h"])
    return np.array([np.linalg.norm(complex_step(lambda d: run(spec, p, h_shift={t: d})["L"],
                                                 np.zeros(H))) for t in range(spec.T)])


def b_h_terms(spec: Spec, p: dict) -> np.ndarray:
    """terms[t, k] = dL_t/da_k: the unrolled term of L_t through step k (zero for k > t)."""
    H = len(p["b_h"])
    per_k = [complex_step(lambda d: run(spec, p, a_shift={k: d})["L_t"], np.zeros(H))
             for k in range(spec.T)]                      # each H x T
    return np.transpose(np.array(per_k), (2, 0, 1))       # t, k, H


def hidden_jacobians(spec: Spec, p: dict, k: int) -> np.ndarray:
    """dh_t/dh_k for every t (T x H x H, [t, i, j] = dh_t[i]/dh_k[j]), from a perturbation
    added to h_k; zero for t < k."""
    H = len(p["b_h"])
    d = complex_step(lambda d: run(spec, p, h_shift={k: d})["h"], np.zeros(H))   # j, t, i
    return np.transpose(d, (1, 2, 0))


# --- random problems and their JSON bodies ---

def random_problem(seed: int, *, T=4, H=3, D=3, N=3, hidden="tanh", output="softmax",
                   loss="cross_entropy", reduction="sum", tokens=True, h_init=True,
                   null_targets=False, scale=0.6, relu_margin=0.05) -> tuple[Spec, dict]:
    """A seeded problem. For relu, seeds are skipped until every pre-activation is at least
    `relu_margin` away from the kink, so finite differences do not straddle it."""
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        p = {"V": rng.normal(0, scale, (H, D)), "W": rng.normal(0, scale, (H, H)),
             "U": rng.normal(0, scale, (N, H)), "b_h": rng.normal(0, 0.3, H),
             "b_y": rng.normal(0, 0.3, N),
             "h_init": rng.normal(0, 0.5, H) if h_init else np.zeros(H)}
        spec = Spec(hidden, output, loss, reduction, T, D)
        if tokens:
            spec.tokens = [int(i) for i in rng.integers(0, D, T)]
        else:
            spec.inputs = rng.normal(0, 1.0, (T, D))
        if loss == "cross_entropy":
            targets = [int(i) for i in rng.integers(0, N, T)]
        elif loss == "binary_cross_entropy":
            targets = [list(rng.uniform(0, 1, N)) for _ in range(T)]
        else:
            targets = [list(rng.normal(0, 1, N)) for _ in range(T)]
        if null_targets:                       # score roughly half the steps, always the last
            targets = [y if (t == T - 1 or t % 2) else None for t, y in enumerate(targets)]
        spec.targets = targets
        if hidden != "relu" or np.min(np.abs(run(spec, p)["a"])) > relu_margin:
            return spec, p
    raise AssertionError("no relu problem away from the kink")


def body(spec: Spec, p: dict, *, with_h_init: bool = True, with_targets: bool = True) -> dict:
    """The JSON request body for the problem."""
    out = {"model": {"weights": {k: p[k].tolist() for k in ("V", "W", "U", "b_h", "b_y")},
                     "hidden_activation": spec.hidden, "output_activation": spec.output},
           "loss": spec.loss, "reduction": spec.reduction}
    if with_h_init:
        out["h_init"] = p["h_init"].tolist()
    if spec.tokens is not None:
        out["tokens"] = list(spec.tokens)
    else:
        out["inputs"] = spec.inputs.tolist()
    if with_targets:
        out["targets"] = [y if y is None or isinstance(y, int) else [float(v) for v in y]
                          for y in spec.targets]
    return out


def scaled_error(a, b) -> float:
    """max|a - b| / max(1, max|b|): the agreement metric of the contract's 1e-9 promise."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
