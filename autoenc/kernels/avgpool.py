"""2-D average pooling over NHWC arrays.

    x  (n, h, w, c)    input
    y  (n, oh, ow, c)  output
    y[n, r, q, ch] = (1 / count[r, q]) * sum over the window's positions inside x of x[n, rr, qq, ch]
    window: rr = r*sh + i - pt, qq = q*sw + j - pl for i < ph, j < pw
    count[r, q] = the number of those positions inside x (0 <= rr < h, 0 <= qq < w)

With padding='valid' every window lies inside x and count = ph * pw. With 'same' the padded
positions are left out of both the sum and the count, as TensorFlow's avg_pool (and so Keras) does:
a corner window of a 2x2 pool over a 1-pixel halo averages 1, 2 or 4 values, not 4 with zeros.

The gradient spreads each output's dy evenly over the positions it averaged:

    dx[n, rr, qq, ch] = sum over the windows (r, q) containing (rr, qq) of dy[n, r, q, ch] / count[r, q]

Pads pt, pl come from conv_padding (TensorFlow's rule, the odd row or column after).
"""
import numpy as np

from autoenc.kernels.config import njit
from autoenc.kernels.convolution import conv_padding
from autoenc.threads import parallel_for


def _window(r, stride, pad, pool, size):
    """[lo, hi): the rows (or columns) of x covered by window r."""
    return max(r * stride - pad, 0), min(r * stride - pad + pool, size)


def avgpool2d_forward_naive(x, pool_size, strides, padding):
    """The slow, obvious average pooling. x: (n, h, w, c). Returns y (n, oh, ow, c) in float64."""
    (ph, pw), (sh, sw) = pool_size, strides
    n, h, w, c = x.shape
    pt, _, oh = conv_padding(h, ph, sh, padding)
    pl, _, ow = conv_padding(w, pw, sw, padding)
    y = np.zeros((n, oh, ow, c))
    for s, r, q, ch in np.ndindex(n, oh, ow, c):
        values = [x[s, rr, qq, ch] for i in range(ph) for j in range(pw)
                  for rr, qq in [(r * sh + i - pt, q * sw + j - pl)] if 0 <= rr < h and 0 <= qq < w]
        y[s, r, q, ch] = sum(values) / len(values)
    return y


def avgpool2d_backward_naive(dy, x_shape, pool_size, strides, padding):
    """dx[n, rr, qq, ch] += dy[n, r, q, ch] / count[r, q] for every (rr, qq) of window (r, q).
    dy: (n, oh, ow, c). Returns dx of shape x_shape (n, h, w, c), float64."""
    (ph, pw), (sh, sw) = pool_size, strides
    n, h, w, c = x_shape
    pt, pl = conv_padding(h, ph, sh, padding)[0], conv_padding(w, pw, sw, padding)[0]
    dx = np.zeros(x_shape)
    for s, r, q, ch in np.ndindex(*dy.shape):
        (r0, r1), (q0, q1) = _window(r, sh, pt, ph, h), _window(q, sw, pl, pw, w)
        dx[s, r0:r1, q0:q1, ch] += dy[s, r, q, ch] / ((r1 - r0) * (q1 - q0))
    return dx


def avgpool2d_forward(x, ph, pw, sh, sw, pt, pl, y):
    """Average pooling over the valid part of each window. x: (n, h, w, c); y: (n, oh, ow, c),
    overwritten. ph, pw: pool size; sh, sw: strides; pt, pl: top/left padding (see conv_padding).
    Samples on threads (threads.parallel_for); the channel loop innermost, along contiguous memory;
    the sum of each window taken in row-major order."""
    parallel_for(_avgpool2d_forward_samples, x.shape[0], x, ph, pw, sh, sw, pt, pl, y)


@njit()
def _avgpool2d_forward_samples(lo, hi, x, ph, pw, sh, sw, pt, pl, y):
    """:func:`avgpool2d_forward` for samples lo..hi-1."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(lo, hi):
        for r in range(oh):
            r0 = max(r * sh - pt, 0)
            r1 = min(r * sh - pt + ph, h)
            for q in range(ow):
                q0 = max(q * sw - pl, 0)
                q1 = min(q * sw - pl + pw, w)
                out = y[s, r, q]
                for ch in range(c):
                    out[ch] = 0
                for rr in range(r0, r1):
                    for qq in range(q0, q1):
                        v = x[s, rr, qq]
                        for ch in range(c):
                            out[ch] += v[ch]
                count = (r1 - r0) * (q1 - q0)
                for ch in range(c):
                    out[ch] = out[ch] / count  # a division, as TensorFlow: no rounded 1/count


def avgpool2d_backward(dy, ph, pw, sh, sw, pt, pl, dx):
    """dx[n, rr, qq, ch] = sum over windows (r, q) holding (rr, qq) of dy[n, r, q, ch] / count[r, q].

    dy: (n, oh, ow, c); dx: (n, h, w, c), overwritten. Samples on threads (threads.parallel_for;
    each writes only its own dx[s], so the result does not depend on the threads); windows visited
    in row-major order.
    """
    parallel_for(_avgpool2d_backward_samples, dy.shape[0], dy, ph, pw, sh, sw, pt, pl, dx)


@njit()
def _avgpool2d_backward_samples(lo, hi, dy, ph, pw, sh, sw, pt, pl, dx):
    """:func:`avgpool2d_backward` for samples lo..hi-1."""
    n, oh, ow, c = dy.shape
    _, h, w, _ = dx.shape
    for s in range(lo, hi):
        dxs = dx[s]
        for rr in range(h):
            for qq in range(w):
                for ch in range(c):
                    dxs[rr, qq, ch] = 0
        for r in range(oh):
            r0 = max(r * sh - pt, 0)
            r1 = min(r * sh - pt + ph, h)
            for q in range(ow):
                q0 = max(q * sw - pl, 0)
                q1 = min(q * sw - pl + pw, w)
                count = (r1 - r0) * (q1 - q0)
                g = dy[s, r, q]
                for rr in range(r0, r1):
                    for qq in range(q0, q1):
                        d = dxs[rr, qq]
                        for ch in range(c):
                            d[ch] += g[ch] / count
