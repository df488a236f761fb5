"""ZeroPadding2D and Cropping2D: add or remove rows and columns at the borders of NHWC inputs.

Each is the other's adjoint: the gradient of padding is the cropped dy, the gradient of cropping is
dy inside a zero border. Plain NumPy slicing, no kernel.
"""
import numpy as np

from autoenc.layers.base import Layer, format_shape
from autoenc.utils import check_data_format


def normalize_borders(value, name):
    """An int p, a pair (sym_h, sym_w), or ((top, bottom), (left, right)) of non-negative ints, as
    ((top, bottom), (left, right)), as Keras reads ZeroPadding2D's padding and Cropping2D's cropping."""
    def pair(v, what):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            v = (v, v)
        try:
            v = tuple(v)
        except TypeError:
            raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}") from None
        if len(v) != 2 or not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) and e >= 0 for e in v):
            raise ValueError(f"{what} must be a non-negative int or a pair of non-negative ints, got {v!r}")
        return int(v[0]), int(v[1])

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} cannot be negative, got {name}={value!r}")
        return (int(value),) * 2, (int(value),) * 2
    if not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} should be an int, a tuple of 2 ints (symmetric_height, symmetric_width), or a "
                         f"tuple of 2 tuples of 2 ints ((top, bottom), (left, right)); got {name}={value!r}")
    return pair(value[0], f"the 1st entry of {name}"), pair(value[1], f"the 2nd entry of {name}")


def _check_4d(layer, shape):
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(f"{type(layer).__name__} {layer.name!r} expects input (batch, height, width, channels), "
                         f"got {shape}")


class ZeroPadding2D(Layer):
    """y = x inside a border of zeros: y[n, top + r, left + q, c] = x[n, r, q, c].

    Input (batch, h, w, c); output (batch, top + h + bottom, left + w + right, c).
    padding: int, (symmetric_height, symmetric_width) or ((top, bottom), (left, right)).
    """

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = normalize_borders(padding, "padding")
        check_data_format(data_format, "ZeroPadding2D")

    def check_input_shape(self, shape):
        _check_4d(self, shape)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (t, b), (l, r) = self.padding
        return n, h + t + b, w + l + r, c

    def forward(self, x, training=False):
        """y (n, t + h + b, l + w + r, c) for x (n, h, w, c)."""
        n, h, w, c = x.shape
        (t, _), (l, _) = self.padding
        y = self._buffer("y", self.compute_output_shape(x.shape), zeros=True)  # the border stays zero
        y[:, t:t + h, l:l + w] = x
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        """dx[n, r, q, c] = dy[n, top + r, left + q, c]: dy (n, oh, ow, c) cropped to (n, h, w, c)."""
        _, h, w, _ = self._x_shape
        (t, _), (l, _) = self.padding
        dx = self._buffer("dx", self._x_shape)
        dx[...] = dy[:, t:t + h, l:l + w]
        return dx

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


class Cropping2D(Layer):
    """y[n, r, q, c] = x[n, top + r, left + q, c]: x without its borders.

    Input (batch, h, w, c); output (batch, h - top - bottom, w - left - right, c).
    cropping: int, (symmetric_height, symmetric_width) or ((top, bottom), (left, right)).
    """

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = normalize_borders(cropping, "cropping")
        check_data_format(data_format, "Cropping2D")

    def check_input_shape(self, shape):
        _check_4d(self, shape)
        (t, b), (l, r) = self.cropping
        if t + b >= shape[1] or l + r >= shape[2]:
            raise ValueError(f"Cropping2D {self.name!r}: cropping {self.cropping} must leave at least one row and "
                             f"column of the input {format_shape(shape)}")

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        (t, b), (l, r) = self.cropping
        return n, h - t - b, w - l - r, c

    def forward(self, x, training=False):
        """y (n, h - t - b, w - l - r, c) for x (n, h, w, c), a copy (the kernels downstream want
        contiguous arrays)."""
        _, oh, ow, _ = self.compute_output_shape(x.shape)
        (t, _), (l, _) = self.cropping
        y = self._buffer("y", self.compute_output_shape(x.shape))
        y[...] = x[:, t:t + oh, l:l + ow]
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        """dx (n, h, w, c): dy (n, oh, ow, c) inside a zero border, dx[n, t + r, l + q, c] = dy[n, r, q, c]."""
        _, oh, ow, _ = dy.shape
        (t, _), (l, _) = self.cropping
        dx = self._buffer("dx", self._x_shape, zeros=True)  # the border stays zero
        dx[:, t:t + oh, l:l + ow] = dy
        return dx

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping}
