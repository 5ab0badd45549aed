"""Grading a student's answer against the engine's reference, and naming the mistake.

Each submitted field becomes one check with numpy's isclose rule
|got − expected| ≤ atol + rtol·|expected|. A failed gradient is compared with the gradients
that known mistakes produce (the lecture quiz's wrong options on ∂L/∂b_h, generalised to every
parameter), each computed here from the same forward pass; the first one the submission
reproduces within the same tolerance is the diagnosis. Pure numpy: no Flask, no Pydantic.

The lecture's cell on one sequence takes the vanilla engine (rnn.py) and its mistakes; every
other problem (gated cells, batches, layer mode) takes the sequence runner, whose backward
computes the mistakes from the same forward pass: truncation (no_bptt, truncated_bptt), the
`carry` hook for the paths a student leaves out (no_jacobian_product, no_cell_path,
no_hidden_path), the loss of the last scored step alone, and the gate blocks' order.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import evaluate, rnn, sequence
from .problem import PARAMETERS, Problem

# the order checks are reported in (the contract's order of the submission fields)
FIELDS = ("loss", "step_losses", "outputs", "hidden", "cell") + tuple(f"gradients.{p}" for p in PARAMETERS)
GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
GATED = ("V", "W", "b_h")           # the parameters stacked in gate blocks
FLOAT_MAX = float(np.finfo(np.float64).max)

# A submitted value: a float64 array of any shape, or a sentence saying why it is not an
# array of numbers at all (a ragged list, a null on a scored step); either fails a wrong shape.
Submitted = np.ndarray | str


@dataclass
class Diagnosis:
    id: str
    detail: str
    window: int | None = None     # truncated_bptt: the K that reproduces the submission
    factor: float | None = None   # scaled (batch_*): the c with submission ≈ c·gradient
    order: str | None = None      # gate_order: the submission's gate blocks, e.g. "i, f, o, g"


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

def _grads(g: rnn.Gradients) -> dict[str, np.ndarray]:
    """The vanilla engine's gradients by name, with dL/dx_t when the inputs are dense."""
    out = g.as_dict()
    if getattr(g, "inputs", None) is not None:
        out["inputs"] = g.inputs
    return out


def _gradient_from(cache: rnn.Cache, name: str, da: np.ndarray, dh_init: np.ndarray) -> np.ndarray:
    """One parameter's gradient from dL/da_t (T×H) and dL/dh_init; U and b_y do not go
    through the recurrence, so they keep their correct values."""
    p = cache.problem
    if name in ("U", "b_y"):
        return getattr(rnn.backward(cache), name)
    return {"V": lambda: rnn.input_grad(p, da), "W": lambda: rnn.recurrent_grad(cache, da),
            "b_h": lambda: da.sum(axis=0), "h_init": lambda: dh_init,
            "inputs": lambda: da @ p.weights.V}[name]()


def _vanilla_names(p) -> tuple[str, ...]:
    return rnn.PARAMETERS + (("inputs",) if p.inputs is not None else ())


def no_jacobian_product(cache: rnn.Cache) -> dict[str, np.ndarray]:
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
    return {name: _gradient_from(cache, name, da, da[0] @ p.weights.W) for name in _vanilla_names(p)}


def final_loss_only(cache: rnn.Cache) -> Iterator[dict[str, np.ndarray]]:
    """Full BPTT of the last scored step's loss alone: first as it enters L (the reduction's
    1/n applied), then, for a mean, without the 1/n."""
    p = cache.problem
    last = int(np.flatnonzero(p.scored)[-1])
    only = np.zeros_like(p.scored)
    only[last] = True
    alone = dataclasses.replace(p, scored=only, reduction="sum")
    g = _grads(rnn.backward(dataclasses.replace(cache, problem=alone)))
    scales = (p.loss_scale(), 1.0) if p.reduction == "mean" else (1.0,)
    for s in scales:
        yield {k: s * v for k, v in g.items()}


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


# --- the same mistakes on the sequence runner (gated cells, batches, layer mode) ---

def _runner(cache: sequence.Cache, **options) -> dict[str, np.ndarray]:
    return sequence.backward(cache, diagnostics=False, **options)[0]


def _identity_carry(H: int):
    """rnn: the chain Π ∂h_i/∂h_{i−1} replaced by the identity, each dL/dh_t handed back as it
    is (h_init keeps its immediate term ∂h_0/∂h_init)."""
    return lambda t, ds, ds_prev: ds_prev if t == 0 else ds


def _drop(part: slice):
    def hook(H: int):
        def carry(t, ds, ds_prev):
            out = ds_prev.copy()
            out[..., part.start * H if part.start else 0:part.stop * H if part.stop else None] = 0.0
            return out
        return carry
    return hook


# the paths a student leaves out, per cell: (id, the hook making ds_prev without it)
PATH_MISTAKES = {
    "rnn": (("no_jacobian_product", _identity_carry),),
    "lstm": (("no_cell_path", _drop(slice(1, 2))),      # dc_{t−1} = dc_t ⊙ f_t left out
             ("no_hidden_path", _drop(slice(0, 1)))),   # dh_{t−1} = Wᵀ dL/da_t left out
    "gru": (),
}


def runner_final_loss_only(cache: sequence.Cache) -> Iterator[dict[str, np.ndarray]]:
    """Full BPTT of each sequence's last scored step alone (layer mode: its last step's
    upstream alone), scaled as it enters L, then (for a mean) without the scale."""
    p = cache.problem
    if p.layer:
        up = np.zeros_like(p.upstream)
        up[..., -1, :] = p.upstream[..., -1, :]
        alone, scales = dataclasses.replace(p, upstream=up), (1.0,)
    else:
        scored = np.ones(p.targets.shape[:-1], dtype=bool) if p.scored is None else p.scored
        only = np.zeros_like(scored)
        rows, last = scored.reshape(-1, p.T), only.reshape(-1, p.T)
        for b, row in enumerate(rows):
            steps = np.flatnonzero(row)
            if steps.size:
                last[b, steps[-1]] = True
        scale = p.loss_scale()
        alone, scales = dataclasses.replace(p, scored=only, reduction="sum"), \
            ((scale, 1.0) if scale != 1.0 else (1.0,))
    g = _runner(dataclasses.replace(cache, problem=alone))
    for s in scales:
        yield {k: s * v for k, v in g.items()}


def gate_orders(name: str, expected: np.ndarray, cell: str) -> Iterator[tuple[str, np.ndarray]]:
    """For V, W, b_h of a gated cell: (the order, the correct gradient with its gate blocks
    in that order) for every order but the right one (23 for the lstm, 5 for the gru)."""
    names = GATE_NAMES.get(cell)
    if names is None or name not in GATED:
        return
    G = len(names)
    blocks = expected.reshape(G, expected.shape[0] // G, *expected.shape[1:])
    for perm in itertools.permutations(range(G)):
        if perm != tuple(range(G)):
            yield ", ".join(names[j] for j in perm), blocks[list(perm)].reshape(expected.shape)


# --- diagnosis ---

def _round_factors(c: float) -> list[float]:
    """Whole numbers and their reciprocals near c (a rounded submission fits 3.9999991, the
    student multiplied by 4)."""
    if c == 0:
        return []
    near = [float(round(c))] if abs(c) >= 1 else [1.0 / round(1.0 / c)]
    return [r for r in near if r != 0]


def _scored_count(problem: Problem) -> int:
    return problem.B * problem.T if problem.scored is None else int(np.count_nonzero(problem.scored))


def _hint_for_factor(c: float, problem: Problem) -> str:
    n = _scored_count(problem)
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


def _reduction_text(problem: Problem) -> str:
    if problem.layer:
        return "layer mode: L = Σ ⟨upstream_t, h_t⟩ over every sequence"
    return f"reduction {problem.reduction}"


DETAILS: dict[str, Callable[..., str]] = {
    "no_bptt": lambda n, states="hidden states", **_: (
        f"Your {_d(n)} differentiates each L_t only through its own step t; add the paths "
        f"through the earlier {states} (backpropagation through time)."),
    "truncated_bptt": lambda n, window, **_: (
        f"Your {_d(n)} backpropagates each L_t through only the last {window} steps; full BPTT "
        f"follows every L_t back to step 0."),
    "no_jacobian_product": lambda n, **_: (
        f"Your {_d(n)} counts every earlier step k but leaves out the product of Jacobians "
        f"Π ∂h_i/∂h_{{i−1}} = Π diag(f'(a_i))·W that carries ∂L_t from step t back to step k; "
        f"multiply it in."),
    "no_cell_path": lambda n, **_: (
        f"Your {_d(n)} passes the gradient back only through h_{{t−1}}: add the cell's carry "
        f"∂L/∂c_{{t−1}} += ∂L/∂c_t ⊙ f_t to what each step hands back."),
    "no_hidden_path": lambda n, **_: (
        f"Your {_d(n)} passes the gradient back only along the cell state c: add "
        f"∂L/∂h_{{t−1}} = Wᵀ·∂L/∂a_t (through all four gates) to what each step hands back."),
    "gate_order": lambda n, order, gates="", canonical="", **_: (
        f"Your {_d(n)} has the right values with its gate blocks in the order {order}; this "
        f"problem stacks them as {gates}, so reorder the blocks." if n == canonical else
        f"Your {_d(n)} has the right values with its gate blocks in another order (read as the "
        f"lecture's {gates}, they come as {order}); reorder the blocks as your layout stacks them."),
    "final_loss_only": lambda n, **_: (
        f"Your {_d(n)} backpropagates only the last scored step's loss; L is the "
        f"sum over every scored step, so add the gradient of each L_t."),
    "zero": lambda n, canonical="", **_: (
        f"Your {_d(n)} is all zeros, but L depends on {n}"
        + (": b_y enters z_t = U h_t + b_y directly, not through h_t." if canonical == "b_y" else
           "; check that its gradient is computed and accumulated over the steps.")),
    "sign_flipped": lambda n, **_: (
        f"Your {_d(n)} has the opposite sign: check for y − ŷ instead of ŷ − y, or a returned "
        f"descent step −{_d(n)}."),
    "transposed": lambda n, **_: (
        f"Your {_d(n)} is the transpose of the correct one: entry [i][j] must be ∂L/∂{n}[i][j], "
        f"rows indexed like the rows of {n}."),
    "scaled": lambda n, factor, hint="", **_: (
        f"Your {_d(n)} is {factor:.6g} times the correct one.{hint}"),
    "batch_not_averaged": lambda n, factor, reduction="", **_: (
        f"Your {_d(n)} is B = {factor:.6g} times the correct one: the loss ({reduction}) is "
        f"averaged over the batch, so divide your sum over the sequences by B."),
    "batch_averaged": lambda n, factor, reduction="", **_: (
        f"Your {_d(n)} is 1/B = 1/{round(1 / factor)} of the correct one: the loss ({reduction}) "
        f"sums over the batch, so add the sequences' gradients without dividing by B."),
}


def _diagnosis(id_: str, name: str, shown: str | None = None, **extra) -> Diagnosis:
    """`shown`: the name the student knows the parameter by (a layout's), for the detail."""
    return Diagnosis(id_, DETAILS[id_](shown or name, canonical=name, **extra), window=extra.get("window"),
                     factor=extra.get("factor"), order=extra.get("order"))


class _Candidates:
    """The wrong gradients, computed lazily once per request and shared by the parameters
    (the vanilla engine's: the lecture's cell on one sequence)."""

    def __init__(self, cache, search_truncation: bool):
        self.cache, self.search_truncation = cache, search_truncation
        self._memo: dict[str, object] = {}

    def get(self, key: str, make: Callable):
        if key not in self._memo:
            self._memo[key] = make(self.cache)
        return self._memo[key]

    def lecture(self, name: str) -> Iterator[tuple[str, np.ndarray, dict]]:
        """The quiz's wrong options in the order a student is most likely to have made them."""
        if name not in ("U", "b_y"):        # the recurrence's mistakes leave these two right
            yield "no_bptt", self.get("no_bptt", lambda c: _grads(rnn.backward(c, truncate=1)))[name], {}
            if self.search_truncation:
                for K, g in truncated_windows(self.cache, name, self.get("terms", unrolled_terms)):
                    yield "truncated_bptt", g, {"window": K}
            yield "no_jacobian_product", self.get("nj", no_jacobian_product)[name], {}
        for g in self.get("final", lambda c: list(final_loss_only(c))):
            yield "final_loss_only", g[name], {}


class _RunnerCandidates(_Candidates):
    """The same mistakes for every other problem, from the sequence runner's backward on the
    forward pass graded against (truncation, the carry hook, the last step's loss alone)."""

    def lecture(self, name: str) -> Iterator[tuple[str, np.ndarray, dict]]:
        p = self.cache.problem
        states = "states h_t and c_t" if p.cell == "lstm" else "hidden states"
        if name not in ("U", "b_y"):
            yield "no_bptt", self.get("no_bptt", lambda c: _runner(c, truncate=1))[name], {"states": states}
            for id_, hook in PATH_MISTAKES[p.cell]:
                yield id_, self.get(id_, lambda c: _runner(c, carry=hook(p.H)))[name], {}
        for g in self.get("final", lambda c: list(runner_final_loss_only(c))):
            yield "final_loss_only", g[name], {}
        if name not in ("U", "b_y") and self.search_truncation:     # the costly one, last
            for K in range(2, p.T):
                yield "truncated_bptt", self.get(f"K{K}", lambda c: _runner(c, truncate=K))[name], \
                    {"window": K}


def diagnose(name: str, expected: np.ndarray, got: np.ndarray, candidates: _Candidates,
             rtol: float, atol: float, shown: str | None = None) -> Diagnosis | None:
    """The first known mistake the failed gradient `got` reproduces within the tolerance.
    A candidate that equals the correct gradient (e.g. no_bptt for U) explains nothing.
    `shown` names the parameter in the details (a layout's name for it; default `name`)."""
    diagnosis = _diagnose(name, expected, got, candidates, rtol, atol)
    if diagnosis is not None and shown is not None and shown != name:
        extra = {k: v for k, v in vars(diagnosis).items() if k not in ("id", "detail")}
        extra = {k: v for k, v in extra.items() if v is not None}
        diagnosis.detail = _diagnosis(diagnosis.id, name, shown, **_detail_extra(diagnosis, name, candidates),
                                      **extra).detail
    return diagnosis


def _detail_extra(d: Diagnosis, name: str, candidates: _Candidates) -> dict:
    """The detail's words that are not fields of the diagnosis."""
    p = candidates.cache.problem
    if d.id == "gate_order":
        return {"gates": ", ".join(GATE_NAMES[p.cell])}
    if d.id == "scaled":
        return {"hint": _hint_for_factor(d.factor, p)}
    if d.id in ("batch_not_averaged", "batch_averaged"):
        return {"reduction": _reduction_text(p)}
    if d.id == "no_bptt":
        return {"states": "states h_t and c_t" if p.cell == "lstm" else "hidden states"}
    return {}


def _diagnose(name: str, expected: np.ndarray, got: np.ndarray, candidates: _Candidates,
              rtol: float, atol: float) -> Diagnosis | None:
    def reproduces(candidate: np.ndarray) -> bool:
        return (candidate.shape == got.shape and within(got, candidate, rtol, atol)
                and not (candidate.shape == expected.shape and within(candidate, expected, rtol, atol)))

    problem = candidates.cache.problem
    zero = np.zeros_like(expected)
    if reproduces(zero):
        return _diagnosis("zero", name)
    if reproduces(-expected):
        return _diagnosis("sign_flipped", name)
    if expected.ndim == 2 and reproduces(expected.T):
        return _diagnosis("transposed", name)
    if got.shape != expected.shape:
        return None
    for order, candidate in gate_orders(name, expected, problem.cell):
        if reproduces(candidate):
            return _diagnosis("gate_order", name, order=order, gates=", ".join(GATE_NAMES[problem.cell]))
    for id_, candidate, extra in candidates.lecture(name):
        if reproduces(candidate):
            return _diagnosis(id_, name, **extra)
    gg = float(np.vdot(expected, expected))
    if gg > 0:
        c = float(np.vdot(expected, got)) / gg              # least squares: got ≈ c·g
        if abs(c - 1.0) > 0.01 and np.isfinite(c) and reproduces(c * expected):
            c = next((r for r in _round_factors(c) if reproduces(r * expected)), c)
            B = problem.B                   # the batch ids only where the loss makes them true
            averages = not problem.layer and problem.reduction in ("mean", "batch_mean")
            if B > 1 and averages and np.isclose(c, B):
                return _diagnosis("batch_not_averaged", name, factor=c, reduction=_reduction_text(problem))
            if B > 1 and not averages and np.isclose(c, 1.0 / B):
                return _diagnosis("batch_averaged", name, factor=c, reduction=_reduction_text(problem))
            return _diagnosis("scaled", name, factor=c, hint=_hint_for_factor(c, problem))
    return None


# --- grading ---

MISSING = {
    "outputs": "this problem has no outputs (a layer alone, without U and b_y)",
    "cell": "only the lstm cell has a cell state c_t",
    "gradients.U": "this problem has no gradient for U (no output layer in the loss: layer mode)",
    "gradients.b_y": "this problem has no gradient for b_y (no output layer in the loss: layer mode)",
    "gradients.b_hn": "only the gru cell with gru_reset after has b_hn",
    "gradients.c_init": "only the lstm cell has c_init",
    "gradients.inputs": "gradients.inputs needs dense inputs (this problem has tokens)",
}


def reference(problem: Problem, wanted: list[str]) -> tuple[object, dict[str, np.ndarray | None]]:
    """The correct value of every wanted field (gradients only computed if one is wanted);
    None for a field this problem does not have. The cache is the vanilla engine's for the
    lecture's cell on one sequence, the sequence runner's otherwise."""
    grads_wanted = any(w.startswith("gradients.") for w in wanted)
    if evaluate.vanilla(problem):
        cache = rnn.forward(problem)
        values = {"loss": np.float64(cache.loss), "step_losses": cache.step_losses,
                  "outputs": cache.yhat, "hidden": cache.h}
        if grads_wanted:
            values.update({f"gradients.{k}": v for k, v in _grads(rnn.backward(cache)).items()})
    else:
        cache = sequence.forward(problem)
        values = {"loss": np.float64(cache.loss), "step_losses": cache.step_losses,
                  "outputs": cache.yhat, "hidden": cache.h, "cell": cache.c}
        if grads_wanted:
            values.update({f"gradients.{k}": v for k, v in _runner(cache).items()})
    return cache, {w: values.get(w) for w in wanted}


def truncation_search_work(problem: Problem) -> tuple[float, float]:
    """(numbers kept, multiply-adds) of the truncated_bptt search: the vanilla engine keeps
    T²·H unrolled terms and does T²·H·(H + D) work; the runner keeps none but runs one
    truncated backward per window K = 2 … T−1, counted with the reference's own forward and
    backward (so that the request as a whole stays inside the work budget)."""
    T, H, D = problem.T, problem.H, problem.D
    if evaluate.vanilla(problem):
        return T * T * H, T * T * H * (H + D)
    if T >= 4096:
        return 0, float("inf")
    return 0, evaluate.estimate_work(problem) + sum(evaluate.estimate_work(problem, truncate=K)
                                                    for K in range(2, T))


def grade(problem: Problem, submission: dict[str, Submitted], rtol: float = 1e-5,
          atol: float = 1e-8, max_terms: float = 4_000_000, max_work: float = 2e10,
          expected: tuple[object, dict[str, np.ndarray | None]] | None = None) -> Result:
    """Check every submitted field; diagnose failed gradients. The truncated_bptt search is
    the one costly mistake: over `max_terms` numbers kept or `max_work` multiply-adds
    (truncation_search_work) it is not looked for. `expected` is reference(problem, fields)
    when the caller already computed it."""
    wanted = [f for f in FIELDS if f in submission]
    cache, values = expected or reference(problem, wanted)
    terms, work = truncation_search_work(problem)
    search = terms <= max_terms and work <= max_work
    candidates = (_Candidates if evaluate.vanilla(problem) else _RunnerCandidates)(cache, search)
    checks = []
    for name in wanted:
        got = submission[name]
        if values[name] is None:
            checks.append(Check(name, False, error=MISSING.get(name, f"this problem has no {name}")))
            continue
        if name == "step_losses":
            got = _step_losses(got, problem.scored if problem.scored is not None
                               else np.ones(values[name].shape, dtype=bool))
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
    missing = np.argwhere(np.isnan(got) & scored)
    if missing.size:
        at = "".join(f"[{int(i)}]" for i in missing[0])
        step = int(missing[0][-1])
        return f"step_losses{at} is null, but step {step} is scored"
    return np.where(np.isnan(got), 0.0, got)


# --- Gradescope ---

def _output(check: Check) -> str:
    """One check as a sentence or two (the results' `output` of a test)."""
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



# --- PrairieLearn ---

def prairielearn(result: Result) -> dict:
    """A PrairieLearn external-grading results.json object (docs.prairielearn.com,
    "External Grading": `gradable`, `score` in [0, 1], `message`, `output`, `tests[]` with
    `name`, `description`, `points`, `max_points`, `message`, `output`); one point per check.
    A submission the grader could compare at all is gradable: a wrong shape is a failed test."""
    tests = [{"name": c.name, "description": f"{c.name} against the reference, within the tolerance",
              "points": int(c.passed), "max_points": 1,
              "message": (c.diagnosis.detail if c.diagnosis else c.error + "." if c.error else
                          "Correct." if c.passed else "Wrong values."),
              "output": _output(c)} for c in result.checks]
    passed = sum(c.passed for c in result.checks)
    return {"gradable": True, "score": passed / len(tests),
            "message": f"{passed} of {len(tests)} checks passed.",
            "output": "\n".join(t["output"] for t in tests), "tests": tests}


def grade_mapped(problem: Problem, items: list, rtol: float = 1e-5, atol: float = 1e-8,
                 max_terms: float = 4_000_000, max_work: float = 2e10,
                 expected: tuple[object, dict[str, np.ndarray | None]] | None = None) -> Result:
    """Checks of submitted arrays that are arrangements of the reference's fields (a caller's
    own names and orientations of them). Each item is (label, fields, arrange, got, field,
    to_field): `fields` the reference fields it is made of, arrange(values) the expected array
    from them, `got` the submitted array; a failed gradient is diagnosed as reference field
    `field` when to_field(got) gives the submission as that field's array (else field is None)."""
    cache, values = expected or reference(problem, sorted({f for item in items for f in item[1]}))
    candidates = None
    checks = []
    for label, fields, arrange, got, field, to_field in items:
        absent = next((f for f in fields if values.get(f) is None), None)
        if absent is not None:
            checks.append(Check(label, False, error=MISSING.get(absent, f"this problem has no {absent}")))
            continue
        want = np.asarray(arrange(values), dtype=np.float64)
        if fields == ["step_losses"] and not isinstance(got, str):
            got = _step_losses(got, problem.scored if problem.scored is not None
                               else np.ones(values["step_losses"].shape, dtype=bool))
        check = compare(label, want, got, rtol, atol)
        if not check.passed and field is not None and not isinstance(got, str) and got.shape == want.shape:
            if candidates is None:
                terms, work = truncation_search_work(problem)
                candidates = (_Candidates if evaluate.vanilla(problem) else _RunnerCandidates)(
                    cache, terms <= max_terms and work <= max_work)
            name = field.split(".", 1)[1]
            check.diagnosis = diagnose(name, values[field], to_field(got), candidates, rtol, atol,
                                       shown=label.split(".", 1)[1] if label.startswith("gradients.") else None)
        checks.append(check)
    return Result(checks)
