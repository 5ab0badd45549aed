"""LSTM cell, gate blocks i, f, g, o (PyTorch's order); the state is s = [h; c].

    [a_i; a_f; a_g; a_o] = V x_t + W h_{t-1} + b_h
    i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g          h_t = o ⊙ tanh(c_t)

The cache is (the activated gates [i, f, g, o], s_{t-1}, tanh(c_t)).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rnn import sigmoid
from . import _kernels as k
from .rnn import gram_prev

G = 4
STATE = "hc"
EXTRA = 1                       # tanh(c_t)


def rec_is_drive(p) -> bool:
    return True


def scratch(lead, H):
    return np.empty((*lead, 4 * H)), np.empty((*lead, H))   # W h_{t-1}; h_{t-1} or dL/dh_{t-1}


def step_forward(xd_t, s_prev, p, out=None):
    H = p.H
    if out is None:
        a = xd_t + s_prev[..., :H] @ p.WT
        i, f, o = sigmoid(a[..., :H]), sigmoid(a[..., H:2 * H]), sigmoid(a[..., 3 * H:])
        g = np.tanh(a[..., 2 * H:3 * H])
        c = f * s_prev[..., H:] + i * g
        tc = np.tanh(c)
        return (np.concatenate([o * tc, c], axis=-1),
                (np.concatenate([i, f, g, o], axis=-1), s_prev, tc))
    s_t, tc, (Wh, h) = out
    np.copyto(h, s_prev[:, :H])                   # contiguous rows: the GEMM is ~20% faster
    np.dot(h, p.WT, out=Wh)
    _forward(xd_t, Wh, s_prev, s_t, tc)           # xd_t becomes the gates
    return s_t, (xd_t, s_prev, tc)


def step_backward(ds_t, cache, p, out=None):
    H = p.H
    gates, s_prev, tc = cache
    if out is None:
        i, f, g, o = (gates[..., n * H:(n + 1) * H] for n in range(4))
        dh, dc = ds_t[..., :H], ds_t[..., H:]
        dc = dc + dh * o * (1.0 - tc * tc)        # total dL/dc_t: carried plus through h_t
        da = np.concatenate([dc * g * i * (1.0 - i), dc * s_prev[..., H:] * f * (1.0 - f),
                             dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
        return da, np.concatenate([da @ p.W, dc * f], axis=-1), da
    da, _, ds_prev, (_, Wd) = out
    _backward(ds_t, gates, s_prev, tc, da, ds_prev)
    np.dot(da, p.W, out=Wd)                        # into contiguous scratch: a strided
    ds_prev[:, :H] = Wd                            # out= is ~2x slower at B 32
    return da, ds_prev, da


def weight_grads(d_rec, h, h_init, caches, p):
    return {"W": gram_prev(d_rec, h, h_init)}


# The kernels are written as short passes over a row, each touching few arrays and counting
# from 0: LLVM then vectorizes them (measured: 3-4x slower per element otherwise).

@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _forward(a, Wh, s_prev, s, tc):
    H = tc.shape[1]
    for b in range(a.shape[0]):
        for j in range(2 * H):                          # i, f
            a[b, j] = k.sigmoid(a[b, j] + Wh[b, j])
        for j in range(H):                              # g (loops from 0: range(2H, 3H)
            a[b, 2 * H + j] = k.tanh(a[b, 2 * H + j] + Wh[b, 2 * H + j])   # is not vectorized)
        for j in range(H):                              # o
            a[b, 3 * H + j] = k.sigmoid(a[b, 3 * H + j] + Wh[b, 3 * H + j])
        for j in range(H):                              # c_t = f c_{t-1} + i g
            s[b, H + j] = a[b, H + j] * s_prev[b, H + j] + a[b, j] * a[b, 2 * H + j]
        for j in range(H):
            tc[b, j] = k.tanh(s[b, H + j])
        for j in range(H):                              # h_t = o tanh(c_t)
            s[b, j] = a[b, 3 * H + j] * tc[b, j]


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _backward(ds, gates, s_prev, tc, da, ds_prev):
    H = tc.shape[1]
    for b in range(ds.shape[0]):
        c = b % gates.shape[0]          # the gradient may hold several rows per sequence
        for j in range(H):
            i, f, g, o = gates[c, j], gates[c, H + j], gates[c, 2 * H + j], gates[c, 3 * H + j]
            dh, t = ds[b, j], tc[c, j]
            dc = ds[b, H + j] + dh * o * (1.0 - t * t)
            da[b, j] = dc * g * i * (1.0 - i)
            da[b, H + j] = dc * s_prev[c, H + j] * f * (1.0 - f)
            da[b, 2 * H + j] = dc * i * (1.0 - g * g)
            da[b, 3 * H + j] = dh * t * o * (1.0 - o)
            ds_prev[b, H + j] = dc * f
