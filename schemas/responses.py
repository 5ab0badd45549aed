"""Response models. Built with model_construct from numpy arrays (already computed and
checked, so not validated again) and serialised by orjson; they also document the shapes.
The compute endpoints skip even model_construct: `shallow` gives the same dict straight
from the models' field lists."""
from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from .base import Matrix, Vector


class ForwardOut(BaseModel):
    outputs: Matrix = Field(description="T×N: ŷ_t = f_y(U h_t + b_y)")
    hidden: Matrix = Field(description="T×H: h_t")
    loss: float | None = Field(description="L, or null without targets")
    step_losses: list[float | None] = Field(description="L_t (reduction applied), null where unscored")


class GradientsOut(BaseModel):
    V: Matrix
    W: Matrix
    U: Matrix
    b_h: Vector
    b_y: Vector
    h_init: Vector


class BPTTOut(BaseModel):
    b_h_by_step: Matrix = Field(description="T×H: row t is ∂L_t/∂b_h; rows sum to gradients.b_h")
    hidden_grad_norms: Vector = Field(description="T: ‖∂L/∂h_t‖₂ (total derivative)")
    b_h_terms: list[Matrix] | None = Field(None, description="T×T×H, only if included")
    jacobian_norms: list[list[float | None]] | None = Field(
        None, description="T×T, only if included; null for k > t")


class GradientsResponse(ForwardOut):
    gradients: GradientsOut
    bptt: BPTTOut


_FIELDS: dict[type, tuple] = {}


def shallow(model: type[BaseModel], values: dict, exclude_none_fields: tuple[str, ...] = ()) -> dict:
    """The dict of model.model_construct(**values)'s fields, without constructing the model
    (~10 µs per model on a small request): the model's fields in order, defaults for fields
    not given, keys that are not fields ignored. Nested models are passed as dicts already
    built this way."""
    fields = _FIELDS.get(model)
    if fields is None:
        fields = _FIELDS[model] = tuple(model.model_fields.items())
    out = {}
    for name, field in fields:
        value = values[name] if name in values else field.get_default(call_default_factory=True)
        if value is PydanticUndefined:
            raise TypeError(f"{model.__name__}.{name} is required")
        if value is None and name in exclude_none_fields:
            continue
        out[name] = value
    return out
