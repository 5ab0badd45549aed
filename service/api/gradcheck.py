"""POST /v1/gradcheck: numerical derivatives against the analytic BPTT gradients."""
from __future__ import annotations

import dataclasses

from flask import Blueprint, current_app

from schemas.errors import RequestInvalid, WorkBudgetExceeded
from schemas.gradcheck import GradcheckIn

from ..engine import gradcheck as gc
from ..engine import gradcheck_cells, gradcheck_items
from ..engine import evaluate
from ..engine.problem import Problem
from .. import observability
from .common import body, engine_problem, limits

bp = Blueprint("gradcheck", __name__)


def spec_of(req: GradcheckIn, problem: Problem) -> gc.CheckSpec:
    """The check as the engine takes it; `parameters` defaults to all the problem has."""
    c = req.check
    names = req.checked_parameters(evaluate.parameter_shapes(problem))   # canonical order
    return gc.CheckSpec(method=c.method, mode=c.mode, eps=c.eps, samples=c.samples, seed=c.seed,
                        parameters=names, rtol=c.rtol, atol=c.atol)


def check_budget(sizes: gradcheck_cells.CellSizes, spec: gc.CheckSpec, repeats: int = 1) -> None:
    """422 before any work when the estimated work is over RNN_GRADCHECK_MAX_WORK (`repeats`:
    how many times over a parameter's samples or directions may be checked)."""
    budget = current_app.config["GRADCHECK_MAX_WORK"]
    work, evaluations = gc.estimate(sizes, spec)
    work, evaluations = work * repeats, evaluations * repeats
    observability.mark_work(work)
    if work > budget:
        raise WorkBudgetExceeded(
            f"this check needs {evaluations:,} loss evaluations, about {work:.3g} multiply-adds, "
            f"over the budget of {budget:.3g}; what would fit: {gc.what_fits(sizes, spec, budget)}",
            "/check/mode" if spec.mode == "full" else "/check/samples")


@bp.post("/v1/gradcheck")
def gradcheck():
    req = body(GradcheckIn)
    problem = engine_problem(req.arrays(limits()))
    spec = spec_of(req, problem)
    check_budget(gradcheck_cells.CellSizes.of(problem), spec, req.repeats(evaluate.parameter_shapes(problem)))
    try:
        selections = req.selections(evaluate.parameter_shapes(problem))
        report = gradcheck_cells.gradcheck(problem, spec) if selections is None else \
            gradcheck_items.gradcheck(problem, spec, selections)
    except gc.NonFiniteLoss as e:
        if e.parameter is None:
            raise RequestInvalid([("/model/weights", "the loss or its gradient overflowed float64; "
                                   "smaller weights, inputs or a shorter sequence would fit",
                                   "overflow")]) from None
        raise RequestInvalid([("/check/eps", f"with eps {spec.step:g} a numerical derivative of "
                               f"{e.parameter} is not finite in float64; use a step nearer the "
                               f"default for {spec.method}", "overflow")]) from None
    return dataclasses.asdict(report)
