"""Datasets of 28x28 grey images, loaded the Keras way.

    from autoenc.datasets import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data()

Every loader returns ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape (n, 28, 28) with
pixel values 0..255, and uint8 labels of shape (n,) with values 0..9.

- ``mnist``: handwritten digits, downloaded once (or reused from the Keras cache).
- ``fashion_mnist``: clothes, from the caches, a system copy (Debian's ``dataset-fashion-mnist``) or
  downloaded once.
- ``digits``: synthetic handwritten-looking digits generated offline, for when MNIST cannot be had.

Downloads are kept in ``~/.autoenc/datasets`` (``$AUTOENC_HOME/datasets`` if set).
"""

from autoenc.datasets import digits, fashion_mnist, mnist
from autoenc.datasets._cache import ChecksumError, DownloadError, cache_dir
from autoenc.datasets._formats import read_idx
from autoenc.files import read_npz

LOADERS = {
    "mnist": mnist.load_data,
    "fashion_mnist": fashion_mnist.load_data,
    "digits": digits.load_data,
}


def load(name, **kwargs):
    """Load a dataset by name: ``"mnist"``, ``"fashion_mnist"`` or ``"digits"``.

    kwargs are passed to that dataset's ``load_data``.

    Returns ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape (n, 28, 28) and uint8
    labels of shape (n,).
    """
    if name not in LOADERS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(LOADERS)}.")
    return LOADERS[name](**kwargs)


def load_images(use_mnist=False, limit=0):
    """Images ready for an autoencoder: float32 of shape (n, 28, 28, 1) scaled to [0, 1].

    use_mnist : real MNIST (cache, Keras' cache or download) instead of the synthetic digits.
    limit : the first ``limit`` training images and a sixth as many test images (MNIST's ratio);
        0 for all. Only as many synthetic digits as needed are drawn.

    Returns ``(x_train, x_test)``.
    """
    if use_mnist:
        (x_train, _), (x_test, _) = mnist.load_data()
    else:
        n = limit or 60000
        (x_train, _), (x_test, _) = digits.load_data(n_train=n, n_test=max(1, n // 6), cache=not limit)
    if limit:
        x_train, x_test = x_train[:limit], x_test[:max(1, limit // 6)]
    return (x_train.astype("float32") / 255)[..., None], (x_test.astype("float32") / 255)[..., None]


def load_mnist_or_digits(timeout=None, seed=0):
    """Load MNIST if it can be had (cache, Keras cache, download), else the synthetic digits.

    timeout : seconds to wait for the MNIST server; default 30.
    seed : seed of the synthetic digits, if they are used.

    Returns ``(data, reason)``: ``data`` is ``(x_train, y_train), (x_test, y_test)`` as from
    ``mnist.load_data()``, 60,000 training and 10,000 test images of shape (28, 28), uint8; ``reason``
    is None when the data is MNIST, else a one-line message saying why MNIST could not be loaded
    and that synthetic digits are used instead, for a command-line tool to print.
    """
    try:
        return mnist.load_data(timeout=timeout), None
    except (OSError, ValueError) as error:  # DownloadError is an OSError
        cause = " ".join(str(error).split())  # one line, whatever the message
        reason = f"MNIST is not available ({cause}); using synthetic digits (autoenc.datasets.digits) instead."
        return digits.load_data(seed=seed), reason


__all__ = [
    "load_images",
    "ChecksumError",
    "DownloadError",
    "cache_dir",
    "digits",
    "fashion_mnist",
    "load",
    "load_mnist_or_digits",
    "mnist",
    "read_idx",
    "read_npz",
]
