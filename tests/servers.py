"""Real processes for deployment tests: gunicorn started with the Dockerfile's own CMD, nginx in
front of it, and /proc readings (worker pids, RSS). Loopback only; every wait is bounded."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dockerfile_cmd() -> list[str]:
    """The exec-form CMD of the Dockerfile: what the container runs."""
    lines = re.findall(r"^CMD\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    return json.loads(lines[-1])


def wait_until(check, timeout: float, interval: float = 0.05):
    """Polls check() until it returns a truthy value; returns it, or None after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (requests.RequestException, OSError):
            pass
        time.sleep(interval)
    return None


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


class Gunicorn:
    """`gunicorn -c service/gunicorn.conf.py` (the image's CMD) on a loopback port."""

    def __init__(self, tmp: Path, workers: int = 2, port: int | None = None,
                 start_new_session: bool = False, **env):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        cmd = dockerfile_cmd()
        cmd[0] = str(Path(sys.executable).parent / cmd[0])      # the venv's gunicorn
        environ = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
                   "WEB_CONCURRENCY": str(workers),
                   "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"metrics-{self.port}"), **env}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=start_new_session)
        self.workers = workers

    def wait_ready(self, timeout: float = 20.0) -> "Gunicorn":
        ok = wait_until(lambda: len(self.worker_pids()) == self.workers
                        and requests.get(self.url + "/readyz", timeout=1).ok, timeout)
        if not ok:
            self.stop()
            raise RuntimeError(f"gunicorn did not become ready:\n{self.log()[-3000:]}")
        return self

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self.wait_ready()

    def __exit__(self, *exc):
        self.stop()
