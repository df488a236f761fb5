"""Activation functions, each with the derivative that backpropagation needs, as Keras 3 computes them.

A layer computes y = f(z) and, in backward, dz = dy * f'(z). Most derivatives here are written in
terms of the output y, so a layer only has to keep its output; GELU, SiLU, softsign and ReLU with
max_value or threshold need the pre-activation z too (``Activation.uses_z``), and every layer passes it:
    linear:       y = z                              dz = dy
    relu:         y = max(z, 0)                      dz = dy * (y > 0)
    sigmoid:      y = 1 / (1 + e^-z)                 dz = dy * y * (1 - y)
    tanh:         y = tanh(z)                        dz = dy * (1 - y^2)
    softmax:      y_k = e^z_k / sum e^z              dz = y * (dy - sum_k dy_k y_k)     (over ``axis``)
    leaky_relu:   y = z if z > 0 else s z            dz = dy if y > 0 else s dy          (s = 0.2)
    elu:          y = z if z > 0 else a (e^z - 1)    dz = dy if z > 0 else dy (y + a)    (a = 1)
    selu:         y = l z if z > 0 else l a (e^z - 1)  dz = l dy if y >= 0 else dy (y + l a)
    gelu:         y = z Phi(z)                       dz = dy (Phi(z) + z phi(z))        (erf form)
    softplus:     y = log(1 + e^z)                   dz = dy (1 - e^-y)  (= dy sigmoid(z))
    softsign:     y = z / (1 + |z|)                  dz = dy / (1 + |z|)^2
    silu, swish:  y = z s,  s = sigmoid(z)           dz = dy s (1 + z (1 - s))
    hard_sigmoid: y = relu6(z + 3) / 6               dz = dy / 6 if 0 < y < 1 else 0
    relu6:        y = min(max(z, 0), 6)              dz = dy if 0 < y < 6 else 0
    exponential:  y = e^z                            dz = dy * y
At the kinks the derivative is TensorFlow's (e.g. relu'(0) = 0, leaky_relu'(0) = s, selu'(0) = l).
See docs/activations.md.
"""
import numpy as np

from autoenc.kernels import activation as kernels

# SELU's constants (Klambauer et al. 2017), as TensorFlow writes them
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid_into(z, out):
    """out = 1 / (1 + e^-z), elementwise, without overflow. z, out: arrays of one shape."""
    # 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) for z < 0: neither form overflows
    e = np.exp(-np.abs(z))
    np.divide(1, 1 + e, out=out)
    np.copyto(out, e * out, where=z < 0)


# --- forward(z, y, **params) fills y; backward(dy, y, z, dz, **params) fills dz ----------------------

def _linear_forward(z, y):
    np.copyto(y, z)


def _linear_backward(dy, y, z, dz):
    np.copyto(dz, dy)


def _relu_forward(z, y, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope == 0 and max_value is None and threshold == 0:
        np.maximum(z, 0, out=y)
        return
    # Keras' ReLU: z above the threshold, capped at max_value; below it, negative_slope (z - threshold)
    t = y.dtype.type
    np.copyto(y, np.where(z > t(threshold), z, t(0)))
    if max_value is not None:
        np.minimum(y, t(max_value), out=y)
    if negative_slope != 0:
        y -= t(negative_slope) * np.maximum(t(threshold) - z, t(0))


def _relu_backward(dy, y, z, dz, negative_slope=0.0, max_value=None, threshold=0.0):
    if negative_slope == 0 and max_value is None and threshold == 0:
        np.multiply(dy, y > 0, out=dz)
        return
    t = dz.dtype.type
    if threshold == 0 and max_value is None:   # leaky: TensorFlow gives slope s at z = 0
        np.multiply(dy, np.where(z > 0, t(1), t(negative_slope)), out=dz)
        return
    passed = z > t(threshold)
    if max_value is not None:
        # TensorFlow: relu6 passes 0 < z < 6; clip's minimum passes z == max_value
        passed &= (z < t(6)) if (max_value == 6 and threshold == 0) else (z <= t(max_value))
    np.multiply(dy, passed, out=dz)
    if negative_slope != 0:
        dz += t(negative_slope) * dy * (z < t(threshold))


def _leaky_relu_forward(z, y, negative_slope=0.2):
    np.copyto(y, np.where(z > 0, z, y.dtype.type(negative_slope) * z))


def _leaky_relu_backward(dy, y, z, dz, negative_slope=0.2):
    np.multiply(dy, np.where(y > 0, dz.dtype.type(1), dz.dtype.type(negative_slope)), out=dz)


def _sigmoid_backward(dy, y, z, dz):
    np.multiply(dy, y * (1 - y), out=dz)


def _tanh_forward(z, y):
    np.tanh(z, out=y)


def _tanh_backward(dy, y, z, dz):
    np.multiply(dy, 1 - y * y, out=dz)


def _softmax_forward(z, y, axis=-1):
    np.subtract(z, z.max(axis=axis, keepdims=True), out=y)
    np.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)


def _softmax_backward(dy, y, z, dz, axis=-1):
    np.multiply(y, dy - (dy * y).sum(axis=axis, keepdims=True), out=dz)


def _elu_forward(z, y, alpha=1.0):
    t = y.dtype.type
    np.copyto(y, np.where(z > 0, z, t(alpha) * np.expm1(np.minimum(z, t(0)))))


def _elu_backward(dy, y, z, dz, alpha=1.0):
    # for z <= 0: d/dz a (e^z - 1) = a e^z = y + a
    positive = (z > 0) if z is not None else (y > 0)
    np.multiply(dy, np.where(positive, dz.dtype.type(1), y + dz.dtype.type(alpha)), out=dz)


def _selu_forward(z, y):
    t = y.dtype.type
    np.copyto(y, np.where(z > 0, t(SELU_SCALE) * z, t(SELU_SCALE * SELU_ALPHA) * np.expm1(np.minimum(z, t(0)))))


def _selu_backward(dy, y, z, dz):
    t = dz.dtype.type
    np.multiply(dy, np.where(y < 0, y + t(SELU_SCALE * SELU_ALPHA), t(SELU_SCALE)), out=dz)


def _gelu_forward(z, y):
    kernels.gelu_forward(np.ascontiguousarray(z), y)


def _gelu_backward(dy, y, z, dz):
    kernels.gelu_backward(np.ascontiguousarray(dy), np.ascontiguousarray(z), dz)


def _softplus_forward(z, y):
    np.logaddexp(z.dtype.type(0), z, out=y)


def _softplus_backward(dy, y, z, dz):
    # sigmoid(z) = 1 - e^-y, since e^y = 1 + e^z
    np.multiply(dy, -np.expm1(-y), out=dz)


def _softsign_forward(z, y):
    np.divide(z, 1 + np.abs(z), out=y)


def _softsign_backward(dy, y, z, dz):
    d = 1 + np.abs(z)
    np.divide(dy, d * d, out=dz)


def _silu_forward(z, y):
    sigmoid_into(z, y)
    y *= z


def _silu_backward(dy, y, z, dz):
    s = np.empty_like(dz)
    sigmoid_into(z, s)
    np.multiply(dy, s * (1 + z * (1 - s)), out=dz)


def _hard_sigmoid_forward(z, y):
    # as Keras' TensorFlow backend: relu6(z + 3) / 6, each step rounded in z's dtype
    np.add(z, z.dtype.type(3), out=y)
    np.clip(y, 0, 6, out=y)
    y /= y.dtype.type(6)


def _hard_sigmoid_backward(dy, y, z, dz):
    np.divide(dy, dz.dtype.type(6), out=dz)
    dz *= (y > 0) & (y < 1)


def _relu6_forward(z, y):
    np.clip(z, 0, 6, out=y)


def _relu6_backward(dy, y, z, dz):
    np.multiply(dy, (y > 0) & (y < 6), out=dz)


def _exponential_forward(z, y):
    np.exp(z, out=y)


def _exponential_backward(dy, y, z, dz):
    np.multiply(dy, y, out=dz)


# name -> (forward, backward, default parameters)
_RULES = {
    "linear": (_linear_forward, _linear_backward, {}),
    "relu": (_relu_forward, _relu_backward, {"negative_slope": 0.0, "max_value": None, "threshold": 0.0}),
    "sigmoid": (sigmoid_into, _sigmoid_backward, {}),
    "tanh": (_tanh_forward, _tanh_backward, {}),
    "softmax": (_softmax_forward, _softmax_backward, {"axis": -1}),
    "leaky_relu": (_leaky_relu_forward, _leaky_relu_backward, {"negative_slope": 0.2}),
    "elu": (_elu_forward, _elu_backward, {"alpha": 1.0}),
    "selu": (_selu_forward, _selu_backward, {}),
    "gelu": (_gelu_forward, _gelu_backward, {}),
    "softplus": (_softplus_forward, _softplus_backward, {}),
    "softsign": (_softsign_forward, _softsign_backward, {}),
    "silu": (_silu_forward, _silu_backward, {}),
    "hard_sigmoid": (_hard_sigmoid_forward, _hard_sigmoid_backward, {}),
    "relu6": (_relu6_forward, _relu6_backward, {}),
    "exponential": (_exponential_forward, _exponential_backward, {}),
}
NAMES = tuple(_RULES)
ALIASES = {"swish": "silu"}  # Keras' alias; the activation is named 'silu', as Keras serializes it
_NEEDS_Z = {"gelu", "silu", "softsign"}


class Activation:
    """An activation: ``forward(z, y)`` fills y; ``backward(dy, y, dz, z=None)`` fills dz. All arrays
    share one shape. ``z`` (the forward's input) is required when ``uses_z`` is True.

    ``params`` are the Keras function's keyword arguments: relu (negative_slope, max_value, threshold),
    leaky_relu (negative_slope=0.2), elu (alpha=1.0), softmax (axis=-1).
    """

    def __init__(self, name, **params):
        name = ALIASES.get(name, name)
        if name not in _RULES:
            raise ValueError(f"Unknown activation {name!r}; expected one of {list(NAMES) + list(ALIASES)}")
        defaults = _RULES[name][2]
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f"Activation {name!r} got unexpected parameter(s) {sorted(unknown)}; "
                            f"it takes {sorted(defaults) or 'none'}")
        self.name = name
        self.params = {**defaults, **params}

    @property
    def uses_z(self):
        """Whether backward needs the pre-activation z besides the output y."""
        if self.name == "relu":
            p = self.params
            return p["negative_slope"] != 0 or p["max_value"] is not None or p["threshold"] != 0
        return self.name in _NEEDS_Z

    def __repr__(self):
        changed = {k: v for k, v in self.params.items() if v != _RULES[self.name][2][k]}
        extra = "".join(f", {k}={v!r}" for k, v in changed.items())
        return f"Activation({self.name!r}{extra})"

    def forward(self, z, y):
        """y = f(z). z, y: arrays of one shape; y overwritten."""
        _RULES[self.name][0](z, y, **self.params)

    def backward(self, dy, y, dz, z=None):
        """dz = dy * f'(z) (softmax: the Jacobian-vector product over its axis). dy, y = f(z), dz and
        z: arrays of one shape; dz overwritten."""
        if z is None and self.uses_z:
            raise ValueError(f"{self!r}.backward needs the pre-activation z: backward(dy, y, dz, z=z)")
        _RULES[self.name][1](dy, y, z, dz, **self.params)

    def __call__(self, x):
        """f(x) as a new array (float32 unless x is a float array)."""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        y = np.empty_like(x)
        self.forward(x, y)
        return y


# --- the functions, with Keras' names and keyword arguments ----------------------------------------

def linear(x):
    return Activation("linear")(x)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    return Activation("relu", negative_slope=negative_slope, max_value=max_value, threshold=threshold)(x)


def sigmoid(x):
    return Activation("sigmoid")(x)


def tanh(x):
    return Activation("tanh")(x)


def softmax(x, axis=-1):
    return Activation("softmax", axis=axis)(x)


def leaky_relu(x, negative_slope=0.2):
    return Activation("leaky_relu", negative_slope=negative_slope)(x)


def elu(x, alpha=1.0):
    return Activation("elu", alpha=alpha)(x)


def selu(x):
    return Activation("selu")(x)


def gelu(x, approximate=False):
    if approximate:
        raise ValueError("gelu(approximate=True) (the tanh form) is not supported; autoenc computes the "
                         "erf form, Keras' default approximate=False")
    return Activation("gelu")(x)


def softplus(x):
    return Activation("softplus")(x)


def softsign(x):
    return Activation("softsign")(x)


def silu(x):
    return Activation("silu")(x)


swish = silu


def hard_sigmoid(x):
    return Activation("hard_sigmoid")(x)


def relu6(x):
    return Activation("relu6")(x)


def exponential(x):
    return Activation("exponential")(x)


_FUNCTIONS = {"linear": linear, "relu": relu, "sigmoid": sigmoid, "tanh": tanh, "softmax": softmax,
              "leaky_relu": leaky_relu, "elu": elu, "selu": selu, "gelu": gelu, "softplus": softplus,
              "softsign": softsign, "silu": silu, "hard_sigmoid": hard_sigmoid, "relu6": relu6,
              "exponential": exponential}


def serialize(activation):
    """An Activation as its name, or {'name': ..., **parameters} when its parameters are not the defaults
    (a LeakyReLU(0.1) given as a layer's activation), so that saving keeps them."""
    defaults = _RULES[activation.name][2]
    changed = {k: v for k, v in activation.params.items() if v != defaults[k]}
    if not changed:
        return activation.name
    return {"name": activation.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}}


def get(identifier):
    """An Activation from None (linear), a name (any case; 'swish' is 'silu'), an Activation, one of this
    module's functions, the output of ``serialize``, or an activation layer used as an activation, as in
    Keras 2 code: ``Conv2D(32, 3, activation=LeakyReLU(0.2))`` (the layer's ``to_activation()``)."""
    if identifier is None:
        return Activation("linear")
    if isinstance(identifier, Activation):
        return identifier
    if isinstance(identifier, str):
        name = ALIASES.get(identifier.lower(), identifier.lower())
        if name in _RULES:
            return Activation(name)
    if isinstance(identifier, dict) and isinstance(identifier.get("name"), str):
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in identifier.items() if k != "name"}
        return Activation(identifier["name"], **params)
    if callable(getattr(identifier, "to_activation", None)):
        return identifier.to_activation()
    for name, fn in _FUNCTIONS.items():
        if identifier is fn:
            return Activation(name)
    raise ValueError(f"Unknown activation {identifier!r}; expected None or one of {list(NAMES) + list(ALIASES)} "
                     "(autoenc needs the derivative, so arbitrary callables are not accepted)")
