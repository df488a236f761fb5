"""Dropout: zero a random fraction of the inputs while training, scale the rest to keep the mean."""
import numpy as np

from autoenc import utils
from autoenc.layers.base import Layer


class Dropout(Layer):
    """Training: y = x * mask / (1 - rate), mask ~ Bernoulli(1 - rate). Inference: y = x."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise ValueError("Dropout supports noise_shape=None only")
        self.rate = float(rate)
        self.seed = seed
        self._gen = None if seed is None else np.random.default_rng(seed)
        self._mask = None

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            self._mask = None
            return x
        gen = self._gen if self._gen is not None else utils.rng()
        mask = self._buffer("mask", x.shape)
        keep = gen.random(x.shape, dtype=np.float32) >= self.rate
        np.multiply(keep, x.dtype.type(1 / (1 - self.rate)), out=mask)
        self._mask = mask
        y = self._buffer("y", x.shape)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, dy):
        """dx = dy * mask / (1 - rate) (the same mask as the forward pass), or dy at inference."""
        if self._mask is None:
            return dy
        dx = self._buffer("dx", dy.shape)
        np.multiply(dy, self._mask, out=dx)
        return dx

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
