"""GRU cell, gate blocks r, z, n; h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.

    r = σ(V_r x + W_r h + b_r)     z = σ(V_z x + W_z h + b_z)
    after (PyTorch):  n = tanh(V_n x + b_n + r ⊙ (W_n h + b_hn))
    before (d2l):     n = tanh(V_n x + W_n (r ⊙ h) + b_n)
"""
from __future__ import annotations

import numpy as np

from ..rnn import sigmoid
from .rnn import _gram

G = 3
STATE = "h"


def step_forward(xd_t, h_prev, p):
    H = p.H
    WT = p.WT
    a_rz = xd_t[..., :2 * H] + h_prev @ WT[..., :2 * H]
    r, z = sigmoid(a_rz[..., :H]), sigmoid(a_rz[..., H:])
    if p.gru_reset == "after":
        q = h_prev @ WT[..., 2 * H:] + p.b_hn       # W_n h + b_hn
        n = np.tanh(xd_t[..., 2 * H:] + r * q)
    else:
        q = r * h_prev                               # what W_n multiplies
        n = np.tanh(xd_t[..., 2 * H:] + q @ WT[..., 2 * H:])
    return n + z * (h_prev - n), (r, z, n, h_prev, q)


def step_backward(dh, cache, p):
    H = p.H
    r, z, n, h_prev, q = cache
    da_n = dh * (1.0 - z) * (1.0 - n * n)
    da_z = dh * (h_prev - n) * z * (1.0 - z)
    W = p.W
    if p.gru_reset == "after":
        dq = da_n * r                                # dL/d(W_n h + b_hn)
        da_r = da_n * q * r * (1.0 - r)
        d_rec = np.concatenate([da_r, da_z, dq], axis=-1)
        dh_prev = dh * z + d_rec @ W
    else:
        dq = da_n @ W[2 * H:]                        # dL/d(r ⊙ h)
        da_r = dq * h_prev * r * (1.0 - r)
        d_rec = np.concatenate([da_r, da_z, da_n], axis=-1)
        dh_prev = dh * z + dq * r + d_rec[..., :2 * H] @ W[:2 * H]
    return np.concatenate([da_r, da_z, da_n], axis=-1), dh_prev, d_rec


def weight_grads(d_rec, h_prev, caches, p):
    H = p.H
    if p.gru_reset == "after":
        return {"W": _gram(d_rec, h_prev), "b_hn": d_rec[..., 2 * H:].reshape(-1, H).sum(axis=0)}
    rh = np.stack([c[4] for c in caches])            # r ⊙ h_{t-1}, the n block's input
    return {"W": np.concatenate([_gram(d_rec[..., :2 * H], h_prev),
                                 _gram(d_rec[..., 2 * H:], rh)])}
