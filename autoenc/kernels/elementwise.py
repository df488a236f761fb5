"""Elementwise activation kernels, fused so that no temporary array is made.

    sigmoid: y = 1 / (1 + e^-z) (as e^z / (1 + e^z) for z < 0, so neither form overflows);
             dz = dy * y * (1 - y)

For float32, the sigmoid is computed in float64 and rounded once: e^x by its own few lines
(:func:`_exp_nonpositive`, no call into libm, so that the loop is vectorised), 1 / (1 + e) in
float64; the result is the correctly rounded float32 sigmoid but in rare near-ties (0.4 in a million
of a wide sample of inputs; none off by more than half a unit in the last place).

(ReLU's backward, dz = dy * (y > 0), is part of conv2d_backward_dz, in the same pass as the bias
gradient.) Arrays of one shape, C-contiguous; the kernels walk them as 1-D views.
"""
import numba
import numba.extending
import numpy as np
from llvmlite import ir

from autoenc.kernels.config import njit
from autoenc.threads import parallel_for


# Arrays are cut into this many fixed blocks, run on threads (elementwise: the result does not
# depend on how the blocks are shared out). Each block is a 1-D slice that a plain loop walks from
# 0, so that LLVM sees non-negative indices and vectorises it.
_BLOCKS = 64


# --- e^x in float64 arithmetic, for x <= 0 ---------------------------------------------------------
#
# e^x = 2^k e^r with k = round(x / ln 2) and r = x - k ln 2 in [-ln2/2, ln2/2] (ln 2 in two parts,
# so that k * _LN2_HI is exact); e^r by its Taylor polynomial to r^10 (relative error under 3e-13);
# 2^k from its bits. k is rounded by adding and subtracting 1.5 * 2^52, which also leaves k in the
# low bits of the sum. No libm call and no branch: LLVM vectorises the loop that calls it.

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693145751953125          # ln 2 to 16 bits: k * _LN2_HI is exact for |k| < 2^37
_LN2_LO = 1.4286068203094173e-06     # ln 2 - _LN2_HI (of the exact ln 2)
_ROUND = 6755399441055744.0          # 1.5 * 2^52: x + _ROUND - _ROUND rounds x to an integer


@numba.extending.intrinsic
def _bits_of(typingctx, f):
    """The bits of a float64 as an int64."""
    if not isinstance(f, numba.types.Float) or f.bitwidth != 64:
        return None
    return numba.types.int64(f), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))


@numba.extending.intrinsic
def _float_of(typingctx, i):
    """The float64 whose bits are the int64 i."""
    if not isinstance(i, numba.types.Integer) or i.bitwidth != 64:
        return None
    return numba.types.float64(i), lambda context, builder, sig, args: builder.bitcast(args[0], ir.DoubleType())


if numba.config.DISABLE_JIT:
    def _bits_of(f):  # noqa: F811
        return np.float64(f).view(np.int64)

    def _float_of(i):  # noqa: F811
        return np.int64(i).view(np.float64)


@njit()
def _exp_nonpositive(x):
    """e^x for a float64 -1022 * ln 2 < x <= 0 (a NaN gives NaN), relative error under 3e-13."""
    t = x * _LOG2E + _ROUND
    kf = t - _ROUND                      # round(x / ln 2)
    r = (x - kf * _LN2_HI) - kf * _LN2_LO
    p = 1 / 3628800
    p = p * r + 1 / 362880
    p = p * r + 1 / 40320
    p = p * r + 1 / 5040
    p = p * r + 1 / 720
    p = p * r + 1 / 120
    p = p * r + 1 / 24
    p = p * r + 1 / 6
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = _bits_of(t) - _bits_of(_ROUND)   # kf as an integer
    return p * _float_of((k + 1023) << 52)


@njit(error_model="numpy")
def _sigmoid_forward_1d(a, out):
    if out.itemsize == 4:
        # float32: in float64, rounded once. Below -104, e^x < 2^-150 and the result is 0 all the same.
        for k in range(out.size):
            z = np.float64(a[k])
            x = -abs(z)
            e = _exp_nonpositive(-104.0 if x < -104.0 else x)
            s = 1 / (1 + e)
            out[k] = s if z >= 0 else e * s
    else:
        for k in range(out.size):
            e = np.exp(-abs(a[k]))
            s = 1 / (1 + e)
            out[k] = s if a[k] >= 0 else e * s


@njit()
def _sigmoid_backward_1d(a, b, out):
    for k in range(out.size):
        out[k] = a[k] * (b[k] * (1 - b[k]))


def sigmoid_forward(z, y):
    """y = 1 / (1 + e^-z). z, y: C-contiguous, one shape; y overwritten.

    Optimizations: 64 fixed blocks on threads (threads.parallel_for), each a 1-D loop from 0
    (vectorised); one exp per number, in the form that cannot overflow; for float32 the exp is the
    module's own, in float64 (see the module's docstring), not a call per number into libm.
    """
    parallel_for(_sigmoid_forward_blocks, _BLOCKS, z, y)


@njit()
def _sigmoid_forward_blocks(lo, hi, z, y):
    """:func:`sigmoid_forward` for blocks lo..hi-1 of the _BLOCKS."""
    a, out = z.reshape(z.size), y.reshape(y.size)
    n = out.size
    for blk in range(lo, hi):
        i0, i1 = blk * n // _BLOCKS, (blk + 1) * n // _BLOCKS
        _sigmoid_forward_1d(a[i0:i1], out[i0:i1])


def sigmoid_backward(dy, y, dz):
    """dz = dy * y * (1 - y). dy, y, dz: C-contiguous, one shape; dz overwritten.

    Optimizations: 64 fixed blocks on threads (threads.parallel_for), each a 1-D loop from 0
    (vectorised), no temporary.
    """
    parallel_for(_sigmoid_backward_blocks, _BLOCKS, dy, y, dz)


@njit()
def _sigmoid_backward_blocks(lo, hi, dy, y, dz):
    """:func:`sigmoid_backward` for blocks lo..hi-1 of the _BLOCKS."""
    a, b, out = dy.reshape(dy.size), y.reshape(y.size), dz.reshape(dz.size)
    n = out.size
    for blk in range(lo, hi):
        i0, i1 = blk * n // _BLOCKS, (blk + 1) * n // _BLOCKS
        _sigmoid_backward_1d(a[i0:i1], b[i0:i1], out[i0:i1])


# --- the activation of a convolution's epilogue, shared by Conv2DKernels and Conv2DTransposeKernels ----

def fuses_relu(activation):
    """Whether ``activation`` is max(z, 0) itself, which the convolution kernel fuses into its epilogue
    (a relu with a slope, cap or threshold is not)."""
    return activation.name == "relu" and not activation.uses_z


def activation_forward(activation, z, ws):
    """y = activation(z) into the work array "y" of ``ws`` (a Workspace); z itself where the kernel
    already applied it (a plain relu, fused) or there is nothing to apply (linear)."""
    if fuses_relu(activation) or activation.name == "linear":
        return z
    y = ws.array("y", z.shape, z.dtype)
    if activation.name == "sigmoid":
        sigmoid_forward(z, y)
    else:
        activation.forward(z, y)
    return y


def activation_backward(activation, dy, y, z, ws, from_logits):
    """dy * activation'(z) into the work array "dact" of ``ws``; dy itself when the loss gave dL/dz
    (``from_logits``), for linear, and for a fused relu (its mask is applied with the bias gradient)."""
    if from_logits or fuses_relu(activation) or activation.name == "linear":
        return dy
    act = ws.array("dact", dy.shape, y.dtype)
    if activation.name == "sigmoid":
        sigmoid_backward(dy, y, act)
    else:
        activation.backward(dy, y, act, z=z)
    return act
