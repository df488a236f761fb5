"""fashion_mnist.load_data: system copy, download, caches, errors. No internet."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from autoenc.datasets import DownloadError, fashion_mnist
from autoenc.datasets._cache import cache_dir, keras_cache_dir, sha256_of

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
AS_WRITTEN = (fashion_mnist.BASE_URL, fashion_mnist.SYSTEM_DIRS)


pytestmark = pytest.mark.usefixtures("private_dataset_homes")  # tests/conftest.py


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_fashion(n_train=20, n_test=10):
    rng = np.random.default_rng(1)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_files(directory, arrays, compressed=True):
    """Write the four IDX files of ``arrays`` into ``directory``; return their checksums by key."""
    directory.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for key, (name, _) in fashion_mnist.FILES.items():
        data = idx_bytes(arrays[key])
        path = directory / (name if compressed else name.removesuffix(".gz"))
        path.write_bytes(gzip.compress(data) if compressed else data)
        checksums[key] = sha256_of(path)
    return checksums


def expect_checksums(monkeypatch, checksums):
    files = {key: (name, checksums[key]) for key, (name, _) in fashion_mnist.FILES.items()}
    monkeypatch.setattr(fashion_mnist, "FILES", files)


def assert_same(loaded, arrays):
    (x_train, y_train), (x_test, y_test) = loaded
    for got, key in [(x_train, "x_train"), (y_train, "y_train"), (x_test, "x_test"), (y_test, "y_test")]:
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


@pytest.mark.skipif(not all((DEBIAN_DIR / name).is_file() for name, _ in fashion_mnist.FILES.values()),
                    reason="Debian package dataset-fashion-mnist is not installed (its files are missing)")
def test_debian_copy(monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", AS_WRITTEN[1])
    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.uint8
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert 0.2 < x_train.mean() / 255 < 0.4
    assert not cache_dir().exists()  # read in place, nothing downloaded


def test_system_copy(tmp_path):
    arrays = small_fashion()
    write_files(tmp_path / "system", arrays)
    assert_same(fashion_mnist.load_data(search_dirs=[tmp_path / "empty", tmp_path / "system"]), arrays)
    assert not cache_dir().exists()


def test_uncompressed_system_copy(tmp_path):
    arrays = small_fashion()
    write_files(tmp_path / "system", arrays, compressed=False)
    assert_same(fashion_mnist.load_data(search_dirs=[tmp_path / "system"]), arrays)


def test_downloads_into_the_cache_once(tmp_path, monkeypatch):
    arrays = small_fashion()
    mirror = tmp_path / "mirror"
    expect_checksums(monkeypatch, write_files(mirror, arrays))
    assert_same(fashion_mnist.load_data(base_url=mirror.as_uri()), arrays)
    names = sorted(name for name, _ in fashion_mnist.FILES.values())
    assert sorted(p.name for p in (cache_dir() / "fashion-mnist").iterdir()) == names
    for path in mirror.iterdir():
        path.unlink()  # the second call must not need the server
    assert_same(fashion_mnist.load_data(base_url=mirror.as_uri()), arrays)


def test_reuses_the_keras_cache(tmp_path, monkeypatch):
    arrays = small_fashion()
    expect_checksums(monkeypatch, write_files(keras_cache_dir() / "fashion-mnist", arrays))
    assert_same(fashion_mnist.load_data(), arrays)  # BASE_URL is a closed port: nothing was downloaded
    assert not cache_dir().exists()


def test_caches_come_before_the_system_copy(tmp_path, monkeypatch):
    cached, system = small_fashion(), small_fashion(n_train=30)
    expect_checksums(monkeypatch, write_files(cache_dir() / "fashion-mnist", cached))
    write_files(tmp_path / "system", system)
    assert_same(fashion_mnist.load_data(search_dirs=[tmp_path / "system"]), cached)


def test_nothing_available_gives_a_clear_error():
    with pytest.raises(DownloadError, match=r"Could not download http://127\.0\.0\.1:\d+/train-images-idx3"):
        fashion_mnist.load_data(timeout=5)


def test_images_and_labels_that_do_not_match(tmp_path):
    arrays = small_fashion()
    arrays["y_test"] = arrays["y_test"][:7]
    write_files(tmp_path / "system", arrays)
    with pytest.raises(ValueError, match="10 x_test images but 7 y_test labels"):
        fashion_mnist.load_data(search_dirs=[tmp_path / "system"])


def test_truncated_system_file(tmp_path):
    write_files(tmp_path / "system", small_fashion())
    path = tmp_path / "system" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-28]))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz is truncated"):
        fashion_mnist.load_data(search_dirs=[tmp_path / "system"])


def test_constants():
    base_url, system_dirs = AS_WRITTEN
    assert base_url == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # as in Keras
    assert system_dirs == ("/usr/share/datasets/fashion-mnist",)
    assert [name for name, _ in fashion_mnist.FILES.values()] == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    ]
    assert all(len(sha256) == 64 for _, sha256 in fashion_mnist.FILES.values())
    assert len(fashion_mnist.CLASS_NAMES) == 10
