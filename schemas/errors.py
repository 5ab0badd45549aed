"""Exceptions that carry an RFC 9457 problem; the app turns them into problem+json.

Every entry of a problem's `errors` has a `code` naming the rule it breaks (CODES below, the
enum of ErrorItem.code in openapi.yaml). The first group are rules the request schemas state,
so a body that fits openapi.yaml never breaks them; the second group are the rules the schemas
leave to the service (each relates two fields, or looks inside a base64 string, or at the cost
of the work), the only reasons a schema-valid body can be refused."""
from __future__ import annotations

CODES = {
    # stated by openapi.yaml's request schemas
    "type": "not the JSON type the schema says (a number, an integer, a string, an array, an object)",
    "required": "a required field is missing",
    "unknown_field": "a field the schema does not have",
    "enum": "not one of the allowed values",
    "range": "a number outside its minimum or maximum (numbers: the float64 range)",
    "size": "an array with too few or too many entries, or an empty object",
    "unique": "a value named twice where each may appear once",
    "base64": "binary data that is not base64",
    "rank": "a binary array whose shape has the wrong number of entries",
    "all_null": "every target is null",
    "limit": "a size over its configured limit (413; the schema states the defaults)",
    # rules between fields (or inside base64, or about the cost) that the schemas leave to the service
    "exactly_one": "exactly one of inputs and tokens must be given",
    "depends": "a field that goes only with another's value (vocab_size and input_size with tokens)",
    "shape": "a shape that must agree with another field's (W fixes H, V's columns fix D, inputs or "
             "tokens fix T, U fixes N), or rows that must all be one length",
    "binary_size": "a binary array's data must hold 8 bytes per element of its shape",
    "binary_finite": "the float64 values inside a binary array's base64 must be finite",
    "token_range": "a token must be below D, the number of columns of V",
    "class_range": "a class index must be below N, the number of rows of U",
    "target_kind": "a target entry's kind follows the loss (a class index for cross_entropy, a "
                   "vector of N numbers otherwise, in [0, 1] for binary_cross_entropy)",
    "loss_activation": "the loss needs another output activation",
    "parameter_absent": "a gradcheck parameter the problem does not have (c_init without an lstm, "
                        "inputs with tokens, U in layer mode...)",
    "not_gradable": "/v1/grade takes the lecture's rnn on one sequence with targets (gated cells, "
                    "batches and layer mode are graded from a later release)",
    "overflow": "a result (or a numerical derivative) that overflows float64",
    "work_budget": "the estimated work is over the budget",
    "bptt_terms_limit": "include needs T²·H numbers, over RNN_MAX_BPTT_TERMS (413)",
    "problem_size_limit": "a generated problem too large to be sent back in a request body (413)",
    # not from a rule about the body's values (the body must still be fixed)
    "invalid": "any other problem",
}


def pointer(*parts) -> str:
    """A JSON Pointer (RFC 6901) from path segments."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _item(e) -> dict:
    """An errors entry from a dict or a (pointer, detail[, code]) tuple."""
    if isinstance(e, dict):
        return e if "code" in e else {**e, "code": "invalid"}
    return {"pointer": e[0], "detail": e[1], "code": e[2] if len(e) > 2 else "invalid"}


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
    every problem found, each with a JSON Pointer into the request body and its code."""
    type = "/problems/invalid-request"

    def __init__(self, errors: list[tuple] | list[dict], detail: str | None = None):
        errs = [_item(e) for e in errors]
        n = len(errs)
        super().__init__(detail or (errs[0]["detail"] if n == 1 else f"{n} problems in the request body"),
                         errors=errs)


class MalformedJSON(ApiProblem):
    status, title, type = 400, "Bad Request", "/problems/malformed-json"


class LimitExceeded(ApiProblem):
    """413: the body or the problem it describes is larger than a configured limit."""
    status, title, type = 413, "Content Too Large", "/problems/limit-exceeded"

    def __init__(self, detail: str, pointer_: str | None = None, code: str = "limit"):
        super().__init__(detail, errors=[{"pointer": pointer_ or "", "detail": detail, "code": code}])


class WorkBudgetExceeded(ApiProblem):
    """422: a request whose estimated work is over the budget; detail says what would fit."""
    status, title, type = 422, "Unprocessable Content", "/problems/work-budget-exceeded"

    def __init__(self, detail: str, pointer_: str = ""):
        super().__init__(detail, errors=[{"pointer": pointer_, "detail": detail, "code": "work_budget"}])
