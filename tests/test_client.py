"""rnnclient, its command line and examples/autograder.py against a live gunicorn on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from rnnclient import ApiError, Client
from tests.servers import Gunicorn, free_port
from tests.student_rnn import Student

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Gunicorn(tmp_path_factory.mktemp("client"), workers=2) as running:
        yield running


@pytest.fixture
def api(server):
    return Client(server.url, timeout=20)


@pytest.fixture(scope="module")
def problem(server):
    return Client(server.url).problems(seed=4, steps=5, hidden_size=3, input_size=2)


def run(*args, stdin: bytes | None = None, timeout: float = 60):
    return subprocess.run([sys.executable, *args], cwd=ROOT, input=stdin, capture_output=True,
                          timeout=timeout)


# --- the client, one method per endpoint ---

def test_health(api):
    assert api.health() == {"status": "ok"}


def test_forward_and_gradients(api, problem):
    forward = api.forward(problem)
    assert len(forward["outputs"]) == 5 and forward["loss"] > 0
    full = api.gradients(problem)
    truncated = api.gradients(problem, truncate=1, include=["b_h_terms"])
    assert full["loss"] == forward["loss"]
    assert len(truncated["bptt"]["b_h_terms"]) == 5
    assert truncated["gradients"]["b_h"] != full["gradients"]["b_h"]
    assert truncated["gradients"]["U"] == full["gradients"]["U"]


def test_gradcheck(api, problem):
    try:
        result = api.gradcheck(problem, {"parameters": ["b_h"]})
    except ApiError as exc:
        if exc.status == 404:
            pytest.skip("this build serves no /v1/gradcheck")
        raise
    assert result["passed"] is True


def test_grade_correct_and_gradescope(api, problem):
    student = Student(problem)
    submission = {"loss": student.loss(),
                  "gradients": {k: v.tolist() for k, v in student.gradients().items()}}
    result = api.grade(problem, submission)
    assert result["score"] == 1.0 and len(result["checks"]) == 7
    wrong = {"gradients": {"b_h": student.gradients(window=1)["b_h"].tolist()}}
    scope = api.grade(problem, wrong, rtol=1e-6, atol=0, format="gradescope")
    assert scope["score"] == 0.0 and scope["max_score"] == 1.0
    assert scope["tests"][0]["status"] == "failed" and "own step" in scope["tests"][0]["output"]


def test_problem_raises_api_error_with_the_problem_json(api, problem):
    with pytest.raises(ApiError) as caught:
        api.grade(problem, {"gradients": {"W": [["x"]]}})
    err = caught.value
    assert err.status == 422 and err.problem["status"] == 422
    assert err.errors[0]["pointer"] == "/submission/gradients/W/0/0"
    assert "/submission/gradients/W/0/0" in str(err)
    with pytest.raises(ApiError) as caught:
        api.post("nowhere", {})
    assert caught.value.status == 404 and caught.value.problem["title"]


def test_a_non_json_error_page_still_raises_api_error():
    response = requests.Response()
    response.status_code, response.reason = 502, "Bad Gateway"
    response._content = b"<html>bad gateway</html>"
    with pytest.raises(ApiError) as caught:
        Client._answer(response)
    assert caught.value.status == 502 and "bad gateway" in caught.value.detail


def test_problems_body_is_sent_as_given(api):
    assert api.problems(seed=7, tokens=True, vocab_size=4, hidden_size=3, output_size=4, steps=4) == \
        json.loads((ROOT / "tests/golden/problems_quiz_tokens.json").read_text())["problem"]


# --- python -m rnnclient ---

def test_cli_posts_a_file_and_prints_the_answer(server, tmp_path):
    body = tmp_path / "p.json"
    body.write_text(json.dumps({"seed": 1, "steps": 3}))
    made = run("-m", "rnnclient", "problems", str(body), "--url", server.url)
    assert made.returncode == 0, made.stderr
    problem = json.loads(made.stdout)
    forward = run("-m", "rnnclient", "forward", "-", "--url", server.url, stdin=made.stdout)
    assert forward.returncode == 0 and len(json.loads(forward.stdout)["outputs"]) == 3
    health = run("-m", "rnnclient", "health", "--url", server.url)
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "ok"
    assert problem["targets"]


def test_cli_exit_codes(server, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": -1}')
    answer = run("-m", "rnnclient", "problems", str(bad), "--url", server.url)
    assert answer.returncode == 1 and json.loads(answer.stderr)["errors"][0]["pointer"] == "/seed"
    bad.write_text("{not json")
    answer = run("-m", "rnnclient", "forward", str(bad), "--url", server.url)
    assert answer.returncode == 1 and json.loads(answer.stderr)["status"] == 400
    assert run("-m", "rnnclient", "forward", str(tmp_path / "missing.json"), "--url", server.url).returncode == 2
    assert run("-m", "rnnclient", "forward", "--url", server.url).returncode == 2
    nobody = f"http://127.0.0.1:{free_port()}"
    assert run("-m", "rnnclient", "health", "--url", nobody).returncode == 3


# --- examples/autograder.py ---

def test_autograder_example_writes_gradescope_results(server, tmp_path):
    out = tmp_path / "results.json"
    done = run("examples/autograder.py", "--url", server.url, "--out", str(out), "--seed", "3")
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["max_score"] == 7 and results["score"] == 3          # loss, U, b_y right
    tests = {t["name"]: t for t in results["tests"]}
    for name in ("V", "W", "b_h", "h_init"):
        assert tests[f"gradients.{name}"]["status"] == "failed"
        assert "product of Jacobians" in tests[f"gradients.{name}"]["output"]


def test_autograder_gives_full_marks_to_a_correct_student(server, tmp_path):
    student = tmp_path / "student.py"
    student.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.student_rnn import Student\n"
        "def rnn_gradients(problem):\n"
        "    s = Student(problem)\n"
        "    return {'loss': s.loss(), 'gradients': {k: v.tolist() for k, v in s.gradients().items()}}\n")
    out = tmp_path / "results.json"
    done = run("examples/autograder.py", "--url", server.url, "--out", str(out), "--student", str(student))
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert results["score"] == results["max_score"] == 7


def test_autograder_reports_a_crashing_student(server, tmp_path):
    student = tmp_path / "student.py"
    student.write_text("def rnn_gradients(problem):\n    raise ValueError('shapes do not align')\n")
    out = tmp_path / "results.json"
    assert run("examples/autograder.py", "--url", server.url, "--out", str(out),
               "--student", str(student)).returncode == 0
    results = json.loads(out.read_text())
    assert results["score"] == 0 and "shapes do not align" in results["tests"][0]["output"]
