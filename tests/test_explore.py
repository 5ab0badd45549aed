"""GET /explore without a browser: the page, its files served by the app itself (plotly.min.js
from the pinned plotly package), nothing that points off the service, a favicon, labels on the
page's static controls, and /explore/schema.json in step with openapi.yaml."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from service import create_app
from service.api import explore

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())


@pytest.fixture(scope="module")
def client():
    return create_app({"TESTING": True}).test_client()


class Page(HTMLParser):
    """The URLs an HTML page loads and its form controls with their labels."""

    def __init__(self):
        super().__init__()
        self.urls, self.icons, self.controls, self.labels = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(a["src"])
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"])
            if "icon" in a.get("rel", ""):
                self.icons.append(a["href"])
        if tag in ("img", "iframe", "source") and a.get("src"):
            self.urls.append(a["src"])
        if tag in ("input", "select", "textarea"):
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"])


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_page_is_served_with_a_same_origin_policy(client):
    r = client.get("/explore")
    assert r.status_code == 200 and r.mimetype == "text/html"
    csp = r.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'", "font-src 'self'"):
        assert directive in csp
    assert "http" not in csp                                   # no other origin is allowed
    assert r.headers["X-Request-ID"]


def test_every_file_the_page_loads_is_served_here(client):
    page = parse(client.get("/explore").get_data(as_text=True))
    assert {"/explore/plotly.min.js", "/explore/explore.js", "/explore/explore.css"} <= set(page.urls)
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url


def test_favicon_is_declared_and_served(client):
    page = parse(client.get("/explore").get_data(as_text=True))
    assert page.icons == ["/explore/favicon.svg"]
    r = client.get("/explore/favicon.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml" and b"<svg" in r.data


def test_plotly_comes_from_the_pinned_package(client):
    import plotly
    pinned = re.search(r"^plotly==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and plotly.__version__ == pinned.group(1)
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    assert explore.plotly_js() == path
    r = client.get("/explore/plotly.min.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert r.data == path.read_bytes() and b"plotly.js v" in r.data[:200]


def test_the_page_code_names_no_other_origin(client):
    """The page's own files: no absolute URL, no CDN, no web font, no protocol-relative URL."""
    for name in ("/explore", "/explore/explore.js", "/explore/explore.css", "/explore/favicon.svg"):
        text = client.get(name).get_data(as_text=True)
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)
        assert [u for u in urls if u != "http://www.w3.org"] == [], (name, urls)
        assert "@import" not in text and "@font-face" not in text and "fonts.g" not in text


def test_every_static_control_has_a_label(client):
    """The forms built from schema.json label their fields the same way (checked in the browser
    test); the page's own controls are checked here."""
    page = parse(client.get("/explore").get_data(as_text=True))
    assert page.controls
    for control in page.controls:
        assert control.get("id") in page.labels or control.get("aria-label"), control


def test_unknown_files_are_404_problems(client):
    for path in ("/explore/nope.js", "/explore/explore.html", "/explore/..%2Fopenapi.yaml",
                 "/explore/%2e%2e%2frequirements.txt"):
        r = client.get(path)
        assert r.status_code == 404 and r.mimetype == "application/problem+json", path


def test_schema_json_lists_the_contract_fields(client):
    """Every ProblemsIn property is a form field and a query parameter of the page, every
    CheckOptions property a field of the gradcheck panel, with the contract's types and enums."""
    got = client.get("/explore/schema.json").get_json()
    schemas = SPEC["components"]["schemas"]
    for key, name in (("problems", "ProblemsIn"), ("check", "CheckOptions")):
        fields = {f["name"]: f for f in got[key]}
        assert list(fields) == list(schemas[name]["properties"]), key
    problems = {f["name"]: f for f in got["problems"]}
    assert problems["seed"]["type"] == "integer" and problems["tokens"]["type"] == "boolean"
    assert problems["vocab_size"]["nullable"] is True
    assert problems["hidden_activation"]["enum"] == schemas["HiddenActivation"]["enum"]
    check = {f["name"]: f for f in got["check"]}
    assert check["method"]["enum"] == schemas["CheckOptions"]["properties"]["method"]["enum"]
    assert check["parameters"]["type"] == "array" and check["eps"]["type"] == "number"


def test_a_new_contract_field_reaches_the_page(tmp_path, monkeypatch):
    """A field added to ProblemsIn in openapi.yaml (say v1.1's cell) is on the page at once."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    spec["components"]["schemas"]["ProblemsIn"]["properties"]["cell_for_test"] = {
        "type": "string", "enum": ["rnn", "lstm", "gru"], "default": "rnn"}
    copy = tmp_path / "openapi.yaml"
    copy.write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.setattr(explore, "OPENAPI", copy)
    client = create_app({"TESTING": True}).test_client()
    fields = {f["name"]: f for f in client.get("/explore/schema.json").get_json()["problems"]}
    assert fields["cell_for_test"]["enum"] == ["rnn", "lstm", "gru"]


def test_explore_is_documented(client):
    assert "get" in SPEC["paths"]["/explore"] and "get" in SPEC["paths"]["/explore/{asset}"]
    enum = SPEC["paths"]["/explore/{asset}"]["get"]["parameters"][1]["schema"]["enum"]
    assert set(enum) == {*explore.PAGE_ASSETS, "plotly.min.js", "schema.json"}


def test_explore_needs_no_api_key(tmp_path, monkeypatch):
    """With API keys configured, /v1/... asks for one; the page and its files do not."""
    import hashlib
    import json
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"name": "t", "sha256": hashlib.sha256(b"k").hexdigest(),
                                 "scopes": ["problems"]}]))
    monkeypatch.setenv("RNN_API_KEYS_FILE", str(keys))
    client = create_app({"TESTING": True}).test_client()
    if client.post("/v1/problems", json={}).status_code != 401:
        pytest.skip("this build does not read RNN_API_KEYS_FILE")
    for path in ("/explore", "/explore/explore.js", "/explore/plotly.min.js", "/explore/schema.json"):
        assert client.get(path).status_code == 200, path
