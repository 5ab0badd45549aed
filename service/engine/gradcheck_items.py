"""Gradient checks of arbitrary selections of a problem's elements and directions (plain
numpy, no web imports).

gradcheck.py and gradcheck_cells.py check whole parameters (V, W, …) and report per
parameter. Here a caller names the arrays it reports on itself ("selections"): each is a list
of canonical elements (parameter name, flat index), possibly the same element in several
selections, or, in directional mode, directions that may span several parameters at once
(one leading P axis shared by every override of sequence.forward). The loss changes come from
the same machinery as a whole-parameter check (the vanilla fast path's exact differences,
gradcheck_cells' rank-one recurrence and perturbed copies), each distinct element once; the
figures per selection are gradcheck.summarise's. Knows nothing of where the selections come
from (the schemas' layouts use it: a layout's array is a selection of canonical elements).

A selection is a dict: {"names": array of parameter names, "flat": array of flat indices,
"index": k -> the report's index of item k} for elements, or {"directions": {name: P × size},
"index": k -> [k]} for directions.
"""
from __future__ import annotations

import numpy as np

from . import gradcheck as gc
from . import gradcheck_cells as cells
from . import rnn, sequence
from .problem import Problem


class _Engine:
    """The analytic gradients and loss changes of one problem."""

    def __init__(self, problem: Problem):
        self.p = problem
        with np.errstate(all="ignore"):
            self.cache = sequence.forward(problem)
            self.grads, _ = sequence.backward(self.cache, diagnostics=False)
        if not (np.isfinite(self.cache.loss) and all(np.isfinite(g).all() for g in self.grads.values())):
            raise gc.NonFiniteLoss(None)
        self.base = cells._Base(problem, self.cache)
        self.vanilla = cells.as_vanilla(problem)
        if self.vanilla is not None:
            self.v_cache = rnn.forward(self.vanilla)
            v_grads = rnn.backward(self.v_cache).as_dict()
            self.grads.update({k: v for k, v in v_grads.items() if k in rnn.PARAMETERS})

    def element_losses(self, name: str, flat: np.ndarray, steps: np.ndarray) -> np.ndarray:
        if self.vanilla is not None and name in rnn.PARAMETERS:
            return gc.element_losses(self.vanilla, name, flat, steps, self.v_cache)
        return cells.element_losses(self.base, name, flat, steps)

    def directional_losses(self, directions: dict, steps: np.ndarray) -> np.ndarray:
        """L(θ + s·u_k) − L(θ) for direction k (over every parameter in `directions`) and
        step s: P × steps, through sequence.forward with one P axis on every override."""
        p, base = self.p, self.base
        P, K = len(next(iter(directions.values()))), len(steps)
        theta = {n: cells._parameter(p, n) for n in directions}
        size = cells._copies_chunk(p, sum(t.size for t in theta.values()))
        out = []
        for lo in range(0, P * K, size):
            ks = np.arange(lo, min(lo + size, P * K))
            params = {n: theta[n][None] + (directions[n][ks // K] * steps[ks % K][:, None]).reshape(-1, *theta[n].shape)
                      for n in directions}
            c = sequence.forward(p, params)
            if p.layer:
                dh = np.moveaxis(c.h - self.cache.h, 0, -1)
                out.append((dh * p.upstream[..., None]).reshape(-1, len(ks)).sum(axis=0))
            else:
                dz = cells._time_major(np.moveaxis(c.z - self.cache.z, 0, -2), p.batched)
                dz = dz.reshape(-1, len(ks), p.N)
                out.append(base.loss_change(np.arange(len(dz)), dz).sum(axis=0) * base.scale)
        return np.concatenate(out).reshape(P, K)

    @property
    def loss_size(self) -> float:
        return self.base.loss_size


def _take(num: gc.Numerical, at: np.ndarray) -> gc.Numerical:
    return gc.Numerical(num.values[at], None if num.error_estimate is None else num.error_estimate[at],
                        None if num.order is None else num.order[at])


def gradcheck(problem: Problem, spec: gc.CheckSpec, selections: dict[str, dict]) -> gc.Report:
    """A report with one entry per selection (in its order), gradcheck's figures each."""
    engine = _Engine(problem)
    eps = spec.step
    steps = gc.offsets(spec.method, eps)
    report = gc.Report(True, spec.method, spec.mode, eps, spec.rtol, spec.atol,
                       spec.samples if spec.mode != "full" else None,
                       spec.seed if spec.mode != "full" else None, evaluations=1)
    if spec.mode == "directional":
        results = {}
        for label, sel in selections.items():
            dirs = sel["directions"]
            analytic = sum(d @ engine.grads[n].ravel() for n, d in dirs.items())
            with np.errstate(all="ignore"):
                losses = engine.directional_losses(dirs, steps)
                numerical = gc.combine(spec.method, eps, losses, analytic, engine.loss_size)
            report.evaluations += losses.size
            results[label] = (analytic, numerical, sel["index"])
    else:
        # every distinct canonical element once
        wanted: dict[str, list] = {}
        for sel in selections.values():
            for n in np.unique(sel["names"]):
                wanted.setdefault(n, []).append(sel["flat"][sel["names"] == n])
        values = {}
        for n, parts in wanted.items():
            flat = np.unique(np.concatenate(parts))
            analytic = engine.grads[n].ravel()[flat]
            with np.errstate(all="ignore"):
                losses = engine.element_losses(n, flat, steps)
                numerical = gc.combine(spec.method, eps, losses, analytic, engine.loss_size)
            report.evaluations += losses.size
            values[n] = (flat, analytic, numerical)
        results = {}
        for label, sel in selections.items():
            k = len(sel["flat"])
            analytic = np.empty(k)
            num = gc.Numerical(np.empty(k), np.empty(k) if spec.method == "richardson" else None,
                               np.empty(k) if spec.method == "taylor" else None)
            for n in np.unique(sel["names"]):
                mine = np.flatnonzero(sel["names"] == n)
                flat, a, numerical = values[n]
                at = np.searchsorted(flat, sel["flat"][mine])
                analytic[mine] = a[at]
                part = _take(numerical, at)
                num.values[mine] = part.values
                if num.error_estimate is not None:
                    num.error_estimate[mine] = part.error_estimate
                if num.order is not None:
                    num.order[mine] = part.order
            results[label] = (analytic, num, sel["index"])
    for label, (analytic, numerical, index) in results.items():
        if not np.all(np.isfinite(numerical.values)):
            raise gc.NonFiniteLoss(label)
        report.parameters[label] = gc.summarise(analytic, numerical, index, spec)
        report.passed &= report.parameters[label].passed
    if spec.method == "taylor":
        orders = [r.convergence_order for r in report.parameters.values() if r.convergence_order is not None]
        report.convergence_order = float(np.median(orders)) if orders else None
    return report
