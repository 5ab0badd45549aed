"""Exceptions that carry an RFC 9457 problem; the app turns them into problem+json."""
from __future__ import annotations


def pointer(*parts) -> str:
    """A JSON Pointer (RFC 6901) from path segments."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class ApiProblem(Exception):
    status = 422
    title = "Unprocessable Content"
    type = "about:blank"

    def __init__(self, detail: str, errors: list[dict] | None = None, status: int | None = None,
                 title: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title


class RequestInvalid(ApiProblem):
    """422: values that are the wrong type, out of range or inconsistent. `errors` lists
    every problem found, each with a JSON Pointer into the request body."""
    type = "/problems/invalid-request"

    def __init__(self, errors: list[tuple[str, str]] | list[dict], detail: str | None = None):
        errs = [e if isinstance(e, dict) else {"pointer": e[0], "detail": e[1]} for e in errors]
        n = len(errs)
        super().__init__(detail or (errs[0]["detail"] if n == 1 else f"{n} problems in the request body"),
                         errors=errs)


class MalformedJSON(ApiProblem):
    status, title, type = 400, "Bad Request", "/problems/malformed-json"


class LimitExceeded(ApiProblem):
    """413: the body or the problem it describes is larger than a configured limit."""
    status, title, type = 413, "Content Too Large", "/problems/limit-exceeded"

    def __init__(self, detail: str, pointer_: str | None = None):
        super().__init__(detail, errors=[{"pointer": pointer_, "detail": detail}] if pointer_ else None)


class WorkBudgetExceeded(ApiProblem):
    """422: a request whose estimated work is over the budget; detail says what would fit."""
    status, title, type = 422, "Unprocessable Content", "/problems/work-budget-exceeded"

    def __init__(self, detail: str, pointer_: str = ""):
        super().__init__(detail, errors=[{"pointer": pointer_, "detail": detail}])
