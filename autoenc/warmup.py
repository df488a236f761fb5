"""Compile the weight-gradient kernel in a second process, on a cold Numba cache, while this process
compiles the others.

On a fresh install every kernel compiles at its first call, one after the other (Numba compiles one
function at a time in a process): 30 s before the seed model's first training step, 12 s of it
the weight-gradient kernel (conv_weight_grad._dw_chunks with its register blocks), which is needed
only once the forward pass and the first gradients are done. So the first training step of a model
with a convolution starts a process that compiles that kernel into the shared Numba cache
(:func:`start`); this process compiles the forward pass meanwhile, and when the backward pass reaches
the weight gradient it waits for that process and loads the kernel from the cache (:func:`wait`, which
:func:`start` hangs on ``conv_weight_grad.before_first_call``).
With the cache filled, or ``AUTOENC_WARMUP=off``, or no cache to share, nothing of this happens. The
kernel is the same either way: the same source, the same compiler options, the same machine code.
"""
import atexit
import os
import subprocess
import sys
import threading

# the child: compiles _dw_chunks for arrays of the given dtype (tiny arrays of the layouts the layers
# pass: C-contiguous, writable) and saves it in the cache; then exits
CHILD = """
import sys
import numpy as np
from autoenc.kernels.conv_weight_grad import _dw_chunks
dt = np.dtype(sys.argv[1])
_dw_chunks(0, 1, np.zeros((1, 3, 3, 1), dt), np.zeros((1, 1, 1, 1), dt), 1, 1, np.zeros((1, 3, 3, 1, 1), dt))
"""

_lock = threading.Lock()
_job = None        # the running warm-up process (subprocess.Popen), until waited for
_tried = False     # a warm-up was started, or is of no use in this process (off, or the kernel is warm)


def enabled():
    """Whether the warm-up may run: not when AUTOENC_WARMUP=off (or 0, false, no), nor without the JIT."""
    import numba
    off = os.environ.get("AUTOENC_WARMUP", "").strip().lower() in ("off", "0", "false", "no")
    return not off and not numba.config.DISABLE_JIT


def _cold(kernel):
    """Whether ``kernel`` (a dispatcher of kernels/config.njit) is neither compiled in this process nor
    in the disk cache (no index file), and the cache can be written: then a warm-up saves time."""
    from autoenc.kernels.config import _CheckedCache
    cache = getattr(kernel, "_cache", None)
    if kernel.signatures or not isinstance(cache, _CheckedCache):
        return False
    try:
        path = cache._cache_file._index_path
        return not os.path.exists(path) and os.access(os.path.dirname(path) or ".", os.W_OK)
    except (AttributeError, OSError):
        return False


def start(model):
    """Start the warm-up process for ``model``'s first training step, at most once per process, if the
    model has a convolution (Conv1D, Conv2D or a transposed one), its dtype is float32 or float64, and
    the weight-gradient kernel is cold (see :func:`_cold`). Returns True if it started one."""
    global _job, _tried
    if _tried:
        return False
    with _lock:
        if _tried:
            return False
        if not enabled():
            _tried = True
            return False
        from autoenc.kernels import conv_weight_grad
        from autoenc.kernels.conv_transpose import Conv2DTransposeKernels
        from autoenc.kernels.convolution import Conv2DKernels
        if str(getattr(model, "dtype", "")) not in ("float32", "float64") or not any(
                isinstance(getattr(layer, "_kernels", None), (Conv2DKernels, Conv2DTransposeKernels))
                for layer in model.flat_layers()):
            return False            # this model needs no weight-gradient kernel; a later one may
        _tried = True
        if not _cold(conv_weight_grad._dw_chunks):
            return False
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder holding autoenc
        env = {**os.environ, "AUTOENC_WARMUP": "off",
               "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        try:
            _job = subprocess.Popen([sys.executable, "-c", CHILD, str(model.dtype)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return False
        conv_weight_grad.before_first_call = wait
        return True


def wait(timeout=600):
    """Wait for the warm-up process, if one runs (called before the first weight gradient): its kernel is
    then in the cache, and Numba loads it instead of compiling it. A failed or slow warm-up costs
    nothing more than the wait: the kernel is then compiled here, as without it."""
    global _job
    from autoenc.kernels import conv_weight_grad
    conv_weight_grad.before_first_call = None
    job, _job = _job, None
    if job is None:
        return
    try:
        job.wait(timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()


def _stop():
    """At exit: a warm-up still running is of no more use; stop it (the cache is written file by file,
    each atomically)."""
    job = _job
    if job is not None and job.poll() is None:
        job.terminate()
        try:
            job.wait(10)
        except subprocess.TimeoutExpired:
            job.kill()


def _forget():
    global _job, _tried, _lock
    _job, _tried, _lock = None, False, threading.Lock()


atexit.register(_stop)
os.register_at_fork(after_in_child=_forget)   # the warm-up is the parent's child, not ours
