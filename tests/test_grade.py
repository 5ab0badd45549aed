"""POST /v1/grade: checks, tolerances, shapes, diagnoses and the Gradescope format.

Every submission is computed here by tests/student_rnn.py (plain loops over t and k, written
from the lecture, checked against central differences), never by the engine under test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.student_rnn import Student, central_differences

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECURRENT = ("V", "W", "b_h", "h_init")      # the parameters the lecture's mistakes change

# several random problems (all steps scored, T ≥ 4 so every window K is distinct)
PROBLEMS = {
    "tanh-softmax-tokens": {"seed": 11, "tokens": True, "vocab_size": 5, "hidden_size": 4,
                            "output_size": 3, "steps": 6, "weight_scale": 0.8},
    "sigmoid-bce-dense": {"seed": 12, "input_size": 3, "hidden_size": 3, "output_size": 2,
                          "steps": 5, "hidden_activation": "sigmoid",
                          "output_activation": "sigmoid", "weight_scale": 1.5},
    "identity-squared": {"seed": 13, "input_size": 2, "hidden_size": 3, "output_size": 2,
                         "steps": 5, "hidden_activation": "identity",
                         "output_activation": "identity", "weight_scale": 0.7},
    "tanh-softmax-squared-mean": {"seed": 14, "input_size": 4, "hidden_size": 5, "output_size": 3,
                                  "steps": 7, "loss": "squared_error", "reduction": "mean",
                                  "weight_scale": 1.0},
}


@pytest.fixture(scope="module")
def problems():
    from service import create_app
    c = create_app({"TESTING": True}).test_client()
    return {name: c.post("/v1/problems", json=body).json for name, body in PROBLEMS.items()}


def grade(client, problem, submission, **extra):
    r = client.post("/v1/grade", json={**problem, "submission": submission, **extra})
    assert r.status_code == 200, r.json
    return r.json


def by_name(result):
    return {c["name"]: c for c in result["checks"]}


def as_lists(grads: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in grads.items()}


def full_submission(student: Student) -> dict:
    a, h, yhat, L_steps = student.run()
    return {"loss": student.loss(), "step_losses": L_steps, "outputs": np.array(yhat).tolist(),
            "hidden": np.array(h).tolist(), "gradients": as_lists(student.gradients())}


# --- the independent student is right ---

@pytest.mark.parametrize("name", list(PROBLEMS))
def test_student_gradients_match_central_differences(problems, name):
    student = Student(problems[name])
    numeric = central_differences(student)
    for param, g in student.gradients().items():
        np.testing.assert_allclose(g, numeric[param], rtol=1e-6, atol=1e-8, err_msg=param)


# --- correct answers ---

@pytest.mark.parametrize("name", list(PROBLEMS))
def test_correct_submission_scores_one(client, problems, name):
    result = grade(client, problems[name], full_submission(Student(problems[name])))
    assert result["passed"] is True and result["score"] == 1.0
    assert len(result["checks"]) == 10
    for check in result["checks"]:
        assert check["passed"] and check["diagnosis"] is None and check["error"] is None
        assert check["max_abs_error"] < 1e-9


def test_relu_problem_correct_submission_scores_one(client):
    problem = client.post("/v1/problems", json={"seed": 5, "hidden_activation": "relu",
                                                "steps": 6, "score_last_step_only": True}).json
    student = Student(problem)
    sub = full_submission(student)
    assert sub["step_losses"][:5] == [None] * 5
    assert grade(client, problem, sub)["score"] == 1.0


def test_float32_rounded_gradients_pass_at_1e_4_and_fail_at_1e_12(client, problems):
    problem = problems["tanh-softmax-squared-mean"]
    exact = Student(problem).gradients()
    rounded = {k: v.astype(np.float32).astype(np.float64).tolist() for k, v in exact.items()}
    loose = grade(client, problem, {"gradients": rounded}, tolerance={"rtol": 1e-4})
    assert loose["score"] == 1.0
    tight = grade(client, problem, {"gradients": rounded}, tolerance={"rtol": 1e-12, "atol": 0})
    checks = by_name(tight)
    for k, v in exact.items():
        representable = np.array_equal(v.astype(np.float32), v)
        assert checks[f"gradients.{k}"]["passed"] is representable
        assert checks[f"gradients.{k}"]["diagnosis"] is None      # a rounding error, not a mistake
    assert tight["score"] < 0.5


# --- each diagnosis, from a mistake made by the student ---

def mistaken(problem: dict, mistake: str):
    """(the student's wrong gradients, the diagnosis id and extra fields the API should give)."""
    s = Student(problem)
    if mistake == "no_bptt":
        return s.gradients(window=1), {}
    if mistake == "truncated_bptt":
        K = s.T // 2
        return s.gradients(window=K), {"window": K}
    if mistake == "no_jacobian_product":
        return s.gradients(jacobians=False), {}
    if mistake == "final_loss_only":
        return s.gradients(steps="last"), {}
    g = s.gradients()
    if mistake == "zero":
        return {k: np.zeros_like(v) for k, v in g.items()}, {}
    if mistake == "sign_flipped":
        return {k: -v for k, v in g.items()}, {}
    raise AssertionError(mistake)


LECTURE = ("no_bptt", "truncated_bptt", "no_jacobian_product", "final_loss_only")


@pytest.mark.parametrize("mistake", LECTURE + ("zero", "sign_flipped"))
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_mistake_is_diagnosed(client, problems, name, mistake):
    grads, extra = mistaken(problems[name], mistake)
    checks = by_name(grade(client, problems[name], {"gradients": as_lists(grads)}))
    # the loss-side mistake changes U and b_y too; the recurrence-side ones do not
    affected = RECURRENT if mistake in LECTURE[:3] else tuple(grads)
    for param in affected:
        check = checks[f"gradients.{param}"]
        assert not check["passed"], param
        diagnosis = check["diagnosis"]
        assert diagnosis["id"] == mistake, (param, diagnosis)
        assert {k: diagnosis[k] for k in extra} == extra
        assert diagnosis["detail"].startswith(f"Your ∂L/∂{param}") and diagnosis["detail"].endswith(".")
    for param in set(grads) - set(affected):          # U and b_y do not go through the recurrence
        assert checks[f"gradients.{param}"]["passed"]


@pytest.mark.parametrize("window", [2, 3, 4, 5])
def test_truncation_window_is_the_one_that_reproduces_it(client, problems, window):
    problem = problems["tanh-softmax-tokens"]                     # T = 6
    grads = Student(problem).gradients(window=window)
    diagnosis = by_name(grade(client, problem, {"gradients": {"b_h": grads["b_h"].tolist()}}))[
        "gradients.b_h"]["diagnosis"]
    assert diagnosis["id"] == "truncated_bptt" and diagnosis["window"] == window
    assert str(window) in diagnosis["detail"]


def test_b_y_through_h_t_is_zero(client, problems):
    """The quiz's wrong option for b_y routes it through h_t, where ∂h_t/∂b_y = 0."""
    problem = problems["sigmoid-bce-dense"]
    check = by_name(grade(client, problem, {"gradients": {"b_y": [0.0, 0.0]}}))["gradients.b_y"]
    assert check["diagnosis"]["id"] == "zero" and "b_y enters z_t" in check["diagnosis"]["detail"]


def test_transposed_square_and_non_square(client, problems):
    problem = problems["tanh-softmax-squared-mean"]                 # H 5, D 4
    g = Student(problem).gradients()
    checks = by_name(grade(client, problem, {"gradients": {"W": g["W"].T.tolist(),
                                                           "V": g["V"].T.tolist()}}))
    assert checks["gradients.W"]["diagnosis"]["id"] == "transposed"
    assert checks["gradients.W"]["error"] is None
    v = checks["gradients.V"]
    assert v["error"] == "expected 5×4, got 4×5" and v["diagnosis"]["id"] == "transposed"


def test_sum_instead_of_mean_is_scaled_by_the_number_of_steps(client, problems):
    problem = problems["tanh-softmax-squared-mean"]                 # 7 scored steps, mean
    student = Student(problem)
    student.scale = 1.0                                             # the student sums
    checks = by_name(grade(client, problem, {"gradients": as_lists(student.gradients())}))
    for param in ("V", "W", "U", "b_h", "b_y", "h_init"):
        d = checks[f"gradients.{param}"]["diagnosis"]
        assert d["id"] == "scaled" and d["factor"] == pytest.approx(7.0, rel=1e-9)
        assert "divide by the number of scored steps (7)" in d["detail"]


def test_halved_gradient_is_scaled_by_half(client, problems):
    problem = problems["identity-squared"]
    g = Student(problem).gradients()
    d = by_name(grade(client, problem, {"gradients": {"U": (0.5 * g["U"]).tolist()}}))[
        "gradients.U"]["diagnosis"]
    assert d["id"] == "scaled" and d["factor"] == pytest.approx(0.5) and "½" in d["detail"]


def test_wrong_answer_matching_no_mistake_has_null_diagnosis(client, problems):
    problem = problems["tanh-softmax-tokens"]
    g = Student(problem).gradients()
    noise = np.random.default_rng(0).normal(size=g["W"].shape)
    check = by_name(grade(client, problem, {"gradients": {"W": (g["W"] + noise).tolist()}}))["gradients.W"]
    assert check["passed"] is False and check["diagnosis"] is None


def test_truncation_is_not_searched_beyond_the_terms_limit(problems):
    from service import create_app
    client = create_app({"TESTING": True, "MAX_BPTT_TERMS": 10}).test_client()
    problem = problems["tanh-softmax-tokens"]
    grads = Student(problem).gradients(window=3)
    check = by_name(grade(client, problem, {"gradients": {"W": grads["W"].tolist()}}))["gradients.W"]
    assert check["passed"] is False and check["diagnosis"] is None


# --- the numbers of a check ---

def test_worst_element_and_errors(client, problems):
    problem = problems["identity-squared"]
    s = Student(problem)
    hidden = np.array(s.run()[1])
    hidden[3, 1] += 0.25
    check = by_name(grade(client, problem, {"hidden": hidden.tolist()}))["hidden"]
    assert check["passed"] is False and check["worst_index"] == [3, 1]
    assert check["got_at_worst"] == hidden[3, 1]
    assert check["expected_at_worst"] == pytest.approx(hidden[3, 1] - 0.25, abs=1e-12)
    assert check["max_abs_error"] == pytest.approx(0.25, abs=1e-12)
    expected_rel = 0.25 / max(abs(hidden[3, 1]), abs(hidden[3, 1] - 0.25))
    assert check["max_rel_error"] == pytest.approx(expected_rel, rel=1e-9)
    assert check["diagnosis"] is None                                 # only gradients get one


def test_tolerance_rule_is_atol_plus_rtol_times_expected(client, problems):
    problem = problems["identity-squared"]
    loss = Student(problem).loss()
    off = 1e-3 * abs(loss)
    assert grade(client, problem, {"loss": loss + off}, tolerance={"rtol": 1.01e-3, "atol": 0})["passed"]
    assert not grade(client, problem, {"loss": loss + off}, tolerance={"rtol": 0.99e-3, "atol": 0})["passed"]
    assert grade(client, problem, {"loss": loss + off}, tolerance={"rtol": 0, "atol": 1.01 * off})["passed"]


def test_score_is_the_fraction_passed(client, problems):
    problem = problems["identity-squared"]
    s = Student(problem)
    g = s.gradients()
    result = grade(client, problem, {"loss": s.loss(), "gradients": {"W": (-g["W"]).tolist(),
                                                                    "b_h": g["b_h"].tolist(),
                                                                    "U": g["U"].tolist()}})
    assert result["score"] == 0.75 and result["passed"] is False
    assert [c["name"] for c in result["checks"]] == ["loss", "gradients.W", "gradients.U", "gradients.b_h"]


# --- shapes and nulls: failed checks, never a 4xx ---

@pytest.mark.parametrize("value, error", [
    ([[1.0]], "expected 3×3, got 1×1"),
    (1.0, "expected 3×3, got a number"),
    ([1.0, 2.0, 3.0], "expected 3×3, got 3 entries"),
    ([[1.0, 2.0], [3.0]], "the rows have different lengths (not a rectangular array)"),
    ([], "expected 3×3, got 0 entries"),
    ([[[1.0]]], "expected 3×3, got 1×1×1"),
    (json.loads("[" * 70 + "1.0" + "]" * 70), "nested more than 64 levels deep"),
])
def test_wrong_shape_is_a_failed_check(client, problems, value, error):
    problem = problems["identity-squared"]
    result = grade(client, problem, {"gradients": {"W": value}})
    check = result["checks"][0]
    assert check["passed"] is False and check["error"] == error and result["score"] == 0.0
    assert check["max_abs_error"] is None and check["diagnosis"] is None


def test_null_step_loss_counts_as_zero_only_on_unscored_steps(client):
    problem = client.post("/v1/problems", json={"seed": 2, "steps": 3, "score_last_step_only": True}).json
    L = Student(problem).run()[3]
    assert grade(client, problem, {"step_losses": [None, 0, L[2]]})["passed"]
    check = grade(client, problem, {"step_losses": [None, None, None]})["checks"][0]
    assert check["passed"] is False and check["error"] == "step_losses[2] is null, but step 2 is scored"


# --- bad requests: 422 with pointers ---

@pytest.mark.parametrize("submission, pointer", [
    ({"gradients": {"W": [[1.0, "2"]]}}, "/submission/gradients/W/0/1"),
    ({"loss": True}, "/submission/loss"),
    ({"hidden": [[1.0, None]]}, "/submission/hidden/0/1"),
    ({"gradients": {"b_h": {"a": 1}}}, "/submission/gradients/b_h"),
    ({"gradients": {"c": [1.0]}}, "/submission/gradients/c"),
    ({"grads": {}}, "/submission/grads"),
    ({}, "/submission"),
    ({"gradients": {}}, "/submission/gradients"),
    ({"loss": 1.0, "gradients": {}}, "/submission/gradients"),
    ({"loss": 10 ** 400}, "/submission/loss"),
])
def test_non_numbers_are_422_with_a_pointer(client, small_body, submission, pointer):
    body = json.dumps({**small_body, "submission": submission})      # json.dumps: any int
    r = client.post("/v1/grade", data=body, content_type="application/json")
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert pointer in [e["pointer"] for e in r.json["errors"]]


def test_nan_in_a_submission_is_422(client, small_body):
    body = json.dumps({**small_body, "submission": {"loss": 1.0}}).replace("1.0}", "NaN}")
    r = client.post("/v1/grade", data=body, content_type="application/json")
    assert r.status_code in (400, 422) and b"NaN" not in r.data.replace(b'"NaN', b"")


@pytest.mark.parametrize("tolerance, pointer", [({"rtol": -1}, "/tolerance/rtol"),
                                                ({"atol": "0"}, "/tolerance/atol"),
                                                ({"eps": 1}, "/tolerance/eps")])
def test_bad_tolerance_is_422(client, small_body, tolerance, pointer):
    r = client.post("/v1/grade", json={**small_body, "submission": {"loss": 1.0}, "tolerance": tolerance})
    assert r.status_code == 422 and r.json["errors"][0]["pointer"] == pointer


def test_problem_over_a_limit_is_413(small_body):
    from service import create_app
    client = create_app({"TESTING": True, "MAX_T": 2}).test_client()
    r = client.post("/v1/grade", json={**small_body, "submission": {"loss": 1.0}})
    assert r.status_code == 413 and "limit of 2" in r.json["detail"]


def test_targets_are_required(client, small_body):
    del small_body["targets"]
    r = client.post("/v1/grade", json={**small_body, "submission": {"loss": 1.0}})
    assert r.status_code == 422 and r.json["errors"][0]["pointer"] == "/targets"


# --- Gradescope ---

def test_gradescope_results_object(client, problems):
    problem = problems["tanh-softmax-tokens"]
    s = Student(problem)
    g = s.gradients(window=1)
    result = grade(client, problem, {"loss": s.loss(), "gradients": {"b_h": g["b_h"].tolist(),
                                                                    "W": [[0.0]]}},
                   format="gradescope")
    assert set(result) == {"score", "max_score", "output", "tests"}
    assert result["score"] == 1.0 and result["max_score"] == 3.0
    tests = {t["name"]: t for t in result["tests"]}
    assert list(tests) == ["loss", "gradients.W", "gradients.b_h"]
    for t in result["tests"]:
        assert set(t) == {"name", "score", "max_score", "status", "output"}
        assert t["max_score"] == 1.0 and t["status"] in ("passed", "failed")
        assert t["score"] == (1.0 if t["status"] == "passed" else 0.0)
    assert tests["loss"]["status"] == "passed"
    assert "expected 4×4, got 1×1" in tests["gradients.W"]["output"]
    assert "only through its own step" in tests["gradients.b_h"]["output"]     # the no_bptt detail


# --- the example request bodies ---

@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("grade_*.json")), ids=lambda p: p.name)
def test_grade_examples_are_answered(client, path):
    r = client.post("/v1/grade", data=path.read_bytes(), content_type="application/json")
    assert r.status_code == 200, r.json


def test_factor_of_a_rounded_submission_is_the_whole_number(client, problems):
    problem = problems["tanh-softmax-tokens"]
    W = Student(problem).gradients()["W"]
    rounded = [[float(f"{3 * x:.6g}") for x in row] for row in W]
    d = by_name(grade(client, problem, {"gradients": {"W": rounded}}, tolerance={"rtol": 1e-4, "atol": 1e-6}))[
        "gradients.W"]["diagnosis"]
    assert d["id"] == "scaled" and d["factor"] == 3.0


def test_grading_over_the_work_budget_is_422(small_body):
    from service import create_app
    client = create_app({"TESTING": True, "MAX_WORK": 10.0}).test_client()
    r = client.post("/v1/grade", json={**small_body, "submission": {"loss": 1.0}})
    assert r.status_code == 422 and r.json["type"] == "/problems/work-budget-exceeded"
    assert "shorter sequence" in r.json["detail"]
