"""tests/reference.py's v1.1 cells against real PyTorch autograd (tests/golden/torch_*.json,
written by bench/torch_golden.py with torch.nn.RNN / LSTM / GRU + nn.Linear, float64).

The PyTorch state_dict is mapped onto the lecture's parameters here, by hand:
V = weight_ih_l0, W = weight_hh_l0, b_h = bias_ih_l0 + bias_hh_l0 except the GRU's n block,
where b_n = bias_ih_l0's n block and b_hn = bias_hh_l0's n block; U = fc.weight,
b_y = fc.bias; h_init = h_0[0], c_init = c_0[0]. Both PyTorch biases receive the gradient of
the sum they make. No torch here: it is never installed in the test venv.
"""
import json
import pathlib

import numpy as np
import pytest

import reference as ref

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
FILES = sorted(GOLDEN.glob("torch_*.json"))
TOL = 1e-9


def rel_err(a, b) -> float:
    """max|a − b| / max|b|: the error relative to the array's largest magnitude."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def load(path) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def golden_case(g: dict) -> tuple[ref.Case, dict]:
    """The golden file's problem in the lecture's names (reference.Case and its parameters)."""
    cfg, sd = g["config"], {k: np.array(v, dtype=float) for k, v in g["state_dict"].items()}
    H = cfg["H"]
    p = {"V": sd["weight_ih_l0"], "W": sd["weight_hh_l0"],
         "b_h": sd["bias_ih_l0"] + sd["bias_hh_l0"],
         "U": sd.get("fc.weight"), "b_y": sd.get("fc.bias"),
         "h_init": np.array(g["h_0"], dtype=float)[0], "c_init": None, "b_hn": None,
         "inputs": np.array(g["inputs"], dtype=float)}
    if cfg["cell"] == "gru":
        p["b_h"][2 * H:] = sd["bias_ih_l0"][2 * H:]
        p["b_hn"] = sd["bias_hh_l0"][2 * H:].copy()
    if cfg["cell"] == "lstm":
        p["c_init"] = np.array(g["c_0"], dtype=float)[0]
    case = ref.Case(cell=cfg["cell"], gru_reset="after", hidden="tanh", output="softmax",
                    loss=cfg["loss"], reduction=cfg["reduction"] or "sum",
                    T=cfg["T"], D=cfg["D"], B=cfg["B"], targets=g["targets"],
                    upstream=None if g["upstream"] is None else np.array(g["upstream"], dtype=float))
    return case, p


def golden_grads(g: dict) -> dict:
    """Autograd's gradients in the lecture's names (and the checks PyTorch's bias split implies)."""
    cfg, gr = g["config"], {k: np.array(v, dtype=float) for k, v in g["grads"].items()}
    H = cfg["H"]
    out = {"V": gr["weight_ih_l0"], "W": gr["weight_hh_l0"], "b_h": gr["bias_ih_l0"],
           "h_init": gr["h_0"][0], "inputs": gr["inputs"]}
    if "fc.weight" in gr:
        out["U"], out["b_y"] = gr["fc.weight"], gr["fc.bias"]
    if cfg["cell"] == "gru":
        out["b_hn"] = gr["bias_hh_l0"][2 * H:]
    if cfg["cell"] == "lstm":
        out["c_init"] = gr["c_0"][0]
    return out


def golden_outputs(g: dict) -> dict:
    o = g["outputs"]
    out = {"h": np.array(o["h"]), "step_losses": np.array(o["step_losses"]), "loss": g["loss"]}
    if "c" in o:
        out["c"] = np.array(o["c"])
    if "logits" in o:
        out["z"] = np.array(o["logits"])
    return out


def test_golden_files_present_and_small():
    names = {f.stem for f in FILES}
    assert {"torch_rnn", "torch_lstm", "torch_gru", "torch_lstm_unbatched", "torch_gru_masked",
            "torch_lstm_layer"} <= names
    assert all(f.stat().st_size < 64 * 1024 for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda f: f.stem)
def test_bias_split_is_what_pytorch_reports(path):
    """PyTorch gives both biases the same gradient except the GRU's n block: the premise of
    the mapping above (b_h = their sum)."""
    g = load(path)
    gr, H = g["grads"], g["config"]["H"]
    ih, hh = np.array(gr["bias_ih_l0"]), np.array(gr["bias_hh_l0"])
    stop = 2 * H if g["config"]["cell"] == "gru" else len(ih)
    assert rel_err(hh[:stop], ih[:stop]) < 1e-12


@pytest.mark.parametrize("path", FILES, ids=lambda f: f.stem)
def test_reference_forward_matches_torch(path):
    g = load(path)
    case, p = golden_case(g)
    want = golden_outputs(g)
    r = ref.cell_run(case, p)
    assert rel_err(ref.unbatch(case, r["h"]), want["h"]) < TOL
    if "c" in want:
        assert rel_err(ref.unbatch(case, r["c"]), want["c"]) < TOL
    if "z" in want:
        assert rel_err(ref.unbatch(case, r["z"]), want["z"]) < TOL
    assert rel_err(ref.unbatch(case, r["step_losses"]), want["step_losses"]) < TOL
    assert rel_err(r["L"], want["loss"]) < TOL


@pytest.mark.parametrize("path", FILES, ids=lambda f: f.stem)
def test_reference_gradients_match_autograd(path):
    """Every parameter's complex-step gradient against autograd's, including h_0, c_0, b_hn
    and the input."""
    g = load(path)
    case, p = golden_case(g)
    want = golden_grads(g)
    got = ref.cell_grads(case, p)
    assert set(got) == set(want), (set(got), set(want))
    errors = {k: rel_err(got[k], want[k]) for k in want}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("path", [f for f in FILES if "masked" not in f.stem and "unbatched" not in f.stem],
                         ids=lambda f: f.stem)
def test_reference_truncation_tables_sum_to_autograd(path):
    """The per-step tables the truncated gradients are built from add up, at K ≥ T, to
    autograd's full gradient (V, W, b_h, b_hn, h_init, c_init, inputs)."""
    g = load(path)
    case, p = golden_case(g)
    want = golden_grads(g)
    got = ref.cell_truncated_grads(case, p, K=case.T)
    errors = {k: rel_err(got[k], want[k]) for k in want}
    assert max(errors.values()) < TOL, errors


# --- self-checks of the reference where PyTorch has nothing to compare with ---

def test_gru_before_one_step_by_hand():
    """GRU with the reset before W_n (Cho et al.; not in torch): one step, H = D = 1, written
    out in scalars."""
    V, W, b = np.array([[0.3], [-0.7], [1.1]]), np.array([[0.5], [0.2], [-0.9]]), np.array([0.1, -0.2, 0.3])
    x, h0 = 0.8, 0.4
    sig = lambda v: 1 / (1 + np.exp(-v))
    r = sig(0.3 * x + 0.5 * h0 + 0.1)
    z = sig(-0.7 * x + 0.2 * h0 - 0.2)
    n = np.tanh(1.1 * x + (-0.9) * (r * h0) + 0.3)
    want = (1 - z) * n + z * h0
    case = ref.Case(cell="gru", gru_reset="before", loss=None, T=1, D=1, upstream=np.array([[1.0]]))
    p = {"V": V, "W": W, "b_h": b, "h_init": np.array([h0]), "inputs": np.array([[x]])}
    assert ref.cell_run(case, p)["h"][0, 0, 0] == pytest.approx(want, rel=1e-15)
    n_after = np.tanh(1.1 * x + 0.3 + r * (-0.9 * h0))          # and "after" with b_hn = 0
    got = ref.cell_run(ref.Case(cell="gru", loss=None, T=1, D=1, upstream=np.array([[1.0]])), p)["h"]
    assert got[0, 0, 0] == pytest.approx((1 - z) * n_after + z * h0, rel=1e-15)


@pytest.mark.parametrize("hidden", ref.HIDDEN)
def test_v11_rnn_is_the_v1_reference(hidden):
    """The vanilla cell of cell_run is v1's run, forward and gradients."""
    spec, p = ref.random_problem(3, hidden=hidden, tokens=False, null_targets=True, reduction="mean")
    case = ref.Case(cell="rnn", hidden=hidden, output=spec.output, loss=spec.loss, reduction="mean",
                    T=spec.T, D=spec.D, targets=spec.targets)
    q = {**p, "inputs": np.asarray(spec.inputs)}
    old, new = ref.run(spec, p), ref.cell_run(case, q)
    assert rel_err(new["h"][0], old["h"]) < 1e-15 and rel_err(new["L"], old["L"]) < 1e-15
    old_g, new_g = ref.all_grads(spec, p), ref.cell_grads(case, q)
    for k in ref.PARAMS:
        assert rel_err(new_g[k], old_g[k]) < 1e-13, k


@pytest.mark.parametrize("cell,reset,kw", [
    ("gru", "before", {"B": 2, "reduction": "batch_mean", "null_targets": True, "per_sequence_init": True}),
    ("gru", "after", {"layer": True, "tokens": True}),
    ("lstm", "after", {"B": 2, "reduction": "mean", "null_targets": True}),
    ("rnn", "after", {"B": 2, "hidden": "sigmoid", "output": "sigmoid", "loss": "binary_cross_entropy"})])
def test_complex_step_agrees_with_central_differences(cell, reset, kw):
    """The reference's complex-step derivatives against plain central differences of the
    same forward pass (a third computation: no complex arithmetic involved)."""
    case, p = ref.random_case(8, cell=cell, gru_reset=reset, **kw)
    cs, cd = ref.cell_grads(case, p), ref.cell_grads(case, p, method=ref.central)
    for k in cs:
        assert rel_err(cs[k], cd[k]) < 1e-7, k
    norms = ref.cell_state_grad_norms(case, p)
    S = ref.state_size(case, p)
    cd_norm = np.linalg.norm(ref.central(lambda d: ref.cell_run(case, p, shift={(0, 1): d})["L"], np.zeros(S)))
    assert abs(np.atleast_2d(norms)[0, 1] - cd_norm) < 1e-7 * max(1.0, cd_norm)
