"""2-D max pooling over NHWC arrays.

    x  (n, h, w, c)    input
    y  (n, oh, ow, c)  output
    y[n, r, q, ch] = max over i < ph, j < pw of x[n, r*sh + i - pt, q*sw + j - pl, ch]

Positions outside x (the 'same' padding) never win. The gradient goes to the first maximum of
each window, scanning rows then columns; the winner's flat index r*w + q is kept in ``argmax``.

NaN and -inf follow TensorFlow's max_pool, which Keras calls (checked live in tests/test_kernels.py):
the maximum starts from the dtype's lowest finite number and a value replaces it only when greater,
so a NaN never wins and a window of only NaN or -inf gives that lowest number (-3.4e38 in float32).
The gradient's winner starts from the window's first element instead (TensorFlow's MaxPoolGrad),
so a NaN first in its window takes the gradient. Without NaN or -inf both rules pick the same.

maxpool2d_backward_relu_dz is the backward pass fused with the next step of a model's backward when
the pooling reads a ReLU convolution: that convolution's dz = dx * (y > 0), its bias gradient and
padded dz, in one pass from the pooled arrays. See docs/maxpooling2d.md.
"""
import numpy as np

from autoenc.kernels.blocks import add8, load8, store8, take_greater8, where_won8
from autoenc.kernels.config import njit, reference_kernels_enabled
from autoenc.kernels.conv_weight_grad import _sum_chunks, dz_row
from autoenc.kernels.padding import conv_padding
from autoenc.kernels.workspace import Workspace
from autoenc.threads import parallel_for

# Set by autoenc/warmup.py while a second process compiles the 2x2 kernels into the Numba cache (a
# cold start): called with a kernel's name before it runs, it waits until that process has saved it.
before_first_call = None


def maxpool2d_forward_naive(x, pool_size, strides, padding):
    """The slow, obvious max pooling. Returns (y, argmax), argmax holding r*w + q of each winner."""
    (ph, pw), (sh, sw) = pool_size, strides
    n, h, w, c = x.shape
    pt, _, oh = conv_padding(h, ph, sh, padding)
    pl, _, ow = conv_padding(w, pw, sw, padding)
    lowest = np.finfo(x.dtype).min
    y = np.zeros((n, oh, ow, c), dtype=x.dtype)
    argmax = np.zeros((n, oh, ow, c), dtype=np.int64)
    for s in range(n):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    window = [(rr, qq) for rr in range(r * sh - pt, r * sh - pt + ph)
                              for qq in range(q * sw - pl, q * sw - pl + pw) if 0 <= rr < h and 0 <= qq < w]
                    best = lowest                 # the output: NaN is never greater
                    for rr, qq in window:
                        if x[s, rr, qq, ch] > best:
                            best = x[s, rr, qq, ch]
                    (rr, qq), winner = window[0], x[s, window[0][0], window[0][1], ch]
                    where = rr * w + qq           # the gradient's winner: first element, then strictly greater
                    for rr, qq in window:
                        if x[s, rr, qq, ch] > winner:
                            winner, where = x[s, rr, qq, ch], rr * w + qq
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


def tiles_2x2(ph, pw, sh, sw, pt, pl, x_shape, y_shape):
    """Whether the windows are 2x2 with stride 2 and all inside x (x_shape (n, h, w, c) pooled to
    y_shape): the usual MaxPooling2D, which the kernels run on a path of their own."""
    return (ph, pw, sh, sw, pt, pl) == (2, 2, 2, 2, 0, 0) and 2 * y_shape[1] <= x_shape[1] and 2 * y_shape[2] <= x_shape[2]


def maxpool2d_forward(x, ph, pw, sh, sw, pt, pl, y, argmax, nonfinite=None):
    """y[n, r, q, ch] = max of the window, argmax = r*w + q of its first maximum (NaN as in the
    module docstring). x: (n, h, w, c); y and argmax (int32): (n, oh, ow, c), overwritten.

    ph, pw: pool size; sh, sw: strides; pt, pl: top/left padding (see padding.conv_padding); y
    C-contiguous. nonfinite: (n,) bool or None; if given, nonfinite[s] says whether a window of
    sample s had a NaN or -inf winner (its y is then not x at argmax; everywhere else it is).

    Optimizations: samples on threads (threads.parallel_for); the channel loop innermost, so every
    read and write runs along contiguous memory; the window clipped to x once per output pixel (no
    halo, no bounds checks); one branch-free pass over a sample's y finds the windows whose maximum
    is NaN or -inf (rare), and only those are scanned again for TensorFlow's value. 2x2 windows with
    stride 2 that all lie inside x (the usual MaxPooling2D) take a kernel of their own, 8 channels at
    a time in register tuples (a vector compare and select per window element): 2-3x faster here.
    """
    if tiles_2x2(ph, pw, sh, sw, pt, pl, x.shape, y.shape):
        if before_first_call is not None:
            before_first_call("_maxpool2x2_forward_samples")
        parallel_for(_maxpool2x2_forward_samples, x.shape[0], x, y, argmax, nonfinite)
    else:
        parallel_for(_maxpool2d_forward_samples, x.shape[0], x, ph, pw, sh, sw, pt, pl, y, argmax, nonfinite)


@njit()
def _maxpool2d_forward_samples(lo, hi, x, ph, pw, sh, sw, pt, pl, y, argmax, nonfinite):
    """:func:`maxpool2d_forward` for samples lo..hi-1 (nonfinite may be None)."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    for s in range(lo, hi):
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
        _mend_nonfinite(x, s, ph, pw, sh, sw, pt, pl, y, nonfinite)


@njit()
def _mend_nonfinite(x, s, ph, pw, sh, sw, pt, pl, y, nonfinite):
    """After sample s of y holds each window's first maximum: a maximum that is NaN (a NaN first in its
    window) or -inf (only -inf, or NaN and -inf) is scanned again from the lowest finite number.
    One branch-free count per sample; nonfinite[s] (unless nonfinite is None) says whether there was one."""
    _, h, w, _ = x.shape
    _, oh, ow, c = y.shape
    lowest = np.finfo(x.dtype).min
    ys = y[s].reshape(oh * ow * c)
    bad = False
    for k in range(oh * ow * c):
        bad |= not ys[k] >= lowest
    if nonfinite is not None:
        nonfinite[s] = bad
    for k in range(oh * ow * c if bad else 0):
        if not ys[k] >= lowest:
            r, q, ch = k // (ow * c), (k // c) % ow, k % c
            m = lowest
            for rr in range(max(r * sh - pt, 0), min(r * sh - pt + ph, h)):
                for qq in range(max(q * sw - pl, 0), min(q * sw - pl + pw, w)):
                    if x[s, rr, qq, ch] > m:
                        m = x[s, rr, qq, ch]
            ys[k] = m


@njit()
def _maxpool2x2_forward_samples(lo, hi, x, y, argmax, nonfinite):
    """:func:`maxpool2d_forward` for samples lo..hi-1, 2x2 windows with stride 2, all inside x. The
    window's four elements in the generic kernel's order (row by row), so the same bits; unsigned
    indices, so that LLVM sees the 8-channel loads and stores as vectors."""
    n, h, w, c = x.shape
    _, oh, ow, _ = y.shape
    xf, yf, af = x.reshape(x.size), y.reshape(y.size), argmax.reshape(argmax.size)
    c8 = np.uint64(c - c % 8)
    uc = np.uint64(c)
    for s in range(lo, hi):
        for r in range(oh):
            for q in range(ow):
                i00 = np.uint64(((s * h + 2 * r) * w + 2 * q) * c)   # the window's rows and columns
                i01 = i00 + uc
                i10 = i00 + np.uint64(w * c)
                i11 = i10 + uc
                o = np.uint64(((s * oh + r) * ow + q) * c)
                k00 = np.int32(2 * r * w + 2 * q)                       # their flat indices in x
                k01, k10 = k00 + np.int32(1), k00 + np.int32(w)
                k11 = k10 + np.int32(1)
                for f in range(np.uint64(0), c8, np.uint64(8)):
                    v, k = take_greater8(load8(xf, i00 + f), (k00, k00, k00, k00, k00, k00, k00, k00),
                                         load8(xf, i01 + f), k01)
                    v, k = take_greater8(v, k, load8(xf, i10 + f), k10)
                    v, k = take_greater8(v, k, load8(xf, i11 + f), k11)
                    store8(yf, o + f, v, False)
                    store8(af, o + f, k, False)
                for f in range(c8, uc):      # channels left over
                    v, k = xf[i00 + f], k00
                    for i, ki in ((i01, k01), (i10, k10), (i11, k11)):
                        if xf[i + f] > v:
                            v, k = xf[i + f], ki
                    yf[o + f] = v
                    af[o + f] = k
        _mend_nonfinite(x, s, 2, 2, 2, 2, 0, 0, y, nonfinite)


def maxpool2d_backward(dy, argmax, dx):
    """dx[n, k // w, k % w, ch] += dy[n, r, q, ch] with k = argmax[n, r, q, ch].

    dy, argmax: (n, oh, ow, c); dx: (n, h, w, c), overwritten; all C-contiguous.

    Optimizations: samples on threads (threads.parallel_for; a sample's windows write only its own
    dx); flat views, and the flat index k*c + ch found without a division.
    """
    parallel_for(_maxpool2d_backward_samples, dy.shape[0], dy, argmax, dx)


@njit()
def _maxpool2d_backward_samples(lo, hi, dy, argmax, dx):
    """:func:`maxpool2d_backward` for samples lo..hi-1."""
    n, oh, ow, c = dy.shape
    _, h, w, _ = dx.shape
    for s in range(lo, hi):
        dxs, dys, args = dx[s].reshape(h * w * c), dy[s].reshape(oh * ow * c), argmax[s].reshape(oh * ow * c)
        for k in range(h * w * c):
            dxs[k] = 0
        for o in range(oh * ow):
            for ch in range(c):
                # k = rr*w + qq, so dx[s, rr, qq, ch] is dxs[k*c + ch]: no division needed
                dxs[args[o * c + ch] * c + ch] += dys[o * c + ch]


def maxpool2d_backward_relu_naive(dy, argmax, y):
    """dz = maxpool2d_backward_naive(dy, argmax, y.shape) where y > 0, else 0: the gradient of the
    pre-activation of a ReLU convolution whose output y (n, h, w, c) the pooling read. Returns dz
    (float64)."""
    return np.where(y > 0, maxpool2d_backward_naive(dy, argmax, y.shape), 0.0)


def maxpool2d_backward_relu_dz(dy, argmax, py, nonfinite, y, sh, sw, top, left, dz, dzp, part, db, tiles=False):
    """The pooling's backward pass and the dz pass of the ReLU convolution before it, in one:

        g[n, k // w, k % w, ch] += dy[n, r, q, ch]   with k = argmax[n, r, q, ch]  (the pooling's dx)
        dz = g where y > 0, else 0                    (the ReLU's mask)
        db[f] = sum_{n,rr,qq} dz[n, rr, qq, f]
        dzp[n, top + rr*sh, left + qq*sw] = dz[n, rr, qq]   (skipped if dzp has no samples)

    exactly as maxpool2d_backward then conv_weight_grad.conv2d_backward_dz compute it, bit for bit:
    the same sums in the same order (g from +0 in window order, db in fixed chunks of the batch).

    dy, argmax (int32), py: (n, oh, ow, c), the pooling's output gradient, winners and output;
    nonfinite: (n,) bool, from maxpool2d_forward; y: (n, h, w, c), the convolution's output (the
    pooling's input); sh, sw: the convolution's strides; dz: (n, h, w, c); dzp: (n, hp, wp, c),
    zero elsewhere, or (0, hp, wp, c); part: (nc, c) (nc = n_chunks(n)); db: (c,). dz, dzp, part
    and db are overwritten. All C-contiguous.

    The mask y > 0 at a window's winner is read from the small py: py is y at the winner, except in
    windows whose winner is NaN or -inf (a NaN first in its window takes the gradient); there
    y[winner] > 0 is False while py may be positive, so a sample with such a window
    (nonfinite[s]) reads y at the winners instead. A winner of several windows (strides < pool
    size) collects all their gradients or none: every window tests the same y.

    tiles: the windows were 2x2 with stride 2, all inside y (:func:`tiles_2x2`); then each element of
    dz is one window element's, and is written once, 8 channels at a time (a vector compare and
    select), instead of zeroed and scattered into.

    Optimizations: one pass instead of two, neither the pooling's dx nor y read; chunks of the
    batch on threads (threads.parallel_for); a sample's dz is zeroed, scattered into and swept for
    db and dzp while it sits in the cache; the sweep is conv2d_backward_dz's (conv_weight_grad.dz_row).
    """
    if before_first_call is not None:
        before_first_call("_maxpool2d_backward_relu_dz_chunks")
    parallel_for(_maxpool2d_backward_relu_dz_chunks, part.shape[0], dy, argmax, py, nonfinite, y, sh, sw, top,
                 left, dz, dzp, part, tiles)
    _sum_chunks(part, db)


@njit()
def _maxpool2d_backward_relu_dz_chunks(lo, hi, dy, argmax, py, nonfinite, y, sh, sw, top, left, dz, dzp, part, tiles):
    """:func:`maxpool2d_backward_relu_dz` for chunks lo..hi-1 of the batch, but db (part[k] is chunk k's)."""
    n, oh, ow, c = dy.shape
    _, h, w, _ = dz.shape
    nc = part.shape[0]
    pad = dzp.shape[0] > 0
    _, hp, wp, _ = dzp.shape
    dzf, dzpf = dz.reshape(dz.size), dzp.reshape(dzp.size)
    zero = dz.dtype.type(0)
    for k in range(lo, hi):
        pk = part[k]
        for f in range(c):
            pk[f] = 0
        for s in range(k * n // nc, (k + 1) * n // nc):
            dys, args, pys = dy[s].reshape(oh * ow * c), argmax[s].reshape(oh * ow * c), py[s].reshape(oh * ow * c)
            ys, dzs = y[s].reshape(h * w * c), dz[s].reshape(h * w * c)
            if tiles and not nonfinite[s]:   # dz, dzp and db in one pass
                _dz_2x2_sample(dys, args, pys, dzf, dzpf, pad, pk, s, h, w, oh, ow, c, sh, sw, hp, wp, top, left)
                continue
            for i in range(h * w * c):
                dzs[i] = 0
            # dz[s, rr, qq, ch] (at i = k*c + ch for the winner k = rr*w + qq) += dy where y > 0; adding
            # +0 instead leaves it +0 (a winner's windows are all masked, or none), so no branch
            if nonfinite[s]:
                for j in range(oh * ow * c):
                    i = args[j] * c + j % c
                    dzs[i] += dys[j] if ys[i] > 0 else zero
            else:
                for o in range(oh * ow):
                    for ch in range(c):
                        j = o * c + ch
                        dzs[args[j] * c + ch] += dys[j] if pys[j] > 0 else zero
            # the sweep of conv2d_backward_dz over this sample's dz (already masked): db's chunk
            # sums, then dzp
            for r in range(h):
                i0 = (s * h + r) * w * c                        # row r of sample s in dz
                p0 = ((s * hp + top + r * sh) * wp + left) * c  # where it goes in dzp
                dz_row(dzf, dzf, False, dzf, False, dzpf, pad, pk, i0, p0, w, c, sw)


@njit()
def _dz_2x2_sample(dys, args, pys, dzf, dzpf, pad, pk, s, h, w, oh, ow, c, sh, sw, hp, wp, top, left):
    """Sample s of maxpool2d_backward_relu_dz for 2x2 windows with stride 2 inside y: at window
    element k (flat index rr*w + qq) dz = zero + dy where it won (argmax == k) and py > 0, else
    zero (zero too in the rows and columns no window covers), written once, with dzp and db's chunk
    sums pk in the order of the generic sweep (conv_weight_grad.dz_row: row by row, pixel by pixel),
    so the same bits. dys, args, pys: the sample's pooled arrays, flat (oh*ow*c); dzf, dzpf: flat."""
    zero = dzf.dtype.type(0)
    c8 = c - c % 8
    for rr in range(h):
        i0 = (s * h + rr) * w * c                          # row rr of sample s in dz
        p0 = ((s * hp + top + rr * sh) * wp + left) * c     # where it goes in dzp (sh, sw: the conv's strides)
        j0 = (rr // 2) * ow * c                             # its row of windows
        inside = rr < 2 * oh
        for f0 in range(0, c8, 8):   # 8 channels at a time
            acc = load8(pk, f0)
            for qq in range(w):
                i = np.uint64(i0 + qq * c + f0)
                if inside and qq < 2 * ow:
                    j = np.uint64(j0 + (qq // 2) * c + f0)
                    v = where_won8(load8(dys, j), load8(args, j), np.int32(rr * w + qq), load8(pys, j), zero)
                else:
                    v = (zero, zero, zero, zero, zero, zero, zero, zero)
                store8(dzf, i, v, False)
                if pad:
                    store8(dzpf, p0 + qq * sw * c + f0, v, False)
                acc = add8(acc, v)
            store8(pk, f0, acc, False)
        for f in range(c8, c):       # channels left over
            a = pk[f]
            for qq in range(w):
                v = zero
                if inside and qq < 2 * ow:
                    j = j0 + (qq // 2) * c + f
                    if args[j] == rr * w + qq and pys[j] > 0:
                        v = zero + dys[j]
                dzf[i0 + qq * c + f] = v
                if pad:
                    dzpf[p0 + qq * sw * c + f] = v
                a += v
            pk[f] = a


class MaxPool2DKernels:
    """The forward and backward pass of max pooling with pool_size (ph, pw), strides (sh, sw) and
    padding 'valid' or 'same', for one layer, through the fast kernels or
    (``autoenc.set_reference_kernels(True)``) the naive ones. Keeps its work arrays and the last
    forward pass's argmax; concurrent calls need one MaxPool2DKernels each."""

    def __init__(self, pool_size, strides, padding):
        self.pool_size, self.strides, self.padding = tuple(pool_size), tuple(strides), padding
        self.workspace = Workspace()
        self.argmax = None     # (n, oh, ow, c): flat index r*w + q in x of each window's winner
        self.y = None          # (n, oh, ow, c): the last forward pass's output
        self.nonfinite = None  # (n,) bool, fast path only: a sample with a NaN or -inf winner
        self.tiles = False     # fast path only: the last forward pass's windows were 2x2 tiles (tiles_2x2)
        self._saved = None     # (reference, x shape, dtype) of the last forward pass

    def forward(self, x):
        """x: (n, h, w, c) -> y: (n, oh, ow, c), a work array (a new one on the reference path)."""
        self._saved = (reference_kernels_enabled(), x.shape, x.dtype)
        if self._saved[0]:
            self.y, self.argmax = maxpool2d_forward_naive(x, self.pool_size, self.strides, self.padding)
            self.nonfinite, self.tiles = None, False
            return self.y
        n, h, w, c = x.shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pt, _, oh = conv_padding(h, ph, sh, self.padding)
        pl, _, ow = conv_padding(w, pw, sw, self.padding)
        self.y = y = self.workspace.array("y", (n, oh, ow, c), x.dtype)
        self.argmax = self.workspace.array("argmax", y.shape, np.int32)
        self.nonfinite = self.workspace.array("nonfinite", (n,), np.bool_)
        self.tiles = tiles_2x2(ph, pw, sh, sw, pt, pl, x.shape, y.shape)
        maxpool2d_forward(x, ph, pw, sh, sw, pt, pl, y, self.argmax, self.nonfinite)
        return y

    def backward(self, dy):
        """dy: (n, oh, ow, c) -> dx: (n, h, w, c), dy at each window's winner (summed where windows
        overlap), zero elsewhere."""
        reference, x_shape, dtype = self._saved
        if reference:
            return maxpool2d_backward_naive(dy, self.argmax, x_shape).astype(dtype)
        dx = self.workspace.array("dx", x_shape, dtype)
        maxpool2d_backward(np.ascontiguousarray(dy), self.argmax, dx)  # it walks flat views of dy
        return dx

    def backward_relu_dz(self, dy, y, strides, top, left, dz, dzp, part, db):
        """The last forward pass's backward and the dz pass of the ReLU convolution whose output y
        (n, h, w, c) it read, in one (maxpool2d_backward_relu_dz: dz, dzp, part and db as there, filled;
        strides, top, left: the convolution's). dy: (n, oh, ow, c). Fast path only."""
        reference, x_shape, _ = self._saved
        if reference or x_shape != y.shape:
            raise ValueError(f"backward_relu_dz needs a fast forward pass on y {y.shape}, got a "
                             f"{'reference' if reference else 'fast'} one on {x_shape}")
        maxpool2d_backward_relu_dz(np.ascontiguousarray(dy, dtype=y.dtype), self.argmax, self.y, self.nonfinite, y,
                                   strides[0], strides[1], top, left, dz, dzp, part, db, self.tiles)
