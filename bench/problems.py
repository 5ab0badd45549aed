"""Seeded problem bodies for the benchmark: tokens in, tanh hidden, softmax outputs, cross-entropy."""
from __future__ import annotations

import numpy as np
import pybase64          # what a Python caller would pick for speed (the service uses it too)

# name -> (vocabulary D = N, hidden H, steps T)
SIZES = {"quiz": (8, 16, 10), "char-rnn": (65, 100, 25), "large": (256, 512, 100)}


def weights(D: int, H: int, N: int, seed: int = 0) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {"V": r.normal(0, 0.1, (H, D)), "W": r.normal(0, 1 / np.sqrt(H), (H, H)),
            "U": r.normal(0, 0.1, (N, H)), "b_h": r.normal(0, 0.1, H), "b_y": r.normal(0, 0.1, N)}


def binary(a: np.ndarray) -> dict:
    """The API's binary array encoding: float64, little-endian, base64."""
    a = np.ascontiguousarray(a, dtype="<f8")
    return {"dtype": "float64", "shape": list(a.shape), "data": pybase64.b64encode_as_string(a.data)}


def body(D: int, H: int, T: int, seed: int = 0, encoding: str = "json", N: int | None = None) -> dict:
    """A /v1/gradients body; encoding "binary" sends the weights as base64 arrays."""
    N = D if N is None else N
    r = np.random.default_rng(seed + 1)
    w = weights(D, H, N, seed)
    enc = binary if encoding == "binary" else (lambda a: a.tolist())
    return {"model": {"weights": {k: enc(v) for k, v in w.items()}},
            "tokens": r.integers(0, D, T).tolist(), "targets": r.integers(0, N, T).tolist()}
