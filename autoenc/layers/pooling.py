"""MaxPooling2D over NHWC inputs."""
import numpy as np

from autoenc.kernels import pooling as K
from autoenc.kernels.convolution import conv_padding
from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


class MaxPooling2D(Layer):
    """y[n, r, q, c] = max of x over the window at (r*sh - pt, q*sw - pl) of size pool_size.

    Input (batch, h, w, c); output (batch, oh, ow, c). strides default to pool_size, as in Keras.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        check_data_format(data_format, "MaxPooling2D")

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"MaxPooling2D {self.name!r} expects input (batch, height, width, channels), got {shape}")
        if self.padding == "valid" and (shape[1] < self.pool_size[0] or shape[2] < self.pool_size[1]):
            raise ValueError(f"MaxPooling2D {self.name!r}: pool_size {self.pool_size} is larger than the input "
                             f"{format_shape(shape)} with padding='valid'")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return n, conv_padding(h, ph, sh, self.padding)[2], conv_padding(w, pw, sw, self.padding)[2], c

    def forward(self, x, training=False):
        n, h, w, c = x.shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pt, _, oh = conv_padding(h, ph, sh, self.padding)
        pl, _, ow = conv_padding(w, pw, sw, self.padding)
        y = self._buffer("y", (n, oh, ow, c))
        argmax = self._buffer("argmax", y.shape, dtype=np.int32)
        K.maxpool2d_forward(x, ph, pw, sh, sw, pt, pl, y, argmax)
        self._argmax, self._x_shape = argmax, x.shape
        return y

    def backward(self, dy):
        """dx gets dy at the first maximum of each window, zero elsewhere (summed where windows overlap)."""
        dx = self._buffer("dx", self._x_shape)
        K.maxpool2d_backward(np.ascontiguousarray(dy), self._argmax, dx)  # it walks flat views of dy
        return dx

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
