"""Real PyTorch in layout pytorch: each golden file of bench/torch_golden.py (a seeded
torch.nn.RNN/LSTM/GRU + nn.Linear named fc, its state_dict as PyTorch names and shapes it, h_0
and c_0 1×B×H or 1×H, autograd's gradients) is sent exactly as it is, and every gradient is
compared by its PyTorch name."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

GOLDEN = sorted(pathlib.Path(__file__).parent.joinpath("golden").glob("torch_*.json"))
TOL = 1e-9


def body_of(g: dict) -> dict:
    cfg = g["config"]
    model = {"cell": cfg["cell"], "weights": g["state_dict"]}
    if cfg["cell"] == "gru":
        model["gru_reset"] = "after"
    body = {"layout": "pytorch", "model": model, "inputs": g["inputs"], "h_init": g["h_0"]}
    if g.get("c_0") is not None:
        body["c_init"] = g["c_0"]
    if cfg["layer"]:
        body["upstream"] = {"hidden": g["upstream"]}
    else:
        body.update(targets=g["targets"], loss=cfg["loss"], reduction=cfg["reduction"])
    return body


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_pytorch_state_dict_gradients_match_autograd_by_name(client, path):
    g = json.loads(path.read_text())
    r = client.post("/v1/gradients", json=body_of(g))
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    expected = dict(g["grads"])
    expected["h_init"] = expected.pop("h_0")
    if "c_0" in expected:
        expected["c_init"] = expected.pop("c_0")
    assert set(out["gradients"]) == set(expected)
    for name, want in expected.items():
        got = np.array(out["gradients"][name])
        assert got.shape == np.array(want).shape, name                  # the shapes sent
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg=name)
    np.testing.assert_allclose(out["hidden"], g["outputs"]["h"], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out["loss"], g["loss"], rtol=TOL, atol=TOL)
    if "c" in g["outputs"]:
        np.testing.assert_allclose(out["cell"], g["outputs"]["c"], rtol=TOL, atol=TOL)
    # step_losses: null where torch's ignore_index gave 0
    got = np.array(out["step_losses"], dtype=float)
    want = np.array(g["outputs"]["step_losses"])
    scored = ~np.isnan(got)
    np.testing.assert_allclose(got[scored], want[scored], rtol=TOL, atol=TOL)


def test_the_golden_files_cover_every_cell_batched_and_unbatched():
    seen = {(json.loads(p.read_text())["config"]["cell"], json.loads(p.read_text())["config"]["B"] is None)
            for p in GOLDEN}
    assert seen >= {(c, one) for c in ("rnn", "lstm", "gru") for one in (False, True)}
