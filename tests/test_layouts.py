"""Layouts (API.md "Layouts (v1.1)"): the same problem sent in the lecture's names and in a
course's or framework's own gives the same numbers under the mapping. The mappings are
written here, independently of schemas/layouts.py, straight from the contract's table."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from tests.reference import random_case

GATE_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}


def blocks(M, G, H):
    return [M[k * H:(k + 1) * H] for k in range(G)]


# --- the lecture's body of a reference case ---

def lecture_body(case, p) -> dict:
    w = {k: p[k].tolist() for k in ("V", "W", "b_h")}
    for k in ("U", "b_y", "b_hn"):
        if p.get(k) is not None:
            w[k] = p[k].tolist()
    model = {"cell": case.cell, "weights": w, "output_activation": case.output}
    if case.cell == "gru":
        model["gru_reset"] = case.gru_reset
    if case.cell == "rnn":
        model["hidden_activation"] = case.hidden
    body = {"model": model}
    if p.get("inputs") is not None:
        body["inputs"] = p["inputs"].tolist()
    else:
        body["tokens"] = case.tokens
    if case.layer:
        body["upstream"] = {"hidden": case.upstream.tolist()}
    else:
        body.update(targets=case.targets, loss=case.loss, reduction=case.reduction)
    body["h_init"] = p["h_init"].tolist()
    if p.get("c_init") is not None:
        body["c_init"] = p["c_init"].tolist()
    return body


# --- each layout, by hand: (weights from the lecture's, lecture gradients to the layout's) ---

def cs231n_weights(p, cell, H):
    order = [0, 1, 3, 2] if cell == "lstm" else [0]          # CS231n's i, f, o, g from i, f, g, o
    G = GATE_BLOCKS[cell]

    def cols(M):
        return np.concatenate([blocks(M, G, H)[k] for k in order]).T

    def vec(b):
        return np.concatenate([blocks(b, G, H)[k] for k in order])
    w = {"Wx": cols(p["V"]), "Wh": cols(p["W"]), "b": vec(p["b_h"])}
    if p.get("U") is not None:
        w.update(W_vocab=p["U"].T, b_vocab=p["b_y"])
    return w


def cs231n_grads(g, cell, H):
    out = cs231n_weights({"V": g["V"], "W": g["W"], "b_h": g["b_h"], "U": g.get("U"), "b_y": g.get("b_y")},
                         cell, H)
    return out


def coursera_weights(p, cell, H):
    if cell == "rnn":
        w = {"Wax": p["V"], "Waa": p["W"], "ba": p["b_h"][:, None]}
        if p.get("U") is not None:
            w.update(Wya=p["U"], by=p["b_y"][:, None])
        return w
    w = {}
    for k, gate in enumerate("ifco"):                          # c is the lecture's g (block 2)
        rows = slice(k * H, (k + 1) * H)
        w[f"W{gate}"] = np.hstack([p["W"][rows], p["V"][rows]])   # acting on [a_prev; x_t]
        w[f"b{gate}"] = p["b_h"][rows][:, None]
    if p.get("U") is not None:
        w.update(Wy=p["U"], by=p["b_y"][:, None])
    return w


def pytorch_weights(p, cell, H, split):
    """bias_ih + bias_hh = b_h (the GRU's n block: bias_ih = b_n, bias_hh = b_hn)."""
    b_ih, b_hh = p["b_h"] - split, split.copy()
    if cell == "gru":
        b_ih[2 * H:] = p["b_h"][2 * H:]
        b_hh[2 * H:] = p["b_hn"] if p.get("b_hn") is not None else 0.0
    w = {"weight_ih_l0": p["V"], "weight_hh_l0": p["W"], "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    if p.get("U") is not None:
        w.update({"fc.weight": p["U"], "fc.bias": p["b_y"]})
    return w


def pytorch_grads(g, cell, H):
    b_hh = g["b_h"].copy()
    if cell == "gru":
        b_hh[2 * H:] = g["b_hn"]
    w = {"weight_ih_l0": g["V"], "weight_hh_l0": g["W"], "bias_ih_l0": g["b_h"], "bias_hh_l0": b_hh}
    if "U" in g:
        w.update({"fc.weight": g["U"], "fc.bias": g["b_y"]})
    return w


def min_char_weights(p):
    return {"Wxh": p["V"], "Whh": p["W"], "Why": p["U"], "bh": p["b_h"][:, None], "by": p["b_y"][:, None]}


def time_last(a):
    """B×T×F → F×B×T (Coursera)."""
    return np.transpose(np.asarray(a), (2, 0, 1))


def state_of(layout, h, batched):
    h = np.asarray(h)
    if layout == "coursera":
        return h.T if h.ndim == 2 else h[:, None]
    if layout == "pytorch":
        return h[None]
    if layout == "min-char-rnn":
        return h[:, None]
    return h


def to_layout(layout, case, p, body, split=None):
    """The lecture body of (case, p) in `layout`, and a function mapping the lecture's answer
    to what the layout's answer must be."""
    H = p["W"].shape[1]
    cell = case.cell
    out = {k: v for k, v in body.items()}
    out["layout"] = layout
    model = dict(body["model"])
    batched = case.B is not None
    if layout == "cs231n":
        w = cs231n_weights(p, cell, H)
    elif layout == "coursera":
        w = coursera_weights(p, cell, H)
    elif layout == "pytorch":
        w = pytorch_weights(p, cell, H, split)
    else:
        w = min_char_weights(p)
    model["weights"] = {k: np.asarray(v).tolist() for k, v in w.items()}
    out["model"] = model
    for name in ("h_init", "c_init"):
        if name in body:
            out[name] = state_of(layout, body[name], batched).tolist()
    if layout == "coursera":
        if "inputs" in body:
            out["inputs"] = time_last(body["inputs"]).tolist()
        if "upstream" in body:
            out["upstream"] = {"hidden": time_last(body["upstream"]["hidden"]).tolist()}

    def expected(answer: dict) -> dict:
        e = dict(answer)
        if layout == "coursera":
            for k in ("outputs", "hidden", "cell"):
                if e.get(k) is not None:
                    e[k] = time_last(e[k])
        if "gradients" in answer:
            g = {k: np.asarray(v) for k, v in answer["gradients"].items()}
            if layout == "cs231n":
                mapped = cs231n_grads(g, cell, H)
            elif layout == "coursera":
                mapped = coursera_weights(g, cell, H)
            elif layout == "pytorch":
                mapped = pytorch_grads(g, cell, H)
            else:
                mapped = min_char_weights(g)
            for k in ("h_init", "c_init"):
                if k in g:
                    mapped[k] = state_of(layout, g[k], batched)
            if "inputs" in g:
                mapped["inputs"] = time_last(g["inputs"]) if layout == "coursera" else g["inputs"]
            e["gradients"] = mapped
        return e
    return out, expected


def same(got, want, path=""):
    if isinstance(want, dict):
        assert set(got) == set(want), (path, sorted(got), sorted(want))
        for k in want:
            same(got[k], want[k], f"{path}.{k}")
    elif want is None or isinstance(want, (bool, str)):
        assert got == want, path
    elif isinstance(want, list) and any(v is None for v in np.ravel(np.array(want, dtype=object))):
        assert got == want, path
    else:
        g, w = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
        assert g.shape == w.shape, (path, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13, err_msg=path)


CELLS = {"cs231n": ("rnn", "lstm"), "coursera": ("rnn", "lstm"), "pytorch": ("rnn", "lstm", "gru"),
         "min-char-rnn": ("rnn",)}
SHAPES = {"cs231n": (None, 2), "coursera": (1, 3), "pytorch": (None, 2), "min-char-rnn": (None,)}
ROUND_TRIPS = [(layout, cell, B, layer, tokens)
               for layout, cells in CELLS.items() for cell in cells for B in SHAPES[layout]
               for layer in ((False, True) if layout != "min-char-rnn" else (False,))
               for tokens in ((False, True) if not layer else (False,))]


@pytest.mark.parametrize("layout,cell,B,layer,tokens", ROUND_TRIPS)
@pytest.mark.parametrize("endpoint", ["forward", "gradients"])
def test_a_layout_gives_the_lecture_numbers_under_the_mapping(client, layout, cell, B, layer, tokens, endpoint):
    seed = zlib.crc32(repr((layout, cell, B, layer, tokens)).encode()) % 1000
    case, p = random_case(seed, cell=cell, B=B, T=4, H=3, D=3, N=4, tokens=tokens, layer=layer,
                          output_layer=not layer or layout == "cs231n",
                          per_sequence_init=B is not None and layout in ("pytorch", "coursera"))
    body = lecture_body(case, p)
    split = np.random.default_rng(seed).normal(size=p["b_h"].shape)
    sent, expected = to_layout(layout, case, p, body, split)
    lecture = client.post(f"/v1/{endpoint}", json=body)
    assert lecture.status_code == 200, lecture.get_json()
    got = client.post(f"/v1/{endpoint}", json=sent)
    assert got.status_code == 200, got.get_json()
    same(got.get_json(), expected(lecture.get_json()))


def test_a_shared_state_in_coursera_is_a_column_and_its_gradient_one_too(client):
    case, p = random_case(3, cell="lstm", B=3, T=3, H=2, D=2, N=3)
    body = lecture_body(case, p)            # h_init, c_init: H numbers shared by the batch
    sent, expected = to_layout("coursera", case, p, body)
    assert np.array(sent["h_init"]).shape == (2, 1)
    got = client.post("/v1/gradients", json=sent).get_json()
    same(got, expected(client.post("/v1/gradients", json=body).get_json()))
    assert np.array(got["gradients"]["c_init"]).shape == (2, 1)


# --- errors: pointers at the caller's own names, as sent ---

def _z(*shape):
    return np.full(shape, 0.1).tolist()


H_, D_, N_, T_, B_ = 3, 2, 4, 3, 2
BODIES = {
    "cs231n": {"layout": "cs231n", "model": {"cell": "lstm", "weights": {
        "Wx": _z(D_, 4 * H_), "Wh": _z(H_, 4 * H_), "b": _z(4 * H_), "W_vocab": _z(H_, N_), "b_vocab": _z(N_)}},
        "inputs": _z(B_, T_, D_), "targets": [[0] * T_] * B_},
    "coursera": {"layout": "coursera", "model": {"cell": "lstm", "weights": {
        **{f"W{g}": _z(H_, H_ + D_) for g in "fico"}, **{f"b{g}": _z(H_, 1) for g in "fico"},
        "Wy": _z(N_, H_), "by": _z(N_, 1)}}, "inputs": _z(D_, B_, T_), "targets": [[0] * T_] * B_},
    "pytorch": {"layout": "pytorch", "model": {"cell": "gru", "weights": {
        "weight_ih_l0": _z(3 * H_, D_), "weight_hh_l0": _z(3 * H_, H_), "bias_ih_l0": _z(3 * H_),
        "bias_hh_l0": _z(3 * H_), "fc.weight": _z(N_, H_), "fc.bias": _z(N_)}},
        "inputs": _z(B_, T_, D_), "targets": [[0] * T_] * B_, "h_init": _z(1, B_, H_)},
    "min-char-rnn": {"layout": "min-char-rnn", "model": {"weights": {
        "Wxh": _z(H_, D_), "Whh": _z(H_, H_), "Why": _z(N_, H_), "bh": _z(H_, 1), "by": _z(N_, 1)}},
        "tokens": [0, 1, 1], "targets": [0, 1, 2], "h_init": _z(H_, 1)},
}


def _errors(client, body, endpoint="gradients"):
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 422, r.get_json()
    assert r.mimetype == "application/problem+json"
    return r.get_json()["errors"]


@pytest.mark.parametrize("layout", sorted(BODIES))
def test_each_layout_body_is_answered(client, layout):
    assert client.post("/v1/gradients", json=BODIES[layout]).status_code == 200


@pytest.mark.parametrize("layout,field,shape", [
    ("cs231n", "Wh", (H_, 3 * H_)), ("cs231n", "b", (3 * H_,)), ("cs231n", "W_vocab", (N_, H_)),
    ("coursera", "Wi", (H_, H_ + D_ + 1)), ("coursera", "bo", (H_ + 1, 1)), ("coursera", "Wy", (N_, H_ + 1)),
    ("pytorch", "bias_hh_l0", (2 * H_,)), ("pytorch", "weight_ih_l0", (3 * H_ + 1, D_)),
    ("pytorch", "fc.weight", (N_, H_ + 1)), ("min-char-rnn", "Why", (N_, H_ + 1)),
    ("min-char-rnn", "bh", (H_ + 1, 1))])
def test_a_wrong_shape_names_the_layouts_field(client, layout, field, shape):
    body = json_copy(BODIES[layout])
    body["model"]["weights"][field] = _z(*shape)
    errors = _errors(client, body)
    assert [e["pointer"] for e in errors] == [f"/model/weights/{field}"]
    assert field in errors[0]["detail"] and errors[0]["code"] == "shape"
    assert str(list(shape)) in errors[0]["detail"]              # what was sent


def json_copy(x):
    import copy
    return copy.deepcopy(x)


@pytest.mark.parametrize("layout", sorted(BODIES))
@pytest.mark.parametrize("name", ["V", "b_h"])
def test_a_lecture_name_in_another_layout_is_a_422_with_its_pointer(client, layout, name):
    body = json_copy(BODIES[layout])
    body["model"]["weights"][name] = _z(3, 3) if name == "V" else _z(3)
    errors = _errors(client, body, "forward")
    assert [e["pointer"] for e in errors] == [f"/model/weights/{name}"]
    assert errors[0]["code"] == "unknown_field" and "lecture" in errors[0]["detail"]


@pytest.mark.parametrize("layout,cell", [("cs231n", "gru"), ("coursera", "gru"), ("min-char-rnn", "lstm"),
                                         ("min-char-rnn", "gru")])
def test_a_cell_the_layout_does_not_have_is_a_422(client, layout, cell):
    body = json_copy(BODIES[layout])
    body["model"]["cell"] = cell
    errors = _errors(client, body, "forward")
    assert [e["pointer"] for e in errors] == ["/model/cell"]
    assert layout in errors[0]["detail"]


@pytest.mark.parametrize("layout,field", [("cs231n", "Wh"), ("coursera", "bc"), ("pytorch", "bias_ih_l0"),
                                          ("min-char-rnn", "Whh")])
def test_a_missing_field_is_named(client, layout, field):
    body = json_copy(BODIES[layout])
    del body["model"]["weights"][field]
    errors = _errors(client, body)
    assert errors == [{"pointer": f"/model/weights/{field}", "detail": "required field is missing",
                       "code": "required"}]


def test_elements_are_pointed_at_as_sent(client):
    body = json_copy(BODIES["coursera"])
    body["model"]["weights"]["Wf"][2][4] = "x"
    body["inputs"][1][0][2] = None
    errors = _errors(client, body)
    assert {e["pointer"] for e in errors} == {"/model/weights/Wf/2/4", "/inputs/1/0/2"}
    body = json_copy(BODIES["cs231n"])
    body["model"]["weights"]["Wx"][1][7] = True
    assert [e["pointer"] for e in _errors(client, body)] == ["/model/weights/Wx/1/7"]


def test_per_step_arrays_are_checked_in_the_layouts_axes(client):
    body = json_copy(BODIES["coursera"])
    body["inputs"] = _z(D_, B_, T_)
    body["inputs"][1][0] = [0.1] * (T_ + 1)                    # one ragged time axis
    errors = _errors(client, body)
    assert errors[0]["pointer"] == "/inputs/1/0" and "T_x" in errors[0]["detail"]
    body = json_copy(BODIES["coursera"])
    body["h_init"] = _z(H_, B_ + 1)
    errors = _errors(client, body)
    assert errors[0]["pointer"] == "/h_init/0" and "m" in errors[0]["detail"]
    body = json_copy(BODIES["coursera"])
    body["inputs"] = _z(B_, D_)                                # not time-last n_x×m×T_x
    assert _errors(client, body)[0]["pointer"] == "/inputs"
    body = json_copy(BODIES["pytorch"])
    body["h_init"] = _z(B_, H_)                                # h_0 is 1×B×H
    assert _errors(client, body)[0]["pointer"] == "/h_init"
    body = json_copy(BODIES["min-char-rnn"])
    body.update(tokens=[[0, 1, 1]], targets=[[0, 1, 2]])       # one sequence only
    assert _errors(client, body)[0]["pointer"] == "/tokens"


def test_pytorch_gru_is_reset_after_and_its_output_layer_comes_whole(client):
    body = json_copy(BODIES["pytorch"])
    body["model"]["gru_reset"] = "before"
    assert [e["pointer"] for e in _errors(client, body)] == ["/model/gru_reset"]
    body = json_copy(BODIES["pytorch"])
    del body["model"]["weights"]["fc.bias"]
    assert [e["pointer"] for e in _errors(client, body)] == ["/model/weights/fc.bias"]


def test_binary_arrays_work_in_a_layout(client):
    import base64
    body = json_copy(BODIES["coursera"])

    def binary(x):
        a = np.asarray(x, dtype="<f8")
        return {"dtype": "float64", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}
    sent = json_copy(body)
    sent["model"]["weights"]["Wf"] = binary(body["model"]["weights"]["Wf"])
    sent["inputs"] = binary(np.linspace(-1, 1, D_ * B_ * T_).reshape(D_, B_, T_))
    body["inputs"] = np.linspace(-1, 1, D_ * B_ * T_).reshape(D_, B_, T_).tolist()
    a, b = client.post("/v1/gradients", json=body), client.post("/v1/gradients", json=sent)
    assert a.status_code == b.status_code == 200, b.get_json()
    assert a.get_json()["gradients"] == b.get_json()["gradients"]


@pytest.mark.parametrize("endpoint", ["forward", "gradients", "gradcheck", "grade"])
@pytest.mark.parametrize("change", [{"layout": ["cs231n"]}, {"layout": {"a": 1}}, {"model__cell": ["lstm"]},
                                    {"model__weights__W_vocab": None}])
def test_odd_values_in_a_layout_are_422_never_500(client, endpoint, change):
    body = json_copy(BODIES["cs231n"])
    body["submission"] = {"loss": 1.0}
    for path, value in change.items():
        node = body
        *parents, last = path.split("__")
        for k in parents:
            node = node[k]
        if value is None:
            del node[last]
        else:
            node[last] = value
    if endpoint != "grade":
        del body["submission"]
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 422, r.get_json()
