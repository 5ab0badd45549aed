"""Grading a student's answer against the engine's reference, and naming the mistake.

Each submitted field becomes one check with numpy's isclose rule
|got − expected| ≤ atol + rtol·|expected|. A failed gradient is compared with the gradients
that known mistakes produce (the lecture quiz's wrong options on ∂L/∂b_h, generalised to every
parameter), each computed here from the same forward pass; the first one the submission
reproduces within the same tolerance is the diagnosis. Pure numpy: no Flask, no Pydantic.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import rnn

# the order checks are reported in (the contract's order of the submission fields)
FIELDS = ("loss", "step_losses", "outputs", "hidden") + tuple(f"gradients.{p}" for p in rnn.PARAMETERS)
FLOAT_MAX = float(np.finfo(np.float64).max)

# A submitted value: a float64 array of any shape, or a sentence saying why it is not an
# array of numbers at all (a ragged list, a null on a scored step); either fails a wrong shape.
Submitted = np.ndarray | str


@dataclass
class Diagnosis:
    id: str
    detail: str
    window: int | None = None     # truncated_bptt: the K that reproduces the submission
    factor: float | None = None   # scaled: the c with submission ≈ c·gradient


@dataclass
class Check:
    name: str
    passed: bool
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    worst_index: list[int] | None = None
    expected_at_worst: float | None = None
    got_at_worst: float | None = None
    error: str | None = None
    diagnosis: Diagnosis | None = None


@dataclass
class Result:
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def score(self) -> float:
        return sum(c.passed for c in self.checks) / len(self.checks)


# --- comparing arrays ---

def shape_text(shape: tuple) -> str:
    """(4, 4) -> "4×4", (3,) -> "3 entries", () -> "a number"."""
    if not shape:
        return "a number"
    if len(shape) == 1:
        return f"{shape[0]} entries" if shape[0] != 1 else "1 entry"
    return "×".join(str(n) for n in shape)


def within(got: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    """numpy's isclose rule, element by element, all of them (shapes must agree)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.all(np.abs(got - expected) <= atol + rtol * np.abs(expected)))


def compare(name: str, expected: np.ndarray, got: Submitted, rtol: float, atol: float) -> Check:
    """One check. The worst element is the one furthest past its tolerance (for a passing
    check, the one closest to failing); max_rel_error is |got − expected| / max(|got|, |expected|),
    0 where both are 0."""
    expected = np.asarray(expected, dtype=np.float64)
    if isinstance(got, str):
        return Check(name, False, error=got)
    if got.shape != expected.shape:
        return Check(name, False, error=f"expected {shape_text(expected.shape)}, "
                                        f"got {shape_text(got.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.minimum(np.abs(got - expected), FLOAT_MAX)       # huge answers: capped, never Inf
        scale = np.maximum(np.abs(got), np.abs(expected))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        excess = diff - (atol + rtol * np.abs(expected))
    worst = np.unravel_index(int(np.argmax(excess)), expected.shape) if expected.ndim else ()
    return Check(name, passed=bool(np.all(excess <= 0)),
                 max_abs_error=float(diff.max()), max_rel_error=float(rel.max()),
                 worst_index=[int(i) for i in worst],
                 expected_at_worst=float(expected[worst]), got_at_worst=float(got[worst]))


# --- the mistakes: gradients a wrong derivation produces ---

def _gradient_from(cache: rnn.Cache, name: str, da: np.ndarray, dh_init: np.ndarray) -> np.ndarray:
    """One parameter's gradient from dL/da_t (T×H) and dL/dh_init; U and b_y do not go
    through the recurrence, so they keep their correct values."""
    p = cache.problem
    if name in ("U", "b_y"):
        return getattr(rnn.backward(cache), name)
    return {"V": lambda: rnn.input_grad(p, da), "W": lambda: rnn.recurrent_grad(cache, da),
            "b_h": lambda: da.sum(axis=0), "h_init": lambda: dh_init}[name]()


def no_jacobian_product(cache: rnn.Cache) -> rnn.Gradients:
    """The quiz's Σ_t ∂L_t/∂h_t · Σ_{k≤t} ∂h_k/∂θ (immediate): every earlier step counted, but
    the chain Π ∂h_i/∂h_{i−1} replaced by the identity. For b_h that is
    Σ_t dL_t/dh_t ⊙ Σ_{k≤t} f'(a_k); for V, W the same with ∂h_k/∂θ's input x_k or h_{k−1};
    for h_init, whose immediate derivative is ∂h_0/∂h_init = diag(f'(a_0)) W, it is
    (Σ_t dL_t/dh_t ⊙ f'(a_0)) W."""
    p = cache.problem
    _, dh_out = rnn.output_grads(cache)
    slope = rnn.hidden_slope(p.hidden_activation, cache.a, cache.h)
    reaching = np.cumsum(dh_out[::-1], axis=0)[::-1]     # Σ_{t≥k} dL_t/dh_t (immediate)
    da = reaching * slope
    return rnn.Gradients(**{name: _gradient_from(cache, name, da, da[0] @ p.weights.W)
                            for name in rnn.PARAMETERS})


def final_loss_only(cache: rnn.Cache) -> Iterator[rnn.Gradients]:
    """Full BPTT of the last scored step's loss alone: first as it enters L (the reduction's
    1/n applied), then, for a mean, without the 1/n."""
    p = cache.problem
    last = int(np.flatnonzero(p.scored)[-1])
    only = np.zeros_like(p.scored)
    only[last] = True
    alone = dataclasses.replace(p, scored=only, reduction="sum")
    g = rnn.backward(dataclasses.replace(cache, problem=alone))
    scales = (p.loss_scale(), 1.0) if p.reduction == "mean" else (1.0,)
    for s in scales:
        yield rnn.Gradients(**{k: s * v for k, v in g.as_dict().items()})


def unrolled_terms(cache: rnn.Cache) -> np.ndarray:
    """The lecture's unrolled terms dL_t/da_k, indexed [t, k] (T×T×H)."""
    p = cache.problem
    _, dh_out = rnn.output_grads(cache)
    slope = rnn.hidden_slope(p.hidden_activation, cache.a, cache.h)
    return rnn.windowed_chain(dh_out, slope, p.weights.W, keep_terms=True)[4]


def truncated_windows(cache: rnn.Cache, name: str, terms: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(K, ∂L/∂θ with BPTT truncated after K steps) for K = 2 … T−1 (K = 1 is no_bptt).
    The gradient for window K sums the unrolled terms with t − k < K, so each K adds one
    diagonal of `terms`: T²·H·(H or D) work for all K together."""
    p = cache.problem
    da = np.zeros((p.T, p.H))
    for K in range(1, p.T):
        lag = K - 1                                         # add the terms with t − k = K − 1
        da[:p.T - lag] += np.diagonal(terms, offset=-lag, axis1=0, axis2=1).T
        if K >= 2:
            dh_init = terms[:K, 0].sum(axis=0) @ p.weights.W   # L_t reaches h_init iff t < K
            yield K, _gradient_from(cache, name, da, dh_init)


# --- diagnosis ---

def _round_factors(c: float) -> list[float]:
    """Whole numbers and their reciprocals near c (a rounded submission fits 3.9999991, the
    student multiplied by 4)."""
    if c == 0:
        return []
    near = [float(round(c))] if abs(c) >= 1 else [1.0 / round(1.0 / c)]
    return [r for r in near if r != 0]


def _hint_for_factor(c: float, problem: rnn.Problem) -> str:
    n = int(problem.scored.sum())
    if problem.reduction == "mean" and np.isclose(c, n):
        return f" The problem's reduction is mean: divide by the number of scored steps ({n})."
    if problem.reduction == "sum" and n > 1 and np.isclose(c, 1.0 / n):
        return f" The problem's reduction is sum: do not divide by the number of scored steps ({n})."
    if np.isclose(c, problem.T) or np.isclose(c, 1.0 / problem.T):
        return f" Check how the sequence length T = {problem.T} enters your loss."
    if np.isclose(abs(c), 2.0) or np.isclose(abs(c), 0.5):
        return " Check constant factors such as the ½ in the squared error."
    return ""


def _d(name: str) -> str:
    return f"∂L/∂{name}"


DETAILS: dict[str, Callable[..., str]] = {
    "no_bptt": lambda n, **_: (
        f"Your {_d(n)} differentiates each L_t only through its own step t; add the paths "
        f"through the earlier hidden states (backpropagation through time)."),
    "truncated_bptt": lambda n, window, **_: (
        f"Your {_d(n)} backpropagates each L_t through only the last {window} steps; full BPTT "
        f"follows every L_t back to step 0."),
    "no_jacobian_product": lambda n, **_: (
        f"Your {_d(n)} counts every earlier step k but leaves out the product of Jacobians "
        f"Π ∂h_i/∂h_{{i−1}} = Π diag(f'(a_i))·W that carries ∂L_t from step t back to step k; "
        f"multiply it in."),
    "final_loss_only": lambda n, **_: (
        f"Your {_d(n)} backpropagates only the last scored step's loss; L is the "
        f"sum over every scored step, so add the gradient of each L_t."),
    "zero": lambda n, **_: (
        f"Your {_d(n)} is all zeros, but L depends on {n}"
        + (": b_y enters z_t = U h_t + b_y directly, not through h_t." if n == "b_y" else
           "; check that its gradient is computed and accumulated over the steps.")),
    "sign_flipped": lambda n, **_: (
        f"Your {_d(n)} has the opposite sign: check for y − ŷ instead of ŷ − y, or a returned "
        f"descent step −{_d(n)}."),
    "transposed": lambda n, **_: (
        f"Your {_d(n)} is the transpose of the correct one: entry [i][j] must be ∂L/∂{n}[i][j], "
        f"rows indexed like the rows of {n}."),
    "scaled": lambda n, factor, hint="", **_: (
        f"Your {_d(n)} is {factor:.6g} times the correct one.{hint}"),
}


def _diagnosis(id_: str, name: str, **extra) -> Diagnosis:
    return Diagnosis(id_, DETAILS[id_](name, **extra), window=extra.get("window"),
                     factor=extra.get("factor"))


class _Candidates:
    """The wrong gradients, computed lazily once per request and shared by the parameters."""

    def __init__(self, cache: rnn.Cache, search_truncation: bool):
        self.cache, self.search_truncation = cache, search_truncation
        self._memo: dict[str, object] = {}

    def get(self, key: str, make: Callable):
        if key not in self._memo:
            self._memo[key] = make(self.cache)
        return self._memo[key]

    def lecture(self, name: str) -> Iterator[tuple[str, np.ndarray, dict]]:
        """The quiz's wrong options in the order a student is most likely to have made them."""
        if name not in ("U", "b_y"):        # the recurrence's mistakes leave these two right
            yield "no_bptt", getattr(self.get("no_bptt", lambda c: rnn.backward(c, truncate=1)), name), {}
            if self.search_truncation:
                for K, g in truncated_windows(self.cache, name, self.get("terms", unrolled_terms)):
                    yield "truncated_bptt", g, {"window": K}
            yield "no_jacobian_product", getattr(self.get("nj", no_jacobian_product), name), {}
        for g in self.get("final", lambda c: list(final_loss_only(c))):
            yield "final_loss_only", getattr(g, name), {}


def diagnose(name: str, expected: np.ndarray, got: np.ndarray, candidates: _Candidates,
             rtol: float, atol: float) -> Diagnosis | None:
    """The first known mistake the failed gradient `got` reproduces within the tolerance.
    A candidate that equals the correct gradient (e.g. no_bptt for U) explains nothing."""
    def reproduces(candidate: np.ndarray) -> bool:
        return (candidate.shape == got.shape and within(got, candidate, rtol, atol)
                and not (candidate.shape == expected.shape and within(candidate, expected, rtol, atol)))

    zero = np.zeros_like(expected)
    if reproduces(zero):
        return _diagnosis("zero", name)
    if reproduces(-expected):
        return _diagnosis("sign_flipped", name)
    if expected.ndim == 2 and reproduces(expected.T):
        return _diagnosis("transposed", name)
    if got.shape != expected.shape:
        return None
    for id_, candidate, extra in candidates.lecture(name):
        if reproduces(candidate):
            return _diagnosis(id_, name, **extra)
    gg = float(np.vdot(expected, expected))
    if gg > 0:
        c = float(np.vdot(expected, got)) / gg              # least squares: got ≈ c·g
        if abs(c - 1.0) > 0.01 and np.isfinite(c) and reproduces(c * expected):
            c = next((r for r in _round_factors(c) if reproduces(r * expected)), c)
            return _diagnosis("scaled", name, factor=c, hint=_hint_for_factor(c, candidates.cache.problem))
    return None


# --- grading ---

def reference(problem: rnn.Problem, wanted: list[str]) -> tuple[rnn.Cache, dict[str, np.ndarray]]:
    """The correct value of every wanted field (gradients only computed if one is wanted)."""
    cache = rnn.forward(problem)
    values = {"loss": np.float64(cache.loss), "step_losses": cache.step_losses,
              "outputs": cache.yhat, "hidden": cache.h}
    if any(w.startswith("gradients.") for w in wanted):
        values.update({f"gradients.{k}": v for k, v in rnn.backward(cache).as_dict().items()})
    return cache, {w: values[w] for w in wanted}


def grade(problem: rnn.Problem, submission: dict[str, Submitted], rtol: float = 1e-5,
          atol: float = 1e-8, max_terms: float = 4_000_000, max_work: float = 2e10,
          expected: tuple[rnn.Cache, dict[str, np.ndarray]] | None = None) -> Result:
    """Check every submitted field; diagnose failed gradients. The truncated_bptt search keeps
    T²·H unrolled terms and costs about T²·H·(H + D) multiply-adds: over `max_terms` or
    `max_work` that one mistake is not looked for. `expected` is reference(problem, fields)
    when the caller already computed it."""
    wanted = [f for f in FIELDS if f in submission]
    cache, values = expected or reference(problem, wanted)
    T, H, D = problem.T, problem.H, problem.D
    candidates = _Candidates(cache, T * T * H <= max_terms and T * T * H * (H + D) <= max_work)
    checks = []
    for name in wanted:
        got = submission[name]
        if name == "step_losses":
            got = _step_losses(got, problem.scored)
        check = compare(name, values[name], got, rtol, atol)
        if not check.passed and name.startswith("gradients.") and not isinstance(got, str):
            check.diagnosis = diagnose(name.split(".", 1)[1], values[name], got, candidates, rtol, atol)
        checks.append(check)
    return Result(checks)


def _step_losses(got: Submitted, scored: np.ndarray) -> Submitted:
    """Submitted step losses with NaN for null: null is 0 on an unscored step (it adds
    nothing to L) and makes the check fail on a scored one."""
    if isinstance(got, str) or got.shape != scored.shape:
        return got
    missing = np.flatnonzero(np.isnan(got) & scored)
    if missing.size:
        return f"step_losses[{missing[0]}] is null, but step {missing[0]} is scored"
    return np.where(np.isnan(got), 0.0, got)


# --- Gradescope ---

def _output(check: Check) -> str:
    if check.error:
        text = f"{check.name}: {check.error}."
    else:
        where = "".join(f"[{i}]" for i in check.worst_index)
        verdict = "matches the reference" if check.passed else "is wrong"
        text = (f"{check.name} {verdict}: max abs error {check.max_abs_error:.3g}, max rel error "
                f"{check.max_rel_error:.3g}; at {check.name}{where} expected "
                f"{check.expected_at_worst:.10g}, got {check.got_at_worst:.10g}.")
    if check.diagnosis:
        text += f" {check.diagnosis.detail}"
    return text


def gradescope(result: Result) -> dict:
    """A Gradescope results.json object: one test per check worth 1 point."""
    tests = [{"name": c.name, "score": float(c.passed), "max_score": 1.0,
              "status": "passed" if c.passed else "failed", "output": _output(c)}
             for c in result.checks]
    passed = sum(c.passed for c in result.checks)
    return {"score": float(passed), "max_score": float(len(tests)),
            "output": f"{passed} of {len(tests)} checks passed.", "tests": tests}

