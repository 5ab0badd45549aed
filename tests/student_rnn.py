"""A student's BPTT for the grading tests, written from the lecture with plain loops over
t and k and no code from service/: the correct gradient and the quiz's wrong ones.

The unrolled sum the lecture writes for every parameter θ among V, W, b_h (and h_init):

    ∂L/∂θ = Σ_t ∂L_t/∂h_t · Σ_{k ≤ t} (Π_{i=k+1..t} ∂h_i/∂h_{i−1}) · ∂h_k/∂θ

Each mistake changes one piece of it: `window` K keeps only k > t − K (K = 1 is no BPTT),
`jacobians=False` drops the product Π, `steps="last"` keeps only the last scored L_t.
"""
from __future__ import annotations

import numpy as np


def _act(name, a):
    if name == "tanh":
        return np.tanh(a)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    if name == "relu":
        return np.maximum(a, 0.0)
    return a.copy()


def _act_slope(name, a):
    if name == "tanh":
        return 1.0 - np.tanh(a) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-a))
        return s * (1.0 - s)
    if name == "relu":
        return (a > 0).astype(float)
    return np.ones_like(a)


def _out(name, z):
    if name == "softmax":
        e = np.exp(z - z.max())
        return e / e.sum()
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return z.copy()


class Student:
    """Reads a problem object (the JSON dict) the way a student's notebook would."""

    def __init__(self, problem: dict):
        m = problem["model"]
        w = m["weights"]
        self.V, self.W, self.U = (np.array(w[k], dtype=float) for k in ("V", "W", "U"))
        self.b_h, self.b_y = np.array(w["b_h"], dtype=float), np.array(w["b_y"], dtype=float)
        self.H, self.D = self.V.shape
        self.N = self.U.shape[0]
        self.h_init = np.array(problem.get("h_init") or np.zeros(self.H), dtype=float)
        self.f_h, self.f_y = m.get("hidden_activation", "tanh"), m.get("output_activation", "softmax")
        default = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "squared_error"}
        self.loss_name = problem.get("loss") or default[self.f_y]
        if "tokens" in problem:
            self.x = [np.eye(self.D)[tok] for tok in problem["tokens"]]
        else:
            self.x = [np.array(row, dtype=float) for row in problem["inputs"]]
        self.T = len(self.x)
        self.targets = problem["targets"]
        scored = [t for t in range(self.T) if self.targets[t] is not None]
        self.scored = scored
        self.scale = 1.0 / len(scored) if problem.get("reduction", "sum") == "mean" else 1.0

    def target(self, t):
        y = self.targets[t]
        return np.eye(self.N)[y] if self.loss_name == "cross_entropy" else np.array(y, dtype=float)

    def run(self, params=None):
        """Forward pass: a_t, h_t, ŷ_t per step and the unreduced L_t (None where unscored)."""
        p = params or {"V": self.V, "W": self.W, "U": self.U, "b_h": self.b_h, "b_y": self.b_y,
                       "h_init": self.h_init}
        h = p["h_init"]
        a_list, h_list, y_list, L_steps = [], [], [], []
        for t in range(self.T):
            a = p["V"] @ self.x[t] + p["W"] @ h + p["b_h"]
            h = _act(self.f_h, a)
            yhat = _out(self.f_y, p["U"] @ h + p["b_y"])
            a_list.append(a), h_list.append(h), y_list.append(yhat)
            L_steps.append(self.step_loss(t, yhat) if t in self.scored else None)
        return a_list, h_list, y_list, L_steps

    def step_loss(self, t, yhat):
        y = self.target(t)
        if self.loss_name == "cross_entropy":
            return -np.log(yhat @ y)
        if self.loss_name == "binary_cross_entropy":
            return -np.sum(y * np.log(yhat) + (1 - y) * np.log(1 - yhat))
        return 0.5 * np.sum((yhat - y) ** 2)

    def loss(self, params=None) -> float:
        return self.scale * sum(v for v in self.run(params)[3] if v is not None)

    def dL_dz(self, t, yhat):
        """∂L_t/∂z_t, the textbook way: ∂L_t/∂ŷ_t times the Jacobian of f_y."""
        y = self.target(t)
        if self.loss_name == "cross_entropy":
            dyhat = -y / yhat
        elif self.loss_name == "binary_cross_entropy":
            dyhat = -(y / yhat - (1 - y) / (1 - yhat))
        else:
            dyhat = yhat - y
        if self.f_y == "softmax":
            J = np.diag(yhat) - np.outer(yhat, yhat)
        elif self.f_y == "sigmoid":
            J = np.diag(yhat * (1 - yhat))
        else:
            J = np.eye(self.N)
        return J.T @ dyhat * self.scale

    def gradients(self, window=None, jacobians=True, steps="all") -> dict:
        """The lecture's unrolled double sum, with the chosen mistakes."""
        a, h, yhat, _ = self.run()
        h_prev = [self.h_init] + h[:-1]
        g = {k: np.zeros_like(v) for k, v in
             (("V", self.V), ("W", self.W), ("U", self.U), ("b_h", self.b_h), ("b_y", self.b_y),
              ("h_init", self.h_init))}
        ts = self.scored[-1:] if steps == "last" else self.scored
        for t in ts:
            dz = self.dL_dz(t, yhat[t])
            g["U"] += np.outer(dz, h[t])
            g["b_y"] += dz
            dh = self.U.T @ dz                           # ∂L_t/∂h_t through ŷ_t only
            lowest = 0 if window is None else max(0, t - window + 1)
            for k in range(t, lowest - 1, -1):
                da = dh * _act_slope(self.f_h, a[k])     # ∂L_t/∂a_k
                g["V"] += np.outer(da, self.x[k])
                g["W"] += np.outer(da, h_prev[k])
                g["b_h"] += da
                if k == 0:
                    g["h_init"] += self.W.T @ da
                if jacobians:                            # ∂h_k/∂h_{k−1} = diag(f'(a_k)) W
                    dh = self.W.T @ da
        return g


def central_differences(student: Student, eps: float = 1e-6) -> dict:
    """∂L/∂θ by central differences, element by element."""
    base = {"V": student.V, "W": student.W, "U": student.U, "b_h": student.b_h,
            "b_y": student.b_y, "h_init": student.h_init}
    out = {}
    for name, value in base.items():
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps
            grad[idx] = (student.loss({**base, name: plus}) - student.loss({**base, name: minus})) / (2 * eps)
        out[name] = grad
    return out
