"""Grading a folder of submissions: python -m rnnclient grade-batch PROBLEM SUBMISSIONS_DIR --out DIR.

Each `*.json` file in SUBMISSIONS_DIR is one student's submission: the submission object itself
(`{"loss": …, "gradients": {…}}`) or a body holding it under `submission` (other fields of such
a body, e.g. `tolerance`, apply to that submission alone). PROBLEM is the problem object (a
`/v1/problems` answer, say; a `tolerance` in it applies to every submission). Every file is
graded by `/v1/grade` with at most `concurrency` requests in flight; each one's result is
written to DIR/<name>.json in the chosen format, and DIR/summary.csv has one row per
submission: its name, score, then each check's pass and diagnosis (and an `error` column for
a submission that could not be graded).

Retries are the Client's: 429, 503 and connection errors are tried again with exponential
backoff and jitter, honouring Retry-After (every endpoint is idempotent).

Exit codes: 0 every submission was graded (a file that is not a JSON object is a row with
its `error`, not a failure of the run); 1 the service answered some submission with a problem
that cannot be retried (a 4xx, or a 5xx / 429 / 503 left after the retries: its row has the
error); 2 bad usage (an unreadable PROBLEM, SUBMISSIONS_DIR not a folder); 3 the service could
not be reached (a connection error left after the retries: the remaining submissions are not
sent).
"""
from __future__ import annotations

import csv
import json
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

from .client import ApiError, Client

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass
class Outcome:
    name: str
    result: dict | None = None          # the default-format answer (for the summary)
    error: str | None = None
    unreachable: bool = False
    service_problem: bool = False


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    exit_code: int = EXIT_OK


def submission_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".json")


def _body(problem: dict, submission: Any, fmt: str) -> dict:
    if isinstance(submission, dict) and "submission" in submission:
        extra = {k: v for k, v in submission.items() if k != "submission"}
        submission = submission["submission"]
    else:
        extra = {}
    body = {**problem, **extra, "submission": submission}
    if fmt != "default":
        body["format"] = fmt
    else:
        body.pop("format", None)
    return body


def grade_one(make_client: Callable[[], Client], problem: dict, path: Path, fmt: str,
              out: Path) -> Outcome:
    """Grade one file; write its results file. Errors become the outcome, never an exception."""
    name = path.stem
    try:
        submission = json.loads(path.read_bytes())
        if not isinstance(submission, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return Outcome(name, error=f"cannot read the submission: {exc}")
    client = make_client()
    try:
        result = client.post("grade", _body(problem, submission, "default"))
        formatted = result if fmt == "default" else client.post("grade", _body(problem, submission, fmt))
    except ApiError as exc:
        (out / f"{name}.json").write_text(json.dumps(exc.problem, indent=2, ensure_ascii=False) + "\n")
        return Outcome(name, error=str(exc), service_problem=True)
    except requests.RequestException as exc:
        return Outcome(name, error=f"cannot reach the service: {exc}", unreachable=True)
    (out / f"{name}.json").write_text(json.dumps(formatted, indent=2, ensure_ascii=False) + "\n")
    return Outcome(name, result=result)


def write_summary(outcomes: list[Outcome], path: Path) -> None:
    """submission, score, then `<check> passed` and `<check> diagnosis` for every check name
    (in the order the service reports them), and `error`."""
    names: list[str] = []
    for o in outcomes:
        for c in (o.result or {}).get("checks", []):
            if c["name"] not in names:
                names.append(c["name"])
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["submission", "score"] + [f"{n} {k}" for n in names for k in ("passed", "diagnosis")]
                   + ["error"])
        for o in sorted(outcomes, key=lambda o: o.name):
            checks = {c["name"]: c for c in (o.result or {}).get("checks", [])}
            row = [o.name, "" if o.result is None else f"{o.result['score']:.6g}"]
            for n in names:
                c = checks.get(n)
                row += ["", ""] if c is None else \
                    [str(c["passed"]).lower(), (c.get("diagnosis") or {}).get("id", "")]
            w.writerow(row + [o.error or ""])


def grade_batch(problem: dict, folder: Path, out: Path, fmt: str = "gradescope",
                concurrency: int = 4, make_client: Callable[[], Client] = Client,
                progress: bool = True) -> Summary:
    files = submission_files(folder)
    out.mkdir(parents=True, exist_ok=True)
    local = threading.local()

    def client() -> Client:                 # one session per worker thread
        if not hasattr(local, "client"):
            local.client = make_client()
        return local.client

    summary = Summary()
    bar = _progress(len(files), progress)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        names = {pool.submit(grade_one, client, problem, p, fmt, out): p.stem for p in files}
        pending = set(names)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future.cancelled():
                    continue
                outcome = future.result()
                summary.outcomes.append(outcome)
                bar.advance()
                if outcome.unreachable:         # the service is gone: send nothing more
                    for f in pending:
                        if f.cancel():
                            summary.outcomes.append(Outcome(names[f], error="not sent: the service "
                                                            "could not be reached", unreachable=True))
                    pending = {f for f in pending if not f.cancelled()}
    bar.close()
    write_summary(summary.outcomes, out / "summary.csv")
    if any(o.unreachable for o in summary.outcomes):
        summary.exit_code = EXIT_UNREACHABLE
    elif any(o.service_problem for o in summary.outcomes):
        summary.exit_code = EXIT_PROBLEM
    return summary


class _progress:
    """A rich progress bar on stderr (quiet when not wanted)."""

    def __init__(self, total: int, enabled: bool):
        self.p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.p = Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=Console(stderr=True))
            self.p.start()
            self.task = self.p.add_task("grading", total=total)

    def advance(self) -> None:
        if self.p:
            self.p.advance(self.task)

    def close(self) -> None:
        if self.p:
            self.p.stop()


def main(args) -> int:
    """The CLI's grade-batch (argparse namespace from __main__)."""
    try:
        problem = json.loads(Path(args.problem).read_bytes())
        if not isinstance(problem, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        print(f"cannot read the problem {args.problem}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    folder = Path(args.submissions)
    if not folder.is_dir():
        print(f"{folder} is not a folder of submissions", file=sys.stderr)
        return EXIT_USAGE
    problem.pop("submission", None)

    def make_client() -> Client:
        return Client(args.url, timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                      max_backoff=args.max_backoff)

    summary = grade_batch(problem, folder, Path(args.out), args.format, args.concurrency, make_client,
                          progress=not args.quiet)
    graded = sum(o.result is not None for o in summary.outcomes)
    print(f"{graded} of {len(summary.outcomes)} submissions graded; summary in "
          f"{Path(args.out) / 'summary.csv'}", file=sys.stderr)
    for o in summary.outcomes:
        if o.error:
            print(f"{o.name}: {o.error}", file=sys.stderr)
    return summary.exit_code
