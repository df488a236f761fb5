"""GELU, the one activation NumPy cannot compute by itself: it needs erfc, which NumPy lacks.

    gelu: y = z Phi(z) = 0.5 z erfc(-z / sqrt 2)                     (Keras' approximate=False)
          dz = dy (Phi(z) + z phi(z)),   phi(z) = e^(-z^2 / 2) / sqrt(2 pi)

erfc rather than 1 + erf: for z << 0, 1 + erf(z / sqrt 2) cancels to nothing while erfc keeps every
digit, as TensorFlow's tf.nn.gelu does. The other activations are NumPy expressions in
autoenc/activations.py. Arrays of one shape, C-contiguous; the kernels walk them as 1-D views.
See docs/activations.md.
"""
import math

import numpy as np

from autoenc.kernels.config import njit
from autoenc.threads import parallel_for

_BLOCKS = 64  # fixed blocks run on threads (elementwise: the result does not depend on the split)
_SQRT_HALF = 0.7071067811865476        # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327     # 1 / sqrt(2 pi)


def gelu_forward_naive(z, y):
    """y = 0.5 z erfc(-z / sqrt 2), one element at a time with Python's math.erfc. z, y: one shape."""
    for k in np.ndindex(z.shape):
        x = float(z[k])
        y[k] = 0.5 * x * math.erfc(-x * _SQRT_HALF)


def gelu_backward_naive(dy, z, dz):
    """dz = dy (Phi(z) + z phi(z)), one element at a time. dy, z, dz: one shape."""
    for k in np.ndindex(z.shape):
        x = float(z[k])
        dz[k] = float(dy[k]) * (0.5 * math.erfc(-x * _SQRT_HALF) + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x))


@njit()
def _gelu_forward_1d(a, out):
    for k in range(out.size):
        x = np.float64(a[k])  # erfc in double, then rounded once to out's dtype
        out[k] = 0.5 * x * math.erfc(-x * _SQRT_HALF)


@njit()
def _gelu_backward_1d(g, a, out):
    for k in range(out.size):
        x = np.float64(a[k])
        out[k] = g[k] * (0.5 * math.erfc(-x * _SQRT_HALF) + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x))


def gelu_forward(z, y):
    """y = 0.5 z erfc(-z / sqrt 2). z, y: C-contiguous, one shape; y overwritten.
    Optimizations: 64 fixed blocks on threads (threads.parallel_for); each element computed in
    float64, rounded once."""
    parallel_for(_gelu_forward_blocks, _BLOCKS, z, y)


@njit()
def _gelu_forward_blocks(lo, hi, z, y):
    """:func:`gelu_forward` for blocks lo..hi-1 of the _BLOCKS."""
    a, out = z.reshape(z.size), y.reshape(y.size)
    n = out.size
    for blk in range(lo, hi):
        i0, i1 = blk * n // _BLOCKS, (blk + 1) * n // _BLOCKS
        _gelu_forward_1d(a[i0:i1], out[i0:i1])


def gelu_backward(dy, z, dz):
    """dz = dy (Phi(z) + z phi(z)). dy, z, dz: C-contiguous, one shape; dz overwritten.
    Optimizations: as :func:`gelu_forward`."""
    parallel_for(_gelu_backward_blocks, _BLOCKS, dy, z, dz)


@njit()
def _gelu_backward_blocks(lo, hi, dy, z, dz):
    """:func:`gelu_backward` for blocks lo..hi-1 of the _BLOCKS."""
    g, a, out = dy.reshape(dy.size), z.reshape(z.size), dz.reshape(dz.size)
    n = out.size
    for blk in range(lo, hi):
        i0, i1 = blk * n // _BLOCKS, (blk + 1) * n // _BLOCKS
        _gelu_backward_1d(g[i0:i1], a[i0:i1], out[i0:i1])
