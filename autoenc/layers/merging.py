"""Layers that join branches of a graph: Add and Concatenate."""
import numpy as np

from autoenc.layers.base import Layer


class Add(Layer):
    """y = x1 + x2 + ...; every input gets dy."""

    def check_input_shape(self, shape):
        if not isinstance(shape, list) or len(shape) < 2 or any(s != shape[0] for s in shape):
            raise ValueError(f"Add {self.name!r} expects a list of two or more inputs of one shape, got {shape}")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def forward(self, xs, training=False):
        y = self._buffer("y", xs[0].shape)
        np.add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            y += x
        self._n = len(xs)
        return y

    def backward(self, dy):
        return [dy] * self._n


class Concatenate(Layer):
    """y = the inputs joined along ``axis``; dy is split back into the inputs' parts."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def check_input_shape(self, shape):
        if not isinstance(shape, list) or len(shape) < 2:
            raise ValueError(f"Concatenate {self.name!r} expects a list of two or more inputs, got {shape}")
        ranks = {len(s) for s in shape}
        axis = self.axis % len(shape[0])
        if len(ranks) != 1 or any(s[:axis] + s[axis + 1:] != shape[0][:axis] + shape[0][axis + 1:] for s in shape):
            raise ValueError(f"Concatenate {self.name!r}: inputs must match except along axis {self.axis}, got {shape}")

    def compute_output_shape(self, input_shape):
        axis = self.axis % len(input_shape[0])
        out = list(input_shape[0])
        out[axis] = sum(s[axis] for s in input_shape)
        return tuple(out)

    def forward(self, xs, training=False):
        self._sizes = [x.shape[self.axis] for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def backward(self, dy):
        return np.split(dy, np.cumsum(self._sizes)[:-1], axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
