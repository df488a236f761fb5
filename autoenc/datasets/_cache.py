"""Where dataset files live, and how they get there.

Every dataset file is kept in one cache directory, ``~/.autoenc/datasets`` (or
``$AUTOENC_HOME/datasets``). A file is downloaded once; later calls find it in the cache and check
its SHA-256 checksum before trusting it. A file that Keras has already downloaded
(``~/.keras/datasets``, or ``$KERAS_HOME/datasets``) is reused when its checksum matches, so a machine
that has run the Keras examples needs no download at all.

Files are written atomically: the bytes go to a temporary file in the destination directory, are
checked, and only then renamed into place with ``os.replace`` (an atomic rename on POSIX and Windows).
An interrupted or corrupted download therefore never leaves a file that a later call would trust.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from autoenc.files import atomic_write

DEFAULT_TIMEOUT = 30.0  # seconds the server may stay silent before we give up
DEFAULT_DEADLINE = 600.0  # seconds a whole download may take
MAX_DOWNLOAD_BYTES = 1 << 30  # the most a download of unknown size may write
# The size in bytes of each file of the checksum tables (mnist.SHA256, fashion_mnist.FILES): a download
# of one of them stops as soon as the server sends more.
KNOWN_SIZES = {
    "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1": 11490434,  # mnist.npz
    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84": 26421880,  # train-images-idx3-ubyte.gz
    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845": 29515,     # train-labels-idx1-ubyte.gz
    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073": 4422102,   # t10k-images-idx3-ubyte.gz
    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5": 5148,      # t10k-labels-idx1-ubyte.gz
}
CHUNK_SIZE = 1 << 20  # read and hash files 1 MiB at a time, so memory use stays flat


class DownloadError(OSError):
    """A dataset file could not be downloaded: server unreachable, timeout, HTTP error, ..."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the SHA-256 checksum it should have."""


def cache_dir():
    """Return the autoenc dataset cache directory: ``$AUTOENC_HOME/datasets`` or ``~/.autoenc/datasets``.

    Returns a ``pathlib.Path``; the directory is created only when something is written to it.
    """
    home = os.environ.get("AUTOENC_HOME") or os.path.join("~", ".autoenc")
    return Path(home).expanduser() / "datasets"


def keras_cache_dir():
    """Return the directory of Keras' downloads: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "datasets"


def sha256_of(path):
    """Return the SHA-256 checksum of the file at ``path`` as a 64-character hex string."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def first_verified(paths, sha256):
    """Return the first of ``paths`` that is a file with SHA-256 checksum ``sha256``, or ``None``.

    A damaged or outdated copy is skipped, so the caller downloads a fresh one.
    """
    for path in paths:
        path = Path(path)
        if path.is_file() and sha256_of(path) == sha256:
            return path
    return None


def download(url, destination, sha256, timeout=None, size=None, deadline=None):
    """Download ``url`` to the file ``destination``, checking its size and SHA-256 checksum on the way.

    ``timeout`` (seconds, default ``DEFAULT_TIMEOUT``) bounds every wait for the server: connecting and
    each read. ``deadline`` (seconds, default ``DEFAULT_DEADLINE``) bounds the whole transfer of the body,
    so a server that trickles bytes cannot keep it going; it is checked after every read, so it may be
    passed by at most one ``timeout``. ``size`` is the file's expected size in bytes (default: the size
    ``KNOWN_SIZES`` gives for ``sha256``, if any); the download stops as soon as the server sends more than that (or more than
    ``MAX_DOWNLOAD_BYTES`` when ``size`` is None), or promises a Content-Length other than ``size``.
    The file appears at ``destination`` only when the download is complete and its checksum equals
    ``sha256``; otherwise nothing is left behind.

    Returns ``destination`` as a ``Path``.
    Raises ``DownloadError`` naming the URL and the cause when the server cannot be reached, does not
    answer in time, misses the deadline, sends too much or answers with an HTTP error; ``ChecksumError``
    (a ``DownloadError``) when the bytes received have the wrong checksum.
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    deadline = DEFAULT_DEADLINE if deadline is None else deadline
    size = KNOWN_SIZES.get(sha256) if size is None else size
    cap = MAX_DOWNLOAD_BYTES if size is None else size

    def copy_verified(f):
        digest = hashlib.sha256()
        received = 0
        start = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                promised = response.headers.get("Content-Length")
                if promised is not None and size is not None and promised.strip() != str(size):
                    raise DownloadError(f"Could not download {url}: the server announces {promised} bytes, "
                                        f"expected {size}")
                read = getattr(response, "read1", response.read)   # read1: whatever has arrived, no waiting for more
                while chunk := read(min(CHUNK_SIZE, cap - received + 1)):
                    received += len(chunk)
                    if received > cap:
                        raise DownloadError(f"Could not download {url}: the server sent more than the expected "
                                            f"{cap} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                    if time.monotonic() - start > deadline:
                        total = size if size is not None else promised or "?"
                        raise DownloadError(f"Could not download {url}: not finished within the deadline of "
                                            f"{deadline} s ({received} of {total} bytes received)")
        except DownloadError:
            raise
        except TimeoutError as error:
            raise DownloadError(f"Could not download {url}: no answer within {timeout} s") from error
        except urllib.error.HTTPError as error:
            raise DownloadError(f"Could not download {url}: {error}") from error  # "HTTP Error 404: ..."
        except urllib.error.URLError as error:
            # URLError wraps the real cause: refused connection, unknown host, timeout while connecting
            if isinstance(error.reason, TimeoutError):
                raise DownloadError(f"Could not download {url}: no answer within {timeout} s") from error
            raise DownloadError(f"Could not download {url}: {error.reason}") from error
        except (OSError, http.client.HTTPException) as error:
            # e.g. the connection was reset, or closed before all the promised bytes arrived
            raise DownloadError(f"Could not download {url}: {error!r}") from error
        if promised is not None and received != int(promised):
            raise DownloadError(
                f"Could not download {url}: the connection closed after {received} of {promised} bytes"
            )
        if digest.hexdigest() != sha256:
            raise ChecksumError(
                f"The file downloaded from {url} is corrupted: its SHA-256 is {digest.hexdigest()}, "
                f"expected {sha256}. Nothing was saved; try again later."
            )

    print(f"Downloading data from {url}", file=sys.stderr)
    return atomic_write(destination, copy_verified)


def join_url(base_url, file_name):
    """Return ``base_url`` and ``file_name`` joined by exactly one slash."""
    return base_url.rstrip("/") + "/" + file_name
