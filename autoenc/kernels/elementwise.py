"""Elementwise activation kernels, fused so that no temporary array is made.

    sigmoid: y = 1 / (1 + e^-z) (as e^z / (1 + e^z) for z < 0, so neither form overflows);
             dz = dy * y * (1 - y)

(ReLU's backward, dz = dy * (y > 0), is part of conv2d_backward_dz, in the same pass as the bias
gradient.) Arrays of one shape, C-contiguous; the kernels walk them as 1-D views.
"""
import numpy as np

from autoenc.kernels.config import njit
from autoenc.threads import parallel_for


# Arrays are cut into this many fixed blocks, run on threads (elementwise: the result does not
# depend on how the blocks are shared out). Each block is a 1-D slice that a plain loop walks from
# 0, so that LLVM sees non-negative indices and vectorises it.
_BLOCKS = 64


@njit()
def _sigmoid_forward_1d(a, out):
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
    (vectorised); one exp per number, in the form that cannot overflow.
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
