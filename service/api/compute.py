"""POST /v1/forward and POST /v1/gradients."""
from __future__ import annotations

import numpy as np
from flask import Blueprint

from schemas.errors import LimitExceeded
from schemas.limits import Limits
from schemas.problem import ForwardIn, GradientsIn
from schemas.responses import forward_body, gradients_body

from ..engine import evaluate
from ..engine.problem import Problem
from .common import body, check_work, engine_problem, ensure_finite, limits

bp = Blueprint("compute", __name__)


@bp.post("/v1/forward")
def forward():
    req, lim = body(ForwardIn), limits()
    problem = engine_problem(req.arrays(lim, targets_required=False))
    check_work(evaluate.forward_work(problem), "send a shorter sequence or a smaller model", lim)
    with np.errstate(all="ignore"):
        out = evaluate.forward(problem)
    ensure_finite(**vars(out))
    return req.respond(forward_body(out, problem.scored))


def check_gradients_work(req: GradientsIn, p: Problem, lim: Limits) -> None:
    numbers = evaluate.bptt_numbers(p, tuple(req.include))
    if numbers > lim.max_bptt_terms:
        raise LimitExceeded(f"include {req.include} needs {numbers:,} numbers (T²·G·H for b_h_terms, "
                            f"B·T² for jacobian_norms), over the limit of {lim.max_bptt_terms:,}",
                            "/include", code="bptt_terms_limit")
    check_work(evaluate.estimate_work(p, req.truncate, tuple(req.include)),
               "drop include, set truncate, or send a shorter sequence", lim)


@bp.post("/v1/gradients")
def gradients():
    req, lim = body(GradientsIn), limits()
    problem = engine_problem(req.arrays(lim))
    check_gradients_work(req, problem, lim)
    with np.errstate(all="ignore"):
        out, grads, bptt = evaluate.gradients(problem, req.truncate, tuple(req.include))
    jacobians = bptt.jacobian_norms
    # one finiteness check over everything returned; Jacobian norms are NaN above the diagonal
    ensure_finite(**vars(out), **{f"gradients.{k}": v for k, v in grads.items()},
                  **{f"bptt.{k}": v for k, v in vars(bptt).items() if k != "jacobian_norms"},
                  **({} if jacobians is None else
                     {"bptt.jacobian_norms": np.where(np.tri(problem.T, dtype=bool), jacobians, 0.0)}))
    return req.respond(gradients_body(out, grads, bptt, problem.scored))
