"""python -m rnnclient grade-batch: a folder of submissions against a live gunicorn (the image's
CMD), a scripted server that answers 503 twice before 200, and an unreachable URL.

The submissions are the independent student's (tests/student_cells.py): correct ones and
mistaken ones whose diagnosis the summary CSV must name."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests

from rnnclient.__main__ import main as cli
from tests.servers import ROOT, Gunicorn, free_port
from tests.student_cells import StudentCell, reorder

PROBLEM = {"seed": 31, "cell": "lstm", "batch_size": 2, "input_size": 2, "hidden_size": 3,
           "output_size": 3, "steps": 5, "weight_scale": 1.0}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with Gunicorn(tmp_path_factory.mktemp("grade-batch"), workers=2) as server:
        yield server.url


def lists(d: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in d.items()}


def write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def make_folder(tmp: Path, problem: dict) -> tuple[Path, Path]:
    s = StudentCell(problem)
    g = s.gradients()
    a = s.answers()
    (tmp / "subs").mkdir()
    write(tmp / "problem.json", problem)
    write(tmp / "subs" / "alice.json", {"loss": a["loss"], "cell": a["cell"].tolist(), "gradients": lists(g)})
    nb = s.gradients(window=1)
    write(tmp / "subs" / "bob.json", {"loss": a["loss"] * 2, "gradients": lists({k: nb[k] for k in ("V", "W", "b_h")})})
    write(tmp / "subs" / "carol.json", {"submission": {"gradients": lists({
        "V": reorder(g["V"], "lstm", "i, f, o, g"), "W": s.gradients(path="no_cell")["W"], "b_h": g["b_h"]})},
        "tolerance": {"rtol": 1e-4}})
    write(tmp / "subs" / "dave.json", "{not json")
    write(tmp / "subs" / "notes.txt", "ignored: not a .json file")
    return tmp / "problem.json", tmp / "subs"


def run_cli(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnclient", "grade-batch", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("fmt", ["gradescope", "prairielearn"])
def test_a_folder_gives_the_expected_csv_and_results(live, tmp_path, fmt):
    problem = requests.post(live + "/v1/problems", json=PROBLEM, timeout=30).json()
    problem_file, folder = make_folder(tmp_path, problem)
    out = tmp_path / "out"
    r = run_cli(problem_file, folder, "--out", out, "--url", live, "--format", fmt, "--concurrency", 3)
    assert r.returncode == 0, r.stderr
    assert "3 of 4 submissions graded" in r.stderr
    rows = {row["submission"]: row for row in read_csv(out / "summary.csv")}
    assert list(rows) == ["alice", "bob", "carol", "dave"]
    alice, bob, carol, dave = rows["alice"], rows["bob"], rows["carol"], rows["dave"]
    assert alice["score"] == "1" and alice["error"] == ""
    for name in ("loss", "cell", "gradients.V", "gradients.W", "gradients.U", "gradients.b_h",
                 "gradients.b_y", "gradients.h_init", "gradients.c_init", "gradients.inputs"):
        assert alice[f"{name} passed"] == "true" and alice[f"{name} diagnosis"] == "", name
    assert bob["score"] == "0" and bob["loss passed"] == "false" and bob["loss diagnosis"] == ""
    assert [bob[f"gradients.{n} diagnosis"] for n in ("V", "W", "b_h")] == ["no_bptt"] * 3
    assert bob["cell passed"] == "" and bob["gradients.U passed"] == ""        # not submitted
    assert carol["score"] == "0.333333"
    assert (carol["gradients.V diagnosis"], carol["gradients.W diagnosis"], carol["gradients.b_h passed"]) == \
        ("gate_order", "no_cell_path", "true")
    assert dave["score"] == "" and dave["error"].startswith("cannot read the submission")
    assert sorted(p.name for p in out.iterdir()) == ["alice.json", "bob.json", "carol.json", "summary.csv"]
    alice_result = json.loads((out / "alice.json").read_text())
    carol_result = json.loads((out / "carol.json").read_text())
    if fmt == "gradescope":
        assert alice_result["score"] == alice_result["max_score"] == 10.0
        assert carol_result["score"] == 1.0 and carol_result["max_score"] == 3.0
    else:
        assert alice_result["gradable"] is True and alice_result["score"] == 1.0
        assert carol_result["score"] == pytest.approx(1 / 3)
        assert "reorder" in {t["name"]: t for t in carol_result["tests"]}["gradients.V"]["message"]


def test_a_problem_the_service_cannot_grade_exits_1(live, tmp_path):
    problem = requests.post(live + "/v1/problems", json=PROBLEM, timeout=30).json()
    problem_file, folder = make_folder(tmp_path, problem)
    write(folder / "eve.json", {"gradients": {"V": "not numbers"}})          # a 422
    out = tmp_path / "out"
    r = run_cli(problem_file, folder, "--out", out, "--url", live, "--quiet")
    assert r.returncode == 1, r.stderr
    rows = {row["submission"]: row for row in read_csv(out / "summary.csv")}
    assert rows["eve"]["error"].startswith("422") and rows["alice"]["score"] == "1"
    assert json.loads((out / "eve.json").read_text())["status"] == 422      # the problem+json kept


class Scripted(BaseHTTPRequestHandler):
    """503 (Retry-After: 0) for the first two POSTs, then a grade answer."""
    count = 0
    lock = threading.Lock()
    ANSWER = {"passed": True, "score": 1.0, "checks": [
        {"name": "loss", "passed": True, "max_abs_error": 0.0, "max_rel_error": 0.0, "worst_index": [],
         "expected_at_worst": 1.0, "got_at_worst": 1.0, "error": None, "diagnosis": None}]}

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with Scripted.lock:
            Scripted.count += 1
            n = Scripted.count
        if n <= 2:
            body, status = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                                       "detail": "scripted"}).encode(), 503
        else:
            body, status = json.dumps(self.ANSWER).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json" if status != 200 else "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_503_twice_then_200_is_retried_to_success(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "subs").mkdir()
        write(tmp_path / "problem.json", {"model": {}})
        write(tmp_path / "subs" / "only.json", {"loss": 1.0})
        code = cli(["grade-batch", str(tmp_path / "problem.json"), str(tmp_path / "subs"), "--out",
                    str(tmp_path / "out"), "--url", f"http://127.0.0.1:{server.server_port}", "--format",
                    "default", "--retries", "3", "--backoff", "0.01", "--quiet"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0 and Scripted.count == 3
    assert read_csv(tmp_path / "out" / "summary.csv") == [
        {"submission": "only", "score": "1", "loss passed": "true", "loss diagnosis": "", "error": ""}]
    assert json.loads((tmp_path / "out" / "only.json").read_text()) == Scripted.ANSWER


def test_an_unreachable_url_exits_3_quickly(tmp_path):
    (tmp_path / "subs").mkdir()
    write(tmp_path / "problem.json", {"model": {}})
    for name in ("a", "b", "c"):
        write(tmp_path / "subs" / f"{name}.json", {"loss": 1.0})
    start = time.monotonic()
    r = run_cli(tmp_path / "problem.json", tmp_path / "subs", "--out", tmp_path / "out",
                "--url", f"http://127.0.0.1:{free_port()}", "--retries", "0", "--quiet", timeout=60)
    assert r.returncode == 3, r.stderr
    assert time.monotonic() - start < 20
    rows = read_csv(tmp_path / "out" / "summary.csv")
    assert {row["submission"] for row in rows} == {"a", "b", "c"}
    assert all(row["error"].startswith(("cannot reach", "not sent")) for row in rows)


@pytest.mark.parametrize("args", [["missing.json", "."], ["problem.json", "missing-dir"]])
def test_bad_usage_exits_2(tmp_path, args):
    write(tmp_path / "problem.json", {"model": {}})
    r = subprocess.run([sys.executable, "-m", "rnnclient", "grade-batch", *args, "--out", "out"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr
