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

v1.1 kinds keep that order, with G gate blocks (1 rnn, 4 lstm, 3 gru) and B sequences; for the
lecture's rnn on one sequence (no `batch_size`, no `layer`) every draw is the one above:

    V (G·H×D), W (G·H×H), then, unless layer: U (N×H); then b_h (G·H), unless layer: b_y (N)
    inputs (B×T×D, sequence by sequence) or tokens (B×T)
    unless layer: targets (B×T, sequence by sequence, as above)
    then, after every draw above: gru with gru_reset after: b_hn (H) uniform in [−s, s);
    layer: upstream (B×T×H) uniform in [−1, 1)

A batch (`batch_size` B, even 1) has B×T×D inputs (B×T tokens, B×T targets; with
`score_last_step_only` each sequence scores its last step only); without it B = 1 and the
arrays are one sequence's. `layer` is a layer alone: no output layer, no targets, no loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .problem import GATES
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
    cell: str = "rnn"
    gru_reset: str | None = None  # gru only: "after" (the default) or "before"
    batch_size: int | None = None  # None: one sequence
    layer: bool = False


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
    G = GATES[spec.cell]
    B = spec.batch_size or 1
    batched = spec.batch_size is not None
    loss = spec.loss or DEFAULT_LOSS[spec.output_activation]
    draw = Draws(spec.seed)
    weights = {"V": _rows(draw.uniform(G * H * D, -s, s), D), "W": _rows(draw.uniform(G * H * H, -s, s), H)}
    if not spec.layer:
        weights["U"] = _rows(draw.uniform(N * H, -s, s), H)
    weights["b_h"] = draw.uniform(G * H, -s, s)
    if not spec.layer:
        weights["b_y"] = draw.uniform(N, -s, s)
    model: dict = {"weights": weights}
    if spec.cell != "rnn":
        model["cell"] = spec.cell
    if spec.cell == "gru" and spec.gru_reset is not None:
        model["gru_reset"] = spec.gru_reset
    model["hidden_activation"] = spec.hidden_activation
    if not spec.layer:
        model["output_activation"] = spec.output_activation
    problem: dict = {"model": model}
    one = (lambda rows: rows) if batched else (lambda rows: rows[0])      # B sequences, or one
    if spec.tokens:
        problem["tokens"] = one(_rows(draw.below(B * T, D), T))
    else:
        problem["inputs"] = one([_rows(seq, D) for seq in _rows(draw.uniform(B * T * D, -1.0, 1.0), T * D)])
    if not spec.layer:
        sequences = [_targets(draw, loss, T, N) for _ in range(B)]
        if spec.score_last_step_only:
            sequences = [[None] * (T - 1) + ys[-1:] for ys in sequences]
        problem.update(targets=one(sequences), loss=loss, reduction=spec.reduction)
    if spec.cell == "gru" and (spec.gru_reset or "after") == "after":
        weights["b_hn"] = draw.uniform(H, -s, s)
    if spec.layer:
        problem["upstream"] = {"hidden": one([_rows(seq, H) for seq in
                                              _rows(draw.uniform(B * T * H, -1.0, 1.0), T * H)])}
    return problem


def _targets(draw: Draws, loss: str, T: int, N: int) -> list:
    """One sequence's T targets."""
    if loss == "cross_entropy":
        return draw.below(T, N)
    if loss == "binary_cross_entropy":
        return _rows(draw.bits01(T * N), N)
    return _rows(draw.uniform(T * N, -1.0, 1.0), N)
