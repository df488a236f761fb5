"""Conv2DTranspose: the transposed convolution (the adjoint of Conv2D) over NHWC inputs, with bias
and activation."""
import numpy as np

from autoenc.kernels.conv_transpose import Conv2DTransposeKernels
from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


def normalize_output_padding(value, n, strides, layer):
    """None, or a tuple of n ints 0 <= output_padding < strides (Keras' rule), or raise ValueError."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{layer} output_padding must be None, an int or a tuple of {n} ints, got {value!r}") from None
    if len(value) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                  for v in value):
        raise ValueError(f"{layer} output_padding must be None, an int >= 0 or a tuple of {n} ints >= 0, "
                         f"got {value!r}")
    for axis, (op, s) in enumerate(zip(value, strides)):
        if op >= s:
            raise ValueError(f"{layer} output_padding must be strictly less than strides on every axis; at axis "
                             f"{axis} output_padding is {op} and strides is {s} (received output_padding={value!r}, "
                             f"strides={strides!r})")
    return tuple(int(v) for v in value)


class Conv2DTranspose(Layer):
    """y = activation(conv_transpose(x, kernel) + bias), as keras.layers.Conv2DTranspose.

    Input (batch, h, w, cin); kernel (kh, kw, filters, cin), Keras' layout; bias (filters,);
    output (batch, oh, ow, filters), with oh, ow by Keras' rule
    (``autoenc.kernels.padding.conv_transpose_output_size``: ``h * strides`` for 'same' without
    output_padding). The layer is the adjoint of a Conv2D with the same kernel, strides and
    padding mapping (oh, ow, filters) to (h, w, cin): its forward pass is that Conv2D's input
    gradient, its input gradient that Conv2D's forward pass, its kernel gradient that Conv2D's
    kernel gradient with x and dy swapped (:class:`autoenc.kernels.conv_transpose.
    Conv2DTransposeKernels`, fast or, with ``autoenc.set_reference_kernels(True)``, naive). See
    docs/conv2d_transpose.md.
    """

    can_skip_dx = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        kind = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{kind} filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        self.output_padding = normalize_output_padding(output_padding, 2, self.strides, kind)
        check_data_format(data_format, kind)
        if normalize_tuple(dilation_rate, 2, "dilation_rate") != (1, 1):
            raise ValueError(f"{kind} supports dilation_rate=(1, 1) only, got {dilation_rate!r}")
        self._set_kernel_bias_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                      bias_regularizer, kernel_constraint, bias_constraint)
        self._kernels = Conv2DTransposeKernels(self.strides, self.padding, self.output_padding)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"Conv2DTranspose {self.name!r} expects input (batch, height, width, channels), "
                             f"got {format_shape(shape) if isinstance(shape, tuple) else shape}")
        if self.built and shape[3] != self.input_shape[3]:
            raise ValueError(f"Conv2DTranspose {self.name!r} expects input (batch, height, width, "
                             f"{self.input_shape[3]}), got {format_shape(shape)}")
        try:
            self._kernels.output_size(shape[1], shape[2], self.kernel_size)
        except ValueError as e:
            raise ValueError(f"Conv2DTranspose {self.name!r} on input {format_shape(shape)}: {e}") from None

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.add_weight("kernel", (kh, kw, self.filters, input_shape[-1]), self.kernel_initializer,
                        self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n,) + self._kernels.output_size(h, w, self.kernel_size) + (self.filters,)

    def forward(self, x, training=False):
        """x: (batch, h, w, cin) -> y = activation(conv_transpose(x, kernel) + bias): (batch, oh, ow,
        filters). Keeps z, the pre-activation (y itself where relu or linear is fused), as ``_z``."""
        bias = self.params["bias"] if self.use_bias else None
        self._z, self._y = self._kernels.forward(x, self.params["kernel"], bias, self.activation)
        return self._y

    def backward(self, dy, from_logits=False, need_dx=True):
        """dy: (batch, oh, ow, filters), dL/dy (dL/dz when ``from_logits``). dz = dy * activation'(z);
        grads["kernel"] = Conv2D's kernel gradient of (dz, x); grads["bias"] = sum dz; returns dx
        (batch, h, w, cin) = Conv2D(dz), or None when ``need_dx`` is False."""
        kernel, dkernel, dbias = self.params["kernel"], self.grads["kernel"], self.grads.get("bias")
        return self._kernels.backward(dy, kernel, dkernel, dbias, self.activation, from_logits, need_dx)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "output_padding": self.output_padding,
                "data_format": "channels_last", "dilation_rate": (1, 1), **self._kernel_bias_config()}

    @property
    def logits(self):
        # relu is fused into the convolution: z then holds relu(z), not the pre-activation
        return None if (self.activation.name == "relu" and not self.activation.uses_z) else getattr(self, "_z", None)
