"""Weight and activity regularizers with Keras' names and defaults.

A regularizer maps a weight (or an activation) w to a scalar penalty added to the training loss;
``gradient(w)`` is its derivative with respect to w, added to the gradient of w.
"""
import numpy as np


class Regularizer:
    """Base class: ``penalty = regularizer(w)``, ``dw = regularizer.gradient(w)``."""

    def __call__(self, w):
        raise NotImplementedError

    def gradient(self, w):
        raise NotImplementedError

    def get_config(self):
        return {}


class L1L2(Regularizer):
    """penalty = l1 * sum(|w|) + l2 * sum(w**2); gradient = l1 * sign(w) + 2 * l2 * w."""

    def __init__(self, l1=0.0, l2=0.0):
        for name, v in (("l1", l1), ("l2", l2)):
            if not isinstance(v, (int, float, np.floating)) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w):
        penalty = np.float32(0) if w.dtype == np.float32 else 0.0
        if self.l1:
            penalty = penalty + w.dtype.type(self.l1) * np.abs(w).sum()
        if self.l2:
            penalty = penalty + w.dtype.type(self.l2) * np.square(w).sum()
        return penalty

    def gradient(self, w):
        g = np.zeros_like(w)
        if self.l1:
            g += w.dtype.type(self.l1) * np.sign(w)
        if self.l2:
            g += w.dtype.type(2 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """penalty = l1 * sum(|w|)."""

    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    """penalty = l2 * sum(w**2)."""

    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


# Keras' lowercase aliases
l1 = L1
l2 = L2
l1_l2 = L1L2

_BY_NAME = {"l1": lambda: L1(), "l2": lambda: L2(), "l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}


def get(identifier):
    """A Regularizer from None, a name ('l1', 'l2', 'l1_l2', default strengths 0.01) or an instance."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown regularizer {identifier!r}; expected None, one of {sorted(_BY_NAME)} "
                     "or an autoenc.regularizers.Regularizer")


def serialize(reg):
    if reg is None:
        return None
    return {"class_name": type(reg).__name__, "config": reg.get_config()}


def deserialize(config):
    if config is None:
        return None
    return {"L1": L1, "L2": L2, "L1L2": L1L2}[config["class_name"]](**config["config"])
