"""POST /v1/problems: seeded, pinned by golden files, accepted as is by every endpoint."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests" / "golden").glob("problems_*.json"))
HEADS = (("softmax", "cross_entropy"), ("softmax", "squared_error"),
         ("sigmoid", "binary_cross_entropy"), ("sigmoid", "squared_error"),
         ("identity", "squared_error"))


def make(client, body):
    r = client.post("/v1/problems", json=body)
    assert r.status_code == 200, r.json
    return r.json


def numbers(tree):
    if isinstance(tree, list):
        for x in tree:
            yield from numbers(x)
    elif isinstance(tree, float):
        yield tree


# --- the same body gives the same problem, pinned across machines and releases ---

def test_there_are_golden_files():
    assert len(GOLDEN) >= 5


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_problem_is_reproduced_exactly(client, path):
    golden = json.loads(path.read_text())
    r = client.post("/v1/problems", json=golden["body"])
    assert r.status_code == 200
    assert r.json == golden["problem"]                      # floats compared exactly
    assert json.loads(r.data) == golden["problem"]


def test_same_body_same_problem_and_seed_matters(client):
    body = {"seed": 42, "steps": 6, "hidden_size": 5}
    first = client.post("/v1/problems", json=body).data
    assert client.post("/v1/problems", json=body).data == first
    assert client.post("/v1/problems", json={**body, "seed": 43}).data != first


def test_draws_follow_the_documented_order(client):
    """The docstring's recipe, coded here: one raw PCG64 draw per number, V first, then W,
    U, b_h, b_y, inputs, targets; uniform = lo + (hi − lo)·(raw >> 11)·2⁻⁵³ to 6 digits."""
    seed, H, D, N, T, s = 2024, 2, 3, 2, 3, 0.25
    raw = [int(r) for r in np.random.PCG64(seed).random_raw(H * D + H * H + N * H + H + N + T * D + T)]
    uniform = [lambda r, lo, hi: float(f"{lo + (hi - lo) * ((r >> 11) * 2.0 ** -53):.6g}") + 0.0][0]
    p = make(client, {"seed": seed, "input_size": D, "hidden_size": H, "output_size": N, "steps": T,
                      "weight_scale": s})
    w = p["model"]["weights"]
    flat = [x for row in w["V"] for x in row] + [x for row in w["W"] for x in row] + \
           [x for row in w["U"] for x in row] + w["b_h"] + w["b_y"]
    assert flat == [uniform(r, -s, s) for r in raw[:len(flat)]]
    rest = raw[len(flat):]
    assert [x for row in p["inputs"] for x in row] == [uniform(r, -1.0, 1.0) for r in rest[:T * D]]
    assert p["targets"] == [r % N for r in rest[T * D:]]


def test_last_step_only_changes_nothing_but_the_targets(client):
    body = {"seed": 9, "steps": 5, "loss": "squared_error"}
    every = make(client, body)
    last = make(client, {**body, "score_last_step_only": True})
    assert last["targets"] == [None] * 4 + every["targets"][-1:]
    assert {k: v for k, v in last.items() if k != "targets"} == \
           {k: v for k, v in every.items() if k != "targets"}


def test_values_are_short_and_in_range(client):
    p = make(client, {"seed": 3, "weight_scale": 0.1, "input_size": 6, "hidden_size": 6, "steps": 8,
                      "output_activation": "sigmoid"})
    weights = list(numbers(list(p["model"]["weights"].values())))
    assert all(-0.1 <= x <= 0.1 and float(f"{x:.6g}") == x for x in weights)
    assert len(set(weights)) == len(weights)
    assert all(-1 <= x < 1 for x in numbers(p["inputs"]))
    assert set(numbers(p["targets"])) == {0.0, 1.0}                # binary targets


def test_tokens_problem_has_tokens_in_range(client):
    p = make(client, {"seed": 1, "tokens": True, "vocab_size": 7, "steps": 50})
    assert "inputs" not in p and len(p["tokens"]) == 50
    assert set(p["tokens"]) <= set(range(7)) and len(set(p["tokens"])) > 3
    assert len(p["model"]["weights"]["V"][0]) == 7


# --- every problem is accepted by every endpoint, as it is ---

BODIES = [{"seed": i, "tokens": tokens, "hidden_activation": hidden, "output_activation": out,
           "loss": loss, "score_last_step_only": last, "reduction": "mean" if i % 3 == 0 else "sum",
           **({"vocab_size": 4} if tokens else {"input_size": 2}), "steps": 3 + i % 4}
          for i, (hidden, (out, loss), tokens, last) in enumerate(itertools.product(
              ("tanh", "sigmoid", "relu", "identity"), HEADS, (True, False), (False, True)))]


def test_every_problem_is_accepted_by_every_endpoint(app, client):
    served = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/v1/forward", "/v1/gradients", "/v1/grade"} <= served
    for body in BODIES:
        problem = make(client, body)
        forward = client.post("/v1/forward", json=problem)
        assert forward.status_code == 200, (body, forward.json)
        assert client.post("/v1/gradients", json=problem).status_code == 200, body
        if "/v1/gradcheck" in served:
            r = client.post("/v1/gradcheck", json=problem)
            assert r.status_code == 200, (body, r.json)
        graded = client.post("/v1/grade", json={**problem, "submission": {"loss": forward.json["loss"]}})
        assert graded.status_code == 200 and graded.json["score"] == 1.0, body


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("problems_*.json")), ids=lambda p: p.name)
def test_problems_examples_give_problems(client, path):
    r = client.post("/v1/problems", data=path.read_bytes(), content_type="application/json")
    assert r.status_code == 200 and r.json["targets"]


# --- bad bodies ---

@pytest.mark.parametrize("body, pointer", [
    ({"tokens": True}, "/vocab_size"),
    ({"tokens": True, "vocab_size": 3, "input_size": 3}, "/input_size"),
    ({"vocab_size": 3}, "/vocab_size"),
    ({"output_activation": "identity", "loss": "cross_entropy"}, "/loss"),
    ({"seed": -1}, "/seed"),
    ({"steps": 0}, "/steps"),
    ({"weight_scale": 0}, "/weight_scale"),
    ({"hidden_activation": "gelu"}, "/hidden_activation"),
    ({"sed": 1}, "/sed"),
    ({"seed": "1"}, "/seed"),
])
def test_bad_body_is_422_with_pointer(client, body, pointer):
    r = client.post("/v1/problems", json=body)
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert pointer in [e["pointer"] for e in r.json["errors"]]


def test_over_a_size_limit_is_413(client):
    r = client.post("/v1/problems", json={"steps": 10_001})
    assert r.status_code == 413 and "10000" in r.json["detail"].replace(",", "")
    assert r.json["errors"][0]["pointer"] == "/steps"


def test_a_problem_too_big_to_send_back_is_413(client):
    r = client.post("/v1/problems", json={"hidden_size": 4096, "input_size": 4096})
    assert r.status_code == 413 and "request body" in r.json["detail"]


# --- v1.1 kinds: cell, gru_reset, batch_size, layer ---

def _uniform(r, lo, hi):
    return float(f"{lo + (hi - lo) * ((r >> 11) * 2.0 ** -53):.6g}") + 0.0


def test_v11_draws_follow_the_documented_order(client):
    """The docstring's v1.1 order, coded here: V (G·H×D), W (G·H×H), U, b_h (G·H), b_y, then
    the B×T×D inputs sequence by sequence, B×T targets, then b_hn (gru after)."""
    seed, G, H, D, N, T, B, s = 77, 3, 2, 2, 3, 3, 2, 0.5
    raw = [int(r) for r in np.random.PCG64(seed).random_raw(10_000)]
    p = make(client, {"seed": seed, "cell": "gru", "batch_size": B, "input_size": D, "hidden_size": H,
                      "output_size": N, "steps": T})
    w = p["model"]["weights"]
    flat = lambda m: [x for row in m for x in row]                 # noqa: E731
    got = flat(w["V"]) + flat(w["W"]) + flat(w["U"]) + w["b_h"] + w["b_y"]
    n = len(got)
    assert n == G * H * D + G * H * H + N * H + G * H + N
    assert got == [_uniform(r, -s, s) for r in raw[:n]]
    assert [x for seq in p["inputs"] for row in seq for x in row] == \
        [_uniform(r, -1.0, 1.0) for r in raw[n:n + B * T * D]]
    n += B * T * D
    assert p["targets"] == [[r % N for r in raw[n + b * T:n + (b + 1) * T]] for b in range(B)]
    n += B * T
    assert w["b_hn"] == [_uniform(r, -s, s) for r in raw[n:n + H]]
    assert p["model"]["cell"] == "gru" and "gru_reset" not in p["model"]


def test_layer_draws_no_output_layer_and_an_upstream_last(client):
    seed, H, D, T = 78, 2, 2, 3
    raw = [int(r) for r in np.random.PCG64(seed).random_raw(10_000)]
    p = make(client, {"seed": seed, "layer": True, "input_size": D, "hidden_size": H, "steps": T})
    w = p["model"]["weights"]
    assert set(w) == {"V", "W", "b_h"} and "targets" not in p and "loss" not in p
    n = H * D + H * H + H + T * D
    assert [x for row in p["upstream"]["hidden"] for x in row] == \
        [_uniform(r, -1.0, 1.0) for r in raw[n:n + T * H]]


def test_the_lecture_rnn_draws_are_unchanged_by_v11(client):
    """batch_size 1 is a batch of one: sequence 0 is the one-sequence problem's."""
    one = make(client, {"seed": 5, "steps": 4})
    batch = make(client, {"seed": 5, "steps": 4, "batch_size": 1})
    assert batch["model"] == one["model"]
    assert batch["inputs"] == [one["inputs"]] and batch["targets"] == [one["targets"]]


V11_BODIES = [
    {"seed": 1, "cell": "lstm"}, {"seed": 2, "cell": "lstm", "batch_size": 3, "reduction": "batch_mean"},
    {"seed": 3, "cell": "lstm", "layer": True, "batch_size": 2},
    {"seed": 4, "cell": "lstm", "tokens": True, "vocab_size": 5, "score_last_step_only": True, "batch_size": 2},
    {"seed": 5, "cell": "gru"}, {"seed": 6, "cell": "gru", "gru_reset": "before", "batch_size": 2},
    {"seed": 7, "cell": "gru", "layer": True}, {"seed": 8, "cell": "gru", "gru_reset": "before", "layer": True},
    {"seed": 9, "batch_size": 4, "reduction": "mean", "hidden_activation": "relu"},
    {"seed": 10, "layer": True, "batch_size": 2, "tokens": True, "vocab_size": 3},
    {"seed": 11, "cell": "gru", "batch_size": 2, "output_activation": "sigmoid"},
    {"seed": 12, "layout": "cs231n", "cell": "lstm", "batch_size": 2, "reduction": "batch_mean"},
    {"seed": 13, "layout": "coursera", "layer": True, "batch_size": 2},
    {"seed": 14, "layout": "pytorch", "cell": "gru", "batch_size": 2},
    {"seed": 15, "layout": "min-char-rnn", "tokens": True, "vocab_size": 4},
]


@pytest.mark.parametrize("body", V11_BODIES, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_every_v11_kind_is_accepted_as_it_is_by_every_endpoint(client, body):
    problem = make(client, body)
    forward = client.post("/v1/forward", json=problem)
    assert forward.status_code == 200, forward.json
    grads = client.post("/v1/gradients", json=problem)
    assert grads.status_code == 200, grads.json
    check = client.post("/v1/gradcheck", json=problem)
    assert check.status_code == 200 and check.json["passed"] is True, check.json
    g = grads.json
    sub = {"loss": g["loss"], "step_losses": g["step_losses"], "hidden": g["hidden"], "gradients": g["gradients"]}
    for name in ("outputs", "cell"):
        if g.get(name) is not None:
            sub[name] = g[name]
    graded = client.post("/v1/grade", json={**problem, "submission": sub})
    assert graded.status_code == 200 and graded.json["score"] == 1.0, graded.json
    assert len(graded.json["checks"]) == 3 + len(g["gradients"]) + sum(n in sub for n in ("outputs", "cell"))


@pytest.mark.parametrize("body, pointer", [
    ({"cell": "lstm", "hidden_activation": "relu"}, "/hidden_activation"),
    ({"gru_reset": "before"}, "/gru_reset"),
    ({"cell": "gru", "gru_reset": "sideways"}, "/gru_reset"),
    ({"cell": "cnn"}, "/cell"),
    ({"batch_size": 0}, "/batch_size"),
    ({"layer": True, "loss": "squared_error"}, "/loss"),
    ({"layer": True, "reduction": "mean"}, "/reduction"),
    ({"layer": True, "output_size": 3}, "/output_size"),
    ({"layer": True, "score_last_step_only": True}, "/score_last_step_only"),
])
def test_bad_v11_body_is_422_with_pointer(client, body, pointer):
    r = client.post("/v1/problems", json=body)
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert pointer in [e["pointer"] for e in r.json["errors"]]


def test_a_batch_over_the_limit_is_413(client):
    r = client.post("/v1/problems", json={"batch_size": 1_025})
    assert r.status_code == 413 and r.json["errors"][0]["pointer"] == "/batch_size"
