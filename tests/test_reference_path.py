"""The reference path: ``autoenc.set_reference_kernels(True)`` runs every layer, and so whole models and
their training, through the slow, obvious ``*_naive`` kernels; both paths must agree.

Tolerances follow from the arithmetic. A sum of K float32 products, added in any order, is within
(K + 2) * eps * S of the float64 sum (S the sum of the absolute values of the terms, eps = 1.2e-7),
and the naive kernels sum in float64 and round once; so each comparison below bounds the difference
elementwise by (K + 2) * eps * S, with S computed by the naive kernel on |x|, |w|, |dy|.
"""
import numpy as np
import pytest

import autoenc
from autoenc import kernels, layers
from autoenc.kernels import convolution, pooling, upsampling
from autoenc.kernels.conv_forward import conv2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive
from autoenc.kernels.conv_weight_grad import conv2d_backward_kernel_naive
from autoenc.models import seed_autoencoder

EPS32 = float(np.finfo(np.float32).eps)


def test_the_switch_and_its_context_manager():
    assert not autoenc.kernels.reference_kernels_enabled()
    with autoenc.reference_kernels():
        assert kernels.reference_kernels_enabled()
        with autoenc.reference_kernels(False):
            assert not kernels.reference_kernels_enabled()
        assert kernels.reference_kernels_enabled()
    assert not kernels.reference_kernels_enabled()
    autoenc.set_reference_kernels(True)
    try:
        assert kernels.reference_kernels_enabled()
    finally:
        autoenc.set_reference_kernels(False)
    with pytest.raises(TypeError, match="True or False, got 'yes'"):
        autoenc.set_reference_kernels("yes")


def _spy_naive_and_forbid_fast(monkeypatch):
    """Count calls of every naive function the layers reach; make every fast kernel raise."""
    calls = {}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"the fast kernel {name} ran on the reference path")
        return fail

    for module in (convolution, pooling, upsampling):
        for name in dir(module):
            if name.endswith("_naive"):
                monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
            elif name in ("conv2d_forward", "conv2d_forward_padded", "conv2d_forward_phases", "conv2d_backward_dz",
                          "conv2d_backward_kernel_chunks",
                          "conv2d_backward_input_padded", "pad_into", "sigmoid_forward", "sigmoid_backward",
                          "maxpool2d_forward", "maxpool2d_backward", "maxpool2d_backward_relu_dz", "upsample2d_forward",
                          "upsample2d_backward"):
                monkeypatch.setattr(module, name, forbidden(name))
    return calls


def test_training_runs_through_the_naive_functions_only(monkeypatch):
    model = seed_autoencoder()
    model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    calls = _spy_naive_and_forbid_fast(monkeypatch)
    with autoenc.reference_kernels():
        loss = model.train_on_batch(x, x)
        model.predict(x, verbose=0)
    assert np.isfinite(loss)
    # 7 convolutions, 2 poolings, 2 upsamplings: one forward each per train step and per predict,
    # one backward each per train step (the first convolution needs no input gradient)
    assert calls == {"conv2d_forward_naive": 14, "conv2d_backward_kernel_naive": 7, "conv2d_backward_bias_naive": 7,
                     "conv2d_backward_input_naive": 6, "maxpool2d_forward_naive": 4, "maxpool2d_backward_naive": 2,
                     "upsample2d_forward_naive": 4, "upsample2d_backward_naive": 2}


def _seed_pair(dtype, loss):
    """Two seed models (tests/fixtures/parity_models.py, which takes a dtype) with the same weights."""
    import parity_models
    fast = parity_models.seed_model(autoenc, dtype=dtype)
    ref = parity_models.seed_model(autoenc, dtype=dtype)
    ref.set_weights(fast.get_weights())
    for m in (fast, ref):
        m.compile(optimizer="adam", loss=loss)
    return fast, ref


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.mark.parametrize("loss", ["mean_squared_error", "binary_crossentropy"])
def test_seed_model_float64_forward_backward_and_training_agree(loss):
    """Float64: per layer the two paths differ by at most (K + 2) * 2.2e-16 of the terms' size, K <= 144
    (3 x 3 x 16), so about 3e-14 per layer and 5e-13 over the 14 passes of a step: outputs and gradients to
    1e-10. An Adam step moves a weight by lr * g / (|g| + epsilon), whose derivative in g is at most
    lr / epsilon = 1e4: a gradient error of 5e-13 * |g| moves a weight by at most 5e-9 |g| <= 1e-10 (|g| < 0.02
    here), three steps 3e-10 of weights of size 0.1 to 1: weights to 1e-8."""
    fast, ref = _seed_pair("float64", loss)
    x = np.random.default_rng(1).random((6, 28, 28, 1))
    y_fast = fast.predict(x, verbose=0)
    with autoenc.reference_kernels():
        y_ref = ref.predict(x, verbose=0)
    assert _rel(y_fast, y_ref) < 1e-10
    for step in range(3):
        l_fast = fast.train_on_batch(x, x)
        with autoenc.reference_kernels():
            l_ref = ref.train_on_batch(x, x)
        assert abs(l_fast - l_ref) <= 1e-10 * abs(l_ref), step
        if step == 0:   # the gradients of the first step, from the same weights
            for lf, lr in zip(fast.layers, ref.layers):
                for name in lf.grads:
                    assert _rel(lf.grads[name], lr.grads[name]) < 1e-10, (lf.name, name)
    for wf, wr in zip(fast.get_weights(), ref.get_weights()):
        assert _rel(wf, wr) < 1e-8


def test_seed_model_float32_forward_agrees():
    """Float32 forward pass of seed_autoencoder: each convolution adds at most (K + 2) * eps of its terms'
    size (K <= 144: 1.7e-5), ReLU, max and nearest-neighbour copies add nothing, the sigmoid a few ulps and
    shrinks errors by 4; the layers' weights (Glorot, |w| sums about 1 per output) keep errors from
    growing, so 7 layers stay within 7 * 1.7e-5 = 1.2e-4 of the output's scale."""
    model = seed_autoencoder()
    x = np.random.default_rng(2).random((5, 28, 28, 1), dtype=np.float32)
    y_fast = model.predict(x, verbose=0)
    with autoenc.reference_kernels():
        y_ref = model.predict(x, verbose=0)
    assert y_ref.dtype == np.float32
    assert np.abs(y_fast - y_ref).max() <= 1.2e-4


# (h, w, cin, filters, kernel, strides, padding, activation): odd sizes, strides 1-3, kernels 1-5
ODD_LAYERS = [
    (9, 11, 3, 17, (4, 2), (2, 3), "same", "relu"),
    (9, 11, 17, 3, (5, 1), (3, 2), "valid", "sigmoid"),
    (5, 3, 1, 1, (1, 1), (1, 1), "valid", None),
    (13, 12, 16, 8, (2, 4), (1, 2), "same", "tanh"),
    (6, 7, 8, 16, (5, 5), (1, 1), "same", "relu"),
    (3, 2, 17, 1, (3, 3), (1, 1), "same", "sigmoid"),
    (10, 10, 1, 3, (1, 2), (3, 1), "valid", "relu"),
    (7, 7, 8, 9, (3, 3), (3, 3), "same", None),
]


@pytest.mark.parametrize("case", ODD_LAYERS, ids=str)
def test_conv2d_layer_paths_agree_on_odd_shapes(case):
    h, w, cin, filters, ks, strides, padding, act = case
    g = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32)
    x = g.standard_normal((3, h, w, cin)).astype(np.float32)
    conv = layers.Conv2D(filters, ks, strides=strides, padding=padding, activation=act,
                         bias_initializer="glorot_uniform")
    conv(x)  # build
    kernel, bias = conv.params["kernel"], conv.params["bias"]
    k_terms = ks[0] * ks[1] * cin
    # S: the size of the terms of each pre-activation; dz: the bound on its float32 error
    s_z = conv2d_forward_naive(np.abs(x), np.abs(kernel), np.abs(bias), strides, padding)
    dz_err = (k_terms + 2) * EPS32 * s_z
    y_fast = conv(x).astype(np.float64)
    with autoenc.reference_kernels():
        y_ref = conv(x).astype(np.float64)
    # relu, tanh and sigmoid are 1-Lipschitz; both sides round the activation (4 ulps of y)
    assert np.all(np.abs(y_fast - y_ref) <= dz_err + 4 * EPS32 * np.abs(y_ref)), case

    z64 = conv2d_forward_naive(x, kernel, bias, strides, padding)
    dy = g.standard_normal(y_ref.shape).astype(np.float32)
    if act == "relu":   # where rounding may put z on either side of 0, the ReLU's mask is a coin toss
        dy[np.abs(z64) <= 2 * dz_err] = 0
    conv(x)
    dx_fast = conv.backward(dy).astype(np.float64)
    dk_fast, db_fast = conv.grads["kernel"].astype(np.float64), conv.grads["bias"].astype(np.float64)
    with autoenc.reference_kernels():
        conv(x)
        dx_ref = conv.backward(dy).astype(np.float64)
    dk_ref, db_ref = conv.grads["kernel"].astype(np.float64), conv.grads["bias"].astype(np.float64)
    # dz = dy * f'(y): f' of sigmoid (y(1-y)) and tanh (1-y^2) changes by at most 2|dy| per unit of y
    y_err = dz_err + 4 * EPS32 * np.abs(y_ref)
    smooth = act in ("sigmoid", "tanh")
    ddz = 2 * np.abs(dy) * y_err + 4 * EPS32 * np.abs(dy) if smooth else np.zeros(dy.shape)
    adz = np.abs(dy) * (0.25 if act == "sigmoid" else 1.0)   # |dz| <= |dy| * max f'
    n_pix = dy.shape[0] * dy.shape[1] * dy.shape[2]
    # each gradient: its inputs' error carried through (a linear map of |ddz|), plus its own sum's rounding
    tol_dk = conv2d_backward_kernel_naive(np.abs(x), ddz, ks, strides, padding) + \
        (n_pix + 2) * EPS32 * conv2d_backward_kernel_naive(np.abs(x), adz, ks, strides, padding)
    assert np.all(np.abs(dk_fast - dk_ref) <= tol_dk), case
    tol_db = ddz.sum(axis=(0, 1, 2)) + (n_pix + 2) * EPS32 * adz.sum(axis=(0, 1, 2))
    assert np.all(np.abs(db_fast - db_ref) <= tol_db), case
    terms_dx = ks[0] * ks[1] * filters
    tol_dx = conv2d_backward_input_naive(ddz, np.abs(kernel), x.shape, strides, padding) + \
        (terms_dx + 2) * EPS32 * conv2d_backward_input_naive(adz, np.abs(kernel), x.shape, strides, padding)
    assert np.all(np.abs(dx_fast - dx_ref) <= tol_dx), case


@pytest.mark.parametrize("layer, shape", [
    (layers.MaxPooling2D((3, 2), strides=(2, 3), padding="same"), (3, 7, 8, 5)),
    (layers.MaxPooling2D((2, 2), padding="valid"), (2, 9, 5, 3)),
    (layers.UpSampling2D((3, 2)), (2, 5, 3, 4)),
], ids=["maxpool-same", "maxpool-valid", "upsampling"])
def test_pooling_and_upsampling_paths_agree(layer, shape):
    """Selection and copies are exact; the gradients add at most a few overlapping windows (maxpool with
    strides below the pool size) or sh * sw copies: (terms + 2) * eps of their size, terms <= 6."""
    g = np.random.default_rng(5)
    x = g.standard_normal(shape).astype(np.float32)
    y_fast = layer(x)
    dy = g.standard_normal(y_fast.shape).astype(np.float32)
    layer(x)
    dx_fast = layer.backward(dy).copy()
    with autoenc.reference_kernels():
        y_ref = layer(x)
        dx_ref = layer.backward(dy)
    assert y_ref.dtype == dx_ref.dtype == np.float32
    np.testing.assert_array_equal(y_fast, y_ref)
    if isinstance(layer, layers.MaxPooling2D):
        size = pooling.maxpool2d_backward_naive(np.abs(dy), layer._argmax, x.shape)
    else:
        size = upsampling.upsample2d_backward_naive(np.abs(dy), layer.size)
    assert np.all(np.abs(dx_fast - dx_ref) <= 8 * EPS32 * size)
