"""POST /v1/grade for gated cells, batches and layer mode (issue 14): checks of every field,
the gated-cell and batch diagnoses, and the PrairieLearn / Gradescope result objects.

Every submission is computed by tests/student_cells.py (plain loops, the lecture's formulas,
checked here against central differences of its own forward pass), never by the engine."""
from __future__ import annotations

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from tests.student_cells import StudentCell, central_differences, reorder

RTOL, ATOL = 1e-5, 1e-8

# several random problems of every new kind, from /v1/problems (T ≥ 5: every window distinct)
PROBLEMS = {
    "lstm-batch": {"seed": 21, "cell": "lstm", "batch_size": 3, "input_size": 3, "hidden_size": 3,
                   "output_size": 3, "steps": 5, "weight_scale": 1.0},
    "lstm-tokens-mean": {"seed": 22, "cell": "lstm", "tokens": True, "vocab_size": 4, "hidden_size": 3,
                         "steps": 5, "reduction": "mean", "weight_scale": 1.2},
    "lstm-layer": {"seed": 23, "cell": "lstm", "layer": True, "batch_size": 2, "input_size": 2,
                   "hidden_size": 3, "steps": 5, "weight_scale": 1.0},
    "gru-after-batch-mean": {"seed": 24, "cell": "gru", "batch_size": 2, "input_size": 2, "hidden_size": 3,
                             "steps": 5, "reduction": "batch_mean", "weight_scale": 1.2},
    "gru-before": {"seed": 25, "cell": "gru", "gru_reset": "before", "input_size": 3, "hidden_size": 3,
                   "steps": 5, "output_activation": "identity", "weight_scale": 1.2},
    "rnn-batch-mean": {"seed": 26, "batch_size": 3, "input_size": 2, "hidden_size": 3, "steps": 5,
                       "reduction": "batch_mean", "weight_scale": 1.3},
    "rnn-layer": {"seed": 27, "layer": True, "input_size": 2, "hidden_size": 3, "steps": 5,
                  "weight_scale": 1.3},
    # the lecture's rnn on one sequence (the vanilla engine), for gradients.inputs
    "rnn-one-mean": {"seed": 28, "input_size": 3, "hidden_size": 3, "steps": 5, "reduction": "mean",
                     "weight_scale": 1.3},
}
BATCHED = [n for n, b in PROBLEMS.items() if "batch_size" in b]


@pytest.fixture(scope="module")
def problems():
    from service import create_app
    c = create_app({"TESTING": True}).test_client()
    out = {}
    for name, body in PROBLEMS.items():
        r = c.post("/v1/problems", json=body)
        assert r.status_code == 200, r.json
        out[name] = r.json
    # one batch with per-sequence initial states (B×H h_init and c_init)
    p = dict(out["lstm-batch"])
    rng = np.random.default_rng(5)
    p["h_init"] = rng.uniform(-0.5, 0.5, (3, 3)).tolist()
    p["c_init"] = rng.uniform(-0.5, 0.5, (3, 3)).tolist()
    out["lstm-batch-states"] = p
    return out


def grade(client, problem, submission, **extra):
    r = client.post("/v1/grade", json={**problem, "submission": submission, **extra})
    assert r.status_code == 200, r.json
    return r.json


def by_name(result):
    return {c["name"]: c for c in result["checks"]}


def lists(grads: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in grads.items()}


def full_submission(s: StudentCell, grads=None) -> dict:
    sub = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.answers().items()}
    sub["gradients"] = lists(grads or s.gradients())
    return sub


ALL = list(PROBLEMS) + ["lstm-batch-states"]


# --- the independent student is right ---

@pytest.mark.parametrize("name", ALL)
def test_student_gradients_match_central_differences(problems, name):
    s = StudentCell(problems[name])
    numeric = central_differences(problems[name])
    g = s.gradients()
    assert set(g) == set(numeric)
    for param, value in g.items():
        np.testing.assert_allclose(value, numeric[param], rtol=1e-6, atol=1e-8, err_msg=param)


# --- correct answers pass; no diagnosis ever fires on them ---

@pytest.mark.parametrize("name", ALL)
def test_correct_submission_scores_one(client, problems, name):
    s = StudentCell(problems[name])
    result = grade(client, problems[name], full_submission(s))
    expected = {"loss", "step_losses", "hidden"} | ({"cell"} if s.cell == "lstm" else set()) \
        | (set() if s.layer else {"outputs"}) | {f"gradients.{k}" for k in s.gradients()}
    assert {c["name"] for c in result["checks"]} == expected
    for check in result["checks"]:
        assert check["passed"] and check["diagnosis"] is None and check["error"] is None, check
    assert result["passed"] is True and result["score"] == 1.0


@pytest.mark.parametrize("name", ALL)
def test_float32_rounded_answers_pass_at_rtol_1e_4(client, problems, name):
    s = StudentCell(problems[name])
    sub = full_submission(s)
    f32 = lambda v: np.asarray(v, dtype=np.float32).astype(np.float64).tolist()   # noqa: E731
    sub = {k: ({n: f32(x) for n, x in v.items()} if k == "gradients" else f32(v)) for k, v in sub.items()}
    result = grade(client, problems[name], sub, tolerance={"rtol": 1e-4})
    assert result["score"] == 1.0, [c for c in result["checks"] if not c["passed"]]
    assert all(c["diagnosis"] is None for c in result["checks"])


# --- each mistake, made by the student, is named ---

def _expect_diagnoses(client, problem, mistaken: dict, correct: dict, id_: str, **extra):
    """Every gradient the mistake changes fails with the diagnosis (an all-zero one is `zero`);
    every gradient it leaves equal passes, with no diagnosis."""
    result = by_name(grade(client, problem, {"gradients": lists(mistaken)}))
    named = 0
    for param, value in mistaken.items():
        check = result[f"gradients.{param}"]
        same = np.allclose(value, correct[param], rtol=RTOL, atol=ATOL)
        if same:
            assert check["passed"] and check["diagnosis"] is None, (param, check)
            continue
        assert not check["passed"], (param, check)
        d = check["diagnosis"]
        assert d is not None, (param, check)
        if not np.any(value):
            assert d["id"] == "zero", (param, d)
            continue
        assert d["id"] == id_, (param, d)
        for k, v in extra.items():
            assert d[k] == pytest.approx(v) if isinstance(v, float) else d[k] == v, (param, d)
        assert d["detail"].startswith(f"Your ∂L/∂{param}") and d["detail"].endswith(".")
        named += 1
    assert named >= 2, "the mistake should change several gradients"


@pytest.mark.parametrize("name", ALL)
def test_no_bptt(client, problems, name):
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(window=1), s.gradients(), "no_bptt")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("K", [2, 3])
def test_truncated_bptt_with_its_window(client, problems, name, K):
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(window=K), s.gradients(), "truncated_bptt",
                      window=K)


@pytest.mark.parametrize("name", ALL)
def test_final_loss_only(client, problems, name):
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(last_only=True), s.gradients(), "final_loss_only")


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("lstm")])
@pytest.mark.parametrize("path,id_", [("no_cell", "no_cell_path"), ("no_hidden", "no_hidden_path")])
def test_lstm_paths_left_out(client, problems, name, path, id_):
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(path=path), s.gradients(), id_)


@pytest.mark.parametrize("name", ["rnn-batch-mean", "rnn-layer", "rnn-one-mean"])
def test_no_jacobian_product_on_rnn_batches_and_layers(client, problems, name):
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(path="no_jacobian"), s.gradients(),
                      "no_jacobian_product")


@pytest.mark.parametrize("name,order", [("lstm-batch", "i, f, o, g"), ("lstm-layer", "f, i, g, o"),
                                        ("lstm-tokens-mean", "i, f, o, g"),
                                        ("gru-after-batch-mean", "z, r, n"), ("gru-before", "r, n, z")])
def test_gate_order(client, problems, name, order):
    s = StudentCell(problems[name])
    g = s.gradients()
    mistaken = {k: reorder(g[k], s.cell, order) for k in ("V", "W", "b_h")}
    result = by_name(grade(client, problems[name], {"gradients": lists(mistaken)}))
    for k in mistaken:
        d = result[f"gradients.{k}"]["diagnosis"]
        assert d["id"] == "gate_order" and d["order"] == order, (k, d)
        assert "reorder" in d["detail"]


@pytest.mark.parametrize("name", ["gru-after-batch-mean", "rnn-batch-mean"])
def test_batch_not_averaged(client, problems, name):
    """reduction batch_mean, but the student sums the batch: B times every gradient."""
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(batch_scale=s.B), s.gradients(),
                      "batch_not_averaged", factor=float(s.B))


@pytest.mark.parametrize("name", ["lstm-batch", "lstm-layer", "lstm-batch-states"])
def test_batch_averaged(client, problems, name):
    """reduction sum (or a layer), but the student divides by B."""
    s = StudentCell(problems[name])
    _expect_diagnoses(client, problems[name], s.gradients(batch_scale=1.0 / s.B), s.gradients(),
                      "batch_averaged", factor=1.0 / s.B)


@pytest.mark.parametrize("name", ["lstm-batch", "lstm-layer"])
def test_a_batch_factor_the_reduction_does_not_explain_is_scaled(client, problems, name):
    """B·g on a loss that sums the batch is not 'the batch summed where it is averaged'."""
    s = StudentCell(problems[name])
    result = by_name(grade(client, problems[name], {"gradients": lists({"b_h": s.gradients(batch_scale=s.B)["b_h"]})}))
    d = result["gradients.b_h"]["diagnosis"]
    assert d["id"] == "scaled" and d["factor"] == pytest.approx(s.B)


def test_a_batch_average_on_a_mean_loss_is_scaled(client, problems):
    s = StudentCell(problems["rnn-batch-mean"])
    d = by_name(grade(client, problems["rnn-batch-mean"],
                      {"gradients": lists({"W": s.gradients(batch_scale=1 / s.B)["W"]})}))["gradients.W"]["diagnosis"]
    assert d["id"] == "scaled" and d["factor"] == pytest.approx(1 / s.B)


@pytest.mark.parametrize("name", ["lstm-batch", "gru-before", "rnn-layer"])
def test_sign_transposed_scaled_zero_keep_their_meaning(client, problems, name):
    s = StudentCell(problems[name])
    g = s.gradients()
    sub = {"V": -g["V"], "W": g["W"].T, "b_h": 5.0 * g["b_h"], "h_init": np.zeros_like(g["h_init"])}
    result = by_name(grade(client, problems[name], {"gradients": lists(sub)}))
    ids = {k: result[f"gradients.{k}"]["diagnosis"]["id"] for k in sub}
    assert ids == {"V": "sign_flipped", "W": "transposed", "b_h": "scaled", "h_init": "zero"}
    assert result["gradients.b_h"]["diagnosis"]["factor"] == pytest.approx(5.0)


def test_a_mistake_equal_to_the_correct_gradient_is_no_diagnosis(client, problems):
    """no_bptt leaves U and b_y as they are: submitted, they pass."""
    s = StudentCell(problems["lstm-batch"])
    wrong = s.gradients(window=1)
    result = by_name(grade(client, problems["lstm-batch"], {"gradients": lists({k: wrong[k] for k in ("U", "b_y")})}))
    assert all(c["passed"] and c["diagnosis"] is None for c in result.values())


# --- shapes and fields the problem lacks: failed checks, never a 4xx ---

def test_wrong_shapes_are_failed_checks(client, problems):
    p = problems["lstm-batch"]
    s = StudentCell(p)
    a = s.answers()
    sub = {"hidden": a["hidden"][0].tolist(), "cell": a["cell"].tolist(),
           "step_losses": a["step_losses"].ravel().tolist(),
           "gradients": {"inputs": s.gradients()["inputs"][0].tolist()}}
    result = by_name(grade(client, p, sub))
    assert result["cell"]["passed"] is True
    assert result["hidden"]["error"] == "expected 3×5×3, got 5×3"
    assert result["step_losses"]["error"] == "expected 3×5, got 15 entries"
    assert result["gradients.inputs"]["error"] == "expected 3×5×3, got 5×3"


def test_fields_the_problem_does_not_have_are_failed_checks(client, problems):
    result = by_name(grade(client, problems["rnn-layer"], {
        "outputs": [[0.0]], "cell": [[0.0]], "gradients": {"U": [[0.0]], "c_init": [0.0], "b_hn": [0.0]}}))
    for name in ("outputs", "cell", "gradients.U", "gradients.c_init", "gradients.b_hn"):
        assert result[name]["passed"] is False and result[name]["error"], name


def test_batched_step_losses_with_nulls_on_unscored_steps(client):
    body = {"seed": 3, "batch_size": 2, "cell": "gru", "steps": 4, "score_last_step_only": True}
    p = client.post("/v1/problems", json=body).json
    a = StudentCell(p).answers()
    steps = [[None, None, None, row[-1]] for row in a["step_losses"].tolist()]
    assert grade(client, p, {"step_losses": steps})["passed"] is True
    steps[1][3] = None
    check = grade(client, p, {"step_losses": steps})["checks"][0]
    assert check["passed"] is False and check["error"] == "step_losses[1][3] is null, but step 3 is scored"


# --- PrairieLearn and Gradescope result objects, against their documented structure ---

# docs.prairielearn.com "External Grading", Grading results: score in [0, 1] (required when
# gradable), gradable, message, output, tests[] with name, description, points, max_points,
# message, output
PRAIRIELEARN = {
    "type": "object",
    "required": ["gradable", "score", "tests"],
    "properties": {
        "gradable": {"type": "boolean"}, "score": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": "string"}, "output": {"type": "string"},
        "format_errors": {"type": ["string", "array"]},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["name", "points", "max_points"],
            "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                           "points": {"type": "number", "minimum": 0},
                           "max_points": {"type": "number", "minimum": 0},
                           "message": {"type": "string"}, "output": {"type": "string"}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
# Gradescope autograder specifications, results.json: score, max_score, output, tests[] with
# score, max_score, status (passed / failed), name, output
GRADESCOPE = {
    "type": "object",
    "required": ["tests"],
    "properties": {
        "score": {"type": "number"}, "max_score": {"type": "number"}, "output": {"type": "string"},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["score", "max_score"],
            "properties": {"name": {"type": "string"}, "score": {"type": "number"},
                           "max_score": {"type": "number"}, "output": {"type": "string"},
                           "status": {"enum": ["passed", "failed"]}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}


@pytest.mark.parametrize("fmt,schema", [("prairielearn", PRAIRIELEARN), ("gradescope", GRADESCOPE)])
def test_result_objects_follow_the_documented_structure(client, problems, fmt, schema):
    p = problems["lstm-batch"]
    s = StudentCell(p)
    g = s.gradients()
    wrong = s.gradients(path="no_cell")
    sub = {"loss": s.answers()["loss"], "hidden": [[0.0]],
           "gradients": lists({"V": g["V"], "W": wrong["W"], "b_h": wrong["b_h"]})}
    out = grade(client, p, sub, format=fmt)
    Draft202012Validator(schema).validate(out)
    tests = {t["name"]: t for t in out["tests"]}
    assert list(tests) == ["loss", "hidden", "gradients.V", "gradients.W", "gradients.b_h"]
    if fmt == "prairielearn":
        assert out["gradable"] is True and out["score"] == pytest.approx(2 / 5)
        assert [t["points"] for t in out["tests"]] == [1, 0, 1, 0, 0]
        assert all(t["max_points"] == 1 for t in out["tests"])
        assert tests["gradients.W"]["message"].startswith("Your ∂L/∂W passes the gradient back only through h")
        assert "expected 3×5×3, got 1×1" in tests["hidden"]["message"]
    else:
        assert out["score"] == 2.0 and out["max_score"] == 5.0
        assert [t["status"] for t in out["tests"]] == ["passed", "failed", "passed", "failed", "failed"]
        assert "cell's carry" in tests["gradients.b_h"]["output"]


# --- the same diagnoses in another layout (the submission in the course's names) ---

CS231N_ORDER = [0, 1, 3, 2]             # CS231n's blocks i, f, o, g from the lecture's i, f, g, o


def _cs231n(g: dict) -> dict:
    """The student's lecture-layout gradients written as CS231n's (the test's own mapping)."""
    def cols(m):
        return np.concatenate([np.split(m, 4, axis=0)[j] for j in CS231N_ORDER], axis=0).T
    return {"Wx": cols(g["V"]), "Wh": cols(g["W"]), "b": cols(g["b_h"][:, None])[0],
            "W_vocab": g["U"].T, "b_vocab": g["b_y"], "h_init": g["h_init"], "inputs": g["inputs"]}


def _coursera(g: dict) -> dict:
    return {"Wax": g["V"], "Waa": g["W"], "ba": g["b_h"][:, None], "inputs": np.transpose(g["inputs"], (2, 0, 1))}


LAYOUT_CASES = {
    "cs231n": ({"seed": 41, "cell": "lstm", "batch_size": 2, "input_size": 2, "hidden_size": 3,
                "output_size": 3, "steps": 5, "weight_scale": 1.0}, _cs231n, ("Wx", "Wh", "b")),
    "coursera": ({"seed": 42, "layer": True, "batch_size": 3, "input_size": 2, "hidden_size": 3,
                  "steps": 5, "weight_scale": 1.3}, _coursera, ("Wax", "Waa", "ba")),
}
LAYOUT_MISTAKES = [
    ("cs231n", {"window": 1}, "no_bptt"), ("cs231n", {"window": 3}, "truncated_bptt"),
    ("cs231n", {"path": "no_cell"}, "no_cell_path"), ("cs231n", {"path": "no_hidden"}, "no_hidden_path"),
    ("cs231n", {"last_only": True}, "final_loss_only"), ("cs231n", {"batch_scale": 0.5}, "batch_averaged"),
    ("coursera", {"window": 1}, "no_bptt"), ("coursera", {"window": 2}, "truncated_bptt"),
    ("coursera", {"path": "no_jacobian"}, "no_jacobian_product"),
    ("coursera", {"last_only": True}, "final_loss_only"), ("coursera", {"batch_scale": 1 / 3}, "batch_averaged"),
]


@pytest.mark.parametrize("layout,mistake,id_", LAYOUT_MISTAKES, ids=lambda x: str(x))
def test_diagnoses_in_a_course_layout(client, layout, mistake, id_):
    body, to_layout, names = LAYOUT_CASES[layout]
    lecture = client.post("/v1/problems", json=body).json
    mine = client.post("/v1/problems", json={**body, "layout": layout}).json
    s = StudentCell(lecture)
    wrong = to_layout(s.gradients(**mistake))
    result = by_name(grade(client, mine, {"gradients": lists({n: wrong[n] for n in names})}))
    for n in names:
        d = result[f"gradients.{n}"]["diagnosis"]
        assert d is not None and d["id"] == id_, (n, result[f"gradients.{n}"])
        assert d["detail"].startswith(f"Your ∂L/∂{n} ")
    correct = to_layout(s.gradients())
    assert grade(client, mine, {"gradients": lists(correct)})["score"] == 1.0


def test_over_the_work_budget_only_the_truncation_search_is_skipped(problems):
    """A budget that fits the reference but not one backward per window: truncated_bptt is not
    looked for (no diagnosis), every other mistake still is."""
    from service import create_app
    from service.engine import evaluate, grade as engine_grade
    from service.api.common import engine_problem
    from schemas.grade import GradeIn
    from schemas.limits import Limits

    p = problems["lstm-batch"]
    app = create_app({"TESTING": True})
    with app.app_context():
        problem = engine_problem(GradeIn.model_validate({**p, "submission": {"loss": 0.0}}).arrays(Limits()))
    main, search = evaluate.estimate_work(problem), engine_grade.truncation_search_work(problem)[1]
    assert main < search
    client = create_app({"TESTING": True, "MAX_WORK": (main + search) / 2}).test_client()
    s = StudentCell(p)
    truncated, nb = s.gradients(window=2), s.gradients(window=1)
    result = by_name(grade(client, p, {"gradients": lists({"V": truncated["V"], "W": nb["W"]})}))
    assert not result["gradients.V"]["passed"] and result["gradients.V"]["diagnosis"] is None
    assert result["gradients.W"]["diagnosis"]["id"] == "no_bptt"
    client = create_app({"TESTING": True, "MAX_WORK": search}).test_client()
    d = by_name(grade(client, p, {"gradients": lists({"V": truncated["V"]})}))["gradients.V"]["diagnosis"]
    assert d["id"] == "truncated_bptt" and d["window"] == 2


@pytest.mark.parametrize("name", ALL)
def test_the_runner_carry_hook_that_changes_nothing_is_backward(problems, name):
    """sequence.backward(carry=…) (the grader's hook for the path mistakes): handing back ds_prev
    as it is gives exactly the correct gradients."""
    from service import create_app
    from service.api.common import engine_problem
    from service.engine import sequence
    from schemas.grade import GradeIn
    from schemas.limits import Limits

    with create_app({"TESTING": True}).app_context():
        problem = engine_problem(GradeIn.model_validate({**problems[name], "submission": {"loss": 0.0}})
                                 .arrays(Limits()))
    cache = sequence.forward(problem)
    hooked, _ = sequence.backward(cache, diagnostics=False, carry=lambda t, ds, ds_prev: ds_prev)
    plain, _ = sequence.backward(cache, diagnostics=False)
    assert set(hooked) == set(plain)
    for k in plain:
        np.testing.assert_allclose(hooked[k], plain[k], rtol=1e-12, atol=1e-14, err_msg=k)
    with pytest.raises(ValueError):
        sequence.backward(cache, truncate=2, diagnostics=False, carry=lambda t, ds, ds_prev: ds_prev)
