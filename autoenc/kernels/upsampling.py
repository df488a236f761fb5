"""Nearest-neighbour 2-D upsampling over NHWC arrays.

    x  (n, h, w, c)            input
    y  (n, h*sh, w*sw, c)      output, y[n, r, q, ch] = x[n, r // sh, q // sw, ch]
    dx[n, r, q, ch] = sum_{a < sh, b < sw} dy[n, r*sh + a, q*sw + b, ch]
See docs/upsampling2d.md.
"""
import numba
import numpy as np

from autoenc.kernels.config import prange_only
from autoenc.kernels.convolution import _copy


def upsample2d_forward_naive(x, size):
    """Repeat every pixel sh times down and sw times across. Returns y."""
    sh, sw = size
    return x.repeat(sh, axis=1).repeat(sw, axis=2)


def upsample2d_backward_naive(dy, size):
    """Sum each sh x sw block of dy. Returns dx."""
    sh, sw = size
    n, oh, ow, c = dy.shape
    return dy.astype(np.float64).reshape(n, oh // sh, sh, ow // sw, sw, c).sum(axis=(2, 4))


@numba.njit(parallel=prange_only(), cache=True)
def upsample2d_forward(x, sh, sw, y):
    """y[n, r, q, ch] = x[n, r // sh, q // sw, ch]. x: (n, h, w, c); y: (n, h*sh, w*sw, c)."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in numba.prange(n):
        for r in range(h):
            src = x[s, r].reshape(w * c)
            first = y[s, r * sh].reshape(ow * c)
            for q in range(w):              # the first output row: each pixel sw times
                for b in range(sw):
                    o = (q * sw + b) * c
                    for ch in range(c):
                        first[o + ch] = src[q * c + ch]
            for a in range(1, sh):          # then that row sh - 1 more times
                _copy(first, y[s, r * sh + a].reshape(ow * c))


@numba.njit(parallel=prange_only(), cache=True)
def upsample2d_backward(dy, sh, sw, dx):
    """dx[n, r, q, ch] = sum_{a<sh, b<sw} dy[n, r*sh+a, q*sw+b, ch]. dx: (n, h, w, c), overwritten.

    Each dx is summed in the order (a, b) = (0, 0), (0, 1), ..., (sh-1, sw-1)."""
    n, h, w, c = dx.shape
    _, oh, ow, _ = dy.shape
    for s in numba.prange(n):
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
