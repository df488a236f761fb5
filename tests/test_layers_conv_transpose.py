"""Conv2DTranspose: Keras' output-size rule, hand-computed cases, the adjoint identity with Conv2D,
the fast path against the naive one (hypothesis sweep), float64 gradient checks, errors, config and
saving.

Tolerances: in float64 a sum of K products, in any order, is within (K + 2) * eps64 * S of the exact
sum (S: the sum of the terms' absolute values, eps64 = 2.2e-16); S is computed with the naive kernels
on |x|, |w|, |dy|.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autoenc
from autoenc import layers
from autoenc.gradcheck import adjoint_check, gradcheck
from autoenc.kernels.conv_forward import conv2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive
from autoenc.kernels.conv_weight_grad import conv2d_backward_kernel_naive
from autoenc.kernels.padding import conv_padding, conv_transpose_output_size

EPS64 = float(np.finfo(np.float64).eps)
TOL = 1e-6  # relative error of a float64 central difference; a wrong gradient gives ~1e-1


# --- the output-size rule ------------------------------------------------------------------------

@pytest.mark.parametrize("size,k,s,padding,op,expected", [
    (7, 3, 2, "same", None, 14), (7, 3, 1, "same", None, 7), (7, 4, 3, "same", None, 21),
    (7, 3, 2, "valid", None, 15), (7, 1, 3, "valid", None, 21), (7, 5, 2, "valid", None, 17),
    (7, 3, 2, "same", 0, 13), (7, 3, 2, "same", 1, 14), (7, 4, 3, "same", 2, 20),
    (7, 3, 2, "valid", 1, 16), (7, 2, 3, "valid", 2, 22),
])
def test_output_size_is_keras_rule(size, k, s, padding, op, expected):
    """Keras' _get_output_shape_given_tf_padding, computed by hand: 'same' gives size*s (or (size-1)*s
    + k%2 + op), 'valid' (size-1)*s + k + op (op = max(s - k, 0) when None)."""
    assert conv_transpose_output_size(size, k, s, padding, op) == expected
    assert conv_padding(expected, k, s, padding)[2] == size   # the convolution it is the adjoint of


@given(size=st.integers(1, 12), k=st.integers(1, 6), s=st.integers(1, 4), padding=st.sampled_from(["same", "valid"]),
       op=st.one_of(st.none(), st.integers(0, 3)))
def test_output_size_inverts_the_convolution_or_refuses(size, k, s, padding, op):
    if op is not None and op >= s:
        return
    try:
        out = conv_transpose_output_size(size, k, s, padding, op)
    except ValueError as e:
        assert "output_padding" in str(e)
        return
    assert conv_padding(out, k, s, padding)[2] == size


def test_even_kernel_same_output_padding_0_is_refused_with_the_numbers():
    """Keras' rule gives (7-1)*2 + 0 + 0 = 12, whose 'same' convolution has 6 outputs, not 7: TensorFlow
    refuses these shapes too."""
    with pytest.raises(ValueError, match=r"Keras' rule gives 12, whose convolution has length 6"):
        conv_transpose_output_size(7, 2, 2, "same", 0)
    with pytest.raises(ValueError, match="Conv2DTranspose 'ct' on input"):
        layers.Conv2DTranspose(2, 2, strides=2, padding="same", output_padding=0, name="ct")(np.zeros((1, 7, 7, 1)))


# --- small cases by hand ------------------------------------------------------------------------

def test_hand_computed_cases():
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    ones = [np.ones((2, 2, 1, 1)), np.zeros(1)]
    ct = layers.Conv2DTranspose(1, 2, dtype="float64")   # stride 1, valid: every x spreads over a 2x2 block
    ct(x)
    ct.set_weights(ones)
    np.testing.assert_array_equal(ct(x)[0, :, :, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])
    ct2 = layers.Conv2DTranspose(1, 2, strides=2, dtype="float64")   # stride 2: blocks side by side
    ct2(x)
    ct2.set_weights(ones)
    np.testing.assert_array_equal(ct2(x)[0, :, :, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    # a kernel [[1, 2], [3, 4]] placed at each input pixel (y[r*s + i, c*s + j] += x[r, c] w[i, j])
    ct2.set_weights([np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1), np.array([0.5])])
    y = ct2(np.array([[1.0, 0.0], [0.0, -1.0]]).reshape(1, 2, 2, 1))[0, :, :, 0]
    np.testing.assert_array_equal(y, [[1.5, 2.5, 0.5, 0.5], [3.5, 4.5, 0.5, 0.5],
                                      [0.5, 0.5, -0.5, -1.5], [0.5, 0.5, -2.5, -3.5]])


def test_shapes_weights_and_keras_layout():
    ct = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")
    y = ct(np.zeros((2, 7, 5, 3), np.float32))
    assert y.shape == (2, 14, 10, 8) and y.dtype == np.float32
    assert ct.params["kernel"].shape == (3, 3, 8, 3) and ct.params["bias"].shape == (8,)
    assert ct.count_params() == 3 * 3 * 8 * 3 + 8
    assert layers.Conv2DTranspose(2, (2, 3), strides=(3, 1), output_padding=(1, 0)).compute_output_shape(
        (None, 4, 5, 1)) == (None, 12, 7, 2)


# --- the adjoint of Conv2D ----------------------------------------------------------------------

@pytest.mark.parametrize("k,s,padding,op", [(3, 1, "same", None), (3, 2, "same", None), ((4, 3), (3, 2), "same", None),
                                            (3, 2, "valid", None), ((2, 5), (3, 1), "valid", (2, 0)),
                                            (5, 3, "same", 1), (1, 2, "valid", None)])
@pytest.mark.parametrize("reference", [False, True])
def test_adjoint_of_conv2d_with_the_same_kernel(k, s, padding, op, reference):
    """<Conv2D(u), v> = <u, Conv2DTranspose(v)> with one shared kernel, no bias, linear, float64: both
    sides are the same sum of n*h*w*kh*kw*cin*cout products, to (K + 2) eps64 of its terms' size."""
    g = np.random.default_rng(3)
    ct = layers.Conv2DTranspose(3, k, strides=s, padding=padding, output_padding=op, use_bias=False, dtype="float64")
    v = g.standard_normal((2, 5, 4, 4))
    with autoenc.reference_kernels(reference):
        ct(v)
        kernel = ct.params["kernel"]
        conv = layers.Conv2D(4, k, strides=s, padding=padding, use_bias=False, dtype="float64")
        u = g.standard_normal(ct(v).shape)
        conv(u)
        conv.set_weights([kernel])        # (kh, kw, 3, 4): Conv2D maps 3 channels to 4, the transpose 4 to 3
        cu = conv(u)
        assert cu.shape == v.shape
        lhs, rhs = float(np.sum(cu * v)), float(np.sum(u * ct(v)))
    terms = float(np.sum(conv2d_forward_naive(np.abs(u), np.abs(kernel), np.zeros(4), conv.strides, padding) * np.abs(v)))
    assert abs(lhs - rhs) <= (u.size * kernel.size + 2) * EPS64 * terms


# --- fast against naive: a hypothesis sweep ------------------------------------------------------

@st.composite
def transpose_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["same", "valid"]))
    op = draw(st.one_of(st.none(), st.tuples(st.integers(0, sh - 1), st.integers(0, sw - 1))))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    try:
        for size, k, s, p in zip((h, w), (kh, kw), (sh, sw), op or (None, None)):
            conv_transpose_output_size(size, k, s, padding, p)
    except ValueError:
        op = None   # shapes Keras refuses; without output_padding every shape has an output
    return dict(n=draw(st.integers(1, 3)), h=h, w=w, cin=draw(st.integers(1, 10)), filters=draw(st.integers(1, 17)),
                kernel_size=(kh, kw), strides=(sh, sw), padding=padding, output_padding=op,
                activation=draw(st.sampled_from([None, "relu", "sigmoid", "tanh"])), seed=draw(st.integers(0, 99)))


@given(transpose_cases())
def test_fast_path_matches_the_naive_path(case):
    """Forward, dx, dkernel and dbias of the fast kernels against the naive ones, float64. Each is a sum
    of at most K = kh*kw*cin (forward), kh*kw*filters (dx) or n*h*w (dkernel) products, so within
    (K + 2) eps64 of its terms' size; the activation and its derivative add a few ulps (and are
    Lipschitz: 1 for relu, tanh, sigmoid, 2 for their derivatives)."""
    g = np.random.default_rng(case["seed"])
    n, h, w, cin = case["n"], case["h"], case["w"], case["cin"]
    ct = layers.Conv2DTranspose(case["filters"], case["kernel_size"], strides=case["strides"], padding=case["padding"],
                                output_padding=case["output_padding"], activation=case["activation"],
                                bias_initializer="glorot_uniform", dtype="float64")
    x = g.standard_normal((n, h, w, cin))
    y_fast = ct(x)
    kernel, bias = ct.params["kernel"], ct.params["bias"]
    with autoenc.reference_kernels():
        y_ref = ct(x)
    strides, padding = case["strides"], case["padding"]
    kh, kw = case["kernel_size"]
    big = max(kh * kw * max(cin, case["filters"]), n * h * w) + 2
    s_z = conv2d_backward_input_naive(np.abs(x), np.abs(kernel), y_ref.shape, strides, padding) + np.abs(bias)
    z_err = big * EPS64 * s_z
    assert np.all(np.abs(y_fast - y_ref) <= z_err + 8 * EPS64 * np.abs(y_ref))
    dy = g.standard_normal(y_ref.shape)
    if case["activation"] == "relu":   # where z is within rounding of 0 the mask may go either way
        z = conv2d_backward_input_naive(x, kernel, y_ref.shape, strides, padding) + bias
        dy[np.abs(z) <= 2 * z_err + 1e-300] = 0
    ct(x)
    dx_fast = ct.backward(dy).copy()
    dk_fast, db_fast = ct.grads["kernel"].copy(), ct.grads["bias"].copy()
    with autoenc.reference_kernels():
        ct(x)
        dx_ref = ct.backward(dy)
    dk_ref, db_ref = ct.grads["kernel"], ct.grads["bias"]
    # dz differs by at most 2|dy| * (y's difference) + a few ulps: carried linearly into each gradient
    ddz = 2 * np.abs(dy) * (z_err + 8 * EPS64 * np.abs(y_ref)) + 8 * EPS64 * np.abs(dy)
    adz = np.abs(dy) + ddz
    tol_dx = conv2d_forward_naive(ddz, np.abs(kernel), np.zeros(cin), strides, padding) + \
        big * EPS64 * conv2d_forward_naive(adz, np.abs(kernel), np.zeros(cin), strides, padding)
    assert np.all(np.abs(dx_fast - dx_ref) <= tol_dx)
    tol_dk = conv2d_backward_kernel_naive(ddz, np.abs(x), (kh, kw), strides, padding) + \
        big * EPS64 * conv2d_backward_kernel_naive(adz, np.abs(x), (kh, kw), strides, padding)
    assert np.all(np.abs(dk_fast - dk_ref) <= tol_dk)
    tol_db = ddz.sum(axis=(0, 1, 2)) + (dy[..., 0].size + 2) * EPS64 * adz.sum(axis=(0, 1, 2))
    assert np.all(np.abs(db_fast - db_ref) <= tol_db)


def test_float32_paths_agree():
    """Float32: the fast kernels sum in float32 (error (K + 2) eps32 S), the naive ones in float64 and
    round once."""
    eps32 = float(np.finfo(np.float32).eps)
    g = np.random.default_rng(8)
    ct = layers.Conv2DTranspose(9, (3, 4), strides=(2, 3), padding="same", bias_initializer="glorot_uniform")
    x = g.standard_normal((3, 6, 5, 17)).astype(np.float32)
    y_fast = ct(x)
    with autoenc.reference_kernels():
        y_ref = ct(x)
    assert y_ref.dtype == np.float32
    s_z = conv2d_backward_input_naive(np.abs(x), np.abs(ct.params["kernel"]), y_ref.shape, ct.strides, "same") + \
        np.abs(ct.params["bias"])
    assert np.all(np.abs(y_fast.astype(np.float64) - y_ref) <= (3 * 4 * 17 + 2) * eps32 * s_z + eps32 * np.abs(y_ref))


def test_training_through_the_reference_path_calls_only_naive_kernels(monkeypatch):
    """With the reference switch a model with Conv2DTranspose trains through the *_naive functions."""
    from autoenc.kernels import conv_transpose
    calls = {}
    for name in dir(conv_transpose):
        fn = getattr(conv_transpose, name)
        if name.endswith("_naive"):
            monkeypatch.setattr(conv_transpose, name, (lambda f, k: lambda *a, **kw: (
                calls.__setitem__(k, calls.get(k, 0) + 1), f(*a, **kw))[1])(fn, name))
        elif name in ("conv2d_forward", "conv2d_backward_dz", "conv2d_backward_kernel_chunks", "dilate_pad_into",
                      "flip_kernel_into", "sigmoid_forward", "sigmoid_backward"):
            monkeypatch.setattr(conv_transpose, name, lambda *a, **kw: pytest.fail("a fast kernel ran"))
    inputs = autoenc.Input(shape=(4, 4, 2))
    x = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu")(inputs)
    outputs = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")(x)
    model = autoenc.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy")
    data = np.random.default_rng(0).random((2, 4, 4, 2), dtype=np.float32)
    with autoenc.reference_kernels():
        loss = model.train_on_batch(data, np.random.default_rng(1).random((2, 8, 8, 1), dtype=np.float32))
    assert np.isfinite(loss)
    assert calls == {"conv2d_backward_input_naive": 2, "conv2d_backward_kernel_naive": 2,
                     "conv2d_backward_bias_naive": 2, "conv2d_forward_naive": 1}   # the first layer needs no dx


# --- float64 gradient checks ---------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("kernel_size,strides,padding,output_padding", [
    (3, 1, "same", None), ((2, 3), (2, 1), "valid", None), (3, 2, "same", 1), (4, 3, "valid", (2, 1)),
    (1, 2, "same", None), (5, 2, "valid", None)])
def test_gradients(rng, activation, kernel_size, strides, padding, output_padding):
    x = rng.standard_normal((2, 5, 4, 3))
    layer = layers.Conv2DTranspose(4, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                                   activation=activation, bias_initializer="glorot_uniform")
    errors = gradcheck(layer, x)
    assert set(errors) == {"input", f"{layer.name}/kernel", f"{layer.name}/bias"}
    assert all(e < TOL for e in errors.values()), errors


def test_without_bias_and_linear_adjoint(rng):
    x = rng.standard_normal((2, 4, 5, 2))
    layer = layers.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False)
    errors = gradcheck(layer, x)
    assert set(errors) == {"input", f"{layer.name}/kernel"} and all(e < TOL for e in errors.values())
    assert adjoint_check(layers.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False), x) < 1e-8


def test_backward_does_not_mutate_its_inputs(rng):
    ct = layers.Conv2DTranspose(4, 3, strides=2, activation="sigmoid")
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    x0 = x.copy()
    y = ct(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy0 = dy.copy()
    ct.forward(x)
    ct.backward(dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)


# --- arguments, config, models -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 0}, "filters must be a positive int, got 0"),
    ({"dilation_rate": 2}, r"dilation_rate=\(1, 1\) only, got 2"),
    ({"output_padding": 2, "strides": 2}, "output_padding is 2 and strides is 2"),
    ({"output_padding": -1}, "output_padding must be None, an int >= 0"),
    ({"padding": "causal"}, "padding must be 'valid' or 'same', got 'causal'"),
    ({"data_format": "channels_first"}, "channels_last"),
])
def test_bad_arguments(kwargs, match):
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        layers.Conv2DTranspose(**args)


def test_bad_inputs():
    ct = layers.Conv2DTranspose(2, 3, name="up")
    with pytest.raises(ValueError, match=r"expects input \(batch, height, width, channels\), got \(None, 5, 5\)"):
        ct(np.zeros((1, 5, 5)))
    ct(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"expects input \(batch, height, width, 3\), got \(None, 5, 5, 2\)"):
        ct(np.zeros((1, 5, 5, 2)))


def test_config_round_trip_and_saved_model(tmp_path):
    ct = layers.Conv2DTranspose(4, (3, 2), strides=(2, 1), padding="same", output_padding=(1, 0), activation="relu",
                                use_bias=False, kernel_regularizer="l2", name="up")
    config = ct.get_config()
    assert {k: config[k] for k in ("filters", "kernel_size", "strides", "padding", "output_padding", "data_format",
                                   "dilation_rate", "activation", "use_bias")} == {
        "filters": 4, "kernel_size": (3, 2), "strides": (2, 1), "padding": "same", "output_padding": (1, 0),
        "data_format": "channels_last", "dilation_rate": (1, 1), "activation": "relu", "use_bias": False}
    inputs = autoenc.Input(shape=(5, 6, 3))
    model = autoenc.Model(inputs, layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")(inputs))
    assert model.layers[-1].output_shape == (None, 10, 12, 2)
    printed = []
    model.summary(print_fn=printed.append)
    lines = "\n".join(printed).splitlines()
    assert any("up (Conv2DTranspose)" in line and "(None, 10, 12, 2)" in line and line.split()[-1] == "56"
               for line in lines), lines
    path = str(tmp_path / "m.autoenc")
    model.save(path)
    back = autoenc.models.load_model(path)
    assert type(back.layers[-1]) is layers.Conv2DTranspose and back.layers[-1].strides == (2, 2)
    x = np.random.default_rng(0).random((2, 5, 6, 3), dtype=np.float32)
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
