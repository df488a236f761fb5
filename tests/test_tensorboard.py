"""TensorBoard event files without TensorFlow (autoenc.tensorboard) and the TensorBoard callback.

Our files are read three ways: by our own reader, by TensorBoard's (its EventAccumulator, skipped
when the tensorboard package is missing) and by TensorFlow's record reader, which checks every CRC
(skipped without tensorflow). The keras-marked tests run Keras' own TensorBoard callback and compare
its files with ours: the same folders, tags and steps, and byte-identical records.
"""
import glob
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autoenc
from autoenc import tensorboard as tb
from autoenc.callbacks import TensorBoard
from autoenc.layers import Conv2D, Input
from autoenc.models import Model

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
F32 = lambda v: float(np.float32(v))  # noqa: E731  summaries hold float32 scalars, as TensorFlow's


def import_tensorflow():
    return pytest.importorskip("tensorflow", reason="needs tensorflow-cpu (pip install autoenc[test])")


def import_event_accumulator():
    pytest.importorskip("tensorboard", reason="needs the tensorboard package (pip install autoenc[test])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    return EventAccumulator


# --- CRC32C and TFRecord framing --------------------------------------------------------------------

def test_crc32c_rfc3720_vectors():
    assert tb.crc32c(b"123456789") == 0xE3069283
    # RFC 3720, appendix B.4
    assert tb.crc32c(bytes(32)) == 0x8A9136AA
    assert tb.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tb.crc32c(bytes(range(32))) == 0x46DD794E
    assert tb.crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert tb.crc32c(b"") == 0


@given(st.binary(max_size=300))
def test_crc32c_table_matches_bitwise(data):
    assert tb.crc32c(data) == tb.crc32c_naive(data)


def test_masked_crc_and_record_layout():
    crc = tb.crc32c(b"abc")
    assert tb.masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    record = tb.encode_record(b"abc")
    assert len(record) == 8 + 4 + 3 + 4 and struct.unpack("<Q", record[:8])[0] == 3 and record[12:15] == b"abc"
    assert struct.unpack("<I", record[8:12])[0] == tb.masked_crc32c(record[:8])
    assert struct.unpack("<I", record[15:])[0] == tb.masked_crc32c(b"abc")


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_records_round_trip(tmp_path_factory, payloads):
    path = tmp_path_factory.mktemp("records") / "r"
    path.write_bytes(b"".join(tb.encode_record(p) for p in payloads))
    assert tb.read_records(path) == payloads


def test_truncated_tail_is_dropped_and_corruption_raises(tmp_path):
    path = tmp_path / "r"
    data = tb.encode_record(b"first") + tb.encode_record(b"second")
    for cut in range(len(tb.encode_record(b"first")), len(data)):
        path.write_bytes(data[:cut])  # a writer killed mid-record
        assert tb.read_records(path) == [b"first"]
    for at in (2, 9, 13, len(tb.encode_record(b"first")) - 1):
        bad = bytearray(data)
        bad[at] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="CRC"):
            tb.read_records(path)


def test_records_match_tensorflows_writer(tmp_path):
    tf = import_tensorflow()
    payloads = [b"", b"x", bytes(range(256)) * 3, "é".encode()]
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for p in payloads:
            writer.write(p)
    assert open(path, "rb").read() == b"".join(tb.encode_record(p) for p in payloads)


# --- protobuf messages ------------------------------------------------------------------------------

@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_varint_round_trip(n):
    data = tb._varint_field(2, n)
    [(field, value)] = tb._fields(data)
    assert field == 2 and (value - (1 << 64) if value >= 1 << 63 else value) == n


def test_varint_by_hand():
    assert tb._varint(0) == b"\x00" and tb._varint(1) == b"\x01" and tb._varint(300) == b"\xac\x02"
    assert tb._varint(-1) == b"\xff" * 9 + b"\x01"


def test_scalar_event_by_hand():
    """Event{wall_time: 2.0, step: 3, summary {value {tag: "t", tensor {DT_FLOAT, shape {}, 1.0f},
    metadata {plugin_data {plugin_name: "scalars"}}}}}, field by field."""
    tensor = b"\x08\x01" + b"\x12\x00" + b"\x22\x04" + struct.pack("<f", 1.0)
    metadata = b"\x0a\x09" + b"\x0a\x07scalars"
    value = b"\x0a\x01t" + b"\x42" + bytes([len(tensor)]) + tensor + b"\x4a" + bytes([len(metadata)]) + metadata
    summary = b"\x0a" + bytes([len(value)]) + value
    expected = b"\x09" + struct.pack("<d", 2.0) + b"\x10\x03" + b"\x2a" + bytes([len(summary)]) + summary
    assert tb.encode_event(2.0, 3, tb.scalar_summary("t", 1.0)) == expected
    assert tb.decode_event(expected) == {"wall_time": 2.0, "step": 3,
                                         "summary": [{"tag": "t", "plugin_name": "scalars", "value": 1.0}]}


def test_events_parse_with_tensorflows_protobuf_classes():
    tf = import_tensorflow()
    event = tf.compat.v1.Event.FromString(tb.encode_event(1.5, 7, tb.scalar_summary("epoch_loss", 0.25)))
    assert event.wall_time == 1.5 and event.step == 7
    [value] = event.summary.value
    assert value.tag == "epoch_loss" and value.metadata.plugin_data.plugin_name == "scalars"
    assert tf.make_ndarray(value.tensor) == np.float32(0.25)
    first = tf.compat.v1.Event.FromString(tb.encode_event(3.0, file_version=tb.FILE_VERSION, writer="autoenc"))
    assert first.file_version == "brain.Event:2" and first.source_metadata.writer == "autoenc"
    histogram = tf.compat.v1.Event.FromString(tb.encode_event(1.0, 2, tb.histogram_summary("w", [1.0, 2.0, 4.0])))
    np.testing.assert_array_equal(tf.make_ndarray(histogram.summary.value[0].tensor), tb.histogram_buckets([1, 2, 4]))


# --- histograms -------------------------------------------------------------------------------------

def histogram_buckets_naive(values, k=tb.HISTOGRAM_BUCKETS):
    """Bucket i holds the values with floor((v - min) / width) == i, the maximum in the last one."""
    values = [float(v) for v in np.ravel(values)]
    if not values:
        return np.zeros((k, 3))
    lo, hi = min(values), max(values)
    if lo == hi:
        return np.array([[hi, hi, 0.0]] * (k - 1) + [[hi, hi, float(len(values))]])
    width = (hi - lo) / k
    rows = []
    for i in range(k):
        count = sum(1 for v in values if min(int((v - lo) // width), k - 1) == i)
        rows.append([lo + i * width, hi if i == k - 1 else lo + (i + 1) * width, count])
    return np.array(rows)


@given(st.lists(st.floats(-1e3, 1e3, width=32), max_size=60))
def test_histogram_buckets_match_the_obvious_version(values):
    ours, naive = tb.histogram_buckets(values), histogram_buckets_naive(values)
    np.testing.assert_array_equal(ours[:, 2], naive[:, 2])
    assert ours[:, 2].sum() == len(values)
    # edges: linspace(min, max, 31) against min + i * width; both within a few ulps of max|edge|
    scale = max([abs(v) for v in values] + [1.0])
    np.testing.assert_allclose(ours[:, :2], naive[:, :2], rtol=0, atol=8 * np.finfo(float).eps * scale)


def test_histogram_buckets_by_hand():
    out = tb.histogram_buckets([0.0, 1.0, 3.0], bucket_count=3)
    np.testing.assert_array_equal(out, [[0, 1, 1], [1, 2, 1], [2, 3, 1]])
    np.testing.assert_array_equal(tb.histogram_buckets([2.0, 2.0], 2), [[2, 2, 0], [2, 2, 2]])
    np.testing.assert_array_equal(tb.histogram_buckets([], 2), np.zeros((2, 3)))


def test_histogram_buckets_match_tensorboards():
    tf = import_tensorflow()
    pytest.importorskip("tensorboard", reason="needs the tensorboard package (pip install autoenc[test])")
    from tensorboard.plugins.histogram import summary_v2
    rng = np.random.default_rng(0)
    for values in (rng.normal(size=(3, 3, 2, 8)).astype("float32"), np.array([5.0]), np.arange(31.0),
                   rng.random(1000) ** 3):
        np.testing.assert_array_equal(tb.histogram_buckets(values), summary_v2._buckets(tf.constant(values)).numpy())


# --- the writer -------------------------------------------------------------------------------------

def test_writer_file_name_first_event_and_values(tmp_path):
    writer = tb.EventFileWriter(tmp_path / "run")
    writer.add_scalar("epoch_loss", 0.1, 0)
    writer.add_scalar("epoch_loss", 1 / 3, 1, wall_time=123.5)
    writer.add_histogram("w/histogram", [1.0, 2.0], 1)
    name = os.path.basename(writer.path)
    assert re.fullmatch(rf"events\.out\.tfevents\.\d+\.{re.escape(socket.gethostname())}\.{os.getpid()}\.\d+\.v2",
                        name)
    events = tb.read_events(writer.path)  # readable before close: every record is flushed
    assert events[0]["file_version"] == "brain.Event:2" and events[0]["wall_time"] == int(events[0]["wall_time"])
    assert [(e["step"], e["summary"][0]["tag"], e["summary"][0]["value"]) for e in events[1:3]] == \
        [(0, "epoch_loss", F32(0.1)), (1, "epoch_loss", F32(1 / 3))]
    assert events[2]["wall_time"] == 123.5
    np.testing.assert_array_equal(events[3]["summary"][0]["value"], tb.histogram_buckets([1.0, 2.0]))
    writer.close()
    other = tb.EventFileWriter(tmp_path / "run")
    assert other.path != writer.path  # two writers in one second get two files
    other.close()


# --- the callback -----------------------------------------------------------------------------------

def tiny(metrics=None):
    autoenc.set_random_seed(0)
    i = Input(shape=(6, 6, 1))
    model = Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(Conv2D(2, 3, padding="same",
                                                                               activation="relu")(i)))
    model.compile("adam", "binary_crossentropy", metrics=metrics)
    return model


@pytest.fixture
def data():
    return np.random.default_rng(0).random((20, 6, 6, 1)).astype("float32")


def event_files(log_dir):
    return {os.path.basename(os.path.dirname(p)): p for p in glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*"))}


def scalars(path):
    """{tag: [(step, value)]} of the scalar summaries in one event file, by our reader."""
    out = {}
    for event in tb.read_events(path)[1:]:
        for v in event["summary"]:
            if v["plugin_name"] == "scalars":
                out.setdefault(v["tag"], []).append((event["step"], v["value"]))
    return out


def test_callback_writes_keras_layout_and_values(tmp_path, data):
    model = tiny(metrics=["mae"])
    log_dir = tmp_path / "logs"
    history = model.fit(data, data, epochs=3, batch_size=8, verbose=0, validation_data=(data, data),
                        callbacks=[TensorBoard(log_dir)])
    files = event_files(log_dir)
    assert sorted(files) == ["train", "validation"]
    h = history.history
    train, val = scalars(files["train"]), scalars(files["validation"])
    assert train == {"epoch_loss": [(e, F32(v)) for e, v in enumerate(h["loss"])],
                     "epoch_mae": [(e, F32(v)) for e, v in enumerate(h["mae"])],
                     "epoch_learning_rate": [(e, F32(1e-3)) for e in range(3)]}
    steps = [3, 6, 9]  # optimizer.iterations after each epoch's 3 batches
    assert val == {"epoch_loss": [(e, F32(v)) for e, v in enumerate(h["val_loss"])],
                   "epoch_mae": [(e, F32(v)) for e, v in enumerate(h["val_mae"])],
                   "evaluation_loss_vs_iterations": [(s, F32(v)) for s, v in zip(steps, h["val_loss"])],
                   "evaluation_mae_vs_iterations": [(s, F32(v)) for s, v in zip(steps, h["val_mae"])]}
    model.fit(data, data, epochs=1, batch_size=8, verbose=0, callbacks=[TensorBoard(log_dir)])
    assert len(glob.glob(str(log_dir / "train" / "*"))) == 2  # a new file per fit


@pytest.mark.parametrize("update_freq, steps", [("batch", list(range(1, 7))), (2, [2, 4, 6]), (4, [4])])
def test_callback_batch_summaries(tmp_path, data, update_freq, steps):
    batch_losses = []
    record = autoenc.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_losses.append(logs["loss"]))
    tiny().fit(data[:16], data[:16], epochs=3, batch_size=8, verbose=0,
               callbacks=[TensorBoard(tmp_path, update_freq=update_freq, write_steps_per_second=True), record])
    train = scalars(event_files(tmp_path)["train"])
    assert train["batch_loss"] == [(s, F32(batch_losses[s - 1])) for s in steps]
    assert [s for s, _ in train["batch_steps_per_second"]] == steps
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]  # every epoch, whatever update_freq
    assert all(v > 0 for _, v in train["epoch_steps_per_second"])


def test_callback_histograms_and_arguments(tmp_path, data):
    model = tiny()
    model.fit(data, data, epochs=3, batch_size=8, verbose=0, callbacks=[TensorBoard(tmp_path, histogram_freq=2)])
    histograms = {}
    for event in tb.read_events(event_files(tmp_path)["train"])[1:]:
        for v in event["summary"]:
            if v["plugin_name"] == "histograms":
                histograms.setdefault(v["tag"], []).append(event["step"])
    names = [f"{model.name}/{layer.name}/{w}/histogram" for layer in model.layers for w in layer.params]
    assert histograms == {name: [0, 2] for name in names} and len(names) == 4
    with pytest.warns(UserWarning, match="write_images"):
        TensorBoard(tmp_path, write_images=True)
    for bad in (dict(update_freq=0), dict(update_freq="step"), dict(histogram_freq=-1), dict(profile_batch=2)):
        with pytest.raises(ValueError):
            TensorBoard(tmp_path, **bad)


def test_killed_run_leaves_readable_files(tmp_path, data):
    """A record is flushed as it is written: the files read complete while the run is still going
    (here: at the last epoch's end, before on_train_end closes them)."""
    seen = {}

    def look(epoch, logs):
        seen[epoch] = {k: len(v) for k, v in scalars(event_files(tmp_path)["train"]).items()}

    tiny().fit(data, data, epochs=2, batch_size=8, verbose=0,
               callbacks=[TensorBoard(tmp_path), autoenc.callbacks.LambdaCallback(on_epoch_end=look)])
    assert seen == {0: {"epoch_loss": 1, "epoch_learning_rate": 1}, 1: {"epoch_loss": 2, "epoch_learning_rate": 2}}


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import autoenc
    from autoenc.callbacks import LambdaCallback, TensorBoard
    from autoenc.layers import Conv2D, Input
    from autoenc.models import Model

    autoenc.set_random_seed(0)
    i = Input(shape=(4, 4, 1))
    model = Model(i, Conv2D(1, 3, padding="same", activation="sigmoid")(i))
    model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((16, 4, 4, 1)).astype("float32")
    kill = LambdaCallback(on_epoch_begin=lambda epoch, logs: epoch == 3 and os.kill(os.getpid(), signal.SIGKILL))
    model.fit(x, x, epochs=10, batch_size=8, verbose=0, validation_data=(x, x),
              callbacks=[TensorBoard(sys.argv[1], update_freq="batch"), kill])
""")


def test_sigkilled_run_leaves_readable_files(tmp_path):
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr
    files = event_files(tmp_path / "logs")
    train, val = scalars(files["train"]), scalars(files["validation"])
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2] and [s for s, _ in val["epoch_loss"]] == [0, 1, 2]
    assert [s for s, _ in train["batch_loss"]] == [1, 2, 3, 4, 5, 6]
    try:
        import tensorflow as tf
    except ImportError:
        return
    for path in files.values():  # TensorFlow's reader checks every CRC of the killed run's files
        assert len(list(tf.data.TFRecordDataset(path))) == len(tb.read_records(path))


def test_tensorboard_reads_our_files(tmp_path, data):
    EventAccumulator = import_event_accumulator()
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.util import tensor_util
    model = tiny()
    history = model.fit(data, data, epochs=2, batch_size=8, verbose=0, validation_data=(data, data),
                        callbacks=[TensorBoard(tmp_path, update_freq="batch", histogram_freq=1)])
    kernel = f"{model.name}/{model.layers[1].name}/kernel/histogram"
    for which, key in (("train", "loss"), ("validation", "val_loss")):
        accumulator = EventAccumulator(str(tmp_path / which))
        accumulator.Reload()
        loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors("epoch_loss")]
        assert loss == [(e, F32(v)) for e, v in enumerate(history.history[key])]
        # the loader TensorBoard's server uses, with its plugin metadata
        server = plugin_event_accumulator.EventAccumulator(str(tmp_path / which))
        server.Reload()
        assert "epoch_loss" in server.Tags()["tensors"]
        assert server.SummaryMetadata("epoch_loss").plugin_data.plugin_name == "scalars"
    server = plugin_event_accumulator.EventAccumulator(str(tmp_path / "train"))
    server.Reload()
    assert set(server.Tags()["tensors"]) >= {"batch_loss", "epoch_learning_rate", kernel}
    assert server.SummaryMetadata(kernel).plugin_data.plugin_name == "histograms"
    assert [e.step for e in server.Tensors("batch_loss")] == [1, 2, 3, 4, 5, 6]


def test_tensorflow_reads_our_files_and_checks_their_crcs(tmp_path, data):
    tf = import_tensorflow()
    tiny().fit(data, data, epochs=2, batch_size=8, verbose=0, validation_data=(data, data),
               callbacks=[TensorBoard(tmp_path, histogram_freq=1)])
    for path in event_files(tmp_path).values():
        ours = tb.read_records(path)
        assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == ours  # TFRecordDataset checks each CRC
        events = list(tf.compat.v1.train.summary_iterator(path))
        assert events[0].file_version == "brain.Event:2" and len(events) == len(ours)


# --- against Keras' own TensorBoard callback ----------------------------------------------------------

def keras_logs(tmp_path, **kwargs):
    """Runs Keras' TensorBoard on a small Dense model (20 samples, batch 8: 3 batches an epoch,
    metrics mae, validation) and returns its log folder."""
    pytest.importorskip("tensorboard", reason="Keras' TensorBoard needs the tensorboard package")
    keras = pytest.importorskip("keras", reason="needs keras 3 (pip install autoenc[keras])")
    import_tensorflow()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("adam", "mse", metrics=["mae"])
    x = np.random.default_rng(0).random((20, 4)).astype("float32")
    log_dir = tmp_path / "keras"
    model.fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0, validation_data=(x, x[:, :1]),
              callbacks=[keras.callbacks.TensorBoard(str(log_dir), write_graph=False, **kwargs)])
    return log_dir


def layout(log_dir):
    """{folder: [(tag, step)]} in file order, for the scalar summaries."""
    out = {}
    for which, path in event_files(log_dir).items():
        out[which] = [(v["tag"], e["step"]) for e in tb.read_events(path)[1:] for v in e["summary"]]
    return out


@pytest.mark.keras
@pytest.mark.parametrize("update_freq", ["epoch", "batch"])
def test_same_folders_tags_and_steps_as_keras(tmp_path, data, update_freq):
    theirs = layout(keras_logs(tmp_path, update_freq=update_freq))
    tiny(metrics=["mae"]).fit(data, data, epochs=2, batch_size=8, verbose=0, validation_data=(data, data),
                              callbacks=[TensorBoard(tmp_path / "ours", update_freq=update_freq)])
    ours = layout(tmp_path / "ours")
    assert sorted(ours) == sorted(theirs) == ["train", "validation"]
    for which in ours:  # Keras writes the validation file's evaluation_* during evaluate: compare as sets
        assert sorted(ours[which]) == sorted(theirs[which]), which
    assert ours["train"] == theirs["train"]


@pytest.mark.keras
def test_records_byte_identical_to_keras(tmp_path):
    """Each of Keras' records, re-encoded by us from its wall time, step, tag and value, gives the
    same bytes: the same messages, fields and framing."""
    tf = import_tensorflow()
    log_dir = keras_logs(tmp_path, update_freq="batch", histogram_freq=1)
    compared = 0
    for path in event_files(log_dir).values():
        records = tb.read_records(path)
        first = tf.compat.v1.Event.FromString(records[0])
        assert first.file_version == tb.FILE_VERSION and first.wall_time == int(first.wall_time)
        for record in records[1:]:
            event = tf.compat.v1.Event.FromString(record)
            [value] = event.summary.value
            array = tf.make_ndarray(value.tensor)
            if value.metadata.plugin_data.plugin_name == "scalars":
                summary = tb.scalar_summary(value.tag, float(array))
            else:
                assert value.metadata.plugin_data.plugin_name == "histograms" and array.shape == (30, 3)
                summary = tb._summary(value.tag, tb._tensor(tb.DT_DOUBLE, array.shape, array.astype("<f8").tobytes()),
                                      "histograms")
            assert tb.encode_record(tb.encode_event(event.wall_time, event.step, summary)) == \
                tb.encode_record(record), value.tag
            compared += 1
    assert compared > 20
