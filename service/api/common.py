"""What every compute view shares: read the body, build the engine's problem, refuse
non-finite results."""
from __future__ import annotations

from time import perf_counter

import numpy as np
import orjson
from flask import current_app, g, has_request_context, request
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from schemas.base import parse
from schemas.errors import RequestInvalid, WorkBudgetExceeded
from schemas.limits import Limits

from .. import config, observability
from ..engine.problem import Problem, Weights


def body(model):
    """The request body validated as `model` (415 unless JSON, 413 over the body limit)."""
    req = request._get_current_object()          # one context lookup, not one per attribute
    mime = req.mimetype or ""
    if not (mime == "application/json" or mime.endswith("+json")):
        raise UnsupportedMediaType(f"send the body as application/json, not {mime or 'nothing'}")
    data = req.get_data(cache=False)
    _refuse_cut_body(req, data)
    # schemas.base.parse's fast road (orjson, then the model in Python mode) taken here, so
    # that Server-Timing can tell parsing from validating; anything either refuses goes on to
    # parse()'s own slow road (validate_json), whose errors are the ones reported, as before
    ctx = g._get_current_object()
    ctx.parse_started = perf_counter()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return parse(model, data, fast_road=False)
    ctx.parsed = perf_counter()
    try:
        return model.model_validate(obj)
    except ValidationError:
        return parse(model, data, fast_road=False)


def _refuse_cut_body(req, data: bytes) -> None:
    """A body without Content-Length (chunked) is cut at the limit by werkzeug without an
    error: one more byte on the wire means it was over the limit, a 413, not a 400 for the
    cut JSON."""
    if req.content_length is not None:
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and len(data) >= limit:
        if req.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()


def limits():
    """The app's limits, built from its config at the first request that asks (a config
    changed after that is not seen: set limits before serving)."""
    ext = current_app.extensions
    found = ext.get("rnn.limits")
    if found is None:
        found = ext["rnn.limits"] = config.limits(current_app.config)
    return found


def engine_problem(fields: dict) -> Problem:
    """The engine's problem from the schemas' validated fields."""
    problem = Problem(weights=Weights(**fields["weights"]),
                      **{k: v for k, v in fields.items() if k != "weights"})
    if has_request_context():        # sizes for the access log and the metrics
        sizes = {"T": problem.T, "H": problem.H, "D": problem.D, "N": problem.N or 0}
        if problem.batched:
            sizes["B"] = problem.B
        observability.mark_compute_start(sizes)
    return problem


def ensure_finite(**results) -> None:
    """422 naming the first non-finite entry: a result that overflowed float64."""
    if _finite_sum(results.values()):
        return
    for name, value in results.items():
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            index = np.unravel_index(int(np.argmax(bad)), arr.shape) if arr.ndim else ()
            at = name + "".join(f"[{int(i)}]" for i in index)
            raise RequestInvalid([("/model/weights",
                                   f"the result overflowed: {at} is not finite in float64; "
                                   "smaller weights, inputs or a shorter sequence would fit", "overflow")])


_CONCATENATE_UP_TO = 1 << 16          # elements: past this one sum per array, no copy


def _finite_sum(values) -> bool:
    """Fast path: a finite sum of every entry means every entry is finite (an overflowing
    sum of finite entries only costs the exact check). Small float arrays are summed as one
    concatenation: one numpy reduction instead of one per array (~2 µs each)."""
    arrays, total = [], 0.0
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for v in values:
                if type(v) is np.ndarray and v.dtype == np.float64:
                    arrays.append(v)
                elif v is not None:
                    total += float(v) if isinstance(v, float) else float(np.sum(v))
            if arrays and sum(v.size for v in arrays) <= _CONCATENATE_UP_TO:
                total += float(np.add.reduce(np.concatenate(arrays, axis=None)))
            else:
                total += sum(float(v.sum()) for v in arrays)
        return total - total == 0.0
    except (TypeError, ValueError):
        return False


def check_work(work: float, advice: str, lim: Limits | None = None) -> None:
    """422 before any work when the estimate is over the budget that keeps a request far
    inside the worker timeout (a forward pass alone can be minutes at the size limits)."""
    budget = (lim or limits()).max_work
    if has_request_context():
        observability.mark_work(work)
    if work > budget:
        raise WorkBudgetExceeded(f"this request needs about {work:.3g} multiply-adds, over the "
                                 f"budget of {budget:.3g}; {advice}")
