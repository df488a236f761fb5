"""ModelCheckpoint and CSVLogger, with Keras' names and file conventions."""
import csv

import numpy as np
import pytest

import autoenc
from autoenc.callbacks import CSVLogger, ModelCheckpoint
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
