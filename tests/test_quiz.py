"""The lecture's quiz (RNN and backpropagation), reproduced through /v1/gradients.

Every chain-rule factor is built here as an explicit matrix from the reference forward pass
(∂L_t/∂ŷ_t, ∂ŷ_t/∂h_t, ∂h_t/∂b_h, ∂h_i/∂h_{i-1}), so the quiz's candidate answers are
computed exactly as written on the page and compared with numerical derivatives.
"""
import numpy as np
import pytest

import reference as ref

T, H, D, N = 5, 3, 4, 3


@pytest.fixture(scope="module")
def quiz():
    """A tanh/softmax/cross-entropy RNN, every step scored, with a recurrent W strong enough
    that the quiz's wrong answers are far from the right one."""
    spec, p = ref.random_problem(2017, T=T, H=H, D=D, N=N, scale=0.9)
    r = ref.run(spec, p)
    f_prime = 1.0 - r["h"] ** 2                                    # tanh'(a_t), T×H
    dL_dyhat = np.array([-np.eye(N)[y] / r["yhat"][t] for t, y in enumerate(spec.targets)])
    dyhat_dz = np.array([np.diag(s) - np.outer(s, s) for s in r["yhat"]])   # softmax Jacobian
    return {"spec": spec, "p": p, "run": r, "f_prime": f_prime,
            "dL_dyhat": dL_dyhat, "dyhat_dz": dyhat_dz,
            "dyhat_dh": dyhat_dz @ p["U"],                          # T×N×H
            "dh_db": np.array([np.diag(f) for f in f_prime]),       # immediate ∂h_t/∂b_h
            "dh_dhprev": np.array([np.diag(f) @ p["W"] for f in f_prime])}


@pytest.fixture(scope="module")
def answer(quiz):
    from service import create_app
    client = create_app({"TESTING": True}).test_client()
    r = client.post("/v1/gradients", json={**ref.body(quiz["spec"], quiz["p"]),
                                           "include": ["b_h_terms", "jacobian_norms"]})
    assert r.status_code == 200, r.json
    return r.json


def chain(quiz, k, t) -> np.ndarray:
    """Π_{i=k+1..t} ∂h_i/∂h_{i-1}, multiplied left to right as in ∂h_t/∂h_k (I when k = t)."""
    P = np.eye(H)
    for i in range(k + 1, t + 1):
        P = quiz["dh_dhprev"][i] @ P
    return P


def upstream(quiz, t) -> np.ndarray:
    """∂L_t/∂ŷ_t · ∂ŷ_t/∂h_t (a row of H)."""
    return quiz["dL_dyhat"][t] @ quiz["dyhat_dh"][t]


def lecture_term(quiz, t, k) -> np.ndarray:
    """∂L_t/∂ŷ_t ∂ŷ_t/∂h_t (Π ∂h_i/∂h_{i-1}) ∂h_k/∂b_h."""
    return upstream(quiz, t) @ chain(quiz, k, t) @ quiz["dh_db"][k]


def candidates(quiz) -> dict[int, np.ndarray]:
    """The four answers offered for ∂L/∂b_h, numbered as in the quiz."""
    last = T - 1
    return {
        1: upstream(quiz, last) @ quiz["dh_db"][last],
        2: sum(upstream(quiz, t) @ quiz["dh_db"][t] for t in range(T)),
        3: sum(upstream(quiz, t) @ sum(quiz["dh_db"][k] for k in range(t + 1)) for t in range(T)),
        4: sum(lecture_term(quiz, t, k) for t in range(T) for k in range(t + 1)),
    }


def test_b_y_gradient_is_the_sum_of_immediate_terms(quiz, answer):
    """Question 3: b_y reaches each L_t only once, through ŷ_t (∂z_t/∂b_y = I)."""
    terms = [quiz["dL_dyhat"][t] @ quiz["dyhat_dz"][t] @ np.eye(N) for t in range(T)]
    assert ref.scaled_error(answer["gradients"]["b_y"], np.sum(terms, axis=0)) < 1e-13
    numeric = ref.param_grad(quiz["spec"], quiz["p"], "b_y", ref.central)
    assert ref.scaled_error(answer["gradients"]["b_y"], numeric) < 1e-8


def test_only_full_bptt_matches_the_numerical_b_h_gradient(quiz, answer):
    """Question 4: of the four formulas only the one with Π ∂h_i/∂h_{i-1} is right."""
    numeric = ref.param_grad(quiz["spec"], quiz["p"], "b_h", ref.central)
    errors = {n: ref.scaled_error(c, numeric) for n, c in candidates(quiz).items()}
    assert errors[4] < 1e-8
    assert min(errors[1], errors[2], errors[3]) > 1e-2, errors
    assert ref.scaled_error(answer["gradients"]["b_h"], candidates(quiz)[4]) < 1e-13


def test_b_h_terms_are_the_lecture_terms_and_sum_to_the_gradient(quiz, answer):
    terms = np.array(answer["bptt"]["b_h_terms"])
    assert terms.shape == (T, T, H)
    for t in range(T):
        for k in range(T):
            expected = lecture_term(quiz, t, k) if k <= t else np.zeros(H)
            assert ref.scaled_error(terms[t, k], expected) < 1e-13, (t, k)
    assert ref.scaled_error(terms.sum(axis=(0, 1)), answer["gradients"]["b_h"]) < 1e-14


def test_b_h_by_step_rows_are_each_steps_numerical_gradient(quiz, answer):
    by_step = np.array(answer["bptt"]["b_h_by_step"])
    assert by_step.shape == (T, H)
    assert ref.scaled_error(by_step.sum(axis=0), answer["gradients"]["b_h"]) < 1e-14
    numeric = ref.param_grad(quiz["spec"], quiz["p"], "b_h", ref.central, of=lambda r: r["L_t"])
    assert ref.scaled_error(by_step, numeric.T) < 1e-8       # numeric is H×T


def test_softmax_outputs_are_distributions_over_n_classes(answer):
    """Question 2: ŷ_t has length N, entries in [0, 1] summing to 1."""
    outputs = np.array(answer["outputs"])
    assert outputs.shape == (T, N)
    assert np.all((outputs >= 0) & (outputs <= 1))
    assert np.allclose(outputs.sum(axis=1), 1.0, atol=1e-15, rtol=0)


def test_jacobian_norms_are_spectral_norms_of_the_chain(quiz, answer):
    norms = answer["bptt"]["jacobian_norms"]
    assert len(norms) == T and all(len(row) == T for row in norms)
    for t in range(T):
        assert norms[t][t] == pytest.approx(1.0, abs=1e-15)
        for k in range(t + 1, T):
            assert norms[t][k] is None
        for k in range(t):
            assert norms[t][k] == pytest.approx(np.linalg.norm(chain(quiz, k, t), 2), rel=1e-12)
