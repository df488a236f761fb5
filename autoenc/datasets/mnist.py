"""MNIST handwritten digits: 60,000 training and 10,000 test images of 28x28 grey pixels.

Same file, same place and same checksum as ``keras.datasets.mnist``: ``mnist.npz`` holds the arrays
``x_train``, ``y_train``, ``x_test``, ``y_test``. It is downloaded once into the autoenc cache
(``~/.autoenc/datasets``), or read from the Keras cache when Keras already downloaded it.

MNIST is by Yann LeCun and Corinna Cortes, derived from NIST data, under the Creative Commons
Attribution-Share Alike 3.0 license.
"""

import os
from pathlib import Path

from autoenc.datasets._cache import cache_dir, download, first_verified, join_url, keras_cache_dir
from autoenc.datasets._formats import check_split
from autoenc.files import read_npz

BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
URL_ENV = "AUTOENC_DATASETS_URL"  # set it to download from a mirror instead of BASE_URL
FILE_NAME = "mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_data(path=None, *, base_url=None, timeout=None):
    """Load MNIST, downloading it on first use.

    path : where to keep ``mnist.npz``. A relative path is relative to the autoenc cache directory
        (as Keras' is to ``~/.keras/datasets``); None means ``mnist.npz`` there.
    base_url : where to download from; default ``$AUTOENC_DATASETS_URL`` or ``BASE_URL``.
    timeout : seconds to wait for the server before giving up; default 30.

    Returns ``(x_train, y_train), (x_test, y_test)``:
        x_train : ndarray of shape (60000, 28, 28), uint8, pixel values 0..255 (white ink on black)
        y_train : ndarray of shape (60000,), uint8, the digit shown, 0..9
        x_test : ndarray of shape (10000, 28, 28), uint8
        y_test : ndarray of shape (10000,), uint8

    Raises DownloadError when the file is not cached and cannot be downloaded (no network, server
    down, timeout, corrupted download), ValueError when the file is not a valid MNIST archive.
    """
    destination = Path(path if path is not None else FILE_NAME).expanduser()
    if not destination.is_absolute():
        destination = cache_dir() / destination
    # Our own copy first, then the one Keras may have downloaded; both must match the checksum.
    found = first_verified([destination, keras_cache_dir() / FILE_NAME], SHA256)
    if found is None:
        url = join_url(base_url or os.environ.get(URL_ENV) or BASE_URL, FILE_NAME)
        found = download(url, destination, SHA256, timeout)

    arrays = read_npz(found, KEYS)
    check_split(arrays["x_train"], arrays["y_train"], found, "train")
    check_split(arrays["x_test"], arrays["y_test"], found, "test")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
