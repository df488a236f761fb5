"""2-D max pooling over NHWC arrays.

    x  (n, h, w, c)    input
    y  (n, oh, ow, c)  output
    y[n, r, q, ch] = max over i < ph, j < pw of x[n, r*sh + i - pt, q*sw + j - pl, ch]

Positions outside x (the 'same' padding) never win. The gradient goes to the first maximum of
each window, scanning rows then columns; the winner's flat index r*w + q is kept in ``argmax``.
See docs/maxpooling2d.md.
"""
import numba
import numpy as np

from autoenc.kernels.config import prange_only
from autoenc.kernels.convolution import conv_padding


def maxpool2d_forward_naive(x, pool_size, strides, padding):
    """The slow, obvious max pooling. Returns (y, argmax), argmax holding r*w + q of each winner."""
    (ph, pw), (sh, sw) = pool_size, strides
    n, h, w, c = x.shape
    pt, _, oh = conv_padding(h, ph, sh, padding)
    pl, _, ow = conv_padding(w, pw, sw, padding)
    y = np.zeros((n, oh, ow, c), dtype=x.dtype)
    argmax = np.zeros((n, oh, ow, c), dtype=np.int64)
    for s in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    best, where = -np.inf, -1
                    for i in range(ph):
                        for j in range(pw):
                            rr, qq = r * sh + i - pt, q * sw + j - pl
                            if 0 <= rr < h and 0 <= qq < w and x[s, rr, qq, ch] > best:
                                best, where = x[s, rr, qq, ch], rr * w + qq
                    y[s, r, q, ch], argmax[s, r, q, ch] = best, where
    return y, argmax


def maxpool2d_backward_naive(dy, argmax, x_shape):
    """dx[n, argmax // w, argmax % w, ch] += dy[n, r, q, ch]. Returns dx of shape x_shape."""
    n, h, w, c = x_shape
    dx = np.zeros(x_shape, dtype=np.float64)
    for s, r, q, ch in np.ndindex(*dy.shape):
        k = argmax[s, r, q, ch]
        dx[s, k // w, k % w, ch] += dy[s, r, q, ch]
    return dx


@numba.njit(parallel=prange_only(), cache=True)
def maxpool2d_forward(x, ph, pw, sh, sw, pt, pl, y, argmax):
    """Max pooling. x: (n, h, w, c); y and argmax (int32): (n, oh, ow, c), overwritten.

    ph, pw: pool size; sh, sw: strides; pt, pl: top/left padding (see conv_padding).
    The channel loop is innermost, so every read and write runs along contiguous memory.
    """
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in numba.prange(n):
        for r in range(oh):
            r0 = max(r * sh - pt, 0)
            r1 = min(r * sh - pt + ph, h)
            for q in range(ow):
                q0 = max(q * sw - pl, 0)
                q1 = min(q * sw - pl + pw, w)
                best = y[s, r, q]
                where = argmax[s, r, q]
                for ch in range(c):
                    best[ch] = x[s, r0, q0, ch]
                    where[ch] = r0 * w + q0
                for rr in range(r0, r1):
                    for qq in range(q0, q1):
                        v = x[s, rr, qq]
                        for ch in range(c):
                            if v[ch] > best[ch]:  # strict: the first maximum wins
                                best[ch] = v[ch]
                                where[ch] = rr * w + qq


@numba.njit(parallel=prange_only(), cache=True)
def maxpool2d_backward(dy, argmax, dx):
    """dx[n, k // w, k % w, ch] += dy[n, r, q, ch] with k = argmax[n, r, q, ch].

    dy, argmax: (n, oh, ow, c); dx: (n, h, w, c), overwritten; all C-contiguous.
    """
    n, oh, ow, c = dy.shape
    _, h, w, _ = dx.shape
    for s in numba.prange(n):
        dxs, dys, args = dx[s].reshape(h * w * c), dy[s].reshape(oh * ow * c), argmax[s].reshape(oh * ow * c)
        for k in range(h * w * c):
            dxs[k] = 0
        for o in range(oh * ow):
            for ch in range(c):
                # k = rr*w + qq, so dx[s, rr, qq, ch] is dxs[k*c + ch]: no division needed
                dxs[args[o * c + ch] * c + ch] += dys[o * c + ch]
