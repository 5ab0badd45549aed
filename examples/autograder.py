"""A complete Gradescope autograder for a "write BPTT for a vanilla RNN" assignment.

    python examples/autograder.py [--url URL] [--student PATH] [--out results.json] [--seed N]

1. asks the service for a seeded random problem (POST /v1/problems: a character-level RNN,
   tanh hidden units, softmax outputs, cross-entropy);
2. runs the student's `rnn_gradients(problem) -> {"loss": ..., "gradients": {...}}` on it
   (from --student, e.g. /autograder/submission/student.py on Gradescope);
3. grades the answer (POST /v1/grade with format gradescope) and writes results.json, where
   Gradescope reads it (/autograder/results/results.json).

Without --student it grades the built-in student below, whose BPTT forgets the product of
Jacobians ∂h_i/∂h_{i−1}: the report names that mistake (no_jacobian_product) for V, W, b_h
and h_init. Needs only `requests` and numpy, and the rnnclient package next to this folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # rnnclient, from a checkout
from rnnclient import ApiError, Client, DEFAULT_URL  # noqa: E402

ASSIGNMENT = {"tokens": True, "vocab_size": 5, "hidden_size": 4, "output_size": 5, "steps": 6,
              "hidden_activation": "tanh", "output_activation": "softmax", "weight_scale": 0.8}


def builtin_student(problem: dict) -> dict:
    """A student's numpy BPTT for tanh/softmax/cross-entropy, with one bug (marked)."""
    w = {k: np.array(v, dtype=float) for k, v in problem["model"]["weights"].items()}
    V, W, U = w["V"], w["W"], w["U"]
    H, D = V.shape
    h = [np.zeros(H)]
    probs, loss = [], 0.0
    for t, token in enumerate(problem["tokens"]):
        h.append(np.tanh(V[:, token] + W @ h[-1] + w["b_h"]))
        z = U @ h[-1] + w["b_y"]
        p = np.exp(z - z.max())
        probs.append(p / p.sum())
        if problem["targets"][t] is not None:
            loss -= np.log(probs[-1][problem["targets"][t]])
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    grads["h_init"] = np.zeros(H)
    for t, target in enumerate(problem["targets"]):
        if target is None:
            continue
        dz = probs[t].copy()
        dz[target] -= 1.0
        grads["U"] += np.outer(dz, h[t + 1])
        grads["b_y"] += dz
        dh = U.T @ dz
        for k in range(t, -1, -1):
            da = dh * (1.0 - h[k + 1] ** 2)
            grads["V"][:, problem["tokens"][k]] += da
            grads["W"] += np.outer(da, h[k])
            grads["b_h"] += da
            if k == 0:
                grads["h_init"] += W.T @ da
            # BUG: dh should become W.T @ da here (the chain through h_{k-1}); it stays unchanged
    return {"loss": float(loss), "gradients": {k: v.tolist() for k, v in grads.items()}}


def load_student(path: str | None):
    if path is None:
        return builtin_student
    spec = importlib.util.spec_from_file_location("student", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rnn_gradients


def crashed(message: str) -> dict:
    """Gradescope results for a submission that could not be graded at all."""
    return {"score": 0.0, "max_score": 1.0, "output": message,
            "tests": [{"name": "runs", "score": 0.0, "max_score": 1.0, "status": "failed",
                       "output": message}]}


def autograde(client: Client, student, seed: int) -> dict:
    problem = client.problems(seed=seed, **ASSIGNMENT)
    try:
        answer = student(problem)
    except Exception:                                   # the student's code, not ours, failed
        return crashed("Your rnn_gradients raised an exception:\n" + traceback.format_exc(limit=3))
    try:
        results = client.grade(problem, answer, rtol=1e-6, atol=1e-9, format="gradescope")
    except ApiError as exc:                             # e.g. a string where a number belongs
        return crashed(f"Your answer could not be graded: {exc}")
    results["output"] = f"Problem seed {seed}. " + results["output"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--student", help="a .py file defining rnn_gradients(problem)")
    parser.add_argument("--out", default="results.json")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    results = autograde(Client(args.url), load_student(args.student), args.seed)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"{results['score']:g} / {results['max_score']:g} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
