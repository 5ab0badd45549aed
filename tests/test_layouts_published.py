"""Published values: the expected outputs that the course notebooks print for their own test
inputs, reproduced by sending those inputs, built exactly as the notebooks build them, in the
course's layout.

CS231n (assignment 3; layout cs231n): RNN_Captioning.ipynb and LSTM_Captioning.ipynb as in
  https://github.com/Burton2000/CS231n-2017 (commit 0a0bd0194d9d4606dc864272823c21dba7b0e0f9),
  assignment3/RNN_Captioning.ipynb and assignment3/LSTM_Captioning.ipynb. The notebooks check
  `rel_error(expected_next_h, next_h)` against arrays hard-coded in them (8 decimals); their
  backward checks compare with eval_numerical_gradient_array (central differences, h = 1e-5)
  and ask for errors below 1e-8 (RNN) and "around 1e-7 or less" (lstm_backward), reproduced
  here the same way. CaptioningRNN's expected_loss (11 decimals) for both cells too.
Coursera (Deep Learning Specialization, course 5 week 1, "Building your Recurrent Neural
  Network - Step by Step"; layout coursera): the v2 notebook as in
  https://github.com/Kulbear/deep-learning-coursera (commit 997fdb2e2db67acd45d29ae418212463a54be06d),
  "Sequence Models/Building a Recurrent Neural Network - Step by Step - v2.ipynb": its cells'
  printed outputs under np.random.seed(1) and numpy's legacy np.random.randn draws, in the
  notebook's order. Its rnn_cell_backward and lstm_backward cells are not reproducible as
  printed (they read parameters left over from earlier cells: `b` drawn, stale `ba` used;
  lstm_backward's da has T_x 4 for inputs of T_x 7), and lstm_cell_backward needs an
  upstream dc_next, which layer mode does not take; rnn_backward is reproduced.

min-char-rnn (layout min-char-rnn): one call of lossFun from Karpathy's min-char-rnn.py
  (https://gist.github.com/karpathy/d4dee566867f8291f086), its loss, dWxh … dby and last h.

Tolerances: a value printed with 8 decimals is matched to half its last digit (5e-9); a value
printed in full (repr) to 1e-12.
"""
from __future__ import annotations

import numpy as np
import pytest

EIGHT_DECIMALS = 5e-9 * (1 + 1e-9)
FULL = 1e-12


def rel_error(x, y):
    """CS231n's rel_error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def post(client, endpoint, body):
    r = client.post(f"/v1/{endpoint}", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def lst(a):
    return np.asarray(a, dtype=np.float64).tolist()


# --- CS231n: RNN_Captioning.ipynb ---

def cs231n_layer(cell, x, h0, Wx, Wh, b, c0=None, upstream=None):
    """A CS231n recurrent layer as the notebooks call it (no output layer)."""
    body = {"layout": "cs231n", "model": {"cell": cell, "weights": {"Wx": lst(Wx), "Wh": lst(Wh), "b": lst(b)}},
            "inputs": lst(x), "h_init": lst(h0),
            "upstream": {"hidden": lst(np.zeros((*x.shape[:2], h0.shape[1])) if upstream is None else upstream)}}
    if c0 is not None:
        body["c_init"] = lst(c0)
    return body


def test_cs231n_rnn_step_forward(client):
    N, D, H = 3, 10, 4
    x = np.linspace(-0.4, 0.7, num=N * D).reshape(N, D)
    prev_h = np.linspace(-0.2, 0.5, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.1, 0.9, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.3, 0.7, num=H * H).reshape(H, H)
    b = np.linspace(-0.2, 0.4, num=H)
    out = post(client, "forward", cs231n_layer("rnn", x[:, None, :], prev_h, Wx, Wh, b))
    next_h = np.array(out["hidden"])[:, 0]
    expected_next_h = np.asarray([
        [-0.58172089, -0.50182032, -0.41232771, -0.31410098],
        [0.66854692, 0.79562378, 0.87755553, 0.92795967],
        [0.97934501, 0.99144213, 0.99646691, 0.99854353]])
    np.testing.assert_allclose(next_h, expected_next_h, rtol=0, atol=EIGHT_DECIMALS)
    assert rel_error(expected_next_h, next_h) < 1e-8


def test_cs231n_rnn_forward(client):
    N, T, D, H = 2, 3, 4, 5
    x = np.linspace(-0.1, 0.3, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.3, 0.1, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.4, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.4, 0.1, num=H * H).reshape(H, H)
    b = np.linspace(-0.7, 0.1, num=H)
    h = np.array(post(client, "forward", cs231n_layer("rnn", x, h0, Wx, Wh, b))["hidden"])
    expected_h = np.asarray([
        [[-0.42070749, -0.27279261, -0.11074945, 0.05740409, 0.22236251],
         [-0.39525808, -0.22554661, -0.0409454, 0.14649412, 0.32397316],
         [-0.42305111, -0.24223728, -0.04287027, 0.15997045, 0.35014525]],
        [[-0.55857474, -0.39065825, -0.19198182, 0.02378408, 0.23735671],
         [-0.27150199, -0.07088804, 0.13562939, 0.33099728, 0.50158768],
         [-0.51014825, -0.30524429, -0.06755202, 0.17806392, 0.40333043]]])
    np.testing.assert_allclose(h, expected_h, rtol=0, atol=EIGHT_DECIMALS)


# the notebooks' numerical gradient (cs231n/gradient_check.py: eval_numerical_gradient_array)
def numerical(f, x, df, h=1e-5):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        pos = f(x).copy()
        x[i] = old - h
        neg = f(x).copy()
        x[i] = old
        grad[i] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def rnn_forward_np(x, h0, Wx, Wh, b):
    """CS231n's rnn_forward, written out (the numerical check's function)."""
    h, prev = [], h0
    for t in range(x.shape[1]):
        prev = np.tanh(x[:, t] @ Wx + prev @ Wh + b)
        h.append(prev)
    return np.stack(h, axis=1)


def lstm_forward_np(x, h0, Wx, Wh, b, c0=None):
    """CS231n's lstm_forward (gates i, f, o, g), written out; returns h and c."""
    H = h0.shape[1]
    prev_h, prev_c = h0, np.zeros_like(h0) if c0 is None else c0
    hs, cs = [], []
    for t in range(x.shape[1]):
        a = x[:, t] @ Wx + prev_h @ Wh + b
        i, f, o = (1 / (1 + np.exp(-a[:, k * H:(k + 1) * H])) for k in range(3))
        g = np.tanh(a[:, 3 * H:])
        prev_c = f * prev_c + i * g
        prev_h = o * np.tanh(prev_c)
        hs.append(prev_h)
        cs.append(prev_c)
    return np.stack(hs, axis=1), np.stack(cs, axis=1)


@pytest.mark.parametrize("T", [1, 2])          # rnn_step_backward (N, D, H = 4, 5, 6), rnn_backward
def test_cs231n_rnn_step_backward_and_rnn_backward(client, T):
    np.random.seed(231)
    if T == 1:
        N, D, H = 4, 5, 6
        x = np.random.randn(N, D)[:, None, :]
        h = np.random.randn(N, H)
    else:
        N, D, H = 2, 3, 5
        x = np.random.randn(N, T, D)
        h = np.random.randn(N, H)
    Wx = np.random.randn(D, H)
    Wh = np.random.randn(H, H)
    b = np.random.randn(H)
    dout = np.random.randn(N, T, H)
    g = post(client, "gradients", cs231n_layer("rnn", x, h, Wx, Wh, b, upstream=dout))["gradients"]
    assert set(g) == {"Wx", "Wh", "b", "h_init", "inputs"}
    checks = {"inputs": (lambda v: rnn_forward_np(v, h, Wx, Wh, b), x),
              "h_init": (lambda v: rnn_forward_np(x, v, Wx, Wh, b), h),
              "Wx": (lambda v: rnn_forward_np(x, h, v, Wh, b), Wx),
              "Wh": (lambda v: rnn_forward_np(x, h, Wx, v, b), Wh),
              "b": (lambda v: rnn_forward_np(x, h, Wx, Wh, v), b)}
    for name, (f, v) in checks.items():
        assert rel_error(numerical(f, v.copy(), dout), np.array(g[name])) < 1e-8, name


def test_cs231n_lstm_step_forward(client):
    N, D, H = 3, 4, 5
    x = np.linspace(-0.4, 1.2, num=N * D).reshape(N, D)
    prev_h = np.linspace(-0.3, 0.7, num=N * H).reshape(N, H)
    prev_c = np.linspace(-0.4, 0.9, num=N * H).reshape(N, H)
    Wx = np.linspace(-2.1, 1.3, num=4 * D * H).reshape(D, 4 * H)
    Wh = np.linspace(-0.7, 2.2, num=4 * H * H).reshape(H, 4 * H)
    b = np.linspace(0.3, 0.7, num=4 * H)
    out = post(client, "forward", cs231n_layer("lstm", x[:, None, :], prev_h, Wx, Wh, b, c0=prev_c))
    expected_next_h = np.asarray([
        [0.24635157, 0.28610883, 0.32240467, 0.35525807, 0.38474904],
        [0.49223563, 0.55611431, 0.61507696, 0.66844003, 0.7159181],
        [0.56735664, 0.66310127, 0.74419266, 0.80889665, 0.858299]])
    expected_next_c = np.asarray([
        [0.32986176, 0.39145139, 0.451556, 0.51014116, 0.56717407],
        [0.66382255, 0.76674007, 0.87195994, 0.97902709, 1.08751345],
        [0.74192008, 0.90592151, 1.07717006, 1.25120233, 1.42395676]])
    np.testing.assert_allclose(np.array(out["hidden"])[:, 0], expected_next_h, rtol=0, atol=EIGHT_DECIMALS)
    np.testing.assert_allclose(np.array(out["cell"])[:, 0], expected_next_c, rtol=0, atol=EIGHT_DECIMALS)


def test_cs231n_lstm_forward(client):
    N, D, H, T = 2, 5, 4, 3
    x = np.linspace(-0.4, 0.6, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.4, 0.8, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.9, num=4 * D * H).reshape(D, 4 * H)
    Wh = np.linspace(-0.3, 0.6, num=4 * H * H).reshape(H, 4 * H)
    b = np.linspace(0.2, 0.7, num=4 * H)
    h = np.array(post(client, "forward", cs231n_layer("lstm", x, h0, Wx, Wh, b))["hidden"])
    expected_h = np.asarray([
        [[0.01764008, 0.01823233, 0.01882671, 0.0194232],
         [0.11287491, 0.12146228, 0.13018446, 0.13902939],
         [0.31358768, 0.33338627, 0.35304453, 0.37250975]],
        [[0.45767879, 0.4761092, 0.4936887, 0.51041945],
         [0.6704845, 0.69350089, 0.71486014, 0.7346449],
         [0.81733511, 0.83677871, 0.85403753, 0.86935314]]])
    np.testing.assert_allclose(h, expected_h, rtol=0, atol=EIGHT_DECIMALS)


def test_cs231n_lstm_backward(client):
    """LSTM_Captioning's lstm_backward check (seed 231, N, D, T, H = 2, 3, 10, 6)."""
    np.random.seed(231)
    N, D, T, H = 2, 3, 10, 6
    x = np.random.randn(N, T, D)
    h0 = np.random.randn(N, H)
    Wx = np.random.randn(D, 4 * H)
    Wh = np.random.randn(H, 4 * H)
    b = np.random.randn(4 * H)
    dout = np.random.randn(N, T, H)
    g = post(client, "gradients", cs231n_layer("lstm", x, h0, Wx, Wh, b, upstream=dout))["gradients"]

    def h_of(**kw):
        args = dict(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b) | kw
        return lstm_forward_np(args["x"], args["h0"], args["Wx"], args["Wh"], args["b"])[0]
    for name, arg, v in (("inputs", "x", x), ("h_init", "h0", h0), ("Wx", "Wx", Wx), ("Wh", "Wh", Wh),
                         ("b", "b", b)):
        got = np.array(g[name])
        num = numerical(lambda u: h_of(**{arg: u}), v.copy(), dout)
        # "errors around 1e-7 or less"; dWh: the published run printed 1.09e-06 (h = 1e-5 is coarse there)
        assert rel_error(num, got) < (1.1e-6 if name == "Wh" else 1e-7), name
        # and exactly: complex-step derivatives of the same forward pass
        exact = np.zeros(v.size)
        for k in range(v.size):
            u = v.astype(complex).ravel()
            u[k] += 1e-30j
            exact[k] = np.sum(h_of(**{arg: u.reshape(v.shape)}).imag * dout) / 1e-30
        assert rel_error(exact.reshape(v.shape), got) < 1e-12, name


@pytest.mark.parametrize("cell,features_range,expected_loss", [
    ("rnn", (-1.5, 0.3), 9.83235591003),          # RNN_Captioning: CaptioningRNN loss
    ("lstm", (-0.5, 1.7), 9.82445935443)])        # LSTM_Captioning
def test_cs231n_captioning_loss(client, cell, features_range, expected_loss):
    """CaptioningRNN.loss with every parameter np.linspace(-1.4, 1.3): h0 = features·W_proj +
    b_proj and x = W_embed[captions_in] are the model's own layers (computed here); the
    recurrent layer, temporal affine and temporal softmax loss (<NULL> masked, divided by N:
    batch_mean) are the service's."""
    N, D, W, H = 10, 20, 30, 40
    V, T, G = 3, 13, 4 if cell == "lstm" else 1
    fixed = lambda *shape: np.linspace(-1.4, 1.3, num=int(np.prod(shape))).reshape(*shape)  # noqa: E731
    W_proj, b_proj, W_embed = fixed(D, H), fixed(H), fixed(V, W)
    Wx, Wh, b, W_vocab, b_vocab = fixed(W, G * H), fixed(H, G * H), fixed(G * H), fixed(H, V), fixed(V)
    features = np.linspace(*features_range, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    targets = [[int(y) if y != 0 else None for y in row] for row in captions_out]     # <NULL> is 0
    body = {"layout": "cs231n", "model": {"cell": cell, "weights": {
        "Wx": lst(Wx), "Wh": lst(Wh), "b": lst(b), "W_vocab": lst(W_vocab), "b_vocab": lst(b_vocab)}},
        "inputs": lst(W_embed[captions_in]), "h_init": lst(features @ W_proj + b_proj),
        "targets": targets, "reduction": "batch_mean"}
    loss = post(client, "forward", body)["loss"]
    assert loss == pytest.approx(expected_loss, abs=5e-12)      # printed with 11 decimals


# --- Coursera: Building your Recurrent Neural Network - Step by Step ---

def coursera_rnn(x, a0, Wax, Waa, ba, Wya=None, by=None, da=None):
    w = {"Wax": lst(Wax), "Waa": lst(Waa), "ba": lst(ba)}
    if Wya is not None:
        w.update(Wya=lst(Wya), by=lst(by))
    body = {"layout": "coursera", "model": {"weights": w}, "inputs": lst(x), "h_init": lst(a0)}
    if da is not None:
        body["upstream"] = {"hidden": lst(da)}
    return body


def coursera_lstm(x, a0, p, c0=None):
    body = {"layout": "coursera", "model": {"cell": "lstm", "weights": {k: lst(v) for k, v in p.items()}},
            "inputs": lst(x), "h_init": lst(a0)}
    if c0 is not None:
        body["c_init"] = lst(c0)
    return body


def test_coursera_rnn_cell_forward(client):
    np.random.seed(1)
    xt = np.random.randn(3, 10)
    a_prev = np.random.randn(5, 10)
    Waa = np.random.randn(5, 5)
    Wax = np.random.randn(5, 3)
    Wya = np.random.randn(2, 5)
    ba = np.random.randn(5, 1)
    by = np.random.randn(2, 1)
    out = post(client, "forward", coursera_rnn(xt[:, :, None], a_prev, Wax, Waa, ba, Wya, by))
    a_next, yt_pred = np.array(out["hidden"])[..., 0], np.array(out["outputs"])[..., 0]
    assert a_next.shape == (5, 10) and yt_pred.shape == (2, 10)
    np.testing.assert_allclose(a_next[4], [0.59584544, 0.18141802, 0.61311866, 0.99808218, 0.85016201,
                                           0.99980978, -0.18887155, 0.99815551, 0.6531151, 0.82872037],
                               rtol=0, atol=EIGHT_DECIMALS)
    np.testing.assert_allclose(yt_pred[1], [0.9888161, 0.01682021, 0.21140899, 0.36817467, 0.98988387,
                                            0.88945212, 0.36920224, 0.9966312, 0.9982559, 0.17746526],
                               rtol=0, atol=EIGHT_DECIMALS)


def test_coursera_rnn_forward(client):
    np.random.seed(1)
    x = np.random.randn(3, 10, 4)
    a0 = np.random.randn(5, 10)
    Waa = np.random.randn(5, 5)
    Wax = np.random.randn(5, 3)
    Wya = np.random.randn(2, 5)
    ba = np.random.randn(5, 1)
    by = np.random.randn(2, 1)
    out = post(client, "forward", coursera_rnn(x, a0, Wax, Waa, ba, Wya, by))
    a, y_pred = np.array(out["hidden"]), np.array(out["outputs"])
    assert a.shape == (5, 10, 4) and y_pred.shape == (2, 10, 4)        # n_a × m × T_x, n_y × m × T_x
    np.testing.assert_allclose(a[4][1], [-0.99999375, 0.77911235, -0.99861469, -0.99833267],
                               rtol=0, atol=EIGHT_DECIMALS)
    np.testing.assert_allclose(y_pred[1][3], [0.79560373, 0.86224861, 0.11118257, 0.81515947],
                               rtol=0, atol=EIGHT_DECIMALS)


def _lstm_parameters():
    """The notebook's draw order: Wf, bf, Wi, bi, Wo, bo, Wc, bc, Wy, by."""
    p = {}
    for gate in "fioc":
        p[f"W{gate}"] = np.random.randn(5, 5 + 3)
        p[f"b{gate}"] = np.random.randn(5, 1)
    p["Wy"] = np.random.randn(2, 5)
    p["by"] = np.random.randn(2, 1)
    return p


def test_coursera_lstm_cell_forward(client):
    np.random.seed(1)
    xt = np.random.randn(3, 10)
    a_prev = np.random.randn(5, 10)
    c_prev = np.random.randn(5, 10)
    p = _lstm_parameters()
    out = post(client, "forward", coursera_lstm(xt[:, :, None], a_prev, p, c0=c_prev))
    a_next, c_next, yt = (np.array(out[k])[..., 0] for k in ("hidden", "cell", "outputs"))
    np.testing.assert_allclose(a_next[4], [-0.66408471, 0.0036921, 0.02088357, 0.22834167, -0.85575339,
                                           0.00138482, 0.76566531, 0.34631421, -0.00215674, 0.43827275],
                               rtol=0, atol=EIGHT_DECIMALS)
    np.testing.assert_allclose(c_next[2], [0.63267805, 1.00570849, 0.35504474, 0.20690913, -1.64566718,
                                           0.11832942, 0.76449811, -0.0981561, -0.74348425, -0.26810932],
                               rtol=0, atol=EIGHT_DECIMALS)
    np.testing.assert_allclose(yt[1], [0.79913913, 0.15986619, 0.22412122, 0.15606108, 0.97057211,
                                       0.31146381, 0.00943007, 0.12666353, 0.39380172, 0.07828381],
                               rtol=0, atol=EIGHT_DECIMALS)


def test_coursera_lstm_forward(client):
    np.random.seed(1)
    x = np.random.randn(3, 10, 7)
    a0 = np.random.randn(5, 10)
    p = _lstm_parameters()
    out = post(client, "forward", coursera_lstm(x, a0, p))              # c0: zeros, as lstm_forward
    a, y, c = (np.array(out[k]) for k in ("hidden", "outputs", "cell"))
    assert a.shape == (5, 10, 7) and y.shape == (2, 10, 7) and c.shape == (5, 10, 7)
    assert a[4][3][6] == pytest.approx(0.17211776753291672, abs=FULL)
    assert y[1][4][3] == pytest.approx(0.9508734618501101, abs=FULL)
    assert c[1][2][1] == pytest.approx(-0.8555449167181981, abs=FULL)


def test_coursera_rnn_backward(client):
    """rnn_backward(da, caches): layer mode with upstream da (n_a × m × T_x)."""
    np.random.seed(1)
    x = np.random.randn(3, 10, 4)
    a0 = np.random.randn(5, 10)
    Wax = np.random.randn(5, 3)
    Waa = np.random.randn(5, 5)
    np.random.randn(2, 5)                   # Wya and by: drawn, not used by rnn_backward
    ba = np.random.randn(5, 1)
    np.random.randn(2, 1)
    da = np.random.randn(5, 10, 4)
    g = post(client, "gradients", coursera_rnn(x, a0, Wax, Waa, ba, da=da))["gradients"]
    assert set(g) == {"Wax", "Waa", "ba", "h_init", "inputs"}
    dx, da0 = np.array(g["inputs"]), np.array(g["h_init"])
    assert dx.shape == (3, 10, 4) and da0.shape == (5, 10) and np.array(g["ba"]).shape == (5, 1)
    np.testing.assert_allclose(dx[1][2], [-2.07101689, -0.59255627, 0.02466855, 0.01483317],
                               rtol=0, atol=EIGHT_DECIMALS)
    assert da0[2][3] == pytest.approx(-0.31494237512664996, abs=FULL)
    assert g["Wax"][3][1] == pytest.approx(11.264104496527775, abs=FULL)
    assert g["Waa"][1][2] == pytest.approx(2.303333126579893, abs=FULL)
    assert g["ba"][4][0] == pytest.approx(-0.74747722, abs=EIGHT_DECIMALS)


# --- min-char-rnn: Karpathy's min-char-rnn.py (https://gist.github.com/karpathy/d4dee566867f8291f086) ---

def min_char_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by):
    """lossFun of min-char-rnn.py, as the script computes it (column vectors, one sequence;
    its gradient clipping at ±5 is left out: nothing here comes near it)."""
    vocab_size = Wxh.shape[1]
    xs, hs, ps = {}, {-1: np.copy(hprev)}, {}
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
        ys = Why @ hs[t] + by
        ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += dy @ hs[t].T
        dby += dy
        dh = Why.T @ dy + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += dhraw @ xs[t].T
        dWhh += dhraw @ hs[t - 1].T
        dhnext = Whh.T @ dhraw
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def test_min_char_rnn_loss_fun(client):
    """One lossFun call of the script's training loop (seq_length 25, hidden_size 100, the
    script's initialisation), on a vocabulary of 12 characters."""
    data = "hello world, hello min-char-rnn"
    chars = sorted(set(data))
    ix = {ch: i for i, ch in enumerate(chars)}
    vocab_size, hidden_size, seq_length = len(chars), 100, 25
    np.random.seed(0)
    Wxh = np.random.randn(hidden_size, vocab_size) * 0.01
    Whh = np.random.randn(hidden_size, hidden_size) * 0.01
    Why = np.random.randn(vocab_size, hidden_size) * 0.01
    bh, by = np.zeros((hidden_size, 1)), np.zeros((vocab_size, 1))
    hprev = np.random.randn(hidden_size, 1) * 0.1
    inputs = [ix[ch] for ch in data[:seq_length]]
    targets = [ix[ch] for ch in data[1:seq_length + 1]]
    loss, dWxh, dWhh, dWhy, dbh, dby, hlast = min_char_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by)
    body = {"layout": "min-char-rnn", "model": {"weights": {"Wxh": lst(Wxh), "Whh": lst(Whh), "Why": lst(Why),
                                                             "bh": lst(bh), "by": lst(by)}},
            "tokens": inputs, "targets": targets, "h_init": lst(hprev)}
    out = post(client, "gradients", body)
    assert out["loss"] == pytest.approx(loss, rel=1e-13)
    for name, want in (("Wxh", dWxh), ("Whh", dWhh), ("Why", dWhy), ("bh", dbh), ("by", dby)):
        np.testing.assert_allclose(out["gradients"][name], want, rtol=1e-11, atol=1e-17, err_msg=name)
    np.testing.assert_allclose(np.array(out["hidden"])[-1], hlast[:, 0], rtol=1e-12, atol=1e-15)
    assert np.array(out["gradients"]["h_init"]).shape == (hidden_size, 1)      # the shape of hprev
