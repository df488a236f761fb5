"""The 2-D convolution (cross-correlation, as in Keras) over NHWC arrays: the slow, obvious version
and the fast kernel.

Notation used by every convolution docstring::

    x   (n, h, w, cin)       input
    xp  (n, hp, wp, cin)     input inside a zero halo: xp[n, pt + r, pl + c, :] = x[n, r, c, :]
    w   (kh, kw, cin, cout)  kernel, Keras layout
    b   (cout,)              bias
    y   (n, oh, ow, cout)    output
    dy  (n, oh, ow, cout)    gradient of the loss with respect to y

    y[n, r, c, f] = b[f] + sum_{i, j, ch} xp[n, r*sh + i, c*sw + j, ch] * w[i, j, ch, f]

Its gradients: conv_input_grad.py (dx, itself this convolution run on the flipped kernel) and
conv_weight_grad.py (dw, db). See docs/conv2d.md.
"""
import numpy as np

from autoenc.kernels.blocks import (LANES, at, fma8, load8, next_pixel, prefetch_span, store8, storev, vfmaL, vfmav,
                                    vload16, vload16_first, vload_pair16, vloadL, vpairs2, vpairs4, vpairs8, vpairs16,
                                    vload8, vstoreL, vtuple)
from autoenc.kernels.config import FASTMATH, njit
from autoenc.kernels.padding import pad_naive, pad_sample_into, zero_sample
from autoenc.threads import parallel_for

# Activation fused into the forward epilogue.
ACT_LINEAR = 0
ACT_RELU = 1


def conv2d_forward_naive(x, w, b, strides=(1, 1), padding="valid"):
    """y[n, r, c, f] = b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]. Returns y."""
    kh, kw, cin, cout = w.shape
    sh, sw = strides
    xp, _, (oh, ow) = pad_naive(x, (kh, kw), strides, padding)
    y = np.zeros((x.shape[0], oh, ow, cout))
    for r in range(oh):
        for c in range(ow):
            patch = xp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :]  # (n, kh, kw, cin)
            y[:, r, c, :] = np.tensordot(patch, w, axes=3) + b
    return y


# --- the fast kernel ---------------------------------------------------------------------------
#
# Every fast kernel works on flat views of C-contiguous NHWC arrays. In a zero-halo input xp, the
# patch of one output pixel along kernel row i is kw*cin CONTIGUOUS numbers, so
#     y[n, r, c, :] = b + sum_i  xp_row(n, r*sh + i)[c*sw*cin : c*sw*cin + kw*cin] @ W_i
# with W_i = w[i] seen as a (kw*cin, cout) matrix: a small matrix product per kernel row.
# The products are register-blocked: 8 output pixels x 32, 16 or 8 channels are summed in vector
# registers (blocks.Vec of blocks.LANES numbers: 16 float32 in an AVX-512 register, 8 in an AVX2 one;
# the 8-channel block of odd patch rows in tuples of 8). With 16 lanes the channels go 32 at a time
# (16 accumulators: per patch element 2 vector loads of w and 8 broadcasts of x feed 16
# multiply-adds), then 16, then 8;
# with 8 lanes all 8 at a time. The 8 channels past the last multiple of 16 go by pairs of patch
# elements where a patch row is even (_forward_pairs: 8 channels x 2 elements fill a 512-bit
# register). Channels left over after that (cout % 8, e.g. a single-channel output) are dot
# products of each pixel's patch with w[..., f], 16 pixels and 16 patch elements at a time; where a
# kernel row is 3 taps of whole vectors (cin a multiple of 16) at stride 1 along the row, the 16
# pixels are neighbours in one output row and share each loaded vector among their 3 taps.
# Each output of a block is b[f], then one fused multiply-add per patch element in patch order
# (pairs: the even elements' sum from b[f] plus the odd ones' from zero; dot products: 16 lane sums
# added pairwise in a fixed order, each lane's terms in patch order, or where the pixels of a row share
# vectors, kernel row by kernel row, vector m of a tap, then tap j), so the result depends neither on
# the number of threads nor on the block width or vector width. The Vec blocks' multiply-adds are
# llvm.fma, always fused: left to contract a*v + acc itself, LLVM tuned for this CPU left some unfused
# (a last-bit difference).
# A block at the right edge overlaps the previous one instead of running past it (the overlapped
# outputs are computed twice, identically).


@njit()
def _patch_start(q, ow, sh, rstride, dx):
    """Offset in one sample of xp of the patch of output pixel q (raster order: r = q // ow)."""
    return (q // ow) * sh * rstride + (q % ow) * dx


@njit(fastmath=FASTMATH)
def _forward_blockL(xf, wf, b, yf, starts, f0, o, kh, row, rstride, cout, relu):
    """8 output pixels x channels f0..f0+LANES-1 of conv2d_forward (16 channels with AVX-512, 8 with
    AVX2): the pixels' patches start at ``starts`` in flat xp; wf is w flat; results go to
    yf[o + j*cout : o + j*cout + LANES]."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    a0 = vloadL(b, f0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    for i in range(kh):
        d = i * rstride  # the 8 patches along kernel row i: xf[bj + d : bj + d + row]
        for k in range(row):
            v = vloadL(wf, (i * row + k) * cout + f0)
            e = d + k
            a0 = vfmaL(a0, at(xf, b0 + e), v)
            a1 = vfmaL(a1, at(xf, b1 + e), v)
            a2 = vfmaL(a2, at(xf, b2 + e), v)
            a3 = vfmaL(a3, at(xf, b3 + e), v)
            a4 = vfmaL(a4, at(xf, b4 + e), v)
            a5 = vfmaL(a5, at(xf, b5 + e), v)
            a6 = vfmaL(a6, at(xf, b6 + e), v)
            a7 = vfmaL(a7, at(xf, b7 + e), v)
    storev(yf, o, a0, relu)
    storev(yf, o + cout, a1, relu)
    storev(yf, o + 2 * cout, a2, relu)
    storev(yf, o + 3 * cout, a3, relu)
    storev(yf, o + 4 * cout, a4, relu)
    storev(yf, o + 5 * cout, a5, relu)
    storev(yf, o + 6 * cout, a6, relu)
    storev(yf, o + 7 * cout, a7, relu)


@njit(fastmath=FASTMATH)
def _forward_block32(xf, wf, b, yf, starts, f0, o, kh, row, rstride, cout, relu):
    """8 output pixels x channels f0..f0+31 of conv2d_forward, as :func:`_forward_blockL` (the
    same sums in the same order) with two 16-channel vectors per pixel (AVX-512 only): 16 accumulators, and per
    patch element 2 vector loads of w and 8 broadcasts of x for 16 multiply-adds. The accumulators
    are LLVM vectors (blocks.Vec): as tuples of 16, LLVM split and re-joined them in 256-bit halves
    at every loop turn (131 instructions for the 16 multiply-adds, a third of the peak)."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    a0 = vloadL(b, f0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    c0 = vloadL(b, f0 + 16)
    c1 = c0
    c2 = c0
    c3 = c0
    c4 = c0
    c5 = c0
    c6 = c0
    c7 = c0
    for i in range(kh):
        d = i * rstride
        for k in range(row):
            e = (i * row + k) * cout + f0
            v = vloadL(wf, e)
            u = vloadL(wf, e + 16)
            e = d + k
            x0 = at(xf, b0 + e)
            a0 = vfmaL(a0, x0, v)
            c0 = vfmaL(c0, x0, u)
            x1 = at(xf, b1 + e)
            a1 = vfmaL(a1, x1, v)
            c1 = vfmaL(c1, x1, u)
            x2 = at(xf, b2 + e)
            a2 = vfmaL(a2, x2, v)
            c2 = vfmaL(c2, x2, u)
            x3 = at(xf, b3 + e)
            a3 = vfmaL(a3, x3, v)
            c3 = vfmaL(c3, x3, u)
            x4 = at(xf, b4 + e)
            a4 = vfmaL(a4, x4, v)
            c4 = vfmaL(c4, x4, u)
            x5 = at(xf, b5 + e)
            a5 = vfmaL(a5, x5, v)
            c5 = vfmaL(c5, x5, u)
            x6 = at(xf, b6 + e)
            a6 = vfmaL(a6, x6, v)
            c6 = vfmaL(c6, x6, u)
            x7 = at(xf, b7 + e)
            a7 = vfmaL(a7, x7, v)
            c7 = vfmaL(c7, x7, u)
    storev(yf, o, a0, relu)
    storev(yf, o + 16, c0, relu)
    storev(yf, o + cout, a1, relu)
    storev(yf, o + cout + 16, c1, relu)
    storev(yf, o + 2 * cout, a2, relu)
    storev(yf, o + 2 * cout + 16, c2, relu)
    storev(yf, o + 3 * cout, a3, relu)
    storev(yf, o + 3 * cout + 16, c3, relu)
    storev(yf, o + 4 * cout, a4, relu)
    storev(yf, o + 4 * cout + 16, c4, relu)
    storev(yf, o + 5 * cout, a5, relu)
    storev(yf, o + 5 * cout + 16, c5, relu)
    storev(yf, o + 6 * cout, a6, relu)
    storev(yf, o + 6 * cout + 16, c6, relu)
    storev(yf, o + 7 * cout, a7, relu)
    storev(yf, o + 7 * cout + 16, c7, relu)



@njit()
def _no_block(xf, wf, b, yf, starts, f0, o, kh, row, rstride, cout, relu):
    """Stands in for :func:`_forward_block32` where vectors hold 8 float32 (never called there)."""


# 8 pixels x 32 channels where a vector register holds 16 float32 (AVX-512); an AVX2 build compiles
# no 16-wide code
_forward_block32_or_none = _forward_block32 if LANES == 16 else _no_block


@njit(fastmath=FASTMATH)
def _forward_taps(xf, wf, b, yf, starts, offs, f0, o, cout, relu):
    """8 output pixels x channels f0..f0+LANES-1 of conv2d_forward where a patch row is short (one or
    two input channels): one loop over the patch's kh*kw*cin elements, element e at offset offs[e] of
    each pixel's patch (the pixels' patches start at ``starts`` in flat xp), one broadcast input times
    one vector of w per element and pixel; results go to yf[o + j*cout : o + j*cout + LANES]. A
    separate function: in one function with the kernel-row loops LLVM compiled both worse."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    a0 = vloadL(b, f0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    for e in range(offs.size):
        v = vloadL(wf, e * cout + f0)
        d = offs[e]
        a0 = vfmaL(a0, at(xf, b0 + d), v)
        a1 = vfmaL(a1, at(xf, b1 + d), v)
        a2 = vfmaL(a2, at(xf, b2 + d), v)
        a3 = vfmaL(a3, at(xf, b3 + d), v)
        a4 = vfmaL(a4, at(xf, b4 + d), v)
        a5 = vfmaL(a5, at(xf, b5 + d), v)
        a6 = vfmaL(a6, at(xf, b6 + d), v)
        a7 = vfmaL(a7, at(xf, b7 + d), v)
    storev(yf, o, a0, relu)
    storev(yf, o + cout, a1, relu)
    storev(yf, o + 2 * cout, a2, relu)
    storev(yf, o + 3 * cout, a3, relu)
    storev(yf, o + 4 * cout, a4, relu)
    storev(yf, o + 5 * cout, a5, relu)
    storev(yf, o + 6 * cout, a6, relu)
    storev(yf, o + 7 * cout, a7, relu)


@njit(fastmath=FASTMATH)
def _pair_store(yf, o, a, relu):
    """yf[o + c] = a[2c] + a[2c + 1] (max(., 0) when relu), c < 8: the even and odd sums of
    :func:`_forward_pairs8` added."""
    t = vtuple(a)
    store8(yf, o, (t[0] + t[1], t[2] + t[3], t[4] + t[5], t[6] + t[7], t[8] + t[9], t[10] + t[11], t[12] + t[13],
                   t[14] + t[15]), relu)


@njit(fastmath=FASTMATH)
def _forward_pairs8(xf, wq, bz, yf, starts, o, kh, half, rstride, cout, relu):
    """8 output pixels x 8 channels of conv2d_forward, summed by pairs of patch elements: lane 2c + e of
    a 16-number vector sums channel c's products with the patch elements 2m + e (e = 0, 1), so that 8
    channels fill a 512-bit register. The pixels' patches start at ``starts`` in flat xp; each kernel
    row has 2*half elements; wq[(i*half + m)*16 + 2c + e] is the kernel at element 2m + e of row i for
    channel c; bz holds the bias in the even lanes and zeros in the odd. Channel c of pixel j is its
    even sum (from the bias) + its odd sum (from zero), to yf[o + j*cout + c]."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    a0 = vload16(bz, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    a4 = a0
    a5 = a0
    a6 = a0
    a7 = a0
    for i in range(kh):
        d = i * rstride
        for m in range(half):
            v = vload16(wq, (i * half + m) * 16)
            e = d + 2 * m
            a0 = vfmav(a0, vload_pair16(xf, b0 + e), v)
            a1 = vfmav(a1, vload_pair16(xf, b1 + e), v)
            a2 = vfmav(a2, vload_pair16(xf, b2 + e), v)
            a3 = vfmav(a3, vload_pair16(xf, b3 + e), v)
            a4 = vfmav(a4, vload_pair16(xf, b4 + e), v)
            a5 = vfmav(a5, vload_pair16(xf, b5 + e), v)
            a6 = vfmav(a6, vload_pair16(xf, b6 + e), v)
            a7 = vfmav(a7, vload_pair16(xf, b7 + e), v)
    _pair_store(yf, o, a0, relu)
    _pair_store(yf, o + cout, a1, relu)
    _pair_store(yf, o + 2 * cout, a2, relu)
    _pair_store(yf, o + 3 * cout, a3, relu)
    _pair_store(yf, o + 4 * cout, a4, relu)
    _pair_store(yf, o + 5 * cout, a5, relu)
    _pair_store(yf, o + 6 * cout, a6, relu)
    _pair_store(yf, o + 7 * cout, a7, relu)


@njit(fastmath=FASTMATH)
def _forward_pairs4(xf, wq, bz, yf, b0, b1, b2, b3, o, kh, half, rstride, cout, relu):
    """:func:`_forward_pairs8` for 4 pixels, whose patches start at b0..b3: the same sums, for AVX2,
    where a 16-number vector is two registers (8 pixels' 16 would not fit in its 16)."""
    a0 = vload16(bz, 0)
    a1 = a0
    a2 = a0
    a3 = a0
    for i in range(kh):
        d = i * rstride
        for m in range(half):
            v = vload16(wq, (i * half + m) * 16)
            e = d + 2 * m
            a0 = vfmav(a0, vload_pair16(xf, b0 + e), v)
            a1 = vfmav(a1, vload_pair16(xf, b1 + e), v)
            a2 = vfmav(a2, vload_pair16(xf, b2 + e), v)
            a3 = vfmav(a3, vload_pair16(xf, b3 + e), v)
    _pair_store(yf, o, a0, relu)
    _pair_store(yf, o + cout, a1, relu)
    _pair_store(yf, o + 2 * cout, a2, relu)
    _pair_store(yf, o + 3 * cout, a3, relu)


@njit(fastmath=FASTMATH)
def _forward_pairs_by_4(xf, wq, bz, yf, starts, o, kh, half, rstride, cout, relu):
    """:func:`_forward_pairs8` as two calls of :func:`_forward_pairs4` (AVX2)."""
    b0, b1, b2, b3, b4, b5, b6, b7 = starts
    _forward_pairs4(xf, wq, bz, yf, b0, b1, b2, b3, o, kh, half, rstride, cout, relu)
    _forward_pairs4(xf, wq, bz, yf, b4, b5, b6, b7, o + 4 * cout, kh, half, rstride, cout, relu)


_forward_pairs = _forward_pairs8 if LANES == 16 else _forward_pairs_by_4


@njit(inline="always")
def _eight_pixels(r, c, b0, oh, ow, dx, rjump):
    """The patch starts of the 8 output pixels from (row r, column c) on in raster order, b0 that of
    the first (next_pixel steps from one to the next), and the row, column and patch start of the
    pixel after them."""
    r, c, b1 = next_pixel(r, c, b0, oh, ow, dx, rjump, 0)
    r, c, b2 = next_pixel(r, c, b1, oh, ow, dx, rjump, 0)
    r, c, b3 = next_pixel(r, c, b2, oh, ow, dx, rjump, 0)
    r, c, b4 = next_pixel(r, c, b3, oh, ow, dx, rjump, 0)
    r, c, b5 = next_pixel(r, c, b4, oh, ow, dx, rjump, 0)
    r, c, b6 = next_pixel(r, c, b5, oh, ow, dx, rjump, 0)
    r, c, b7 = next_pixel(r, c, b6, oh, ow, dx, rjump, 0)
    r, c, b8 = next_pixel(r, c, b7, oh, ow, dx, rjump, 0)
    return (b0, b1, b2, b3, b4, b5, b6, b7), r, c, b8


@njit(fastmath=FASTMATH, inline="always")
def _dot_partials(xf, wv, wo, starts, voffs, toffs, tail, z):
    """The 16 lane sums of 8 output pixels' dot products with one output channel, folded once: pixel
    j's patch starts at starts[j] in flat xp; lane l sums, one fused multiply-add each and in this
    order, xf[starts[j] + voffs[e] + l] * wv[wo + 16*e + l] over the patch's whole 16-number vectors e,
    then the first ``tail`` numbers from xf[starts[j] + toffs[t]] (each kernel row's last ones,
    read by a masked load) times wv[wo + 16*(voffs.size + t) + l]. Returns 4 vectors: pixels (0, 1), (2,
    3), (4, 5), (6, 7), each pixel's 8 lanes l + (l+8) (vpairs16). z: a zero vector."""
    c0, c1, c2, c3, c4, c5, c6, c7 = starts
    a0 = z
    a1 = z
    a2 = z
    a3 = z
    a4 = z
    a5 = z
    a6 = z
    a7 = z
    for e in range(voffs.size):
        d = voffs[e]
        v = vload16(wv, wo + 16 * e)
        a0 = vfmav(a0, vload16(xf, c0 + d), v)
        a1 = vfmav(a1, vload16(xf, c1 + d), v)
        a2 = vfmav(a2, vload16(xf, c2 + d), v)
        a3 = vfmav(a3, vload16(xf, c3 + d), v)
        a4 = vfmav(a4, vload16(xf, c4 + d), v)
        a5 = vfmav(a5, vload16(xf, c5 + d), v)
        a6 = vfmav(a6, vload16(xf, c6 + d), v)
        a7 = vfmav(a7, vload16(xf, c7 + d), v)
    for t in range(toffs.size):
        d = toffs[t]
        v = vload16(wv, wo + 16 * (voffs.size + t))
        a0 = vfmav(a0, vload16_first(xf, c0 + d, tail), v)
        a1 = vfmav(a1, vload16_first(xf, c1 + d, tail), v)
        a2 = vfmav(a2, vload16_first(xf, c2 + d, tail), v)
        a3 = vfmav(a3, vload16_first(xf, c3 + d, tail), v)
        a4 = vfmav(a4, vload16_first(xf, c4 + d, tail), v)
        a5 = vfmav(a5, vload16_first(xf, c5 + d, tail), v)
        a6 = vfmav(a6, vload16_first(xf, c6 + d, tail), v)
        a7 = vfmav(a7, vload16_first(xf, c7 + d, tail), v)
    return vpairs16(a0, a1), vpairs16(a2, a3), vpairs16(a4, a5), vpairs16(a6, a7)


@njit(fastmath=FASTMATH, inline="always")
def _row_partials3(xf, wv, wo, b0, nvec, rstride, cin, kh, z):
    """:func:`_dot_partials` for 8 neighbouring output pixels of one row, for kernel rows of 3 x cin
    numbers, cin a multiple of 16, stride 1 along the row: pixel p's patch starts at b0 + p*cin in flat
    xp. Along kernel row i the 8 pixels' patches share their vectors: X_t = xf[b0 + i*rstride + t*cin +
    16*m:][:16], t < 10, is pixel p's tap j = t - p, so each is loaded once for its (up to) 3
    multiply-adds (10 vector loads for 24 instead of 24). Lane l of pixel p sums, one fused multiply-add
    each and in this order over (i, m, j), X_{p+j}[l] * wv[wo + 16*((3i + j)*nvec + m) + l] (the layout
    of :func:`_dot_partials`; for one vector per tap, nvec = 1, the same order as it). Returns its 4
    vectors."""
    a0 = z
    a1 = z
    a2 = z
    a3 = z
    a4 = z
    a5 = z
    a6 = z
    a7 = z
    for i in range(kh):
        for m in range(nvec):
            d = b0 + i * rstride + 16 * m
            e = wo + 16 * (3 * i * nvec + m)
            w0 = vload16(wv, e)
            w1 = vload16(wv, e + 16 * nvec)
            w2 = vload16(wv, e + 32 * nvec)
            x = vload16(xf, d)
            a0 = vfmav(a0, x, w0)
            x = vload16(xf, d + cin)
            a0 = vfmav(a0, x, w1)
            a1 = vfmav(a1, x, w0)
            x = vload16(xf, d + 2 * cin)
            a0 = vfmav(a0, x, w2)
            a1 = vfmav(a1, x, w1)
            a2 = vfmav(a2, x, w0)
            x = vload16(xf, d + 3 * cin)
            a1 = vfmav(a1, x, w2)
            a2 = vfmav(a2, x, w1)
            a3 = vfmav(a3, x, w0)
            x = vload16(xf, d + 4 * cin)
            a2 = vfmav(a2, x, w2)
            a3 = vfmav(a3, x, w1)
            a4 = vfmav(a4, x, w0)
            x = vload16(xf, d + 5 * cin)
            a3 = vfmav(a3, x, w2)
            a4 = vfmav(a4, x, w1)
            a5 = vfmav(a5, x, w0)
            x = vload16(xf, d + 6 * cin)
            a4 = vfmav(a4, x, w2)
            a5 = vfmav(a5, x, w1)
            a6 = vfmav(a6, x, w0)
            x = vload16(xf, d + 7 * cin)
            a5 = vfmav(a5, x, w2)
            a6 = vfmav(a6, x, w1)
            a7 = vfmav(a7, x, w0)
            x = vload16(xf, d + 8 * cin)
            a6 = vfmav(a6, x, w2)
            a7 = vfmav(a7, x, w1)
            x = vload16(xf, d + 9 * cin)
            a7 = vfmav(a7, x, w2)
    return vpairs16(a0, a1), vpairs16(a2, a3), vpairs16(a4, a5), vpairs16(a6, a7)


@njit(fastmath=FASTMATH, inline="always")
def _store_dot16(s, t, bf, yf, o, cout, relu):
    """16 output pixels x one channel from their partial sums, 8 pixels' in s and 8 more in t (as
    :func:`_dot_partials` returns them): each pixel's 16 lane sums added pairwise in a fixed order (l +
    (l+8), then + 4, + 2, + 1: vpairs16 ... vpairs2, which add them for 16 pixels with shuffles and 4
    vector adds), then bf; to yf[o + p*cout], p < 16 (one vector store when cout is 1)."""
    s0, s1, s2, s3 = s
    s4, s5, s6, s7 = t
    h = vtuple(vpairs2(vpairs4(vpairs8(s0, s1), vpairs8(s2, s3)), vpairs4(vpairs8(s4, s5), vpairs8(s6, s7))))
    v = (bf + h[0], bf + h[1], bf + h[2], bf + h[3], bf + h[4], bf + h[5], bf + h[6], bf + h[7], bf + h[8],
         bf + h[9], bf + h[10], bf + h[11], bf + h[12], bf + h[13], bf + h[14], bf + h[15])
    if cout == 1:
        storev(yf, o, v, relu)
    else:
        for p in range(16):
            yf[o + p * cout] = max(v[p], 0) if relu else v[p]


@njit(fastmath=FASTMATH, inline="always")
def _forward_dot16(xf, wv, wo, bf, yf, lo, hi, o, cout, voffs, toffs, tail, relu, z):
    """16 output pixels x one channel of conv2d_forward, for the channels left over by the blocks
    (cout % 8, a one-channel output): each pixel's patch dotted with the channel's kernel, wv[wo:] =
    w[..., f] as whole vectors and kernel-row tails (:func:`_dot_partials`, 8 pixels at a time: their
    patches start at lo, then hi), then :func:`_store_dot16`."""
    _store_dot16(_dot_partials(xf, wv, wo, lo, voffs, toffs, tail, z),
                 _dot_partials(xf, wv, wo, hi, voffs, toffs, tail, z), bf, yf, o, cout, relu)


@njit(fastmath=FASTMATH, inline="always")
def _forward_row16(xf, wv, wo, bf, yf, b0, o, cout, nvec, rstride, cin, kh, relu, z):
    """:func:`_forward_dot16` for 16 neighbouring pixels of one output row, kernel rows 3 x cin (cin
    a multiple of 16), stride 1 along the row, the first pixel's patch at b0 in flat xp: the partial
    sums by :func:`_row_partials3`, 8 pixels at a time."""
    _store_dot16(_row_partials3(xf, wv, wo, b0, nvec, rstride, cin, kh, z),
                 _row_partials3(xf, wv, wo, b0 + 8 * cin, nvec, rstride, cin, kh, z), bf, yf, o, cout, relu)


@njit(fastmath=FASTMATH)
def _forward_rows(xf, wv, wlen, b, yf, xs, ys, f8, oh, ow, sh, rstride, cin, kh, relu, z, src, pf, chunk, pend):
    """Channels f8.. of one sample of conv2d_forward (sample at xs in flat xp, ys in flat y), 16 pixels of
    one output row at a time (:func:`_forward_row16`; each row's last 16 overlap the ones before where ow
    is not a multiple of 16), wv[(f - f8)*wlen:] the kernel of channel f as :func:`_dot_partials` reads
    it. Asks for src[pf : pend] ``chunk`` numbers a block (the next sample's input); returns pf."""
    cout = b.size
    per_row = (ow + 15) // 16
    for f in range(f8, cout):
        bf, wo, ask = b[f], (f - f8) * wlen, f == f8
        for r in range(oh):
            for k in range(per_row):
                if ask:
                    prefetch_span(src, pf, min(pf + chunk, pend))
                    pf += chunk
                c = min(16 * k, ow - 16)
                _forward_row16(xf, wv, wo, bf, yf, xs + r * sh * rstride + c * cin, ys + (r * ow + c) * cout + f, cout,
                               cin // 16, rstride, cin, kh, relu, z)
    return pf


def conv2d_forward(xp, w, b, sh, sw, act, y):
    """y[n, r, c, f] = act(b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]).

    xp: (n, hp, wp, cin) padded input; w: (kh, kw, cin, cout); b: (cout,); act: ACT_LINEAR or
    ACT_RELU; y: (n, oh, ow, cout), overwritten. All C-contiguous.

    Optimizations: samples in pieces on threads (threads.parallel_for); no im2col buffer: a patch
    row is kw*cin contiguous numbers of xp; 8 output pixels (raster order, across rows) x 32
    channels summed in 16 vector registers (AVX-512), two w vectors and 8 broadcasts per 16 fused
    multiply-adds, then 16 channels in 8 registers, then 8 (every block, with AVX2), the 8 past a
    multiple of 16 by pairs of patch elements (8 channels x 2 elements a register); channels left
    over (cout % 8) as dot products along the patch, 16 pixels x 16 elements at a time (16 pixels of
    one row, each vector loaded once for its 3 taps, for 3-wide kernels on cin % 16 == 0); patch rows under 8
    numbers (one or two input channels) one loop over the patch, LANES channels at a time; bias and
    ReLU fused into one vector store per pixel and register; each output summed in a fixed order
    (identical for any number of threads and either vector width).
    """
    parallel_for(_conv2d_forward_samples, y.shape[0], xp[:0], 0, 0, xp, w, b, sh, sw, act, y, -1, 0)


def conv2d_forward_padded(x, pt, pl, xp, w, b, sh, sw, act, y):
    """padding.pad_into(x, pt, pl, xp), then conv2d_forward(xp, w, b, sh, sw, act, y), sample by
    sample: each sample's padded copy is convolved while it is still in the core's cache, instead
    of being written out for the whole batch and read back. The same numbers, bit for bit.

    x: (n, h, w, cin); xp: (n, h + pads, w + pads, cin), its halo zero (the caller allocates it
    zeroed once); the rest as conv2d_forward. xp is kept filled (the backward pass reads it)."""
    parallel_for(_conv2d_forward_samples, y.shape[0], x, pt, pl, xp, w, b, sh, sw, act, y, -1, 0)


def conv2d_forward_phases(x, xp, wq, bq, act, base, step, z):
    """The forward pass of an upsampled 3x3 convolution through its phase convolution (see
    upsample_conv.py), sample by sample: x[s] into the 1-pixel halo of xp[s] (unless x has no samples:
    'valid', xp is the input), q = act(conv(xp[s], wq) + bq) into a buffer of one sample, then
    interleaved into z[s] (:func:`interleave_phases`) while it is in the core's cache. The same bits
    as conv2d_forward over the batch, then upsample_conv.phase_interleave, without a batch of q.

    x: (n, h, w, cin) or no samples; xp: (n, hp, wp, cin); wq: (2, 2, cin, 4*cout); bq: (4*cout,);
    (base, step) from upsample_conv.phase_offsets (forward); z: (n, oh, ow, cout), overwritten."""
    parallel_for(_conv2d_forward_samples, z.shape[0], x, 1, 1, xp, wq, bq, 1, 1, act, z, base, step)


@njit(inline="always")
def _copy_run(src, i, dst, j, count, cL):
    """dst[j : j + count] = src[i : i + count], count a multiple of 8: the first cL numbers (a
    multiple of LANES) a vector at a time, the rest 8 at a time."""
    for k in range(0, cL, LANES):
        vstoreL(dst, j + k, vloadL(src, i + k))
    for k in range(cL, count, 8):
        vstoreL(dst, j + k, vload8(src, i + k))


@njit()
def _interleave_by_pixel(qf, wq, base, step, z, s):
    """:func:`interleave_phases` pixel by pixel, 8 numbers at a time, the channels left over one at a
    time: for cout not a multiple of 8 (3 channels in a vector loop ran 1.1-1.5x slower)."""
    _, oh, ow, cout = z.shape
    c4 = 4 * cout
    zf = z.reshape(z.size)
    c8 = cout - cout % 8
    for Y in range(oh):
        py = Y % 2
        q0 = (Y // 2 + base + step * py) * wq * c4 + 2 * py * cout   # its row of q
        y0 = (s * oh + Y) * ow * cout
        for X in range(ow):
            px = X % 2
            src = q0 + (X // 2 + base + step * px) * c4 + px * cout
            dst = y0 + X * cout
            for f0 in range(0, c8, 8):
                store8(zf, dst + f0, load8(qf, src + f0), False)
            for f in range(c8, cout):
                zf[dst + f] = qf[src + f]


@njit()
def interleave_phases(qf, wq, base, step, z, s):
    """z[s, Y, X, f] = q[Y//2 + base + step*(Y%2), X//2 + base + step*(X%2), (2*(Y%2) + X%2)*cout + f]
    for one sample, q (hq, wq, 4*cout) given flat as qf, z (n, oh, ow, cout). Where cout is a multiple
    of 8, along a row of z the pixels alternate between two phases of one q row: X = 2c reads q column
    c + base, X = 2c + 1 column c + base + step, each pixel's cout numbers a vector at a time
    (_copy_run; 0.6-0.9x the time of the pixel-by-pixel copy at 8 to 64 channels); other counts
    go pixel by pixel (:func:`_interleave_by_pixel`)."""
    _, oh, ow, cout = z.shape
    if cout % 8:
        _interleave_by_pixel(qf, wq, base, step, z, s)
        return
    c4 = 4 * cout
    zf = z.reshape(z.size)
    cL = cout - cout % LANES
    for Y in range(oh):
        py = Y % 2
        q0 = (Y // 2 + base + step * py) * wq * c4 + 2 * py * cout   # its row of q, phase (py, 0)
        even = q0 + base * c4                     # the source of X = 0, 2, 4, ...
        odd = q0 + (base + step) * c4 + cout      # of X = 1, 3, 5, ...: phase (py, 1)
        dst = (s * oh + Y) * ow * cout
        for c in range(ow // 2):
            _copy_run(qf, even + c * c4, zf, dst, cout, cL)
            _copy_run(qf, odd + c * c4, zf, dst + cout, cout, cL)
            dst += 2 * cout
        if ow % 2:
            _copy_run(qf, even + (ow // 2) * c4, zf, dst, cout, cL)


@njit(fastmath=FASTMATH)
def _conv2d_forward_samples(lo, hi, x, pt, pl, xp, w, b, sh, sw, act, y, base, step):
    """:func:`conv2d_forward` for samples lo..hi-1: first x[s] into xp[s] at (pt, pl) unless x has no
    samples (conv2d_forward_padded); with base >= 0 (conv2d_forward_phases), into a one-sample q,
    interleaved into y."""
    kh, kw, cin, cout = w.shape
    _, hp, wp, _ = xp.shape
    # x given and xp without samples: each sample padded into a halo of its own, made here, instead
    # of the batch's padded copy that a backward pass reads (a forward pass in inference)
    own = x.shape[0] > 0 and xp.shape[0] == 0
    xq = zero_sample(xp, hp, wp, cin) if own else xp
    n = xq.shape[0]
    phased = base >= 0
    oh, ow = (hp - kh + 1, wp - kw + 1) if phased else (y.shape[1], y.shape[2])   # the grid of y, or of q
    qbuf = np.empty(oh * ow * cout if phased else 0, dtype=y.dtype)   # one sample of q
    row = kw * cin          # patch length along one kernel row, contiguous in xp
    rstride = wp * cin      # from one xp row to the next
    dx = sw * cin           # from one output pixel's patch to the next along a row
    npix = oh * ow
    rjump = sh * rstride - ow * dx  # extra move at the end of an output row
    xf = xq.reshape(n * hp * rstride)
    wm = w.reshape(kh * row, cout)    # wm[i*row + k] = row k of W_i
    wf = w.reshape(kh * row * cout)
    yf = qbuf if phased else y.reshape(y.size)
    relu = act == ACT_RELU
    # channels done 32 at a time, then 16 (AVX-512, patch rows of 8 or more numbers), then 8, then
    # one at a time
    f32 = cout - cout % 32 if LANES == 16 and row >= 8 else 0
    f16 = cout - cout % 16 if LANES == 16 and row >= 8 else 0
    f8 = cout - cout % 8
    # patch rows under 8 numbers (one or two input channels): channels 0..ft-1 LANES at a time in
    # _forward_taps, over a table of the patch elements' offsets in xp
    ft = cout - cout % LANES if row < 8 else 0
    offs = np.empty(kh * row if ft > 0 else 0, np.int64)
    for e in range(offs.size):
        offs[e] = (e // row) * rstride + e % row
    # channels left over (cout % 8): 16 pixels at a time in _forward_dot16, over each kernel row's
    # whole 16-number vectors (at voffs in a patch) and its last `tail` numbers (at toffs), with
    # wv[f - f8] the kernel of channel f laid out alike (zeros past each tail)
    nfull, tail = row // 16, row % 16
    voffs = np.empty(kh * nfull, np.int64)
    toffs = np.empty(kh if tail > 0 else 0, np.int64)
    for e in range(voffs.size):
        voffs[e] = (e // nfull) * rstride + 16 * (e % nfull)
    for t in range(toffs.size):
        toffs[t] = t * rstride + 16 * nfull
    wv = np.zeros((cout - f8, 16 * (voffs.size + toffs.size)), dtype=w.dtype)
    for f in range(f8, cout):
        for e in range(voffs.size):
            k = (e // nfull) * row + 16 * (e % nfull)   # the vector's first element in the patch
            for l in range(16):
                wv[f - f8, 16 * e + l] = wm[k + l, f]
        for t in range(toffs.size):
            for l in range(tail):
                wv[f - f8, 16 * (voffs.size + t) + l] = wm[t * row + 16 * nfull + l, f]
    wlen = wv.shape[1]
    wvf = wv.reshape(wv.size)   # flat, and made once: a view per call costs two reference counts
    zeros16 = vload16(np.zeros(16, dtype=y.dtype), 0)
    # the 8 channels past the last multiple of 16 (cout % 16 >= 8), on patch rows of an even number of
    # 8 or more: by pairs of patch elements (_forward_pairs), wq and bz laid out as it reads them
    fp = cout - cout % 16 if cout % 16 >= 8 and row >= 8 and row % 2 == 0 else -1
    half = row // 2
    wq = np.empty(16 * kh * half if fp >= 0 else 0, dtype=w.dtype)
    bz = np.zeros(16, dtype=w.dtype)
    for c in range(8 if fp >= 0 else 0):
        for e in range(kh * half):
            wq[16 * e + 2 * c] = wm[2 * e, fp + c]
            wq[16 * e + 2 * c + 1] = wm[2 * e + 1, fp + c]
        bz[2 * c] = b[fp + c]
    # what the next sample reads (x[s + 1], or xp[s + 1] when x has no samples), asked for a slice per
    # block so that it arrives while this sample is summed
    src = x.reshape(x.size) if x.shape[0] > 0 else xf
    ssize = src.size // max(1, y.shape[0])
    nblk = (npix + 7) // 8 if npix >= 8 and f8 > 0 else 0
    nblk16 = (npix + 15) // 16 if npix >= 16 and f8 < cout else 0
    # the channels left over, on rows of 16 or more output pixels, kernel rows of 3 whole-vector taps
    # (cin a multiple of 16) and stride 1 along a row: 16 pixels of one row at a time (_forward_row16),
    # each x vector loaded once for its 3 taps, the row's last 16 overlapping the ones before
    rowwise = f8 < cout and kw == 3 and sw == 1 and cin % 16 == 0 and ow >= 16
    if rowwise:
        nblk16 = oh * ((ow + 15) // 16)
    chunk = (ssize + nblk + nblk16 - 1) // max(1, nblk + nblk16)
    for s in range(lo, hi):
        if x.shape[0] > 0:
            pad_sample_into(x, s, pt, pl, xq, 0 if own else s)
        xs, ys = (0 if own else s) * hp * rstride, 0 if phased else s * npix * cout
        pf = (s + 1) * ssize if s + 1 < hi else src.size
        for blk in range(nblk):
            prefetch_span(src, pf, min(pf + chunk, (s + 2) * ssize))
            pf += chunk
            q = min(8 * blk, npix - 8)
            r, c = q // ow, q % ow   # then step along the raster, without dividing
            starts, _, _, _ = _eight_pixels(r, c, xs + r * sh * rstride + c * dx, oh, ow, dx, rjump)
            b0, b1, b2, b3, b4, b5, b6, b7 = starts
            for f0 in range(0, f32, 32):  # 8 pixels x 32 channels (AVX-512 only)
                _forward_block32_or_none(xf, wf, b, yf, starts, f0, ys + q * cout + f0, kh, row, rstride, cout,
                                         relu)
            for f0 in range(f32, f16, 16):  # 8 pixels x 16 channels (AVX-512 only)
                _forward_blockL(xf, wf, b, yf, starts, f0, ys + q * cout + f0, kh, row, rstride, cout, relu)
            for f0 in range(0, ft, LANES):  # short patch rows: 8 pixels x LANES channels
                _forward_taps(xf, wf, b, yf, starts, offs, f0, ys + q * cout + f0, cout, relu)
            for f0 in range(max(f16, ft), f8 if LANES == 8 else 0, 8):  # 8 pixels x 8 channels (AVX2)
                if f0 != fp:
                    _forward_blockL(xf, wf, b, yf, starts, f0, ys + q * cout + f0, kh, row, rstride, cout, relu)
            if fp >= 0:   # 8 pixels x 8 channels by pairs of patch elements
                _forward_pairs(xf, wq, bz, yf, starts, ys + q * cout + fp, kh, half, rstride, cout, relu)
            # 8 pixels x 8 channels with AVX-512 where a patch row is odd: inline, on tuples of 8 (in a
            # function of their own, LLVM split these accumulators in halves there)
            for f0 in range(max(f16, ft), f8 if LANES == 16 and fp < 0 else 0, 8):
                a0 = load8(b, f0)
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
                        v = load8(wm[i * row + k], f0)
                        a0 = fma8(a0, p0[k], v)
                        a1 = fma8(a1, p1[k], v)
                        a2 = fma8(a2, p2[k], v)
                        a3 = fma8(a3, p3[k], v)
                        a4 = fma8(a4, p4[k], v)
                        a5 = fma8(a5, p5[k], v)
                        a6 = fma8(a6, p6[k], v)
                        a7 = fma8(a7, p7[k], v)
                o = ys + q * cout + f0
                store8(yf, o, a0, relu)
                store8(yf, o + cout, a1, relu)
                store8(yf, o + 2 * cout, a2, relu)
                store8(yf, o + 3 * cout, a3, relu)
                store8(yf, o + 4 * cout, a4, relu)
                store8(yf, o + 5 * cout, a5, relu)
                store8(yf, o + 6 * cout, a6, relu)
                store8(yf, o + 7 * cout, a7, relu)
        if rowwise:   # channels left over, 16 pixels of a row at a time
            pf = _forward_rows(xf, wvf, wlen, b, yf, xs, ys, f8, oh, ow, sh, rstride, cin, kh, relu, zeros16, src, pf,
                               chunk, (s + 2) * ssize)
        for blk in range(0 if rowwise else nblk16):   # channels left over
            prefetch_span(src, pf, min(pf + chunk, (s + 2) * ssize))
            pf += chunk
            q = min(16 * blk, npix - 16)
            r, c = q // ow, q % ow
            first8, r, c, b8 = _eight_pixels(r, c, xs + r * sh * rstride + c * dx, oh, ow, dx, rjump)
            next8, _, _, _ = _eight_pixels(r, c, b8, oh, ow, dx, rjump)
            for f in range(f8, cout):
                _forward_dot16(xf, wvf, (f - f8) * wlen, b[f], yf, first8, next8, ys + q * cout + f, cout, voffs,
                               toffs, tail, relu, zeros16)
        # fewer than 8 output pixels (fewer than 16, for the channels left over): one output at a time
        for q in range(npix if npix < 16 else 0):
            bq = xs + _patch_start(q, ow, sh, rstride, dx)
            for f in range(0 if npix < 8 else f8, cout):
                acc = b[f]
                for i in range(kh):
                    for k in range(row):
                        acc += xf[bq + i * rstride + k] * wm[i * row + k, f]
                yf[ys + q * cout + f] = max(acc, 0) if relu else acc
        if phased:
            interleave_phases(qbuf, ow, base, step, y, s)
