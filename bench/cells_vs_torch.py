"""The v1.1 engine's gated cells against torch.nn.LSTM / torch.nn.GRU, and a live re-check of
the PyTorch golden files. bench/run.py calls `bench_cells` and `bench_golden` (its `--only`
keys `cells` and `golden`) and `write_section`, which keeps this module's own section of
bench/results.md (between the markers below; everything after the end marker is kept).

Engine: `sequence.forward(problem)` + `sequence.backward(cache, diagnostics=False)` (the
loss and gradients), and separately `diagnostics=True` (what /v1/gradients also returns:
dL_t/db_h for every t and ||dL/ds_t||). PyTorch: `nn.LSTM` / `nn.GRU` (one layer,
batch_first=True, float64, CPU, one thread) + an `nn.Linear` head, the summed cross-entropy
over every step of every sequence, `loss.backward()` for every parameter and h_0 (c_0). The
tokens reach PyTorch as one-hot float64 inputs (B x T x D, built once outside the timing, no
nn.Embedding), so its input GEMM multiplies by a one-hot matrix while the engine gathers
columns of V; both take the same tokens and give the same gradients, which are checked first
(loss and every gradient to 1e-9 relative: max |ours - torch| <= 1e-9 max |torch|).

    bench/.venv/bin/python bench/run.py --only cells golden [--quick]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch_golden  # noqa: E402
from common import interleaved_times, replace_section  # noqa: E402
from service.engine import sequence  # noqa: E402
from service.engine.problem import Problem, Weights  # noqa: E402

BEGIN, END = "<!-- cells-vs-torch:begin -->", "<!-- cells-vs-torch:end -->"
TOL = 1e-9
# name -> (D = N, H, T, [B...]); B = 1 is an unbatched problem (tokens of shape T), as a
# one-sequence /v1/gradients request is; torch gets a batch of one (1 x T x D)
SIZES = {"quiz": (8, 16, 10, (1, 32)), "char-rnn": (65, 100, 25, (1, 32)), "large": (256, 512, 100, (1,))}
BARS = {"quiz": 2.0, "char-rnn": 2.0, "large": 1.0}
REPEATS = {"quiz": 400, "char-rnn": 150, "large": 20}      # per function, before --quick's / 4
BIG_REPEATS = 10                  # the diagnostics row at large: ~1 s a call


class Rows:
    """This module's table: (what, case, engine, torch, ratio, bar) like bench/run.py's Table."""

    def __init__(self):
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, section, case, ours, reference, ratio=None, bar=None, ok=None, shown=None):
        if ok is None and bar is not None:
            ok = ratio >= bar
        verdict = "" if ok is None else f"{'PASS' if ok else 'MISS'}" + (f" (bar ≥ {bar}×)" if bar else "")
        row = dict(section=section, case=case, ours=ours, reference=reference,
                   ratio=shown if shown is not None else f"{ratio:.2f}×", verdict=verdict)
        self.rows.append(row)
        print(f"{section:40s} {case:36s} {ours:>12s} {reference:>12s} {row['ratio']:>9s}  {verdict}",
              flush=True)

    def markdown(self) -> str:
        lines = ["| measurement | case | engine | torch | ratio | bar |", "|---|---|---:|---:|---:|---|"]
        lines += [f"| {r['section']} | {r['case']} | {r['ours']} | {r['reference']} | {r['ratio']} | "
                  f"{r['verdict']} |" for r in self.rows]
        return "\n".join(lines)


ROWS = Rows()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def interleaved(fns: list, repeats: int, warmup: int = 3, blocks: int = 10):
    """Like common.interleaved_medians, and also each block's median, so a row can quote how
    far the ratio moved within this run."""
    times = interleaved_times(fns, repeats, warmup, blocks)
    medians = [float(np.median(sum(t, []))) for t in times]
    per_block_medians = [[float(np.median(tb)) for tb in t] for t in times]
    return medians, per_block_medians


# --- the same model on both sides ---

def torch_model(cell: str, D: int, H: int, N: int, B: int, T: int, seed: int):
    """nn.LSTM / nn.GRU + nn.Linear (PyTorch's default init, seeded), one-hot inputs,
    h_0 (c_0) zeros that require grad, random class targets."""
    torch.manual_seed(seed)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    net = cls(D, H, num_layers=1, batch_first=True, dtype=torch.float64)
    fc = torch.nn.Linear(H, N, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, D, (B, T), generator=g)
    targets = torch.randint(0, N, (B, T), generator=g)
    x = torch.nn.functional.one_hot(tokens, D).to(torch.float64)
    h0 = torch.zeros(1, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(1, B, H, dtype=torch.float64, requires_grad=True) if cell == "lstm" else None
    leaves = [*net.parameters(), *fc.parameters(), h0] + ([c0] if c0 is not None else [])
    flat_y = targets.reshape(-1)

    def state_grad(s0):                      # 1 x B x H -> the engine's h_init shape: H or B x H
        return s0.grad.numpy()[0, 0] if B == 1 else s0.grad.numpy()[0]

    def step():
        for leaf in leaves:
            leaf.grad = None
        out, _ = net(x, (h0, c0) if c0 is not None else h0)
        loss = torch.nn.functional.cross_entropy(fc(out).reshape(-1, N), flat_y, reduction="sum")
        loss.backward()
        return loss

    eye = torch.eye(T, dtype=torch.float64)[:, None, :].expand(T, B, T)

    def same():
        """The loss and gradients and, like /v1/gradients, dL_t/db_h for every t (summed over the
        batch): T vector-Jacobian products batched into one autograd.grad call, as
        bench/torch_ref.full_response does (nn.LSTM/GRU do not expose the state between
        steps, so ||dL/ds_t|| is left out: torch does less than the engine here)."""
        for leaf in leaves:
            leaf.grad = None
        out, _ = net(x, (h0, c0) if c0 is not None else h0)
        losses = torch.nn.functional.cross_entropy(fc(out).reshape(-1, N), flat_y,
                                                   reduction="none").reshape(B, T)
        (by_step,) = torch.autograd.grad(losses, net.bias_ih_l0, grad_outputs=eye, retain_graph=True,
                                         is_grads_batched=True)
        losses.sum().backward()
        return by_step

    def result():
        loss = step().item()
        sd = {k: v.grad.numpy() for k, v in net.named_parameters()}
        grads = {"V": sd["weight_ih_l0"], "W": sd["weight_hh_l0"], "b_h": sd["bias_ih_l0"],
                 "U": fc.weight.grad.numpy(), "b_y": fc.bias.grad.numpy(), "h_init": state_grad(h0)}
        if cell == "gru":
            grads["b_hn"] = sd["bias_hh_l0"][2 * H:]
        if c0 is not None:
            grads["c_init"] = state_grad(c0)
        return loss, grads

    return net, fc, tokens.numpy(), targets.numpy(), step, same, result


def engine_weights(cell: str, sd: dict, H: int, h0, c0) -> Weights:
    """torch_golden's mapping: V = weight_ih, W = weight_hh, b_h = bias_ih + bias_hh except the
    GRU's n block (b_h's n block = bias_ih's, b_hn = bias_hh's), U = fc.weight, b_y = fc.bias."""
    b_h = sd["bias_ih_l0"] + sd["bias_hh_l0"]
    b_hn = None
    if cell == "gru":
        b_h[2 * H:], b_hn = sd["bias_ih_l0"][2 * H:], sd["bias_hh_l0"][2 * H:].copy()
    return Weights(sd["weight_ih_l0"].copy(), sd["weight_hh_l0"].copy(), sd.get("fc.weight"), b_h,
                   sd.get("fc.bias"), h0, c0 if cell == "lstm" else None, b_hn)


def engine_problem(cell: str, net, fc, tokens, targets, B: int) -> Problem:
    H, N = net.hidden_size, fc.out_features
    sd = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    sd.update({f"fc.{k}": v.detach().numpy().copy() for k, v in fc.state_dict().items()})
    init = np.zeros(H) if B == 1 else np.zeros((B, H))   # per sequence, as torch's h_0 (c_0)
    w = engine_weights(cell, sd, H, init, init.copy())
    y = np.eye(N)[targets]                       # B x T x N one-hot
    if B == 1:
        tokens, y = tokens[0], y[0]
    return Problem(w, cell=cell, tokens=np.ascontiguousarray(tokens, dtype=np.int64), targets=y,
                   loss="cross_entropy", reduction="sum")


def rel_diff(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    if ours.shape != theirs.shape:
        return float("inf")
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    err = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    return err / scale if scale > 0 else err


def check_equal(ours: dict, theirs: dict, what: str) -> float:
    """Every array of theirs against ours; stops the run if one is off by more than TOL."""
    worst = 0.0
    missing = set(theirs) ^ set(ours)
    if missing:
        raise SystemExit(f"{what}: gradients only on one side: {sorted(missing)}")
    for name, g in theirs.items():
        d = rel_diff(ours[name], g)
        if not d <= TOL:
            raise SystemExit(f"{what}: {name} differs from PyTorch's by {d:.3g} relative")
        worst = max(worst, d)
    return worst


# --- rows: engine vs torch.nn.LSTM / GRU ---

def bench_cells(quick: bool) -> None:
    torch.set_num_threads(1)
    worst, spread = 0.0, []
    for cell in ("lstm", "gru"):
        for name, (D, H, T, batches) in SIZES.items():
            for B in batches:
                net, fc, tokens, targets, theirs, same, result = torch_model(cell, D, H, D, B, T, seed=7)
                problem = engine_problem(cell, net, fc, tokens, targets, B)

                def plain():
                    return sequence.backward(sequence.forward(problem), diagnostics=False)

                def full():
                    return sequence.backward(sequence.forward(problem), diagnostics=True)

                loss, ref = result()
                case = f"{cell} {name} (D=N={D}, H={H}, T={T}), B={B}"
                cache = sequence.forward(problem)
                worst = max(worst, rel_diff(cache.loss, loss))
                if not rel_diff(cache.loss, loss) <= TOL:
                    raise SystemExit(f"{case}: loss {cache.loss!r} against PyTorch's {loss!r}")
                g_plain, _ = sequence.backward(cache, diagnostics=False)
                g_full, bptt = sequence.backward(cache, diagnostics=True)
                worst = max(worst, check_equal(g_plain, ref, f"{case}, diagnostics=False"),
                            check_equal(g_full, ref, f"{case}, diagnostics=True"))
                if rel_diff(bptt.b_h_by_step.sum(axis=0), g_full["b_h"]) > TOL:
                    raise SystemExit(f"{case}: rows of b_h_by_step do not sum to dL/db_h")
                d = rel_diff(bptt.b_h_by_step, same().numpy())
                if not d <= TOL:
                    raise SystemExit(f"{case}: b_h_by_step differs from PyTorch's by {d:.3g} relative")
                worst = max(worst, d)

                big = name == "large"
                repeats = max(4, REPEATS[name] // (4 if quick else 1))
                (t_plain, t_torch), blocks = interleaved([plain, theirs], repeats, blocks=5 if big else 10)
                ratios = [bt / bp for bp, bt in zip(*blocks)]
                ROWS.add(f"engine fwd+bwd vs torch.nn.{cell.upper()}", case, ms(t_plain), ms(t_torch),
                         t_torch / t_plain, bar=BARS[name])
                reps = max(3, (BIG_REPEATS if big else repeats) // (4 if quick else 1))
                (t_full, t_torch2, t_same), blocks2 = interleaved([full, theirs, same], reps,
                                                                  warmup=1 if big else 3,
                                                                  blocks=3 if big else 10)
                ratios2 = [bt / bp for bp, bt, _ in zip(*blocks2)]
                ROWS.add(f"engine fwd+bwd+diagnostics vs torch.nn.{cell.upper()}", case, ms(t_full),
                         ms(t_torch2), t_torch2 / t_full, bar=BARS[name])
                ROWS.add(f"engine fwd+bwd+diagnostics vs torch.nn.{cell.upper()} + dL_t/db_h", case,
                         ms(t_full), ms(t_same), t_same / t_full)
                spread.append(f"{cell} {name} B={B}: {min(ratios):.2f}–{max(ratios):.2f}× / "
                              f"{min(ratios2):.2f}–{max(ratios2):.2f}×")
    ROWS.notes.append(
        f"results checked equal before timing: the loss and every gradient (V, W, b_h, U, b_y, h_init, "
        f"c_init / b_hn) of both engine calls, and b_h_by_step, against PyTorch's, worst relative "
        f"difference {worst:.2e} (bar {TOL:g}); the rows of b_h_by_step sum to dL/db_h")
    ROWS.notes.append(
        "torch side: nn.LSTM / nn.GRU (batch_first=True, float64, one thread) + nn.Linear, tokens as "
        "one-hot float64 inputs (one_hot(tokens, D), built once outside the timing; no nn.Embedding), "
        "h_0 (c_0) zeros requiring grad, cross_entropy(reduction='sum') over every step, loss.backward(), "
        "grads set to None before each call. Engine: sequence.forward + sequence.backward, "
        "diagnostics=False (loss and gradients: the same work as torch's) or diagnostics=True "
        "(also dL_t/db_h for every t and ||dL/ds_t||, as /v1/gradients returns; torch still computes only "
        "the loss and gradients, so those rows compare the service's real path with torch's plain "
        "backward). '+ dL_t/db_h' rows (no bar): torch also computes dL_t/db_h for every t, as T "
        "vector-Jacobian products in one autograd.grad(is_grads_batched=True) call, the way "
        "bench/torch_ref.full_response does for the vanilla cell (not ||dL/ds_t||: nn.LSTM/GRU hide the "
        "state between steps). B=1 is an unbatched engine problem; torch gets a batch of one.")
    ROWS.notes.append(
        "timing: median of all calls, the engine and torch taking turns in 10 blocks (at large 5, "
        "and 3 for the diagnostics row) after warm-up, OPENBLAS_NUM_THREADS=1; the ratio's range over the "
        "blocks of this run (plain / diagnostics), i.e. the noise within the run: " + "; ".join(spread))


# --- live re-check of the golden files ---

def _flatten(x, prefix=""):
    """name -> value for every leaf of a golden file's JSON tree; a list of plain numbers is
    one leaf (an array), anything else is walked into."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list) and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
        for i, v in enumerate(x):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def _compare_trees(live: dict, stored: dict) -> tuple[float, str]:
    """Max relative difference over the numeric arrays (per array, as rel_diff), exact for the rest."""
    a, b = dict(_flatten(live)), dict(_flatten(stored))
    if set(a) != set(b):
        return float("inf"), f"keys differ: {sorted(set(a) ^ set(b))[:5]}"
    worst, where = 0.0, ""
    for k, vb in b.items():
        va = a[k]
        if k.startswith("config.") or not isinstance(vb, (list, float)):
            if k != "config.torch" and va != vb:
                return float("inf"), f"{k}: {va!r} != {vb!r}"
            continue
        d = rel_diff(va, vb)
        if d > worst:
            worst, where = d, k
    return worst, where


def golden_problem(g: dict) -> Problem:
    """tests/test_sequence.py's mapping of a golden file onto an engine Problem."""
    cfg = g["config"]
    H, cell = cfg["H"], cfg["cell"]
    sd = {k: np.array(v, float) for k, v in g["state_dict"].items()}
    w = engine_weights(cell, sd, H, np.array(g["h_0"], float)[0],
                       np.array(g["c_0"], float)[0] if cell == "lstm" else None)
    kw = dict(weights=w, cell=cell, inputs=np.array(g["inputs"], float))
    if cfg["layer"]:
        return Problem(upstream=np.array(g["upstream"], float), **kw)
    targets = np.array(g["targets"], dtype=object)
    scored = np.vectorize(lambda t: t is not None, otypes=[bool])(targets)
    y = np.eye(cfg["N"])[np.where(scored, targets, 0).astype(int)]
    return Problem(targets=y, scored=scored, loss=cfg["loss"], reduction=cfg["reduction"], **kw)


def engine_vs_golden(g: dict) -> float:
    """The engine (forward + backward with diagnostics) against one golden record."""
    H, cell = g["config"]["H"], g["config"]["cell"]
    p = golden_problem(g)
    cache = sequence.forward(p)
    grads, _ = sequence.backward(cache)
    out, gr = g["outputs"], g["grads"]
    pairs = [(cache.h, out["h"]), (cache.step_losses, out["step_losses"]), (cache.loss, g["loss"]),
             (grads["V"], gr["weight_ih_l0"]), (grads["W"], gr["weight_hh_l0"]),
             (grads["inputs"], gr["inputs"]), (grads["h_init"], np.array(gr["h_0"])[0])]
    if "c" in out:
        pairs.append((cache.c, out["c"]))
    if "logits" in out:
        pairs += [(cache.z, out["logits"]), (grads["U"], gr["fc.weight"]), (grads["b_y"], gr["fc.bias"])]
    pairs.append((grads["b_h"], gr["bias_ih_l0"]))   # gru: bias_ih's r, z blocks = bias_hh's
    if cell == "gru":
        pairs.append((grads["b_hn"], np.array(gr["bias_hh_l0"])[2 * H:]))
    if cell == "lstm":
        pairs.append((grads["c_init"], np.array(gr["c_0"])[0]))
    return max(rel_diff(a, b) for a, b in pairs)


def bench_golden(quick: bool) -> None:
    """Regenerates every golden case with torch_golden.run_case in memory (live torch) and
    compares it with the committed tests/golden/torch_<case>.json, and the engine with the
    live record."""
    torch.set_num_threads(1)
    worst_file = worst_engine = 0.0
    for i, case in enumerate(torch_golden.CASES):
        live = json.loads(json.dumps(torch_golden.run_case(i, *case)))    # the file's own types
        path = torch_golden.OUT / f"torch_{case[0]}.json"
        stored = json.loads(path.read_text())
        d_file, where = _compare_trees(live, stored)
        d_engine = engine_vs_golden(live)
        worst_file, worst_engine = max(worst_file, d_file), max(worst_engine, d_engine)
        ROWS.add("golden file re-check, live torch", f"{path.name} vs regenerated",
                 "-", f"torch {torch.__version__}", shown=f"{d_file:.1e}", ok=d_file <= TOL)
        ROWS.add("golden file re-check, engine vs live torch", f"{case[0]} ({case[1]}, B={case[2]})",
                 "-", "-", shown=f"{d_engine:.1e}", ok=d_engine <= TOL)
        if d_file > TOL:
            ROWS.notes.append(f"{path.name}: the largest difference from live torch is in {where}")
    print(f"golden files: max relative difference, committed vs live torch {worst_file:.3g}; "
          f"engine vs live torch {worst_engine:.3g}", flush=True)
    ROWS.notes.append(
        f"golden rows: the 'ratio' column is the max relative difference (per array, max |a - b| / max |b|, "
        f"over h, c, h_n, c_n, logits, step losses, loss, every gradient; config equal except the torch "
        f"version string), PASS at ≤ {TOL:g}: committed tests/golden/torch_*.json against "
        f"bench/torch_golden.run_case regenerated in memory (max {worst_file:.2e}), and the engine "
        f"(sequence.forward + backward) against that live record (max {worst_engine:.2e})")


# --- this module's section of bench/results.md ---

def engine_version() -> str:
    """The commit the engine was measured at, and whether service/engine differed from it."""
    import subprocess
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "service/engine"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{sha}" + (" with uncommitted changes in service/engine" if dirty else
                       " (service/engine as committed)")


def write_section(info: dict, command: str) -> None:
    path = ROOT / "bench" / "results.md"
    info = {**info, "engine measured at": engine_version()}
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    notes = "\n".join(f"- {n}" for n in ROWS.notes)
    body = (f"{BEGIN}\n## Gated cells (v1.1 engine) vs torch.nn.LSTM / GRU, golden files re-checked live\n\n"
            f"Written by `{command}` (bench/cells_vs_torch.py, called by bench/run.py); "
            f"everything between this section's markers is rewritten by each run that includes "
            f"`cells` or `golden`, the rest of this file is not. Every ratio is torch's time over the "
            f"engine's in this one run (> 1: the engine is faster).\n\n{machine_lines}\n\n"
            f"{ROWS.markdown()}\n\n{notes}\n{END}")
    replace_section(path, BEGIN, END, body)
    print(f"\nwrote {path.relative_to(ROOT)} (section {BEGIN})")
