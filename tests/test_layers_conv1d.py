"""Conv1D, Conv1DTranspose, MaxPooling1D, UpSampling1D: each the 2-D layer with height 1 (same numbers
bit for bit, through the same kernels), 'causal' padding, hand cases, float64 gradient checks, the
adjoint identity, errors, config and a Keras-shaped model."""
import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.gradcheck import adjoint_check, gradcheck

EPS64 = float(np.finfo(np.float64).eps)
TOL = 1e-6  # relative error of a float64 central difference; a wrong gradient gives ~1e-1


def twin(layer1d, layer2d, x, reference=False):
    """Run a 1-D layer on x (n, steps, c) and a 2-D one on x (n, 1, steps, c) with the same weights
    (reshaped to height 1); return both outputs and both input gradients."""
    with autoenc.reference_kernels(reference):
        y1 = layer1d(x)
        layer2d(x[:, None])
        layer2d.set_weights([w.reshape(layer2d.params[k].shape) for k, w in layer1d.params.items()])
        y2 = layer2d(x[:, None])
        dy = np.random.default_rng(1).standard_normal(y1.shape).astype(x.dtype)
        dx1, dx2 = layer1d.backward(dy).copy(), layer2d.backward(dy[:, None]).copy()
    return y1, y2[:, 0], dx1, dx2[:, 0]


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("k,s,padding", [(3, 1, "same"), (7, 2, "same"), (4, 3, "valid"), (1, 1, "valid"),
                                         (5, 2, "valid")])
def test_conv1d_is_conv2d_with_height_1(k, s, padding, reference):
    x = np.random.default_rng(0).standard_normal((3, 17, 5)).astype(np.float32)
    c1 = layers.Conv1D(9, k, strides=s, padding=padding, activation="relu", bias_initializer="glorot_uniform")
    c2 = layers.Conv2D(9, (1, k), strides=(1, s), padding=padding, activation="relu")
    y1, y2, dx1, dx2 = twin(c1, c2, x, reference)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(c1.grads["kernel"], c2.grads["kernel"][0])
    np.testing.assert_array_equal(c1.grads["bias"], c2.grads["bias"])
    assert c1.params["kernel"].shape == (k, 5, 9)


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("k,s,padding,op", [(7, 2, "same", None), (3, 3, "valid", None), (4, 2, "same", 1),
                                            (2, 3, "valid", 2)])
def test_conv1d_transpose_is_conv2d_transpose_with_height_1(k, s, padding, op, reference):
    x = np.random.default_rng(0).standard_normal((2, 9, 4)).astype(np.float32)
    c1 = layers.Conv1DTranspose(6, k, strides=s, padding=padding, output_padding=op, activation="tanh",
                                bias_initializer="glorot_uniform")
    c2 = layers.Conv2DTranspose(6, (1, k), strides=(1, s), padding=padding,
                                output_padding=None if op is None else (0, op), activation="tanh")
    y1, y2, dx1, dx2 = twin(c1, c2, x, reference)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(c1.grads["kernel"], c2.grads["kernel"][0])
    assert c1.params["kernel"].shape == (k, 6, 4)


@pytest.mark.parametrize("make", [lambda: layers.Conv1D(4, 3, padding="same", activation="relu"),
                                  lambda: layers.Conv1D(4, 3, padding="causal"),
                                  lambda: layers.Conv1DTranspose(4, 3, strides=2, padding="same")])
def test_inference_pass_gives_the_training_pass_bits(rng, make):
    """forward(training=False), which keeps no padded input, then backward: the bits of
    forward(training=True) then backward (output, input gradient, weight gradients)."""
    x = rng.standard_normal((3, 11, 2)).astype(np.float32)
    layer = make()
    layer(x[:1])
    runs = []
    for training in (False, True):
        y = layer.forward(x, training=training).copy()
        dx = layer.backward(np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)).copy()
        runs.append([y, dx] + [g.copy() for g in layer.grads.values()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reference", [False, True])
def test_pooling_and_upsampling_are_the_2d_layers_with_height_1(reference):
    x = np.random.default_rng(2).standard_normal((2, 11, 3)).astype(np.float32)
    for l1, l2 in [(layers.MaxPooling1D(3, 2, padding="same"), layers.MaxPooling2D((1, 3), (1, 2), padding="same")),
                   (layers.MaxPooling1D(), layers.MaxPooling2D((1, 2))),
                   (layers.UpSampling1D(3), layers.UpSampling2D((1, 3)))]:
        y1, y2, dx1, dx2 = twin(l1, l2, x, reference)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(dx1, dx2)


def test_hand_computed_cases():
    x = np.arange(1.0, 6.0).reshape(1, 5, 1)
    conv = layers.Conv1D(1, 2, dtype="float64")
    conv(x)
    conv.set_weights([np.array([1.0, 10.0]).reshape(2, 1, 1), np.zeros(1)])
    np.testing.assert_array_equal(conv(x)[0, :, 0], [21, 32, 43, 54])          # x[t] + 10 x[t+1]
    causal = layers.Conv1D(1, 2, padding="causal", dtype="float64")
    causal(x)
    causal.set_weights(conv.get_weights())
    np.testing.assert_array_equal(causal(x)[0, :, 0], [10, 21, 32, 43, 54])    # x[t-1] + 10 x[t], x[-1] = 0
    np.testing.assert_array_equal(layers.MaxPooling1D()(np.array([1.0, 3, 2, 5, 4]).reshape(1, 5, 1))[0, :, 0], [3, 5])
    np.testing.assert_array_equal(layers.UpSampling1D()(np.array([1.0, 2]).reshape(1, 2, 1))[0, :, 0], [1, 1, 2, 2])
    ct = layers.Conv1DTranspose(1, 2, strides=2, dtype="float64")
    ct(x[:, :2])
    ct.set_weights([np.array([1.0, 10.0]).reshape(2, 1, 1), np.zeros(1)])
    np.testing.assert_array_equal(ct(x[:, :2])[0, :, 0], [1, 10, 2, 20])


@pytest.mark.parametrize("k,s", [(1, 1), (3, 1), (4, 2), (3, 3)])
def test_causal_is_left_padding_then_valid(k, s):
    """'causal' = k - 1 zeros on the left, then 'valid' (Keras' Conv1D); its output t sees x up to t*s."""
    x = np.random.default_rng(4).standard_normal((2, 10, 3))
    causal = layers.Conv1D(4, k, strides=s, padding="causal", dtype="float64")
    valid = layers.Conv1D(4, k, strides=s, padding="valid", dtype="float64")
    causal(x)
    padded = np.concatenate([np.zeros((2, k - 1, 3)), x], axis=1)
    valid(padded)
    valid.set_weights(causal.get_weights())
    y = causal(x)
    np.testing.assert_allclose(y, valid(padded), rtol=0, atol=(k * 3 + 2) * EPS64 * 10)
    assert y.shape == (2, -(-10 // s), 4)
    x2 = x.copy()
    x2[:, 7:] += 1.0    # changing the future leaves outputs at t*s < 7 unchanged
    t_past = [t for t in range(y.shape[1]) if t * s < 7]
    np.testing.assert_array_equal(causal(x2)[:, t_past], y[:, t_past])


@pytest.mark.parametrize("layer", [
    lambda: layers.Conv1D(4, 3, padding="same", activation="sigmoid", bias_initializer="glorot_uniform"),
    lambda: layers.Conv1D(4, 4, strides=2, padding="causal", activation="tanh"),
    lambda: layers.Conv1D(2, 3, strides=3, padding="valid"),
    lambda: layers.Conv1DTranspose(4, 3, strides=2, padding="same", activation="tanh",
                                   bias_initializer="glorot_uniform"),
    lambda: layers.Conv1DTranspose(3, 4, strides=3, padding="valid", output_padding=2),
    lambda: layers.MaxPooling1D(3, 2, padding="same"),
    lambda: layers.UpSampling1D(3),
], ids=["conv1d-same", "conv1d-causal", "conv1d-valid", "conv1dT-same", "conv1dT-valid-op", "maxpool1d", "upsample1d"])
def test_gradients(rng, layer):
    x = rng.standard_normal((2, 9, 3))
    errors = gradcheck(layer(), x)
    assert errors and all(e < TOL for e in errors.values()), errors


def test_adjoint_pairs(rng):
    """<Conv1D(u), v> = <u, Conv1DTranspose(v)> with one kernel; and the dot-product test of each
    linear layer's backward."""
    for k, s, padding in [(3, 1, "same"), (7, 2, "same"), (4, 3, "valid")]:
        ct = layers.Conv1DTranspose(3, k, strides=s, padding=padding, use_bias=False, dtype="float64")
        v = rng.standard_normal((2, 6, 5))
        u = rng.standard_normal(ct(v).shape)
        conv = layers.Conv1D(5, k, strides=s, padding=padding, use_bias=False, dtype="float64")
        conv(u)
        conv.set_weights(ct.get_weights())
        lhs, rhs = float(np.sum(conv(u) * v)), float(np.sum(u * ct(v)))
        assert abs(lhs - rhs) <= 1e-12 * (np.abs(u).sum() * np.abs(v).max() * np.abs(ct.params["kernel"]).max())
    x = rng.standard_normal((2, 8, 3))
    for layer in (layers.Conv1D(2, 3, strides=2, padding="causal", use_bias=False),
                  layers.Conv1DTranspose(2, 3, strides=2, use_bias=False), layers.MaxPooling1D(2),
                  layers.UpSampling1D(2)):
        assert adjoint_check(layer, x) < 1e-8, layer


@pytest.mark.parametrize("make,match", [
    (lambda: layers.Conv1D(2, 3, dilation_rate=2), "dilation_rate=1 only, got 2"),
    (lambda: layers.Conv1D(2, 3, groups=2), "groups=1 only, got 2"),
    (lambda: layers.Conv1D(0, 3), "filters must be a positive int, got 0"),
    (lambda: layers.Conv1D(2, 3, padding="full"), "padding must be 'valid' or 'same', got 'full'"),
    (lambda: layers.Conv1DTranspose(2, 3, padding="causal"), "got 'causal'"),
    (lambda: layers.Conv1DTranspose(2, 3, strides=2, output_padding=2), "output_padding is 2 and strides is 2"),
    (lambda: layers.Conv1DTranspose(2, 3, dilation_rate=3), "dilation_rate=1 only, got 3"),
    (lambda: layers.MaxPooling1D(2, data_format="channels_first"), "channels_last"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs():
    for layer in (layers.Conv1D(2, 3, name="c"), layers.Conv1DTranspose(2, 3, name="c"), layers.MaxPooling1D(name="c"),
                  layers.UpSampling1D(name="c")):
        with pytest.raises(ValueError, match=r"'c' expects input \(batch, steps, channels\), got \(None, 4, 4, 1\)"):
            layer(np.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"kernel_size \(5,\) is larger than the input \(None, 4, 1\)"):
        layers.Conv1D(2, 5)(np.zeros((1, 4, 1)))
    conv = layers.Conv1D(2, 3)
    conv(np.zeros((1, 6, 3)))
    with pytest.raises(ValueError, match=r"expects input \(batch, steps, 3\), got \(None, 6, 2\)"):
        conv(np.zeros((1, 6, 2)))


def test_configs_as_keras():
    assert {k: v for k, v in layers.Conv1D(4, 7, strides=2, padding="causal").get_config().items()
            if k in ("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups")} == {
        "filters": 4, "kernel_size": (7,), "strides": (2,), "padding": "causal", "dilation_rate": (1,), "groups": 1}
    assert layers.Conv1DTranspose(4, 7, strides=2, output_padding=1).get_config()["output_padding"] == (1,)
    assert layers.MaxPooling1D().get_config()["pool_size"] == (2,) and layers.MaxPooling1D().get_config()["strides"] == (2,)
    assert layers.UpSampling1D(3).get_config()["size"] == 3


def timeseries_model(steps=24):
    """keras-io's time-series anomaly detection autoencoder (Conv1D, Dropout, Conv1DTranspose)."""
    return autoenc.Sequential([
        layers.Input(shape=(steps, 1)),
        layers.Conv1D(filters=32, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1D(filters=16, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Conv1DTranspose(filters=16, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Dropout(rate=0.2),
        layers.Conv1DTranspose(filters=32, kernel_size=7, padding="same", strides=2, activation="relu"),
        layers.Conv1DTranspose(filters=1, kernel_size=7, padding="same"),
    ])


def test_timeseries_model_shapes_summary_training_and_saving(tmp_path):
    """Shapes and parameter counts as Keras' summary of the keras-io model prints them (288 steps there:
    144, 72, 144, 288; here 24: 12, 6, 12, 24), a few training steps and a save/load round trip."""
    model = timeseries_model()
    assert [layer.output_shape for layer in model.layers] == [
        (None, 12, 32), (None, 12, 32), (None, 6, 16), (None, 12, 16), (None, 12, 16), (None, 24, 32), (None, 24, 1)]
    assert [layer.count_params() for layer in model.layers] == [256, 0, 3600, 1808, 0, 3616, 225]
    printed = []
    model.summary(print_fn=printed.append)
    lines = "\n".join(printed).splitlines()
    assert any(line.split()[0] == model.layers[-1].name and "(Conv1DTrans" in line and "(None, 24, 1)" in line and line.split()[-1] == "225"
               for line in lines), lines
    model.compile(optimizer=autoenc.optimizers.Adam(learning_rate=0.001), loss="mse")
    x = np.sin(np.linspace(0, 12, 24 * 16)).reshape(16, 24, 1).astype(np.float32)
    history = model.fit(x, x, epochs=3, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    path = str(tmp_path / "ts.autoenc")
    model.save(path)
    back = autoenc.models.load_model(path)
    assert [type(layer).__name__ for layer in back.layers] == [type(layer).__name__ for layer in model.layers]
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
