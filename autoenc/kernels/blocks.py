"""Register-block helpers: 8-tuples of scalars that LLVM keeps in registers.

The fast convolution kernels sum 8 output pixels x 8 channels (or 8 patch elements x 8 channels) at
a time in tuples of 8 scalars. LLVM keeps each tuple in one vector register, and its SLP vectoriser
(turned on in config.py) turns the 8 scalar multiply-adds of :func:`fma8` into one vector
instruction. Indices are unsigned where that lets LLVM see 8 neighbouring loads as one vector load.
Every helper is a tiny jitted function that the kernels inline.
"""
import numpy as np

from autoenc.kernels.config import FASTMATH, njit

_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(q) for q in range(1, 8))


@njit()
def load8(a, k):
    """The tuple (a[k], ..., a[k+7]) of a 1-D array."""
    # unsigned indices: no negative-index wraparound, so LLVM sees 8 neighbouring loads (one vector load)
    u = np.uint64(k)
    return (a[u], a[u + _U1], a[u + _U2], a[u + _U3], a[u + _U4], a[u + _U5], a[u + _U6], a[u + _U7])


@njit()
def at(a, k):
    """a[k] for k >= 0, without the check for negative indices (which blocks vectorisation)."""
    return a[np.uint64(k)]


@njit(fastmath=FASTMATH)
def fma8(acc, a, v):
    """acc + a * v over 8-tuples (a scalar): one vector multiply-add once vectorised."""
    return (acc[0] + a * v[0], acc[1] + a * v[1], acc[2] + a * v[2], acc[3] + a * v[3],
            acc[4] + a * v[4], acc[5] + a * v[5], acc[6] + a * v[6], acc[7] + a * v[7])


@njit(fastmath=FASTMATH)
def fma8v(acc, a, v):
    """acc + a * v over 8-tuples, element by element."""
    return (acc[0] + a[0] * v[0], acc[1] + a[1] * v[1], acc[2] + a[2] * v[2], acc[3] + a[3] * v[3],
            acc[4] + a[4] * v[4], acc[5] + a[5] * v[5], acc[6] + a[6] * v[6], acc[7] + a[7] * v[7])


@njit()
def add8(a, b):
    """a + b over 8-tuples."""
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])


@njit(fastmath=FASTMATH)
def hsum8(a):
    """a[0] + ... + a[7] of an 8-tuple, summed pairwise in a fixed order."""
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@njit()
def where_positive8(v, y, zero):
    """v[q] where y[q] > 0, else zero, over 8-tuples."""
    return (v[0] if y[0] > 0 else zero, v[1] if y[1] > 0 else zero, v[2] if y[2] > 0 else zero,
            v[3] if y[3] > 0 else zero, v[4] if y[4] > 0 else zero, v[5] if y[5] > 0 else zero,
            v[6] if y[6] > 0 else zero, v[7] if y[7] > 0 else zero)


@njit()
def store8(out, k, v, relu):
    """out[k:k+8] = v, or max(v, 0) when relu."""
    o = out[k:k + 8]
    for q in range(8):
        o[q] = max(v[q], 0) if relu else v[q]


@njit()
def scatter8(out, k, step, v, relu):
    """out[k + q*step] = v[q] for q < 8, or max(v[q], 0) when relu."""
    for q in range(8):
        out[k + q * step] = max(v[q], 0) if relu else v[q]


@njit()
def copy1d(a, out):
    """out[:] = a, for 1-D arrays (a loop from 0: LLVM sees non-negative indices and vectorises)."""
    for k in range(out.size):
        out[k] = a[k]


@njit()
def next_pixel(r, c, x0, oh, ow, dx, rjump, sjump):
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
