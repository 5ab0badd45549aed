"""python -m rnnclient ENDPOINT FILE [--url URL]: send a JSON file to an endpoint, print the answer.

Exit codes: 0 answered, 1 the service answered with a problem (printed to stderr as
problem+json), 2 bad usage or an unreadable file, 3 the service could not be reached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import requests

from .client import DEFAULT_URL, ApiError, Client

ENDPOINTS = ("forward", "gradients", "gradcheck", "grade", "problems", "health")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnnclient",
        description="Send a JSON request body to the RNN gradient service and print the answer.")
    parser.add_argument("endpoint", choices=ENDPOINTS, help="which endpoint (health takes no file)")
    parser.add_argument("file", nargs="?", help="the JSON body; - reads standard input")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL}, or $RNN_URL)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    if args.endpoint != "health" and not args.file:
        parser.error(f"{args.endpoint} needs a FILE with the request body")
    client = Client(args.url, timeout=args.timeout)
    try:
        if args.endpoint == "health":
            answer = client.health()
        else:
            answer = client.post(args.endpoint, _read(args.file))
    except OSError as exc:
        if not isinstance(exc, requests.RequestException):
            print(f"cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
    except ApiError as exc:
        print(json.dumps(exc.problem, indent=2, ensure_ascii=False), file=sys.stderr)
        return 1
    try:
        print(json.dumps(answer, indent=2, ensure_ascii=False), flush=True)
    except BrokenPipeError:              # e.g. piped into head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _read(path: str) -> bytes:
    """The file's bytes as they are: the service, not the client, says what is wrong with them."""
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


if __name__ == "__main__":
    sys.exit(main())
