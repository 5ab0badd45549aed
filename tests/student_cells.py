"""A student's forward and backward passes for the rnn, LSTM and GRU cells, on one sequence or
a batch, with targets or in layer mode: plain loops over sequences b, scored steps t and steps
k ≤ t, written from the lecture's formulas with no code from service/, and the mistakes the
grader names, each made the way a student makes it:

    window=K        each L_t backpropagated through at most K steps (K = 1: no BPTT)
    path="no_cell"  LSTM: the carry ∂L/∂c_{k−1} = ∂L/∂c_k ⊙ f_k left out
    path="no_hidden" LSTM: ∂L/∂h_{k−1} = Wᵀ ∂L/∂a_k left out (only c is followed back)
    path="no_jacobian" rnn: ∂L/∂h_{k−1} = ∂L/∂h_k, the Jacobian product left out
    last_only       only each sequence's last scored step's loss
    batch_scale     the batch reduction's factor multiplied by this (B: summed where averaged)

Gate blocks are the lecture's: LSTM i, f, g, o; GRU r, z, n. `reorder` permutes a gated
gradient's blocks (a student who stacks them in another order).
"""
from __future__ import annotations

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


class StudentCell:
    """Reads a problem object (the JSON dict, lecture layout)."""

    def __init__(self, problem: dict):
        m = problem["model"]
        w = m["weights"]
        self.cell = m.get("cell", "rnn")
        self.reset = m.get("gru_reset", "after")
        self.V, self.W = np.array(w["V"], float), np.array(w["W"], float)
        self.b = np.array(w["b_h"], float)
        self.U = np.array(w["U"], float) if "U" in w else None
        self.b_y = np.array(w["b_y"], float) if "b_y" in w else None
        self.H = self.W.shape[1]
        self.D = self.V.shape[1]
        self.b_hn = (np.array(w.get("b_hn", np.zeros(self.H)), float)
                     if self.cell == "gru" and self.reset == "after" else None)
        if "tokens" in problem:
            tok = np.array(problem["tokens"])
            self.batched = tok.ndim == 2
            tok = tok if self.batched else tok[None]
            self.x = np.eye(self.D)[tok]                 # B × T × D one-hot
            self.dense = False
        else:
            x = np.array(problem["inputs"], float)
            self.batched = x.ndim == 3
            self.x = x if self.batched else x[None]
            self.dense = True
        self.B, self.T = self.x.shape[:2]
        self.h0 = np.array(problem["h_init"], float) if "h_init" in problem else np.zeros(self.H)
        self.c0 = np.array(problem["c_init"], float) if "c_init" in problem else np.zeros(self.H)
        self.layer = "upstream" in problem
        if self.layer:
            up = np.array(problem["upstream"]["hidden"], float)
            self.up = up if self.batched else up[None]
            self.scored = np.ones((self.B, self.T), bool)
            self.loss_name, self.reduction = None, "sum"
        else:
            ys = problem["targets"] if self.batched else [problem["targets"]]
            self.ys = ys
            self.scored = np.array([[y is not None for y in row] for row in ys])
            self.loss_name = problem.get("loss", "cross_entropy")
            self.reduction = problem.get("reduction", "sum")
        self.out_act = m.get("output_activation", "softmax")

    def scale(self) -> float:
        if self.reduction == "mean":
            return 1.0 / self.scored.sum()
        if self.reduction == "batch_mean":
            return 1.0 / self.B
        return 1.0

    def init(self, arr, b):
        return arr if arr.ndim == 1 else arr[b]

    # --- forward ---

    def step(self, x, h, c):
        """One step: (h, c, what backward needs)."""
        H = self.H
        if self.cell == "rnn":
            h_new = np.tanh(self.V @ x + self.W @ h + self.b)
            return h_new, None, {"h": h_new}
        if self.cell == "lstm":
            a = self.V @ x + self.W @ h + self.b
            i, f, g, o = sig(a[:H]), sig(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), sig(a[3 * H:])
            c_new = f * c + i * g
            h_new = o * np.tanh(c_new)
            return h_new, c_new, {"i": i, "f": f, "g": g, "o": o, "c": c_new, "c_prev": c}
        Vr, Vz, Vn = self.V[:H], self.V[H:2 * H], self.V[2 * H:]
        Wr, Wz, Wn = self.W[:H], self.W[H:2 * H], self.W[2 * H:]
        br, bz, bn = self.b[:H], self.b[H:2 * H], self.b[2 * H:]
        r = sig(Vr @ x + Wr @ h + br)
        z = sig(Vz @ x + Wz @ h + bz)
        if self.reset == "after":
            q = Wn @ h + self.b_hn
            n = np.tanh(Vn @ x + bn + r * q)
        else:
            q = r * h
            n = np.tanh(Vn @ x + Wn @ q + bn)
        h_new = (1 - z) * n + z * h
        return h_new, None, {"r": r, "z": z, "n": n, "q": q}

    def run(self):
        """Per sequence: h (T × H), c, the step caches, the previous states, ŷ and L_t."""
        runs = []
        for b in range(self.B):
            h, c = self.init(self.h0, b), self.init(self.c0, b)
            hs, cs, caches, prev = [], [], [], []
            for t in range(self.T):
                prev.append((h, c))
                h, c, cache = self.step(self.x[b, t], h, c)
                hs.append(h), cs.append(c), caches.append(cache)
            yhat, L = [], []
            for t in range(self.T):
                if self.layer:
                    L.append(float(self.up[b, t] @ hs[t]))
                    continue
                zt = self.U @ hs[t] + self.b_y
                if self.out_act == "softmax":
                    e = np.exp(zt - zt.max())
                    yh = e / e.sum()
                else:
                    yh = zt
                yhat.append(yh)
                y = self.ys[b][t]
                if y is None:
                    L.append(0.0)
                elif self.loss_name == "cross_entropy":
                    L.append(float(-np.log(yh[y])))
                else:
                    L.append(float(0.5 * np.sum((yh - np.array(y)) ** 2)))
            runs.append({"h": hs, "c": cs, "caches": caches, "prev": prev, "yhat": yhat, "L": L})
        return runs

    def answers(self) -> dict:
        """The forward fields as the grader names them, in the problem's shapes."""
        runs = self.run()
        one = (lambda a: a) if self.batched else (lambda a: a[0])
        out = {"hidden": one(np.array([r["h"] for r in runs])),
               "step_losses": one(np.array([r["L"] for r in runs])),
               "loss": self.scale() * float(np.sum([r["L"] for r in runs]))}
        if not self.layer:
            out["outputs"] = one(np.array([r["yhat"] for r in runs]))
        if self.cell == "lstm":
            out["cell"] = one(np.array([r["c"] for r in runs]))
        return out

    # --- backward ---

    def back_step(self, dh, dc, x, h_prev, cache, g, b, t):
        """Step t of sequence b backwards: adds the immediate gradients at step t to g and
        returns (∂/∂h_{t−1}, ∂/∂c_{t−1})."""
        H = self.H
        if self.cell == "rnn":
            da = dh * (1 - cache["h"] ** 2)
            g["V"] += np.outer(da, x)
            g["W"] += np.outer(da, h_prev)
            g["b_h"] += da
            g["dx"][b, t] += self.V.T @ da
            return self.W.T @ da, None
        if self.cell == "lstm":
            i, f, gg, o, c = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
            tc = np.tanh(c)
            dc_total = dc + dh * o * (1 - tc ** 2)
            da = np.concatenate([dc_total * gg * i * (1 - i), dc_total * cache["c_prev"] * f * (1 - f),
                                 dc_total * i * (1 - gg ** 2), dh * tc * o * (1 - o)])
            g["V"] += np.outer(da, x)
            g["W"] += np.outer(da, h_prev)
            g["b_h"] += da
            g["dx"][b, t] += self.V.T @ da
            return self.W.T @ da, dc_total * f
        r, z, n, q = cache["r"], cache["z"], cache["n"], cache["q"]
        Wr, Wz, Wn = self.W[:H], self.W[H:2 * H], self.W[2 * H:]
        da_n = dh * (1 - z) * (1 - n ** 2)
        da_z = dh * (h_prev - n) * z * (1 - z)
        dh_prev = dh * z
        if self.reset == "after":
            da_r = da_n * q * r * (1 - r)
            dq = da_n * r
            g["W"] += np.concatenate([np.outer(da_r, h_prev), np.outer(da_z, h_prev), np.outer(dq, h_prev)])
            g["b_hn"] += dq
            dh_prev = dh_prev + Wr.T @ da_r + Wz.T @ da_z + Wn.T @ dq
        else:
            drh = Wn.T @ da_n
            da_r = drh * h_prev * r * (1 - r)
            g["W"] += np.concatenate([np.outer(da_r, h_prev), np.outer(da_z, h_prev), np.outer(da_n, q)])
            dh_prev = dh_prev + drh * r + Wr.T @ da_r + Wz.T @ da_z
        da = np.concatenate([da_r, da_z, da_n])
        g["V"] += np.outer(da, x)
        g["b_h"] += da
        g["dx"][b, t] += self.V.T @ da
        return dh_prev, None

    def gradients(self, window=None, path=None, last_only=False, batch_scale=1.0) -> dict:
        """∂L/∂θ as Σ_b Σ_t (L_t backpropagated on its own), with the chosen mistakes."""
        runs = self.run()
        H = self.H
        g = {"V": np.zeros_like(self.V), "W": np.zeros_like(self.W), "b_h": np.zeros_like(self.b),
             "h_init": np.zeros((self.B, H)), "c_init": np.zeros((self.B, H)),
             "dx": np.zeros_like(self.x)}
        if not self.layer:
            g["U"], g["b_y"] = np.zeros_like(self.U), np.zeros_like(self.b_y)
        if self.b_hn is not None:
            g["b_hn"] = np.zeros(H)
        scale = self.scale() * batch_scale
        for b, run in enumerate(runs):
            steps = [t for t in range(self.T) if self.scored[b, t]]
            if last_only:
                steps = steps[-1:]
            for t in steps:
                if self.layer:
                    dh = self.up[b, t] * scale
                else:
                    yh = run["yhat"][t]
                    y = self.ys[b][t]
                    dz = (yh - np.eye(len(yh))[y]) if self.loss_name == "cross_entropy" else (yh - np.array(y))
                    dz = dz * scale
                    g["U"] += np.outer(dz, run["h"][t])
                    g["b_y"] += dz
                    dh = self.U.T @ dz
                dc = np.zeros(H)
                lowest = 0 if window is None else max(0, t - window + 1)
                for k in range(t, lowest - 1, -1):
                    h_prev = run["prev"][k][0]
                    dh_prev, dc_prev = self.back_step(dh, dc, self.x[b, k], h_prev, run["caches"][k], g, b, k)
                    if path == "no_jacobian" and k > 0:
                        dh_prev = dh                   # ∂h_k/∂h_{k−1} taken as the identity
                    if path == "no_cell":
                        dc_prev = np.zeros(H)
                    if path == "no_hidden":
                        dh_prev = np.zeros(H)
                    if k == 0:
                        g["h_init"][b] += dh_prev
                        if dc_prev is not None:
                            g["c_init"][b] += dc_prev
                    dh, dc = dh_prev, dc_prev
        out = {k: v for k, v in g.items() if k not in ("dx", "h_init", "c_init")}
        out["h_init"] = g["h_init"] if self.h0.ndim == 2 else g["h_init"].sum(axis=0)
        if self.cell == "lstm":
            out["c_init"] = g["c_init"] if self.c0.ndim == 2 else g["c_init"].sum(axis=0)
        if self.dense:
            out["inputs"] = g["dx"] if self.batched else g["dx"][0]
        return out

    def loss(self) -> float:
        return self.answers()["loss"]


def reorder(grad: np.ndarray, cell: str, order: str) -> np.ndarray:
    """A gated gradient with its blocks in `order` (e.g. "i, f, o, g"), the lecture's being
    i, f, g, o (lstm) and r, z, n (gru)."""
    names = {"lstm": "ifgo", "gru": "rzn"}[cell]
    G = len(names)
    blocks = np.split(np.asarray(grad), G)
    return np.concatenate([blocks[names.index(n.strip())] for n in order.split(",")])


def central_differences(problem: dict, eps: float = 1e-6) -> dict:
    """∂L/∂θ of the student's own forward pass by central differences (to check the student)."""
    import copy

    def loss_with(name, value):
        p = copy.deepcopy(problem)
        if name in ("h_init", "c_init", "inputs"):
            p[name] = value.tolist()
        else:
            p["model"]["weights"][name] = value.tolist()
        return StudentCell(p).loss()

    s = StudentCell(problem)
    base = {"V": s.V, "W": s.W, "b_h": s.b}
    if not s.layer:
        base.update(U=s.U, b_y=s.b_y)
    if s.b_hn is not None:
        base["b_hn"] = s.b_hn
    base["h_init"] = s.h0
    if s.cell == "lstm":
        base["c_init"] = s.c0
    if s.dense:
        base["inputs"] = s.x if s.batched else s.x[0]
    out = {}
    for name, value in base.items():
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps
            grad[idx] = (loss_with(name, plus) - loss_with(name, minus)) / (2 * eps)
        out[name] = grad
    return out
