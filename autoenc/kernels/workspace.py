"""Work arrays kept between calls, so that a training step allocates no batch-sized array."""
import numpy as np


class Workspace:
    """Named work arrays of one layer: ``array(key, shape, dtype)`` returns the same array on every
    call until the shape or dtype changes. Calls that run at the same time (several threads on one
    model) each need their own Workspace."""

    def __init__(self):
        self._arrays = {}

    def array(self, key, shape, dtype, zeros=False):
        """The work array ``key`` of ``shape`` and ``dtype``, new (zero-filled if ``zeros``, else
        uninitialised) when the shape or dtype changed, else as the previous call left it. A zero
        halo stays zero: the kernels write only inside it."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        a = self._arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.zeros(shape, dtype) if zeros else np.empty(shape, dtype)
            self._arrays[key] = a
        return a

    def clear(self):
        """Drop every array (they are made again on the next call)."""
        self._arrays.clear()
