"""IDX and .npz readers, on files the tests write byte by byte."""

import gzip

import numpy as np
import pytest

from autoenc.datasets._formats import check_split, read_idx
from autoenc.files import read_npz


def idx_bytes(array, type_code=0x08):
    """The IDX encoding of ``array``, written by hand: 00 00 type ndim, sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + np.asarray(array).astype(dtype).tobytes()


def write(path, data):
    path.write_bytes(data)
    return path


# ---- IDX: good files -------------------------------------------------------------------------------


def test_idx_tiny_file_by_hand(tmp_path):
    # uint8, 1 dimension of size 3, then the items 1 2 3
    path = write(tmp_path / "tiny-idx1-ubyte", bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3,)
    assert out.tolist() == [1, 2, 3]


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_images_round_trip(tmp_path, compressed):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    data = idx_bytes(images)
    path = tmp_path / ("images-idx3-ubyte.gz" if compressed else "images-idx3-ubyte")
    write(path, gzip.compress(data) if compressed else data)
    out = read_idx(path)
    np.testing.assert_array_equal(out, images)
    assert out.dtype == np.uint8
    assert out.flags.writeable  # a copy the caller may modify, not a view of the file's bytes


@pytest.mark.parametrize("type_code, dtype", [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                              (0x0D, np.float32), (0x0E, np.float64)])
def test_idx_other_types_are_big_endian(tmp_path, type_code, dtype):
    array = np.array([[-3, 2, 100], [7, -100, 5]], dtype=dtype)
    out = read_idx(write(tmp_path / "a.idx", idx_bytes(array, type_code)))
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_idx_gzip_is_recognised_by_content_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    path = write(tmp_path / "labels-without-suffix", gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


# ---- IDX: bad files --------------------------------------------------------------------------------


def test_idx_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere-idx3-ubyte.gz"
    with pytest.raises(FileNotFoundError, match="nowhere-idx3-ubyte.gz"):
        read_idx(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_truncated_data_names_file_and_byte_counts(tmp_path, compressed):
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))[:-100]  # 3136 bytes declared, 3036 present
    path = tmp_path / ("cut.gz" if compressed else "cut")
    write(path, gzip.compress(data) if compressed else data)
    with pytest.raises(ValueError, match=r"cut.*truncated.*3136 bytes.*only 3036 bytes"):
        read_idx(path)


def test_idx_truncated_header(tmp_path):
    path = write(tmp_path / "short", bytes([0, 0, 8, 3, 0, 0, 0, 4, 0, 0]))
    with pytest.raises(ValueError, match="truncated inside its header"):
        read_idx(path)


def test_idx_extra_bytes_after_the_data(tmp_path):
    path = write(tmp_path / "long", idx_bytes(np.arange(6, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="more data than its header declares"):
        read_idx(path)


def test_idx_wrong_magic(tmp_path):
    path = write(tmp_path / "image.png", b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match=r"not an IDX file.*89 50 4e 47"):
        read_idx(path)


def test_idx_empty_file(tmp_path):
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(write(tmp_path / "empty", b""))


def test_idx_unknown_type_code(tmp_path):
    path = write(tmp_path / "odd", bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(ValueError, match="type code 0x0A"):
        read_idx(path)


def test_idx_zero_dimensions(tmp_path):
    with pytest.raises(ValueError, match="0 dimensions"):
        read_idx(write(tmp_path / "scalar", bytes([0, 0, 8, 0, 7])))


def test_idx_huge_declared_size_is_refused_before_allocating(tmp_path):
    # 4 x 2^32-1 sizes: about 3e38 bytes. Must fail at once, not try to allocate or read that much.
    header = bytes([0, 0, 0x0E, 4]) + b"\xff\xff\xff\xff" * 4
    path = write(tmp_path / "huge", header + bytes(16))
    with pytest.raises(ValueError, match="limit"):
        read_idx(path)
    with pytest.raises(ValueError, match="800 bytes"):  # and the limit can be lowered
        read_idx(write(tmp_path / "big", idx_bytes(np.zeros(800, dtype=np.uint8))), max_bytes=799)



@pytest.mark.parametrize("type_code, sizes", [(0x08, (0, 2**31, 2**31)), (0x0E, (0, 2**31, 2**31)),
                                              (0x08, (0, 2**31, 2**31, 2**31)), (0x08, (2**31, 0))])
def test_idx_empty_array_of_impossible_shape_names_the_file(tmp_path, type_code, sizes):
    # zero items, so nothing to read, but a shape no array can have: refused with the file's name
    header = bytes([0, 0, type_code, len(sizes)]) + b"".join(n.to_bytes(4, "big") for n in sizes)
    path = write(tmp_path / "empty-but-huge-idx3-ubyte", header)
    with pytest.raises(ValueError, match=r"empty-but-huge-idx3-ubyte.*shape.*limit"):
        read_idx(path)

def test_idx_named_gz_but_not_gzip(tmp_path):
    path = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(np.arange(3, dtype=np.uint8)))
    with pytest.raises(ValueError, match="not gzip-compressed"):
        read_idx(path)


def test_idx_damaged_gzip_stream(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32), 0x0C)))
    compressed[20:40] = bytes(20)  # clobber the deflate data, keep the gzip magic
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(write(tmp_path / "damaged.gz", bytes(compressed)))


def test_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32), 0x0C))
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_idx(write(tmp_path / "cut.gz", compressed[: len(compressed) // 2]))


# ---- npz -------------------------------------------------------------------------------------------

KEYS = ("x_train", "y_train", "x_test", "y_test")


def mnist_like(n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_npz_round_trip(tmp_path):
    arrays = mnist_like()
    np.savez(tmp_path / "m.npz", **arrays)
    out = read_npz(tmp_path / "m.npz", KEYS)
    assert list(out) == list(KEYS)
    for key in KEYS:
        np.testing.assert_array_equal(out[key], arrays[key])


def test_npz_missing_keys_are_named(tmp_path):
    arrays = mnist_like()
    del arrays["y_test"]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_test'\].*x_train"):
        read_npz(tmp_path / "m.npz", KEYS)


def test_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        read_npz(tmp_path / "absent.npz", KEYS)


def test_npz_not_an_archive(tmp_path):
    with pytest.raises(ValueError, match=r"junk.npz is not a valid \.npz file"):
        read_npz(write(tmp_path / "junk.npz", b"this is not a zip file" * 10), KEYS)


def test_npz_single_array_npy(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        read_npz(tmp_path / "one.npy", KEYS)


def test_npz_never_unpickles(tmp_path):
    arrays = mnist_like()
    arrays["x_train"] = np.array([{"evil": 1}, None], dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="cannot be read"):
        read_npz(tmp_path / "pickled.npz", KEYS)


# ---- check_split -----------------------------------------------------------------------------------


def test_check_split_accepts_mnist_shapes():
    arrays = mnist_like()
    check_split(arrays["x_train"], arrays["y_train"], "m.npz", "train")


@pytest.mark.parametrize("x_shape, x_dtype, y_shape, y_dtype, message", [
    ((6, 28, 27), np.uint8, (6,), np.uint8, r"x_train.*received shape \(6, 28, 27\)"),
    ((6, 784), np.uint8, (6,), np.uint8, r"received shape \(6, 784\)"),
    ((6, 28, 28), np.float32, (6,), np.uint8, "dtype float32"),
    ((6, 28, 28), np.uint8, (6, 1), np.uint8, r"y_train.*received shape \(6, 1\)"),
    ((6, 28, 28), np.uint8, (6,), np.int64, "dtype int64"),
    ((6, 28, 28), np.uint8, (5,), np.uint8, "6 x_train images but 5 y_train labels"),
])
def test_check_split_rejects(x_shape, x_dtype, y_shape, y_dtype, message):
    with pytest.raises(ValueError, match=message):
        check_split(np.zeros(x_shape, x_dtype), np.zeros(y_shape, y_dtype), "m.npz", "train")


def test_check_split_rejects_labels_above_nine():
    with pytest.raises(ValueError, match="received label 12"):
        check_split(np.zeros((2, 28, 28), np.uint8), np.array([3, 12], np.uint8), "m.npz", "test")
