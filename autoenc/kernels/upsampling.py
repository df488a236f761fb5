"""Nearest-neighbour 2-D upsampling over NHWC arrays.

    x  (n, h, w, c)            input
    y  (n, h*sh, w*sw, c)      output, y[n, r, q, ch] = x[n, r // sh, q // sw, ch]
    dx[n, r, q, ch] = sum_{a < sh, b < sw} dy[n, r*sh + a, q*sw + b, ch]
See docs/upsampling2d.md.
"""
import numba
import numpy as np


def upsample2d_forward_naive(x, size):
    """Repeat every pixel sh times down and sw times across. Returns y."""
    sh, sw = size
    return x.repeat(sh, axis=1).repeat(sw, axis=2)


def upsample2d_backward_naive(dy, size):
    """Sum each sh x sw block of dy. Returns dx."""
    sh, sw = size
    n, oh, ow, c = dy.shape
    return dy.astype(np.float64).reshape(n, oh // sh, sh, ow // sw, sw, c).sum(axis=(2, 4))


@numba.njit(parallel=True, cache=True)
def upsample2d_forward(x, sh, sw, y):
    """y[n, r, q, ch] = x[n, r // sh, q // sw, ch]. x: (n, h, w, c); y: (n, h*sh, w*sw, c)."""
    n, oh, ow, c = y.shape
    for s in numba.prange(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    y[s, r, q, ch] = x[s, r // sh, q // sw, ch]


@numba.njit(parallel=True, cache=True)
def upsample2d_backward(dy, sh, sw, dx):
    """dx[n, r, q, ch] = sum_{a<sh, b<sw} dy[n, r*sh+a, q*sw+b, ch]. dx: (n, h, w, c), overwritten."""
    n, h, w, c = dx.shape
    for s in numba.prange(n):
        for r in range(h):
            for q in range(w):
                for ch in range(c):
                    acc = dy[s, r * sh, q * sw, ch]
                    for a in range(sh):
                        for b in range(sw):
                            if a > 0 or b > 0:
                                acc += dy[s, r * sh + a, q * sw + b, ch]
                    dx[s, r, q, ch] = acc
