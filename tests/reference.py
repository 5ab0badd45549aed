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
    x = np.asarray(spec.inputs[t])
    return x if np.iscomplexobj(x) else x.astype(float)   # complex inputs: complex step in x


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


# =====================================================================================
# v1.1: gated cells (LSTM, GRU), mini-batches, reductions, layer mode, input gradients.
#
# A second, equally plain forward pass: one sequence at a time, one step at a time, every
# gate written out. Dense inputs live in the parameter dict (p["inputs"]) so they are
# differentiated like any weight. Per-step parameter copies (`at`) and state perturbations
# (`shift`) give the unrolled terms, truncated BPTT and total state derivatives by the
# complex step, with no backward pass anywhere in this file.
# =====================================================================================

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL_PARAMS = ("V", "W", "U", "b_h", "b_y", "h_init", "b_hn", "c_init", "inputs")
STEP_PARAMS = ("V", "W", "b_h", "b_hn", "U", "b_y")     # used afresh at every step


@dataclass
class Case:
    """A v1.1 problem apart from its differentiable arrays (those are in the dict p:
    V, W, U, b_h, b_y, h_init, c_init, b_hn, inputs; None = absent)."""
    cell: str = "rnn"                     # rnn | lstm | gru
    gru_reset: str = "after"              # after | before
    hidden: str = "tanh"                  # the vanilla cell's f_h (gated cells: tanh)
    output: str = "softmax"
    loss: str | None = "cross_entropy"    # None in layer mode
    reduction: str = "sum"                # sum | mean | batch_mean
    T: int = 1
    D: int = 1
    B: int | None = None                  # None: one sequence, unbatched shapes
    tokens: list | None = None            # T ints, or B lists of T ints
    targets: list | None = None           # T entries (class index, N-vector, None), or B lists
    upstream: np.ndarray | None = None    # layer mode: dL/dh_t, T×H or B×T×H

    @property
    def nb(self) -> int:
        return 1 if self.B is None else self.B

    @property
    def layer(self) -> bool:
        return self.upstream is not None

    def seq(self, arr, b):
        """Sequence b of a per-sequence array (the whole array when unbatched)."""
        return arr if self.B is None else arr[b]

    def scored(self) -> np.ndarray:
        """nb × T bools: which steps have a loss."""
        if self.layer:
            return np.ones((self.nb, self.T), dtype=bool)
        if self.targets is None:
            return np.zeros((self.nb, self.T), dtype=bool)
        return np.array([[y is not None for y in self.seq(self.targets, b)] for b in range(self.nb)])

    def scale(self) -> float:
        """What multiplies the sum of the step losses: 1, 1/(scored steps), or 1/B."""
        if self.layer or self.reduction == "sum":
            return 1.0
        if self.reduction == "mean":
            return 1.0 / int(self.scored().sum())
        assert self.reduction == "batch_mean", self.reduction
        return 1.0 / self.nb


def _block(M, k: int, H: int):
    return M[k * H:(k + 1) * H]


def cell_step(case: Case, q: dict, x, h, c):
    """One step of the cell from (h_{t-1}, c_{t-1}) to (h_t, c_t) (c is None but for lstm)."""
    H = q["W"].shape[1]
    if case.cell == "rnn":
        return f_hidden(case.hidden, q["V"] @ x + q["W"] @ h + q["b_h"]), None
    if case.cell == "lstm":
        a = q["V"] @ x + q["W"] @ h + q["b_h"]
        i = logistic(_block(a, 0, H))
        f = logistic(_block(a, 1, H))
        g = np.tanh(_block(a, 2, H))
        o = logistic(_block(a, 3, H))
        c_new = f * c + i * g
        return o * np.tanh(c_new), c_new
    assert case.cell == "gru", case.cell
    V, W, b = q["V"], q["W"], q["b_h"]
    r = logistic(_block(V, 0, H) @ x + _block(W, 0, H) @ h + _block(b, 0, H))
    z = logistic(_block(V, 1, H) @ x + _block(W, 1, H) @ h + _block(b, 1, H))
    if case.gru_reset == "after":
        b_hn = q["b_hn"] if q.get("b_hn") is not None else np.zeros(H)
        n = np.tanh(_block(V, 2, H) @ x + _block(b, 2, H) + r * (_block(W, 2, H) @ h + b_hn))
    else:
        assert case.gru_reset == "before", case.gru_reset
        n = np.tanh(_block(V, 2, H) @ x + _block(W, 2, H) @ (r * h) + _block(b, 2, H))
    return (1.0 - z) * n + z * h, None


def _x(case: Case, p: dict, b: int, t: int):
    if case.tokens is not None:
        x = np.zeros(case.D)
        x[case.seq(case.tokens, b)[t]] = 1.0
        return x
    return case.seq(p["inputs"], b)[t]


def _init(case: Case, arr, b: int, H: int):
    if arr is None:
        return np.zeros(H)
    arr = np.asarray(arr)
    return arr if arr.ndim == 1 else arr[b]


def cell_run(case: Case, p: dict, at: dict | None = None, shift: dict | None = None) -> dict:
    """The forward pass of every sequence.

    at:    {k: {name: array}} replaces parameter `name` at step k only (for every sequence),
           so d/d(that copy) is the term of step k's immediate derivative.
    shift: {(b, t): δ} adds δ (H, or 2H = [δh; δc] for lstm) to sequence b's state after step
           t (before the output layer), so d/dδ is the total derivative with respect to s_t.

    Returns (with a leading nb axis even when unbatched): h, c (lstm), s (the state, h or
    [h; c]), z, yhat (when there is an output layer), step_losses (unreduced, 0 unscored),
    and L_t (T: scale · Σ_b step loss) and L (their sum)."""
    H = p["W"].shape[1]
    targets = case.targets
    out = {k: [] for k in ("h", "c", "s", "z", "yhat", "step_losses")}
    for b in range(case.nb):
        h = _init(case, p.get("h_init"), b, H)
        c = _init(case, p.get("c_init"), b, H) if case.cell == "lstm" else None
        rows = {k: [] for k in out}
        for t in range(case.T):
            q = {**p, **(at or {}).get(t, {})}
            h, c = cell_step(case, q, _x(case, p, b, t), h, c)
            if shift and (b, t) in shift:
                d = shift[(b, t)]
                h = h + d[:H]
                if case.cell == "lstm":
                    c = c + d[H:]
            rows["h"].append(h)
            rows["c"].append(c)
            rows["s"].append(h if c is None else np.concatenate([h, c]))
            z = None
            if q.get("U") is not None:
                z = q["U"] @ h + q["b_y"]
                rows["z"].append(z)
                rows["yhat"].append(f_output(case.output, z))
            if case.layer:
                L = np.sum(case.seq(case.upstream, b)[t] * h)
            else:
                y = None if targets is None else case.seq(targets, b)[t]
                L = 0.0 * h[0] if y is None else step_loss(case.loss, case.output, z, y)
            rows["step_losses"].append(L)
        for k in out:
            out[k].append(rows[k])
    res = {k: (np.array(v) if v[0] and v[0][0] is not None else None) for k, v in out.items()}
    res["L_t"] = case.scale() * np.sum(res["step_losses"], axis=0)
    res["L"] = np.sum(res["L_t"])
    return res


def unbatch(case: Case, arr):
    """Drops the leading nb axis of a cell_run result when the case is one sequence."""
    return arr if arr is None or case.B is not None else arr[0]


# --- derivatives (all by the complex step on cell_run) ---

def cell_present(case: Case, p: dict, layer_grads: bool = True) -> list[str]:
    """The parameters the problem has (in CELL_PARAMS order); U and b_y get no gradient in
    layer mode."""
    names = [n for n in CELL_PARAMS if p.get(n) is not None]
    if case.layer and layer_grads:
        names = [n for n in names if n not in ("U", "b_y")]
    return names


def cell_grad(case: Case, p: dict, name: str, of=lambda r: r["L"], method=complex_step, **kw):
    """d of(cell_run) / d p[name] (shape p[name].shape + of's shape)."""
    return method(lambda v: of(cell_run(case, {**p, name: v})), np.asarray(p[name], dtype=float), **kw)


def cell_grads(case: Case, p: dict, method=complex_step, **kw) -> dict:
    """dL/dθ for every parameter the problem has."""
    return {n: cell_grad(case, p, n, method=method, **kw) for n in cell_present(case, p)}


def cell_step_table(case: Case, p: dict, name: str) -> np.ndarray:
    """[t, k, ...] = dL_t/dθ^(k): L_t (reduction applied, summed over the batch) differentiated
    with respect to the copy of θ = p[name] that step k uses. Zero for k > t; Σ_k is dL_t/dθ."""
    assert name in STEP_PARAMS, name
    x = np.asarray(p[name], dtype=float)
    per_k = [complex_step(lambda v, k=k: cell_run(case, p, at={k: {name: v}})["L_t"], x)
             for k in range(case.T)]                               # each x.shape + (T,)
    return np.moveaxis(np.array(per_k), -1, 0)                     # t, k, x.shape


def window(T: int, K: int | None) -> np.ndarray:
    """[t, k] = 1 where 0 ≤ t − k < K (K None: full BPTT)."""
    t, k = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    return ((t >= k) & (t - k < (T if K is None else K))).astype(float)


def cell_truncated_grads(case: Case, p: dict, K: int | None) -> dict:
    """Truncated BPTT from first principles: Σ over (t, k) with t − k < K of dL_t/dθ^(k);
    h_init / c_init from L_t with t < K only; inputs x_k from L_t with t − k < K.
    K = None (or ≥ T) is the full gradient; K = 1 the step-only gradient."""
    T = case.T
    w = window(T, K)
    Kc = T if K is None else min(K, T)
    out = {}
    for name in cell_present(case, p):
        if name in STEP_PARAMS:
            out[name] = np.tensordot(w, cell_step_table(case, p, name), axes=([0, 1], [0, 1]))
        elif name in ("h_init", "c_init"):
            by_t = cell_grad(case, p, name, of=lambda r: r["L_t"])            # shape + (T,)
            out[name] = by_t[..., :Kc].sum(axis=-1)
        else:                                                                 # inputs (…, T_k, D)
            by_t = cell_grad(case, p, name, of=lambda r: r["L_t"])            # (…, k, D, t)
            out[name] = np.einsum("...kdt,tk->...kd", by_t, w)
    return out


def cell_b_h_terms(case: Case, p: dict, K: int | None = None) -> np.ndarray:
    """T × T × G·H: [t][k] = dL_t/ds_k · ∂s_k/∂b_h (immediate), zero for k > t and, under
    truncation, for t − k ≥ K."""
    return cell_step_table(case, p, "b_h") * window(case.T, K)[:, :, None]


def cell_b_h_by_step(case: Case, p: dict, K: int | None = None) -> np.ndarray:
    """T × G·H: row t is dL_t/db_h (truncated to K steps when K is given)."""
    return cell_b_h_terms(case, p, K).sum(axis=1)


def state_size(case: Case, p: dict) -> int:
    H = p["W"].shape[1]
    return 2 * H if case.cell == "lstm" else H


def cell_state_grad_norms(case: Case, p: dict) -> np.ndarray:
    """nb × T (T unbatched): ||dL/ds_t||, the total derivative, from a perturbation of s_t."""
    S = state_size(case, p)
    out = np.array([[np.linalg.norm(complex_step(
        lambda d, b=b, t=t: cell_run(case, p, shift={(b, t): d})["L"], np.zeros(S)))
        for t in range(case.T)] for b in range(case.nb)])
    return unbatch(case, out)


def cell_state_jacobians(case: Case, p: dict, b: int, k: int) -> np.ndarray:
    """[t, i, j] = ds_t[i]/ds_k[j] for sequence b: Π_{i=k+1..t} ∂s_i/∂s_{i−1} (identity at
    t = k, zero for t < k), from a perturbation added to s_k."""
    S = state_size(case, p)
    d = complex_step(lambda d: cell_run(case, p, shift={(b, k): d})["s"][b], np.zeros(S))  # j, t, i
    return np.transpose(d, (1, 2, 0))


def cell_jacobian_norms(case: Case, p: dict) -> np.ndarray:
    """nb × T × T (T × T unbatched): spectral norm of ds_t/ds_k, NaN for k > t."""
    T = case.T
    out = np.full((case.nb, T, T), np.nan)
    for b in range(case.nb):
        for k in range(T):
            J = cell_state_jacobians(case, p, b, k)
            for t in range(k, T):
                out[b, t, k] = np.linalg.norm(J[t], 2)
    return unbatch(case, out)


# --- seeded random v1.1 problems ---

def random_case(seed: int, *, cell="rnn", gru_reset="after", B=None, T=4, H=3, D=3, N=3,
                hidden="tanh", output="softmax", loss="cross_entropy", reduction="sum",
                tokens=False, h_init=True, c_init=True, per_sequence_init=False, b_hn=True,
                layer=False, output_layer=True, null_targets=False, scale=0.6,
                relu_margin=0.05) -> tuple[Case, dict]:
    """A seeded v1.1 problem (case, p). Absent initial states are zeros(H) (what the engine
    holds when the caller sent none); c_init is None but for lstm, b_hn None but for gru
    "after". Layer mode (layer=True) draws an upstream and no loss; output_layer=False drops
    U and b_y (layer mode only)."""
    G = GATES[cell]
    nb = 1 if B is None else B
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt, 11])
        init_shape = (nb, H) if per_sequence_init else (H,)
        p = {"V": rng.normal(0, scale, (G * H, D)), "W": rng.normal(0, scale, (G * H, H)),
             "b_h": rng.normal(0, 0.3, G * H),
             "U": rng.normal(0, scale, (N, H)) if output_layer else None,
             "b_y": rng.normal(0, 0.3, N) if output_layer else None,
             "h_init": rng.normal(0, 0.5, init_shape) if h_init else np.zeros(H),
             "c_init": None, "b_hn": None, "inputs": None}
        if cell == "lstm":
            p["c_init"] = rng.normal(0, 0.5, init_shape) if c_init else np.zeros(H)
        if cell == "gru" and gru_reset == "after":
            p["b_hn"] = rng.normal(0, 0.3, H) if b_hn else np.zeros(H)
        case = Case(cell=cell, gru_reset=gru_reset, hidden=hidden if cell == "rnn" else "tanh",
                    output=output, loss=None if layer else loss, reduction="sum" if layer else reduction,
                    T=T, D=D, B=B)
        if tokens:
            tok = rng.integers(0, D, (nb, T))
            case.tokens = [int(i) for i in tok[0]] if B is None else [[int(i) for i in r] for r in tok]
        else:
            x = rng.normal(0, 1.0, (nb, T, D))
            p["inputs"] = x[0] if B is None else x
        if layer:
            up = rng.normal(0, 1.0, (nb, T, H))
            case.upstream = up[0] if B is None else up
        else:
            seqs = []
            for b in range(nb):
                if loss == "cross_entropy":
                    ys = [int(i) for i in rng.integers(0, N, T)]
                elif loss == "binary_cross_entropy":
                    ys = [list(rng.uniform(0, 1, N)) for _ in range(T)]
                else:
                    ys = [list(rng.normal(0, 1, N)) for _ in range(T)]
                if null_targets:        # about 40% unscored; sequence 0 always scores its last step
                    keep = rng.uniform(size=T) > 0.4
                    if b == 0:
                        keep[-1] = True
                    ys = [y if kept else None for y, kept in zip(ys, keep)]
                seqs.append(ys)
            case.targets = seqs[0] if B is None else seqs
        if cell != "rnn" or hidden != "relu":
            return case, p
        hs = cell_run(case, p)["h"]
        pre = [p["V"] @ _x(case, p, b, t) + p["W"] @ (hs[b, t - 1] if t else _init(case, p["h_init"], b, H))
               + p["b_h"] for b in range(nb) for t in range(T)]
        if np.min(np.abs(np.array(pre))) > relu_margin:
            return case, p
    raise AssertionError("no relu problem away from the kink")
