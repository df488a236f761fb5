"""Compile the slowest kernels to compile in a second process, on a cold Numba cache, while this
process compiles the others.

On a fresh install every kernel compiles at its first call, one after the other (Numba compiles one
function at a time in a process): 33 s before the seed model's first training step on a 2-core
Zen 3 if all compile here. The weight-gradient kernel (conv_weight_grad._dw_chunks with its register
blocks) takes 12 s of it, the 2x2 max pooling's forward and fused backward kernels 4.8 and 5.6 s; the
forward convolution, 14 s, compiles first here, so none of them is needed before then. So the first
training step of a model that has them starts a process that compiles them into the shared Numba
cache, saying the name of each as it is saved (:func:`start`); this process compiles the rest
meanwhile, and before the first call of each of those kernels it waits until the other process has
saved it, then Numba loads it from the cache (:func:`wait`, which :func:`start` hangs on the kernel
modules' ``before_first_call``). The pooling's forward comes first (needed here after the first
convolution, 12 s in, by when it is saved), then its backward, then the weight gradient (needed 15 s
in, waited for some 8 s: 26-28.5 s in all against 30 s; the weight gradient first, the pooling's
forward compiled here, was no faster).
With the cache filled, or ``AUTOENC_WARMUP=off``, or no cache to share, nothing of this happens. The
kernels are the same either way: the same source, the same compiler options, the same machine code.
"""
import atexit
import os
import subprocess
import sys
import threading

# the child: compiles the kernels named in argv[2:] for arrays of the dtype argv[1] (tiny arrays of
# the layouts the layers pass: C-contiguous, writable; no item to run), saving each in the cache and
# printing its name once saved; then exits
CHILD = """
import sys
import numpy as np
dt = np.dtype(sys.argv[1])
z = lambda *shape: np.zeros(shape, dt)
index, yes = np.zeros((1, 1, 1, 1), np.int32), np.zeros(1, np.bool_)

def _maxpool2x2_forward_samples():
    from autoenc.kernels.pooling import _maxpool2x2_forward_samples as kernel
    kernel(0, 0, z(1, 2, 2, 1), z(1, 1, 1, 1), index, yes)

def _maxpool2d_backward_relu_dz_chunks():
    from autoenc.kernels.pooling import _maxpool2d_backward_relu_dz_chunks as kernel
    kernel(0, 0, z(1, 1, 1, 1), index, z(1, 1, 1, 1), yes, z(1, 2, 2, 1), 1, 1, 1, 1, z(1, 2, 2, 1),
           z(1, 4, 4, 1), z(1, 1), True)

def _dw_chunks():
    from autoenc.kernels.conv_weight_grad import _dw_chunks as kernel
    kernel(0, 1, z(1, 3, 3, 1), z(1, 1, 1, 1), 1, 1, z(1, 3, 3, 1, 1))

for name in sys.argv[2:]:
    globals()[name]()
    print(name, flush=True)
"""

_lock = threading.Lock()
_job = None        # the running warm-up process (subprocess.Popen), until waited for
_ready = {}        # kernel name -> threading.Event, set once the warm-up saved it (or ended)
_tried = False     # a warm-up was started, or is of no use in this process (off, or the kernels are warm)


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


def _needed(model):
    """[(module, kernel name)] of the kernels to compile in the warm-up for ``model``, in the order
    they are compiled: the 2x2 max pooling's forward and fused backward if a MaxPooling2D has 2x2
    windows with stride 2, the weight gradient if it has a convolution (Conv1D, Conv2D or a
    transposed one)."""
    from autoenc.kernels import conv_weight_grad, pooling
    from autoenc.kernels.conv_transpose import Conv2DTransposeKernels
    from autoenc.kernels.convolution import Conv2DKernels
    kernels = [getattr(layer, "_kernels", None) for layer in model.flat_layers()]
    out = []
    if any(isinstance(k, pooling.MaxPool2DKernels) and k.pool_size == (2, 2) and k.strides == (2, 2)
           for k in kernels):
        out += [(pooling, "_maxpool2x2_forward_samples"), (pooling, "_maxpool2d_backward_relu_dz_chunks")]
    if any(isinstance(k, (Conv2DKernels, Conv2DTransposeKernels)) for k in kernels):
        out.append((conv_weight_grad, "_dw_chunks"))
    return out


def start(model):
    """Start the warm-up process for ``model``'s first training step, at most once per process, if the
    model's dtype is float32 or float64 and some kernel of :func:`_needed` is cold (see :func:`_cold`);
    it compiles those. Returns True if it started one."""
    global _job, _tried
    if _tried:
        return False
    with _lock:
        if _tried:
            return False
        if not enabled():
            _tried = True
            return False
        needed = _needed(model) if str(getattr(model, "dtype", "")) in ("float32", "float64") else []
        if not needed:
            return False            # this model needs none of the kernels; a later one may
        _tried = True
        cold = [(module, name) for module, name in needed if _cold(getattr(module, name))]
        if not cold:
            return False
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder holding autoenc
        env = {**os.environ, "AUTOENC_WARMUP": "off",
               "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        try:
            job = subprocess.Popen([sys.executable, "-c", CHILD, str(model.dtype)] + [n for _, n in cold],
                                   env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return False
        _job = job
        _ready.clear()
        _ready.update((name, threading.Event()) for _, name in cold)
        threading.Thread(target=_listen, args=(job, dict(_ready)), daemon=True, name="autoenc-warmup").start()
        for module, _ in cold:
            module.before_first_call = wait
        return True


def _listen(job, ready):
    """Set each kernel's event as the warm-up names it, and every event once it has ended (a kernel
    it did not save then compiles in this process)."""
    try:
        for line in job.stdout:
            event = ready.get(line.strip())
            if event is not None:
                event.set()
    finally:
        for event in ready.values():
            event.set()


def wait(name=None, timeout=600):
    """Wait until the warm-up process has saved the kernel ``name`` (every kernel, when None), if one
    runs (called before the first call of each kernel it compiles): Numba then loads it from the
    cache. A failed or slow warm-up costs nothing more than the wait: the kernel then compiles here,
    as without it. Once every kernel is saved the process is reaped and the hooks are taken off."""
    event = _ready.get(name)
    if event is not None:
        event.wait(timeout)
    elif name is not None:
        return
    if name is None or all(e.is_set() for e in _ready.values()):
        _finish(timeout)


def _finish(timeout):
    global _job
    from autoenc.kernels import conv_weight_grad, pooling
    conv_weight_grad.before_first_call = pooling.before_first_call = None
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
    _ready.clear()


atexit.register(_stop)
os.register_at_fork(after_in_child=_forget)   # the warm-up is the parent's child, not ours
