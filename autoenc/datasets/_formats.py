"""The file formats of the classic image datasets: IDX (MNIST, Fashion-MNIST); ``.npz`` is read by
``autoenc.files.read_npz``.

IDX, as described on Yann LeCun's MNIST page, is a tiny header followed by the raw array, big-endian:

    bytes 0-1   0x00 0x00
    byte  2     type code of the items: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions, ndim
    then        ndim sizes, each a 4-byte big-endian unsigned integer
    then        prod(sizes) items, row-major (C order)

so ``train-images-idx3-ubyte`` starts ``00 00 08 03  00 00 EA 60  00 00 00 1C  00 00 00 1C``: uint8, three
dimensions, 60000 x 28 x 28. The files are usually distributed gzip-compressed (``.gz``).

The readers trust nothing in a file: every size is checked against the bytes actually present before
any array is built, so a truncated download or a corrupt header gives a ValueError that names the
file, never a cryptic reshape error or a gigantic allocation.
"""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from autoenc.files import require_file

IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.int16,
    0x0C: np.int32,
    0x0D: np.float32,
    0x0E: np.float64,
}
# A corrupt header could declare sizes like 2**32 x 2**32; refuse anything this large before reading.
# The biggest real IDX file (EMNIST) is under 1 GiB uncompressed.
MAX_IDX_BYTES = 1 << 30
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path, max_bytes=MAX_IDX_BYTES):
    """Read an IDX file (gzip-compressed or not) into a NumPy array.

    Compression is recognised by the gzip magic bytes, not by the file name.

    Returns an ndarray whose shape is the one declared in the header, e.g. (60000, 28, 28) for
    ``train-images-idx3-ubyte.gz``, and whose dtype is given by the type code (uint8 for MNIST),
    in native byte order. The array is writable and owns its memory.

    Raises FileNotFoundError naming ``path`` when it does not exist, and ValueError naming the file
    when the magic number, type code or number of dimensions is invalid, when the declared size
    exceeds ``max_bytes``, when the data is shorter or longer than the header declares (with the
    expected and actual byte counts), or when the gzip stream is damaged.
    """
    require_file(path, "IDX")
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    if Path(path).suffix == ".gz" and not compressed:
        raise ValueError(f"{path} is named .gz but is not gzip-compressed (it does not start with 1f 8b).")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as f:
            return _read_idx_stream(f, path, max_bytes)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        # EOFError: the compressed stream ends early (truncated download); zlib.error: damaged bytes.
        raise ValueError(f"{path} is not a valid gzip file: {error}") from error


def _read_idx_stream(f, path, max_bytes):
    """Parse the IDX header and data from the open binary stream ``f`` (see ``read_idx``)."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{path} is not an IDX file: it starts with {magic.hex(' ') or 'nothing'}, "
            "expected 00 00 followed by a type code and the number of dimensions."
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(f"{path} has IDX type code 0x{type_code:02X}; known codes are {known}.")
    if ndim == 0:
        raise ValueError(f"{path} declares 0 dimensions; an IDX array needs at least 1.")

    size_bytes = f.read(4 * ndim)
    if len(size_bytes) < 4 * ndim:
        raise ValueError(
            f"{path} is truncated inside its header: {ndim} dimensions need {4 * ndim} bytes of sizes, "
            f"found {len(size_bytes)}."
        )
    shape = tuple(int.from_bytes(size_bytes[4 * i : 4 * i + 4], "big") for i in range(ndim))

    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = dtype.itemsize * math.prod(shape)  # Python ints: no overflow, whatever the header says
    # an empty array (a size 0) must still have a shape NumPy can hold: count the other sizes too
    nominal = dtype.itemsize * math.prod(max(n, 1) for n in shape)
    if nominal > max_bytes:
        raise ValueError(
            f"{path} declares shape {shape} of {dtype}, i.e. {expected} bytes of data"
            + (f" in a shape of {nominal} bytes" if nominal != expected else "")
            + f", more than the limit of {max_bytes} bytes; the header is probably corrupt."
        )
    data = f.read(expected)
    if len(data) < expected:
        raise ValueError(
            f"{path} is truncated: its header declares shape {shape} of {dtype}, i.e. {expected} bytes "
            f"of data, but only {len(data)} bytes follow the header."
        )
    if f.read(1):
        raise ValueError(
            f"{path} has more data than its header declares: shape {shape} of {dtype} is {expected} "
            "bytes, and there are extra bytes after them."
        )
    # IDX is big-endian (">"); convert to the machine's byte order. astype copies, so the result is writable.
    return np.frombuffer(data, dtype=dtype.newbyteorder(">")).astype(dtype).reshape(shape)


def check_split(x, y, source, split="train"):
    """Check that ``x`` and ``y`` look like one split of an MNIST-style dataset.

    x : ndarray of shape (n, 28, 28), uint8, the images
    y : ndarray of shape (n,), uint8, the labels, each in 0..9
    source : the file(s) they came from, quoted in the error message
    split : "train" or "test", quoted in the error message

    Returns nothing; raises ValueError naming the offending shape, dtype or label.
    """
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise ValueError(
            f"x_{split} from {source} should be uint8 images of shape (n, 28, 28); "
            f"received shape {x.shape} and dtype {x.dtype}."
        )
    if y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(
            f"y_{split} from {source} should be uint8 labels of shape (n,); "
            f"received shape {y.shape} and dtype {y.dtype}."
        )
    if len(x) != len(y):
        raise ValueError(f"{source} has {len(x)} x_{split} images but {len(y)} y_{split} labels.")
    if len(y) and y.max() > 9:
        raise ValueError(f"y_{split} from {source} should hold labels 0..9; received label {y.max()}.")
