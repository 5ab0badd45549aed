"""Server-Timing (W3C) on every /v1/ answer: parse, validate, compute and serialize in ms; and
api.common.body()'s split of schemas.base.parse's fast road (so the header can tell parsing
from validating) answering exactly as parse() itself on the hostile-input table."""
from __future__ import annotations

import copy
import re
import time

import pytest
from flask import request

from schemas.base import parse
from service.api import common, compute
from tests.conftest import SMALL
from tests.test_reliability import HOSTILE

PHASES = ("parse", "validate", "compute", "serialize")
METRIC = re.compile(r"^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)((?:\s*;\s*[A-Za-z0-9_-]+=[^;,]*)*)\s*$")


def server_timing(header: str) -> dict[str, float]:
    """The header parsed as the W3C grammar has it: metric *( ";" param ), comma-separated."""
    out = {}
    for entry in header.split(","):
        m = METRIC.match(entry)
        assert m, f"not a Server-Timing entry: {entry!r}"
        params = dict(p.strip().split("=", 1) for p in m.group(2).split(";") if p.strip())
        out[m.group(1)] = float(params["dur"])
    return out


def timed_post(client, path, **kwargs):
    started = time.perf_counter()
    r = client.post(path, **kwargs)
    return r, (time.perf_counter() - started) * 1e3


def check(r, elapsed_ms: float) -> dict[str, float]:
    assert "Server-Timing" in r.headers, r.headers
    timing = server_timing(r.headers["Server-Timing"])
    assert tuple(timing) == PHASES
    for name, dur in timing.items():
        assert dur >= 0.0 and dur == dur, (name, dur)
    assert sum(timing.values()) <= elapsed_ms, (timing, elapsed_ms)
    return timing


@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
def test_success_has_every_phase(client, path):
    client.post(path, json=SMALL)                          # warm (first request builds limits)
    r, elapsed = timed_post(client, path, json=SMALL)
    assert r.status_code == 200
    timing = check(r, elapsed)
    assert all(timing[p] > 0 for p in PHASES), timing      # each boundary was reached


def test_binary_arrays_success(client):
    r, elapsed = timed_post(client, "/v1/gradients", json=SMALL,
                            headers={"Accept": "application/json; arrays=base64"})
    assert r.status_code == 200 and isinstance(r.get_json()["gradients"]["W"], dict)
    assert check(r, elapsed)["serialize"] > 0


def test_422_up_to_the_point_reached(client):
    bad = copy.deepcopy(SMALL)
    bad["model"]["weights"]["W"] = [[0.5, 0.1]]            # wrong shape: refused in validation
    r, elapsed = timed_post(client, "/v1/gradients", json=bad)
    assert r.status_code == 422
    timing = check(r, elapsed)
    assert timing["parse"] > 0 and timing["validate"] > 0 and timing["serialize"] > 0
    assert timing["compute"] == 0                           # never reached


def test_422_from_the_schema(client):
    r, elapsed = timed_post(client, "/v1/gradients", json={"model": 3})
    assert r.status_code == 422
    assert check(r, elapsed)["compute"] == 0


def test_400_and_415_have_the_header(client):
    r, elapsed = timed_post(client, "/v1/gradients", data=b"{not json", content_type="application/json")
    assert r.status_code == 400
    timing = check(r, elapsed)
    assert timing["validate"] == timing["compute"] == 0
    r, elapsed = timed_post(client, "/v1/gradients", data=b"{}", content_type="text/plain")
    assert r.status_code == 415
    check(r, elapsed)


def test_get_v1_and_not_elsewhere(client):
    r = client.get("/v1/problems")
    if r.status_code != 405:
        assert tuple(server_timing(r.headers["Server-Timing"])) == PHASES
    assert "Server-Timing" not in client.get("/healthz").headers


# --- body()'s fast road equals parse()'s answers and errors ----------------------------------

def general_body(model):
    """api.common.body() as it was: parse() does the whole fast road and its fallbacks."""
    req = request._get_current_object()
    mime = req.mimetype or ""
    if not (mime == "application/json" or mime.endswith("+json")):
        from werkzeug.exceptions import UnsupportedMediaType
        raise UnsupportedMediaType(f"send the body as application/json, not {mime or 'nothing'}")
    data = req.get_data(cache=False)
    common._refuse_cut_body(req, data)
    return parse(model, data)


VALID_AND_INVALID = [
    ("valid", "application/json", SMALL, None),
    ("wrong shape", "application/json",
     {**SMALL, "model": {"weights": {**SMALL["model"]["weights"], "W": [[0.5, 0.1]]}}}, None),
    ("unknown field", "application/json", {**SMALL, "extra": 1}, None),
    ("string weight", "application/json",
     {**SMALL, "model": {"weights": {**SMALL["model"]["weights"], "b_h": ["a", 0.1]}}}, None),
    ("bad binary", "application/json",
     {**SMALL, "model": {"weights": {**SMALL["model"]["weights"],
                                     "b_h": {"dtype": "float64", "shape": [2], "data": "!!"}}}}, None),
]


def _cases():
    import json
    for name, ctype, obj, _ in VALID_AND_INVALID:
        yield name, ctype, json.dumps(obj).encode()
    for name, ctype, data, _ in HOSTILE:
        yield name, ctype, data


@pytest.mark.parametrize("name, content_type, data", list(_cases()), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients"])
def test_fast_road_answers_as_parse(app, monkeypatch, path, name, content_type, data):
    client = app.test_client()
    headers = {} if content_type is None else {"Content-Type": content_type}

    def answer():
        r = client.post(path, data=data, headers=headers)
        return r.status_code, r.headers.get("Content-Type"), r.get_data()

    fast = answer()
    monkeypatch.setattr(compute, "body", general_body)
    general = answer()
    assert fast == general
