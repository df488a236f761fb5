"""Batch normalization over the channels of a (rows, channels) array.

The layer views its input as x of shape (m, c): every axis but the normalized one is folded into the
rows (m = n for (n, c) inputs, m = n*h*w for NHWC inputs), so channel ch is the column x[:, ch].

    mean[ch] = (1/m) sum_k x[k, ch]
    var[ch]  = (1/m) sum_k (x[k, ch] - mean[ch])^2          biased, as tf.nn.moments
    xhat     = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps)
    y        = gamma * xhat + beta = x * inv + shift,  inv = gamma * rstd,  shift = beta - mean * inv

Backward through the batch statistics (training mode; see docs/batchnorm.md):

    dbeta[ch]  = sum_k dy[k, ch]
    dgamma[ch] = sum_k dy[k, ch] * xhat[k, ch]
    dx[k, ch]  = gamma[ch] * rstd[ch] * (dy[k, ch] - dbeta[ch]/m - xhat[k, ch] * dgamma[ch]/m)

Sums over the rows are split into ``n_chunks(m)`` fixed chunks of rows, each summed in order, then the
chunks added in order: the same result bit for bit whatever the number of threads. The per-channel
sums are kept in float64: a float32 running sum of m terms loses about m * 6e-8 of its value (m is
25 088 for a batch of 32 28x28 maps), float64 about m * 1e-16. The variance is a second pass over
x - mean, never E[x^2] - E[x]^2, which cancels catastrophically when |mean| >> std.
"""
import numpy as np

from autoenc.kernels import config
from autoenc.kernels.config import njit
from autoenc.threads import parallel_for

n_chunks = config.n_chunks   # re-exported: the layer sizes the scratch arrays with it

# Elementwise passes cut the rows into this many fixed blocks run on threads (each element is
# computed alone, so how blocks are shared out does not change the result).
_BLOCKS = 64


# --- the slow, obvious versions ---------------------------------------------------------------


def channel_moments_naive(x):
    """(mean, var) of each column of x (m, c), in float64; var is the biased variance (divides by m)."""
    x = np.asarray(x, np.float64)
    m, c = x.shape
    mean, var = np.zeros(c), np.zeros(c)
    for ch in range(c):
        mean[ch] = sum(x[k, ch] for k in range(m)) / m
        var[ch] = sum((x[k, ch] - mean[ch]) ** 2 for k in range(m)) / m
    return mean, var


def normalize_forward_naive(x, inv, shift):
    """y[k, ch] = x[k, ch] * inv[ch] + shift[ch]. x: (m, c); inv, shift: (c,). Returns y (m, c)."""
    m, c = x.shape
    y = np.zeros((m, c))
    for k in range(m):
        for ch in range(c):
            y[k, ch] = x[k, ch] * inv[ch] + shift[ch]
    return y


def normalize_backward_sums_naive(dy, x, mean, rstd):
    """(sum_k dy[k, ch], sum_k dy[k, ch] * (x[k, ch] - mean[ch]) * rstd[ch]) per channel, float64.
    dy, x: (m, c); mean, rstd: (c,). They are dbeta and dgamma."""
    m, c = x.shape
    sum_dy, sum_dy_xhat = np.zeros(c), np.zeros(c)
    for k in range(m):
        for ch in range(c):
            sum_dy[ch] += dy[k, ch]
            sum_dy_xhat[ch] += dy[k, ch] * (x[k, ch] - mean[ch]) * rstd[ch]
    return sum_dy, sum_dy_xhat


def normalize_backward_dx_naive(dy, x, mean, rstd, gamma, sum_dy, sum_dy_xhat):
    """dx = gamma * rstd * (dy - sum_dy/m - xhat * sum_dy_xhat/m), xhat = (x - mean) * rstd, per
    channel. dy, x: (m, c); the rest (c,). Returns dx (m, c)."""
    m, c = x.shape
    dx = np.zeros((m, c))
    for k in range(m):
        for ch in range(c):
            xhat = (x[k, ch] - mean[ch]) * rstd[ch]
            dx[k, ch] = gamma[ch] * rstd[ch] * (dy[k, ch] - sum_dy[ch] / m - xhat * sum_dy_xhat[ch] / m)
    return dx


# --- the kernels ------------------------------------------------------------------------------


def channel_moments(x, part, mean, var):
    """mean[ch] = (1/m) sum_k x[k, ch]; var[ch] = (1/m) sum_k (x[k, ch] - mean[ch])^2.

    x: (m, c), C-contiguous; part: (nk, c) float64 scratch, nk = n_chunks(m); mean, var: (c,)
    float64, overwritten. Two passes over x, each in nk fixed chunks of rows (on threads,
    threads.parallel_for), the float64 partial sums added in chunk order.
    """
    m = x.shape[0]
    parallel_for(_chunk_sums, part.shape[0], x, part)
    _add_chunks(part, m, mean)
    parallel_for(_chunk_square_sums, part.shape[0], x, mean, part)
    _add_chunks(part, m, var)


@njit()
def _chunk_sums(lo, hi, x, part):
    """part[kc, ch] = sum of x[k, ch] over chunk kc of the rows (of part.shape[0]), for chunks lo..hi-1."""
    m, c = x.shape
    nk = part.shape[0]
    for kc in range(lo, hi):
        acc = part[kc]
        for ch in range(c):
            acc[ch] = 0.0
        for k in range(kc * m // nk, (kc + 1) * m // nk):
            row = x[k]
            for ch in range(c):
                acc[ch] += row[ch]


@njit()
def _chunk_square_sums(lo, hi, x, mean, part):
    """part[kc, ch] = sum of (x[k, ch] - mean[ch])^2 over chunk kc of the rows, for chunks lo..hi-1."""
    m, c = x.shape
    nk = part.shape[0]
    for kc in range(lo, hi):
        acc = part[kc]
        for ch in range(c):
            acc[ch] = 0.0
        for k in range(kc * m // nk, (kc + 1) * m // nk):
            row = x[k]
            for ch in range(c):
                d = row[ch] - mean[ch]
                acc[ch] += d * d


@njit()
def _add_chunks(part, m, out):
    """out[ch] = (part[0, ch] + part[1, ch] + ... in chunk order) / m. part: (nk, c); out: (c,)."""
    nk, c = part.shape
    for ch in range(c):
        s = 0.0
        for kc in range(nk):
            s += part[kc, ch]
        out[ch] = s / m


def normalize_forward(x, inv, shift, y):
    """y[k, ch] = x[k, ch] * inv[ch] + shift[ch]. x, y: (m, c), C-contiguous, y overwritten; inv,
    shift: (c,) of x's dtype. With inv = gamma * rstd, shift = beta - mean * inv this is the batch
    normalization (the form tf.nn.batch_normalization computes); with shift = 0 it is the inference
    input gradient dx = dy * inv. Fixed row blocks on threads (threads.parallel_for)."""
    parallel_for(_normalize_forward_blocks, _BLOCKS, x, inv, shift, y)


@njit()
def _normalize_forward_blocks(lo, hi, x, inv, shift, y):
    """:func:`normalize_forward` for row blocks lo..hi-1 of the _BLOCKS."""
    m, c = x.shape
    for blk in range(lo, hi):
        for k in range(blk * m // _BLOCKS, (blk + 1) * m // _BLOCKS):
            row, out = x[k], y[k]
            for ch in range(c):
                out[ch] = row[ch] * inv[ch] + shift[ch]


def normalize_backward_sums(dy, x, mean, rstd, part, sum_dy, sum_dy_xhat):
    """sum_dy[ch] = sum_k dy[k, ch] (dbeta); sum_dy_xhat[ch] = sum_k dy[k, ch] * xhat[k, ch] (dgamma),
    xhat = (x - mean) * rstd.

    dy, x: (m, c), C-contiguous; mean, rstd: (c,) float64; part: (2, nk, c) float64 scratch,
    nk = n_chunks(m); sum_dy, sum_dy_xhat: (c,) float64, overwritten. nk fixed chunks of rows on
    threads (threads.parallel_for), float64 partials added in chunk order.
    """
    parallel_for(_backward_sums_chunks, part.shape[1], dy, x, mean, rstd, part)
    _add_chunks(part[0], 1, sum_dy)     # dividing by 1 is exact: the sums themselves
    _add_chunks(part[1], 1, sum_dy_xhat)


@njit()
def _backward_sums_chunks(lo, hi, dy, x, mean, rstd, part):
    """part[0, kc] and part[1, kc]: chunk kc's sums of :func:`normalize_backward_sums`, for chunks lo..hi-1."""
    m, c = x.shape
    nk = part.shape[1]
    for kc in range(lo, hi):
        a, b = part[0, kc], part[1, kc]
        for ch in range(c):
            a[ch] = 0.0
            b[ch] = 0.0
        for k in range(kc * m // nk, (kc + 1) * m // nk):
            g, row = dy[k], x[k]
            for ch in range(c):
                a[ch] += g[ch]
                b[ch] += g[ch] * ((row[ch] - mean[ch]) * rstd[ch])


def normalize_backward_dx(dy, x, mean, rstd, gamma, sum_dy, sum_dy_xhat, dx):
    """dx[k, ch] = gamma[ch] * rstd[ch] * (dy[k, ch] - sum_dy[ch]/m - xhat[k, ch] * sum_dy_xhat[ch]/m),
    xhat = (x - mean) * rstd: the input gradient through the batch mean and variance.

    dy, x, dx: (m, c), C-contiguous, dx overwritten; mean, rstd, gamma, sum_dy, sum_dy_xhat: (c,)
    float64 (from normalize_backward_sums). Elementwise in fixed row blocks, on threads
    (threads.parallel_for).
    """
    parallel_for(_normalize_backward_dx_blocks, _BLOCKS, dy, x, mean, rstd, gamma, sum_dy, sum_dy_xhat, dx)


@njit()
def _normalize_backward_dx_blocks(lo, hi, dy, x, mean, rstd, gamma, sum_dy, sum_dy_xhat, dx):
    """:func:`normalize_backward_dx` for row blocks lo..hi-1 of the _BLOCKS."""
    m, c = x.shape
    scale = np.empty(c, np.float64)     # per channel, cheap: each piece computes its own
    mean_dy = np.empty(c, np.float64)
    mean_dy_xhat = np.empty(c, np.float64)
    for ch in range(c):
        scale[ch] = gamma[ch] * rstd[ch]
        mean_dy[ch] = sum_dy[ch] / m
        mean_dy_xhat[ch] = sum_dy_xhat[ch] / m
    for blk in range(lo, hi):
        for k in range(blk * m // _BLOCKS, (blk + 1) * m // _BLOCKS):
            g, row, out = dy[k], x[k], dx[k]
            for ch in range(c):
                xhat = (row[ch] - mean[ch]) * rstd[ch]
                out[ch] = scale[ch] * (g[ch] - mean_dy[ch] - xhat * mean_dy_xhat[ch])
