"""python -m rnnclient ENDPOINT FILE [--url URL]: send a JSON file to an endpoint, print the answer.

Exit codes: 0 answered, 1 the service answered with a problem (printed to stderr as
problem+json), 2 bad usage or an unreadable file, 3 the service could not be reached.

python -m rnnclient grade-batch PROBLEM SUBMISSIONS_DIR --out DIR [--format gradescope|prairielearn|default]
[--concurrency N] [--retries N]: grade every submission file of a folder (rnnclient/batch.py;
the same exit codes: 1 some submission was answered with a problem, 3 unreachable).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import requests

from .client import DEFAULT_URL, ApiError, Client

ENDPOINTS = ("forward", "gradients", "gradcheck", "grade", "problems", "health")  # and grade-batch


def grade_batch_main(argv: list[str]) -> int:
    from . import batch
    parser = argparse.ArgumentParser(
        prog="python -m rnnclient grade-batch",
        description="Grade every *.json submission in a folder against one problem; write one "
                    "results file per submission and summary.csv. Exit codes: 0 all graded, "
                    "1 the service answered some submission with a problem it cannot retry, "
                    "2 bad usage, 3 the service could not be reached.")
    parser.add_argument("problem", help="the problem object (JSON file)")
    parser.add_argument("submissions", help="a folder of submission files (*.json)")
    parser.add_argument("--out", required=True, help="the folder for the results and summary.csv")
    parser.add_argument("--format", choices=("gradescope", "prairielearn", "default"), default="gradescope",
                        help="the results files' format (default gradescope)")
    parser.add_argument("--concurrency", type=_positive, default=4, help="requests in flight (default 4)")
    parser.add_argument("--retries", type=_non_negative, default=5,
                        help="tries again on 429, 503 and connection errors (default 5)")
    parser.add_argument("--backoff", type=float, default=0.5, help="first backoff in seconds (default 0.5)")
    parser.add_argument("--max-backoff", type=float, default=30.0, help="longest wait in seconds (default 30)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL}, or $RNN_URL)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return batch.main(parser.parse_args(argv))


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _non_negative(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade-batch"]:
        return grade_batch_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m rnnclient",
        description="Send a JSON request body to the RNN gradient service and print the answer.",
        epilog="To grade a folder of submissions: python -m rnnclient grade-batch --help")
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
