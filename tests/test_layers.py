"""Layers: shapes, float64 central-difference gradient checks for every parameter and activation,
adjoint tests, argument errors, and no mutation of inputs."""
import numpy as np
import pytest

from autoenc import layers
from autoenc.gradcheck import adjoint_check, gradcheck

TOL = 1e-6  # relative error of a float64 central difference; a wrong gradient gives ~1e-1


def check(layer, x):
    errors = gradcheck(layer, x)
    assert errors and all(e < TOL for e in errors.values()), errors
    return errors


@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh", "softmax"])
@pytest.mark.parametrize("kernel_size,strides,padding", [
    (3, 1, "same"), ((2, 3), (2, 1), "same"), (4, 3, "valid"), (1, 2, "valid"), (5, 2, "same")])
def test_conv2d_gradients(rng, activation, kernel_size, strides, padding):
    x = rng.standard_normal((2, 9, 8, 3))
    errors = check(layers.Conv2D(4, kernel_size, strides=strides, padding=padding, activation=activation), x)
    assert {"input"} | {k for k in errors if k.endswith(("/kernel", "/bias"))} == set(errors)


def test_conv2d_without_bias_and_linear_adjoint(rng):
    x = rng.standard_normal((2, 7, 7, 2))
    errors = check(layers.Conv2D(3, 3, padding="same", use_bias=False), x)
    assert not any(k.endswith("/bias") for k in errors)
    assert adjoint_check(layers.Conv2D(3, 3, strides=2, padding="same", use_bias=False), x) < 1e-8


def test_conv2d_shapes_match_keras_rules():
    conv = layers.Conv2D(16, (3, 3), activation="relu", padding="same")
    y = conv(np.zeros((2, 28, 28, 1), np.float32))
    assert y.shape == (2, 28, 28, 16) and y.dtype == np.float32
    assert conv.params["kernel"].shape == (3, 3, 1, 16) and conv.params["bias"].shape == (16,)
    assert conv.count_params() == 160
    assert layers.Conv2D(2, 3, strides=2).compute_output_shape((None, 9, 8, 1)) == (None, 4, 3, 2)
    assert layers.Conv2D(2, 3, strides=2, padding="same").compute_output_shape((None, 9, 8, 1)) == (None, 5, 4, 2)


@pytest.mark.parametrize("pool_size,strides,padding", [
    ((2, 2), None, "valid"), ((2, 2), None, "same"), ((3, 3), (2, 2), "same"), ((2, 3), (1, 2), "valid")])
def test_maxpooling_gradients_and_adjoint(rng, pool_size, strides, padding):
    x = rng.standard_normal((2, 7, 8, 3))
    check(layers.MaxPooling2D(pool_size, strides, padding), x)
    assert adjoint_check(layers.MaxPooling2D(pool_size, strides, padding), x) < 1e-8


def test_maxpooling_default_strides_are_pool_size():
    assert layers.MaxPooling2D((3, 2)).strides == (3, 2)
    assert layers.MaxPooling2D((2, 2), padding="same").compute_output_shape((None, 7, 7, 8)) == (None, 4, 4, 8)


@pytest.mark.parametrize("size", [(2, 2), (1, 3), 3])
def test_upsampling_gradients_and_adjoint(rng, size):
    x = rng.standard_normal((2, 4, 5, 3))
    check(layers.UpSampling2D(size), x)
    assert adjoint_check(layers.UpSampling2D(size), x) < 1e-8


@pytest.mark.parametrize("activation", ["linear", "relu", "sigmoid", "tanh", "softmax"])
def test_dense_gradients_2d_and_4d(rng, activation):
    check(layers.Dense(5, activation=activation), rng.standard_normal((4, 6)))
    dense = layers.Dense(3, activation=activation)
    errors = check(dense, rng.standard_normal((2, 3, 4, 6)))  # Keras applies Dense to the last axis
    assert dense.compute_output_shape((None, 3, 4, 6)) == (None, 3, 4, 3)
    assert "input" in errors


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "softmax", "linear"])
def test_activation_layer_gradients(rng, activation):
    check(layers.Activation(activation), rng.standard_normal((3, 4, 5)))


def test_flatten_and_reshape(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert layers.Flatten()(x).shape == (2, 60)
    check(layers.Flatten(), x)
    r = layers.Reshape((5, -1))
    assert r(x).shape == (2, 5, 12)
    check(layers.Reshape((12, 5)), x)
    with pytest.raises(ValueError, match="cannot reshape"):
        layers.Reshape((7, 7))(x)


def test_dropout_is_identity_at_inference_and_masks_in_training(rng):
    x = rng.standard_normal((64, 50)).astype(np.float32)
    d = layers.Dropout(0.25, seed=3)
    np.testing.assert_array_equal(d(x), x)
    y = np.array(d.forward(x, training=True), copy=True)
    dropped = y == 0
    assert 0.15 < dropped.mean() < 0.35
    np.testing.assert_allclose(y[~dropped], x[~dropped] / 0.75, rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = d.backward(dy)  # the same mask as the forward pass
    np.testing.assert_allclose(dx, np.where(dropped, 0, dy / 0.75), rtol=1e-6)
    with pytest.raises(ValueError, match="rate"):
        layers.Dropout(1.0)


def test_merge_layers_gradients(rng):
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    errors = gradcheck(layers.Add(), [a, b])
    assert errors["input[0]"] < TOL and errors["input[1]"] < TOL
    c = rng.standard_normal((2, 3, 2))
    errors = gradcheck(layers.Concatenate(), [a, c])
    assert errors["input[0]"] < TOL and errors["input[1]"] < TOL
    np.testing.assert_array_equal(layers.Concatenate()([a, c]), np.concatenate([a, c], -1).astype(np.float32))


@pytest.mark.parametrize("make", [
    lambda: layers.Conv2D(4, 3, padding="same", activation="relu"),
    lambda: layers.Conv2D(2, 2, strides=2, activation="sigmoid"),
    lambda: layers.MaxPooling2D(padding="same"),
    lambda: layers.UpSampling2D(),
    lambda: layers.Dense(3, activation="relu"),
    lambda: layers.Activation("tanh"),
    lambda: layers.Flatten(),
])
def test_layers_never_mutate_inputs_or_incoming_gradients(rng, make):
    layer = make()
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    x0 = x.copy()
    y = np.array(layer(x), copy=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy0 = dy.copy()
    layer.forward(x, training=True)
    layer.backward(dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)
    np.testing.assert_array_equal(layer(x), y)  # deterministic


def test_gradients_are_assigned_not_accumulated(rng):
    conv = layers.Conv2D(2, 3)
    x = rng.standard_normal((2, 5, 5, 1)).astype(np.float32)
    conv(x)  # builds the layer
    y = conv.forward(x)
    dy = np.ones_like(y)
    conv.backward(dy)
    first = conv.grads["kernel"].copy()
    conv.forward(x)
    conv.backward(dy)
    np.testing.assert_array_equal(conv.grads["kernel"], first)


@pytest.mark.parametrize("make,match", [
    (lambda: layers.Conv2D(0, 3), "filters"),
    (lambda: layers.Conv2D(4, (3, 0)), "kernel_size"),
    (lambda: layers.Conv2D(4, 3, strides=-1), "strides"),
    (lambda: layers.Conv2D(4, 3, padding="full"), "padding"),
    (lambda: layers.Conv2D(4, 3, activation="swishy"), "activation"),
    (lambda: layers.Conv2D(4, 3, kernel_initializer="nope"), "initializer"),
    (lambda: layers.Conv2D(4, 3, kernel_regularizer="l3"), "regularizer"),
    (lambda: layers.MaxPooling2D(0), "pool_size"),
    (lambda: layers.UpSampling2D((2, 2, 2)), "size"),
    (lambda: layers.Dense(-3), "units"),
    (lambda: layers.Dense(3, bogus=1), "unexpected keyword"),
])
def test_bad_hyperparameters_raise_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("kernel_size,strides,padding,upsampled", [
    (3, 1, "same", False), ((2, 3), (2, 1), "same", False), (3, 1, "valid", False), (3, 1, "same", True),
    (3, 1, "valid", True)])
def test_conv2d_inference_pass_keeps_no_padded_input(rng, kernel_size, strides, padding, upsampled):
    """forward(training=False) pads each sample into a halo of the kernel's own instead of keeping the
    batch's padded input (which only the kernel gradient reads): the same output bits, no work array
    of the padded batch, and a backward pass after it (which pads x again) gives the bits of one after
    forward(training=True)."""
    x = rng.standard_normal((5, 7, 6, 4)).astype(np.float32)
    conv = layers.Conv2D(6, kernel_size, strides=strides, padding=padding, activation="relu")
    conv(x[:1])
    forward = conv.forward_upsampled if upsampled else conv.forward
    h, w = (14, 12) if upsampled else (7, 6)
    kh, kw = (3, 3) if upsampled else conv.kernel_size
    pads = (h + kh - 1, w + kw - 1) if padding == "same" and not upsampled else (9, 8)
    runs = []
    for training in (False, True):
        y = forward(x, training=training).copy()
        kept = [a.shape for a in conv._kernels.workspace._arrays.values()]
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        dx = conv.backward(dy).copy()
        runs.append((y, dx, {k: g.copy() for k, g in conv.grads.items()}))
        if not training and padding == "same":
            assert not any(s[0] == 5 and s[1:3] == pads for s in kept), kept
    (y0, dx0, g0), (y1, dx1, g1) = runs
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(dx0, dx1)
    for k in g0:
        np.testing.assert_array_equal(g0[k], g1[k])


def test_conv2d_rejects_wrong_channels_after_build():
    conv = layers.Conv2D(4, 3)
    conv(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"expects input \(batch, height, width, 1\), got \(None, 8, 8, 3\)"):
        conv(np.zeros((1, 8, 8, 3), np.float32))


def test_pool_larger_than_input_is_refused():
    x = layers.Input(shape=(3, 3, 1))
    with pytest.raises(ValueError, match="larger than the input"):
        layers.MaxPooling2D((4, 4))(x)


def test_weights_by_name_and_set_weights_checks():
    conv = layers.Conv2D(2, 3)
    conv(np.zeros((1, 5, 5, 1), np.float32))
    assert list(conv.params) == ["kernel", "bias"] and list(conv.grads) == ["kernel", "bias"]
    with pytest.raises(ValueError, match="expects 2 weight arrays"):
        conv.set_weights([np.zeros((3, 3, 1, 2))])
    with pytest.raises(ValueError, match="shape"):
        conv.set_weights([np.zeros((3, 3, 2, 2)), np.zeros(2)])
    conv.set_weights([np.ones((3, 3, 1, 2)), np.full(2, 0.5)])
    assert conv.params["kernel"].dtype == np.float32 and conv.params["bias"][0] == 0.5


# --- properties over random configurations ------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def layer_and_input(draw):
    kind = draw(st.sampled_from(["conv", "pool", "up", "dense", "flatten", "activation"]))
    h, w, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 4))
    padding = draw(st.sampled_from(["same", "valid"]))
    if kind == "conv":
        k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        if padding == "valid":
            h, w = max(h, k[0]), max(w, k[1])
        layer = layers.Conv2D(draw(st.integers(1, 5)), k, strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                              padding=padding, activation=draw(st.sampled_from(["relu", "sigmoid", None])))
    elif kind == "pool":
        p = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if padding == "valid":
            h, w = max(h, p[0]), max(w, p[1])
        layer = layers.MaxPooling2D(p, strides=draw(st.sampled_from([None, 1, 2])), padding=padding)
    elif kind == "up":
        layer = layers.UpSampling2D((draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    elif kind == "dense":
        layer = layers.Dense(draw(st.integers(1, 6)), activation=draw(st.sampled_from(["tanh", "softmax", None])))
    elif kind == "flatten":
        layer = layers.Flatten()
    else:
        layer = layers.Activation(draw(st.sampled_from(["relu", "sigmoid", "tanh", "softmax"])))
    return layer, (draw(st.integers(1, 3)), h, w, c), draw(st.integers(0, 2**31))


@given(case=layer_and_input())
def test_layer_properties(case):
    """Output shape = compute_output_shape; inputs and incoming gradients untouched; forward deterministic."""
    layer, shape, seed = case
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape).astype(np.float32)
    x0 = x.copy()
    y = layer(x)
    assert y.shape == layer.compute_output_shape((shape[0],) + shape[1:])
    assert y.shape[1:] == layer.compute_output_shape((None,) + shape[1:])[1:]
    assert y.dtype == np.float32
    dy = g.standard_normal(y.shape).astype(np.float32)
    dy0 = dy.copy()
    layer.forward(x, training=True)
    dx = layer.backward(dy)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)
    np.testing.assert_array_equal(layer(x), y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("make", [lambda: layers.Conv2D(2, 3, padding="same"), lambda: layers.MaxPooling2D(2),
                                  lambda: layers.UpSampling2D(2), lambda: layers.Dense(3), lambda: layers.Flatten()],
                         ids=["Conv2D", "MaxPooling2D", "UpSampling2D", "Dense", "Flatten"])
def test_eager_call_refuses_nan_and_inf(make, bad):
    """Issue 17.15: layer(array) with a NaN returned NaN; it is refused with the layer and the first bad index."""
    layer = make()
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match=r"input contains NaN or Inf \(first at index \(1, 2, 3, 0\)"):
        layer(x)
    assert np.all(np.isfinite(layer(np.zeros((2, 4, 4, 1), np.float32))))


def test_eager_call_on_a_list_names_the_input():
    x = np.zeros((1, 2, 2, 3), np.float32)
    bad = x.copy()
    bad[0, 1, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"'add_nan' input 1 contains NaN or Inf \(first at index \(0, 1, 0, 2\)"):
        layers.Add(name="add_nan")([x, bad])


@pytest.mark.parametrize("make", [
    lambda: layers.Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="tanh"),
    lambda: layers.Conv2D(2, 3, padding="valid", activation="relu"),
    lambda: layers.Conv2D(1, 2, strides=3, padding="same", activation="sigmoid", use_bias=False),
    lambda: layers.MaxPooling2D((3, 2), strides=(2, 1), padding="same"),
    lambda: layers.UpSampling2D((2, 3)),
], ids=["conv-tanh", "conv-relu", "conv-sigmoid-nobias", "maxpool", "upsampling"])
def test_reference_path_gradients(rng, make):
    """The slow, obvious path (autoenc.set_reference_kernels) has correct gradients too."""
    import autoenc
    with autoenc.reference_kernels():
        check(make(), rng.standard_normal((2, 7, 6, 2)))


@pytest.mark.keras
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_maxpooling_nan_matches_keras(padding):
    """NaN and -inf in max pooling, live against Keras (TensorFlow backend): the value ignores NaN and
    starts from the lowest finite number, the gradient goes to the window's first element when it is NaN."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    g = np.random.default_rng(7)
    x = g.standard_normal((2, 7, 9, 3)).astype(np.float32)
    x[g.random(x.shape) < 0.35] = np.nan
    x[g.random(x.shape) < 0.1] = -np.inf
    x[0, :3, :3, 0] = np.nan                     # a window of only NaN
    pool = layers.MaxPooling2D((3, 2), strides=(2, 2), padding=padding)
    pool(np.zeros_like(x))                       # build (an eager call may refuse NaN)
    y = pool.forward(x)
    dy = g.standard_normal(y.shape).astype(np.float32)
    dx = pool.backward(dy)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yt = keras.layers.MaxPooling2D((3, 2), strides=(2, 2), padding=padding)(xt)
        loss = tf.reduce_sum(yt * dy)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(dx, tape.gradient(loss, xt).numpy())   # dy added in the same order


def test_a_built_merging_layer_can_be_called_symbolically_again():
    """An Add or Concatenate built in one model is called on new tensors of the same shapes for a second
    model (its shapes are a list in the call, a tuple once built); other shapes are still refused."""
    from autoenc.layers import Add, Concatenate, Dense, Input
    from autoenc.models import Model
    rng = np.random.default_rng(0)
    for merge in (Add(), Concatenate()):
        a, b = Input((4,)), Input((4,))
        first = Model([a, b], merge([a, b]))
        c = Input((4,))
        d = Dense(4)(c)
        second = Model(c, merge([c, d]))
        x, y = rng.random((3, 4), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
        expect = (lambda u, v: u + v) if isinstance(merge, Add) else (lambda u, v: np.concatenate([u, v], -1))
        np.testing.assert_array_equal(first.predict([x, y], verbose=0), expect(x, y))
        np.testing.assert_allclose(second.predict(x, verbose=0), expect(x, second.layers[1](x).numpy()),
                                   rtol=1e-6)
        with pytest.raises(ValueError, match="was built for inputs of shape"):
            merge([Input((5,)), Input((5,))])
