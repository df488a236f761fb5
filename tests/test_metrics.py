"""Metrics: values by hand, Keras' rule for the string 'accuracy', names and errors, compile/fit/evaluate
logs and saving, and live parity with Keras' history after fit."""

import numpy as np
import pytest

import autoenc
from autoenc import metrics
from live_keras import import_keras


def test_values_by_hand():
    t = np.array([[0.0, 1.0, 1.0, 0.3]], np.float32)
    p = np.array([[0.2, 0.9, 0.5, 0.3]], np.float32)
    # 0.5 is not > 0.5; 0.3 is neither 0 nor 1, so it never matches a thresholded prediction
    assert metrics.BinaryAccuracy()(t, p) == 0.5
    assert metrics.BinaryAccuracy(threshold=0.4)(t, p) == 0.75
    assert metrics.Accuracy()(t, p) == 0.25                      # exact equality: only 0.3 == 0.3
    assert metrics.CategoricalAccuracy()(t, p) == 1.0            # argmax 1 (first of the tie) == argmax 1
    assert metrics.get("mse")(t, p) == pytest.approx(np.mean((t - p) ** 2), rel=1e-7)
    assert metrics.get("mae")(t, p) == pytest.approx((0.2 + 0.1 + 0.5) / 4, rel=1e-6)
    labels = np.array([1, 2, 0])
    scores = np.array([[0.1, 0.8, 0.1], [0.5, 0.2, 0.3], [0.9, 0.0, 0.1]])
    assert metrics.SparseCategoricalAccuracy()(labels, scores) == pytest.approx(2 / 3)
    assert metrics.SparseCategoricalAccuracy()(labels[:, None], scores) == pytest.approx(2 / 3)
    np.testing.assert_array_equal(metrics.mean_squared_error(t, p).shape, (1,))   # per sample, as Keras


@pytest.mark.parametrize("y_true_shape,y_pred_shape,resolved", [
    ((8, 28, 28, 1), (8, 28, 28, 1), "binary_accuracy"),        # an image autoencoder's sigmoid output
    ((8, 1), (8, 1), "binary_accuracy"),
    ((8, 784), (8, 784), "categorical_accuracy"),               # a dense autoencoder: argmax, whatever the loss
    ((8,), (8, 10), "sparse_categorical_accuracy"),
    ((8, 1), (8, 10), "sparse_categorical_accuracy"),
])
def test_accuracy_string_resolves_from_shapes_as_keras(y_true_shape, y_pred_shape, resolved):
    for name in ("accuracy", "acc", "Accuracy", "ACC"):
        m = metrics.get(name)
        assert m.name == name
        rng = np.random.default_rng(0)
        m(rng.integers(0, 2, y_true_shape).astype(np.float32), rng.random(y_pred_shape).astype(np.float32))
        assert m.resolved == resolved


def test_names_functions_losses_and_errors():
    for name, cls in [("binary_accuracy", metrics.BinaryAccuracy), ("BinaryAccuracy", metrics.BinaryAccuracy),
                      ("mse", metrics.MeanSquaredError), ("MSE", metrics.MeanSquaredError),
                      ("mean_squared_error", metrics.MeanSquaredError), ("mae", metrics.MeanAbsoluteError),
                      ("MeanAbsoluteError", metrics.MeanAbsoluteError),
                      ("categorical_accuracy", metrics.CategoricalAccuracy)]:
        m = metrics.get(name)
        assert isinstance(m, cls) and m.name == name
    assert isinstance(metrics.get(metrics.binary_accuracy), metrics.BinaryAccuracy)
    assert isinstance(metrics.get(metrics.MeanSquaredError), metrics.MeanSquaredError)
    bce = metrics.get("binary_crossentropy")                    # a loss as a metric, as Keras allows
    t, p = np.array([[1.0, 0.0]]), np.array([[0.9, 0.2]])
    assert bce(t, p) == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2, rel=1e-6)

    def max_error(y_true, y_pred):
        return np.max(np.abs(y_true - y_pred), axis=-1)
    custom = metrics.get(max_error)
    assert custom.name == "max_error" and custom(t, p) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="'AUC' is a Keras metric that autoenc does not compute"):
        metrics.get("AUC")
    with pytest.raises(ValueError, match="Keras metric"):
        metrics.get("top_k_categorical_accuracy")
    with pytest.raises(ValueError, match="Unknown metric 'acuracy'"):
        metrics.get("acuracy")
    with pytest.raises(TypeError, match="A metric must be"):
        metrics.get(3)


def tiny_model(lib, shape_out):
    inputs = lib.Input((6,))
    h = lib.layers.Dense(8, activation="relu")(inputs)
    h = lib.layers.Dense(int(np.prod(shape_out)), activation="sigmoid")(h)
    return lib.Model(inputs, lib.layers.Reshape(shape_out)(h))


def test_compile_fit_evaluate_and_save_keep_the_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = (rng.random((20, 4, 2, 1)) < 0.5).astype(np.float32)
    model = tiny_model(autoenc, (4, 2, 1))
    model.compile("adam", "mse", metrics=["accuracy", "mae", "binary_accuracy"])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0, validation_split=0.2)
    assert set(history.history) == {"loss", "accuracy", "mae", "binary_accuracy", "val_loss", "val_accuracy",
                                    "val_mae", "val_binary_accuracy"}
    # a (batch, 4, 2, 1) output: 'accuracy' is binary accuracy, so the two agree
    assert history.history["accuracy"] == history.history["binary_accuracy"]
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["binary_accuracy"] == pytest.approx(float(np.mean(y == (model.predict(x) > 0.5))), abs=1e-12)
    model.save(tmp_path / "m.autoenc")
    loaded = autoenc.models.load_model(tmp_path / "m.autoenc")
    assert [n for n, _ in loaded.metrics] == ["accuracy", "mae", "binary_accuracy"]
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == logs
    with pytest.raises(ValueError, match="Unknown metric"):
        model.compile("adam", "mse", metrics=["acuracy"])


@pytest.mark.keras
@pytest.mark.parametrize("shape_out", [(8,), (4, 2, 1), (1,)], ids=["categorical", "binary-image", "binary"])
def test_keras_parity_history_after_fit(shape_out):
    """Keras 3 and autoenc from the same weights, compile(loss='mse', metrics=[...]), 2 epochs without
    shuffling, with validation: the same log keys, and the same values. Accuracies are counts over
    160-320 entries, equal unless a prediction sits within float32 noise of 0.5 (asserted to 1e-6);
    the loss, mae and mse follow the float32 training trajectory, which agrees to ~1e-7 (asserted 1e-5)."""
    keras = import_keras()[1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (rng.random((40,) + shape_out) < 0.5).astype(np.float32)
    y[:5] = 0.3  # targets that no thresholded prediction matches
    keras.utils.set_random_seed(0)
    km, am = tiny_model(keras, shape_out), tiny_model(autoenc, shape_out)
    am.set_weights(km.get_weights())
    names = ["accuracy", "acc", "mae", "mse", "binary_accuracy", "mean_absolute_error", "MeanSquaredError"]
    km.compile(optimizer="adam", loss="mse", metrics=names)
    am.compile(optimizer="adam", loss="mse", metrics=names)
    kw = dict(batch_size=16, epochs=2, verbose=0, shuffle=False, validation_data=(x[:10], y[:10]))
    hk, ha = km.fit(x, y, **kw).history, am.fit(x, y, **kw).history
    assert sorted(ha) == sorted(hk)
    for key in hk:
        tol = 1e-6 if "acc" in key else 1e-5
        np.testing.assert_allclose(ha[key], hk[key], rtol=tol, atol=1e-6, err_msg=key)
