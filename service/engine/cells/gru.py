"""GRU cell, gate blocks r, z, n; h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.

    r = σ(V_r x + W_r h + b_r)     z = σ(V_z x + W_z h + b_z)
    after (PyTorch):  n = tanh(V_n x + b_n + r ⊙ (W_n h + b_hn))
    before (d2l):     n = tanh(V_n x + W_n (r ⊙ h) + b_n)

The cache is (the gates [r, z, n], h_{t-1}, q) with q = W_n h + b_hn (after) or r ⊙ h (before).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..rnn import sigmoid
from . import _kernels as k
from .rnn import gram, gram_prev

G = 3
STATE = "h"
EXTRA = 1                       # q


def rec_is_drive(p) -> bool:
    """before: W multiplies [h; h; r ⊙ h] blockwise, so dL/d(W·) is dL/dxd itself."""
    return p.gru_reset != "after"


def scratch(lead, H):
    return tuple(np.empty((*lead, n * H)) for n in (3, 2, 1, 1))


def step_forward(xd_t, h_prev, p, out=None):
    H = p.H
    WT = p.WT
    if out is None:
        a_rz = xd_t[..., :2 * H] + h_prev @ WT[..., :2 * H]
        r, z = sigmoid(a_rz[..., :H]), sigmoid(a_rz[..., H:])
        if p.gru_reset == "after":
            q = h_prev @ WT[..., 2 * H:] + p.b_hn
            n = np.tanh(xd_t[..., 2 * H:] + r * q)
        else:
            q = r * h_prev
            n = np.tanh(xd_t[..., 2 * H:] + q @ WT[..., 2 * H:])
        return n + z * (h_prev - n), (np.concatenate([r, z, n], axis=-1), h_prev, q)
    h, q, (Wh, Wh_rz, Wh_n, _) = out
    if p.gru_reset == "after":
        np.dot(h_prev, WT, out=Wh)
        _forward_after(xd_t, Wh, p.b_hn, h_prev, h, q)
    else:
        np.dot(h_prev, WT[:, :2 * H], out=Wh_rz)
        _forward_rz(xd_t, Wh_rz, h_prev, q)
        np.dot(q, WT[:, 2 * H:], out=Wh_n)
        _forward_n(xd_t, Wh_n, h_prev, h)
    return h, (xd_t, h_prev, q)                   # xd_t holds the gates


def step_backward(dh, cache, p, out=None):
    H = p.H
    gates, h_prev, q = cache
    W = p.W
    if out is None:
        r, z, n = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:]
        da_n = dh * (1.0 - z) * (1.0 - n * n)
        da_z = dh * (h_prev - n) * z * (1.0 - z)
        if p.gru_reset == "after":
            dq = da_n * r                         # dL/d(W_n h + b_hn)
            da_r = da_n * q * r * (1.0 - r)
            d_rec = np.concatenate([da_r, da_z, dq], axis=-1)
            dh_prev = dh * z + d_rec @ W
        else:
            dq = da_n @ W[2 * H:]                 # dL/d(r ⊙ h)
            da_r = dq * h_prev * r * (1.0 - r)
            d_rec = np.concatenate([da_r, da_z, da_n], axis=-1)
            dh_prev = dh * z + dq * r + d_rec[..., :2 * H] @ W[:2 * H]
        return np.concatenate([da_r, da_z, da_n], axis=-1), dh_prev, d_rec
    dxd, d_rec, dh_prev, (_, _, dq, Wd) = out
    if p.gru_reset == "after":
        _backward_after(dh, gates, h_prev, q, dxd, d_rec, dh_prev)
    else:
        _backward_zn(dh, gates, h_prev, dxd, dh_prev)
        np.matmul(dxd[:, 2 * H:], W[2 * H:], out=dq)
        _backward_r(dq, gates, h_prev, dxd, dh_prev)
    if p.gru_reset == "after":
        np.matmul(d_rec, W, out=Wd)
    else:
        d_rec = dxd
        np.matmul(dxd[:, :2 * H], W[:2 * H], out=Wd)
    dh_prev += Wd
    return dxd, dh_prev, d_rec


def weight_grads(d_rec, h, h_init, caches, p):
    H = p.H
    if p.gru_reset == "after":
        return {"W": gram_prev(d_rec, h, h_init),
                "b_hn": d_rec[..., 2 * H:].reshape(-1, H).sum(axis=0)}
    rh = np.stack([c[2] for c in caches])         # r ⊙ h_{t-1}, the n block's input
    return {"W": np.concatenate([gram_prev(d_rec[..., :2 * H], h, h_init),
                                 gram(d_rec[..., 2 * H:], rh)])}


# short passes over a row, few arrays each, so that LLVM vectorizes them (see lstm.py)

@njit(f"void({k.F2}, {k.F2}, {k.F1}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _forward_after(a, Wh, b_hn, h_prev, h, q):
    H = h.shape[1]
    for b in range(a.shape[0]):
        for j in range(2 * H):                          # r, z
            a[b, j] = k.sigmoid(a[b, j] + Wh[b, j])
        for j in range(H):
            q[b, j] = Wh[b, 2 * H + j] + b_hn[j]
        for j in range(H):                              # n, in h for now (a loop that
            h[b, j] = k.tanh(a[b, 2 * H + j] + a[b, j] * q[b, j])    # writes one block of a
        for j in range(H):                              # while reading another is not
            a[b, 2 * H + j] = h[b, j]                   # vectorized)
        for j in range(H):
            h[b, j] += a[b, H + j] * (h_prev[b, j] - h[b, j])


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _forward_rz(a, Wh_rz, h_prev, q):
    H = q.shape[1]
    for b in range(a.shape[0]):
        for j in range(2 * H):
            a[b, j] = k.sigmoid(a[b, j] + Wh_rz[b, j])
        for j in range(H):
            q[b, j] = a[b, j] * h_prev[b, j]


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _forward_n(a, Wh_n, h_prev, h):
    H = h.shape[1]
    for b in range(a.shape[0]):
        for j in range(H):
            a[b, 2 * H + j] = k.tanh(a[b, 2 * H + j] + Wh_n[b, j])
        for j in range(H):
            h[b, j] = a[b, 2 * H + j]
        for j in range(H):
            h[b, j] += a[b, H + j] * (h_prev[b, j] - h[b, j])


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _backward_after(dh, gates, h_prev, q, dxd, d_rec, dh_prev):
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        c = b % gates.shape[0]          # the gradient may hold several rows per sequence
        for j in range(H):
            r, z, n, d = gates[c, j], gates[c, H + j], gates[c, 2 * H + j], dh[b, j]
            da_n = d * (1.0 - z) * (1.0 - n * n)
            da_z = d * (h_prev[c, j] - n) * z * (1.0 - z)
            da_r = da_n * q[c, j] * r * (1.0 - r)
            dxd[b, j] = d_rec[b, j] = da_r
            dxd[b, H + j] = d_rec[b, H + j] = da_z
            dxd[b, 2 * H + j] = da_n
            d_rec[b, 2 * H + j] = da_n * r
            dh_prev[b, j] = d * z


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _backward_zn(dh, gates, h_prev, dxd, dh_prev):
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        c = b % gates.shape[0]
        for j in range(H):
            z, n, d = gates[c, H + j], gates[c, 2 * H + j], dh[b, j]
            dxd[b, 2 * H + j] = d * (1.0 - z) * (1.0 - n * n)
            dxd[b, H + j] = d * (h_prev[c, j] - n) * z * (1.0 - z)
            dh_prev[b, j] = d * z


@njit(f"void({k.F2}, {k.F2}, {k.F2}, {k.F2}, {k.F2})", **k.OPTS)
def _backward_r(dq, gates, h_prev, dxd, dh_prev):
    H = dq.shape[1]
    for b in range(dq.shape[0]):
        c = b % gates.shape[0]
        for j in range(H):
            r = gates[c, j]
            dxd[b, j] = dq[b, j] * h_prev[c, j] * r * (1.0 - r)
            dh_prev[b, j] += dq[b, j] * r
