"""autoenc.backend: the Keras 2 backend idioms of autoencoder tutorials."""
import numpy as np
import pytest

import autoenc
from autoenc import backend as K
from autoenc import layers


def test_int_shape_of_tensors_and_arrays():
    x = autoenc.Input((28, 28, 1))
    h = layers.MaxPooling2D(2)(layers.Conv2D(16, 3, padding="same")(x))
    assert K.int_shape(x) == (None, 28, 28, 1)
    assert K.int_shape(h) == (None, 14, 14, 16)
    assert autoenc.backend.int_shape(np.zeros((2, 3), np.float32)) == (2, 3)
    assert all(type(d) is int for d in K.int_shape(np.zeros((2, 3)))[0:])
    with pytest.raises(TypeError, match="int_shape expects"):
        K.int_shape([1, 2])


def test_the_tutorial_idiom_rebuilds_the_decoder_shape():
    """The 2016 blog post / VAE pattern: remember the shape before Flatten to Reshape back to it."""
    inputs = autoenc.Input((8, 8, 1))
    h = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    shape_before_flattening = K.int_shape(h)[1:]
    z = layers.Dense(3)(layers.Flatten()(h))
    back = layers.Reshape(shape_before_flattening)(layers.Dense(int(np.prod(shape_before_flattening)))(z))
    assert K.int_shape(back) == (None, 4, 4, 4)


def test_clear_session_restarts_layer_names():
    K.clear_session()
    assert layers.Dense(2).name == "dense"
    assert layers.Dense(2).name == "dense_1"
    K.clear_session()
    assert layers.Dense(2).name == "dense"


def test_constants_and_refusals():
    assert K.floatx() == "float32" and K.epsilon() == 1e-7 and K.image_data_format() == "channels_last"
    assert K.backend() == "autoenc"
    K.set_floatx("float32")
    K.set_image_data_format("channels_last")
    with pytest.raises(ValueError, match="dtype='float64'"):
        K.set_floatx("float64")
    with pytest.raises(ValueError, match="channels_last"):
        K.set_image_data_format("channels_first")
    assert K.count_params(np.zeros((3, 4))) == 12
