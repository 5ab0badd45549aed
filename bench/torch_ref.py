"""The same RNN in PyTorch (float64, CPU autograd): what a user would run instead of the service."""
from __future__ import annotations

import numpy as np
import torch

PARAMETERS = ("V", "W", "U", "b_h", "b_y", "h_init")


def tensors(body: dict) -> dict:
    """Leaf tensors (requires_grad) for the weights of a tokens/cross-entropy problem body."""
    w = body["model"]["weights"]
    out = {k: torch.tensor(np.asarray(w[k], dtype=np.float64), requires_grad=True)
           for k in ("V", "W", "U", "b_h", "b_y")}
    out["h_init"] = torch.zeros(len(w["W"]), dtype=torch.float64, requires_grad=True)
    out["tokens"] = torch.tensor(body["tokens"], dtype=torch.long)
    out["targets"] = torch.tensor(body["targets"], dtype=torch.long)
    return out


def forward_backward(t: dict, with_outputs: bool = False):
    """tanh RNN, softmax outputs, summed cross-entropy: L and dL/dθ (and, if asked, the
    outputs, hidden states and per-step losses as the API returns them)."""
    for name in PARAMETERS:
        t[name].grad = None
    drive = t["V"].T[t["tokens"]]                  # V x_t for one-hot x_t: columns of V
    h = t["h_init"]
    hs = []
    for step in range(drive.shape[0]):
        h = torch.tanh(drive[step] + t["W"] @ h + t["b_h"])
        hs.append(h)
    hidden = torch.stack(hs)
    z = hidden @ t["U"].T + t["b_y"]
    step_losses = torch.nn.functional.cross_entropy(z, t["targets"], reduction="none")
    loss = step_losses.sum()
    loss.backward()
    grads = {k: t[k].grad for k in PARAMETERS}
    if not with_outputs:
        return loss.item(), grads
    return loss.item(), grads, {"outputs": torch.softmax(z.detach(), dim=-1), "hidden": hidden.detach(),
                                "step_losses": step_losses.detach()}
