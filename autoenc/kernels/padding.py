"""Padding and output-shape rules shared by convolution and pooling, and the copies into a zero halo.

For one spatial axis of length ``size``, a window of ``kernel`` and a stride ``stride``
(TensorFlow's convention, which Keras follows)::

    'valid':  out = (size - kernel) // stride + 1,  no padding
    'same':   out = ceil(size / stride),  pad_total = max((out - 1) * stride + kernel - size, 0),
              pad_before = pad_total // 2, the odd row or column going after (bottom/right)
    'causal': out = ceil(size / stride),  pad_before = kernel - 1, pad_after = 0 (Conv1D: output t
              sees inputs up to t only)

A transposed convolution runs this rule backwards (:func:`conv_transpose_output_size`, Keras'
``compute_conv_transpose_output_shape``): its output is the input of the convolution it is the
adjoint of, and its input that convolution's output.

The fast kernels read their input inside a zero halo, ``xp[n, pt + r, pl + c, :] = x[n, r, c, :]``,
so that every window is a run of contiguous rows and no index needs a bounds check.
"""
import numpy as np

from autoenc.kernels.blocks import copy1d
from autoenc.kernels.config import njit
from autoenc.threads import parallel_for


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
    if padding == "causal":
        return kernel - 1, 0, (size - 1) // stride + 1
    raise ValueError(f"padding must be 'valid', 'same' or 'causal', got {padding!r}")


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis (see :func:`conv_padding`)."""
    return conv_padding(size, kernel, stride, padding)[2]


def conv_transpose_output_size(size, kernel, stride, padding, output_padding=None):
    """Output length along one axis of a transposed convolution whose input has length ``size``
    (Keras' rule, keras/src/backend/common/backend_utils.py ``_get_output_shape_given_tf_padding``):

        'valid':  (size - 1) * stride + kernel + output_padding,  output_padding = max(stride - kernel, 0)
                  when None
        'same':   size * stride when output_padding is None, else
                  (size - 1) * stride + kernel % 2 + output_padding

    The result ``out`` is an input length of the forward convolution whose output has length
    ``size``: ``conv_padding(out, kernel, stride, padding)[2] == size``. Where that fails (an even
    kernel with 'same' and output_padding 0, for instance) TensorFlow refuses the shapes, and so
    does this function, with a ValueError.
    """
    if padding == "valid":
        out = (size - 1) * stride + kernel + (max(kernel, stride) - kernel if output_padding is None else output_padding)
    elif padding == "same":
        out = size * stride if output_padding is None else (size - 1) * stride + kernel % 2 + output_padding
    else:
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if out <= 0 or conv_padding(out, kernel, stride, padding)[2] != size:
        raise ValueError(f"a transposed convolution with kernel {kernel}, stride {stride}, padding={padding!r} and "
                         f"output_padding={output_padding} has no output length for an input of length {size} "
                         f"(Keras' rule gives {out}, whose convolution has length "
                         f"{conv_padding(out, kernel, stride, padding)[2] if out > 0 else 'none'}); change "
                         f"output_padding")
    return out


def pad_naive(x, kernel_size, strides, padding):
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, cin = x.shape
    pt, pb, oh = conv_padding(h, kh, sh, padding)
    pl, pr, ow = conv_padding(w, kw, sw, padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    return xp, (pt, pl), (oh, ow)


def pad_into(x, pt, pl, xp):
    """Copy x (n, h, w, c) into the interior of xp (n, hp, wp, c): xp[n, pt+r, pl+c] = x[n, r, c].

    The halo of xp is left as it is: the caller allocates xp zeroed once and reuses it.

    Optimizations: samples on threads (threads.parallel_for); one contiguous row (w*c numbers)
    copied per loop, from 0, so LLVM vectorises it; the halo is never rewritten.
    """
    parallel_for(_pad_into_samples, x.shape[0], x, pt, pl, xp)


@njit()
def _pad_into_samples(lo, hi, x, pt, pl, xp):
    """:func:`pad_into` for samples lo..hi-1."""
    for s in range(lo, hi):
        pad_sample_into(x, s, pt, pl, xp, s)


@njit()
def zero_sample(like, hp, wp, c):
    """A new zero array (1, hp, wp, c) of ``like``'s dtype whose data starts on a 64-byte cache line,
    as a Workspace array does (kernels/workspace.py): one sample's halo, made inside a kernel."""
    size = hp * wp * c
    per = 64 // like.itemsize
    buf = np.zeros(size + per, dtype=like.dtype)
    k = (per - (buf.ctypes.data // like.itemsize) % per) % per
    return buf[k:k + size].reshape((1, hp, wp, c))


@njit()
def pad_sample_into(x, s, pt, pl, xp, slot):
    """xp[slot, pt + r, pl + c] = x[s, r, c]: sample s of x (n, h, w, c) into the interior of sample
    ``slot`` of xp (m, hp, wp, c), its halo left as it is."""
    n, h, w, c = x.shape
    m, hp, wp, _ = xp.shape
    xf, xpf = x.reshape(n * h * w * c), xp.reshape(m * hp * wp * c)
    row = w * c             # one row of x, contiguous in both arrays
    for r in range(h):
        src = (s * h + r) * row
        dst = ((slot * hp + pt + r) * wp + pl) * c
        copy1d(xf[src:src + row], xpf[dst:dst + row])


def dilate_pad_into(dy, sh, sw, top, left, dyp):
    """dyp[n, top + r*sh, left + c*sw] = dy[n, r, c]: dy spread out by the strides, inside a halo.

    dy: (n, oh, ow, c); dyp: (n, hp, wp, c). Every other entry of dyp is left as it is (zero: the
    caller allocates dyp zeroed once and reuses it).

    Optimizations: samples on threads (threads.parallel_for); only the spread-out entries are
    written (the zeros stay).
    """
    parallel_for(_dilate_pad_into_samples, dy.shape[0], dy, sh, sw, top, left, dyp)


@njit()
def _dilate_pad_into_samples(lo, hi, dy, sh, sw, top, left, dyp):
    """:func:`dilate_pad_into` for samples lo..hi-1."""
    n, oh, ow, c = dy.shape
    for s in range(lo, hi):
        for r in range(oh):
            for q in range(ow):
                for ch in range(c):
                    dyp[s, top + r * sh, left + q * sw, ch] = dy[s, r, q, ch]
