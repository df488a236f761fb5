"""AveragePooling2D over NHWC inputs."""
from autoenc.kernels import avgpool as K
from autoenc.kernels.convolution import conv_padding
from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


class AveragePooling2D(Layer):
    """y[n, r, q, c] = mean of x over the part inside x of the window at (r*sh - pt, q*sw - pl) of size
    pool_size (with padding='same' the padded positions are not counted, as in Keras/TensorFlow).

    Input (batch, h, w, c); output (batch, oh, ow, c). strides default to pool_size, as in Keras.
    Formulas: autoenc/kernels/avgpool.py.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size")
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, 2, "strides")
        self.padding = normalize_padding(padding)
        check_data_format(data_format, "AveragePooling2D")

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"AveragePooling2D {self.name!r} expects input (batch, height, width, channels), "
                             f"got {shape}")
        if self.padding == "valid" and (shape[1] < self.pool_size[0] or shape[2] < self.pool_size[1]):
            raise ValueError(f"AveragePooling2D {self.name!r}: pool_size {self.pool_size} is larger than the input "
                             f"{format_shape(shape)} with padding='valid'")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return n, conv_padding(h, ph, sh, self.padding)[2], conv_padding(w, pw, sw, self.padding)[2], c

    def _pads(self, h, w):
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return conv_padding(h, ph, sh, self.padding)[0], conv_padding(w, pw, sw, self.padding)[0]

    def forward(self, x, training=False):
        """y (n, oh, ow, c) for x (n, h, w, c)."""
        n, h, w, c = x.shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pt, pl = self._pads(h, w)
        y = self._buffer("y", self.compute_output_shape(x.shape))
        K.avgpool2d_forward(x, ph, pw, sh, sw, pt, pl, y)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        """dx (n, h, w, c): each output's dy (n, oh, ow, c) shared evenly by the inputs it averaged."""
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        pt, pl = self._pads(self._x_shape[1], self._x_shape[2])
        dx = self._buffer("dx", self._x_shape)
        K.avgpool2d_backward(dy, ph, pw, sh, sw, pt, pl, dx)
        return dx

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
