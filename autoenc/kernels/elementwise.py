"""Elementwise activation kernels, fused so that no temporary array is made.

    relu:    dz = dy * (y > 0)
    sigmoid: y = 1 / (1 + e^-z) (as e^z / (1 + e^z) for z < 0, so neither form overflows);
             dz = dy * y * (1 - y)

Arrays of one shape, any layout NumPy iterates with ``.flat``; the kernels walk them as 1-D views.
"""
import numba
import numpy as np


@numba.njit(cache=True)
def relu_backward(dy, y, dz):
    """dz = dy where y > 0, else 0. dy, y, dz: C-contiguous, one shape; dz overwritten."""
    a, b, out = dy.reshape(dy.size), y.reshape(y.size), dz.reshape(dz.size)
    for k in range(out.size):
        out[k] = a[k] if b[k] > 0 else 0


@numba.njit(cache=True)
def sigmoid_forward(z, y):
    """y = 1 / (1 + e^-z). z, y: C-contiguous, one shape; y overwritten."""
    a, out = z.reshape(z.size), y.reshape(y.size)
    for k in range(out.size):
        e = np.exp(-abs(a[k]))
        s = 1 / (1 + e)
        out[k] = s if a[k] >= 0 else e * s


@numba.njit(cache=True)
def sigmoid_backward(dy, y, dz):
    """dz = dy * y * (1 - y). dy, y, dz: C-contiguous, one shape; dz overwritten."""
    a, b, out = dy.reshape(dy.size), y.reshape(y.size), dz.reshape(dz.size)
    for k in range(out.size):
        out[k] = a[k] * (b[k] * (1 - b[k]))
