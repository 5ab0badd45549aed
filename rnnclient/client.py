"""The client: requests underneath, plain dicts (typed below) in and out."""
from __future__ import annotations

import os
import random
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Mapping, Sequence, TypedDict

import requests

DEFAULT_URL = os.environ.get("RNN_URL", "http://127.0.0.1:8000")
# answers that mean "not now": over a rate limit (nginx), or no replica could answer
RETRY_STATUSES = frozenset({429, 503})

Layout = Literal["lecture", "cs231n", "coursera", "pytorch", "min-char-rnn"]

# The problem object of the contract (model, inputs or tokens, targets, loss, reduction, h_init)
Problem = Mapping[str, Any]


class FieldError(TypedDict):
    pointer: str
    detail: str


class ProblemDetails(TypedDict, total=False):
    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError]


class ForwardResult(TypedDict):
    outputs: list[list[float]]
    hidden: list[list[float]]
    loss: float | None
    step_losses: list[float | None]


class GradientsResult(ForwardResult):
    gradients: dict[str, list]
    bptt: dict[str, Any]


class Diagnosis(TypedDict, total=False):
    id: str
    detail: str
    window: int
    factor: float
    order: str          # gate_order: the submission's gate blocks, e.g. "i, f, o, g"


class Check(TypedDict):
    name: str
    passed: bool
    max_abs_error: float | None
    max_rel_error: float | None
    worst_index: list[int] | None
    expected_at_worst: float | None
    got_at_worst: float | None
    error: str | None
    diagnosis: Diagnosis | None


class GradeResult(TypedDict):
    passed: bool
    score: float
    checks: list[Check]


class GradescopeTest(TypedDict):
    name: str
    score: float
    max_score: float
    status: Literal["passed", "failed"]
    output: str


class GradescopeResult(TypedDict):
    score: float
    max_score: float
    output: str
    tests: list[GradescopeTest]


class ApiError(Exception):
    """The service answered with a problem (4xx/5xx). `problem` is the problem+json body."""

    def __init__(self, status: int, problem: ProblemDetails):
        self.status = status
        self.problem = problem
        self.title = problem.get("title", "")
        self.detail = problem.get("detail", "")
        self.errors: list[FieldError] = list(problem.get("errors") or [])
        where = "; ".join(f"{e.get('pointer') or '/'}: {e.get('detail')}" for e in self.errors[:5])
        super().__init__(f"{status} {self.title}: {self.detail}" + (f" ({where})" if where else ""))


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class Client:
    """One method per endpoint. `timeout` is seconds per request; `session` lets a caller
    share connections or add headers (X-Request-ID is sent when `request_id` is given).

    `api_key` (default: $RNN_API_KEY) is sent as `Authorization: Bearer <key>`.

    `layout` ("cs231n", "coursera", "pytorch", "min-char-rnn"; default: the lecture's) is sent
    with every problem that does not name its own, so a course's grader passes its arrays as it
    holds them and reads the answers under the same names (Client(url, layout="cs231n")).

    Retries: an answer 429 or 503, or a connection that fails (refused, reset, a connect
    timeout), is tried again up to `retries` times (0: never); every endpoint is a pure
    computation, so a repeat is safe. The wait before retry n (0, 1, …) is a random time in
    [½, 1] × min(max_backoff, backoff·2ⁿ) (exponential backoff with jitter), and never less
    than the answer's Retry-After (seconds or an HTTP-date). A Retry-After longer than
    `max_backoff` is not waited for: the ApiError is raised at once. A read timeout is not
    retried (the service may still be computing)."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0,
                 session: requests.Session | None = None, api_key: str | None = None,
                 retries: int = 5, backoff: float = 0.5, max_backoff: float = 30.0,
                 layout: Layout | None = None):
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must be >= 0")
        self.layout = layout
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.api_key = api_key if api_key is not None else (os.environ.get("RNN_API_KEY") or None)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.sleep = time.sleep          # replaceable, e.g. by a test

    # --- the endpoints ---

    def forward(self, problem: Problem) -> ForwardResult:
        return self.post("forward", self._in_layout(problem))

    def gradients(self, problem: Problem, truncate: int | None = None,
                  include: Sequence[str] = ()) -> GradientsResult:
        return self.post("gradients", _with(self._in_layout(problem), truncate=truncate,
                                            include=list(include) or None))

    def gradcheck(self, problem: Problem, check: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.post("gradcheck", _with(self._in_layout(problem), check=check))

    def grade(self, problem: Problem, submission: Mapping[str, Any], rtol: float | None = None,
              atol: float | None = None,
              format: Literal["default", "gradescope", "prairielearn"] = "default") -> GradeResult | GradescopeResult | dict:
        tolerance = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None} or None
        return self.post("grade", _with(self._in_layout(problem), submission=submission, tolerance=tolerance,
                                        format=None if format == "default" else format))

    def problems(self, **spec: Any) -> dict[str, Any]:
        """A seeded random problem: seed, input_size or vocab_size with tokens=True,
        hidden_size, output_size, steps, hidden_activation, output_activation, loss,
        reduction, weight_scale, score_last_step_only."""
        return self.post("problems", self._in_layout(spec))

    def health(self) -> dict[str, Any]:
        return self._answer(self.request("GET", f"{self.url}/healthz"))

    # --- plumbing ---

    def _in_layout(self, body: Problem) -> Problem:
        """The body with the client's layout, unless it names one itself."""
        if self.layout is None or "layout" in body:
            return body
        return {**body, "layout": self.layout}

    def post(self, endpoint: str, body: Mapping[str, Any] | bytes, request_id: str | None = None) -> Any:
        """POST a body (a mapping, or raw JSON bytes sent as they are) to /v1/<endpoint>."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if request_id:
            headers["X-Request-ID"] = request_id
        kwargs = {"data": body} if isinstance(body, (bytes, bytearray)) else {"json": body}
        response = self.request("POST", f"{self.url}/v1/{endpoint.strip('/')}", headers=headers,
                                **kwargs)
        return self._answer(response)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                **kwargs: Any) -> requests.Response:
        """One call with the key and the retries (see the class): the last response, or the
        last connection error raised."""
        headers = dict(headers or {})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, headers=headers,
                                                timeout=self.timeout, **kwargs)
            except requests.ConnectionError:
                if attempt >= self.retries:
                    raise
                delay = self._backoff(attempt)
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return response
                asked = retry_after(response.headers.get("Retry-After"))
                if asked is not None and asked > self.max_backoff:
                    return response          # longer than the caller allows: the error, now
                delay = max(asked or 0.0, self._backoff(attempt))
                response.close()
            self.sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2 ** attempt)
        return random.uniform(ceiling / 2, ceiling)

    @staticmethod
    def _answer(response: requests.Response) -> Any:
        if response.ok:
            return response.json()
        try:
            problem = response.json()
        except ValueError:       # not problem+json (e.g. a proxy's HTML page): keep its text
            problem = None
        if not isinstance(problem, dict):
            problem = {"status": response.status_code, "title": response.reason or "",
                       "detail": response.text[:500]}
        raise ApiError(response.status_code, problem)


def _with(problem: Problem, **extra: Any) -> dict[str, Any]:
    """The problem object plus the endpoint's own fields (those that are not None)."""
    return {**problem, **{k: v for k, v in extra.items() if v is not None}}
