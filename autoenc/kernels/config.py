"""Settings shared by every kernel: compiler options, the Numba cache, and the reference switch."""
import contextlib
import functools
import hashlib
import os
import warnings

import numba
from numba.core import caching, dispatcher, sigutils

# LLVM's SLP vectoriser packs the 8 scalar multiply-adds of the register-blocked loops (see
# blocks.py) into one vector instruction. Numba leaves it off by default; it is read when a
# function is compiled, so it must be set before the first kernel compiles (it is: every kernel
# module imports this one first). Also in the environment: Numba reloads its whole configuration
# from NUMBA_* variables at the next compile whenever one of them changes (a user setting
# NUMBA_NUM_THREADS after import, say), which would turn it off again. A user's own
# NUMBA_SLP_VECTORIZE is kept; the cache key holds the setting (_CheckedCache).
os.environ.setdefault("NUMBA_SLP_VECTORIZE", "1")
numba.config.SLP_VECTORIZE = 1 if os.environ["NUMBA_SLP_VECTORIZE"].strip() == "1" else 0

# fastmath without 'reassoc': lets LLVM fuse multiply-adds, but keeps the order of every sum,
# so results do not depend on vector width and float32 reductions stay predictable.
FASTMATH = {"contract", "nsz", "arcp"}

# Reductions over the batch (weight and bias gradients) are split into at most this many fixed
# chunks, each summed in order and then added in order: the result is the same bit for bit
# whatever the number of threads.
MAX_CHUNKS = 8


def n_chunks(n):
    """Number of batch chunks for a reduction over n samples."""
    return max(1, min(n, MAX_CHUNKS))


# --- the Numba cache ---------------------------------------------------------------------------
#
# Every kernel is compiled once and cached on disk (numba.njit(cache=True)). Two things must not
# stop autoenc: no writable cache directory (a read-only container: Numba raises "no locator
# available" at import), and a damaged cache file (truncated, or another function's file). The
# first compiles without a cache, the second recompiles and overwrites the file; each warns once.

_warned = set()


def _warn_once(kind, message):
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=None)
def kernel_sources_digest():
    """sha256 of the source of every module in autoenc/kernels (read once per process)."""
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


class _CheckedCache(caching.FunctionCache):
    """Numba's per-function disk cache, with a damaged entry treated as a miss (recompiled and
    saved again), a failed save ignored, and every kernel source in the key.

    Numba keys a cached function by its own bytecode and its own file's time stamp, so a kernel
    whose helper in another file changed (blocks.py, say, edited by someone stepping through the
    code) would load its old machine code. The key here also holds :func:`kernel_sources_digest`:
    any edit under autoenc/kernels recompiles every kernel once; and whether LLVM's SLP vectoriser
    was on, so that a kernel compiled without it is not reused with it."""

    def _index_key(self, sig, codegen):
        return super()._index_key(sig, codegen) + (kernel_sources_digest(), numba.config.SLP_VECTORIZE)

    def load_overload(self, sig, target_context):
        try:
            cres = super().load_overload(sig, target_context)
        except Exception as e:  # truncated or foreign pickle: EOFError, UnpicklingError, TypeError, ...
            _warn_once("load", f"autoenc: ignoring a damaged Numba cache entry of {self._py_func.__qualname__} "
                               f"({type(e).__name__}: {e}); recompiling. Cache directory: {self.cache_path}")
            try:
                self.flush()    # a fresh, empty index: the recompiled kernel is saved in its place
            except Exception:
                pass
            return None
        if cres is None:
            return None
        args = sigutils.normalize_signature(sig)[0]
        if (cres.fndesc.qualname != self._py_func.__qualname__ or cres.fndesc.modname != self._py_func.__module__
                or tuple(cres.signature.args) != tuple(args)):
            _warn_once("load", f"autoenc: the Numba cache entry of {self._py_func.__qualname__} holds "
                               f"{cres.fndesc.modname}.{cres.fndesc.qualname}{cres.signature}; recompiling. "
                               f"Cache directory: {self.cache_path}")
            return None
        return cres

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as e:
            _warn_once("save", f"autoenc: cannot write the Numba cache ({type(e).__name__}: {e}); "
                               "kernels are compiled again in each process")


def njit(**options):
    """``numba.njit(cache=True, nogil=True, **options)``, robust to the cache: where no cache
    directory can be written the kernel is compiled in memory (one warning), and a damaged cache
    file is recompiled. Without the GIL, the pieces of a kernel run at the same time on
    threads.parallel_for's threads. Under NUMBA_DISABLE_JIT=1 it returns the plain Python function,
    as numba.njit does."""
    options.setdefault("nogil", True)

    def decorate(fn):
        disp = numba.njit(**options)(fn)
        if isinstance(disp, dispatcher.Dispatcher):
            try:
                disp._cache = _CheckedCache(fn)   # what Dispatcher.enable_caching() does, checked
            except Exception as e:              # RuntimeError: no locator available (nowhere to write)
                _warn_once("locate", f"autoenc: no writable Numba cache directory ({e}); kernels are compiled "
                                     "without a cache, in each process (set NUMBA_CACHE_DIR to a writable "
                                     "directory to keep them)")
        return disp
    return decorate


# --- the reference switch ----------------------------------------------------------------------

_reference = False


def set_reference_kernels(enabled):
    """Run every layer through its slow, obvious ``*_naive`` kernels (True) or the fast ones (False,
    the default). Layers read the switch at each forward pass; a backward pass follows the path
    its forward pass took. It applies to every thread."""
    global _reference
    if not isinstance(enabled, bool):
        raise TypeError(f"set_reference_kernels expects True or False, got {enabled!r}")
    _reference = enabled


def reference_kernels_enabled():
    """Whether layers use the ``*_naive`` kernels (see :func:`set_reference_kernels`)."""
    return _reference


@contextlib.contextmanager
def reference_kernels(enabled=True):
    """``with reference_kernels(): ...`` runs the block through the naive kernels, then restores
    the previous setting."""
    previous = _reference
    set_reference_kernels(enabled)
    try:
        yield
    finally:
        set_reference_kernels(previous)
