"""Numerical checks of backward passes: central differences and the dot-product (adjoint) test.

Both work on a float64 copy of what they are given, so the original layer or model is untouched.

For a layer, the scalar checked is L = sum(forward(x) * r) with a fixed random r, whose gradient
with respect to the output is exactly r; for a compiled model, L is the model's training loss.
Each analytic derivative is compared with (L(v + eps) - L(v - eps)) / (2 eps).
"""
import copy

import numpy as np

from autoenc.layers.base import Layer


def _to_float64(obj):
    """A deep copy of a layer or model with every parameter, gradient and dtype in float64."""
    obj = copy.deepcopy(obj)
    layers = obj.layers if hasattr(obj, "_nodes") else [obj]
    for layer in layers:
        layer.dtype = np.dtype(np.float64)
        layer.params = {k: v.astype(np.float64) for k, v in layer.params.items()}
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}
        layer._buffers = {}
    if hasattr(obj, "_nodes"):
        obj.dtype = np.dtype(np.float64)
        obj._flat_params = obj._flat_grads = None
        obj._param_refs = []
    return obj


def _relative_error(a, b):
    """||a - b|| / max(||a|| + ||b||, 1e-300): 0 when equal, about 1e-8 or less for a correct float64
    gradient."""
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300))


def _sample_indices(size, max_checks, gen):
    return np.arange(size) if size <= max_checks else gen.choice(size, max_checks, replace=False)


def gradcheck(target, x, y=None, eps=1e-6, max_checks=40, seed=0):
    """Compare analytic gradients with central differences, in float64.

    target: a Layer (built or not) or a Model (compiled: its loss is used; else L = sum(out * r)).
    x: input array (batch, ...) or a list of arrays for multi-input layers; y: targets for a
    compiled model. At most ``max_checks`` randomly chosen entries of each tensor are checked.
    Returns {'input': err, '<layer>/<param>': err, ...}, each a relative error (see
    ``_relative_error``); a correct backward pass gives about 1e-7 or less.
    """
    gen = np.random.default_rng(seed)
    is_model = hasattr(target, "_nodes")
    if isinstance(target, Layer) and not target.built:
        shape = [(None,) + np.shape(a)[1:] for a in x] if isinstance(x, list) else (None,) + np.shape(x)[1:]
        target.check_input_shape(shape)
        target._build_once(shape)
    net = _to_float64(target)
    xs = [np.array(a, dtype=np.float64) for a in (x if isinstance(x, list) else [x])]
    layers = net.layers if is_model else [net]

    def forward():
        arg = xs if len(xs) > 1 else xs[0]
        return net.forward(arg, training=False)

    compiled = is_model and getattr(net, "compiled", False)
    if compiled:
        if y is None:
            raise ValueError("gradcheck on a compiled model needs targets y")
        y = np.asarray(y, dtype=np.float64)

        def loss_value():
            out = forward()
            return float(net._loss_and_gradient(y, out)[0]) + net._regularization_loss()

        out = forward()
        _, dy, from_logits = net._loss_and_gradient(y, out)
        dx = net.backward(dy, from_logits=from_logits)
    else:
        r = gen.standard_normal(forward().shape)

        def loss_value():
            return float(np.sum(forward() * r))

        forward()
        dx = net.backward(r)
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
    tensors += [(f"{layer.name}/{name}", None, p) for layer in layers for name, p in layer.params.items()]
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
    if not layer.built:
        layer.check_input_shape((None,) + np.shape(x)[1:])
        layer._build_once((None,) + np.shape(x)[1:])
    net = _to_float64(layer)
    x = np.array(x, dtype=np.float64)
    u = gen.standard_normal(x.shape)
    v = gen.standard_normal(net.forward(x).shape)
    h = 1e-6
    ju = (np.array(net.forward(x + h * u), copy=True) - np.array(net.forward(x - h * u), copy=True)) / (2 * h)
    net.forward(x)
    jtv = net.backward(v)
    lhs, rhs = float(np.sum(ju * v)), float(np.sum(u * jtv))
    return abs(lhs - rhs) / max(abs(lhs), 1e-300)
