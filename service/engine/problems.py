"""Seeded random problems: the same spec gives the same problem on every machine and release.

Every number comes from the raw 64-bit stream of numpy's PCG64 bit generator seeded with
`seed` (numpy keeps that stream fixed across versions and platforms; the Generator's
distribution methods carry no such promise), mapped by the formulas below with IEEE-exact
arithmetic, then rounded to 6 significant digits through a decimal string, so the JSON is
identical everywhere. One raw draw per number, in this order:

    V (H×D, row by row), W (H×H), U (N×H), b_h (H), b_y (N)   uniform in [−s, s), s = weight_scale
    inputs (T×D) uniform in [−1, 1)       or tokens (T): raw mod D
    targets, all T steps: cross_entropy: class raw mod N; binary_cross_entropy: N values 0 or 1
    (the raw's top bit); squared_error: N values uniform in [−1, 1)

`score_last_step_only` then sets every target but the last to null (the draws are the same,
so the flag changes nothing else). uniform(lo, hi) = lo + (hi − lo)·(raw >> 11)·2⁻⁵³.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rnn import DEFAULT_LOSS


@dataclass(frozen=True)
class ProblemSpec:
    seed: int = 0
    input_size: int = 3           # D for dense inputs; the vocabulary size when tokens
    tokens: bool = False
    hidden_size: int = 4
    output_size: int = 3
    steps: int = 5
    hidden_activation: str = "tanh"
    output_activation: str = "softmax"
    loss: str | None = None
    reduction: str = "sum"
    weight_scale: float = 0.5
    score_last_step_only: bool = False


class Draws:
    """Numbers from the raw PCG64 stream, one 64-bit draw each."""

    def __init__(self, seed: int):
        self.bits = np.random.Generator(np.random.PCG64(seed)).bit_generator

    def raw(self, n: int) -> list[int]:
        return [int(r) for r in self.bits.random_raw(n)] if n else []

    def uniform(self, n: int, lo: float, hi: float) -> list[float]:
        return [_round(lo + (hi - lo) * ((r >> 11) * 2.0 ** -53)) for r in self.raw(n)]

    def below(self, n: int, high: int) -> list[int]:
        return [r % high for r in self.raw(n)]

    def bits01(self, n: int) -> list[float]:
        return [float(r >> 63) for r in self.raw(n)]


def _round(x: float) -> float:
    """6 significant digits via a correctly rounded decimal string; never −0.0."""
    return float(f"{x:.6g}") + 0.0


def _rows(values: list, cols: int) -> list[list]:
    return [values[i:i + cols] for i in range(0, len(values), cols)]


def generate(spec: ProblemSpec) -> dict:
    """The problem object (JSON-ready) that every compute endpoint accepts as it is."""
    H, D, N, T, s = spec.hidden_size, spec.input_size, spec.output_size, spec.steps, spec.weight_scale
    loss = spec.loss or DEFAULT_LOSS[spec.output_activation]
    draw = Draws(spec.seed)
    weights = {"V": _rows(draw.uniform(H * D, -s, s), D), "W": _rows(draw.uniform(H * H, -s, s), H),
               "U": _rows(draw.uniform(N * H, -s, s), H),
               "b_h": draw.uniform(H, -s, s), "b_y": draw.uniform(N, -s, s)}
    problem: dict = {"model": {"weights": weights, "hidden_activation": spec.hidden_activation,
                               "output_activation": spec.output_activation}}
    if spec.tokens:
        problem["tokens"] = draw.below(T, D)
    else:
        problem["inputs"] = _rows(draw.uniform(T * D, -1.0, 1.0), D)
    if loss == "cross_entropy":
        targets: list = draw.below(T, N)
    elif loss == "binary_cross_entropy":
        targets = _rows(draw.bits01(T * N), N)
    else:
        targets = _rows(draw.uniform(T * N, -1.0, 1.0), N)
    if spec.score_last_step_only:
        targets = [None] * (T - 1) + targets[-1:]
    problem.update(targets=targets, loss=loss, reduction=spec.reduction)
    return problem

