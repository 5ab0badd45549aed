"""Real processes for deployment tests: gunicorn started with the Dockerfile's own CMD, nginx in
front of it, and /proc readings (worker pids, RSS). Loopback only; every wait is bounded."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def report(name: str, **figures) -> None:
    """Prints a test's figures; appends them as a JSON line to $RELIABILITY_OUT when set."""
    line = json.dumps({"test": name, **figures})
    print(line)
    if os.environ.get("RELIABILITY_OUT"):
        with open(os.environ["RELIABILITY_OUT"], "a") as out:
            out.write(line + "\n")


def binary(name: str) -> str | None:
    """A Debian tool's path; nginx lives in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


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
    """`gunicorn -c service/gunicorn.conf.py` (the image's CMD) on a loopback port; `app` (a
    module:callable) in place of the service, under the same settings."""

    def __init__(self, tmp: Path, workers: int = 2, port: int | None = None,
                 start_new_session: bool = False, app: str | None = None, **env):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / f"gunicorn-{self.port}.log"
        cmd = dockerfile_cmd()
        cmd[0] = str(Path(sys.executable).parent / cmd[0])      # the venv's gunicorn
        if app:
            cmd.append(app)
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


def local_nginx_conf(upstreams: list[str], port: int, tmp: Path, rate_limits: bool = True,
                     **overrides) -> str:
    """deploy/nginx.conf with loopback upstreams and a loopback port; state and logs under tmp.
    rate_limits=False drops the `limit_req` lines (the zones stay defined), for a test that
    sends a load from one address on purpose and is not about the limits."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    if not rate_limits:
        conf, n = re.subn(r"^\s*limit_req\s+zone=[^;]+;\n", "", conf, flags=re.M)
        assert n >= 1
    servers = "".join(f"server {u} max_fails=1 fail_timeout=5s;\n        " for u in upstreams)
    conf, n = re.subn(r"server\s+api:8000[^;]*;\s*", servers, conf)
    assert n == 1
    conf, n = re.subn(r"listen\s+8080;", f"listen 127.0.0.1:{port};", conf)
    assert n == 1
    conf = re.sub(r"^pid\s+[^;]+;", f"pid {tmp}/nginx.pid;", conf, flags=re.M)
    conf = re.sub(r"^error_log\s+[^;]+;", f"error_log {tmp}/error.log warn;", conf, flags=re.M)
    conf = conf.replace("access_log /dev/stdout json;", f"access_log {tmp}/access.log json;")
    temp_paths = "".join(f"    {kind}_temp_path {tmp}/{kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = conf.replace("http {\n", "http {\n" + temp_paths, 1)
    for name, value in overrides.items():          # e.g. client_body_timeout="2s" for a short test
        conf, n = re.subn(rf"^(\s*){name}\s+[^;]+;", rf"\g<1>{name} {value};", conf, flags=re.M)
        assert n == 1, name
    return conf.replace("worker_processes auto;", "worker_processes 1;")


class Nginx:
    """Debian's nginx with deploy/nginx.conf, upstreams and port substituted (no root ports)."""

    def __init__(self, upstreams: list[str], tmp: Path, rate_limits: bool = True, **overrides):
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        conf = tmp / "nginx.conf"
        conf.write_text(local_nginx_conf(upstreams, self.port, tmp, rate_limits, **overrides))
        check = subprocess.run([binary("nginx"), "-t", "-p", str(tmp), "-e", str(tmp / "error.log"),
                                "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([binary("nginx"), "-p", str(tmp), "-e", str(tmp / "error.log"),
                                      "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        if not wait_until(lambda: requests.get(self.url + "/nginx-health", timeout=1).ok, 10):
            self.__exit__()
            raise RuntimeError((self.tmp / "error.log").read_text())
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGQUIT)           # graceful stop
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
