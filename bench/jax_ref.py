"""The fastest peer: JAX `jit` computing everything /v1/gradients returns, float64, one thread.

    forward (tokens in, tanh RNN or LSTM [i, f, g, o], softmax outputs, summed cross-entropy),
    jax.vjp for every gradient, dL_t/db_h for every t as the step-loss vector's Jacobian (T
    vector-Jacobian products, vmapped), and ||dL/ds_t|| as the gradient with respect to a zero
    perturbation added to the state after each step (s_t = h_t, or [h_t; c_t] for the LSTM:
    the total derivative of the state that flows between steps, as the engine defines it).

Import this module before anything else imports jax: it sets XLA_FLAGS (one thread) and x64.
bench/.venv only (the Makefile pins jax next to torch); never in .venv or requirements.
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

PARAMS = {"rnn": ("V", "W", "U", "b_h", "b_y", "h_init"),
          "lstm": ("V", "W", "U", "b_h", "b_y", "h_init", "c_init")}


def response_fn(cell: str, tokens: np.ndarray, targets: np.ndarray):
    """A jitted params -> {engine's names: arrays} for fixed tokens/targets (T, or B × T ints).
    h_init/c_init are H (shared by every sequence; their gradients summed over the batch)."""
    batched = tokens.ndim == 2
    tok = jnp.asarray(tokens.reshape(-1, tokens.shape[-1]))       # B × T
    tgt = jnp.asarray(targets.reshape(tok.shape))
    B, T = tok.shape

    def run(p, eps):
        """(L_t summed over the batch (T,), aux); eps: T × B × S state perturbations (zeros)."""
        H = p["W"].shape[1]
        xd = jnp.transpose(p["V"][:, tok], (2, 1, 0)) + p["b_h"]   # T × B × G·H (columns of V)
        h0 = jnp.broadcast_to(p["h_init"], (B, H))
        if cell == "rnn":
            def step(h, inp):
                x, e = inp
                h = jnp.tanh(x + h @ p["W"].T) + e
                return h, (h, h)
            _, (hs, _) = jax.lax.scan(step, h0, (xd, eps))
            cs = None
        else:
            c0 = jnp.broadcast_to(p["c_init"], (B, H))

            def step(s, inp):
                h, c = s
                x, e = inp
                a = x + h @ p["W"].T
                i, f, o = (jax.nn.sigmoid(a[:, k * H:(k + 1) * H]) for k in (0, 1, 3))
                g = jnp.tanh(a[:, 2 * H:3 * H])
                c = f * c + i * g
                h = o * jnp.tanh(c)
                h, c = h + e[:, :H], c + e[:, H:]
                return (h, c), (h, c)
            _, (hs, cs) = jax.lax.scan(step, (h0, c0), (xd, eps))
        z = hs @ p["U"].T + p["b_y"]                                # T × B × N
        logp = jax.nn.log_softmax(z, axis=-1)
        per = -jnp.take_along_axis(logp, tgt.T[:, :, None], axis=-1)[..., 0]   # T × B
        return per.sum(axis=1), (hs, cs, jnp.exp(logp), per)

    def full(p):
        H = p["W"].shape[1]
        S = H if cell == "rnn" else 2 * H
        eps = jnp.zeros((T, B, S))
        step_losses, vjp, (hs, cs, yhat, per) = jax.vjp(run, p, eps, has_aux=True)
        grads, deps = vjp(jnp.ones(T))
        # dL_t/db_h: the Jacobian of the step losses with respect to b_h alone (a vmapped vjp of
        # the full function would also build T copies of dW: 4x slower at H 512)
        by_step = jax.jacrev(lambda b: run({**p, "b_h": b}, eps)[0])(p["b_h"])
        norms = jnp.sqrt(jnp.sum(deps * deps, axis=-1))             # T × B

        def shaped(a):                                              # time-major -> the engine's
            a = jnp.swapaxes(a, 0, 1)                               # B × T × …
            return a if batched else a[0]
        out = {"hidden": shaped(hs), "outputs": shaped(yhat), "step_losses": shaped(per),
               "loss": step_losses.sum(), "b_h_by_step": by_step, "hidden_grad_norms": shaped(norms),
               **{f"gradients.{k}": v for k, v in grads.items()}}
        if cs is not None:
            out["cell"] = shaped(cs)
        return out

    return jax.jit(full)


def device(params: dict) -> dict:
    return {k: jax.device_put(np.asarray(v, dtype=np.float64)) for k, v in params.items()}


def ready(out: dict) -> dict:
    return jax.block_until_ready(out)


def to_numpy(out: dict) -> dict:
    return {k: np.asarray(v) for k, v in out.items()}
