"""autoenc.keras_format: Keras 3's .keras files, written and read.

Three parts:
- without Keras: autoenc -> .keras -> autoenc is exact (weights, optimizer state, the next step bit for
  bit), the writer is atomic and needs h5py, other suffixes keep autoenc's format;
- hostile files, built here from a small good one: zip bombs, huge declared shapes, unknown classes, a
  Lambda layer, registered (custom) names, path-traversal member names, too many or repeated members,
  shared layers, HDF5 external links: each a ValueError naming the file, before anything big is allocated;
- live against Keras (marked keras): both directions on the seed model, a Conv2DTranspose +
  BatchNormalization model, a Conv1D model, a nested encoder/decoder, a Sequential and a model of every
  other layer, with optimizer state, then one more Adam step in each framework.

Tolerances. A round trip copies every weight and optimizer array bit for bit (asserted exactly), so
predictions of the two frameworks differ only by the rounding of the same float32 arithmetic; the
layer-parity tests hold every layer to max|a-b|/max|b| <= 1e-5 (measured <= 3.5e-7 per layer, README),
and these models are at most 8 layers deep through contracting or bounded maps (conv, pooling, sigmoid,
BatchNormalization at inference), so 1e-5 for the model's output. After one more Adam step from the
same state, the loss is computed on identical weights (1e-5 as above) and each weight is held to
adam_step_bound (tests/fixtures/adam_parity.py): the bound that the two frameworks' own moments imply,
which holds on any data, where a flat 1e-5 on weights fails for gradients near epsilon (issue 17).
"""
import io
import json
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason=".keras files need h5py (pip install autoenc[h5])")

import autoenc  # noqa: E402
from autoenc import keras_format  # noqa: E402
from autoenc.layers import Conv2D, Dense, Input, MaxPooling2D, UpSampling2D  # noqa: E402
from autoenc.models import Model, Sequential, load_model  # noqa: E402

from parity_models import rel_err, seed_model  # noqa: E402
from live_keras import import_keras

TOL = 1e-5


def peak_of(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def small_model():
    autoenc.set_random_seed(0)
    m = Sequential([Input(shape=(4,)), Dense(3, activation="relu"), Dense(4)])
    m.compile("adam", "mse")
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    m.fit(x, x, batch_size=4, epochs=1, verbose=0)
    return m, x


def conv_model():
    autoenc.set_random_seed(1)
    inp = Input(shape=(8, 8, 1))
    x = Conv2D(4, 3, padding="same", activation="relu")(inp)
    x = MaxPooling2D(2)(x)
    x = UpSampling2D(2)(x)
    m = Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(x))
    m.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(1).random((8, 8, 8, 1)).astype(np.float32)
    m.fit(x, x, batch_size=4, epochs=1, verbose=0)
    return m, x


def slots_of(model):
    state = model.optimizer.get_state()
    return state["iterations"], {k: np.array(v) for k, v in state["slots"][0].items()}


# --- without Keras: autoenc -> .keras -> autoenc ------------------------------------------------------

@pytest.mark.parametrize("build", [small_model, conv_model])
def test_round_trip_is_exact_and_the_next_step_is_bit_identical(tmp_path, build):
    m, x = build()
    path = tmp_path / "m.keras"
    m.save(path)
    assert sorted(zipfile.ZipFile(path).namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    back = load_model(path)
    assert [l.name for l in back.flat_layers()] == [l.name for l in m.flat_layers()]
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    (it_a, slots_a), (it_b, slots_b) = slots_of(back), slots_of(m)
    assert it_a == it_b == 2 and sorted(slots_a) == sorted(slots_b)
    for k in slots_a:
        np.testing.assert_array_equal(slots_a[k], slots_b[k])
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))
    assert back.train_on_batch(x, x) == m.train_on_batch(x, x)
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_include_optimizer_false_and_an_uncompiled_model(tmp_path):
    m, x = small_model()
    m.save(tmp_path / "plain.keras", include_optimizer=False)
    back = load_model(tmp_path / "plain.keras")
    assert not back.compiled
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))
    fresh = Sequential([Input(shape=(4,)), Dense(2)])
    fresh.save(tmp_path / "fresh.keras")
    assert not load_model(tmp_path / "fresh.keras").compiled


def test_a_compiled_model_that_never_stepped_writes_fresh_slots(tmp_path):
    m = Sequential([Input(shape=(4,)), Dense(2)])
    m.compile(autoenc.optimizers.Adagrad(initial_accumulator_value=0.25), "mse")
    m.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        opt = f["optimizer/vars"]
        assert len(opt) == 4 and int(opt["0"][()]) == 0
        np.testing.assert_array_equal(opt["2"][()], np.full((4, 2), 0.25, np.float32))


def test_other_suffixes_keep_autoencs_format(tmp_path):
    m, _ = small_model()
    m.save(tmp_path / "m.autoenc")
    assert "format.json.npy" in zipfile.ZipFile(tmp_path / "m.autoenc").namelist()


def test_the_write_is_atomic(tmp_path, monkeypatch):
    m, _ = small_model()
    path = tmp_path / "m.keras"
    m.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras_format.json, "dumps", broken)   # fails inside the write, after the file is opened
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]


def test_without_h5py_a_clear_error(tmp_path, monkeypatch):
    m, _ = small_model()
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"autoenc\[h5\]"):
        m.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_an_activation_keras_cannot_spell_is_refused_before_writing(tmp_path):
    m = Sequential([Input(shape=(4,)), Dense(2, activation=autoenc.layers.LeakyReLU(0.1))])
    with pytest.raises(ValueError, match="LeakyReLU"):
        m.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_load_weights_reads_nested_models_by_keras_paths(tmp_path):
    """keras_files matches layers by the paths Keras writes (class name + count per model), nested
    models included, not by numeric name suffixes: a Conv2D named 'conv2d_1' beside a
    Conv2DTranspose no longer mixes them up."""
    def build():
        enc_in = Input(shape=(8, 8, 1))
        encoder = Model(enc_in, Conv2D(2, 3, padding="same", name="conv2d_1")(enc_in), name="enc")
        inp = Input(shape=(8, 8, 1))
        x = encoder(inp)
        x = autoenc.layers.Conv2DTranspose(2, 3, padding="same", name="conv2d_transpose")(x)
        return Model(inp, Conv2D(1, 3, padding="same", name="conv2d")(x))
    autoenc.set_random_seed(2)
    m = build()
    m.save(tmp_path / "m.keras")
    other = build()
    other.load_weights(tmp_path / "m.keras")
    for a, b in zip(other.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert set(keras_format.keras_files.weight_paths(m).values()) >= {
        "layers/functional", "layers/functional/layers/conv2d", "layers/conv2d_transpose", "layers/conv2d"}


# --- hostile files ------------------------------------------------------------------------------------

@pytest.fixture
def good(tmp_path):
    """(config, metadata, h5 bytes) of a small model's .keras file, to be edited into hostile ones."""
    m, _ = small_model()
    m.save(tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as z:
        return json.loads(z.read("config.json")), z.read("metadata.json"), z.read("model.weights.h5")


def archive(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data if isinstance(data, bytes) else json.dumps(data))
    return path


def keras_file(path, config, metadata, h5):
    return archive(path, [("metadata.json", metadata), ("config.json", config), ("model.weights.h5", h5)])


def first_dense(config):
    return config["config"]["layers"][1]


def test_the_good_file_loads(tmp_path, good):
    assert load_model(keras_file(tmp_path / "ok.keras", *good)).compiled


def test_a_zip_bomb_is_refused_before_inflating(tmp_path, good):
    config, metadata, _ = good
    path = archive(tmp_path / "bomb.keras", [("config.json", config), ("metadata.json", metadata),
                                             ("model.weights.h5", bytes(64 * 2**20))], zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 200_000

    def load():
        with pytest.raises(ValueError, match=r"bomb\.keras.*model\.weights\.h5.*zip bomb"):
            load_model(path)

    assert peak_of(load) < 2**20


def test_a_config_bomb_is_refused_before_inflating(tmp_path, good):
    _, metadata, h5 = good
    path = archive(tmp_path / "cfg.keras", [("config.json", b" " * (64 * 2**20)), ("metadata.json", metadata),
                                            ("model.weights.h5", h5)], zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match=r"cfg\.keras.*config\.json"):
        load_model(path)


def test_huge_declared_shapes_allocate_nothing(tmp_path, good):
    """A config asking for Dense(2**21) over the file's small arrays is refused at the first weight."""
    config, metadata, h5 = good
    first_dense(config)["config"]["units"] = 2**21
    path = keras_file(tmp_path / "units.keras", config, metadata, h5)

    def load():
        with pytest.raises(ValueError, match=r"units\.keras.*layers/dense/vars/0 has shape \(4, 3\).*\(4, 2097152\)"):
            load_model(path)

    assert peak_of(load) < 2**20


def test_a_sparse_h5_dataset_declaring_gigabytes_is_refused_before_reading(tmp_path, good):
    """The architecture matches what the HDF5 file declares, but the file stores almost none of it."""
    config, metadata, _ = good
    first_dense(config)["config"]["units"] = 2**28
    config["config"]["layers"][2]["build_config"] = None
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("layers/dense/vars").create_dataset("0", shape=(4, 2**28), dtype="<f4", chunks=(1, 2**16))
        f["layers/dense/vars"].create_dataset("1", shape=(2**28,), dtype="<f4", chunks=(2**16,))
    path = keras_file(tmp_path / "sparse.keras", config, metadata, buffer.getvalue())
    assert path.stat().st_size < 100_000

    def load():
        with pytest.raises(ValueError, match=r"sparse\.keras.*layers/dense/vars/0 declares shape \(4, 268435456\)"):
            load_model(path)

    assert peak_of(load) < 2**20


@pytest.mark.parametrize("class_name, match", [
    ("LSTM", r"layer class 'LSTM' is not one autoenc has"),
    ("Lambda", r"Lambda layer carries Python code"),
    ("TFOpLambda", r"TFOpLambda layer carries Python code"),
])
def test_a_class_autoenc_lacks_or_code_is_refused(tmp_path, good, class_name, match):
    config, metadata, h5 = good
    first_dense(config)["class_name"] = class_name
    if class_name == "Lambda":   # what Keras writes for Lambda(lambda x: ...): marshalled bytecode
        first_dense(config)["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}
    with pytest.raises(ValueError, match=r"hostile\.keras.*" + match):
        load_model(keras_file(tmp_path / "hostile.keras", config, metadata, h5))


def test_a_registered_name_or_module_is_never_followed(tmp_path, good):
    config, metadata, h5 = good
    first_dense(config)["registered_name"] = "evil_package>Dense"
    first_dense(config)["module"] = "os"
    with pytest.raises(ValueError, match=r"'evil_package>Dense' is not one autoenc has"):
        load_model(keras_file(tmp_path / "registered.keras", config, metadata, h5))
    config["compile_config"]["optimizer"]["class_name"] = "Evil"
    first_dense(config)["registered_name"] = None
    with pytest.raises(ValueError, match=r"optimizer 'Evil' is not one autoenc has"):
        load_model(keras_file(tmp_path / "optimizer.keras", config, metadata, h5))


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/passwd", "assets/../../x", "C:/evil", "a\\..\\b"])
def test_path_traversal_member_names_are_refused(tmp_path, good, name):
    config, metadata, h5 = good
    path = archive(tmp_path / "traversal.keras", [("config.json", config), ("metadata.json", metadata),
                                                  ("model.weights.h5", h5), (name, b"x")])
    with pytest.raises(ValueError, match=r"traversal\.keras: the zip member name .* is not a plain relative path"):
        load_model(path)


def test_too_many_or_repeated_members_are_refused(tmp_path, good):
    config, metadata, h5 = good
    many = [("config.json", config), ("metadata.json", metadata), ("model.weights.h5", h5)] + [
        (f"assets/{k}", b"") for k in range(1001)]
    with pytest.raises(ValueError, match=r"many\.keras is a zip archive of 1004 members"):
        load_model(archive(tmp_path / "many.keras", many))
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = archive(tmp_path / "twice.keras", [("config.json", config), ("config.json", config),
                                                   ("metadata.json", metadata), ("model.weights.h5", h5)])
    with pytest.raises(ValueError, match=r"twice\.keras: the zip members \['config\.json'\] appear more than once"):
        load_model(twice)


def test_an_unsupported_option_is_named(tmp_path, good):
    config, metadata, h5 = good
    first_dense(config)["config"]["lora_rank"] = 4
    with pytest.raises(ValueError, match=r"layers\[1\] \(Dense 'dense.*'\): option lora_rank=4 is not supported"):
        load_model(keras_file(tmp_path / "lora.keras", config, metadata, h5))


def test_conv2d_with_groups_is_refused_naming_it(tmp_path):
    inp = Input(shape=(6, 6, 4))
    m = Model(inp, Conv2D(4, 3)(inp))
    m.save(tmp_path / "c.keras")
    with zipfile.ZipFile(tmp_path / "c.keras") as z:
        config, metadata, h5 = json.loads(z.read("config.json")), z.read("metadata.json"), z.read("model.weights.h5")
    config["config"]["layers"][1]["config"]["groups"] = 2
    with pytest.raises(ValueError, match=r"groups\.keras.*Conv2D.*groups"):
        load_model(keras_file(tmp_path / "groups.keras", config, metadata, h5))


def test_a_shared_layer_is_refused(tmp_path):
    m, _ = conv_model()
    m.save(tmp_path / "c.keras")
    with zipfile.ZipFile(tmp_path / "c.keras") as z:
        config, metadata, h5 = json.loads(z.read("config.json")), z.read("metadata.json"), z.read("model.weights.h5")
    conv = config["config"]["layers"][1]
    conv["inbound_nodes"] = conv["inbound_nodes"] * 2
    with pytest.raises(ValueError, match=r"called 2 times \(a shared layer\)"):
        load_model(keras_file(tmp_path / "shared.keras", config, metadata, h5))


def test_an_external_link_inside_a_keras_file_is_refused(tmp_path, good):
    config, metadata, _ = good
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("k", data=np.full((4, 3), 42.0, np.float32))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("layers/dense/vars")["0"] = h5py.ExternalLink(str(secret), "/k")
    with pytest.raises(ValueError, match=r"link\.keras \(model\.weights\.h5\).*external link"):
        load_model(keras_file(tmp_path / "link.keras", config, metadata, buffer.getvalue()))


@pytest.mark.parametrize("edit", [
    lambda c: c.pop("config"),
    lambda c: c["config"].__setitem__("layers", "nope"),
    lambda c: c["config"]["layers"][1].__setitem__("config", 3),
    lambda c: c["config"]["layers"][0]["config"].__setitem__("batch_shape", [None, -4]),
    lambda c: c["config"]["layers"][1]["config"].__setitem__("units", "three"),
    lambda c: c["config"]["layers"][1]["config"].__setitem__("kernel_initializer", {"class_name": "Os"}),
    lambda c: c.__setitem__("class_name", "MyModel"),
    lambda c: c["compile_config"].__setitem__("loss", {"class_name": "Huber"}),
    lambda c: c["compile_config"]["optimizer"]["config"].__setitem__("learning_rate", {"class_name": "Exp"}),
], ids=["no config", "layers not a list", "config not an object", "negative shape", "units a string",
        "unknown initializer", "custom model class", "unknown loss", "schedule"])
def test_a_malformed_config_is_a_value_error_naming_the_file(tmp_path, good, edit):
    config, metadata, h5 = good
    edit(config)
    with pytest.raises(ValueError, match=r"bad\.keras"):
        load_model(keras_file(tmp_path / "bad.keras", config, metadata, h5))


def _mutations(value, rng, depth=0):
    """``value`` (a JSON document) with one random entry replaced by something of another kind."""
    odd = [None, -1, 2**63, 1e308, "", "x" * 300, [], {}, [None], {"class_name": "Lambda"}, True, 0.5]
    if isinstance(value, dict) and value and rng.random() < 0.85:
        key = list(value)[rng.integers(len(value))]
        out = dict(value)
        out[key] = _mutations(value[key], rng, depth + 1) if rng.random() < 0.7 else odd[rng.integers(len(odd))]
        if rng.random() < 0.1:
            out.pop(key)
        return out
    if isinstance(value, list) and value and rng.random() < 0.85:
        k = rng.integers(len(value))
        return value[:k] + [_mutations(value[k], rng, depth + 1)] + value[k + 1:]
    return odd[rng.integers(len(odd))]


def test_a_fuzzed_config_is_a_value_error_or_a_model(tmp_path, good):
    """300 random corruptions of config.json: each loads or raises ValueError naming the file, never
    KeyError, TypeError, AttributeError, ... from inside the reader."""
    config, metadata, h5 = good
    rng = np.random.default_rng(0)
    for k in range(300):
        path = keras_file(tmp_path / f"fuzz{k}.keras", _mutations(config, rng), metadata, h5)
        try:
            load_model(path)
        except ValueError as error:
            assert f"fuzz{k}.keras" in str(error), str(error)
        path.unlink()


def test_weights_the_model_does_not_use_are_refused(tmp_path, good):
    config, metadata, h5 = good
    buffer = io.BytesIO(h5)
    with h5py.File(buffer, "a") as f:
        f.create_group("layers/extra/vars")["0"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"extra\.keras: model\.weights\.h5 holds arrays the model does not use"):
        load_model(keras_file(tmp_path / "extra.keras", config, metadata, buffer.getvalue()))


def test_not_a_zip_or_no_config(tmp_path, good):
    (tmp_path / "junk.keras").write_bytes(b"junk" * 100)
    with pytest.raises(ValueError, match=r"junk\.keras is not a \.keras file"):
        load_model(tmp_path / "junk.keras")
    _, metadata, h5 = good
    path = archive(tmp_path / "noconfig.keras", [("metadata.json", metadata), ("model.weights.h5", h5)])
    with pytest.raises(ValueError, match=r"noconfig\.keras has no config\.json"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")


# --- live against Keras -------------------------------------------------------------------------------

def _keras():
    return import_keras()[1]


def convt_bn_model(lib):
    """Strided Conv2D, Conv2DTranspose and BatchNormalization: 12x12x1 -> 6x6x8 -> 12x12x1."""
    L = lib.layers
    inp = lib.Input(shape=(12, 12, 1))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = L.BatchNormalization()(x)
    x = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
    x = L.BatchNormalization()(x)
    return lib.Model(inp, L.Conv2D(1, 3, padding="same", activation="sigmoid")(x))


def conv1d_model(lib):
    """Conv1D (same, causal), MaxPooling1D, UpSampling1D, Conv1DTranspose on 16 steps of 2 channels."""
    L = lib.layers
    inp = lib.Input(shape=(16, 2))
    x = L.Conv1D(8, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(4, 3, padding="causal", activation="relu")(x)
    x = L.UpSampling1D(2)(x)
    x = L.Conv1DTranspose(4, 3, padding="same", activation="relu")(x)
    return lib.Model(inp, L.Conv1D(2, 3, padding="same", activation="sigmoid")(x))


def nested_model(lib):
    """A functional encoder and a Sequential decoder nested in the autoencoder that chains them."""
    L = lib.layers
    ei = lib.Input(shape=(12, 12, 1))
    e = L.MaxPooling2D(2)(L.Conv2D(4, 3, padding="same", activation="relu")(ei))
    encoder = lib.Model(ei, L.Conv2D(4, 3, padding="same", activation="relu")(e), name="encoder")
    decoder = lib.Sequential([lib.Input(shape=(6, 6, 4)), L.UpSampling2D(2),
                              L.Conv2D(1, 3, padding="same", activation="sigmoid")], name="decoder")
    inp = lib.Input(shape=(12, 12, 1))
    return lib.Model(inp, decoder(encoder(inp)), name="autoencoder")


def sequential_model(lib, rate=0.0):
    """A dense Sequential autoencoder: Flatten, Dense, Dropout, Dense, Reshape. Dropout's rate is 0 where
    the two frameworks train side by side (their random masks differ)."""
    L = lib.layers
    return lib.Sequential([lib.Input(shape=(12, 12, 1)), L.Flatten(), L.Dense(16, activation="relu"), L.Dropout(rate),
                           L.Dense(144, activation="sigmoid"), L.Reshape((12, 12, 1))])


def every_layer_model(lib):
    """The layers the other models leave out: padding, cropping, average pooling, activation layers,
    merging layers, a regularizer, non-default activations."""
    L = lib.layers
    inp = lib.Input(shape=(12, 12, 2))
    x = L.Conv2D(4, 3, activation="elu", kernel_regularizer="l2")(L.ZeroPadding2D(1)(inp))
    a, b, c, d = L.LeakyReLU(negative_slope=0.2)(x), L.PReLU()(x), L.ELU()(x), L.ReLU(max_value=6.0)(x)
    x = L.Concatenate()([L.Add()([a, b]), c, d])
    x = L.Softmax()(L.Activation("tanh")(L.Cropping2D(1)(L.AveragePooling2D(2)(x))))
    return lib.Model(inp, L.Conv2D(2, 3, padding="same", activation="sigmoid")(L.UpSampling2D(3)(x)))


MODELS = {"seed": seed_model, "conv2d_transpose_bn": convt_bn_model, "conv1d": conv1d_model, "nested": nested_model,
          "sequential": sequential_model, "every_layer": every_layer_model}
MEASURED = {}


def data(model, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)


def autoenc_per_variable(model, slot):
    """autoenc's flat slot ``slot`` cut into one array per trainable variable, in flat_layers order."""
    flat = model.optimizer.get_state()["slots"][0][slot]
    out, offset = [], 0
    for layer in model.flat_layers():
        for n in layer.trainable_names:
            p = layer.params[n]
            out.append(flat[offset:offset + p.size].reshape(p.shape))
            offset += p.size
    assert offset == flat.size
    return out


# Keras' optimizer attribute holding each autoenc slot, per optimizer
KERAS_SLOTS = {"Adam": {"m": "_momentums", "v": "_velocities"}, "AdamW": {"m": "_momentums", "v": "_velocities"},
               "Nadam": {"m": "_momentums", "v": "_velocities"}, "Adamax": {"m": "_m", "u": "_u"},
               "SGD": {"momentum": "momentums"},
               "RMSprop": {"velocity": "_velocities", "momentum": "_momentums", "average_gradient": "_average_gradients"},
               "Adadelta": {"accumulated_grad": "_accumulated_grads", "accumulated_delta_var": "_accumulated_delta_vars"},
               "Adagrad": {"accumulator": "_accumulators"}}


def assert_same_state(am, km):
    """Weights, step count, learning rate and every slot of every variable: bit for bit."""
    for a, k in zip(am.get_weights(), km.get_weights()):
        np.testing.assert_array_equal(a, k)
    assert am.optimizer.iterations == int(km.optimizer.iterations.numpy())
    assert np.float32(am.optimizer.learning_rate) == np.float32(km.optimizer.learning_rate.numpy())
    kind = type(am.optimizer).__name__
    assert kind == type(km.optimizer).__name__
    slots = am.optimizer.get_state()["slots"]
    ours_names = sorted(slots[0]) if slots else []
    for slot, attribute in KERAS_SLOTS[kind].items():
        if slot not in ours_names:   # SGD without momentum, RMSprop without momentum or centring
            assert not getattr(km.optimizer, attribute)
            continue
        ours = autoenc_per_variable(am, slot)
        theirs = [v.numpy() for v in getattr(km.optimizer, attribute)]
        assert len(ours) == len(theirs) == len(km.trainable_variables)
        for a, k in zip(ours, theirs):
            np.testing.assert_array_equal(a, k)


def one_more_adam_step(am, km, x, name):
    """Both take one train_on_batch from the same state: losses within TOL, every weight within
    adam_step_bound of Keras' (see the module docstring). Returns the figures."""
    from adam_parity import adam_step_bound, excess_over_bound
    w_before = km.get_weights()
    lk, la = float(km.train_on_batch(x, x)), float(am.train_on_batch(x, x))
    t = int(km.optimizer.iterations.numpy())
    assert am.optimizer.iterations == t
    m_a, v_a = autoenc_per_variable(am, "m"), autoenc_per_variable(am, "v")
    trainable = {id(v) for v in km.trainable_variables}
    weights_k = {id(v): v.numpy() for v in km.trainable_variables}
    before = {id(v): w for v, w in zip(km.weights, w_before) if id(v) in trainable}
    excess, werr = 0.0, 0.0
    ours = [layer.params[n] for layer in am.flat_layers() for n in layer.trainable_names]
    for k, v in enumerate(km.trainable_variables):
        wk, wa, w0 = weights_k[id(v)], ours[k], before[id(v)]
        mk, vk = km.optimizer._momentums[k].numpy(), km.optimizer._velocities[k].numpy()
        bound = adam_step_bound(w0.ravel().astype(np.float64), wk.ravel().astype(np.float64),
                                m_a[k].ravel().astype(np.float64), mk.ravel().astype(np.float64),
                                v_a[k].ravel().astype(np.float64), vk.ravel().astype(np.float64), lr=1e-3, t=t)
        # up to 1 where both moments are near zero and s_a ~ s_k: then |u_a - u_k| = |m_a - m_k| / (s + eps),
        # the bound's first term exactly (the conv bias before BatchNormalization measures 0.99994)
        excess = max(excess, excess_over_bound(np.abs(wa.ravel().astype(np.float64) - wk.ravel()), bound)[0])
        werr = max(werr, rel_err(wa, wk))
    loss_err = abs(la - lk) / abs(lk)
    pred_err = rel_err(am.predict(x, verbose=0), km.predict(x, verbose=0))
    assert loss_err <= TOL, f"{name}: loss {la} vs Keras {lk}"
    assert excess <= 1, f"{name}: a weight is {excess:.3g}x adam_step_bound away from Keras'"
    return {"step loss": loss_err, "step weights": werr, "step weights / bound": excess, "step predictions": pred_err}


@pytest.mark.keras
@pytest.mark.parametrize("name", list(MODELS))
def test_autoenc_to_keras(tmp_path, name):
    """autoenc trains 2 Adam steps and saves m.keras; Keras opens it with the same weights and optimizer
    state (bit for bit), the same predictions (1e-5); one more step in each agrees; fit continues."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    autoenc.set_random_seed(0)
    am = MODELS[name](autoenc)
    am.compile(optimizer="adam", loss="mean_squared_error")
    x = data(am)
    am.fit(x, x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    am.save(tmp_path / "m.keras")
    km = keras.saving.load_model(tmp_path / "m.keras")
    assert [l.name for l in km.layers] == [l.name for l in am.layers]
    assert_same_state(am, km)
    pred = rel_err(am.predict(x, verbose=0), km.predict(x, verbose=0))
    assert pred <= TOL
    figures = {"predictions": pred, **one_more_adam_step(am, km, x, f"{name}, autoenc -> Keras")}
    MEASURED[f"{name}: autoenc -> Keras"] = figures
    history = km.fit(x, x, batch_size=4, epochs=1, verbose=0)   # Keras trains on from the file
    assert np.isfinite(history.history["loss"]).all()
    km.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")   # ... and after a new compile too
    assert np.isfinite(km.fit(x, x, epochs=1, verbose=0).history["loss"]).all()


@pytest.mark.keras
@pytest.mark.parametrize("name", list(MODELS))
def test_keras_to_autoenc(tmp_path, name):
    """Keras trains 2 Adam steps and saves k.keras; autoenc builds the model from it with the same
    weights and optimizer state (bit for bit), the same predictions (1e-5); one more step agrees."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    km = MODELS[name](keras)
    km.compile(optimizer="adam", loss="mean_squared_error")
    x = data(km)
    km.fit(x, x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    km.save(tmp_path / "k.keras")
    am = load_model(tmp_path / "k.keras")
    assert [l.name for l in am.layers] == [l.name for l in km.layers]
    assert am.count_params() == km.count_params()
    assert_same_state(am, km)
    pred = rel_err(am.predict(x, verbose=0), km.predict(x, verbose=0))
    assert pred <= TOL
    MEASURED[f"{name}: Keras -> autoenc"] = {"predictions": pred,
                                             **one_more_adam_step(am, km, x, f"{name}, Keras -> autoenc")}


@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda o: o.SGD(0.01, momentum=0.9, nesterov=True), lambda o: o.SGD(0.01),
    lambda o: o.RMSprop(momentum=0.5, centered=True), lambda o: o.RMSprop(),
    lambda o: o.Adam(3e-4, beta_1=0.8), lambda o: o.AdamW(weight_decay=0.01), lambda o: o.Adadelta(1.0),
    lambda o: o.Adagrad(initial_accumulator_value=0.2), lambda o: o.Adamax(), lambda o: o.Nadam(),
], ids=["sgd-nesterov", "sgd", "rmsprop-centred-momentum", "rmsprop", "adam", "adamw", "adadelta", "adagrad",
        "adamax", "nadam"])
def test_every_optimizers_state_travels_both_ways(tmp_path, make):
    """Each optimizer's step count, learning rate and slots, autoenc -> Keras and Keras -> autoenc, bit
    for bit; then the next step from the file in both (losses within TOL)."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    autoenc.set_random_seed(0)
    am = nested_model(autoenc)
    am.compile(optimizer=make(autoenc.optimizers), loss="mse")
    x = data(am)
    am.fit(x, x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    am.save(tmp_path / "a.keras")
    km = keras.saving.load_model(tmp_path / "a.keras")
    assert_same_state(am, km)
    lk, la = float(km.train_on_batch(x, x)), float(am.train_on_batch(x, x))
    assert abs(la - lk) <= TOL * abs(lk)
    km.save(tmp_path / "k.keras")          # Keras' own file of its state after the step
    back = load_model(tmp_path / "k.keras")
    assert_same_state(back, km)
    if type(back.optimizer).__name__ == "Nadam":   # its u_product, recomputed from the step count, is Keras'
        assert back.optimizer.u_product(back.optimizer.iterations, np.float32) == km.optimizer._u_product.numpy()


@pytest.mark.keras
def test_compile_settings_travel(tmp_path):
    """Loss (with its options) and metrics, both ways."""
    keras = _keras()
    autoenc.set_random_seed(0)
    am = sequential_model(autoenc, rate=0.2)
    am.compile(optimizer="rmsprop", loss=autoenc.losses.BinaryCrossentropy(from_logits=False), metrics=["mae"])
    am.save(tmp_path / "a.keras")
    km = keras.saving.load_model(tmp_path / "a.keras")
    assert type(km.optimizer).__name__ == "RMSprop" and km.layers[2].rate == 0.2
    km.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(), metrics=["mae"])
    km.save(tmp_path / "k.keras")
    back = load_model(tmp_path / "k.keras")
    assert type(back.loss).__name__ == "BinaryCrossentropy" and [n for n, _ in back.metrics] == ["mae"]
    assert type(back.optimizer).__name__ == "Adam" and back.layers[2].rate == 0.2
    assert back.optimizer.iterations == 0 and back.optimizer.get_state()["slots"] is None   # never built in Keras


@pytest.mark.keras
def test_a_keras_layer_autoenc_lacks_is_named(tmp_path):
    keras = _keras()
    km = keras.Sequential([keras.Input((10, 3)), keras.layers.LSTM(4)])
    km.save(tmp_path / "lstm.keras")
    with pytest.raises(ValueError, match=r"lstm\.keras.*layer class 'LSTM' is not one autoenc has"):
        load_model(tmp_path / "lstm.keras")
    km = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2)])
    km.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match=r"lambda\.keras.*Lambda layer carries Python code"):
        load_model(tmp_path / "lambda.keras")


@pytest.mark.keras
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_weight_files_of_nested_models_load_into_autoenc(tmp_path, suffix):
    """model.load_weights of a Keras file of the nested encoder/decoder, which keras_files refused
    before: matched by Keras' paths, although autoenc's layer names (conv2d_7, ...) differ from Keras'."""
    keras = _keras()
    keras.utils.set_random_seed(0)
    km = nested_model(keras)
    path = tmp_path / f"nested{suffix}"
    km.save_weights(path) if suffix == ".weights.h5" else km.save(path)
    am = nested_model(autoenc)
    am.load_weights(path)
    for a, k in zip(am.get_weights(), km.get_weights()):
        np.testing.assert_array_equal(a, k)


@pytest.fixture(scope="module", autouse=True)
def _print_measured():
    yield
    if MEASURED:
        print("\n.keras round trips (max|a-b|/max|b|; 'step weights / bound': largest |a-b| / adam_step_bound):")
        for key, figures in sorted(MEASURED.items()):
            print(f"  {key}: " + ", ".join(f"{k} {v:.2g}" for k, v in figures.items()))


def several_outputs_model():
    """An encoder of two outputs nested in a model that reads its second output first and returns two."""
    from autoenc.layers import Concatenate, Flatten
    inp = Input(shape=(8, 8, 1), name="img")
    h = Flatten()(Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp))
    encoder = Model(inp, [Dense(2, name="z_mean")(h), Dense(2, name="z_log_var")(h)], name="encoder")
    outer_in = Input(shape=(8, 8, 1), name="img2")
    z_mean, z_log_var = encoder(outer_in)
    head = Dense(3, name="head")(Concatenate(name="both")([z_log_var, z_mean]))
    return Model(outer_in, [head, z_log_var], name="outer")


def test_several_outputs_round_trip_exactly(tmp_path):
    model = several_outputs_model()
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")
    assert len(back.outputs) == 2
    for a, b in zip(back.predict(x, verbose=0), model.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)
    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    inbound = [e for e in config["config"]["layers"] if e["name"] == "both"][0]["inbound_nodes"][0]
    assert [t["config"]["keras_history"] for t in inbound["args"][0]] == [["encoder", 0, 1], ["encoder", 0, 0]]


@pytest.mark.keras
def test_several_outputs_both_ways_with_keras(tmp_path):
    keras = pytest.importorskip("keras", reason="the check opens the file with Keras 3")
    model = several_outputs_model()
    x = np.random.default_rng(1).random((5, 8, 8, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    got = theirs.predict(x, verbose=0)
    # the same float32 weights and sums of at most 36 terms: the per-layer parity bound (1e-5) carries over
    assert len(got) == 2 and all(rel_err(g, e) <= 1e-5 for g, e in zip(got, expected))
    theirs.save(tmp_path / "k.keras")
    back = load_model(tmp_path / "k.keras")
    for a, b in zip(back.predict(x, verbose=0), expected):
        np.testing.assert_array_equal(a, b)   # Keras copied our weights bit for bit; the same kernels ran


def test_an_output_index_out_of_range_is_refused(tmp_path):
    model = several_outputs_model()
    model.save(tmp_path / "m.keras")
    members = {n: zipfile.ZipFile(tmp_path / "m.keras").read(n) for n in zipfile.ZipFile(tmp_path / "m.keras").namelist()}
    config = json.loads(members["config.json"])
    config["config"]["output_layers"][1] = ["encoder", 1, 5]
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(ValueError, match="reads output 5 of 'encoder', which has 2 outputs"):
        load_model(tmp_path / "bad.keras")


@pytest.mark.keras
def test_a_vae_encoder_goes_to_keras_with_its_sampling_as_a_custom_class(tmp_path):
    keras = pytest.importorskip("keras", reason="the check opens the file with Keras 3")
    from autoenc.models import keras_io_vae

    class Sampling(keras.layers.Layer):   # keras-io's, as a Keras user has it
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            eps = keras.random.normal(keras.ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + keras.ops.exp(0.5 * z_log_var) * eps

    encoder = keras_io_vae(latent_dim=2).encoder
    x = np.random.default_rng(2).random((4, 28, 28, 1), dtype=np.float32)
    expected = encoder.predict(x, verbose=0)
    encoder.save(tmp_path / "encoder.keras")
    entry = [e for e in json.loads(zipfile.ZipFile(tmp_path / "encoder.keras").read("config.json"))["config"]["layers"]
             if e["class_name"] == "Sampling"][0]
    assert entry["registered_name"] == "autoenc>Sampling" and "seed" not in entry["config"]
    theirs = keras.saving.load_model(tmp_path / "encoder.keras", custom_objects={"autoenc>Sampling": Sampling})
    got = theirs.predict(x, verbose=0)
    # z_mean and z_log_var: the same float32 weights, the per-layer parity bound (1e-5) carries over
    assert all(rel_err(g, e) <= 1e-5 for g, e in zip(got[:2], expected[:2]))
    theirs.save(tmp_path / "k.keras")
    back = load_model(tmp_path / "k.keras")
    assert [type(layer).__name__ for layer in back.layers].count("Sampling") == 1
    for a, b in zip(back.predict(x, verbose=0)[:2], expected[:2]):
        np.testing.assert_array_equal(a, b)
