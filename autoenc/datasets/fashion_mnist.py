"""Fashion-MNIST: 60,000 training and 10,000 test images of clothes, 28x28 grey pixels, 10 classes.

A drop-in replacement for MNIST with the same shapes, same IDX files and same split, from the same
place as ``keras.datasets.fashion_mnist``. The four files are looked for, in order:

1. in the autoenc cache (``~/.autoenc/datasets/fashion-mnist``) and the Keras cache
   (``~/.keras/datasets/fashion-mnist``), accepted when their SHA-256 checksum matches;
2. in ``SYSTEM_DIRS``, where Linux distributions install them (Debian and Ubuntu:
   ``apt install dataset-fashion-mnist``). The package manager vouches for those files, and the
   distribution may recompress them, so they are not compared with the download checksums; the IDX
   reader still checks their structure;
3. otherwise they are downloaded into the autoenc cache.

Fashion-MNIST is by Zalando SE, under the MIT license.
"""

import os
from pathlib import Path

from autoenc.datasets._cache import cache_dir, download, first_verified, join_url, keras_cache_dir
from autoenc.datasets._formats import check_split, read_idx

BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
URL_ENV = "AUTOENC_DATASETS_URL"  # set it to download from a mirror instead of BASE_URL
SUBDIR = "fashion-mnist"  # the cache subdirectory, the same name Keras uses
SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)

# SHA-256 of the files as published by Zalando (and mirrored unchanged at BASE_URL), as recorded in
# TensorFlow Datasets' url_checksums/fashion_mnist.txt. Keras itself does not check these files.
FILES = {
    "x_train": ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "y_train": ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def locate(file_name, sha256, *, base_url=None, search_dirs=None, timeout=None):
    """Return the ``Path`` of a local copy of one Fashion-MNIST file, downloading it if needed.

    file_name : e.g. ``"train-images-idx3-ubyte.gz"``
    sha256 : its expected checksum, for cached and downloaded copies
    search_dirs : directories of trusted copies; default ``SYSTEM_DIRS``. An uncompressed copy
        (the name without ``.gz``) is accepted too.

    Raises DownloadError when the file is nowhere to be found and cannot be downloaded.
    """
    cached = first_verified(
        [cache_dir() / SUBDIR / file_name, keras_cache_dir() / SUBDIR / file_name], sha256
    )
    if cached is not None:
        return cached
    for directory in SYSTEM_DIRS if search_dirs is None else search_dirs:
        for name in (file_name, file_name.removesuffix(".gz")):
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate
    url = join_url(base_url or os.environ.get(URL_ENV) or BASE_URL, file_name)
    return download(url, cache_dir() / SUBDIR / file_name, sha256, timeout)


def load_data(*, base_url=None, search_dirs=None, timeout=None):
    """Load Fashion-MNIST from the caches, the system's copy, or by downloading it.

    base_url : where to download from; default ``$AUTOENC_DATASETS_URL`` or ``BASE_URL``.
    search_dirs : directories holding a system copy; default ``SYSTEM_DIRS``.
    timeout : seconds to wait for the server before giving up; default 30.

    Returns ``(x_train, y_train), (x_test, y_test)``:
        x_train : ndarray of shape (60000, 28, 28), uint8, pixel values 0..255
        y_train : ndarray of shape (60000,), uint8, the class, 0..9 (names in ``CLASS_NAMES``)
        x_test : ndarray of shape (10000, 28, 28), uint8
        y_test : ndarray of shape (10000,), uint8

    Raises DownloadError when a file is not available locally and cannot be downloaded, ValueError
    when a file is not a valid IDX file or the images and labels do not match.
    """
    arrays = {}
    for key, (file_name, sha256) in FILES.items():
        path = locate(file_name, sha256, base_url=base_url, search_dirs=search_dirs, timeout=timeout)
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        source = f"Fashion-MNIST ({FILES['x_' + split][0]}, {FILES['y_' + split][0]})"
        check_split(arrays["x_" + split], arrays["y_" + split], source, split)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
