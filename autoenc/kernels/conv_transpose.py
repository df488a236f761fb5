"""Conv2DTranspose's kernels behind two calls: the transposed convolution is the adjoint of a
convolution, so its three passes are the convolution's three kernels with the roles swapped.

Let C be the convolution (conv_forward.py) with kernel w (kh, kw, filters, cin), strides (sh, sw)
and padding P, from an image of shape (n, oh, ow, filters) to one of shape (n, h, w, cin). The
transposed convolution T maps the other way, x (n, h, w, cin) -> y (n, oh, ow, filters), as C's
adjoint (C^T: <C u, x> = <u, C^T x> for every u):

    z = C^T x + b     z[n, rr, cc, f] = b[f] + sum x[n, r, c, ch] * w[i, j, f, ch]
                                          over r*sh + i - pt = rr, c*sw + j - pl = cc
                      = conv2d_backward_input(dy=x): C's input gradient, run forward
    y = activation(z);  dz = dy * activation'(z)
    dx = C dz         dx[n, r, c, ch] = sum_{i,j,f} dzp[n, r*sh + i, c*sw + j, f] * w[i, j, f, ch]
                      = conv2d_forward(dz): C's forward pass
    dw[i, j, f, ch] = sum_{n,r,c} dzp[n, r*sh + i, c*sw + j, f] * x[n, r, c, ch]
                      = conv2d_backward_kernel(xp=dz, dy=x): C's kernel gradient, x and dy swapped
    db[f] = sum_{n,rr,cc} dz[n, rr, cc, f]

with dzp = dz inside C's zero halo (pt, pl from padding.conv_padding(oh, kh, sh, P)), and (oh, ow)
from padding.conv_transpose_output_size (Keras' rule, output_padding included). No new convolution
is written here: :class:`Conv2DTransposeKernels` only moves arrays between the three kernels (fast
path) or their ``*_naive`` versions (``autoenc.set_reference_kernels(True)``). See
docs/conv2d_transpose.md.
"""
import numpy as np

from autoenc.kernels.config import n_chunks, reference_kernels_enabled
from autoenc.kernels.conv_forward import ACT_LINEAR, ACT_RELU, conv2d_forward, conv2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive, flip_kernel_into
from autoenc.kernels.conv_weight_grad import (conv2d_backward_bias_naive, conv2d_backward_dz,
                                              conv2d_backward_kernel_chunks, conv2d_backward_kernel_naive)
from autoenc.kernels.elementwise import activation_backward, activation_forward, fuses_relu
from autoenc.kernels.padding import conv_padding, conv_transpose_output_size, dilate_pad_into
from autoenc.kernels.workspace import Workspace


class Conv2DTransposeKernels:
    """The forward and backward pass of a 2-D transposed convolution with bias and activation, for
    one layer.

    strides: (sh, sw); padding: 'valid' or 'same'; output_padding: None or (oph, opw). Arrays are
    NHWC, C-contiguous, of one float dtype; the kernel is (kh, kw, filters, cin), Keras' layout.
    Keeps its work arrays and what ``backward`` needs from the last ``forward``, so concurrent calls
    need one Conv2DTransposeKernels each.
    """

    def __init__(self, strides, padding, output_padding=None):
        self.strides = tuple(strides)
        self.padding = padding
        self.output_padding = None if output_padding is None else tuple(output_padding)
        self.workspace = Workspace()
        self._saved = None   # (reference, x, z, y) of the last forward pass

    def output_size(self, h, w, kernel_size):
        """(oh, ow) for an input of height h and width w (padding.conv_transpose_output_size)."""
        op = self.output_padding or (None, None)
        return tuple(conv_transpose_output_size(size, k, s, self.padding, p)
                     for size, k, s, p in zip((h, w), kernel_size, self.strides, op))

    def forward(self, x, kernel, bias, activation, keep=True):
        """x: (n, h, w, cin); kernel: (kh, kw, filters, cin); bias: (filters,) or None (no bias).

        Returns (z, y), both (n, oh, ow, filters): y = activation(C^T x + bias) and z the
        pre-activation (y itself where the fast path fuses the activation: relu, linear). On the
        fast path both are work arrays, overwritten by the next call. ``keep``, as Conv2DKernels
        takes it, changes nothing here: the backward pass reads x itself, no padded copy."""
        x = np.ascontiguousarray(x)
        if reference_kernels_enabled():
            return self._forward_reference(x, kernel, bias, activation)
        ws = self.workspace
        n, h, w, cin = x.shape
        kh, kw, filters, _ = kernel.shape
        sh, sw = self.strides
        oh, ow = self.output_size(h, w, (kh, kw))
        pt, pl = conv_padding(oh, kh, sh, self.padding)[0], conv_padding(ow, kw, sw, self.padding)[0]
        # C's input gradient: x spread out by the strides inside a halo of kh-1-pt rows on top and
        # kw-1-pl columns on the left, correlated (stride 1, 'valid') with the flipped kernel
        top, left = kh - 1 - pt, kw - 1 - pl
        xs = ws.array(f"xs {top} {left}", (n, oh + kh - 1, ow + kw - 1, cin), x.dtype, zeros=True)
        dilate_pad_into(x, sh, sw, top, left, xs)
        wt = ws.array("wt", (kh, kw, cin, filters), kernel.dtype)
        flip_kernel_into(kernel, wt)
        if bias is None:
            bias = ws.array("zero_bias", (filters,), kernel.dtype, zeros=True)
        z = ws.array("z", (n, oh, ow, filters), x.dtype)
        conv2d_forward(xs, wt, bias, 1, 1, ACT_RELU if fuses_relu(activation) else ACT_LINEAR, z)
        y = activation_forward(activation, z, ws)
        self._saved = (False, x, z, y)
        return z, y

    def backward(self, dy, kernel, dkernel, dbias, activation, from_logits=False, need_dx=True):
        """dy: (n, oh, ow, filters), dL/dy of the last forward pass (dL/dz when ``from_logits``).

        Fills dkernel (kh, kw, filters, cin) and dbias (filters,) (None: no bias) in place and
        returns dx (n, h, w, cin), a work array, or None when ``need_dx`` is False. Takes the path
        (fast or reference) that the forward pass took."""
        if self._saved is None:
            raise RuntimeError("Conv2DTransposeKernels.backward called before forward")
        reference, x, z, y = self._saved
        if reference:
            return self._backward_reference(dy, kernel, dkernel, dbias, activation, from_logits, need_dx)
        ws = self.workspace
        dy = np.ascontiguousarray(dy, dtype=y.dtype)  # the kernels walk flat views
        relu = fuses_relu(activation) and not from_logits
        dy = activation_backward(activation, dy, y, z, ws, from_logits)
        n, oh, ow, filters = dy.shape
        kh, kw, _, cin = kernel.shape
        sh, sw = self.strides
        pt, pb, _ = conv_padding(oh, kh, sh, self.padding)
        pl, pr, _ = conv_padding(ow, kw, sw, self.padding)
        # one pass: dz (relu mask), db, and dz copied into C's zero halo (dzp), which both C's
        # forward pass (dx) and C's kernel gradient (dw) read
        dz = ws.array("dz", dy.shape, y.dtype)
        dzp = ws.array(f"dzp {pt} {pl}", (n, oh + pt + pb, ow + pl + pr, filters), y.dtype, zeros=True)
        db = dbias if dbias is not None else ws.array("db_unused", (filters,), y.dtype)
        conv2d_backward_dz(dy, y, relu, 1, 1, pt, pl, dz, dzp, ws.array("db_chunks", (n_chunks(n), filters), y.dtype),
                           db)
        conv2d_backward_kernel_chunks(dzp, x, sh, sw, ws.array("dw_chunks", (n_chunks(n),) + kernel.shape, y.dtype),
                                      dkernel)
        if not need_dx:
            return None
        dx = ws.array("dx", x.shape, y.dtype)
        conv2d_forward(dzp, kernel, ws.array("zero_bias_t", (cin,), kernel.dtype, zeros=True), sh, sw, ACT_LINEAR, dx)
        return dx

    # --- the slow, obvious path ----------------------------------------------------------------

    def _forward_reference(self, x, kernel, bias, activation):
        """forward() through conv2d_backward_input_naive (C's input gradient, float64 sums, then the
        layer's dtype) and the NumPy activation. New arrays on every call."""
        n, h, w, _ = x.shape
        kh, kw, filters, _ = kernel.shape
        oh, ow = self.output_size(h, w, (kh, kw))
        z = conv2d_backward_input_naive(x, kernel, (n, oh, ow, filters), self.strides, self.padding)
        if bias is not None:
            z = z + bias
        z = z.astype(x.dtype)
        y = np.empty_like(z)
        activation.forward(z, y)
        self._saved = (True, x, z, y)
        return z, y

    def _backward_reference(self, dy, kernel, dkernel, dbias, activation, from_logits, need_dx):
        """backward() through the naive kernels: dz, then dw (C's kernel gradient with x and dz
        swapped), db and dx (C's forward pass), each its own loop."""
        _, x, z, y = self._saved
        dy = np.asarray(dy, dtype=y.dtype)
        if from_logits:
            dz = dy
        else:
            dz = np.empty_like(y)
            activation.backward(dy, y, dz, z=z)      # dz = dy * activation'(z)
        dkernel[...] = conv2d_backward_kernel_naive(dz, x, kernel.shape[:2], self.strides, self.padding)
        if dbias is not None:
            dbias[...] = conv2d_backward_bias_naive(dz)
        if not need_dx:
            return None
        zero_bias = np.zeros(kernel.shape[3])
        return conv2d_forward_naive(dz, kernel, zero_bias, self.strides, self.padding).astype(y.dtype)
