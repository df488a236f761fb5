"""MaxPooling1D and UpSampling1D over (batch, steps, channels): the 2-D kernels with height 1.

A sequence x (n, steps, c) is the image x.reshape(n, 1, steps, c) (a view); a pool or size p
along the steps is (1, p) in 2-D. See docs/conv1d.md.
"""
from autoenc.kernels.padding import conv_output_size
from autoenc.kernels.pooling import MaxPool2DKernels
from autoenc.kernels.upsampling import UpSample2DKernels
from autoenc.layers.base import Layer, format_shape
from autoenc.layers.conv1d import as_image
from autoenc.utils import check_data_format, normalize_padding, normalize_tuple


def _check_sequence(layer, shape):
    if not isinstance(shape, tuple) or len(shape) != 3:
        raise ValueError(f"{type(layer).__name__} {layer.name!r} expects input (batch, steps, channels), "
                         f"got {format_shape(shape) if isinstance(shape, tuple) else shape}")


def _as_sequence(a):
    """(n, 1, steps, c) -> (n, steps, c), a view."""
    n, _, steps, c = a.shape
    return a.reshape(n, steps, c)


class MaxPooling1D(Layer):
    """y[n, t, c] = max of x[n, t*s - pl : t*s - pl + p, c] (positions outside x never win), as
    keras.layers.MaxPooling1D. Input (batch, steps, c); output (batch, out_steps, c); strides
    default to pool_size. MaxPooling2D's kernels with pool (1, p) and strides (1, s)."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = normalize_tuple(pool_size, 1, "pool_size")
        self.strides = self.pool_size if strides is None else normalize_tuple(strides, 1, "strides")
        self.padding = normalize_padding(padding)
        check_data_format(data_format, "MaxPooling1D")
        self._kernels = MaxPool2DKernels((1,) + self.pool_size, (1,) + self.strides, self.padding)

    def check_input_shape(self, shape):
        _check_sequence(self, shape)
        if self.padding == "valid" and shape[1] < self.pool_size[0]:
            raise ValueError(f"MaxPooling1D {self.name!r}: pool_size {self.pool_size} is larger than the input "
                             f"{format_shape(shape)} with padding='valid'")

    def compute_output_shape(self, input_shape):
        n, steps, c = input_shape
        return n, conv_output_size(steps, self.pool_size[0], self.strides[0], self.padding), c

    def forward(self, x, training=False):
        """x: (batch, steps, c) -> y: (batch, out_steps, c), each window's maximum. Keeps ``_argmax``
        (batch, out_steps, c), the step of each window's winner."""
        y = _as_sequence(self._kernels.forward(as_image(x)))
        self._argmax = _as_sequence(self._kernels.argmax)
        return y

    def backward(self, dy):
        """dy: (batch, out_steps, c) -> dx: (batch, steps, c), dy at each window's first maximum."""
        return _as_sequence(self._kernels.backward(as_image(dy)))

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding, "data_format": "channels_last"}


class UpSampling1D(Layer):
    """y[n, t, c] = x[n, t // size, c], as keras.layers.UpSampling1D. Input (batch, steps, c);
    output (batch, steps * size, c). UpSampling2D's kernels with size (1, size)."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = normalize_tuple(size, 1, "size")[0]
        self._kernels = UpSample2DKernels((1, self.size))

    def check_input_shape(self, shape):
        _check_sequence(self, shape)

    def compute_output_shape(self, input_shape):
        n, steps, c = input_shape
        return n, steps * self.size, c

    def forward(self, x, training=False):
        """x: (batch, steps, c) -> y: (batch, steps * size, c), every step repeated size times."""
        return _as_sequence(self._kernels.forward(as_image(x)))

    def backward(self, dy):
        """dy: (batch, steps * size, c) -> dx[n, t, c] = sum of dy over the size copies of step t."""
        return _as_sequence(self._kernels.backward(as_image(dy)))

    def get_config(self):
        return {**super().get_config(), "size": self.size}
