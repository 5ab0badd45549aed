"""Compiled (numba) forward and full-BPTT backward for small float64 problems.

At quiz size (H 16, T 10) numpy spends ~1-2 µs of interpreter overhead on each of its ~200
calls while the arithmetic is a few thousand multiply-adds; these kernels do the same
arithmetic in one call each. rnn.py decides when to use them (rnn.FUSED_MAX_*), builds the
Cache and the Gradients, and keeps numpy for batched, complex, truncated or large problems.

The formulas are rnn.py's (log-sum-exp with a max shift, numpy's logaddexp for sigmoid,
softplus with a max(z, 0) shift), and the sums over N and T use numpy's pairwise order, so
the losses match the numpy path to rounding in exp/log/tanh and in the BLAS dot products.
Matrix products are written in axpy form (the inner loop elementwise over a contiguous row),
which LLVM vectorizes without reassociating anything: no fastmath, IEEE results.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# codes for the kernels (strings stay in rnn.py)
HIDDEN = {"tanh": 0, "sigmoid": 1, "relu": 2, "identity": 3}
OUTPUT = {"softmax": 0, "sigmoid": 1, "identity": 2}
LOSS = {"cross_entropy": 0, "binary_cross_entropy": 1, "squared_error": 2, None: 3}
NO_LOSS = 3
LOGE2 = 0.693147180559945309417232121458176568

_OPTS = dict(cache=True, nogil=True)
F2 = "float64[:, ::1]"
F1 = "float64[::1]"
# outputs are the caller's arrays (numba returning arrays costs ~0.45 µs each, np.empty ~0.15)
FORWARD_SIG = (f"float64({F2}, {F2}, {F2}, {F1}, {F1}, {F1}, int64[::1], {F2}, {F2}, boolean[::1],"
               f" int64, int64, int64, boolean, {F2}, {F2}, {F2}, {F2}, {F1})")
BACKWARD_SIG = (f"void({F2}, {F2}, {F2}, {F1}, {F2}, {F2}, {F2}, {F2}, int64[::1], {F2}, {F2},"
                f" boolean[::1], int64, int64, int64, boolean,"
                f" {F2}, {F2}, {F2}, {F1}, {F1}, {F2}, {F2}, {F1})")


@njit("float64(float64[::1], int64, int64)", **_OPTS)
def pairwise_sum(x, start, n):
    """sum(x[start:start+n]) in numpy's order (8 accumulators, halves above 128): equal bits."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += x[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = x[start], x[start + 1], x[start + 2], x[start + 3]
        r4, r5, r6, r7 = x[start + 4], x[start + 5], x[start + 6], x[start + 7]
        i = 8
        while i < n - n % 8:
            j = start + i
            r0 += x[j]
            r1 += x[j + 1]
            r2 += x[j + 2]
            r3 += x[j + 3]
            r4 += x[j + 4]
            r5 += x[j + 5]
            r6 += x[j + 6]
            r7 += x[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += x[start + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(x, start, n2) + pairwise_sum(x, start + n2, n - n2)


@njit("float64(float64)", **_OPTS)
def log1p_exp(y):
    """log(1 + e^y) as numpy's logaddexp(0, y) computes it."""
    if y == 0.0:
        return LOGE2
    if -y > 0:
        return math.log1p(math.exp(y))
    if -y <= 0:
        return y + math.log1p(math.exp(-y))
    return -y                                           # NaN


@njit("float64(float64)", **_OPTS)
def sigmoid(x):
    return math.exp(-log1p_exp(-x))


@njit("float64(int64, float64)", **_OPTS)
def hidden(code, a):
    if code == 0:
        return math.tanh(a)
    if code == 1:
        return sigmoid(a)
    if code == 2:
        return a if a > 0 else 0.0
    return a


@njit("float64(int64, float64, float64)", **_OPTS)
def hidden_slope(code, a, h):
    if code == 0:
        return 1.0 - h * h
    if code == 1:
        return h * (1.0 - h)
    if code == 2:
        return 1.0 if a > 0 else 0.0
    return 1.0


@njit("void(float64[:, ::1], float64[:, ::1], float64[::1])", **_OPTS)
def _softmax(z, yhat, lse):
    T, N = z.shape
    e = np.empty(N)
    for t in range(T):
        m = z[t, 0]
        for n in range(1, N):
            m = max(m, z[t, n])
        for n in range(N):
            e[n] = math.exp(z[t, n] - m)
        lse[t] = m + math.log(pairwise_sum(e, 0, N))
        for n in range(N):
            yhat[t, n] = math.exp(z[t, n] - lse[t])


@njit(f"void({F2}, {F2}, {F1}, {F2}, int64, {F1})", **_OPTS)
def _step_losses(z, yhat, lse, y, loss, steps):
    """L_t from the logits, by rnn.step_losses' formulas (cross-entropy: lse - y.z)."""
    T, N = z.shape
    e = np.empty(N)
    for t in range(T):
        for n in range(N):
            if loss == 0:
                e[n] = y[t, n] * z[t, n]
            elif loss == 1:                         # softplus(z) - y z
                m = max(z[t, n], 0.0)
                e[n] = (m + math.log(math.exp(-m) + math.exp(z[t, n] - m))) - y[t, n] * z[t, n]
            else:
                r = yhat[t, n] - y[t, n]
                e[n] = r * r
        s = pairwise_sum(e, 0, N)
        steps[t] = lse[t] - s if loss == 0 else (s if loss == 1 else 0.5 * s)


@njit("Tuple((float64, boolean))(boolean[::1], boolean)", **_OPTS)
def loss_scale(scored, mean):
    """rnn.Problem.loss_scale() and whether any L_t needs scaling or zeroing."""
    count = 0
    for s in scored:
        count += s
    scale = 1.0 / max(count, 1) if mean else 1.0
    return scale, scale != 1.0 or count < scored.shape[0]


@njit(f"void({F2}, {F2}, {F2}, boolean[::1], int64, int64, float64, boolean, {F2})", **_OPTS)
def output_grad(z, yhat, y, scored, out, loss, scale, masked, dz):
    """dL/dz_t (T x N) as rnn.output_grads computes it, bit for bit (elementwise, and np.sum's
    order for the softmax Jacobian's r.y^), with the reduction and null targets applied."""
    T, N = z.shape
    rp = np.empty(N)
    for t in range(T):
        for n in range(N):
            dz[t, n] = yhat[t, n] - y[t, n]
        if loss == 2 and out == 0:                  # through the softmax Jacobian
            for n in range(N):
                rp[n] = dz[t, n] * yhat[t, n]
            s = pairwise_sum(rp, 0, N)
            for n in range(N):
                dz[t, n] = yhat[t, n] * (dz[t, n] - s)
        elif loss == 2 and out == 1:
            for n in range(N):
                dz[t, n] = dz[t, n] * yhat[t, n] * (1.0 - yhat[t, n])
        if masked:
            w = scale if scored[t] else 0.0
            for n in range(N):
                dz[t, n] = dz[t, n] * w


@njit(f"void({F2}, {F2}, {F2}, {F2})", **_OPTS)
def _by_step_reverse(dh_out, slope, W, by_step):
    """dL_t/db_h for every t, all L_t at once: row t of G is dL_t/dh_k as k runs down.
    G's rows advance two at a time through four rows of W at a time (each W value loaded
    once for eight multiply-adds): T^2 H^2 / 2 of them, most of a char-rnn request's BPTT,
    at 1.7x the speed of one row through one row."""
    T, H = dh_out.shape
    G = dh_out.copy()
    by_step[:, :] = 0.0
    term = np.empty((2, H))
    acc = np.empty((2, H))
    H4 = H - H % 4
    for k in range(T - 1, -1, -1):
        t = k
        while t < T:
            m = 2 if t + 1 < T else 1
            for r in range(m):
                for i in range(H):
                    term[r, i] = G[t + r, i] * slope[k, i]       # dL_t/da_k
                    by_step[t + r, i] += term[r, i]
            acc[:, :] = 0.0                                   # dL_t/dh_{k-1} = term W
            if m == 2:
                for i in range(0, H4, 4):
                    a0, a1, a2, a3 = term[0, i], term[0, i + 1], term[0, i + 2], term[0, i + 3]
                    b0, b1, b2, b3 = term[1, i], term[1, i + 1], term[1, i + 2], term[1, i + 3]
                    for j in range(H):
                        w0, w1, w2, w3 = W[i, j], W[i + 1, j], W[i + 2, j], W[i + 3, j]
                        acc[0, j] += a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
                        acc[1, j] += b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
                first = H4
            else:
                first = 0
            for i in range(first, H):
                for r in range(m):
                    g = term[r, i]
                    for j in range(H):
                        acc[r, j] += g * W[i, j]
            for r in range(m):
                G[t + r, :] = acc[r]
            t += m


@njit(f"void({F2}, {F2}, {F2}, {F2})", **_OPTS)
def _by_step_forward(dh_out, slope, W, out):
    """dL_t/db_h for every t from J_t = dh_t/db_h = diag(f'(a_t)) (W J_{t-1} + I)."""
    T, H = dh_out.shape
    J = np.zeros((H, H))
    WJ = np.empty((H, H))
    out[:, :] = 0.0
    for t in range(T):
        WJ[:, :] = 0.0
        for i in range(H):
            for m in range(H):
                w = W[i, m]
                for c in range(H):
                    WJ[i, c] += w * J[m, c]
        for i in range(H):
            WJ[i, i] += 1.0
            for c in range(H):
                J[i, c] = slope[t, i] * WJ[i, c]
        for i in range(H):
            g = dh_out[t, i]
            for c in range(H):
                out[t, c] += g * J[i, c]


@njit(FORWARD_SIG, **_OPTS)
def forward(V, W, U, b_h, b_y, h_init, tokens, inputs, targets, scored,
            hid, out, loss, mean, a, h, z, yhat, steps):
    """Fills a, h, z, y^ (z itself for the identity output) and the step losses (unreduced L_t,
    0 on unscored steps; skipped for loss NO_LOSS); returns L = scale · Σ_t L_t (NaN without a
    loss)."""
    T, H = a.shape
    D, N = V.shape[1], U.shape[0]
    WT = np.ascontiguousarray(W.T)              # a_t = sum_j W[:, j] h_j: rows of W^T
    UT = np.ascontiguousarray(U.T)
    base = np.empty(H)
    for t in range(T):
        # base = V x_t + b_h first, as rnn.forward adds it in one piece
        if tokens.shape[0] > 0:
            tok = tokens[t]
            for i in range(H):
                base[i] = V[i, tok] + b_h[i]
        else:
            base[:] = 0.0
            for k in range(D):
                x = inputs[t, k]
                for i in range(H):
                    base[i] += V[i, k] * x
            for i in range(H):
                base[i] += b_h[i]
        hp = h_init if t == 0 else h[t - 1]
        a[t, :] = 0.0
        for j in range(H):
            for i in range(H):
                a[t, i] += WT[j, i] * hp[j]
        for i in range(H):
            a[t, i] += base[i]
            h[t, i] = hidden(hid, a[t, i])
        z[t, :] = 0.0
        for j in range(H):
            hj = h[t, j]
            for n in range(N):
                z[t, n] += UT[j, n] * hj
        for n in range(N):
            z[t, n] += b_y[n]
    lse = np.empty(T)
    if out == 0:
        _softmax(z, yhat, lse)
    elif out == 1:
        for t in range(T):
            for n in range(N):
                yhat[t, n] = sigmoid(z[t, n])
    if loss == NO_LOSS:
        return np.nan
    _step_losses(z, yhat, lse, targets, loss, steps)
    scale, masked = loss_scale(scored, mean)
    if masked:
        for t in range(T):
            if not scored[t]:
                steps[t] = 0.0
    total = pairwise_sum(steps, 0, T)
    return total * scale if scale != 1.0 else total


@njit(BACKWARD_SIG, **_OPTS)
def backward(V, W, U, h_init, a, h, z, yhat, tokens, inputs, targets, scored,
             hid, out, loss, mean, dz, dV, dW, db_h, dh_init, dx, by_step, norms):
    """Full BPTT into dz (dL/dz_t, for dU and db_y: rnn computes those as its truncated
    path does, so they stay equal bit for bit), dV, dW, db_h, dh_init, dx (dL/dx_t, T x D,
    unless empty) and, unless by_step and norms are empty, dL_t/db_h by step (T x H) and
    ||dL/dh_t|| (T)."""
    T, H = a.shape
    N, D = U.shape[0], V.shape[1]
    diagnostics = by_step.shape[0] > 0
    scale, masked = loss_scale(scored, mean)
    output_grad(z, yhat, targets, scored, out, loss, scale, masked, dz)
    slope = np.empty((T, H))
    dh_out = np.zeros((T, H))                   # dL_t/dh_t through z_t only
    for t in range(T):
        for i in range(H):
            slope[t, i] = hidden_slope(hid, a[t, i], h[t, i])
        for n in range(N):
            g = dz[t, n]
            for j in range(H):
                dh_out[t, j] += g * U[n, j]
    da = np.empty((T, H))
    carry = dh_init                             # dL/dh_t arriving from step t+1
    carry[:] = 0.0
    for t in range(T - 1, -1, -1):
        ss = 0.0
        for i in range(H):
            dh = dh_out[t, i] + carry[i]
            ss += dh * dh
            da[t, i] = dh * slope[t, i]
        if diagnostics:
            norms[t] = math.sqrt(ss)
        carry[:] = 0.0
        for i in range(H):
            g = da[t, i]
            for j in range(H):
                carry[j] += g * W[i, j]
    dV[:, :] = 0.0
    dW[:, :] = 0.0
    inputs_grad = dx.shape[0] > 0
    if inputs_grad:
        dx[:, :] = 0.0
    db_h[:] = da[0]                             # sums over t in numpy's axis-0 order
    for t in range(T):
        if t > 0:
            db_h += da[t]
        hp = h_init if t == 0 else h[t - 1]
        for i in range(H):
            g = da[t, i]
            if tokens.shape[0] > 0:
                dV[i, tokens[t]] += g
            else:
                for k in range(D):
                    dV[i, k] += g * inputs[t, k]
                if inputs_grad:
                    for k in range(D):
                        dx[t, k] += g * V[i, k]
            for j in range(H):
                dW[i, j] += g * hp[j]
    if not diagnostics:
        return
    if 2 * H < T:                               # T H^3 forward mode beats T^2 H^2 / 2 reverse
        _by_step_forward(dh_out, slope, W, by_step)
    else:
        _by_step_reverse(dh_out, slope, W, by_step)
