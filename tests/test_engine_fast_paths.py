"""The engine's fast paths (made for the benchmark) against its plain or independent ones:
the float64 recurrence vs the general complex one, both token paths for dV vs dense one-hot
inputs, reverse-mode ∂L_t/∂b_h vs the reference's complex step, and the fused backward +
diagnostics sweep vs backward() and bptt_diagnostics() run separately."""
import dataclasses

import numpy as np
import pytest

from service.engine import rnn

import reference as ref
from test_engine import engine_path, engine_problem  # noqa: F401 (engine_path: both paths)


@pytest.mark.parametrize("hidden", ref.HIDDEN)
def test_float_recurrence_equals_the_general_one(hidden):
    spec, p = ref.random_problem(1, T=6, H=5, D=4, N=3, hidden=hidden)
    problem = engine_problem(spec, p)
    fast = rnn.forward(problem)
    # complex weights (zero imaginary part) take the general loop, not the float64 one
    general = rnn.forward(problem, problem.weights.replace(W=problem.weights.W.astype(complex)))
    for name in ("a", "h", "z", "yhat"):
        np.testing.assert_allclose(getattr(fast, name), getattr(general, name).real, rtol=1e-14, atol=1e-15)
    assert abs(fast.loss - general.loss.real) <= 1e-13 * abs(fast.loss)


@pytest.mark.parametrize("T, H, D", [(9, 4, 5),        # small: the one-hot product
                                     (90, 64, 64)])    # T·H·D over 2^18: the row loop
def test_both_token_paths_for_dV_equal_dense_one_hot_inputs(T, H, D):
    spec, p = ref.random_problem(2, T=T, H=H, D=D, N=3, scale=0.3)
    tokens = engine_problem(spec, p)
    assert (len(spec.tokens) * H * D > 2 ** 18) == (T == 90)
    dense = dataclasses.replace(tokens, tokens=None, inputs=np.eye(D)[spec.tokens])
    g_tokens = rnn.backward(rnn.forward(tokens)).V
    g_dense = rnn.backward(rnn.forward(dense)).V
    assert g_tokens.shape == (H, D)
    np.testing.assert_allclose(g_tokens, g_dense, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reverse_mode_b_h_by_step_matches_the_complex_step(reduction):
    """T ≤ H takes the reverse-mode chain (T > H the forward-mode Jacobians)."""
    spec, p = ref.random_problem(3, T=3, H=6, D=3, N=4, reduction=reduction, null_targets=True)
    cache = rnn.forward(engine_problem(spec, p))
    got = rnn.bptt_diagnostics(cache).b_h_by_step
    np.testing.assert_allclose(got, ref.b_h_by_step(spec, p).T, rtol=1e-10, atol=1e-12)   # ref: H×T


@pytest.mark.parametrize("T, H, truncate, include", [
    (4, 7, None, ()), (9, 3, None, ()), (6, 4, 2, ()), (5, 5, None, ("b_h_terms",)),
    (5, 3, 3, ("b_h_terms", "jacobian_norms"))])
def test_fused_sweep_equals_backward_and_diagnostics_apart(T, H, truncate, include):
    spec, p = ref.random_problem(4, T=T, H=H, D=3, N=3, null_targets=True)
    cache = rnn.forward(engine_problem(spec, p))
    grads, bptt = rnn.backward_with_diagnostics(cache, truncate, include)
    alone = rnn.backward(cache, truncate)
    for name in rnn.PARAMETERS:               # bit for bit: the API promises backward()'s numbers
        assert np.array_equal(getattr(grads, name), getattr(alone, name)), name
    apart = rnn.bptt_diagnostics(cache, truncate, include)
    for name in ("b_h_by_step", "hidden_grad_norms", "b_h_terms", "jacobian_norms"):
        a, b = getattr(bptt, name), getattr(apart, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15, equal_nan=True)
    np.testing.assert_allclose(bptt.b_h_by_step.sum(axis=0), grads.b_h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("tokens", [True, False])
@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
def test_the_in_place_numpy_path_leaves_every_input_unchanged(engine_path, tokens, hidden):
    """forward builds a_t in place on V x_t and backward works on its own arrays: the
    caller's weights, inputs and targets must come out as they went in."""
    spec, p = ref.random_problem(5, T=7, H=6, D=4, N=3, tokens=tokens, hidden=hidden,
                                 h_init=True, null_targets=True)
    problem = engine_problem(spec, p)
    given = {name: np.copy(getattr(problem.weights, name)) for name in rnn.PARAMETERS}
    given.update(targets=problem.targets.copy(), scored=problem.scored.copy(),
                 sequence=np.copy(problem.tokens if tokens else problem.inputs))
    cache = rnn.forward(problem)
    rnn.backward_with_diagnostics(cache)
    rnn.backward(cache)
    for name in rnn.PARAMETERS:
        assert np.array_equal(getattr(problem.weights, name), given[name]), name
    assert np.array_equal(problem.targets, given["targets"])
    assert np.array_equal(problem.scored, given["scored"])
    assert np.array_equal(problem.tokens if tokens else problem.inputs, given["sequence"])
    # and the forward pass is repeatable (nothing it reads was overwritten)
    np.testing.assert_array_equal(rnn.forward(problem).h, cache.h)
