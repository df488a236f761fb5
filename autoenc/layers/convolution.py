"""Conv2D: a 2-D convolution over NHWC inputs, with bias and activation."""
import numpy as np

from autoenc.kernels import convolution as K
from autoenc.kernels import elementwise as E
from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


class Conv2D(Layer):
    """y = activation(conv(x, kernel) + bias), as keras.layers.Conv2D.

    Input (batch, h, w, cin); kernel (kh, kw, cin, filters); bias (filters,);
    output (batch, oh, ow, filters) with oh, ow from ``autoenc.kernels.conv_padding``.
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
        return (n, K.conv_output_size(h, kh, sh, self.padding), K.conv_output_size(w, kw, sw, self.padding),
                self.filters)

    def forward(self, x, training=False):
        n, h, w, cin = x.shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        pt, pb, oh = K.conv_padding(h, kh, sh, self.padding)
        pl, pr, ow = K.conv_padding(w, kw, sw, self.padding)
        if pt or pb or pl or pr:
            xp = self._buffer("xp", (n, h + pt + pb, w + pl + pr, cin), zeros=True)
            K.pad_into(x, pt, pl, xp)
        else:
            xp = x
        bias = self.params["bias"] if self.use_bias else self._buffer("zero_bias", (self.filters,), zeros=True)
        fused = self.activation.name in ("relu", "linear")
        z = self._buffer("z", (n, oh, ow, self.filters))
        K.conv2d_forward(xp, self.params["kernel"], bias, sh, sw,
                         K.ACT_RELU if self.activation.name == "relu" else K.ACT_LINEAR, z)
        if fused:
            y = z
        else:
            y = self._buffer("y", z.shape)
            if self.activation.name == "sigmoid":
                E.sigmoid_forward(z, y)
            else:
                self.activation.forward(z, y)
        self._xp, self._x_shape, self._pads, self._z, self._y = xp, x.shape, (pt, pl), z, y
        return y

    def backward(self, dy, from_logits=False, need_dx=True):
        """dz = dy * activation'(z) (or dy itself when ``from_logits``, the loss having given dL/dz);
        then kernel, bias and input gradients (formulas in autoenc.kernels.convolution). Returns dx,
        or None when ``need_dx`` is False (a first layer: nothing upstream needs it)."""
        dy = np.ascontiguousarray(dy, dtype=self._y.dtype)  # the kernels walk flat views
        relu = self.activation.name == "relu" and not from_logits
        if not (relu or from_logits or self.activation.name == "linear"):
            act = self._buffer("dact", dy.shape)
            if self.activation.name == "sigmoid":
                E.sigmoid_backward(dy, self._y, act)
            else:
                self.activation.backward(dy, self._y, act, z=self._z)
            dy = act
        sh, sw = self.strides
        n = dy.shape[0]
        kh, kw, cin, cout = self.params["kernel"].shape
        h, w = self._x_shape[1], self._x_shape[2]
        # one pass: dz (relu mask), the bias gradient, and dz spread into the halo of the
        # input-gradient convolution (dzp; see conv2d_backward_input)
        dz = self._buffer("dz", dy.shape)
        dzp = self._buffer("dzp", (n if need_dx else 0, h + kh - 1, w + kw - 1, cout), zeros=True)
        db = self.grads["bias"] if self.use_bias else self._buffer("db_unused", (cout,))
        K.conv2d_backward_dz(dy, self._y, relu, sh, sw, kh - 1 - self._pads[0], kw - 1 - self._pads[1], dz, dzp,
                             self._buffer("db_chunks", (K.n_chunks(n), cout)), db)
        part = self._buffer("dw_chunks", (K.n_chunks(n), kh, kw, cin, cout))
        K.conv2d_backward_kernel_chunks(self._xp, dz, sh, sw, part, self.grads["kernel"])
        if not need_dx:
            return None
        dx = self._buffer("dx", self._x_shape)
        K.conv2d_backward_input_padded(dzp, self.params["kernel"], self._buffer("kernel_t", (kh, kw, cout, cin)),
                                       self._buffer("zero_bias_t", (cin,), zeros=True), dx)
        return dx

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, **self._kernel_bias_config()}

    @property
    def logits(self):
        # relu is fused into the convolution: z then holds relu(z), not the pre-activation
        return None if self.activation.name == "relu" else getattr(self, "_z", None)
