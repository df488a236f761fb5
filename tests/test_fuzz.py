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


# --- model.json mutated, its checksum recomputed (what an attacker can do) ------------------------

def _paths(node, prefix=()):
    """Every path into a JSON document: keys of objects and indices of lists."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for k, value in enumerate(node):
            yield from _paths(value, prefix + (k,))


garbage = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, -1, 2**31, 2**63, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
    | st.sampled_from(["Conv2D", "Dense", "InputLayer", "Sequential", "Model", "same", "relu", "adam", "mse"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A compiled Sequential and a compiled functional model, saved: {kind: (arrays, document)}."""
    import json

    from autoenc.layers import Add, Conv2D, Dropout, Flatten
    from autoenc.models import Model
    autoenc.set_random_seed(0)
    i = Input(shape=(6, 6, 1))
    a = Conv2D(2, 3, padding="same", activation="relu")(i)
    b = Dropout(0.5, seed=1)(Conv2D(2, 3, padding="same")(a))
    dag = Model(i, Dense(3)(Flatten()(Add()([a, b]))))
    seq = Sequential([Input(shape=(4,)), Dense(3, activation="relu"), Dense(2)])
    out = {}
    for kind, model in (("sequential", seq), ("functional", dag)):
        model.compile("adam", "mse")
        model.fit(np.zeros((4,) + model.inputs[0].shape[1:], np.float32),
                  np.zeros((4,) + model.outputs[0].shape[1:], np.float32), epochs=1, verbose=0)
        path = tmp_path_factory.mktemp("saved") / f"{kind}.autoenc"
        model.save(path)
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        out[kind] = (arrays, json.loads(arrays["model.json"].tobytes()))
    return out


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["sequential", "functional"]))
def test_model_json_fuzz_gives_only_value_errors(tmp_path_factory, saved_models, data, kind):
    import copy
    import json

    from autoenc import saving
    from autoenc.models import load_model
    arrays, document = saved_models[kind]
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(document) if p]
        path = data.draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]                              # a missing key
        else:
            parent[path[-1]] = data.draw(garbage)              # a wrong type, a huge or negative int, nested garbage
    arrays = dict(arrays)
    arrays["model.json"] = np.frombuffer(json.dumps(document).encode(), np.uint8)
    header = json.loads(arrays["format.json"].tobytes())
    header["sha256"] = saving._digest(arrays)
    arrays["format.json"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    folder = tmp_path_factory.mktemp("json")
    with open(folder / "m.autoenc", "wb") as f:
        np.savez(f, **arrays)
    try:
        load_model(folder / "m.autoenc")
    except ValueError as error:
        assert "m.autoenc" in str(error)
