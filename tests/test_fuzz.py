"""Readers fed malformed bytes: a clear ValueError, never a hang, a crash or a huge allocation."""
import gzip
import io
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autoenc
from autoenc.datasets._formats import read_idx
from autoenc.files import read_npz
from autoenc.layers import Dense, Input
from autoenc.models import Sequential


def idx_bytes():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return b"\x00\x00\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in x.shape) + x.tobytes()


def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def mutate(data, edits):
    data = bytearray(data)
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    return bytes(data)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


@settings(max_examples=150)
@given(edits=edits, cut=st.integers(0, 200), compress=st.booleans())
def test_idx_reader_fuzz(tmp_path_factory, edits, cut, compress):
    data = mutate(idx_bytes(), edits)[: max(0, len(idx_bytes()) - cut) or None]
    if compress:
        data = mutate(gzip.compress(data), edits[:2])
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if compress else "f")
    path.write_bytes(data)
    try:
        out = read_idx(path)
    except ValueError:
        return
    assert out.nbytes <= 1 << 30


@settings(max_examples=150)
@given(edits=edits, cut=st.integers(0, 300))
def test_npz_reader_fuzz(tmp_path_factory, edits, cut):
    good = npz_bytes(a=np.arange(12, dtype=np.float32).reshape(3, 4), b=np.array(["x", "y"]))
    data = mutate(good, edits)
    data = data[: len(data) - cut] if cut < len(data) else data
    path = tmp_path_factory.mktemp("npz") / "f.npz"
    path.write_bytes(data)
    try:
        read_npz(path)
    except ValueError:
        pass


def test_npz_huge_declared_shape_is_refused_before_allocating(tmp_path):
    # an archived .npy whose header declares 10**12 floats, followed by 16 bytes
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, np.float32))
    header["shape"] = (10**12,)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", buf.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match="more than the limit"):
        read_npz(path)
    header["shape"] = (8,)  # small, but longer than the data that follows
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", buf.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_npz(path)


@settings(max_examples=60)
@given(edits=edits, cut=st.integers(0, 400))
def test_weights_file_fuzz(tmp_path_factory, edits, cut):
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(2)])
    folder = tmp_path_factory.mktemp("w")
    model.save_weights(folder / "w.npz")
    data = mutate((folder / "w.npz").read_bytes(), edits)
    (folder / "w.npz").write_bytes(data[: len(data) - cut] if cut < len(data) else data)
    before = model.get_weights()
    try:
        model.load_weights(folder / "w.npz")
    except ValueError:
        for a, b in zip(model.get_weights(), before):  # a refused file changes nothing
            np.testing.assert_array_equal(a, b)


@settings(max_examples=60)
@given(edits=edits, cut=st.integers(0, 400))
def test_model_file_fuzz(tmp_path_factory, edits, cut):
    from autoenc.models import load_model
    autoenc.set_random_seed(0)
    model = Sequential([Input(shape=(3,)), Dense(2)])
    model.compile("adam", "mse")
    folder = tmp_path_factory.mktemp("m")
    model.save(folder / "m.autoenc")
    data = mutate((folder / "m.autoenc").read_bytes(), edits)
    (folder / "m.autoenc").write_bytes(data[: len(data) - cut] if cut < len(data) else data)
    try:
        loaded = load_model(folder / "m.autoenc")
    except ValueError:
        return
    # an accepted file passed its checksum: it is the model that was saved
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_npz_with_an_unknown_compression_method_is_a_value_error(tmp_path):
    data = bytearray(npz_bytes(a=np.zeros(3, np.float32)))
    central = data.index(b"PK\x01\x02")  # the central directory entry of the first member
    data[central + 10:central + 12] = (99).to_bytes(2, "little")  # its compression method: no such method
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="cannot be read|not a valid"):
        read_npz(path)
