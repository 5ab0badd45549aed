"""Every request body in examples/ (the README's curl examples) is accepted by its endpoint,
fits the request schema of openapi.yaml, and gets a 200 that fits the documented response."""
from __future__ import annotations

import json
import re

import pytest

from tests.openapi_spec import ROOT, check, request_schema, response_schema, undocumented_settings

EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
# the file name's prefix (before the first "_") names the endpoint
ENDPOINTS = {name: f"/v1/{name}" for name in ("forward", "gradients", "gradcheck", "grade", "problems")}


def endpoint(path) -> str:
    prefix = path.stem.split("_")[0]
    assert prefix in ENDPOINTS, f"{path.name}: name it after its endpoint ({', '.join(ENDPOINTS)})"
    return ENDPOINTS[prefix]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_answered_as_documented(client, path):
    url, raw = endpoint(path), path.read_bytes()
    body = json.loads(raw)
    check(body, request_schema(url))
    r = client.post(url, data=raw, content_type="application/json")
    assert r.status_code == 200, r.get_json()
    assert r.mimetype == "application/json"
    check(r.get_json(), response_schema(url))
    if "hidden" in r.get_json() and body.get("layout") != "coursera":   # coursera: n_a×m×T_x, time last
        T = len(body.get("tokens") or body.get("inputs"))  # one row per step (per sequence in a batch)
        outputs = r.get_json()["outputs"]                  # null without an output layer (layer mode)
        assert len(r.get_json()["hidden"]) == T and (outputs is None or len(outputs) == T)
        # the output layer's matrix in the example's layout (U in the lecture's)
        head = {"cs231n": "W_vocab", "pytorch": "fc.weight", "min-char-rnn": "Why"}.get(body.get("layout"), "U")
        assert (outputs is None) == (head not in body["model"]["weights"])


def test_every_compute_endpoint_has_an_example(app):
    served = {rule.rule for rule in app.url_map.iter_rules() if rule.rule in ENDPOINTS.values()}
    covered = {endpoint(p) for p in EXAMPLES}
    assert {"/v1/forward", "/v1/gradients"} <= served
    assert served <= covered, f"no example in examples/ for {sorted(served - covered)}"


def test_readme_curl_examples_name_real_files_and_their_endpoints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sent = re.findall(r"--data @examples/(\S+\.json) http://127\.0\.0\.1:8000(/v1/\w+)", readme)
    assert sent, "README has no curl example"
    for name, url in sent:
        assert (ROOT / "examples" / name).is_file(), name
        assert endpoint(ROOT / "examples" / name) == url, name
    assert {endpoint(p) for p in EXAMPLES} <= {url for _, url in sent}, "an endpoint without a curl example"
    assert undocumented_settings(readme) == [], "the configuration table disagrees with service/config.py"
