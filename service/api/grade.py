"""POST /v1/grade (a submission checked against the reference) and POST /v1/problems."""
from __future__ import annotations

import dataclasses

import numpy as np
from flask import Blueprint, current_app

from schemas.grade import GradeIn, grade_items
from schemas.problems import ProblemsIn

from ..engine import grade as grading
from ..engine import evaluate, problems
from .common import body, check_work, engine_problem, ensure_finite, limits

bp = Blueprint("grade", __name__)


@bp.post("/v1/grade")
def grade():
    req = body(GradeIn)
    problem = engine_problem(req.arrays(limits()))
    submitted = req.submitted(batched=problem.batched)
    lim = limits()
    check_work(evaluate.estimate_work(problem), "send a shorter sequence (or a smaller batch)", lim)
    tol = req.tolerance
    items = grade_items(req, submitted)          # a layout's own names and shapes (else None)
    wanted = set(submitted) if items is None else {f for item in items for f in item[1]}
    with np.errstate(all="ignore"):
        expected = grading.reference(problem, [f for f in grading.FIELDS if f in wanted])
        ensure_finite(**{k: v for k, v in expected[1].items() if v is not None})
        result = grading.grade(problem, submitted, tol.rtol, tol.atol, lim.max_bptt_terms,
                               lim.max_work, expected=expected) if items is None else \
            grading.grade_mapped(problem, items, tol.rtol, tol.atol, lim.max_bptt_terms, lim.max_work,
                                 expected=expected)
    if req.format == "gradescope":
        return grading.gradescope(result)
    if req.format == "prairielearn":
        return grading.prairielearn(result)
    return {"passed": result.passed, "score": result.score,
            "checks": [check_json(c) for c in result.checks]}


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
    return req.written(problems.generate(spec))
