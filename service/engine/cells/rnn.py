"""The lecture's vanilla cell: a_t = V x_t + W h_{t-1} + b_h, h_t = f_h(a_t)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .. import rnn as vanilla
from ._kernels import F2, OPTS, sigmoid, tanh

G = 1
STATE = "h"
EXTRA = 0
ACTIVATION_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "identity": 3}


def rec_is_drive(p) -> bool:
    return True


def scratch(lead, H):
    return (np.empty((*lead, H)),)


def step_forward(xd_t, s_prev, p, out=None):
    if out is None:
        a = xd_t + s_prev @ p.WT
        h = vanilla.hidden(p.activation, a)
        return h, (a, h)
    h, _, (Wh,) = out
    np.dot(s_prev, p.WT, out=Wh)
    _forward(xd_t, Wh, h, p.code)                 # xd_t becomes a_t
    return h, (xd_t, h)


def step_backward(ds_t, cache, p, out=None):
    a, h = cache
    if out is None:
        da = ds_t * vanilla.hidden_slope(p.activation, a, h)   # relu: slope 0 at 0
        return da, da @ p.W, da
    da, _, ds_prev, _ = out
    _backward(ds_t, a, h, da, p.code)
    np.dot(da, p.W, out=ds_prev)
    return da, ds_prev, da


def weight_grads(d_rec, h, h_init, caches, p):
    return {"W": gram_prev(d_rec, h, h_init)}


def gram(d, x):
    """Σ over every leading axis of d xᵀ: one GEMM (reshape is a view for the runner's
    time-major states, even the h part of [h; c])."""
    return d.reshape(-1, d.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def gram_prev(d, x, x_init):
    """Σ_t d_t x_{t-1}ᵀ with x_{-1} = x_init (T × B × … stacks): from the shifted views, with
    no copy of the stack of x_{t-1}."""
    out = d[0].T @ x_init
    if len(d) > 1:
        out += gram(d[1:], x[:-1])
    return out


@njit(f"void({F2}, {F2}, {F2}, int64)", **OPTS)
def _forward(a, Wh, h, code):
    for b in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[b, j] += Wh[b, j]
        if code == 0:                                   # one branch per row keeps loops simple
            for j in range(a.shape[1]):
                h[b, j] = tanh(a[b, j])
        elif code == 1:
            for j in range(a.shape[1]):
                h[b, j] = sigmoid(a[b, j])
        elif code == 2:
            for j in range(a.shape[1]):
                h[b, j] = a[b, j] if a[b, j] > 0.0 else 0.0
        else:
            for j in range(a.shape[1]):
                h[b, j] = a[b, j]


@njit(f"void({F2}, {F2}, {F2}, {F2}, int64)", **OPTS)
def _backward(dh, a, h, da, code):
    for b in range(dh.shape[0]):
        c = b % a.shape[0]              # the gradient may hold several rows per sequence
        for j in range(a.shape[1]):
            if code == 0:
                s = 1.0 - h[c, j] * h[c, j]
            elif code == 1:
                s = h[c, j] * (1.0 - h[c, j])
            elif code == 2:
                s = 1.0 if a[c, j] > 0.0 else 0.0
            else:
                s = 1.0
            da[b, j] = dh[b, j] * s
