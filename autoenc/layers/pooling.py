"""MaxPooling2D over NHWC inputs."""
from autoenc.kernels.padding import conv_output_size
from autoenc.kernels.pooling import MaxPool2DKernels
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
        self._kernels = MaxPool2DKernels(self.pool_size, self.strides, self.padding)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) != 4:
            raise ValueError(f"MaxPooling2D {self.name!r} expects input (batch, height, width, channels), got {shape}")
        if self.padding == "valid" and (shape[1] < self.pool_size[0] or shape[2] < self.pool_size[1]):
            raise ValueError(f"MaxPooling2D {self.name!r}: pool_size {self.pool_size} is larger than the input "
                             f"{format_shape(shape)} with padding='valid'")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return n, conv_output_size(h, ph, sh, self.padding), conv_output_size(w, pw, sw, self.padding), c

    def forward(self, x, training=False):
        """x: (batch, h, w, c) -> y: (batch, oh, ow, c), each window's maximum. Keeps ``_argmax``, the
        flat index r*w + q of each window's winner in x."""
        y = self._kernels.forward(x)
        self._argmax = self._kernels.argmax
        return y

    def backward(self, dy):
        """dy: (batch, oh, ow, c) -> dx: (batch, h, w, c), dy at the first maximum of each window,
        zero elsewhere (summed where windows overlap)."""
        return self._kernels.backward(dy)

    @property
    def pooling_kernels(self):
        """The :class:`autoenc.kernels.MaxPool2DKernels` this layer runs, holding its last forward pass
        (argmax, output): what Conv2D.backward_maxpooled reads to run this layer's backward inside its own."""
        return self._kernels

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}
