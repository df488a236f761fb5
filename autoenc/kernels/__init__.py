"""Numba kernels: plain functions over NHWC arrays that fill preallocated outputs.

Each module holds one family of operations, the fast jitted kernels beside their slow, obvious
NumPy versions (suffix ``_naive``), which the tests use as oracles and learners read first.
Layers in :mod:`autoenc.layers` own the parameters and buffers and call these functions.
"""
from autoenc.kernels.convolution import (
    conv2d_backward_bias,
    conv2d_backward_input,
    conv2d_backward_kernel,
    conv2d_forward,
    conv_output_size,
    conv_padding,
    pad_into,
)
from autoenc.kernels.pooling import maxpool2d_backward, maxpool2d_forward
from autoenc.kernels.upsampling import upsample2d_backward, upsample2d_forward

__all__ = [
    "conv_output_size",
    "conv_padding",
    "pad_into",
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_kernel",
    "conv2d_backward_bias",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "upsample2d_forward",
    "upsample2d_backward",
]
