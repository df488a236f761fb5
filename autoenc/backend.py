"""The few Keras 2 backend calls that autoencoder tutorials make, so ``from autoenc import backend as K`` works:

    shape_before_flattening = K.int_shape(x)[1:]     # e.g. (7, 7, 64), to rebuild the decoder
    K.clear_session()                                # fresh layer names between models

Backend *operations* (K.mean, K.square, K.random_normal in a Lambda layer) are not here: autoenc needs
each layer's derivative, so custom computations are written as layers (docs/custom_layer.md).
"""
import numpy as np

from autoenc.layers import base

_EPSILON = 1e-7


def int_shape(x):
    """The shape of a symbolic tensor (batch entry None) or of an array, as a tuple of ints and None."""
    if isinstance(x, base.KerasTensor):
        return tuple(x.shape)
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"int_shape expects a KerasTensor or an array, got {type(x).__name__}")
    return tuple(None if d is None else int(d) for d in shape)


def clear_session():
    """Reset the layer-name counters ('conv2d', 'conv2d_1', ... start again), as Keras does."""
    base.clear_session()


def floatx():
    """The default float type: 'float32' (layers also take dtype='float64')."""
    return "float32"


def set_floatx(value):
    """Only 'float32' is a global default in autoenc; pass dtype='float64' to layers for double precision."""
    if value != "float32":
        raise ValueError(f"autoenc's default float type is 'float32' and cannot be changed, got {value!r}; "
                         "give layers dtype='float64' instead")


def epsilon():
    """The fuzz factor Keras uses in losses and optimizers: 1e-7."""
    return _EPSILON


def image_data_format():
    """'channels_last': autoenc's images are NHWC."""
    return "channels_last"


def set_image_data_format(data_format):
    if data_format != "channels_last":
        raise ValueError(f"autoenc supports data_format='channels_last' (NHWC) only, got {data_format!r}")


def backend():
    """The name of the backend: 'autoenc' (NumPy and Numba)."""
    return "autoenc"


def count_params(x):
    """The number of entries of an array or a weight."""
    return int(np.prod(int_shape(x), dtype=np.int64))
