"""A full central-difference gradient check over HTTP against torch.autograd.gradcheck on the
same loss, float64, eps 1e-6, side by side in one run. Writes bench/gradcheck_results.md.

    bench/.venv/bin/python bench/gradcheck_vs_torch.py [--torch-subset N] [--repeats R]

(from the project root; bench/.venv has torch==2.13.0 and requirements.txt). The service runs
under gunicorn on loopback as `make run` starts it (single-threaded workers, one BLAS thread each); torch
runs in this process with one thread. Both check V, W, U, b_h, b_y (h_init is zeros and left
out, as in the 8,288- and 23,165-parameter counts).

torch.autograd.gradcheck perturbs one element at a time, two forward passes each. When it
would take longer than --torch-budget seconds, it is timed on the first N elements of every
parameter (gradcheck on a function of those elements only, the rest held fixed: the same
two forward passes of the whole RNN per element) and the time is extrapolated linearly to all
elements; the results say so.

The LSTM row (issue: gated cells) checks every parameter of a one-sequence LSTM, V, W, U, b_h,
b_y, h_init and c_init, against torch.autograd.gradcheck of nn.LSTM + nn.Linear on the same
7 tensors (bias_ih = b_h, bias_hh held at zero, one-hot inputs, summed cross-entropy). The
service is timed three ways: over HTTP to gunicorn as the vanilla rows (the bar's figure), through
Flask's test client in-process, and as the engine call gradcheck_cells.gradcheck.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# one BLAS thread, as `make` exports and a gunicorn worker has: numpy's OpenBLAS threads and
# torch's fighting over 2 cores made the in-process check ~8× slower (before numpy loads)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import problems  # noqa: E402
import server  # noqa: E402
import torch_ref  # noqa: E402
from service.engine import gradcheck as gc  # noqa: E402
from service.engine import rnn  # noqa: E402

torch.set_num_threads(1)          # like a gunicorn worker (OPENBLAS_NUM_THREADS=1)
NAMES = ("V", "W", "U", "b_h", "b_y")
EPS = 1e-6
CASES = [("vocab 32, H 64, T 20", 32, 64, 20), ("vocab 65, H 100, T 25", 65, 100, 25)]
SPEED_BAR = 30.0
LSTM_CASE = ("lstm vocab 32, H 32, T 12", 32, 32, 12)
LSTM_NAMES = ("V", "W", "U", "b_h", "b_y", "h_init", "c_init")      # the engine's canonical order
LSTM_SPEED_BAR = 30.0


def post(url: str, body: bytes) -> dict:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"{url}: {resp.status} {data[:500]!r}")
    return json.loads(data)


def exact_gradients(body: dict) -> dict[str, np.ndarray]:
    """The analytic float64 gradient (torch autograd; the engine's BPTT agrees to ~1e-15)."""
    t = torch_ref.tensors(body)
    _, grads = torch_ref.forward_backward(t)
    return {k: grads[k].numpy() for k in NAMES}


def loss_fn(t: dict):
    """L(V, W, U, b_h, b_y) as torch_ref computes it, for gradcheck."""
    def f(V, W, U, b_h, b_y):
        drive = V.T[t["tokens"]]
        h = t["h_init"].detach()
        hs = []
        for step in range(drive.shape[0]):
            h = torch.tanh(drive[step] + W @ h + b_h)
            hs.append(h)
        z = torch.stack(hs) @ U.T + b_y
        return torch.nn.functional.cross_entropy(z, t["targets"], reduction="sum")
    return f


def torch_gradcheck_time(body: dict, subset: int | None) -> tuple[float, float, int, bool]:
    """Seconds of torch.autograd.gradcheck on all elements, or on the first `subset` of each
    parameter (the others fixed). Returns (wall, CPU seconds, elements checked, passed)."""
    t = torch_ref.tensors(body)
    full = [t[k].detach().clone().requires_grad_(True) for k in NAMES]
    f = loss_fn(t)
    if subset is None:
        inputs, fn = tuple(full), f
    else:
        parts = [p.detach().reshape(-1)[:subset].clone().requires_grad_(True) for p in full]

        def fn(*xs):
            ws = []
            for p, x in zip(full, xs):
                flat = p.detach().reshape(-1)
                ws.append(torch.cat([x, flat[len(x):]]).reshape(p.shape))
            return f(*ws)
        inputs = tuple(parts)
    n = sum(x.numel() for x in inputs)
    start, cpu = time.perf_counter(), time.process_time()
    ok = torch.autograd.gradcheck(fn, inputs, eps=EPS, raise_exception=False)
    return time.perf_counter() - start, time.process_time() - cpu, n, bool(ok)


def torch_numerical_accuracy(body: dict, exact: dict, samples: int, seed: int = 0) -> tuple[float, float]:
    """max |n − a| and max |n − a| / max(|a|, |n|) of gradcheck's own formula,
    (f(x + eps) − f(x − eps)) / 2 eps in float64, at `samples` seeded elements per parameter."""
    t = torch_ref.tensors(body)
    params = [t[k].detach().clone() for k in NAMES]
    f = loss_fn(t)
    worst_abs = worst_rel = 0.0
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for i, name in enumerate(NAMES):
            flat = params[i].view(-1)
            for k in rng.choice(flat.numel(), min(samples, flat.numel()), replace=False):
                orig = flat[k].item()
                flat[k] = orig + EPS
                up = f(*params).item()
                flat[k] = orig - EPS
                down = f(*params).item()
                flat[k] = orig
                n, a = (up - down) / (2 * EPS), float(exact[name].reshape(-1)[k])
                err = abs(n - a)
                worst_abs = max(worst_abs, err)
                worst_rel = max(worst_rel, err / max(abs(a), abs(n)) if err else 0.0)
    return worst_abs, worst_rel


def gradcheck_time(f, full: list, subset: int | None) -> tuple[float, float, int, bool]:
    """torch.autograd.gradcheck(f, full) timed, or on the first `subset` elements of each
    tensor with the rest held fixed. Returns (wall, CPU seconds, elements checked, passed)."""
    if subset is None:
        inputs, fn = tuple(x.detach().clone().requires_grad_(True) for x in full), f
    else:
        inputs = tuple(p.detach().reshape(-1)[:subset].clone().requires_grad_(True) for p in full)

        def fn(*xs):
            return f(*(torch.cat([x, p.detach().reshape(-1)[len(x):]]).reshape(p.shape)
                       for p, x in zip(full, xs)))
    n = sum(x.numel() for x in inputs)
    start, cpu = time.perf_counter(), time.process_time()
    ok = torch.autograd.gradcheck(fn, inputs, eps=EPS, raise_exception=False)
    return time.perf_counter() - start, time.process_time() - cpu, n, bool(ok)


def numerical_errors(f, params: list, exact: list, samples: int | None, seed: int = 0):
    """max |n − a| and max |n − a| / max(|a|, |n|) of gradcheck's formula (f(x + eps) −
    f(x − eps)) / 2 eps, in place on float64 tensors, at every element (samples None) or at
    `samples` seeded elements per tensor."""
    params = [p.detach().clone() for p in params]
    worst_abs = worst_rel = 0.0
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p, a_all in zip(params, exact):
            flat, a_flat = p.view(-1), np.asarray(a_all).reshape(-1)
            ks = range(flat.numel()) if samples is None or samples >= flat.numel() \
                else rng.choice(flat.numel(), samples, replace=False)
            for k in ks:
                orig = flat[k].item()
                flat[k] = orig + EPS
                up = f(*params).item()
                flat[k] = orig - EPS
                down = f(*params).item()
                flat[k] = orig
                n, a = (up - down) / (2 * EPS), float(a_flat[k])
                err = abs(n - a)
                worst_abs = max(worst_abs, err)
                worst_rel = max(worst_rel, err / max(abs(a), abs(n)) if err else 0.0)
    return worst_abs, worst_rel


def lstm_case(D: int, H: int, T: int, seed: int = 0):
    """nn.LSTM + nn.Linear (PyTorch's default init, seeded; random h_0, c_0 and tokens) as
    (torch loss of the 7 lecture tensors, those tensors, the engine's Problem, the HTTP body).
    Lecture names (bench/cells_vs_torch.py): V = weight_ih_l0, W = weight_hh_l0,
    b_h = bias_ih_l0 + bias_hh_l0, U = fc.weight, b_y = fc.bias; gates i, f, g, o."""
    from service.engine.problem import Problem, Weights
    torch.manual_seed(seed)
    net = torch.nn.LSTM(D, H, num_layers=1, batch_first=True, dtype=torch.float64)
    fc = torch.nn.Linear(H, D, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, D, (T,), generator=g)
    targets = torch.randint(0, D, (T,), generator=g)
    h0 = 0.5 * torch.randn(H, generator=g, dtype=torch.float64)
    c0 = 0.5 * torch.randn(H, generator=g, dtype=torch.float64)
    sd = net.state_dict()
    lecture = {"V": sd["weight_ih_l0"], "W": sd["weight_hh_l0"], "U": fc.weight, "b_y": fc.bias,
               "b_h": sd["bias_ih_l0"] + sd["bias_hh_l0"], "h_init": h0, "c_init": c0}
    lecture = {k: v.detach().clone() for k, v in lecture.items()}
    x = torch.nn.functional.one_hot(tokens, D).to(torch.float64)[None]       # 1 × T × D
    no_bias = torch.zeros(4 * H, dtype=torch.float64)

    def f(V, W, U, b_h, b_y, h_init, c_init):
        """the summed cross-entropy of nn.LSTM + nn.Linear with these tensors as parameters"""
        out, _ = torch.func.functional_call(
            net, {"weight_ih_l0": V, "weight_hh_l0": W, "bias_ih_l0": b_h, "bias_hh_l0": no_bias},
            (x, (h_init.view(1, 1, H), c_init.view(1, 1, H))))
        z = torch.func.functional_call(fc, {"weight": U, "bias": b_y}, (out[0],))
        return torch.nn.functional.cross_entropy(z, targets, reduction="sum")

    arrays = {k: v.numpy().copy() for k, v in lecture.items()}
    problem = Problem(Weights(**arrays), cell="lstm", tokens=tokens.numpy().astype(np.int64),
                      targets=np.eye(D)[targets.numpy()], loss="cross_entropy", reduction="sum")
    body = {"model": {"cell": "lstm", "weights": {k: arrays[k].tolist() for k in ("V", "W", "U", "b_h", "b_y")}},
            "h_init": arrays["h_init"].tolist(), "c_init": arrays["c_init"].tolist(),
            "tokens": tokens.tolist(), "targets": targets.tolist()}
    return f, [lecture[k] for k in LSTM_NAMES], problem, body


def lstm_exact(f, params: list, problem) -> dict[str, np.ndarray]:
    """The engine's analytic gradient (sequence.backward), checked equal to torch autograd's."""
    from service.engine import sequence
    cache = sequence.forward(problem)
    ours, _ = sequence.backward(cache, diagnostics=False)
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    loss = f(*leaves)
    loss.backward()
    if abs(float(cache.loss) - loss.item()) > 1e-9 * max(1.0, abs(loss.item())):
        raise SystemExit(f"lstm: the engine's loss {float(cache.loss)!r} is not torch's {loss.item()!r}")
    for name, leaf in zip(LSTM_NAMES, leaves):
        theirs = leaf.grad.numpy()
        err = float(np.max(np.abs(ours[name] - theirs)))
        if not err <= 1e-9 * max(1.0, float(np.max(np.abs(theirs)))):
            raise SystemExit(f"lstm: the engine's d{name} differs from torch autograd's by {err:.3g}")
    return {k: np.asarray(ours[k]) for k in LSTM_NAMES}


def lstm_row(url: str, worker: int, args) -> dict:
    """The LSTM case: service (HTTP, test client, engine) against torch.autograd.gradcheck."""
    from service import create_app
    from service.engine import gradcheck_cells
    label, D, H, T = LSTM_CASE
    f, params, problem, body = lstm_case(D, H, T)
    exact = lstm_exact(f, params, problem)
    n_params = sum(p.numel() for p in params)
    check = {"method": "central", "eps": EPS, "mode": "full", "parameters": list(LSTM_NAMES)}
    data = json.dumps({**body, "check": check}).encode()
    spec = gc.CheckSpec(method="central", mode="full", eps=EPS, parameters=LSTM_NAMES)
    client = create_app({"TESTING": True}).test_client()

    def via_client():
        r = client.post("/v1/gradcheck", data=data, content_type="application/json")
        if r.status_code != 200:
            raise SystemExit(f"test client /v1/gradcheck: {r.status_code} {r.data[:500]!r}")
        return r.get_json()

    def via_engine():
        return gradcheck_cells.gradcheck(problem, spec)

    walls, cpus, http_report = [], [], None
    client_walls, engine_walls = [], []
    via_client()                                          # warm (numba compiles in this process)
    engine_report = via_engine()
    for _ in range(args.repeats):                         # the three take turns
        cpu, start = cpu_seconds(worker), time.perf_counter()
        http_report = post(url + "/v1/gradcheck", data)
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds(worker) - cpu)
        start = time.perf_counter()
        client_report = via_client()
        client_walls.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine_report = via_engine()
        engine_walls.append(time.perf_counter() - start)
    ours, ours_cpu = float(np.median(walls)), float(np.median(cpus))
    t_client, t_engine = float(np.median(client_walls)), float(np.median(engine_walls))
    passed = {"HTTP": http_report["passed"], "test client": client_report["passed"],
              "engine": engine_report.passed}
    if http_report["evaluations"] != engine_report.evaluations:
        raise SystemExit("lstm: the HTTP report and the engine's count different evaluations")
    # torch: the whole check when it fits the budget (probe on 20 elements per tensor)
    probe, _, probe_n, _ = gradcheck_time(f, params, 20)
    if probe / probe_n * n_params <= args.torch_budget:
        theirs, theirs_cpu, checked, torch_ok = gradcheck_time(f, params, None)
        how = f"measured on all {checked:,} elements"
    else:
        sub, sub_cpu, checked, torch_ok = gradcheck_time(f, params, args.torch_subset)
        theirs, theirs_cpu = sub / checked * n_params, sub_cpu / checked * n_params
        how = (f"measured on {checked:,} elements (the first {args.torch_subset} of each "
               f"tensor) in {sub:.1f} s, extrapolated linearly to {n_params:,}")
    samples = None if args.lstm_accuracy_all else args.accuracy_samples
    t_abs, t_rel = numerical_errors(f, params, [exact[k] for k in LSTM_NAMES], samples)
    o_abs = max(r.max_abs_error for r in engine_report.parameters.values())
    o_rel = max(r.max_rel_error for r in engine_report.parameters.values())
    o_abs_http = max(r["max_abs_error"] for r in http_report["parameters"].values())
    work, _ = gradcheck_cells.CellSizes.of(problem).estimate(spec)
    row = dict(label=label, params=n_params, ours=ours, theirs=theirs, how=how, ratio=theirs / ours,
               ours_cpu=ours_cpu, theirs_cpu=theirs_cpu, cpu_ratio=theirs_cpu / ours_cpu,
               ours_passed=all(passed.values()), torch_ok=torch_ok, o_abs=o_abs, o_rel=o_rel,
               o_abs_http=o_abs_http, t_abs=t_abs, t_rel=t_rel, evaluations=engine_report.evaluations,
               work=work, t_client=t_client, t_engine=t_engine, passed=passed,
               accuracy_of="every element" if samples is None else f"{samples} sampled per tensor",
               lstm=True)
    row["ok"] = (row["ratio"] >= LSTM_SPEED_BAR and o_abs < t_abs and row["ours_passed"] and torch_ok)
    print(f"{label:24s} {n_params:6d} params  service {ours:7.3f} s  torch {theirs:8.2f} s  "
          f"{row['ratio']:6.1f}x wall, CPU {ours_cpu:.3f} s vs {theirs_cpu:.2f} s "
          f"{row['cpu_ratio']:6.1f}x  (torch {how})", flush=True)
    print(f"{'':24s} test client {t_client:.3f} s ({theirs / t_client:.1f}x), engine call {t_engine:.3f} s "
          f"({theirs / t_engine:.1f}x); passed {passed}, torch gradcheck {torch_ok}", flush=True)
    print(f"{'':24s} max abs error vs the engine's analytic gradient: service {o_abs:.2e}, torch "
          f"{t_abs:.2e} ({row['accuracy_of']}); {'PASS' if row['ok'] else 'MISS'}", flush=True)
    return row


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (the gunicorn worker), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_check(url: str, worker: int, body: dict, repeats: int) -> tuple[float, float, dict]:
    """Median wall time and the worker's median CPU time of POST /v1/gradcheck (a full
    central check), and its report."""
    data = json.dumps({**body, "check": {"method": "central", "eps": EPS, "mode": "full",
                                         "parameters": list(NAMES)}}).encode()
    walls, cpus, report = [], [], None
    for _ in range(repeats):
        cpu, start = cpu_seconds(worker), time.perf_counter()
        report = post(url + "/v1/gradcheck", data)
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds(worker) - cpu)
    return float(np.median(walls)), float(np.median(cpus)), report


def estimate(body: dict) -> tuple[float, int]:
    T = len(body["tokens"])
    w = body["model"]["weights"]
    H, D, N = len(w["W"]), len(w["V"][0]), len(w["U"])
    targets = np.zeros((T, N))
    targets[np.arange(T), body["targets"]] = 1.0
    p = rnn.Problem(rnn.Weights(*(np.asarray(w[k]) for k in NAMES), np.zeros(H)),
                    tokens=np.array(body["tokens"]), targets=targets,
                    scored=np.ones(T, dtype=bool), loss="cross_entropy")
    return gc.estimate(gc.Sizes.of(p), gc.CheckSpec(eps=EPS, parameters=NAMES))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"CPU": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="service requests per case (median)")
    ap.add_argument("--torch-budget", type=float, default=120.0,
                    help="seconds torch may take on a full check before a subset is timed instead")
    ap.add_argument("--torch-subset", type=int, default=200,
                    help="elements per parameter timed when torch would exceed its budget")
    ap.add_argument("--accuracy-samples", type=int, default=200,
                    help="elements per parameter at which torch's numerical values are compared")
    ap.add_argument("--lstm-sampled", dest="lstm_accuracy_all", action="store_false",
                    help="the LSTM row's torch accuracy at --accuracy-samples elements per tensor "
                         "instead of every element")
    ap.add_argument("--no-lstm", action="store_true", help="only the vanilla rows")
    args = ap.parse_args()
    rows = []
    with server.gunicorn(workers=1) as (url, master):
        worker = server.worker_pids(master)[0]
        for label, D, H, T in CASES:
            body = problems.body(D, H, T)
            n_params = sum(np.asarray(body["model"]["weights"][k]).size for k in NAMES)
            exact = exact_gradients(body)
            ours, ours_cpu, report = service_check(url, worker, body, args.repeats)
            work, evaluations = estimate(body)
            # torch: a full run when its extrapolated time fits the budget, else a subset
            probe, _, probe_n, _ = torch_gradcheck_time(body, subset=20)
            predicted = probe / probe_n * n_params
            if predicted <= args.torch_budget:
                theirs, theirs_cpu, checked, torch_ok = torch_gradcheck_time(body, None)
                how = f"measured on all {checked:,} elements"
            else:
                sub, sub_cpu, checked, torch_ok = torch_gradcheck_time(body, args.torch_subset)
                theirs, theirs_cpu = sub / checked * n_params, sub_cpu / checked * n_params
                how = (f"measured on {checked:,} elements (the first {args.torch_subset} of each "
                       f"parameter) in {sub:.1f} s, extrapolated linearly to {n_params:,}")
            t_abs, t_rel = torch_numerical_accuracy(body, exact, args.accuracy_samples)
            o_abs = max(r["max_abs_error"] for r in report["parameters"].values())
            o_rel = max(r["max_rel_error"] for r in report["parameters"].values())
            rows.append(dict(label=label, params=n_params, ours=ours, theirs=theirs, how=how,
                             ratio=theirs / ours, ours_cpu=ours_cpu, theirs_cpu=theirs_cpu,
                             cpu_ratio=theirs_cpu / ours_cpu, ours_passed=report["passed"], torch_ok=torch_ok,
                             o_abs=o_abs, o_rel=o_rel, t_abs=t_abs, t_rel=t_rel,
                             evaluations=report["evaluations"], work=work))
            r = rows[-1]
            print(f"{label:24s} {n_params:6d} params  service {ours:7.3f} s  torch {theirs:8.2f} s  "
                  f"{r['ratio']:6.1f}x wall, CPU {ours_cpu:.3f} s vs {theirs_cpu:.2f} s "
                  f"{r['cpu_ratio']:6.1f}x  (torch {how})", flush=True)
            print(f"{'':24s} max abs error: service {o_abs:.2e} (all elements, passed "
                  f"{report['passed']} at rtol 1e-5/atol 1e-8), torch {t_abs:.2e} "
                  f"({args.accuracy_samples}/parameter); estimated work {work:.3g}", flush=True)
        if not args.no_lstm:
            rows.append(lstm_row(url, worker, args))
    write(rows, args)


def write(rows: list[dict], args) -> None:
    info = machine()
    lines = ["# Full gradient check: the service vs torch.autograd.gradcheck", "",
             "Command (from the project root): `bench/.venv/bin/python bench/gradcheck_vs_torch.py"
             + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + "`", "",
             "\n".join(f"- {k}: {v}" for k, v in info.items()), "",
             "Both sides: central differences, eps 1e-6, float64, parameters V, W, U, b_h, b_y "
             "of a tanh/softmax/cross-entropy tokens problem (`bench/problems.py`, seed 0). "
             "Service: `POST /v1/gradcheck` with `mode: full` over HTTP to gunicorn on loopback "
             "(one worker, one BLAS thread), median of "
             f"{args.repeats} requests, wall time including JSON both ways. Torch: "
             "`torch.autograd.gradcheck(f, inputs, eps=1e-6)` in-process, one thread.", "",
             "| problem | parameters | service (wall) | torch gradcheck (wall) | speed-up (wall) | "
             "service CPU | torch CPU | speed-up (CPU) | bar |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):                  # the issue's bar is on the 8,288-parameter case
        verdict = ("PASS" if r["ratio"] >= SPEED_BAR else "MISS") + f" (wall ≥ {SPEED_BAR:.0f}×)" \
            if i == 0 else "reported"
        if r.get("lstm"):
            verdict = (("PASS" if r["ok"] else "MISS") + f" (wall ≥ {LSTM_SPEED_BAR:.0f}× and a smaller "
                       "max error than torch's, both checks passed)")
        lines.append(f"| {r['label']} | {r['params']:,} | {r['ours']:.3f} s | {r['theirs']:.1f} s | "
                     f"{r['ratio']:.1f}× | {r['ours_cpu']:.2f} s | {r['theirs_cpu']:.1f} s | "
                     f"{r['cpu_ratio']:.1f}× | {verdict} |")
    for r in rows:
        if r.get("lstm"):
            lines += ["", f"{r['label']} ({r['params']:,} parameters: V, W, U, b_h, b_y, h_init, c_init; "
                      "nn.LSTM + nn.Linear on the torch side with bias_ih = b_h and bias_hh held at "
                      "zero, one-hot inputs, summed cross-entropy, h_0 and c_0 seeded random): the "
                      f"service's time three ways, median of {args.repeats} each, taking turns — "
                      f"HTTP to gunicorn {r['ours']:.3f} s ({r['ratio']:.1f}×, the bar's figure, as the "
                      f"vanilla rows), Flask test client in-process {r['t_client']:.3f} s "
                      f"({r['theirs'] / r['t_client']:.1f}×), engine call `gradcheck_cells.gradcheck` "
                      f"{r['t_engine']:.3f} s ({r['theirs'] / r['t_engine']:.1f}×), against torch "
                      f"{r['theirs']:.1f} s. Passed: " + ", ".join(f"{k} {v}" for k, v in r["passed"].items())
                      + f", torch gradcheck {r['torch_ok']}."]
    lines += ["", f"Load average while it ran: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} "
              "cores. Other work on the machine slows both sides; the CPU-time columns (the "
              "gunicorn worker's utime + stime from /proc, torch's process time) are less "
              "sensitive to it than wall time."]
    lines += ["", "Accuracy, max |numerical − analytic| against the exact float64 gradient (vanilla "
              "rows: torch autograd's; LSTM: the engine's, checked equal to torch autograd's to 1e-9):", "",
              "| problem | service (every element) | torch's formula (sampled; LSTM: see below) | service passed (rtol 1e-5, atol 1e-8) | torch gradcheck passed (its defaults atol 1e-5, rtol 1e-3) |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['o_abs']:.2e} (max rel {r['o_rel']:.1e}) | "
                     f"{r['t_abs']:.2e} (max rel {r['t_rel']:.1e}) | {r['ours_passed']} | {r['torch_ok']} |")
    lines += ["", "How torch was timed:", ""]
    lines += [f"- {r['label']}: {r['how']}." for r in rows]
    lines += [f"- {r['label']}: torch's accuracy at {r['accuracy_of']}." for r in rows if r.get("lstm")]
    lines += ["", f"Torch's accuracy is measured with gradcheck's own formula, (f(x+ε) − f(x−ε))/2ε in "
              f"float64, at {args.accuracy_samples} seeded elements per parameter. The service's "
              "perturbed models carry only their difference from the base model (exact difference "
              "formulas), never subtracting one large loss from another, which is why its errors "
              "are three orders of magnitude smaller at the same ε.", "",
              "The service's estimate of the work (what `RNN_GRADCHECK_MAX_WORK`, default 4e10, "
              "is compared with): " + ", ".join(f"{r['label']}: {r['work']:.3g} ({r['evaluations']:,} "
                                                f"evaluations)" for r in rows) + "."]
    out = ROOT / "bench" / "gradcheck_results.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
