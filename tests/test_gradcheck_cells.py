"""Gradient checking of the v1.1 problems (service.engine.gradcheck_cells): lstm, gru after and
before, batches, layer mode, dense-input gradients; every method × mode, wrong gradients
found at their index, the batched paths against a plain loop of sequence.forward on
perturbed copies built here, and the work budget."""
from __future__ import annotations

import time

import numpy as np
import pytest

from service.engine import gradcheck as gc
from service.engine import gradcheck_cells as gcc
from service.engine import rnn, sequence
from service.engine.problem import GATES, PARAMETERS, Problem, Weights

METHODS = ("central", "forward", "complex_step", "richardson", "taylor")
MODES = ("full", "sample", "directional")
HEADS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "squared_error": "identity"}
# one of each kind: cells, batch or not, tokens or dense, shared or per-sequence initial
# states, every reduction, heads, layer mode with and without an output layer
CASES = {
    "lstm-tokens": dict(cell="lstm", tokens=True, D=5),
    "lstm-batch-mean": dict(cell="lstm", B=3, per_sequence_init=True, reduction="mean",
                            loss="binary_cross_entropy"),
    "gru-after": dict(cell="gru", loss="squared_error"),
    "gru-before-batch": dict(cell="gru", reset="before", B=2, tokens=True, reduction="batch_mean"),
    "lstm-layer-batch": dict(cell="lstm", B=2, layer=True, output_layer=False),
    "gru-after-layer": dict(cell="gru", layer=True),
    "rnn-batch": dict(cell="rnn", B=2, act="sigmoid"),
    "rnn-inputs": dict(cell="rnn"),
}
# max |a − n| relative to the parameter's largest gradient entry, per method
ACCURACY = {"central": 1e-7, "forward": 1e-4, "complex_step": 1e-12, "richardson": 1e-9,
            "taylor": 1e-7}


def make(cell="rnn", reset="after", B=None, T=4, H=3, D=3, N=4, tokens=False, act="tanh",
         loss="cross_entropy", reduction="sum", layer=False, output_layer=True,
         per_sequence_init=False, seed=0) -> Problem:
    rng = np.random.default_rng([seed, 5])
    G = GATES[cell]
    lead = () if B is None else (B,)
    init = lead if per_sequence_init else ()

    def r(*shape, s=0.7):
        return rng.uniform(-s, s, size=shape)
    w = Weights(V=r(G * H, D), W=r(G * H, H, s=0.9), U=r(N, H) if output_layer else None,
                b_h=r(G * H, s=0.3), b_y=r(N, s=0.3) if output_layer else None,
                h_init=r(*init, H, s=0.5), c_init=r(*init, H, s=0.5) if cell == "lstm" else None,
                b_hn=r(H, s=0.3) if cell == "gru" and reset == "after" else None)
    inputs = None if tokens else r(*lead, T, D, s=1.0)
    toks = rng.integers(0, D, size=(*lead, T)) if tokens else None
    if layer:
        return Problem(w, cell, reset, act, inputs=inputs, tokens=toks, upstream=r(*lead, T, H, s=1))
    if loss == "cross_entropy":
        y = np.eye(N)[rng.integers(0, N, size=(*lead, T))]
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, size=(*lead, T, N))
    else:
        y = r(*lead, T, N, s=1)
    scored = rng.random((*lead, T)) > 0.3
    scored[..., -1] = True
    return Problem(w, cell, reset, act, HEADS[loss], inputs, toks, y, scored, None, loss, reduction)


def present(p: Problem) -> list[str]:
    """The parameters with a gradient, in PARAMETERS order (what a default check covers)."""
    grads, _ = sequence.backward(sequence.forward(p), diagnostics=False)
    return [n for n in PARAMETERS if n in grads]


def value(p: Problem, name: str) -> np.ndarray:
    return p.inputs if name == "inputs" else getattr(p.weights, name)


def loop_changes(p: Problem, name: str, steps) -> np.ndarray:
    """Σ_t [L_t(θ + s·e_k) − L_t(θ)] by sequence.forward, one perturbed model at a time."""
    base = sequence.forward(p)
    theta = value(p, name)
    out = np.zeros((theta.size, len(steps)), dtype=complex)
    for k in range(theta.size):
        for i, s in enumerate(steps):
            moved = theta.astype(complex).ravel()
            moved[k] += s
            c = sequence.forward(p, {name: moved.reshape(theta.shape)})
            if p.layer:
                out[k, i] = np.sum(p.upstream * (c.h - base.h))
            else:
                out[k, i] = np.sum(c.step_losses - base.step_losses) * p.loss_scale()
    return out


def check(p: Problem, **options) -> gc.Report:
    spec = gc.CheckSpec(**{"parameters": tuple(present(p)), **options})
    return gcc.gradcheck(p, spec)


# --- every method and mode passes on a correct gradient ---

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_mode_passes(case, method):
    p = make(**CASES[case])
    grads, _ = sequence.backward(sequence.forward(p), diagnostics=False)
    names = present(p)
    tol = {"rtol": 1e-4, "atol": 1e-6} if method == "forward" else {}
    for mode in MODES:
        rep = check(p, method=method, mode=mode, samples=4, **tol)
        assert rep.passed, (mode, rep)
        assert list(rep.parameters) == names
        for name, r in rep.parameters.items():
            size = grads[name].size
            assert r.checked == {"full": size, "sample": min(4, size), "directional": 4}[mode]
            assert r.max_abs_error <= ACCURACY[method] * np.abs(grads[name]).max(), (mode, name, r)
            if mode != "directional":
                assert r.analytic_at_worst == pytest.approx(grads[name][tuple(r.worst_index)], rel=1e-12)
            if method == "taylor":
                assert r.convergence_order == pytest.approx(2.0, abs=0.3), (mode, name)


def test_the_v11_parameters_are_checked_where_the_problem_has_them():
    assert "b_hn" in present(make(cell="gru")) and "b_hn" not in present(make(cell="gru", reset="before"))
    assert "c_init" in present(make(cell="lstm")) and "c_init" not in present(make(cell="gru"))
    assert "inputs" in present(make(cell="lstm")) and "inputs" not in present(make(cell="lstm", tokens=True))
    layer = make(cell="gru", layer=True)
    assert "U" not in present(layer)
    assert set(check(layer, parameters=PARAMETERS).parameters) == set(present(layer))


def test_evaluations_are_counted():
    p = make(cell="lstm", B=2)
    rep = check(p, method="richardson", parameters=("W", "inputs", "c_init"))
    assert rep.evaluations == 1 + 6 * (12 * 3 + 2 * 4 * 3 + 3)


# --- a wrong gradient fails, at its index ---

def corrupt(monkeypatch, name, index, by):
    """sequence.backward, as the checker calls it, wrong by `by` at one element of `name`."""
    real = sequence.backward

    def wrong(cache, *args, **kwargs):
        grads, bptt = real(cache, *args, **kwargs)
        g = grads[name].copy()
        g[index] += by
        return {**grads, name: g}, bptt
    monkeypatch.setattr(gcc.sequence, "backward", wrong)


@pytest.mark.parametrize("case, name, index", [
    ("lstm-tokens", "W", (7, 2)),             # rank-one, through the recurrence
    ("lstm-batch-mean", "c_init", (1, 2)),    # one sequence's own initial cell state
    ("lstm-batch-mean", "inputs", (2, 1, 0)),
    ("gru-after", "W", (8, 1)),                # the n block: perturbed copies
    ("gru-after", "b_hn", (2,)),
    ("gru-before-batch", "W", (7, 0)),
    ("gru-after-layer", "h_init", (1,)),
    ("lstm-tokens", "U", (3, 1)),              # the output path
])
def test_one_wrong_element_fails_at_its_index(monkeypatch, case, name, index):
    p = make(**CASES[case])
    corrupt(monkeypatch, name, index, 1e-4)
    for method in ("central", "complex_step"):
        rep = check(p, method=method)
        r = rep.parameters[name]
        assert not rep.passed and r.failed == 1 and r.worst_index == list(index), (method, r)
        assert r.analytic_at_worst - r.numerical_at_worst == pytest.approx(1e-4, rel=1e-3)
        assert all(o.passed for n, o in rep.parameters.items() if n != name)


def test_sample_mode_checks_the_elements_it_draws(monkeypatch):
    p = make(**CASES["gru-after"])
    drawn = gc.sampled_indices(p.weights.b_hn.size, 2, 4, "b_hn")
    outside = next(k for k in range(p.H) if k not in drawn)
    corrupt(monkeypatch, "b_hn", (int(drawn[1]),), 1e-3)
    rep = check(p, mode="sample", samples=2, seed=4, parameters=("b_hn",))
    assert rep.parameters["b_hn"].worst_index == [int(drawn[1])] and not rep.passed
    monkeypatch.undo()
    corrupt(monkeypatch, "b_hn", (outside,), 1e-3)
    assert check(p, mode="sample", samples=2, seed=4, parameters=("b_hn",)).passed


def test_a_wrong_direction_fails_and_taylor_sees_order_one(monkeypatch):
    p = make(**CASES["lstm-batch-mean"])
    corrupt(monkeypatch, "inputs", (0, 2, 1), 0.05)
    rep = check(p, mode="directional", samples=3, parameters=("inputs", "c_init"))
    assert not rep.parameters["inputs"].passed and rep.parameters["c_init"].passed
    real = sequence.backward

    def scaled(cache, *args, **kwargs):               # 5% too large everywhere
        grads, bptt = real(cache, *args, **kwargs)
        return {**grads, "b_h": grads["b_h"] * 1.05}, bptt
    monkeypatch.setattr(gcc.sequence, "backward", scaled)
    rep = check(p, method="taylor", parameters=("b_h", "W"))
    assert rep.parameters["b_h"].convergence_order == pytest.approx(1.0, abs=0.2)
    assert rep.parameters["W"].convergence_order == pytest.approx(2.0, abs=0.2)


# --- the batched paths against a plain loop of perturbed forward passes ---

@pytest.mark.parametrize("case", CASES)
def test_batched_losses_agree_with_a_plain_loop(case, monkeypatch):
    p = make(**CASES[case], T=5)
    base = gcc._Base(p, sequence.forward(p))
    monkeypatch.setattr(gcc, "CHUNK_ROWS", 5)                 # several chunks, late joiners
    monkeypatch.setattr(gc, "CHUNK_ITEMS", 5)
    real = np.array([1e-3, -1e-3, 0.3])                       # 0.3: past gradcheck's series
    imag = np.array([1e-20j])
    for name in present(p):
        flat = np.arange(value(p, name).size)
        batched = gcc.element_losses(base, name, flat, real)
        looped = loop_changes(p, name, real).real
        assert np.allclose(batched, looped, rtol=1e-10, atol=1e-14), name
        batched = gcc.element_losses(base, name, flat, imag)
        looped = loop_changes(p, name, imag)
        assert np.allclose(batched.imag, looped.imag, rtol=1e-10, atol=1e-34), name


@pytest.mark.parametrize("case", ["lstm-tokens", "lstm-batch-mean", "gru-after", "gru-before-batch",
                                  "rnn-batch"])
def test_compiled_steps_agree_with_numpy_steps(case, monkeypatch):
    """The cells' compiled steps (sequence.FAST) and gradcheck's compiled loss (gc.FUSED)
    against numpy steps and loss_change, each run against a base pass of its own kind: the
    same changes but for their few ulps (~1e-16 of L)."""
    p = make(**CASES[case], T=5)
    steps = np.array([1e-3, -1e-3, 1e-6])
    fast = gcc._Base(p, sequence.forward(p))
    assert fast.fast and fast.loss_code is not None
    monkeypatch.setattr(gc, "FUSED", False)
    monkeypatch.setattr(sequence, "FAST", False)
    plain = gcc._Base(p, sequence.forward(p))
    assert not plain.fast and plain.loss_code is None
    for name in ("V", "W", "b_h", "h_init"):
        flat = np.arange(value(p, name).size)
        a, b = (gcc.element_losses(x, name, flat, steps) for x in (fast, plain))
        assert np.allclose(a, b, rtol=1e-9, atol=1e-15), name


@pytest.mark.parametrize("case", ["lstm-batch-mean", "gru-before-batch", "lstm-layer-batch"])
def test_directional_losses_agree_with_a_plain_loop(case):
    p = make(**CASES[case])
    base = gcc._Base(p, sequence.forward(p))
    steps = np.array([1e-3, -2e-3])
    for name in present(p):
        theta = value(p, name)
        u = gc.directions(theta.shape, 2, 1, name)
        batched = gcc.directional_losses(base, name, u, steps)
        want = [[loop_step(p, name, theta + s * d.reshape(theta.shape)) for s in steps] for d in u]
        assert np.allclose(batched, want, rtol=1e-10, atol=1e-14), name


def loop_step(p: Problem, name: str, moved: np.ndarray) -> float:
    base, c = sequence.forward(p), sequence.forward(p, {name: moved})
    if p.layer:
        return float(np.sum(p.upstream * (c.h - base.h)))
    return float(np.sum(c.step_losses - base.step_losses) * p.loss_scale())


def test_models_join_at_their_first_step_and_unused_tokens_never_run(monkeypatch):
    """V columns of tokens that never occur change nothing and run no step."""
    p = make(cell="lstm", tokens=True, D=6, T=3)
    p.tokens[:] = [4, 1, 4]
    base = gcc._Base(p, sequence.forward(p))
    items = gcc.element_items(base, "V", np.arange(p.weights.V.size), np.array([1e-6]))
    assert set(items.j) == {1, 4}
    assert np.all(items.start == np.where(items.j == 4, 0, 1))
    rep = check(p, parameters=("V",))
    assert rep.passed and rep.parameters["V"].checked == p.weights.V.size


# --- the engine's own forward on a P-axis override of b_h alone (found by these checks) ---

def test_engine_forward_takes_a_p_axis_b_h_alone():
    """sequence.py before ce75995 added a (P, 1, G·H) b_h in place to a drive without the P
    axis (`xd += pb(b_h)`, ValueError); directional checks of b_h need it."""
    p = make(cell="lstm")
    b = p.weights.b_h
    c = sequence.forward(p, {"b_h": np.stack([b, b + 1e-3])})
    assert c.loss[0] == pytest.approx(sequence.forward(p).loss, rel=1e-14)


# --- routing and the work budget ---

def test_a_one_sequence_vanilla_problem_takes_the_v1_fast_path(monkeypatch):
    """v1's parameters go to gradcheck.py's exact-difference path, only inputs come here."""
    p = make(cell="rnn")
    ran = []
    real = gcc.recurrent_losses

    def spy(base, name, items):
        ran.append(name)
        return real(base, name, items)
    monkeypatch.setattr(gcc, "recurrent_losses", spy)
    names = ("V", "W", "U", "b_h", "b_y", "h_init")
    rep = check(p, parameters=names)
    assert rep.passed and list(rep.parameters) == list(names) and ran == []
    rep = check(p, method="taylor", parameters=("W", "inputs", "b_y"))
    assert ran == ["inputs"] and list(rep.parameters) == ["W", "inputs", "b_y"] and rep.passed
    assert rep.evaluations == 1 + 5 * (9 + 12 + 4)
    assert rep.convergence_order == pytest.approx(2.0, abs=0.2)
    sizes = gcc.CellSizes.of(p)
    assert isinstance(sizes, gcc.CellSizes) and sizes.vanilla is not None
    spec = gc.CheckSpec(method="taylor", parameters=("W", "inputs", "b_y"))
    assert gc.estimate(sizes, spec)[1] == rep.evaluations


def big_lstm(H=256, T=100, D=64, B=4) -> Problem:
    z = np.zeros
    w = Weights(z((4 * H, D)), z((4 * H, H)), z((D, H)), z(4 * H), z(D), z(H), z(H))
    r = np.random.default_rng(0)
    return Problem(w, "lstm", tokens=r.integers(0, D, (B, T)), targets=np.eye(D)[r.integers(0, D, (B, T))],
                   scored=np.ones((B, T), bool), loss="cross_entropy")


def test_an_over_budget_full_check_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(gcc.sequence, "forward", lambda *a, **k: pytest.fail("forward ran"))
    p = big_lstm()
    budget = 4e10
    start = time.perf_counter()
    sizes = gcc.CellSizes.of(p)
    spec = gc.CheckSpec(parameters=("V", "W", "U", "b_h", "b_y", "h_init", "c_init"))
    work, evaluations = gc.estimate(sizes, spec)
    hint = gc.what_fits(sizes, spec, budget)
    assert time.perf_counter() - start < 0.5
    assert work > 100 * budget and evaluations == 1 + 2 * (4 * 256 * (64 + 256 + 1) + 64 * 257 + 2 * 256)
    k = int(hint.split("samples ≤ ")[1].split(";")[0])
    fits = gc.CheckSpec(mode="sample", samples=k, parameters=spec.parameters)
    assert gc.estimate(sizes, fits)[0] <= budget
    assert gc.estimate(sizes, gc.CheckSpec(mode="sample", samples=k + 1,
                                           parameters=spec.parameters))[0] > budget


def test_the_estimate_grows_with_the_gates_and_the_batch():
    spec = gc.CheckSpec(parameters=("V", "W", "b_h"))
    work = {(cell, B): gc.estimate(gcc.CellSizes.of(make(cell=cell, B=B, H=16, T=10, D=8)), spec)[0]
            for cell in ("rnn", "gru", "lstm") for B in (2, 8)}
    assert work["rnn", 2] < work["lstm", 2] < work["gru", 2]     # gru: W's n block as copies
    assert all(work[cell, 8] > 3 * work[cell, 2] for cell in ("rnn", "gru", "lstm"))
