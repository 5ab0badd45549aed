"""Golden files from real PyTorch for tests/test_reference_torch.py and tests/test_cells_reference.py.

Run in the bench venv (torch is never in .venv):

    make bench/.venv/.installed && bench/.venv/bin/python bench/torch_golden.py

Each case builds a seeded torch.nn.RNN (tanh) / LSTM / GRU (batch_first=True, one layer,
float64) and, unless in layer mode, an nn.Linear head; draws inputs, h_0 (c_0) and targets
(or an upstream gradient); runs autograd; and writes tests/golden/torch_<case>.json with the
config, the state_dict exactly as PyTorch names and shapes it, the inputs, autograd's
outputs (h, c by stepping the same module one step at a time, h_n, c_n, logits, step losses),
the loss, and the gradient of every parameter, of h_0 (c_0) and of the input. Nothing here is
mapped onto the lecture's names: the tests do that themselves.
"""
from __future__ import annotations

import json
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "golden"
IGNORE = -100          # cross_entropy's ignore_index: a null target

CASES = [
    # name, cell, B (None: unbatched), masked, reduction, layer
    ("rnn", "rnn", 3, False, "sum", False),
    ("lstm", "lstm", 3, False, "sum", False),
    ("gru", "gru", 3, False, "sum", False),
    ("lstm_unbatched", "lstm", None, False, "sum", False),
    ("gru_masked", "gru", 3, True, "sum", False),
    ("rnn_masked_mean", "rnn", 3, True, "mean", False),
    ("lstm_layer", "lstm", 3, False, None, True),
    ("gru_layer", "gru", 2, False, None, True),
    # unbatched nn.RNN and nn.GRU + Linear (h_0 1×H): layout pytorch, one sequence
    ("rnn_unbatched", "rnn", None, False, "sum", False),
    ("gru_unbatched", "gru", None, False, "sum", False),
]
D, H, N, T = 5, 4, 6, 5


def tolist(x: torch.Tensor):
    return x.detach().cpu().tolist()


def nulls(y):
    """Class indices with ignore_index written as null, the API's way."""
    return [nulls(v) for v in y] if isinstance(y, list) else (None if y == IGNORE else y)


def build(cell: str):
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    kw = {"nonlinearity": "tanh"} if cell == "rnn" else {}
    return cls(D, H, num_layers=1, batch_first=True, dtype=torch.float64, **kw)


def run_case(index: int, name: str, cell: str, B: int | None, masked: bool, reduction: str | None,
             layer: bool) -> dict:
    seed = 1000 + index
    torch.manual_seed(seed)
    rnn = build(cell)
    fc = None if layer else torch.nn.Linear(H, N, dtype=torch.float64)
    with torch.no_grad():                       # a little larger than the default init, so
        for prm in rnn.parameters():            # the gradients are not all tiny
            prm.mul_(1.5)
    g = torch.Generator().manual_seed(seed)
    batch = () if B is None else (B,)
    x = torch.randn(*batch, T, D, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(1, *batch, H, generator=g, dtype=torch.float64)).requires_grad_()
    c0 = ((0.5 * torch.randn(1, *batch, H, generator=g, dtype=torch.float64)).requires_grad_()
          if cell == "lstm" else None)
    state0 = (h0, c0) if cell == "lstm" else h0
    out, final = rnn(x, state0)                 # out: (B,) T × H
    record = {"h": tolist(out)}
    if cell == "lstm":
        record["h_n"], record["c_n"] = tolist(final[0]), tolist(final[1])
    else:
        record["h_n"] = tolist(final)

    # stepping the same module one step at a time: the per-step c (and a check on h)
    with torch.no_grad():
        st = (h0, c0) if cell == "lstm" else h0
        hs, cs = [], []
        for t in range(T):
            xt = x[..., t:t + 1, :]
            o, st = rnn(xt, st)
            hs.append(o[..., 0, :])
            if cell == "lstm":
                cs.append(st[1][0])
        stepped = torch.stack(hs, dim=-2)
        assert torch.allclose(stepped, out, rtol=0, atol=1e-14), "stepping differs from the sequence call"
        if cell == "lstm":
            record["c"] = tolist(torch.stack(cs, dim=-2))
            assert torch.allclose(torch.stack(cs, dim=-2)[..., -1, :], final[1][0], rtol=0, atol=1e-14)

    targets = upstream = None
    if layer:
        upstream = torch.randn(*batch, T, H, generator=g, dtype=torch.float64)
        step_losses = (upstream * out).sum(-1)  # (B,) T
        loss = step_losses.sum()
    else:
        targets = torch.randint(0, N, (*batch, T), generator=g)
        if masked:
            drop = torch.rand(*batch, T, generator=g) < 0.4
            drop.view(-1)[T - 1] = False        # the first sequence always scores its last step
            targets = torch.where(drop, torch.full_like(targets, IGNORE), targets)
        logits = fc(out)
        record["logits"] = tolist(logits)
        flat_z, flat_y = logits.reshape(-1, N), targets.reshape(-1)
        step_losses = torch.nn.functional.cross_entropy(
            flat_z, flat_y, reduction="none", ignore_index=IGNORE).reshape(targets.shape)
        loss = torch.nn.functional.cross_entropy(flat_z, flat_y, reduction=reduction, ignore_index=IGNORE)
    record["step_losses"] = tolist(step_losses)

    leaves = {f"{k}": v for k, v in rnn.named_parameters()}
    if fc is not None:
        leaves.update({f"fc.{k}": v for k, v in fc.named_parameters()})
    extra = {"h_0": h0, "inputs": x}
    if c0 is not None:
        extra["c_0"] = c0
    names = list(leaves) + list(extra)
    grads = torch.autograd.grad(loss, [leaves[k] for k in leaves] + [extra[k] for k in extra])

    return {
        "config": {"case": name, "cell": cell, "gru_reset": "after" if cell == "gru" else None,
                   "nonlinearity": "tanh", "batch_first": True, "num_layers": 1, "dtype": "float64",
                   "B": B, "T": T, "D": D, "H": H, "N": None if layer else N, "seed": seed,
                   "layer": layer, "loss": None if layer else "cross_entropy",
                   "reduction": reduction, "ignore_index": IGNORE if masked else None,
                   "torch": torch.__version__},
        "state_dict": {**{k: tolist(v) for k, v in rnn.state_dict().items()},
                       **({f"fc.{k}": tolist(v) for k, v in fc.state_dict().items()} if fc else {})},
        "h_0": tolist(h0), "c_0": None if c0 is None else tolist(c0),
        "inputs": tolist(x),
        "targets": None if targets is None else nulls(targets.tolist()),
        "upstream": None if upstream is None else tolist(upstream),
        "outputs": record,
        "loss": loss.item(),
        "grads": {k: tolist(v) for k, v in zip(names, grads)},
    }


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(CASES):
        data = run_case(i, *case)
        path = OUT / f"torch_{case[0]}.json"
        path.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
        print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size / 1024:.1f} KB, loss {data['loss']:.6f}")


if __name__ == "__main__":
    main()
