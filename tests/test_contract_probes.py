"""The served openapi.yaml and the service give the same verdict on every probe body.

Each probe is validated against the request schema of GET /openapi.yaml with a JSON Schema
2020-12 validator (jsonschema) *and* sent to the service. The verdicts must agree: a body the
schema accepts is answered 200, or refused only for a rule JSON Schema cannot state (every error
code in tests/contract.py's CANNOT_STATE); a body the schema refuses is refused, with a pointer
to the value at fault. The probes are the integers, binary ranks, nulls, conditional fields and
number ranges where the two once disagreed, plus answers validated against the response schemas."""
from __future__ import annotations

import base64
import copy
import json
import struct
from dataclasses import dataclass

import numpy as np
import pytest

from tests import reference as ref
from tests.contract import (CANNOT_STATE, header_validator, refused_for_unstateable_rules,
                            request_validator, response_validator, served_spec)

BASE = {   # T 3, H 2, D 2, N 3, cross-entropy over tokens, one unscored step
    "model": {"weights": {"V": [[0.1, 0.2], [0.3, -0.1]], "W": [[0.5, 0.1], [-0.2, 0.3]],
                          "U": [[1.0, 2.0], [0.5, -1.0], [0.3, 0.3]], "b_h": [0.0, 0.1],
                          "b_y": [0.0, 0.0, 0.1]}},
    "tokens": [0, 1, 1], "targets": [2, None, 0]}
DENSE = {  # the same weights, dense inputs and squared error on identity outputs
    "model": {"weights": copy.deepcopy(BASE["model"]["weights"]), "output_activation": "identity"},
    "inputs": [[0.5, -1.0], [0.1, 0.2], [1.0, 0.0]], "targets": [[0.1, 0.2, 0.3], None, [1.0, 0.0, -1.0]]}
SUBMISSION = {"loss": 1.0, "gradients": {"b_y": [0.1, 0.2, 0.3]}}


def binary(values, shape=None) -> dict:
    """A binary array written with struct (independent of the service's encoder)."""
    flat = [float(x) for x in np.asarray(values, dtype=float).ravel()]
    return {"dtype": "float64", "shape": list(np.shape(values)) if shape is None else shape,
            "data": base64.b64encode(struct.pack(f"<{len(flat)}d", *flat)).decode()}


def edit(base: dict, **changes) -> dict:
    """A deep copy of base with changes: keys are '__'-separated paths; the value DELETE deletes."""
    body = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return body


DELETE = object()
W_ = "model__weights__"


@dataclass
class Probe:
    name: str
    path: str
    body: dict | str            # a str is sent as it is (JSON the json module would not write)
    verdict: str                # "accept" (200), "rule" (schema-valid, refused for a CANNOT_STATE rule), "refuse"
    pointer: str | None = None  # for "refuse" and "rule": an error points here

    @property
    def raw(self) -> str:
        return self.body if isinstance(self.body, str) else json.dumps(self.body)


def grade_body(submission, base=BASE) -> dict:
    return {**copy.deepcopy(base), "submission": submission}


F, G, C, R, P = "/v1/forward", "/v1/gradients", "/v1/gradcheck", "/v1/grade", "/v1/problems"

# v1.1 (cells, batches, layer mode): H 2, D 2, N 3, T 3 as BASE, G gate blocks stacked in V, W, b_h
def gated(base: dict, cell: str, **model) -> dict:
    G = {"lstm": 4, "gru": 3}[cell]
    w = base["model"]["weights"]
    body = copy.deepcopy(base)
    body["model"].update(cell=cell, **model)
    body["model"]["weights"].update(V=[list(r) for r in w["V"]] * G, W=[list(r) for r in w["W"]] * G,
                                    b_h=list(w["b_h"]) * G)
    return body


LSTM, GRU = gated(BASE, "lstm"), gated(DENSE, "gru", gru_reset="after")
GRU_BEFORE = gated(BASE, "gru", gru_reset="before")
BATCH = {  # B 2 of DENSE's problem (the second sequence one step shorter: a null-target pad)
    **copy.deepcopy(DENSE), "inputs": [DENSE["inputs"], DENSE["inputs"][::-1]],
    "targets": [DENSE["targets"], [[0.0, 1.0, 0.0], [0.5, 0.5, 0.5], None]],
    "h_init": [[0.1, -0.2], [0.0, 0.3]], "reduction": "batch_mean"}
TOKEN_BATCH = {**copy.deepcopy(BASE), "tokens": [[0, 1, 1], [1, 0, 0]], "targets": [[2, None, 0], [None, None, None]]}
LAYER = {  # an lstm layer alone on a batch: no output layer, upstream instead of targets
    "model": {"cell": "lstm", "weights": {k: v for k, v in LSTM["model"]["weights"].items() if k not in ("U", "b_y")}},
    "inputs": BATCH["inputs"], "h_init": BATCH["h_init"], "c_init": [0.2, -0.1],
    "upstream": {"hidden": [[[0.5, -1.0], [0.0, 0.25], [1.0, 1.0]], [[-0.5, 0.5], [0.1, 0.0], [0.0, 2.0]]]}}
PROBES = [
    # --- 1. integers are JSON Schema's integers: 3.0 is one, 2.5 and true are not
    Probe("tokens as integral floats", G, edit(BASE, tokens=[0.0, 1.0, 1.0]), "accept"),
    Probe("a token 1.5", G, edit(BASE, tokens=[0, 1.5, 1]), "refuse", "/tokens/1"),
    Probe("a token true", F, edit(BASE, tokens=[True, 1, 1]), "refuse", "/tokens/0"),
    Probe("a token '1'", F, edit(BASE, tokens=[0, "1", 1]), "refuse", "/tokens/1"),
    Probe("a token -1.0", F, edit(BASE, tokens=[0, -1.0, 1]), "refuse", "/tokens/1"),
    Probe("class targets as integral floats", G, edit(BASE, targets=[2.0, None, 0.0]), "accept"),
    Probe("a class target 2.5", G, edit(BASE, targets=[2.5, None, 0]), "refuse", "/targets/0"),
    Probe("a class target true", G, edit(BASE, targets=[True, None, 0]), "refuse", "/targets/0"),
    Probe("truncate 2.0", G, edit(BASE, truncate=2.0), "accept"),
    Probe("truncate 2.5", G, edit(BASE, truncate=2.5), "refuse", "/truncate"),
    Probe("truncate true", G, edit(BASE, truncate=True), "refuse", "/truncate"),
    Probe("truncate 0.0", G, edit(BASE, truncate=0.0), "refuse", "/truncate"),
    Probe("samples and seed as integral floats", C,
          edit(BASE, check={"mode": "sample", "samples": 3.0, "seed": 7.0}), "accept"),
    Probe("samples 3.5", C, edit(BASE, check={"mode": "sample", "samples": 3.5}), "refuse", "/check/samples"),
    Probe("seed '7'", C, edit(BASE, check={"mode": "sample", "seed": "7"}), "refuse", "/check/seed"),
    Probe("problem sizes as integral floats", P,
          {"seed": 7.0, "input_size": 2.0, "hidden_size": 3.0, "output_size": 4.0, "steps": 10.0}, "accept"),
    Probe("vocab_size 4.0", P, {"tokens": True, "vocab_size": 4.0, "steps": 3.0}, "accept"),
    Probe("a seed of 1e19 (an integer, above 2**63)", P, {"seed": 1e19}, "accept"),
    Probe("steps 2.5", P, {"steps": 2.5}, "refuse", "/steps"),
    Probe("steps true", P, {"steps": True}, "refuse", "/steps"),
    Probe("seed 2**64", P, {"seed": 2 ** 64}, "refuse", "/seed"),
    Probe("a binary shape of integral floats", G,
          edit(BASE, **{W_ + "V": binary([[0.1, 0.2], [0.3, -0.1]], [2.0, 2.0])}), "accept"),
    # --- 2. binary arrays state their rank
    Probe("binary V of shape [2, 2]", G, edit(BASE, **{W_ + "V": binary([[0.1, 0.2], [0.3, -0.1]])}), "accept"),
    Probe("binary V of shape [4]", G, edit(BASE, **{W_ + "V": binary([0.1, 0.2, 0.3, -0.1])}),
          "refuse", "/model/weights/V/shape"),
    Probe("binary W of shape [2, 2, 1]", F,
          edit(BASE, **{W_ + "W": binary([[0.5, 0.1], [-0.2, 0.3]], [2, 2, 1])}), "refuse", "/model/weights/W/shape"),
    Probe("binary U of shape [6]", F, edit(BASE, **{W_ + "U": binary([1.0, 2.0, 0.5, -1.0, 0.3, 0.3])}),
          "refuse", "/model/weights/U/shape"),
    Probe("binary b_h of shape [2, 1]", F, edit(BASE, **{W_ + "b_h": binary([[0.0], [0.1]])}),
          "refuse", "/model/weights/b_h/shape"),
    Probe("binary b_y of shape []", F, edit(BASE, **{W_ + "b_y": binary(0.5, [])}),
          "refuse", "/model/weights/b_y/shape"),
    Probe("binary h_init of shape [1, 1, 2] (a layout's 3-level state; not one sequence's)", F,
          edit(BASE, h_init=binary([[[0.1, 0.2]]])), "rule", "/h_init"),
    Probe("binary h_init of shape [1, 1, 1, 2]", F, edit(BASE, h_init=binary([[[[0.1, 0.2]]]])), "refuse",
          "/h_init/shape"),
    Probe("h_init as nested arrays of binary vectors", F, edit(BASE, h_init=[[binary([0.1, 0.2])]]), "refuse",
          "/h_init/0/0"),
    Probe("binary inputs of shape [6]", F, edit(DENSE, inputs=binary([0.5, -1.0, 0.1, 0.2, 1.0, 0.0])),
          "refuse", "/inputs/shape"),
    Probe("binary inputs of shape [3, 2]", F, edit(DENSE, inputs=binary([[0.5, -1.0], [0.1, 0.2], [1.0, 0.0]])),
          "accept"),
    Probe("a binary target of shape [3, 1]", G, edit(DENSE, targets__0=binary([[0.1], [0.2], [0.3]])),
          "refuse", "/targets/0/shape"),
    Probe("a binary target of shape [3]", G, edit(DENSE, targets__0=binary([0.1, 0.2, 0.3])), "accept"),
    Probe("a submitted binary gradients.V of shape [4]", R,
          grade_body({"gradients": {"V": binary([1.0, 2.0, 3.0, 4.0])}}), "refuse", "/submission/gradients/V/shape"),
    Probe("a submitted binary gradients.b_h of shape [1, 2]", R,
          grade_body({"gradients": {"b_h": binary([[1.0, 2.0]])}}), "refuse", "/submission/gradients/b_h/shape"),
    Probe("submitted binary outputs of shape [9]", R, grade_body({"outputs": binary(np.zeros(9))}),
          "refuse", "/submission/outputs/shape"),
    Probe("a submitted binary loss of shape [1]", R, grade_body({"loss": binary([1.0])}),
          "refuse", "/submission/loss/shape"),
    Probe("a submitted binary loss of shape []", R, grade_body({"loss": binary(1.0, [])}), "accept"),
    Probe("submitted binary step_losses of shape [3, 1]", R, grade_body({"step_losses": binary(np.zeros((3, 1)))}),
          "refuse", "/submission/step_losses/shape"),
    Probe("a submitted binary gradients.V of the wrong size (a failed check)", R,
          grade_body({"gradients": {"V": binary(np.zeros((2, 3)))}}), "accept"),
    Probe("a binary shape entry 2.5", F,
          edit(BASE, **{W_ + "b_h": {"dtype": "float64", "shape": [2.5], "data": ""}}), "refuse",
          "/model/weights/b_h/shape/0"),
    Probe("binary data without its padding", F,
          edit(BASE, **{W_ + "b_h": {**binary([1.0, 2.0]), "data": binary([1.0, 2.0])["data"].rstrip("=")}}),
          "refuse", "/model/weights/b_h/data"),
    Probe("a binary shape with a 0", F, edit(BASE, **{W_ + "V": {"dtype": "float64", "shape": [0, 2], "data": ""}}),
          "refuse", "/model/weights/V/shape/0"),
    Probe("binary data that is not base64", F,
          edit(BASE, **{W_ + "b_h": {"dtype": "float64", "shape": [2], "data": "!not base64!"}}),
          "refuse", "/model/weights/b_h/data"),
    Probe("binary data of the wrong size", F,
          edit(BASE, **{W_ + "b_h": binary([1.0, 2.0, 3.0], [2])}), "rule", "/model/weights/b_h/data"),
    Probe("binary data holding NaN", F, edit(BASE, **{W_ + "b_h": binary([1.0, float("nan")])}),
          "rule", "/model/weights/b_h/data"),
    # --- 5. nulls, required combinations, number ranges and sizes
    Probe("every target null", G, edit(BASE, targets=[None, None, None]), "refuse", "/targets"),
    Probe("no targets on /v1/forward", F, edit(BASE, targets=DELETE), "accept"),
    Probe("targets null on /v1/forward", F, edit(BASE, targets=None), "accept"),
    Probe("targets null on /v1/gradients (required)", G, edit(BASE, targets=None), "refuse", "/targets"),
    Probe("both inputs and tokens", F, edit(BASE, inputs=[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), "rule", ""),
    Probe("neither inputs nor tokens", F, edit(BASE, tokens=DELETE, targets=DELETE), "rule", ""),
    Probe("tokens null and inputs given", F, edit(DENSE, tokens=None), "accept"),
    Probe("a submitted loss null", R, grade_body({"loss": None}), "refuse", "/submission/loss"),
    Probe("submitted gradients null", R, grade_body({"loss": 1.0, "gradients": None}),
          "refuse", "/submission/gradients"),
    Probe("a null inside submitted outputs", R, grade_body({"outputs": [[0.1, None, 0.2]]}),
          "refuse", "/submission/outputs/0/1"),
    Probe("submitted step_losses with a null on the unscored step", R,
          grade_body({"step_losses": [1.0, None, 2.0]}), "accept"),
    Probe("a submitted boolean", R, grade_body({"loss": True}), "refuse", "/submission/loss"),
    Probe("a weight of 1e400", F, json.dumps(BASE).replace("0.3, -0.1", "1e400, -0.1"), "refuse",
          "/model/weights/V/1/0"),
    Probe("a submitted loss of 10**400", R, json.dumps(grade_body({"loss": 0})).replace('"loss": 0', '"loss": 1' + "0" * 400),
          "refuse", "/submission/loss"),
    Probe("D over the limit (V with 4097 columns)", F,
          edit(BASE, **{W_ + "V": [[0.0] * 4097] * 2}), "refuse", "/model/weights/V"),
    Probe("tokens true without vocab_size", P, {"tokens": True}, "rule", "/vocab_size"),
    Probe("vocab_size without tokens", P, {"vocab_size": 4}, "rule", "/vocab_size"),
    Probe("input_size with tokens", P, {"tokens": True, "vocab_size": 4, "input_size": 3}, "rule", "/input_size"),
    Probe("input_size null with tokens", P, {"tokens": True, "vocab_size": 4, "input_size": None}, "accept"),
    Probe("a parameter named twice", C, edit(BASE, check={"parameters": ["V", "V"]}), "refuse", "/check/parameters"),
    Probe("an unknown field", F, edit(BASE, tokenz=[0]), "refuse", "/tokenz"),
    Probe("eps 0", C, edit(BASE, check={"eps": 0}), "refuse", "/check/eps"),
    Probe("a submitted c_init that is not a state", R, edit(grade_body(SUBMISSION), c_init={"x": 1}), "refuse",
          "/c_init/x"),
    Probe("upstream without hidden", R, edit(grade_body(SUBMISSION), upstream={}), "refuse", "/upstream/hidden"),
    # --- 6. v1.1: cells, batches, layer mode, input gradients
    Probe("an lstm (4H rows)", G, {**LSTM, "include": ["b_h_terms", "jacobian_norms"]}, "accept"),
    Probe("an lstm with c_init and hidden_activation tanh", F, edit(LSTM, c_init=[0.1, 0.2],
                                                                    model__hidden_activation="tanh"), "accept"),
    Probe("a gru after with b_hn", G, edit(GRU, **{W_ + "b_hn": [0.1, -0.1]}), "accept"),
    Probe("a gru before", G, GRU_BEFORE, "accept"),
    Probe("gru_reset null on an rnn", F, edit(BASE, model__gru_reset=None), "accept"),
    Probe("c_init null on a gru", F, edit(GRU, c_init=None), "accept"),
    Probe("a batch B×T×D with B×H h_init, B×T targets, batch_mean", G, BATCH, "accept"),
    Probe("a batch of tokens, one sequence all null", G, TOKEN_BATCH, "accept"),
    Probe("layer mode without an output layer", G, LAYER, "accept"),
    Probe("layer mode with an output layer, targets null", G,
          edit(LAYER, targets=None, **{W_ + "U": LSTM["model"]["weights"]["U"], W_ + "b_y": [0.0, 0.0, 0.1]}), "accept"),
    Probe("layer mode on /v1/forward", F, LAYER, "accept"),
    Probe("a layer's hidden states alone (no upstream, no targets)", F, edit(LAYER, upstream=DELETE), "accept"),
    Probe("binary B×T×D inputs, B×H h_init, B×T×H upstream", G,
          edit(LAYER, inputs=binary(LAYER["inputs"]), h_init=binary(LAYER["h_init"]),
               upstream={"hidden": binary(LAYER["upstream"]["hidden"])}), "accept"),
    Probe("gradcheck of c_init and inputs", C, edit(LAYER, check={"parameters": ["c_init", "inputs"]}), "accept"),
    Probe("gradcheck of b_hn", C, edit(GRU, check={"parameters": ["b_hn"]}), "accept"),
    Probe("an unknown cell", F, edit(LSTM, model__cell="transformer"), "refuse", "/model/cell"),
    Probe("gru_reset middle", F, edit(GRU, model__gru_reset="middle"), "refuse", "/model/gru_reset"),
    Probe("reduction batchmean", G, edit(BATCH, reduction="batchmean"), "refuse", "/reduction"),
    Probe("relu on an lstm", G, edit(LSTM, model__hidden_activation="relu"), "refuse", "/model/hidden_activation"),
    Probe("sigmoid on a gru", F, edit(GRU, model__hidden_activation="sigmoid"), "refuse", "/model/hidden_activation"),
    Probe("gru_reset on an lstm", F, edit(LSTM, model__gru_reset="after"), "refuse", "/model/gru_reset"),
    Probe("gru_reset on an rnn", F, edit(BASE, model__gru_reset="before"), "refuse", "/model/gru_reset"),
    Probe("b_hn with gru_reset before", G, edit(GRU_BEFORE, **{W_ + "b_hn": [0.1, 0.2]}), "refuse",
          "/model/weights/b_hn"),
    Probe("b_hn on an rnn", F, edit(BASE, **{W_ + "b_hn": [0.1, 0.2]}), "refuse", "/model/weights/b_hn"),
    Probe("U without b_y", G, edit(LAYER, **{W_ + "U": LSTM["model"]["weights"]["U"]}), "refuse",
          "/model/weights/b_y"),
    Probe("b_y without U", F, edit(LSTM, **{W_ + "U": DELETE}), "refuse", "/model/weights/U"),
    Probe("/v1/gradients with no output layer and no upstream", G, edit(LAYER, upstream=DELETE), "refuse",
          "/model/weights/U"),
    Probe("/v1/gradcheck with neither targets nor upstream", C, edit(BASE, targets=DELETE), "refuse", "/targets"),
    Probe("upstream null and no targets on /v1/gradients", G, edit(LAYER, upstream=None), "refuse",
          "/model/weights/U"),
    Probe("a bad upstream element", G, edit(LAYER, upstream={"hidden": [[[0.0, 0.0]] * 3, [[0.0, "x"]] * 3]}),
          "refuse", "/upstream/hidden/1/0/1"),
    Probe("upstream with an unknown field", G, edit(LAYER, upstream={**LAYER["upstream"], "cell": [[0.0]]}),
          "refuse", "/upstream/cell"),
    Probe("binary upstream of shape [12]", G, edit(LAYER, upstream={"hidden": binary(np.zeros(12))}), "refuse",
          "/upstream/hidden/shape"),
    Probe("binary inputs of rank 4", G, edit(LAYER, inputs=binary(np.zeros((2, 3, 2, 1)))), "refuse", "/inputs/shape"),
    Probe("inputs nested four deep", F, edit(LAYER, inputs=[[[[0.0, 0.0]]]]), "refuse", "/inputs/0/0/0"),
    Probe("tokens nested three deep", F, edit(BASE, tokens=[[[0, 1, 1]]]), "refuse", "/tokens/0/0"),
    Probe("B over RNN_MAX_B (1025 sequences)", F,
          {**edit(BASE, targets=DELETE), "tokens": [[0]] * 1025}, "refuse", "/tokens"),
    Probe("check.parameters naming an unknown one", C, edit(LAYER, check={"parameters": ["c_init", "Q"]}),
          "refuse", "/check/parameters/1"),
    Probe("/v1/grade of a batch", R, grade_body({"loss": 1.0}, BATCH), "accept"),
    Probe("/v1/grade of a layer", R, grade_body({"loss": 1.0}, LAYER), "accept"),
    Probe("/v1/grade of a layer with targets null", R, edit(grade_body({"loss": 1.0}, LAYER), targets=None), "accept"),
    Probe("/v1/grade without targets or upstream", R, edit(grade_body({"loss": 1.0}), targets=DELETE), "refuse",
          "/targets"),
    Probe("U and b_y null in layer mode (leave them out instead)", G,
          edit(LAYER, **{W_ + "U": None, W_ + "b_y": None}), "refuse", "/model/weights/U"),
    Probe("b_hn null (leave it out instead)", G, edit(GRU, **{W_ + "b_hn": None}), "refuse", "/model/weights/b_hn"),
    # --- v1.1 rules the schema leaves to the service
    Probe("c_init on a gru", F, edit(GRU, c_init=[0.1, 0.2]), "rule", "/c_init"),
    Probe("c_init on an rnn", G, edit(BATCH, c_init=[0.1, 0.2]), "rule", "/c_init"),
    Probe("targets with upstream", G, edit(LAYER, targets=[[0, 1, 2], [0, 1, 2]]), "rule", "/targets"),
    Probe("loss with upstream", G, edit(LAYER, loss="squared_error"), "rule", "/loss"),
    Probe("loss null with upstream", F, edit(LAYER, loss=None), "rule", "/loss"),
    Probe("reduction with upstream", G, edit(LAYER, reduction="sum"), "rule", "/reduction"),
    Probe("/v1/forward with targets but no output layer", F,
          edit(LAYER, upstream=DELETE, targets=[[0, 1, 2], [0, 1, 2]]), "rule", "/targets"),
    Probe("an lstm V with 3H rows", G, edit(LSTM, **{W_ + "V": LSTM["model"]["weights"]["V"][:6]}), "rule",
          "/model/weights/V"),
    Probe("flat targets for batched inputs", G, edit(BATCH, targets=DENSE["targets"][:2]), "rule", "/targets/0"),
    Probe("B×T targets for one sequence", G, edit(DENSE, targets=[DENSE["targets"]]), "rule", "/targets"),
    Probe("targets of the wrong B", G, edit(BATCH, targets=BATCH["targets"] * 2), "rule", "/targets"),
    Probe("B×H h_init for one sequence", F, edit(LSTM, h_init=[[0.1, 0.2]]), "rule", "/h_init"),
    Probe("h_init of the wrong B", G, edit(BATCH, h_init=[[0.1, 0.2]] * 3), "rule", "/h_init"),
    Probe("a ragged batch", F, edit(BATCH, targets=DELETE, inputs=[DENSE["inputs"], DENSE["inputs"][:2]]), "rule",
          "/inputs/1"),
    Probe("a ragged batch of tokens", F, edit(TOKEN_BATCH, targets=DELETE, tokens=[[0, 1, 1], [1, 0]]), "rule",
          "/tokens/1"),
    Probe("upstream of the wrong T", G, edit(LAYER, upstream={"hidden": [r[:2] for r in LAYER["upstream"]["hidden"]]}),
          "rule", "/upstream/hidden/0"),
    Probe("upstream T×H for a batch", G, edit(LAYER, upstream={"hidden": LAYER["upstream"]["hidden"][0]}), "rule",
          "/upstream/hidden"),
    Probe("gradcheck of c_init on a gru", C, edit(GRU, check={"parameters": ["c_init"]}), "rule",
          "/check/parameters/0"),
    Probe("gradcheck of U in layer mode", C, edit(LAYER, check={"parameters": ["V", "U"]}), "rule",
          "/check/parameters/1"),
    # --- rules JSON Schema cannot state: schema-valid, refused with the rule's code
    Probe("a token not below D", F, edit(BASE, tokens=[0, 2, 1]), "rule", "/tokens/1"),
    Probe("a class not below N", G, edit(BASE, targets=[3, None, 0]), "rule", "/targets/0"),
    Probe("V's rows disagree with W", F, edit(BASE, **{W_ + "V": [[0.1, 0.2]]}), "rule", "/model/weights/V"),
    Probe("cross_entropy with sigmoid outputs", F, edit(BASE, model__output_activation="sigmoid",
                                                        loss="cross_entropy"), "rule", "/loss"),
    Probe("a vector target for cross_entropy", G, edit(BASE, targets=[[0.0, 0.0, 1.0], None, 0]), "rule", "/targets/0"),
    Probe("a binary_cross_entropy target above 1", G,
          edit(DENSE, model__output_activation="sigmoid", loss="binary_cross_entropy",
               targets=[[0.0, 2.0, 1.0], None, [1.0, 0.0, 0.0]]), "rule", "/targets/0/1"),
]


@pytest.fixture(scope="module")
def spec():
    from service import create_app
    return served_spec(create_app({"TESTING": True}).test_client())


def describe(errors) -> str:
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:120]}" for e in errors[:3])


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_the_schema_and_the_service_give_the_same_verdict(client, spec, probe):
    errors = sorted(request_validator(spec, probe.path).iter_errors(json.loads(probe.raw)), key=str)
    schema_accepts = not errors
    r = client.post(probe.path, data=probe.raw, content_type="application/json")
    problem = r.get_json()
    assert r.status_code < 500, problem
    rule = refused_for_unstateable_rules(r.status_code, problem)
    service_accepts = r.status_code == 200 or rule
    if not schema_accepts and rule and {e["code"] for e in problem["errors"]} == {"depends"}:
        # `depends` names the rules between fields that the schema states with if/then (a cell's
        # fields, layer mode: CellRules) as well as those it leaves to the service (vocab_size...):
        # a schema that refuses such a body agrees with the service that refuses it
        service_accepts = False
    assert schema_accepts == service_accepts, (
        f"schema: {'valid' if schema_accepts else 'invalid: ' + describe(errors)}; "
        f"service: {r.status_code} {json.dumps(problem)[:400]}")
    # and both say what the probe expects
    assert schema_accepts == (probe.verdict != "refuse"), describe(errors)
    assert (r.status_code == 200) == (probe.verdict == "accept"), problem
    if probe.verdict != "accept":
        assert probe.pointer in [e["pointer"] for e in problem["errors"]], problem
        assert all(e.get("code") for e in problem["errors"]), problem


def test_every_error_code_is_documented_and_the_unstateable_ones_are_marked(spec):
    """ErrorItem.code lists every code; CANNOT_STATE's codes are among them."""
    codes = spec["components"]["schemas"]["ErrorItem"]["properties"]["code"]["enum"]
    from schemas.errors import CODES
    assert set(codes) == set(CODES)
    assert set(CANNOT_STATE) <= set(codes)


RESPONSES = [   # (path, body, query): every float array of the answer, JSON or binary
    (F, BASE, ""), (F, edit(BASE, targets=DELETE), ""), (F, DENSE, "?arrays=base64"),
    (G, {**BASE, "include": ["b_h_terms", "jacobian_norms"]}, ""),
    (G, {**BASE, "include": ["b_h_terms", "jacobian_norms"]}, "?arrays=base64"),
    (C, {**BASE, "check": {"mode": "sample", "samples": 2}}, "?arrays=base64"),
    (R, grade_body(SUBMISSION), "?arrays=base64"),
    (P, {"seed": 3, "tokens": True, "vocab_size": 3}, "?arrays=base64"),
    (F, LSTM, ""), (F, LAYER, "?arrays=base64"), (F, edit(LAYER, upstream=DELETE), ""),
    (G, {**BATCH, "include": ["b_h_terms", "jacobian_norms"]}, ""),
    (G, {**BATCH, "include": ["b_h_terms", "jacobian_norms"]}, "?arrays=base64"),
    (G, {**LAYER, "include": ["jacobian_norms"]}, ""), (G, {**LAYER, "include": ["b_h_terms"]}, "?arrays=base64"),
    (G, edit(GRU, **{W_ + "b_hn": [0.1, -0.1]}), ""), (G, TOKEN_BATCH, "?arrays=base64"),
    (C, {**LAYER, "check": {"mode": "sample", "samples": 2}}, "?arrays=base64"),
]


@pytest.mark.parametrize("path, body, query", RESPONSES, ids=[f"{p}{q}" for p, _, q in RESPONSES])
def test_answers_fit_the_served_response_schema(client, spec, path, body, query):
    r = client.post(path + query, json=body)
    assert r.status_code == 200, r.get_json()
    errors = list(response_validator(spec, path).iter_errors(r.get_json()))
    assert not errors, describe(errors)


@pytest.mark.parametrize("request_id", ["grader-7", "x" * 128, "x" * 129, "tab\there", "é", ""])
def test_the_request_id_header_fits_its_schema(client, spec, request_id):
    r = client.post(F, json=BASE, headers={"X-Request-ID": request_id} if request_id else {})
    header = r.headers["X-Request-ID"]
    assert header_validator(spec, "X-Request-ID").is_valid(header), header
    usable = 0 < len(request_id) <= 128 and request_id.isascii() and request_id.isprintable()
    assert (header == request_id) == usable


def test_step_losses_are_unreduced_and_loss_is_their_mean(client):
    """Under reduction mean, step_losses[t] is L_t itself (PyTorch's reduction="none"), from the
    independent reference's step_loss on its own logits; loss is their mean over scored steps."""
    spec_, p = ref.random_problem(11, T=5, H=3, D=3, N=4, reduction="mean", null_targets=True)
    body = ref.body(spec_, p)
    mine = ref.run(spec_, p)
    expected = [None if y is None else float(ref.step_loss(spec_.loss, spec_.output, z, y))
                for z, y in zip(mine["z"], spec_.targets)]
    scored = [e for e in expected if e is not None]
    assert 1 < len(scored) < spec_.T
    for path in (F, G):
        got = client.post(path, json=body).get_json()
        assert [s is None for s in got["step_losses"]] == [e is None for e in expected]
        np.testing.assert_allclose([s for s in got["step_losses"] if s is not None], scored, rtol=1e-13)
        np.testing.assert_allclose(got["loss"], sum(scored) / len(scored), rtol=1e-13)
        if path == G:       # b_h_by_step keeps the reduction: its rows sum to gradients.b_h
            np.testing.assert_allclose(np.sum(got["bptt"]["b_h_by_step"], axis=0), got["gradients"]["b_h"],
                                       rtol=1e-12, atol=1e-15)
    # /v1/grade checks a submission against the unreduced values
    verdict = client.post(R, json={**body, "submission": {"step_losses": expected}}).get_json()
    assert verdict["passed"] is True, verdict
    scaled = [None if e is None else e / len(scored) for e in expected]
    assert client.post(R, json={**body, "submission": {"step_losses": scaled}}).get_json()["passed"] is False
