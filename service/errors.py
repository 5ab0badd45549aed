"""One place that turns every error into an RFC 9457 application/problem+json body."""
from __future__ import annotations

import logging

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from schemas.errors import ApiProblem, LimitExceeded

from .jsonio import serialize

log = logging.getLogger("service")
PROBLEM = "application/problem+json"


def problem_response(status: int, title: str, detail: str, type_: str = "about:blank",
                     errors: list | None = None, headers=None) -> Response:
    body = {"type": type_, "title": title, "status": status, "detail": detail,
            "instance": request.path}
    if errors is not None:
        body["errors"] = errors
    return Response(serialize(body), status=status, mimetype=PROBLEM, headers=headers)


def register(app: Flask) -> None:
    @app.errorhandler(ApiProblem)
    def api_problem(e: ApiProblem):
        return problem_response(e.status, e.title, e.detail, e.type, e.errors)

    @app.errorhandler(HTTPException)
    def http_exception(e: HTTPException):
        # keep headers such as Allow (405); drop the HTML body's own content headers
        headers = [(k, v) for k, v in e.get_headers() if k.lower() not in ("content-type", "content-length")]
        if isinstance(e, RequestEntityTooLarge):
            return body_too_large(headers)
        return problem_response(e.code or 500, e.name, e.description or e.name, headers=headers)

    def body_too_large(headers):
        # the contract asks for the limit in the detail, which werkzeug's text does not give
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        size = f"{limit:,} bytes" if limit else "the configured size"
        return problem_response(413, LimitExceeded.title,
                                f"the request body is over the limit of {size} (RNN_MAX_BODY_BYTES)",
                                LimitExceeded.type, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unhandled error on %s", request.path)
        return problem_response(500, "Internal Server Error",
                                "the server failed to answer this request; it has been logged")
