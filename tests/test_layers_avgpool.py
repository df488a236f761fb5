"""AveragePooling2D: kernels against their naive twins (hypothesis), tiny cases by hand ('same' averages
only the valid positions, as TensorFlow), gradient checks, adjoint tests, saving, live Keras parity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autoenc
from autoenc import layers
from autoenc.gradcheck import gradcheck
from autoenc.kernels import avgpool as K
from autoenc.kernels.convolution import conv_padding
from live_keras import import_keras


@st.composite
def pool_cases(draw):
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    padding = draw(st.sampled_from(["same", "valid"]))
    h = draw(st.integers(ph if padding == "valid" else 1, 10))
    w = draw(st.integers(pw if padding == "valid" else 1, 10))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    return (n, h, w, c), (ph, pw), (sh, sw), padding, draw(st.integers(0, 2**31))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=pool_cases())
def test_kernels_match_naive(dtype, case):
    (n, h, w, c), (ph, pw), (sh, sw), padding, seed = case
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, h, w, c)).astype(dtype)
    pt, _, oh = conv_padding(h, ph, sh, padding)
    pl, _, ow = conv_padding(w, pw, sw, padding)
    y = np.full((n, oh, ow, c), np.nan, dtype)
    K.avgpool2d_forward(x, ph, pw, sh, sw, pt, pl, y)
    eps = np.finfo(dtype).eps
    # a sum of at most ph*pw terms rounded at each addition, then one division: (ph*pw + 1) eps of max|x|
    tol = (ph * pw + 1) * eps * np.abs(x).max()
    assert np.all(np.abs(y - K.avgpool2d_forward_naive(x, (ph, pw), (sh, sw), padding)) <= tol)
    dy = g.standard_normal((n, oh, ow, c)).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)
    K.avgpool2d_backward(dy, ph, pw, sh, sw, pt, pl, dx)
    # each dx sums at most ceil(ph/sh)*ceil(pw/sw) shares dy/count, each rounded once, then added
    k = -(-ph // sh) * -(-pw // sw)
    tol = 2 * k * eps * np.abs(dy).max()
    assert np.all(np.abs(dx - K.avgpool2d_backward_naive(dy, x.shape, (ph, pw), (sh, sw), padding)) <= tol)


def test_same_padding_averages_only_valid_positions():
    """3x3 input, 2x2 pool, stride 2, 'same': output 2x2; the last row and column of windows hang over
    the bottom/right halo and average 2, 2 and 1 values."""
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    y = layers.AveragePooling2D(padding="same")(x)[0, :, :, 0]
    assert y.tolist() == [[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9.0]]
    assert layers.AveragePooling2D()(x)[0, :, :, 0].tolist() == [[(1 + 2 + 4 + 5) / 4]]


def test_backward_by_hand():
    layer = layers.AveragePooling2D(padding="same")
    layer(np.zeros((1, 3, 3, 1), np.float32))
    dx = layer.backward(np.array([[[[4.0], [2.0]], [[2.0], [1.0]]]], np.float32))[0, :, :, 0]
    assert dx.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 1]]


CONFIGS = [((2, 2), None, "valid"), ((2, 2), None, "same"), ((3, 3), (2, 2), "same"), ((3, 2), (1, 2), "valid"),
           ((2, 3), (3, 1), "same")]


def linear_adjoint_error(layer, shape, seed):
    """|<f(u), v> - <u, f^T v>| / (||f(u)|| ||v||) in float64 for a linear layer f, so f(u) = J u
    exactly (no finite difference) and f^T v is backward(v). Relative to the norms, not to <f(u), v>,
    which random u, v can make arbitrarily small; float64 rounding keeps it near 1e-16."""
    g = np.random.default_rng(seed)
    layer.dtype = np.dtype(np.float64)
    u = g.standard_normal(shape)
    fu = np.array(layer(u), copy=True)
    v = g.standard_normal(fu.shape)
    ftv = layer.backward(v)
    return abs(np.sum(fu * v) - np.sum(u * ftv)) / (np.linalg.norm(fu) * np.linalg.norm(v))


@pytest.mark.parametrize("pool_size, strides, padding", CONFIGS)
def test_gradients_and_adjoint(rng, pool_size, strides, padding):
    x = rng.standard_normal((2, 7, 6, 3))
    assert max(gradcheck(layers.AveragePooling2D(pool_size, strides, padding), x).values()) < 1e-8
    for seed in range(3):
        assert linear_adjoint_error(layers.AveragePooling2D(pool_size, strides, padding), x.shape, seed) < 1e-13


def test_defaults_and_errors():
    layer = layers.AveragePooling2D()
    assert (layer.pool_size, layer.strides, layer.padding) == ((2, 2), (2, 2), "valid")
    assert layers.AvgPool2D is layers.AveragePooling2D
    with pytest.raises(ValueError, match="larger than the input"):
        layers.AveragePooling2D(3)(np.zeros((1, 2, 5, 1), np.float32))
    with pytest.raises(ValueError, match="padding must be"):
        layers.AveragePooling2D(padding="full")
    with pytest.raises(ValueError, match="expects input"):
        layers.AveragePooling2D()(np.zeros((4, 4), np.float32))


def test_model_saves_and_loads(rng, tmp_path):
    inp = layers.Input(shape=(7, 7, 2))
    model = autoenc.Model(inp, layers.AveragePooling2D(3, 2, "same")(layers.Conv2D(2, 1)(inp)))
    model.save(tmp_path / "m.autoenc")
    loaded = autoenc.models.load_model(tmp_path / "m.autoenc")
    x = rng.standard_normal((2, 7, 7, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.keras
@pytest.mark.parametrize("pool_size, strides, padding", CONFIGS)
def test_keras_parity(rng, pool_size, strides, padding):
    """Forward and dx against Keras through GradientTape: at most 4 float32 roundings of terms up to
    max|x| (tolerance 1e-6 relative; measured 0 forward, <= 1 ulp backward)."""
    tf, keras = import_keras()
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    kl = keras.layers.AveragePooling2D(pool_size, strides, padding)
    al = layers.AveragePooling2D(pool_size, strides, padding)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yk = kl(xt)
        r = tf.constant(rng.standard_normal(yk.shape).astype(np.float32))
        loss = tf.reduce_sum(yk * r)
    ya = al(x)
    assert ya.shape == tuple(yk.shape)
    np.testing.assert_allclose(ya, yk.numpy(), rtol=0, atol=1e-6 * np.abs(yk.numpy()).max())
    dxk = tape.gradient(loss, xt).numpy()
    np.testing.assert_allclose(al.backward(r.numpy()), dxk, rtol=0, atol=1e-6 * np.abs(dxk).max())
