"""POST /v1/gradcheck: the problem object plus `check` options, and the report it returns."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from .base import Integer, StrictModel
from . import layouts
from .errors import RequestInvalid
from .problem import ParameterName, ProblemIn

# the names gradcheck takes in a layout other than the lecture's (each layout checks its own)
CheckedName = Literal[tuple(dict.fromkeys(ParameterName.__args__ + tuple(
    n for lay in layouts.LAYOUTS.values() if lay.name != "lecture" for c in lay.cells
    for n in lay.fields(c))))]

Method = Literal["central", "forward", "complex_step", "richardson", "taylor"]
Mode = Literal["full", "sample", "directional"]
NonNegative = Annotated[float, Field(ge=0)]
MAX_SAMPLES = 1_000_000


class CheckOptions(StrictModel):
    method: Method = Field("central", description=(
        "central (L(θ+ε)−L(θ−ε))/2ε; forward (L(θ+ε)−L(θ))/ε; complex_step Im L(θ+iε)/ε; "
        "richardson: central at ε, ε/2, ε/4 extrapolated, with an error estimate; taylor: "
        "remainders |L(θ+hu)−L(θ)−h·gᵀu| for h = ε … ε/16, reporting convergence_order"))
    eps: float | None = Field(None, gt=0, description=(
        "step size; default per method: central 1e-6, forward 1e-7, complex_step 1e-20, "
        "richardson 1e-3 (first of ε, ε/2, ε/4), taylor 1e-2 (first of five halvings)"))
    mode: Mode = Field("full", description=(
        "full: every element; sample: `samples` random elements per parameter; directional: "
        "`samples` random unit directions per parameter"))
    samples: Integer(ge=1, le=MAX_SAMPLES) = Field(10, description="for sample and directional")
    seed: Integer(ge=0, le=2 ** 63 - 1) = Field(0, description=(
        "for sample and directional: parameter number k in (V, W, U, b_h, b_y, h_init, b_hn, c_init, inputs) draws "
        "from numpy.random.default_rng([seed, k])"))
    parameters: list[CheckedName] | None = Field(None, min_length=1, description=(
        "the parameters to check, each named once: any of V, W, U, b_h, b_y, h_init, b_hn, "
        "c_init, inputs that the problem has (default: all it has; U and b_y only with an "
        "output layer outside layer mode, c_init for the lstm, b_hn for the gru with "
        "gru_reset after, inputs with dense inputs); in another layout, that layout's weight "
        "names (e.g. Wx, Wh, b) and h_init, c_init, inputs"))
    rtol: NonNegative = Field(1e-5, description="an item passes if |a − n| ≤ atol + rtol·|n|")
    atol: NonNegative = Field(1e-8)

    @field_validator("parameters")
    @classmethod
    def _unique(cls, names):
        if names is not None and len(set(names)) != len(names):
            raise PydanticCustomError("unique", "each parameter may be named once")
        return names


class GradcheckIn(ProblemIn):
    check: CheckOptions = Field(default_factory=CheckOptions)

    def checked_parameters(self, has: dict) -> tuple[str, ...]:
        """The canonical parameters to check (`has`: the problem's, name -> shape, in the
        canonical order); 422 at /check/parameters/i for a name the problem does not have."""
        asked = self.check.parameters
        if self._layout_ctx is not None:
            return layouts.check_parameters(layouts.LAYOUTS[self.layout], self.model.cell, self._layout_ctx,
                                            asked, has)[1]
        absent = [(i, n) for i, n in enumerate(asked or ()) if n not in has]
        if absent:
            raise RequestInvalid([(f"/check/parameters/{i}", f"this problem has no {n}: its parameters "
                                                             f"are {', '.join(has)}", "parameter_absent")
                                  for i, n in absent])
        return tuple(n for n in has if asked is None or n in asked)

    def repeats(self, has: dict) -> int:
        """How many times over a canonical parameter's sampled elements or directions may be
        checked: in a layout, sample and directional modes draw for each of the caller's arrays,
        and several may share a canonical parameter (Coursera's Wf, Wi, Wc, Wo all touch W and V;
        PyTorch's two biases b_h). 1 in the lecture's layout and in full mode."""
        if self._layout_ctx is None or self.check.mode == "full":
            return 1
        layout, cell = layouts.LAYOUTS[self.layout], self.model.cell
        names = layouts.check_parameters(layout, cell, self._layout_ctx, self.check.parameters, has)[0]
        count: dict = {}
        for n in names:
            for c in set(layouts.index_map(layout, cell, n, self._layout_ctx, has)[0].ravel()):
                count[c] = count.get(c, 0) + 1
        return max(count.values(), default=1)

    def selections(self, has: dict) -> dict | None:
        """In a layout: each of the caller's arrays to check as a selection of canonical
        elements or directions (service.engine.gradcheck_items); None in the lecture's."""
        if self._layout_ctx is None:
            return None
        layout, c = layouts.LAYOUTS[self.layout], self.check
        names = layouts.check_parameters(layout, self.model.cell, self._layout_ctx, c.parameters, has)[0]
        return layouts.selections(layout, self.model.cell, self._layout_ctx, names, has, c.mode, c.samples, c.seed)


# --- response (built with model_construct) ---

class ParameterCheck(BaseModel):
    passed: bool
    checked: int = Field(description="elements (full, sample) or directions (directional) checked")
    failed: int = Field(description="how many of them are outside the tolerance")
    max_abs_error: float = Field(description="max |a − n|")
    max_rel_error: float = Field(description="max |a − n| / max(|a|, |n|), 0 where both are 0")
    worst_index: list[int] = Field(description=(
        "the item furthest past its tolerance: the element's index ([i, j] or [i]), or "
        "[k] for direction number k"))
    analytic_at_worst: float
    numerical_at_worst: float
    error_estimate: float | None = Field(description=(
        "richardson only: the largest estimated error of a numerical derivative"))
    convergence_order: float | None = Field(description=(
        "taylor only: median observed order of the remainder (2 for a correct gradient, 1 for "
        "a wrong one); null when the loss does not measurably change"))


class GradcheckOut(BaseModel):
    passed: bool
    method: Method
    mode: Mode
    eps: float = Field(description="the step used (the default for the method unless given)")
    rtol: float
    atol: float
    samples: int | None = Field(description="null in full mode")
    seed: int | None = Field(description="null in full mode")
    evaluations: int = Field(description="loss evaluations: the base model plus every perturbed one")
    convergence_order: float | None = Field(description="taylor only: median over parameters")
    parameters: dict[CheckedName, ParameterCheck] = Field(
        description="per parameter, in the request's layout's names")
