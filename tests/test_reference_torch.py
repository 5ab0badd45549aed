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
