"""API keys with scopes (RNN_API_KEYS_FILE): 401/403/200 through the Flask client and live through
`make run`, the key never in logs or metrics, the constant-time comparison, bad keys files, and
`python -m service.keys`."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from rnnclient import ApiError, Client
from rnnclient.client import retry_after
from service import create_app, keys
from service.keys import SCOPES, KeysFileError

from servers import ROOT, Gunicorn, Nginx, binary, free_port, report
from test_live import run_command, stop, wait_until_up

EXAMPLES = ROOT / "examples"
BODIES = {   # one request each endpoint answers with 200
    "forward": "forward_tokens.json", "gradients": "gradients.json",
    "gradcheck": "gradcheck_central.json", "grade": "grade_no_bptt.json",
    "problems": "problems_quiz.json",
}
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.yaml", "/docs")


def body(scope: str) -> bytes:
    return (EXAMPLES / BODIES[scope]).read_bytes()


class KeyRing:
    """A keys file with a grader key (every scope), a student key (gradcheck, problems) and one
    key per scope; the keys themselves stay in memory, as a harness would hold them."""

    def __init__(self, directory: Path):
        self.keys: dict[str, str] = {}
        entries = []
        for name, scopes in [("grader", list(SCOPES)), ("student", ["gradcheck", "problems"]),
                             *[(f"only-{s}", [s]) for s in SCOPES]]:
            key, entry = keys.new(name, scopes)
            self.keys[name] = key
            entries.append(entry)
        self.path = directory / "keys.json"
        self.path.write_text(json.dumps(entries))
        self.text = self.path.read_text()

    def auth(self, name: str) -> dict:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def locked(ring):
    return create_app({"TESTING": True, "API_KEYS_FILE": str(ring.path)}).test_client()


def post(client, scope: str, headers=None):
    return client.post(f"/v1/{scope}", data=body(scope), content_type="application/json",
                       headers=headers or {})


def assert_problem(r, status: int):
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    problem = r.get_json()
    assert problem["status"] == status and problem["instance"] == r.request.path
    assert problem["type"] == {401: "/problems/unauthorized", 403: "/problems/forbidden"}[status]
    return problem


# --- open by default -----------------------------------------------------------------------------

def test_without_a_keys_file_every_endpoint_is_open(client):
    assert client.application.config["API_KEYS"] is None
    for scope in SCOPES:
        assert post(client, scope).status_code == 200, scope


# --- 401 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", SCOPES)
def test_no_key_is_401_with_a_bearer_challenge(locked, scope):
    r = post(locked, scope)
    problem = assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="rnn"'
    assert "Authorization: Bearer" in problem["detail"]


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer two words", "Bearer a\"b",
    "Bearer " + "a" * 600, "Bearer ключ",
])
def test_a_malformed_authorization_header_is_401_invalid_request(locked, header):
    r = post(locked, "forward", {"Authorization": header})
    assert_problem(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="rnn", error="invalid_request"'


def test_an_unknown_key_is_401_invalid_token(locked, ring):
    for key in ("x" * 43, ring.keys["grader"][:-1], ring.keys["grader"] + "A",
                hashlib.sha256(ring.keys["grader"].encode()).hexdigest()):   # the digest is no key
        r = post(locked, "gradients", {"Authorization": f"Bearer {key}"})
        assert_problem(r, 401)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="rnn", error="invalid_token"'


def test_unknown_v1_paths_need_a_key_too(locked, ring):
    assert_problem(locked.get("/v1/nothing"), 401)
    assert locked.get("/v1/nothing", headers=ring.auth("grader")).status_code == 404
    assert locked.get("/v1/forward", headers=ring.auth("grader")).status_code == 405


def test_every_v1_route_needs_a_key(locked):
    routes = [r for r in locked.application.url_map.iter_rules() if r.rule.startswith("/v1/")]
    assert {r.rule for r in routes} >= {f"/v1/{s}" for s in SCOPES}
    for rule in routes:
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = locked.open(rule.rule, method=method, data=b"{}", content_type="application/json")
            assert r.status_code == 401, (rule.rule, method)


# --- 403 and 200 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [f"only-{s}" for s in SCOPES])
def test_a_key_reaches_exactly_its_scopes(locked, ring, name):
    allowed = name.removeprefix("only-")
    for scope in SCOPES:
        r = post(locked, scope, ring.auth(name))
        if scope == allowed:
            assert r.status_code == 200, (name, scope, r.get_data(as_text=True))
        else:
            problem = assert_problem(r, 403)
            assert scope in problem["detail"] and name in problem["detail"]
            assert r.headers["WWW-Authenticate"] == \
                f'Bearer realm="rnn", error="insufficient_scope", scope="{scope}"'


def test_the_grader_key_reaches_everything_the_student_key_only_gradcheck_and_problems(locked, ring):
    for scope in SCOPES:
        assert post(locked, scope, ring.auth("grader")).status_code == 200, scope
        expected = 200 if scope in ("gradcheck", "problems") else 403
        assert post(locked, scope, ring.auth("student")).status_code == expected, scope


def test_the_scheme_is_case_insensitive(locked, ring):
    r = post(locked, "forward", {"Authorization": f"bearer {ring.keys['grader']}"})
    assert r.status_code == 200


def test_open_paths_need_no_key(locked):
    for path in OPEN_PATHS:
        r = locked.get(path)
        assert r.status_code == 200, path
    rules = [r.rule for r in locked.application.url_map.iter_rules()
             if not r.rule.startswith("/v1/") and "GET" in r.methods and "<" not in r.rule]
    assert set(OPEN_PATHS) <= set(rules)
    for rule in rules:                   # /docs assets, /explore, ...: never a 401
        assert locked.get(rule).status_code != 401, rule


# --- the key stays secret -------------------------------------------------------------------------

def test_the_key_never_reaches_the_access_line_or_metrics(locked, ring, capfd):
    key = ring.keys["grader"]
    capfd.readouterr()
    assert post(locked, "gradients", ring.auth("grader")).status_code == 200
    assert post(locked, "forward", ring.auth("student")).status_code == 403
    assert post(locked, "forward", {"Authorization": f"Bearer {key}x"}).status_code == 401
    metrics = locked.get("/metrics").get_data(as_text=True)
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [line["key"] for line in lines[:3]] == ["grader", "student", "anonymous"]
    for secret in (key, ring.keys["student"], "Bearer"):
        assert secret not in out + err and secret not in metrics
    assert 'rnn_http_requests_by_key_total{endpoint="/v1/gradients",key="grader",status="200"}' in metrics
    assert 'key="student",status="403"' in metrics and 'key="anonymous",status="401"' in metrics
    assert "sha256" not in metrics and not any(e.digest.hex() in metrics + err for e in keys.load(ring.path))


def test_metric_label_values_come_from_the_keys_file_only(locked, ring):
    for i in range(5):                   # invented keys all count as anonymous
        post(locked, "forward", {"Authorization": f"Bearer invented{i}"})
    metrics = locked.get("/metrics").get_data(as_text=True)
    names = {part.split('"')[1] for part in metrics.split("key=")[1:]}
    assert names <= set(ring.keys) | {"anonymous"}


# --- constant time ---------------------------------------------------------------------------------

def test_digests_are_compared_with_compare_digest_against_every_entry(ring, monkeypatch):
    """The presented key is hashed, and its digest compared with every entry's through
    hmac.compare_digest, also after a match: neither the position of the matching entry nor a
    common prefix changes the work done."""
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    client = create_app({"TESTING": True, "API_KEYS_FILE": str(ring.path)}).test_client()
    n = len(ring.keys)
    for name in ("grader", "only-problems"):           # the first entry and the last
        calls.clear()
        assert post(client, "problems", ring.auth(name)).status_code == 200
        assert calls == [(32, 32)] * n, name
    calls.clear()
    assert post(client, "problems", {"Authorization": "Bearer " + ring.keys["grader"][:-2] + "zz"}).status_code == 401
    assert calls == [(32, 32)] * n


def test_timing_does_not_depend_on_how_much_of_a_key_matches(ring):
    """A coarse check of the same property on the clock: the hook's time for a key that shares
    all but its last character with a real one, and for one that shares nothing, differ by
    less than the noise of this machine (medians of interleaved runs)."""
    app = create_app({"TESTING": True, "API_KEYS_FILE": str(ring.path)})
    hook = app.before_request_funcs[None][-1]
    real = ring.keys["grader"]
    near, far = real[:-1] + ("A" if real[-1] != "A" else "B"), "Z" * len(real)
    times = {near: [], far: []}
    for _ in range(30):
        for key in (near, far):
            with app.test_request_context("/v1/problems", method="POST",
                                          headers={"Authorization": f"Bearer {key}"}):
                start = time.perf_counter()
                for _ in range(200):
                    hook()
                times[key].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    assert abs(med[near] - med[far]) / min(med.values()) < 0.5, med


def test_the_hook_costs_a_few_microseconds(tmp_path):
    """The check runs on every request: measured on the hook itself, in a request context
    (routing done), for 10 keys and the last one presented; and on an open path. Printed as a
    figure (-s); the bound only catches an order-of-magnitude regression on a busy machine."""
    made = [keys.new(f"k{i}", ["gradients"]) for i in range(10)]
    (tmp_path / "k.json").write_text(json.dumps([entry for _, entry in made]))
    app = create_app({"TESTING": True, "API_KEYS_FILE": str(tmp_path / "k.json")})
    hook = app.before_request_funcs[None][-1]
    figures = {}
    for label, path, headers in [("valid_key_us", "/v1/gradients", {"Authorization": f"Bearer {made[-1][0]}"}),
                                 ("unknown_key_with_401_answer_us", "/v1/gradients", {"Authorization": "Bearer " + "x" * 43}),
                                 ("open_path_us", "/healthz", {})]:
        with app.test_request_context(path, method="POST" if "v1" in path else "GET", headers=headers):
            hook()
            n, best = 20000, float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(n):
                    hook()
                best = min(best, (time.perf_counter() - start) / n)
            figures[label] = round(best * 1e6, 2)
    report("auth_hook_cost", keys=10, **figures)
    assert figures["valid_key_us"] < 50 and figures["open_path_us"] < 10, figures


# --- the keys file -----------------------------------------------------------------------------------

GOOD = {"name": "grader-1", "sha256": "a" * 64, "scopes": ["grade"]}


@pytest.mark.parametrize("content, message", [
    ("", "not JSON"),
    ("{not json", "not JSON"),
    (json.dumps(GOOD), "problem(s)"),                                       # not a list
    (json.dumps([]), "lists no keys"),
    (json.dumps([{**GOOD, "sha256": "abc"}]), "0/sha256"),
    (json.dumps([{**GOOD, "sha256": "g" * 64}]), "0/sha256"),
    (json.dumps([{**GOOD, "scopes": ["admin"]}]), "0/scopes/0"),
    (json.dumps([{**GOOD, "scopes": []}]), "0/scopes"),
    (json.dumps([{**GOOD, "scopes": ["grade", "grade"]}]), "twice"),
    (json.dumps([{k: v for k, v in GOOD.items() if k != "name"}]), "0/name"),
    (json.dumps([{**GOOD, "name": "has space"}]), "0/name"),
    (json.dumps([{**GOOD, "key": "SECRET-KEY-PASTED-BY-MISTAKE"}]), "0/key"),
    (json.dumps([GOOD, {**GOOD, "sha256": "b" * 64}]), "repeats the name"),
    (json.dumps([GOOD, {**GOOD, "name": "other"}]), "repeats the sha256"),
])
def test_a_bad_keys_file_stops_the_app_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(KeysFileError) as caught:
        create_app({"TESTING": True, "API_KEYS_FILE": str(path)})
    text = str(caught.value)
    assert text.startswith(f"RNN_API_KEYS_FILE={path}: ") and message in text, text
    assert "SECRET-KEY" not in text                   # values are never repeated


def test_a_missing_keys_file_stops_the_app(tmp_path):
    with pytest.raises(KeysFileError, match="cannot read the keys file"):
        create_app({"TESTING": True, "API_KEYS_FILE": str(tmp_path / "absent.json")})


def test_the_environment_variable_names_the_file(ring, monkeypatch):
    monkeypatch.setenv("RNN_API_KEYS_FILE", str(ring.path))
    assert create_app({"TESTING": True}).config["API_KEYS"] == tuple(ring.keys)
    monkeypatch.setenv("RNN_API_KEYS_FILE", "")
    assert create_app({"TESTING": True}).config["API_KEYS"] is None


def test_gunicorn_exits_non_zero_on_a_bad_keys_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{**GOOD, "scopes": ["everything"], "key": "SECRET-KEY-IN-FILE"}]))
    server = Gunicorn(tmp_path, workers=1, RNN_API_KEYS_FILE=str(path))
    try:
        code = server.proc.wait(30)
    finally:
        server.stop()
    log = server.log()
    assert code != 0
    assert f"cannot start: RNN_API_KEYS_FILE={path}: " in log and "0/scopes/0" in log, log[-2000:]
    assert "SECRET-KEY-IN-FILE" not in log


# --- python -m service.keys ------------------------------------------------------------------------

def run_keys(*args, stdin: str | None = None):
    return subprocess.run([sys.executable, "-m", "service.keys", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_keys_new_prints_a_fresh_key_once_and_its_entry(tmp_path):
    run = run_keys("new", "grader-7", "--scopes", "grade", "problems")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    key = lines[lines.index(next(l for l in lines if l.startswith("key"))) + 1]
    entry = json.loads(lines[-1])
    assert len(key) >= 43 and run.stdout.count(key) == 1
    assert entry == {"name": "grader-7", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                     "scopes": ["grade", "problems"]}
    (tmp_path / "k.json").write_text(json.dumps([entry]))
    client = create_app({"TESTING": True, "API_KEYS_FILE": str(tmp_path / "k.json")}).test_client()
    assert post(client, "problems", {"Authorization": f"Bearer {key}"}).status_code == 200
    assert post(client, "forward", {"Authorization": f"Bearer {key}"}).status_code == 403
    again = run_keys("new", "grader-7", "--scopes", "grade")
    assert key not in again.stdout                     # a fresh key each time
    assert run_keys("digest", stdin=key + "\n").stdout.strip() == entry["sha256"]
    check = run_keys("check", str(tmp_path / "k.json"))
    assert check.returncode == 0 and "grader-7" in check.stdout


def test_keys_new_refuses_unknown_scopes_and_bad_names():
    assert run_keys("new", "x", "--scopes", "admin").returncode == 2
    assert run_keys("new", "bad name", "--scopes", "grade").returncode == 2
    assert run_keys("new", "x").returncode == 2


# --- live, through `make run` -------------------------------------------------------------------------

def test_make_run_with_a_keys_file_refuses_what_it_should(tmp_path, ring):
    port = free_port()
    log = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["RNN_API_KEYS_FILE"] = str(ring.path)
    with open(log, "wb") as out:
        proc = subprocess.Popen(run_command(port), cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, base, log)
        session = requests.Session()

        def call(scope, headers=None):
            return session.post(f"{base}/v1/{scope}", data=body(scope), timeout=30,
                                headers={"Content-Type": "application/json", **(headers or {})})

        r = call("gradients")
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="rnn"'
        assert r.headers["Content-Type"].startswith("application/problem+json")
        r = call("gradients", {"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        r = call("gradients", {"Authorization": "Basic abc"})
        assert r.status_code == 401 and 'error="invalid_request"' in r.headers["WWW-Authenticate"]
        r = call("gradients", ring.auth("student"))
        assert r.status_code == 403 and r.json()["status"] == 403
        assert call("gradcheck", ring.auth("student")).status_code == 200
        for scope in SCOPES:
            assert call(scope, ring.auth("grader")).status_code == 200, scope
        for path in OPEN_PATHS:
            assert session.get(base + path, timeout=10).status_code == 200, path
        grader = Client(base, api_key=ring.keys["grader"])
        problem = grader.problems(seed=3, steps=3)
        assert grader.gradients(problem)["gradients"]
        with pytest.raises(ApiError) as refused:
            Client(base, api_key=ring.keys["student"]).gradients(problem)
        assert refused.value.status == 403
        assert Client(base, api_key=ring.keys["student"]).gradcheck(problem)["passed"]
        metrics = session.get(base + "/metrics", timeout=10).text
    finally:
        stop(proc)
    text = log.read_text()
    access = [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]
    assert {line["key"] for line in access} == {"anonymous", "student", "grader"}
    for secret in (*ring.keys.values(), "Bearer"):
        assert secret not in text and secret not in metrics
    assert 'key="grader"' in metrics and 'key="student",status="403"' in metrics


# --- rate limits in deploy/nginx.conf, through the real nginx ------------------------------------------

NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()
needs_nginx = pytest.mark.skipif(binary("nginx") is None, reason="make system-deps installs nginx")


def rate_limits() -> dict:
    """{zone: (key, rate per second, burst)} from deploy/nginx.conf."""
    zones = {zone: (key, int(rate)) for key, zone, rate in re.findall(
        r"^\s*limit_req_zone\s+(\$\w+)\s+zone=(\w+):\w+\s+rate=(\d+)r/s;", NGINX_CONF, re.M)}
    bursts = dict(re.findall(r"^\s*limit_req\s+zone=(\w+)\s+burst=(\d+)\s+nodelay;", NGINX_CONF, re.M))
    assert zones and set(zones) == set(bursts)
    return {zone: (key, rate, int(bursts[zone])) for zone, (key, rate) in zones.items()}


def test_nginx_limits_per_key_else_per_address_and_answers_429_problem_json():
    limits = rate_limits()
    assert limits["per_key"][0] == "$rate_key" and limits["per_addr"][0] == "$binary_remote_addr"
    mapping = re.search(r"map \$http_authorization \$rate_key \{(.*?)\}", NGINX_CONF, re.S).group(1)
    assert re.search(r"default\s+\$http_authorization;", mapping)
    assert re.search(r'""\s+\$binary_remote_addr;', mapping)
    assert re.search(r"^\s*limit_req_status 429;", NGINX_CONF, re.M)
    assert re.search(r"^\s*error_page 429 @rate_limited;", NGINX_CONF, re.M)
    block = re.search(r"location @rate_limited \{(.*?)\n\s*\}", NGINX_CONF, re.S).group(1)
    assert re.search(r"add_header Retry-After \d+ always;", block)
    assert "default_type application/problem+json;" in block
    problem = json.loads(re.search(r"return 429 '(.*)';", block).group(1))
    assert problem["status"] == 429 and problem["type"] == "/problems/rate-limited"
    rate, burst = limits["per_key"][1:]
    assert f"{rate} requests a second (bursts of {burst})" in problem["detail"]
    assert "$http_authorization" not in NGINX_CONF.split("log_format", 1)[1].split(";", 1)[0]


def test_the_readme_states_the_rate_limits():
    readme = (ROOT / "README.md").read_text()
    for zone, (_, rate, burst) in rate_limits().items():
        assert re.search(rf"{rate} requests a second[^|\n]*burst[^|\n]* {burst}\b", readme), zone


def until_429(url: str, headers_for, limit: int):
    """Sends up to `limit` requests one after the other; the index and response of the first 429."""
    session = requests.Session()
    for i in range(limit):
        r = session.get(url, headers=headers_for(i), timeout=10)
        if r.status_code == 429:
            return i, r
        assert r.status_code == 200, r.text
    return None, None


@needs_nginx
def test_nginx_answers_over_the_limit_with_429_retry_after_and_problem_json(tmp_path):
    """One gunicorn behind deploy/nginx.conf, on loopback. A key gets its burst, then 429; another
    key, and a caller without one, still get through; after Retry-After the first key does too.
    Invented keys from one address hit the per-address limit. At most ~700 small GETs."""
    (_, rate, burst), (_, addr_rate, addr_burst) = rate_limits()["per_key"], rate_limits()["per_addr"]
    with Gunicorn(tmp_path / "g", workers=1) as api, \
            Nginx([f"127.0.0.1:{api.port}"], tmp_path / "n") as nginx:
        url = nginx.url + "/healthz"
        first, r = until_429(url, lambda i: {"Authorization": "Bearer key-a"}, 4 * burst)
        assert first is not None and first >= burst, first
        key_first = first
        assert r.headers["Content-Type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["status"] == 429 and problem["type"] == "/problems/rate-limited"
        wait = int(r.headers["Retry-After"])
        assert 1 <= wait <= 60
        assert requests.get(url, headers={"Authorization": "Bearer key-b"}, timeout=10).status_code == 200
        assert requests.get(url, timeout=10).status_code == 200          # per address, no key
        time.sleep(wait)
        assert requests.get(url, headers={"Authorization": "Bearer key-a"}, timeout=10).status_code == 200
        time.sleep(addr_burst / addr_rate)                                # the address's bucket refills
        first, r = until_429(url, lambda i: {"Authorization": f"Bearer invented-{i}"}, 6 * addr_burst)
        assert first is not None and first >= addr_burst // 2, first
        assert r.headers["Retry-After"] and r.json()["status"] == 429
        report("nginx_rate_limit", per_key_first_429=key_first, per_addr_first_429=first,
               retry_after=wait)
        access = (tmp_path / "n" / "access.log").read_text()
    assert '"status":429' in access and "key-a" not in access and "invented-" not in access


# --- rnnclient: the key, and retries honouring Retry-After ---------------------------------------------

class Scripted:
    """A loopback HTTP server answering POSTs from a script of (status, headers) and then 200,
    recording when each request arrived and its Authorization header."""

    def __init__(self, script):
        self.script, self.arrivals, self.auth = list(script), [], []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.arrivals.append(time.monotonic())
                owner.auth.append(self.headers.get("Authorization"))
                status, headers = owner.script.pop(0) if owner.script else (200, {})
                payload = (json.dumps({"status": status, "title": "x", "detail": "scripted"})
                           if status >= 400 else '{"ok": true}').encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json" if status >= 400
                                 else "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_client_retries_a_429_after_its_retry_after_seconds():
    with Scripted([(429, {"Retry-After": "1"})]) as server:
        started = time.monotonic()
        assert Client(server.url, api_key="k-1", backoff=0.01).post("forward", {}) == {"ok": True}
        elapsed = time.monotonic() - started
    assert len(server.arrivals) == 2 and server.auth == ["Bearer k-1"] * 2
    assert 1.0 <= server.gaps()[0] < 2.0 and elapsed < 3.0, server.gaps()


def test_client_honours_an_http_date_retry_after():
    when = formatdate(time.time() + 2, usegmt=True)          # 1-second resolution: 1 to 2 s away
    with Scripted([(503, {"Retry-After": when})]) as server:
        assert Client(server.url, backoff=0.01).post("grade", {}) == {"ok": True}
    assert 0.9 <= server.gaps()[0] < 3.0, server.gaps()
    assert retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("7") == 7.0


def test_client_backs_off_exponentially_without_retry_after_and_gives_up_after_retries():
    with Scripted([(503, {})] * 3) as server:
        assert Client(server.url, backoff=0.1, max_backoff=1).post("forward", {}) == {"ok": True}
    gaps = server.gaps()
    assert len(gaps) == 3 and 0.05 <= gaps[0] < 0.5 and 0.1 <= gaps[1] and 0.2 <= gaps[2] < 1.5, gaps
    with Scripted([(429, {"Retry-After": "0"})] * 10) as server:
        with pytest.raises(ApiError) as caught:
            Client(server.url, retries=2, backoff=0.01).post("forward", {})
    assert caught.value.status == 429 and len(server.arrivals) == 3


def test_client_does_not_wait_longer_than_max_backoff_or_retry_when_told_not_to():
    for client_args, script in [({"max_backoff": 5}, [(429, {"Retry-After": "120"})]),
                                ({"retries": 0}, [(429, {"Retry-After": "1"})]),
                                ({}, [(422, {})]), ({}, [(500, {})])]:
        with Scripted(script) as server:
            started = time.monotonic()
            with pytest.raises(ApiError):
                Client(server.url, **client_args).post("forward", {})
            assert len(server.arrivals) == 1 and time.monotonic() - started < 1.0, client_args


def test_client_retries_connection_errors():
    class Flaky(requests.Session):
        failures = 2

        def request(self, *args, **kwargs):
            if self.failures:
                self.failures -= 1
                raise requests.ConnectionError("connection refused")
            return super().request(*args, **kwargs)

    with Scripted([]) as server:
        session = Flaky()
        assert Client(server.url, session=session, backoff=0.01).post("forward", {}) == {"ok": True}
        assert session.failures == 0 and len(server.arrivals) == 1
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        Client(f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.01).health()
    assert time.monotonic() - started < 2.0
