"""LSTM cell, gate blocks i, f, g, o (PyTorch's order); the state is s = [h; c].

    [a_i; a_f; a_g; a_o] = V x_t + W h_{t-1} + b_h
    i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g          h_t = o ⊙ tanh(c_t)
"""
from __future__ import annotations

import numpy as np

from ..rnn import sigmoid
from .rnn import _gram

G = 4
STATE = "hc"


def step_forward(xd_t, s_prev, p):
    H = p.H
    h_prev, c_prev = s_prev[..., :H], s_prev[..., H:]
    a = xd_t + h_prev @ p.WT
    i, f, o = sigmoid(a[..., :H]), sigmoid(a[..., H:2 * H]), sigmoid(a[..., 3 * H:])
    g = np.tanh(a[..., 2 * H:3 * H])
    c = f * c_prev + i * g
    tc = np.tanh(c)
    return np.concatenate([o * tc, c], axis=-1), (i, f, g, o, c_prev, tc)


def step_backward(ds_t, cache, p):
    H = p.H
    i, f, g, o, c_prev, tc = cache
    dh, dc = ds_t[..., :H], ds_t[..., H:]
    dc = dc + dh * o * (1.0 - tc * tc)          # total dL/dc_t: carried plus through h_t
    da = np.concatenate([dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f),
                         dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], axis=-1)
    return da, np.concatenate([da @ p.W, dc * f], axis=-1), da


def weight_grads(d_rec, h_prev, caches, p):
    return {"W": _gram(d_rec, h_prev)}
