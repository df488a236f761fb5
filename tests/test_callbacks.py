"""Callbacks with Keras' names, hooks and file conventions: the CallbackList's arguments, LambdaCallback,
ModelCheckpoint, CSVLogger (also when the run is killed), ReduceLROnPlateau, LearningRateScheduler.

Tests marked keras run Keras' own callback on the same inputs and skip when Keras is not installed.
"""
import csv
import os
import signal
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

import autoenc
from autoenc.callbacks import (Callback, CSVLogger, LambdaCallback, LearningRateScheduler, ModelCheckpoint,
                               ReduceLROnPlateau)
from autoenc.layers import Conv2D, Input
from autoenc.models import Model, load_model


def tiny():
    autoenc.set_random_seed(0)
    i = Input(shape=(6, 6, 1))
    model = Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(Conv2D(2, 3, padding="same",
                                                                               activation="relu")(i)))
    model.compile("adam", "binary_crossentropy")
    return model


@pytest.fixture
def data():
    return np.random.default_rng(0).random((32, 6, 6, 1)).astype("float32")


def test_model_checkpoint_formats_epoch_and_logs_into_the_name(tmp_path, data):
    model = tiny()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.autoenc")
    history = model.fit(data, data, epochs=2, batch_size=8, verbose=0, validation_data=(data, data),
                        callbacks=[ModelCheckpoint(pattern)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"ckpt-{e:02d}-{v:.3f}.autoenc" for e, v in zip((1, 2), history.history["val_loss"])]
    np.testing.assert_array_equal(load_model(tmp_path / names[-1]).predict(data), model.predict(data))


def test_model_checkpoint_save_best_only(tmp_path, data):
    model = tiny()
    path = tmp_path / "best.autoenc"
    checkpoint = ModelCheckpoint(str(path), monitor="loss", save_best_only=True)
    model.fit(data, data, epochs=2, batch_size=8, verbose=0, callbacks=[checkpoint])
    assert path.exists() and checkpoint.best < np.inf
    saved = path.read_bytes()
    checkpoint.on_epoch_end(5, {"loss": checkpoint.best + 1.0})   # worse: not written
    assert path.read_bytes() == saved
    model.layers[1].params["bias"][...] += 1.0
    checkpoint.on_epoch_end(6, {"loss": checkpoint.best - 1.0})   # better: written
    assert path.read_bytes() != saved


def test_model_checkpoint_weights_only_and_errors(tmp_path, data):
    model = tiny()
    model.fit(data, data, epochs=1, batch_size=8, verbose=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "w.npz"), save_weights_only=True)])
    other = tiny()
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.predict(data), model.predict(data))
    with pytest.raises(ValueError, match="val_loss"):
        model.fit(data, data, epochs=1, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "{val_loss}.autoenc"))])


def test_csv_logger_writes_a_row_per_epoch_and_appends(tmp_path, data):
    model = tiny()
    path = tmp_path / "log.csv"
    model.fit(data, data, epochs=2, batch_size=8, verbose=0, validation_data=(data, data),
              callbacks=[CSVLogger(str(path))])
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and set(rows[0]) == {"epoch", "loss", "val_loss"}
    assert float(rows[1]["loss"]) == pytest.approx(model.history.history["loss"][1])
    model.fit(data, data, epochs=3, initial_epoch=2, batch_size=8, verbose=0, validation_data=(data, data),
              callbacks=[CSVLogger(str(path), append=True)])
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


# --- the hooks' arguments (issue 17, item 13) -----------------------------------------------------

def record_calls():
    """A LambdaCallback written for Keras: each function takes exactly the arguments Keras passes."""
    calls = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", None, logs)),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch, logs)),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch, logs)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, logs)),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, logs)),
        on_train_end=lambda logs: calls.append(("train_end", None, logs)))
    return cb, calls


def call_pattern(calls):
    return [(hook, index, sorted(logs)) for hook, index, logs in calls]


def test_lambda_callback_gets_keras_arguments(data):
    model = tiny()
    cb, calls = record_calls()
    model.fit(data[:16], data[:16], epochs=2, batch_size=8, verbose=0, validation_data=(data, data), callbacks=[cb])
    assert all(isinstance(logs, dict) for _, _, logs in calls)
    batch = [("batch_begin", 0, []), ("batch_end", 0, ["loss"]), ("batch_begin", 1, []), ("batch_end", 1, ["loss"])]
    assert call_pattern(calls) == (
        [("train_begin", None, [])]
        + [("epoch_begin", 0, [])] + batch + [("epoch_end", 0, ["loss", "val_loss"])]
        + [("epoch_begin", 1, [])] + batch + [("epoch_end", 1, ["loss", "val_loss"])]
        + [("train_end", None, ["loss", "val_loss"])])
    assert calls[-1][2] == {k: v[-1] for k, v in model.history.history.items()}


def test_batch_hooks_get_logs_as_a_keyword_and_default_to_on_batch(data):
    seen = []

    class KerasStyle(Callback):  # Keras 3: on_train_batch_* call on_batch_* unless overridden
        def on_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            seen.append(("end", batch, sorted(logs)))

    keyword_only = []
    lam = LambdaCallback(on_train_batch_end=lambda batch, *, logs: keyword_only.append(batch),
                         on_batch_begin=lambda batch, logs: keyword_only.append(-1))  # Keras' **kwargs
    tiny().fit(data[:16], data[:16], epochs=1, batch_size=8, verbose=0, callbacks=[KerasStyle(), lam])
    assert seen == [("begin", 0), ("end", 0, ["loss"]), ("begin", 1), ("end", 1, ["loss"])]
    assert keyword_only == [-1, 0, -1, 1]


@pytest.mark.keras
def test_lambda_callback_call_pattern_matches_keras(data):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras", reason="needs keras 3 (pip install autoenc[keras])")
    x = data.reshape(len(data), -1)[:20]
    k_model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(x.shape[1])])
    k_model.compile("adam", "mse")
    k_calls = []
    k_cb = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: k_calls.append(("train_begin", None, logs)),
        on_epoch_begin=lambda epoch, logs: k_calls.append(("epoch_begin", epoch, logs)),
        on_train_batch_begin=lambda batch, logs: k_calls.append(("batch_begin", batch, logs)),
        on_train_batch_end=lambda batch, logs: k_calls.append(("batch_end", batch, logs)),
        on_epoch_end=lambda epoch, logs: k_calls.append(("epoch_end", epoch, logs)),
        on_train_end=lambda logs: k_calls.append(("train_end", None, logs)))
    k_model.fit(x, x, epochs=2, batch_size=8, verbose=0, validation_data=(x, x), callbacks=[k_cb])
    cb, calls = record_calls()
    tiny().fit(data[:20], data[:20], epochs=2, batch_size=8, verbose=0, validation_data=(data[:20], data[:20]),
               callbacks=[cb])
    assert call_pattern(calls) == call_pattern(k_calls)


# --- CSVLogger when the run is killed (issue 17, item 9) ------------------------------------------

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import autoenc
    from autoenc.callbacks import CSVLogger, LambdaCallback
    from autoenc.layers import Conv2D, Input
    from autoenc.models import Model

    path, append, kill_epoch, kill_batch = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
    autoenc.set_random_seed(0)
    i = Input(shape=(4, 4, 1))
    model = Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(i))
    model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")

    def kill(batch, logs):
        if model._epoch == kill_epoch and batch == kill_batch:
            os.kill(os.getpid(), signal.SIGKILL)

    model.fit(x, x, epochs=10, batch_size=8, verbose=0, validation_data=(x, x),
              callbacks=[CSVLogger(path, append=append), LambdaCallback(on_train_batch_end=kill)])
""")


def run_killed(tmp_path, path, append, kill_epoch, kill_batch):
    """Runs fit in a new Python that SIGKILLs itself at (kill_epoch, kill_batch) and returns the
    CSV rows on disk afterwards."""
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, str(script), str(path), "1" if append else "0", str(kill_epoch),
                             str(kill_batch)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr
    return list(csv.reader(path.open()))


def test_csv_logger_keeps_every_finished_epoch_when_killed(tmp_path):
    path = tmp_path / "log.csv"
    rows = run_killed(tmp_path, path, append=False, kill_epoch=3, kill_batch=1)
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"] and all(len(r) == 3 for r in rows)
    # append=True continues the file: the killed run's epochs 0-1 follow, under the one header
    rows = run_killed(tmp_path, path, append=True, kill_epoch=2, kill_batch=0)
    assert rows[0] == ["epoch", "loss", "val_loss"] and [r[0] for r in rows[1:]] == ["0", "1", "2", "0", "1"]


def test_csv_logger_killed_before_its_first_row_leaves_the_previous_file(tmp_path):
    """Before: the file was truncated at train begin, so a kill in the first epoch left it empty."""
    path = tmp_path / "log.csv"
    previous = "epoch,loss,val_loss\n0,0.5,0.6\n1,0.4,0.5\n"
    path.write_text(previous)
    rows = run_killed(tmp_path, path, append=False, kill_epoch=0, kill_batch=1)
    assert path.read_text() == previous and len(rows) == 3
    rows = run_killed(tmp_path, path, append=False, kill_epoch=1, kill_batch=0)  # now replaced
    assert rows[0] == ["epoch", "loss", "val_loss"] and [r[0] for r in rows[1:]] == ["0"]
    assert rows[1][1] != "0.5"


# --- ReduceLROnPlateau and LearningRateScheduler ------------------------------------------------

def lr_host(optimizer):
    """The smallest stand-in for a model that these callbacks need: one with an optimizer."""
    return types.SimpleNamespace(optimizer=optimizer, metrics=[])


def run_plateau(callback, model, values, monitor="val_loss"):
    """Feeds the callback one epoch end per value; returns (logged learning_rate, rate after)."""
    callback.set_model(model)
    callback.on_train_begin({})
    out = []
    for epoch, value in enumerate(values):
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        out.append((logs["learning_rate"], float(np.float32(model.optimizer.learning_rate))))
    return out


def test_reduce_lr_on_plateau_patience_cooldown_min_lr():
    model = lr_host(autoenc.optimizers.SGD(1.0))
    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2, min_delta=0.1)
    # 1.0 is the first best; 0.95 is not better by min_delta. Keras' order: a cooldown epoch first
    # counts the cooldown down, then (cooldown over) the same epoch counts as a miss.
    # epoch:  0 best, 1 miss, 2 miss -> 0.5 (cooldown 1), 3 cooldown ends + miss, 4 miss -> 0.25,
    # 5 cooldown ends + miss, 6 miss -> max(0.125, 0.2) = 0.2, then 0.2 is min_lr (in float32): no lower.
    values = [1.0] + [0.95] * 11
    after = [lr for _, lr in run_plateau(cb, model, values)]
    f32 = lambda v: float(np.float32(v))  # noqa: E731  the rate is read as Keras' float32 variable
    assert after == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25] + [f32(0.2)] * 6
    assert cb.wait == 5 and cb.cooldown_counter == 0  # epochs 7-11 missed; 0.2 is not reduced again
    logged = [lr for lr, _ in run_plateau(ReduceLROnPlateau(patience=1), lr_host(autoenc.optimizers.SGD(0.01)),
                                          [1.0, 1.0, 1.0])]
    assert logged == [f32(0.01), f32(0.01), f32(f32(0.01) * 0.1)]  # 0.1 x the float32 rate, rounded
    # an improvement of more than min_delta resets the wait
    after = [lr for _, lr in run_plateau(ReduceLROnPlateau(patience=2, factor=0.5), lr_host(autoenc.optimizers.SGD(1.0)),
                                         [1.0, 1.0, 0.5, 0.5, 0.5])]
    assert after == [1.0, 1.0, 1.0, 1.0, 0.5]


def test_reduce_lr_on_plateau_modes_and_errors():
    after = [lr for _, lr in run_plateau(ReduceLROnPlateau("val_accuracy", patience=1, factor=0.5),
                                         lr_host(autoenc.optimizers.SGD(1.0)), [0.5, 0.9, 0.8], "val_accuracy")]
    assert after == [1.0, 1.0, 0.5]  # auto mode maximises an accuracy
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        ReduceLROnPlateau(mode="lowest")
    with pytest.raises(ValueError, match="mode='max'"):
        run_plateau(ReduceLROnPlateau("val_psnr"), lr_host(autoenc.optimizers.SGD()), [1.0], "val_psnr")
    cb = ReduceLROnPlateau("val_loss")
    cb.set_model(lr_host(autoenc.optimizers.SGD()))
    with pytest.warns(UserWarning, match="val_loss"):
        cb.on_epoch_end(0, {"loss": 1.0})


def keras_lr_host(keras, learning_rate):
    return types.SimpleNamespace(optimizer=keras.optimizers.SGD(learning_rate), metrics=[])


@pytest.mark.keras
def test_reduce_lr_on_plateau_matches_keras_on_random_sequences():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras", reason="needs keras 3 (pip install autoenc[keras])")
    rng = np.random.default_rng(0)
    for trial in range(40):
        kwargs = dict(factor=float(rng.choice([0.1, 0.5, 0.7])), patience=int(rng.integers(0, 4)),
                      cooldown=int(rng.integers(0, 3)), min_delta=float(rng.choice([0.0, 1e-4, 1e-2])),
                      min_lr=float(rng.choice([0.0, 1e-4, 2e-3])), mode=str(rng.choice(["auto", "min", "max"])))
        # random walks with steps near min_delta: improvements, plateaus and borderline cases
        values = [float(v) for v in 1.0 + np.cumsum(rng.choice([-2e-2, -1e-4, -5e-5, 0.0, 1e-4], size=30))]
        values[5:8] = [values[4]] * 3
        lr0 = float(rng.choice([0.01, 0.1, 1e-3]))
        ours = run_plateau(ReduceLROnPlateau(**kwargs), lr_host(autoenc.optimizers.SGD(lr0)), values)
        theirs = run_plateau(keras.callbacks.ReduceLROnPlateau(**kwargs), keras_lr_host(keras, lr0), values)
        assert ours == theirs, (trial, kwargs)


def test_reduce_lr_on_plateau_in_fit_logs_and_saves_the_rate(tmp_path, data):
    model = tiny()
    # min_delta larger than any change: epoch 0 sets the best, every later epoch is a plateau and
    # patience 0 reduces at its end (wait 1 >= 0), after its logs got the rate
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = model.fit(data, data, epochs=4, batch_size=8, verbose=0,
                        callbacks=[reduce, CSVLogger(str(tmp_path / "log.csv"))])
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    expected = [f32(1e-3)] * 2
    for _ in range(2):
        expected.append(f32(expected[-1] * 0.5))
    assert history.history["learning_rate"] == expected  # each epoch's rate before its reduction
    assert f32(model.optimizer.learning_rate) == f32(expected[-1] * 0.5)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [float(r["learning_rate"]) for r in rows] == expected
    model.save(tmp_path / "m.autoenc")
    assert load_model(tmp_path / "m.autoenc").optimizer.learning_rate == model.optimizer.learning_rate


def test_learning_rate_scheduler_sets_the_rate_used_by_fit(data):
    model = tiny()
    model.compile(autoenc.optimizers.SGD(0.5), "binary_crossentropy")
    weights = []
    freeze_second = LearningRateScheduler(lambda epoch, lr: 0.0 if epoch == 1 else 0.5)
    snapshot = LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    history = model.fit(data, data, epochs=3, batch_size=8, verbose=0, callbacks=[freeze_second, snapshot])
    assert history.history["learning_rate"] == [0.5, 0.0, 0.5]
    for a, b in zip(weights[0], weights[1]):  # lr 0 in epoch 1: the weights do not move
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(weights[1], weights[2]))


def test_learning_rate_scheduler_old_api_and_errors():
    model = lr_host(autoenc.optimizers.Adam(1e-3))
    cb = LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))  # Keras' old one-argument schedule
    cb.set_model(model)
    cb.on_epoch_begin(3, {})
    assert model.optimizer.learning_rate == 0.025
    cb = LearningRateScheduler(lambda epoch, lr: 1)  # an int is not a float, as in Keras
    cb.set_model(model)
    with pytest.raises(ValueError, match="should be a float"):
        cb.on_epoch_begin(0, {})
    with pytest.raises(TypeError):
        LearningRateScheduler(0.1)


@pytest.mark.keras
def test_learning_rate_scheduler_matches_keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras", reason="needs keras 3 (pip install autoenc[keras])")

    def schedule(epoch, lr):  # Keras' docstring example, in float64 arithmetic
        return lr if epoch < 3 else lr * float(np.exp(-0.1))

    def run(callback, model):
        callback.set_model(model)
        out = []
        for epoch in range(12):
            callback.on_epoch_begin(epoch, {})
            logs = {"loss": 1.0}
            callback.on_epoch_end(epoch, logs)
            out.append(logs["learning_rate"])
        return out

    assert run(LearningRateScheduler(schedule), lr_host(autoenc.optimizers.SGD(0.01))) == \
        run(keras.callbacks.LearningRateScheduler(schedule), keras_lr_host(keras, 0.01))
