"""/v1/forward and /v1/gradients through the Flask test client: every success and error class
of the contract, exact JSON Pointers, problem+json on every error, exact float round-trips,
and every number of a response against an independent autograd (tests/reference.py)."""
import dataclasses
import io
import json

import numpy as np
import pytest

import reference as ref
from schemas.problem import GradientsIn
from service import create_app
from service.api.common import engine_problem
from service.config import limits
from service.engine import rnn

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def post(client, path, body, headers=None):
    """POST a dict as JSON, or a str/bytes body as it is, with content type application/json."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", headers=headers or {})


def assert_problem(r, status, pointer=None):
    """An RFC 9457 problem with the status, a request id, and (for 422) the pointer listed."""
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    body = json.loads(r.get_data(as_text=True))
    assert PROBLEM_KEYS <= set(body), body
    assert body["status"] == status and body["detail"]
    assert r.headers.get("X-Request-ID")
    text = r.get_data(as_text=True)
    assert "Traceback" not in text and "NaN" not in text and "Infinity" not in text
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body
    return body


def client_with(**config):
    return create_app({"TESTING": True, **config}).test_client()


# --- 200 ---

@pytest.mark.parametrize("tokens", [True, False])
def test_forward_with_targets(client, tokens):
    spec, p = ref.random_problem(1, tokens=tokens, null_targets=True)
    r = post(client, "/v1/forward", ref.body(spec, p))
    assert r.status_code == 200 and r.mimetype == "application/json"
    out, mine = r.json, ref.run(spec, p)
    assert set(out) == {"outputs", "hidden", "loss", "step_losses"}
    assert ref.scaled_error(out["outputs"], mine["yhat"]) < 1e-14
    assert ref.scaled_error(out["hidden"], mine["h"]) < 1e-14
    assert out["loss"] == pytest.approx(mine["L"], rel=1e-14)
    assert [s is None for s in out["step_losses"]] == [y is None for y in spec.targets]


@pytest.mark.parametrize("tokens", [True, False])
def test_forward_without_targets_has_a_null_loss(client, tokens):
    spec, p = ref.random_problem(2, tokens=tokens, h_init=False)
    r = post(client, "/v1/forward", ref.body(spec, p, with_h_init=False, with_targets=False))
    assert r.status_code == 200
    assert r.json["loss"] is None and r.json["step_losses"] == [None] * spec.T
    assert ref.scaled_error(r.json["hidden"], ref.run(spec, p)["h"]) < 1e-14


@pytest.mark.parametrize("tokens", [True, False])
def test_gradients_answer_with_every_field(client, tokens):
    spec, p = ref.random_problem(3, tokens=tokens, output="sigmoid", loss="binary_cross_entropy")
    r = post(client, "/v1/gradients", {**ref.body(spec, p), "include": ["b_h_terms", "jacobian_norms"]})
    assert r.status_code == 200
    g = r.json
    expected = {k: p[k].shape for k in ref.PARAMS}
    if not tokens:                       # v1.1: dL/dx_t for dense inputs
        expected["inputs"] = spec.inputs.shape
        dx = ref.complex_step(lambda x: ref.run(dataclasses.replace(spec, inputs=x), p)["L"], spec.inputs)
        assert ref.scaled_error(g["gradients"]["inputs"], dx) < 1e-12
    assert {k: np.shape(v) for k, v in g["gradients"].items()} == expected
    assert np.shape(g["bptt"]["b_h_by_step"]) == (4, 3)
    assert np.shape(g["bptt"]["hidden_grad_norms"]) == (4,)
    assert np.shape(g["bptt"]["b_h_terms"]) == (4, 4, 3)
    assert len(g["bptt"]["jacobian_norms"]) == 4


def test_diagnostics_are_left_out_unless_asked_for(client, small_body):
    bptt = post(client, "/v1/gradients", small_body).json["bptt"]
    assert set(bptt) == {"b_h_by_step", "hidden_grad_norms"}


def test_integers_are_numbers_too(client, small_body):
    small_body["model"]["weights"]["b_h"] = [0, 1]
    assert post(client, "/v1/gradients", small_body).status_code == 200


# --- 400, 413, 415, 404, 405 ---

@pytest.mark.parametrize("raw", ["{", "", "{'model': 1}", '{"model": }', "[1,]", "\xff"])
def test_malformed_json_is_400(client, raw):
    assert_problem(post(client, "/v1/gradients", raw), 400)


@pytest.mark.parametrize("raw", ["[" * 100_000, '{"a":' * 100_000, "[" * 100_000 + "]" * 100_000])
def test_deep_nesting_is_400_not_a_crash(client, raw):
    assert_problem(post(client, "/v1/gradients", raw), 400)
    assert post(client, "/v1/forward", raw).status_code == 400


def test_body_over_the_limit_is_413(small_body):
    client = client_with(MAX_CONTENT_LENGTH=200)
    body = assert_problem(post(client, "/v1/gradients", small_body), 413)
    assert "200" in body["detail"]


@pytest.mark.parametrize("over", [0, 1])
def test_a_body_without_content_length_over_the_limit_is_413(small_body, over):
    """Chunked bodies (no Content-Length) are cut at the limit; a cut one is 413, not 400."""
    raw = json.dumps(small_body).encode()
    client = client_with(MAX_CONTENT_LENGTH=len(raw) - over)
    r = client.post("/v1/forward", input_stream=io.BytesIO(raw), content_type="application/json",
                    headers={"Transfer-Encoding": "chunked"},
                    environ_overrides={"wsgi.input_terminated": True})   # as gunicorn sets it
    assert r.request.content_length is None
    if over:
        assert_problem(r, 413)
    else:
        assert r.status_code == 200


@pytest.mark.parametrize("key,limit,pointer", [("MAX_T", 2, "/tokens"), ("MAX_H", 1, "/model/weights/W"),
                                               ("MAX_D", 1, "/model/weights/V"),
                                               ("MAX_N", 2, "/model/weights/U")])
@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
def test_problem_size_over_a_limit_is_413(small_body, key, limit, pointer, path):
    body = assert_problem(post(client_with(**{key: limit}), path, small_body), 413, pointer)
    assert f"limit of {limit}" in body["detail"]


def test_dense_inputs_over_the_T_limit_point_at_inputs(small_body):
    small_body.pop("tokens")
    small_body["inputs"] = [[0.0, 1.0]] * 3
    assert_problem(post(client_with(MAX_T=2), "/v1/forward", small_body), 413, "/inputs")


def test_diagnostics_over_the_limit_are_413(small_body):
    small_body["include"] = ["b_h_terms"]
    client = client_with(MAX_BPTT_TERMS=17)             # T²·H = 18
    assert_problem(post(client, "/v1/gradients", small_body), 413, "/include")
    small_body["include"] = []
    assert post(client, "/v1/gradients", small_body).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_not_json_is_415(client, small_body, content_type):
    r = client.post("/v1/forward", data=json.dumps(small_body), content_type=content_type)
    assert_problem(r, 415)


def test_unknown_path_is_404(client):
    assert_problem(client.get("/v1/nothing"), 404)
    assert_problem(client.post("/v2/forward", json={}), 404)


@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
def test_wrong_method_is_405_with_allow(client, path):
    r = client.get(path)
    assert_problem(r, 405)
    assert "POST" in r.headers["Allow"]
    assert_problem(client.put(path, json={}), 405)


# --- 422 with the exact JSON Pointer ---

SENTINEL = 0.123456789      # V[0][0] of the body, replaced by a raw JSON literal


def raw_with(literal):
    def make(body):
        body["model"]["weights"]["V"][0][0] = SENTINEL
        return json.dumps(body).replace(str(SENTINEL), literal)
    return make


def edit(path, value):
    """Set body[path...] = value (a missing last key is added)."""
    def make(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return body
    return make


def with_head(output, targets, loss=None):
    def make(body):
        body["model"]["output_activation"] = output
        body["targets"] = targets
        if loss:
            body["loss"] = loss
        return body
    return make


def dense(rows):
    def make(body):
        body.pop("tokens")
        body["inputs"] = rows
        return body
    return make


def both(body):
    body["inputs"] = [[0.0, 1.0]] * 3
    return body


def neither(body):
    body.pop("tokens")
    return body


def no_targets(body):
    body.pop("targets")
    return body


W_ = ("model", "weights")
INVALID = {   # name: (make the body from SMALL, pointer, code)
    "string number": (raw_with('"0.1"'), "/model/weights/V/0/0", "type"),
    "boolean number": (raw_with("true"), "/model/weights/V/0/0", "type"),
    "null number": (raw_with("null"), "/model/weights/V/0/0", "type"),
    "NaN literal": (raw_with("NaN"), "/model/weights/V/0/0", "range"),
    "Infinity literal": (raw_with("-Infinity"), "/model/weights/V/0/0", "range"),
    "1e400": (raw_with("1e400"), "/model/weights/V/0/0", "range"),
    "unknown top-level field": (edit(("tokenz",), [0]), "/tokenz", "unknown_field"),
    "unknown model field": (edit(("model", "hidden"), "tanh"), "/model/hidden", "unknown_field"),
    "unknown weights field": (edit(W_ + ("b",), [0.0]), "/model/weights/b", "unknown_field"),
    "missing weight": (lambda b: b["model"]["weights"].pop("U") and b, "/model/weights/U", "required"),
    "ragged V row": (edit(W_ + ("V", 1), [0.1, 0.2, 0.3]), "/model/weights/V/1", "shape"),
    "ragged W row": (edit(W_ + ("W", 1), [0.1]), "/model/weights/W/1", "shape"),
    "ragged inputs row": (dense([[0.0, 1.0], [1.0], [0.0, 0.0]]), "/inputs/1", "shape"),
    "inputs columns != D": (dense([[0.0, 1.0, 2.0]] * 3), "/inputs/0", "shape"),
    "V rows != H": (edit(W_ + ("V",), [[0.1, 0.2]] * 3), "/model/weights/V", "shape"),
    "U columns != H": (edit(W_ + ("U",), [[1.0, 2.0, 3.0]] * 3), "/model/weights/U/0", "shape"),
    "b_h wrong length": (edit(W_ + ("b_h",), [0.0]), "/model/weights/b_h", "shape"),
    "b_y wrong length": (edit(W_ + ("b_y",), [0.0, 0.0]), "/model/weights/b_y", "shape"),
    "h_init wrong length": (edit(("h_init",), [0.0, 0.0, 0.0]), "/h_init", "shape"),
    "token out of range": (edit(("tokens",), [0, 2, 1]), "/tokens/1", "token_range"),
    "negative token": (edit(("tokens",), [0, 1, -1]), "/tokens/2", "range"),
    "fractional token": (edit(("tokens",), [0, 1.5, 1]), "/tokens/1", "type"),
    "empty tokens": (edit(("tokens",), []), "/tokens", "size"),
    "class target out of range": (edit(("targets",), [3, None, 0]), "/targets/0", "class_range"),
    "negative class target": (edit(("targets",), [2, None, -1]), "/targets/2", "range"),
    "boolean class target": (edit(("targets",), [2, True, 0]), "/targets/1", "type"),
    "vector target for cross_entropy": (edit(("targets",), [[0, 0, 1], None, 0]), "/targets/0", "target_kind"),
    "targets wrong count": (edit(("targets",), [2, 0]), "/targets", "shape"),
    "every target null": (edit(("targets",), [None, None, None]), "/targets", "all_null"),
    "BCE target outside [0, 1]": (with_head("sigmoid", [[0, 1, 0], None, [0, 1.5, 0]]), "/targets/2/1", "target_kind"),
    "target vector wrong length": (with_head("identity", [[0, 1], None, [0, 1, 0]]), "/targets/0", "shape"),
    "string in target vector": (with_head("identity", [[0, "1", 0], None, None]), "/targets/0/1", "type"),
    "both inputs and tokens": (both, "", "exactly_one"),
    "neither inputs nor tokens": (neither, "", "exactly_one"),
    "cross_entropy with sigmoid output": (with_head("sigmoid", [[0, 1, 0], None, None],
                                                    "cross_entropy"), "/loss", "loss_activation"),
    "binary_cross_entropy with softmax": (edit(("loss",), "binary_cross_entropy"), "/loss", "loss_activation"),
    "invalid hidden activation": (edit(("model", "hidden_activation"), "softplus"),
                                  "/model/hidden_activation", "enum"),
    "invalid output activation": (edit(("model", "output_activation"), "tanh"),
                                  "/model/output_activation", "enum"),
    "invalid loss": (edit(("loss",), "hinge"), "/loss", "enum"),
    "invalid reduction": (edit(("reduction",), "max"), "/reduction", "enum"),
    "truncate 0": (edit(("truncate",), 0), "/truncate", "range"),
    "truncate not an integer": (edit(("truncate",), 1.5), "/truncate", "type"),
    "include unknown": (edit(("include",), ["jacobian_norms", "hessian"]), "/include/1", "enum"),
    "gradients without targets": (no_targets, "/targets", "required"),
    "body not an object": (lambda b: [b], "", "type"),
}


@pytest.mark.parametrize("name", INVALID)
def test_invalid_request_is_422_with_the_pointer(client, small_body, name):
    make, pointer, code = INVALID[name]
    r = post(client, "/v1/gradients", make(small_body), headers={"X-Request-ID": "grader-7"})
    body = assert_problem(r, 422, pointer)
    assert r.headers["X-Request-ID"] == "grader-7"
    assert all(set(e) == {"pointer", "detail", "code"} and e["detail"] for e in body["errors"])
    assert code in [e["code"] for e in body["errors"] if e["pointer"] == pointer], body["errors"]


@pytest.mark.parametrize("make,pointer", [(neither, ""), (edit(("tokens",), []), "/tokens"),
                                           (dense([]), "/inputs")])
def test_a_missing_sequence_is_one_error_not_a_cascade(client, small_body, make, pointer):
    """Without a valid sequence T is unknown, so the targets are not blamed for its length."""
    body = assert_problem(post(client, "/v1/gradients", make(small_body)), 422)
    assert [e["pointer"] for e in body["errors"]] == [pointer]


def test_forward_rejects_the_gradients_fields(client, small_body):
    small_body["truncate"] = 2
    assert_problem(post(client, "/v1/forward", small_body), 422, "/truncate")


@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_overflowing_result_is_422_without_non_finite_numbers(client, small_body, path, scale):
    small_body["model"]["hidden_activation"] = "identity"
    small_body["model"]["weights"]["W"] = [[scale, scale], [scale, scale]]
    body = assert_problem(post(client, path, small_body), 422, "/model/weights")
    assert "overflow" in body["detail"]


def test_work_over_the_budget_is_422_and_says_what_would_fit(small_body):
    client = client_with(MAX_WORK=100)
    body = assert_problem(post(client, "/v1/gradients", small_body), 422)
    assert body["type"].endswith("work-budget-exceeded") and "truncate" in body["detail"]
    assert post(client, "/v1/forward", small_body).status_code == 200   # 36 multiply-adds
    body = assert_problem(post(client_with(MAX_WORK=30), "/v1/forward", small_body), 422)
    assert body["type"].endswith("work-budget-exceeded") and "shorter sequence" in body["detail"]


# --- request ids and exact floats ---

def test_request_id_is_echoed_or_made(client, small_body):
    r = post(client, "/v1/forward", small_body, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "abc-123"
    made = {post(client, "/v1/forward", small_body).headers["X-Request-ID"] for _ in range(2)}
    assert len(made) == 2 and all(len(m) >= 16 for m in made)
    assert client.get("/v1/nothing", headers={"X-Request-ID": "lost-1"}).headers["X-Request-ID"] == "lost-1"
    junk = post(client, "/v1/forward", small_body, headers={"X-Request-ID": "x" * 500})
    assert junk.headers["X-Request-ID"] != "x" * 500


@pytest.mark.parametrize("truncate", [None, 2])
def test_floats_round_trip_exactly(client, truncate):
    """Each number Python's json parses from the body is the engine's float64, bit for bit."""
    spec, p = ref.random_problem(5, T=5, H=4, D=3, N=3, tokens=False, null_targets=True)
    body = {**ref.body(spec, p), "truncate": truncate}
    r = post(client, "/v1/gradients", body)
    got = json.loads(r.get_data(as_text=True))          # Python's own parser, not orjson
    problem = engine_problem(GradientsIn.model_validate(body).arrays(limits(create_app().config)))
    cache = rnn.forward(problem)
    g = rnn.backward(cache, truncate)
    grads = {**g.as_dict(), "inputs": g.inputs}           # dense inputs: dL/dx_t too
    assert got["outputs"] == cache.yhat.tolist() and got["hidden"] == cache.h.tolist()
    assert got["loss"] == float(cache.loss)
    assert got["step_losses"] == [float(v) if s else None
                                  for v, s in zip(cache.step_losses, problem.scored)]
    assert got["gradients"] == {k: v.tolist() for k, v in grads.items()}


def test_extreme_floats_survive_the_trip(client, small_body):
    """Identity output with U = 0: every output row is b_y, bit for bit, even at the ends of float64."""
    extremes = [5e-324, 1.7976931348623157e308, -2.2250738585072014e-308]
    small_body["model"]["output_activation"] = "identity"
    small_body["model"]["weights"].update(U=[[0.0, 0.0]] * 3, b_y=extremes)
    small_body.pop("targets")
    r = post(client, "/v1/forward", small_body)
    assert json.loads(r.get_data(as_text=True))["outputs"] == [extremes] * 3


# --- every number against an independent autograd ---

AUTOGRAD_CASES = {
    "tokens, tanh, softmax+CE, sum, with diagnostics": dict(tokens=True, include=True),
    "tokens, tanh, softmax+CE, sum": dict(tokens=True, include=False),
    "inputs, sigmoid, sigmoid+BCE, mean, null targets": dict(
        tokens=False, hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy",
        reduction="mean", null_targets=True, include=True),
    "inputs, relu, identity+SE, null targets": dict(
        tokens=False, hidden="relu", output="identity", loss="squared_error", null_targets=True,
        include=False),
}


@pytest.mark.parametrize("name", AUTOGRAD_CASES)
def test_every_number_agrees_with_an_independent_autograd(client, name):
    """Complex step on the reference forward (exact to rounding) for every gradient and
    diagnostic; max|a - b| / max(1, max|b|) ≤ 1e-9 for each field."""
    opts = dict(AUTOGRAD_CASES[name])
    include = opts.pop("include")
    spec, p = ref.random_problem(sorted(AUTOGRAD_CASES).index(name) + 40, T=6, H=5, D=4, N=3,
                                 scale=0.7, **opts)
    body = {**ref.body(spec, p), "include": ["b_h_terms", "jacobian_norms"] if include else []}
    r = post(client, "/v1/gradients", body)
    assert r.status_code == 200, r.json
    got, mine = r.json, ref.run(spec, p)
    scored = [y is not None for y in spec.targets]
    expected = {
        "outputs": mine["yhat"], "hidden": mine["h"], "loss": mine["L"],
        "step_losses": [ref.step_loss(spec.loss, spec.output, z, y)            # unreduced L_t
                        for z, y in zip(mine["z"], spec.targets) if y is not None],
        **{f"gradients.{k}": v for k, v in ref.all_grads(spec, p).items()},
        **({} if spec.inputs is None else {"gradients.inputs": ref.complex_step(
            lambda x: ref.run(dataclasses.replace(spec, inputs=x), p)["L"], spec.inputs)}),
        "bptt.b_h_by_step": ref.b_h_by_step(spec, p).T,
        "bptt.hidden_grad_norms": ref.hidden_grad_norms(spec, p),
    }
    actual = {"outputs": got["outputs"], "hidden": got["hidden"], "loss": got["loss"],
              "step_losses": [s for s in got["step_losses"] if s is not None],
              **{f"gradients.{k}": v for k, v in got["gradients"].items()},
              **{f"bptt.{k}": v for k, v in got["bptt"].items()
                 if k in ("b_h_by_step", "hidden_grad_norms")}}
    assert [s is not None for s in got["step_losses"]] == scored
    if include:
        expected["bptt.b_h_terms"] = ref.b_h_terms(spec, p)
        actual["bptt.b_h_terms"] = got["bptt"]["b_h_terms"]
        jac = [ref.hidden_jacobians(spec, p, k) for k in range(spec.T)]
        expected["bptt.jacobian_norms"] = [np.linalg.norm(jac[k][t], 2)
                                           for t in range(spec.T) for k in range(t + 1)]
        actual["bptt.jacobian_norms"] = [got["bptt"]["jacobian_norms"][t][k]
                                         for t in range(spec.T) for k in range(t + 1)]
    assert set(actual) == set(expected)
    errors = {k: ref.scaled_error(actual[k], expected[k]) for k in expected}
    assert max(errors.values()) <= 1e-9, errors
    assert all(np.any(np.asarray(v) != 0) for v in expected.values())   # nothing vacuous


@pytest.mark.parametrize("K", [1, 3])
def test_hidden_grad_norms_stay_the_total_derivative_under_truncation(client, K):
    """truncate changes the gradients (t − k < K only) but not ‖∂L/∂h_t‖, which is the full
    total derivative the contract names (the quantity that vanishes or explodes)."""
    spec, p = ref.random_problem(7, T=6, H=5, D=4, N=3, scale=0.9)
    body = {**ref.body(spec, p), "truncate": K}
    got = post(client, "/v1/gradients", body).json
    full = post(client, "/v1/gradients", ref.body(spec, p)).json
    assert ref.scaled_error(got["bptt"]["hidden_grad_norms"], ref.hidden_grad_norms(spec, p)) <= 1e-9
    assert ref.scaled_error(got["gradients"]["W"], full["gradients"]["W"]) > 1e-6   # truncation bites
