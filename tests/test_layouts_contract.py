"""The layouts in openapi.yaml: the schema (JSON Schema if/then on the top-level `layout`)
and the service give the same verdict on layout probes, and the schema refuses with the
caller's field (a lecture name in another layout, a layout's missing field, an unknown layout)."""
from __future__ import annotations

import copy

import pytest
from jsonschema.exceptions import ValidationError

from tests.openapi_spec import SPEC, check, deref, request_schema

CS231N = {"layout": "cs231n", "model": {"weights": {
    "Wx": [[0.1, 0.2], [0.3, -0.1]], "Wh": [[0.5, 0.1], [-0.2, 0.3]], "b": [0.0, 0.1],
    "W_vocab": [[1.0, 0.5, 0.3], [2.0, -1.0, 0.3]], "b_vocab": [0.0, 0.0, 0.1]}},
    "tokens": [0, 1, 1], "targets": [2, None, 0]}
PYTORCH = {"layout": "pytorch", "model": {"weights": {
    "weight_ih_l0": [[0.1, 0.2], [0.3, -0.1]], "weight_hh_l0": [[0.5, 0.1], [-0.2, 0.3]],
    "bias_ih_l0": [0.0, 0.1], "bias_hh_l0": [0.2, -0.1],
    "fc.weight": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "fc.bias": [0.0, 0.0, 0.1]}},
    "inputs": [[0.5, -1.0], [0.1, 0.2], [1.0, 0.0]], "targets": [2, None, 0], "h_init": [[0.1, -0.2]]}
MIN_CHAR = {"layout": "min-char-rnn", "model": {"weights": {
    "Wxh": [[0.1, 0.2], [0.3, -0.1]], "Whh": [[0.5, 0.1], [-0.2, 0.3]], "bh": [[0.0], [0.1]],
    "Why": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "by": [[0.0], [0.0], [0.1]]}},
    "tokens": [0, 1, 1], "targets": [2, None, 0], "h_init": [[0.1], [0.2]]}


def edit(body, **changes):
    out = copy.deepcopy(body)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out


W = "model__weights__"
PROBES = [  # (name, endpoint, body, accepted, pointer of the refusal)
    ("cs231n rnn", "gradients", CS231N, True, None),
    ("pytorch rnn, h_0 1×H", "gradients", PYTORCH, True, None),
    ("min-char-rnn, hprev H×1", "gradients", MIN_CHAR, True, None),
    ("the lecture's layout named", "forward", {**edit(CS231N, layout="lecture"), "model": {"weights": {
        "V": [[0.1, 0.2], [0.3, -0.1]], "W": [[0.5, 0.1], [-0.2, 0.3]], "b_h": [0.0, 0.1],
        "U": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "b_y": [0.0, 0.0, 0.1]}}}, True, None),
    ("V in cs231n", "forward", edit(CS231N, **{W + "V": [[0.1]]}), False, "/model/weights/V"),
    ("b_h in pytorch", "gradients", edit(PYTORCH, **{W + "b_h": [0.1, 0.2]}), False, "/model/weights/b_h"),
    ("Wh missing in cs231n", "forward", edit(CS231N, **{W + "Wh": None}), False, "/model/weights/Wh"),
    ("bh missing in min-char-rnn", "forward", edit(MIN_CHAR, **{W + "bh": None}), False, "/model/weights/bh"),
    ("a string in Wx", "forward", edit(CS231N, **{W + "Wx": [[0.1, "x"], [0.3, -0.1]]}), False,
     "/model/weights/Wx/0/1"),
    ("cs231n weights in the lecture's layout", "forward", edit(CS231N, layout=None), False,
     "/model/weights/Wx"),
    ("an unknown layout", "forward", edit(CS231N, layout="keras"), False, "/layout"),
    ("gradcheck of Wh", "gradcheck", {**CS231N, "check": {"parameters": ["Wh"]}}, True, None),
    ("gradcheck of Q", "gradcheck", {**CS231N, "check": {"parameters": ["Q"]}}, False, "/check/parameters/0"),
    ("grade of Wx", "grade", {**CS231N, "submission": {"gradients": {"Wx": [[0.0, 0.0], [0.0, 0.0]]}}}, True, None),
    ("grade of V in cs231n", "grade", {**CS231N, "submission": {"gradients": {"V": [[0.0]]}}}, False,
     "/submission/gradients/V"),
    ("grade of Wx in the lecture's layout", "grade", {**edit(CS231N, layout="lecture"), "model": {"weights": {
        "V": [[0.1, 0.2], [0.3, -0.1]], "W": [[0.5, 0.1], [-0.2, 0.3]], "b_h": [0.0, 0.1],
        "U": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "b_y": [0.0, 0.0, 0.1]}},
        "submission": {"gradients": {"Wx": [[0.0]]}}}, False, "/submission/gradients/Wx"),
    ("pytorch without fc.bias, no upstream", "gradients", edit(PYTORCH, **{W + "fc.bias": None}), False,
     "/model/weights/fc.bias"),
    ("problems in pytorch", "problems", {"layout": "pytorch", "seed": 3}, True, None),
    ("problems in keras", "problems", {"layout": "keras"}, False, "/layout"),
]


@pytest.mark.parametrize("name,endpoint,body,accepted,where", PROBES, ids=[p[0] for p in PROBES])
def test_the_schema_and_the_service_agree_on_layouts(client, name, endpoint, body, accepted, where):
    try:
        check(body, request_schema(f"/v1/{endpoint}"))
        schema_ok = True
    except ValidationError:
        schema_ok = False
    r = client.post(f"/v1/{endpoint}", json=body)
    assert (r.status_code == 200) == accepted, r.get_json()
    if not accepted:
        assert where in [e["pointer"] for e in r.get_json()["errors"]]
    # the schema refuses too, unless the service's reason is a rule JSON Schema cannot state
    stated = accepted or any(e["code"] not in ("shape", "depends", "exactly_one") for e in r.get_json()["errors"])
    assert schema_ok == accepted or (schema_ok and not stated), name


def test_every_layout_has_its_weights_in_the_schema_with_shapes():
    from schemas.layouts import LAYOUTS
    schemas = SPEC["components"]["schemas"]
    assert schemas["Layout"]["enum"] == list(LAYOUTS)
    named = {"cs231n": ["Cs231nWeights"], "coursera": ["CourseraRnnWeights", "CourseraLstmWeights"],
             "pytorch": ["PytorchWeights"], "min-char-rnn": ["MinCharRnnWeights"]}
    for layout, components in named.items():
        fields = {f: shape for c in LAYOUTS[layout].cells for f, shape in LAYOUTS[layout].fields(c).items()}
        props = {}
        for comp in components:
            props.update(deref(schemas[comp], SPEC)["properties"])
        assert set(props) == set(fields), layout
        for f, shape in fields.items():
            assert "×".join(shape) in props[f]["description"], (layout, f)
