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
from autoenc.kernels.conv_forward import (ACT_LINEAR, ACT_RELU, conv2d_forward, conv2d_forward_naive,
                                          conv2d_forward_padded, conv2d_forward_phases)
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive, conv2d_backward_input_padded
from autoenc.kernels.conv_weight_grad import (conv2d_backward_bias_naive, conv2d_backward_dz,
                                              conv2d_backward_kernel_chunks, conv2d_backward_kernel_naive)
from autoenc.kernels.elementwise import activation_backward, activation_forward, fuses_relu
from autoenc.kernels.padding import conv_padding, pad_into
from autoenc.kernels.upsample_conv import phase_gather, phase_kernel, phase_kernel_grad, phase_offsets
from autoenc.kernels.upsampling import upsample2d_backward_naive, upsample2d_forward_naive
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
        self._unpadded = None   # (x, work array name, padded shape) where it kept no padded copy (xp None)
        self._upsampled = None   # (reference, small x, its shape) when the last forward was forward_upsampled

    def forward(self, x, kernel, bias, activation, keep=True):
        """x: (n, h, w, cin); kernel: (kh, kw, cin, cout); bias: (cout,) or None (no bias).

        Returns (z, y), both (n, oh, ow, cout): y = activation(conv(x, kernel) + bias) and z the
        pre-activation, except where the fast path fuses the activation (relu, linear): there z is
        y. On the fast path both are work arrays, overwritten by the next call. With ``keep`` False
        (inference) the fast path pads each sample into a buffer of one sample instead of keeping
        the batch's padded input for the kernel gradient: the same y, fewer bytes through the
        caches; a backward pass after it pads x again."""
        if reference_kernels_enabled():
            return self._forward_reference(x, kernel, bias, activation)
        ws = self.workspace
        n, h, w, cin = x.shape
        kh, kw, _, cout = kernel.shape
        sh, sw = self.strides
        pt, pb, oh = conv_padding(h, kh, sh, self.padding)
        pl, pr, ow = conv_padding(w, kw, sw, self.padding)
        if bias is None:
            bias = ws.array("zero_bias", (cout,), kernel.dtype, zeros=True)
        z = ws.array("z", (n, oh, ow, cout), x.dtype)
        act = ACT_RELU if fuses_relu(activation) else ACT_LINEAR
        if pt or pb or pl or pr:   # each sample padded, then convolved (one pass)
            shape = (h + pt + pb, w + pl + pr, cin)
            xp = ws.array("xp", (n,) + shape, x.dtype, zeros=True) if keep else None
            conv2d_forward_padded(x, pt, pl, ws.array("xp_none", (0,) + shape, x.dtype) if xp is None else xp,
                                  kernel, bias, sh, sw, act, z)
        else:
            xp = x
            conv2d_forward(xp, kernel, bias, sh, sw, act, z)
        y = activation_forward(activation, z, ws)
        self._saved = (False, xp, x.shape, (pt, pl), z, y)
        self._unpadded = (x, "xp", shape) if xp is None else None
        self._upsampled = None
        return z, y

    def forward_upsampled(self, x, kernel, bias, activation, keep=True):
        """forward(upsample(x)) for nearest upsampling by (2, 2), computed on the small input as one
        2x2 convolution per output phase (autoenc.kernels.upsample_conv); needs a 3x3 kernel and
        strides (1, 1). x: (n, h, w, cin); kernel: (3, 3, cin, cout); bias: (cout,) or None.

        Returns (z, y) as forward does, (n, 2h, 2w, cout) ('same') or (n, 2h-2, 2w-2, cout)
        ('valid'); the next backward returns the gradient of the small x. ``keep`` as forward."""
        if kernel.shape[:2] != (3, 3) or self.strides != (1, 1) or self.padding not in ("same", "valid"):
            raise ValueError(f"forward_upsampled needs a 3x3 kernel, strides (1, 1) and padding 'same' or "
                             f"'valid', got kernel {kernel.shape[:2]}, strides {self.strides}, padding "
                             f"{self.padding!r}")
        if reference_kernels_enabled():   # the definition: upsample, then convolve
            z, y = self._forward_reference(upsample2d_forward_naive(x, (2, 2)), kernel, bias, activation)
            self._upsampled = (True, None, x.shape)
            return z, y
        ws = self.workspace
        n, h, w, cin = x.shape
        cout = kernel.shape[3]
        pad = 1 if self.padding == "same" else 0
        # 'same': x goes into a 1-pixel halo sample by sample, in the same pass; 'valid': x itself
        shape = (h + 2, w + 2, cin)
        xp = (ws.array("xp_small", (n,) + shape, x.dtype, zeros=True) if keep else None) if pad else x
        wq, bq = self._phase_weights(kernel, bias)
        (base, step), _ = phase_offsets(self.padding)
        z = ws.array("z", (n, 2 * (h + pad - 1), 2 * (w + pad - 1), cout), x.dtype)
        conv2d_forward_phases(x if pad else x[:0], ws.array("xp_none", (0,) + shape, x.dtype) if xp is None else xp,
                              wq, bq, ACT_RELU if fuses_relu(activation) else ACT_LINEAR, base, step, z)
        y = activation_forward(activation, z, ws)
        self._saved = (False, xp, x.shape, (pad, pad), z, y)
        self._unpadded = (x, "xp_small", shape) if xp is None else None
        self._upsampled = (False, x, x.shape)
        return z, y

    def _phase_weights(self, kernel, bias):
        """(wq, bq), work arrays: the phase kernel of ``kernel`` (upsample_conv.phase_kernel) and the bias
        four times (zero without one). Made again only when the kernel's or the bias' bytes differ
        from those they were made from: predict runs a forward pass per part of a batch, with the
        same weights."""
        ws = self.workspace
        cin, cout = kernel.shape[2:]
        wq = ws.array("wq", (2, 2, cin, 4 * cout), kernel.dtype)
        bq = ws.array("bq", (4 * cout,), kernel.dtype)
        key = (kernel.shape, kernel.dtype, bias is None)
        made = ws.array(("phase weights made", key), (1,), np.int8, zeros=True)
        source = ws.array(("phase weights source", key), (kernel.size + (0 if bias is None else cout),), kernel.dtype)
        now = kernel.tobytes() + (b"" if bias is None else bias.tobytes())
        if not made[0] or source.tobytes() != now:
            phase_kernel(kernel, self.padding, wq, ws)
            if bias is None:
                bq[...] = 0
            else:
                bq.reshape(4, cout)[...] = bias
            source[:kernel.size] = kernel.reshape(-1)
            source[kernel.size:] = () if bias is None else bias
            made[0] = 1
        return wq, bq

    def backward(self, dy, kernel, dkernel, dbias, activation, from_logits=False, need_dx=True):
        """dy: (n, oh, ow, cout), dL/dy of the last forward pass (dL/dz when ``from_logits``).

        Fills dkernel (kh, kw, cin, cout) and dbias (cout,) (None: no bias) in place and returns
        dx (n, h, w, cin), a work array, or None when ``need_dx`` is False. Takes the path (fast
        or reference) that the forward pass took."""
        if self._saved is None:
            raise RuntimeError("Conv2DKernels.backward called before forward")
        if self._upsampled is not None:
            return self._backward_upsampled(dy, kernel, dkernel, dbias, activation, from_logits, need_dx)
        reference, xp, x_shape, pads, z, y = self._saved
        if reference:
            return self._backward_reference(dy, kernel, dkernel, dbias, activation, from_logits, need_dx)
        pt, pl = pads
        ws = self.workspace
        dy = np.ascontiguousarray(dy, dtype=y.dtype)  # the kernels walk flat views
        relu = fuses_relu(activation) and not from_logits
        dy = activation_backward(activation, dy, y, z, ws, from_logits)
        kh, kw = kernel.shape[:2]
        # one pass: dz (relu mask), the bias gradient, and dz spread out by the strides into the
        # halo of the input-gradient convolution (dzp: kh-1-pt rows on top, kw-1-pl columns left)
        dz, dzp, part, db = self._dz_arrays(kernel, dbias, need_dx)
        conv2d_backward_dz(dy, y, relu, *self.strides, kh - 1 - pt, kw - 1 - pl, dz, dzp, part, db)
        return self._backward_from_dz(dz, dzp, kernel, dkernel, need_dx)

    def backward_maxpooled(self, dy, pool, kernel, dkernel, dbias, need_dx=True):
        """backward(pool.backward(dy)) for a relu convolution (max(z, 0), fused) whose output the max
        pooling ``pool`` (a :class:`autoenc.kernels.MaxPool2DKernels`) read in its last forward pass,
        with the same results bit for bit: one pass (pooling.maxpool2d_backward_relu_dz) writes dz,
        its padded copy and the bias gradient straight from the pooled gradient, without the
        pooling's dx and without reading y; then the kernel and input gradients as in backward.

        dy: (n, ph, pw, cout), dL/d(the pooled output). Fills dkernel and dbias, returns dx or None
        as backward does. Needs the fast path, for both layers, and a forward pass that was not
        forward_upsampled."""
        if self._saved is None or self._saved[0] or self._upsampled is not None:
            raise RuntimeError("Conv2DKernels.backward_maxpooled needs a fast forward pass (not upsampled) first")
        _, _, _, (pt, pl), _, y = self._saved
        kh, kw = kernel.shape[:2]
        dz, dzp, part, db = self._dz_arrays(kernel, dbias, need_dx)
        pool.backward_relu_dz(dy, y, self.strides, kh - 1 - pt, kw - 1 - pl, dz, dzp, part, db)
        return self._backward_from_dz(dz, dzp, kernel, dkernel, need_dx)

    def _padded_input(self):
        """The padded input of the last fast forward pass (x itself where it needs no padding): the
        kept work array, or, after a pass that kept none (keep=False), x padded into it now."""
        if self._unpadded is not None:
            x, name, shape = self._unpadded
            xp = self.workspace.array(name, (x.shape[0],) + shape, x.dtype, zeros=True)
            pad_into(x, *self._saved[3], xp)
            self._saved = self._saved[:1] + (xp,) + self._saved[2:]
            self._unpadded = None
        return self._saved[1]

    def _dz_arrays(self, kernel, dbias, need_dx):
        """The work arrays of the dz pass after the last (fast, not upsampled) forward pass: dz
        (n, oh, ow, cout); dzp (n, h + kh - 1, w + kw - 1, cout), zero outside the spread-out dz, or
        with no samples when not ``need_dx``; the chunk sums (n_chunks(n), cout); and db, which is
        ``dbias`` or, without a bias, a work array."""
        _, _, x_shape, _, _, y = self._saved
        ws = self.workspace
        n, h, w = x_shape[:3]
        kh, kw, _, cout = kernel.shape
        dz = ws.array("dz", y.shape, y.dtype)
        dzp = ws.array("dzp", (n if need_dx else 0, h + kh - 1, w + kw - 1, cout), y.dtype, zeros=True)
        db = dbias if dbias is not None else ws.array("db_unused", (cout,), y.dtype)
        return dz, dzp, ws.array("db_chunks", (n_chunks(n), cout), y.dtype), db

    def _backward_from_dz(self, dz, dzp, kernel, dkernel, need_dx):
        """The kernel gradient from dz (n, oh, ow, cout) into dkernel, then dx (a work array) from
        dzp (dz spread into the input gradient's halo), or None when not ``need_dx``."""
        xp, x_shape, y = self._padded_input(), self._saved[2], self._saved[5]
        ws = self.workspace
        n = x_shape[0]
        sh, sw = self.strides
        kh, kw, cin, cout = kernel.shape
        conv2d_backward_kernel_chunks(xp, dz, sh, sw, ws.array("dw_chunks", (n_chunks(n), kh, kw, cin, cout),
                                                               y.dtype), dkernel)
        if not need_dx:
            return None
        dx = ws.array("dx", x_shape, y.dtype)
        conv2d_backward_input_padded(dzp, kernel, ws.array("kernel_t", (kh, kw, cout, cin), kernel.dtype),
                                     ws.array("zero_bias_t", (cin,), kernel.dtype, zeros=True), dx)
        return dx

    def _backward_upsampled(self, dy, kernel, dkernel, dbias, activation, from_logits, need_dx):
        """backward() after forward_upsampled: dq (dz in the phase convolution's layout), then that
        convolution's kernel gradient (mapped back to the 3x3 kernel) and input gradient, which is
        the small input's; see autoenc.kernels.upsample_conv."""
        reference, x, x_shape = self._upsampled
        if reference:   # the definition: the big input's gradient, summed over each 2x2 block
            dx = self._backward_reference(dy, kernel, dkernel, dbias, activation, from_logits, need_dx)
            return None if dx is None else upsample2d_backward_naive(dx, (2, 2)).astype(dx.dtype)
        _, _, _, _, z, y = self._saved
        xp = self._padded_input() if self.padding == "same" else None
        ws = self.workspace
        dy = np.ascontiguousarray(dy, dtype=y.dtype)
        relu = fuses_relu(activation) and not from_logits
        dy = activation_backward(activation, dy, y, z, ws, from_logits)
        n, h, w, cin = x_shape
        cout = kernel.shape[3]
        _, (base, step) = phase_offsets(self.padding)
        if self.padding == "valid":   # the weight gradient reads x in the 1-pixel halo of dq's layout
            xp = ws.array("xp_small", (n, h + 2, w + 2, cin), y.dtype, zeros=True)
            pad_into(x, 1, 1, xp)
        dq = ws.array(f"dq {self.padding}", (n, h + 1, w + 1, 4 * cout), y.dtype, zeros=True)
        db = dbias if dbias is not None else ws.array("db_unused", (cout,), y.dtype)
        phase_gather(dy, y, relu, base, step, dq, ws.array("db_chunks", (n_chunks(n), cout), y.dtype), db)
        dwq = ws.array("dwq", (2, 2, cin, 4 * cout), y.dtype)
        conv2d_backward_kernel_chunks(xp, dq, 1, 1, ws.array("dwq_chunks", (n_chunks(n), 2, 2, cin, 4 * cout),
                                                             y.dtype), dwq)
        phase_kernel_grad(dwq, self.padding, dkernel, ws)
        if not need_dx:
            return None
        dx = ws.array("dx", x_shape, y.dtype)
        conv2d_backward_input_padded(dq, ws.array("wq", (2, 2, cin, 4 * cout), kernel.dtype),
                                     ws.array("wq_t", (2, 2, 4 * cout, cin), kernel.dtype),
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
        self._unpadded = self._upsampled = None
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
