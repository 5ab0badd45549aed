"""POST /v1/gradcheck and the batched checker behind it, against tests/reference.py's own
forward pass (perturbed losses, complex-step gradients computed here, not by the engine)."""
from __future__ import annotations

import dataclasses
import json
import re
import time

import numpy as np
import pytest

from schemas.gradcheck import GradcheckIn
from schemas.limits import Limits
from service import create_app
from service.api.common import engine_problem
from service.engine import evaluate, gradcheck_cells
from service.engine import gradcheck as gc
from service.engine import rnn

import reference as ref

METHODS = ("central", "forward", "complex_step", "richardson", "taylor")
# (hidden, output, loss, reduction, tokens, h_init, null targets): one of each kind of head
KINDS = {
    "tanh-softmax-tokens": dict(hidden="tanh", output="softmax", loss="cross_entropy",
                                tokens=True, null_targets=True),
    "sigmoid-bce-dense-mean": dict(hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy",
                                   reduction="mean", tokens=False),
    "relu-squared-dense": dict(hidden="relu", output="identity", loss="squared_error",
                               tokens=False, h_init=False),
}
# accuracy each method should reach on these O(1) problems: max |a − n| relative to the
# parameter's largest gradient entry (complex step: relative to each entry, max_rel_error);
# forward differences are O(ε), judged with looser tolerances, which the test passes
ACCURACY = {"central": 1e-6, "forward": 1e-4, "complex_step": 1e-11, "richardson": 1e-8,
            "taylor": 1e-8}


def problem_of(spec: ref.Spec, p: dict) -> rnn.Problem:
    return engine_problem(GradcheckIn.model_validate(ref.body(spec, p)).arrays(Limits()))


def exact_grads(spec: ref.Spec, p: dict) -> dict:
    """Complex-step gradients of every parameter the problem has: with dense inputs, dL/dx_t
    too (v1.1's default for gradcheck)."""
    exact = ref.all_grads(spec, p)
    if spec.inputs is not None:
        exact["inputs"] = ref.complex_step(
            lambda x: ref.run(dataclasses.replace(spec, inputs=x), p)["L"], spec.inputs)
    return exact


def post(client, spec, p, **check):
    return client.post("/v1/gradcheck", json={**ref.body(spec, p), "check": check})


def smooth(kind: str, seed: int = 3, **sizes):
    return ref.random_problem(seed, **{"T": 5, "H": 4, "D": 3, "N": 3, **KINDS[kind], **sizes})


# --- every method, on smooth problems ---

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_passes_with_its_accuracy(client, kind, method):
    spec, p = smooth(kind)
    tol = {"rtol": 1e-4, "atol": 1e-6} if method == "forward" else {}
    r = post(client, spec, p, method=method, **tol)
    assert r.status_code == 200, r.json
    out = r.json
    assert out["passed"] is True and out["method"] == method
    assert out["eps"] == gc.DEFAULT_EPS[method]
    exact = exact_grads(spec, p)                         # independent complex-step gradients
    assert list(out["parameters"]) == list(exact)
    for name, rep in out["parameters"].items():
        assert rep["passed"] and rep["failed"] == 0 and rep["checked"] == exact[name].size
        scale = np.abs(exact[name]).max()
        assert rep["max_abs_error"] <= ACCURACY[method] * scale, (name, rep)
        if method == "complex_step":
            assert rep["max_rel_error"] <= ACCURACY[method], (name, rep)
        at = tuple(rep["worst_index"])
        assert rep["analytic_at_worst"] == pytest.approx(exact[name][at], rel=1e-9, abs=1e-12)
        assert rep["numerical_at_worst"] == pytest.approx(exact[name][at],
                                                          abs=ACCURACY[method] * scale)
        if method == "richardson":
            assert 0 <= rep["error_estimate"] <= 1e-8
        else:
            assert rep["error_estimate"] is None
        if method == "taylor":
            assert rep["convergence_order"] == pytest.approx(2.0, abs=0.2), name
    if method == "taylor":
        assert out["convergence_order"] == pytest.approx(2.0, abs=0.2)


@pytest.mark.parametrize("kind", KINDS)
def test_taylor_order_is_two_along_random_directions(client, kind):
    spec, p = smooth(kind, seed=11, T=6, H=5)
    out = post(client, spec, p, method="taylor", mode="directional", samples=6, seed=2).json
    assert out["passed"]
    for name, rep in out["parameters"].items():
        assert rep["convergence_order"] == pytest.approx(2.0, abs=0.2), name


def test_evaluations_are_counted(client):
    spec, p = smooth("tanh-softmax-tokens")
    sizes = sum(p[k].size for k in ref.PARAMS)
    per_item = {"central": 2, "forward": 1, "complex_step": 1, "richardson": 6, "taylor": 5}
    for method in METHODS:
        out = post(client, spec, p, method=method).json
        assert out["evaluations"] == 1 + per_item[method] * sizes, method     # 1: L(θ)


# --- sample and directional modes ---

@pytest.mark.parametrize("mode", ["sample", "directional"])
def test_sample_and_directional_check_exactly_samples_and_repeat(client, mode):
    spec, p = smooth("tanh-softmax-tokens", H=6, D=5)
    first = post(client, spec, p, mode=mode, samples=7, seed=42)
    again = post(client, spec, p, mode=mode, samples=7, seed=42)
    other = post(client, spec, p, mode=mode, samples=7, seed=43)
    assert first.status_code == 200 and first.json["passed"]
    assert first.get_data() == again.get_data()                  # same seed, same report
    assert first.get_data() != other.get_data()
    assert first.json["samples"] == 7 and first.json["seed"] == 42
    for name, rep in first.json["parameters"].items():
        expected = 7 if mode == "directional" else min(7, p[name].size)
        assert rep["checked"] == expected, name
        assert rep["failed"] == 0
    assert first.json["evaluations"] == 1 + 2 * sum(r["checked"] for r in first.json["parameters"].values())


def test_sampled_indices_are_distinct_seeded_and_per_parameter():
    a = gc.sampled_indices(100, 10, 5, "W")
    assert len(a) == len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 100
    assert np.array_equal(a, np.sort(a))
    assert np.array_equal(a, gc.sampled_indices(100, 10, 5, "W"))
    assert not np.array_equal(a, gc.sampled_indices(100, 10, 6, "W"))       # another seed
    assert not np.array_equal(a, gc.sampled_indices(100, 10, 5, "V"))       # another parameter
    assert np.array_equal(gc.sampled_indices(4, 10, 5, "b_h"), np.arange(4))  # capped at the size
    u = gc.directions((3, 4), 5, 5, "U")
    assert u.shape == (5, 12) and np.allclose(np.linalg.norm(u, axis=1), 1.0)
    assert np.array_equal(u, gc.directions((3, 4), 5, 5, "U"))
    assert not np.allclose(u, gc.directions((3, 4), 5, 6, "U"))


def corrupt(monkeypatch, name, index, by):
    """Make the engine's backward wrong by `by` at one element (or all, index None)."""
    real = rnn.backward

    def wrong(cache, truncate=None):
        g = real(cache, truncate)
        arr = getattr(g, name).copy()
        if index is None:
            arr += by * arr
        else:
            arr[index] += by
        setattr(g, name, arr)
        return g
    monkeypatch.setattr(rnn, "backward", wrong)


def test_one_wrong_element_is_named_not_averaged_away(client, monkeypatch):
    spec, p = smooth("tanh-softmax-tokens", H=6, D=5)
    corrupt(monkeypatch, "W", (4, 1), 1e-4)
    out = post(client, spec, p).json
    assert out["passed"] is False
    w = out["parameters"]["W"]
    assert w["failed"] == 1 and w["worst_index"] == [4, 1] and w["checked"] == 36
    assert w["analytic_at_worst"] - w["numerical_at_worst"] == pytest.approx(1e-4, rel=1e-3)
    assert all(r["passed"] for k, r in out["parameters"].items() if k != "W")


def test_sample_mode_checks_the_elements_it_draws(client, monkeypatch):
    spec, p = smooth("tanh-softmax-tokens", H=6, D=5)
    drawn = gc.sampled_indices(36, 5, 9, "W")
    inside = np.unravel_index(drawn[2], (6, 6))
    outside = np.unravel_index(next(k for k in range(36) if k not in drawn), (6, 6))
    corrupt(monkeypatch, "W", inside, 1e-3)
    rep = post(client, spec, p, mode="sample", samples=5, seed=9, parameters=["W"]).json
    assert rep["parameters"]["W"]["worst_index"] == [int(i) for i in inside]
    assert rep["parameters"]["W"]["failed"] == 1
    monkeypatch.undo()
    corrupt(monkeypatch, "W", outside, 1e-3)
    assert post(client, spec, p, mode="sample", samples=5, seed=9, parameters=["W"]).json["passed"]


def test_a_wrong_gradient_has_taylor_order_one(client, monkeypatch):
    spec, p = smooth("tanh-softmax-tokens")
    corrupt(monkeypatch, "b_h", None, 0.05)                       # 5% too large everywhere
    rep = post(client, spec, p, method="taylor", parameters=["b_h", "U"]).json
    assert rep["parameters"]["b_h"]["convergence_order"] == pytest.approx(1.0, abs=0.2)
    assert rep["parameters"]["b_h"]["passed"] is False
    assert rep["parameters"]["U"]["convergence_order"] == pytest.approx(2.0, abs=0.2)


# --- a relu kink ---

def kinked_problem():
    """relu with unit 0 dead at exactly a_t[0] = 0 on every step (row 0 of V and W and b_h[0]
    are zero) and every other pre-activation well away from 0."""
    for seed in range(100):
        spec, p = ref.random_problem(seed, T=5, H=3, D=4, N=3, hidden="relu", relu_margin=0.0)
        p["V"][0], p["W"][0], p["b_h"][0] = 0.0, 0.0, 0.0
        a = ref.run(spec, p)["a"]
        if np.all(a[:, 0] == 0) and np.min(np.abs(a[:, 1:])) > 0.05 and len(set(spec.tokens)) < 4:
            return spec, p
    raise AssertionError("no kinked problem")


def test_relu_kink_fails_at_its_index(client):
    spec, p = kinked_problem()
    out = post(client, spec, p).json
    assert out["passed"] is False
    b_h = out["parameters"]["b_h"]
    assert b_h["failed"] == 1 and b_h["worst_index"] == [0] and b_h["analytic_at_worst"] == 0.0
    assert abs(b_h["numerical_at_worst"]) > 1e-3
    assert out["parameters"]["V"]["worst_index"][0] == 0
    assert out["parameters"]["W"]["worst_index"][0] == 0
    assert out["parameters"]["U"]["passed"] and out["parameters"]["b_y"]["passed"]


def test_relu_kink_fails_exactly_where_the_perturbation_reaches_the_corner():
    """Per element: V[0, j] fails for the tokens j that occur, and nothing outside row 0."""
    spec, p = kinked_problem()
    problem = problem_of(spec, p)
    cache = rnn.forward(problem)
    g = rnn.backward(cache).V.ravel()
    losses = gc.element_losses(problem, "V", np.arange(g.size), gc.offsets("central", 1e-6), cache)
    n = gc.combine("central", 1e-6, losses, g).values
    failing = np.abs(g - n) > 1e-8 + 1e-5 * np.abs(n)
    expected = np.zeros((3, 4), dtype=bool)
    expected[0, sorted(set(spec.tokens))] = True
    assert np.array_equal(failing.reshape(3, 4), expected)


# --- the batched evaluation against a plain loop over the reference forward pass ---

LOOP_CASES = [
    dict(hidden="tanh", output="softmax", loss="cross_entropy", tokens=True, h_init=False,
         null_targets=True, D=6),                               # unused tokens, late starts
    dict(hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy", tokens=False,
         reduction="mean"),
    dict(hidden="relu", output="identity", loss="squared_error", tokens=False),
    dict(hidden="identity", output="softmax", loss="squared_error", tokens=True, null_targets=True),
]


def loop_changes(spec, p, name, steps):
    """L(θ + s·e_k) − L(θ) by the reference forward, one perturbed model at a time."""
    base = ref.run(spec, p)["L"]
    out = np.zeros((p[name].size, len(steps)), dtype=complex)
    for k in range(p[name].size):
        for i, s in enumerate(steps):
            theta = p[name].astype(complex).ravel()
            theta[k] += s
            out[k, i] = ref.run(spec, {**p, name: theta.reshape(p[name].shape)})["L"] - base
    return out


@pytest.mark.parametrize("case", range(len(LOOP_CASES)))
def test_batched_losses_agree_with_a_plain_loop(case, monkeypatch):
    spec, p = ref.random_problem(case, T=6, H=4, **{"D": 3, "N": 3, **LOOP_CASES[case]})
    problem = problem_of(spec, p)
    cache = rnn.forward(problem)
    monkeypatch.setattr(gc, "CHUNK_ITEMS", 5)                     # several chunks per parameter
    for name in ref.PARAMS:
        flat = np.arange(p[name].size)
        real = np.array([1e-3, -1e-3, 2e-4, 0.7])          # 0.7: past the series, direct
        batched = gc.element_losses(problem, name, flat, real, cache)
        looped = loop_changes(spec, p, name, real).real
        assert np.allclose(batched, looped, rtol=1e-9, atol=1e-13), name
        imag = np.array([1e-20j])
        batched = gc.element_losses(problem, name, flat, imag, cache)
        looped = loop_changes(spec, p, name, imag)
        assert np.allclose(batched.imag / 1e-20, looped.imag / 1e-20, rtol=1e-11, atol=1e-14), name


# --- the compiled steps (gc.FUSED) against the numpy path they replace ---

FUSED_CASES = [(hidden, output, loss, tokens) for hidden in ("tanh", "sigmoid")
               for output, loss in ref.VALID_HEADS for tokens in (True, False)]


def both_paths(monkeypatch, problem, cache, name, steps, numpy_loss_allowed):
    """element_losses with the kernels (which must not fall back to numpy's hidden_change,
    nor to loss_change unless a step is past the series) and without them."""
    def refuse(*args, **kwargs):
        raise AssertionError("the numpy step ran on the fused path")
    flat = np.arange(getattr(problem.weights, name).size)
    with monkeypatch.context() as m:
        m.setattr(gc, "hidden_change", refuse)
        if not numpy_loss_allowed:
            m.setattr(gc, "loss_change", refuse)
        fused = gc.element_losses(problem, name, flat, steps, cache)
    monkeypatch.setattr(gc, "FUSED", False)
    plain = gc.element_losses(problem, name, flat, steps, cache)
    monkeypatch.setattr(gc, "FUSED", True)
    return fused, plain


@pytest.mark.parametrize("hidden, output, loss, tokens", FUSED_CASES)
def test_fused_steps_agree_with_the_numpy_path(monkeypatch, hidden, output, loss, tokens):
    """Same derivatives to ~1e-15 of the largest for the small-step methods; for the large
    steps of taylor and 0.7 the numpy path takes f(x + d) − f(x) for a whole array once any
    element is past the series (cancelling ~1e-16/|d| for its small ones), the kernels
    decide per element or row, so there they agree to that cancellation only."""
    for seed in range(3):
        spec, p = ref.random_problem(seed, T=7, H=6, D=5, N=4, hidden=hidden, output=output,
                                     loss=loss, tokens=tokens, null_targets=seed == 1,
                                     reduction="mean" if seed == 2 else "sum")
        problem = problem_of(spec, p)
        cache = rnn.forward(problem)
        grads = rnn.backward(cache).as_dict()
        for name in gc.HIDDEN_PATH:
            for method in ("central", "forward", "richardson"):
                eps = gc.DEFAULT_EPS[method]
                fused, plain = both_paths(monkeypatch, problem, cache, name,
                                          gc.offsets(method, eps), False)
                g = grads[name].ravel()
                f, o = (gc.combine(method, eps, x, g).values for x in (fused, plain))
                assert np.abs(f - o).max() <= 4e-15 * np.abs(o).max(), (name, method, seed)
            steps = np.concatenate([gc.offsets("taylor", 1e-2), [0.7, -0.3]])
            fused, plain = both_paths(monkeypatch, problem, cache, name, steps, True)
            assert np.allclose(fused, plain, rtol=1e-8, atol=1e-12 * np.abs(plain).max()), name


def test_directional_losses_agree_with_a_plain_loop():
    spec, p = ref.random_problem(7, T=5, H=4, D=3, N=3, tokens=False, null_targets=True)
    problem = problem_of(spec, p)
    cache = rnn.forward(problem)
    base = ref.run(spec, p)["L"]
    for name in ref.PARAMS:
        u = gc.directions(p[name].shape, 3, 1, name)
        steps = np.array([1e-3, -2e-3])
        batched = gc.directional_losses(problem, name, u, steps, cache)
        looped = [[ref.run(spec, {**p, name: p[name] + s * d.reshape(p[name].shape)})["L"] - base
                   for s in steps] for d in u]
        assert np.allclose(batched, looped, rtol=1e-9, atol=1e-13), name


# --- the work budget ---

def big_body(D=64, H=512, T=100):
    r = np.random.default_rng(0)
    w = {"V": r.normal(0, 0.1, (H, D)), "W": r.normal(0, 0.04, (H, H)),
         "U": r.normal(0, 0.1, (D, H)), "b_h": np.zeros(H), "b_y": np.zeros(D)}
    return {"model": {"weights": {k: v.round(4).tolist() for k, v in w.items()}},
            "tokens": r.integers(0, D, T).tolist(), "targets": r.integers(0, D, T).tolist()}


def test_over_budget_is_refused_before_any_work(client, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the check ran")
    monkeypatch.setattr(gc, "gradcheck", no_work)
    data = json.dumps(big_body())                     # 2.7 MB; a full check: hours of work
    start = time.perf_counter()
    r = client.post("/v1/gradcheck", data=data, content_type="application/json")
    elapsed = time.perf_counter() - start
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert r.json["type"] == "/problems/work-budget-exceeded"
    assert "mode=sample with samples ≤" in r.json["detail"]
    assert r.json["errors"][0]["pointer"] == "/check/mode"
    assert elapsed < 1.0, elapsed                      # ~0.04 s here, mostly parsing the body


def test_what_fits_does_fit():
    spec, p = ref.random_problem(1, T=6, H=30, D=10, N=8, tokens=False)
    problem = problem_of(spec, p)       # dense inputs: `inputs` is checked too (v1.1)
    full = gc.estimate(gradcheck_cells.CellSizes.of(problem),
                       gc.CheckSpec(parameters=evaluate.parameters(problem)))[0]
    client = create_app({"TESTING": True, "GRADCHECK_MAX_WORK": full / 2}).test_client()
    r = post(client, spec, p)
    assert r.status_code == 422
    k = int(re.search(r"samples ≤ (\d+)", r.json["detail"]).group(1))
    assert post(client, spec, p, mode="sample", samples=k).status_code == 200
    over = post(client, spec, p, mode="sample", samples=k + 1)
    assert over.status_code == 422 and over.json["errors"][0]["pointer"] == "/check/samples"
    fits = re.search(r"each of (\[.*?\]) fits", r.json["detail"])
    if fits:
        for name in json.loads(fits.group(1).replace("'", '"')):
            assert post(client, spec, p, parameters=[name]).status_code == 200, name


def test_the_default_budget_takes_a_character_rnn_full_check():
    """23,165 parameters (vocabulary 65, H 100, T 25): the bench's large case fits."""
    r = np.random.default_rng(1)
    problem = rnn.Problem(rnn.Weights(np.zeros((100, 65)), np.zeros((100, 100)), np.zeros((65, 100)),
                                      np.zeros(100), np.zeros(65), np.zeros(100)),
                          tokens=r.integers(0, 65, 25), targets=np.eye(65)[r.integers(0, 65, 25)],
                          scored=np.ones(25, dtype=bool), loss="cross_entropy")
    work, evaluations = gc.estimate(gc.Sizes.of(problem),
                                    gc.CheckSpec(parameters=("V", "W", "U", "b_h", "b_y")))
    assert evaluations == 1 + 2 * 23_165
    assert work <= create_app().config["GRADCHECK_MAX_WORK"]


# --- bad requests ---

@pytest.mark.parametrize("check, pointer", [
    ({"method": "secant"}, "/check/method"),
    ({"parameters": ["V", "Q"]}, "/check/parameters/1"),
    ({"parameters": ["V", "V"]}, "/check/parameters"),
    ({"parameters": []}, "/check/parameters"),
    ({"mode": "all"}, "/check/mode"),
    ({"samples": 0}, "/check/samples"),
    ({"eps": 0}, "/check/eps"),
    ({"eps": "1e-6"}, "/check/eps"),
    ({"rtol": -1}, "/check/rtol"),
    ({"seed": -1}, "/check/seed"),
    ({"step": 1e-6}, "/check/step"),
])
def test_bad_check_options_are_422_with_pointers(client, small_body, check, pointer):
    r = client.post("/v1/gradcheck", json={**small_body, "check": check})
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert pointer in [e["pointer"] for e in r.json["errors"]], r.json


def test_targets_are_required(client, small_body):
    del small_body["targets"]
    r = client.post("/v1/gradcheck", json=small_body)
    assert r.status_code == 422 and r.json["errors"][0]["pointer"] == "/targets"


def test_an_overflowing_loss_is_422_not_nan(client):
    spec, p = ref.random_problem(2, hidden="identity", output="identity", loss="squared_error",
                                 tokens=False)
    p["W"] = p["W"] * 1e150
    r = post(client, spec, p)
    assert r.status_code == 422 and r.json["errors"][0]["pointer"] == "/model/weights"
    assert b"NaN" not in r.get_data() and b"Infinity" not in r.get_data()
