"""A WSGI app for tests/test_worker.py, served under service/gunicorn.conf.py: it answers any
request after ?seconds=S (default 0) and reports its worker's pid."""
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["0"])[0])
    environ["wsgi.input"].read()
    time.sleep(seconds)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
