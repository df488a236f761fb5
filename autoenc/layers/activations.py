"""Activation layers with parameters: LeakyReLU, PReLU, ELU, ReLU and Softmax, as keras.layers names them.

Each keeps its input z and output y for backward. LeakyReLU, ELU, ReLU and Softmax are the functions of
autoenc/activations.py with the layer's arguments; PReLU learns its slope:
    PReLU: y = z if z > 0 else alpha z      dz = dy if z > 0 else alpha dy (0 at z = 0, as TensorFlow)
           dalpha = sum over the batch and the shared axes of dy * min(z, 0)
Elementwise NumPy over ``out=`` buffers; see docs/activations.md.
"""
import warnings

import numpy as np

from autoenc import initializers, regularizers
from autoenc.activations import Activation
from autoenc.layers.base import Layer, format_shape


def _check_number(value, name, layer, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"{layer} {name} must be a non-negative number{' or None' if allow_none else ''}, "
                         f"got {name}={value!r}")
    return float(value)


class _ActivationLayer(Layer):
    """y = activation(z) for one fixed Activation; subclasses choose it and add their config."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self._activation = activation

    def to_activation(self):
        """The layer's function as an Activation, for ``Conv2D(..., activation=LeakyReLU(0.2))``."""
        return self._activation

    def forward(self, x, training=False):
        """x: (batch, ...); returns y of the same shape (a buffer reused by the next call)."""
        y = self._buffer("y", x.shape)
        self._activation.forward(x, y)
        self._z, self._y = x, y
        return y

    def backward(self, dy, from_logits=False):
        """dy: (batch, ...) as the output; returns dx = dy * activation'(z)."""
        if from_logits:
            return dy
        dx = self._buffer("dx", self._y.shape)
        self._activation.backward(dy, self._y, dx, z=self._z)
        return dx


class LeakyReLU(_ActivationLayer):
    """y = z if z > 0 else negative_slope z, as keras.layers.LeakyReLU (Keras 2's ``alpha=`` is accepted,
    with a DeprecationWarning)."""

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
            warnings.warn("LeakyReLU(alpha=...) is Keras 2's spelling; use negative_slope=... (Keras 3)",
                          DeprecationWarning, stacklevel=2)
        self.negative_slope = _check_number(negative_slope, "negative_slope", "LeakyReLU")
        super().__init__(Activation("leaky_relu", negative_slope=self.negative_slope), **kwargs)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class ELU(_ActivationLayer):
    """y = z if z > 0 else alpha (e^z - 1), as keras.layers.ELU."""

    def __init__(self, alpha=1.0, **kwargs):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
                or not np.isfinite(alpha):
            raise ValueError(f"ELU alpha must be a finite number, got alpha={alpha!r}")
        self.alpha = float(alpha)
        super().__init__(Activation("elu", alpha=self.alpha), **kwargs)

    def get_config(self):
        # Keras 3.15's ELU leaves alpha out of its config; kept here so that saving keeps it
        return {**super().get_config(), "alpha": self.alpha}


class ReLU(_ActivationLayer):
    """Keras' ReLU: y = min(z, max_value) for z > threshold, else negative_slope (z - threshold)."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        self.max_value = _check_number(max_value, "max_value", "ReLU", allow_none=True)
        self.negative_slope = _check_number(negative_slope, "negative_slope", "ReLU")
        self.threshold = _check_number(threshold, "threshold", "ReLU")
        super().__init__(Activation("relu", negative_slope=self.negative_slope, max_value=self.max_value,
                                    threshold=self.threshold), **kwargs)

    def get_config(self):
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}


class Softmax(_ActivationLayer):
    """y = e^z / sum e^z over ``axis`` (an int or a list of ints), as keras.layers.Softmax."""

    def __init__(self, axis=-1, **kwargs):
        if isinstance(axis, (list, tuple)):
            if not axis or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axis):
                raise ValueError(f"Softmax axis must be an int or a non-empty list of ints, got axis={axis!r}")
            self.axis = [int(a) for a in axis]
            act_axis = tuple(self.axis)
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = act_axis = int(axis)
        else:
            raise ValueError(f"Softmax axis must be an int or a list of ints, got axis={axis!r}")
        super().__init__(Activation("softmax", axis=act_axis), **kwargs)

    def check_input_shape(self, shape):
        rank = len(shape) if isinstance(shape, tuple) else None
        for a in (self.axis if isinstance(self.axis, list) else [self.axis]):
            if rank is None or not -rank <= a < rank or a in (0, -rank):
                raise ValueError(f"Softmax {self.name!r}: axis={self.axis} is not a feature axis of input "
                                 f"{format_shape(shape) if rank else shape}")

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class PReLU(Layer):
    """y = z if z > 0 else alpha z with a learned alpha, as keras.layers.PReLU.

    alpha has the input's shape without the batch, with a 1 on each of ``shared_axes`` (axes counted
    with the batch as 0: shared_axes=[1, 2] gives one alpha per channel of an NHWC input).
    """

    def __init__(self, alpha_initializer="zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        if alpha_constraint is not None:
            raise ValueError(f"PReLU does not support constraints, got alpha_constraint={alpha_constraint!r}")
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        if shared_axes is None:
            self.shared_axes = None
        else:
            axes = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) and a >= 1 for a in axes):
                raise ValueError("PReLU shared_axes must be positive ints (axis 0 is the batch), "
                                 f"got shared_axes={shared_axes!r}")
            self.shared_axes = [int(a) for a in axes]

    def to_activation(self):
        raise ValueError("PReLU learns its alpha, so it cannot be a layer's activation= argument; add it as a "
                         "layer after the one it follows")

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) < 2:
            raise ValueError(f"PReLU {self.name!r} expects input (batch, ...), got {shape}")
        if self.shared_axes and max(self.shared_axes) >= len(shape):
            raise ValueError(f"PReLU {self.name!r}: shared_axes={self.shared_axes} do not fit input "
                             f"{format_shape(shape)}")
        if self.built:
            alpha_shape = self.params["alpha"].shape
            if len(shape) != len(alpha_shape) + 1 or any(
                    a != 1 and d != a for d, a in zip(shape[1:], alpha_shape)):
                raise ValueError(f"PReLU {self.name!r} was built for inputs {format_shape(self.input_shape)}, "
                                 f"got {format_shape(shape)}")

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for a in self.shared_axes or []:
            shape[a - 1] = 1
        self.add_weight("alpha", tuple(shape), self.alpha_initializer, self.alpha_regularizer)

    def forward(self, x, training=False):
        """x: (batch, ...); y = x where x > 0, alpha x elsewhere (alpha broadcast over the shared axes)."""
        y = self._buffer("y", x.shape)
        np.multiply(self.params["alpha"], np.minimum(x, 0), out=y)
        y += np.maximum(x, 0)
        self._z, self._y = x, y
        return y

    def backward(self, dy, from_logits=False):
        """dy: (batch, ...). Fills grads['alpha'] with sum of dy * min(z, 0) over the batch and shared axes;
        returns dx = dy where z > 0, alpha dy where z < 0, 0 where z = 0."""
        if from_logits:
            return dy
        z, alpha = self._z, self.params["alpha"]
        axes = (0,) + tuple(a + 1 for a, n in enumerate(alpha.shape) if n == 1 and z.shape[a + 1] != 1)
        da = np.sum(dy * np.minimum(z, 0), axis=axes, keepdims=True)
        self.grads["alpha"][...] = da.reshape(alpha.shape)
        dx = self._buffer("dx", z.shape)
        np.multiply(dy, z > 0, out=dx)
        dx += dy * alpha * (z < 0)
        return dx

    def get_config(self):
        return {**super().get_config(), "alpha_initializer": initializers.serialize(self.alpha_initializer),
                "alpha_regularizer": regularizers.serialize(self.alpha_regularizer), "alpha_constraint": None,
                "shared_axes": self.shared_axes}
