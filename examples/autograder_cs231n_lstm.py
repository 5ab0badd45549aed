"""A Gradescope autograder for CS231n's `lstm_backward` (assignment 3, rnn_layers.py).

    python examples/autograder_cs231n_lstm.py [--url URL] [--student PATH] [--out results.json] [--seed N]

1. asks the service for a seeded random LSTM layer (POST /v1/problems with `cell: lstm`,
   `layer: true`, `batch_size`: a minibatch of N sequences and a random upstream ∂L/∂h_t);
2. writes the problem in CS231n's arrays BY HAND (below: `to_cs231n`), runs the student's
   `lstm_forward(x, h0, Wx, Wh, b)` and `lstm_backward(dh, cache)` in ANOTHER PROCESS whose
   environment has no RNN_API_KEY (the README's autograder pattern: the student's code must
   not be able to ask the service for the answer), and maps dx, dh0, dWx, dWh, db back to the
   lecture's names (`from_cs231n`);
3. grades them (POST /v1/grade, format gradescope; the tests renamed to CS231n's names) and
   writes results.json, where Gradescope reads it (/autograder/results/results.json).

The mapping: the lecture stacks the LSTM gates i, f, g, o in V (4H×D), W (4H×H), b_h (4H);
CS231n uses row vectors and the order i, f, o, g: Wx = Vᵀ, Wh = Wᵀ, b = b_h, each with the g
and o blocks swapped. h0 is the problem's h_init (N×H), c0 = 0, x its inputs (N×T×D), dh
its upstream.hidden (N×T×H). (When /v1/grade takes `layout: cs231n` submissions, the problem
and the answer can be sent in CS231n's names instead.)

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

ASSIGNMENT = {"cell": "lstm", "layer": True, "batch_size": 3, "input_size": 4, "hidden_size": 5,
              "steps": 6, "weight_scale": 0.8}
# lecture gate blocks (i, f, g, o) in CS231n's order (i, f, o, g), and back
TO_CS231N = [0, 1, 3, 2]
NAMES = {"hidden": "h (lstm_forward)", "gradients.inputs": "dx", "gradients.h_init": "dh0",
         "gradients.V": "dWx", "gradients.W": "dWh", "gradients.b_h": "db"}


def blocks(a: np.ndarray, order: list[int], axis: int) -> np.ndarray:
    """The 4 gate blocks of `a` along `axis`, in `order`."""
    parts = np.split(a, 4, axis=axis)
    return np.concatenate([parts[j] for j in order], axis=axis)


def to_cs231n(problem: dict) -> dict:
    w = {k: np.array(v) for k, v in problem["model"]["weights"].items()}
    return {"x": np.array(problem["inputs"]), "h0": np.array(problem["h_init"]),
            "Wx": blocks(w["V"].T, TO_CS231N, axis=1), "Wh": blocks(w["W"].T, TO_CS231N, axis=1),
            "b": blocks(w["b_h"], TO_CS231N, axis=0), "dh": np.array(problem["upstream"]["hidden"])}


def from_cs231n(out: dict) -> dict:
    """The student's arrays as a submission in the lecture's names (TO_CS231N is its own inverse)."""
    return {"hidden": out["h"].tolist(), "gradients": {
        "inputs": out["dx"].tolist(), "h_init": out["dh0"].tolist(),
        "V": blocks(out["dWx"], TO_CS231N, axis=1).T.tolist(),
        "W": blocks(out["dWh"], TO_CS231N, axis=1).T.tolist(),
        "b_h": blocks(out["db"], TO_CS231N, axis=0).tolist()}}


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
        out = run_student(student, to_cs231n(problem))
        submission = from_cs231n(out)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        return crashed(f"Your lstm_forward / lstm_backward could not be run:\n{exc}")
    try:
        results = client.grade(problem, submission, rtol=1e-6, atol=1e-9, format="gradescope")
    except ApiError as exc:                                 # e.g. NaN in an answer
        return crashed(f"Your answer could not be graded: {exc}")
    for test in results["tests"]:                           # the checks in CS231n's names
        lecture = test["name"]
        test["name"] = NAMES.get(lecture, lecture)
        test["output"] = f"[{lecture} in the lecture's layout] " + test["output"]
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
