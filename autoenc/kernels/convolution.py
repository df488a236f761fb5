"""Conv2D's kernels behind two calls: what the layer runs in a forward and a backward pass.

    z = conv(x, w) + b            z[n, r, c, f] = b[f] + sum_{i,j,ch} xp[n, r*sh+i, c*sw+j, ch] * w[i, j, ch, f]
    y = activation(z)
    dz = dy * activation'(z)      (dy itself when the loss gave dL/dz: from_logits)
    dw[i, j, ch, f] = sum_{n,r,c} xp[n, r*sh+i, c*sw+j, ch] * dz[n, r, c, f]
    db[f] = sum_{n,r,c} dz[n, r, c, f]
    dx[n, rr, cc, ch] = sum dz[n, r, c, f] * w[i, j, ch, f]   over r*sh + i - pt = rr, c*sw + j - pl = cc

:class:`Conv2DKernels` runs these either through the fast kernels (the default) or, with
``autoenc.set_reference_kernels(True)``, through their slow, obvious ``*_naive`` versions, which a
learner can read and step through. The fast path keeps its work arrays between calls (the padded
input, the output, the spread-out dz, the flipped kernel, the chunk sums), computes the padding and
halo offsets, and fuses ReLU and the bias into the kernels; the layer sees none of it.

The pieces, one concept per file: padding.py (shape rules, zero halos), conv_forward.py (the
convolution), conv_input_grad.py (dx: the convolution on the flipped kernel; also a transposed
convolution's forward), conv_weight_grad.py (dw, db), blocks.py (register blocks). A Conv1D is this
with height 1: x (n, 1, w, cin), kernel (1, k, cin, cout), strides (1, s). See docs/conv2d.md.
"""
import numpy as np

from autoenc.kernels.config import n_chunks, reference_kernels_enabled
from autoenc.kernels.conv_forward import ACT_LINEAR, ACT_RELU, conv2d_forward, conv2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive, conv2d_backward_input_padded
from autoenc.kernels.conv_weight_grad import (conv2d_backward_bias_naive, conv2d_backward_dz,
                                              conv2d_backward_kernel_chunks, conv2d_backward_kernel_naive)
from autoenc.kernels.elementwise import activation_backward, activation_forward, fuses_relu
from autoenc.kernels.padding import conv_padding, pad_into
from autoenc.kernels.workspace import Workspace


class Conv2DKernels:
    """The forward and backward pass of a 2-D convolution with bias and activation, for one layer.

    strides: (sh, sw); padding: 'valid' or 'same'. Arrays are NHWC, C-contiguous, of one float
    dtype. It keeps its work arrays (``workspace``) and what ``backward`` needs from the last
    ``forward``, so concurrent calls need one Conv2DKernels each. ``activation`` is an
    :class:`autoenc.activations.Activation` (relu is fused into the kernel; sigmoid has a kernel;
    the others run as NumPy).
    """

    def __init__(self, strides, padding):
        self.strides = tuple(strides)
        self.padding = padding
        self.workspace = Workspace()
        self._saved = None   # (reference, x or xp, x shape, (pt, pl), z, y) of the last forward pass

    def forward(self, x, kernel, bias, activation):
        """x: (n, h, w, cin); kernel: (kh, kw, cin, cout); bias: (cout,) or None (no bias).

        Returns (z, y), both (n, oh, ow, cout): y = activation(conv(x, kernel) + bias) and z the
        pre-activation, except where the fast path fuses the activation (relu, linear): there z is
        y. On the fast path both are work arrays, overwritten by the next call."""
        if reference_kernels_enabled():
            return self._forward_reference(x, kernel, bias, activation)
        ws = self.workspace
        n, h, w, cin = x.shape
        kh, kw, _, cout = kernel.shape
        sh, sw = self.strides
        pt, pb, oh = conv_padding(h, kh, sh, self.padding)
        pl, pr, ow = conv_padding(w, kw, sw, self.padding)
        if pt or pb or pl or pr:
            xp = ws.array("xp", (n, h + pt + pb, w + pl + pr, cin), x.dtype, zeros=True)
            pad_into(x, pt, pl, xp)
        else:
            xp = x
        if bias is None:
            bias = ws.array("zero_bias", (cout,), kernel.dtype, zeros=True)
        z = ws.array("z", (n, oh, ow, cout), x.dtype)
        conv2d_forward(xp, kernel, bias, sh, sw, ACT_RELU if fuses_relu(activation) else ACT_LINEAR, z)
        y = activation_forward(activation, z, ws)
        self._saved = (False, xp, x.shape, (pt, pl), z, y)
        return z, y

    def backward(self, dy, kernel, dkernel, dbias, activation, from_logits=False, need_dx=True):
        """dy: (n, oh, ow, cout), dL/dy of the last forward pass (dL/dz when ``from_logits``).

        Fills dkernel (kh, kw, cin, cout) and dbias (cout,) (None: no bias) in place and returns
        dx (n, h, w, cin), a work array, or None when ``need_dx`` is False. Takes the path (fast
        or reference) that the forward pass took."""
        if self._saved is None:
            raise RuntimeError("Conv2DKernels.backward called before forward")
        reference, xp, x_shape, pads, z, y = self._saved
        if reference:
            return self._backward_reference(dy, kernel, dkernel, dbias, activation, from_logits, need_dx)
        pt, pl = pads
        ws = self.workspace
        dy = np.ascontiguousarray(dy, dtype=y.dtype)  # the kernels walk flat views
        relu = fuses_relu(activation) and not from_logits
        dy = activation_backward(activation, dy, y, z, ws, from_logits)
        sh, sw = self.strides
        n, h, w = x_shape[:3]
        kh, kw, cin, cout = kernel.shape
        # one pass: dz (relu mask), the bias gradient, and dz spread out by the strides into the
        # halo of the input-gradient convolution (dzp: kh-1-pt rows on top, kw-1-pl columns left)
        dz = ws.array("dz", dy.shape, y.dtype)
        dzp = ws.array("dzp", (n if need_dx else 0, h + kh - 1, w + kw - 1, cout), y.dtype, zeros=True)
        db = dbias if dbias is not None else ws.array("db_unused", (cout,), y.dtype)
        conv2d_backward_dz(dy, y, relu, sh, sw, kh - 1 - pt, kw - 1 - pl, dz, dzp,
                           ws.array("db_chunks", (n_chunks(n), cout), y.dtype), db)
        conv2d_backward_kernel_chunks(xp, dz, sh, sw, ws.array("dw_chunks", (n_chunks(n), kh, kw, cin, cout),
                                                               y.dtype), dkernel)
        if not need_dx:
            return None
        dx = ws.array("dx", x_shape, y.dtype)
        conv2d_backward_input_padded(dzp, kernel, ws.array("kernel_t", (kh, kw, cout, cin), kernel.dtype),
                                     ws.array("zero_bias_t", (cin,), kernel.dtype, zeros=True), dx)
        return dx

    # --- the slow, obvious path ----------------------------------------------------------------

    def _forward_reference(self, x, kernel, bias, activation):
        """forward() through conv2d_forward_naive (float64 sums, then the layer's dtype) and the
        NumPy activation. New arrays on every call."""
        if bias is None:
            bias = np.zeros(kernel.shape[3], kernel.dtype)
        z = conv2d_forward_naive(x, kernel, bias, self.strides, self.padding).astype(x.dtype)
        y = np.empty_like(z)
        activation.forward(z, y)
        self._saved = (True, x, x.shape, None, z, y)
        return z, y

    def _backward_reference(self, dy, kernel, dkernel, dbias, activation, from_logits, need_dx):
        """backward() through the naive kernels: dz, then dw, db and dx, each its own loop."""
        _, x, x_shape, _, z, y = self._saved
        dy = np.asarray(dy, dtype=y.dtype)
        if from_logits:
            dz = dy
        else:
            dz = np.empty_like(y)
            activation.backward(dy, y, dz, z=z)      # dz = dy * activation'(z)
        dkernel[...] = conv2d_backward_kernel_naive(x, dz, kernel.shape[:2], self.strides, self.padding)
        if dbias is not None:
            dbias[...] = conv2d_backward_bias_naive(dz)
        if not need_dx:
            return None
        return conv2d_backward_input_naive(dz, kernel, x_shape, self.strides, self.padding).astype(y.dtype)
