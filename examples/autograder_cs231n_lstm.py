"""A Gradescope autograder for CS231n's `lstm_backward` (assignment 3, rnn_layers.py).

    python examples/autograder_cs231n_lstm.py [--url URL] [--student PATH] [--out results.json] [--seed N]

1. asks the service for a seeded random LSTM layer in CS231n's own layout (POST /v1/problems
   with `layout: cs231n`, `cell: lstm`, `layer: true`, `batch_size`: a minibatch of N
   sequences, and a random upstream ∂L/∂h_t): the weights come as Wx (D×4H), Wh (H×4H) and
   b (4H) with CS231n's gate order i, f, o, g; x is `inputs` (N×T×D), dh is
   `upstream.hidden` (N×T×H); h0 (N×H) is added here, c0 is 0 as in CS231n;
2. runs the student's `lstm_forward(x, h0, Wx, Wh, b)` and `lstm_backward(dh, cache)` in
   ANOTHER PROCESS whose environment has no RNN_API_KEY (the README's autograder pattern: the
   student's code must not be able to ask the service for the answer);
3. grades h, dx, dh0, dWx, dWh and db as they come (POST /v1/grade with `layout: cs231n`: the
   submission in CS231n's names and shapes, format gradescope; the tests renamed to the
   assignment's variable names) and writes results.json, where Gradescope reads it
   (/autograder/results/results.json).

Without --student it grades examples/students/cs231n_lstm.py, whose lstm_backward drops the
cell's carry: the report names the mistake (no_cell_path) on dWx, dWh, db, dh0 and dx.
The grader's key (if the service needs one) is read from $RNN_API_KEY.
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

ASSIGNMENT = {"layout": "cs231n", "cell": "lstm", "layer": True, "batch_size": 3, "input_size": 4, "hidden_size": 5,
              "steps": 6, "weight_scale": 0.8}
NAMES = {"hidden": "h (lstm_forward)", "gradients.inputs": "dx", "gradients.h_init": "dh0",
         "gradients.Wx": "dWx", "gradients.Wh": "dWh", "gradients.b": "db"}


def arrays_of(problem: dict) -> dict:
    """The student's arguments, straight from the problem in CS231n's layout."""
    w = problem["model"]["weights"]
    return {"x": np.array(problem["inputs"]), "h0": np.array(problem["h_init"]), "Wx": np.array(w["Wx"]),
            "Wh": np.array(w["Wh"]), "b": np.array(w["b"]), "dh": np.array(problem["upstream"]["hidden"])}


def submission_of(out: dict) -> dict:
    """The student's results as a submission in CS231n's names."""
    return {"hidden": out["h"].tolist(), "gradients": {
        "inputs": out["dx"].tolist(), "h_init": out["dh0"].tolist(), "Wx": out["dWx"].tolist(),
        "Wh": out["dWh"].tolist(), "b": out["db"].tolist()}}


# What the student's process runs: argv = student.py, arrays in (.npz), arrays out (.npz).
RUNNER = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("student", sys.argv[1])
student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student)
a = np.load(sys.argv[2])
h, cache = student.lstm_forward(a["x"], a["h0"], a["Wx"], a["Wh"], a["b"])
dx, dh0, dWx, dWh, db = student.lstm_backward(a["dh"], cache)
np.savez(sys.argv[3], h=h, dx=dx, dh0=dh0, dWx=dWx, dWh=dWh, db=db)
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
    rng = np.random.default_rng(seed)                      # CS231n's h0: one state per sequence
    problem["h_init"] = np.round(rng.uniform(-0.5, 0.5, (ASSIGNMENT["batch_size"], ASSIGNMENT["hidden_size"])),
                                 6).tolist()
    try:
        out = run_student(student, arrays_of(problem))
        submission = submission_of(out)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        return crashed(f"Your lstm_forward / lstm_backward could not be run:\n{exc}")
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
    parser.add_argument("--student", default=str(HERE / "students" / "cs231n_lstm.py"),
                        help="a .py file defining lstm_forward and lstm_backward (CS231n's signatures)")
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    results = autograde(Client(args.url), Path(args.student).resolve(), args.seed)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"{results['score']:g} / {results['max_score']:g} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
