"""POST /v1/grade (a submission checked against the reference) and POST /v1/problems."""
from __future__ import annotations

import dataclasses

import numpy as np
from flask import Blueprint, current_app

from schemas.errors import RequestInvalid
from schemas.grade import GradeIn
from schemas.problems import ProblemsIn

from ..engine import grade as grading
from ..engine import problems, rnn
from .common import body, check_work, engine_problem, ensure_finite, limits

bp = Blueprint("grade", __name__)


@bp.post("/v1/grade")
def grade():
    req = body(GradeIn)
    problem = engine_problem(req.arrays(limits()))
    refuse_ungradable(problem)
    submitted = req.submitted()
    lim = limits()
    check_work(rnn.estimate_work(problem.T, problem.H, problem.D, problem.N,
                                 dense_inputs=problem.inputs is not None),
               "send a shorter sequence", lim)
    tol = req.tolerance
    with np.errstate(all="ignore"):
        expected = grading.reference(problem, [f for f in grading.FIELDS if f in submitted])
        ensure_finite(**expected[1])
        result = grading.grade(problem, submitted, tol.rtol, tol.atol, lim.max_bptt_terms,
                               lim.max_work, expected=expected)
    if req.format == "gradescope":
        return grading.gradescope(result)
    return {"passed": result.passed, "score": result.score,
            "checks": [check_json(c) for c in result.checks]}


def refuse_ungradable(p) -> None:
    """The diagnoses know the lecture's cell on one sequence; anything else is a clear 422
    until grading covers it, never a wrong verdict."""
    where = [("/model/cell", f"grading the {p.cell} cell is not supported yet: use /v1/gradients "
                             "and compare, or the lecture's rnn") if p.cell != "rnn" else None,
             ("/inputs" if p.inputs is not None else "/tokens",
              "grading a batch is not supported yet: send one sequence") if p.batched else None]
    errors = [(w, d, "not_gradable") for w, d in filter(None, where)]
    if errors:
        raise RequestInvalid(errors)


def check_json(check: grading.Check) -> dict:
    """A check as GradeOut documents it: `window` and `factor` only on the diagnosis that has them."""
    out = dataclasses.asdict(check)
    if out["diagnosis"]:
        out["diagnosis"] = {k: v for k, v in out["diagnosis"].items() if v is not None}
    return out


@bp.post("/v1/problems")
def make_problem():
    req = body(ProblemsIn)
    spec = problems.ProblemSpec(**req.spec_fields(limits(), current_app.config["MAX_CONTENT_LENGTH"]))
    return problems.generate(spec)
