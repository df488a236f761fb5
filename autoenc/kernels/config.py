"""Settings shared by every kernel."""
import numba

# LLVM's SLP vectoriser packs the 8 scalar multiply-adds of the register-blocked loops (see
# convolution.py) into one vector instruction. Numba leaves it off by default; it is read when a
# function is compiled, so it must be set before the first kernel compiles (it is: every kernel
# module imports this one first). Cached kernels are reused as compiled.
numba.config.SLP_VECTORIZE = 1

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


def prange_only():
    """The njit ``parallel`` option for the kernels: their explicit prange loops run in threads, and
    nothing else is turned into parallel code (array expressions such as ``dw += part[k]`` or
    ``np.zeros(8)`` stay plain loops). Each implicit parallel loop would be one more function for
    Numba to compile. A new dict per call: Numba empties the one it is given."""
    return {"prange": True, "comprehension": False, "reduction": False, "inplace_binop": False,
            "setitem": False, "numpy": False, "stencil": False, "fusion": False}
