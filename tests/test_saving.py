"""model.save / load_model: round trips, exact resume, refusals, and atomic writes."""
import json
import os

import numpy as np
import pytest

import autoenc
from autoenc import regularizers, saving
from autoenc.layers import Add, Conv2D, Dense, Dropout, Flatten, Input, Reshape
from autoenc.models import Model, Sequential, load_model


def tiny_dag():
    """A functional DAG with a skip connection: input -> conv -> conv -> add(conv, conv) -> conv."""
    i = Input(shape=(8, 8, 1))
    a = Conv2D(4, 3, padding="same", activation="relu")(i)
    b = Conv2D(4, 3, padding="same", activation="relu", kernel_regularizer=regularizers.l2(1e-3))(a)
    c = Add()([a, b])
    return Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(c), name="dag")


@pytest.fixture
def data():
    return np.random.default_rng(0).random((48, 8, 8, 1)).astype("float32")


def test_dag_round_trip_keeps_graph_weights_optimizer_and_compile(tmp_path, data):
    autoenc.set_random_seed(0)
    model = tiny_dag()
    model.compile("adam", "binary_crossentropy", metrics=["mse"])
    model.fit(data, data, epochs=1, batch_size=16, verbose=0)
    model.save(tmp_path / "m.autoenc")
    loaded = load_model(tmp_path / "m.autoenc")
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.name == "dag"
    np.testing.assert_array_equal(loaded.predict(data), model.predict(data))
    assert loaded.loss.name == "binary_crossentropy" and [n for n, _ in loaded.metrics] == ["mse"]
    assert loaded.optimizer.iterations == model.optimizer.iterations == 3
    for a, b in zip(loaded.optimizer._slots, model.optimizer._slots):
        np.testing.assert_array_equal(a["m"], b["m"])
        np.testing.assert_array_equal(a["v"], b["v"])
    assert loaded.layers[2].kernel_regularizer.l2 == pytest.approx(1e-3)
    assert f"weights/{model.layers[1].name}/kernel" in np.load(tmp_path / "m.autoenc").files   # a plain .npz


def test_sequential_round_trip_with_dense_dropout_reshape(tmp_path, data):
    model = Sequential([Input(shape=(8, 8, 1)), Flatten(), Dense(6, activation="relu",
                        activity_regularizer=regularizers.l1(1e-4)), Dropout(0.25), Dense(64, activation="sigmoid"),
                        Reshape((8, 8, 1))], name="seq")
    model.compile("sgd", "mse")
    model.save(tmp_path / "s.autoenc")
    loaded = load_model(tmp_path / "s.autoenc")
    assert isinstance(loaded, Sequential) and loaded.name == "seq"
    assert [type(l).__name__ for l in loaded.layers] == ["Flatten", "Dense", "Dropout", "Dense", "Reshape"]
    assert loaded.layers[2].rate == 0.25 and loaded.layers[1].activity_regularizer.l1 == pytest.approx(1e-4)
    np.testing.assert_array_equal(loaded.predict(data), model.predict(data))
    assert type(loaded.optimizer).__name__ == "SGD"


def test_uncompiled_model_loads_uncompiled(tmp_path):
    model = tiny_dag()
    model.save(tmp_path / "u.autoenc")
    assert not load_model(tmp_path / "u.autoenc").compiled


def assert_resume_is_exact(fresh, x, epochs, batch_size, path, between=None):
    """Training ``epochs`` straight equals one epoch, save, load (after ``between()``), and the rest."""
    straight = fresh()
    straight.fit(x, x, epochs=epochs, batch_size=batch_size, verbose=0)
    first = fresh()
    first.fit(x, x, epochs=1, batch_size=batch_size, verbose=0)
    first.save(path)
    if between is not None:
        between()
    resumed = load_model(path)
    resumed.fit(x, x, epochs=epochs, initial_epoch=1, batch_size=batch_size, verbose=0)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resumed_training_equals_uninterrupted_training(tmp_path, data):
    def fresh():
        autoenc.set_random_seed(7)
        model = tiny_dag()
        model.compile("adam", "binary_crossentropy")
        return model

    # whatever happens in between, loading restores the shuffling state
    assert_resume_is_exact(fresh, data, 3, 16, tmp_path / "ckpt.autoenc", between=lambda: autoenc.set_random_seed(999))


def test_resume_is_exact_with_a_seeded_dropout(tmp_path):
    """Dropout(seed=...) draws its masks from a generator of its own: the file keeps its state too."""
    x = np.random.default_rng(1).random((32, 6)).astype("float32")

    def fresh():
        autoenc.set_random_seed(3)
        model = Sequential([Input(shape=(6,)), Dense(8, activation="relu"), Dropout(0.3, seed=5), Dense(6)])
        model.compile("adam", "mse")
        return model

    assert_resume_is_exact(fresh, x, 2, 8, tmp_path / "d.autoenc")


def test_metadata_round_trip(tmp_path):
    tiny_dag().save(tmp_path / "m.autoenc", metadata={"epochs_done": 3, "history": {"loss": [0.5, 0.25]}})
    assert saving.load_metadata(tmp_path / "m.autoenc") == {"epochs_done": 3, "history": {"loss": [0.5, 0.25]}}


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.autoenc"):
        load_model(tmp_path / "nope.autoenc")


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "text.autoenc").write_text("hello, not a model")
    with pytest.raises(ValueError, match="not an autoenc model file"):
        load_model(tmp_path / "text.autoenc")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not an autoenc model file"):
        load_model(tmp_path / "other.npz")


def test_truncated_file_is_refused(tmp_path):
    tiny_dag().save(tmp_path / "m.autoenc")
    blob = (tmp_path / "m.autoenc").read_bytes()
    (tmp_path / "cut.autoenc").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_model(tmp_path / "cut.autoenc")


def _rewrite(path, change):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_checksum_mismatch_is_refused(tmp_path):
    path = tmp_path / "m.autoenc"
    tiny_dag().save(path)

    def tamper(arrays):
        key = next(k for k in arrays if k.startswith("weights/"))
        arrays[key] = arrays[key] + 1
    _rewrite(path, tamper)
    with pytest.raises(ValueError, match="checksum"):
        load_model(path)


def test_other_format_version_is_refused(tmp_path):
    path = tmp_path / "m.autoenc"
    tiny_dag().save(path)

    def bump(arrays):
        header = json.loads(arrays["format.json"].tobytes())
        header["version"] = 99
        arrays["format.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    _rewrite(path, bump)
    with pytest.raises(ValueError, match="version 99"):
        load_model(path)


def test_failure_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch, data):
    path = tmp_path / "m.autoenc"
    model = tiny_dag()
    model.save(path)
    before = path.read_bytes()
    expected = model.predict(data)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    monkeypatch.setattr(saving.np, "savez", broken_savez)
    model.layers[1].params["kernel"][...] = 0
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.autoenc"]   # no temporary file left behind
    np.testing.assert_array_equal(load_model(path).predict(data), expected)


def test_save_accepts_keras_2_save_format_with_a_warning(tmp_path, data):
    # Keras 2 code passes save_format='tf' or 'h5'; autoenc writes its own format whatever it says
    model = Sequential([Input(shape=(4,)), Dense(3)])
    with pytest.warns(UserWarning, match="save_format='h5' is ignored"):
        model.save(tmp_path / "m.h5", save_format="h5")
    np.testing.assert_array_equal(load_model(tmp_path / "m.h5").get_weights()[0], model.get_weights()[0])


# --- hostile model files: sizes checked before anything is allocated or inflated ---------------------

def _members(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _write_model_file(path, arrays, document=None, compression=None):
    """Write ``arrays`` (name -> array) as a model file, with ``document`` as model.json if given, and a
    checksum that matches: what an attacker can do. ``compression``: zipfile.ZIP_DEFLATED for bombs."""
    import io
    import zipfile
    arrays = dict(arrays)
    if document is not None:
        arrays["model.json"] = np.frombuffer(json.dumps(document).encode(), np.uint8)
    header = json.loads(arrays["format.json"].tobytes())
    header["sha256"] = saving._digest(arrays)
    arrays["format.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(a))
            z.writestr(name + ".npy", buf.getvalue())
    return path


def _peak(call):
    import tracemalloc
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _small_conv(path):
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(8, 8, 1)), Conv2D(4, 3, padding="same", name="conv")])
    model.compile("adam", "mse")
    model.save(path)
    return _members(path)


def test_an_architecture_declaring_huge_filters_is_refused_before_building(tmp_path):
    # the file holds (3, 3, 1, 4) weights; its architecture asks for 2**20 filters, a 36 MiB kernel (and
    # as much again for its gradient) that used to be built before being compared with the file
    arrays = _small_conv(tmp_path / "m.autoenc")
    document = json.loads(arrays["model.json"].tobytes())
    document["architecture"]["layers"][0]["config"]["filters"] = 2**20
    path = _write_model_file(tmp_path / "huge.autoenc", arrays, document)

    def load():
        with pytest.raises(ValueError, match=r"huge\.autoenc.*weights/conv/kernel.*\(3, 3, 1, 1048576\)"):
            load_model(path)

    assert _peak(load) < 4 * 2**20


def test_members_the_architecture_does_not_use_are_refused_before_inflating(tmp_path):
    # three members of 8 MiB of zeros, 25 KB deflated, beside a valid model: never inflated
    arrays = _small_conv(tmp_path / "m.autoenc")
    for k in range(3):
        arrays[f"junk{k}"] = np.zeros(2 * 2**20, np.float32)
    path = _write_model_file(tmp_path / "bomb.autoenc", arrays, compression=__import__("zipfile").ZIP_DEFLATED)
    assert path.stat().st_size < 200_000

    def load():
        with pytest.raises(ValueError, match=r"bomb\.autoenc.*junk0"):
            load_model(path)

    assert _peak(load) < 2**20


def test_a_bomb_matching_its_architecture_is_refused_by_the_total_cap(tmp_path, monkeypatch):
    # weights and architecture agree (2**20 filters, 36 MiB of zeros deflated to 40 KB); the members'
    # declared sizes exceed the cap (1 GiB, lowered here to 16 MiB) before anything is inflated
    from autoenc import files
    arrays = _small_conv(tmp_path / "m.autoenc")
    document = json.loads(arrays["model.json"].tobytes())
    document["architecture"]["layers"][0]["config"]["filters"] = 2**20
    document["optimizer"] = document["compile"] = None
    arrays = {k: v for k, v in arrays.items() if not k.startswith("optimizer/")}
    arrays["weights/conv/kernel"] = np.zeros((3, 3, 1, 2**20), np.float32)
    arrays["weights/conv/bias"] = np.zeros(2**20, np.float32)
    path = _write_model_file(tmp_path / "bomb.autoenc", arrays, document,
                             compression=__import__("zipfile").ZIP_DEFLATED)
    assert path.stat().st_size < 200_000
    monkeypatch.setattr(files, "MAX_BYTES", 16 * 2**20)

    def load():
        with pytest.raises(ValueError, match=r"bomb\.autoenc.*declare \d+ bytes uncompressed in total"):
            load_model(path)

    assert _peak(load) < 2**20


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("architecture"), "architecture"),
    (lambda d: d["architecture"].pop("layers"), "layers"),
    (lambda d: d["architecture"].__setitem__("layers", 7), "layers"),
    (lambda d: d["architecture"]["layers"][0].pop("config"), "config"),
    (lambda d: d["architecture"]["layers"][0]["config"].__setitem__("kernel_size", 10**30), "kernel_size"),
    (lambda d: d["architecture"]["layers"][0]["config"].__setitem__("filters", -4), "filters"),
    (lambda d: d["architecture"]["layers"][0]["config"].__setitem__("strides", "wide"), "strides"),
    (lambda d: d["architecture"]["layers"][0]["config"].__setitem__("bogus", 1), "bogus"),
    (lambda d: d["architecture"]["input"].__setitem__("shape", [10**30, 8, 1]), "input"),
    (lambda d: d["architecture"]["input"].__setitem__("shape", "8x8"), "input"),
    (lambda d: d.__setitem__("random_state", {"bit_generator": "PCG64", "state": 3}), "random_state"),
    (lambda d: d["compile"].__setitem__("loss", None), "compile"),
    (lambda d: d["optimizer"].__setitem__("iterations", "many"), "optimizer"),
    (lambda d: d["optimizer"].__setitem__("config", {"learning_rate": {"x": 1}}), "optimizer"),
    (lambda d: d.__setitem__("layer_random_states", {"nope": {}}), "layer_random_states"),
])
def test_malformed_model_json_is_a_value_error_naming_file_and_field(tmp_path, change, field):
    arrays = _small_conv(tmp_path / "m.autoenc")
    document = json.loads(arrays["model.json"].tobytes())
    change(document)
    path = _write_model_file(tmp_path / "bad.autoenc", arrays, document)
    with pytest.raises(ValueError, match=rf"bad\.autoenc(?s:.*){field}"):
        load_model(path)


def test_weights_that_are_not_floats_are_refused(tmp_path):
    arrays = _small_conv(tmp_path / "m.autoenc")
    arrays["weights/conv/bias"] = np.array(["a", "b", "c", "d"])
    path = _write_model_file(tmp_path / "text.autoenc", arrays)
    with pytest.raises(ValueError, match=r"text\.autoenc.*weights/conv/bias holds <U1"):
        load_model(path)
