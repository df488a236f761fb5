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

from autoenc.kernels.config import FASTMATH, MAX_CHUNKS, n_chunks, prange_only

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
#
# Every fast kernel works on flat views of C-contiguous NHWC arrays. In a zero-halo input xp, the
# patch of one output pixel along kernel row i is kw*cin CONTIGUOUS numbers, so
#     y[n, r, c, :] = b + sum_i  xp_row(n, r*sh + i)[c*sw*cin : c*sw*cin + kw*cin] @ W_i
# with W_i = w[i] seen as a (kw*cin, cout) matrix: a small matrix product per kernel row.
# The products are register-blocked: 8 output pixels x 8 channels are summed in tuples of 8 scalars,
# which LLVM keeps in registers and its SLP vectoriser turns into 8-wide vector multiply-adds.
# Channels left over (cout % 8, e.g. a single-channel output) are dot products of each pixel's patch
# with w[..., f], 8 patch elements per vector. Each output is summed in a fixed order, so the result
# does not depend on the number of threads. A block at the right edge overlaps the previous one
# instead of running past it (the overlapped outputs are computed twice, identically).


_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(q) for q in range(1, 8))


@numba.njit(cache=True)
def _load8(a, k):
    """The tuple (a[k], ..., a[k+7]) of a 1-D array."""
    # unsigned indices: no negative-index wraparound, so LLVM sees 8 neighbouring loads (one vector load)
    u = np.uint64(k)
    return (a[u], a[u + _U1], a[u + _U2], a[u + _U3], a[u + _U4], a[u + _U5], a[u + _U6], a[u + _U7])


@numba.njit(cache=True)
def _at(a, k):
    """a[k] for k >= 0, without the check for negative indices (which blocks vectorisation)."""
    return a[np.uint64(k)]


@numba.njit(cache=True)
def _next_pixel(r, c, x0, oh, ow, dx, rjump, sjump):
    """Step (row r, column c) to the next output pixel in raster order, across samples, and x0 to
    the start of its patch in flat xp. rjump = sh*rstride - ow*dx and sjump = (hp - oh*sh)*rstride
    are the extra moves at the end of a row and of a sample. Branch-free (selects only), so that
    a loop calling it stays one basic block and its accumulators stay in vector registers."""
    c += 1
    row_end = c == ow
    x0 += dx + (rjump if row_end else 0)
    c = 0 if row_end else c
    r += 1 if row_end else 0
    sample_end = r == oh
    x0 += sjump if sample_end else 0
    r = 0 if sample_end else r
    return r, c, x0


@numba.njit(cache=True)
def _gather8(a, k, step):
    """The tuple (a[k], a[k + step], ..., a[k + 7*step]) of a 1-D array."""
    return (a[k], a[k + step], a[k + 2 * step], a[k + 3 * step], a[k + 4 * step], a[k + 5 * step],
            a[k + 6 * step], a[k + 7 * step])


@numba.njit(cache=True, fastmath=FASTMATH)
def _fma8(acc, a, v):
    """acc + a * v over 8-tuples (a scalar): one vector multiply-add once vectorised."""
    return (acc[0] + a * v[0], acc[1] + a * v[1], acc[2] + a * v[2], acc[3] + a * v[3],
            acc[4] + a * v[4], acc[5] + a * v[5], acc[6] + a * v[6], acc[7] + a * v[7])


@numba.njit(cache=True, fastmath=FASTMATH)
def _fma8v(acc, a, v):
    """acc + a * v over 8-tuples, element by element."""
    return (acc[0] + a[0] * v[0], acc[1] + a[1] * v[1], acc[2] + a[2] * v[2], acc[3] + a[3] * v[3],
            acc[4] + a[4] * v[4], acc[5] + a[5] * v[5], acc[6] + a[6] * v[6], acc[7] + a[7] * v[7])


@numba.njit(cache=True, fastmath=FASTMATH)
def _hsum8(a):
    """a[0] + ... + a[7] of an 8-tuple, summed pairwise in a fixed order."""
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@numba.njit(cache=True)
def _store8(out, k, v, relu):
    """out[k:k+8] = v, or max(v, 0) when relu."""
    o = out[k:k + 8]
    for q in range(8):
        o[q] = max(v[q], 0) if relu else v[q]


@numba.njit(cache=True)
def _scatter8(out, k, step, v, relu):
    """out[k + q*step] = v[q] for q < 8, or max(v[q], 0) when relu."""
    for q in range(8):
        out[k + q * step] = max(v[q], 0) if relu else v[q]


@numba.njit(cache=True)
def _copy(a, out):
    """out[:] = a, for 1-D arrays (a loop from 0: LLVM sees non-negative indices and vectorises)."""
    for k in range(out.size):
        out[k] = a[k]


@numba.njit(parallel=prange_only(), cache=True)
def pad_into(x, pt, pl, xp):
    """Copy x (n, h, w, c) into the interior of xp (n, hp, wp, c): xp[n, pt+r, pl+c] = x[n, r, c].

    The halo of xp is left as it is: the caller allocates xp zeroed once and reuses it.
    """
    n, h, w, c = x.shape
    _, hp, wp, _ = xp.shape
    xf, xpf = x.reshape(n * h * w * c), xp.reshape(n * hp * wp * c)
    row = w * c             # one row of x, contiguous in both arrays
    for s in numba.prange(n):
        for r in range(h):
            src = (s * h + r) * row
            dst = ((s * hp + pt + r) * wp + pl) * c
            _copy(xf[src:src + row], xpf[dst:dst + row])


@numba.njit(parallel=prange_only(), cache=True)
def dilate_pad_into(dy, sh, sw, top, left, dyp):
    """dyp[n, top + r*sh, left + c*sw] = dy[n, r, c]: dy spread out by the strides, inside a halo.

    dy: (n, oh, ow, c); dyp: (n, hp, wp, c). Every other entry of dyp is left as it is (zero: the
    caller allocates dyp zeroed once and reuses it).
    """
    n, oh, ow, c = dy.shape
    for s in numba.prange(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    dyp[s, top + r * sh, left + q * sw, ch] = dy[s, r, q, ch]


@numba.njit(cache=True)
def _add8(a, b):
    """a + b over 8-tuples."""
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])


@numba.njit(cache=True)
def _where_positive8(v, y, zero):
    """v[q] where y[q] > 0, else zero, over 8-tuples."""
    return (v[0] if y[0] > 0 else zero, v[1] if y[1] > 0 else zero, v[2] if y[2] > 0 else zero,
            v[3] if y[3] > 0 else zero, v[4] if y[4] > 0 else zero, v[5] if y[5] > 0 else zero,
            v[6] if y[6] > 0 else zero, v[7] if y[7] > 0 else zero)


@numba.njit(cache=True)
def _sum_chunks(part, out):
    """out[f] = part[0, f] + part[1, f] + ..., added in order. part: (nc, c); out: (c,)."""
    for f in range(out.size):
        acc = part[0, f]
        for k in range(1, part.shape[0]):
            acc += part[k, f]
        out[f] = acc


@numba.njit(parallel=prange_only(), cache=True)
def conv2d_backward_dz(dy, y, relu, sh, sw, top, left, dz, dzp, part, db):
    """The one pass over the output gradient that the three gradient kernels need:

        dz = dy where y > 0, else 0     (relu; otherwise dz = dy)
        db[f] = sum_{n,r,c} dz[n, r, c, f]
        dzp[n, top + r*sh, left + c*sw] = dz[n, r, c]   (as dilate_pad_into; skipped if dzp has no samples)

    dy, y, dz: (n, oh, ow, c); dzp: (n, hp, wp, c), zero elsewhere, or (0, hp, wp, c) to skip;
    part: (nc, c) work array (nc = n_chunks(n)); db: (c,). dz, dzp, part and db are overwritten.
    db is summed like conv2d_backward_bias (fixed chunks of the batch, then the chunks in order),
    so the two agree bit for bit. Fusing the three saves two passes over dz.
    """
    n, oh, ow, c = dy.shape
    nc = part.shape[0]
    pad = dzp.shape[0] > 0
    _, hp, wp, _ = dzp.shape
    dyf, yf, dzf = dy.reshape(dy.size), y.reshape(y.size), dz.reshape(dz.size)
    dzpf = dzp.reshape(dzp.size)
    c8 = c - c % 8
    zero = dz.dtype.type(0)
    for k in numba.prange(nc):
        pk = part[k]
        for f in range(c):
            pk[f] = 0
        for s in range(k * n // nc, (k + 1) * n // nc):
            for r in range(oh):
                i0 = (s * oh + r) * ow * c                      # row r of sample s in dy, y, dz
                p0 = ((s * hp + top + r * sh) * wp + left) * c  # where it goes in dzp
                for f0 in range(0, c8, 8):  # 8 channels at a time
                    acc = _load8(pk, f0)
                    for q in range(ow):
                        i = i0 + q * c + f0
                        v = _load8(dyf, i)
                        if relu:
                            v = _where_positive8(v, _load8(yf, i), zero)
                        _store8(dzf, i, v, False)
                        if pad:
                            _store8(dzpf, p0 + q * sw * c + f0, v, False)
                        acc = _add8(acc, v)
                    _store8(pk, f0, acc, False)
                for f in range(c8, c):      # channels left over
                    a = pk[f]
                    for q in range(ow):
                        i = i0 + q * c + f
                        v = dyf[i] if not relu or yf[i] > 0 else zero
                        dzf[i] = v
                        if pad:
                            dzpf[p0 + q * sw * c + f] = v
                        a += v
                    pk[f] = a
    _sum_chunks(part, db)


@numba.njit(cache=True)
def flip_kernel_into(w, wt):
    """wt[i, j, f, ch] = w[kh-1-i, kw-1-j, ch, f]: the kernel of the transposed convolution.

    w: (kh, kw, cin, cout); wt: (kh, kw, cout, cin), overwritten.
    """
    kh, kw, cin, cout = w.shape
    for i in range(kh):
        for j in range(kw):
            for ch in range(cin):
                for f in range(cout):
                    wt[i, j, f, ch] = w[kh - 1 - i, kw - 1 - j, ch, f]


@numba.njit(cache=True)
def _patch_start(q, ow, sh, rstride, dx):
    """Offset in one sample of xp of the patch of output pixel q (raster order: r = q // ow)."""
    return (q // ow) * sh * rstride + (q % ow) * dx


@numba.njit(cache=True, fastmath=FASTMATH)
def _forward_dot(xf, wf, bf, yf, starts, o, kh, row, row8, rstride, cout, relu, zeros8):
    """8 output pixels x one channel of conv2d_forward: each pixel's patch (starting at ``starts``
    in flat xp) dotted with wf = w[..., f] flat, 8 patch elements at a time; the elements past the
    last multiple of 8 in a kernel row are gathered, 8 pixels at a time. Results go to yf[o + j*cout]."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    a0 = _load8(zeros8, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    tail = a0
    for i in range(kh):
        o_i = i * rstride
        for m in range(0, row8, 8):
            v = _load8(wf, i * row + m)
            a0 = _fma8v(a0, _load8(xf, b0 + o_i + m), v)
            a1 = _fma8v(a1, _load8(xf, b1 + o_i + m), v)
            a2 = _fma8v(a2, _load8(xf, b2 + o_i + m), v)
            a3 = _fma8v(a3, _load8(xf, b3 + o_i + m), v)
            a4 = _fma8v(a4, _load8(xf, b4 + o_i + m), v)
            a5 = _fma8v(a5, _load8(xf, b5 + o_i + m), v)
            a6 = _fma8v(a6, _load8(xf, b6 + o_i + m), v)
            a7 = _fma8v(a7, _load8(xf, b7 + o_i + m), v)
        for k in range(o_i + row8, o_i + row):
            tail = _fma8(tail, wf[i * row + k - o_i], (xf[b0 + k], xf[b1 + k], xf[b2 + k], xf[b3 + k],
                                                       xf[b4 + k], xf[b5 + k], xf[b6 + k], xf[b7 + k]))
    acc = (bf + (_hsum8(a0) + tail[0]), bf + (_hsum8(a1) + tail[1]), bf + (_hsum8(a2) + tail[2]),
           bf + (_hsum8(a3) + tail[3]), bf + (_hsum8(a4) + tail[4]), bf + (_hsum8(a5) + tail[5]),
           bf + (_hsum8(a6) + tail[6]), bf + (_hsum8(a7) + tail[7]))
    _scatter8(yf, o, cout, acc, relu)


@numba.njit(parallel=prange_only(), cache=True, fastmath=FASTMATH)
def conv2d_forward(xp, w, b, sh, sw, act, y):
    """y[n, r, c, f] = act(b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]).

    xp: (n, hp, wp, cin) padded input; w: (kh, kw, cin, cout); b: (cout,); act: ACT_LINEAR or
    ACT_RELU; y: (n, oh, ow, cout), overwritten. All C-contiguous. Samples run in parallel; in a
    sample, blocks of 8 output pixels (raster order) x 8 channels are summed in registers, and
    channels left over as 8 dot products along the patch.
    """
    n, oh, ow, cout = y.shape
    kh, kw, cin, _ = w.shape
    _, hp, wp, _ = xp.shape
    row = kw * cin          # patch length along one kernel row, contiguous in xp
    rstride = wp * cin      # from one xp row to the next
    dx = sw * cin           # from one output pixel's patch to the next along a row
    npix = oh * ow
    rjump = sh * rstride - ow * dx  # extra move at the end of an output row
    xf = xp.reshape(n * hp * rstride)
    wm = w.reshape(kh * row, cout)    # wm[i*row + k] = row k of W_i
    yf = y.reshape(n * npix * cout)
    relu = act == ACT_RELU
    f8 = cout - cout % 8    # channels done 8 at a time; the rest one at a time
    row8 = row - row % 8
    wl = np.empty((cout - f8, kh * row), dtype=w.dtype)  # wl[f - f8] = w[..., f], flat
    for e in range(kh * row):
        for f in range(f8, cout):
            wl[f - f8, e] = wm[e, f]
    zeros8 = np.zeros(8, dtype=y.dtype)
    for s in numba.prange(n):
        xs, ys = s * hp * rstride, s * npix * cout
        for blk in range((npix + 7) // 8 if npix >= 8 else 0):
            q = min(8 * blk, npix - 8)
            r, c = q // ow, q % ow   # then step along the raster, without dividing
            b0 = xs + r * sh * rstride + c * dx
            r, c, b1 = _next_pixel(r, c, b0, oh, ow, dx, rjump, 0)
            r, c, b2 = _next_pixel(r, c, b1, oh, ow, dx, rjump, 0)
            r, c, b3 = _next_pixel(r, c, b2, oh, ow, dx, rjump, 0)
            r, c, b4 = _next_pixel(r, c, b3, oh, ow, dx, rjump, 0)
            r, c, b5 = _next_pixel(r, c, b4, oh, ow, dx, rjump, 0)
            r, c, b6 = _next_pixel(r, c, b5, oh, ow, dx, rjump, 0)
            r, c, b7 = _next_pixel(r, c, b6, oh, ow, dx, rjump, 0)
            for f0 in range(0, f8, 8):  # 8 pixels x 8 channels
                a0 = _load8(b, f0)
                a1 = a0
                a2 = a0
                a3 = a0
                a4 = a0
                a5 = a0
                a6 = a0
                a7 = a0
                for i in range(kh):
                    o = i * rstride  # the 8 patches along kernel row i
                    p0, p1, p2, p3 = xf[b0 + o:b0 + o + row], xf[b1 + o:b1 + o + row], \
                        xf[b2 + o:b2 + o + row], xf[b3 + o:b3 + o + row]
                    p4, p5, p6, p7 = xf[b4 + o:b4 + o + row], xf[b5 + o:b5 + o + row], \
                        xf[b6 + o:b6 + o + row], xf[b7 + o:b7 + o + row]
                    for k in range(row):
                        v = _load8(wm[i * row + k], f0)
                        a0 = _fma8(a0, p0[k], v)
                        a1 = _fma8(a1, p1[k], v)
                        a2 = _fma8(a2, p2[k], v)
                        a3 = _fma8(a3, p3[k], v)
                        a4 = _fma8(a4, p4[k], v)
                        a5 = _fma8(a5, p5[k], v)
                        a6 = _fma8(a6, p6[k], v)
                        a7 = _fma8(a7, p7[k], v)
                o = ys + q * cout + f0
                _store8(yf, o, a0, relu)
                _store8(yf, o + cout, a1, relu)
                _store8(yf, o + 2 * cout, a2, relu)
                _store8(yf, o + 3 * cout, a3, relu)
                _store8(yf, o + 4 * cout, a4, relu)
                _store8(yf, o + 5 * cout, a5, relu)
                _store8(yf, o + 6 * cout, a6, relu)
                _store8(yf, o + 7 * cout, a7, relu)
            starts = (b0, b1, b2, b3, b4, b5, b6, b7)
            for f in range(f8, cout):   # channels left over, one at a time
                _forward_dot(xf, wl[f - f8], b[f], yf, starts, ys + q * cout + f, kh, row, row8, rstride, cout,
                             relu, zeros8)
        # fewer than 8 output pixels: one output at a time
        for q in range(npix if npix < 8 else 0):
            bq = xs + _patch_start(q, ow, sh, rstride, dx)
            for f in range(cout):
                acc = b[f]
                for i in range(kh):
                    for k in range(row):
                        acc += xf[bq + i * rstride + k] * wm[i * row + k, f]
                yf[ys + q * cout + f] = max(acc, 0) if relu else acc


def conv2d_backward_input(dy, w, sh, sw, pt, pl, dx):
    """dx[n, rr, cc, ch] = sum_{i,j,f} dy[n, r, c, f] * w[i, j, ch, f], over r*sh+i-pt = rr, c*sw+j-pl = cc.

    dy: (n, oh, ow, cout); w: (kh, kw, cin, cout); pt, pl: top/left padding of the forward pass;
    dx: (n, h, w, cin), overwritten.

    This is a convolution too: spread dy out by the strides inside a halo of kh-1-pt rows on top and
    kw-1-pl columns on the left (dyp), and correlate it, stride 1 and 'valid', with the kernel
    rotated by 180 degrees and its channel axes swapped (wt). Layers keep dyp and wt between calls,
    fill dyp in the same pass as the bias gradient (:func:`conv2d_backward_dz`) and call
    :func:`conv2d_backward_input_padded`; this function allocates them.
    """
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = dx.shape
    dyp = np.zeros((n, h + kh - 1, wd + kw - 1, cout), dtype=dy.dtype)
    dilate_pad_into(dy, sh, sw, kh - 1 - pt, kw - 1 - pl, dyp)
    conv2d_backward_input_padded(dyp, w, np.empty((kh, kw, cout, cin), dtype=w.dtype),
                                 np.zeros(cin, dtype=w.dtype), dx)


def conv2d_backward_input_padded(dyp, w, wt, zero_bias, dx):
    """:func:`conv2d_backward_input` from dy already spread into its halo (dyp: (n, h+kh-1,
    w+kw-1, cout)): correlate dyp with the flipped kernel. wt (kh, kw, cout, cin) is overwritten;
    zero_bias (cin,) holds zeros."""
    flip_kernel_into(w, wt)
    conv2d_forward(dyp, wt, zero_bias, 1, 1, ACT_LINEAR, dx)


@numba.njit(cache=True, fastmath=FASTMATH)
def _dw_pair(xf, dyf, pf, m, xs, ts, pk, eA, fA, eB, fB, oA, oB, cout, oh, ow, dx, rjump, sjump, zeros8):
    """Weight gradients of two (8 patch elements x 8 channels) blocks over m output pixels: element
    vectors at offsets oA, oB of each patch (first elements eA, eB), channels from fA, fB; pixels
    from xs in flat xp and ts in flat dy. Two pixels per step; written into pf at chunk offset pk."""
    a0 = _load8(zeros8, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    b0 = a0
    b1 = a0
    b2 = a0
    b3 = a0
    b4 = a0
    b5 = a0
    b6 = a0
    b7 = a0
    r, c, x0, t = 0, 0, xs, ts
    for _ in range(m // 2):     # pixels t and t + 1 (x0 and x1)
        r, c, x1 = _next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
        xa, xb, ya, yb = _load8(xf, x0 + oA), _load8(xf, x0 + oB), _load8(xf, x1 + oA), _load8(xf, x1 + oB)
        d, e, g, h = _load8(dyf, t + fA), _load8(dyf, t + fB), _load8(dyf, t + cout + fA), \
            _load8(dyf, t + cout + fB)
        a0 = _fma8(_fma8(a0, d[0], xa), g[0], ya)
        a1 = _fma8(_fma8(a1, d[1], xa), g[1], ya)
        a2 = _fma8(_fma8(a2, d[2], xa), g[2], ya)
        a3 = _fma8(_fma8(a3, d[3], xa), g[3], ya)
        a4 = _fma8(_fma8(a4, d[4], xa), g[4], ya)
        a5 = _fma8(_fma8(a5, d[5], xa), g[5], ya)
        a6 = _fma8(_fma8(a6, d[6], xa), g[6], ya)
        a7 = _fma8(_fma8(a7, d[7], xa), g[7], ya)
        b0 = _fma8(_fma8(b0, e[0], xb), h[0], yb)
        b1 = _fma8(_fma8(b1, e[1], xb), h[1], yb)
        b2 = _fma8(_fma8(b2, e[2], xb), h[2], yb)
        b3 = _fma8(_fma8(b3, e[3], xb), h[3], yb)
        b4 = _fma8(_fma8(b4, e[4], xb), h[4], yb)
        b5 = _fma8(_fma8(b5, e[5], xb), h[5], yb)
        b6 = _fma8(_fma8(b6, e[6], xb), h[6], yb)
        b7 = _fma8(_fma8(b7, e[7], xb), h[7], yb)
        r, c, x0 = _next_pixel(r, c, x1, oh, ow, dx, rjump, sjump)
        t += 2 * cout
    if m % 2:                   # the chunk's last pixel
        xa, xb = _load8(xf, x0 + oA), _load8(xf, x0 + oB)
        d, e = _load8(dyf, t + fA), _load8(dyf, t + fB)
        a0, a1, a2, a3 = _fma8(a0, d[0], xa), _fma8(a1, d[1], xa), _fma8(a2, d[2], xa), _fma8(a3, d[3], xa)
        a4, a5, a6, a7 = _fma8(a4, d[4], xa), _fma8(a5, d[5], xa), _fma8(a6, d[6], xa), _fma8(a7, d[7], xa)
        b0, b1, b2, b3 = _fma8(b0, e[0], xb), _fma8(b1, e[1], xb), _fma8(b2, e[2], xb), _fma8(b3, e[3], xb)
        b4, b5, b6, b7 = _fma8(b4, e[4], xb), _fma8(b5, e[5], xb), _fma8(b6, e[6], xb), _fma8(b7, e[7], xb)
    pA, pB = pk + eA * cout + fA, pk + eB * cout + fB   # a_j, b_j: channel f + j, 8 elements
    _scatter8(pf, pA, cout, a0, False)
    _scatter8(pf, pA + 1, cout, a1, False)
    _scatter8(pf, pA + 2, cout, a2, False)
    _scatter8(pf, pA + 3, cout, a3, False)
    _scatter8(pf, pA + 4, cout, a4, False)
    _scatter8(pf, pA + 5, cout, a5, False)
    _scatter8(pf, pA + 6, cout, a6, False)
    _scatter8(pf, pA + 7, cout, a7, False)
    _scatter8(pf, pB, cout, b0, False)
    _scatter8(pf, pB + 1, cout, b1, False)
    _scatter8(pf, pB + 2, cout, b2, False)
    _scatter8(pf, pB + 3, cout, b3, False)
    _scatter8(pf, pB + 4, cout, b4, False)
    _scatter8(pf, pB + 5, cout, b5, False)
    _scatter8(pf, pB + 6, cout, b6, False)
    _scatter8(pf, pB + 7, cout, b7, False)


@numba.njit(cache=True, fastmath=FASTMATH)
def _dw_vectors_1ch(xf, dyf, pf, m, xs, ts, pk, f, es, offs, cout, oh, ow, dx, rjump, sjump, zeros8):
    """Weight gradients of 8 element vectors (first elements es, at offsets offs of each patch) x
    channel f, over m output pixels from xs in flat xp and ts in flat dy; written into pf at pk."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    a0 = _load8(zeros8, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    r, c, x0 = 0, 0, xs
    for t in range(ts + f, ts + m * cout + f, cout):
        d = dyf[t]
        a0 = _fma8(a0, d, _load8(xf, x0 + o0))
        a1 = _fma8(a1, d, _load8(xf, x0 + o1))
        a2 = _fma8(a2, d, _load8(xf, x0 + o2))
        a3 = _fma8(a3, d, _load8(xf, x0 + o3))
        a4 = _fma8(a4, d, _load8(xf, x0 + o4))
        a5 = _fma8(a5, d, _load8(xf, x0 + o5))
        a6 = _fma8(a6, d, _load8(xf, x0 + o6))
        a7 = _fma8(a7, d, _load8(xf, x0 + o7))
        r, c, x0 = _next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
    _scatter8(pf, pk + es[0] * cout + f, cout, a0, False)
    _scatter8(pf, pk + es[1] * cout + f, cout, a1, False)
    _scatter8(pf, pk + es[2] * cout + f, cout, a2, False)
    _scatter8(pf, pk + es[3] * cout + f, cout, a3, False)
    _scatter8(pf, pk + es[4] * cout + f, cout, a4, False)
    _scatter8(pf, pk + es[5] * cout + f, cout, a5, False)
    _scatter8(pf, pk + es[6] * cout + f, cout, a6, False)
    _scatter8(pf, pk + es[7] * cout + f, cout, a7, False)


@numba.njit(cache=True, fastmath=FASTMATH)
def _dw_gather(xf, dyf, pf, m, xs, ts, pk, e, offs, f0, cout, oh, ow, dx, rjump, sjump, zeros8):
    """Weight gradients of patch elements e..e+7 (gathered from offsets offs) x channels f0..f0+7,
    over m output pixels from xs in flat xp and ts in flat dy; written into pf at pk."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    a0 = _load8(zeros8, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    r, c, x0 = 0, 0, xs
    for t in range(ts + f0, ts + m * cout + f0, cout):
        v = _load8(dyf, t)
        a0 = _fma8(a0, _at(xf, x0 + o0), v)
        a1 = _fma8(a1, _at(xf, x0 + o1), v)
        a2 = _fma8(a2, _at(xf, x0 + o2), v)
        a3 = _fma8(a3, _at(xf, x0 + o3), v)
        a4 = _fma8(a4, _at(xf, x0 + o4), v)
        a5 = _fma8(a5, _at(xf, x0 + o5), v)
        a6 = _fma8(a6, _at(xf, x0 + o6), v)
        a7 = _fma8(a7, _at(xf, x0 + o7), v)
        r, c, x0 = _next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
    p = pk + e * cout + f0
    _store8(pf, p, a0, False)
    _store8(pf, p + cout, a1, False)
    _store8(pf, p + 2 * cout, a2, False)
    _store8(pf, p + 3 * cout, a3, False)
    _store8(pf, p + 4 * cout, a4, False)
    _store8(pf, p + 5 * cout, a5, False)
    _store8(pf, p + 6 * cout, a6, False)
    _store8(pf, p + 7 * cout, a7, False)


@numba.njit(cache=True, fastmath=FASTMATH)
def _dw_gather_1ch(xf, dyf, pf, m, xs, ts, pk, e, offs, f, cout, oh, ow, dx, rjump, sjump, zeros8):
    """Weight gradients of patch elements e..e+7 (gathered from offsets offs) x channel f, over m
    output pixels from xs in flat xp and ts in flat dy; written into pf at pk."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    acc = _load8(zeros8, 0)
    r, c, x0 = 0, 0, xs
    for t in range(ts + f, ts + m * cout + f, cout):
        acc = _fma8(acc, dyf[t], (_at(xf, x0 + o0), _at(xf, x0 + o1), _at(xf, x0 + o2), _at(xf, x0 + o3),
                                  _at(xf, x0 + o4), _at(xf, x0 + o5), _at(xf, x0 + o6), _at(xf, x0 + o7)))
        r, c, x0 = _next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
    _scatter8(pf, pk + e * cout + f, cout, acc, False)


@numba.njit(parallel=prange_only(), cache=True, fastmath=FASTMATH)
def conv2d_backward_kernel_chunks(xp, dy, sh, sw, part, dw):
    """:func:`conv2d_backward_kernel` with its work array given: part (nc, kh, kw, cin, cout), the
    sums over nc fixed chunks of the batch (nc = n_chunks(n)), overwritten.

    Each chunk sums its output pixels in raster order. Where a kernel row of the patch holds at
    least 8 numbers (kw*cin >= 8), 8 neighbouring patch elements make one vector: two blocks of
    (8 elements x 8 channels) are summed together, 2 pixels per step, in 16 vector accumulators;
    channels left over (cout % 8) take 8 element vectors x 1 channel. Narrower rows gather 8 patch
    elements x 8 channels, or x 1 channel for the channels left over.
    """
    n, oh, ow, cout = dy.shape
    kh, kw, cin, _ = dw.shape
    _, hp, wp, _ = xp.shape
    nc = part.shape[0]
    row = kw * cin
    ke = kh * row           # patch elements e = i*row + k, at offset i*rstride + k in xp
    rstride = wp * cin
    dx = sw * cin
    rjump = sh * rstride - ow * dx
    sjump = (hp - oh * sh) * rstride
    xf = xp.reshape(n * hp * rstride)
    dyf = dy.reshape(n * oh * ow * cout)
    pf = part.reshape(nc * ke * cout)
    f8 = cout - cout % 8
    zero = dw.dtype.type(0)
    npix = oh * ow
    zeros8 = np.zeros(8, dtype=dw.dtype)
    offsets = np.empty(ke, np.int64)
    for e in range(ke):
        offsets[e] = (e // row) * rstride + e % row
    # element vectors: 8 neighbouring elements of one kernel row; the last in a row overlaps the
    # one before instead of running past the row. vstart[v] is the first element of vector v.
    nvr = (row + 7) // 8 if row >= 8 else 0
    nv = kh * nvr
    vstart = np.empty(max(nv, 1), np.int64)
    for v in range(nv):
        vstart[v] = (v // nvr) * row + min(8 * (v % nvr), row - 8)
    # units (element vector, first of 8 channels), taken in pairs; an odd last unit pairs with itself
    nu = nv * (cout // 8)
    ue = np.empty(nu + 1, np.int64)
    uf = np.empty(nu + 1, np.int64)
    for u in range(nu):
        ue[u], uf[u] = vstart[u // (cout // 8)], 8 * (u % (cout // 8))
    if nu > 0:
        ue[nu], uf[nu] = ue[nu - 1], uf[nu - 1]
    for kc in numba.prange(nc):
        s0, s1 = kc * n // nc, (kc + 1) * n // nc
        m = (s1 - s0) * npix        # output pixels in this chunk
        pk = kc * ke * cout
        xs, ts = s0 * hp * rstride, s0 * npix * cout
        for pair in range((nu + 1) // 2 if row >= 8 else 0):
            eA, fA, eB, fB = ue[2 * pair], uf[2 * pair], ue[2 * pair + 1], uf[2 * pair + 1]
            _dw_pair(xf, dyf, pf, m, xs, ts, pk, eA, fA, eB, fB, offsets[eA], offsets[eB], cout, oh, ow, dx,
                     rjump, sjump, zeros8)
        # channels left over, with kernel rows of 8 or more: 8 element vectors x 1 channel (the
        # last group repeats its last vector where fewer than 8 are left)
        for grp in range((nv + 7) // 8 if cout > f8 else 0):
            v0 = 8 * grp
            e0, e1, e2, e3 = vstart[v0], vstart[min(v0 + 1, nv - 1)], vstart[min(v0 + 2, nv - 1)], \
                vstart[min(v0 + 3, nv - 1)]
            e4, e5, e6, e7 = vstart[min(v0 + 4, nv - 1)], vstart[min(v0 + 5, nv - 1)], \
                vstart[min(v0 + 6, nv - 1)], vstart[min(v0 + 7, nv - 1)]
            o0, o1, o2, o3 = offsets[e0], offsets[e1], offsets[e2], offsets[e3]
            o4, o5, o6, o7 = offsets[e4], offsets[e5], offsets[e6], offsets[e7]
            for f in range(f8, cout):
                _dw_vectors_1ch(xf, dyf, pf, m, xs, ts, pk, f, (e0, e1, e2, e3, e4, e5, e6, e7),
                                (o0, o1, o2, o3, o4, o5, o6, o7), cout, oh, ow, dx, rjump, sjump, zeros8)
        # kernel rows narrower than 8 (cin of 1 or 2): blocks of 8 patch elements (gathered) x 8
        # channels, summed over every pixel of the chunk
        for blk in range((ke + 7) // 8 if row < 8 and ke >= 8 else 0):
            e = min(8 * blk, ke - 8)
            o0, o1, o2, o3 = offsets[e], offsets[e + 1], offsets[e + 2], offsets[e + 3]
            o4, o5, o6, o7 = offsets[e + 4], offsets[e + 5], offsets[e + 6], offsets[e + 7]
            offs = (o0, o1, o2, o3, o4, o5, o6, o7)
            for f0 in range(0, f8, 8):
                _dw_gather(xf, dyf, pf, m, xs, ts, pk, e, offs, f0, cout, oh, ow, dx, rjump, sjump, zeros8)
            for f in range(f8, cout):
                _dw_gather_1ch(xf, dyf, pf, m, xs, ts, pk, e, offs, f, cout, oh, ow, dx, rjump, sjump, zeros8)
        # fewer than 8 patch elements (tiny kernels): one weight at a time
        for e in range(ke if ke < 8 else 0):
            for f in range(cout):
                acc1 = zero
                for s in range(s0, s1):
                    for r in range(oh):
                        xrow = (s * hp + r * sh) * rstride
                        drow = (s * oh + r) * ow * cout + f
                        for c in range(ow):
                            acc1 += xf[xrow + c * dx + offsets[e]] * dyf[drow + c * cout]
                pf[pk + e * cout + f] = acc1
    # the chunks, added in order
    for i in range(kh):
        for j in range(kw):
            for ch in range(cin):
                for f in range(cout):
                    acc = part[0, i, j, ch, f]
                    for kc in range(1, nc):
                        acc += part[kc, i, j, ch, f]
                    dw[i, j, ch, f] = acc


def conv2d_backward_kernel(xp, dy, sh, sw, dw):
    """dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dy[n, r, c, f].

    xp: (n, hp, wp, cin) padded input of the forward pass; dy: (n, oh, ow, cout);
    dw: (kh, kw, cin, cout), overwritten. The batch is summed in fixed chunks, then the chunks in
    order, so the result does not depend on the number of threads.
    """
    part = np.empty((n_chunks(xp.shape[0]),) + dw.shape, dtype=dw.dtype)
    conv2d_backward_kernel_chunks(xp, dy, sh, sw, part, dw)


@numba.njit(parallel=prange_only(), cache=True, fastmath=FASTMATH)
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
    _sum_chunks(part, db)
