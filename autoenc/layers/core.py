"""Dense and Activation layers."""
import numpy as np

from autoenc import activations
from autoenc.layers.base import Layer, format_shape


class Dense(Layer):
    """y = activation(x @ kernel + bias) over the last axis, as keras.layers.Dense.

    Input (batch, ..., in); kernel (in, units); bias (units,); output (batch, ..., units).
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense units must be a positive int, got {units!r}")
        self.units = int(units)
        self._set_kernel_bias_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                                      bias_regularizer, kernel_constraint, bias_constraint)

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) < 2:
            raise ValueError(f"Dense {self.name!r} expects input (batch, ..., features), got {shape}")
        if self.built and shape[-1] != self.input_shape[-1]:
            raise ValueError(f"Dense {self.name!r} expects {self.input_shape[-1]} input features, "
                             f"got input {format_shape(shape)}")

    def build(self, input_shape):
        self.add_weight("kernel", (input_shape[-1], self.units), self.kernel_initializer, self.kernel_regularizer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer, self.bias_regularizer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, training=False):
        x2 = x.reshape(-1, x.shape[-1])
        z = self._buffer("z", (x2.shape[0], self.units))
        np.matmul(x2, self.params["kernel"], out=z)
        if self.use_bias:
            z += self.params["bias"]
        if self.activation.name == "linear":
            y = z
        else:
            y = self._buffer("y", z.shape)
            self.activation.forward(z, y)
        self._x2, self._x_shape, self._z, self._y = x2, x.shape, z, y
        return y.reshape(x.shape[:-1] + (self.units,))

    def backward(self, dy, from_logits=False):
        """dz = dy * activation'; dkernel = x^T dz; dbias = sum_rows dz; dx = dz kernel^T."""
        dy2 = dy.reshape(-1, self.units)
        if from_logits or self.activation.name == "linear":
            dz = dy2
        else:
            dz = self._buffer("dz", dy2.shape)
            self.activation.backward(dy2, self._y, dz, z=self._z)
        np.matmul(self._x2.T, dz, out=self.grads["kernel"])
        if self.use_bias:
            np.sum(dz, axis=0, out=self.grads["bias"])
        dx = self._buffer("dx", self._x2.shape)
        np.matmul(dz, self.params["kernel"].T, out=dx)
        return dx.reshape(self._x_shape)

    def get_config(self):
        return {**super().get_config(), "units": self.units, **self._kernel_bias_config()}

    @property
    def logits(self):
        z = getattr(self, "_z", None)
        return None if z is None else z.reshape(self._x_shape[:-1] + (self.units,))


class Activation(Layer):
    """y = activation(x), elementwise (softmax: over the last axis)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def forward(self, x, training=False):
        y = self._buffer("y", x.shape)
        self.activation.forward(x, y)
        self._z, self._y = x, y
        return y

    def backward(self, dy, from_logits=False):
        if from_logits:
            return dy
        dx = self._buffer("dx", dy.shape)
        self.activation.backward(dy, self._y, dx, z=self._z)
        return dx

    def get_config(self):
        return {**super().get_config(), "activation": self.activation.name}

    @property
    def logits(self):
        return getattr(self, "_z", None)
