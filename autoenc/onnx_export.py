"""ONNX export: an autoenc model as an ONNX graph that onnxruntime (or any ONNX runtime) serves.

``model.export("m.onnx", format="onnx")`` (Keras 3's spelling) calls :func:`export_onnx`, which walks
the model's graph (``model.nodes``, sub-models inlined, every output of ``model.outputs``) and writes,
for each layer, the ONNX operators that compute what the layer's ``forward(x, training=False)``
computes, with its weights as initializers. The graph is built with the ``onnx`` package's helper API
(``onnx.helper.make_node`` / ``make_graph`` / ``make_model``, ``onnx.numpy_helper``); ``onnx`` is an
optional extra (``pip install "autoenc[onnx]"``), imported only here.

Layout. autoenc, like Keras, is NHWC (channels last); ONNX's Conv, ConvTranspose and pooling operators
are NCHW (channels first). The exported graph keeps the model's own NHWC interface (the user feeds
the arrays they feed ``predict``) and moves to NCHW lazily: every tensor of the graph carries its
layout, a convolution or pooling asks for channels first, Flatten, Reshape and Dense ask for channels
last (Flatten must flatten in NHWC order to match the Dense weights after it), and every other layer
(activations, BatchNormalization, padding, cropping, upsampling, Add, Concatenate, PReLU) works in
whatever layout its input has, with its axes mapped. A Transpose is written only where a layer needs
the other layout, once per tensor. So a convolutional autoencoder gets exactly one Transpose at the
input and one at the output, and a model with Flatten -> Dense one more before the Flatten; a
per-layer pair of Transposes would cost two copies of every feature map per layer for nothing.

The layer -> operator table is in docs/onnx.md. Where ONNX has an operator that computes what autoenc
computes it is used (Conv, MaxPool, Relu, Sigmoid, Softmax, ...); otherwise the exact formula is
written out (hard_sigmoid as Clip(x + 3, 0, 6) / 6, as autoenc rounds it; silu as x * Sigmoid(x);
gelu as 0.5 x (1 + Erf(x / sqrt 2)) before opset 20). TensorFlow's 'same' padding puts the odd row
or column after (bottom/right), so pads are written explicitly (never ``auto_pad``), and
BatchNormalization at inference is the per-channel y = x * inv + shift with autoenc's own inv =
gamma / sqrt(moving_variance + epsilon) and shift = beta - moving_mean * inv. Only the batch
dimension is dynamic: autoenc models have fixed feature shapes.
"""
import numpy as np

from autoenc import activations, files
from autoenc import layers as L
from autoenc.kernels.padding import conv_padding

DEFAULT_OPSET = 17
MIN_OPSET = 13   # Softmax over one axis (not a 2-D flattening), Resize and Slice as today's
INSTALL_HINT = 'pip install "autoenc[onnx]"'
MAX_BYTES = 2**31 - 2**20   # one protobuf holds at most 2 GB (ONNX's external data is not written)


def require_onnx():
    """The ``onnx`` module, or an ImportError naming the extra that installs it."""
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as error:
        raise ImportError(f"Exporting to ONNX needs the onnx package: {INSTALL_HINT} "
                          f"(or pip install onnx onnxruntime); {error}") from None
    return onnx


class _Tensor:
    """A tensor of the graph being written: its ONNX name, its autoenc (channels-last) shape with None
    for the batch, and its layout in the graph, 'last' (as autoenc) or 'first' (channels moved to
    axis 1). Tensors of rank 2 or less are always 'last'."""

    def __init__(self, name, shape, layout="last"):
        self.name, self.shape, self.layout = name, tuple(shape), layout

    @property
    def rank(self):
        return len(self.shape)

    def axis(self, a):
        """Where autoenc's axis ``a`` (negative allowed) is in this tensor's layout."""
        r = self.rank
        a = a % r
        if self.layout == "last" or a == 0:
            return a
        return 1 if a == r - 1 else a + 1

    def moved(self, array):
        """A per-sample constant of autoenc's shape (the shape without the batch, or broadcastable to it)
        put into this tensor's layout: the last axis moved first when the tensor is channels first."""
        return np.moveaxis(array, -1, 0) if self.layout == "first" and array.ndim >= 2 else array


def _to_first(r):
    return [0, r - 1] + list(range(1, r - 1))


def _to_last(r):
    return [0] + list(range(2, r)) + [1]


class _Graph:
    """The nodes and initializers being collected, with unique names and the layout conversions."""

    def __init__(self, onnx, opset):
        self.onnx, self.helper, self.opset = onnx, onnx.helper, opset
        self.nodes, self.initializers, self._names, self._converted = [], [], set(), {}
        self.n_bytes = 0

    def unique(self, hint):
        name, k = hint, 1
        while name in self._names:
            name, k = f"{hint}_{k}", k + 1
        self._names.add(name)
        return name

    def const(self, array, hint):
        """An initializer holding ``array`` (float arrays stored as float32); returns its name."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        name = self.unique(hint)
        self.n_bytes += array.nbytes
        if self.n_bytes > MAX_BYTES:
            raise ValueError(f"the model's weights exceed {MAX_BYTES} bytes, more than one ONNX protobuf holds "
                             "(2 GB); autoenc does not write ONNX external data")
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values, hint):
        return self.const(np.asarray(values, np.int64), hint)

    def node(self, op, inputs, hint, **attrs):
        """Append one ``op`` node reading ``inputs`` (names; '' for an optional input left out); returns
        its output's name, ``hint/op``."""
        out = self.unique(f"{hint}/{op}")
        self.nodes.append(self.helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def layout(self, t, want):
        """``t`` in layout ``want`` ('first' or 'last'): ``t`` itself, or one Transpose of it (made once)."""
        if t.rank <= 2 or t.layout == want:
            return t
        key = (t.name, want)
        if key not in self._converted:
            perm = _to_first(t.rank) if want == "first" else _to_last(t.rank)
            name = self.node("Transpose", [t.name], t.name.split("/")[0] + f"/to_channels_{want}", perm=perm)
            self._converted[key] = _Tensor(name, t.shape, want)
        return self._converted[key]

    def reduce(self, op, x, axes, hint):
        """``op`` (ReduceMax, ReduceSum) over ``axes`` with keepdims: axes are an attribute before opset 18
        (13 for ReduceSum), an input from then on."""
        input_from = 13 if op == "ReduceSum" else 18
        if self.opset >= input_from:
            return self.node(op, [x, self.ints(axes, f"{hint}/axes")], hint, keepdims=1)
        return self.node(op, [x], hint, axes=list(axes), keepdims=1)


# --- activations -------------------------------------------------------------------------------------

def _scalar(g, value, hint):
    return g.const(np.array(value, np.float32), hint)


def activation(g, act, t, hint):
    """The nodes computing ``act`` (an autoenc.activations.Activation) on tensor ``t``; returns the
    result as a _Tensor of ``t``'s shape and layout. Formulas as in autoenc/activations.py."""
    name, p, x = act.name, act.params, t.name
    out = None
    if name == "linear":
        return t
    if name == "relu":
        slope, cap, threshold = p["negative_slope"], p["max_value"], p["threshold"]
        if slope == 0 and cap is None and threshold == 0:
            out = g.node("Relu", [x], hint)
        elif slope == 0 and threshold == 0:
            out = g.node("Clip", [x, _scalar(g, 0.0, f"{hint}/min"), _scalar(g, cap, f"{hint}/max")], hint)
        elif cap is None and threshold == 0:
            out = g.node("LeakyRelu", [x], hint, alpha=float(slope))
        else:
            # Keras' ReLU: z above the threshold (capped at max_value), else negative_slope (z - threshold)
            th = _scalar(g, threshold, f"{hint}/threshold")
            zero = _scalar(g, 0.0, f"{hint}/zero")
            out = g.node("Where", [g.node("Greater", [x, th], hint), x, zero], hint)
            if cap is not None:
                out = g.node("Min", [out, _scalar(g, cap, f"{hint}/max_value")], hint)
            if slope != 0:
                below = g.node("Relu", [g.node("Sub", [th, x], hint)], hint)
                out = g.node("Sub", [out, g.node("Mul", [_scalar(g, slope, f"{hint}/slope"), below], hint)], hint)
    elif name in ("sigmoid", "tanh", "softsign", "softplus"):
        out = g.node({"sigmoid": "Sigmoid", "tanh": "Tanh", "softsign": "Softsign", "softplus": "Softplus"}[name],
                     [x], hint)
    elif name == "exponential":
        out = g.node("Exp", [x], hint)
    elif name == "softmax":
        axes = p["axis"] if isinstance(p["axis"], (tuple, list)) else (p["axis"],)
        axes = sorted({t.axis(a) for a in axes})
        if len(axes) == 1:
            out = g.node("Softmax", [x], hint, axis=axes[0])
        else:   # e^(z - max) / sum e^(z - max) over several axes, as autoenc computes it
            e = g.node("Exp", [g.node("Sub", [x, g.reduce("ReduceMax", x, axes, hint)], hint)], hint)
            out = g.node("Div", [e, g.reduce("ReduceSum", e, axes, hint)], hint)
    elif name == "leaky_relu":
        out = g.node("LeakyRelu", [x], hint, alpha=float(p["negative_slope"]))
    elif name == "elu":
        out = g.node("Elu", [x], hint, alpha=float(p["alpha"]))
    elif name == "selu":
        out = g.node("Selu", [x], hint, alpha=activations.SELU_ALPHA, gamma=activations.SELU_SCALE)
    elif name == "gelu":
        if g.opset >= 20:
            out = g.node("Gelu", [x], hint)
        else:   # y = 0.5 z (1 + erf(z / sqrt 2))
            erf = g.node("Erf", [g.node("Mul", [x, _scalar(g, np.sqrt(0.5), f"{hint}/rsqrt2")], hint)], hint)
            one_plus = g.node("Add", [erf, _scalar(g, 1.0, f"{hint}/one")], hint)
            out = g.node("Mul", [g.node("Mul", [x, _scalar(g, 0.5, f"{hint}/half")], hint), one_plus], hint)
    elif name == "silu":
        out = g.node("Mul", [x, g.node("Sigmoid", [x], hint)], hint)
    elif name == "hard_sigmoid":   # relu6(z + 3) / 6, each step rounded as autoenc rounds it
        shifted = g.node("Add", [x, _scalar(g, 3.0, f"{hint}/three")], hint)
        clipped = g.node("Clip", [shifted, _scalar(g, 0.0, f"{hint}/min"), _scalar(g, 6.0, f"{hint}/max")], hint)
        out = g.node("Div", [clipped, _scalar(g, 6.0, f"{hint}/six")], hint)
    elif name == "relu6":
        out = g.node("Clip", [x, _scalar(g, 0.0, f"{hint}/min"), _scalar(g, 6.0, f"{hint}/max")], hint)
    if out is None:
        raise ValueError(f"The activation {act!r} has no ONNX export")
    return _Tensor(out, t.shape, t.layout)


# --- layers: each takes (graph, layer, input _Tensors, output shape) and returns the output _Tensor ------

def _conv(g, layer, args, out_shape):
    """Conv2D, Conv1D, Conv2DTranspose and Conv1DTranspose as ONNX Conv / ConvTranspose on channels
    first, pads explicit (TensorFlow's 'same' puts the odd one after; 'causal' pads k - 1 before)."""
    x = g.layout(args[0], "first")
    transpose = isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose))
    spatial = len(layer.kernel_size)
    kernel = layer.params["kernel"]
    # autoenc (k..., cin, filters) or transposed (k..., filters, cin) -> ONNX (filters, cin, k...) or
    # (cin, filters, k...): the two channel axes first, in reverse order, then the window
    w = kernel.transpose((spatial + 1, spatial) + tuple(range(spatial)))
    inputs = [x.name, g.const(w, f"{layer.name}/kernel")]
    if layer.use_bias:
        inputs.append(g.const(layer.params["bias"], f"{layer.name}/bias"))
    in_sizes, out_sizes = x.shape[1:1 + spatial], out_shape[1:1 + spatial]
    before, after, extra = [], [], []
    for size_in, size_out, k, s in zip(in_sizes, out_sizes, layer.kernel_size, layer.strides):
        if transpose:   # the pads of the forward convolution from size_out to size_in
            pb, pa, _ = conv_padding(size_out, k, s, layer.padding)
            # ONNX: out = s (in - 1) + output_padding + k - pb - pa; the rest is output_padding
            extra.append(size_out - (s * (size_in - 1) + k) + pb + pa)
        else:
            pb, pa, _ = conv_padding(size_in, k, s, layer.padding)
        before.append(pb)
        after.append(pa)
    attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.strides), pads=before + after,
                 dilations=[1] * spatial)
    if transpose:
        attrs["output_padding"] = extra
    z = g.node("ConvTranspose" if transpose else "Conv", inputs, layer.name, **attrs)
    return activation(g, layer.activation, _Tensor(z, out_shape, "first"), layer.name)


def _dense(g, layer, args, out_shape):
    """y = activation(x @ kernel + bias) over the last axis: MatMul (which broadcasts over the leading
    axes) on channels last."""
    x = g.layout(args[0], "last")
    z = g.node("MatMul", [x.name, g.const(layer.params["kernel"], f"{layer.name}/kernel")], layer.name)
    if layer.use_bias:
        z = g.node("Add", [z, g.const(layer.params["bias"], f"{layer.name}/bias")], layer.name)
    return activation(g, layer.activation, _Tensor(z, out_shape, "last"), layer.name)


def _pool_pads(layer, x):
    spatial = len(layer.pool_size)
    before, after = [], []
    for size, k, s in zip(x.shape[1:1 + spatial], layer.pool_size, layer.strides):
        pb, pa, _ = conv_padding(size, k, s, layer.padding)
        before.append(pb)
        after.append(pa)
    return before + after


def _max_pool(g, layer, args, out_shape):
    """MaxPool on channels first; padded positions never win (ONNX pads MaxPool with -inf)."""
    x = g.layout(args[0], "first")
    y = g.node("MaxPool", [x.name], layer.name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
               pads=_pool_pads(layer, x))
    return _Tensor(y, out_shape, "first")


def _average_pool(g, layer, args, out_shape):
    """AveragePool on channels first with count_include_pad=0: TensorFlow's 'same' averages only the
    positions inside the input."""
    x = g.layout(args[0], "first")
    y = g.node("AveragePool", [x.name], layer.name, kernel_shape=list(layer.pool_size),
               strides=list(layer.strides), pads=_pool_pads(layer, x), count_include_pad=0)
    return _Tensor(y, out_shape, "first")


def _upsampling(g, layer, args, out_shape):
    """y[.., r, ..] = x[.., r // size, ..]: Resize, nearest, with x_in = floor(x_out / size)
    (asymmetric coordinates), in the input's layout."""
    x = args[0]
    sizes = layer.size if isinstance(layer.size, tuple) else (layer.size,)
    scales = np.ones(x.rank, np.float32)
    for k, s in enumerate(sizes):
        scales[x.axis(1 + k)] = s
    y = g.node("Resize", [x.name, "", g.const(scales, f"{layer.name}/scales")], layer.name, mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return _Tensor(y, out_shape, x.layout)


def _zero_padding(g, layer, args, out_shape):
    """Pad with zeros along the two spatial axes, in the input's layout."""
    x = args[0]
    pads = np.zeros((2, x.rank), np.int64)
    for k, (top, bottom) in enumerate(layer.padding):
        pads[:, x.axis(1 + k)] = top, bottom
    y = g.node("Pad", [x.name, g.ints(pads.ravel(), f"{layer.name}/pads")], layer.name, mode="constant")
    return _Tensor(y, out_shape, x.layout)


def _cropping(g, layer, args, out_shape):
    """Slice off the borders along the two spatial axes, in the input's layout."""
    x = args[0]
    starts, ends, axes = [], [], []
    for k, (top, bottom) in enumerate(layer.cropping):
        starts.append(top)
        ends.append(x.shape[1 + k] - bottom)
        axes.append(x.axis(1 + k))
    y = g.node("Slice", [x.name, g.ints(starts, f"{layer.name}/starts"), g.ints(ends, f"{layer.name}/ends"),
                         g.ints(axes, f"{layer.name}/axes")], layer.name)
    return _Tensor(y, out_shape, x.layout)


def _flatten(g, layer, args, out_shape):
    """Flatten in channels-last order (the order autoenc's and Keras' Dense weights expect)."""
    x = g.layout(args[0], "last")
    return _Tensor(g.node("Flatten", [x.name], layer.name, axis=1), out_shape)


def _reshape(g, layer, args, out_shape):
    """Reshape in channels-last order to (batch, *target); 0 keeps the (dynamic) batch."""
    x = g.layout(args[0], "last")
    shape = g.ints([0] + list(out_shape[1:]), f"{layer.name}/shape")
    return _Tensor(g.node("Reshape", [x.name, shape], layer.name), out_shape)


def _batch_norm(g, layer, args, out_shape):
    """y = x * inv + shift per channel (along ``axis``), with inv and shift computed as autoenc computes
    them at inference (in float64, rounded once to float32)."""
    x = args[0]
    mean = layer.params["moving_mean"].astype(np.float64)
    var = layer.params["moving_variance"].astype(np.float64)
    gamma = layer.params["gamma"].astype(np.float64) if layer.scale else np.ones_like(mean)
    beta = layer.params["beta"].astype(np.float64) if layer.center else np.zeros_like(mean)
    inv = gamma * (1.0 / np.sqrt(var + layer.epsilon))
    shift = beta - mean * inv
    # shape (c, 1, ..) along the channel's position in x's layout, broadcast over the other axes
    ax = x.axis(layer.axis)
    bshape = [1] * (x.rank - 1)
    bshape[ax - 1] = mean.shape[0]
    scaled = g.node("Mul", [x.name, g.const(inv.astype(np.float32).reshape(bshape), f"{layer.name}/inv")], layer.name)
    y = g.node("Add", [scaled, g.const(shift.astype(np.float32).reshape(bshape), f"{layer.name}/shift")], layer.name)
    return _Tensor(y, out_shape, x.layout)


def _dropout(g, layer, args, out_shape):
    """Identity at inference: no node."""
    return args[0]


def _activation_layer(g, layer, args, out_shape):
    act = layer.activation if isinstance(layer, L.Activation) else layer.to_activation()
    return activation(g, act, args[0], layer.name)


def _prelu(g, layer, args, out_shape):
    """PRelu with alpha (the input's shape without the batch, 1 on the shared axes) in x's layout."""
    x = args[0]
    slope = x.moved(layer.params["alpha"])
    return _Tensor(g.node("PRelu", [x.name, g.const(slope, f"{layer.name}/alpha")], layer.name), out_shape, x.layout)


def _add(g, layer, args, out_shape):
    """x1 + x2 + ..., added left to right as autoenc adds them, in the first input's layout."""
    xs = [g.layout(t, args[0].layout) for t in args]
    y = xs[0].name
    for t in xs[1:]:
        y = g.node("Add", [y, t.name], layer.name)
    return _Tensor(y, out_shape, xs[0].layout)


def _concatenate(g, layer, args, out_shape):
    xs = [g.layout(t, args[0].layout) for t in args]
    y = g.node("Concat", [t.name for t in xs], layer.name, axis=xs[0].axis(layer.axis))
    return _Tensor(y, out_shape, xs[0].layout)


def _sampling(g, layer, args, out_shape):
    """z = z_mean + exp(0.5 * z_log_var) * eps with eps ~ N(0, 1) drawn at every run (RandomNormalLike,
    as Sampling draws at every call); onnxruntime's generator, so not autoenc's draws."""
    mean, log_var = args[0], g.layout(args[1], args[0].layout)
    eps = g.node("RandomNormalLike", [mean.name], layer.name, mean=0.0, scale=1.0)
    std = g.node("Exp", [g.node("Mul", [log_var.name, _scalar(g, 0.5, f"{layer.name}/half")], layer.name)], layer.name)
    z = g.node("Add", [mean.name, g.node("Mul", [std, eps], layer.name)], layer.name)
    return _Tensor(z, out_shape, mean.layout)


_EXPORTERS = {
    L.Sampling: _sampling,
    L.Conv2D: _conv, L.Conv1D: _conv, L.Conv2DTranspose: _conv, L.Conv1DTranspose: _conv,
    L.Dense: _dense,
    L.MaxPooling2D: _max_pool, L.MaxPooling1D: _max_pool, L.AveragePooling2D: _average_pool,
    L.UpSampling2D: _upsampling, L.UpSampling1D: _upsampling,
    L.ZeroPadding2D: _zero_padding, L.Cropping2D: _cropping,
    L.Flatten: _flatten, L.Reshape: _reshape,
    L.BatchNormalization: _batch_norm, L.Dropout: _dropout,
    L.Activation: _activation_layer, L.LeakyReLU: _activation_layer, L.ELU: _activation_layer,
    L.ReLU: _activation_layer, L.Softmax: _activation_layer, L.PReLU: _prelu,
    L.Add: _add, L.Concatenate: _concatenate,
}
SUPPORTED_LAYERS = tuple(sorted(cls.__name__ for cls in _EXPORTERS)) + ("InputLayer", "Model", "Sequential")


def _walk(g, model, inputs):
    """Write the nodes of ``model`` (sub-models inlined, recursively) reading ``inputs`` (_Tensors, one per
    model input); returns one _Tensor per entry of ``model.outputs``."""
    from autoenc.models.model import Model
    values = {id(t): x for t, x in zip(model.inputs, inputs)}
    for node in model.nodes:
        layer = node.layer
        args = [values[id(t)] for t in node.inputs]
        outs = list(node.output) if isinstance(node.output, (list, tuple)) else [node.output]
        if isinstance(layer, Model):
            results = _walk(g, layer, args)
        else:
            exporter = _EXPORTERS.get(type(layer))   # the exact class: a subclass may compute something else
            if exporter is None:
                raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) cannot be exported to ONNX: "
                                 f"autoenc exports the layers {', '.join(SUPPORTED_LAYERS)}")
            results = [exporter(g, layer, args, outs[0].shape)]
        for t, x in zip(outs, results):
            values[id(t)] = x
    return [values[id(t)] for t in model.outputs]


def _signature(model, input_signature):
    """One (batch, *shape) per model input: the batch None (dynamic) or an int, from ``input_signature``
    (None, or one spec or a list of specs: a shape tuple, a KerasTensor, or anything with ``.shape``
    and ``.dtype`` such as keras.InputSpec or tf.TensorSpec, as Keras' export accepts)."""
    own = [tuple(t.shape) for t in model.inputs]
    if input_signature is None:
        return own
    specs = input_signature
    if not isinstance(specs, (list, tuple)) or (specs and (specs[0] is None or isinstance(specs[0], (int, np.integer)))):
        specs = [specs]   # one spec: a KerasTensor, an InputSpec, or one shape tuple (None, 28, 28, 1)
    if len(specs) == 1 and isinstance(specs[0], list) and len(own) > 1:   # Keras' [[spec1, spec2]]
        specs = specs[0]
    if len(specs) != len(own):
        raise ValueError(f"input_signature has {len(specs)} entries; model {model.name!r} has {len(own)} input(s) "
                         f"{[tuple(s) for s in own]}")
    shapes = []
    for spec, expected in zip(specs, own):
        dtype = getattr(spec, "dtype", None)
        if dtype is not None and str(getattr(dtype, "name", dtype)) not in ("float32", "<dtype: 'float32'>"):
            raise ValueError(f"input_signature: autoenc exports float32 inputs, got dtype {dtype} in {spec!r}")
        shape = getattr(spec, "shape", spec)
        node = getattr(spec, "node", None)
        if isinstance(getattr(node, "layer", None), L.InputLayer):   # Input(shape, batch_size=n): its batch_shape
            shape = node.layer.batch_shape
        try:
            shape = tuple(None if d is None else int(d) for d in shape)
        except TypeError:
            raise TypeError(f"input_signature entries must be shapes or specs with a .shape, got {spec!r}") from None
        if len(shape) != len(expected) or shape[1:] != expected[1:]:
            raise ValueError(f"input_signature shape {shape} does not fit model {model.name!r}, whose input is "
                             f"{expected} (only the batch, the first entry, may differ: None or a size)")
        if shape[0] is not None and shape[0] < 1:
            raise ValueError(f"input_signature batch size must be None or positive, got {shape}")
        shapes.append(shape)
    return shapes


def to_onnx(model, input_signature=None, opset_version=None):
    """The ONNX ModelProto of ``model`` (an autoenc Model, built), for inference.

    Inputs are named after the model's Input layers, outputs after the layers producing
    ``model.outputs``, all float32 in autoenc's channels-last layout; the batch dimension is dynamic
    ('batch') unless ``input_signature`` fixes it. ``opset_version`` defaults to DEFAULT_OPSET (17);
    13 up to the installed onnx's newest are accepted. Raises ValueError naming a layer that cannot
    be exported, ImportError (naming the extra) without the onnx package."""
    onnx = require_onnx()
    helper = onnx.helper
    from autoenc.models.model import Model
    if not isinstance(model, Model):
        raise TypeError(f"to_onnx expects an autoenc Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built yet: call it on data (or build(input_shape)) "
                         "before exporting it")
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset_version is None else opset_version
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset_version must be an int from {MIN_OPSET} to {newest} (the installed onnx's "
                         f"newest), got {opset_version!r}")
    for layer in model.flat_layers():
        if layer.dtype != np.float32:
            raise ValueError(f"autoenc exports float32 models to ONNX; layer {layer.name!r} is {layer.dtype}")
    shapes = _signature(model, input_signature)
    g = _Graph(onnx, int(opset))
    inputs, graph_inputs = [], []
    for t, shape in zip(model.inputs, shapes):
        name = g.unique(t.node.layer.name)
        inputs.append(_Tensor(name, t.shape))
        dims = ["batch" if shape[0] is None else shape[0]] + list(shape[1:])
        graph_inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    results = _walk(g, model, inputs)
    graph_outputs = []
    for t, result in zip(model.outputs, results):
        result = g.layout(result, "last")
        name = g.unique(t.node.layer.name)
        g.nodes.append(helper.make_node("Identity", [result.name], [name], name=f"{name}/output"))
        dims = ["batch" if shapes[0][0] is None else shapes[0][0]] + list(t.shape[1:])
        graph_outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    graph = helper.make_graph(g.nodes, model.name, graph_inputs, graph_outputs, initializer=g.initializers)
    from autoenc import __version__
    proto = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                                          producer_name="autoenc", producer_version=__version__,
                                          doc_string=f"autoenc model {model.name!r}, exported for inference")
    return proto


def export_onnx(model, filepath, verbose=None, input_signature=None, opset_version=None):
    """Write ``model`` as an ONNX file at ``filepath``, atomically (autoenc.files.atomic_write: the file is
    the complete graph or, on any error, what was there before). Arguments as Keras' ``export_onnx``:
    ``verbose`` (None: True) prints where the file went; ``input_signature`` and ``opset_version`` as
    :func:`to_onnx`. Returns None, as Keras does."""
    proto = to_onnx(model, input_signature=input_signature, opset_version=opset_version)
    data = proto.SerializeToString()
    files.atomic_write(filepath, lambda f: f.write(data))
    if verbose is None or verbose:
        print(f"Saved artifact at '{filepath}'.")
