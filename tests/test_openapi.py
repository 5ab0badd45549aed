"""openapi.yaml is a valid OpenAPI 3.1 document, says what the Pydantic models and the app's
routes say (so the contract and the code cannot drift apart), and is what /openapi.yaml serves."""
from __future__ import annotations

import importlib
import json
import inspect
import pkgutil
import re

import pytest
from openapi_spec_validator import validate as validate_spec
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import schemas
from service import create_app
from tests.openapi_spec import HTTP_METHODS, SPEC, SPEC_PATH, check, deref, undocumented_settings

COMPONENTS = SPEC["components"]["schemas"]
# models of the foundation that must be documented (later ones are found by name below)
CORE_MODELS = {"WeightsIn", "ModelIn", "ProblemIn", "ForwardIn", "GradientsIn", "ForwardOut",
               "GradientsOut", "BPTTOut", "GradientsResponse"}


def pydantic_models() -> list[type[BaseModel]]:
    """Every Pydantic model defined in a module of schemas/, including ones added later."""
    found = {}
    for info in pkgutil.iter_modules(schemas.__path__):
        module = importlib.import_module(f"schemas.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseModel) and cls.__module__ == module.__name__:
                found[f"{module.__name__}.{cls.__name__}"] = cls
    return [found[k] for k in sorted(found)]


DOCUMENTED = [m for m in pydantic_models() if m.__name__ in COMPONENTS]


def spec_object(name: str) -> tuple[dict, list]:
    """A component's properties and required list, allOf parts merged."""
    schema = deref(COMPONENTS[name], SPEC)
    props, required = dict(schema.get("properties", {})), list(schema.get("required", []))
    for part in schema.get("allOf", []):
        part = deref(part, SPEC)
        props.update(part.get("properties", {}))
        required += part.get("required", [])
    return props, required


def enums(schema: dict, root: dict, seen: frozenset = frozenset()) -> set:
    """The enum (and const) values a value schema allows, through $ref, anyOf/oneOf/allOf,
    items and map keys/values. A nested object with properties is a model of its own, compared
    on its own, so its fields' enums are not collected here."""
    if "$ref" in schema:
        if schema["$ref"] in seen:                    # a recursive type (e.g. nested arrays)
            return set()
        seen = seen | {schema["$ref"]}
        schema = deref(schema, root)
    if "properties" in schema:
        return set()
    out = set(schema.get("enum", []))
    if "const" in schema:
        out.add(schema["const"])
    parts = [s for key in ("anyOf", "oneOf", "allOf", "prefixItems") for s in schema.get(key, [])]
    parts += [schema[key] for key in ("items", "additionalProperties", "propertyNames")
              if isinstance(schema.get(key), dict)]
    for part in parts:
        out |= enums(part, root, seen)
    return out - {None}


def test_openapi_yaml_is_valid_openapi_3_1():
    assert SPEC["openapi"].startswith("3.1")
    validate_spec(SPEC)


def test_every_core_model_has_a_component():
    assert CORE_MODELS <= {m.__name__ for m in DOCUMENTED}


@pytest.mark.parametrize("model", DOCUMENTED, ids=lambda m: m.__name__)
def test_component_matches_pydantic_model(model):
    props, required = spec_object(model.__name__)
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    assert set(props) == set(fields), "property names differ"
    assert set(required) == {name for name, f in fields.items() if f.is_required()}, \
        "required fields differ"
    pyd_schema = model.model_json_schema(mode="validation")
    for name, field in fields.items():
        prop = deref(props[name], SPEC)
        assert enums(prop, SPEC) == enums(pyd_schema["properties"][name], pyd_schema), \
            f"{name}: enum values differ"
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if not isinstance(default, BaseModel):     # a nested model's defaults are its own component's
            assert prop.get("default") == default, f"{name}: default differs"


def test_the_drift_check_notices_a_difference():
    """The comparison above is not vacuous: a model with a renamed field or another enum fails."""
    from typing import Literal

    from schemas.base import StrictModel

    class ModelIn(StrictModel):                                    # a drifted copy
        weights: dict
        cell: Literal["rnn", "lstm", "gru"] = "rnn"
        gru_reset: Literal["after", "before"] | None = None
        hidden_activation: Literal["tanh", "gelu"] = "tanh"
        output_activation: Literal["softmax", "sigmoid", "identity"] = "softmax"

    with pytest.raises(AssertionError, match="hidden_activation: enum values differ"):
        test_component_matches_pydantic_model(ModelIn)
    ModelIn.model_fields["extra"] = ModelIn.model_fields["weights"]
    with pytest.raises(AssertionError, match="property names differ"):
        test_component_matches_pydantic_model(ModelIn)


def test_every_app_route_is_documented_with_its_methods(app):
    """A new endpoint without documentation fails here (endpoints documented ahead of their
    code do not). /docs/... are the assets of the documented /docs page."""
    routes: dict[str, set] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/docs/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    assert {"/v1/forward", "/v1/gradients", "/healthz", "/readyz", "/openapi.yaml"} <= set(routes)
    for path, methods in routes.items():
        assert path in SPEC["paths"], f"{path} is served but not in openapi.yaml"
        assert methods == set(SPEC["paths"][path]) & HTTP_METHODS, f"{path}: methods differ"


def test_request_examples_in_the_spec_fit_their_schemas():
    count = 0
    for path, item in SPEC["paths"].items():
        for op in (item[m] for m in HTTP_METHODS & set(item)):
            for media in op.get("requestBody", {}).get("content", {}).values():
                for example in media.get("examples", {}).values():
                    check(deref(example, SPEC)["value"], media["schema"])
                    count += 1
    assert count >= 5


def test_the_limits_table_states_the_configured_defaults():
    assert undocumented_settings(SPEC["info"]["description"]) == []


def test_get_openapi_yaml_serves_this_file(client):
    r = client.get("/openapi.yaml")
    assert r.status_code == 200
    assert r.mimetype == "application/yaml"
    assert r.data == SPEC_PATH.read_bytes()



def _post(client, path="/v1/forward", data=b"{}", content_type="application/json"):
    return client.post(path, data=data, content_type=content_type)


ERRORS = {   # status -> a request that gets it, and the problem type the spec documents for it
    400: (lambda c, body: _post(c, data=b'{"model": '), "/problems/malformed-json"),
    404: (lambda c, body: c.get("/v1/nothing-here"), "about:blank"),
    405: (lambda c, body: c.get("/v1/forward"), "about:blank"),
    413: (lambda c, body: _post(c, data=b" " * 70_000 + b"{}"), "/problems/limit-exceeded"),
    415: (lambda c, body: _post(c, content_type="text/plain"), "about:blank"),
    422: (lambda c, body: _post(c, data=body.replace(b"0.5", b"NaN", 1)), "/problems/invalid-request"),
}


@pytest.mark.parametrize("status", sorted(ERRORS))
def test_error_responses_are_the_documented_problems(status, small_body):
    client = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 65_536}).test_client()
    send, type_ = ERRORS[status]
    r = send(client, json.dumps(small_body).encode())
    assert r.status_code == status
    assert r.mimetype == "application/problem+json"
    assert r.headers["X-Request-ID"]
    check(r.get_json(), {"$ref": "#/components/schemas/Problem"})
    assert r.get_json()["type"] == type_ and type_ in SPEC["info"]["description"]
    if status == 405:
        assert set(r.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    if status == 413:
        assert "65,536 bytes" in r.get_json()["detail"]          # the limit is in the detail
    if status == 422:
        assert r.get_json()["errors"] == [{"pointer": "/model/weights/W/0/0",
                                           "detail": "must be a finite number", "code": "range"}]
