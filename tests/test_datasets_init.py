"""The autoenc.datasets package: Keras-style submodules, load(name), load_mnist_or_digits. No internet."""


import numpy as np
import pytest

import autoenc.datasets as datasets
from autoenc.datasets import digits, mnist
from autoenc.datasets._cache import cache_dir, sha256_of


pytestmark = pytest.mark.usefixtures("private_dataset_homes")  # tests/conftest.py


@pytest.fixture
def cached_mnist(monkeypatch):
    """A small mnist.npz in the cache, with the checksum mnist expects."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(20) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10, dtype=np.uint8),
    }
    cache_dir().mkdir(parents=True)
    np.savez(cache_dir() / "mnist.npz", **arrays)
    monkeypatch.setattr(mnist, "SHA256", sha256_of(cache_dir() / "mnist.npz"))
    return arrays


@pytest.fixture
def small_digits(monkeypatch):
    """Make the synthetic fallback small, so the tests stay fast; record how it was called."""
    calls = []
    full_size = digits.load_data

    def small(*args, **kwargs):
        calls.append(kwargs)
        return full_size(n_train=20, n_test=10, seed=kwargs.get("seed", 0), cache=False)

    monkeypatch.setattr(digits, "load_data", small)
    return calls


def test_keras_style_imports():
    from autoenc.datasets import fashion_mnist, mnist  # noqa: F401  (as with keras.datasets)

    assert callable(mnist.load_data) and callable(fashion_mnist.load_data) and callable(digits.load_data)
    assert issubclass(datasets.DownloadError, OSError)


def test_load_by_name(cached_mnist):
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")
    np.testing.assert_array_equal(x_train, cached_mnist["x_train"])
    (x_train, y_train), (x_test, y_test) = datasets.load("digits", n_train=10, n_test=5, cache=False)
    assert x_train.shape == (10, 28, 28) and y_test.shape == (5,)


def test_load_unknown_name_lists_the_choices():
    message = r"Unknown dataset 'cifar10'; choose one of \['digits', 'fashion_mnist', 'mnist'\]"
    with pytest.raises(ValueError, match=message):
        datasets.load("cifar10")


def test_mnist_when_available(cached_mnist, small_digits):
    ((x_train, _), (x_test, _)), reason = datasets.load_mnist_or_digits()
    assert reason is None
    np.testing.assert_array_equal(x_train, cached_mnist["x_train"])
    assert small_digits == []  # the fallback was not needed


def test_digits_when_mnist_cannot_be_downloaded(small_digits):
    ((x_train, y_train), (x_test, y_test)), reason = datasets.load_mnist_or_digits(timeout=5, seed=7)
    assert x_train.shape == (20, 28, 28) and x_train.dtype == np.uint8 and y_test.shape == (10,)
    assert small_digits == [{"seed": 7}]
    assert "\n" not in reason
    assert reason.startswith("MNIST is not available (Could not download http://127.0.0.1:")
    assert "synthetic digits" in reason


def test_digits_when_the_mnist_file_is_damaged(small_digits, monkeypatch):
    cache_dir().mkdir(parents=True)
    (cache_dir() / "mnist.npz").write_bytes(b"not a zip")
    monkeypatch.setattr(mnist, "SHA256", sha256_of(cache_dir() / "mnist.npz"))
    _, reason = datasets.load_mnist_or_digits()
    assert "not a valid .npz file" in reason and "\n" not in reason


def test_load_images_scales_and_limits_the_synthetic_digits():
    from autoenc.datasets import load_images
    x_train, x_test = load_images(limit=60)
    assert x_train.shape == (60, 28, 28, 1) and x_test.shape == (10, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1 and x_train.max() > 0.5
