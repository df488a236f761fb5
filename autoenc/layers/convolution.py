"""Conv2D: a 2-D convolution over NHWC inputs, with bias and activation."""
import numpy as np

from autoenc.kernels.convolution import Conv2DKernels
from autoenc.kernels.elementwise import fuses_relu
from autoenc.kernels.padding import conv_output_size
from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


class Conv2D(Layer):
    """y = activation(conv(x, kernel) + bias), as keras.layers.Conv2D.

    Input (batch, h, w, cin); kernel (kh, kw, cin, filters); bias (filters,);
    output (batch, oh, ow, filters) with oh, ow from ``autoenc.kernels.conv_padding``.
    The arithmetic is in :class:`autoenc.kernels.Conv2DKernels`, fast or, with
    ``autoenc.set_reference_kernels(True)``, through the slow, obvious ``*_naive`` kernels.
    """

    can_skip_dx = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(filters, bool) or not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"Conv2D filters must be a positive int, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size")
        self.strides = normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        check_data_format(data_format, "Conv2D")
        if normalize_tuple(dilation_rate, 2, "dilation_rate") != (1, 1):
            raise ValueError(f"Conv2D supports dilation_rate=(1, 1) only, got {dilation_rate!r}")
        if groups != 1:
            raise ValueError(f"Conv2D supports groups=1 only, got {groups!r}")
        self._set_kernel_bias_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                      bias_regularizer, kernel_constraint, bias_constraint)
        self._kernels = Conv2DKernels(self.strides, self.padding)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"Conv2D {self.name!r} expects input (batch, height, width, channels), "
                             f"got {format_shape(shape) if isinstance(shape, tuple) else shape}")
        if self.built and shape[3] != self.input_shape[3]:
            raise ValueError(f"Conv2D {self.name!r} expects input (batch, height, width, {self.input_shape[3]}), "
                             f"got {format_shape(shape)}")
        for axis, (size, k) in enumerate(zip(shape[1:3], self.kernel_size)):
            if self.padding == "valid" and size < k:
                raise ValueError(f"Conv2D {self.name!r}: kernel_size {self.kernel_size} is larger than the "
                                 f"input {format_shape(shape)} with padding='valid'")

    def build(self, input_shape):
        cin = input_shape[-1]
        kh, kw = self.kernel_size
        self.add_weight("kernel", (kh, kw, cin, self.filters), self.kernel_initializer, self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (n, conv_output_size(h, kh, sh, self.padding), conv_output_size(w, kw, sw, self.padding),
                self.filters)

    def forward(self, x, training=False):
        """x: (batch, h, w, cin) -> y = activation(conv(x, kernel) + bias): (batch, oh, ow, filters).
        Keeps z, the pre-activation (y itself where the activation is fused: relu, linear), as ``_z``."""
        bias = self.params["bias"] if self.use_bias else None
        self._z, self._y = self._kernels.forward(x, self.params["kernel"], bias, self.activation, keep=training)
        return self._y

    @property
    def fuses_upsampling(self):
        """Whether :meth:`forward_upsampled` applies: a 3x3 kernel, strides (1, 1), 'same' or 'valid'."""
        return self.kernel_size == (3, 3) and self.strides == (1, 1) and self.padding in ("same", "valid")

    def forward_upsampled(self, x, training=False):
        """x: (batch, h, w, cin), the input of a nearest UpSampling2D((2, 2)) whose output this layer
        reads -> forward(upsample(x)), (batch, 2h, 2w, filters) ('same') or (batch, 2h-2, 2w-2, filters)
        ('valid'), computed on the small x as four 2x2 convolutions (autoenc.kernels.upsample_conv),
        without the upsampled tensor. The next ``backward`` returns the gradient of the small x.
        A model runs an UpSampling2D and this layer so (see Model.forward); needs fuses_upsampling."""
        bias = self.params["bias"] if self.use_bias else None
        self._z, self._y = self._kernels.forward_upsampled(x, self.params["kernel"], bias, self.activation,
                                                           keep=training)
        return self._y

    def backward(self, dy, from_logits=False, need_dx=True):
        """dy: (batch, oh, ow, filters), dL/dy (dL/dz when ``from_logits``: the loss differentiated
        through the activation). dz = dy * activation'(z); grads["kernel"] = sum x-patches * dz,
        grads["bias"] = sum dz; returns dx (batch, h, w, cin), or None when ``need_dx`` is False
        (a first layer: nothing upstream needs it); after forward_upsampled, dx is the gradient of its
        small input. Formulas in autoenc.kernels.convolution."""
        kernel, dkernel, dbias = self.params["kernel"], self.grads["kernel"], self.grads.get("bias")
        return self._kernels.backward(dy, kernel, dkernel, dbias, self.activation, from_logits, need_dx)

    @property
    def fuses_maxpooling(self):
        """Whether a MaxPooling2D reading this layer's output can run its backward pass inside this
        layer's (backward_maxpooled): a plain relu, which the forward kernel fuses."""
        return fuses_relu(self.activation)

    def backward_maxpooled(self, dy, pool, need_dx=True):
        """dy: (batch, ph, pw, filters), dL/d(output of the MaxPooling2D ``pool``) where ``pool`` read
        this layer's output in the last forward pass -> backward(pool.backward(dy), need_dx=need_dx),
        the same grads and dx bit for bit, in one pass that writes dz straight from the pooled
        gradient (autoenc.kernels.pooling.maxpool2d_backward_relu_dz). A model runs such a pair so
        (see Model.backward); needs fuses_maxpooling and the fast kernels in both forward passes."""
        if not self.fuses_maxpooling:
            raise ValueError(f"Conv2D {self.name!r}: backward_maxpooled needs activation='relu', got "
                             f"{self.activation.name!r}")
        kernel, dkernel, dbias = self.params["kernel"], self.grads["kernel"], self.grads.get("bias")
        return self._kernels.backward_maxpooled(dy, pool.pooling_kernels, kernel, dkernel, dbias, need_dx)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, **self._kernel_bias_config()}

    @property
    def logits(self):
        # relu is fused into the convolution: z then holds relu(z), not the pre-activation
        return None if (self.activation.name == "relu" and not self.activation.uses_z) else getattr(self, "_z", None)
