"""2-D convolution (cross-correlation, as in Keras) over NHWC arrays.

Notation used by every docstring below::

    x   (n, h, w, cin)       input
    xp  (n, hp, wp, cin)     input inside a zero halo: xp[n, pt + r, pl + c, :] = x[n, r, c, :]
    w   (kh, kw, cin, cout)  kernel, Keras layout
    b   (cout,)              bias
    y   (n, oh, ow, cout)    output
    dy  (n, oh, ow, cout)    gradient of the loss with respect to y

    y[n, r, c, f] = b[f] + sum_{i, j, ch} xp[n, r*sh + i, c*sw + j, ch] * w[i, j, ch, f]

The ``*_naive`` functions are the slow, obvious versions (NumPy, float64 accumulation); the
jitted kernels must agree with them, and the tests check that they do.
See docs/conv2d.md.
"""
import numba
import numpy as np

from autoenc.kernels.config import FASTMATH, MAX_CHUNKS

# Activation fused into the forward epilogue.
ACT_LINEAR = 0
ACT_RELU = 1


def conv_padding(size, kernel, stride, padding):
    """Padding along one spatial axis, with TensorFlow's convention.

    Returns ``(pad_before, pad_after, out_size)``. For 'same', ``out_size = ceil(size / stride)`` and
    ``pad_total = max((out_size - 1) * stride + kernel - size, 0)``, the odd row or column going
    after (bottom/right). For 'valid', no padding and ``out_size = (size - kernel) // stride + 1``.
    """
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2, out
    if padding == "valid":
        return 0, 0, (size - kernel) // stride + 1
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis (see :func:`conv_padding`)."""
    return conv_padding(size, kernel, stride, padding)[2]


# --- the slow, obvious versions ---------------------------------------------------------------


def _pad_naive(x, kernel_size, strides, padding):
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, cin = x.shape
    pt, pb, oh = conv_padding(h, kh, sh, padding)
    pl, pr, ow = conv_padding(w, kw, sw, padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    return xp, (pt, pl), (oh, ow)


def conv2d_forward_naive(x, w, b, strides=(1, 1), padding="valid"):
    """y[n, r, c, f] = b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]. Returns y."""
    kh, kw, cin, cout = w.shape
    sh, sw = strides
    xp, _, (oh, ow) = _pad_naive(x, (kh, kw), strides, padding)
    y = np.zeros((x.shape[0], oh, ow, cout))
    for r in range(oh):
        for c in range(ow):
            patch = xp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :]  # (n, kh, kw, cin)
            y[:, r, c, :] = np.tensordot(patch, w, axes=3) + b
    return y


def conv2d_backward_input_naive(dy, w, x_shape, strides=(1, 1), padding="valid"):
    """dx[n, r*sh+i-pt, c*sw+j-pl, ch] += dy[n, r, c, f] * w[i, j, ch, f]. Returns dx."""
    kh, kw, cin, cout = w.shape
    sh, sw = strides
    xp, (pt, pl), (oh, ow) = _pad_naive(np.zeros(x_shape), (kh, kw), strides, padding)
    dxp = np.zeros_like(xp)
    for r in range(oh):
        for c in range(ow):
            # (n, cout) x (kh, kw, cin, cout) -> (n, kh, kw, cin)
            dxp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :] += np.tensordot(dy[:, r, c, :], w, axes=([1], [3]))
    h, wd = x_shape[1], x_shape[2]
    return dxp[:, pt:pt + h, pl:pl + wd, :]


def conv2d_backward_kernel_naive(x, dy, kernel_size, strides=(1, 1), padding="valid"):
    """dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dy[n, r, c, f]. Returns dw."""
    kh, kw = kernel_size
    sh, sw = strides
    xp, _, (oh, ow) = _pad_naive(x, kernel_size, strides, padding)
    dw = np.zeros((kh, kw, x.shape[3], dy.shape[3]))
    for r in range(oh):
        for c in range(ow):
            patch = xp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :]
            dw += np.tensordot(patch, dy[:, r, c, :], axes=([0], [0]))
    return dw


def conv2d_backward_bias_naive(dy):
    """db[f] = sum_{n,r,c} dy[n, r, c, f]. Returns db."""
    return dy.astype(np.float64).sum(axis=(0, 1, 2))


# --- the kernels -------------------------------------------------------------------------------


@numba.njit(parallel=True, cache=True)
def pad_into(x, pt, pl, xp):
    """Copy x (n, h, w, c) into the interior of xp (n, hp, wp, c): xp[n, pt+r, pl+c] = x[n, r, c].

    The halo of xp is left as it is: the caller allocates xp zeroed once and reuses it.
    """
    n, h, w, c = x.shape
    for s in numba.prange(n):
        for r in range(h):
            for q in range(w):
                for ch in range(c):
                    xp[s, pt + r, pl + q, ch] = x[s, r, q, ch]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_forward(xp, w, b, sh, sw, act, y):
    """y[n, r, c, f] = act(b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]).

    xp: (n, hp, wp, cin) padded input; w: (kh, kw, cin, cout); b: (cout,); act: ACT_LINEAR or
    ACT_RELU; y: (n, oh, ow, cout), overwritten.
    """
    n, oh, ow, cout = y.shape
    kh, kw, cin, _ = w.shape
    for s in numba.prange(n):
        for r in range(oh):
            for c in range(ow):
                acc = y[s, r, c]
                for f in range(cout):
                    acc[f] = b[f]
                for i in range(kh):
                    for j in range(kw):
                        for ch in range(cin):
                            a = xp[s, r * sh + i, c * sw + j, ch]
                            for f in range(cout):
                                acc[f] += a * w[i, j, ch, f]
                if act == ACT_RELU:
                    for f in range(cout):
                        if acc[f] < 0:
                            acc[f] = 0


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_backward_input(dy, w, sh, sw, pt, pl, dx):
    """dx[n, rr, cc, ch] = sum_{i,j,f} dy[n, r, c, f] * w[i, j, ch, f], over r*sh+i-pt = rr, c*sw+j-pl = cc.

    dy: (n, oh, ow, cout); w: (kh, kw, cin, cout); pt, pl: top/left padding of the forward pass;
    dx: (n, h, w, cin), overwritten. Each dx pixel gathers its own terms, so samples run in parallel.
    """
    n, h, wd, cin = dx.shape
    _, oh, ow, cout = dy.shape
    kh, kw, _, _ = w.shape
    # w transposed to (kh, kw, cout, cin) so that the innermost loop runs over contiguous cin
    wt = np.empty((kh, kw, cout, cin), dtype=w.dtype)
    for i in range(kh):
        for j in range(kw):
            for ch in range(cin):
                for f in range(cout):
                    wt[i, j, f, ch] = w[i, j, ch, f]
    for s in numba.prange(n):
        for rr in range(h):
            for cc in range(wd):
                acc = dx[s, rr, cc]
                for ch in range(cin):
                    acc[ch] = 0
                for i in range(kh):
                    ry = rr + pt - i  # = r * sh
                    if ry < 0 or ry % sh != 0 or ry // sh >= oh:
                        continue
                    r = ry // sh
                    for j in range(kw):
                        cx = cc + pl - j  # = c * sw
                        if cx < 0 or cx % sw != 0 or cx // sw >= ow:
                            continue
                        c = cx // sw
                        for f in range(cout):
                            g = dy[s, r, c, f]
                            for ch in range(cin):
                                acc[ch] += g * wt[i, j, f, ch]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_backward_kernel(xp, dy, sh, sw, dw):
    """dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dy[n, r, c, f].

    xp: (n, hp, wp, cin) padded input of the forward pass; dy: (n, oh, ow, cout);
    dw: (kh, kw, cin, cout), overwritten. The batch is summed in fixed chunks, then the chunks in
    order, so the result does not depend on the number of threads.
    """
    n, oh, ow, cout = dy.shape
    kh, kw, cin, _ = dw.shape
    nc = max(1, min(n, MAX_CHUNKS))
    part = np.zeros((nc, kh, kw, cin, cout), dtype=dw.dtype)
    for k in numba.prange(nc):
        acc = part[k]
        for s in range(k * n // nc, (k + 1) * n // nc):
            for r in range(oh):
                for c in range(ow):
                    for i in range(kh):
                        for j in range(kw):
                            for ch in range(cin):
                                a = xp[s, r * sh + i, c * sw + j, ch]
                                for f in range(cout):
                                    acc[i, j, ch, f] += a * dy[s, r, c, f]
    dw[...] = part[0]
    for k in range(1, nc):
        dw += part[k]


@numba.njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_backward_bias(dy, db):
    """db[f] = sum_{n,r,c} dy[n, r, c, f]. dy: (n, oh, ow, cout); db: (cout,), overwritten."""
    n, oh, ow, cout = dy.shape
    nc = max(1, min(n, MAX_CHUNKS))
    part = np.zeros((nc, cout), dtype=db.dtype)
    for k in numba.prange(nc):
        for s in range(k * n // nc, (k + 1) * n // nc):
            for r in range(oh):
                for c in range(ow):
                    for f in range(cout):
                        part[k, f] += dy[s, r, c, f]
    db[:] = part[0]
    for k in range(1, nc):
        db += part[k]
