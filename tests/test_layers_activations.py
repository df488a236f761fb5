"""Activation layers (LeakyReLU, PReLU, ELU, ReLU, Softmax): values by hand, float64 gradient checks
(input and PReLU's alpha), configs and saving, argument errors, and live Keras parity of the output,
dL/dx and dL/dalpha."""
import warnings

import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.gradcheck import gradcheck
from live_keras import import_keras

TOL = 1e-6  # float64 central differences: ~1e-9 for a correct backward, ~1e-1 for a wrong one


def away_from(x, points):
    for p in points:
        x[np.abs(x - p) < 1e-3] = p + 1e-2
    return x


LAYERS = {
    "LeakyReLU()": (lambda L: L.LeakyReLU(), [0.0]),
    "LeakyReLU(0.1)": (lambda L: L.LeakyReLU(negative_slope=0.1), [0.0]),
    "ELU()": (lambda L: L.ELU(), [0.0]),
    "ELU(0.5)": (lambda L: L.ELU(alpha=0.5), [0.0]),
    "ReLU()": (lambda L: L.ReLU(), [0.0]),
    "ReLU(6)": (lambda L: L.ReLU(max_value=6.0), [0.0, 6.0]),
    "ReLU(1.5, 0.2, 0.5)": (lambda L: L.ReLU(max_value=1.5, negative_slope=0.2, threshold=0.5), [0.5, 1.5]),
    "ReLU(negative_slope=0.1)": (lambda L: L.ReLU(negative_slope=0.1), [0.0]),
    "Softmax()": (lambda L: L.Softmax(), []),
    "Softmax(axis=1)": (lambda L: L.Softmax(axis=1), []),
    "Softmax(axis=[1, 2])": (lambda L: L.Softmax(axis=[1, 2]), []),
    "PReLU()": (lambda L: L.PReLU(alpha_initializer="random_normal"), [0.0]),
    "PReLU(shared_axes=[1, 2])": (lambda L: L.PReLU(alpha_initializer="random_normal", shared_axes=[1, 2]), [0.0]),
    "PReLU(shared_axes=3)": (lambda L: L.PReLU(alpha_initializer="random_normal", shared_axes=3), [0.0]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradcheck(rng, name):
    make, kinks = LAYERS[name]
    x = away_from(rng.standard_normal((2, 4, 5, 3)) * 2, kinks)
    errors = gradcheck(make(layers), x)
    assert errors and all(e < TOL for e in errors.values()), errors
    if name.startswith("PReLU"):
        assert any(k.endswith("/alpha") for k in errors)


def test_values_by_hand():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)
    np.testing.assert_allclose(layers.LeakyReLU()(x), [[-0.6, -0.15, 0.0, 0.5, 3.0]], rtol=1e-7)
    np.testing.assert_allclose(layers.ELU(alpha=2.0)(x), [[2 * np.expm1(-2.0), 2 * np.expm1(-0.5), 0, 0.5, 3]],
                               rtol=1e-6)
    np.testing.assert_array_equal(layers.ReLU(max_value=1.0)(x), [[0, 0, 0, 0.5, 1.0]])
    np.testing.assert_allclose(layers.ReLU(negative_slope=0.5, threshold=1.0)(x), [[-1.5, -0.75, -0.5, -0.25, 3.0]])
    s = layers.Softmax()(x)
    np.testing.assert_allclose(s.sum(), 1.0, rtol=1e-6)
    assert np.argmax(s) == 4
    p = layers.PReLU()
    np.testing.assert_array_equal(p(x), [[0, 0, 0, 0.5, 3.0]])  # alpha starts at zero: a ReLU
    p.set_weights([np.full((5,), 0.25, np.float32)])
    np.testing.assert_array_equal(p(x), [[-0.5, -0.125, 0, 0.5, 3.0]])


def test_prelu_alpha_shape_follows_keras_rule():
    x = np.zeros((2, 4, 5, 3), np.float32)
    for shared, shape in [(None, (4, 5, 3)), ([1, 2], (1, 1, 3)), (3, (4, 5, 1)), ((1,), (1, 5, 3))]:
        p = layers.PReLU(shared_axes=shared)
        p(x)
        assert p.params["alpha"].shape == shape, shared
    # shared axes may change size between calls (Keras fixes only the others)
    p = layers.PReLU(shared_axes=[1, 2])
    p(x)
    assert p(np.zeros((1, 7, 2, 3), np.float32)).shape == (1, 7, 2, 3)
    with pytest.raises(ValueError, match="was built for inputs"):
        p(np.zeros((1, 7, 2, 4), np.float32))


def test_prelu_trains_in_a_model(rng):
    """The alpha weight is trainable: in the flat buffer, moved by the optimizer, and its penalty added."""
    inputs = autoenc.Input((6,))
    h = layers.Dense(5, kernel_initializer="random_normal")(inputs)
    h = layers.PReLU(alpha_initializer="ones", alpha_regularizer="l2")(h)
    model = autoenc.Model(inputs, layers.Dense(6)(h))
    model.compile("adam", "mse")
    assert model.count_params() == 6 * 5 + 5 + 5 + 5 * 6 + 6
    x = rng.standard_normal((16, 6)).astype(np.float32)
    before = model.layers[2].get_weights()[0].copy()
    model.fit(x, x, epochs=2, batch_size=8, verbose=0)
    assert not np.array_equal(model.layers[2].get_weights()[0], before)
    assert model.layers[2].regularization_loss() > 0


def test_configs_round_trip_through_save(tmp_path, rng):
    inputs = autoenc.Input((4, 4, 2))
    h = layers.Conv2D(3, 3, padding="same")(inputs)
    h = layers.LeakyReLU(negative_slope=0.1)(h)
    h = layers.PReLU(alpha_initializer="random_uniform", shared_axes=[1, 2])(h)
    h = layers.ELU(alpha=0.7)(h)
    h = layers.ReLU(max_value=2.0, negative_slope=0.05, threshold=0.1)(h)
    out = layers.Softmax(axis=[1, 2])(h)
    model = autoenc.Model(inputs, out)
    model.compile("adam", "mse")
    x = rng.standard_normal((4, 4, 4, 2)).astype(np.float32)
    model.fit(x, x[..., :1].repeat(3, -1), verbose=0)
    path = tmp_path / "m.autoenc"
    model.save(path)
    loaded = autoenc.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    configs = {type(l).__name__: l.get_config() for l in loaded.layers}
    assert configs["LeakyReLU"]["negative_slope"] == 0.1
    assert configs["PReLU"]["shared_axes"] == [1, 2]
    assert configs["ELU"]["alpha"] == 0.7
    assert (configs["ReLU"]["max_value"], configs["ReLU"]["negative_slope"], configs["ReLU"]["threshold"]) == \
        (2.0, 0.05, 0.1)
    assert configs["Softmax"]["axis"] == [1, 2]


def test_keras2_alpha_and_argument_errors():
    with pytest.warns(DeprecationWarning, match="negative_slope"):
        layer = layers.LeakyReLU(alpha=0.1)
    assert layer.negative_slope == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layers.LeakyReLU(0.2)
    with pytest.raises(ValueError, match="negative_slope=-0.1"):
        layers.LeakyReLU(-0.1)
    with pytest.raises(ValueError, match="max_value=-1"):
        layers.ReLU(max_value=-1)
    with pytest.raises(ValueError, match="threshold=None"):
        layers.ReLU(threshold=None)
    with pytest.raises(ValueError, match="alpha_constraint"):
        layers.PReLU(alpha_constraint="non_neg")
    with pytest.raises(ValueError, match="shared_axes"):
        layers.PReLU(shared_axes=[0])
    with pytest.raises(ValueError, match="axis"):
        layers.Softmax(axis="last")
    with pytest.raises(ValueError, match="axis=3"):
        layers.Softmax(axis=3)(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(TypeError, match="unexpected keyword"):
        layers.ELU(slope=1.0)


def test_backward_leaves_dy_alone(rng):
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    for make, _ in LAYERS.values():
        layer = make(layers)
        layer(x)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        keep = dy.copy()
        layer.forward(x)
        layer.backward(dy)
        np.testing.assert_array_equal(dy, keep)


# --- live Keras parity ---------------------------------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("name", list(LAYERS))
def test_keras_parity(name):
    """Output, dL/dx and (PReLU) dL/dalpha for a random upstream gradient, against the Keras layer under
    tf.GradientTape, float32, on NHWC inputs with |x| up to ~8. Each entry is one to three roundings
    (softmax: a sum of 4-20 terms), so 1e-5 of the largest entry bounds it with room; measured <= 3.3e-7
    (Softmax(axis=1) dx); LeakyReLU, ReLU and PReLU agree bit for bit but for dalpha sums (4.4e-8)."""
    tf, keras = import_keras()
    make, kinks = LAYERS[name]
    rng = np.random.default_rng(3)
    x = away_from(rng.standard_normal((2, 4, 5, 3)).astype(np.float32) * 2, kinks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        klayer = make(keras.layers)
    xk = tf.constant(x)
    klayer(xk)
    if klayer.weights:  # PReLU: a random alpha rather than Keras' zeros
        klayer.set_weights([rng.uniform(-0.5, 0.8, w.shape).astype(np.float32) for w in klayer.get_weights()])
    with tf.GradientTape() as tape:
        tape.watch(xk)
        yk = klayer(xk)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    grads = tape.gradient(yk, [xk] + list(klayer.trainable_weights), output_gradients=tf.constant(dy))
    alayer = make(layers)
    alayer(x)
    alayer.set_weights(klayer.get_weights())
    y = np.array(alayer.forward(x), copy=True)
    dx = alayer.backward(dy)

    def rel(a, b):
        return np.max(np.abs(a - b)) / np.max(np.abs(b))

    assert rel(y, yk.numpy()) <= 1e-5
    assert rel(dx, grads[0].numpy()) <= 1e-5
    for (pname, ga), gk in zip(alayer.grads.items(), grads[1:]):
        assert ga.shape == tuple(gk.shape)
        assert rel(ga, gk.numpy()) <= 1e-5, pname


def leaky_model(lib, dtype="float32"):
    """A conv autoencoder of the kind found online: LeakyReLU, PReLU and ELU layers, gelu and swish convs."""
    L = lib.layers
    inputs = lib.Input(shape=(12, 12, 1), dtype=dtype)
    x = L.Conv2D(6, 3, padding="same", dtype=dtype)(inputs)
    x = L.LeakyReLU(negative_slope=0.2, dtype=dtype)(x)
    x = L.MaxPooling2D(2, dtype=dtype)(x)
    x = L.Conv2D(4, 3, padding="same", activation="gelu", dtype=dtype)(x)
    x = L.PReLU(alpha_initializer="random_uniform", shared_axes=[1, 2], dtype=dtype)(x)
    x = L.UpSampling2D(2, dtype=dtype)(x)
    x = L.Conv2D(4, 3, padding="same", activation="swish", dtype=dtype)(x)
    x = L.ELU(alpha=0.5, dtype=dtype)(x)
    x = L.ReLU(max_value=3.0, dtype=dtype)(x)
    outputs = L.Conv2D(1, 3, padding="same", activation="sigmoid", dtype=dtype)(x)
    return lib.Model(inputs, outputs)


@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_parity_whole_model(dtype):
    """8 free-running Adam steps of that model from Keras' initial weights, binary crossentropy (from the
    logits of the sigmoid, as Keras). Every step's loss at 1e-5 (a mean over the batch: one pre-activation
    within rounding of a kink moves it far less). The weights only in float64: in float32 a weight whose
    gradient is near Adam's epsilon moves by O(lr) for an O(1) relative change of that gradient
    (tests/fixtures/adam_parity.py, adam_step_bound), so free-running float32 weights can part by more than
    1e-5 on some data (issue 17). In float64 the gradients agree to ~1e-15 of their scale; what is left is
    Keras' Adam taking the powers of its float32 betas and learning rate: alpha_t is off by up to
    (t + 2) u b^t / (1 - b^t) for each beta, plus 3u (u = eps32 / 2), so a weight may part by
    sum_t lr * that over the steps (4.1e-6 here); measured 4.4e-8. Measured (float32): losses 9.4e-8."""
    keras = import_keras()[1]
    from parity_models import rel_err, small_images
    keras.utils.set_random_seed(5)
    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)   # Keras computes the loss in floatx
    try:
        _whole_model_steps(keras, dtype, rel_err, small_images)
    finally:
        keras.config.set_floatx(floatx)


def _whole_model_steps(keras, dtype, rel_err, small_images):
    km, am = leaky_model(keras, dtype), leaky_model(autoenc, dtype)
    am.set_weights(km.get_weights())
    km.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    am.compile(optimizer=autoenc.optimizers.Adam(0.01), loss="binary_crossentropy")
    x = small_images(8 * 8, size=12).astype(dtype)
    for k in range(8):
        xb = x[k * 8:(k + 1) * 8]
        lk, la = float(km.train_on_batch(xb, xb)), float(am.train_on_batch(xb, xb))
        assert rel_err(la, lk) <= 1e-5, (k, la, lk)
    if dtype == "float64":
        u, lr = np.finfo(np.float32).eps / 2, 0.01
        rel = lambda b, t: (t + 2) * u * b ** t / (1 - b ** t)   # noqa: E731
        bound = sum(lr * (rel(0.999, t) / 2 + rel(0.9, t) + 3 * u) for t in range(1, 9)) + 1e-12
        for wa, wk in zip(am.get_weights(), km.get_weights()):
            assert np.max(np.abs(wa - wk)) <= bound
        assert rel_err(am.predict(x[:8]), km.predict(x[:8], verbose=0)) <= 1e-5


def test_an_activation_layer_as_activation_argument(tmp_path, rng):
    """Keras 2 code writes Conv2D(32, 3, activation=LeakyReLU(alpha=0.2)): the same as the layer after a
    linear Conv2D, kept (with its slope) through save and load."""
    x = rng.standard_normal((2, 6, 6, 1)).astype(np.float32)
    inputs = autoenc.Input((6, 6, 1))
    fused = layers.Conv2D(3, 3, padding="same", activation=layers.LeakyReLU(negative_slope=0.1))
    model = autoenc.Model(inputs, fused(inputs))
    plain = layers.Conv2D(3, 3, padding="same")
    plain(x)
    plain.set_weights(fused.get_weights())
    np.testing.assert_array_equal(model.predict(x), layers.LeakyReLU(0.1)(plain(x)))
    assert fused.get_config()["activation"] == {"name": "leaky_relu", "negative_slope": 0.1}
    assert layers.Dense(2, activation=layers.ReLU()).get_config()["activation"] == "relu"
    assert layers.Dense(2, activation=layers.Softmax(axis=[1, 2])).get_config()["activation"] == \
        {"name": "softmax", "axis": [1, 2]}
    model.compile("adam", "mse")
    model.save(tmp_path / "m.autoenc")
    loaded = autoenc.models.load_model(tmp_path / "m.autoenc")
    assert loaded.layers[1].activation.params == {"negative_slope": 0.1}
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    errors = gradcheck(layers.Conv2D(2, 3, activation=layers.ELU(alpha=0.5)), away_from(x.astype(np.float64), [0.0]))
    assert all(e < TOL for e in errors.values()), errors
    with pytest.raises(ValueError, match="PReLU learns its alpha"):
        layers.Dense(2, activation=layers.PReLU())
