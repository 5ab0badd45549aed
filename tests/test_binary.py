"""Binary arrays: {"dtype": "float64", "shape": [...], "data": base64 of little-endian bytes}
wherever a vector or matrix is taken, and in responses on request."""
import base64
import copy
import struct

import numpy as np
import pytest

BINARY = {"Accept": "application/json; arrays=base64"}


def encode(values, shape) -> dict:
    """Written here with struct, independent of the service's numpy encoder."""
    flat = [float(x) for x in np.asarray(values, dtype=float).ravel()]
    return {"dtype": "float64", "shape": list(shape),
            "data": base64.b64encode(struct.pack(f"<{len(flat)}d", *flat)).decode()}


def decode(obj: dict) -> np.ndarray:
    raw = base64.b64decode(obj["data"])
    return np.array(struct.unpack(f"<{len(raw) // 8}d", raw)).reshape(obj["shape"])


def as_binary(body: dict, *names: str) -> dict:
    """A copy of body with the named weights (or h_init / inputs) sent as binary arrays."""
    out = copy.deepcopy(body)
    for name in names:
        holder = out if name in ("h_init", "inputs") else out["model"]["weights"]
        a = np.array(holder[name], dtype=float)
        holder[name] = encode(a, a.shape)
    return out


@pytest.fixture
def awkward_body(small_body):
    """Values whose decimal text is long or special: a binary round trip must keep every bit."""
    w = small_body["model"]["weights"]
    w["V"] = [[0.1, 1 / 3], [-0.0, 5e-324]]
    w["W"] = [[2 ** -0.5, -1e-300], [np.pi / 7, 0.30000000000000004]]
    small_body["h_init"] = [0.25, -1 / 9]
    return small_body


def test_binary_weights_give_bitwise_the_json_result(client, awkward_body):
    plain = client.post("/v1/gradients", json=awkward_body)
    binary = client.post("/v1/gradients", json=as_binary(awkward_body, "V", "W", "U", "b_h", "b_y", "h_init"))
    assert plain.status_code == binary.status_code == 200
    assert binary.get_json() == plain.get_json()


def test_binary_inputs_equal_json_inputs(client, small_body):
    body = copy.deepcopy(small_body)
    del body["tokens"]
    body["inputs"] = [[0.5, -1.0], [0.1, 0.2], [1 / 3, 0.0]]
    plain = client.post("/v1/forward", json=body)
    binary = client.post("/v1/forward", json=as_binary(body, "inputs"))
    assert plain.status_code == binary.status_code == 200
    assert binary.get_json() == plain.get_json()


def test_binary_response_decodes_to_the_json_numbers_exactly(client, awkward_body):
    plain = client.post("/v1/gradients", json=awkward_body).get_json()
    response = client.post("/v1/gradients", json=awkward_body, headers=BINARY)
    assert response.status_code == 200
    assert "Accept" in response.headers.get("Vary", "")
    got = response.get_json()
    for name in ("V", "W", "U", "b_h", "b_y", "h_init"):
        g = got["gradients"][name]
        assert g["dtype"] == "float64"
        expected = np.array(plain["gradients"][name])
        assert g["shape"] == list(expected.shape)
        assert decode(g).tobytes() == expected.tobytes()        # every bit
    assert decode(got["bptt"]["b_h_by_step"]).tobytes() == np.array(plain["bptt"]["b_h_by_step"]).tobytes()
    assert decode(got["outputs"]).shape == (3, 3)
    # scalars and lists with nulls stay JSON
    assert got["loss"] == plain["loss"]
    assert got["step_losses"] == plain["step_losses"]


def test_query_parameter_asks_for_binary_too(client, small_body):
    got = client.post("/v1/forward?arrays=base64", json=small_body).get_json()
    assert set(got["hidden"]) == {"dtype", "shape", "data"}


def test_json_stays_the_default(client, small_body):
    for accept in (None, "application/json", "*/*"):
        headers = {"Accept": accept} if accept else {}
        got = client.post("/v1/forward", json=small_body, headers=headers).get_json()
        assert isinstance(got["hidden"], list) and isinstance(got["hidden"][0][0], float)


def test_round_trip_response_back_into_a_request(client, small_body):
    """Arrays from a binary response can be sent back as they are (e.g. a gradient step)."""
    got = client.post("/v1/gradients", json=small_body, headers=BINARY).get_json()
    body = copy.deepcopy(small_body)
    body["h_init"] = got["gradients"]["h_init"]
    again = client.post("/v1/forward", json=body)
    assert again.status_code == 200
    plain = copy.deepcopy(small_body)
    plain["h_init"] = decode(got["gradients"]["h_init"]).tolist()
    assert again.get_json() == client.post("/v1/forward", json=plain).get_json()


def _errors(response):
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return {e["pointer"]: e["detail"] for e in response.get_json()["errors"]}


@pytest.mark.parametrize("field, value, where, words", [
    ("W", {"dtype": "float64", "shape": [2, 2], "data": base64.b64encode(b"\0" * 24).decode()},
     "/model/weights/W/data", "24 bytes"),
    ("W", {"dtype": "float64", "shape": [2, 2], "data": "not base64!"}, "/model/weights/W/data", "base64"),
    ("W", {"dtype": "float32", "shape": [2, 2], "data": encode(np.zeros(4), [4])["data"]},
     "/model/weights/W/dtype", "float64"),
    ("W", encode(np.zeros(4), [4]), "/model/weights/W/shape", "2 entries"),
    ("b_h", encode(np.zeros((1, 2)), [1, 2]), "/model/weights/b_h/shape", "1 entry"),
    ("b_h", encode([np.nan, 1.0], [2]), "/model/weights/b_h/data", "element 0"),
    ("b_h", encode([1.0, np.inf], [2]), "/model/weights/b_h/data", "element 1"),
    ("W", encode(np.zeros((2, 3)), [2, 3]), "/model/weights/W", "2 columns"),
    ("V", encode(np.zeros((3, 2)), [3, 2]), "/model/weights/V", "2 rows"),
    ("b_y", encode(np.zeros(2), [2]), "/model/weights/b_y", "3 entries"),
    ("W", {"dtype": "float64", "shape": [2, 2], "data": "", "extra": 1}, "/model/weights/W/extra", "unknown"),
    ("W", "abc", "/model/weights/W", "binary array"),
])
def test_bad_binary_arrays_point_at_the_field(client, small_body, field, value, where, words):
    small_body["model"]["weights"][field] = value
    errors = _errors(client.post("/v1/gradients", json=small_body))
    assert where in errors, errors
    assert words in errors[where]


def test_bad_json_arrays_keep_their_pointers(client, small_body):
    small_body["model"]["weights"]["W"][0][1] = "0.1"
    small_body["model"]["weights"]["b_h"][1] = True
    errors = _errors(client.post("/v1/gradients", json=small_body))
    assert errors == {"/model/weights/W/0/1": "must be a JSON number",
                      "/model/weights/b_h/1": "must be a JSON number"}


def test_binary_h_init_of_wrong_length(client, small_body):
    small_body["h_init"] = encode([0.0, 0.0, 0.0], [3])
    assert "/h_init" in _errors(client.post("/v1/forward", json=small_body))


def _vector_targets_body(small_body, loss: str, targets: list) -> dict:
    small_body["model"]["output_activation"] = "sigmoid" if loss == "binary_cross_entropy" else "identity"
    small_body["loss"] = loss
    small_body["targets"] = targets
    return small_body


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "squared_error"])
def test_vector_targets_may_be_binary(client, small_body, loss):
    plain = [[0.25, 1.0, 0.0], None, [1 / 3, 0.5, 0.75]]
    binary = [encode(y, [3]) if y is not None else None for y in plain]
    a = client.post("/v1/gradients", json=_vector_targets_body(copy.deepcopy(small_body), loss, plain))
    b = client.post("/v1/gradients", json=_vector_targets_body(small_body, loss, binary))
    assert a.status_code == b.status_code == 200
    assert a.get_json() == b.get_json()


@pytest.mark.parametrize("target, where, words", [
    (encode([0.5, 0.5], [2]), "/targets/2", "3 entries"),
    (encode([0.5, 1.5, 0.0], [3]), "/targets/2/data", "element 1 is outside [0, 1]"),
    (encode([0.5, np.nan, 0.0], [3]), "/targets/2/data", "element 1"),
    ({"dtype": "float64", "shape": [3], "data": "AAAA"}, "/targets/2/data", "3 bytes"),
    ({"dtype": "float64", "shape": [3, 1], "data": ""}, "/targets/2/shape", "1 entry"),
])
def test_bad_binary_targets_point_into_the_entry(client, small_body, target, where, words):
    body = _vector_targets_body(small_body, "binary_cross_entropy", [[0.0, 1.0, 0.0], None, target])
    errors = _errors(client.post("/v1/gradients", json=body))
    assert where in errors, errors
    assert words in errors[where]


def test_a_submission_may_be_binary(client, small_body):
    reference = client.post("/v1/gradients", json=small_body).get_json()["gradients"]
    body = {**small_body, "submission": {"gradients": {
        "W": encode(reference["W"], [2, 2]),                      # right
        "b_h": encode(np.array(reference["b_h"]) * 2, [2]),       # scaled by 2
        "U": encode(np.zeros(6), [2, 3])}}}                       # wrong shape: a failed check
    got = client.post("/v1/grade", json=body)
    assert got.status_code == 200, got.get_data(as_text=True)
    checks = {c["name"]: c for c in got.get_json()["checks"]}
    assert checks["gradients.W"]["passed"]
    assert not checks["gradients.b_h"]["passed"]
    assert not checks["gradients.U"]["passed"] and checks["gradients.U"]["error"] == "expected 3×2, got 2×3"


def test_a_binary_submission_of_the_wrong_rank_is_a_422_at_its_shape(client, small_body):
    """The rank of every answer is known (U a matrix, b_h a vector, loss a number): a binary
    array states it in its shape, and openapi.yaml says so; a wrong size is a failed check."""
    body = {**small_body, "submission": {"loss": encode([1.0], [1]),
                                         "gradients": {"U": encode(np.zeros(6), [6])}}}
    errors = _errors(client.post("/v1/grade", json=body))
    assert {"/submission/loss/shape", "/submission/gradients/U/shape"} <= set(errors), errors


def test_a_bad_binary_submission_points_into_it(client, small_body):
    body = {**small_body, "submission": {"gradients": {"W": {"dtype": "float64", "shape": [2, 2], "data": "AA=="}}}}
    errors = _errors(client.post("/v1/grade", json=body))
    assert "/submission/gradients/W/data" in errors, errors
