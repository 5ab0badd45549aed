"""service/worker.py under the project's gunicorn settings (one worker): connections kept alive,
pipelined requests, idle connections closed, the sync worker's timeout kept, and a stopping
worker answering a request already sent on a kept-alive connection. Loopback, bounded."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import time

import numpy as np
import pytest

from servers import Gunicorn, wait_until

SLOW_APP = "tests.slow_app:app"


def get(conn: http.client.HTTPConnection, path: str = "/") -> http.client.HTTPResponse:
    conn.request("GET", path)
    answer = conn.getresponse()
    answer.read()
    return answer


def read_answers(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """`count` HTTP answers read from a raw socket (each with a Content-Length), their bodies."""
    sock.settimeout(timeout)
    data, bodies = b"", []
    while len(bodies) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            length = int(head.split("content-length:")[1].split("\r\n")[0])
            end = head_end + 4 + length
            if len(data) >= end:
                assert head.startswith("http/1.1 200"), head
                bodies.append(data[head_end + 4:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(bodies)} answers"
        data += chunk
    return bodies


def test_one_connection_serves_many_requests_of_the_service(tmp_path):
    body = {"model": {"weights": {"V": np.eye(3).tolist(), "W": (0.5 * np.eye(3)).tolist(),
                                  "U": np.eye(3).tolist(), "b_h": [0.0] * 3, "b_y": [0.0] * 3}},
            "inputs": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "targets": [0, 1]}
    with Gunicorn(tmp_path, workers=1) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.connect()
        local = conn.sock.getsockname()
        for _ in range(3):
            conn.request("POST", "/v1/gradients", json.dumps(body), {"Content-Type": "application/json"})
            answer = conn.getresponse()
            assert answer.status == 200 and "gradients" in json.loads(answer.read())
            assert not answer.will_close
            assert get(conn, "/healthz").status == 200
        assert conn.sock.getsockname() == local        # no reconnect happened
        conn.close()


def test_a_body_left_unread_is_drained_and_the_connection_serves_on(tmp_path):
    with Gunicorn(tmp_path, workers=1, RNN_MAX_BODY_BYTES="20000") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/v1/gradients", b"[" + b"0," * 15_000 + b"0]", {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["status"] == 413
        local = conn.sock.getsockname()
        assert get(conn, "/healthz").status == 200
        assert conn.sock.getsockname() == local


def test_pipelined_requests_are_answered_in_order(tmp_path):
    with Gunicorn(tmp_path, workers=1, app=SLOW_APP) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        request = b"GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request % 1 + request % 2 + request % 3)
        pids = read_answers(sock, 3)
        assert len(set(pids)) == 1 and pids[0].isdigit()


def test_a_silent_connection_does_not_hold_the_worker(tmp_path):
    """A client that connects and sends nothing waits in the poll (after FIRST_REQUEST_WAIT), not
    in the worker."""
    with Gunicorn(tmp_path, workers=1, app=SLOW_APP) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10):
        time.sleep(0.3)                                # accepted by the one worker
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3)
        started = time.monotonic()
        assert get(conn, "/").status == 200
        assert time.monotonic() - started < 2


def test_an_idle_connection_is_closed_after_the_keepalive(tmp_path):
    with Gunicorn(tmp_path, workers=1, app=SLOW_APP, GUNICORN_CMD_ARGS="--keep-alive 1") as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_answers(sock, 1)
        started = time.monotonic()
        assert sock.recv(1) == b""                     # the server closed it
        assert 0.5 < time.monotonic() - started < 4


def test_a_request_past_the_timeout_gets_its_worker_replaced(tmp_path):
    """As with gunicorn's sync workers: no heartbeat while a request runs, so the master aborts
    the worker `timeout` seconds in; the request gets a problem+json 503."""
    with Gunicorn(tmp_path, workers=1, app=SLOW_APP, GUNICORN_TIMEOUT="2") as server:
        first = server.worker_pids()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        started = time.monotonic()
        conn.request("GET", "/?seconds=20")
        answer = conn.getresponse()
        problem = json.loads(answer.read())
        assert time.monotonic() - started < 10
        assert answer.status == 503 and answer.getheader("Content-Type") == "application/problem+json"
        assert problem["status"] == 503 and "GUNICORN_TIMEOUT" in problem["detail"]
        assert problem["instance"] == "/"
        replaced = wait_until(lambda: (p := server.worker_pids()) and p != first and p, 15)
        assert replaced, "no new worker"
        fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert wait_until(lambda: get(fresh, "/").status == 200, 15)
        assert "WORKER TIMEOUT" in server.log()


def test_a_stopping_worker_answers_a_request_sent_on_a_kept_alive_connection(tmp_path):
    server = Gunicorn(tmp_path, workers=1, app=SLOW_APP).wait_ready()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        assert get(conn, "/").status == 200            # the connection is now idle, kept alive
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)                                # the worker has begun to stop
        answer = get(conn, "/")
        assert answer.status == 200 and answer.will_close
        server.proc.wait(10)
        assert server.proc.returncode == 0
    finally:
        server.stop()


def test_a_malformed_request_gets_400_and_the_connection_closes(tmp_path):
    with Gunicorn(tmp_path, workers=1, app=SLOW_APP) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 400")
