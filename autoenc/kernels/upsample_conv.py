"""Nearest UpSampling2D((2, 2)) followed by a 3x3 stride-1 convolution, computed on the small input.

Upsampling by 2 repeats every pixel in a 2x2 block, so a 3x3 window on the big grid reads only 2x2
distinct pixels of the small input. Output row Y = 2y + py (py, the row's *phase*, is 0 or 1): with
'same' padding (1 on the big grid) kernel row ky reads big row Y + ky - 1, which is small row
y + floor((py + ky - 1) / 2), so

    py = 0:  small rows (y - 1, y)  with kernel rows (w0, w1 + w2)
    py = 1:  small rows (y, y + 1)  with kernel rows (w0 + w1, w2)

and with 'valid' padding (big row Y + ky, small row y + floor((py + ky) / 2))

    py = 0:  small rows (y, y + 1)  with kernel rows (w0 + w1, w2)
    py = 1:  small rows (y, y + 1)  with kernel rows (w0, w1 + w2)

Columns alike. Each of the four output phases (py, px) is thus a 2x2 convolution of the small input
with summed weights: wq = A w, with A built from the 2x3 matrices ``PHASE_ROWS[padding][p]``
(wq[a, b, ch, (2py + px)*cout + f] = sum_{i,j} R[py][a, i] R[px][b, j] w[i, j, ch, f]). The four
phase kernels side by side make ONE 2x2 convolution with 4*cout output channels:

    'same':   xp = x in a 1-pixel zero halo, q = conv(xp, wq) + b: (n, h+1, w+1, 4*cout);
              y[n, 2r+py, 2c+px, f] = act(q[n, r+py, c+px, (2py+px)*cout + f])   y: (n, 2h, 2w, cout)
    'valid':  q = conv(x, wq) + b: (n, h-1, w-1, 4*cout);
              y[n, 2r+py, 2c+px, f] = act(q[n, r, c, (2py+px)*cout + f])         y: (n, 2h-2, 2w-2, cout)

That is 16*(h+1)*(w+1) multiplies per cin*cout instead of 36*h*w, and no upsampled tensor.

The backward pass is that convolution's, on dq, the output gradient dz (after the activation)
gathered back into q's layout (zero where an entry of q is not used):

    dq[n, r + o(py), c + o(px), (2py+px)*cout + f] = dz[n, 2r+py, 2c+px, f]   dq: (n, h+1, w+1, 4*cout)
    dwq = sum xp-patches * dq,  dw = A^T dwq,  db[f] = sum dz[..., f]
    dx  = conv(dq, wq flipped): (n, h, w, cin), the gradient of the SMALL input

with o(p) = p for 'same' (dq is q's gradient as it is) and o(p) = 1 for 'valid' (q's gradient inside
the 1-pixel halo that the input-gradient convolution needs; xp then is x in a 1-pixel halo, which
only adds zero products). The convolutions are conv_forward.py's and conv_weight_grad.py's kernels;
this module adds the two copies between the layouts and the tiny maps A and A^T.
"""
import numpy as np

from autoenc.kernels.blocks import add8, load8, prefetch_span, store8, where_positive8
from autoenc.kernels.config import njit
from autoenc.kernels.conv_forward import conv2d_forward_naive, interleave_phases
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive
from autoenc.kernels.conv_weight_grad import _sum_chunks, conv2d_backward_bias_naive, conv2d_backward_kernel_naive
from autoenc.kernels.upsampling import upsample2d_backward_naive, upsample2d_forward_naive
from autoenc.threads import parallel_for

# R[p][a, i] = 1 where tap i of a 3x3 kernel row lands on row a of the 2x2 window of phase p
PHASE_ROWS = {"same": (np.array([[1, 0, 0], [0, 1, 1]]), np.array([[1, 1, 0], [0, 0, 1]])),
              "valid": (np.array([[1, 1, 0], [0, 0, 1]]), np.array([[1, 0, 0], [0, 1, 1]]))}


def phase_offsets(padding):
    """(base, step): phase p of the output reads row (column) r + base + step*p of q in the forward
    pass, and its gradient goes to row r + base + step*p of dq in the backward pass; as two pairs
    (forward, backward). 'same': o(p) = p in both; 'valid': q at o(p) = 0, dq in a halo, o(p) = 1."""
    return ((0, 1), (0, 1)) if padding == "same" else ((0, 0), (1, 0))


def _phase_matrix(padding):
    """A (4, 2, 2, 3, 3), read-only: A[2py+px, a, b, i, j] = R[py][a, i] * R[px][b, j]."""
    rows = PHASE_ROWS[padding]
    a = np.stack([np.einsum("ai,bj->abij", rows[py], rows[px]) for py in (0, 1) for px in (0, 1)])
    a.setflags(write=False)
    return a


# A for each padding, built once (phase_kernel and phase_kernel_grad run at every step), and as the
# float64 matrix (16, 9) that they multiply by, _PHASE_MATRIX_16x9: rows (2py+px, a, b), columns
# (i, j). The products go through np.einsum, not np.matmul: matmul calls OpenBLAS, whose own threads
# then spin beside the step's (wide128's step took 1.41-1.44x as long). Against einsum on the 5-index
# A with new arrays, phase_kernel and its grad took 8-16 us against 12-29 (8->8, 8->16), 264-286
# against 295-515 (128->64), 550-560 against 1060-3090 (128->128)
_PHASE_MATRIX = {padding: _phase_matrix(padding) for padding in PHASE_ROWS}
_PHASE_MATRIX_16x9 = {padding: np.ascontiguousarray(a.reshape(16, 9), dtype=np.float64)
                      for padding, a in _PHASE_MATRIX.items()}


def _work(ws, name, shape):
    """A float64 work array: the Workspace's, or a new one. A new array of a few MB costs more here
    than the product itself (fresh pages: 2.5 ms for 128->128 channels, against 0.2 ms reused)."""
    return np.empty(shape) if ws is None else ws.array(("phase kernel", name), shape, np.float64)


def phase_kernel(w, padding, out=None, ws=None):
    """wq = A w: the four 2x2 phase kernels of the 3x3 kernel w, side by side.

    w: (3, 3, cin, cout); returns (or fills ``out``) wq: (2, 2, cin, 4*cout), wq[a, b, ch,
    (2py+px)*cout + f] = sum_{i,j} R[py][a, i] R[px][b, j] w[i, j, ch, f], summed in float64 and
    rounded once to w's dtype. ``ws``: a Workspace for the float64 work arrays (else new ones)."""
    _, _, cin, cout = w.shape
    w64 = _work(ws, "w", (9, cin * cout))
    w64[...] = w.reshape(9, cin * cout)
    # q[r, n], r = (2py+px, a, b), n = (ch, f)
    q = np.einsum("rk,kn->rn", _PHASE_MATRIX_16x9[padding], w64, out=_work(ws, "q", (16, cin * cout)))
    wq = out if out is not None and out.flags.c_contiguous else np.empty((2, 2, cin, 4 * cout), w.dtype)
    wq.reshape(2, 2, cin, 4, cout)[...] = q.reshape(4, 2, 2, cin, cout).transpose(1, 2, 3, 0, 4)
    if out is None or out is wq:
        return wq
    out[...] = wq
    return out


def phase_kernel_grad(dwq, padding, dw, ws=None):
    """dw = A^T dwq: the 3x3 kernel's gradient from the phase kernels' (the adjoint of phase_kernel).

    dwq: (2, 2, cin, 4*cout); dw: (3, 3, cin, cout), overwritten (summed in float64, rounded once);
    ``ws`` as for phase_kernel."""
    _, _, cin, c4 = dwq.shape
    cout = c4 // 4
    d = _work(ws, "q", (16, cin * cout))
    d.reshape(4, 2, 2, cin, cout)[...] = dwq.reshape(2, 2, cin, 4, cout).transpose(3, 0, 1, 2, 4)
    dw64 = np.einsum("rk,rn->kn", _PHASE_MATRIX_16x9[padding], d, out=_work(ws, "w", (9, cin * cout)))
    dw[...] = dw64.reshape(dw.shape)


# --- the slow, obvious versions: upsample, then convolve -------------------------------------------

def upsample_conv2d_forward_naive(x, w, b, padding):
    """z = conv(upsample2(x), w) + b, the definition (float64). x: (n, h, w, cin); w: (3, 3, cin, cout)."""
    return conv2d_forward_naive(upsample2d_forward_naive(x, (2, 2)), w, b, (1, 1), padding)


def upsample_conv2d_backward_naive(x, w, dz, padding):
    """(dx, dw, db) of z = conv(upsample2(x), w) + b for dz = dL/dz (float64): the convolution's
    gradients on the big input, then UpSampling's backward (sum over each 2x2 block)."""
    big = upsample2d_forward_naive(x, (2, 2))
    dw = conv2d_backward_kernel_naive(big, dz, (3, 3), (1, 1), padding)
    dbig = conv2d_backward_input_naive(dz, w, big.shape, (1, 1), padding)
    return upsample2d_backward_naive(dbig, (2, 2)), dw, conv2d_backward_bias_naive(dz)


# --- the fast kernels: the copies between q's layout and the output's ------------------------------

def phase_interleave(q, base, step, y):
    """y[n, Y, X, f] = q[n, Y//2 + base + step*(Y%2), X//2 + base + step*(X%2), (2*(Y%2) + X%2)*cout + f].

    q: (n, hq, wq, 4*cout), the phase convolution's output (bias and ReLU already applied);
    y: (n, oh, ow, cout), overwritten; (base, step) from :func:`phase_offsets` (forward).

    The two-pass definition of conv_forward.conv2d_forward_phases (which interleaves each sample's q
    as it is made), kept to test it. Samples on threads; conv_forward.interleave_phases copies.
    """
    parallel_for(_phase_interleave_samples, y.shape[0], q, base, step, y)


@njit()
def _phase_interleave_samples(lo, hi, q, base, step, y):
    """:func:`phase_interleave` for samples lo..hi-1."""
    _, hq, wq, c4 = q.shape
    qf = q.reshape(q.size)
    for s in range(lo, hi):
        interleave_phases(qf[s * hq * wq * c4:(s + 1) * hq * wq * c4], wq, base, step, y, s)


def phase_gather(dy, y, relu, base, step, dq, part, db):
    """The one pass over the output gradient of the backward pass:

        dz = dy where y > 0, else 0     (relu; otherwise dz = dy)
        dq[n, Y//2 + base + step*(Y%2), X//2 + base + step*(X%2), (2*(Y%2) + X%2)*cout + f] = dz[n, Y, X, f]
        db[f] = sum_{n,Y,X} dz[n, Y, X, f]

    dy, y: (n, oh, ow, cout); dq: (n, hq, wq, 4*cout), its other entries left as they are (zero: the
    caller allocates it zeroed once); part: (nc, cout) work array (nc = config.n_chunks(n)); db:
    (cout,). dq, part and db are overwritten; (base, step) from :func:`phase_offsets` (backward).
    db is summed over fixed chunks of the batch, each in order, then the chunks in order (the same
    result for any number of threads).

    Optimizations: chunks of the batch on threads (threads.parallel_for); one read of dy and y for
    dq and db; 8 channels at a time in a register tuple (one vector load, mask, store and add).
    """
    parallel_for(_phase_gather_chunks, part.shape[0], dy, y, relu, base, step, dq, part)
    _sum_chunks(part, db)   # the chunks, added in order


@njit()
def _phase_gather_chunks(lo, hi, dy, y, relu, base, step, dq, part):
    """:func:`phase_gather` for chunks lo..hi-1 of the batch, but db (part[k] is chunk k's)."""
    n, oh, ow, cout = dy.shape
    _, hq, wq, c4 = dq.shape
    nc = part.shape[0]
    dyf, yf, dqf = dy.reshape(dy.size), y.reshape(y.size), dq.reshape(dq.size)
    c8 = cout - cout % 8
    zero = dq.dtype.type(0)
    for k in range(lo, hi):
        pk = part[k]
        for f in range(cout):
            pk[f] = 0
        for s in range(k * n // nc, (k + 1) * n // nc):
            for Y in range(oh):
                py = Y % 2
                i0 = (s * oh + Y) * ow * cout                                 # row Y of sample s in dy
                p0 = (s * hq + Y // 2 + base + step * py) * wq * c4 + 2 * py * cout   # its row of dq
                ahead = i0 + 2 * oh * ow * cout      # the same row two samples on, asked for now
                prefetch_span(dyf, ahead, ahead + ow * cout)
                if relu:
                    prefetch_span(yf, ahead, ahead + ow * cout)
                for f0 in range(0, c8, 8):    # 8 channels at a time
                    acc = load8(pk, f0)
                    for X in range(ow):
                        px = X % 2
                        i = i0 + X * cout + f0
                        v = load8(dyf, i)
                        if relu:
                            v = where_positive8(v, load8(yf, i), zero)
                        store8(dqf, p0 + (X // 2 + base + step * px) * c4 + px * cout + f0, v, False)
                        acc = add8(acc, v)
                    store8(pk, f0, acc, False)
                for f in range(c8, cout):     # channels left over
                    a = pk[f]
                    for X in range(ow):
                        px = X % 2
                        i = i0 + X * cout + f
                        v = dyf[i] if not relu or yf[i] > 0 else zero
                        dqf[p0 + (X // 2 + base + step * px) * c4 + px * cout + f] = v
                        a += v
                    pk[f] = a
