"""A Gradescope autograder for Coursera's `rnn_backward` (Deep Learning Specialization, course 5,
week 1, "Building your Recurrent Neural Network - Step by Step").

    python examples/autograder_coursera_rnn.py [--url URL] [--student PATH] [--out results.json] [--seed N]

1. asks the service for a seeded random RNN layer in Coursera's own layout (POST /v1/problems
   with `layout: coursera`, `layer: true`, `batch_size`: m sequences and a random upstream
   ∂L/∂a⟨t⟩): column vectors, time last: x is `inputs` (n_x×m×T_x), da is `upstream.hidden`
   (n_a×m×T_x), the weights Wax, Waa and ba (n_a×1); a0 (n_a×m) is added here, and Wya, by,
   which the layer's gradients do not involve, are zeros;
2. runs the student's `rnn_forward(x, a0, parameters)` and `rnn_backward(da, caches)` in
   ANOTHER PROCESS whose environment has no RNN_API_KEY (the README's autograder pattern: the
   student's code must not be able to ask the service for the answer);
3. grades a, dx, da0, dWax, dWaa and dba as they come (POST /v1/grade with `layout: coursera`:
   the submission in Coursera's names and shapes, format gradescope; the tests renamed to
   the assignment's names) and writes results.json, where Gradescope reads it
   (/autograder/results/results.json).

Without --student it grades examples/students/coursera_rnn.py, whose rnn_backward forgets
to add da_prevt to each step's da: the report names the mistake (no_bptt) on dWax, dWaa, dba,
da0 and dx. The grader's key (if the service needs one) is read from $RNN_API_KEY.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))                     # rnnclient, from a checkout
from rnnclient import ApiError, Client, DEFAULT_URL  # noqa: E402

ASSIGNMENT = {"layout": "coursera", "layer": True, "batch_size": 3, "input_size": 4, "hidden_size": 5, "steps": 6,
              "weight_scale": 0.8}
N_Y = 2                                                    # the (unused) output layer's size
NAMES = {"hidden": "a (rnn_forward)", "gradients.inputs": "dx", "gradients.h_init": "da0",
         "gradients.Wax": "dWax", "gradients.Waa": "dWaa", "gradients.ba": "dba"}


def arrays_of(problem: dict) -> dict:
    """The student's arguments, straight from the problem in Coursera's layout."""
    w = {k: np.array(v) for k, v in problem["model"]["weights"].items()}
    n_a = w["Waa"].shape[0]
    return {"x": np.array(problem["inputs"]), "a0": np.array(problem["h_init"]), "Wax": w["Wax"],
            "Waa": w["Waa"], "ba": w["ba"], "Wya": np.zeros((N_Y, n_a)), "by": np.zeros((N_Y, 1)),
            "da": np.array(problem["upstream"]["hidden"])}


def submission_of(out: dict) -> dict:
    """The student's results as a submission in Coursera's names."""
    return {"hidden": out["a"].tolist(), "gradients": {
        "inputs": out["dx"].tolist(), "h_init": out["da0"].tolist(), "Wax": out["dWax"].tolist(),
        "Waa": out["dWaa"].tolist(), "ba": out["dba"].tolist()}}


# What the student's process runs: argv = student.py, arrays in (.npz), arrays out (.npz).
RUNNER = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("student", sys.argv[1])
student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student)
a = np.load(sys.argv[2])
parameters = {k: a[k] for k in ("Wax", "Waa", "Wya", "ba", "by")}
a_all, y_pred, caches = student.rnn_forward(a["x"], a["a0"], parameters)
g = student.rnn_backward(a["da"], caches)
np.savez(sys.argv[3], a=a_all, **{k: g[k] for k in ("dx", "da0", "dWax", "dWaa", "dba")})
"""


def run_student(student: Path, arrays: dict, timeout: float = 60.0) -> dict:
    """The student's functions in a separate process without the grader's key; raises
    RuntimeError with the student's traceback when they fail."""
    env = {k: v for k, v in os.environ.items() if k != "RNN_API_KEY"}
    with tempfile.TemporaryDirectory() as tmp:
        given, got = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(given, **arrays)
        r = subprocess.run([sys.executable, "-c", RUNNER, str(student), str(given), str(got)],
                           env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:] or f"exit code {r.returncode}")
        with np.load(got) as out:
            return {k: np.asarray(out[k], dtype=float) for k in out.files}


def crashed(message: str) -> dict:
    return {"score": 0.0, "max_score": 1.0, "output": message,
            "tests": [{"name": "runs", "score": 0.0, "max_score": 1.0, "status": "failed", "output": message}]}


def autograde(client: Client, student: Path, seed: int) -> dict:
    problem = client.problems(seed=seed, **ASSIGNMENT)
    rng = np.random.default_rng(seed)                      # Coursera's a0 (n_a×m): one state per sequence
    problem["h_init"] = np.round(rng.uniform(-0.5, 0.5, (ASSIGNMENT["hidden_size"], ASSIGNMENT["batch_size"])),
                                 6).tolist()
    try:
        out = run_student(student, arrays_of(problem))
        submission = submission_of(out)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        return crashed(f"Your rnn_forward / rnn_backward could not be run:\n{exc}")
    try:
        results = client.grade(problem, submission, rtol=1e-6, atol=1e-9, format="gradescope")
    except ApiError as exc:                                 # e.g. NaN in an answer
        return crashed(f"Your answer could not be graded: {exc}")
    for test in results["tests"]:                           # the assignment's variable names
        test["name"] = NAMES.get(test["name"], test["name"])
    results["output"] = f"Problem seed {seed}. " + results["output"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--student", default=str(HERE / "students" / "coursera_rnn.py"),
                        help="a .py file defining rnn_forward and rnn_backward (Coursera's signatures)")
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    results = autograde(Client(args.url), Path(args.student).resolve(), args.seed)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"{results['score']:g} / {results['max_score']:g} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
