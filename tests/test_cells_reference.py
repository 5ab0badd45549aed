"""The v1.1 engine (service.engine.sequence, spec/engine_api.md) against tests/reference.py's
independent step-by-step cells (complex-step derivatives, exact to rounding) and against
PyTorch autograd (tests/golden/torch_*.json, mapped onto the lecture's names here).

Every field is compared: h, c, z, yhat, step_losses, loss, every gradient (inputs, h_init,
c_init, b_hn included), b_h_by_step, hidden_grad_norms, b_h_terms, jacobian_norms, across
cells (rnn, lstm, gru after / before) × one sequence or a batch × loss reductions or layer
mode × tokens or dense inputs × with or without initial states; truncated BPTT; and a batch
against the sum of its sequences. Agreement: 1e-9 relative to the array's largest magnitude.
"""
import json
import pathlib

import numpy as np
import pytest

import reference as ref
from service.engine import sequence
from service.engine.problem import Problem, Weights

TOL = 1e-9
INCLUDE = ("b_h_terms", "jacobian_norms")
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"


def err(a, b) -> float:
    """max|a − b| / max|b| (an absolute floor of 1e-13 where b is all but zero)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-13))


def assert_close(got, want, what, tol=TOL):
    e = err(got, want)
    assert e < tol, f"{what}: relative error {e:.2e}"


# --- the engine's Problem for a reference case ---

def engine_problem(case: ref.Case, p: dict) -> Problem:
    N = None if p.get("U") is None else p["U"].shape[0]
    targets = scored = None
    if case.targets is not None and not case.layer:
        seqs = [case.seq(case.targets, b) for b in range(case.nb)]
        Y = np.zeros((case.nb, case.T, N))
        for b, ys in enumerate(seqs):
            for t, y in enumerate(ys):
                if isinstance(y, (int, np.integer)):
                    Y[b, t, y] = 1.0
                elif y is not None:
                    Y[b, t] = y
        S = np.array([[y is not None for y in ys] for ys in seqs])
        targets, scored = (Y, S) if case.B is not None else (Y[0], S[0])

    def arr(name):
        return None if p.get(name) is None else np.array(p[name], dtype=float)

    w = Weights(V=arr("V"), W=arr("W"), U=arr("U"), b_h=arr("b_h"), b_y=arr("b_y"),
                h_init=arr("h_init"), c_init=arr("c_init"), b_hn=arr("b_hn"))
    return Problem(weights=w, cell=case.cell, gru_reset=case.gru_reset,
                   hidden_activation=case.hidden, output_activation=case.output,
                   inputs=arr("inputs"),
                   tokens=None if case.tokens is None else np.array(case.tokens, dtype=np.int64),
                   targets=targets, scored=scored,
                   upstream=None if case.upstream is None else np.array(case.upstream, dtype=float),
                   loss=case.loss, reduction=case.reduction)


def engine(case, p, truncate=None, include=INCLUDE):
    cache = sequence.forward(engine_problem(case, p))
    grads, bptt = sequence.backward(cache, truncate=truncate, include=include)
    return cache, grads, bptt


# --- the case matrix ---

CELLS = [("rnn", "after"), ("lstm", "after"), ("gru", "after"), ("gru", "before")]
MODES = ["sum", "mean", "batch_mean", "layer"]
# dense inputs with initial states (per sequence when batched) and null targets; tokens
# with no initial states, every step scored; dense inputs with one shared initial state
VARIANTS = ["dense_init", "tokens_noinit", "dense_shared_init"]


def make_case(cell, reset, B, mode, variant, seed=0, **kw):
    return ref.random_case(
        seed, cell=cell, gru_reset=reset, B=B, T=kw.pop("T", 4), H=3, D=2, N=4,
        tokens=variant == "tokens_noinit",
        h_init=variant != "tokens_noinit", c_init=variant != "tokens_noinit",
        b_hn=variant != "tokens_noinit",
        per_sequence_init=variant == "dense_init" and B is not None,
        layer=mode == "layer", reduction="sum" if mode == "layer" else mode,
        null_targets=variant == "dense_init", **kw)


MATRIX = [(c, r, B, m, v) for c, r in CELLS for B in (None, 2) for m in MODES for v in VARIANTS
          if not (v == "dense_shared_init" and B is None)]


def cid(x):
    return x if isinstance(x, str) else ("B" + str(x) if x else "single")


def check_forward(case, p, cache):
    r = ref.cell_run(case, p)
    ub = lambda k: ref.unbatch(case, r[k])
    assert_close(cache.h, ub("h"), "h")
    if case.cell == "lstm":
        assert_close(cache.c, ub("c"), "c")
    else:
        assert cache.c is None
    if p.get("U") is not None:
        assert_close(cache.z, ub("z"), "z")
        assert_close(cache.yhat, ub("yhat"), "yhat")
    else:
        assert cache.z is None and cache.yhat is None
    assert_close(cache.step_losses, ub("step_losses"), "step_losses")
    assert_close(cache.loss, r["L"], "loss")


def check_gradients(case, p, grads, want):
    assert set(grads) == set(want), f"gradient keys {sorted(grads)} != {sorted(want)}"
    for k in want:
        assert_close(grads[k], want[k], f"gradients[{k}]")


@pytest.mark.parametrize("cell,reset,B,mode,variant", MATRIX, ids=lambda x: cid(x))
def test_engine_matches_reference(cell, reset, B, mode, variant):
    case, p = make_case(cell, reset, B, mode, variant)
    cache, grads, bptt = engine(case, p)
    check_forward(case, p, cache)
    check_gradients(case, p, grads, ref.cell_grads(case, p))
    terms = ref.cell_b_h_terms(case, p)
    assert_close(bptt.b_h_terms, terms, "b_h_terms")
    assert_close(bptt.b_h_by_step, terms.sum(axis=1), "b_h_by_step")
    assert_close(bptt.b_h_by_step.sum(axis=0), grads["b_h"], "Σ b_h_by_step vs gradients.b_h")
    assert_close(bptt.hidden_grad_norms, ref.cell_state_grad_norms(case, p), "hidden_grad_norms")
    want = ref.cell_jacobian_norms(case, p)
    got = np.asarray(bptt.jacobian_norms, dtype=float)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), "jacobian_norms: NaN pattern (k > t)"
    assert_close(np.nan_to_num(got), np.nan_to_num(want), "jacobian_norms")


HEADS = [("sigmoid", "softmax", "cross_entropy"), ("relu", "identity", "squared_error"),
         ("identity", "sigmoid", "binary_cross_entropy"), ("tanh", "softmax", "squared_error"),
         ("tanh", "sigmoid", "squared_error")]


@pytest.mark.parametrize("cell,hidden,output,loss",     # gated cells are tanh only
                         [(c, *h) for c in ("rnn", "lstm", "gru") for h in HEADS if c == "rnn" or h[0] == "tanh"])
def test_activations_and_heads(cell, hidden, output, loss):
    case, p = ref.random_case(1, cell=cell, B=2, hidden=hidden, output=output, loss=loss,
                              reduction="mean", null_targets=True, per_sequence_init=True)
    cache, grads, bptt = engine(case, p, include=())
    check_forward(case, p, cache)
    check_gradients(case, p, grads, ref.cell_grads(case, p))
    assert bptt.b_h_terms is None and bptt.jacobian_norms is None


def test_no_output_layer_in_layer_mode():
    for cell, reset in CELLS:
        case, p = ref.random_case(2, cell=cell, gru_reset=reset, B=2, layer=True, output_layer=False)
        cache, grads, bptt = engine(case, p)
        check_forward(case, p, cache)
        check_gradients(case, p, grads, ref.cell_grads(case, p))
        assert_close(bptt.b_h_terms, ref.cell_b_h_terms(case, p), "b_h_terms")


@pytest.mark.parametrize("cell,reset", CELLS, ids=lambda x: x)
@pytest.mark.parametrize("B,mode", [(None, "sum"), (2, "mean"), (2, "layer")], ids=["single", "B2_mean", "B2_layer"])
def test_one_step(cell, reset, B, mode):
    """T = 1: every diagnostic is one entry; truncation K = 1 is then full BPTT."""
    case, p = make_case(cell, reset, B, mode, "dense_init", seed=9, T=1)
    cache, grads, bptt = engine(case, p)
    check_forward(case, p, cache)
    check_gradients(case, p, grads, ref.cell_grads(case, p))
    assert_close(bptt.b_h_terms, ref.cell_b_h_terms(case, p), "b_h_terms")
    assert_close(bptt.hidden_grad_norms, ref.cell_state_grad_norms(case, p), "hidden_grad_norms")
    assert_close(bptt.jacobian_norms, ref.cell_jacobian_norms(case, p), "jacobian_norms")
    _, g1, _ = engine(case, p, truncate=1)
    for k in grads:
        assert_close(g1[k], grads[k], f"T=1, K=1: {k}", tol=1e-12)


def test_diagnostics_false_gives_no_bptt():
    case, p = make_case("lstm", "after", 2, "sum", "dense_init")
    grads, bptt = sequence.backward(sequence.forward(engine_problem(case, p)), diagnostics=False)
    assert bptt is None
    check_gradients(case, p, grads, ref.cell_grads(case, p))


# --- truncated BPTT ---

TRUNC = [(c, r, B, m, v) for c, r in CELLS for B, m, v in
         [(None, "sum", "dense_init"), (2, "mean", "dense_init"), (2, "layer", "tokens_noinit")]]


@pytest.mark.parametrize("cell,reset,B,mode,variant", TRUNC, ids=lambda x: cid(x))
def test_truncation(cell, reset, B, mode, variant):
    """K ≥ T is full BPTT, K = 1 the step-only gradient, K in between the reference's
    truncated gradient (terms with t − k < K; h_init / c_init from L_t with t < K); the
    diagnostics follow (b_h_by_step and b_h_terms truncated, hidden_grad_norms full)."""
    case, p = make_case(cell, reset, B, mode, variant, seed=3)
    T = case.T
    _, full, full_bptt = engine(case, p)
    for K in (T, T + 3):
        _, grads, _ = engine(case, p, truncate=K)
        for k in full:
            assert_close(grads[k], full[k], f"K={K} vs full: {k}", tol=1e-12)
    for K in (1, 2, 3):
        want = ref.cell_truncated_grads(case, p, K)
        _, grads, bptt = engine(case, p, truncate=K)
        check_gradients(case, p, grads, want)
        terms = ref.cell_b_h_terms(case, p, K)
        assert_close(bptt.b_h_terms, terms, f"K={K}: b_h_terms")
        assert_close(bptt.b_h_by_step, terms.sum(axis=1), f"K={K}: b_h_by_step")
        assert_close(bptt.b_h_by_step.sum(axis=0), grads["b_h"], f"K={K}: Σ b_h_by_step")
        assert_close(bptt.hidden_grad_norms, full_bptt.hidden_grad_norms, f"K={K}: hidden_grad_norms (full)")


def test_truncate_one_is_the_diagonal():
    """K = 1 from the reference's own per-step table: only dL_t/dθ^(t), and h_init only from L_0."""
    case, p = make_case("lstm", "after", None, "sum", "dense_init", seed=4)
    _, grads, _ = engine(case, p, truncate=1)
    for name in ("V", "W", "b_h"):
        tab = ref.cell_step_table(case, p, name)
        assert_close(grads[name], np.einsum("tt...->...", tab), f"K=1 diagonal: {name}")
    assert_close(grads["h_init"], ref.cell_grad(case, p, "h_init", of=lambda r: r["L_t"])[..., 0], "K=1 h_init")


# --- a batch is the sum of its sequences ---

def single(case: ref.Case, p: dict, b: int) -> tuple[ref.Case, dict]:
    """Sequence b of a batched case as a one-sequence case (reduction sum)."""
    one = ref.Case(cell=case.cell, gru_reset=case.gru_reset, hidden=case.hidden, output=case.output,
                   loss=case.loss, reduction="sum", T=case.T, D=case.D, B=None,
                   tokens=None if case.tokens is None else case.tokens[b],
                   targets=None if case.targets is None else case.targets[b],
                   upstream=None if case.upstream is None else case.upstream[b])
    q = dict(p)
    for name in ("h_init", "c_init"):
        if q.get(name) is not None and np.ndim(q[name]) == 2:
            q[name] = q[name][b]
    if q.get("inputs") is not None:
        q["inputs"] = q["inputs"][b]
    return one, q


@pytest.mark.parametrize("reduction", ["sum", "mean", "batch_mean", "layer"])
@pytest.mark.parametrize("cell,reset", CELLS, ids=lambda x: x)
@pytest.mark.parametrize("per_sequence", [False, True], ids=["shared_init", "per_sequence_init"])
def test_batch_is_sum_of_sequences(cell, reset, reduction, per_sequence):
    B = 3
    case, p = ref.random_case(5, cell=cell, gru_reset=reset, B=B, null_targets=reduction != "layer",
                              reduction="sum" if reduction == "layer" else reduction,
                              layer=reduction == "layer", per_sequence_init=per_sequence)
    cache, grads, bptt = engine(case, p, include=("b_h_terms",))
    scale = engine_problem(case, p).loss_scale()
    want_scale = {"sum": 1.0, "layer": 1.0, "batch_mean": 1.0 / B,
                  "mean": 1.0 / int(case.scored().sum())}[reduction]
    assert scale == pytest.approx(want_scale, rel=1e-15)
    parts = [engine(*single(case, p, b), include=("b_h_terms",)) for b in range(B)]
    assert_close(cache.h, np.stack([c.h for c, _, _ in parts]), "h")
    assert_close(cache.step_losses, np.stack([c.step_losses for c, _, _ in parts]), "step_losses (unreduced)")
    assert_close(cache.loss, scale * sum(c.loss for c, _, _ in parts), "loss")
    for k in grads:
        if k in ("h_init", "c_init") and per_sequence:
            want = np.stack([g[k] for _, g, _ in parts]) * scale
        elif k == "inputs":
            want = np.stack([g[k] for _, g, _ in parts]) * scale
        else:
            want = scale * sum(g[k] for _, g, _ in parts)
        assert_close(grads[k], want, f"gradients[{k}]")
    assert_close(bptt.b_h_by_step, scale * sum(bp.b_h_by_step for _, _, bp in parts), "b_h_by_step")
    assert_close(bptt.b_h_terms, scale * sum(bp.b_h_terms for _, _, bp in parts), "b_h_terms")
    # hidden_grad_norms are per sequence: ‖∂L/∂s_t‖ of the reduced L
    assert_close(bptt.hidden_grad_norms, scale * np.stack([bp.hidden_grad_norms for _, _, bp in parts]),
                 "hidden_grad_norms")


# --- perturbed forward passes (what gradcheck uses) ---

@pytest.mark.parametrize("cell,reset", CELLS, ids=lambda x: x)
def test_forward_with_a_leading_perturbation_axis(cell, reset):
    """forward(problem, params) with complex overrides sharing a leading P axis: each loss
    is the reference's loss of that perturbed model, and the complex step through the
    engine's own forward reproduces the reference's gradient."""
    case, p = make_case(cell, reset, 2, "mean", "dense_init", seed=6)
    prob = engine_problem(case, p)
    rng = np.random.default_rng(7)
    P = 3
    names = [n for n in ref.cell_present(case, p)]
    over = {n: np.asarray(p[n], float)[None] + 0.01 * rng.normal(size=(P, *np.shape(p[n]))) for n in names}
    cache = sequence.forward(prob, over)
    assert np.shape(cache.loss) == (P,)
    want = [ref.cell_run(case, {**p, **{n: over[n][i] for n in names}})["L"] for i in range(P)]
    assert_close(cache.loss, want, "perturbed losses")
    assert cache.h.shape == (P, *ref.unbatch(case, ref.cell_run(case, p)["h"]).shape)
    # the complex step through the engine's forward, every element of W at once (P = W.size)
    W = np.asarray(p["W"], float)
    eye = np.eye(W.size).reshape(W.size, *W.shape)
    cs = sequence.forward(prob, {"W": W[None] + 1e-30j * eye}).loss.imag / 1e-30
    assert_close(cs.reshape(W.shape), ref.cell_grad(case, p, "W"), "complex step through the engine")


# --- the engine against PyTorch autograd (golden files) ---

def golden_problem(g: dict) -> tuple[Problem, dict, dict]:
    """The golden file's problem mapped onto the lecture's names by hand (V = weight_ih,
    W = weight_hh, b_h = bias_ih + bias_hh except the GRU's n block: b_n = bias_ih's,
    b_hn = bias_hh's; U = fc.weight, b_y = fc.bias), plus autograd's outputs and gradients
    in the same names."""
    cfg = g["config"]
    sd = {k: np.array(v, dtype=float) for k, v in g["state_dict"].items()}
    gr = {k: np.array(v, dtype=float) for k, v in g["grads"].items()}
    H, cell, B = cfg["H"], cfg["cell"], cfg["B"]
    b_h = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    b_hn = None
    if cell == "gru":
        b_h[2 * H:] = sd["bias_ih_l0"][2 * H:]
        b_hn = sd["bias_hh_l0"][2 * H:]
    w = Weights(V=sd["weight_ih_l0"], W=sd["weight_hh_l0"], U=sd.get("fc.weight"), b_h=b_h,
                b_y=sd.get("fc.bias"), h_init=np.array(g["h_0"], dtype=float)[0],
                c_init=np.array(g["c_0"], dtype=float)[0] if cell == "lstm" else None, b_hn=b_hn)
    targets = scored = upstream = None
    if cfg["layer"]:
        upstream = np.array(g["upstream"], dtype=float)
    else:
        ys = g["targets"] if B is not None else [g["targets"]]
        Y = np.zeros((len(ys), cfg["T"], cfg["N"]))
        for b, row in enumerate(ys):
            for t, y in enumerate(row):
                if y is not None:
                    Y[b, t, y] = 1.0
        S = np.array([[y is not None for y in row] for row in ys])
        targets, scored = (Y, S) if B is not None else (Y[0], S[0])
    prob = Problem(weights=w, cell=cell, gru_reset="after", inputs=np.array(g["inputs"], dtype=float),
                   targets=targets, scored=scored, upstream=upstream,
                   loss=cfg["loss"], reduction=cfg["reduction"] or "sum")
    want_grads = {"V": gr["weight_ih_l0"], "W": gr["weight_hh_l0"], "b_h": gr["bias_ih_l0"],
                  "h_init": gr["h_0"][0], "inputs": gr["inputs"]}
    if not cfg["layer"]:
        want_grads["U"], want_grads["b_y"] = gr["fc.weight"], gr["fc.bias"]
    if cell == "gru":
        want_grads["b_hn"] = gr["bias_hh_l0"][2 * H:]
    if cell == "lstm":
        want_grads["c_init"] = gr["c_0"][0]
    o = g["outputs"]
    want_out = {"h": np.array(o["h"]), "step_losses": np.array(o["step_losses"]), "loss": g["loss"]}
    if "c" in o:
        want_out["c"] = np.array(o["c"])
    if "logits" in o:
        want_out["z"] = np.array(o["logits"])
    return prob, want_out, want_grads


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("torch_*.json")), ids=lambda f: f.stem)
def test_engine_matches_torch_golden(path):
    prob, want_out, want_grads = golden_problem(json.loads(path.read_text()))
    cache = sequence.forward(prob)
    for k in ("h", "c", "z", "step_losses"):
        if k in want_out:
            assert_close(getattr(cache, k), want_out[k], k)
    assert_close(cache.loss, want_out["loss"], "loss")
    grads, _ = sequence.backward(cache, diagnostics=False)
    assert set(grads) == set(want_grads), (sorted(grads), sorted(want_grads))
    for k in want_grads:
        assert_close(grads[k], want_grads[k], f"gradients[{k}] vs autograd")


@pytest.mark.parametrize("output,loss", [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")])
@pytest.mark.parametrize("cell,reset", CELLS, ids=lambda x: x)
def test_large_logits(cell, reset, output, loss):
    """Logits in the hundreds: the stable log-softmax / log-sigmoid losses and their
    gradients stay finite and equal the reference's."""
    case, p = ref.random_case(10, cell=cell, gru_reset=reset, B=2, output=output, loss=loss)
    p = {**p, "U": 300.0 * p["U"], "b_y": 100.0 * p["b_y"]}
    cache, grads, _ = engine(case, p, include=())
    assert np.isfinite(cache.loss) and np.max(np.abs(cache.z)) > 100
    check_forward(case, p, cache)
    check_gradients(case, p, grads, ref.cell_grads(case, p))
