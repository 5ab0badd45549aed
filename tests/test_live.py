"""The service as `make run` starts it (gunicorn, two workers, loopback, a free port),
called over real HTTP with requests. Bounded: up within 20 s or the test fails, and the whole
process group is terminated afterwards."""
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

import reference as ref

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 20
BODY_LIMIT = 20_000


class Live(str):
    """The base URL, carrying the process group id of `make run`."""
    pgid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(port: int) -> list[str]:
    """`make run` itself; -o keeps make from reinstalling into .venv (already there, since these
    tests run from it), and the outer make's flags are not passed down."""
    return ["make", "--no-print-directory", "-o", ".venv/.runtime", "run",
            "HOST=127.0.0.1", f"PORT={port}", "WEB_CONCURRENCY=2"]


def wait_until_up(proc, base: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`make run` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:        # not listening yet, or workers still booting
            pass
        time.sleep(0.1)
    pytest.fail(f"not up within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop(proc) -> None:
    """SIGTERM to the whole group (make, the gunicorn master, its workers); SIGKILL if it lingers."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if not group_alive(proc.pid):
            break
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.1)
    proc.wait(timeout=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("live") / "make-run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["RNN_MAX_BODY_BYTES"] = str(BODY_LIMIT)     # configuration reaches the workers
    with open(log, "wb") as out:
        proc = subprocess.Popen(run_command(port), cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = Live(f"http://127.0.0.1:{port}")
    base.pgid = proc.pid
    try:
        wait_until_up(proc, base, log)
        yield base
    finally:
        stop(proc)
        assert not group_alive(proc.pid), "a process of `make run` outlived SIGTERM and SIGKILL"


def test_health_answers_with_a_request_id(live):
    r = requests.get(live + "/healthz", timeout=5)
    assert r.status_code == 200 and r.headers["X-Request-ID"]


def test_forward_over_http(live):
    spec, p = ref.random_problem(21, tokens=False)
    r = requests.post(live + "/v1/forward", json=ref.body(spec, p), timeout=10,
                      headers={"X-Request-ID": "live-forward-1"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Request-ID"] == "live-forward-1"
    out = r.json()
    assert ref.scaled_error(out["outputs"], ref.run(spec, p)["yhat"]) < 1e-14
    assert np.allclose(np.sum(out["outputs"], axis=1), 1.0)


def test_gradients_over_http(live):
    spec, p = ref.random_problem(22, hidden="sigmoid", null_targets=True)
    r = requests.post(live + "/v1/gradients", json=ref.body(spec, p), timeout=10)
    assert r.status_code == 200 and r.headers["X-Request-ID"]
    got = r.json()["gradients"]
    for name, expected in ref.all_grads(spec, p).items():
        assert ref.scaled_error(got[name], expected) < 1e-12, name


def test_invalid_request_over_http_is_problem_json(live):
    spec, p = ref.random_problem(23)
    body = ref.body(spec, p)
    body["tokens"][1] = spec.D                   # one past the last column of V
    r = requests.post(live + "/v1/gradients", json=body, timeout=10,
                      headers={"X-Request-ID": "live-bad-1"})
    assert r.status_code == 422
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.headers["X-Request-ID"] == "live-bad-1"
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem) and problem["status"] == 422
    assert [e["pointer"] for e in problem["errors"]] == ["/tokens/1"]


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_configured_limit_is_413(live, chunked):
    """RNN_MAX_BODY_BYTES from the environment, with and without a Content-Length."""
    spec, p = ref.random_problem(24)
    body = json.dumps({**ref.body(spec, p), "tokens": spec.tokens * 2000,
                       "targets": spec.targets * 2000}).encode()
    assert len(body) > BODY_LIMIT
    data = iter([body[i:i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
    r = requests.post(live + "/v1/forward", data=data, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    assert f"{BODY_LIMIT:,}" in r.json()["detail"]


def test_deep_nesting_does_not_hurt_a_worker(live):
    """Nested arrays far past any recursion limit (inside BODY_LIMIT): 400, and the workers
    still answer after."""
    for _ in range(4):
        r = requests.post(live + "/v1/gradients", data="[" * (BODY_LIMIT - 1), timeout=10,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    assert all(requests.get(live + "/healthz", timeout=5).status_code == 200 for _ in range(4))


def group_commands(pgid: int) -> list[str]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:            # field 5 of stat: the process group
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_gunicorn_runs_a_master_and_two_workers(live):
    """WEB_CONCURRENCY=2 reaches gunicorn: one master and two workers in make's process group."""
    gunicorns = [c for c in group_commands(live.pgid)          # python processes, not make's sh
                 if "python" in c.split()[0] and "gunicorn -c service/gunicorn.conf.py" in c]
    assert len(gunicorns) == 3, group_commands(live.pgid)


def test_lstm_mini_batch_gradients_over_http(live):
    """v1.1 through gunicorn: an LSTM mini-batch (B 3, dense inputs, B×H initial states,
    batch_mean) answers with the B×T×H shapes and the in-process answer's numbers (1e-9),
    which are the reference's."""
    from service import create_app
    from test_api_cells import case_body

    case, p = ref.random_case(25, cell="lstm", B=3, T=5, H=4, D=3, N=3, reduction="batch_mean",
                              per_sequence_init=True, null_targets=True)
    body = {**case_body(case, p), "include": ["jacobian_norms"]}
    r = requests.post(live + "/v1/gradients", json=body, timeout=10)
    assert r.status_code == 200, r.text
    got = r.json()
    assert np.shape(got["hidden"]) == np.shape(got["cell"]) == (3, 5, 4)
    assert np.shape(got["outputs"]) == (3, 5, 3)
    assert np.shape(got["step_losses"]) == np.shape(got["bptt"]["hidden_grad_norms"]) == (3, 5)
    assert np.shape(got["bptt"]["jacobian_norms"]) == (3, 5, 5)
    assert {k: np.shape(v) for k, v in got["gradients"].items()} == {
        "V": (16, 3), "W": (16, 4), "U": (3, 4), "b_h": (16,), "b_y": (3,), "h_init": (3, 4),
        "c_init": (3, 4), "inputs": (3, 5, 3)}
    local = create_app({"TESTING": True}).test_client().post("/v1/gradients", json=body).get_json()
    assert got["loss"] == pytest.approx(local["loss"], rel=1e-9)
    for name, value in local["gradients"].items():
        assert ref.scaled_error(got["gradients"][name], value) <= 1e-9, name
    for name in ("hidden", "cell", "outputs", "b_h_by_step"):
        where = got if name in got else got["bptt"]
        assert ref.scaled_error(where[name], (local if name in local else local["bptt"])[name]) <= 1e-9, name
    for name, expected in ref.cell_grads(case, p).items():      # and both are right
        assert ref.scaled_error(got["gradients"][name], expected) <= 1e-9, name
