"""Numerical checks of backward passes: central differences and the dot-product (adjoint) test.

Both work on a float64 copy of what they are given, so the original layer or model is untouched,
and both work on any Layer, including one you write yourself (see docs/custom_layer.md).

For a layer, the scalar checked is L = sum(forward(x) * r) with a fixed random r, whose gradient
with respect to the output is exactly r; for a compiled model, L is the model's training loss.
Each analytic derivative is compared with (L(v + eps) - L(v - eps)) / (2 eps): the error of this
estimate is O(eps^2) from the Taylor series plus O(1e-16 / eps) from rounding, both about 1e-10
in float64 with eps = 1e-6, which is why float32 (rounding 1e-7) cannot be checked this way.
"""
import copy

import numpy as np

from autoenc.layers.base import Layer
from autoenc.models.model import Model


def _layers_of(obj):
    return obj.flat_layers() if isinstance(obj, Model) else [obj]   # sub-models expanded


def _check_parameter_attributes(layer):
    """Raise if the layer keeps a parameter in an attribute (self.gamma) as well as in params.

    fit() moves every parameter into one flat buffer (layer.params[name] becomes a view into it), and
    gradcheck swaps in float64 copies; an attribute would still point at the old array, so the layer
    would silently compute with stale weights. Read parameters as self.params['gamma'] instead.
    """
    by_id = {id(p): name for name, p in layer.params.items()}
    for attr, value in vars(layer).items():
        if attr not in ("params", "grads") and id(value) in by_id:
            name = by_id[id(value)]
            raise ValueError(
                f"Layer {layer.name!r} keeps its parameter {name!r} in the attribute self.{attr} as well as in "
                f"self.params[{name!r}]. fit() and gradcheck replace the arrays in self.params, so self.{attr} "
                f"would go stale: read it as self.params[{name!r}] in forward and backward.")


def _to_float64(obj):
    """A deep copy of a layer or model with every parameter, gradient and dtype in float64."""
    for layer in _layers_of(obj):
        _check_parameter_attributes(layer)
    obj = copy.deepcopy(obj)
    for layer in _layers_of(obj):
        layer.dtype = np.dtype(np.float64)
        layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
        layer.grads = {k: np.zeros_like(layer.params[k]) for k in layer.grads}
        layer._buffers = {}
    if isinstance(obj, Model):
        obj.dtype = np.dtype(np.float64)   # fit would gather the float64 parameters into a new flat buffer
    return obj


def _relative_error(a, b):
    """||a - b|| / max(||a|| + ||b||, 1e-300): 0 when equal, about 1e-8 or less for a correct float64
    gradient."""
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def _sample_indices(size, max_checks, gen):
    return np.arange(size) if size <= max_checks else gen.choice(size, max_checks, replace=False)


def _build(target, x):
    """Build an unbuilt layer (or Sequential) from the shape of x, as its first call would."""
    if isinstance(target, Layer) and not target.built:
        shape = [(None,) + np.shape(a)[1:] for a in x] if isinstance(x, list) else (None,) + np.shape(x)[1:]
        target.check_input_shape(shape)
        target._build_once(shape)
    elif not isinstance(target, Layer) and not getattr(target, "built", True) and hasattr(target, "build"):
        first = x[0] if isinstance(x, list) else x
        target.build((None,) + np.shape(first)[1:])


def _watch_grads(layers):
    """The grads arrays before backward, to check that backward filled them in place."""
    return [(layer, {k: g for k, g in layer.grads.items()}) for layer in layers]


def _check_grads_filled_in_place(watched):
    for layer, before in watched:
        for name, g in before.items():
            if layer.grads.get(name) is not g:
                raise ValueError(
                    f"Layer {layer.name!r}: backward replaced self.grads[{name!r}] with a new array. Fill it in "
                    f"place instead (self.grads[{name!r}][...] = ...): fit() keeps every gradient as a view "
                    "into one flat buffer that the optimizer reads, and would never see the new array.")


def gradcheck(target, x, y=None, eps=1e-6, max_checks=40, seed=0):
    """Compare analytic gradients with central differences, in float64.

    target: a Layer (built or not, built-in or your own subclass) or a Model (compiled: its loss is
    used; else L = sum(out * r)). x: input array (batch, ...) or a list of arrays for multi-input
    layers; y: targets for a compiled model. At most ``max_checks`` randomly chosen entries of each
    tensor are checked.
    Returns {'input': err, '<layer>/<param>': err, ...}, each a relative error (see
    ``_relative_error``); a correct backward pass gives about 1e-7 or less, a wrong one 1e-2 or more.
    Raises ValueError for two mistakes that would break training but not the numbers: a parameter
    kept in an attribute besides ``params``, and ``grads`` arrays replaced rather than filled.
    """
    gen = np.random.default_rng(seed)
    is_model = isinstance(target, Model)
    _build(target, x)
    net = _to_float64(target)
    xs = [np.array(a, dtype=np.float64) for a in (x if isinstance(x, list) else [x])]
    layers = _layers_of(net)

    def forward():
        arg = xs if len(xs) > 1 else xs[0]
        return net.forward(arg, training=False)

    compiled = is_model and getattr(net, "compiled", False)
    watched = _watch_grads(layers)
    if compiled:
        if y is None:
            raise ValueError("gradcheck on a compiled model needs targets y")
        y = np.asarray(y, dtype=np.float64)

        def loss_value():
            out = forward()
            return net.compute_loss(xs, y, out)

        out = forward()
        _, dy, from_logits = net.compute_loss_and_gradient(y, out)
        dx = net.backward(dy, from_logits=from_logits)
    else:
        r = gen.standard_normal(forward().shape)

        def loss_value():
            return float(np.sum(forward() * r))

        forward()
        dx = net.backward(r.copy())  # a copy: a backward that writes into dy must not change r
    _check_grads_filled_in_place(watched)
    analytic = {"input": [np.array(d, copy=True) for d in (dx if isinstance(dx, list) else [dx])]}
    for layer in layers:
        for name, g in layer.grads.items():
            analytic[f"{layer.name}/{name}"] = np.array(g, copy=True)

    def numeric(array, index):
        flat = array.reshape(-1)
        old = flat[index]
        flat[index] = old + eps
        plus = loss_value()
        flat[index] = old - eps
        minus = loss_value()
        flat[index] = old
        return (plus - minus) / (2 * eps)

    errors = {}
    tensors = [("input", k, a) for k, a in enumerate(xs)]
    tensors += [(f"{layer.name}/{name}", None, layer.params[name]) for layer in layers for name in layer.grads]
    for key, k, array in tensors:
        idx = _sample_indices(array.size, max_checks, gen)
        num = np.array([numeric(array, i) for i in idx])
        ana = (analytic[key][k] if k is not None else analytic[key]).reshape(-1)[idx]
        name = key if k is None or len(xs) == 1 else f"input[{k}]"
        errors[name] = max(errors.get(name, 0.0), _relative_error(ana, num))
    return errors


def adjoint_check(layer, x, seed=0):
    """The dot-product test <J u, v> = <u, J^T v> for a layer's backward pass at input x.

    J is the layer's Jacobian at x, approximated by J u ~ (f(x + h u) - f(x - h u)) / 2h in float64;
    J^T v is the layer's backward(v). Exact for linear layers (pooling, upsampling, reshapes,
    convolution without activation). Returns |<J u, v> - <u, J^T v>| / max(|<J u, v>|, 1e-300).
    """
    gen = np.random.default_rng(seed)
    _build(layer, x)
    net = _to_float64(layer)
    x = np.array(x, dtype=np.float64)
    u = gen.standard_normal(x.shape)
    v = gen.standard_normal(net.forward(x).shape)
    h = 1e-6
    ju = (np.array(net.forward(x + h * u), copy=True) - np.array(net.forward(x - h * u), copy=True)) / (2 * h)
    net.forward(x)
    jtv = net.backward(v.copy())
    lhs, rhs = float(np.sum(ju * v)), float(np.sum(u * jtv))
    return abs(lhs - rhs) / max(abs(lhs), 1e-300)
