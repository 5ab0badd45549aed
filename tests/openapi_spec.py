"""openapi.yaml loaded once, with JSON Pointer resolution and schema validation (OAS 3.1
dialect), for the tests that hold the service to its contract."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from openapi_schema_validator import OAS31Validator, validate

from service import config

ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = ROOT / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def resolve_pointer(root: dict, ref: str):
    """The object a local reference ("#/a/b~1c") points at in `root`."""
    assert ref.startswith("#"), f"only local references are used: {ref}"
    node = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(schema: dict, root: dict) -> dict:
    """Follow a chain of $ref, keeping sibling keywords (allowed next to $ref in OAS 3.1)."""
    seen = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref not in seen, f"circular $ref {ref}"
        seen.add(ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**resolve_pointer(root, ref), **siblings}
    return schema


def operation(path: str, method: str = "post") -> dict:
    return SPEC["paths"][path][method]


def request_schema(path: str, method: str = "post") -> dict:
    return operation(path, method)["requestBody"]["content"]["application/json"]["schema"]


def response_schema(path: str, status: str = "200", method: str = "post",
                    media: str = "application/json") -> dict:
    response = deref(operation(path, method)["responses"][status], SPEC)
    return response["content"][media]["schema"]


def check(instance, schema: dict) -> None:
    """Validate against a schema of the spec, its $refs resolved within openapi.yaml."""
    validate(instance, {**schema, "components": SPEC["components"]}, cls=OAS31Validator)


def undocumented_settings(text: str) -> list[str]:
    """The RNN_* settings whose row "| `VAR` | default |" in a table of `text` is missing or
    states another default than service/config.py."""
    wrong = []
    for var, (_, _, default) in config.SETTINGS.items():
        row = re.search(rf"\| `{var}` \| ([0-9.e]+)", text)
        if not row or float(row.group(1)) != default:
            wrong.append(var)
    return wrong
