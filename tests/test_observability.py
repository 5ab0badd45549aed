"""GET /metrics, the JSON access log, readiness during shutdown, and GET /docs."""
from __future__ import annotations

import json
import logging
import re
import runpy
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service import lifecycle, observability
from service.engine import rnn

from servers import ROOT, Gunicorn


def samples(text: str) -> dict:
    """{(name, sorted label items): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    return samples(r.get_data(as_text=True))


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def access_log():
    handler = Lines()
    observability.log.addHandler(handler)
    yield handler.lines
    observability.log.removeHandler(handler)


def test_metrics_count_requests_latency_and_problem_work(client, small_body):
    before = scrape(client)
    for _ in range(3):
        assert client.post("/v1/gradients", json=small_body).status_code == 200
    assert client.post("/v1/gradients", data="{", content_type="application/json").status_code == 400
    after = scrape(client)
    ok = dict(method="POST", endpoint="/v1/gradients", status="200")
    bad = dict(ok, status="400")
    assert value(after, "rnn_http_requests_total", **ok) - value(before, "rnn_http_requests_total", **ok) == 3
    assert value(after, "rnn_http_requests_total", **bad) - value(before, "rnn_http_requests_total", **bad) == 1
    count = "rnn_http_request_duration_seconds_count"
    assert value(after, count, **ok) - value(before, count, **ok) == 3
    # small_body is T 3, H 2, D 2, N 3: the work histogram grows by 3 × the budget's estimate
    work = rnn.estimate_work(3, 2, 2, 3, dense_inputs=small_body.get("inputs") is not None)
    key = dict(endpoint="/v1/gradients")
    assert value(after, "rnn_problem_work_count", **key) - value(before, "rnn_problem_work_count", **key) == 3
    assert value(after, "rnn_problem_work_sum", **key) - value(before, "rnn_problem_work_sum", **key) \
        == pytest.approx(3 * work)
    compute = dict(endpoint="/v1/gradients", status="200")
    assert value(after, "rnn_compute_seconds_count", **compute) - value(before, "rnn_compute_seconds_count", **compute) == 3
    # a malformed body never reached the engine: no compute time, no sizes
    assert value(after, "rnn_compute_seconds_count", endpoint="/v1/gradients", status="400") == 0


def test_unknown_paths_share_one_label(client):
    client.get("/no/such/path-1234")
    text = client.get("/metrics").get_data(as_text=True)
    assert "path-1234" not in text
    assert 'endpoint="unmatched"' in text


def test_one_json_log_line_per_request_without_the_body(client, small_body, access_log):
    small_body["model"]["weights"]["b_y"] = [0.0, 0.0, 0.123456789]
    r = client.post("/v1/gradients", json=small_body, headers={"X-Request-ID": "grader-7"})
    assert r.status_code == 200
    client.post("/v1/forward", data="x", content_type="text/plain")
    assert len(access_log) == 2
    line, refused = access_log
    assert line["request_id"] == "grader-7" and line["method"] == "POST"
    assert line["endpoint"] == "/v1/gradients" and line["status"] == 200
    assert (line["T"], line["H"], line["D"], line["N"]) == (3, 2, 2, 3)
    assert line["work"] == rnn.estimate_work(3, 2, 2, 3, dense_inputs="inputs" in small_body)
    assert 0 < line["duration_ms"] < 60_000
    assert "0.123456789" not in json.dumps(line) and "weights" not in json.dumps(line)
    assert refused["status"] == 415 and "T" not in refused
    assert re.fullmatch(r"[0-9a-f]{32}", refused["request_id"])       # a new id when none was given


@pytest.fixture
def shutdown_state():
    yield
    lifecycle._stopping.clear()       # the flag is per process: undo it for the other tests


def test_readyz_fails_once_shutdown_began(client, shutdown_state):
    assert client.get("/readyz").status_code == 200
    lifecycle.begin_shutdown()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert client.get("/healthz").status_code == 200          # alive, just not taking new work


def test_sigterm_in_a_worker_marks_shutdown_then_runs_gunicorns_handler(monkeypatch, tmp_path,
                                                                        shutdown_state):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"))
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        conf["post_worker_init"](object())
        handler = signal.getsignal(signal.SIGTERM)
        assert not lifecycle.shutting_down()
        handler(signal.SIGTERM, None)
        assert lifecycle.shutting_down() and calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_metrics_under_gunicorn_add_up_every_workers_requests(tmp_path, small_body):
    with Gunicorn(tmp_path, workers=2) as server:
        sent, pids = 0, set()
        # concurrent clients, in rounds, until both workers have answered some (bounded)
        with ThreadPoolExecutor(4) as pool:
            while len(pids) < 2 and sent < 400:
                answers = list(pool.map(lambda _: requests.post(
                    server.url + "/v1/forward", json=small_body, timeout=10), range(20)))
                assert all(a.ok for a in answers)
                sent += len(answers)
                pids = set(re.findall(r'"endpoint":"/v1/forward".*?"pid":(\d+)', server.log()))
        assert len(pids) == 2, "the requests were spread over both workers"
        # each scrape may land on either worker; every one reports the total of both
        for _ in range(4):
            text = requests.get(server.url + "/metrics", timeout=10).text
            total = value(samples(text), "rnn_http_requests_total",
                          method="POST", endpoint="/v1/forward", status="200")
            assert total == sent


# --- /docs ----------------------------------------------------------------------------------------

class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_docs_page_uses_only_local_assets_and_they_are_served(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    parser = Links()
    parser.feed(r.get_data(as_text=True))
    assert len(parser.urls) >= 5
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.data) > 0, url
    scripts = [u for u in parser.urls if u.endswith(".js")]
    assert "/docs/init.js" in scripts and any("swagger-ui-bundle" in u for u in scripts)
    init = client.get("/docs/init.js").get_data(as_text=True)
    assert 'url: "/openapi.yaml"' in init and "/docs/examples" in init
    assert "http://" not in init and "https://" not in init
    assert client.get("/openapi.yaml").status_code == 200


def test_docs_offers_every_example_body_for_its_endpoint(client):
    index = client.get("/docs/examples").get_json()
    files = {f.name: f for f in (ROOT / "examples").glob("*.json")}
    offered = {name: (path, body) for path, bodies in index.items() for name, body in bodies.items()}
    for name, (path, body) in offered.items():
        assert path.startswith("/v1/") and name.startswith(path.rsplit("/", 1)[1])
        assert body == json.loads(files[name].read_text())
        assert client.get(f"/docs/examples/{name}").get_json() == body
    for name in files:
        if any(name.startswith(e) for e in ("forward", "gradients", "gradcheck", "grade", "problems")):
            assert name in offered
    assert client.get("/docs/examples/..%2Fopenapi.yaml").status_code == 404


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_docs_page_renders_in_a_browser_with_the_example_bodies(tmp_path):
    """Headless Chromium runs the page's scripts: the gradients operation lists the files of
    examples/ among its request examples, and "Try it out" targets the serving host."""
    with Gunicorn(tmp_path, workers=1) as server:
        run = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000",
             "--dump-dom", server.url + "/docs#/compute/gradients"],
            capture_output=True, text=True, timeout=90)
    options = re.findall(r'<option value="([^"]*)"', run.stdout)
    gradients_examples = sorted(f.name for f in (ROOT / "examples").glob("gradients*.json"))
    assert gradients_examples and set(gradients_examples) <= set(options), options
    assert options[0] == server.url


def test_access_line_written_directly_is_the_line_logging_would_write(client, small_body, capsys):
    """With only its own stderr handler the access log skips building a LogRecord: the
    line on stderr must be the same JSON, and a filter on the logger must still apply."""
    capsys.readouterr()
    assert client.post("/v1/gradients", json=small_body, headers={"X-Request-ID": "direct-1"}).status_code == 200
    lines = [json.loads(s) for s in capsys.readouterr().err.splitlines() if s.startswith("{")]
    assert [(x["request_id"], x["status"], x["T"]) for x in lines] == [("direct-1", 200, 3)]

    class DropAll(logging.Filter):
        def filter(self, record):
            return False
    drop = DropAll()
    observability.log.addFilter(drop)
    try:
        assert client.get("/healthz").status_code == 200
        assert '"endpoint":"/healthz"' not in capsys.readouterr().err
    finally:
        observability.log.removeFilter(drop)
    client.get("/healthz")
    assert '"endpoint":"/healthz"' in capsys.readouterr().err


def test_gradcheck_records_its_estimated_work(client, small_body, access_log):
    small_body["check"] = {"mode": "sample", "samples": 2, "parameters": ["W"]}
    r = client.post("/v1/gradcheck", json=small_body)
    assert r.status_code == 200, r.get_json()
    (line,) = access_log
    assert line["endpoint"] == "/v1/gradcheck" and line["work"] > 0
    text = scrape(client)
    assert value(text, "rnn_problem_work_count", endpoint="/v1/gradcheck") >= 1
