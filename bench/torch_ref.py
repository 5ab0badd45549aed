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


def _forward(t: dict):
    """tanh RNN with softmax outputs: the hidden states h_t (a list), the logits and L_t."""
    drive = t["V"].T[t["tokens"]]                  # V x_t for one-hot x_t: columns of V
    h = t["h_init"]
    hs = []
    for step in range(drive.shape[0]):
        h = torch.tanh(drive[step] + t["W"] @ h + t["b_h"])
        hs.append(h)
    z = torch.stack(hs) @ t["U"].T + t["b_y"]
    return hs, z, torch.nn.functional.cross_entropy(z, t["targets"], reduction="none")


def forward_backward(t: dict, with_outputs: bool = False):
    """Summed cross-entropy: L and dL/dθ (and, if asked, the outputs, hidden states and
    per-step losses as the API returns them)."""
    for name in PARAMETERS:
        t[name].grad = None
    hs, z, step_losses = _forward(t)
    loss = step_losses.sum()
    loss.backward()
    grads = {k: t[k].grad for k in PARAMETERS}
    if not with_outputs:
        return loss.item(), grads
    return loss.item(), grads, {"outputs": torch.softmax(z.detach(), dim=-1),
                                "hidden": torch.stack(hs).detach(), "step_losses": step_losses.detach()}


def full_response(t: dict) -> dict:
    """Everything /v1/gradients returns, the way a PyTorch user would get it: one backward
    pass for dL/dθ and the total dL/dh_t, and dL_t/db_h for every t as T vector-Jacobian
    products batched into one call (is_grads_batched)."""
    hs, z, step_losses = _forward(t)
    (by_step,) = torch.autograd.grad(step_losses, t["b_h"], retain_graph=True, is_grads_batched=True,
                                     grad_outputs=torch.eye(len(hs), dtype=torch.float64))
    loss = step_losses.sum()
    grads = torch.autograd.grad(loss, [t[k] for k in PARAMETERS] + hs)
    return {**dict(zip(PARAMETERS, grads)), "b_h_by_step": by_step,
            "hidden_grad_norms": torch.stack(grads[len(PARAMETERS):]).norm(dim=1),
            "outputs": torch.softmax(z.detach(), dim=-1), "hidden": torch.stack(hs).detach(),
            "step_losses": step_losses.detach(), "loss": loss.detach()}
