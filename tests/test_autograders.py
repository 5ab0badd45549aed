"""examples/autograder_cs231n_lstm.py and examples/autograder_coursera_rnn.py end to end against
a live gunicorn: the shipped students' bugs are named, the fixed students score full marks, the
results are Gradescope's structure, and the student's process never sees the grader's key."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.servers import ROOT, Gunicorn
from tests.test_grade_cells import GRADESCOPE

EXAMPLES = ROOT / "examples"
CASES = {
    "cs231n": ("autograder_cs231n_lstm.py", "cs231n_lstm.py", "no_cell_path",
               ("        dprev_c = np.zeros_like(dprev_c)        # BUG: the cell's carry is dropped here\n", ""),
               ["h (lstm_forward)", "dWx", "dWh", "db", "dh0", "dx"]),
    "coursera": ("autograder_coursera_rnn.py", "coursera_rnn.py", "no_bptt",
                 ("rnn_cell_backward(da[:, :, t], caches[t])", "rnn_cell_backward(da[:, :, t] + da_prevt, caches[t])"),
                 ["a (rnn_forward)", "dWax", "dWaa", "dba", "da0", "dx"]),
}
DETAIL = {"no_cell_path": "passes the gradient back only through h", "no_bptt": "only through its own step"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with Gunicorn(tmp_path_factory.mktemp("autograders"), workers=2) as server:
        yield server.url


def run(script: str, url: str, out: Path, *extra, env=None) -> dict:
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--url", url, "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    Draft202012Validator(GRADESCOPE).validate(results)
    return results


@pytest.mark.parametrize("course", list(CASES))
def test_the_shipped_student_gets_its_mistake_named(live, tmp_path, course):
    script, _, mistake, _, names = CASES[course]
    results = run(script, live, tmp_path / "results.json")
    tests = {t["name"]: t for t in results["tests"]}
    assert sorted(tests) == sorted(names)
    assert results["score"] == 1.0 and results["max_score"] == 6.0       # the forward pass is right
    assert tests[names[0]]["status"] == "passed"
    for name in names[1:]:
        assert tests[name]["status"] == "failed" and DETAIL[mistake] in tests[name]["output"], tests[name]
    field = {"cs231n": "Wx", "coursera": "Wax"}[course]                  # the detail in the course's names
    assert f"Your ∂L/∂{field} " in tests["d" + field]["output"]


@pytest.mark.parametrize("course", list(CASES))
def test_the_fixed_student_scores_full_marks(live, tmp_path, course):
    script, student, _, (bug, fix), _ = CASES[course]
    source = (EXAMPLES / "students" / student).read_text()
    assert bug in source
    fixed = tmp_path / student
    fixed.write_text(source.replace(bug, fix))
    results = run(script, live, tmp_path / "results.json", "--student", str(fixed), "--seed", "7")
    assert results["score"] == results["max_score"] == 6.0, results


@pytest.mark.parametrize("course", list(CASES))
def test_the_students_process_has_no_api_key(live, tmp_path, course):
    script, student, _, _, _ = CASES[course]
    spy = tmp_path / student
    seen = tmp_path / "seen.txt"
    spy.write_text((EXAMPLES / "students" / student).read_text() +
                   f"\nimport os\nopen({str(seen)!r}, 'w').write(os.environ.get('RNN_API_KEY', 'none'))\n")
    run(script, live, tmp_path / "results.json", "--student", str(spy),
        env={**os.environ, "RNN_API_KEY": "grader-secret"})
    assert seen.read_text() == "none"


def test_a_student_that_crashes_gets_a_failed_test(live, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def lstm_forward(*a):\n    raise ValueError('not done yet')\n")
    results = run("autograder_cs231n_lstm.py", live, tmp_path / "results.json", "--student", str(broken))
    assert results["score"] == 0.0 and "not done yet" in results["tests"][0]["output"]
