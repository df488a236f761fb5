"""Numba kernels: plain functions over NHWC arrays that fill preallocated outputs.

Each module holds one concept, the fast jitted kernels beside their slow, obvious NumPy versions
(suffix ``_naive``), which the tests use as oracles and learners read first:

    config.py            compiler options, the Numba cache, the reference switch
    padding.py           'valid'/'same' shape rules (convolution and pooling), copies into a zero halo
    blocks.py            register-block helpers (8-tuples) of the fast convolution kernels
    conv_forward.py      the convolution y = conv(x, w) + b
    conv_input_grad.py   its input gradient dx (also a transposed convolution's forward pass)
    conv_weight_grad.py  its kernel and bias gradients dw, db
    convolution.py       Conv2DKernels: what a Conv2D layer calls, fast or reference
    conv_transpose.py    Conv2DTransposeKernels: the adjoint of the convolution, from its three kernels
    pooling.py           max pooling, and MaxPool2DKernels
    upsampling.py        nearest-neighbour upsampling, and UpSample2DKernels
    upsample_conv.py     upsampling by 2 then a 3x3 convolution, as 2x2 convolutions of the small input
    elementwise.py       the sigmoid
    workspace.py         work arrays kept between calls

Layers in :mod:`autoenc.layers` own the parameters and call the ``*Kernels`` objects, which hold
the work arrays. ``autoenc.set_reference_kernels(True)`` sends every layer through the ``*_naive``
functions instead.
"""
from autoenc.kernels.config import reference_kernels, reference_kernels_enabled, set_reference_kernels
from autoenc.kernels.conv_forward import conv2d_forward, conv2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input, conv2d_backward_input_naive
from autoenc.kernels.conv_weight_grad import (conv2d_backward_bias, conv2d_backward_bias_naive, conv2d_backward_kernel,
                                              conv2d_backward_kernel_naive)
from autoenc.kernels.conv_transpose import Conv2DTransposeKernels
from autoenc.kernels.convolution import Conv2DKernels
from autoenc.kernels.padding import conv_output_size, conv_padding, conv_transpose_output_size, pad_into
from autoenc.kernels.pooling import (MaxPool2DKernels, maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                                     maxpool2d_forward_naive)
from autoenc.kernels.upsampling import (UpSample2DKernels, upsample2d_backward, upsample2d_backward_naive,
                                        upsample2d_forward, upsample2d_forward_naive)
from autoenc.kernels.workspace import Workspace

__all__ = [
    "conv_output_size",
    "conv_padding",
    "conv_transpose_output_size",
    "pad_into",
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_kernel",
    "conv2d_backward_bias",
    "maxpool2d_forward",
    "maxpool2d_backward",
    "upsample2d_forward",
    "upsample2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_input_naive",
    "conv2d_backward_kernel_naive",
    "conv2d_backward_bias_naive",
    "maxpool2d_forward_naive",
    "maxpool2d_backward_naive",
    "upsample2d_forward_naive",
    "upsample2d_backward_naive",
    "Conv2DKernels",
    "Conv2DTransposeKernels",
    "MaxPool2DKernels",
    "UpSample2DKernels",
    "Workspace",
    "set_reference_kernels",
    "reference_kernels",
    "reference_kernels_enabled",
]
