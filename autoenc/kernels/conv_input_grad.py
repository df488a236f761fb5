"""The input gradient of the 2-D convolution: the slow, obvious version and the fast one, which is
the forward convolution (conv_forward.py) run on dy spread out by the strides, with the kernel
flipped. It is also the forward pass of a transposed convolution (Conv2DTranspose).

    dx[n, rr, cc, ch] = sum_{i,j,f} dy[n, r, c, f] * w[i, j, ch, f]   over r*sh + i - pt = rr, c*sw + j - pl = cc

Shapes as in conv_forward.py. See docs/conv2d.md.
"""
import numpy as np

from autoenc.kernels.config import njit
from autoenc.kernels.conv_forward import ACT_LINEAR, conv2d_forward
from autoenc.kernels.padding import dilate_pad_into, pad_naive


def conv2d_backward_input_naive(dy, w, x_shape, strides=(1, 1), padding="valid"):
    """dx[n, r*sh+i-pt, c*sw+j-pl, ch] += dy[n, r, c, f] * w[i, j, ch, f]. Returns dx."""
    kh, kw, cin, cout = w.shape
    sh, sw = strides
    xp, (pt, pl), (oh, ow) = pad_naive(np.zeros(x_shape), (kh, kw), strides, padding)
    dxp = np.zeros_like(xp)
    for r in range(oh):
        for c in range(ow):
            # (n, cout) x (kh, kw, cin, cout) -> (n, kh, kw, cin)
            dxp[:, r * sh:r * sh + kh, c * sw:c * sw + kw, :] += np.tensordot(dy[:, r, c, :], w, axes=([1], [3]))
    h, wd = x_shape[1], x_shape[2]
    return dxp[:, pt:pt + h, pl:pl + wd, :]


@njit()
def flip_kernel_into(w, wt):
    """wt[i, j, f, ch] = w[kh-1-i, kw-1-j, ch, f]: the kernel of the transposed convolution.

    w: (kh, kw, cin, cout); wt: (kh, kw, cout, cin), overwritten.

    Optimizations: none needed (kh*kw*cin*cout numbers, once per backward pass).
    """
    kh, kw, cin, cout = w.shape
    for i in range(kh):
        for j in range(kw):
            for ch in range(cin):
                for f in range(cout):
                    wt[i, j, f, ch] = w[kh - 1 - i, kw - 1 - j, ch, f]


def conv2d_backward_input(dy, w, sh, sw, pt, pl, dx, workspace=None):
    """dx[n, rr, cc, ch] = sum_{i,j,f} dy[n, r, c, f] * w[i, j, ch, f], over r*sh+i-pt = rr, c*sw+j-pl = cc.

    dy: (n, oh, ow, cout); w: (kh, kw, cin, cout); pt, pl: top/left padding of the forward pass;
    dx: (n, h, w, cin), overwritten: its shape is the output shape, given explicitly (a transposed
    convolution's forward pass calls this with its own output). ``workspace`` (a
    :class:`~autoenc.kernels.workspace.Workspace`) keeps the work arrays between calls; without
    it they are allocated.

    This is a convolution too: spread dy out by the strides inside a halo of kh-1-pt rows on top and
    kw-1-pl columns on the left (dyp), and correlate it, stride 1 and 'valid', with the kernel
    rotated by 180 degrees and its channel axes swapped (wt). Conv2D's backward pass fills dyp in
    the same pass as the bias gradient (:func:`~autoenc.kernels.conv_weight_grad.conv2d_backward_dz`)
    and calls :func:`conv2d_backward_input_padded`.

    Optimizations: those of conv2d_forward; dyp's zeros are written once per workspace (only the
    spread-out entries are rewritten).
    """
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = dx.shape
    top, left = kh - 1 - pt, kw - 1 - pl
    shape = (n, h + kh - 1, wd + kw - 1, cout)
    if workspace is None:
        dyp, wt, zero_bias = np.zeros(shape, dy.dtype), np.empty((kh, kw, cout, cin), w.dtype), np.zeros(cin, w.dtype)
    else:   # dyp by its layout: entries outside the spread-out positions must stay zero
        dyp = workspace.array(f"dyp {sh} {sw} {top} {left}", shape, dy.dtype, zeros=True)
        wt = workspace.array("wt", (kh, kw, cout, cin), w.dtype)
        zero_bias = workspace.array("zero_bias_t", (cin,), w.dtype, zeros=True)
    dilate_pad_into(dy, sh, sw, top, left, dyp)
    conv2d_backward_input_padded(dyp, w, wt, zero_bias, dx)


def conv2d_backward_input_padded(dyp, w, wt, zero_bias, dx):
    """:func:`conv2d_backward_input` from dy already spread into its halo (dyp: (n, h+kh-1,
    w+kw-1, cout)): dx = correlate(dyp, wt), stride 1, 'valid', with wt = the flipped kernel.
    wt (kh, kw, cout, cin) is overwritten; zero_bias (cin,) holds zeros.

    Optimizations: one kernel for two jobs (conv2d_forward, register-blocked); no scatter-add, so
    no write conflicts between threads and every dx is summed in a fixed order.
    """
    flip_kernel_into(w, wt)
    conv2d_forward(dyp, wt, zero_bias, 1, 1, ACT_LINEAR, dx)
