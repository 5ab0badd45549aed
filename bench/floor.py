"""The request path against its floor, and the engine against JAX (bench/run.py's `--only floor`
and `--only jax`; this module keeps its own section of bench/results.md between the markers
below, so a run of only these keys leaves the rest of the file as it was).

floor: what any Python service must spend on a /v1/gradients request — `orjson.loads` of the
body and `np.asarray` of its arrays (base64 decoding for binary), the same response computed by
the fastest peer (JAX jit, float64, one thread, numpy in and out), and `orjson.dumps` of that
response from numpy arrays (base64 for binary) — against the HTTP round trip (p50, one
kept-alive http.client connection on loopback, gunicorn started like `make run` with 1 worker;
the client sends the encoded body and reads the response bytes). A requests.Session's round
trip is a second row: that client alone adds ~1–2 ms at these sizes (proxy lookups from the
environment, the response read in 10 KiB chunks).

jax: `service.engine.evaluate.gradients(problem)` (everything /v1/gradients returns: outputs,
hidden states, step losses, every gradient, b_h_by_step, hidden_grad_norms) against
bench/jax_ref.py's jitted function computing the same outputs from device-resident arrays,
checked equal (1e-9 relative) first.

    bench/.venv/bin/python bench/run.py --only floor jax [--quick]
"""
from __future__ import annotations

import jax_ref  # noqa: I001  (first: sets XLA_FLAGS and x64 before anything imports jax)

import http.client
import sys
from pathlib import Path

import numpy as np
import orjson
import pybase64
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import problems  # noqa: E402
from common import interleaved_medians, replace_section  # noqa: E402
import server  # noqa: E402
from service.engine import evaluate  # noqa: E402
from service.engine.problem import Problem, Weights  # noqa: E402

BEGIN, END = "<!-- floor-and-jax:begin -->", "<!-- floor-and-jax:end -->"
BINARY_ACCEPT = "application/json; arrays=base64"
TOL = 1e-9
ROWS: list[dict] = []
NOTES: list[str] = []
# name -> (cell, D = N, H, T, B); B = 1 is an unbatched problem
ENGINE_CASES = {"quiz rnn": ("rnn", 8, 16, 10, 1), "char-rnn rnn": ("rnn", 65, 100, 25, 1),
                "large rnn": ("rnn", 256, 512, 100, 1), "char-rnn lstm B=1": ("lstm", 65, 100, 25, 1),
                "char-rnn lstm B=32": ("lstm", 65, 100, 25, 32)}
FLOOR_CASES = {"char-rnn rnn": ("rnn", 65, 100, 25, 1), "char-rnn lstm B=32": ("lstm", 65, 100, 25, 32)}
ENGINE_BAR, JSON_BAR, BINARY_BAR = 2.0, 1.3, 1.1


def add(section, case, ours, reference, ratio, bar, higher_is_better, note=""):
    ok = ratio >= bar if higher_is_better else ratio <= bar
    sign = "≥" if higher_is_better else "≤"
    row = dict(section=section, case=case, ours=ours, reference=reference, ratio=ratio,
               verdict=f"{'PASS' if ok else 'MISS'} (bar {sign} {bar}×)", note=note)
    ROWS.append(row)
    print(f"{section:34s} {case:22s} {ours:>12s} {reference:>12s} {ratio:7.2f}x  {row['verdict']} {note}",
          flush=True)
    return ok


def ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms"


# --- one problem, three forms: the request body, the engine's Problem, JAX's arguments ---

def case_arrays(cell: str, D: int, H: int, T: int, B: int, seed: int = 0):
    G = {"rnn": 1, "lstm": 4}[cell]
    r = np.random.default_rng(seed)
    w = {"V": r.normal(0, 0.1, (G * H, D)), "W": r.normal(0, 1 / np.sqrt(H), (G * H, H)),
         "U": r.normal(0, 0.1, (D, H)), "b_h": r.normal(0, 0.1, G * H), "b_y": r.normal(0, 0.1, D)}
    shape = (T,) if B == 1 else (B, T)
    tokens, targets = r.integers(0, D, shape), r.integers(0, D, shape)
    return w, tokens, targets


def engine_problem(cell, w, tokens, targets) -> Problem:
    H = w["W"].shape[1]
    weights = Weights(V=w["V"], W=w["W"], U=w["U"], b_h=w["b_h"], b_y=w["b_y"], h_init=np.zeros(H),
                      c_init=np.zeros(H) if cell == "lstm" else None)
    return Problem(weights, cell=cell, tokens=tokens.astype(np.int64), targets=np.eye(w["U"].shape[0])[targets],
                   scored=np.ones(tokens.shape, dtype=bool), loss="cross_entropy", reduction="sum")


def jax_params(cell, w) -> dict:
    H = w["W"].shape[1]
    p = {**w, "h_init": np.zeros(H)}
    if cell == "lstm":
        p["c_init"] = np.zeros(H)
    return p


def engine_answer(problem: Problem) -> dict:
    out, grads, bptt = evaluate.gradients(problem)
    d = {"hidden": out.hidden, "outputs": out.outputs, "step_losses": out.step_losses, "loss": out.loss,
         "b_h_by_step": bptt.b_h_by_step, "hidden_grad_norms": bptt.hidden_grad_norms,
         **{f"gradients.{k}": v for k, v in grads.items()}}
    if out.cell is not None:
        d["cell"] = out.cell
    return d


def check_equal(ours: dict, theirs: dict, what: str) -> float:
    if set(ours) != set(theirs):
        raise SystemExit(f"{what}: fields only on one side: {sorted(set(ours) ^ set(theirs))}")
    worst = 0.0
    for name, g in theirs.items():
        a, g = np.asarray(ours[name], dtype=float), np.asarray(g, dtype=float)
        if a.shape != g.shape:
            raise SystemExit(f"{what}: {name} has shape {a.shape} here, {g.shape} in JAX")
        err = float(np.max(np.abs(a - g))) / max(1.0, float(np.max(np.abs(g))))
        if not err <= TOL:
            raise SystemExit(f"{what}: {name} differs from JAX's by {err:.3g}")
        worst = max(worst, err)
    return worst


# --- the engine against JAX ---

def gemm_floor(cell: str, H: int, D: int, T: int, B: int, repeats: int) -> float:
    """Median time of only the BLAS products any exact BPTT with these diagnostics must do, in
    numpy: T sequential (B × H)·(H × G·H) forward products and T backward ones, the output
    layer's and weight gradients' GEMMs, and the b_h_by_step sweep (every L_t backpropagated
    at once: at step k, the (T − k)·B rows still alive times W)."""
    G = {"rnn": 1, "lstm": 4}[cell]
    r = np.random.default_rng(1)
    W, U = r.normal(size=(G * H, H)), r.normal(size=(D, H))
    WT = np.ascontiguousarray(W.T)
    hs, da, dz = r.normal(size=(T * B, H)), r.normal(size=(T * B, G * H)), r.normal(size=(T * B, D))
    rows = r.normal(size=(T * B, G * H))

    def products():
        h = np.zeros((B, H))
        for _ in range(T):
            h = (h @ WT)[:, :H]
        dh = np.zeros((B, G * H))
        for _ in range(T):
            dh[:, :H] = dh @ W
        hs @ U.T, dz @ U, dz.T @ hs, da.T @ hs
        for k in range(T):
            rows[:(T - k) * B] @ W
    return interleaved_medians([products], repeats)[0]


def bench_engine_vs_jax(quick: bool) -> None:
    for name, (cell, D, H, T, B) in ENGINE_CASES.items():
        w, tokens, targets = case_arrays(cell, D, H, T, B)
        problem = engine_problem(cell, w, tokens, targets)
        fn = jax_ref.response_fn(cell, tokens, targets)
        params = jax_ref.device(jax_params(cell, w))

        def ours():
            return evaluate.gradients(problem)

        def theirs():
            return jax_ref.ready(fn(params))
        err = check_equal(engine_answer(problem), jax_ref.to_numpy(theirs()), f"engine {name}")
        repeats = (400 if T * H < 5000 else 150 if H <= 100 else 20) // (4 if quick else 1)
        t_ours, t_jax = interleaved_medians([ours, theirs], max(repeats, 5))
        ratio = t_jax / t_ours
        note = ""
        if ratio < ENGINE_BAR:
            floor = gemm_floor(cell, H, D, T, B, max(repeats, 5))
            note = (f"GEMM floor {ms(floor)} = {floor / t_ours:.0%} of the engine's time: "
                    f"≤ {t_jax / floor:.1f}× JAX possible")
        add("engine /v1/gradients compute vs JAX jit", f"{name} (D=N={D}, H={H}, T={T})",
            ms(t_ours), ms(t_jax), ratio, ENGINE_BAR, True, note)
        NOTES.append(f"engine vs JAX {name}: every output equal to {err:.1e} (relative) before timing")


# --- the request path against its floor ---

def request_body(cell, w, tokens, targets, binary: bool) -> bytes:
    enc = problems.binary if binary else (lambda a: a.tolist())
    model = {"weights": {k: enc(v) for k, v in w.items()}}
    if cell != "rnn":
        model["cell"] = cell
    return orjson.dumps({"model": model, "tokens": tokens.tolist(), "targets": targets.tolist()})


def as_numpy(node, binary: bool):
    """The server's response with every array as numpy: what the floor serialises."""
    if isinstance(node, dict):
        if binary and set(node) == {"dtype", "shape", "data"}:
            return np.frombuffer(pybase64.b64decode(node["data"]), "<f8").reshape(node["shape"])
        return {k: as_numpy(v, binary) for k, v in node.items()}
    if isinstance(node, list) and not binary:
        try:
            a = np.array(node, dtype=np.float64)
        except (TypeError, ValueError):
            return node
        return a if not np.isnan(a).any() else node
    return node


def _b64(obj):
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj, dtype="<f8")
        return {"dtype": "float64", "shape": list(a.shape), "data": pybase64.b64encode_as_string(a.data)}
    raise TypeError(type(obj).__name__)


def floor_fns(cell, body: bytes, binary: bool, template: dict, fn):
    """The three parts of the floor, each a function, and the whole floor as one."""
    names = ("V", "W", "U", "b_h", "b_y")

    def parse():
        obj = orjson.loads(body)
        ws = obj["model"]["weights"]
        if binary:
            arrays = {k: np.frombuffer(pybase64.b64decode(ws[k]["data"]), "<f8").reshape(ws[k]["shape"])
                      for k in names}
        else:
            arrays = {k: np.asarray(ws[k], dtype=np.float64) for k in names}
        return arrays, np.asarray(obj["tokens"]), np.asarray(obj["targets"])

    def compute(parsed=None):
        arrays = (parsed or parse())[0]
        H = arrays["W"].shape[1]
        p = {**arrays, "h_init": np.zeros(H)}
        if cell == "lstm":
            p["c_init"] = np.zeros(H)
        return jax_ref.to_numpy(fn(p))

    def serialize():
        if binary:
            return orjson.dumps(template, default=_b64)
        return orjson.dumps(template, option=orjson.OPT_SERIALIZE_NUMPY)

    def whole():
        compute(parse())
        return serialize()
    parsed = parse()
    return parse, lambda: compute(parsed), serialize, whole


def server_timing_medians(headers: list[str]) -> str:
    """The median of each Server-Timing phase over the timed requests."""
    phases: dict[str, list[float]] = {}
    for h in headers:
        for entry in h.split(","):
            name, _, dur = entry.strip().partition(";dur=")
            phases.setdefault(name, []).append(float(dur))
    return ", ".join(f"{k} {np.median(v):.3f}" for k, v in phases.items()) + \
        f" (sum {sum(np.median(v) for v in phases.values()):.3f} ms)"


def bench_floor(quick: bool) -> None:
    with server.gunicorn(workers=1) as (url, _), \
            server.gunicorn(app="bench.transport_app:app", workers=1) as (transport_url, _):
        url += "/v1/gradients"
        transport_url += "/v1/gradients"
        session = requests.Session()
        for name, (cell, D, H, T, B) in FLOOR_CASES.items():
            w, tokens, targets = case_arrays(cell, D, H, T, B)
            fn = jax_ref.response_fn(cell, tokens, targets)
            for binary in (False, True):
                body = request_body(cell, w, tokens, targets, binary)
                headers = {"Content-Type": "application/json", **({"Accept": BINARY_ACCEPT} if binary else {})}

                timings: list[str] = []

                def round_trip():
                    r = session.post(url, data=body, headers=headers)
                    if r.status_code != 200:
                        raise SystemExit(f"POST {url}: {r.status_code} {r.text[:300]}")
                    timings.append(r.headers.get("Server-Timing", ""))
                    return r
                port = int(url.split(":")[2].split("/")[0])
                transport_port = int(transport_url.split(":")[2].split("/")[0])

                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

                def round_trip_http_client():
                    """The same request from the standard library's client on one kept-alive
                    connection (the server must keep it open: a closed one is an error here)."""
                    conn.request("POST", "/v1/gradients", body, headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    if answer.status != 200 or answer.will_close:
                        raise SystemExit(f"POST {url}: {answer.status}, will_close={answer.will_close}")
                    timings.append(answer.headers.get("Server-Timing", ""))
                    return data
                r = round_trip()
                transport_headers = {**headers, "X-Response-Bytes": str(len(r.content))}

                transport_conn = http.client.HTTPConnection("127.0.0.1", transport_port, timeout=60)

                def transport():
                    """The same request to bench/transport_app.py (no work): HTTP's own cost."""
                    transport_conn.request("POST", "/v1/gradients", body, transport_headers)
                    answer = transport_conn.getresponse()
                    assert answer.status == 200 and len(answer.read()) == len(r.content)
                template = as_numpy(orjson.loads(r.content), binary)
                parse, compute, serialize, whole = floor_fns(cell, body, binary, template, fn)
                jax_out = compute()
                check_equal({k: template["gradients"][k.split(".", 1)[1]] for k in jax_out if k.startswith("gradients.")},
                            {k: v for k, v in jax_out.items() if k.startswith("gradients.")}, f"HTTP {name}")
                repeats = (30 if B == 1 else 10) if quick else (150 if B == 1 else 25)
                problem = engine_problem(cell, w, tokens, targets)
                t_http, t_floor, t_parse, t_compute, t_ser, t_requests, t_engine, t_transport = interleaved_medians(
                    [round_trip_http_client, whole, parse, compute, serialize, round_trip,
                     lambda: evaluate.gradients(problem), transport], repeats)
                conn.close()
                transport_conn.close()
                strict = t_parse + min(t_compute, t_engine) + t_ser
                timing = server_timing_medians(timings[-2 * repeats:])
                enc = "binary" if binary else "JSON"
                case = f"{name} (D=N={D}, H={H}, T={T})"
                add(f"/v1/gradients HTTP {enc} vs its floor", case,
                    ms(t_http), ms(t_floor), t_http / t_floor, BINARY_BAR if binary else JSON_BAR, False,
                    f"floor = loads+asarray {ms(t_parse)} + JAX {ms(t_compute)} + dumps {ms(t_ser)}")
                add(f"/v1/gradients HTTP {enc} (requests) vs its floor", case, ms(t_requests), ms(t_floor),
                    t_requests / t_floor, BINARY_BAR if binary else JSON_BAR, False,
                    "the same round trip from a requests.Session: the client's own cost included")
                NOTES.append(f"HTTP {enc} {name}: the same request and response sizes to a bare WSGI app under "
                             f"the same gunicorn (bench/transport_app.py, no work, http.client kept alive) take "
                             f"{ms(t_transport)} p50: gunicorn, loopback TCP and the client alone are "
                             f"{t_transport / t_http:.0%} of the round trip; round trip / (floor + transport) = "
                             f"{t_http / (t_floor + t_transport):.2f}×")
                NOTES.append(f"HTTP {enc} {name}: with the engine's own compute ({ms(t_engine)} in-process) in "
                             f"place of JAX's ({ms(t_compute)}) where it is faster, the floor is {ms(strict)}: "
                             f"round trip / that floor = {t_http / strict:.2f}× (http.client), "
                             f"{t_requests / strict:.2f}× (requests)")
                NOTES.append(f"HTTP {enc} {name}: body {len(body) / 1024:.0f} KiB, response "
                             f"{len(r.content) / 1024:.0f} KiB; the server's Server-Timing, median ms of the "
                             f"timed requests: {timing}")
        session.close()


def write_section(info: dict, command: str) -> None:
    path = ROOT / "bench" / "results.md"
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    table = ["| measurement | case | service | reference | ratio | bar | |", "|---|---|---:|---:|---:|---|---|"]
    table += [f"| {r['section']} | {r['case']} | {r['ours']} | {r['reference']} | {r['ratio']:.2f}× | "
              f"{r['verdict']} | {r['note']} |" for r in ROWS]
    notes = "\n".join(f"- {n}" for n in NOTES)
    body = (f"{BEGIN}\n## The request path against its floor, the engine against JAX\n\n"
            f"Written by `{command}` (bench/floor.py and bench/jax_ref.py, called by bench/run.py); "
            f"everything between this section's markers is rewritten by each run that includes `floor` or "
            f"`jax`, the rest of this file is not. Floor rows: the round trip over its floor (≤ bar passes); "
            f"engine rows: JAX's time over the engine's (≥ bar passes).\n\n{machine_lines}\n\n"
            + "\n".join(table) + f"\n\n{notes}\n{END}")
    replace_section(path, BEGIN, END, body)
    print(f"\nwrote {path.relative_to(ROOT)} (section {BEGIN})")
