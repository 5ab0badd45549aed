"""POST /v1/forward and POST /v1/gradients."""
from __future__ import annotations

import numpy as np
from flask import Blueprint

from schemas.errors import LimitExceeded
from schemas.problem import ForwardIn, GradientsIn
from schemas.limits import Limits
from schemas.responses import BPTTOut, ForwardOut, GradientsOut, GradientsResponse, shallow

from ..engine import rnn
from .common import body, check_work, engine_problem, ensure_finite, limits, step_list

bp = Blueprint("compute", __name__)


def forward_results(cache: rnn.Cache) -> dict:
    return {"outputs": cache.yhat, "hidden": cache.h, "loss": cache.loss}


def forward_fields(cache: rnn.Cache, checked: bool = False) -> dict:
    p = cache.problem
    if not checked:
        ensure_finite(**forward_results(cache))
    return dict(outputs=cache.yhat, hidden=cache.h,
                loss=None if cache.loss is None else float(cache.loss),
                step_losses=step_list(cache.step_losses, p.scored) if p.has_loss else [None] * p.T)


def forward_work(p: rnn.Problem) -> float:
    """Multiply-adds of one forward pass: W h, U h and V x (a column of V for tokens) per step."""
    return float(p.T * (p.H * p.H + p.N * p.H + (p.D * p.H if p.inputs is not None else p.H)))


@bp.post("/v1/forward")
def forward():
    req, lim = body(ForwardIn), limits()
    problem = engine_problem(req.arrays(lim, targets_required=False))
    check_work(forward_work(problem), "send a shorter sequence or a smaller model", lim)
    with np.errstate(all="ignore"):
        cache = rnn.forward(problem)
    return shallow(ForwardOut, forward_fields(cache))


def check_gradients_work(req: GradientsIn, p: rnn.Problem, lim: Limits) -> None:
    if req.include and p.T * p.T * p.H > lim.max_bptt_terms:
        raise LimitExceeded(f"include {req.include} needs T²·H = {p.T * p.T * p.H:,} numbers, "
                            f"over the limit of {lim.max_bptt_terms:,}", "/include")
    check_work(rnn.estimate_work(p.T, p.H, p.D, p.N, truncate=req.truncate,
                                 include=tuple(req.include), dense_inputs=p.inputs is not None),
               "drop include, set truncate, or send a shorter sequence", lim)


@bp.post("/v1/gradients")
def gradients():
    req, lim = body(GradientsIn), limits()
    problem = engine_problem(req.arrays(lim))
    check_gradients_work(req, problem, lim)
    with np.errstate(all="ignore"):
        cache = rnn.forward(problem)
        grads, bptt = rnn.backward_with_diagnostics(cache, req.truncate, tuple(req.include))
    # one finiteness check over everything returned (one summation, not one per group)
    ensure_finite(**forward_results(cache),
                  **{f"gradients.{k}": v for k, v in grads.as_dict().items()},
                  **{f"bptt.{k}": v for k, v in vars(bptt).items() if k != "jacobian_norms"})
    fields = forward_fields(cache, checked=True)
    if bptt.jacobian_norms is not None:
        lower = np.tri(problem.T, dtype=bool)          # entries with k > t are null, not NaN
        ensure_finite(**{"bptt.jacobian_norms": np.where(lower, bptt.jacobian_norms, 0.0)})
        bptt.jacobian_norms = [[None if k > t else float(v) for k, v in enumerate(row)]
                               for t, row in enumerate(bptt.jacobian_norms)]
    optional = ("b_h_terms", "jacobian_norms")
    return shallow(GradientsResponse, {**fields, "gradients": shallow(GradientsOut, grads.as_dict()),
                                       "bptt": shallow(BPTTOut, vars(bptt), optional)}, optional)
