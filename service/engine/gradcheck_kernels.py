"""Compiled elementwise steps of gradcheck's batched perturbed recurrence (real float64).

Per time step the numpy path makes a dozen passes over the (B, H) and (B, N) arrays
(series, reductions for their range, divisions); these loops do the same formulas in one
pass per row. The series range is checked per row instead of per array, and the series
length is fixed per row (a short one where every |d| allows it, else the full one) so the
loop over a row has no branches and vectorizes; the extra terms change nothing above the
rounding. Loss rows with a change past the series are left to the caller (listed, not
computed), so the direct formulas f(x + d) − f(x) of the loss stay in gradcheck.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from .fused import pairwise_sum     # numpy's summation order, as the numpy path

HIDDEN = {"tanh": 0, "sigmoid": 1}
LOSSES = {("cross_entropy", "softmax"): 0, ("binary_cross_entropy", "sigmoid"): 1,
          ("squared_error", "identity"): 2, ("squared_error", "sigmoid"): 3,
          ("squared_error", "softmax"): 4}


# the series range and coefficients (gradcheck imports them): tanh(d)/d in powers of d²,
# (e^d − 1)/d in powers of d, each long enough that the next term is < 1e-17 relative for
# |d| ≤ SMALL
SMALL = 1e-2
TANH_SERIES = (1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925)
EXPM1_SERIES = tuple(1 / math.factorial(k) for k in range(1, 10))


# numba freezes these globals into the compiled (and cached) code.
# error_model="numpy" below: a float division by zero gives inf/nan as in numpy rather than
# raising, and without that check per division the loops vectorize.
TANH_C = np.array(TANH_SERIES)
EXPM1_C = np.array(EXPM1_SERIES)
TANH_TERMS, EXPM1_TERMS = len(TANH_SERIES), len(EXPM1_SERIES)
# the common rows, |d| ≲ 1e-4 at eps 1e-6, need fewer terms: these many, up to these |d|
TANH_SHORT, EXPM1_SHORT = 3, 4
TANH_SHORT_MAX = (1e-17 / abs(TANH_SERIES[TANH_SHORT])) ** (1 / (2 * TANH_SHORT))
EXPM1_SHORT_MAX = (1e-17 / EXPM1_SERIES[EXPM1_SHORT]) ** (1 / EXPM1_SHORT)
SHORT, SERIES, DIRECT = 0, 1, 2


@njit(cache=True)
def _series(x, x_power, c, terms):
    """x · Σ_k c_k x_power^k, k < terms, by Horner's rule (gradcheck._odd_series)."""
    out = x_power * c[terms - 1]
    for i in range(terms - 2, -1, -1):
        out += c[i]
        if i:
            out *= x_power
    return out * x


@njit(cache=True)
def _row_kind(x, start, stop, short):
    """SHORT if every |x[k]| ≤ short, SERIES if every |x[k]| ≤ SMALL, else DIRECT (NaN
    too): integer counts, which vectorize where a max of floats would not."""
    past, long = 0, 0
    for k in range(start, stop):
        a = abs(x[k])
        past += not a <= SMALL
        long += a > short
    return DIRECT if past else (SERIES if long else SHORT)

@njit(cache=True)
def _sigmoid(x):
    """rnn.sigmoid: exp(−logaddexp(0, −x)), numpy's logaddexp branch for branch."""
    u = -x
    if u == 0.0:
        s = u + math.log(2.0)
    elif u > 0.0:
        s = u + math.log1p(math.exp(-u))
    elif u <= 0.0:
        s = math.log1p(math.exp(u))
    else:
        s = u                                        # NaN
    return math.exp(-s)


@njit(cache=True)
def _tanh_change(x, h, terms):
    """tanh(a + x) − tanh(a) = tanh(x)(1 − h²)/(1 + h·tanh(x)), h = tanh(a)"""
    t = _series(x, x * x, TANH_C, terms)
    return t * (1 - h * h) / (h * t + 1)


@njit(cache=True)
def _sigmoid_change(x, h, terms):
    """σ(a + x) − σ(a) = h(1 − h)(e^x − 1)/(1 + h(e^x − 1)), h = σ(a)"""
    e = _series(x, x, EXPM1_C, terms)
    return h * (1 - h) * e / (1 + h * e)


@njit(types.void(types.int64, types.float64[:, ::1], types.int64[::1], types.float64[::1],
                 types.float64[::1], types.float64[::1], types.float64[:, ::1]),
      cache=True, error_model="numpy")
def hidden_step(code, d, rows, kick, a, h, out):
    """out[b, i] = f_h(a_i + d[b, i]) − h_i for the rows of d and the first H columns
    (tanh: code 0, sigmoid: 1), once d[b, rows[b]] += kick[b] (for the b < len(kick)):
    the exact-difference series for a row with every |d| ≤ SMALL, else the direct
    difference (gradcheck.hidden_change, which decides per array)."""
    H = h.shape[0]
    for b in range(d.shape[0]):
        x, o = d[b], out[b]
        if b < kick.shape[0]:
            x[rows[b]] += kick[b]
        kind = _row_kind(x, 0, H, TANH_SHORT_MAX if code == 0 else EXPM1_SHORT_MAX)
        if kind == DIRECT:
            for i in range(H):
                f = math.tanh(a[i] + x[i]) if code == 0 else _sigmoid(a[i] + x[i])
                o[i] = f - h[i]
        elif code == 0 and kind == SHORT:
            for i in range(H):
                o[i] = _tanh_change(x[i], h[i], TANH_SHORT)
        elif code == 0:
            for i in range(H):
                o[i] = _tanh_change(x[i], h[i], TANH_TERMS)
        elif kind == SHORT:
            for i in range(H):
                o[i] = _sigmoid_change(x[i], h[i], EXPM1_SHORT)
        else:
            for i in range(H):
                o[i] = _sigmoid_change(x[i], h[i], EXPM1_TERMS)


@njit(types.int64(types.int64, types.float64[:, ::1], types.int64, types.float64[::1],
                  types.float64[::1], types.float64, types.float64[::1], types.int64[::1]),
      cache=True, error_model="numpy")
def loss_step(code, x, offset, yhat, y, scale, total, direct):
    """total[b] += scale · (L_t(z + dz_b) − L_t(z)) for the rows of x, dz_b being the
    N columns from `offset` (gradcheck.loss_change per row). Rows with some
    |dz| > SMALL are skipped and listed in `direct`; returns how many."""
    N = y.shape[0]
    e, u, v = np.empty(N), np.empty(N), np.empty(N)
    skipped = 0
    for b in range(x.shape[0]):
        dz = x[b, offset:offset + N]
        kind = _row_kind(dz, 0, N, EXPM1_SHORT_MAX)
        if kind == DIRECT:
            direct[skipped] = b
            skipped += 1
            continue
        if code == 2:
            e[:] = dz
        elif kind == SHORT:
            for k in range(N):
                e[k] = _series(dz[k], dz[k], EXPM1_C, EXPM1_SHORT)
        else:
            for k in range(N):
                e[k] = _series(dz[k], dz[k], EXPM1_C, EXPM1_TERMS)
        if code == 0:                                # log Σ ŷ e^{dz} − y·dz
            for k in range(N):
                u[k] = e[k] * yhat[k]
                v[k] = dz[k] * y[k]
            total[b] += (math.log1p(pairwise_sum(u, 0, N)) - pairwise_sum(v, 0, N)) * scale
            continue
        if code == 1:                                # Σ log(1 + ŷ(e^dz − 1)) − y·dz
            for k in range(N):
                u[k] = math.log1p(yhat[k] * e[k]) - y[k] * dz[k]
            change = pairwise_sum(u, 0, N)
        else:                                        # Σ Δŷ (ŷ − y + Δŷ/2)
            if code == 2:
                for k in range(N):
                    v[k] = e[k]
            elif code == 3:
                for k in range(N):
                    v[k] = yhat[k] * (1 - yhat[k]) * e[k] / (1 + yhat[k] * e[k])
            else:                                    # softmax: ŷ_k (e_k − S)/(1 + S)
                for k in range(N):
                    u[k] = e[k] * yhat[k]
                S = pairwise_sum(u, 0, N)
                for k in range(N):
                    v[k] = yhat[k] * (e[k] - S) / (1 + S)
            for k in range(N):
                u[k] = v[k] * (yhat[k] - y[k] + 0.5 * v[k])
            change = pairwise_sum(u, 0, N)
        total[b] += change * scale
    return skipped
