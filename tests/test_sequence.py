"""service.engine.sequence (the v1.1 runner for rnn, lstm and gru) against checks that need no
shared reference: central differences and complex steps of its own forward taken here, the
v1 vanilla engine, PyTorch's golden files, and identities between its answers (a batch is the
sum of its sequences, K ≥ T is full BPTT, the diagnostics add up to the gradient)."""
import json
import pathlib

import numpy as np
import pytest

from service.engine import rnn, sequence
from service.engine.problem import GATES, PARAMETERS, Problem, Weights

HEADS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "squared_error": "identity"}
CELL_CASES = [("rnn", "after"), ("lstm", "after"), ("gru", "after"), ("gru", "before")]
GOLDEN = sorted((pathlib.Path(__file__).resolve().parent / "golden").glob("torch_*.json"))


def make(cell="rnn", reset="after", B=None, T=4, H=3, D=2, N=2, tokens=False, act="tanh",
         loss="cross_entropy", reduction="sum", layer=False, per_sequence_init=False,
         all_scored=False, seed=0) -> Problem:
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    lead = () if B is None else (B,)
    init = lead if per_sequence_init else ()

    def r(*shape, s=0.6):
        return rng.uniform(-s, s, size=shape)
    w = Weights(V=r(G * H, D), W=r(G * H, H, s=0.9), U=None if layer else r(N, H),
                b_h=r(G * H, s=0.3), b_y=None if layer else r(N, s=0.3), h_init=r(*init, H, s=0.5),
                c_init=r(*init, H, s=0.5) if cell == "lstm" else None,
                b_hn=r(H, s=0.3) if cell == "gru" and reset == "after" else None)
    inputs = None if tokens else r(*lead, T, D, s=1.0)
    toks = rng.integers(0, D, size=(*lead, T)) if tokens else None
    if layer:
        return Problem(w, cell, reset, act, inputs=inputs, tokens=toks, upstream=r(*lead, T, H, s=1))
    if loss == "cross_entropy":
        y = np.eye(N)[rng.integers(0, N, size=(*lead, T))]
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(*lead, T, N)).astype(float)
    else:
        y = r(*lead, T, N, s=1)
    scored = np.ones((*lead, T), bool) if all_scored else rng.random((*lead, T)) > 0.3
    scored[..., -1] = True
    return Problem(w, cell, reset, act, HEADS[loss], inputs, toks, y, scored, None, loss,
                   reduction)


def params_of(p: Problem) -> dict:
    arrays = {n: getattr(p.weights, n) for n in PARAMETERS if n != "inputs"}
    arrays["inputs"] = p.inputs
    return {n: a for n, a in arrays.items() if a is not None
            and not (p.layer and n in ("U", "b_y"))}


def central(p: Problem, name: str, f=lambda c: c.loss, eps=1e-6) -> np.ndarray:
    """Central differences of f(forward) in every element of one parameter."""
    base = params_of(p)[name]
    out = None
    for i in np.ndindex(base.shape):
        d = np.zeros(base.shape)
        d[i] = eps
        diff = (np.asarray(f(sequence.forward(p, {name: base + d})))
                - np.asarray(f(sequence.forward(p, {name: base - d})))) / (2 * eps)
        if out is None:
            out = np.zeros(base.shape + diff.shape)
        out[i] = diff
    return out


def close(a, b, tol=1e-7):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# --- gradients against central differences of the loss ---

@pytest.mark.parametrize("cell,reset", CELL_CASES)
@pytest.mark.parametrize("variant", [
    dict(), dict(B=3), dict(B=2, per_sequence_init=True, reduction="mean"),
    dict(tokens=True, reduction="batch_mean", B=2, loss="binary_cross_entropy"),
    dict(loss="squared_error", reduction="mean"), dict(layer=True), dict(layer=True, B=2)])
def test_gradients_match_central_differences(cell, reset, variant):
    p = make(cell, reset, **variant)
    grads, bptt = sequence.backward(sequence.forward(p))
    want = set(params_of(p)) - ({"inputs"} if p.tokens is not None else set())
    assert set(grads) == want
    for name in want:
        close(grads[name], central(p, name), 2e-7)
    close(bptt.b_h_by_step.sum(axis=0), grads["b_h"], 1e-12)


@pytest.mark.parametrize("act", rnn.HIDDEN_ACTIVATIONS)
def test_vanilla_activations_match_central_differences(act):
    p = make("rnn", B=2, act=act, seed=3)
    grads, _ = sequence.backward(sequence.forward(p), diagnostics=False)
    for name in grads:
        close(grads[name], central(p, name), 2e-7)


def test_relu_slope_is_zero_at_zero():
    p = make("rnn", act="relu", H=2)
    p.weights.V[:] = p.weights.W[:] = p.weights.b_h[:] = 0.0   # every a_t is exactly 0
    grads, _ = sequence.backward(sequence.forward(p))
    assert not grads["b_h"].any() and not grads["W"].any() and not grads["h_init"].any()


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_complex_step_directional_derivatives_equal_backward(cell, reset):
    p = make(cell, reset, B=2, seed=5)
    grads, _ = sequence.backward(sequence.forward(p), diagnostics=False)
    rng = np.random.default_rng(1)
    for name, base in params_of(p).items():
        u = rng.normal(size=base.shape)
        c = sequence.forward(p, {name: base + 1e-30j * u})
        assert abs(c.loss.imag / 1e-30 - np.sum(grads[name] * u)) < 1e-12 * (1 + np.abs(grads[name]).sum())


def test_layer_mode_gradients_are_those_of_sum_of_upstream_dot_h():
    """Σ⟨upstream, h⟩ computed here from forward's h, not from its loss."""
    for cell, reset in CELL_CASES:
        p = make(cell, reset, B=2, layer=True, seed=7)
        c = sequence.forward(p)
        assert c.z is None and c.yhat is None
        close(c.step_losses, np.sum(p.upstream * c.h, axis=-1), 1e-14)
        grads, _ = sequence.backward(c)
        for name in grads:
            close(grads[name], central(p, name, lambda c: np.sum(p.upstream * c.h)), 2e-7)


# --- against the v1 vanilla engine and PyTorch ---

@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("truncate", [None, 2])
def test_rnn_cell_equals_the_v1_engine(reduction, tokens, truncate):
    p = make("rnn", T=6, H=4, D=3, N=3, tokens=tokens, reduction=reduction, act="sigmoid", seed=2)
    w = p.weights
    v1 = rnn.Problem(rnn.Weights(w.V, w.W, w.U, w.b_h, w.b_y, w.h_init), hidden_activation="sigmoid",
                     inputs=p.inputs, tokens=p.tokens, targets=p.targets, scored=p.scored,
                     loss=p.loss, reduction=reduction)
    include = ("b_h_terms", "jacobian_norms")
    old_cache = rnn.forward(v1)
    old, old_bptt = rnn.backward_with_diagnostics(old_cache, truncate, include)
    cache = sequence.forward(p)
    new, bptt = sequence.backward(cache, truncate, include)
    close(cache.loss, old_cache.loss, 1e-12)
    close(cache.h, old_cache.h, 1e-12)
    close(cache.yhat, old_cache.yhat, 1e-12)
    for name in ("V", "W", "U", "b_h", "b_y", "h_init"):
        close(new[name], getattr(old, name), 1e-12)
    for name in ("b_h_by_step", "hidden_grad_norms", "b_h_terms", "jacobian_norms"):
        close(np.nan_to_num(getattr(bptt, name), nan=-1), np.nan_to_num(getattr(old_bptt, name), nan=-1), 1e-12)


def _golden(path):
    g = json.loads(path.read_text())
    cfg = g["config"]
    H, cell, batched = cfg["H"], cfg["cell"], cfg["B"] is not None
    sd = {k: np.array(v, float) for k, v in g["state_dict"].items()}
    b_h = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    b_hn = None
    if cell == "gru":
        b_h[2 * H:], b_hn = sd["bias_ih_l0"][2 * H:], sd["bias_hh_l0"][2 * H:]
    w = Weights(sd["weight_ih_l0"], sd["weight_hh_l0"], sd.get("fc.weight"), b_h, sd.get("fc.bias"),
                np.array(g["h_0"], float)[0], np.array(g["c_0"], float)[0] if cell == "lstm" else None,
                b_hn)
    kw = dict(weights=w, cell=cell, inputs=np.array(g["inputs"], float))
    if cfg["layer"]:
        return g, Problem(upstream=np.array(g["upstream"], float), **kw)
    targets = np.array(g["targets"], dtype=object)
    scored = np.vectorize(lambda t: t is not None, otypes=[bool])(targets)
    y = np.eye(cfg["N"])[np.where(scored, targets, 0).astype(int)]
    return g, Problem(targets=y, scored=scored, loss=cfg["loss"], reduction=cfg["reduction"], **kw)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda f: f.stem)
def test_matches_pytorch_golden_files(path):
    """The cells' equations themselves (central differences only check backward against
    forward): nn.RNN / LSTM / GRU + nn.Linear in float64 autograd."""
    g, p = _golden(path)
    H = g["config"]["H"]
    cache = sequence.forward(p)
    out = g["outputs"]
    close(cache.h, out["h"], 1e-10)
    if "c" in out:
        close(cache.c, out["c"], 1e-10)
    if "logits" in out:
        close(cache.z, out["logits"], 1e-10)
    close(cache.step_losses, out["step_losses"], 1e-10)
    close(cache.loss, g["loss"], 1e-10)
    grads, _ = sequence.backward(cache)
    gr = {k: np.array(v, float) for k, v in g["grads"].items()}
    close(grads["V"], gr["weight_ih_l0"], 1e-10)
    close(grads["W"], gr["weight_hh_l0"], 1e-10)
    close(grads["inputs"], gr["inputs"], 1e-10)
    close(grads["h_init"], gr["h_0"][0], 1e-10)
    if p.cell == "gru":
        close(grads["b_h"], np.concatenate([gr["bias_ih_l0"][:2 * H], gr["bias_ih_l0"][2 * H:]]), 1e-10)
        close(grads["b_hn"], gr["bias_hh_l0"][2 * H:], 1e-10)
    else:
        close(grads["b_h"], gr["bias_ih_l0"], 1e-10)
    if p.cell == "lstm":
        close(grads["c_init"], gr["c_0"][0], 1e-10)
    if "fc.weight" in gr:
        close(grads["U"], gr["fc.weight"], 1e-10)
        close(grads["b_y"], gr["fc.bias"], 1e-10)


# --- identities: batches, truncation, diagnostics ---

@pytest.mark.parametrize("cell,reset", CELL_CASES)
@pytest.mark.parametrize("layer", [False, True])
def test_batch_is_the_sum_of_its_sequences(cell, reset, layer):
    B = 3
    p = make(cell, reset, B=B, T=5, per_sequence_init=True, layer=layer, seed=11)
    include = ("b_h_terms", "jacobian_norms")
    cache = sequence.forward(p)
    grads, bptt = sequence.backward(cache, 3, include)
    singles = []
    for b in range(B):
        w = p.weights
        wb = Weights(w.V, w.W, w.U, w.b_h, w.b_y, w.h_init[b],
                     None if w.c_init is None else w.c_init[b], w.b_hn)
        pick = lambda x: None if x is None else x[b]
        pb = Problem(wb, cell, reset, p.hidden_activation, p.output_activation, pick(p.inputs),
                     None, pick(p.targets), pick(p.scored), pick(p.upstream), p.loss, p.reduction)
        c = sequence.forward(pb)
        singles.append((c, *sequence.backward(c, 3, include)))
        close(cache.h[b], c.h, 1e-14)
        close(cache.step_losses[b], c.step_losses, 1e-14)
        close(grads["h_init"][b], singles[-1][1]["h_init"], 1e-13)
        close(grads["inputs"][b], singles[-1][1]["inputs"], 1e-13)
        close(bptt.hidden_grad_norms[b], singles[-1][2].hidden_grad_norms, 1e-13)
        close(np.nan_to_num(bptt.jacobian_norms[b]), np.nan_to_num(singles[-1][2].jacobian_norms), 1e-12)
    close(cache.loss, sum(c.loss for c, _, _ in singles), 1e-13)
    for name in set(grads) - {"h_init", "c_init", "inputs"}:
        close(grads[name], sum(g[name] for _, g, _ in singles), 1e-13)
    close(bptt.b_h_by_step, sum(d.b_h_by_step for _, _, d in singles), 1e-13)
    close(bptt.b_h_terms, sum(d.b_h_terms for _, _, d in singles), 1e-13)


def test_shared_initial_state_gets_the_batch_sum_in_its_own_shape():
    p = make("lstm", B=3)
    grads, _ = sequence.backward(sequence.forward(p))
    assert grads["h_init"].shape == grads["c_init"].shape == (3,)
    w = p.weights
    tiled = Weights(w.V, w.W, w.U, w.b_h, w.b_y, np.tile(w.h_init, (3, 1)), np.tile(w.c_init, (3, 1)))
    p2 = Problem(tiled, "lstm", inputs=p.inputs, targets=p.targets, scored=p.scored, loss=p.loss)
    g2, _ = sequence.backward(sequence.forward(p2))
    close(grads["h_init"], g2["h_init"].sum(axis=0), 1e-14)
    close(grads["c_init"], g2["c_init"].sum(axis=0), 1e-14)


def test_reductions_scale_the_loss_and_leave_step_losses_unreduced():
    runs = {}
    for reduction in ("sum", "mean", "batch_mean"):
        p = make("gru", B=3, T=5, reduction=reduction, seed=4)
        c = sequence.forward(p)
        runs[reduction] = (p, c, sequence.backward(c, diagnostics=False)[0])
    p, c_sum, g_sum = runs["sum"]
    assert np.all(c_sum.step_losses[~p.scored] == 0.0)
    for reduction, scale in (("mean", 1 / p.scored.sum()), ("batch_mean", 1 / 3)):
        _, c, g = runs[reduction]
        close(c.step_losses, c_sum.step_losses, 0)
        close(c.loss, scale * c_sum.step_losses.sum(), 1e-14)
        for name in g:
            close(g[name], scale * g_sum[name], 1e-14)


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_truncation(cell, reset):
    p = make(cell, reset, B=2, T=6, seed=9)
    cache = sequence.forward(p)
    full, fbptt = sequence.backward(cache, include=("b_h_terms",))
    for K in (6, 9):
        g, b = sequence.backward(cache, K, include=("b_h_terms",))
        for name in full:
            close(g[name], full[name], 1e-13)
        close(b.b_h_terms, fbptt.b_h_terms, 1e-13)
    t, k = np.indices((6, 6))
    for K in (1, 2, 4):         # the band t − k < K of the full unrolled terms
        g, b = sequence.backward(cache, K, include=("b_h_terms",))
        band = fbptt.b_h_terms * ((t - k) < K)[..., None]
        close(b.b_h_terms, band, 1e-13)
        close(b.b_h_by_step, band.sum(axis=1), 1e-13)
        close(g["b_h"], band.sum(axis=(0, 1)), 1e-13)
        close(b.hidden_grad_norms, fbptt.hidden_grad_norms, 1e-13)   # always full BPTT


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_truncate_one_is_each_loss_through_its_own_step(cell, reset):
    """K = 1 against T one-step problems that start from the forward's state s_{t-1}."""
    p = make(cell, reset, B=2, T=5, seed=12)
    cache = sequence.forward(p)
    g1, _ = sequence.backward(cache, 1)
    H = p.H
    total = {}
    for t in range(p.T):
        prev_h = p.weights.h_init if t == 0 else cache.h[:, t - 1]
        prev_c = p.weights.c_init if t == 0 else (cache.c[:, t - 1] if cache.c is not None else None)
        w = p.weights
        wt = Weights(w.V, w.W, w.U, w.b_h, w.b_y, np.broadcast_to(prev_h, (2, H)).copy(),
                     None if prev_c is None else np.broadcast_to(prev_c, (2, H)).copy(), w.b_hn)
        one = lambda x: x[:, t:t + 1]
        pt = Problem(wt, cell, reset, "tanh", "softmax", one(p.inputs), None, one(p.targets),
                     one(p.scored), None, p.loss, "sum")
        gt, _ = sequence.backward(sequence.forward(pt), diagnostics=False)
        for name in gt:
            if name in ("h_init", "c_init", "inputs"):
                continue
            total[name] = total.get(name, 0) + gt[name]
        close(g1["inputs"][:, t], gt["inputs"][:, 0], 1e-13)
    for name in total:
        close(g1[name], total[name], 1e-13)
    # only L_0 reaches s_{-1} at K = 1
    pt0 = Problem(p.weights, cell, reset, "tanh", "softmax", p.inputs[:, :1], None,
                  p.targets[:, :1], p.scored[:, :1], None, p.loss, "sum")
    close(g1["h_init"], sequence.backward(sequence.forward(pt0), diagnostics=False)[0]["h_init"], 1e-13)


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_diagnostics_against_central_differences(cell, reset):
    """b_h_by_step[t] = ∂L_t/∂b_h, and b_h_terms[t][k] V = ∂L_t/∂x_k (b_h enters step k
    through the same drive V x_k + b_h), both from differences of step_losses."""
    p = make(cell, reset, T=4, seed=13, all_scored=True)
    grads, bptt = sequence.backward(sequence.forward(p), include=("b_h_terms",))
    close(bptt.b_h_by_step, central(p, "b_h", lambda c: c.step_losses).T, 2e-7)
    dLt_dx = central(p, "inputs", lambda c: c.step_losses)          # T_k × D × T_t
    close(np.einsum("tkg,gd->tkd", bptt.b_h_terms, p.weights.V), dLt_dx.transpose(2, 0, 1), 2e-7)
    close(bptt.b_h_terms.sum(axis=(0, 1)), grads["b_h"], 1e-13)


def _state_jacobian_numerically(p: Problem, s_prev, t, eps=1e-6):
    """∂s_t/∂s_{t-1} by central differences of a one-step forward started from s_prev."""
    H = p.H
    S = len(s_prev)

    def step(s):
        w = p.weights
        wt = Weights(w.V, w.W, w.U, w.b_h, w.b_y, s[:H], s[H:] if S > H else None, w.b_hn)
        c = sequence.forward(Problem(wt, p.cell, p.gru_reset, p.hidden_activation,
                                     inputs=p.inputs[t:t + 1]))
        return np.concatenate([c.h[0], c.c[0]]) if S > H else c.h[0]
    J = np.empty((S, S))
    for j in range(S):
        d = np.zeros(S)
        d[j] = eps
        J[:, j] = (step(s_prev + d) - step(s_prev - d)) / (2 * eps)
    return J


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_jacobian_norms_against_numerical_state_jacobians(cell, reset):
    p = make(cell, reset, T=5, seed=14)
    cache = sequence.forward(p)
    _, bptt = sequence.backward(cache, include=("jacobian_norms",))
    w = p.weights
    s = np.concatenate([cache.h, cache.c], axis=-1) if cache.c is not None else cache.h
    s_init = np.concatenate([w.h_init, w.c_init]) if cache.c is not None else w.h_init
    J = [_state_jacobian_numerically(p, s[t - 1] if t else s_init, t) for t in range(p.T)]
    S = len(s_init)
    for k in range(p.T):
        prod = np.eye(S)
        for t in range(k, p.T):
            if t > k:
                prod = J[t] @ prod
            assert abs(bptt.jacobian_norms[t, k] - np.linalg.norm(prod, 2)) < 1e-8
        assert np.isnan(bptt.jacobian_norms[:k, k]).all()


@pytest.mark.parametrize("cell,reset", CELL_CASES)
def test_hidden_grad_norms_are_the_total_state_derivative(cell, reset):
    """In layer mode ∂L/∂s_t = [upstream_t; 0] + ∂L_{>t}/∂s_t, the second from central
    differences in the initial state of the suffix problem that starts from s_t."""
    p = make(cell, reset, T=4, layer=True, seed=15)
    cache = sequence.forward(p)
    _, bptt = sequence.backward(cache)
    w, H = p.weights, p.H
    for t in range(p.T):
        immediate = np.concatenate([p.upstream[t], np.zeros(H)]) if cell == "lstm" else p.upstream[t]
        later = np.zeros_like(immediate)
        if t < p.T - 1:
            wt = Weights(w.V, w.W, None, w.b_h, None, cache.h[t].copy(),
                         None if cache.c is None else cache.c[t].copy(), w.b_hn)
            suffix = Problem(wt, cell, reset, inputs=p.inputs[t + 1:], upstream=p.upstream[t + 1:])
            later = np.concatenate([central(suffix, n).ravel() for n in
                                    (("h_init", "c_init") if cell == "lstm" else ("h_init",))])
        assert abs(bptt.hidden_grad_norms[t] - np.linalg.norm(immediate + later)) < 1e-8


# --- the P axis, shapes, purity ---

@pytest.mark.parametrize("cell,reset", CELL_CASES)
@pytest.mark.parametrize("B", [None, 2])
@pytest.mark.parametrize("tokens", [False, True])
def test_perturbation_axis_equals_a_loop_of_single_forwards(cell, reset, B, tokens):
    p = make(cell, reset, B=B, per_sequence_init=B is not None, tokens=tokens, seed=16)
    rng = np.random.default_rng(0)
    base = params_of(p)
    for names in (list(base), ["W"], ["V"], ["b_h"], ["h_init"] + ([] if tokens else ["inputs"])):
        pert = {n: base[n] + 0.1 * rng.normal(size=(3, *base[n].shape)) for n in names}
        batch = sequence.forward(p, pert)
        assert batch.loss.shape == (3,)
        for i in range(3):
            one = sequence.forward(p, {n: pert[n][i] for n in names})
            for field in ("h", "c", "z", "yhat", "step_losses", "loss"):
                if getattr(one, field) is not None:
                    close(getattr(batch, field)[i], getattr(one, field), 1e-13)


def test_shapes_unbatched_and_batched():
    for B in (None, 2):
        lead = () if B is None else (B,)
        p = make("lstm", B=B, T=4, H=3, D=2, N=5)
        c = sequence.forward(p)
        assert c.h.shape == c.c.shape == (*lead, 4, 3) and c.z.shape == (*lead, 4, 5)
        assert c.step_losses.shape == (*lead, 4) and np.ndim(c.loss) == 0
        g, b = sequence.backward(c, include=("b_h_terms", "jacobian_norms"))
        assert g["inputs"].shape == p.inputs.shape and g["V"].shape == (12, 2)
        assert b.b_h_by_step.shape == (4, 12) and b.b_h_terms.shape == (4, 4, 12)
        assert b.hidden_grad_norms.shape == (*lead, 4) and b.jacobian_norms.shape == (*lead, 4, 4)
        assert sequence.backward(c, diagnostics=False)[1] is None


def test_forward_and_backward_leave_the_problem_unchanged_and_repeat():
    p = make("gru", B=2, seed=17)
    before = {n: a.copy() for n, a in params_of(p).items()}
    c1 = sequence.forward(p)
    g1, _ = sequence.backward(c1)
    g2, _ = sequence.backward(sequence.forward(p))
    for n, a in params_of(p).items():
        close(a, before[n], 0)
    for n in g1:
        close(g1[n], g2[n], 0)


def test_estimate_work_grows_with_the_gates():
    works = {cell: sequence.estimate_work(make(cell, T=20, H=50, D=50, N=50)) for cell in ("rnn", "lstm", "gru")}
    assert works["rnn"] < works["gru"] < works["lstm"]
    assert 2.5 < works["lstm"] / works["rnn"] < 10
    p = make("lstm", T=20, H=50)
    assert sequence.estimate_work(p, include=("jacobian_norms",)) > sequence.estimate_work(p)
    assert sequence.estimate_work(p, truncate=2) < sequence.estimate_work(p)


# --- the compiled float64 path against numpy's ---

@pytest.mark.parametrize("cell,reset", CELL_CASES)
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_compiled_steps_equal_the_numpy_steps(cell, reset, act, monkeypatch):
    if cell != "rnn" and act != "tanh":
        pytest.skip("gated cells are tanh only")
    p = make(cell, reset, B=3, T=6, H=5, D=4, act=act, per_sequence_init=True, seed=21)
    runs = []
    for fast in (True, False):
        monkeypatch.setattr(sequence, "FAST", fast)
        c = sequence.forward(p)
        assert c.fast == fast
        runs.append((c, sequence.backward(c, diagnostics=False),
                     sequence.backward(c, 2, include=("b_h_terms",)),
                     sequence.backward(c, include=("b_h_terms", "jacobian_norms"))))
    (c1, *answers1), (c2, *answers2) = runs
    for field in ("h", "c", "z", "step_losses", "loss"):
        if getattr(c1, field) is not None:
            close(getattr(c1, field), getattr(c2, field), 1e-14)
    for (g1, b1), (g2, b2) in zip(answers1, answers2):
        for name in g1:
            close(g1[name], g2[name], 1e-13)
        for name in ("b_h_by_step", "hidden_grad_norms", "b_h_terms", "jacobian_norms"):
            if b1 is not None and getattr(b1, name) is not None:
                close(np.nan_to_num(getattr(b1, name)), np.nan_to_num(getattr(b2, name)), 1e-13)


def test_compiled_exp_sigmoid_tanh_are_accurate():
    from numba import njit
    from service.engine.cells import _kernels as k

    @njit
    def apply(x, which):
        y = np.empty_like(x)
        for i in range(x.shape[0]):
            y[i] = k.exp(x[i]) if which == 0 else k.sigmoid(x[i]) if which == 1 else k.tanh(x[i])
        return y
    x = np.concatenate([np.linspace(-700, 700, 20001), np.linspace(-3, 3, 20001),
                        np.geomspace(1e-300, 1, 2000), -np.geomspace(1e-300, 1, 2000), [0.0, -0.0]])
    ulps = lambda got, want: np.max(np.abs(got - want) / np.spacing(np.abs(want)))
    assert ulps(apply(x, 0), np.exp(x)) <= 1
    small = np.abs(x) < 30
    assert ulps(apply(x, 1)[small], 1 / (1 + np.exp(-x[small]))) <= 2
    assert ulps(apply(x, 2), np.tanh(x)) <= 3
    assert np.signbit(apply(np.array([-0.0]), 2)[0])
    big = apply(np.array([-1e4, 1e4, np.inf, -np.inf]), 1)
    assert big[0] < 1e-300 and big[1] == 1.0 and big[2] == 1.0
    assert list(apply(np.array([-1e4, 1e4]), 2)) == [-1.0, 1.0]
    for which in range(3):      # an overflow upstream must surface, not be clamped away
        assert np.isnan(apply(np.array([np.nan]), which)[0])


def test_reused_buffers_never_overwrite_arrays_still_held():
    """sequence.BUFFERS hands a buffer out again only when no view of it is left."""
    p, q = make("lstm", B=3, T=6, seed=30), make("lstm", B=3, T=6, seed=31)
    c = sequence.forward(p)
    held = (c.h, c.c, c.yhat, c.steps[2][0])
    copies = [a.copy() for a in held]
    grads, _ = sequence.backward(c, diagnostics=False)
    saved = {n: g.copy() for n, g in grads.items()}
    del c
    for _ in range(3):
        sequence.backward(sequence.forward(q), diagnostics=False)
    for a, b in zip(held, copies):
        close(a, b, 0)
    for n in saved:
        close(grads[n], saved[n], 0)


def test_buffers_are_reused_once_released():
    pool = sequence.Buffers(limit=1 << 20, largest=1 << 19)
    a = pool.empty((10, 10))
    assert pool.empty((10, 10)).base is not a.base      # a is still held
    base = id(a.base)                                   # (holding the base would keep it busy)
    del a
    assert id(pool.empty((5, 7)).base) == base
    assert pool.empty((1 << 17,)).base is None            # over `largest`: a fresh array
