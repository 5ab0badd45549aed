"""GET /docs: Swagger UI served offline from the flask-swagger-ui package's own files, reading
/openapi.yaml, with the request bodies of examples/ offered as ready-to-send examples."""
from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
import orjson
from flask import Blueprint, Response, abort, send_from_directory

bp = Blueprint("docs", __name__)
ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENDPOINTS = ("forward", "gradients", "gradcheck", "grade", "problems")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>RNN gradient service: API</title>
  <link rel="stylesheet" type="text/css" href="/docs/assets/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="/docs/assets/index.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <p style="font-family: sans-serif; margin: 1em 2em">Contract: <a href="/openapi.yaml">/openapi.yaml</a>
   · example bodies: <a href="/docs/examples">/docs/examples</a></p>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# Swagger UI renders /openapi.yaml as it is; once loaded, the bodies from examples/ are added as
# named examples of their operation's request body (the "Examples" drop-down of "Try it out").
INIT_JS = """
function requestBodyContent(spec, op) {
  var body = op && op.requestBody;
  if (body && body.$ref) {
    var name = body.$ref.split("/").pop();
    body = spec.components && spec.components.requestBodies && spec.components.requestBodies[name];
  }
  return body && body.content && body.content["application/json"];
}

function addExamples(ui, byPath) {
  var spec = ui.specSelectors.specJson().toJS();
  var changed = false;
  // "Try it out" sends to the server that served this page, wherever it runs
  var here = window.location.origin;
  spec.servers = spec.servers || [];
  if (!spec.servers.some(function (s) { return s.url === here; })) {
    spec.servers.unshift({url: here, description: "this server"});
    changed = true;
  }
  Object.keys(byPath).forEach(function (path) {
    var content = requestBodyContent(spec, spec.paths && spec.paths[path] && spec.paths[path].post);
    if (!content) return;
    content.examples = content.examples || {};
    Object.keys(byPath[path]).forEach(function (file) {
      if (content.examples[file]) return;
      content.examples[file] = {summary: "examples/" + file, value: byPath[path][file]};
      changed = true;
    });
    delete content.example;   // `example` and `examples` exclude each other
  });
  if (changed) ui.specActions.updateSpec(JSON.stringify(spec));
}

window.onload = function () {
  var examples = fetch("/docs/examples").then(function (r) { return r.json(); });
  window.ui = SwaggerUIBundle({
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
    tryItOutEnabled: true,
    onComplete: function () { examples.then(function (e) { addExamples(window.ui, e); }); }
  });
};
"""


def endpoint_of(name: str) -> str | None:
    """examples/gradients_truncated.json belongs to POST /v1/gradients."""
    for endpoint in sorted(ENDPOINTS, key=len, reverse=True):
        if name == endpoint or name.startswith((endpoint + "_", endpoint + "-", endpoint + ".")):
            return f"/v1/{endpoint}"
    return None


def example_bodies() -> dict:
    """{"/v1/forward": {"forward.json": body, …}, …} for every parseable examples/*.json."""
    by_path: dict = {}
    for file in sorted(EXAMPLES.glob("*.json")):
        path = endpoint_of(file.stem)
        if path is None:
            continue
        try:
            by_path.setdefault(path, {})[file.name] = orjson.loads(file.read_bytes())
        except orjson.JSONDecodeError:
            continue
    return by_path


@bp.get("/docs")
def page():
    return Response(PAGE, mimetype="text/html")


@bp.get("/docs/init.js")
def init_js():
    return Response(INIT_JS, mimetype="text/javascript")


@bp.get("/docs/assets/<path:name>")
def asset(name: str):
    return send_from_directory(ASSETS, name, max_age=86400)


@bp.get("/docs/examples")
def examples_index():
    return Response(orjson.dumps(example_bodies()), mimetype="application/json")


@bp.get("/docs/examples/<name>")
def example(name: str):
    if not name.endswith(".json"):
        abort(404)
    return send_from_directory(EXAMPLES, name, mimetype="application/json")
