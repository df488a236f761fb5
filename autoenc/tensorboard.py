"""TensorBoard event files, written and read without TensorFlow.

An event file is a sequence of TFRecords, each holding one ``Event`` protobuf message::

    record = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(all little-endian). The first event holds ``file_version = "brain.Event:2"``; each later one holds
a ``Summary`` with one value, in the form TensorFlow 2's ``tf.summary`` writes and TensorBoard
reads: a tagged ``TensorProto`` (a float32 scalar, or a float64 ``[k, 3]`` histogram of
``[left_edge, right_edge, count]`` rows) and the name of the TensorBoard plugin that shows it.

The messages are encoded by hand from their .proto definitions (tensorflow/core/util/event.proto,
framework/summary.proto, tensor.proto, tensor_shape.proto); only the fields used here:

    Event          wall_time double = 1, step int64 = 2, file_version string = 3,
                   summary Summary = 5, source_metadata SourceMetadata = 10
    Summary        value Value = 1 (repeated)
    Summary.Value  tag string = 1, simple_value float = 2, tensor TensorProto = 8,
                   metadata SummaryMetadata = 9
    SummaryMetadata  plugin_data PluginData = 1;  PluginData  plugin_name string = 1, content bytes = 2
    TensorProto    dtype enum = 1 (DT_FLOAT 1, DT_DOUBLE 2, DT_STRING 7), tensor_shape = 2,
                   tensor_content bytes = 4, float_val = 5, double_val = 6, string_val = 8
    TensorShapeProto  dim Dim = 2 (repeated);  Dim  size int64 = 1
"""
import itertools
import os
import socket
import struct
import time

import numpy as np

FILE_VERSION = "brain.Event:2"
DT_FLOAT, DT_DOUBLE, DT_STRING = 1, 2, 7
HISTOGRAM_BUCKETS = 30  # tf.summary.histogram's default


# --- CRC32C (Castagnoli), as TFRecord frames use it ---------------------------------------------

def _crc32c_table():
    """table[b] = the CRC of the byte b: eight shift-and-xor steps with the reflected polynomial."""
    table = []
    for b in range(256):
        crc = b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """The CRC-32C of a bytes-like object (RFC 3720): crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_naive(data):
    """The same CRC bit by bit, without the table: the test oracle for crc32c."""
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """TFRecord's masked CRC: rotate the CRC right by 15 bits and add 0xA282EAD8 (mod 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode_record(data):
    """One TFRecord frame around ``data`` (bytes)."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def read_records(path):
    """The data of every TFRecord in the file ``path``, checking both CRCs of each.

    A truncated last record (a writer killed mid-record, or still writing) ends the list; a CRC
    that does not match raises ValueError naming the file and the record's offset.
    """
    with open(path, "rb") as f:
        buf = f.read()
    records, pos = [], 0
    while pos + 12 <= len(buf):
        header = buf[pos:pos + 8]
        (n,), (crc,) = struct.unpack("<Q", header), struct.unpack("<I", buf[pos + 8:pos + 12])
        if crc != masked_crc32c(header):
            raise ValueError(f"{path}: the length of the record at byte {pos} fails its CRC")
        if pos + 12 + n + 4 > len(buf):
            break
        data = buf[pos + 12:pos + 12 + n]
        if struct.unpack("<I", buf[pos + 12 + n:pos + 16 + n])[0] != masked_crc32c(data):
            raise ValueError(f"{path}: the data of the record at byte {pos} fails its CRC")
        records.append(data)
        pos += 16 + n
    return records


# --- protobuf wire format -----------------------------------------------------------------------

def _varint(n):
    """Base-128 varint; negative int64 as its 64-bit two's complement (10 bytes), as protobuf does."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field, wire_type):
    return _varint(field << 3 | wire_type)


def _varint_field(field, n):
    return _key(field, 0) + _varint(n)


def _double_field(field, x):
    return _key(field, 1) + struct.pack("<d", x)


def _bytes_field(field, data):
    data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return _key(field, 2) + _varint(len(data)) + data


def _fields(data):
    """Decode one message into [(field number, value)]: ints for varints, bytes for fixed64 /
    fixed32 / length-delimited fields (the caller knows which type each field has)."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 2:
            n, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type} (field {field})")
        fields.append((field, value))
    return fields


def _read_varint(data, pos):
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


# --- messages -----------------------------------------------------------------------------------

def encode_event(wall_time, step=0, summary=None, file_version=None, writer=None):
    """An Event message (bytes): ``summary`` an encoded Summary, or ``file_version`` a string.
    Fields at their default (step 0) are left out, as protobuf does."""
    data = _double_field(1, wall_time)
    if step:
        data += _varint_field(2, step)
    if file_version is not None:
        data += _bytes_field(3, file_version)
    if summary is not None:
        data += _bytes_field(5, summary)
    if writer is not None:
        data += _bytes_field(10, _bytes_field(1, writer))
    return data


def _tensor(dtype, shape, content):
    shape_proto = b"".join(_bytes_field(2, _varint_field(1, d)) for d in shape)
    return _varint_field(1, dtype) + _bytes_field(2, shape_proto) + _bytes_field(4, content)


def _summary(tag, tensor, plugin_name):
    metadata = _bytes_field(1, _bytes_field(1, plugin_name))
    return _bytes_field(1, _bytes_field(1, tag) + _bytes_field(8, tensor) + _bytes_field(9, metadata))


def scalar_summary(tag, value):
    """A Summary with one float32 scalar, as ``tf.summary.scalar`` writes it (plugin 'scalars')."""
    return _summary(tag, _tensor(DT_FLOAT, (), struct.pack("<f", value)), "scalars")


def histogram_buckets(values, bucket_count=HISTOGRAM_BUCKETS):
    """``tf.summary.histogram``'s buckets of ``values`` (any shape): a float64 array of shape
    (bucket_count, 3) with rows [left_edge, right_edge, count]; ``bucket_count`` equal widths from
    min to max, the maximum in the last bucket; all edges at the value when every value is equal;
    all zeros for no values."""
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    out = np.zeros((bucket_count, 3))
    if data.size == 0 or bucket_count == 0:
        return out
    lo, hi = data.min(), data.max()
    if hi == lo:
        out[:, 0] = out[:, 1] = hi
        out[-1, 2] = data.size
        return out
    index = np.minimum(np.floor((data - lo) / ((hi - lo) / bucket_count)).astype(np.int64), bucket_count - 1)
    edges = np.linspace(lo, hi, bucket_count + 1)
    edges[-1] = hi
    out[:, 0], out[:, 1] = edges[:-1], edges[1:]
    out[:, 2] = np.bincount(index, minlength=bucket_count)
    return out


def histogram_summary(tag, values, bucket_count=HISTOGRAM_BUCKETS):
    """A Summary with the histogram of ``values`` (plugin 'histograms'), as tf.summary.histogram."""
    buckets = histogram_buckets(values, bucket_count)
    return _summary(tag, _tensor(DT_DOUBLE, buckets.shape, buckets.astype("<f8").tobytes()), "histograms")


def decode_event(data):
    """An Event message as a dict: wall_time, step, and file_version or summary, where summary is
    a list of {'tag', 'plugin_name', 'value'} (value: a float for scalars, an ndarray for tensors)."""
    event = {"wall_time": 0.0, "step": 0}
    for field, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            event["file_version"] = value.decode("utf-8")
        elif field == 5:
            event["summary"] = [_decode_value(v) for f, v in _fields(value) if f == 1]
        elif field == 10:
            event["writer"] = b"".join(v for f, v in _fields(value) if f == 1).decode("utf-8")
    return event


def _decode_value(data):
    value = {"tag": "", "plugin_name": "", "value": None}
    for field, raw in _fields(data):
        if field == 1:
            value["tag"] = raw.decode("utf-8")
        elif field == 2:
            value["value"] = struct.unpack("<f", raw)[0]
        elif field == 8:
            value["value"] = _decode_tensor(raw)
        elif field == 9:
            for f, plugin in _fields(raw):
                if f == 1:
                    value["plugin_name"] = b"".join(v for g, v in _fields(plugin) if g == 1).decode("utf-8")
    return value


def _decode_tensor(data):
    dtype, shape, content, packed = DT_FLOAT, [], None, b""
    for field, raw in _fields(data):
        if field == 1:
            dtype = raw
        elif field == 2:
            shape = [dict(_fields(dim)).get(1, 0) for f, dim in _fields(raw) if f == 2]
        elif field == 4:
            content = raw
        elif field in (5, 6):
            packed += raw
        elif field == 8:
            return raw.decode("utf-8", "replace")
    if dtype not in (DT_FLOAT, DT_DOUBLE):
        raise ValueError(f"tensor dtype {dtype} is not read here (only DT_FLOAT and DT_DOUBLE)")
    array = np.frombuffer(content if content is not None else packed, "<f4" if dtype == DT_FLOAT else "<f8")
    array = array.reshape(shape)
    return float(array) if array.ndim == 0 else array.copy()


def read_events(path):
    """Every Event in the event file ``path``, decoded (see decode_event), in file order."""
    return [decode_event(r) for r in read_records(path)]


# --- the writer ---------------------------------------------------------------------------------

_writer_count = itertools.count()  # TensorFlow numbers the writers of a process in the file name


class EventFileWriter:
    """Appends events to a new file ``log_dir/events.out.tfevents.<time>.<host>.<pid>.<n>.v2`` (the
    name TensorFlow 2 gives), flushing each record as it is written: a killed run leaves a file that
    reads up to its last complete record."""

    def __init__(self, log_dir):
        log_dir = os.fspath(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        now = int(time.time())
        name = f"events.out.tfevents.{now}.{socket.gethostname()}.{os.getpid()}.{next(_writer_count)}.v2"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._write(encode_event(float(now), file_version=FILE_VERSION, writer="autoenc"))

    def _write(self, event):
        self._file.write(encode_record(event))
        self._file.flush()

    def add_summary(self, summary, step, wall_time=None):
        """Append one event holding ``summary`` (an encoded Summary) at ``step``."""
        self._write(encode_event(time.time() if wall_time is None else wall_time, int(step), summary=summary))

    def add_scalar(self, tag, value, step, wall_time=None):
        self.add_summary(scalar_summary(tag, float(value)), step, wall_time)

    def add_histogram(self, tag, values, step, wall_time=None):
        self.add_summary(histogram_summary(tag, values), step, wall_time)

    def close(self):
        if not self._file.closed:
            self._file.close()
