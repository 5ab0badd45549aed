"""Response models, which document the shapes (openapi.yaml states them too), and the bodies
of /v1/forward and /v1/gradients built as plain dicts straight from the engine's arrays
(already computed and checked, so not validated again) and serialised by orjson."""
from __future__ import annotations

import numpy as np
from typing import Union

from pydantic import BaseModel, Field

from .base import Matrix, Vector


Sequence = Union[Matrix, list[Matrix]]          # T×F, or B×T×F for a batch


class ForwardOut(BaseModel):
    outputs: Sequence | None = Field(description="T×N (B×T×N): ŷ_t = f_y(U h_t + b_y); null "
                                                 "without an output layer")
    hidden: Sequence = Field(description="T×H (B×T×H): h_t")
    cell: Sequence | None = Field(None, description="lstm only: c_t, the shape of hidden")
    loss: float | None = Field(description="L, or null without targets")
    step_losses: list[float | None] | list[list[float | None]] = Field(
        description="T (B×T): the unreduced L_t (PyTorch's reduction='none'), null where unscored; "
                    "in layer mode ⟨upstream_t, h_t⟩")


class GradientsOut(BaseModel):
    """dL/dθ in the shapes sent; U and b_y absent in layer mode."""
    V: Matrix
    W: Matrix
    U: Matrix | None = None
    b_h: Vector
    b_y: Vector | None = None
    h_init: Vector | Matrix = Field(description="H, or B×H when one state per sequence was sent")
    b_hn: Vector | None = Field(None, description="gru with gru_reset after")
    c_init: Vector | Matrix | None = Field(None, description="lstm: the shape of h_init")
    inputs: Sequence | None = Field(None, description="dense inputs: ∂L/∂x_t, the shape of inputs")


class BPTTOut(BaseModel):
    b_h_by_step: Matrix = Field(description="T×G·H: row t is ∂L_t/∂b_h (summed over a batch); "
                                            "rows sum to gradients.b_h")
    hidden_grad_norms: Vector | Matrix = Field(
        description="T (B×T): ‖∂L/∂s_t‖₂ of the state s_t (h_t; [h_t; c_t] for the lstm), the "
                    "total derivative")
    b_h_terms: list[Matrix] | None = Field(None, description="T×T×G·H, only if included")
    jacobian_norms: list[list[float | None]] | list[list[list[float | None]]] | None = Field(
        None, description="T×T (B×T×T), only if included; null for k > t")


class GradientsResponse(ForwardOut):
    gradients: GradientsOut
    bptt: BPTTOut


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
