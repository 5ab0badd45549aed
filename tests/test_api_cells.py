"""v1.1 through the Flask test client: LSTM and GRU cells, mini-batches, layer mode (upstream),
the batch_mean reduction and input gradients. Every number /v1/forward and /v1/gradients return
is checked against tests/reference.py's v1.1 functions (a plain step-by-step forward pass,
differentiated by the complex step; no backward pass, nothing from service.engine), and every
new refusal against its exact pointer and code."""
from __future__ import annotations

import base64
import copy
import itertools
import json
import struct

import numpy as np
import pytest

import reference as ref
from test_api import assert_problem, client_with, post

TOL = 1e-9          # max|a − b| / max(1, max|b|) per field


# --- request bodies from the reference's cases ---

def as_json(y):
    """A target entry as JSON: a class index, a list of floats, or null."""
    return y if y is None or isinstance(y, int) else [float(v) for v in y]


def case_body(case: ref.Case, p: dict, *, h_init=True, c_init=True, b_hn=True, targets=True) -> dict:
    """The request body of a reference case. h_init / c_init / b_hn False: left out (the
    reference then holds zeros, as the contract says the service does)."""
    w = {k: p[k].tolist() for k in ("V", "W", "b_h")}
    if p.get("U") is not None:
        w.update(U=p["U"].tolist(), b_y=p["b_y"].tolist())
    if b_hn and p.get("b_hn") is not None:
        w["b_hn"] = p["b_hn"].tolist()
    model = {"weights": w, "cell": case.cell, "output_activation": case.output}
    if case.cell == "rnn":
        model["hidden_activation"] = case.hidden
    if case.cell == "gru":
        model["gru_reset"] = case.gru_reset
    body = {"model": model}
    if h_init:
        body["h_init"] = p["h_init"].tolist()
    if c_init and p.get("c_init") is not None:
        body["c_init"] = p["c_init"].tolist()
    if case.tokens is not None:
        body["tokens"] = case.tokens
    else:
        body["inputs"] = p["inputs"].tolist()
    if case.layer:
        body["upstream"] = {"hidden": case.upstream.tolist()}
    elif targets:
        body["targets"] = ([[as_json(y) for y in row] for row in case.targets] if case.B is not None
                           else [as_json(y) for y in case.targets])
        body["loss"], body["reduction"] = case.loss, case.reduction
    return body


def expected_forward(case: ref.Case, p: dict) -> dict:
    run = ref.cell_run(case, p)
    out = {"hidden": ref.unbatch(case, run["h"])}
    if run["yhat"] is not None:
        out["outputs"] = ref.unbatch(case, run["yhat"])
    if case.cell == "lstm":
        out["cell"] = ref.unbatch(case, run["c"])
    return out, run


def step_losses_of(case, run):
    """The unreduced L_t with None on unscored steps, in the problem's shape."""
    scored = case.scored()
    rows = [[float(v) if s else None for v, s in zip(vals, ok)] for vals, ok in zip(run["step_losses"], scored)]
    return rows if case.B is not None else rows[0]


def assert_steps(got, expected):
    """Per-step losses: the same nulls, the numbers within TOL."""
    flat = lambda v: list(itertools.chain.from_iterable(v)) if v and isinstance(v[0], list) else v
    g, e = flat(got), flat(expected)
    assert [x is None for x in g] == [x is None for x in e], (got, expected)
    nums = [(a, b) for a, b in zip(g, e) if b is not None]
    assert nums, "no scored step"
    assert ref.scaled_error([a for a, _ in nums], [b for _, b in nums]) <= TOL


def errors_against(got: dict, expected: dict) -> dict:
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    return {k: ref.scaled_error(got[k], expected[k]) for k in expected}


# --- the cases: cells × batch × mode × reduction × inputs × initial states ---

CELLS = {"rnn": {}, "lstm": {"cell": "lstm"}, "gru-after": {"cell": "gru", "gru_reset": "after"},
         "gru-before": {"cell": "gru", "gru_reset": "before"}}
MODES = {     # loss with a reduction, or layer mode (with or without an output layer)
    "sum": dict(reduction="sum"),
    "mean": dict(reduction="mean", null_targets=True),
    "batch_mean": dict(reduction="batch_mean", output="sigmoid", loss="binary_cross_entropy"),
    "layer": dict(layer=True),
    "layer-no-head": dict(layer=True, output_layer=False),
}


def build_cases():
    """Every cell × batched or not × every mode (40), tokens/dense and the initial states
    (none, shared H, per sequence B×H) varied across them so each cell meets each of them."""
    cases = {}
    for c, (cname, cell) in enumerate(CELLS.items()):
        for j, (batched, (mname, mode)) in enumerate(itertools.product((False, True), MODES.items())):
            i = 10 * c + j
            tokens = (j + c + j // 5) % 2 == 1
            init = (("none", "shared", "per-sequence")[(j + c) % 3] if batched
                    else ("none", "shared")[(j + c // 2) % 2])
            opts = dict(cell, **mode, tokens=tokens, B=2 if batched else None, h_init=init != "none",
                        c_init=init != "none", per_sequence_init=init == "per-sequence")
            if cname == "rnn" and mname == "sum":
                opts["hidden"] = "sigmoid"
            if mname == "sum" and (j + c) % 2 == 0:
                opts.update(output="identity", loss="squared_error")
            name = f"{cname}-{'B2' if batched else 'one'}-{mname}-{'tokens' if tokens else 'dense'}-init:{init}"
            cases[name] = (i, opts, init)
    return cases


CASES = build_cases()


def make(name, **extra):
    """(case, p, body) of a case; b_hn (gru after) is sent in every other case, zeros otherwise."""
    i, opts, init = CASES[name]
    case, p = ref.random_case(100 + i, T=4, H=3, D=3, N=3, scale=0.7, b_hn=i % 2 == 0, **{**opts, **extra})
    sent = init != "none"
    return case, p, case_body(case, p, h_init=sent, c_init=sent, b_hn=i % 2 == 0)


def test_the_cases_cover_every_combination_that_matters():
    seen = {(o.get("cell", "rnn"), o.get("gru_reset"), o["B"], o.get("layer", False), o.get("reduction"),
             o["tokens"], init) for _, o, init in CASES.values()}
    for cell in ("rnn", "lstm", "gru"):
        of = [s for s in seen if s[0] == cell]
        assert {s[5] for s in of} == {True, False}                         # tokens and dense
        assert {s[6] for s in of} == {"none", "shared", "per-sequence"}    # initial states
        assert {s[4] for s in of if not s[3]} == {"sum", "mean", "batch_mean"}
        assert {s[2] for s in of if s[3]} == {None, 2}                     # layer mode, batch or not


@pytest.mark.parametrize("name", CASES)
def test_forward_agrees_with_the_reference(client, name):
    case, p, body = make(name)
    r = post(client, "/v1/forward", body)
    assert r.status_code == 200, r.get_json()
    got = r.get_json()
    expected, run = expected_forward(case, p)
    keys = {"outputs", "hidden", "loss", "step_losses"} | ({"cell"} if case.cell == "lstm" else set())
    assert set(got) == keys
    if "outputs" not in expected:                  # no output layer
        assert got["outputs"] is None
    errors = errors_against({k: got[k] for k in expected}, expected)
    assert max(errors.values()) <= TOL, errors
    assert got["loss"] == pytest.approx(float(run["L"]), rel=TOL, abs=TOL)
    assert_steps(got["step_losses"], step_losses_of(case, run))
    if case.B is not None:
        T, H = case.T, p["W"].shape[1]
        assert np.shape(got["hidden"]) == (2, T, H)
        assert np.shape(got["step_losses"]) == (2, T)


@pytest.mark.parametrize("name", CASES)
def test_every_gradient_and_diagnostic_agrees_with_the_reference(client, name):
    case, p, body = make(name)
    body["include"] = ["b_h_terms", "jacobian_norms"]
    r = post(client, "/v1/gradients", body)
    assert r.status_code == 200, r.get_json()
    got = r.get_json()
    expected, run = expected_forward(case, p)
    assert got["loss"] == pytest.approx(float(run["L"]), rel=TOL, abs=TOL)
    assert_steps(got["step_losses"], step_losses_of(case, run))
    expected.update({f"gradients.{k}": v for k, v in ref.cell_grads(case, p).items()})
    expected["bptt.b_h_by_step"] = ref.cell_b_h_by_step(case, p)
    expected["bptt.hidden_grad_norms"] = ref.cell_state_grad_norms(case, p)
    expected["bptt.b_h_terms"] = ref.cell_b_h_terms(case, p)
    jac = ref.cell_jacobian_norms(case, p)
    actual = {k: got[k] for k in ("outputs", "hidden", "cell") if k in expected}
    actual.update({f"gradients.{k}": v for k, v in got["gradients"].items()})
    actual.update({f"bptt.{k}": v for k, v in got["bptt"].items() if k != "jacobian_norms"})
    errors = errors_against(actual, expected)
    # the Jacobian norms: null above the diagonal, the numbers within TOL below it
    J = np.asarray(got["bptt"]["jacobian_norms"], dtype=object)
    assert J.shape == jac.shape
    assert all((v is None) == bool(np.isnan(e)) for v, e in zip(J.ravel(), jac.ravel()))
    errors["bptt.jacobian_norms"] = ref.scaled_error([v for v in J.ravel() if v is not None],
                                                     jac[~np.isnan(jac)])
    assert max(errors.values()) <= TOL, errors
    # shapes the contract names
    G, H, T = ref.GATES[case.cell], p["W"].shape[1], case.T
    assert np.shape(got["bptt"]["b_h_by_step"]) == (T, G * H)
    assert np.shape(got["bptt"]["b_h_terms"]) == (T, T, G * H)
    assert np.shape(got["gradients"]["h_init"]) == np.shape(p["h_init"])
    if case.layer:
        assert "U" not in got["gradients"] and "b_y" not in got["gradients"]
    assert ("inputs" in got["gradients"]) == (case.tokens is None)
    assert ("c_init" in got["gradients"]) == (case.cell == "lstm")
    assert ("b_hn" in got["gradients"]) == (case.cell == "gru" and case.gru_reset == "after")
    for k, v in expected.items():                   # nothing vacuous
        assert np.any(np.asarray(v) != 0), k


TRUNCATED = [n for n in CASES if "-B2-" in n and ("-sum-" in n or "-layer-" in n)]


@pytest.mark.parametrize("K", [1, 2])
@pytest.mark.parametrize("name", TRUNCATED)
def test_truncated_gradients_agree_with_the_reference(client, name, K):
    """truncate K cuts the whole state ([h; c] for the lstm): the reference sums the unrolled
    terms with t − k < K from first principles; hidden_grad_norms stay the full derivative."""
    case, p, body = make(name)
    r = post(client, "/v1/gradients", {**body, "truncate": K})
    assert r.status_code == 200, r.get_json()
    got = r.get_json()
    expected = {f"gradients.{k}": v for k, v in ref.cell_truncated_grads(case, p, K).items()}
    expected["bptt.b_h_by_step"] = ref.cell_b_h_by_step(case, p, K)
    expected["bptt.hidden_grad_norms"] = ref.cell_state_grad_norms(case, p)
    actual = {f"gradients.{k}": v for k, v in got["gradients"].items()}
    actual.update({f"bptt.{k}": v for k, v in got["bptt"].items()})
    errors = errors_against(actual, expected)
    assert max(errors.values()) <= TOL, errors
    full = ref.cell_grads(case, p)
    assert ref.scaled_error(got["gradients"]["W"], full["W"]) > 1e-6      # truncation bites


def test_forward_without_targets_has_null_losses_of_the_batch_shape(client):
    case, p = ref.random_case(7, cell="lstm", B=3, T=4)
    body = case_body(case, p, targets=False)
    got = post(client, "/v1/forward", body).get_json()
    assert got["loss"] is None and got["step_losses"] == [[None] * 4] * 3
    assert ref.scaled_error(got["cell"], ref.cell_run(case, p)["c"]) <= TOL


def test_batch_mean_is_the_sum_over_B(client):
    """CS231n's temporal_softmax_loss: the summed loss divided by B (not by the scored steps)."""
    case, p = ref.random_case(8, cell="gru", B=3, T=4, null_targets=True)
    body = case_body(case, p)
    total = post(client, "/v1/gradients", {**body, "reduction": "sum"}).get_json()
    mean = post(client, "/v1/gradients", {**body, "reduction": "batch_mean"}).get_json()
    assert mean["loss"] == pytest.approx(total["loss"] / 3, rel=1e-14)
    assert mean["step_losses"] == total["step_losses"]               # unreduced either way
    assert ref.scaled_error(mean["gradients"]["W"], np.array(total["gradients"]["W"]) / 3) < 1e-14


# --- /v1/gradcheck on the new cells ---

GRADCHECKS = {   # case name -> check options: every method once, layer mode with and without U
    "lstm-B2-mean-dense-init:shared": {"method": "central"},
    "gru-after-one-batch_mean-dense-init:shared": {"method": "forward", "rtol": 1e-3, "atol": 1e-6},
    "gru-before-B2-batch_mean-tokens-init:shared": {"method": "complex_step"},
    "lstm-one-layer-dense-init:shared": {"method": "richardson"},
    "gru-after-B2-layer-no-head-dense-init:per-sequence": {"method": "taylor", "mode": "directional",
                                                           "samples": 3},
    "rnn-B2-sum-dense-init:per-sequence": {"method": "central", "mode": "sample", "samples": 4, "seed": 3},
}


@pytest.mark.parametrize("name", GRADCHECKS)
def test_gradcheck_passes_on_the_new_cells(client, name):
    case, p, body = make(name)
    r = post(client, "/v1/gradcheck", {**body, "check": GRADCHECKS[name]})
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["passed"] is True, report
    assert list(report["parameters"]) == ref.cell_present(case, p)       # default: all it has


def test_gradcheck_checks_the_named_new_parameters(client):
    case, p, body = make("gru-after-B2-layer-no-head-dense-init:per-sequence")
    r = post(client, "/v1/gradcheck", {**body, "check": {"parameters": ["inputs", "b_hn", "h_init"]}})
    assert r.status_code == 200 and r.get_json()["passed"], r.get_json()
    assert list(r.get_json()["parameters"]) == ["h_init", "b_hn", "inputs"]
    case, p, body = make("lstm-B2-mean-dense-init:shared")
    report = post(client, "/v1/gradcheck", {**body, "check": {"parameters": ["c_init", "inputs"]}}).get_json()
    assert report["passed"] and set(report["parameters"]) == {"c_init", "inputs"}
    assert report["parameters"]["inputs"]["checked"] == p["inputs"].size


def test_gradcheck_finds_a_wrong_gradient_of_an_lstm(client):
    """The check is not vacuous on the new cells: a tolerance far below the method's error fails."""
    case, p, body = make("lstm-B2-mean-dense-init:shared")
    r = post(client, "/v1/gradcheck", {**body, "check": {"method": "forward", "rtol": 0, "atol": 1e-14}})
    assert r.status_code == 200 and r.get_json()["passed"] is False


# --- binary arrays (inputs B×T×D, h_init B×H, upstream.hidden B×T×H) ---

def encode(values) -> dict:
    """Written with struct, independent of the service's decoder."""
    a = np.asarray(values, dtype=float)
    flat = [float(x) for x in a.ravel()]
    return {"dtype": "float64", "shape": list(a.shape),
            "data": base64.b64encode(struct.pack(f"<{len(flat)}d", *flat)).decode()}


@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
def test_binary_batched_arrays_give_the_json_answer(client, path):
    case, p = ref.random_case(9, cell="lstm", B=2, T=3, layer=True, per_sequence_init=True)
    body = case_body(case, p)
    binary = copy.deepcopy(body)
    for name in ("inputs", "h_init", "c_init"):
        binary[name] = encode(body[name])
    binary["upstream"]["hidden"] = encode(body["upstream"]["hidden"])
    binary["model"]["weights"]["V"] = encode(body["model"]["weights"]["V"])
    plain, got = post(client, path, body), post(client, path, binary)
    assert plain.status_code == got.status_code == 200, got.get_json()
    assert got.get_json() == plain.get_json()
    assert np.shape(got.get_json()["hidden"]) == (2, 3, 3)


def test_binary_arrays_of_the_wrong_batch_shape_point_at_them(client):
    case, p = ref.random_case(9, cell="lstm", B=2, T=3, layer=True, per_sequence_init=True)
    body = case_body(case, p)
    bad = copy.deepcopy(body)
    bad["h_init"] = encode(np.zeros((3, 3)))
    b = assert_problem(post(client, "/v1/gradients", bad), 422, "/h_init")
    assert {e["code"] for e in b["errors"]} == {"shape"}
    bad = copy.deepcopy(body)
    bad["upstream"]["hidden"] = encode(np.zeros((2, 3, 4)))
    assert_problem(post(client, "/v1/gradients", bad), 422, "/upstream/hidden")


# --- every new refusal: its pointer and its code ---

def lstm_body(**kw):
    case, p = ref.random_case(3, cell="lstm", T=3, H=2, D=2, N=3, **kw)
    return case_body(case, p)


def gru_body(reset="after", **kw):
    case, p = ref.random_case(4, cell="gru", gru_reset=reset, T=3, H=2, D=2, N=3, **kw)
    return case_body(case, p)


def batch_body(cell="rnn", **kw):
    case, p = ref.random_case(5, cell=cell, B=2, T=3, H=2, D=2, N=3, **kw)
    return case_body(case, p)


def layer_body(**kw):
    case, p = ref.random_case(6, cell="lstm", T=3, H=2, D=2, N=3, layer=True, **kw)
    return case_body(case, p)


def change(body, path, value):
    """body with body[path...] = value (DROP deletes it)."""
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


DROP = object()
WE = ("model", "weights")

REFUSED = {   # name: (body, path, pointer, code)
    "LSTM V with 3H rows": (lambda: change(lstm_body(), WE + ("V",), [[0.1, 0.2]] * 6),
                            "/v1/gradients", "/model/weights/V", "shape"),
    "LSTM W with H rows": (lambda: change(lstm_body(), WE + ("W",), [[0.1, 0.2]] * 2),
                           "/v1/gradients", "/model/weights/W", "shape"),
    "GRU b_h with 4H entries": (lambda: change(gru_body(), WE + ("b_h",), [0.0] * 8),
                                "/v1/forward", "/model/weights/b_h", "shape"),
    "relu on an lstm": (lambda: change(lstm_body(), ("model", "hidden_activation"), "relu"),
                        "/v1/gradients", "/model/hidden_activation", "depends"),
    "sigmoid on a gru": (lambda: change(gru_body(), ("model", "hidden_activation"), "sigmoid"),
                         "/v1/forward", "/model/hidden_activation", "depends"),
    "b_hn with gru_reset before": (lambda: change(gru_body("before"), WE + ("b_hn",), [0.1, 0.2]),
                                   "/v1/gradients", "/model/weights/b_hn", "depends"),
    "b_hn with an lstm": (lambda: change(lstm_body(), WE + ("b_hn",), [0.1, 0.2]),
                          "/v1/gradients", "/model/weights/b_hn", "depends"),
    "b_hn with the wrong length": (lambda: change(gru_body(), WE + ("b_hn",), [0.1, 0.2, 0.3]),
                                   "/v1/gradients", "/model/weights/b_hn", "shape"),
    "gru_reset on an lstm": (lambda: change(lstm_body(), ("model", "gru_reset"), "after"),
                             "/v1/gradients", "/model/gru_reset", "depends"),
    "gru_reset on an rnn": (lambda: change(batch_body(), ("model", "gru_reset"), "before"),
                            "/v1/forward", "/model/gru_reset", "depends"),
    "gru_reset unknown": (lambda: change(gru_body(), ("model", "gru_reset"), "middle"),
                          "/v1/forward", "/model/gru_reset", "enum"),
    "cell unknown": (lambda: change(gru_body(), ("model", "cell"), "transformer"),
                     "/v1/forward", "/model/cell", "enum"),
    "c_init on a gru": (lambda: change(gru_body(), ("c_init",), [0.1, 0.2]),
                        "/v1/gradients", "/c_init", "depends"),
    "c_init on an rnn": (lambda: change(batch_body(), ("c_init",), [0.1, 0.2]),
                         "/v1/forward", "/c_init", "depends"),
    "c_init with the wrong length": (lambda: change(lstm_body(), ("c_init",), [0.1, 0.2, 0.3]),
                                     "/v1/gradients", "/c_init", "shape"),
    "a bad upstream element": (lambda: change(layer_body(), ("upstream", "hidden", 1, 1), "x"),
                               "/v1/gradients", "/upstream/hidden/1/1", "type"),
    "a NaN upstream element": (lambda: json.dumps(change(layer_body(), ("upstream", "hidden", 1, 1), 12345.5))
                               .replace("12345.5", "NaN"), "/v1/gradients", "/upstream/hidden/1/1", "range"),
    "upstream with T+1 steps": (lambda: change(layer_body(), ("upstream", "hidden"), [[0.0, 0.0]] * 4),
                                "/v1/gradients", "/upstream/hidden", "shape"),
    "upstream with H+1 columns": (lambda: change(layer_body(), ("upstream", "hidden"), [[0.0] * 3] * 3),
                                  "/v1/gradients", "/upstream/hidden/0", "shape"),
    "upstream B×T×H for one sequence": (lambda: change(layer_body(), ("upstream", "hidden"), [[[0.0] * 2] * 3]),
                                        "/v1/gradients", "/upstream/hidden", "shape"),
    "upstream T×H for a batch": (lambda: change(batch_body(layer=True), ("upstream", "hidden"), [[0.0] * 2] * 3),
                                 "/v1/gradients", "/upstream/hidden", "shape"),
    "upstream with a ragged row": (lambda: change(batch_body(layer=True), ("upstream", "hidden", 1, 2), [0.0]),
                                   "/v1/gradients", "/upstream/hidden/1/2", "shape"),
    "upstream without hidden": (lambda: change(layer_body(), ("upstream",), {}),
                                "/v1/gradients", "/upstream/hidden", "required"),
    "upstream with an unknown field": (lambda: change(layer_body(), ("upstream", "cell"), [[0.0]]),
                                       "/v1/gradients", "/upstream/cell", "unknown_field"),
    "ragged batch of inputs": (lambda: change(batch_body(), ("inputs", 1), [[0.0, 0.0]] * 2),
                               "/v1/gradients", "/inputs/1", "shape"),
    "ragged third sequence of inputs": (lambda: change(change(batch_body(), ("inputs",),
                                                              batch_body()["inputs"] * 2), ("inputs", 2),
                                                       [[0.0, 0.0]] * 4), "/v1/forward", "/inputs/2", "shape"),
    "ragged batch of tokens": (lambda: change(batch_body(tokens=True), ("tokens", 1), [0, 1]),
                               "/v1/gradients", "/tokens/1", "shape"),
    "a token out of range in a batch": (lambda: change(batch_body(tokens=True), ("tokens", 1, 2), 2),
                                        "/v1/gradients", "/tokens/1/2", "token_range"),
    "targets with upstream": (lambda: change(layer_body(), ("targets",), [0, 1, 2]),
                              "/v1/gradients", "/targets", "depends"),
    "loss in layer mode": (lambda: change(layer_body(), ("loss",), "cross_entropy"),
                           "/v1/gradients", "/loss", "depends"),
    "reduction in layer mode": (lambda: change(layer_body(), ("reduction",), "sum"),
                                "/v1/gradients", "/reduction", "depends"),
    "reduction mean in layer mode on forward": (lambda: change(layer_body(), ("reduction",), "mean"),
                                                "/v1/forward", "/reduction", "depends"),
    "flat targets for batched inputs (T of them)": (lambda: change(batch_body(), ("targets",), [0, 1, 2]),
                                                    "/v1/gradients", "/targets", "shape"),
    "flat targets for batched inputs (B of them)": (lambda: change(batch_body(), ("targets",), [0, 1]),
                                                    "/v1/gradients", "/targets/0", "shape"),
    "flat vector targets for batched inputs": (
        lambda: change(batch_body(output="identity", loss="squared_error"), ("targets",),
                       [[0.1, 0.2, 0.3], [0.0, 0.5, 1.0]]), "/v1/gradients", "/targets/0", "shape"),
    "targets of the wrong B": (lambda: change(batch_body(), ("targets",), [[0, 1, 2]] * 3),
                               "/v1/gradients", "/targets", "shape"),
    "batched targets for one sequence": (lambda: change(lstm_body(), ("targets",), [[0, 1, 2]]),
                                         "/v1/gradients", "/targets", "shape"),
    "a batch row of targets with T+1": (lambda: change(batch_body(), ("targets", 1), [0, 1, 2, 0]),
                                        "/v1/gradients", "/targets/1", "shape"),
    "a class out of range in a batch": (lambda: change(batch_body(), ("targets", 1, 0), 3),
                                        "/v1/gradients", "/targets/1/0", "class_range"),
    "every batched target null": (lambda: change(batch_body(), ("targets",), [[None] * 3] * 2),
                                  "/v1/gradients", "/targets", "all_null"),
    "B×H h_init for one sequence": (lambda: change(lstm_body(), ("h_init",), [[0.0, 0.0]] * 2),
                                    "/v1/gradients", "/h_init", "shape"),
    "h_init with the wrong B": (lambda: change(batch_body(), ("h_init",), [[0.0, 0.0]] * 3),
                                "/v1/gradients", "/h_init", "shape"),
    "B×H c_init with the wrong H": (lambda: change(batch_body("lstm"), ("c_init",), [[0.0] * 3] * 2),
                                    "/v1/gradients", "/c_init/0", "shape"),
    "U and b_y null": (lambda: change(change(layer_body(), WE + ("U",), None), WE + ("b_y",), None),
                       "/v1/gradients", "/model/weights/U", "type"),
    "b_hn null": (lambda: change(gru_body(), WE + ("b_hn",), None), "/v1/forward", "/model/weights/b_hn", "type"),
    "U without b_y": (lambda: change(layer_body(), WE + ("b_y",), DROP),
                      "/v1/gradients", "/model/weights/b_y", "required"),
    "b_y without U": (lambda: change(layer_body(), WE + ("U",), DROP),
                      "/v1/forward", "/model/weights/U", "required"),
    "gradients with no output layer and no upstream": (
        lambda: change(change(change(change(lstm_body(), WE + ("U",), DROP), WE + ("b_y",), DROP),
                              ("targets",), DROP), ("loss",), DROP),
        "/v1/gradients", "/model/weights/U", "required"),
    "forward with targets but no output layer": (
        lambda: change(change(lstm_body(), WE + ("U",), DROP), WE + ("b_y",), DROP),
        "/v1/forward", "/targets", "depends"),
    "reduction batch_mean misspelt": (lambda: change(batch_body(), ("reduction",), "batchmean"),
                                      "/v1/gradients", "/reduction", "enum"),
}


def refusal(name):
    make_body, path, pointer, code = REFUSED[name]
    return make_body(), path, pointer, code


@pytest.mark.parametrize("name", REFUSED)
def test_every_new_refusal_has_its_pointer_and_code(client, name):
    body, path, pointer, code = refusal(name)
    r = post(client, path, body)
    problem = assert_problem(r, 422, pointer)
    codes = [e["code"] for e in problem["errors"] if e["pointer"] == pointer]
    assert code in codes, problem["errors"]


def test_forward_of_a_layer_without_an_output_layer_is_fine(client):
    body = change(change(layer_body(), WE + ("U",), DROP), WE + ("b_y",), DROP)
    assert post(client, "/v1/forward", body).get_json()["outputs"] is None
    no_upstream = change(body, ("upstream",), DROP)           # the layer's hidden states alone
    got = post(client, "/v1/forward", no_upstream).get_json()
    assert got["outputs"] is None and got["loss"] is None and got["step_losses"] == [None] * 3


def test_a_batch_over_the_limit_is_413(client):
    body = batch_body(tokens=True)
    body["tokens"] = body["tokens"] * 3
    body["targets"] = body["targets"] * 3
    for path in ("/v1/forward", "/v1/gradients", "/v1/gradcheck"):
        problem = assert_problem(post(client_with(MAX_B=5), path, body), 413, "/tokens")
        assert "limit of 5" in problem["detail"] and problem["errors"][0]["code"] == "limit"
    assert post(client_with(MAX_B=6), "/v1/gradients", body).status_code == 200
    dense = batch_body()
    dense["inputs"] = dense["inputs"] * 4
    dense["targets"] = dense["targets"] * 4
    assert_problem(post(client_with(MAX_B=7), "/v1/forward", dense), 413, "/inputs")


@pytest.mark.parametrize("make_body,names", [
    (lambda: batch_body(tokens=True), ["inputs"]),
    (lambda: batch_body(), ["c_init"]),
    (lambda: gru_body("before"), ["V", "b_hn"]),
    (lambda: layer_body(), ["U"]),
    (lambda: layer_body(), ["h_init", "b_y"]),
])
def test_gradcheck_of_a_parameter_the_problem_lacks(client, make_body, names):
    problem = assert_problem(post(client, "/v1/gradcheck", {**make_body(), "check": {"parameters": names}}), 422)
    absent = [i for i, n in enumerate(names) if n not in ("V", "h_init")]
    assert [(e["pointer"], e["code"]) for e in problem["errors"]] == \
        [(f"/check/parameters/{i}", "parameter_absent") for i in absent]


@pytest.mark.parametrize("make_body", [
    lambda: lstm_body(), lambda: gru_body(), lambda: batch_body(), lambda: batch_body(tokens=True),
    lambda: batch_body("lstm"),
])
def test_grade_takes_gated_cells_and_batches(client, make_body):
    """Issue 14: graded, not refused (tests/test_grade_cells.py checks the verdicts)."""
    body = make_body()
    loss = post(client, "/v1/forward", body).json["loss"]
    r = post(client, "/v1/grade", {**body, "submission": {"loss": loss + 1.0}})
    assert r.status_code == 200 and r.json["checks"][0]["passed"] is False


def test_grade_of_a_layer_checks_the_upstream_loss(client):
    """Layer mode: no targets needed; the loss check is L = Σ_t ⟨upstream_t, h_t⟩."""
    case, p = ref.random_case(6, T=3, H=2, D=2, N=3, layer=True)
    expected = float(ref.cell_run(case, p)["L"])
    r = post(client, "/v1/grade", {**case_body(case, p), "submission": {"loss": expected}})
    assert r.status_code == 200 and r.json["passed"] is True


# --- the README's CS231n example: lstm_backward(dh) as a request ---

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cs231n_lstm(x, h0, Wx, Wh, b, dh):
    """CS231n assignment 3's lstm_forward / lstm_backward (row vectors, Wx D×4H, gates i, f, o, g;
    c0 = 0), written out here as the assignment's solution computes them."""
    N, T, _ = x.shape
    H = h0.shape[1]
    h, c, caches = h0, np.zeros_like(h0), []
    hs = np.zeros((N, T, H))
    for t in range(T):
        a = x[:, t] @ Wx + h @ Wh + b
        i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        c_next = f * c + i * g
        caches.append((x[:, t], h, c, i, f, o, g, c_next))
        h, c = o * np.tanh(c_next), c_next
        hs[:, t] = h
    dx, dWx, dWh, db = np.zeros_like(x), np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(h0)
    for t in reversed(range(T)):
        xt, h_prev, c_prev, i, f, o, g, c_t = caches[t]
        dh_t = dh[:, t] + dh_next
        tc = np.tanh(c_t)
        dc = dc_next + dh_t * o * (1 - tc ** 2)
        da = np.hstack([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dh_t * tc * o * (1 - o),
                        dc * i * (1 - g ** 2)])
        dx[:, t] = da @ Wx.T
        dWx += xt.T @ da
        dWh += h_prev.T @ da
        db += da.sum(axis=0)
        dh_next, dc_next = da @ Wh.T, dc * f
    return hs, dx, dh_next, dWx, dWh, db


def test_the_cs231n_layer_example_is_cs231n_lstm_backward(client):
    from tests.openapi_spec import ROOT
    body = json.loads((ROOT / "examples" / "gradients_layer_cs231n.json").read_text())
    got = post(client, "/v1/gradients", body).get_json()
    w = body["model"]["weights"]
    V, W, b_h = (np.array(w[k]) for k in ("V", "W", "b_h"))
    H = W.shape[1]
    to_cs231n = np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]          # i, f, g, o -> i, f, o, g
    hs, dx, dh0, dWx, dWh, db = cs231n_lstm(np.array(body["inputs"]), np.array(body["h_init"]),
                                            V[to_cs231n].T, W[to_cs231n].T, b_h[to_cs231n],
                                            np.array(body["upstream"]["hidden"]))
    back = np.argsort(to_cs231n)
    g = got["gradients"]
    assert set(g) == {"V", "W", "b_h", "h_init", "c_init", "inputs"}
    for name, mine, theirs in (("hidden", got["hidden"], hs), ("inputs", g["inputs"], dx),
                               ("h_init", g["h_init"], dh0), ("V", g["V"], dWx.T[back]),
                               ("W", g["W"], dWh.T[back]), ("b_h", g["b_h"], db[back])):
        assert ref.scaled_error(mine, theirs) <= 1e-12, name
