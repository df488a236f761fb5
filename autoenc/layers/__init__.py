"""Layers with Keras' names, arguments and defaults."""
from autoenc.layers.activations import ELU, LeakyReLU, PReLU, ReLU, Softmax
from autoenc.layers.avgpool import AveragePooling2D
from autoenc.layers.base import Input, InputLayer, KerasTensor, Layer
from autoenc.layers.conv1d import Conv1D, Conv1DTranspose
from autoenc.layers.convolution import Conv2D
from autoenc.layers.convolution_transpose import Conv2DTranspose
from autoenc.layers.core import Activation, Dense
from autoenc.layers.dropout import Dropout
from autoenc.layers.merging import Add, Concatenate
from autoenc.layers.normalization import BatchNormalization
from autoenc.layers.padding import Cropping2D, ZeroPadding2D
from autoenc.layers.pooling import MaxPooling2D
from autoenc.layers.resampling1d import MaxPooling1D, UpSampling1D
from autoenc.layers.sampling import Sampling
from autoenc.layers.reshaping import Flatten, Reshape
from autoenc.layers.upsampling import UpSampling2D

# Keras' aliases
Convolution1D = Conv1D
Convolution1DTranspose = Conv1DTranspose
Convolution2D = Conv2D
Convolution2DTranspose = Conv2DTranspose
MaxPool1D = MaxPooling1D
MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D

__all__ = ["Layer", "Input", "InputLayer", "KerasTensor", "Conv2D", "Convolution2D", "MaxPooling2D",
           "MaxPool2D", "UpSampling2D", "Dense", "Activation", "Flatten", "Reshape", "Dropout", "Add",
           "Concatenate", "LeakyReLU", "PReLU", "ELU", "ReLU", "Softmax", "BatchNormalization", "ZeroPadding2D",
           "Cropping2D", "AveragePooling2D", "AvgPool2D", "Conv2DTranspose", "Convolution2DTranspose",
           "Conv1D", "Convolution1D", "Conv1DTranspose", "Convolution1DTranspose", "MaxPooling1D", "MaxPool1D",
           "UpSampling1D", "Sampling"]
