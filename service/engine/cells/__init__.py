"""Recurrent cells: one step forward and backward each, on a batch of rows.

Every cell module has `G` (gate blocks in V, W, b_h), `STATE` ("h", or "hc" when the state
that flows between steps is s = [h; c]), `EXTRA` (numbers per row it keeps besides its gates
and states), `REC_IS_DRIVE` (whether d_rec_t below is dxd_t itself), and
    step_forward(xd_t, s_prev, p, out=None) -> (s_t, cache_t)
    step_backward(ds_t, cache_t, p, out=None) -> (dxd_t, ds_prev, d_rec_t)
    weight_grads(d_rec, h_prev, caches, p) -> {"W": ..., ("b_hn": ...)}
xd_t = V x_t + b_h is computed for every step with one GEMM before the loop; s_* and ds_t may
have any leading axes and ds_t extra leading rows that broadcast against the cache (the
diagnostics backpropagate every L_t at once); any dtype (complex for complex steps). d_rec_t
is ∂L/∂(the recurrent product W·h_{t−1}) per gate block; `weight_grads` turns the stacks of
d_rec_t and h_{t−1} (T × B × …) into dL/dW with one GEMM, after the loop.

`out` is the runner's fast path (float64 B × F rows, C-contiguous): step_forward's
out = (s_t, extra_t, scratch) and step_backward's out = (dxd_t, d_rec_t, ds_prev, scratch) are
written in place by compiled kernels, and step_forward overwrites xd_t with the cache's gates.
The cache has the same form on both paths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gru, lstm, rnn

CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}


@dataclass
class StepParams:
    """What a step needs besides its input drive and state."""
    W: np.ndarray                  # G·H × H (a leading P axis allowed in forward)
    activation: str = "tanh"       # the vanilla cell's f_h
    gru_reset: str = "after"       # gru: r applied after (PyTorch) or before (d2l) W_n
    b_hn: np.ndarray | None = None  # gru "after": H, broadcasting against the state's rows

    def __post_init__(self):
        self.H = self.W.shape[-1]
        self.WT = np.swapaxes(self.W, -1, -2)     # a view: h_{t-1} Wᵀ for rows of h
        self.code = rnn.ACTIVATION_CODES.get(self.activation, 0)
