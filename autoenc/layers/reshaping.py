"""Flatten and Reshape: change the shape, keep the data (views, no copies)."""
import numpy as np

from autoenc.layers.base import Layer, format_shape


class Flatten(Layer):
    """(batch, d1, d2, ...) -> (batch, d1*d2*...)."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) < 2:
            raise ValueError(f"Flatten {self.name!r} expects input (batch, ...), got {shape}")

    def compute_output_shape(self, input_shape):
        return input_shape[0], int(np.prod(input_shape[1:]))

    def forward(self, x, training=False):
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._x_shape)


class Reshape(Layer):
    """(batch, ...) -> (batch, *target_shape); one entry of target_shape may be -1."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        target_shape = tuple(target_shape)
        if not all(isinstance(d, (int, np.integer)) and (d > 0 or d == -1) for d in target_shape) \
                or list(target_shape).count(-1) > 1:
            raise ValueError(f"Reshape target_shape must be positive ints with at most one -1, got {target_shape!r}")
        self.target_shape = target_shape

    def compute_output_shape(self, input_shape):
        size = int(np.prod(input_shape[1:]))
        known = int(np.prod([d for d in self.target_shape if d != -1]))
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"Reshape {self.name!r} cannot reshape input {format_shape(input_shape)} "
                                 f"({size} values per sample) to {self.target_shape}")
            return (input_shape[0],) + tuple(size // known if d == -1 else d for d in self.target_shape)
        if known != size:
            raise ValueError(f"Reshape {self.name!r} cannot reshape input {format_shape(input_shape)} "
                             f"({size} values per sample) to {self.target_shape} ({known} values)")
        return (input_shape[0],) + self.target_shape

    def check_input_shape(self, shape):
        self.compute_output_shape(shape)

    def forward(self, x, training=False):
        self._x_shape = x.shape
        return x.reshape((x.shape[0],) + self.compute_output_shape(x.shape)[1:])

    def backward(self, dy):
        return dy.reshape(self._x_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}
