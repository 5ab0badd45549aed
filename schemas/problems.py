"""POST /v1/problems: the body that describes a seeded random problem."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Integer, PositiveInt, StrictModel, check_limit
from .errors import LimitExceeded, RequestInvalid
from . import layouts
from .limits import Limits
from .problem import (DEFAULT_LOSS, GATES, LOSS_NEEDS, Cell, GruReset, HiddenActivation, LayoutName, LossName,
                      OutputActivation,
                      Reduction)

# the longest a generated number prints ("-1.23457e-05,"): bounds the response's size
BYTES_PER_NUMBER = 13


class ProblemsIn(StrictModel):
    seed: Integer(ge=0, le=2**64 - 1) = Field(0, description="PCG64 seed")
    input_size: PositiveInt | None = Field(None, description="D for dense inputs (default 3)")
    vocab_size: PositiveInt | None = Field(None, description="D when tokens is true")
    tokens: bool = Field(False, description="token inputs (one-hot of vocab_size) instead of dense")
    hidden_size: PositiveInt = Field(4, description="H")
    output_size: PositiveInt = Field(3, description="N")
    steps: PositiveInt = Field(5, description="T")
    hidden_activation: HiddenActivation = "tanh"
    output_activation: OutputActivation = "softmax"
    loss: LossName | None = Field(None, description="default follows output_activation")
    reduction: Reduction = "sum"
    weight_scale: Annotated[float, Field(gt=0, le=1000)] = Field(
        0.5, description="weights and biases are uniform in [−weight_scale, weight_scale)")
    score_last_step_only: bool = Field(False, description="every target but the last is null")
    cell: Cell = Field("rnn", description="rnn, lstm or gru (gated cells: hidden_activation tanh)")
    gru_reset: GruReset | None = Field(None, description="gru only: after (default) or before")
    batch_size: PositiveInt | None = Field(None, description="B: a batch of B sequences "
                                                             "(B×T×D inputs, B×T targets)")
    layer: bool = Field(False, description="a layer alone: a random upstream (∂L/∂h_t) instead of "
                                           "targets, no output layer, no loss")
    layout: LayoutName = Field("lecture", description=(
        "the problem written in this layout (the same numbers: pytorch puts b_h in bias_ih_l0 and "
        "zeros in bias_hh_l0, the gru's b_hn in bias_hh_l0's n block; coursera writes one sequence "
        "as a batch of one)"))

    def written(self, problem: dict) -> dict:
        """The generated (lecture) problem in the requested layout."""
        return layouts.write_problem(self.layout, problem)

    def spec_fields(self, limits: Limits, max_body_bytes: int) -> dict:
        """Keyword arguments for the engine's ProblemSpec, after the cross-field checks (422
        with pointers) and the size limits (413), so nothing is drawn for a bad body."""
        errors = []
        if self.tokens:
            if self.vocab_size is None:
                errors.append(("/vocab_size", "required when tokens is true", "depends"))
            if self.input_size is not None:
                errors.append(("/input_size", "give vocab_size, not input_size, when tokens is true", "depends"))
        elif self.vocab_size is not None:
            errors.append(("/vocab_size", "only with tokens: true (dense inputs take input_size)", "depends"))
        sent = self.model_fields_set
        errors += layouts.problem_rules(self.layout, self.cell, self.gru_reset, self.batch_size)
        if self.cell != "rnn" and self.hidden_activation != "tanh":
            errors.append(("/hidden_activation", f"the {self.cell} cell's activations are fixed (σ gates, "
                                                 "tanh); hidden_activation must be tanh or left out", "depends"))
        if self.gru_reset is not None and self.cell != "gru":
            errors.append(("/gru_reset", f"gru_reset applies to the gru cell only (cell is {self.cell})",
                           "depends"))
        if self.layer:
            for name in ("output_size", "output_activation", "loss", "reduction", "score_last_step_only"):
                if name in sent:
                    errors.append((f"/{name}", f"a layer alone (layer: true) has no output layer, "
                                               f"targets or loss: leave {name} out", "depends"))
        loss = self.loss or DEFAULT_LOSS[self.output_activation]
        if loss in LOSS_NEEDS and LOSS_NEEDS[loss] != self.output_activation:
            errors.append(("/loss", f"{loss} needs output_activation {LOSS_NEEDS[loss]}, "
                                    f"got {self.output_activation}", "loss_activation"))
        if errors:
            raise RequestInvalid(errors)
        D = (self.vocab_size if self.tokens else self.input_size) or 3
        where_D = "/vocab_size" if self.tokens else "/input_size"
        for value, limit, what, where in ((self.steps, limits.max_T, "steps (T)", "/steps"),
                                          (self.hidden_size, limits.max_H, "hidden_size (H)", "/hidden_size"),
                                          (D, limits.max_D, "the input size (D)", where_D),
                                          (self.output_size, limits.max_N, "output_size (N)", "/output_size")):
            check_limit(value, limit, what, where)
        fields = dict(seed=self.seed, input_size=D, tokens=self.tokens, hidden_size=self.hidden_size,
                      output_size=self.output_size, steps=self.steps,
                      hidden_activation=self.hidden_activation,
                      output_activation=self.output_activation, loss=loss, reduction=self.reduction,
                      weight_scale=self.weight_scale, score_last_step_only=self.score_last_step_only,
                      cell=self.cell, gru_reset=self.gru_reset, batch_size=self.batch_size,
                      layer=self.layer)
        if self.batch_size is not None:
            check_limit(self.batch_size, limits.max_B, "batch_size (B)", "/batch_size")
        H, N, T, G, B = self.hidden_size, self.output_size, self.steps, GATES[self.cell], self.batch_size or 1
        head = 0 if self.layer else N * H + N
        per_step = (1 if self.tokens else D) + (H if self.layer else N)
        numbers = G * H * (D + H + 1) + (H if self.cell == "gru" else 0) + head + B * T * per_step
        if self.layout == "pytorch":              # bias_hh_l0 is written out too (zeros, and b_hn)
            numbers += G * H - (H if self.cell == "gru" else 0)
        if numbers * BYTES_PER_NUMBER > max_body_bytes:
            raise LimitExceeded(
                f"the problem would hold {numbers:,} numbers (about {numbers * BYTES_PER_NUMBER:,} "
                f"bytes), more than a request body may carry ({max_body_bytes:,} bytes), so no "
                f"endpoint could take it back; ask for smaller sizes", code="problem_size_limit")
        return fields
