"""Work arrays kept between calls, so that a training step allocates no batch-sized array."""
import math

import numpy as np


# NumPy's own arrays start 16 bytes into a cache line here: every 64-byte vector load of a 16-channel
# pixel then spans two lines (the one-channel output convolution took 1.3x as long)
ALIGN = 64


def aligned(shape, dtype, zeros=False):
    """A new C-contiguous array of ``shape`` and ``dtype`` (zero-filled if ``zeros``, else
    uninitialised) whose data starts at a multiple of ALIGN bytes: a cache line."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    buf = (np.zeros if zeros else np.empty)(n + ALIGN, np.uint8)
    k = -buf.ctypes.data % ALIGN
    return buf[k:k + n].view(dtype).reshape(shape)


class Workspace:
    """Named work arrays of one layer: ``array(key, shape, dtype)`` returns the same array on every
    call until the shape or dtype changes. Calls that run at the same time (several threads on one
    model) each need their own Workspace."""

    def __init__(self):
        self._arrays = {}

    def array(self, key, shape, dtype, zeros=False):
        """The work array ``key`` of ``shape`` and ``dtype``, new (zero-filled if ``zeros``, else
        uninitialised, and starting on a cache line: :func:`aligned`) when the shape or dtype changed,
        else as the previous call left it. A zero halo stays zero: the kernels write only inside it."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        a = self._arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = aligned(shape, dtype, zeros)
            self._arrays[key] = a
        return a

    def clear(self):
        """Drop every array (they are made again on the next call)."""
        self._arrays.clear()
