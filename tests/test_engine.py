"""The engine against derivatives computed here, from tests/reference.py's own forward pass:
central differences (~1e-9) and the complex step (~1e-15), for every hidden activation ×
(output activation, loss) × reduction × input kind, with and without h_init and null targets.
Every test runs on both engine paths: the compiled one (fused.py) and numpy."""
import itertools

import numpy as np
import pytest

from service.engine import rnn

import reference as ref


@pytest.fixture(params=["fused", "numpy"], autouse=True)
def engine_path(request, monkeypatch):
    """Runs the test on the compiled small-problem path and on the numpy one."""
    monkeypatch.setattr(rnn, "FUSED", request.param == "fused")
    return request.param


# rounding in a float64 backward pass of this size stays far below this
COMPLEX_TOL = 1e-11
CENTRAL_TOL = 1e-6


def engine_problem(spec: ref.Spec, p: dict) -> rnn.Problem:
    """The engine's Problem for a reference problem (targets one-hot T×N, a scored mask)."""
    N = len(p["b_y"])
    Y = np.zeros((spec.T, N))
    for t, y in enumerate(spec.targets):
        if isinstance(y, int):
            Y[t, y] = 1.0
        elif y is not None:
            Y[t] = y
    return rnn.Problem(weights=rnn.Weights(**{k: np.array(p[k]) for k in ref.PARAMS}),
                       hidden_activation=spec.hidden, output_activation=spec.output,
                       inputs=spec.inputs,
                       tokens=None if spec.tokens is None else np.array(spec.tokens),
                       targets=Y, scored=np.array([y is not None for y in spec.targets]),
                       loss=spec.loss, reduction=spec.reduction)


def engine_gradients(spec, p, truncate=None) -> dict:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        return rnn.backward(rnn.forward(engine_problem(spec, p)), truncate).as_dict()


CASES = list(itertools.product(ref.HIDDEN, ref.VALID_HEADS, ("sum", "mean"), (True, False),
                               (True, False), (False, True)))


@pytest.mark.parametrize("hidden,head,reduction,tokens,h_init,null_targets", CASES,
                         ids=["-".join(map(str, (c[0], *c[1], *c[2:]))) for c in CASES])
def test_gradients_match_finite_differences(hidden, head, reduction, tokens, h_init, null_targets):
    output, loss = head
    seed = CASES.index((hidden, head, reduction, tokens, h_init, null_targets))
    spec, p = ref.random_problem(seed, T=4, H=3, D=3, N=3, hidden=hidden, output=output, loss=loss,
                                 reduction=reduction, tokens=tokens, h_init=h_init,
                                 null_targets=null_targets)
    got = engine_gradients(spec, p)
    exact = ref.all_grads(spec, p, ref.complex_step)
    numeric = ref.all_grads(spec, p, ref.central)
    for name in ref.PARAMS:
        assert got[name].shape == p[name].shape, name
        assert ref.scaled_error(got[name], exact[name]) < COMPLEX_TOL, name
        assert ref.scaled_error(got[name], numeric[name]) < CENTRAL_TOL, name
    # and the forward pass itself
    cache = rnn.forward(engine_problem(spec, p))
    mine = ref.run(spec, p)
    # step_losses are the unreduced L_t (0 on unscored steps); loss applies the reduction
    unreduced = [0.0 if y is None else ref.step_loss(spec.loss, spec.output, z, y)
                 for z, y in zip(mine["z"], spec.targets)]
    for engine_value, ref_value in ((cache.h, mine["h"]), (cache.yhat, mine["yhat"]),
                                    (cache.step_losses, unreduced), (cache.loss, mine["L"])):
        assert ref.scaled_error(engine_value, ref_value) < 1e-14


def test_reference_agrees_with_itself():
    """The two numerical methods of the reference agree, so neither hides a reference bug."""
    spec, p = ref.random_problem(7, hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy",
                                 tokens=False, null_targets=True)
    a, b = ref.all_grads(spec, p, ref.complex_step), ref.all_grads(spec, p, ref.central)
    for name in ref.PARAMS:
        assert ref.scaled_error(a[name], b[name]) < 1e-8
        assert np.any(a[name] != 0)


def test_relu_derivative_is_zero_at_zero():
    """relu'(0) = 0 (the contract's choice): a unit sitting exactly at a = 0 passes nothing back."""
    spec, p = ref.random_problem(3, T=2, H=2, D=2, N=2, hidden="relu", output="identity",
                                 loss="squared_error", relu_margin=0.0)
    p = {**p, "V": np.zeros((2, 2)), "W": np.zeros((2, 2)), "b_h": np.array([0.0, 0.5])}
    g = engine_gradients(spec, p)
    assert g["b_h"][0] == 0.0 and np.all(g["V"][0] == 0.0) and g["b_h"][1] != 0.0


def one_step_problem(output, loss, U_column, target):
    """T 1, H 1: h_0 = 1, so z_0 is exactly U's column plus b_y (zero)."""
    spec = ref.Spec("identity", output, loss, "sum", T=1, D=1, tokens=[0], targets=[target])
    N = len(U_column)
    p = {"V": np.ones((1, 1)), "W": np.zeros((1, 1)), "U": np.array(U_column, float)[:, None],
         "b_h": np.zeros(1), "b_y": np.zeros(N), "h_init": np.zeros(1)}
    return spec, p


@pytest.mark.parametrize("output,loss,target,expected", [
    ("softmax", "cross_entropy", 0, 0.0),                       # log(1 + e^-1000 + e^-2000)
    ("softmax", "cross_entropy", 1, 1000.0),
    ("softmax", "cross_entropy", 2, 2000.0),
    ("sigmoid", "binary_cross_entropy", [1.0, 1.0, 0.0], 0.0 + np.log(2) + 0.0),
    ("sigmoid", "binary_cross_entropy", [0.0, 0.0, 1.0], 1000.0 + np.log(2) + 1000.0),
])
def test_large_logits_give_the_exact_finite_loss(output, loss, target, expected):
    spec, p = one_step_problem(output, loss, [1000.0, 0.0, -1000.0], target)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        cache = rnn.forward(engine_problem(spec, p))
        grads = rnn.backward(cache).as_dict()
    assert cache.loss == pytest.approx(expected, rel=1e-15, abs=1e-300)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    # dL/db_y = y^ - y exactly here, with y^ saturated to 0/1 (or 1/2 in the middle)
    y = np.eye(3)[target] if isinstance(target, int) else np.array(target)
    assert np.allclose(grads["b_y"], ref.f_output(output, np.array([1000.0, 0.0, -1000.0])) - y)


def test_forward_runs_on_complex_and_gives_the_complex_step_derivative():
    """The engine forward is analytic: its complex step matches the reference's."""
    spec, p = ref.random_problem(11, hidden="tanh", output="softmax", loss="squared_error",
                                 tokens=False, null_targets=True)
    problem = engine_problem(spec, p)
    w = problem.weights
    W = w.W.astype(complex)
    W[1, 2] += 1e-30j
    engine_d = rnn.loss(problem, w.replace(W=W)).imag / 1e-30
    assert engine_d == pytest.approx(ref.param_grad(spec, p, "W")[1, 2], rel=1e-13)


def test_forward_with_a_batch_axis_equals_one_model_at_a_time():
    spec, p = ref.random_problem(12, hidden="sigmoid", output="sigmoid", loss="binary_cross_entropy")
    problem = engine_problem(spec, p)
    rng = np.random.default_rng(0)
    Vs, Ws, b_hs = rng.normal(size=(5, 3, 3)), rng.normal(size=(5, 3, 3)), rng.normal(size=(5, 3))
    batched = rnn.loss(problem, problem.weights.replace(V=Vs, W=Ws, b_h=b_hs))
    assert batched.shape == (5,)
    for i in range(5):
        single = ref.run(spec, {**p, "V": Vs[i], "W": Ws[i], "b_h": b_hs[i]})["L"]
        assert batched[i] == pytest.approx(single, rel=1e-14)


# --- truncated BPTT: each L_t backpropagated through at most K steps (terms with t - k < K) ---

TRUNCATION_CASES = [("tanh", "softmax", "cross_entropy", "sum", True, False),
                    ("sigmoid", "sigmoid", "binary_cross_entropy", "mean", False, True),
                    ("relu", "identity", "squared_error", "sum", False, False),
                    ("identity", "softmax", "squared_error", "mean", True, True)]


def truncated_by_brute_force(spec, p, K) -> dict:
    """Every gradient of truncated BPTT from the unrolled terms δ[t, k] = ∂L_t/∂a_k (complex
    step on the reference), keeping only t - k < K."""
    delta = ref.b_h_terms(spec, p)                      # t, k, H
    T = spec.T
    keep = np.array([[0 <= t - k < K for k in range(T)] for t in range(T)])
    kept = delta * keep[:, :, None]
    h_prev = np.vstack([p["h_init"], ref.run(spec, p)["h"][:-1]])
    x = np.array([ref.x_at(spec, k) for k in range(T)])
    full = ref.all_grads(spec, p)
    return {"b_h": kept.sum(axis=(0, 1)),
            "W": np.einsum("tki,kj->ij", kept, h_prev),
            "V": np.einsum("tki,kj->ij", kept, x),
            "h_init": kept[:, 0].sum(axis=0) @ p["W"],  # L_t reaches h_init through a_0
            "U": full["U"], "b_y": full["b_y"],         # no recurrence: never truncated
            "b_h_by_step": kept.sum(axis=1)}


def no_bptt(spec, p) -> dict:
    """The 'no BPTT' formula: each L_t differentiated through its own step only,
    ∂L_t/∂a_t = ∂L_t/∂h_t (immediate) · f_h'(a_t), from a_t alone."""
    r = ref.run(spec, p)
    rows = []
    for t, y in enumerate(spec.targets):
        def L_t_from_a_t(a, t=t, y=y):
            z = p["U"] @ ref.f_hidden(spec.hidden, a) + p["b_y"]
            return 0.0 * z[0] if y is None else ref.step_loss(spec.loss, spec.output, z, y)
        rows.append(ref.complex_step(L_t_from_a_t, r["a"][t]))
    scored = sum(y is not None for y in spec.targets)
    da = np.array(rows) / (scored if spec.reduction == "mean" else 1)
    h_prev = np.vstack([p["h_init"], r["h"][:-1]])
    x = np.array([ref.x_at(spec, k) for k in range(spec.T)])
    return {"b_h": da.sum(axis=0), "W": da.T @ h_prev, "V": da.T @ x, "h_init": da[0] @ p["W"]}


def truncation_problem(case):
    hidden, output, loss, reduction, tokens, null_targets = case
    return ref.random_problem(TRUNCATION_CASES.index(case) + 500, T=5, H=3, D=3, N=2,
                              hidden=hidden, output=output, loss=loss, reduction=reduction,
                              tokens=tokens, null_targets=null_targets, scale=0.9)


@pytest.mark.parametrize("case", TRUNCATION_CASES)
@pytest.mark.parametrize("K", [5, 6, 50])
def test_truncation_at_or_beyond_T_is_full_bptt(case, K):
    spec, p = truncation_problem(case)
    full, cut = engine_gradients(spec, p), engine_gradients(spec, p, truncate=K)
    for name in ref.PARAMS:
        assert np.array_equal(full[name], cut[name]), name


@pytest.mark.parametrize("case", TRUNCATION_CASES)
def test_truncation_one_is_the_no_bptt_formula(case):
    spec, p = truncation_problem(case)
    got, expected = engine_gradients(spec, p, truncate=1), no_bptt(spec, p)
    full = engine_gradients(spec, p)
    for name, value in expected.items():
        assert ref.scaled_error(got[name], value) < COMPLEX_TOL, name
    assert ref.scaled_error(full["W"], expected["W"]) > 1e-3      # the cut is visible here


@pytest.mark.parametrize("case", TRUNCATION_CASES)
@pytest.mark.parametrize("K", [1, 2, 3])
def test_intermediate_truncation_keeps_terms_with_t_minus_k_below_K(case, K):
    spec, p = truncation_problem(case)
    got, expected = engine_gradients(spec, p, truncate=K), truncated_by_brute_force(spec, p, K)
    for name in ref.PARAMS:
        assert ref.scaled_error(got[name], expected[name]) < COMPLEX_TOL, name
    cache = rnn.forward(engine_problem(spec, p))
    diag = rnn.bptt_diagnostics(cache, K, ("b_h_terms",))
    assert ref.scaled_error(diag.b_h_by_step, expected["b_h_by_step"]) < COMPLEX_TOL
    assert ref.scaled_error(diag.b_h_terms.sum(axis=(0, 1)), got["b_h"]) < 1e-14
