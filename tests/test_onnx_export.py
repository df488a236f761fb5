"""ONNX export (autoenc/onnx_export.py): onnxruntime runs the exported graph with autoenc's predictions.

Every comparison is against a bound derived from the arithmetic, element by element, propagated
through the model layer by layer (``error_bound``):

- a float32 sum of K products, in any order, is within (K + 1) u S of the exact sum (u = eps / 2,
  S = sum of |terms|), so two implementations (autoenc's kernels, onnxruntime's MLAS) differ by at most
  (K + 2) eps S with the bias; two more eps S cover onnxruntime folding a following Mul / Add
  (BatchNormalization) into the kernel: (K + 4) eps S, S = |W| * |x| + |b| computed by the layer with
  |W|, |b|. An input already off by e (the layers before) moves the sum by at most |W| * e;
- an activation f moves an error e by at most Lip(f) e (relu, tanh 1, sigmoid 1/4, softmax 1/2 of the
  largest error along its axis, ...) and the two implementations of f differ by at most a handful of
  roundings of terms no bigger than |y|, |z| and 1: 8 eps (|y| + |z| + 1);
- max-pooling, copies (upsampling, padding, cropping, reshapes) carry errors and add none; an average
  of P terms adds (P + 2) eps of the average of |x|; BatchNormalization's x * inv + shift, 3 eps of
  |x inv| + |shift|.

The whole models then also meet the issue's figure: max|onnx - autoenc| / max|autoenc| <= 1e-5.
Skipped, with the reason, where onnx or onnxruntime is not installed (``pip install "autoenc[onnx]"``).
"""
import os
import sys

import numpy as np
import pytest

import autoenc
from autoenc import layers, onnx_export
from autoenc.models import Model, Sequential, seed_autoencoder
from autoenc.models.model import layer_entry, layer_from_entry

onnx = pytest.importorskip("onnx", reason='the ONNX export tests need onnx (pip install "autoenc[onnx]")')
ort = pytest.importorskip("onnxruntime", reason='the ONNX export tests need onnxruntime (pip install "autoenc[onnx]")')

from parity_models import rel_err, strided_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("keep_autoenc_random_state")
EPS = float(np.finfo(np.float32).eps)
TOL = 1e-5   # the figure, relative to the output's scale


@pytest.fixture(scope="module", autouse=True)
def _print_figures(request):
    """With AUTOENC_ONNX_FIGURES=1 (and -s), print each check's measured difference and derived bound."""
    yield
    if os.environ.get("AUTOENC_ONNX_FIGURES"):
        for check, (err, derived) in sorted(FIGURES.items()):
            print(f"  {check}: max rel diff {err:.2e} (derived bound {derived:.2e})")



def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run_onnx(model, xs, **kwargs):
    """The model exported (and checked by onnx.checker with shape inference), run by onnxruntime on
    ``xs`` (one array per model input); returns the list of outputs."""
    proto = onnx_export.to_onnx(model, **kwargs)
    onnx.checker.check_model(proto, full_check=True)
    s = session(proto)
    return s.run(None, {i.name: x for i, x in zip(s.get_inputs(), xs)})


# --- the bound ----------------------------------------------------------------------------------------

def clone(layer, weights, activation="linear"):
    """A new layer of layer's kind and arguments with ``weights`` and (if it has one) ``activation``."""
    entry = layer_entry(layer, [])
    config = {**entry["config"], "name": None}
    if "activation" in config:
        config["activation"] = activation
    c = layer_from_entry({**entry, "config": config}, {})
    c(np.zeros((1,) + tuple(layer.input_shape[1:]), np.float32))   # build
    c.set_weights(weights)
    return c


def run(layer, x):
    return np.array(layer.forward(np.ascontiguousarray(x, np.float32), training=False), np.float64)


def lipschitz(act, z, e):
    """A bound on |f(z + d) - f(z)| for |d| <= e, elementwise (f = act)."""
    name, p = act.name, act.params
    if name == "softmax":   # |dy_i| <= 2 y_i (1 - y_i) max|dz| <= max|dz| / 2 along the axis
        axes = p["axis"] if isinstance(p["axis"], tuple) else (p["axis"],)
        return 0.5 * np.broadcast_to(e.max(axis=axes, keepdims=True), e.shape)
    if name == "exponential":
        return np.exp(z) * np.expm1(e)
    lip = {"linear": 1, "sigmoid": 0.25, "tanh": 1, "softplus": 1, "softsign": 1, "silu": 1.1, "gelu": 1.13,
           "hard_sigmoid": 1 / 6, "relu6": 1, "selu": activations_selu_lip(),
           "leaky_relu": max(1.0, p.get("negative_slope", 0)), "elu": max(1.0, p.get("alpha", 1))}.get(name)
    if name == "relu":
        lip = max(1.0, p["negative_slope"])
    return lip * e


def activations_selu_lip():
    from autoenc.activations import SELU_ALPHA, SELU_SCALE
    return SELU_SCALE * SELU_ALPHA


def activation_error(act, z, y, e):
    """The error after ``act``: the input's error carried (Lipschitz) plus the two implementations'
    rounding of f (none for relu and linear: they are exact)."""
    carried = lipschitz(act, z, e)
    if act.name in ("linear",) or (act.name == "relu" and not act.uses_z):
        return carried
    return carried + 8 * EPS * (np.abs(y) + np.abs(z) + 1)


def window_terms(layer):
    k = int(np.prod(layer.kernel_size))
    cin = layer.input_shape[-1]
    return k * cin


def layer_bound(layer, x, e):
    """(y, bound): autoenc's output of ``layer`` on x (float64 copy) and the bound on |onnx - autoenc| of
    it, given the bound e on its input(s)."""
    from autoenc.activations import Activation
    lin = (layers.Conv2D, layers.Conv1D, layers.Conv2DTranspose, layers.Conv1DTranspose, layers.Dense)
    if isinstance(layer, lin):
        w = layer.get_weights()
        absw = [np.abs(w[0])] + [np.zeros_like(b) for b in w[1:]]
        magnitude = clone(layer, absw)
        z = run(clone(layer, w), x)
        y = run(layer, x)
        k = layer.input_shape[-1] if isinstance(layer, layers.Dense) else window_terms(layer)
        s = run(magnitude, np.abs(x)) + (np.abs(w[1]) if layer.use_bias else 0)
        ez = run(magnitude, e) + (k + 4) * EPS * s
        return y, activation_error(layer.activation, z, y, ez)
    if isinstance(layer, (layers.MaxPooling2D, layers.MaxPooling1D, layers.UpSampling2D, layers.UpSampling1D,
                          layers.Flatten, layers.Reshape, layers.Dropout, layers.ZeroPadding2D, layers.Cropping2D)):
        return run(layer, x), run(layer, e)
    if isinstance(layer, layers.AveragePooling2D):
        p = int(np.prod(layer.pool_size))
        return run(layer, x), run(layer, e) + (p + 2) * EPS * run(layer, np.abs(x))
    if isinstance(layer, layers.BatchNormalization):
        y = run(layer, x)
        # the same layer with |gamma|, no beta, no mean: x -> x |inv|
        zero_mean = clone(layer, [np.abs(p) if n == "gamma" else p if n == "moving_variance" else np.zeros_like(p)
                                  for n, p in layer.params.items()])
        inv_x = run(zero_mean, np.abs(x))            # |x inv|
        shift = np.abs(run(layer, np.zeros_like(x)))   # |shift| = |BN(0)|
        return y, run(zero_mean, e) + 3 * EPS * (inv_x + shift)
    if isinstance(layer, layers.PReLU):
        y = run(layer, x)
        lip = max(1.0, float(np.abs(layer.params["alpha"]).max()))
        return y, lip * e + 2 * EPS * np.abs(y)
    if isinstance(layer, (layers.Activation, layers.LeakyReLU, layers.ELU, layers.ReLU, layers.Softmax)):
        act = layer.activation if isinstance(layer, layers.Activation) else layer.to_activation()
        assert isinstance(act, Activation)
        x = np.asarray(x, np.float64)
        y = run(layer, x)
        return y, activation_error(act, x, y, e)
    if isinstance(layer, layers.Add):
        y = np.array(layer.forward([np.asarray(a, np.float32) for a in x]), np.float64)
        return y, sum(e) + len(x) * EPS * sum(np.abs(a) for a in x)
    if isinstance(layer, layers.Concatenate):
        y = np.array(layer.forward([np.asarray(a, np.float32) for a in x]), np.float64)
        return y, np.concatenate(e, axis=layer.axis)
    raise AssertionError(f"no bound for {type(layer).__name__}")


def error_bound(model, xs, es=None):
    """(outputs, bounds): autoenc's outputs of ``model`` on xs, layer by layer, and for each an elementwise
    bound on |onnx - autoenc| (``es``: the bounds on the inputs, zero by default)."""
    es = es or [np.zeros(x.shape) for x in xs]
    values = {id(t): (np.asarray(x, np.float64), e) for t, x, e in zip(model.inputs, xs, es)}
    for node in model.nodes:
        args = [values[id(t)] for t in node.inputs]
        if isinstance(node.layer, Model):
            ys, bs = error_bound(node.layer, [a[0] for a in args], [a[1] for a in args])
            values[id(node.output)] = ys[0], bs[0]
            continue
        x = [a[0] for a in args] if len(args) > 1 else args[0][0]
        e = [a[1] for a in args] if len(args) > 1 else args[0][1]
        values[id(node.output)] = layer_bound(node.layer, x, e)
    outs = [values[id(t)] for t in model.outputs]
    return [o[0] for o in outs], [o[1] for o in outs]


FIGURES = {}   # check -> (max relative difference, the derived bound's max / max|autoenc|), printed by -s


def assert_matches(check, model, xs, tol=TOL, **kwargs):
    """onnxruntime's outputs of the exported model within the derived bound of autoenc's predict (and,
    unless ``tol`` is None, within ``tol`` relative to the output's scale); returns the largest relative
    difference."""
    xs = [np.asarray(x, np.float32) for x in xs]
    got = run_onnx(model, xs, **kwargs)
    expected = model.predict(xs[0] if len(xs) == 1 else xs, verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    _, bounds = error_bound(model, xs)
    worst = derived = 0.0
    for k, (a, b, bound) in enumerate(zip(got, expected, bounds)):
        assert a.shape == b.shape, (check, a.shape, b.shape)
        diff = np.abs(a.astype(np.float64) - b)
        excess = diff - 1.01 * bound   # 1.01: the bound itself is computed in float32
        where = np.unravel_index(np.argmax(excess), diff.shape)
        assert np.all(excess <= 0), (f"{check}, output {k}: |onnx - autoenc| = {diff[where]:.3g} at {where} exceeds the "
                                     f"derived bound {bound[where]:.3g}")
        err = rel_err(a, b)
        assert tol is None or err <= tol, f"{check}, output {k}: max|onnx - autoenc| / max|autoenc| = {err:.3g} > {tol}"
        worst = max(worst, err)
        derived = max(derived, float(bound.max() / np.abs(b).max()))
    FIGURES[check] = worst, derived
    return worst


def assert_each_layer(check, model, xs):
    """Every layer of ``model`` (sub-models walked into) exported alone, as a one-layer model, and run by
    onnxruntime on autoenc's own input to that layer: the difference is then that layer's rounding
    alone, within its derived (local) bound. The whole-model check adds the wiring; this one pins each
    layer to the rounding of its own arithmetic, which the propagated bound cannot do for deep models."""
    values = {id(t): np.asarray(x, np.float32) for t, x in zip(model.inputs, xs)}
    for node in model.nodes:
        args = [values[id(t)] for t in node.inputs]
        layer = node.layer
        if isinstance(layer, Model):
            inner = dict(zip([id(t) for t in layer.inputs], args))
            sub_values = _walk_values(layer, inner)
            values[id(node.output)] = sub_values[id(layer.outputs[0])]
            assert_each_layer(check, layer, args)
            continue
        inputs = [layers.Input(shape=a.shape[1:]) for a in args]
        entry = layer_entry(layer, [])   # a copy of the layer (a built merge layer cannot be called again)
        twin = layer_from_entry({**entry, "config": {**entry["config"], "name": None}}, {})
        single = Model(inputs, twin(inputs[0] if len(inputs) == 1 else inputs))
        twin.set_weights(layer.get_weights())
        assert_matches(f"{check}: {type(layer).__name__} {layer.name!r} alone", single, args, tol=None)
        values[id(node.output)] = np.asarray(layer.forward(args[0] if len(args) == 1 else args), np.float32).copy()


def _walk_values(model, values):
    for node in model.nodes:
        args = [values[id(t)] for t in node.inputs]
        if isinstance(node.layer, Model):
            inner = _walk_values(node.layer, dict(zip([id(t) for t in node.layer.inputs], args)))
            values[id(node.output)] = inner[id(node.layer.outputs[0])]
        else:
            values[id(node.output)] = np.array(node.layer.forward(args[0] if len(args) == 1 else args), np.float32)
    return values


def data(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# --- whole models ----------------------------------------------------------------------------------

def test_seed_model_batch_1_and_7(tmp_path):
    """The seed model: one Transpose in and one out, inputs and outputs NHWC, the batch dynamic."""
    model = seed_autoencoder()
    proto = onnx_export.to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Transpose") == 2 and ops[0] == "Transpose"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 28, 28, 1]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
    x = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)
    for n in (1, 7):
        assert_matches(f"seed model, batch {n}", model, [x[:n]])
    assert_each_layer("seed model", model, [x])


def test_strided_flatten_dense_reshape():
    """Strided same/valid convolutions, upsampling, Flatten (NHWC order), Dense, Reshape."""
    model = strided_model(autoenc)
    x = np.random.default_rng(1).random((7, 28, 28, 1), dtype=np.float32)
    assert_matches("strided + Flatten/Dense/Reshape", model, [x])
    assert_each_layer("strided model", model, [x])
    ops = [n.op_type for n in onnx_export.to_onnx(model).graph.node]
    assert ops.count("Transpose") == 2   # in, and back to channels last before Flatten; Reshape ends NHWC


def transposed_model():
    inp = layers.Input(shape=(13, 11, 2))
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inp)                    # 7 x 6
    x = layers.Conv2D(5, (4, 2), strides=(2, 1), padding="same", activation="tanh")(x)            # 4 x 6
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)             # 8 x 12
    x = layers.Conv2DTranspose(4, (4, 3), strides=(2, 3), padding="valid", output_padding=(1, 2))(x)  # 19 x 38
    x = layers.Conv2DTranspose(3, 2, strides=3, padding="valid")(x)                                # 57 x 114
    x = layers.Conv2DTranspose(2, 5, strides=2, padding="same", output_padding=1, activation="sigmoid")(x)
    return Model(inp, x)


def test_transposed_convolutions():
    """Conv2DTranspose same/valid, output_padding, stride > kernel (output_padding by Keras' rule),
    even kernels with 'same' (the odd pad after): onnxruntime's output shape is autoenc's exactly."""
    model = transposed_model()
    assert model.output_shape == (None, 114, 228, 2)
    assert_matches("Conv2DTranspose model", model, [data((7, 13, 11, 2), 2)])
    assert_each_layer("Conv2DTranspose model", model, [data((7, 13, 11, 2), 2)])


def sequence_model():
    inp = layers.Input(shape=(29, 3))
    x = layers.Conv1D(6, 5, padding="causal", activation="relu")(inp)
    x = layers.Conv1D(6, 4, strides=2, padding="same", activation="tanh")(x)        # 15
    x = layers.MaxPooling1D(3, strides=2, padding="same")(x)                         # 8
    x = layers.Conv1D(5, 3, padding="valid", activation="elu")(x)                    # 6
    x = layers.MaxPooling1D(2)(x)                                                    # 3
    x = layers.UpSampling1D(3)(x)                                                    # 9
    x = layers.Conv1DTranspose(4, 3, strides=2, padding="same", activation="relu")(x)            # 18
    x = layers.Conv1DTranspose(3, 4, strides=3, padding="valid", output_padding=2)(x)           # 57
    x = layers.Conv1DTranspose(2, 2, strides=3, padding="valid", activation="sigmoid")(x)        # 171
    return Model(inp, x)


def test_one_dimensional_layers():
    """Conv1D (causal, strided same, valid), MaxPooling1D, UpSampling1D, Conv1DTranspose."""
    model = sequence_model()
    assert_matches("1-D model", model, [data((7, 29, 3), 3)])
    assert_each_layer("1-D model", model, [data((7, 29, 3), 3)])


def batchnorm_model():
    inp = layers.Input(shape=(12, 10, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.BatchNormalization(axis=1, center=False)(x)     # along the height: axis mapping
    x = layers.Conv2D(4, 3, strides=2, padding="valid", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(6)(x)
    x = layers.BatchNormalization(scale=False, epsilon=0.01)(x)
    x = layers.Dense(5, activation="softmax")(x)
    return Model(inp, x)


def test_batchnorm_at_inference_after_training():
    """BatchNormalization (channels, axis=1, without gamma, without beta, after Dense) with moving
    statistics made non-trivial by a few training steps."""
    model = batchnorm_model()
    model.compile(optimizer="adam", loss="mse")
    x = data((32, 12, 10, 3), 4, scale=2.0) + 1.5
    y = np.random.default_rng(5).random((32, 5), dtype=np.float32)
    for _ in range(5):
        model.train_on_batch(x, y)
    for bn in [l for l in model.layers if isinstance(l, layers.BatchNormalization)]:
        assert np.abs(bn.params["moving_mean"]).max() > 0.01 and np.abs(bn.params["moving_variance"] - 1).max() > 0.01
    assert_matches("BatchNormalization model", model, [x[:7]])
    assert_each_layer("BatchNormalization model", model, [x[:7]])


def test_pooling_padding_cropping_and_merging():
    """AveragePooling2D 'same' with remainders (padding not counted), MaxPooling2D 'valid' strided,
    ZeroPadding2D and Cropping2D asymmetric, Add and Concatenate (channels and height) across layouts."""
    inp = layers.Input(shape=(11, 9, 2))
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = layers.AveragePooling2D((3, 2), strides=(2, 2), padding="same")(a)          # 6 x 5
    b = layers.ZeroPadding2D(((1, 2), (0, 3)))(b)                                   # 9 x 8
    b = layers.Cropping2D(((0, 1), (2, 1)))(b)                                      # 8 x 5
    c = layers.MaxPooling2D((3, 3), strides=(1, 1), padding="valid")(a)             # 9 x 7
    c = layers.Cropping2D(((1, 0), (1, 1)))(c)                                      # 8 x 5
    d = layers.AveragePooling2D(2)(a)                                               # 5 x 4
    d = layers.ZeroPadding2D(((2, 1), (1, 0)))(d)                                   # 8 x 5
    s = layers.Add()([b, c, d])
    cat = layers.Concatenate()([s, b])                                              # 8 x 5 x 8
    cat2 = layers.Concatenate(axis=1)([cat, layers.Conv2D(8, 1)(cat)])              # 16 x 5 x 8
    flat = layers.Reshape((16, 40))(cat2)
    out = layers.Concatenate(axis=-1)([flat, layers.Dense(3)(flat)])                # Dense on a 3-D tensor
    model = Model(inp, out)
    assert_matches("pooling, padding, cropping, Add, Concatenate", model, [data((7, 11, 9, 2), 6)])
    assert_each_layer("pooling/padding/merging model", model, [data((7, 11, 9, 2), 6)])


ACTIVATION_NAMES = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "selu", "gelu", "softplus",
                    "softsign", "silu", "swish", "hard_sigmoid", "relu6", "exponential"]


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation(name, opset):
    """Each activation as a convolution's activation (channels first inside the graph: softmax over the
    channel axis) and as an Activation layer after a Dense (channels last), at opsets 13 (before Gelu
    had an operator), 17 (the default) and 20 (Gelu)."""
    inp = layers.Input(shape=(6, 5, 3))
    x = layers.Conv2D(4, 3, padding="same", activation=name, bias_initializer="random_normal")(inp)
    x = layers.Dense(3)(x)
    x = layers.Activation(name)(x)
    scale = 0.5 if name == "exponential" else 3.0
    model, xs = Model(inp, x), [data((7, 6, 5, 3), 7, scale)]
    assert_matches(f"activation {name}, opset {opset}", model, xs, opset_version=opset)
    if opset == onnx_export.DEFAULT_OPSET:
        assert_each_layer(f"activation {name}", model, xs)


@pytest.mark.parametrize("name", [n for n in ACTIVATION_NAMES if n != "exponential"])
def test_activations_at_saturating_inputs(name):
    """Inputs far out in the tails (sigmoid, softplus, elu, gelu underflow or saturate) and at the kinks."""
    inp = layers.Input(shape=(11,))
    x = np.array([[-100, -30, -5, -1e-3, -1e-30, 0, 1e-30, 1e-3, 5, 30, 88]], np.float32)
    assert_matches(f"activation {name} at saturating inputs", Model(inp, layers.Activation(name)(inp)), [x])


def test_activation_layers_with_arguments():
    """LeakyReLU, ELU, ReLU (max_value, threshold, negative_slope in every combination), Softmax over two
    axes, PReLU (one alpha per channel and one per element), an activation layer as activation=."""
    inp = layers.Input(shape=(6, 5, 3))
    x = layers.Conv2D(4, 3, padding="same", activation=layers.LeakyReLU(0.1))(inp)
    x = layers.ELU(0.7)(x)
    parts = [layers.ReLU(max_value=mv, negative_slope=ns, threshold=th)(x)
             for mv in (None, 1.5) for ns in (0.0, 0.2) for th in (0.0, 0.3)]
    x = layers.Concatenate()(parts)                                   # 32 channels
    x = layers.PReLU(alpha_initializer="random_normal", shared_axes=[1, 2])(x)
    x = layers.Conv2D(3, 1)(x)
    x = layers.PReLU(alpha_initializer="random_normal")(x)
    x = layers.LeakyReLU()(x)
    x = layers.Softmax(axis=[1, 2])(x)
    model, xs = Model(inp, x), [data((7, 6, 5, 3), 8, 2.0)]
    assert_matches("activation layers with arguments", model, xs)
    assert_each_layer("activation layers", model, xs)


class Denoise(Model):
    """TensorFlow's tutorial model, subclassed, with sub-models."""

    def __init__(self):
        super().__init__()
        self.encoder = Sequential([layers.Input(shape=(28, 28, 1)),
                                   layers.Conv2D(16, 3, activation="relu", padding="same", strides=2),
                                   layers.Conv2D(8, 3, activation="relu", padding="same", strides=2)])
        self.decoder = Sequential([layers.Conv2DTranspose(8, 3, strides=2, activation="relu", padding="same"),
                                   layers.Dropout(0.2),
                                   layers.Conv2DTranspose(16, 3, strides=2, activation="relu", padding="same"),
                                   layers.Conv2D(1, 3, activation="sigmoid", padding="same")])

    def call(self, x):
        return self.decoder(self.encoder(x))


def test_nested_and_subclassed_models_are_inlined():
    model = Denoise()
    x = np.random.default_rng(9).random((7, 28, 28, 1), dtype=np.float32)
    model(x[:1])   # traced
    assert_matches("subclassed Denoise (nested Sequentials)", model, [x])
    assert_each_layer("Denoise", model, [x])
    ops = [n.op_type for n in onnx_export.to_onnx(model).graph.node]
    assert ops.count("Transpose") == 2 and "Dropout" not in ops
    enc = model.encoder
    inp = layers.Input(shape=(28, 28, 1))
    chained = Model(inp, model.decoder(enc(inp)))
    assert_matches("functional decoder(encoder(x))", chained, [x])


def test_several_inputs():
    a, b = layers.Input(shape=(8, 8, 2), name="left"), layers.Input(shape=(8, 8, 2), name="right")
    y = layers.Conv2D(3, 3, padding="same")(layers.Add()([a, layers.Conv2D(2, 1)(b)]))
    model = Model([a, b], y)
    proto = onnx_export.to_onnx(model)
    assert [i.name for i in proto.graph.input] == ["left", "right"]
    assert_matches("two inputs", model, [data((7, 8, 8, 2), 10), data((7, 8, 8, 2), 11)])


# --- the interface -------------------------------------------------------------------------------------

def test_model_export_writes_atomically(tmp_path, capsys, monkeypatch):
    model = seed_autoencoder()
    path = tmp_path / "m.onnx"
    model.export(str(path), format="onnx")
    assert capsys.readouterr().out.strip() == f"Saved artifact at '{path}'."
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(12).random((3, 28, 28, 1), dtype=np.float32)
    assert rel_err(s.run(None, {s.get_inputs()[0].name: x})[0], model.predict(x, verbose=0)) <= TOL
    before = path.read_bytes()
    # a failure while writing leaves the previous file and no temporary beside it
    original = autoenc.files.atomic_write
    monkeypatch.setattr(onnx_export.files, "atomic_write",
                        lambda p, write: original(p, lambda f: (write(f), 1 / 0)))
    with pytest.raises(ZeroDivisionError):
        model.export(str(path), format="onnx", verbose=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_export_arguments_as_keras(tmp_path, capsys):
    model = seed_autoencoder()
    with pytest.raises(ValueError, match="format='onnx' only.*tf_saved_model"):
        model.export(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="format='onnx' only, got format='litert'"):
        model.export(str(tmp_path / "m"), format="litert")
    with pytest.raises(TypeError, match=r"\['opset'\]"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", opset=17)
    with pytest.raises(ValueError, match="opset_version must be an int from 13"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", opset_version=9)
    with pytest.raises(ValueError, match="is not built yet"):
        Denoise().export(str(tmp_path / "m.onnx"), format="onnx")
    model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False, opset_version=13)
    assert capsys.readouterr().out == ""
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 13


def test_input_signature_fixes_the_batch_or_refuses():
    model = seed_autoencoder()
    for spec in [(4, 28, 28, 1), [(4, 28, 28, 1)], layers.Input(shape=(28, 28, 1), batch_size=4)]:
        proto = onnx_export.to_onnx(model, input_signature=spec)
        dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert dims == [4, 28, 28, 1]
        assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [4, 28, 28, 1]
    with pytest.raises(ValueError, match=r"does not fit .* \(None, 28, 28, 1\)"):
        onnx_export.to_onnx(model, input_signature=(None, 32, 32, 1))
    with pytest.raises(ValueError, match="2 entries"):
        onnx_export.to_onnx(model, input_signature=[(None, 28, 28, 1), (None, 28, 28, 1)])
    with pytest.raises(ValueError, match="float32 inputs"):
        onnx_export.to_onnx(model, input_signature=layers.Input(shape=(28, 28, 1), dtype="float64"))


class Doubler(layers.Layer):
    def forward(self, x, training=False):
        return 2 * x


def test_a_layer_without_export_is_named(tmp_path):
    inp = layers.Input(shape=(4,))
    model = Model(inp, Doubler(name="doubler")(layers.Dense(3)(inp)))
    with pytest.raises(ValueError, match=r"Layer 'doubler' \(Doubler\) cannot be exported to ONNX"):
        model.export(str(tmp_path / "m.onnx"), format="onnx")
    assert not (tmp_path / "m.onnx").exists()
    inp = layers.Input(shape=(3,), dtype="float64")
    with pytest.raises(ValueError, match="float32 models.*float64"):
        onnx_export.to_onnx(Model(inp, layers.Dense(2, dtype="float64")(inp)))
    with pytest.raises(TypeError, match="expects an autoenc Model"):
        onnx_export.to_onnx(layers.Dense(2))


def test_without_onnx_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "autoenc\[onnx\]"'):
        seed_autoencoder().export("never.onnx", format="onnx")
    assert not os.path.exists("never.onnx")


def test_a_vae_encoder_exports_with_its_sampling():
    from autoenc.models import keras_io_vae
    vae = keras_io_vae(latent_dim=2)
    x = np.random.default_rng(3).random((400, 28, 28, 1), dtype=np.float32)
    session = ort.InferenceSession(onnx_export.to_onnx(vae.encoder).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    z_mean, z_log_var, z = session.run(None, {session.get_inputs()[0].name: x})
    ours = vae.encoder.predict(x, verbose=0)
    for got, expected in zip((z_mean, z_log_var), ours[:2]):
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    eps = ((z - z_mean) / np.exp(0.5 * z_log_var)).ravel()   # onnxruntime's draws, 800 of them
    # N(0, 1): the mean is within 5 standard errors (1/sqrt(n)), the std within 5 of its own (1/sqrt(2n))
    assert abs(eps.mean()) < 5 / np.sqrt(eps.size) and abs(eps.std() - 1) < 5 / np.sqrt(2 * eps.size)
    assert np.unique(eps).size == eps.size   # drawn, not a constant
