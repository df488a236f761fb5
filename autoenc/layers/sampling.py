"""Sampling: the reparameterization trick of a variational autoencoder (keras-io's ``Sampling`` layer).

    z = z_mean + exp(0.5 * z_log_var) * eps,      eps ~ N(0, 1), one draw per element and per call
    dL/dz_mean    = dL/dz
    dL/dz_log_var = dL/dz * 0.5 * exp(0.5 * z_log_var) * eps = 0.5 * dL/dz * (z - z_mean)

The noise eps is an input like the data, not a function of the weights, so the gradient passes
through the draw (see docs/vae.md). As keras-io's layer, it draws at inference as well.
"""
import numpy as np

from autoenc import utils
from autoenc.layers.base import Layer


class Sampling(Layer):
    """[z_mean, z_log_var] -> z = z_mean + exp(0.5 * z_log_var) * eps, eps ~ N(0, 1) drawn at every call.

    seed : None to draw from autoenc's generator (``autoenc.utils.rng()``, reseeded by
        ``autoenc.utils.set_random_seed``), or an int for a generator of the layer's own.
    epsilon : set it to an array of z's shape (batch, latent) to use that noise instead of drawing
        (tests, parity with Keras); ``None`` (the default) draws. After each call ``last_epsilon`` is
        the noise that call used.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"Sampling seed must be None or an int, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._gen = None if seed is None else np.random.default_rng(seed)
        self.epsilon = None
        self.last_epsilon = None

    def check_input_shape(self, shape):
        if not (isinstance(shape, list) and len(shape) == 2 and tuple(shape[0]) == tuple(shape[1])):
            raise ValueError(f"Sampling {self.name!r} expects [z_mean, z_log_var], two inputs of one shape, "
                             f"got {shape}")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def forward(self, xs, training=False):
        """xs = [z_mean, z_log_var], each of shape (batch, latent). Returns z, of the same shape."""
        z_mean, z_log_var = xs
        if self.epsilon is not None:
            eps = np.asarray(self.epsilon, dtype=z_mean.dtype)
            if eps.shape != z_mean.shape:
                raise ValueError(f"Sampling {self.name!r}: epsilon has shape {eps.shape}, z_mean {z_mean.shape}")
        else:
            gen = self._gen if self._gen is not None else utils.rng()
            eps = gen.standard_normal(z_mean.shape, dtype=z_mean.dtype)
        self.last_epsilon = eps
        self._std = np.exp(z_log_var * z_log_var.dtype.type(0.5))   # exp(0.5 log var): the standard deviation
        z = self._buffer("z", z_mean.shape)
        np.multiply(self._std, eps, out=z)
        z += z_mean
        return z

    def backward(self, dy):
        """dy = dL/dz, (batch, latent). Returns [dL/dz_mean, dL/dz_log_var] = [dy, 0.5 dy std eps]."""
        d_log_var = self._buffer("d_log_var", dy.shape)
        np.multiply(dy, self._std, out=d_log_var)
        d_log_var *= self.last_epsilon
        d_log_var *= d_log_var.dtype.type(0.5)
        return [dy, d_log_var]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
