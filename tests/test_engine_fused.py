"""The compiled small-problem path (service/engine/fused.py) against the numpy path on random
problems: every hidden activation × (output activation, loss) × reduction × input kind, with
and without h_init and null targets, no targets at all, both b_h_by_step modes; and rnn's
dispatch between the two. (tests/test_engine.py runs the finite-difference and reference
checks on both paths.)"""
import dataclasses
import itertools

import numpy as np
import pytest

from service.engine import fused, rnn

import reference as ref
from test_engine import engine_problem

FORWARD_FIELDS = ("a", "h", "z", "yhat", "step_losses", "loss")
FORWARD_TOL = 1e-14     # same formulas; only the dot products' summation order differs
BACKWARD_TOL = 1e-12    # ... accumulated over T steps of BPTT

CASES = list(itertools.product(ref.HIDDEN, ref.VALID_HEADS, ("sum", "mean"), (True, False),
                               (True, False), (False, True)))


def both_paths(problem, monkeypatch, **kwargs):
    """forward + backward_with_diagnostics on each path: {"fused": (cache, grads, bptt), ...}."""
    out = {}
    for path in ("fused", "numpy"):
        monkeypatch.setattr(rnn, "FUSED", path == "fused")
        cache = rnn.forward(problem)
        grads, bptt = rnn.backward_with_diagnostics(cache, **kwargs) if problem.has_loss \
            else (None, None)
        out[path] = cache, grads, bptt
    return out


def assert_same(got, want, tol, name):
    if want is None:
        assert got is None, name
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, name
    assert ref.scaled_error(got, want) < tol, (name, ref.scaled_error(got, want))


@pytest.mark.parametrize("hidden,head,reduction,tokens,h_init,null_targets", CASES,
                         ids=["-".join(map(str, (c[0], *c[1], *c[2:]))) for c in CASES])
@pytest.mark.parametrize("T, H", [(7, 5),      # T <= 2H: reverse-mode b_h_by_step
                                  (12, 4)])    # T > 2H: forward-mode Jacobians
def test_fused_equals_numpy(hidden, head, reduction, tokens, h_init, null_targets, T, H,
                            monkeypatch):
    output, loss = head
    seed = CASES.index((hidden, head, reduction, tokens, h_init, null_targets)) + 1000 * T
    spec, p = ref.random_problem(seed, T=T, H=H, D=4, N=3, hidden=hidden, output=output,
                                 loss=loss, reduction=reduction, tokens=tokens, h_init=h_init,
                                 null_targets=null_targets, scale=0.5)
    runs = both_paths(engine_problem(spec, p), monkeypatch)
    (cf, gf, bf), (cn, gn, bn) = runs["fused"], runs["numpy"]
    for name in FORWARD_FIELDS:
        assert_same(getattr(cf, name), getattr(cn, name), FORWARD_TOL, name)
    for name in rnn.PARAMETERS:
        assert_same(getattr(gf, name), getattr(gn, name), BACKWARD_TOL, name)
    for name in ("b_h_by_step", "hidden_grad_norms"):
        assert_same(getattr(bf, name), getattr(bn, name), BACKWARD_TOL, name)
    assert bf.b_h_terms is None and bf.jacobian_norms is None


@pytest.mark.parametrize("hidden,output", [("tanh", "softmax"), ("relu", "sigmoid"),
                                           ("sigmoid", "identity")])
@pytest.mark.parametrize("tokens", [True, False])
def test_forward_without_targets(hidden, output, tokens, monkeypatch):
    spec, p = ref.random_problem(5, T=6, H=4, D=3, N=3, hidden=hidden, output=output,
                                 loss=rnn.DEFAULT_LOSS[output], tokens=tokens)
    problem = dataclasses.replace(engine_problem(spec, p), targets=None, scored=None, loss=None)
    runs = both_paths(problem, monkeypatch)
    for name in FORWARD_FIELDS:
        assert_same(getattr(runs["fused"][0], name), getattr(runs["numpy"][0], name),
                    FORWARD_TOL, name)
    assert runs["fused"][0].loss is None and runs["fused"][0].step_losses is None


def test_single_step_and_identity_output_share_z(monkeypatch):
    spec, p = ref.random_problem(6, T=1, H=2, D=2, N=2, hidden="identity", output="identity",
                                 loss="squared_error")
    runs = both_paths(engine_problem(spec, p), monkeypatch)
    cache = runs["fused"][0]
    assert cache.yhat is cache.z                    # as numpy's output("identity", z) returns z
    for name in rnn.PARAMETERS:
        assert_same(getattr(runs["fused"][1], name), getattr(runs["numpy"][1], name),
                    BACKWARD_TOL, name)


def test_arrays_numba_has_no_signature_for_are_copied(monkeypatch):
    """Read-only, Fortran-ordered, strided and int32 arrays give the same numbers."""
    spec, p = ref.random_problem(8, T=5, H=4, D=3, N=3, tokens=True, null_targets=True)
    plain = engine_problem(spec, p)
    w = plain.weights
    W = np.asfortranarray(w.W)
    wide = np.zeros((w.V.shape[0], 2 * w.V.shape[1]))
    wide[:, ::2] = w.V
    V_strided = wide[:, ::2]
    U = w.U.copy()
    U.flags.writeable = False
    odd = dataclasses.replace(plain, weights=w.replace(W=W, V=V_strided, U=U),
                              tokens=plain.tokens.astype(np.int32))
    assert np.array_equal(w.V, V_strided) and not V_strided.flags.c_contiguous
    monkeypatch.setattr(rnn, "FUSED", True)
    a, b = rnn.forward(plain), rnn.forward(odd)
    for name in FORWARD_FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    ga, gb = rnn.backward(a), rnn.backward(b)
    for name in rnn.PARAMETERS:
        assert np.array_equal(getattr(ga, name), getattr(gb, name)), name


class Calls:
    """Counts calls of fused.forward and fused.backward."""

    def __init__(self, monkeypatch):
        self.forward = self.backward = 0
        for name in ("forward", "backward"):
            kernel = getattr(fused, name)
            monkeypatch.setattr(fused, name, self._counting(name, kernel))

    def _counting(self, name, kernel):
        def call(*args):
            setattr(self, name, getattr(self, name) + 1)
            return kernel(*args)
        return call


def quiz_problem(H=16, T=10, D=8):
    spec, p = ref.random_problem(9, T=T, H=H, D=D, N=D, scale=0.3)
    return engine_problem(spec, p)


def test_quiz_size_takes_the_fused_path(monkeypatch):
    calls = Calls(monkeypatch)
    cache = rnn.forward(quiz_problem())
    rnn.backward_with_diagnostics(cache)
    rnn.backward(cache)
    assert (calls.forward, calls.backward) == (1, 2)


@pytest.mark.parametrize("case", ["switched off", "large H", "complex", "batched"])
def test_numpy_keeps_what_the_fused_path_does_not_cover(case, monkeypatch):
    calls = Calls(monkeypatch)
    problem = quiz_problem(H=rnn.FUSED_MAX_H + 1, T=3) if case == "large H" else quiz_problem()
    w = problem.weights
    weights = {"complex": w.replace(W=w.W.astype(complex)),
               "batched": w.replace(b_h=np.stack([w.b_h, w.b_h]))}.get(case)
    if case == "switched off":
        monkeypatch.setattr(rnn, "FUSED", False)
    rnn.forward(problem, weights)
    assert calls.forward == 0


@pytest.mark.parametrize("truncate, include, fused_calls", [
    (None, (), 1), (10, (), 1), (50, (), 1),           # T = 10: full BPTT
    (3, (), 0),                                        # truncated: numpy's windowed chain
    (None, ("b_h_terms",), 1)])                        # gradients fused, the terms from numpy
def test_backward_dispatch(truncate, include, fused_calls, monkeypatch):
    cache = rnn.forward(quiz_problem())
    calls = Calls(monkeypatch)
    grads, bptt = rnn.backward_with_diagnostics(cache, truncate, include)
    assert calls.backward == fused_calls
    assert (bptt.b_h_terms is not None) == bool(include)
    # whichever path: the gradients are backward()'s, bit for bit
    alone = rnn.backward(cache, truncate)
    for name in rnn.PARAMETERS:
        assert np.array_equal(getattr(grads, name), getattr(alone, name)), name


def test_pairwise_sum_adds_in_numpys_order():
    """The losses' sums over N and T reproduce np.sum bit for bit (its pairwise blocks)."""
    rng = np.random.default_rng(0)
    for n in (1, 5, 8, 9, 17, 64, 127, 128, 129, 300, 1000):
        x = rng.normal(size=n) * 10.0 ** rng.uniform(-8, 8, size=n)
        assert fused.pairwise_sum(x, 0, n) == np.sum(x), n


@pytest.mark.parametrize("head", ref.VALID_HEADS)
@pytest.mark.parametrize("reduction, null_targets", [("sum", False), ("mean", True)])
def test_truncation_leaves_dU_and_db_y_unchanged_bit_for_bit(head, reduction, null_targets):
    """Full BPTT (fused) and truncated (numpy) share dL/dz and so dU and db_y exactly."""
    spec, p = ref.random_problem(10, T=8, H=5, D=3, N=4, output=head[0], loss=head[1],
                                 reduction=reduction, null_targets=null_targets)
    cache = rnn.forward(engine_problem(spec, p))
    full, cut = rnn.backward(cache), rnn.backward(cache, truncate=1)
    assert np.array_equal(full.U, cut.U) and np.array_equal(full.b_y, cut.b_y)
    assert not np.array_equal(full.W, cut.W)
