"""The kernel and bias gradients of the 2-D convolution: the slow, obvious versions and the fast
kernels, with the one pass over dy that prepares them.

    dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh + i, c*sw + j, ch] * dy[n, r, c, f]
    db[f]           = sum_{n,r,c} dy[n, r, c, f]

Shapes as in conv_forward.py. Both sums run over the batch in fixed chunks (config.n_chunks), each
chunk in order, then the chunks in order: the result does not depend on the number of threads.
See docs/conv2d.md.
"""
import numpy as np

from autoenc.kernels.blocks import (LANES, add8, after_segment, at, fma8, load8, next_pixel, store8, vfmaL, vload8,
                                    vloadL, vstoreL, where_positive8)
from autoenc.kernels.config import FASTMATH, n_chunks, njit
from autoenc.kernels.padding import pad_naive
from autoenc.threads import parallel_for

# Set by autoenc/warmup.py while a second process compiles _dw_chunks into the Numba cache (a cold
# start): called with the kernel's name before it runs, it waits until that process has saved it.
before_first_call = None

# Pixels per tile of the weight gradient: about this many floats of dy and input per tile (256 KB),
# which stay in the core's L2 cache while every block of weights sweeps the tile.
TILE_FLOATS = 65536


def conv2d_backward_kernel_naive(x, dy, kernel_size, strides=(1, 1), padding="valid"):
    """dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dy[n, r, c, f]. Returns dw."""
    kh, kw = kernel_size
    sh, sw = strides
    xp, _, (oh, ow) = pad_naive(x, kernel_size, strides, padding)
    dw = np.zeros((kh, kw, x.shape[3], dy.shape[3]))
    for r in range(oh):
        for c in range(ow):
            patch = xp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :]
            dw += np.tensordot(patch, dy[:, r, c, :], axes=([0], [0]))
    return dw


def conv2d_backward_bias_naive(dy):
    """db[f] = sum_{n,r,c} dy[n, r, c, f]. Returns db."""
    return dy.astype(np.float64).sum(axis=(0, 1, 2))


# --- the fast kernels --------------------------------------------------------------------------


@njit()
def _sum_chunks(part, out):
    """out[f] = part[0, f] + part[1, f] + ..., added in order. part: (nc, c); out: (c,)."""
    for f in range(out.size):
        acc = part[0, f]
        for k in range(1, part.shape[0]):
            acc += part[k, f]
        out[f] = acc


def conv2d_backward_bias(dy, db):
    """db[f] = sum_{n,r,c} dy[n, r, c, f]. dy: (n, oh, ow, cout); db: (cout,), overwritten.

    Optimizations: fixed chunks of the batch on threads (threads.parallel_for), then the chunks
    added in order (the same result for any number of threads). Conv2D gets db from
    :func:`conv2d_backward_dz` instead.
    """
    part = np.zeros((n_chunks(dy.shape[0]), dy.shape[3]), dtype=db.dtype)
    parallel_for(_bias_chunks, part.shape[0], dy, part)
    _sum_chunks(part, db)


@njit(fastmath=FASTMATH)
def _bias_chunks(lo, hi, dy, part):
    """part[k] = the sum of dy over chunk k of the batch (of part.shape[0]), for chunks lo..hi-1."""
    n, oh, ow, cout = dy.shape
    nc = part.shape[0]
    for k in range(lo, hi):
        for s in range(k * n // nc, (k + 1) * n // nc):
            for r in range(oh):
                for c in range(ow):
                    for f in range(cout):
                        part[k, f] += dy[s, r, c, f]


def conv2d_backward_dz(dy, y, relu, sh, sw, top, left, dz, dzp, part, db):
    """The one pass over the output gradient that the three gradient kernels need:

        dz = dy where y > 0, else 0     (relu; otherwise dz = dy)
        db[f] = sum_{n,r,c} dz[n, r, c, f]
        dzp[n, top + r*sh, left + c*sw] = dz[n, r, c]   (as dilate_pad_into; skipped if dzp has no samples)

    dy, y, dz: (n, oh, ow, c); dzp: (n, hp, wp, c), zero elsewhere, or (0, hp, wp, c) to skip;
    part: (nc, c) work array (nc = n_chunks(n)); db: (c,). dz, dzp, part and db are overwritten.
    db is summed like conv2d_backward_bias (fixed chunks of the batch, then the chunks in order),
    so the two agree bit for bit.

    Optimizations: one read of dy (and y) for three results, saving two passes over dz; chunks of
    the batch on threads (threads.parallel_for); 8 channels at a time in a register tuple (one
    vector load, mask, store and add).
    """
    parallel_for(_dz_chunks, part.shape[0], dy, y, relu, sh, sw, top, left, dz, dzp, part)
    _sum_chunks(part, db)


@njit()
def _dz_chunks(lo, hi, dy, y, relu, sh, sw, top, left, dz, dzp, part):
    """:func:`conv2d_backward_dz` for chunks lo..hi-1 of the batch, but db (part[k] is chunk k's)."""
    n, oh, ow, c = dy.shape
    nc = part.shape[0]
    pad = dzp.shape[0] > 0
    _, hp, wp, _ = dzp.shape
    dyf, yf, dzf = dy.reshape(dy.size), y.reshape(y.size), dz.reshape(dz.size)
    dzpf = dzp.reshape(dzp.size)
    for k in range(lo, hi):
        pk = part[k]
        for f in range(c):
            pk[f] = 0
        for s in range(k * n // nc, (k + 1) * n // nc):
            for r in range(oh):
                i0 = (s * oh + r) * ow * c                      # row r of sample s in dy, y, dz
                p0 = ((s * hp + top + r * sh) * wp + left) * c  # where it goes in dzp
                dz_row(dyf, yf, relu, dzf, True, dzpf, pad, pk, i0, p0, ow, c, sw)


@njit()
def dz_row(src, yf, relu, dzf, write_dz, dzpf, pad, pk, i0, p0, ow, c, sw):
    """One row of the dz pass (conv2d_backward_dz), ow pixels x c channels starting at i0 in flat
    src, yf and dzf: v = src where yf > 0, else 0 (relu; otherwise v = src); dzf = v (write_dz);
    dzpf[p0 + q*sw*c + f] = v for pixel q (pad); pk[f] += v, pixel by pixel in order.

    Optimizations: 8 channels at a time in a register tuple (one vector load, mask, store and add),
    the channels left over one at a time."""
    c8 = c - c % 8
    zero = dzf.dtype.type(0)
    for f0 in range(0, c8, 8):  # 8 channels at a time
        acc = load8(pk, f0)
        for q in range(ow):
            i = i0 + q * c + f0
            v = load8(src, i)
            if relu:
                v = where_positive8(v, load8(yf, i), zero)
            if write_dz:
                store8(dzf, i, v, False)
            if pad:
                store8(dzpf, p0 + q * sw * c + f0, v, False)
            acc = add8(acc, v)
        store8(pk, f0, acc, False)
    for f in range(c8, c):      # channels left over
        a = pk[f]
        for q in range(ow):
            i = i0 + q * c + f
            v = src[i] if not relu or yf[i] > 0 else zero
            if write_dz:
                dzf[i] = v
            if pad:
                dzpf[p0 + q * sw * c + f] = v
            a += v
        pk[f] = a


@njit()
def _store64(ua, u, a0, a1, a2, a3, a4, a5, a6, a7):
    """ua[u + 8*j : u + 8*j + 8] = a_j for j < 8: a block's 64 sums, kept between tiles."""
    store8(ua, u, a0, False)
    store8(ua, u + 8, a1, False)
    store8(ua, u + 16, a2, False)
    store8(ua, u + 24, a3, False)
    store8(ua, u + 32, a4, False)
    store8(ua, u + 40, a5, False)
    store8(ua, u + 48, a6, False)
    store8(ua, u + 56, a7, False)


@njit()
def _store64v(ua, u, a0, a1, a2, a3, a4, a5, a6, a7):
    """ua[u + 8*j : u + 8*j + 8] = a_j for j < 8, vectors of 8: a block's 64 sums, kept between tiles."""
    vstoreL(ua, u, a0)
    vstoreL(ua, u + 8, a1)
    vstoreL(ua, u + 16, a2)
    vstoreL(ua, u + 24, a3)
    vstoreL(ua, u + 32, a4)
    vstoreL(ua, u + 40, a5)
    vstoreL(ua, u + 48, a6)
    vstoreL(ua, u + 56, a7)


@njit(fastmath=FASTMATH)
def _dw_pair(xf, dyf, ua, uA, uB, m, r, c, x0, t, fA, fB, oA, oB, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of two (8 patch elements x 8 channels) blocks, added over m output pixels
    to their sums so far, ua[uA + 8*j + q] and ua[uB + 8*j + q] (element q, channel f + j): element
    vectors at offsets oA, oB of each patch (vectors of 8 in every build), each times a broadcast of
    channel fA + j (fB + j) of dy; the first pixel is (row r, column c), its patch at x0 in flat xp
    and its gradient at t in flat dy. One output row's pixels at a time (x0 += dx; see
    blocks.after_segment)."""
    a0, a1, a2, a3 = vload8(ua, uA), vload8(ua, uA + 8), vload8(ua, uA + 16), vload8(ua, uA + 24)
    a4, a5, a6, a7 = vload8(ua, uA + 32), vload8(ua, uA + 40), vload8(ua, uA + 48), vload8(ua, uA + 56)
    b0, b1, b2, b3 = vload8(ua, uB), vload8(ua, uB + 8), vload8(ua, uB + 16), vload8(ua, uB + 24)
    b4, b5, b6, b7 = vload8(ua, uB + 32), vload8(ua, uB + 40), vload8(ua, uB + 48), vload8(ua, uB + 56)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            xa, xb = vload8(xf, x0 + oA), vload8(xf, x0 + oB)
            d, e = t + fA, t + fB
            a0 = vfmaL(a0, at(dyf, d), xa)
            a1 = vfmaL(a1, at(dyf, d + 1), xa)
            a2 = vfmaL(a2, at(dyf, d + 2), xa)
            a3 = vfmaL(a3, at(dyf, d + 3), xa)
            a4 = vfmaL(a4, at(dyf, d + 4), xa)
            a5 = vfmaL(a5, at(dyf, d + 5), xa)
            a6 = vfmaL(a6, at(dyf, d + 6), xa)
            a7 = vfmaL(a7, at(dyf, d + 7), xa)
            b0 = vfmaL(b0, at(dyf, e), xb)
            b1 = vfmaL(b1, at(dyf, e + 1), xb)
            b2 = vfmaL(b2, at(dyf, e + 2), xb)
            b3 = vfmaL(b3, at(dyf, e + 3), xb)
            b4 = vfmaL(b4, at(dyf, e + 4), xb)
            b5 = vfmaL(b5, at(dyf, e + 5), xb)
            b6 = vfmaL(b6, at(dyf, e + 6), xb)
            b7 = vfmaL(b7, at(dyf, e + 7), xb)
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    _store64v(ua, uA, a0, a1, a2, a3, a4, a5, a6, a7)
    _store64v(ua, uB, b0, b1, b2, b3, b4, b5, b6, b7)


@njit(fastmath=FASTMATH)
def _dw_vectors_1ch(xf, dyf, ua, u, m, r, c, x0, ts, f, offs, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 8 element vectors of 8 (at offsets offs of each patch) x channel f, added
    over m output pixels (the first at row r, column c, x0 in flat xp, ts in flat dy) to their sums
    so far, ua[u + 8*j + q] (element q of vector j). One output row's pixels at a time."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    a0, a1, a2, a3 = vload8(ua, u), vload8(ua, u + 8), vload8(ua, u + 16), vload8(ua, u + 24)
    a4, a5, a6, a7 = vload8(ua, u + 32), vload8(ua, u + 40), vload8(ua, u + 48), vload8(ua, u + 56)
    t = ts + f
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            d = dyf[t]
            a0 = vfmaL(a0, d, vload8(xf, x0 + o0))
            a1 = vfmaL(a1, d, vload8(xf, x0 + o1))
            a2 = vfmaL(a2, d, vload8(xf, x0 + o2))
            a3 = vfmaL(a3, d, vload8(xf, x0 + o3))
            a4 = vfmaL(a4, d, vload8(xf, x0 + o4))
            a5 = vfmaL(a5, d, vload8(xf, x0 + o5))
            a6 = vfmaL(a6, d, vload8(xf, x0 + o6))
            a7 = vfmaL(a7, d, vload8(xf, x0 + o7))
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    _store64v(ua, u, a0, a1, a2, a3, a4, a5, a6, a7)


@njit(fastmath=FASTMATH)
def _dw_vectors9(xf, dyf, ua, u, m, r, c, x0, t, offs, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 9 element vectors LANES wide (at offsets offs of each patch) x one
    channel, added over m output pixels (the first at row r, column c, x0 in flat xp, its channel
    at t in flat dy) to their sums so far, ua[u + LANES*j + q] (element q of vector j)."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = offs
    a0, a1, a2 = vloadL(ua, u), vloadL(ua, u + LANES), vloadL(ua, u + 2 * LANES)
    a3, a4, a5 = vloadL(ua, u + 3 * LANES), vloadL(ua, u + 4 * LANES), vloadL(ua, u + 5 * LANES)
    a6, a7, a8 = vloadL(ua, u + 6 * LANES), vloadL(ua, u + 7 * LANES), vloadL(ua, u + 8 * LANES)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            d = dyf[t]
            a0 = vfmaL(a0, d, vloadL(xf, x0 + o0))
            a1 = vfmaL(a1, d, vloadL(xf, x0 + o1))
            a2 = vfmaL(a2, d, vloadL(xf, x0 + o2))
            a3 = vfmaL(a3, d, vloadL(xf, x0 + o3))
            a4 = vfmaL(a4, d, vloadL(xf, x0 + o4))
            a5 = vfmaL(a5, d, vloadL(xf, x0 + o5))
            a6 = vfmaL(a6, d, vloadL(xf, x0 + o6))
            a7 = vfmaL(a7, d, vloadL(xf, x0 + o7))
            a8 = vfmaL(a8, d, vloadL(xf, x0 + o8))
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    vstoreL(ua, u, a0)
    vstoreL(ua, u + LANES, a1)
    vstoreL(ua, u + 2 * LANES, a2)
    vstoreL(ua, u + 3 * LANES, a3)
    vstoreL(ua, u + 4 * LANES, a4)
    vstoreL(ua, u + 5 * LANES, a5)
    vstoreL(ua, u + 6 * LANES, a6)
    vstoreL(ua, u + 7 * LANES, a7)
    vstoreL(ua, u + 8 * LANES, a8)


@njit(fastmath=FASTMATH)
def _dw_vectors9x3(xf, dyf, ua, u, m, r, c, x0, t, offs, cout, oh, ow, dx, rjump, sjump):
    """:func:`_dw_vectors9` for three neighbouring channels at once (each element vector loaded once
    for the three): sums so far at ua[u + 9*LANES*k + LANES*j + q] (channel k of the three, element q
    of vector j), the first channel's gradient at t in flat dy. 27 accumulators."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = offs
    ub, uc = u + 9 * LANES, u + 18 * LANES
    a0, a1, a2 = vloadL(ua, u), vloadL(ua, u + LANES), vloadL(ua, u + 2 * LANES)
    a3, a4, a5 = vloadL(ua, u + 3 * LANES), vloadL(ua, u + 4 * LANES), vloadL(ua, u + 5 * LANES)
    a6, a7, a8 = vloadL(ua, u + 6 * LANES), vloadL(ua, u + 7 * LANES), vloadL(ua, u + 8 * LANES)
    b0, b1, b2 = vloadL(ua, ub), vloadL(ua, ub + LANES), vloadL(ua, ub + 2 * LANES)
    b3, b4, b5 = vloadL(ua, ub + 3 * LANES), vloadL(ua, ub + 4 * LANES), vloadL(ua, ub + 5 * LANES)
    b6, b7, b8 = vloadL(ua, ub + 6 * LANES), vloadL(ua, ub + 7 * LANES), vloadL(ua, ub + 8 * LANES)
    c0, c1, c2 = vloadL(ua, uc), vloadL(ua, uc + LANES), vloadL(ua, uc + 2 * LANES)
    c3, c4, c5 = vloadL(ua, uc + 3 * LANES), vloadL(ua, uc + 4 * LANES), vloadL(ua, uc + 5 * LANES)
    c6, c7, c8 = vloadL(ua, uc + 6 * LANES), vloadL(ua, uc + 7 * LANES), vloadL(ua, uc + 8 * LANES)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            d, e, g = dyf[t], dyf[t + 1], dyf[t + 2]
            v = vloadL(xf, x0 + o0)
            a0, b0, c0 = vfmaL(a0, d, v), vfmaL(b0, e, v), vfmaL(c0, g, v)
            v = vloadL(xf, x0 + o1)
            a1, b1, c1 = vfmaL(a1, d, v), vfmaL(b1, e, v), vfmaL(c1, g, v)
            v = vloadL(xf, x0 + o2)
            a2, b2, c2 = vfmaL(a2, d, v), vfmaL(b2, e, v), vfmaL(c2, g, v)
            v = vloadL(xf, x0 + o3)
            a3, b3, c3 = vfmaL(a3, d, v), vfmaL(b3, e, v), vfmaL(c3, g, v)
            v = vloadL(xf, x0 + o4)
            a4, b4, c4 = vfmaL(a4, d, v), vfmaL(b4, e, v), vfmaL(c4, g, v)
            v = vloadL(xf, x0 + o5)
            a5, b5, c5 = vfmaL(a5, d, v), vfmaL(b5, e, v), vfmaL(c5, g, v)
            v = vloadL(xf, x0 + o6)
            a6, b6, c6 = vfmaL(a6, d, v), vfmaL(b6, e, v), vfmaL(c6, g, v)
            v = vloadL(xf, x0 + o7)
            a7, b7, c7 = vfmaL(a7, d, v), vfmaL(b7, e, v), vfmaL(c7, g, v)
            v = vloadL(xf, x0 + o8)
            a8, b8, c8 = vfmaL(a8, d, v), vfmaL(b8, e, v), vfmaL(c8, g, v)
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    vstoreL(ua, u, a0)
    vstoreL(ua, u + LANES, a1)
    vstoreL(ua, u + 2 * LANES, a2)
    vstoreL(ua, u + 3 * LANES, a3)
    vstoreL(ua, u + 4 * LANES, a4)
    vstoreL(ua, u + 5 * LANES, a5)
    vstoreL(ua, u + 6 * LANES, a6)
    vstoreL(ua, u + 7 * LANES, a7)
    vstoreL(ua, u + 8 * LANES, a8)
    vstoreL(ua, ub, b0)
    vstoreL(ua, ub + LANES, b1)
    vstoreL(ua, ub + 2 * LANES, b2)
    vstoreL(ua, ub + 3 * LANES, b3)
    vstoreL(ua, ub + 4 * LANES, b4)
    vstoreL(ua, ub + 5 * LANES, b5)
    vstoreL(ua, ub + 6 * LANES, b6)
    vstoreL(ua, ub + 7 * LANES, b7)
    vstoreL(ua, ub + 8 * LANES, b8)
    vstoreL(ua, uc, c0)
    vstoreL(ua, uc + LANES, c1)
    vstoreL(ua, uc + 2 * LANES, c2)
    vstoreL(ua, uc + 3 * LANES, c3)
    vstoreL(ua, uc + 4 * LANES, c4)
    vstoreL(ua, uc + 5 * LANES, c5)
    vstoreL(ua, uc + 6 * LANES, c6)
    vstoreL(ua, uc + 7 * LANES, c7)
    vstoreL(ua, uc + 8 * LANES, c8)


@njit(fastmath=FASTMATH)
def _dw_gather(xf, dyf, ua, u, m, r, c, x0, ts, offs, f0, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 8 patch elements (gathered from offsets offs) x channels f0..f0+7,
    added over m output pixels (the first at row r, column c, x0 in flat xp, ts in flat dy) to
    their sums so far, ua[u + 8*j + q] (element j, channel f0 + q)."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    a0, a1, a2, a3 = load8(ua, u), load8(ua, u + 8), load8(ua, u + 16), load8(ua, u + 24)
    a4, a5, a6, a7 = load8(ua, u + 32), load8(ua, u + 40), load8(ua, u + 48), load8(ua, u + 56)
    for t in range(ts + f0, ts + m * cout + f0, cout):
        v = load8(dyf, t)
        a0 = fma8(a0, at(xf, x0 + o0), v)
        a1 = fma8(a1, at(xf, x0 + o1), v)
        a2 = fma8(a2, at(xf, x0 + o2), v)
        a3 = fma8(a3, at(xf, x0 + o3), v)
        a4 = fma8(a4, at(xf, x0 + o4), v)
        a5 = fma8(a5, at(xf, x0 + o5), v)
        a6 = fma8(a6, at(xf, x0 + o6), v)
        a7 = fma8(a7, at(xf, x0 + o7), v)
        r, c, x0 = next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
    _store64(ua, u, a0, a1, a2, a3, a4, a5, a6, a7)


@njit(fastmath=FASTMATH)
def _dw_gather_1ch(xf, dyf, ua, u, m, r, c, x0, ts, offs, f, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 8 patch elements (gathered from offsets offs) x channel f, added over m
    output pixels (the first at row r, column c, x0 in flat xp, ts in flat dy) to their sums so
    far, ua[u + q] (element q)."""
    o0, o1, o2, o3, o4, o5, o6, o7 = offs
    acc = load8(ua, u)
    for t in range(ts + f, ts + m * cout + f, cout):
        acc = fma8(acc, dyf[t], (at(xf, x0 + o0), at(xf, x0 + o1), at(xf, x0 + o2), at(xf, x0 + o3),
                                  at(xf, x0 + o4), at(xf, x0 + o5), at(xf, x0 + o6), at(xf, x0 + o7)))
        r, c, x0 = next_pixel(r, c, x0, oh, ow, dx, rjump, sjump)
    store8(ua, u, acc, False)


@njit(fastmath=FASTMATH)
def _dw_taps(xf, dyf, pf, dst, offs, m, r, c, x0, t, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 9 patch elements (at offsets offs of each patch) x LANES channels, added
    over m output pixels (the first at row r, column c, its patch at x0 in flat xp and its channels
    at t in flat dy) to their sums so far, pf[dst[j] : dst[j] + LANES] (element j). One vector of
    dy per pixel, times 9 broadcast inputs. Where dst repeats a position (the last group of a
    patch repeats its last element), the repeats compute and store the same numbers."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = offs
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = dst
    a0, a1, a2, a3, a4 = vloadL(pf, d0), vloadL(pf, d1), vloadL(pf, d2), vloadL(pf, d3), vloadL(pf, d4)
    a5, a6, a7, a8 = vloadL(pf, d5), vloadL(pf, d6), vloadL(pf, d7), vloadL(pf, d8)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            v = vloadL(dyf, t)
            a0 = vfmaL(a0, at(xf, x0 + o0), v)
            a1 = vfmaL(a1, at(xf, x0 + o1), v)
            a2 = vfmaL(a2, at(xf, x0 + o2), v)
            a3 = vfmaL(a3, at(xf, x0 + o3), v)
            a4 = vfmaL(a4, at(xf, x0 + o4), v)
            a5 = vfmaL(a5, at(xf, x0 + o5), v)
            a6 = vfmaL(a6, at(xf, x0 + o6), v)
            a7 = vfmaL(a7, at(xf, x0 + o7), v)
            a8 = vfmaL(a8, at(xf, x0 + o8), v)
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    vstoreL(pf, d0, a0)
    vstoreL(pf, d1, a1)
    vstoreL(pf, d2, a2)
    vstoreL(pf, d3, a3)
    vstoreL(pf, d4, a4)
    vstoreL(pf, d5, a5)
    vstoreL(pf, d6, a6)
    vstoreL(pf, d7, a7)
    vstoreL(pf, d8, a8)


@njit(fastmath=FASTMATH)
def _dw_wide(xf, dyf, pf, dst, offs, m, r, c, x0, t, cout, oh, ow, dx, rjump, sjump):
    """Weight gradients of 9 patch elements (at offsets offs of each patch) x 2*LANES channels,
    added over m output pixels (the first at row r, column c, its patch at x0 in flat xp and its
    channels at t in flat dy) to their sums so far, pf[dst[j] : dst[j] + 2*LANES] (element j).
    Two vectors of dy per pixel, times 9 broadcast inputs: 18 multiply-adds in 18 accumulators.
    Where dst repeats a position (the last group of a patch repeats its last element), the repeats
    compute and store the same numbers."""
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = offs
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = dst
    a0, a1, a2, a3 = vloadL(pf, d0), vloadL(pf, d1), vloadL(pf, d2), vloadL(pf, d3)
    a4, a5, a6, a7, a8 = vloadL(pf, d4), vloadL(pf, d5), vloadL(pf, d6), vloadL(pf, d7), vloadL(pf, d8)
    b0, b1, b2, b3 = vloadL(pf, d0 + LANES), vloadL(pf, d1 + LANES), vloadL(pf, d2 + LANES), vloadL(pf, d3 + LANES)
    b4, b5, b6 = vloadL(pf, d4 + LANES), vloadL(pf, d5 + LANES), vloadL(pf, d6 + LANES)
    b7, b8 = vloadL(pf, d7 + LANES), vloadL(pf, d8 + LANES)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            v, w = vloadL(dyf, t), vloadL(dyf, t + LANES)
            p = at(xf, x0 + o0)
            a0, b0 = vfmaL(a0, p, v), vfmaL(b0, p, w)
            p = at(xf, x0 + o1)
            a1, b1 = vfmaL(a1, p, v), vfmaL(b1, p, w)
            p = at(xf, x0 + o2)
            a2, b2 = vfmaL(a2, p, v), vfmaL(b2, p, w)
            p = at(xf, x0 + o3)
            a3, b3 = vfmaL(a3, p, v), vfmaL(b3, p, w)
            p = at(xf, x0 + o4)
            a4, b4 = vfmaL(a4, p, v), vfmaL(b4, p, w)
            p = at(xf, x0 + o5)
            a5, b5 = vfmaL(a5, p, v), vfmaL(b5, p, w)
            p = at(xf, x0 + o6)
            a6, b6 = vfmaL(a6, p, v), vfmaL(b6, p, w)
            p = at(xf, x0 + o7)
            a7, b7 = vfmaL(a7, p, v), vfmaL(b7, p, w)
            p = at(xf, x0 + o8)
            a8, b8 = vfmaL(a8, p, v), vfmaL(b8, p, w)
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    vstoreL(pf, d0, a0)
    vstoreL(pf, d1, a1)
    vstoreL(pf, d2, a2)
    vstoreL(pf, d3, a3)
    vstoreL(pf, d4, a4)
    vstoreL(pf, d5, a5)
    vstoreL(pf, d6, a6)
    vstoreL(pf, d7, a7)
    vstoreL(pf, d8, a8)
    vstoreL(pf, d0 + LANES, b0)
    vstoreL(pf, d1 + LANES, b1)
    vstoreL(pf, d2 + LANES, b2)
    vstoreL(pf, d3 + LANES, b3)
    vstoreL(pf, d4 + LANES, b4)
    vstoreL(pf, d5 + LANES, b5)
    vstoreL(pf, d6 + LANES, b6)
    vstoreL(pf, d7 + LANES, b7)
    vstoreL(pf, d8 + LANES, b8)


@njit(fastmath=FASTMATH)
def _dw_wide6(xf, dyf, pf, dst, offs, m, r, c, x0, t, cout, oh, ow, dx, rjump, sjump):
    """:func:`_dw_wide` for 6 patch elements x 2*LANES channels: 12 accumulators, two vectors of dy
    and a broadcast, within AVX2's 16 registers (9 elements, 18 accumulators, spill there)."""
    o0, o1, o2, o3, o4, o5 = offs
    d0, d1, d2, d3, d4, d5 = dst
    a0, a1, a2, a3, a4, a5 = vloadL(pf, d0), vloadL(pf, d1), vloadL(pf, d2), vloadL(pf, d3), vloadL(pf, d4), \
        vloadL(pf, d5)
    b0, b1, b2 = vloadL(pf, d0 + LANES), vloadL(pf, d1 + LANES), vloadL(pf, d2 + LANES)
    b3, b4, b5 = vloadL(pf, d3 + LANES), vloadL(pf, d4 + LANES), vloadL(pf, d5 + LANES)
    left = m
    while left > 0:   # the pixels along one output row, then those of the next
        seg = min(ow - c, left)
        for _ in range(seg):
            v, w = vloadL(dyf, t), vloadL(dyf, t + LANES)
            p = at(xf, x0 + o0)
            a0, b0 = vfmaL(a0, p, v), vfmaL(b0, p, w)
            p = at(xf, x0 + o1)
            a1, b1 = vfmaL(a1, p, v), vfmaL(b1, p, w)
            p = at(xf, x0 + o2)
            a2, b2 = vfmaL(a2, p, v), vfmaL(b2, p, w)
            p = at(xf, x0 + o3)
            a3, b3 = vfmaL(a3, p, v), vfmaL(b3, p, w)
            p = at(xf, x0 + o4)
            a4, b4 = vfmaL(a4, p, v), vfmaL(b4, p, w)
            p = at(xf, x0 + o5)
            a5, b5 = vfmaL(a5, p, v), vfmaL(b5, p, w)
            x0 += dx
            t += cout
        left -= seg
        r, c, x0 = after_segment(r, c, x0, seg, oh, ow, rjump, sjump)
    vstoreL(pf, d0, a0)
    vstoreL(pf, d1, a1)
    vstoreL(pf, d2, a2)
    vstoreL(pf, d3, a3)
    vstoreL(pf, d4, a4)
    vstoreL(pf, d5, a5)
    vstoreL(pf, d0 + LANES, b0)
    vstoreL(pf, d1 + LANES, b1)
    vstoreL(pf, d2 + LANES, b2)
    vstoreL(pf, d3 + LANES, b3)
    vstoreL(pf, d4 + LANES, b4)
    vstoreL(pf, d5 + LANES, b5)


@njit()
def _no_dw(*args):
    """Stands in for :func:`_dw_vectors9`, :func:`_dw_vectors9x3` and :func:`_dw_wide` where vectors
    hold 8 float32, and for :func:`_dw_wide6` where they hold 16 (never called there)."""


# groups of 9 vectors 16 wide, 27 and 18 accumulators: AVX-512 only (see conv2d_backward_kernel_chunks);
# AVX2 compiles none of them, and _dw_wide6 in their place
_dw_vectors9_or_none = _dw_vectors9 if LANES == 16 else _no_dw
_dw_vectors9x3_or_none = _dw_vectors9x3 if LANES == 16 else _no_dw
_dw_wide_or_none = _dw_wide if LANES == 16 else _no_dw
_dw_wide6_or_none = _dw_wide6 if LANES == 8 else _no_dw   # its AVX2 counterpart


def conv2d_backward_kernel_chunks(xp, dy, sh, sw, part, dw):
    """:func:`conv2d_backward_kernel` with its work array given: part (nc, kh, kw, cin, cout), the
    sums over nc fixed chunks of the batch (nc = n_chunks(n)), overwritten.

    Each chunk sums its output pixels in raster order, one fused multiply-add per weight and pixel.
    With AVX-512, where a kernel row of the patch holds at least 8 numbers (kw*cin >= 8), the
    channels in multiples of 32 take groups of 9 patch elements (broadcast) x 32 channels (two
    vectors of dy): 18 zmm accumulators, summed straight into part; the 16 past the last multiple
    of 32 take groups of 9 patch elements x 16 channels (one vector of dy), as narrow rows do
    (below). With AVX2 the channels in multiples of 16 take groups of 6 patch elements x 16 channels
    (12 ymm accumulators; 1.3-1.65x faster than the pairs below). Otherwise (the channels left
    over) 8 neighbouring patch elements make one vector: two blocks of (8 elements x 8 channels) are summed together, in 16 vectors of 8, each
    pixel's element vectors times a broadcast of each channel of dy; channels left over (cout % 8)
    take 9 element vectors 16 wide x 3 channels, then x 1, with AVX-512 (8 vectors
    8 wide x 1 channel with AVX2, or where a kernel row is shorter than 16). Narrower rows (cin of
    1 or 2) take groups of 9 patch elements x LANES channels (16 with AVX-512, 8 with AVX2; a 3x3
    kernel on one channel is one group), summed straight into part; their other channels gather 8
    patch elements x 8 channels (with AVX-512, the 8 past a multiple of 16), or x 1 channel.

    Optimizations: fixed chunks of the batch on threads (threads.parallel_for), chunks added in
    order (identical for any number of threads, and for AVX2 and AVX-512 builds); no im2col buffer:
    patches read in place in xp; 9 to 27 vector accumulators (12 in AVX2's groups) (LLVM vectors, blocks.Vec; tuples in the
    gathered blocks), each block walking one output row at a time with its patch address stepped by a
    constant and moving to the next row between rows (blocks.after_segment; the gathered blocks step
    by next_pixel); pixels in tiles that stay in L2 while every block sweeps them.
    """
    if before_first_call is not None:   # _dw_chunks may be compiling in a second process
        before_first_call("_dw_chunks")
    nc = part.shape[0]
    parallel_for(_dw_chunks, nc, xp, dy, sh, sw, part)
    flat = dw.reshape(dw.size)          # a view of dw, or a copy where dw is not contiguous
    _sum_chunks(part.reshape(nc, part.size // nc), flat)   # the chunks, added in order
    if not np.may_share_memory(flat, dw):
        dw[...] = flat.reshape(dw.shape)


@njit(fastmath=FASTMATH)
def _dw_chunks(lo, hi, xp, dy, sh, sw, part):
    """part[k] = chunk k's sum of :func:`conv2d_backward_kernel_chunks`, for chunks lo..hi-1."""
    n, oh, ow, cout = dy.shape
    _, kh, kw, cin, _ = part.shape
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
    # kernel rows under 8 numbers: channels 0..fl-1 in groups of 9 elements x LANES channels (9 vector
    # accumulators, one vector of dy per pixel: 11 of AVX2's 16 registers)
    fl = cout - cout % LANES if row < 8 else 0
    # kernel rows of 8 numbers or more, AVX-512: channels 0..fw-1 in groups of 9 patch elements
    # (a 3x3 kernel has 9*cin; otherwise the last group repeats the patch's last element) x 32
    # channels, summed straight into part; then the 16 past the last multiple of 32 (a 16-channel
    # layer) in groups of 9 x 16 (as rows under 8 numbers), channels fw..ft-1
    # (AVX2: groups of 6 patch elements x 16 channels, _dw_wide6)
    fw = cout - cout % (2 * LANES) if row >= 8 else 0
    ft = cout - cout % 16 if LANES == 16 and row >= 8 else 0
    gw = 9 if LANES == 16 else 6   # patch elements per group
    ngw9 = (ke + gw - 1) // gw if fw > 0 else 0
    t0, t1 = (0, fl) if row < 8 else (fw, ft)   # the channels in groups of 9 elements x LANES (AVX-512 only)
    ngt = (ke + 8) // 9 if t1 > t0 else 0
    zero = part.dtype.type(0)
    npix = oh * ow
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
    # units (element vector, first of 8 channels from fu, past the groups of 9), taken in pairs; an
    # odd last unit pairs with itself
    fu = max(fw, ft)
    nf8 = (f8 - fu) // 8
    nu = nv * nf8
    ue = np.empty(nu + 1, np.int64)
    uf = np.empty(nu + 1, np.int64)
    for u in range(nu):
        ue[u], uf[u] = vstart[u // nf8], fu + 8 * (u % nf8)
    if nu > 0:
        ue[nu], uf[nu] = ue[nu - 1], uf[nu - 1]
    # Each block of weights keeps its sums between tiles in ua (nc, nsum): blocks overlap (the last
    # vector of a kernel row overlaps the one before), so they cannot add into part directly.
    # Layout per chunk: the pair units (64 sums each), then the (group, left-over channel) blocks
    # of 8 vectors x 1 channel (64), then per gathered block its 8x8 channel blocks and its
    # 8 x 1 channel blocks.
    # channels left over, kernel rows of 16 numbers or more (AVX-512; as fl): groups of 9 element
    # vectors 16 wide x 1 channel (vstartw as vstart); otherwise groups of 8 vectors 8 wide
    nvrw = (row + LANES - 1) // LANES if LANES == 16 and row >= LANES else 0
    nvw = kh * nvrw
    vstartw = np.empty(max(nvw, 1), np.int64)
    for v in range(nvw):
        vstartw[v] = (v // nvrw) * row + min(LANES * (v % nvrw), row - LANES)
    ngw = (nvw + 8) // 9 if cout > f8 else 0
    ngrp = (nv + 7) // 8 if cout > f8 and row >= 8 and ngw == 0 else 0
    nblk = (ke + 7) // 8 if row < 8 and ke >= 8 else 0
    gsize = (f8 // 8) * 64 + (cout - f8) * 8
    u1 = (nu if row >= 8 else 0) * 64
    u2 = u1 + ngrp * (cout - f8) * 64
    u3 = u2 + nblk * gsize
    nsum = u3 + ngw * (cout - f8) * 9 * LANES
    ua = np.zeros((hi - lo, max(nsum, 1)), dtype=part.dtype)   # row kc - lo: chunk kc's
    # tiles of the chunk's pixels, where a chunk's dy and input (about cout + cin numbers a pixel)
    # outgrow 4 * TILE_FLOATS (1 MB): every block sweeps one tile, whose dy and patches then come
    # from the cache, before the next; an even count, so the pixel pairs stay as without tiles
    tile = max(64, TILE_FLOATS // (cout + cin)) // 2 * 2
    if (n + nc - 1) // nc * npix * (cout + cin) <= 4 * TILE_FLOATS:
        tile = (n + nc - 1) // nc * npix + 2   # the chunk fits: one tile
    for kc in range(lo, hi):
        s0, s1 = kc * n // nc, (kc + 1) * n // nc
        m = (s1 - s0) * npix        # output pixels in this chunk
        pk = kc * ke * cout
        uk = ua[kc - lo]
        for e in range(ke if max(fl, ft, fw) > 0 else 0):   # the groups of elements sum into part, from zero
            for f in range(max(fl, ft, fw)):
                pf[pk + e * cout + f] = zero
        for q0 in range(0, m if ke >= 8 or ngt > 0 else 0, tile):
            mt = min(tile, m - q0)  # pixels in this tile; the first at (sample s, row r, column c)
            s, r, c = s0 + q0 // npix, (q0 % npix) // ow, q0 % ow
            xs, ts = s * hp * rstride + r * sh * rstride + c * dx, (s0 * npix + q0) * cout
            for f0 in range(0, fw if LANES == 8 else 0, 2 * LANES):   # AVX2
                for g in range(ngw9):
                    e0, e1, e2 = min(6 * g, ke - 1), min(6 * g + 1, ke - 1), min(6 * g + 2, ke - 1)
                    e3, e4, e5 = min(6 * g + 3, ke - 1), min(6 * g + 4, ke - 1), min(6 * g + 5, ke - 1)
                    offs6 = (offsets[e0], offsets[e1], offsets[e2], offsets[e3], offsets[e4], offsets[e5])
                    p0 = pk + f0
                    dst6 = (p0 + e0 * cout, p0 + e1 * cout, p0 + e2 * cout, p0 + e3 * cout, p0 + e4 * cout,
                            p0 + e5 * cout)
                    _dw_wide6_or_none(xf, dyf, pf, dst6, offs6, mt, r, c, xs, ts + f0, cout, oh, ow, dx, rjump,
                                      sjump)
            for f0 in range(0, fw if LANES == 16 else 0, 2 * LANES):
                for g in range(ngw9):
                    e0, e1, e2 = min(9 * g, ke - 1), min(9 * g + 1, ke - 1), min(9 * g + 2, ke - 1)
                    e3, e4, e5 = min(9 * g + 3, ke - 1), min(9 * g + 4, ke - 1), min(9 * g + 5, ke - 1)
                    e6, e7, e8 = min(9 * g + 6, ke - 1), min(9 * g + 7, ke - 1), min(9 * g + 8, ke - 1)
                    offs9 = (offsets[e0], offsets[e1], offsets[e2], offsets[e3], offsets[e4], offsets[e5],
                             offsets[e6], offsets[e7], offsets[e8])
                    p0 = pk + f0
                    dst = (p0 + e0 * cout, p0 + e1 * cout, p0 + e2 * cout, p0 + e3 * cout, p0 + e4 * cout,
                           p0 + e5 * cout, p0 + e6 * cout, p0 + e7 * cout, p0 + e8 * cout)
                    _dw_wide_or_none(xf, dyf, pf, dst, offs9, mt, r, c, xs, ts + f0, cout, oh, ow, dx, rjump,
                                     sjump)
            for pair in range((nu + 1) // 2 if row >= 8 else 0):
                uA, uB = 2 * pair, min(2 * pair + 1, nu - 1)
                _dw_pair(xf, dyf, uk, 64 * uA, 64 * uB, mt, r, c, xs, ts, uf[uA], uf[uB], offsets[ue[uA]],
                         offsets[ue[uB]], cout, oh, ow, dx, rjump, sjump)
            # channels left over, with kernel rows of 8 or more: 8 element vectors x 1 channel (the
            # last group repeats its last vector where fewer than 8 are left)
            for grp in range(ngrp):
                v0 = 8 * grp
                o0, o1, o2, o3 = offsets[vstart[v0]], offsets[vstart[min(v0 + 1, nv - 1)]], \
                    offsets[vstart[min(v0 + 2, nv - 1)]], offsets[vstart[min(v0 + 3, nv - 1)]]
                o4, o5, o6, o7 = offsets[vstart[min(v0 + 4, nv - 1)]], offsets[vstart[min(v0 + 5, nv - 1)]], \
                    offsets[vstart[min(v0 + 6, nv - 1)]], offsets[vstart[min(v0 + 7, nv - 1)]]
                for f in range(f8, cout):
                    _dw_vectors_1ch(xf, dyf, uk, u1 + (grp * (cout - f8) + f - f8) * 64, mt, r, c, xs, ts, f,
                                    (o0, o1, o2, o3, o4, o5, o6, o7), cout, oh, ow, dx, rjump, sjump)
            for g in range(ngw):
                v0 = 9 * g
                offs9 = (offsets[vstartw[v0]], offsets[vstartw[min(v0 + 1, nvw - 1)]],
                         offsets[vstartw[min(v0 + 2, nvw - 1)]], offsets[vstartw[min(v0 + 3, nvw - 1)]],
                         offsets[vstartw[min(v0 + 4, nvw - 1)]], offsets[vstartw[min(v0 + 5, nvw - 1)]],
                         offsets[vstartw[min(v0 + 6, nvw - 1)]], offsets[vstartw[min(v0 + 7, nvw - 1)]],
                         offsets[vstartw[min(v0 + 8, nvw - 1)]])
                for f in range(f8, f8 + (cout - f8) // 3 * 3, 3):  # three channels at a time, then one
                    _dw_vectors9x3_or_none(xf, dyf, uk, u3 + (g * (cout - f8) + f - f8) * 9 * LANES, mt, r, c, xs,
                                           ts + f, offs9, cout, oh, ow, dx, rjump, sjump)
                for f in range(f8 + (cout - f8) // 3 * 3, cout):
                    _dw_vectors9_or_none(xf, dyf, uk, u3 + (g * (cout - f8) + f - f8) * 9 * LANES, mt, r, c, xs,
                                         ts + f, offs9, cout, oh, ow, dx, rjump, sjump)
            # kernel rows narrower than 8 (cin of 1 or 2), and with AVX-512 the 16 channels past the last
            # multiple of 32: groups of 9 patch elements (the last group repeats the patch's last
            # element) x LANES channels, summed over every pixel of the tile
            for g in range(ngt):
                e0, e1, e2 = min(9 * g, ke - 1), min(9 * g + 1, ke - 1), min(9 * g + 2, ke - 1)
                e3, e4, e5 = min(9 * g + 3, ke - 1), min(9 * g + 4, ke - 1), min(9 * g + 5, ke - 1)
                e6, e7, e8 = min(9 * g + 6, ke - 1), min(9 * g + 7, ke - 1), min(9 * g + 8, ke - 1)
                offs9 = (offsets[e0], offsets[e1], offsets[e2], offsets[e3], offsets[e4], offsets[e5], offsets[e6],
                         offsets[e7], offsets[e8])
                for f0 in range(t0, t1, LANES):
                    p0 = pk + f0
                    dst = (p0 + e0 * cout, p0 + e1 * cout, p0 + e2 * cout, p0 + e3 * cout, p0 + e4 * cout,
                           p0 + e5 * cout, p0 + e6 * cout, p0 + e7 * cout, p0 + e8 * cout)
                    _dw_taps(xf, dyf, pf, dst, offs9, mt, r, c, xs, ts + f0, cout, oh, ow, dx, rjump, sjump)
            # and their channels left over: blocks of 8 patch elements (gathered) x 8 channels, or x 1
            for blk in range(nblk):
                e = min(8 * blk, ke - 8)
                o0, o1, o2, o3 = offsets[e], offsets[e + 1], offsets[e + 2], offsets[e + 3]
                o4, o5, o6, o7 = offsets[e + 4], offsets[e + 5], offsets[e + 6], offsets[e + 7]
                offs = (o0, o1, o2, o3, o4, o5, o6, o7)
                for f0 in range(fl, f8, 8):
                    _dw_gather(xf, dyf, uk, u2 + blk * gsize + 8 * f0, mt, r, c, xs, ts, offs, f0, cout, oh, ow,
                               dx, rjump, sjump)
                for f in range(f8, cout):
                    _dw_gather_1ch(xf, dyf, uk, u2 + blk * gsize + 8 * f8 + 8 * (f - f8), mt, r, c, xs, ts, offs,
                                   f, cout, oh, ow, dx, rjump, sjump)
        # the blocks' sums into part (overlapping blocks write the same numbers twice)
        for u in range(nu if row >= 8 else 0):
            for j in range(8):
                for q in range(8):
                    pf[pk + (ue[u] + q) * cout + uf[u] + j] = uk[64 * u + 8 * j + q]
        for grp in range(ngrp):
            for f in range(f8, cout):
                for j in range(8):
                    e = vstart[min(8 * grp + j, nv - 1)]
                    for q in range(8):
                        pf[pk + (e + q) * cout + f] = uk[u1 + (grp * (cout - f8) + f - f8) * 64 + 8 * j + q]
        for g in range(ngw):
            for f in range(f8, cout):
                for j in range(9):
                    e = vstartw[min(9 * g + j, nvw - 1)]
                    for q in range(LANES):
                        pf[pk + (e + q) * cout + f] = uk[u3 + (g * (cout - f8) + f - f8) * 9 * LANES + LANES * j + q]
        for blk in range(nblk):
            e = min(8 * blk, ke - 8)
            for j in range(8):
                for f in range(fl, f8):
                    pf[pk + (e + j) * cout + f] = uk[u2 + blk * gsize + 8 * (f - f % 8) + 8 * j + f % 8]
                for f in range(f8, cout):
                    pf[pk + (e + j) * cout + f] = uk[u2 + blk * gsize + 8 * f8 + 8 * (f - f8) + j]
        # fewer than 8 patch elements (tiny kernels): one weight at a time
        for e in range(ke if ke < 8 else 0):
            for f in range(fl, cout):
                acc1 = zero
                for s in range(s0, s1):
                    for r in range(oh):
                        xrow = (s * hp + r * sh) * rstride
                        drow = (s * oh + r) * ow * cout + f
                        for c in range(ow):
                            acc1 += xf[xrow + c * dx + offsets[e]] * dyf[drow + c * cout]
                pf[pk + e * cout + f] = acc1


def conv2d_backward_kernel(xp, dy, sh, sw, dw):
    """dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dy[n, r, c, f].

    xp: (n, hp, wp, cin) padded input of the forward pass; dy: (n, oh, ow, cout);
    dw: (kh, kw, cin, cout), overwritten. The batch is summed in fixed chunks, then the chunks in
    order, so the result does not depend on the number of threads.

    Optimizations: those of :func:`conv2d_backward_kernel_chunks`, which Conv2D calls with its work
    array kept; this wrapper allocates it.
    """
    part = np.empty((n_chunks(xp.shape[0]),) + dw.shape, dtype=dw.dtype)
    conv2d_backward_kernel_chunks(xp, dy, sh, sw, part, dw)
