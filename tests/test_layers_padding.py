"""ZeroPadding2D and Cropping2D: shapes, argument forms, gradient checks, adjoint tests (each is the
other's adjoint), saving, and live Keras parity."""

import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.gradcheck import adjoint_check, gradcheck
from live_keras import import_keras

BORDERS = [1, (2, 0), ((1, 2), (0, 3)), ((0, 0), (2, 1))]
FULL = {1: ((1, 1), (1, 1)), (2, 0): ((2, 2), (0, 0)), ((1, 2), (0, 3)): ((1, 2), (0, 3)),
        ((0, 0), (2, 1)): ((0, 0), (2, 1))}


@pytest.mark.parametrize("arg", BORDERS)
def test_argument_forms(arg):
    assert layers.ZeroPadding2D(arg).padding == FULL[arg]
    assert layers.Cropping2D(arg).cropping == FULL[arg]


def test_defaults():
    assert layers.ZeroPadding2D().padding == ((1, 1), (1, 1))
    assert layers.Cropping2D().cropping == ((0, 0), (0, 0))


def test_padding_by_hand():
    x = np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1)
    y = layers.ZeroPadding2D(((1, 0), (0, 2)))(x)
    assert y[0, :, :, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [2, 3, 0, 0]]
    z = layers.Cropping2D(((1, 0), (0, 2)))(y)
    assert z[0, :, :, 0].tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("arg", BORDERS)
def test_gradients_and_adjoint(rng, arg):
    x = rng.standard_normal((2, 5, 6, 3))
    for layer in (layers.ZeroPadding2D(arg), layers.Cropping2D(arg)):
        assert max(gradcheck(layer, x).values()) < 1e-8
    assert adjoint_check(layers.ZeroPadding2D(arg), x) < 1e-8
    assert adjoint_check(layers.Cropping2D(arg), x) < 1e-8


@pytest.mark.parametrize("arg", BORDERS)
def test_backward_of_padding_is_cropping(rng, arg):
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    pad, crop = layers.ZeroPadding2D(arg), layers.Cropping2D(arg)
    y = pad(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(pad.backward(dy), crop(dy))
    crop(y)
    np.testing.assert_array_equal(crop.backward(x), pad(x))


def test_repeated_calls_keep_the_zero_border(rng):
    pad = layers.ZeroPadding2D(1)
    pad(rng.standard_normal((2, 3, 3, 1)))
    y = pad(rng.standard_normal((2, 3, 3, 1)))
    assert y[:, 0].tolist() == np.zeros((2, 5, 1)).tolist() and np.all(y[:, :, -1] == 0)


@pytest.mark.parametrize("cls, kwargs, error, match", [
    (layers.ZeroPadding2D, {"padding": -1}, ValueError, "cannot be negative"),
    (layers.ZeroPadding2D, {"padding": (1, 2, 3)}, ValueError, "should be an int"),
    (layers.ZeroPadding2D, {"padding": ((1, -1), (0, 0))}, ValueError, "1st entry of padding"),
    (layers.Cropping2D, {"cropping": "a"}, ValueError, "should be an int"),
    (layers.Cropping2D, {"cropping": ((1, 1), (1.5, 0))}, ValueError, "2nd entry of cropping"),
    (layers.ZeroPadding2D, {"data_format": "channels_first"}, ValueError, "channels_last"),
])
def test_argument_errors(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_input_errors():
    with pytest.raises(ValueError, match="must leave at least one row"):
        layers.Cropping2D(((2, 2), (0, 0)))(np.zeros((1, 4, 5, 1), np.float32))
    with pytest.raises(ValueError, match="expects input"):
        layers.ZeroPadding2D()(np.zeros((1, 4, 5), np.float32))


def test_model_saves_and_loads(rng, tmp_path):
    inp = layers.Input(shape=(5, 5, 1))
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(inp)
    x = layers.Conv2D(2, 3)(x)
    out = layers.Cropping2D(((0, 1), (1, 0)))(x)
    model = autoenc.Model(inp, out)
    model.save(tmp_path / "m.autoenc")
    loaded = autoenc.models.load_model(tmp_path / "m.autoenc")
    x = rng.standard_normal((2, 5, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.layers[1].padding == ((1, 2), (0, 1)) and loaded.layers[3].cropping == ((0, 1), (1, 0))


@pytest.mark.keras
@pytest.mark.parametrize("arg", BORDERS)
def test_keras_parity(rng, arg):
    """Pure copies of the input: exactly equal forward, and dx exactly Keras' (through GradientTape)."""
    tf, keras = import_keras()
    x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    for kcls, acls in ((keras.layers.ZeroPadding2D, layers.ZeroPadding2D),
                       (keras.layers.Cropping2D, layers.Cropping2D)):
        kl, al = kcls(arg), acls(arg)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            yk = kl(xt)
            r = tf.constant(rng.standard_normal(yk.shape).astype(np.float32))
            loss = tf.reduce_sum(yk * r)
        ya = al(x)
        assert ya.shape == tuple(yk.shape)
        assert al.compute_output_shape((None,) + x.shape[1:])[1:] == tuple(yk.shape)[1:]
        np.testing.assert_array_equal(ya, yk.numpy())
        np.testing.assert_array_equal(al.backward(r.numpy()), tape.gradient(loss, xt).numpy())
