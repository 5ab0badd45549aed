"""Layouts on /v1/gradcheck and /v1/grade: parameters, reports and submissions in the
layout's names and shapes, against the layout's own /v1/gradients and the lecture's check
of the same problem (the mapping is tests/test_layouts.py's, written from the contract)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.reference import random_case
from tests.test_layouts import lecture_body, to_layout

CASES = [("cs231n", "lstm", 2), ("cs231n", "rnn", None), ("coursera", "lstm", 2), ("coursera", "rnn", 1),
         ("pytorch", "gru", 2), ("pytorch", "rnn", None), ("pytorch", "lstm", None), ("min-char-rnn", "rnn", None)]


def problem(layout, cell, B, seed=5, split=True):
    case, p = random_case(seed, cell=cell, B=B, T=3, H=3, D=2, N=3,
                          per_sequence_init=B is not None and layout in ("pytorch", "coursera"))
    body = lecture_body(case, p)
    # bias_ih + bias_hh = b_h: exactly so without a split (bias_hh 0)
    split = np.random.default_rng(seed).normal(size=p["b_h"].shape) * split
    sent, _ = to_layout(layout, case, p, body, split)
    return body, sent


@pytest.mark.parametrize("layout,cell,B", CASES)
def test_a_full_check_reports_every_layout_array_in_its_own_shape(client, layout, cell, B):
    body, sent = problem(layout, cell, B)
    grads = client.post("/v1/gradients", json=sent).get_json()["gradients"]
    r = client.post("/v1/gradcheck", json={**sent, "check": {"method": "complex_step"}})
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["passed"]
    assert list(report["parameters"]) == [n for n in grads]       # the layout's names, its order
    for name, entry in report["parameters"].items():
        g = np.array(grads[name])
        assert entry["checked"] == g.size
        assert len(entry["worst_index"]) == g.ndim and all(0 <= i < n for i, n in zip(entry["worst_index"], g.shape))
        assert entry["analytic_at_worst"] == pytest.approx(g[tuple(entry["worst_index"])], rel=1e-12, abs=1e-15)
        assert entry["numerical_at_worst"] == pytest.approx(entry["analytic_at_worst"], rel=1e-8, abs=1e-10)
    lecture = client.post("/v1/gradcheck", json={**body, "check": {"method": "complex_step"}}).get_json()
    assert report["evaluations"] == lecture["evaluations"] or layout == "pytorch"


def test_each_pytorch_bias_is_checked_as_the_b_h_elements_it_adds_to(client):
    body, sent = problem("pytorch", "rnn", None, split=False)
    check = {"method": "central"}
    layout = client.post("/v1/gradcheck", json={**sent, "check": check}).get_json()["parameters"]
    lecture = client.post("/v1/gradcheck", json={**body, "check": check}).get_json()["parameters"]
    for name in ("bias_ih_l0", "bias_hh_l0"):
        assert layout[name]["max_abs_error"] == lecture["b_h"]["max_abs_error"]
        assert layout[name]["worst_index"] == lecture["b_h"]["worst_index"]
    # cs231n's Wx is Vᵀ with its gate blocks reordered: the same elements, so the same figures
    body, sent = problem("cs231n", "lstm", 2)
    layout = client.post("/v1/gradcheck", json={**sent, "check": check}).get_json()["parameters"]
    lecture = client.post("/v1/gradcheck", json={**body, "check": check}).get_json()["parameters"]
    assert layout["Wx"]["max_abs_error"] == lecture["V"]["max_abs_error"]
    i, j = lecture["V"]["worst_index"]                       # lecture row i is gate i // H, unit i % H
    H = 3
    gate = [0, 1, 3, 2][i // H]                             # lecture i, f, g, o → CS231n i, f, o, g
    assert layout["Wx"]["worst_index"] == [j, gate * H + i % H]


@pytest.mark.parametrize("mode", ["sample", "directional"])
def test_sample_and_directional_modes_in_a_layout(client, mode):
    _, sent = problem("coursera", "lstm", 2)
    r = client.post("/v1/gradcheck", json={**sent, "check": {"mode": mode, "samples": 4,
                                                             "parameters": ["Wf", "bo", "inputs"]}})
    assert r.status_code == 200, r.get_json()
    report = r.get_json()
    assert report["passed"] and list(report["parameters"]) == ["Wf", "bo", "inputs"]
    assert report["parameters"]["Wf"]["checked"] == 4
    if mode == "sample":
        assert len(report["parameters"]["Wf"]["worst_index"]) == 2      # n_a × (n_a + n_x)
        assert len(report["parameters"]["inputs"]["worst_index"]) == 3  # n_x × m × T_x


def test_a_wrong_gradient_fails_its_check_in_a_layout(client):
    """The check is of the layout's arrays: a broken answer shows under the layout's name."""
    _, sent = problem("cs231n", "rnn", None)
    r = client.post("/v1/gradcheck", json={**sent, "check": {"parameters": ["Wh"], "eps": 1.0,
                                                             "method": "forward"}})
    report = r.get_json()
    assert list(report["parameters"]) == ["Wh"] and not report["passed"]


@pytest.mark.parametrize("layout,name", [("cs231n", "V"), ("pytorch", "b_h"), ("coursera", "c_init"),
                                         ("min-char-rnn", "Wx")])
def test_a_parameter_the_layout_does_not_have_is_a_422_at_its_index(client, layout, name):
    _, sent = problem(layout, "rnn", None if layout != "coursera" else 1)
    r = client.post("/v1/gradcheck", json={**sent, "check": {"parameters": ["h_init", name]}})
    assert r.status_code == 422
    assert [e["pointer"] for e in r.get_json()["errors"]] == ["/check/parameters/1"]


# --- grade ---

@pytest.mark.parametrize("layout,cell,B", CASES)
def test_a_correct_submission_in_a_layout_passes_with_checks_in_its_names(client, layout, cell, B):
    _, sent = problem(layout, cell, B)
    answer = client.post("/v1/gradients", json=sent).get_json()
    submission = {k: answer[k] for k in ("loss", "step_losses", "outputs", "hidden", "cell") if k in answer}
    submission["gradients"] = answer["gradients"]
    r = client.post("/v1/grade", json={**sent, "submission": submission})
    assert r.status_code == 200, r.get_json()
    result = r.get_json()
    assert result["passed"], [c for c in result["checks"] if not c["passed"]]
    names = [c["name"] for c in result["checks"]]
    assert [n for n in names if n.startswith("gradients.")] == [f"gradients.{k}" for k in answer["gradients"]]


def test_wrong_submissions_in_a_layout_fail_with_the_layouts_names_shapes_and_diagnoses(client):
    body, sent = problem("cs231n", "lstm", 2)
    g = {k: np.array(v) for k, v in client.post("/v1/gradients", json=sent).get_json()["gradients"].items()}
    wrong = {"Wx": g["Wx"] * 3.0, "W_vocab": -g["W_vocab"], "b": g["b"][:-1]}
    r = client.post("/v1/grade", json={**sent, "submission": {"gradients": {k: v.tolist() for k, v in wrong.items()}}})
    checks = {c["name"]: c for c in r.get_json()["checks"]}
    wx = checks["gradients.Wx"]
    assert not wx["passed"] and wx["diagnosis"]["id"] == "scaled" and wx["diagnosis"]["factor"] == pytest.approx(3.0)
    assert wx["expected_at_worst"] == g["Wx"][tuple(wx["worst_index"])]
    assert checks["gradients.W_vocab"]["diagnosis"]["id"] == "sign_flipped"
    assert "expected 12" in checks["gradients.b"]["error"] or "[12]" in checks["gradients.b"]["error"]
    # CS231n's gate order read as the lecture's: the gate_order diagnosis
    H = 3
    ifog = g["Wx"].copy()
    ifog[:, 2 * H:3 * H], ifog[:, 3 * H:] = g["Wx"][:, 3 * H:], g["Wx"][:, 2 * H:3 * H]
    r = client.post("/v1/grade", json={**sent, "submission": {"gradients": {"Wx": ifog.tolist()}}})
    check = r.get_json()["checks"][0]
    assert check["name"] == "gradients.Wx" and check["diagnosis"]["id"] == "gate_order"


def test_a_pytorch_submission_gets_both_biases_and_coursera_its_gate_blocks(client):
    _, sent = problem("pytorch", "gru", 2)
    g = client.post("/v1/gradients", json=sent).get_json()["gradients"]
    bad = np.array(g["bias_hh_l0"])
    bad[-1] += 1.0                                      # the b_hn part
    r = client.post("/v1/grade", json={**sent, "submission": {"gradients": {
        "bias_ih_l0": g["bias_ih_l0"], "bias_hh_l0": bad.tolist()}}}).get_json()
    assert [(c["name"], c["passed"]) for c in r["checks"]] == [("gradients.bias_ih_l0", True),
                                                                ("gradients.bias_hh_l0", False)]
    assert r["checks"][1]["worst_index"] == [len(bad) - 1]
    _, sent = problem("coursera", "lstm", 2)
    g = client.post("/v1/gradients", json=sent).get_json()["gradients"]
    r = client.post("/v1/grade", json={**sent, "submission": {"gradients": {"Wf": np.zeros_like(g["Wf"]).tolist(),
                                                                            "h_init": g["h_init"]}}}).get_json()
    assert [(c["name"], c["passed"]) for c in r["checks"]] == [("gradients.Wf", False), ("gradients.h_init", True)]


def test_a_lecture_name_in_a_layout_submission_is_a_422(client):
    _, sent = problem("min-char-rnn", "rnn", None)
    r = client.post("/v1/grade", json={**sent, "submission": {"gradients": {"W": [[0.0]]}}})
    assert r.status_code == 422
    assert [e["pointer"] for e in r.get_json()["errors"]] == ["/submission/gradients/W"]


# --- problems ---

PROBLEM_SPECS = [("cs231n", {"cell": "lstm", "batch_size": 2}), ("cs231n", {"cell": "rnn", "tokens": True, "vocab_size": 5}),
                 ("coursera", {"cell": "rnn", "batch_size": 3}), ("coursera", {"cell": "lstm", "batch_size": 2, "layer": True}),
                 ("pytorch", {"cell": "gru", "batch_size": 2}), ("pytorch", {"cell": "lstm"}),
                 ("pytorch", {"cell": "gru", "layer": True}), ("min-char-rnn", {"tokens": True, "vocab_size": 4})]


@pytest.mark.parametrize("layout,spec", PROBLEM_SPECS)
def test_problems_writes_the_same_problem_in_a_layout(client, layout, spec):
    from types import SimpleNamespace
    lecture = client.post("/v1/problems", json={"seed": 7, **spec}).get_json()
    r = client.post("/v1/problems", json={"seed": 7, **spec, "layout": layout})
    assert r.status_code == 200, r.get_json()
    written = r.get_json()
    cell = spec.get("cell", "rnn")
    p = {k: np.array(v) for k, v in lecture["model"]["weights"].items()}
    case = SimpleNamespace(cell=cell, B=spec.get("batch_size"))
    sent, expected = to_layout(layout, case, p, lecture, split=np.zeros_like(p["b_h"]))
    assert written == sent                       # pytorch: bias_ih = b_h, bias_hh = 0 (gru n: b_hn)
    a = client.post("/v1/gradients", json=written)
    assert a.status_code == 200, a.get_json()
    want = expected(client.post("/v1/gradients", json=lecture).get_json())
    got = a.get_json()
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    for k, v in want["gradients"].items():
        np.testing.assert_allclose(got["gradients"][k], v, rtol=1e-12, atol=1e-14, err_msg=k)


def test_coursera_writes_one_sequence_as_a_batch_of_one(client):
    r = client.post("/v1/problems", json={"seed": 1, "layout": "coursera", "input_size": 2, "hidden_size": 3,
                                          "steps": 4}).get_json()
    assert np.array(r["inputs"]).shape == (2, 1, 4) and np.array(r["targets"]).shape == (1, 4)
    assert np.array(r["model"]["weights"]["ba"]).shape == (3, 1)
    assert client.post("/v1/gradients", json=r).status_code == 200


@pytest.mark.parametrize("spec,pointer", [({"layout": "cs231n", "cell": "gru"}, "/cell"),
                                          ({"layout": "min-char-rnn", "batch_size": 2}, "/batch_size"),
                                          ({"layout": "pytorch", "cell": "gru", "gru_reset": "before"}, "/gru_reset"),
                                          ({"layout": "keras"}, "/layout")])
def test_problems_refuses_what_a_layout_cannot_write(client, spec, pointer):
    r = client.post("/v1/problems", json=spec)
    assert r.status_code == 422 and pointer in [e["pointer"] for e in r.get_json()["errors"]]


def test_the_budget_counts_each_layout_array_sharing_a_parameter(app, client):
    """Coursera's four gate matrices share W and V: sampled for each, the estimate is 4× one
    canonical sample of W and V (over the budget here, though one of them alone fits)."""
    _, sent = problem("coursera", "lstm", 2)
    one = {**sent, "check": {"mode": "sample", "samples": 5, "parameters": ["Wf"]}}
    assert client.post("/v1/gradcheck", json=one).status_code == 200
    from service.api import gradcheck as view
    from service.engine import gradcheck as gc, gradcheck_cells
    from schemas.gradcheck import GradcheckIn
    from schemas.limits import Limits
    from service.api.common import engine_problem
    with app.test_request_context():
        req = GradcheckIn.model_validate({**sent, "check": {"mode": "sample", "samples": 5,
                                                            "parameters": ["Wf", "Wi", "Wc", "Wo"]}})
        p = engine_problem(req.arrays(Limits()))
        spec = view.spec_of(req, p)
        assert req.repeats(view.evaluate.parameter_shapes(p)) == 4
        work, _ = gc.estimate(gradcheck_cells.CellSizes.of(p), spec)
    app.config["GRADCHECK_MAX_WORK"] = 2 * work            # one draw per parameter fits, four do not
    four = {**sent, "check": {"mode": "sample", "samples": 5, "parameters": ["Wf", "Wi", "Wc", "Wo"]}}
    r = client.post("/v1/gradcheck", json=four)
    assert r.status_code == 422 and r.get_json()["errors"][0]["code"] == "work_budget"
