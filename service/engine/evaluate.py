"""What the compute endpoints ask of the engine, for any problem: the outputs of a forward
pass, and the gradients with their BPTT diagnostics.

The lecture's cell on one sequence with an output layer takes the vanilla engine (rnn.py, and
its compiled kernels for small problems), tuned for exactly that case; every other problem
(gated cells, batches, layer mode) takes the sequence runner. Both answer in the problem's
own shapes, so callers never know which one ran.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rnn, sequence
from .problem import PARAMETERS, Problem


def vanilla(p: Problem) -> bool:
    return p.cell == "rnn" and not p.batched and not p.layer and p.weights.U is not None


@dataclass
class Outputs:
    """A forward pass in the problem's shapes: T × F, or B × T × F for a batch."""
    hidden: np.ndarray
    cell: np.ndarray | None          # lstm: c_t
    outputs: np.ndarray | None       # ŷ_t; None without an output layer
    step_losses: np.ndarray | None   # unreduced L_t (0 on unscored steps); None without a loss
    loss: float | None


def forward(p: Problem) -> Outputs:
    return _outputs(rnn.forward(p) if vanilla(p) else sequence.forward(p))


def gradients(p: Problem, truncate: int | None = None, include: tuple[str, ...] = ()):
    """(Outputs, gradients by name, BPTT diagnostics)."""
    if vanilla(p):
        cache = rnn.forward(p)
        g, bptt = rnn.backward_with_diagnostics(cache, truncate, include)
        grads = g.as_dict()
        if p.inputs is not None:
            grads["inputs"] = g.inputs
        return _outputs(cache), grads, bptt
    cache = sequence.forward(p)
    grads, bptt = sequence.backward(cache, truncate, include)
    return _outputs(cache), grads, bptt


def _outputs(cache) -> Outputs:
    loss = None if cache.loss is None else float(cache.loss)
    return Outputs(cache.h, getattr(cache, "c", None), cache.yhat, cache.step_losses, loss)


# --- the work budgets' estimates, before any work ---

def forward_work(p: Problem) -> float:
    """Multiply-adds of one forward pass: W h, U h and V x (a column of V for tokens) per step."""
    GH, N = p.G * p.H, p.N or 0
    return float(p.B * p.T * (GH * p.H + N * p.H + (p.D * GH if p.inputs is not None else GH)))


def estimate_work(p: Problem, truncate: int | None = None, include: tuple[str, ...] = ()) -> float:
    """Multiply-adds of forward + backward with the diagnostics."""
    if vanilla(p):
        return rnn.estimate_work(p.T, p.H, p.D, p.N, truncate=truncate, include=include,
                                 dense_inputs=p.inputs is not None)
    return sequence.estimate_work(p, truncate, include)


def bptt_numbers(p: Problem, include: tuple[str, ...]) -> int:
    """How many numbers the optional diagnostics hold: T²·G·H for b_h_terms, B·T² for
    jacobian_norms (v1 counted T²·H for either: the same for the lecture's cell alone)."""
    if not include:
        return 0
    if vanilla(p):
        return p.T * p.T * p.H
    return p.T * p.T * (p.G * p.H * ("b_h_terms" in include) + p.B * ("jacobian_norms" in include))


def parameters(p: Problem) -> tuple[str, ...]:
    """What a problem's loss depends on, and so what gradcheck checks by default: U and b_y
    only with an output layer that makes the loss, c_init for the lstm, b_hn for the gru
    with r applied after W_n, the inputs when they are dense."""
    has = {"V", "W", "b_h", "h_init"}
    if p.weights.U is not None and not p.layer:
        has |= {"U", "b_y"}
    if p.cell == "lstm":
        has.add("c_init")
    if p.weights.b_hn is not None:
        has.add("b_hn")
    if p.inputs is not None:
        has.add("inputs")
    return tuple(n for n in PARAMETERS if n in has)


def parameter_shapes(p: Problem) -> dict[str, tuple[int, ...]]:
    """parameters(p) with their shapes."""
    return {n: (p.inputs if n == "inputs" else getattr(p.weights, n)).shape for n in parameters(p)}
