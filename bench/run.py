"""`make bench`: the service against what a user would run instead, every figure a ratio from
this one run. Prints a table and writes bench/results.md with the machine it ran on.

    python bench/run.py [--quick]     (from the project root, in bench/.venv: needs torch)

`--only cells golden` runs only the v1.1 engine's LSTM/GRU rows against torch.nn.LSTM/GRU and
the live re-check of tests/golden/torch_*.json (bench/cells_vs_torch.py); those keep their own
section of bench/results.md, so a run of only them leaves the rest of the file as it was.
`--only floor jax` likewise: the /v1/gradients round trip against its floor and the engine
against JAX jit (bench/floor.py, bench/jax_ref.py), in their own section.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import floor  # noqa: E402,I001  (first: bench/jax_ref.py sets XLA_FLAGS and x64 before jax loads)
import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pybase64  # noqa: E402
import torch  # noqa: E402

import cells_vs_torch  # noqa: E402
from common import interleaved_medians  # noqa: E402
import problems  # noqa: E402
import server  # noqa: E402
import torch_ref  # noqa: E402
from service.engine import rnn  # noqa: E402

torch.set_num_threads(1)          # like a gunicorn worker: one BLAS thread (OPENBLAS_NUM_THREADS=1)
BINARY_ACCEPT = "application/json; arrays=base64"


class Table:
    """Rows of (what, ours, reference, ratio, bar): ratio > 1 means the service is ahead."""

    def __init__(self):
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, section, case, ours, reference, ratio, bar=None, higher_is_better=True):
        ok = None if bar is None else (ratio >= bar if higher_is_better else ratio <= bar)
        self.rows.append(dict(section=section, case=case, ours=ours, reference=reference,
                              ratio=ratio, bar=bar, higher=higher_is_better, ok=ok))
        row = self.rows[-1]
        print(f"{section:34s} {case:28s} {ours:>16s} {reference:>16s} {ratio:8.2f}x  {self.verdict(row)}",
              flush=True)

    @staticmethod
    def verdict(row) -> str:
        if row["bar"] is None:
            return ""
        sign = "≥" if row["higher"] else "≤"
        return f"{'PASS' if row['ok'] else 'MISS'} (bar {sign} {row['bar']}×)"

    def markdown(self) -> str:
        lines = ["| measurement | case | service | reference | ratio | bar |",
                 "|---|---|---:|---:|---:|---|"]
        for r in self.rows:
            lines.append(f"| {r['section']} | {r['case']} | {r['ours']} | {r['reference']} | "
                         f"{r['ratio']:.2f}× | {self.verdict(r)} |")
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


# --- the engine in-process against PyTorch autograd in-process ---

def engine_problem(D: int, H: int, T: int) -> tuple[rnn.Problem, dict]:
    body = problems.body(D, H, T)
    w = problems.weights(D, H, D)
    targets = np.zeros((T, D))
    targets[np.arange(T), body["targets"]] = 1.0
    problem = rnn.Problem(rnn.Weights(h_init=np.zeros(H), **w), tokens=np.array(body["tokens"]),
                          targets=targets, scored=np.ones(T, dtype=bool), loss="cross_entropy")
    return problem, body


def check_same(ours: dict, theirs: dict, what: str) -> None:
    """The benchmark compares equal work only: every array of ours must agree with PyTorch's."""
    for name, a in ours.items():
        g = np.asarray(theirs[name])
        err = float(np.max(np.abs(np.asarray(a) - g)))
        if not err <= 1e-9 * max(1.0, float(np.max(np.abs(g)))):
            raise SystemExit(f"{what}: {name} differs from PyTorch's by {err:.3g}")


def bench_engine(table: Table, quick: bool) -> None:
    for name, (D, H, T) in problems.SIZES.items():
        problem, body = engine_problem(D, H, T)
        leaves = torch_ref.tensors(body)

        def ours():
            return rnn.backward(rnn.forward(problem))

        def theirs():
            return torch_ref.forward_backward(leaves)

        grads = ours().as_dict()
        check_same(grads, {k: v.numpy() for k, v in theirs()[1].items()}, f"engine {name}")
        repeats = {"quiz": 400, "char-rnn": 200, "large": 30}[name] // (4 if quick else 1)
        t_ours, t_torch = interleaved_medians([ours, theirs], repeats)
        table.add("engine fwd+bwd vs torch autograd", f"{name} (D=N={D}, H={H}, T={T})",
                  ms(t_ours), ms(t_torch), t_torch / t_ours, bar=3.0)
        if name == "large":
            floor = blas_floor(problem, repeats)
            table.notes.append(
                f"engine at {name}: the BLAS work alone that any exact BPTT must do (2T = {2 * T} "
                f"sequential W·v products of {H}×{H} float64, each streaming W's {H * H * 8 / 2**20:.0f} MiB "
                f"from cache, and the four T×H GEMMs for z, dL/dh, dU, dW) takes {ms(floor)} here, "
                f"{floor / t_ours:.0%} of the engine's {ms(t_ours)}; PyTorch runs the same products, so "
                f"no exact float64 engine can be more than {t_torch / floor:.1f}× faster than it at this size")


def blas_floor(problem: rnn.Problem, repeats: int) -> float:
    """Median time of just the BLAS calls of one forward+backward: the sequential
    recurrence products and the four GEMMs (no activations, no Python between them)."""
    w = problem.weights
    T, H = problem.T, problem.H
    rng = np.random.default_rng(0)
    h, dz = rng.normal(size=(T, H)), rng.normal(size=(T, problem.N))

    def products():
        v = np.zeros(H)
        for t in range(T):
            v = w.W @ v + h[t]
        for t in range(T):
            v = v @ w.W + h[t]
        h @ w.U.T, dz @ w.U, dz.T @ h, h.T @ h
    return interleaved_medians([products], repeats)[0]


# --- /v1/gradients over HTTP against PyTorch in-process ---

_CONNECTIONS: dict = {}


def post(url: str, body: bytes, headers: dict) -> bytes:
    """POST on one kept-alive connection per server, as a caller in a loop would."""
    parts = urlsplit(url)
    conn = _CONNECTIONS.get(parts.netloc)
    if conn is None:
        conn = _CONNECTIONS[parts.netloc] = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", parts.path, body, {"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200 or response.will_close:
        conn.close()
        del _CONNECTIONS[parts.netloc]
    if response.status != 200:
        raise SystemExit(f"POST {url}: {response.status} {data[:300]!r}")
    return data


def decode_binary(obj: dict) -> np.ndarray:
    return np.frombuffer(pybase64.b64decode(obj["data"]), dtype="<f8").reshape(obj["shape"])


def http_client(url: str, weights: dict, rest: dict, binary: bool):
    """What a caller holding numpy weights does: encode, POST, decode the arrays it needs
    (the gradients and dL_t/db_h by step) to numpy."""
    def arrays(out: dict, decode) -> dict:
        return {**{k: decode(v) for k, v in out["gradients"].items()},
                "b_h_by_step": decode(out["bptt"]["b_h_by_step"])}
    if binary:
        def call():
            body = orjson.dumps({"model": {"weights": {k: problems.binary(v) for k, v in weights.items()}},
                                 **rest})
            return arrays(orjson.loads(post(url, body, {"Accept": BINARY_ACCEPT})), decode_binary)
    else:
        def call():
            body = orjson.dumps({"model": {"weights": weights}, **rest}, option=orjson.OPT_SERIALIZE_NUMPY)
            return arrays(orjson.loads(post(url, body, {})), np.array)
    return call


def torch_in_process(weights: dict, rest: dict, same_response: bool):
    """The answer computed locally from the same numpy weights: everything /v1/gradients
    returns (same_response), or only the outputs, loss and gradients."""
    tokens = torch.tensor(rest["tokens"])
    targets = torch.tensor(rest["targets"])

    def call():
        t = {k: torch.from_numpy(v).requires_grad_() for k, v in weights.items()}
        t["h_init"] = torch.zeros(t["W"].shape[0], dtype=torch.float64, requires_grad=True)
        t.update(tokens=tokens, targets=targets)
        if same_response:
            return {k: v.numpy() for k, v in torch_ref.full_response(t).items()}
        _, grads, extras = torch_ref.forward_backward(t, with_outputs=True)
        return {k: g.numpy() for k, g in grads.items()} | {k: v.numpy() for k, v in extras.items()}
    return call


def bench_http(table: Table, quick: bool) -> None:
    D, H, T = problems.SIZES["char-rnn"]
    weights = problems.weights(D, H, D)
    body = problems.body(D, H, T)
    rest = {"tokens": body["tokens"], "targets": body["targets"]}
    same, grads_only = torch_in_process(weights, rest, True), torch_in_process(weights, rest, False)
    reference = same()
    with server.gunicorn() as (url, _):
        url += "/v1/gradients"
        plain, binary = http_client(url, weights, rest, False), http_client(url, weights, rest, True)
        check_same(plain(), reference, "/v1/gradients JSON")
        check_same(binary(), reference, "/v1/gradients binary")
        t_plain, t_binary, t_same, t_grads = interleaved_medians([plain, binary, same, grads_only],
                                                                 25 if quick else 100)
    case = f"char-rnn (D=N={D}, H={H}, T={T})"
    for name, t_ours in (("JSON", t_plain), ("binary", t_binary)):
        bar = 2.0 if name == "JSON" else 1.0
        table.add(f"/v1/gradients HTTP {name} vs torch, same response", case, ms(t_ours), ms(t_same),
                  t_ours / t_same, bar=bar, higher_is_better=False)
        table.add(f"/v1/gradients HTTP {name} vs torch, gradients only", case, ms(t_ours), ms(t_grads),
                  t_ours / t_grads, bar=bar, higher_is_better=False)
    table.notes.append(
        "HTTP rows: the client encodes numpy weights (orjson, or base64 for binary), POSTs to gunicorn on "
        "loopback (one kept-alive connection), and decodes the gradients and "
        "b_h_by_step back to numpy. 'same response': torch computes everything /v1/gradients returns "
        "(outputs, step losses, dL/dθ, the total dL/dh_t norms, and dL_t/db_h for every t as T "
        "vector-Jacobian products batched into one autograd.grad call); 'gradients only': torch computes "
        "just the outputs, loss and dL/dθ, the stricter comparison.")


# --- requests per second under wrk against a bare echo app ---

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{path}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def wrk_rps(url: str, body_path: str, seconds: int) -> tuple[float, int]:
    """Requests per second and the number of requests wrk completed."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(path=body_path))
    try:
        out = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s", "-s", script.name, url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors from {url}:\n{out}")
    return (float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1)),
            int(re.search(r"(\d+) requests in", out).group(1)))


def served(app: str | None, body_path: str, seconds: int) -> tuple[float, float]:
    """Requests per second under wrk, and the workers' CPU milliseconds per request."""
    with server.gunicorn(app=app) as (url, master):
        wrk_rps(url + "/v1/gradients", body_path, 1)                      # warm both workers
        workers = server.worker_pids(master)
        before = sum(server.cpu_seconds(pid) for pid in workers)
        rps, count = wrk_rps(url + "/v1/gradients", body_path, seconds)
        cpu = sum(server.cpu_seconds(pid) for pid in workers) - before
    return rps, cpu / count * 1e3


def bench_throughput(table: Table, quick: bool) -> None:
    """The two apps take turns (ours, echo, ours, echo, ...): a drift in the shared machine's
    load hits both, and the row quotes the median of the per-pair ratios."""
    D, H, T = problems.SIZES["quiz"]
    seconds, rounds = (4, 1) if quick else (10, 3)
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(orjson.dumps(problems.body(D, H, T)))
    try:
        pairs = [(served(None, f.name, seconds), served("bench.echo_app:app", f.name, seconds))
                 for _ in range(rounds)]
    finally:
        os.unlink(f.name)
    ratios = [ours[0] / echo[0] for ours, echo in pairs]
    mid = sorted(range(rounds), key=lambda i: ratios[i])[rounds // 2]
    (ours, ours_cpu), (echo, echo_cpu) = pairs[mid]
    table.add("/v1/gradients req/s vs echo app",
              f"quiz (D=N={D}, H={H}, T={T}), wrk -c4 {seconds}s, median of {rounds}",
              f"{ours:.0f}/s", f"{echo:.0f}/s", ratios[mid], bar=0.6)
    table.notes.append(f"throughput: both apps under the same gunicorn settings (2 workers, connections kept alive: service/worker.py) and wrk "
                       f"(1 thread, 4 connections, {seconds} s) on this 2-core machine, {rounds} alternating "
                       f"pair(s), ratios {', '.join(f'{r:.2f}×' for r in ratios)}; the row is the median pair, "
                       f"where a worker spent {ours_cpu:.2f} ms of CPU per request for /v1/gradients and "
                       f"{echo_cpu:.2f} ms for the echo app")


# --- full /v1/gradcheck against torch.autograd.gradcheck (another module builds it) ---

GRADCHECK_LINE = re.compile(r"^(?P<label>\S.*?)\s+(?P<params>\d+) params\s+service\s+(?P<ours>[\d.]+) s"
                            r"\s+torch\s+(?P<theirs>[\d.]+) s")


def bench_gradcheck(table: Table, quick: bool) -> None:
    """Runs bench/gradcheck_vs_torch.py (the gradcheck module's own comparison, which also
    writes bench/gradcheck_results.md with accuracy) and takes its timings into this table."""
    script = ROOT / "bench" / "gradcheck_vs_torch.py"
    if not script.exists():
        table.notes.append("full /v1/gradcheck vs torch.autograd.gradcheck: not measured "
                           "(bench/gradcheck_vs_torch.py is missing)")
        return
    args = ["--repeats", "1", "--torch-budget", "20"] if quick else ["--repeats", "3"]
    run = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    rows = [m for m in map(GRADCHECK_LINE.match, run.stdout.splitlines()) if m]
    if run.returncode or not rows:
        table.notes.append(f"full /v1/gradcheck vs torch.autograd.gradcheck: bench/gradcheck_vs_torch.py "
                           f"failed (exit {run.returncode}): {(run.stderr or run.stdout)[-300:]}")
        return
    for m in rows:
        ours, theirs = float(m["ours"]), float(m["theirs"])
        table.add("full /v1/gradcheck vs torch gradcheck", f"{m['label']}, {int(m['params']):,} parameters",
                  f"{ours:.3f} s", f"{theirs:.1f} s", theirs / ours,
                  bar=30.0 if m["label"].startswith("lstm") else 50.0)   # lstm: also an accuracy bar
    table.notes.append("gradcheck rows: from bench/gradcheck_vs_torch.py (central differences, eps 1e-6, "
                       "V, W, U, b_h, b_y; the lstm row also h_init, c_init, against nn.LSTM + nn.Linear; "
                       "torch timed on every element unless over its budget, then on a subset and "
                       "extrapolated); accuracy, the lstm row's accuracy bar and how torch was timed: "
                       "bench/gradcheck_results.md")


# --- the v1.1 engine's gated cells vs torch.nn.LSTM / GRU, golden files re-checked live ---
# (bench/cells_vs_torch.py: its rows go into its own table and section of bench/results.md)

CELL_PARTS = ("cells", "golden")


def bench_cells(table: Table, quick: bool) -> None:
    cells_vs_torch.bench_cells(quick)


def bench_golden(table: Table, quick: bool) -> None:
    cells_vs_torch.bench_golden(quick)


# --- the request path against its floor, the engine against JAX jit (bench/floor.py: its own
# table and section of bench/results.md) ---

FLOOR_PARTS = ("floor", "jax")


def bench_floor(table: Table, quick: bool) -> None:
    floor.bench_floor(quick)


def bench_jax(table: Table, quick: bool) -> None:
    floor.bench_engine_vs_jax(quick)


# --- memory: peak RSS of a worker for the largest request the default limits take ---

LARGEST = {  # name -> (D, H, N, T, encoding, include): at the body, work or T²·H limits
    "JSON, D=N=512, H=512, T=256": (512, 512, 512, 256, "json", ()),
    "binary, D=N=64, H=1024, T=128": (64, 1024, 64, 128, "binary", ()),
    "b_h_terms at T²·H = 4e6, D=N=65, H=100, T=200": (65, 100, 65, 200, "json", ("b_h_terms",)),
}


def bench_memory(table: Table, quick: bool) -> None:
    from service import config
    limits = config.limits(config.from_env({}))
    for case, (D, H, N, T, encoding, include) in LARGEST.items():
        work = rnn.estimate_work(T, H, D, N, dense_inputs=False, include=include)
        body = orjson.dumps({**problems.body(D, H, T, N=N, encoding=encoding), "include": list(include)})
        assert len(body) <= config.SETTINGS["RNN_MAX_BODY_BYTES"][2] and work <= limits.max_work, case
        assert not include or T * T * H <= limits.max_bptt_terms, case
        with server.gunicorn(workers=1) as (url, master):
            post(url + "/v1/gradients", orjson.dumps(problems.body(8, 16, 10)), {})   # warm
            (pid,) = server.worker_pids(master)
            idle = server.peak_rss_mib(pid)
            t0 = time.perf_counter()
            answer = post(url + "/v1/gradients", body, {})
            seconds = time.perf_counter() - t0
            peak = server.peak_rss_mib(pid)
        table.add("worker peak RSS, largest request", case, f"{peak:.0f} MiB", f"{idle:.0f} MiB idle",
                  peak / idle, higher_is_better=False)
        table.notes.append(f"largest request {case}: body {len(body) / 2**20:.1f} MiB, response "
                           f"{len(answer) / 2**20:.1f} MiB, estimated work {work:.3g} of the "
                           f"{limits.max_work:.3g} budget, answered in {seconds:.2f} s; peak RSS "
                           f"{peak:.0f} MiB, {peak / idle:.1f}× the warmed idle worker's ({idle:.0f} MiB)")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "CPU": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "BLAS threads": f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')} (numpy, OpenBLAS), "
                            f"{torch.get_num_threads()} (torch)",
            "load average at start (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "wrk": (subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
                    or "").split("[")[0].strip() if shutil.which("wrk") else "missing"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--only", nargs="*", default=["engine", "http", "throughput", "gradcheck", "memory",
                                                      *CELL_PARTS, *FLOOR_PARTS])
    args = parser.parse_args()
    os.chdir(ROOT)
    info = machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), "\n", flush=True)
    table = Table()
    for part in args.only:
        globals()[f"bench_{part}"](table, args.quick)
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    for note in table.notes:
        print("note:", note)
    for note in floor.NOTES:
        print("note:", note)
    argv = " ".join(sys.argv[1:])
    if os.environ.get("MAKELEVEL"):
        command = f'make bench BENCH_ARGS="{argv}"' if argv else "make bench"
    else:
        command = f"bench/run.py {argv}".strip()
    if any(part not in CELL_PARTS + FLOOR_PARTS for part in args.only):
        write_results(info, table)
    if any(part in CELL_PARTS for part in args.only):
        cells_vs_torch.write_section(info, command)
    if any(part in FLOOR_PARTS for part in args.only):
        floor.write_section({**info, "jax": floor.jax_ref.jax.__version__}, command)


def write_results(info: dict, table: Table) -> None:
    path = ROOT / "bench" / "results.md"
    text = path.read_text() if path.exists() else ""
    analysis = text.split("<!-- analysis -->", 1)[1] if "<!-- analysis -->" in text else "\n"
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    notes = "\n".join(f"- {n}" for n in table.notes)
    path.write_text(f"# Benchmark results\n\nWritten by `make bench` (bench/run.py); every ratio is "
                    f"measured in this one run on this machine.\n\n{machine_lines}\n\n"
                    f"{table.markdown()}\n\n{notes}\n\n<!-- analysis -->{analysis}")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
