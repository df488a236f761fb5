"""autoenc.keras_files against hostile Keras weight files, built here with h5py (tiny on disk).

A weights file must never read another local file into the model (external storage, external or soft
links, virtual datasets), and never allocate or inflate more than the model's weights before a check.
Reading real Keras files is tested live in tests/test_keras_parity.py.
"""
import io
import tracemalloc
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="reading Keras weight files needs h5py (pip install autoenc[h5])")

import autoenc  # noqa: E402
from autoenc.keras_files import load_keras_weights, read_keras_weights  # noqa: E402
from autoenc.layers import Dense, Input  # noqa: E402
from autoenc.models import Sequential  # noqa: E402

KERNEL = np.arange(6, dtype=np.float32).reshape(3, 2) / 8
BIAS = np.array([0.5, -0.5], np.float32)


def model():
    autoenc.set_random_seed(0)
    return Sequential([Input(shape=(3,)), Dense(2)])


def weights_file(path, kernel=KERNEL, bias=BIAS, **kernel_options):
    """A Keras 3 .weights.h5 file of one Dense layer: layers/dense/vars/{0,1}."""
    with h5py.File(path, "w") as f:
        vars_ = f.create_group("layers/dense/vars")
        if kernel is not None:
            vars_.create_dataset("0", data=kernel, **kernel_options)
        vars_.create_dataset("1", data=bias)
    return path


def assert_unchanged(m, before):
    for a, b in zip(m.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_a_plain_weights_file_loads(tmp_path):
    m = model()
    load_keras_weights(m, weights_file(tmp_path / "ok.weights.h5"))
    np.testing.assert_array_equal(m.get_weights()[0], KERNEL)
    np.testing.assert_array_equal(m.get_weights()[1], BIAS)
    weights, names = read_keras_weights(tmp_path / "ok.weights.h5")
    assert names == {"layers/dense": None} and [w.shape for w in weights["layers/dense"]] == [(3, 2), (2,)]


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_bytes(np.full(6, 42.0, np.float32).tobytes())   # stands for /etc/shadow, an ssh key, ...
    return path


def refused(m, path, match):
    before = m.get_weights()
    with pytest.raises(ValueError, match=match):
        load_keras_weights(m, path)
    assert_unchanged(m, before)
    with pytest.raises(ValueError, match=match):
        read_keras_weights(path)


def test_external_storage_is_refused(tmp_path, secret):
    path = tmp_path / "external.weights.h5"
    with h5py.File(path, "w") as f:
        vars_ = f.create_group("layers/dense/vars")
        vars_.create_dataset("0", shape=(3, 2), dtype="<f4", external=[(str(secret), 0, 24)])
        vars_.create_dataset("1", data=BIAS)
    refused(model(), path, r"external\.weights\.h5.*layers/dense/vars/0.*external storage")


def test_an_external_link_is_refused(tmp_path):
    other = weights_file(tmp_path / "other.h5")
    path = tmp_path / "link.weights.h5"
    with h5py.File(path, "w") as f:
        vars_ = f.create_group("layers/dense/vars")
        vars_["0"] = h5py.ExternalLink(str(other), "/layers/dense/vars/0")
        vars_.create_dataset("1", data=BIAS)
    refused(model(), path, r"link\.weights\.h5.*layers/dense/vars/0.*external link")


def test_an_external_link_to_a_whole_group_is_refused(tmp_path):
    other = weights_file(tmp_path / "other.h5")
    path = tmp_path / "grouplink.weights.h5"
    with h5py.File(path, "w") as f:
        f["layers"] = h5py.ExternalLink(str(other), "/layers")
    refused(model(), path, r"grouplink\.weights\.h5.*/layers.*external link")


def test_a_soft_link_is_refused(tmp_path):
    path = tmp_path / "soft.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("elsewhere", data=KERNEL)
        vars_ = f.create_group("layers/dense/vars")
        vars_["0"] = h5py.SoftLink("/elsewhere")
        vars_.create_dataset("1", data=BIAS)
    refused(model(), path, r"soft\.weights\.h5.*layers/dense/vars/0.*soft link")


def test_a_virtual_dataset_is_refused(tmp_path):
    source = weights_file(tmp_path / "source.h5")
    path = tmp_path / "virtual.weights.h5"
    layout = h5py.VirtualLayout(shape=(3, 2), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(source), "/layers/dense/vars/0", shape=(3, 2))
    with h5py.File(path, "w") as f:
        vars_ = f.create_group("layers/dense/vars")
        vars_.create_virtual_dataset("0", layout)
        vars_.create_dataset("1", data=BIAS)
    refused(model(), path, r"virtual\.weights\.h5.*layers/dense/vars/0.*virtual")


@pytest.mark.parametrize("kernel", [np.arange(6, dtype=np.int32).reshape(3, 2),
                                    np.array([[b"ab", b"cd"]] * 3),
                                    np.zeros((3, 2), [("a", "<f4")])])
def test_anything_but_a_plain_float_dataset_is_refused(tmp_path, kernel):
    path = weights_file(tmp_path / "typed.weights.h5", kernel=kernel)
    refused(model(), path, r"typed\.weights\.h5.*layers/dense/vars/0.*float")


def test_a_group_where_a_weight_should_be_is_refused(tmp_path):
    path = weights_file(tmp_path / "group.weights.h5", kernel=None)
    with h5py.File(path, "a") as f:
        f.create_group("layers/dense/vars/0")
    refused(model(), path, r"group\.weights\.h5.*layers/dense/vars/0")


def peak_of(call):
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_sparse_file_asking_for_4_gib_is_refused_before_reading(tmp_path):
    # a chunked dataset of 2**30 float32 with no chunk written: a few KB on disk, 4 GiB when read
    path = tmp_path / "sparse.weights.h5"
    with h5py.File(path, "w") as f:
        vars_ = f.create_group("layers/dense/vars")
        vars_.create_dataset("0", shape=(2**30,), dtype="<f4", chunks=(2**16,))
        vars_.create_dataset("1", data=BIAS)
    assert path.stat().st_size < 100_000
    m = model()

    def load_into_model():
        with pytest.raises(ValueError, match=r"dense.*sparse\.weights\.h5.*\(1073741824,\)"):
            load_keras_weights(m, path)

    def read_alone():
        with pytest.raises(ValueError, match=r"sparse\.weights\.h5.*declare 4294967304 bytes.*limit"):
            read_keras_weights(path)

    assert peak_of(load_into_model) < 2**20
    assert peak_of(read_alone) < 2**20


def keras_zip(path, weights_h5, config=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.weights.h5", weights_h5)
        if config is not None:
            z.writestr("config.json", config)
    return path


def test_a_keras_archive_loads(tmp_path):
    h5 = weights_file(tmp_path / "w.h5").read_bytes()
    config = b'{"config": {"layers": [{"config": {"name": "input"}}, {"config": {"name": "dense"}}]}}'
    m = model()
    load_keras_weights(m, keras_zip(tmp_path / "m.keras", h5, config))
    np.testing.assert_array_equal(m.get_weights()[0], KERNEL)


def test_a_keras_archive_whose_member_inflates_to_64_mib_is_refused_before_inflating(tmp_path):
    path = keras_zip(tmp_path / "bomb.keras", bytes(64 * 2**20))   # 64 KB on disk
    assert path.stat().st_size < 200_000
    m = model()

    def load():
        with pytest.raises(ValueError, match=r"bomb\.keras.*model\.weights\.h5.*67108864 bytes"):
            load_keras_weights(m, path)

    assert peak_of(load) < 2**20


def test_a_keras_archive_whose_config_inflates_is_refused(tmp_path):
    h5 = weights_file(tmp_path / "w.h5").read_bytes()
    path = keras_zip(tmp_path / "config.keras", h5, b" " * (64 * 2**20))
    m = model()

    def load():
        with pytest.raises(ValueError, match=r"config\.keras.*config\.json.*67108864 bytes"):
            load_keras_weights(m, path)

    assert peak_of(load) < 2**20


def test_garbage_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(b"not an hdf5 file" * 100)
    refused(model(), path, r"junk\.weights\.h5")
    bad_json = keras_zip(tmp_path / "json.keras", weights_file(tmp_path / "w.h5").read_bytes(), b"{nope")
    refused(model(), bad_json, r"json\.keras.*config\.json")
    no_h5 = keras_zip(tmp_path / "noh5.keras", io.BytesIO(b"junk").getvalue())
    refused(model(), no_h5, r"noh5\.keras")
