"""Conv1D and Conv1DTranspose over (batch, steps, channels): the 2-D layers' kernels with height 1.

A 1-D sequence x (n, steps, cin) is the image x.reshape(n, 1, steps, cin), a view (no copy); a
kernel (k, cin, filters) is the 2-D kernel (1, k, cin, filters), also a view; strides s become
(1, s). The 2-D kernels then compute exactly the 1-D convolution

    y[n, t, f] = b[f] + sum_{j, ch} xp[n, t*s + j, ch] * w[j, ch, f]

and its gradients, fast or (``autoenc.set_reference_kernels(True)``) through the naive versions.
Conv1D's padding='causal' pads k - 1 steps on the left only (padding.conv_padding), so output t
sees inputs up to t. See docs/conv1d.md.
"""
import numpy as np

from autoenc.kernels.convolution import Conv2DKernels
from autoenc.kernels.conv_transpose import Conv2DTransposeKernels
from autoenc.kernels.padding import conv_output_size
from autoenc.layers.base import Layer, format_shape
from autoenc.layers.convolution_transpose import normalize_output_padding
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


def as_image(x):
    """A sequence (n, steps, c) as an image of height 1: (n, 1, steps, c), a view if x is contiguous."""
    n, steps, c = x.shape
    return x.reshape(n, 1, steps, c)


def as_image_kernel(w):
    """A 1-D kernel (k, a, b) as a 2-D one of height 1: (1, k, a, b), a view (w is contiguous)."""
    return w.reshape((1,) + w.shape)


def check_filters(filters, layer):
    if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
        raise ValueError(f"{layer} filters must be a positive int, got {filters!r}")
    return int(filters)


class _Conv1DBase(Layer):
    """What Conv1D and Conv1DTranspose share: shape checks, the (1, k) views, forward and backward
    through the 2-D kernel object ``self._kernels``."""

    can_skip_dx = True

    def check_input_shape(self, shape):
        kind = type(self).__name__
        if not isinstance(shape, tuple) or len(shape) != 3:
            raise ValueError(f"{kind} {self.name!r} expects input (batch, steps, channels), "
                             f"got {format_shape(shape) if isinstance(shape, tuple) else shape}")
        if self.built and shape[2] != self.input_shape[2]:
            raise ValueError(f"{kind} {self.name!r} expects input (batch, steps, {self.input_shape[2]}), "
                             f"got {format_shape(shape)}")

    def forward(self, x, training=False):
        """x: (batch, steps, cin) -> y: (batch, out_steps, filters), through the 2-D kernels on the
        views (batch, 1, steps, cin). Keeps the pre-activation as ``_z`` (y where relu is fused)."""
        n, steps, _ = x.shape
        bias = self.params["bias"] if self.use_bias else None
        z, y = self._kernels.forward(as_image(np.ascontiguousarray(x)), as_image_kernel(self.params["kernel"]),
                                     bias, self.activation, keep=training)
        self._z, self._y = z.reshape(n, z.shape[2], z.shape[3]), y.reshape(n, y.shape[2], y.shape[3])
        return self._y

    def backward(self, dy, from_logits=False, need_dx=True):
        """dy: (batch, out_steps, filters), dL/dy (dL/dz when ``from_logits``). Fills grads["kernel"]
        (through its (1, k, ...) view) and grads["bias"]; returns dx (batch, steps, cin), or None
        when ``need_dx`` is False."""
        dkernel = as_image_kernel(self.grads["kernel"])   # a view: the kernels fill grads["kernel"] in place
        dx = self._kernels.backward(as_image(np.asarray(dy)), as_image_kernel(self.params["kernel"]), dkernel,
                                    self.grads.get("bias"), self.activation, from_logits, need_dx)
        return None if dx is None else dx.reshape(dx.shape[0], dx.shape[2], dx.shape[3])

    @property
    def logits(self):
        # relu is fused into the convolution: z then holds relu(z), not the pre-activation
        return None if (self.activation.name == "relu" and not self.activation.uses_z) else getattr(self, "_z", None)


class Conv1D(_Conv1DBase):
    """y = activation(conv1d(x, kernel) + bias), as keras.layers.Conv1D: a Conv2D with height 1.

    Input (batch, steps, cin); kernel (k, cin, filters); bias (filters,); output (batch,
    out_steps, filters), out_steps = (steps - k) // s + 1 ('valid') or ceil(steps / s) ('same',
    'causal'). The arithmetic is :class:`autoenc.kernels.Conv2DKernels` with strides (1, s).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = check_filters(filters, "Conv1D")
        self.kernel_size = normalize_tuple(kernel_size, 1, "kernel_size")
        self.strides = normalize_tuple(strides, 1, "strides")
        causal = isinstance(padding, str) and padding.lower() == "causal"
        self.padding = "causal" if causal else normalize_padding(padding)
        check_data_format(data_format, "Conv1D")
        if normalize_tuple(dilation_rate, 1, "dilation_rate") != (1,):
            raise ValueError(f"Conv1D supports dilation_rate=1 only, got {dilation_rate!r}")
        if groups != 1:
            raise ValueError(f"Conv1D supports groups=1 only, got {groups!r}")
        self._set_kernel_bias_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                      bias_regularizer, kernel_constraint, bias_constraint)
        self._kernels = Conv2DKernels((1,) + self.strides, self.padding)

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        if self.padding == "valid" and shape[1] < self.kernel_size[0]:
            raise ValueError(f"Conv1D {self.name!r}: kernel_size {self.kernel_size} is larger than the input "
                             f"{format_shape(shape)} with padding='valid'")

    def build(self, input_shape):
        self.add_weight("kernel", (self.kernel_size[0], input_shape[-1], self.filters), self.kernel_initializer,
                        self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        n, steps, _ = input_shape
        return n, conv_output_size(steps, self.kernel_size[0], self.strides[0], self.padding), self.filters

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "data_format": "channels_last",
                "dilation_rate": (1,), "groups": 1, **self._kernel_bias_config()}


class Conv1DTranspose(_Conv1DBase):
    """y = activation(conv1d_transpose(x, kernel) + bias), as keras.layers.Conv1DTranspose: a
    Conv2DTranspose with height 1, the adjoint of a Conv1D.

    Input (batch, steps, cin); kernel (k, filters, cin), Keras' layout; bias (filters,); output
    (batch, out_steps, filters) with Keras' rule (``steps * s`` for 'same' without output_padding;
    autoenc.kernels.padding.conv_transpose_output_size).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = check_filters(filters, "Conv1DTranspose")
        self.kernel_size = normalize_tuple(kernel_size, 1, "kernel_size")
        self.strides = normalize_tuple(strides, 1, "strides")
        self.padding = normalize_padding(padding)
        self.output_padding = normalize_output_padding(output_padding, 1, self.strides, "Conv1DTranspose")
        check_data_format(data_format, "Conv1DTranspose")
        if normalize_tuple(dilation_rate, 1, "dilation_rate") != (1,):
            raise ValueError(f"Conv1DTranspose supports dilation_rate=1 only, got {dilation_rate!r}")
        self._set_kernel_bias_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                      bias_regularizer, kernel_constraint, bias_constraint)
        op = None if self.output_padding is None else (0,) + self.output_padding
        self._kernels = Conv2DTransposeKernels((1,) + self.strides, self.padding, op)

    def _out_steps(self, steps):
        return self._kernels.output_size(1, steps, (1,) + self.kernel_size)[1]

    def check_input_shape(self, shape):
        super().check_input_shape(shape)
        try:
            self._out_steps(shape[1])
        except ValueError as e:
            raise ValueError(f"Conv1DTranspose {self.name!r} on input {format_shape(shape)}: {e}") from None

    def build(self, input_shape):
        self.add_weight("kernel", (self.kernel_size[0], self.filters, input_shape[-1]), self.kernel_initializer,
                        self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        n, steps, _ = input_shape
        return n, self._out_steps(steps), self.filters

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "output_padding": self.output_padding,
                "data_format": "channels_last", "dilation_rate": (1,), **self._kernel_bias_config()}
