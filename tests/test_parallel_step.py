"""A training step in parts (autoenc/models/parallel_step.py): the same loss and dL/dy as the batch run
as one, the same gradients up to the order of their sums, the same bits on one thread or two, and the
plain path wherever parts would change what a step computes."""
import numba
import numpy as np
import pytest

import autoenc
from autoenc import losses, regularizers
from autoenc.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D, UpSampling2D
from autoenc.models import Model, parallel_step


def conv_autoencoder(loss="mse", seed=0):
    autoenc.set_random_seed(seed)
    inp = Input(shape=(12, 12, 1))
    h = Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = MaxPooling2D(2, padding="same")(h)
    h = Conv2D(4, 3, padding="same", activation="relu")(h)
    h = UpSampling2D(2)(h)
    h = Conv2D(8, 3, padding="same", activation="relu")(h)
    model = Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(h))
    model.compile(optimizer="sgd", loss=loss)
    return model


def batch(n=48, seed=1):
    return np.random.default_rng(seed).random((n, 12, 12, 1)).astype(np.float32)


def gradients(model):
    return [layer.grads[name].copy() for layer, name in model._param_refs]


def plain_step(model, x, y, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(parallel_step, "applies", lambda *args: False)
        return model.train_on_batch(x, y)


@pytest.mark.parametrize("loss", ["mse", "mae", "binary_crossentropy"])
def test_a_step_in_parts_gives_the_batch_loss_and_gradients(loss, monkeypatch):
    x = batch()
    parts, whole = conv_autoencoder(loss), conv_autoencoder(loss)
    assert parallel_step.applies(parts, x, x) and parallel_step.part_size(parts, len(x)) == 12
    loss_parts = parts.train_on_batch(x, x)
    loss_whole = plain_step(whole, x, x, monkeypatch)
    # the loss: a mean of 4 part means (float32, each over 12*144 numbers) against one mean over all
    assert loss_parts == pytest.approx(loss_whole, rel=1e-6)
    # each gradient: 4 sums of 12 samples added, against one sum over 48; float32 rounding of sums of
    # terms that partly cancel, bounded well inside 1e-4 of the largest entry of each gradient
    for gp, gw in zip(gradients(parts), gradients(whole)):
        np.testing.assert_allclose(gp, gw, rtol=1e-4, atol=1e-4 * np.abs(gw).max())


def test_each_parts_dy_is_the_batch_losses_gradient(monkeypatch):
    """The forward pass of a part gives the same bits per sample as the batch's, and its dL/dy is the
    slice of the batch's: checked on the last part's, which the model keeps."""
    x = batch()
    model = conv_autoencoder()
    y_whole = model.forward(x, training=True).copy()
    _, dy_whole, _ = model.compute_loss_and_gradient(x, y_whole)
    dy_whole = dy_whole.copy()
    model.train_on_batch(x, x)
    last = parallel_step.part_size(model, len(x)) * 3
    dy_last = parallel_step._workspace(model).array("dy", dy_whole[last:].shape, dy_whole.dtype)
    np.testing.assert_array_equal(dy_last, dy_whole[last:])
    # layer_output joins the parts: the batch's input and, bit for bit, each layer's output on it
    np.testing.assert_array_equal(model.layer_output(model.layers[0]), x)
    np.testing.assert_array_equal(model.layer_output(model.layers[-1]), y_whole)


def test_a_step_in_parts_gives_the_same_bits_on_one_thread_or_two():
    x = batch(64)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2, 1):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            model = conv_autoencoder()
            model.compile(optimizer="adam", loss="mse")
            losses = [model.train_on_batch(x, x) for _ in range(3)]
            results.append((losses, model.get_weights()))
    finally:
        numba.set_num_threads(before)
    for losses, weights in results[1:]:
        assert losses == results[0][0]
        for a, b in zip(weights, results[0][1]):
            np.testing.assert_array_equal(a, b)


def test_fit_trains_in_parts_as_train_on_batch_does():
    x = batch(64)
    a, b = conv_autoencoder(), conv_autoencoder()
    history = a.fit(x, x, batch_size=32, epochs=2, shuffle=False, verbose=0)
    losses = [b.train_on_batch(x[i:i + 32], x[i:i + 32]) for _ in range(2) for i in (0, 32)]
    assert history.history["loss"] == pytest.approx([np.mean(losses[:2]), np.mean(losses[2:])], rel=1e-12)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def small_dense(extra):
    autoenc.set_random_seed(0)
    inp = Input(shape=(4, 4, 1))
    h = Flatten()(inp)
    h = Dense(8, activation="relu", **extra.get("dense", {}))(h)
    for layer in extra.get("layers", []):
        h = layer(h)
    model = Model(inp, Dense(16, activation="sigmoid")(h))
    model.compile(optimizer="sgd", loss=extra.get("loss", "mse"))
    return model


@pytest.mark.parametrize("extra, why", [
    ({"layers": [BatchNormalization()]}, "batch statistics"),
    ({"layers": [Dropout(0.5)]}, "random draws in order"),
    ({"dense": {"kernel_regularizer": regularizers.L2(0.01)}}, "a penalty's gradient once per part"),
])
def test_layers_that_see_the_whole_batch_keep_the_plain_path(extra, why):
    model = small_dense(extra)
    x = np.random.default_rng(0).random((64, 4, 4, 1)).astype(np.float32)
    y = x.reshape(64, 16)
    assert not parallel_step.applies(model, x, y), why
    model.train_on_batch(x, y)   # and trains


def test_small_batches_and_other_losses_keep_the_plain_path():
    model = conv_autoencoder()
    assert not parallel_step.applies(model, batch(8), batch(8))     # one part of MIN_PART
    assert parallel_step.applies(model, batch(16), batch(16))

    class Halved(losses.MeanSquaredError):   # a subclass's value_and_gradient may not take size=
        def value_and_gradient(self, y_true, y_pred, out=None):
            loss, grad = super().value_and_gradient(y_true, y_pred, out)
            return loss / 2, grad / 2

    model.compile(optimizer="sgd", loss=Halved())
    assert not parallel_step.applies(model, batch(), batch())
    model.train_on_batch(batch(), batch())


def test_a_subclass_that_calls_the_base_train_step_trains_as_the_base_class():
    calls = []

    class Custom(Model):
        def train_step(self, data):
            calls.append(len(data[0]))
            return super().train_step(data)

    def build(cls):
        autoenc.set_random_seed(0)
        inp = Input(shape=(12, 12, 1))
        model = cls(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
        model.compile(optimizer="sgd", loss="mse")
        return model

    x = batch()
    custom, base = build(Custom), build(Model)
    assert custom.train_on_batch(x, x) == base.train_on_batch(x, x)
    assert calls == [48]
    for a, b in zip(custom.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_layer_output_joins_the_parts_in_nested_and_sequential_models():
    """After a step in parts, layer_output of any layer (inside a sub-model too; a Sequential's input)
    is the batch's, bit for bit what one forward pass over the batch leaves."""
    from autoenc.models import Sequential
    autoenc.set_random_seed(0)
    encoder = Sequential([Input(shape=(12, 12, 1)), Conv2D(4, 3, padding="same", activation="relu"),
                          MaxPooling2D(2)], name="encoder")
    model = Sequential([Input(shape=(12, 12, 1)), encoder, UpSampling2D(2),
                        Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="sgd", loss="mse")
    x = batch()
    assert parallel_step.applies(model, x, x)
    model.forward(x, training=True)
    layers = [model.inputs[0].node.layer, encoder.layers[0], model.layers[-1]]
    whole = [np.array(model.layer_output(layer), copy=True) for layer in layers]
    model.train_on_batch(x, x)
    for layer, expected in zip(layers, whole):
        np.testing.assert_array_equal(model.layer_output(layer), expected)


def test_a_model_with_its_own_backward_keeps_the_plain_path():
    class OwnBackward(Model):
        def backward(self, dy, **kwargs):
            return super().backward(dy, **kwargs)

    autoenc.set_random_seed(0)
    inp = Input(shape=(12, 12, 1))
    model = OwnBackward(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    model.compile(optimizer="sgd", loss="mse")
    assert not parallel_step.applies(model, batch(), batch())
    model.__class__ = Model
    assert parallel_step.applies(model, batch(), batch())
