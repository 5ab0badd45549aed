"""The one problem type of the v1.1 engine: weights of any cell, one sequence or a batch.

Arrays are float64 (tokens int64, scored bool) in the lecture's orientation and gate order
(LSTM blocks i, f, g, o; GRU blocks r, z, n); the schemas have mapped the caller's layout
onto it. Unbatched problems have exactly v1's shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# this order: gradcheck seeds use the index
PARAMETERS = ("V", "W", "U", "b_h", "b_y", "h_init", "b_hn", "c_init", "inputs")


@dataclass
class Weights:
    V: np.ndarray               # G·H × D
    W: np.ndarray               # G·H × H
    U: np.ndarray | None        # N × H (None: no output layer, layer mode only)
    b_h: np.ndarray             # G·H
    b_y: np.ndarray | None      # N
    h_init: np.ndarray          # H (shared by every sequence) or B × H
    c_init: np.ndarray | None = None   # lstm only: H or B × H
    b_hn: np.ndarray | None = None     # gru with gru_reset "after" only: H

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays this problem has, by name, in PARAMETERS' order."""
        return {name: v for name in PARAMETERS if (v := getattr(self, name, None)) is not None}

    def replace(self, **arrays) -> "Weights":
        return Weights(**{**vars(self), **arrays})


@dataclass
class Problem:
    weights: Weights
    cell: str = "rnn"                     # rnn | lstm | gru
    gru_reset: str = "after"              # after | before (gru only)
    hidden_activation: str = "tanh"       # rnn: tanh|sigmoid|relu|identity; gated cells: tanh
    output_activation: str = "softmax"
    inputs: np.ndarray | None = None      # T × D, or B × T × D (batched)
    tokens: np.ndarray | None = None      # T, or B × T int64 (x_t = onehot(tokens[t]))
    targets: np.ndarray | None = None     # T × N or B × T × N (class indices stored one-hot)
    scored: np.ndarray | None = None      # T or B × T bools (False: null target)
    upstream: np.ndarray | None = None    # layer mode: dL/dh_t, T × H or B × T × H
    loss: str | None = None               # None without targets (or in layer mode)
    reduction: str = "sum"                # sum | mean | batch_mean

    @property
    def batched(self) -> bool:
        return self.inputs.ndim == 3 if self.inputs is not None else self.tokens.ndim == 2

    @property
    def B(self) -> int:
        return (self.inputs if self.inputs is not None else self.tokens).shape[0] \
            if self.batched else 1

    @property
    def T(self) -> int:
        return self.inputs.shape[-2] if self.inputs is not None else self.tokens.shape[-1]

    @property
    def H(self) -> int:
        return self.weights.W.shape[-1]

    @property
    def D(self) -> int:
        return self.weights.V.shape[-1]

    @property
    def N(self) -> int | None:
        return None if self.weights.U is None else self.weights.U.shape[-2]

    @property
    def G(self) -> int:
        return GATES[self.cell]

    @property
    def layer(self) -> bool:
        return self.upstream is not None

    @property
    def has_loss(self) -> bool:
        return self.targets is not None or self.upstream is not None

    def loss_scale(self) -> float:
        """What each L_t is multiplied by in L."""
        if self.layer or self.reduction == "sum":
            return 1.0
        if self.reduction == "batch_mean":
            return 1.0 / self.B
        scored = self.T * self.B if self.scored is None else int(np.count_nonzero(self.scored))
        return 1.0 / max(scored, 1)
