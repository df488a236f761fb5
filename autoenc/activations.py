"""Activation functions, each with the derivative that backpropagation needs.

Every backward here is written in terms of the activation's output y = f(z), so a layer only keeps
its output:
    relu:    y = max(z, 0)          dz = dy * (y > 0)
    sigmoid: y = 1 / (1 + e^-z)     dz = dy * y * (1 - y)
    tanh:    y = tanh(z)            dz = dy * (1 - y^2)
    softmax: y_k = e^z_k / sum e^z  dz = y * (dy - sum_k dy_k y_k)     (over the last axis)
    linear:  y = z                  dz = dy
"""
import numpy as np


def linear(x):
    return np.array(x, copy=True)


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    x = np.asarray(x)
    out = np.empty_like(x)
    _sigmoid(x, out)
    return out


def tanh(x):
    return np.tanh(x)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(z, out):
    # 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) for z < 0: neither form overflows
    e = np.exp(-np.abs(z))
    np.divide(1, 1 + e, out=out)
    np.copyto(out, e * out, where=z < 0)


class Activation:
    """An activation: ``forward(z, y)`` fills y; ``backward(dy, y, dz)`` fills dz. Shapes all equal."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Activation({self.name!r})"

    def forward(self, z, y):
        if self.name == "relu":
            np.maximum(z, 0, out=y)
        elif self.name == "sigmoid":
            _sigmoid(z, y)
        elif self.name == "tanh":
            np.tanh(z, out=y)
        elif self.name == "softmax":
            np.subtract(z, z.max(axis=-1, keepdims=True), out=y)
            np.exp(y, out=y)
            y /= y.sum(axis=-1, keepdims=True)
        else:
            np.copyto(y, z)

    def backward(self, dy, y, dz):
        if self.name == "relu":
            np.multiply(dy, y > 0, out=dz)
        elif self.name == "sigmoid":
            np.multiply(dy, y * (1 - y), out=dz)
        elif self.name == "tanh":
            np.multiply(dy, 1 - y * y, out=dz)
        elif self.name == "softmax":
            np.multiply(y, dy - (dy * y).sum(axis=-1, keepdims=True), out=dz)
        else:
            np.copyto(dz, dy)


NAMES = ("linear", "relu", "sigmoid", "tanh", "softmax")
_FUNCTIONS = {"linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax}


def get(identifier):
    """An Activation from None (linear), a name, or one of this module's functions."""
    if identifier is None:
        return Activation("linear")
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in NAMES:
        return Activation(identifier.lower())
    for name, fn in _FUNCTIONS.items():
        if identifier is fn:
            return Activation(name)
    raise ValueError(f"Unknown activation {identifier!r}; expected None or one of {list(NAMES)} "
                     "(autoenc needs the derivative, so arbitrary callables are not accepted)")
