"""rnnclient.Client(url, layout=...): the layout is sent with every body that does not name
its own (the client's retries are untouched: tests/test_client.py), over the app in-process."""
from __future__ import annotations

import numpy as np

from rnnclient import Client
from tests.test_layouts import BODIES


class _Response:
    def __init__(self, r):
        self.status_code, self.headers, self.ok = r.status_code, r.headers, r.status_code < 400
        self._json, self.text, self.reason = r.get_json(), r.get_data(as_text=True), r.status

    def json(self):
        return self._json

    def close(self):
        pass


class AppSession:
    """requests.Session's request() over a Flask test client; records the bodies sent."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def request(self, method, url, headers=None, timeout=None, json=None, data=None):
        self.sent.append(json)
        path = url.split("://", 1)[-1].split("/", 1)[1]
        return _Response(self.client.open("/" + path, method=method, json=json, headers=headers))


def strip(body):
    return {k: v for k, v in body.items() if k != "layout"}


def test_a_client_with_a_layout_sends_it_and_reads_answers_in_it(client):
    session = AppSession(client)
    api = Client("http://test", layout="cs231n", session=session)
    body = strip(BODIES["cs231n"])
    g = api.gradients(body)
    assert session.sent[-1]["layout"] == "cs231n"
    assert set(g["gradients"]) >= {"Wx", "Wh", "b", "W_vocab", "b_vocab"}
    assert api.grade(body, {"gradients": {"Wx": g["gradients"]["Wx"]}})["checks"][0]["name"] == "gradients.Wx"
    report = api.gradcheck(body, {"parameters": ["Wh"], "mode": "sample", "samples": 3})
    assert list(report["parameters"]) == ["Wh"]
    assert "Wx" in api.problems(seed=1, cell="lstm")["model"]["weights"]
    assert all(s["layout"] == "cs231n" for s in session.sent)


def test_a_body_naming_its_own_layout_keeps_it(client):
    session = AppSession(client)
    api = Client("http://test", layout="coursera", session=session)
    out = api.forward(BODIES["pytorch"])
    assert session.sent[-1]["layout"] == "pytorch"
    assert np.array(out["hidden"]).shape == (2, 3, 3)
    plain = Client("http://test", session=session)
    plain.problems(seed=1)
    assert "layout" not in session.sent[-1]
