"""Proof that the service holds up: contract fuzzing, load, soak, faults, graceful shutdown and
hostile clients. Loopback only; every loop is bounded in count and time. Select with
`pytest -m reliability`; figures are printed (-s) and appended as JSON lines to
$RELIABILITY_OUT when set (docs/reliability.md records a run)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from service import create_app

from servers import Gunicorn, Nginx, binary, report, rss_kib, wait_until
from tests.contract import refused_for_unstateable_rules

pytestmark = pytest.mark.reliability
needs = {b: pytest.mark.skipif(binary(b) is None, reason=f"make system-deps installs {b}")
         for b in ("wrk", "nginx")}
SMALL = json.dumps({
    "model": {"weights": {"V": [[0.1, 0.2], [0.3, -0.1]], "W": [[0.5, 0.1], [-0.2, 0.3]],
                          "U": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "b_h": [0.0, 0.1],
                          "b_y": [0.0, 0.0, 0.1]}},
    "tokens": [0, 1, 1], "targets": [2, None, 0]})


def statuses(server: Gunicorn) -> dict:
    """{(endpoint, status): count} from the aggregated /metrics of every worker."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    found = re.findall(r'^rnn_http_requests_total\{endpoint="([^"]+)",method="\w+",status="(\d+)"\} '
                       r'([0-9.e+]+)$', text, re.M)
    out: dict = {}
    for endpoint, status, count in found:
        out[(endpoint, status)] = out.get((endpoint, status), 0) + int(float(count))
    return out


# --- schemathesis: the app against its own openapi.yaml -------------------------------------------

# Every check is on. Two take the contract's own answers into account, and one more holds them to it:
# - schema-violating data over a size limit (e.g. 10,001 targets when maxItems is 10,000) is
#   answered 413, as the contract says, which schemathesis does not list by default;
# - schema-valid data can still break a rule JSON Schema cannot state (V must be H×D for the H
#   of W, a token below D, the work budget): the contract answers 422 (or 413) with pointers, so
#   positive_data_acceptance lists those statuses, and `only_unstateable_rules_refused` then
#   fails any such answer unless every error it lists has a code in tests/contract.py's
#   CANNOT_STATE: a 422 to schema-valid data for anything else is a contract bug.
FUZZ_CONFIG = SchemathesisConfig.from_str("""
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
[checks.positive_data_acceptance]
expected-statuses = ["2XX", 413, 422]
""")


def only_unstateable_rules_refused(ctx, response, case):
    """Schema-valid data refused with 413 or 422: every listed error is a rule JSON Schema cannot
    state, decided from the error's own code."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (413, 422):
        return None
    try:
        problem = json.loads(response.content)
    except ValueError:
        problem = None
    if not refused_for_unstateable_rules(response.status_code, problem):
        errors = problem.get("errors") if isinstance(problem, dict) else problem
        raise AssertionError(f"schema-valid data refused with {response.status_code} for a rule the "
                             f"schema could state (or without error codes): {json.dumps(errors)[:600]}")
    return None


try:
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", create_app({"TESTING": True}),
                                            config=FUZZ_CONFIG)
except Exception as error:          # a broken openapi.yaml fails this test, not the module
    schema, LOAD_ERROR = None, error

if schema is not None:
    @schema.parametrize()
    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def test_schemathesis_all_checks_pass(case):
        case.call_and_validate(additional_checks=[only_unstateable_rules_refused])
else:
    def test_schemathesis_all_checks_pass():
        pytest.fail(f"openapi.yaml does not load: {LOAD_ERROR}")


def test_the_strict_check_refuses_a_422_for_a_rule_the_schema_states():
    """only_unstateable_rules_refused is not vacuous: a positive case answered 422 for a type
    error fails it; one answered for a token not below D passes."""
    class Mode:
        is_positive = True

    class Case:
        meta = type("Meta", (), {"generation": type("Generation", (), {"mode": Mode})})

    def answer(*codes):
        errors = [{"pointer": "/tokens/0", "detail": "…", "code": c} for c in codes]
        return type("Response", (), {"status_code": 422, "content": json.dumps({"status": 422, "errors": errors})})

    assert only_unstateable_rules_refused(None, answer("token_range"), Case) is None
    for codes in (("type",), ("token_range", "type"), ()):
        with pytest.raises(AssertionError, match="schema-valid data refused"):
            only_unstateable_rules_refused(None, answer(*codes), Case)


# --- load and soak with wrk ------------------------------------------------------------------------

def wrk_script(path: Path, requests_: list[tuple[str, str, str]]) -> Path:
    """A wrk Lua script cycling through (path, content type, body)."""
    entries = ",\n".join(f"    wrk.format('POST', {json.dumps(p)}, {{['Content-Type'] = {json.dumps(ct)}}}, "
                         f"{json.dumps(body)})" for p, ct, body in requests_)
    path.write_text(f"""
local reqs, i = nil, 0
function init(args)
  reqs = {{
{entries}
  }}
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
""")
    return path


def run_wrk(url: str, script: Path, connections: int, duration: float, threads: int = 2) -> dict:
    out = subprocess.run([binary("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    ms = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def latency(pct):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * ms[unit]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": latency(50), "p99_ms": latency(99),
            "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0, "raw": out}


@needs["wrk"]
def test_load_32_connections_20s_all_2xx(tmp_path):
    script = wrk_script(tmp_path / "load.lua", [("/v1/gradients", "application/json", SMALL)])
    with Gunicorn(tmp_path, workers=2) as server:
        result = run_wrk(server.url, script, connections=32, duration=20)
        seen = statuses(server)
    assert result["non_2xx"] == 0 and result["socket_errors"] == 0, result["raw"]
    assert result["requests"] > 1000, result["raw"]
    # the server's own count agrees: every /v1/gradients answer was a 200
    assert not [k for k in seen if k[0] == "/v1/gradients" and k[1] != "200"], seen
    assert seen[("/v1/gradients", "200")] >= result["requests"]
    report("load", **{k: v for k, v in result.items() if k != "raw"}, connections=32, seconds=20)


@needs["wrk"]
def test_soak_20000_requests_worker_rss_stays_flat(tmp_path):
    mix = [("/v1/gradients", "application/json", SMALL),
           ("/v1/forward", "application/json", SMALL),
           ("/v1/gradients", "application/json", SMALL[:-7]),                 # malformed: 400
           ("/v1/forward", "application/json", SMALL.replace('"tokens"', '"tokenz"')),   # 422
           ("/v1/gradients", "text/plain", SMALL)]                            # 415
    script = wrk_script(tmp_path / "soak.lua", mix)
    with Gunicorn(tmp_path, workers=2) as server:
        pids = server.worker_pids()
        warm = run_wrk(server.url, script, connections=8, duration=5)
        before = {pid: rss_kib(pid) for pid in pids}
        # wrk runs for a duration: long enough for 20,000 answers at the warm-up rate, capped
        duration = min(90, round(1.2 * 20_000 / warm["rps"]) + 1)
        result = run_wrk(server.url, script, connections=8, duration=duration)
        after = {pid: rss_kib(pid) for pid in pids}
        assert server.worker_pids() == pids, "no worker died or was replaced"
        seen = statuses(server)
    assert result["requests"] >= 20_000 and result["socket_errors"] == 0, result["raw"]
    assert not [k for k in seen if k[1].startswith("5")], seen
    growth = {pid: after[pid] / before[pid] - 1 for pid in pids}
    report("soak", requests=result["requests"], seconds=duration, warmup_requests=warm["requests"],
           rss_kib_before=before, rss_kib_after=after,
           growth_pct={p: round(100 * g, 2) for p, g in growth.items()})
    assert max(growth.values()) < 0.10, growth


# --- faults ----------------------------------------------------------------------------------------

class Load:
    """Background clients posting SMALL until stopped (bounded by `limit` seconds)."""

    def __init__(self, url: str, clients: int = 4, limit: float = 30):
        self.url, self.stop_at = url + "/v1/gradients", time.monotonic() + limit
        self.results: list = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            try:
                r = requests.post(self.url, data=SMALL, timeout=10,
                                  headers={"Content-Type": "application/json"})
                self.results.append(r.status_code)
            except requests.RequestException as e:
                self.results.append(type(e).__name__)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self.threads:
            t.join(15)


def test_worker_killed_under_load_is_replaced_and_answers_within_2s(tmp_path):
    with Gunicorn(tmp_path, workers=2) as server, Load(server.url) as load:
        wait_until(lambda: len(load.results) > 50, 10)
        victim = server.worker_pids()[0]
        survivors = set(server.worker_pids()) - {victim}
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()

        def replacement_answered():
            new = set(server.worker_pids()) - survivors - {victim}
            log = server.log()
            return any(re.search(rf'"pid":{p}[,}}]', log) for p in new)

        answered = wait_until(replacement_answered, 5, 0.01)
        recovered = time.monotonic() - killed
    failures = [r for r in load.results if r != 200]
    report("worker_sigkill", recovery_s=round(recovered, 3), requests=len(load.results),
           failed=len(failures))
    assert answered and recovered < 2.0, recovered
    assert len(failures) <= 1, failures            # at most the one request the victim was serving


def slow_body(T: int = 600, H: int = 256, D: int = 16, N: int = 16) -> dict:
    """A valid /v1/gradients request that takes a second or more on one core."""
    rng = np.random.default_rng(0)
    return {"model": {"weights": {"V": (0.1 * rng.normal(size=(H, D))).tolist(),
                                  "W": (0.1 * rng.normal(size=(H, H))).tolist(),
                                  "U": (0.1 * rng.normal(size=(N, H))).tolist(),
                                  "b_h": [0.0] * H, "b_y": [0.0] * N}},
            "tokens": rng.integers(0, D, T).tolist(), "targets": rng.integers(0, N, T).tolist()}


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    with Gunicorn(tmp_path, workers=1) as server:
        answer: dict = {}

        def slow():
            started = time.monotonic()
            r = requests.post(server.url + "/v1/gradients", json=slow_body(), timeout=60)
            answer.update(status=r.status_code, body=r.json(), seconds=time.monotonic() - started)

        client = threading.Thread(target=slow)
        client.start()
        # the worker has the request once its CPU time starts climbing
        worker = server.worker_pids()[0]
        cpu = lambda: sum(map(int, Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        base = cpu()
        assert wait_until(lambda: cpu() > base + 20, 10), "the slow request started"
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        client.join(60)
        code = server.proc.wait(40)
        stopped = time.monotonic() - signalled
        refused = wait_until(lambda: _refused(server.port), 2)
    report("sigterm_in_flight", request_s=round(answer["seconds"], 2), master_exit_s=round(stopped, 2),
           status=answer["status"])
    assert answer["status"] == 200 and len(answer["body"]["gradients"]["W"]) == 256
    assert code == 0 and refused


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


# --- hostile inputs --------------------------------------------------------------------------------

MiB = 1024 * 1024
HOSTILE = [
    # name, content type, body (bytes), accepted statuses
    ("deep nesting", "application/json",
     b'{"model": {"weights": {"V": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}}", {400, 422}),
    ("deep nesting in an object", "application/json",
     b'{"a":' * 50_000 + b"1" + b"}" * 50_000, {400, 422}),
    ("huge exponent", "application/json", SMALL.replace("0.5", "1e400").encode(), {422}),
    ("huge integer token", "application/json",
     SMALL.replace('"tokens": [0, 1, 1]', '"tokens": [0, 1, ' + "9" * 5000 + "]").encode(), {422}),
    ("a million-digit number", "application/json",
     SMALL.replace("0.5", "1" + "0" * 1_000_000 + ".5").encode(), {422}),
    ("NaN literal", "application/json", SMALL.replace("0.5", "NaN").encode(), {400, 422}),
    ("body over 16 MiB", "application/json", b"[" + b"0," * (8 * MiB) + b"0]", {413}),
    ("T over the limit", "application/json",
     SMALL.replace('"tokens": [0, 1, 1], "targets": [2, null, 0]',
                   f'"tokens": {[0] * 10_001}, "targets": {[0] * 10_001}').encode(), {413}),
    ("invalid UTF-8", "application/json", b'{"model": "' + bytes([0xFF, 0xFE]) + b'"}', {400, 422}),
    ("not an object", "application/json", b'"just a string"', {422}),
    ("empty body", "application/json", b"", {400, 422}),
    ("text/plain", "text/plain", SMALL.encode(), {415}),
    ("form-encoded", "application/x-www-form-urlencoded", b"model=1", {415}),
    ("no content type", None, SMALL.encode(), {415}),
]


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    with Gunicorn(tmp_path_factory.mktemp("hostile"), workers=2) as server:
        yield server


@pytest.mark.parametrize("name, content_type, body, expected", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_a_4xx_and_workers_stay_up(hostile_server, name, content_type, body, expected):
    pids = hostile_server.worker_pids()
    headers = {"Content-Type": content_type} if content_type else {}
    r = requests.post(hostile_server.url + "/v1/gradients", data=body, headers=headers, timeout=30)
    report("hostile", input=name, status=r.status_code, bytes=len(body))
    assert r.status_code in expected, (r.status_code, r.text[:300])
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == r.status_code
    assert hostile_server.worker_pids() == pids, "no worker crashed or was replaced"
    assert requests.post(hostile_server.url + "/v1/gradients", data=SMALL, timeout=10,
                         headers={"Content-Type": "application/json"}).status_code == 200


def test_chunked_body_over_the_limit_is_refused(hostile_server):
    def chunks():
        for _ in range(17):
            yield b" " * MiB
    r = requests.post(hostile_server.url + "/v1/gradients", data=chunks(), timeout=30,
                      headers={"Content-Type": "application/json"})
    report("hostile", input="chunked body over 16 MiB", status=r.status_code, bytes=17 * MiB)
    assert r.status_code == 413


@needs["nginx"]
def test_slow_clients_are_cut_off_by_nginx_and_never_hold_a_worker(tmp_path):
    """Slowloris: a body trickled (or stalled) after the headers. nginx buffers request bodies,
    so gunicorn's sync workers never see it; nginx answers 408 after client_body_timeout
    (shortened here to 2 s) while everyone else is served at once."""
    with Gunicorn(tmp_path / "g", workers=1) as server, \
            Nginx([f"127.0.0.1:{server.port}"], tmp_path / "n", client_body_timeout="2s",
                  client_header_timeout="2s") as nginx:
        slow = []
        for _ in range(8):          # more stalled clients than the service has workers
            s = socket.create_connection(("127.0.0.1", nginx.port), timeout=10)
            s.sendall(b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"model\":")
            slow.append(s)
        header_only = socket.create_connection(("127.0.0.1", nginx.port), timeout=10)
        header_only.sendall(b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        for _ in range(5):
            r = requests.post(nginx.url + "/v1/gradients", data=SMALL, timeout=5,
                              headers={"Content-Type": "application/json"})
            assert r.status_code == 200
        others_served = time.monotonic() - started
        answers = [s.recv(200) for s in slow]
        cut_after = time.monotonic() - started
        header_only_answer = header_only.recv(200)
        for s in [*slow, header_only]:
            s.close()
        reached_gunicorn = server.log().count('"endpoint":"/v1/gradients"')
    report("slowloris_via_nginx", stalled_clients=len(slow), others_served_s=round(others_served, 3),
           cut_after_s=round(cut_after, 2))
    assert others_served < 2.0
    assert reached_gunicorn == 5, "only the complete requests reached a worker"
    # nginx closes a timed-out connection (logging 408) instead of sending an answer
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in [*answers, header_only_answer])
    assert 1.5 < cut_after < 10
    logged = [json.loads(line)["status"] for line in (tmp_path / "n" / "access.log").read_text().splitlines()]
    assert logged.count(408) == len(slow) + 1 and logged.count(200) == 5, logged
