"""mnist.load_data on a small stand-in mnist.npz: download, cache, Keras cache, errors. No internet."""


import numpy as np
import pytest

from autoenc.datasets import DownloadError, mnist
from autoenc.datasets._cache import cache_dir, keras_cache_dir, sha256_of

AS_WRITTEN = (mnist.BASE_URL, mnist.FILE_NAME, mnist.SHA256)


pytestmark = pytest.mark.usefixtures("private_dataset_homes")  # tests/conftest.py


def small_mnist():
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(30) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10, dtype=np.uint8),
    }


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A directory holding a small mnist.npz, whose checksum becomes the one mnist expects."""
    directory = tmp_path / "mirror"
    directory.mkdir()
    arrays = small_mnist()
    np.savez(directory / "mnist.npz", **arrays)
    monkeypatch.setattr(mnist, "SHA256", sha256_of(directory / "mnist.npz"))
    return directory, arrays


def assert_same(loaded, arrays):
    (x_train, y_train), (x_test, y_test) = loaded
    for got, key in [(x_train, "x_train"), (y_train, "y_train"), (x_test, "x_test"), (y_test, "y_test")]:
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def test_downloads_into_the_cache_once(mirror):
    directory, arrays = mirror
    assert_same(mnist.load_data(base_url=directory.as_uri()), arrays)
    assert (cache_dir() / "mnist.npz").is_file()
    (directory / "mnist.npz").unlink()  # the second call must not need the server
    assert_same(mnist.load_data(base_url=directory.as_uri()), arrays)


def test_base_url_from_environment(mirror, monkeypatch):
    directory, arrays = mirror
    monkeypatch.setenv("AUTOENC_DATASETS_URL", directory.as_uri())
    assert_same(mnist.load_data(), arrays)


def test_reuses_the_keras_cache(mirror):
    directory, arrays = mirror
    keras_cache_dir().mkdir(parents=True)
    (directory / "mnist.npz").rename(keras_cache_dir() / "mnist.npz")
    assert_same(mnist.load_data(), arrays)  # BASE_URL is a closed port: nothing was downloaded
    assert not cache_dir().exists()


def test_ignores_a_damaged_keras_copy(mirror):
    keras_cache_dir().mkdir(parents=True)
    (keras_cache_dir() / "mnist.npz").write_bytes(b"damaged")
    with pytest.raises(DownloadError):
        mnist.load_data(timeout=5)


def test_redownloads_a_damaged_cached_copy(mirror):
    directory, arrays = mirror
    cache_dir().mkdir(parents=True)
    (cache_dir() / "mnist.npz").write_bytes(b"damaged")
    assert_same(mnist.load_data(base_url=directory.as_uri()), arrays)
    assert (cache_dir() / "mnist.npz").read_bytes() == (directory / "mnist.npz").read_bytes()


def test_path_argument(mirror, tmp_path):
    directory, arrays = mirror
    assert_same(mnist.load_data(path="sub/my-mnist.npz", base_url=directory.as_uri()), arrays)
    assert (cache_dir() / "sub" / "my-mnist.npz").is_file()
    absolute = tmp_path / "elsewhere" / "m.npz"
    assert_same(mnist.load_data(path=absolute, base_url=directory.as_uri()), arrays)
    assert absolute.is_file()


def test_no_network_gives_a_clear_error():
    with pytest.raises(DownloadError, match=r"Could not download http://127\.0\.0\.1:\d+/mnist\.npz"):
        mnist.load_data(timeout=5)
    assert not (cache_dir() / "mnist.npz").exists()


def test_wrong_checksum_leaves_no_file(mirror, monkeypatch):
    directory, _ = mirror
    monkeypatch.setattr(mnist, "SHA256", "0" * 64)
    with pytest.raises(DownloadError, match="corrupted"):
        mnist.load_data(base_url=directory.as_uri())
    assert list(cache_dir().iterdir()) == []


def test_archive_with_wrong_shapes(tmp_path, monkeypatch):
    arrays = small_mnist()
    arrays["x_test"] = arrays["x_test"].reshape(10, 784)
    cache_dir().mkdir(parents=True)
    np.savez(cache_dir() / "mnist.npz", **arrays)
    monkeypatch.setattr(mnist, "SHA256", sha256_of(cache_dir() / "mnist.npz"))
    with pytest.raises(ValueError, match=r"x_test .*received shape \(10, 784\)"):
        mnist.load_data()


def test_archive_with_missing_arrays(tmp_path, monkeypatch):
    arrays = small_mnist()
    del arrays["y_train"]
    cache_dir().mkdir(parents=True)
    np.savez(cache_dir() / "mnist.npz", **arrays)
    monkeypatch.setattr(mnist, "SHA256", sha256_of(cache_dir() / "mnist.npz"))
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_train'\]"):
        mnist.load_data()


def test_constants_match_keras():
    # The URL and checksum keras.datasets.mnist uses (keras/src/datasets/mnist.py), as written in the
    # module (the fixture has patched BASE_URL since).
    assert AS_WRITTEN == (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "mnist.npz",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    )
