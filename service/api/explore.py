"""GET /explore: a gradient-flow explorer page, served offline by the app itself.

The page (service/explore_assets/) is a client of the public API: it calls /v1/problems,
/v1/gradients, /v1/gradcheck and /v1/grade from the browser. Its charts are drawn by plotly.js,
served from the pinned `plotly` Python package's own copy (plotly/package_data/plotly.min.js).
Its forms are built from openapi.yaml: GET /explore/schema.json gives the fields of
ProblemsIn and CheckOptions, so a field added to the contract appears on the page (and in its
query string) without a change here. A Content-Security-Policy keeps every request the page
makes on this service."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import orjson
import yaml
from flask import Blueprint, Response, abort, send_file, send_from_directory

bp = Blueprint("explore", __name__)
ASSETS = Path(__file__).resolve().parents[1] / "explore_assets"
OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"
PAGE_ASSETS = ("explore.js", "explore.css", "favicon.svg")
MAX_AGE = 0                 # revalidated (ETag) on every load: the page and its script change together

# scripts, styles, images and fetches from this origin only (plotly adds inline <style>s and
# data: images for its mode bar); nothing the page loads can leave the service
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def plotly_js() -> Path | None:
    """plotly.min.js of the installed plotly package (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _resolve(node, spec: dict, depth: int = 0):
    """A schema with its local $refs replaced by what they name (allOf/anyOf kept)."""
    if depth > 20:
        return node
    if isinstance(node, dict):
        if "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
            target = spec
            for part in node["$ref"][2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            merged = {**_resolve(target, spec, depth + 1),
                      **{k: v for k, v in node.items() if k != "$ref"}}
            return merged
        return {k: _resolve(v, spec, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, spec, depth + 1) for v in node]
    return node


def _field(name: str, schema: dict) -> dict:
    """One form field: its JSON type, whether null is allowed, its enum, default, bounds."""
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    types, enum, nullable = [], None, False
    for option in options:
        kind = option.get("type")
        if kind == "null":
            nullable = True
        elif kind:
            types.append(kind)
        if option.get("enum") is not None:
            enum = [v for v in option["enum"] if v is not None]
    field = {"name": name, "type": types[0] if types else "any", "nullable": nullable,
             "description": " ".join(str(schema.get("description", "")).split())}
    if enum is not None:
        field["enum"] = enum
    for key in ("default", "minimum", "maximum"):
        if key in schema:
            field[key] = schema[key]
    items = schema.get("items")
    if isinstance(items, dict) and items.get("enum"):
        field["items_enum"] = items["enum"]
    return field


@lru_cache(maxsize=4)
def _schema_json(path: str, mtime_ns: int) -> bytes:
    """Read again whenever openapi.yaml changes."""
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    schemas = spec.get("components", {}).get("schemas", {})
    out = {}
    for key, name in (("problems", "ProblemsIn"), ("check", "CheckOptions")):
        props = _resolve(schemas.get(name, {}), spec).get("properties", {})
        out[key] = [_field(field, sub) for field, sub in props.items() if isinstance(sub, dict)]
    return orjson.dumps(out)


@bp.get("/explore")
def page():
    response = send_from_directory(ASSETS, "explore.html", mimetype="text/html", max_age=0)
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.get("/explore/<asset>")
def asset(asset: str):
    if asset == "schema.json":
        return Response(_schema_json(str(OPENAPI), OPENAPI.stat().st_mtime_ns), mimetype="application/json")
    if asset == "plotly.min.js":
        path = plotly_js()
        if path is None:
            abort(404)
        return send_file(path, mimetype="text/javascript", max_age=86400)
    if asset not in PAGE_ASSETS:
        abort(404)
    mimetype = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}[asset.rsplit(".", 1)[1]]
    return send_from_directory(ASSETS, asset, mimetype=mimetype, max_age=MAX_AGE)
