"""CollapseMonitor: one line for a collapsed model (dead ReLUs, constant or blank output), silence for one that learns."""
import io

import numpy as np
import pytest

import autoenc
from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
from autoenc.models import Model
from autoenc.monitors import CollapseMonitor


def small_autoencoder():
    """The seed's shape at 8x8: conv, pool, conv (bottleneck), upsample, conv, sigmoid conv."""
    i = Input(shape=(8, 8, 1))
    x = Conv2D(4, 3, padding="same", activation="relu")(i)
    x = MaxPooling2D(2)(x)
    x = Conv2D(4, 3, padding="same", activation="relu")(x)
    x = UpSampling2D(2)(x)
    x = Conv2D(4, 3, padding="same", activation="relu", name="last_hidden")(x)
    return Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(x))


def blobs(n=64, seed=0):
    """Bright squares on black at random places: (n, 8, 8, 1) in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8, 1), np.float32)
    for k, (r, c) in enumerate(rng.integers(0, 5, size=(n, 2))):
        x[k, r:r + 3, c:c + 3] = 1.0
    return x


def fit_with_monitor(model, x, epochs=2, **kwargs):
    stream = io.StringIO()
    monitor = CollapseMonitor(stream=stream, **kwargs)
    model.fit(x, x, epochs=epochs, batch_size=16, verbose=0, callbacks=[monitor])
    return monitor, stream.getvalue()


def test_dead_relus_are_reported_in_one_line_with_cause_and_remedy():
    autoenc.set_random_seed(0)
    model = small_autoencoder()
    model.compile("adam", "mse")
    model.get_layer("last_hidden").params["bias"][...] = -100.0   # every ReLU of that layer dies
    monitor, out = fit_with_monitor(model, blobs(), remedy="Try --recipe default.")
    assert monitor.collapsed
    lines = out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("collapse: layer last_hidden outputs all zeros (dead ReLUs) since epoch 1")
    assert "the output is constant" in lines[0] and lines[0].endswith("Try --recipe default.")


def test_stop_training_on_collapse():
    autoenc.set_random_seed(0)
    model = small_autoencoder()
    model.compile("adam", "mse")
    model.get_layer("last_hidden").params["bias"][...] = -100.0
    stream = io.StringIO()
    history = model.fit(blobs(), blobs(), epochs=5, batch_size=16, verbose=0,
                        callbacks=[CollapseMonitor(stop_training=True, stream=stream)])
    assert len(history.history["loss"]) == 1


def test_blank_output_is_reported_after_two_epochs():
    autoenc.set_random_seed(0)
    model = small_autoencoder()
    model.compile("sgd", "mse")   # a tiny learning rate: the output barely moves from its start
    last = model.layers[-1]
    last.params["kernel"][...] = 0.0
    last.params["bias"][...] = -4.0   # sigmoid(-4) = 0.018: a near-black picture, whatever the input
    last.params["kernel"][0, 0, 0, 0] = 1e-3   # not exactly constant
    monitor, out = fit_with_monitor(model, blobs(), epochs=3)
    assert monitor.collapsed and len(out.splitlines()) == 1
    assert "nearly the same blank picture for every input since epoch 1" in out


def test_a_model_that_learns_is_left_alone():
    autoenc.set_random_seed(0)
    model = small_autoencoder()
    model.compile(autoenc.optimizers.Adam(0.01), "binary_crossentropy")
    monitor, out = fit_with_monitor(model, blobs(), epochs=4)
    assert not monitor.collapsed and out == "", out
    assert monitor.diagnose(blobs(16, seed=1)) is None


def test_the_batch_scan_does_not_make_a_fused_upsampled_tensor():
    """The model runs UpSampling2D and the next Conv2D as one (Model.forward): the monitor's scan after
    each batch skips the upsampled tensor (zero exactly when its input is, which is scanned), so it is
    never made; a layer dying before the upsampling is still reported, by its own name."""
    autoenc.set_random_seed(0)
    model = small_autoencoder()
    model.compile("adam", "mse")
    monitor = CollapseMonitor(stream=io.StringIO())
    asked, where, value, scan = {"batch": [], "other": []}, ["other"], model._value, monitor.on_train_batch_end

    def batch_scan(batch, logs=None):
        where[0] = "batch"
        scan(batch, logs)
        where[0] = "other"

    monitor.on_train_batch_end = batch_scan
    model._value = lambda t: asked[where[0]].append(t.node.layer) or value(t)   # noqa: E731  (records each request)
    model.fit(blobs(), blobs(), epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    assert model._fused, "the pair did not fuse: this test checks nothing"
    assert any(isinstance(layer, Conv2D) for layer in asked["batch"])
    assert not any(isinstance(layer, UpSampling2D) for layer in asked["batch"])
    before_up = [layer for layer in model.layers if isinstance(layer, Conv2D)][1]
    before_up.params["bias"][...] = -100.0   # the conv whose output is upsampled dies
    monitor, out = fit_with_monitor(model, blobs())
    assert monitor.collapsed and f"layer {before_up.name} outputs all zeros" in out, out
