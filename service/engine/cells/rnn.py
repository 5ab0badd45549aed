"""The lecture's vanilla cell: a_t = V x_t + W h_{t-1} + b_h, h_t = f_h(a_t)."""
from __future__ import annotations

import numpy as np

from .. import rnn as vanilla

G = 1
STATE = "h"


def step_forward(xd_t, s_prev, p):
    a = xd_t + s_prev @ p.WT
    h = vanilla.hidden(p.activation, a)
    return h, (a, h)


def step_backward(ds_t, cache, p):
    a, h = cache
    da = ds_t * vanilla.hidden_slope(p.activation, a, h)   # relu: slope 0 at 0
    return da, da @ p.W, da


def weight_grads(d_rec, h_prev, caches, p):
    return {"W": _gram(d_rec, h_prev)}


def _gram(d, x):
    """Σ over every leading axis of d xᵀ: one GEMM."""
    return d.reshape(-1, d.shape[-1]).T @ x.reshape(-1, x.shape[-1])
