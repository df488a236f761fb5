"""The training loop's safety: NaN stops, interrupts, data conversion, determinism across threads."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import autoenc
from autoenc import callbacks, optimizers
from autoenc.layers import Conv2D, Dense, Input
from autoenc.models import Model, Sequential
from autoenc.models.training import NotCompiledError
from autoenc.files import atomic_write


def small_model():
    autoenc.set_random_seed(0)
    inp = Input(shape=(6, 6, 1))
    x = Conv2D(4, 3, padding="same", activation="relu")(inp)
    return Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(x))


def data(n=32, seed=0):
    return np.random.default_rng(seed).random((n, 6, 6, 1)).astype(np.float32)


@pytest.mark.filterwarnings("ignore:overflow")
@pytest.mark.filterwarnings("ignore:invalid value")
def test_nan_loss_stops_with_the_last_finite_weights():
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(4,)), Dense(4), Dense(4)])
    model.compile(optimizers.SGD(learning_rate=1e6), "mse")
    x = np.random.default_rng(0).random((64, 4)).astype(np.float32) * 100
    with pytest.warns(RuntimeWarning, match=r"at epoch 1, step \d+; the model keeps the last finite weights"):
        history = model.fit(x, x, epochs=3, batch_size=8, verbose=0)
    assert history.nan_stop[0] == 0
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert history.history == {}  # no epoch completed


def test_keyboard_interrupt_returns_history_and_a_usable_model():
    model = small_model()
    model.compile("adam", "mse")
    x = data()
    state = {}

    def stop(batch, logs):
        if batch == 0:
            state["weights"] = model.get_weights()  # after step 1 completed
        if batch == 1:
            raise KeyboardInterrupt

    # an interrupt arriving mid-step (here: in the batch-begin hook of step 2) undoes nothing complete
    cb = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: stop(b, logs) if b == 0 else None,
                                  on_train_batch_begin=lambda b, logs=None: stop(b, logs) if b == 1 else None)
    history = model.fit(x, x, epochs=5, batch_size=8, verbose=0, callbacks=[cb])
    assert history.interrupted
    for a, b in zip(model.get_weights(), state["weights"]):
        np.testing.assert_array_equal(a, b)
    assert model.predict(x, verbose=0).shape == x.shape
    model.fit(x, x, epochs=1, batch_size=8, verbose=0)  # and it trains on


def test_a_training_step_allocates_no_batch_sized_array():
    import tracemalloc
    model = small_model()
    model.compile(optimizer="adam", loss="mse")
    x = data(256)
    model.train_on_batch(x, x)  # layers, loss and optimizer build their buffers
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(3):
            model.train_on_batch(x, x)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # train_on_batch checks x and y for NaN (a bool per number: x.nbytes / 4); a float32 temporary
    # of the batch's size (the loss's difference, a layer output) would add x.nbytes
    assert peak < x.nbytes / 2, f"{peak} bytes allocated during a step (one batch is {x.nbytes})"


def test_fit_before_compile_is_a_clear_value_error():
    with pytest.raises(NotCompiledError, match=r"compile\(optimizer, loss\) before fit"):
        small_model().fit(data(), data(), verbose=0)
    assert issubclass(NotCompiledError, ValueError)


def test_uint8_is_converted_once_with_advice():
    model = small_model()
    model.compile("adam", "mse")
    x8 = (data() * 255).astype(np.uint8)
    with pytest.warns(UserWarning, match=r"integers up to \d+ \(dtype uint8\).*/ 255"):
        model.evaluate(x8, x8, verbose=0)
    x64 = data().astype(np.float64)
    assert model.predict(x64, verbose=0).dtype == np.float32


@pytest.mark.parametrize("bad,match", [
    ("not an array", "must be a NumPy array"),
    (np.zeros((4, 6, 6)), r"shape \(batch, 6, 6, 1\), got \(4, 6, 6\)"),
    (np.zeros((0, 6, 6, 1)), "is empty"),
    (np.full((2, 6, 6, 1), np.inf), "NaN or Inf"),
    (np.array([["a"]]), "must hold numbers"),
])
def test_bad_data_is_refused_before_any_kernel_runs(bad, match):
    model = small_model()
    model.compile("adam", "mse")
    with pytest.raises((ValueError, TypeError), match=match):
        model.fit(bad, bad, verbose=0)
    with pytest.raises((ValueError, TypeError), match=match):
        model.predict(bad, verbose=0)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "weights.npz"
    model = small_model()
    model.save_weights(path)
    before = path.read_bytes()

    def fail(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["weights.npz"]  # no temporary file left behind


def test_truncated_weights_file_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    model = small_model()
    model.save_weights(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable autoenc weights file"):
        model.load_weights(path)


SCRIPT = textwrap.dedent("""
    import hashlib, numpy as np, autoenc
    from autoenc.layers import Input, Conv2D, MaxPooling2D, UpSampling2D
    from autoenc.models import Model
    autoenc.set_random_seed(7)
    inp = Input(shape=(28, 28, 1))
    x = Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = MaxPooling2D(padding="same")(x)
    x = Conv2D(8, 3, padding="same", activation="relu")(x)
    x = UpSampling2D()(x)
    model = Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(x))
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((40, 28, 28, 1)).astype(np.float32)
    model.fit(x, x, epochs=2, batch_size=16, verbose=0)
    print(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
""")


def test_training_is_bit_identical_with_one_and_two_threads():
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


# --- issue 17: a NaN stop keeps weights whose outputs are finite; shuffle='batch' ----------------

@pytest.mark.filterwarnings("ignore:overflow")
@pytest.mark.filterwarnings("ignore:invalid value")
def test_nan_stop_keeps_weights_that_predict_finite_numbers():
    # SGD at 1e10 leaves finite weights of ~1e36 after step 2 that predict NaN at step 3: the model must
    # go back to the weights before step 2, whose loss was finite
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(4,)), Dense(8, activation="relu"), Dense(4)])
    model.compile(optimizers.SGD(learning_rate=1e10), "mse")
    x = np.random.default_rng(0).random((64, 4)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="the model keeps the last finite weights"):
        history = model.fit(x, x, epochs=2, batch_size=8, verbose=0)
    assert history.nan_stop == (0, 2)
    assert np.isfinite(model.predict(x, verbose=0)).all()
    assert np.isfinite(model.evaluate(x, x, verbose=0))


@pytest.mark.filterwarnings("ignore:overflow")
@pytest.mark.filterwarnings("ignore:invalid value")
def test_nan_stop_says_plainly_when_no_weights_gave_a_finite_loss():
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(4,)), Dense(4)])
    model.set_weights([np.full((4, 4), 1e30, np.float32), np.zeros(4, np.float32)])
    model.compile(optimizers.SGD(learning_rate=0.1), "mse")
    x = np.full((8, 4), 1e8, np.float32)   # outputs 4e38 overflow float32: the very first loss is inf
    with pytest.warns(RuntimeWarning, match="no weights with a finite loss were found"):
        history = model.fit(x, x, epochs=1, batch_size=8, verbose=0)
    assert history.nan_stop == (0, 0)
    np.testing.assert_array_equal(model.get_weights()[0], np.full((4, 4), 1e30, np.float32))


def _recorded_batches(model, x, **fit_kwargs):
    """The input rows of every training batch of fit, as read from the model after each step."""
    seen = []
    record = callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(np.array(_input_batch(model), copy=True)))
    model.fit(x, x, verbose=0, callbacks=[record], **fit_kwargs)
    return seen


def _input_batch(model):
    inp = model.inputs[0].node.layer
    return model.layer_output(inp)


def test_shuffle_batch_shuffles_within_consecutive_batches_as_keras():
    # Keras 3 (trainers/data_adapters/array_data_adapter.py): shuffle="batch" keeps the batches
    # x[0:b], x[b:2b], ... in order and permutes the samples inside each batch
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(1,)), Dense(1)])
    model.compile("sgd", "mse")
    x = np.arange(100, dtype=np.float32)[:, None]
    batches = _recorded_batches(model, x, batch_size=32, epochs=1, shuffle="batch")
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    for k, b in enumerate(batches):
        np.testing.assert_array_equal(np.sort(b[:, 0]), np.arange(32 * k, min(32 * (k + 1), 100)))
    assert any((b[:, 0] != np.sort(b[:, 0])).any() for b in batches)   # and shuffled inside


@pytest.mark.parametrize("shuffle", ["full", "True", "", "epoch"])
def test_other_shuffle_strings_are_refused(shuffle):
    model = Sequential([Input(shape=(1,)), Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="shuffle"):
        model.fit(np.zeros((4, 1), np.float32), np.zeros((4, 1), np.float32), verbose=0, shuffle=shuffle)


# --- issue 12: train_step is public and may be overridden ------------------------------------------

def test_train_step_returns_the_logs_fit_averages():
    x = data(8)
    twin = small_model()
    twin.compile("adam", "binary_crossentropy", metrics=["mse"])
    loss, mse = twin.train_on_batch(x, x)   # one batch: fit's epoch means are its logs
    model = small_model()
    model.compile("adam", "binary_crossentropy", metrics=["mse"])
    history = model.fit(x, x, batch_size=8, epochs=1, verbose=0)
    assert history.history == {"loss": [loss], "mse": [mse]}


def test_a_subclass_may_override_train_step():
    calls = []

    class Halved(Model):
        def train_step(self, data):
            x, y = data
            calls.append(x.shape)
            y_pred = self.forward(x, training=True)
            loss, dy, from_logits = self.compute_loss_and_gradient(y, y_pred)
            self.backward(dy * 0.5, from_logits=from_logits)
            self.apply_gradients()
            return {"loss": loss, "half": loss / 2}

    autoenc.set_random_seed(0)
    inp = Input(shape=(6, 6, 1))
    model = Halved(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    model.compile(optimizers.SGD(0.1), "mse")
    history = model.fit(data(10), data(10), batch_size=4, epochs=1, verbose=0)
    assert calls == [(4, 6, 6, 1), (4, 6, 6, 1), (2, 6, 6, 1)]
    assert history.history["half"][0] == pytest.approx(history.history["loss"][0] / 2, rel=1e-12)
    assert model.train_on_batch(data(2), data(2))[1] > 0


def test_a_custom_train_step_may_fit_on_x_alone():
    # as a VAE does: fit(x), and the step receives x itself (Keras packs a lone x so)
    class Denoise(Model):
        def train_step(self, data):
            assert isinstance(data, np.ndarray)
            y_pred = self.forward(data, training=True)
            loss, dy, from_logits = self.compute_loss_and_gradient(data, y_pred)
            self.backward(dy, from_logits=from_logits)
            self.apply_gradients()
            return {"loss": loss}

    autoenc.set_random_seed(0)
    inp = Input(shape=(6, 6, 1))
    model = Denoise(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    model.compile("adam", "mse")
    history = model.fit(data(12), batch_size=4, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    plain = small_model()
    plain.compile("adam", "mse")
    with pytest.raises(ValueError, match="needs targets y"):   # the built-in step needs targets
        plain.fit(data(4), verbose=0)


def test_nan_stop_restores_batchnorm_moving_statistics():
    """A moving variance that overflows to Inf stops training like a weight that does (it used to go
    unnoticed: only the flat trainable buffer was checked), and the NaN stop puts the moving statistics
    back with the weights (they are not in the flat trainable buffer)."""
    from autoenc.layers import BatchNormalization, Dense
    from autoenc.models import Sequential
    from autoenc.optimizers import SGD
    x = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    model = Sequential([Input(shape=(6,)), Dense(8), BatchNormalization(), Dense(6, activation="sigmoid")])
    model.compile(optimizer=SGD(learning_rate=1e30), loss="mse")
    with pytest.warns(RuntimeWarning, match="Training stopped"):
        model.fit(x, x, epochs=3, batch_size=8, verbose=0, shuffle=False)
    stats = model.layers[1].non_trainable_weights
    assert len(stats) == 2 and all(np.all(np.isfinite(s)) for s in stats)


# --- several threads on one model (issue 17 item 5) ----------------------------------------------------

def _threaded(fn, jobs, threads=4):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, jobs))


def test_predict_from_several_threads_gives_the_serial_results():
    """The layers' work buffers are shared: predict from 4 threads used to return another thread's
    numbers (57 of 60 predictions wrong, up to 1.2e-2). Calls now take turns batch by batch."""
    from autoenc.models import seed_autoencoder
    autoenc.set_random_seed(5)
    model = seed_autoencoder()
    rng = np.random.default_rng(0)
    inputs = [rng.random((int(rng.integers(1, 40)), 28, 28, 1), dtype=np.float32) for _ in range(24)]
    expected = [model.predict(x, batch_size=16, verbose=0) for x in inputs]
    got = _threaded(lambda x: model.predict(x, batch_size=16, verbose=0), inputs)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    eager = _threaded(lambda x: model(x), inputs)
    assert all(np.array_equal(a, b) for a, b in zip(eager, expected))
    layer = model.layers[1]
    alone = [layer(x) for x in inputs]
    assert all(np.array_equal(a, b) for a, b in zip(_threaded(layer, inputs), alone))


def test_evaluate_from_several_threads_gives_the_serial_results():
    autoenc.set_random_seed(6)
    model = Sequential([Input(shape=(6, 6, 1)), Conv2D(3, 3, padding="same", activation="relu"),
                        Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["mae"])
    rng = np.random.default_rng(1)
    inputs = [rng.random((int(rng.integers(1, 30)), 6, 6, 1), dtype=np.float32) for _ in range(16)]
    expected = [model.evaluate(x, x, batch_size=8, verbose=0) for x in inputs]
    assert _threaded(lambda x: model.evaluate(x, x, batch_size=8, verbose=0), inputs) == expected


def test_fit_while_other_threads_predict_trains_exactly_as_alone():
    """Inference between two training steps changes nothing the next step reads."""
    def train(with_predictions):
        autoenc.set_random_seed(7)
        model = Sequential([Input(shape=(6, 6, 1)), Conv2D(4, 3, padding="same", activation="relu"),
                            Conv2D(1, 3, padding="same", activation="sigmoid")])
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(2).random((64, 6, 6, 1), dtype=np.float32)
        import threading
        stop = threading.Event()
        workers = [threading.Thread(target=lambda: [model.predict(x[:5], verbose=0) for _ in iter(stop.is_set, True)])
                   for _ in range(2 if with_predictions else 0)]
        for t in workers:
            t.start()
        try:
            model.fit(x, x, epochs=3, batch_size=8, verbose=0)
        finally:
            stop.set()
            for t in workers:
                t.join()
        return model.get_weights()

    assert all(np.array_equal(a, b) for a, b in zip(train(True), train(False)))


def test_a_second_fit_of_one_model_from_another_thread_is_refused():
    import threading
    model = Sequential([Input(shape=(4,)), Dense(4)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 4), np.float32)
    started, release, errors = threading.Event(), threading.Event(), []

    def slow_first(batch, logs=None):
        started.set()
        release.wait(30)

    first = threading.Thread(target=lambda: model.fit(x, x, epochs=1, batch_size=8, verbose=0, callbacks=[
        callbacks.LambdaCallback(on_train_batch_begin=slow_first)]))
    first.start()
    assert started.wait(30)
    try:
        with pytest.raises(RuntimeError, match="fit is already running"):
            model.fit(x, x, epochs=1, verbose=0)
    finally:
        release.set()
        first.join()
    model.fit(x, x, epochs=1, verbose=0)   # free again


# --- issue 15: fit(x, x) gathers a shuffled batch once ------------------------------------------

def _fit_weights(x, y, **kwargs):
    model = small_model()
    model.compile("adam", "mse")
    autoenc.set_random_seed(1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, **kwargs)
    return model.get_weights()


@pytest.mark.parametrize("shuffle", [True, "batch"])
def test_fit_on_x_x_gives_the_bits_of_fit_on_a_copy_of_x(shuffle):
    # y is x: the targets' batch is the inputs' (one gather), the same numbers as a separate y
    x = data(40)
    for a, b in zip(_fit_weights(x, x, shuffle=shuffle), _fit_weights(x, x.copy(), shuffle=shuffle)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore:x holds integers")
def test_fit_on_x_x_converts_x_once_and_gathers_it_once():
    model = small_model()
    model.compile("adam", "mse")
    x8 = (data(16) * 255).astype(np.uint8)
    xs, y = model._prepare_xy(x8, x8)
    assert y is xs[0] and y.dtype == np.float32   # one float32 copy of the data, not two
    xb, yb = model._gather_batch(xs, y, np.arange(8)[::-1])
    assert yb is xb[0] and len(model._batch_buffers) == 1
    np.testing.assert_array_equal(yb, xs[0][7::-1])


def test_a_train_step_of_its_own_gets_targets_apart_from_the_inputs():
    # a custom train_step may write into its batch of x (noise for a denoising autoencoder):
    # the targets it reads are then still the clean batch, as with a y of its own
    seen = []

    class Denoise(Model):
        def train_step(self, data):
            x, y = data
            x += 1.0
            seen.append(float(np.abs(y - (x - 1.0)).max()))
            return super().train_step((x, y))

    autoenc.set_random_seed(0)
    inp = Input(shape=(6, 6, 1))
    model = Denoise(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
    model.compile("adam", "mse")
    x = data(16)
    model.fit(x, x, epochs=1, batch_size=8, verbose=0, shuffle=True)
    assert len(seen) == 2 and max(seen) < 1e-6
