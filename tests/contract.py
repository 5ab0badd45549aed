"""The served openapi.yaml as JSON Schema 2020-12 validators, and the one list of the rules
that JSON Schema cannot state: the fuzz test (test_reliability.py) and the contract probes
(test_contract_probes.py) judge the service's refusals by it."""
from __future__ import annotations

import yaml
from jsonschema import Draft202012Validator

# A 422 (or 413) answer to a body that the served openapi.yaml accepts is right only when every
# error it lists names one of these rules, by its `code`: each relates one field's value to
# another's (or needs the bytes inside a base64 string, or the cost of the work), which a
# per-field JSON Schema does not see. Some rules between fields are stated with if/then
# (LayoutRules, CellRules: a gated cell's hidden_activation, gru_reset, b_hn) and are refused with
# `depends` too; the other presence rules (vocab_size, c_init, layer mode, the output layer that
# targets need) are left to the service. Anything else refused for schema-valid data is a
# disagreement between the contract and the code.
CANNOT_STATE = {
    "shape": "a shape that must agree with another field's (W fixes H, V's columns fix D, inputs "
             "or tokens fix T, U fixes N), or rows that must all be one length",
    "binary_size": "a binary array's data must hold 8 bytes per element of its shape",
    "binary_finite": "the float64 values inside a binary array's base64 must be finite",
    "token_range": "a token must be below D, the number of columns of V",
    "class_range": "a class index must be below N, the number of rows of U",
    "target_kind": "a target entry's kind follows the loss (a class index for cross_entropy, a "
                   "vector of numbers otherwise, in [0, 1] for binary_cross_entropy)",
    "loss_activation": "the loss needs another output activation (cross_entropy: softmax; "
                       "binary_cross_entropy: sigmoid)",
    "exactly_one": "exactly one of inputs and tokens must be given",
    "depends": "a field that goes only with another's value: vocab_size with tokens: true, input_size "
               "without it; c_init only with the lstm; upstream without targets, loss, reduction; "
               "targets with an output layer (CellRules lists them)",
    "parameter_absent": "a gradcheck parameter the problem does not have (c_init without an lstm, "
                        "inputs with tokens, U in layer mode...)",
    "overflow": "a result (or a numerical derivative) that overflows float64",
    "work_budget": "the estimated work is over the budget (/problems/work-budget-exceeded)",
    "bptt_terms_limit": "include needs T²·H numbers, over RNN_MAX_BPTT_TERMS (413)",
    "problem_size_limit": "a generated problem too large to be sent back in a request body (413)",
}


def refused_for_unstateable_rules(status: int, problem) -> bool:
    """A 413 or 422 whose every error is one of CANNOT_STATE (at least one error)."""
    if status not in (413, 422) or not isinstance(problem, dict):
        return False
    errors = problem.get("errors")
    return bool(errors) and all(isinstance(e, dict) and e.get("code") in CANNOT_STATE for e in errors)


def served_spec(client) -> dict:
    r = client.get("/openapi.yaml")
    assert r.status_code == 200
    return yaml.safe_load(r.data)


def validator(spec: dict, schema: dict) -> Draft202012Validator:
    """A Draft 2020-12 validator of `schema`, its '#/components/...' references resolved in spec."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "components": spec["components"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def request_validator(spec: dict, path: str) -> Draft202012Validator:
    media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return validator(spec, media["schema"])


def response_validator(spec: dict, path: str, status: str = "200", method: str = "post",
                       media: str = "application/json") -> Draft202012Validator:
    response = spec["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return validator(spec, response["content"][media]["schema"])


def header_validator(spec: dict, name: str) -> Draft202012Validator:
    return validator(spec, spec["components"]["headers"][name]["schema"])
