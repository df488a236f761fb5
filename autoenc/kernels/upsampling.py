"""Nearest-neighbour 2-D upsampling over NHWC arrays.

    x  (n, h, w, c)            input
    y  (n, h*sh, w*sw, c)      output, y[n, r, q, ch] = x[n, r // sh, q // sw, ch]
    dx[n, r, q, ch] = sum_{a < sh, b < sw} dy[n, r*sh + a, q*sw + b, ch]
See docs/upsampling2d.md.
"""
import numpy as np

from autoenc.kernels.blocks import copy1d
from autoenc.kernels.config import njit, reference_kernels_enabled
from autoenc.kernels.workspace import Workspace
from autoenc.threads import parallel_for


def upsample2d_forward_naive(x, size):
    """Repeat every pixel sh times down and sw times across. Returns y."""
    sh, sw = size
    return x.repeat(sh, axis=1).repeat(sw, axis=2)


def upsample2d_backward_naive(dy, size):
    """Sum each sh x sw block of dy. Returns dx."""
    sh, sw = size
    n, oh, ow, c = dy.shape
    return dy.astype(np.float64).reshape(n, oh // sh, sh, ow // sw, sw, c).sum(axis=(2, 4))


def upsample2d_forward(x, sh, sw, y):
    """y[n, r, q, ch] = x[n, r // sh, q // sw, ch]. x: (n, h, w, c); y: (n, h*sh, w*sw, c).

    Optimizations: samples on threads (threads.parallel_for); each output row built once from its
    input row, then copied sh - 1 times as one contiguous run (blocks.copy1d).
    """
    parallel_for(_upsample2d_forward_samples, x.shape[0], x, sh, sw, y)


@njit()
def _upsample2d_forward_samples(lo, hi, x, sh, sw, y):
    """:func:`upsample2d_forward` for samples lo..hi-1."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(lo, hi):
        for r in range(h):
            src = x[s, r].reshape(w * c)
            first = y[s, r * sh].reshape(ow * c)
            for q in range(w):              # the first output row: each pixel sw times
                for b in range(sw):
                    o = (q * sw + b) * c
                    for ch in range(c):
                        first[o + ch] = src[q * c + ch]
            for a in range(1, sh):          # then that row sh - 1 more times
                copy1d(first, y[s, r * sh + a].reshape(ow * c))


def upsample2d_backward(dy, sh, sw, dx):
    """dx[n, r, q, ch] = sum_{a<sh, b<sw} dy[n, r*sh+a, q*sw+b, ch]. dx: (n, h, w, c), overwritten.

    Each dx is summed in the order (a, b) = (0, 0), (0, 1), ..., (sh-1, sw-1).

    Optimizations: samples on threads (threads.parallel_for); dy read row by row along contiguous
    memory, each dx row accumulated in place (no temporary).
    """
    parallel_for(_upsample2d_backward_samples, dx.shape[0], dy, sh, sw, dx)


@njit()
def _upsample2d_backward_samples(lo, hi, dy, sh, sw, dx):
    """:func:`upsample2d_backward` for samples lo..hi-1."""
    n, h, w, c = dx.shape
    _, oh, ow, _ = dy.shape
    for s in range(lo, hi):
        for r in range(h):
            out = dx[s, r].reshape(w * c)
            for a in range(sh):
                src = dy[s, r * sh + a].reshape(ow * c)
                for q in range(w):
                    for b in range(sw):
                        o = (q * sw + b) * c
                        if a == 0 and b == 0:
                            for ch in range(c):
                                out[q * c + ch] = src[o + ch]
                        else:
                            for ch in range(c):
                                out[q * c + ch] += src[o + ch]


class UpSample2DKernels:
    """The forward and backward pass of nearest-neighbour upsampling by size = (sh, sw), for one
    layer, through the fast kernels or (``autoenc.set_reference_kernels(True)``) the naive ones.
    Keeps its work arrays; concurrent calls need one UpSample2DKernels each."""

    def __init__(self, size):
        self.size = tuple(size)
        self.workspace = Workspace()
        self._saved = None   # (reference, x shape, dtype) of the last forward pass

    def forward(self, x):
        """x: (n, h, w, c) -> y: (n, h*sh, w*sw, c), a work array (a new one on the reference path)."""
        sh, sw = self.size
        n, h, w, c = x.shape
        self._saved = (reference_kernels_enabled(), x.shape, x.dtype)
        if self._saved[0]:
            return upsample2d_forward_naive(x, self.size)
        y = self.workspace.array("y", (n, h * sh, w * sw, c), x.dtype)
        upsample2d_forward(x, sh, sw, y)
        return y

    def backward(self, dy):
        """dy: (n, h*sh, w*sw, c) -> dx: (n, h, w, c), the sum of dy over each pixel's copies."""
        reference, x_shape, dtype = self._saved
        if reference:
            return upsample2d_backward_naive(dy, self.size).astype(dtype)
        dx = self.workspace.array("dx", x_shape, dtype)
        upsample2d_backward(dy, self.size[0], self.size[1], dx)
        return dx
