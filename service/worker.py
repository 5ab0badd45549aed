"""The gunicorn worker: the sync worker's model (one thread, one request at a time, a heartbeat
only between requests, so a request running past `timeout` gets the worker replaced) with
connections kept alive. gunicorn's sync worker closes every connection, so each request paid a
TCP connect and a graceful close; its threaded worker keeps them, but hands every request from
its event loop to a thread and back (0.1–0.4 ms a request on loopback in A/B runs). Here idle
connections, new ones included, wait in the same poll as the listening sockets, and a readable
one is served at once on the one thread."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import select
import selectors
import time
from datetime import datetime

from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.workers.sync import SyncWorker

# glibc's malloc gives memory back to the kernel eagerly: a free block of a few hundred KiB is
# its own mmap (unmapped when freed), and the top of the heap is trimmed whenever 128 KiB of it
# is free. So every request of a char-rnn's size mapped, faulted in and unmapped its body and
# its answer again (strace: 3 mmap/munmap or ~4 brk calls per request, a third of the
# transport's time). Blocks below MMAP_THRESHOLD come from the heap, which keeps up to
# TRIM_THRESHOLD free at its top. (gunicorn's threaded worker escapes this by allocating in a
# thread's arena.) Larger blocks (the arrays of requests near the size limits) are still
# their own mappings, returned when freed. Measured (bench/run.py --only memory floor): with
# 32/64 MiB the largest requests' peak RSS rose by up to a fifth; with 4/16 MiB a char-rnn
# JSON body's parse took 1.5× as long; 8/32 MiB keeps both (peaks within 10% of the
# sync worker's).
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

# a stopping worker still answers (with Connection: close) a request that was already on its
# way on a kept-alive connection, for this long at most
STOP_LINGER = 1.0
DRAIN_SECONDS = 2.0
FIRST_REQUEST_WAIT = 0.05


class _Connection:
    __slots__ = ("sock", "addr", "listener", "parser", "deadline")

    def __init__(self, sock, addr, listener, parser):
        self.sock, self.addr, self.listener, self.parser = sock, addr, listener, parser
        self.deadline = 0.0              # when it is closed if no request comes


class _HeadWithBody:
    """A response's socket that holds the header block back and sends it with the first piece
    of the body: one segment, one wake-up of the client instead of two."""
    __slots__ = ("sock", "head")

    def __init__(self, sock):
        self.sock, self.head = sock, None

    def sendall(self, data) -> None:
        if self.head is None:
            self.head = bytes(data)            # gunicorn writes the headers first
            return
        head, self.head = self.head, b""
        if not head:
            self.sock.sendall(data)
            return
        view = memoryview(data).cast("B")
        sent = self.sock.sendmsg([head, view])
        if sent < len(head):
            self.sock.sendall(head[sent:])
            sent = len(head)
        self.sock.sendall(view[sent - len(head):])

    def sendfile(self, *args, **kwargs):
        self.flush()
        return self.sock.sendfile(*args, **kwargs)

    def flush(self) -> None:
        if self.head:
            self.sock.sendall(self.head)
        self.head = b""


class KeepAliveWorker(SyncWorker):
    _aborted = False

    def handle_abort(self, sig, frame):
        self._aborted = True
        super().handle_abort(sig, frame)

    def run(self):
        _keep_heap_top()
        for s in self.sockets:
            s.setblocking(False)
        self.poller = selectors.DefaultSelector()
        for s in self.sockets:
            self.poller.register(s, selectors.EVENT_READ, None)
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, False)
        self.idle: dict = {}               # socket -> connection, oldest first
        try:
            while self.alive and self.is_parent_alive():
                self._turn()
            self._linger()
        finally:
            for conn in self.idle.values():
                util.close(conn.sock)
            self.poller.close()

    def _turn(self) -> None:
        """One round of the loop: beat, serve what is readable, close what has expired."""
        self.notify()
        self._dispatch(self._wait())
        self._expire(time.monotonic())

    def _wait(self) -> list:
        timeout = 1.0
        if self.idle:
            timeout = min(timeout, max(0.0, next(iter(self.idle.values())).deadline - time.monotonic()))
        try:
            return self.poller.select(timeout)
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
            return []

    def _dispatch(self, events: list) -> None:
        for key, _ in events:
            if key.data is False:                       # the arbiter's wake-up pipe
                try:
                    os.read(self.PIPE[0], 1)
                except OSError:
                    pass
            elif key.data is None:                      # a listening socket
                if self.alive:
                    self._accept(key.fileobj)
            else:                                       # a kept-alive connection with a request
                self._release(key.data)
                self._serve(key.data)

    def _accept(self, listener) -> None:
        try:
            sock, addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return                                  # another worker took it
            raise
        util.close_on_exec(sock)
        conn = _Connection(sock, addr, listener.getsockname(), http.get_parser(self.cfg, sock, addr))
        # A request normally follows its connect at once: served now, so a worker holds one
        # accepted connection it has not answered at most (the others stay in the listen queue
        # for any worker; a worker that dies loses only that one). A client that sends nothing
        # within FIRST_REQUEST_WAIT waits in the poll as a kept-alive connection does, instead
        # of holding the worker (the sync worker waited on it).
        if select.select([sock], [], [], FIRST_REQUEST_WAIT)[0]:
            self._serve(conn)
        else:
            self._keep(conn)

    def _serve(self, conn) -> None:
        """Answer requests on the connection while it has them; then keep it or close it."""
        while True:
            conn.sock.setblocking(True)
            if not self._one(conn):
                util.close_graceful(conn.sock)      # FIN, then drain what the client still sends
                return
            if not conn.parser.unreader.buf.getvalue():   # no pipelined request already read
                break
        self._keep(conn)

    def _keep(self, conn) -> None:
        """Wait in the poll for the connection's next request, up to the keepalive."""
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + (self.cfg.keepalive if self.alive else STOP_LINGER)
        self.idle[conn.sock] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, conn)

    def _release(self, conn) -> None:
        """Out of the poll: to be served, or closed."""
        self.poller.unregister(conn.sock)
        del self.idle[conn.sock]

    def _one(self, conn) -> bool:
        """One request: whether the connection stays open after it."""
        req = None
        try:
            req = next(conn.parser)
            return self._respond(conn, req)
        except (StopIteration, http.errors.NoMoreData):
            return False
        except SystemExit:
            # the master's abort: this request ran past the timeout; it gets a problem+json
            # answer before the worker exits, not gunicorn's HTML 500
            if req is not None and self._aborted:
                self._answer_timeout(conn.sock, req.path)
            return False
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            return False
        except BaseException as e:                       # a malformed request: gunicorn's 400
            self.handle_error(req, conn.sock, conn.addr, e)
            return False

    def _respond(self, conn, req) -> bool:
        environ, resp = {}, None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.addr, conn.listener, self.cfg)
            resp.sock = out = _HeadWithBody(conn.sock)
            self.nr += 1
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive:
                resp.force_close()                     # Connection: close on the way out
            body = self.wsgi(environ, resp.start_response)
            try:
                for chunk in body:
                    resp.write(chunk)
                resp.close()
                out.flush()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
            # a body the app left unread (a 413, a 415) is drained before the next request, within
            # bounds (gunicorn's byte cap, DRAIN_SECONDS); past them the connection closes
            return not resp.should_close() and \
                conn.parser.finish_body(deadline=time.monotonic() + DRAIN_SECONDS)
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # the answer has started: a 500 now would corrupt it
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    def _answer_timeout(self, sock, path: str) -> None:
        body = json.dumps({
            "type": "about:blank", "title": "Service Unavailable", "status": 503,
            "detail": f"the request ran past the worker timeout ({self.cfg.timeout} s, GUNICORN_TIMEOUT) and "
                      "its worker was replaced; a smaller problem (or truncate) answers sooner",
            "instance": path}).encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            sock.sendall(head + body)
        except OSError:
            pass

    def _expire(self, now: float) -> None:
        while self.idle:
            conn = next(iter(self.idle.values()))
            if conn.deadline > now:
                return
            self._release(conn)
            util.close(conn.sock)               # idle: nothing in flight to drain

    def _linger(self) -> None:
        """Stopping: no more accepts, but a request already sent on a kept-alive connection is
        answered (with Connection: close) rather than dropped."""
        for s in self.sockets:
            self.poller.unregister(s)
        for conn in self.idle.values():
            conn.deadline = min(conn.deadline, time.monotonic() + STOP_LINGER)
        while self.idle:
            self._turn()


def _keep_heap_top() -> None:
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            mallopt = ctypes.CDLL(libc).mallopt
            mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        except (OSError, AttributeError):            # not glibc: its allocator, as it is
            pass
