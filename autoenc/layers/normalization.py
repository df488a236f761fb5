"""BatchNormalization: normalize each channel by batch statistics in training, moving ones at inference."""
import numpy as np

from autoenc import initializers, regularizers
from autoenc.kernels import normalization as K
from autoenc.layers.base import Layer, format_shape


class BatchNormalization(Layer):
    """y = gamma * (x - mean) / sqrt(var + epsilon) + beta per channel (the entries along ``axis``),
    as keras.layers.BatchNormalization.

    In training (``forward(x, training=True)``, i.e. in fit and train_on_batch) mean and var are the
    batch's, over every axis but ``axis`` (var biased, dividing by the count), and the moving averages
    are updated as Keras updates them:
        moving_mean     = moving_mean * momentum + mean * (1 - momentum)
        moving_variance = moving_variance * momentum + var * (1 - momentum)
    At inference (predict, evaluate, ``model(x)``), and whenever the layer is frozen
    (``trainable=False``, as in Keras), mean and var are moving_mean and moving_variance.

    Input of any rank >= 2, e.g. (batch, features) or (batch, h, w, channels); output the same shape.
    Weights, in Keras' order: gamma (c,) if ``scale``, beta (c,) if ``center``, then moving_mean (c,)
    and moving_variance (c,), which are non-trainable: no gradient, never given to the optimizer, but
    in get_weights, set_weights and saved files. Formulas: autoenc/kernels/normalization.py and
    docs/batchnorm.md.
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization axis must be an int, got {axis!r}")
        if beta_constraint is not None or gamma_constraint is not None:
            raise ValueError("BatchNormalization does not support beta or gamma constraints, got "
                             f"beta_constraint={beta_constraint!r}, gamma_constraint={gamma_constraint!r}")
        for name, value in (("momentum", momentum), ("epsilon", epsilon)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"BatchNormalization {name} must be a number, got {value!r}")
        if not epsilon > 0:
            raise ValueError(f"BatchNormalization epsilon must be positive, got {epsilon!r}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        # one process is one replica, so synchronized statistics are the batch's own
        self.synchronized = bool(synchronized)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    # --- shapes --------------------------------------------------------------------------------

    def _axis_of(self, ndim):
        return self.axis % ndim

    def check_input_shape(self, shape):
        if not isinstance(shape, tuple) or len(shape) < 2:
            raise ValueError(f"BatchNormalization {self.name!r} expects input (batch, ..., channels), got {shape}")
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis} is out of bounds for input "
                             f"{format_shape(shape)}")
        if self._axis_of(len(shape)) == 0:
            raise ValueError(f"BatchNormalization {self.name!r}: axis={self.axis} is the batch axis of input "
                             f"{format_shape(shape)}; normalize along a feature axis (e.g. axis=-1)")
        if self.built and (len(shape) != len(self.input_shape) or
                           shape[self._axis_of(len(shape))] != self.input_shape[self._axis_of(len(shape))]):
            raise ValueError(f"BatchNormalization {self.name!r} was built for inputs {format_shape(self.input_shape)}"
                             f", got {format_shape(shape)}")

    def build(self, input_shape):
        shape = (input_shape[self._axis_of(len(input_shape))],)
        if self.scale:
            self.add_weight("gamma", shape, self.gamma_initializer, self.gamma_regularizer)
        if self.center:
            self.add_weight("beta", shape, self.beta_initializer, self.beta_regularizer)
        self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", shape, self.moving_variance_initializer, trainable=False)

    # --- computing -----------------------------------------------------------------------------

    def _rows(self, a):
        """a as (m, c): channels along ``axis`` last, every other axis folded into the rows (a view
        when ``axis`` is the last one, else a transposed copy)."""
        axis = self._axis_of(a.ndim)
        if axis != a.ndim - 1:
            a = np.moveaxis(a, axis, -1)
        return np.ascontiguousarray(a).reshape(-1, a.shape[-1])

    def _unrows(self, a2, shape):
        """The inverse of _rows: a2 (m, c) back to an array of ``shape``."""
        axis = self._axis_of(len(shape))
        if axis == len(shape) - 1:
            return a2.reshape(shape)
        moved = tuple(d for k, d in enumerate(shape) if k != axis) + (shape[axis],)
        return np.ascontiguousarray(np.moveaxis(a2.reshape(moved), -1, axis))

    def _gamma(self):
        c = self.params["moving_mean"].shape[0]
        return self.params["gamma"].astype(np.float64) if self.scale else np.ones(c)

    def _beta(self):
        c = self.params["moving_mean"].shape[0]
        return self.params["beta"].astype(np.float64) if self.center else np.zeros(c)

    def forward(self, x, training=False):
        """y (same shape as x): x normalized per channel by the batch statistics (training) or the
        moving ones (inference); in training the moving statistics are updated."""
        x2 = self._rows(x)
        c = x2.shape[1]
        training = bool(training) and self.trainable
        if training:
            mean, var = self._buffer("mean", (c,), dtype=np.float64), self._buffer("var", (c,), dtype=np.float64)
            K.channel_moments(x2, self._buffer("part", (K.n_chunks(x2.shape[0]), c), dtype=np.float64), mean, var)
            mm, mv = self.params["moving_mean"], self.params["moving_variance"]
            momentum = mm.dtype.type(self.momentum)
            rest = mm.dtype.type(1.0 - self.momentum)
            mm[...] = mm * momentum + mean.astype(mm.dtype) * rest
            mv[...] = mv * momentum + var.astype(mv.dtype) * rest
        else:
            mean = self.params["moving_mean"].astype(np.float64)
            var = self.params["moving_variance"].astype(np.float64)
        rstd = 1.0 / np.sqrt(var + self.epsilon)
        inv = self._gamma() * rstd
        shift = self._beta() - mean * inv
        y2 = self._buffer("y", x2.shape)
        K.normalize_forward(x2, inv.astype(y2.dtype), shift.astype(y2.dtype), y2)
        # copies: the moving statistics change in place at the next training step
        self._x2, self._x_shape, self._training = x2, x.shape, training
        self._mean, self._rstd, self._inv = np.array(mean), rstd, inv
        return self._unrows(y2, x.shape)

    def backward(self, dy):
        """dx (shape of x) for dy = dL/dy (shape of x), and grads gamma and beta:
        dbeta = sum dy, dgamma = sum dy * xhat over every axis but ``axis``; in training dx goes
        through the batch mean and variance too (kernels/normalization.py), at inference dx = dy * inv."""
        dy2 = self._rows(np.asarray(dy, dtype=self._x2.dtype))
        c = dy2.shape[1]
        sum_dy, sum_dy_xhat = self._buffer("sum_dy", (c,), dtype=np.float64), \
            self._buffer("sum_dy_xhat", (c,), dtype=np.float64)
        part = self._buffer("part2", (2, K.n_chunks(dy2.shape[0]), c), dtype=np.float64)
        K.normalize_backward_sums(dy2, self._x2, self._mean, self._rstd, part, sum_dy, sum_dy_xhat)
        if self.scale:
            self.grads["gamma"][...] = sum_dy_xhat
        if self.center:
            self.grads["beta"][...] = sum_dy
        dx2 = self._buffer("dx", dy2.shape)
        if self._training:
            K.normalize_backward_dx(dy2, self._x2, self._mean, self._rstd, self._gamma(), sum_dy, sum_dy_xhat, dx2)
        else:
            K.normalize_forward(dy2, self._inv.astype(dx2.dtype), np.zeros(c, dx2.dtype), dx2)
        return self._unrows(dx2, self._x_shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
                "synchronized": self.synchronized}
