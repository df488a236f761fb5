"""Weight initializers with Keras' names and formulas.

fan_in and fan_out of a kernel (kh, kw, cin, cout) are kh*kw*cin and kh*kw*cout; of a Dense kernel
(in, units), in and units.
"""
import numpy as np

from autoenc import utils

# stddev of a standard normal truncated to [-2, 2], used to rescale truncated normals (as Keras does)
_TRUNCATED_STD = 0.87962566103423978


def compute_fans(shape):
    """(fan_in, fan_out) of a weight shape."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(gen, shape, stddev):
    out = gen.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = gen.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


class Initializer:
    """Base class: ``initializer(shape, dtype)`` returns a new array."""

    def __init__(self, seed=None):
        self.seed = seed

    def _generator(self):
        return utils.rng() if self.seed is None else np.random.default_rng(self.seed)

    def __call__(self, shape, dtype="float32"):
        return np.asarray(self.sample(tuple(shape)), dtype=dtype)

    def get_config(self):
        return {"seed": self.seed}


class Zeros(Initializer):
    def sample(self, shape):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = value

    def sample(self, shape):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def sample(self, shape):
        return self._generator().uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def sample(self, shape):
        return self.mean + self.stddev * self._generator().standard_normal(shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    """Samples with variance scale / fan, fan chosen by mode; uniform limit sqrt(3 * scale / fan)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def sample(self, shape):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        gen = self._generator()
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return gen.uniform(-limit, limit, shape)
        if self.distribution == "truncated_normal":
            return _truncated_normal(gen, shape, np.sqrt(variance) / _TRUNCATED_STD)
        return np.sqrt(variance) * gen.standard_normal(shape)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class GlorotUniform(VarianceScaling):
    """Uniform in [-limit, limit], limit = sqrt(6 / (fan_in + fan_out))."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    """Truncated normal, stddev = sqrt(2 / (fan_in + fan_out)) / 0.8796."""

    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    """Uniform in [-limit, limit], limit = sqrt(6 / fan_in)."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    """Truncated normal, stddev = sqrt(2 / fan_in) / 0.8796."""

    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_uniform": RandomUniform, "random_normal": RandomNormal,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal, "variance_scaling": VarianceScaling,
}


def get(identifier):
    """An Initializer from a name ('glorot_uniform', 'he_normal', ...) or an Initializer instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        aliases = {"glorotuniform": "glorot_uniform", "glorotnormal": "glorot_normal",
                   "heuniform": "he_uniform", "henormal": "he_normal"}
        key = aliases.get(key, key)
        if key in _BY_NAME:
            return _BY_NAME[key]()
    raise ValueError(f"Unknown initializer {identifier!r}; expected one of {sorted(_BY_NAME)} "
                     "or an autoenc.initializers.Initializer")


def serialize(initializer):
    name = next(k for k, v in _BY_NAME.items() if type(initializer) is v)
    return {"class_name": name, "config": initializer.get_config()}


def deserialize(config):
    return _BY_NAME[config["class_name"]](**config["config"])
