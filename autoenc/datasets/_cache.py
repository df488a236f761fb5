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
import urllib.error
import urllib.request
from pathlib import Path

from autoenc.files import atomic_write

DEFAULT_TIMEOUT = 30.0  # seconds the server may stay silent before we give up
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


def download(url, destination, sha256, timeout=None):
    """Download ``url`` to the file ``destination``, checking its SHA-256 checksum on the way.

    ``timeout`` (seconds, default ``DEFAULT_TIMEOUT``) bounds every wait for the server: connecting and
    each read. The file appears at ``destination`` only when the download is complete and its checksum
    equals ``sha256``.

    Returns ``destination`` as a ``Path``.
    Raises ``DownloadError`` naming the URL and the cause when the server cannot be reached, does not
    answer in time or answers with an HTTP error; ``ChecksumError`` (a ``DownloadError``) when the bytes
    received have the wrong checksum.
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout

    def copy_verified(f):
        digest = hashlib.sha256()
        received = 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                promised = response.headers.get("Content-Length")
                while chunk := response.read(CHUNK_SIZE):
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
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
