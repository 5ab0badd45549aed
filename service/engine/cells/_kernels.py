"""Scalar helpers for the cells' compiled (numba) step kernels, float64 only.

The kernels do a step's elementwise gate work on rows of a batch in one call each, where
numpy would spend ~1 µs of overhead on each of a dozen ufunc calls (the small problems are
all overhead). Matrix products stay in numpy/BLAS.

exp, sigmoid and tanh are written out (Cody-Waite range reduction, a degree-13 Taylor
polynomial, 2^k from the exponent bits) because libm's are calls that keep LLVM from
vectorizing the gate loops: at B 32, H 100 the LSTM step spent ~18 ns per tanh. Accuracy:
exp ≤ 1 ulp, sigmoid ≤ 2 ulp, tanh ≤ 3 ulp (checked against numpy in tests/test_sequence.py).
"""
from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

OPTS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})  # FMA, nothing reassociated
F2 = "float64[:, ::1]"          # a C-contiguous B × F block of rows
F1 = "float64[::1]"

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01        # ln 2 split so that k · LN2_HI is exact
LN2_LO = 1.90821492927058770002e-10
ROUND = 6755399441055744.0                 # 1.5 · 2^52: x + ROUND rounds x to an integer...
ROUND_BITS = 0x4338000000000000            # ...held in the low bits of its representation
C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13 = (1.0 / math.factorial(n) for n in range(2, 14))


@intrinsic
def _as_float(typingctx, bits):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _as_int(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@njit("float64(float64)", **OPTS, inline="always")
def _expm1_small(r):
    """e^r − 1 for |r| ≤ ln 2 / 2, without the cancellation of e^r − 1."""
    p = C13 * r + C12
    p = p * r + C11
    p = p * r + C10
    p = p * r + C9
    p = p * r + C8
    p = p * r + C7
    p = p * r + C6
    p = p * r + C5
    p = p * r + C4
    p = p * r + C3
    p = p * r + C2
    p = p * r + 1.0
    return p * r


@njit("UniTuple(float64, 2)(float64)", **OPTS, inline="always")
def _exp_parts(x):
    """(2^k, e^r − 1) with e^x = 2^k (1 + (e^r − 1)), x clamped to [−708, 708] (no overflow,
    no subnormals); branch-free, so that loops of it vectorize."""
    x = -708.0 if x < -708.0 else (708.0 if x > 708.0 else x)   # NaN stays NaN
    t = x * LOG2E + ROUND
    kf = t - ROUND                                       # k = round(x / ln 2)
    r = (x - kf * LN2_HI) - kf * LN2_LO                  # |r| ≤ ln 2 / 2
    return _as_float((_as_int(t) - ROUND_BITS + 1023) << 52), _expm1_small(r)


@njit("float64(float64)", **OPTS, inline="always")
def exp(x):
    s, q = _exp_parts(x)
    return s + s * q


@njit("float64(float64)", **OPTS, inline="always")
def sigmoid(x):
    return 1.0 / (1.0 + exp(-x))


@njit("float64(float64)", **OPTS, inline="always")
def tanh(x):
    """(e^y − 1) / (e^y + 1), y = 2|x|, with the sign of x. e^y − 1 = 2^k q + (2^k − 1) has
    no cancellation for y ≥ 0 (at k = 0 it is q itself)."""
    s, q = _exp_parts(2.0 * abs(x))
    em1 = s * q + (s - 1.0)
    return math.copysign(em1 / (em1 + 2.0), x)


@njit(f"void({F2}, int64[::1], {F2})", **OPTS)
def scatter_add_rows(out, index, rows):
    """out[index[r]] += rows[r] for every r (np.add.at, ~50x faster)."""
    for r in range(rows.shape[0]):
        o = out[index[r]]
        for j in range(rows.shape[1]):
            o[j] += rows[r, j]


@njit(f"void({F2}, {F2}, {F1})", **OPTS)
def softmax_rows(z, out, lse):
    """out = softmax(z) and lse = log Σ e^z, row by row, from one exp pass."""
    for r in range(z.shape[0]):
        m = z[r, 0]
        for j in range(1, z.shape[1]):
            m = max(m, z[r, j])
        for j in range(z.shape[1]):
            out[r, j] = exp(z[r, j] - m)
        total = 0.0
        for j in range(z.shape[1]):
            total += out[r, j]
        for j in range(z.shape[1]):
            out[r, j] /= total
        lse[r] = m + math.log(total)
