"""Response models. Built with model_construct from numpy arrays (already computed and
checked, so not validated again) and serialised by orjson; they also document the shapes.
The compute endpoints skip even model_construct: `shallow` gives the same dict straight
from the models' field lists."""
from __future__ import annotations

import numpy as np
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


# --- the bodies of /v1/forward and /v1/gradients, from the engine's arrays ---

def step_list(values, scored):
    """Per-step losses (T, or B × T) as lists with null on unscored steps (Python floats)."""
    if values is None:
        return None
    if scored is None or scored.all():
        return values.tolist()
    if values.ndim == 2:
        return [step_list(v, s) for v, s in zip(values, scored)]
    return [v if s else None for v, s in zip(values.tolist(), scored.tolist())]


def forward_body(out, scored) -> dict:
    """`out`: the engine's outputs (hidden, cell, outputs, step_losses, loss) in the problem's
    shapes; `cell` only for the lstm."""
    body = {"outputs": out.outputs, "hidden": out.hidden}
    if out.cell is not None:
        body["cell"] = out.cell
    T = out.hidden.shape[-2]
    lead = out.hidden.shape[:-2]
    body["loss"] = out.loss
    body["step_losses"] = step_list(out.step_losses, scored) if out.step_losses is not None \
        else (np.full((*lead, T), None).tolist())
    return body


def lower_triangle(J: np.ndarray) -> list:
    """Jacobian norms T × T (or B × T × T) as lists, null for k > t (NaN in the engine)."""
    if J.ndim == 3:
        return [lower_triangle(j) for j in J]
    return [[None if k > t else float(v) for k, v in enumerate(row)] for t, row in enumerate(J)]


def gradients_body(out, grads: dict, bptt, scored, optional=("b_h_terms", "jacobian_norms")) -> dict:
    """The forward fields, `gradients` in the canonical order of names, and `bptt`."""
    body = forward_body(out, scored)
    body["gradients"] = {name: grads[name] for name in GRADIENT_ORDER if name in grads}
    diagnostics = {"b_h_by_step": bptt.b_h_by_step, "hidden_grad_norms": bptt.hidden_grad_norms}
    if bptt.b_h_terms is not None:
        diagnostics["b_h_terms"] = bptt.b_h_terms
    if bptt.jacobian_norms is not None:
        diagnostics["jacobian_norms"] = lower_triangle(bptt.jacobian_norms)
    body["bptt"] = diagnostics
    return body


GRADIENT_ORDER = ("V", "W", "U", "b_h", "b_y", "h_init", "b_hn", "c_init", "inputs")
