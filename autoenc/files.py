"""Reading and writing files safely: atomic replacement, and readers that check sizes before allocating.

Writing. ``atomic_write(path, write)`` calls ``write(f)`` on a temporary file beside ``path`` and renames
it over ``path``, so a crash, a full disk or a KeyboardInterrupt leaves either the complete new file or
the previous one. It behaves like ``open(path, "wb")`` where that is safe:

- an existing file keeps its permission bits (a 0600 file stays 0600); a new file gets 0666 less the
  umask, applied by the kernel when the temporary file is created (the umask is never changed);
- a symbolic link is followed: the file it points to is replaced, the link stays a link;
- a file that ``open(path, "wb")`` could not write (read-only, 0444) is refused with PermissionError;
- anything that is not a regular file (a directory, a FIFO, a device such as /dev/null, a socket) is
  refused with ValueError: renaming over it would replace it with a regular file;
- the temporary file is ``.<hash of the name>.<random>.part`` (a hidden file of fixed length, so any
  valid name works); temporary files of the same target left by a killed process are removed by the
  next atomic_write of that target once they are ``STALE_SECONDS`` old.

Unlike ``open(path, "wb")``, the result is a new file (a new inode): other hard links to the old file
keep the old content, and the owner is the writer.

Reading. Every size a file declares (a zip member's uncompressed size, a .npy header's shape) is
compared with a cap and with the bytes actually present before anything is inflated or allocated, so a
small hostile file gives a ValueError naming the file instead of gigabytes of memory.
"""
import errno
import hashlib
import math
import os
import secrets
import stat
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Archives whose members declare more than this many bytes in total are refused before reading.
MAX_BYTES = 1 << 30
# A temporary file of atomic_write untouched this long belongs to a writer that died.
STALE_SECONDS = 15 * 60


# --- writing --------------------------------------------------------------------------------------

def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _temporary_prefix(target):
    """'.<16 hex digits>.': the same for every temporary file of ``target``, whatever its name's length."""
    return "." + hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16] + "."


def _remove_stale_temporaries(target, prefix):
    """Remove the temporary files of ``target`` that a killed writer left, once STALE_SECONDS old."""
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(".part"):
            try:
                if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    os.remove(entry.path)
            except OSError:
                pass   # another writer removed or replaced it meanwhile


def atomic_write(path, write):
    """Create or replace the file ``path`` by calling ``write(f)`` on a temporary file beside it, then
    renaming it over ``path``. Returns ``path`` as a Path.

    ``write`` gets a binary file open for writing. If it raises (KeyboardInterrupt included), the
    temporary file is removed and the exception propagates: ``path`` is either the complete new file
    or the previous one, untouched. Permissions, symbolic links and special files are handled as the
    module docstring says: the mode of a replaced file is kept, a new file gets 0666 less the umask,
    a symlink's target is replaced, a read-only file raises PermissionError, and a path that exists
    but is not a regular file raises ValueError. Missing parent directories are created.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path   # write through the link
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is {_kind(st.st_mode)}; atomic_write replaces regular files only")
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, "Permission denied (the file is read-only)", str(path))
    prefix = _temporary_prefix(target)
    _remove_stale_temporaries(target, prefix)
    # same folder: os.replace is atomic only within one file system
    temporary = target.parent / f"{prefix}{secrets.token_hex(4)}.part"
    # 0o666: the kernel applies the umask, as open(path, "w") does
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if st is not None:
                os.chmod(temporary, stat.S_IMODE(st.st_mode))
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


# --- reading --------------------------------------------------------------------------------------

def require_file(path, what):
    """Raise FileNotFoundError naming ``path`` unless it is an existing file."""
    if not Path(path).is_file():
        raise FileNotFoundError(errno.ENOENT, f"No such {what} file", str(path))


def read_zip_member(archive, name, path, max_bytes):
    """The bytes of member ``name`` of the open ZipFile ``archive`` (of the file ``path``), refused with
    a ValueError naming both when the zip directory declares more than ``max_bytes`` for it.

    zipfile stops at the declared size, so the check bounds the memory whatever the member holds.
    """
    info = archive.getinfo(name)
    if info.file_size > max_bytes:
        raise ValueError(f"{path}: member {name} declares {info.file_size} bytes uncompressed, more than the "
                         f"limit of {max_bytes} bytes; the file is probably hostile or corrupt")
    return archive.read(info)


# What a damaged zip or .npy raises; NotImplementedError is zipfile's answer to an unknown compression method.
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError)


def _npy_header(archive, info, path):
    """(shape, dtype, header length) of the archived .npy ``info``, reading only its header."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        return shape, dtype, f.tell()


def _npz_members(archive, path, max_bytes):
    """{key: (ZipInfo, shape, dtype)} of every array of the open .npz ``archive``, each header checked
    against the member's declared size, and the declared sizes against ``max_bytes``, before any data
    is inflated."""
    infos = archive.infolist()
    declared = sum(info.file_size for info in infos)
    if declared > max_bytes:
        raise ValueError(f"{path}: its members declare {declared} bytes uncompressed in total, more than the "
                         f"limit of {max_bytes} bytes; the file is probably hostile or corrupt")
    members = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{path}: member {info.filename} is not a .npy array")
        shape, dtype, header = _npy_header(archive, info, path)
        name = info.filename
        if dtype.hasobject:
            raise ValueError(f"{path}: array {name} holds Python objects, which are never loaded")
        nbytes = dtype.itemsize * math.prod(shape)   # Python ints: no overflow, whatever the header says
        if nbytes > max_bytes:
            raise ValueError(f"{path}: array {name} declares shape {shape} of {dtype} ({nbytes} bytes), more "
                             f"than the limit of {max_bytes} bytes; the file is probably corrupt")
        if header + nbytes != info.file_size:
            raise ValueError(f"{path}: array {name} declares {nbytes} bytes of data but the archive holds "
                             f"{info.file_size - header}; the file is truncated or corrupt")
        members[name[:-4]] = (info, shape, dtype)
    return members


def _open_npz(path):
    require_file(path, ".npz")
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ValueError(f"{path} holds a single array (a .npy file), not a .npz archive of named arrays.")
    try:
        return zipfile.ZipFile(path)
    except _READ_ERRORS as error:
        raise ValueError(f"{path} is not a valid .npz file: {error}") from error


def read_npz_headers(path, max_bytes=None):
    """The shape and dtype of every array in the NumPy archive at ``path``, without reading their data.

    Returns a dict mapping each key to ``(shape, dtype)``, in file order. Raises like ``read_npz``.
    """
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    with _open_npz(path) as archive:
        try:
            return {key: (shape, dtype) for key, (_, shape, dtype) in _npz_members(archive, path, max_bytes).items()}
        except _READ_ERRORS as error:
            raise ValueError(f"{path} has an array that cannot be read: {error}") from error


def read_npz(path, keys=None, max_bytes=None):
    """Read the arrays named ``keys`` (all of them, in file order, when None) from the NumPy archive
    at ``path``, never unpickling anything.

    Returns a dict mapping each key to its ndarray (shapes and dtypes as stored).

    Raises FileNotFoundError naming ``path`` when it does not exist, and ValueError naming the file
    when it is not a valid .npz archive, when its members declare more than ``max_bytes`` (default
    ``MAX_BYTES``) in total or an array's header declares another size than its member (both checked
    before anything is inflated or allocated), when an array cannot be read, or when keys are missing
    (the message lists the missing keys and the keys found).
    """
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    with _open_npz(path) as archive:
        try:
            members = _npz_members(archive, path, max_bytes)
        except _READ_ERRORS as error:
            raise ValueError(f"{path} has an array that cannot be read: {error}") from error
        keys = list(members) if keys is None else list(keys)
        missing = [key for key in keys if key not in members]
        if missing:
            raise ValueError(f"{path} lacks the arrays {missing}; it contains {sorted(members)}.")
        try:
            out = {}
            for key in keys:
                with archive.open(members[key][0]) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            return out
        except _READ_ERRORS as error:
            raise ValueError(f"{path} has an array that cannot be read: {error}") from error
