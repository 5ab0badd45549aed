"""POST /v1/problems: the body that describes a seeded random problem."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import PositiveInt, StrictModel, check_limit
from .errors import LimitExceeded, RequestInvalid
from .limits import Limits
from .problem import DEFAULT_LOSS, LOSS_NEEDS, HiddenActivation, LossName, OutputActivation, Reduction

# the longest a generated number prints ("-1.23457e-05,"): bounds the response's size
BYTES_PER_NUMBER = 13


class ProblemsIn(StrictModel):
    seed: Annotated[int, Field(ge=0, le=2**64 - 1)] = Field(0, description="PCG64 seed")
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

    def spec_fields(self, limits: Limits, max_body_bytes: int) -> dict:
        """Keyword arguments for the engine's ProblemSpec, after the cross-field checks (422
        with pointers) and the size limits (413), so nothing is drawn for a bad body."""
        errors = []
        if self.tokens:
            if self.vocab_size is None:
                errors.append(("/vocab_size", "required when tokens is true"))
            if self.input_size is not None:
                errors.append(("/input_size", "give vocab_size, not input_size, when tokens is true"))
        elif self.vocab_size is not None:
            errors.append(("/vocab_size", "only with tokens: true (dense inputs take input_size)"))
        loss = self.loss or DEFAULT_LOSS[self.output_activation]
        if loss in LOSS_NEEDS and LOSS_NEEDS[loss] != self.output_activation:
            errors.append(("/loss", f"{loss} needs output_activation {LOSS_NEEDS[loss]}, "
                                    f"got {self.output_activation}"))
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
                      weight_scale=self.weight_scale, score_last_step_only=self.score_last_step_only)
        H, N, T = self.hidden_size, self.output_size, self.steps
        numbers = H * D + H * H + N * H + H + N + (T if self.tokens else T * D) + T * N
        if numbers * BYTES_PER_NUMBER > max_body_bytes:
            raise LimitExceeded(
                f"the problem would hold {numbers:,} numbers (about {numbers * BYTES_PER_NUMBER:,} "
                f"bytes), more than a request body may carry ({max_body_bytes:,} bytes), so no "
                f"endpoint could take it back; ask for smaller sizes")
        return fields
