"""autoenc: a from-scratch convolutional autoencoder library with a Keras-style API.

Layers are NumPy classes whose hot loops are Numba kernels (``autoenc.kernels``); models, losses,
optimizers and callbacks follow Keras' names, so ``keras`` can be replaced by ``autoenc`` in imports.
``autoenc.set_reference_kernels(True)`` (or ``with autoenc.reference_kernels(): ...``) runs every layer
through the slow, obvious NumPy versions of its kernels instead, to read, debug and compare.
"""
__version__ = "0.1.0"

from autoenc import (activations, backend, callbacks, datasets, initializers, kernels, layers, losses, metrics, models,
                     optimizers, regularizers, utils)
from autoenc.layers import Input
from autoenc.gradcheck import adjoint_check, gradcheck
from autoenc.kernels.config import reference_kernels, set_reference_kernels
from autoenc.models import Model, Sequential
from autoenc.models.training import GradientTape  # noqa: F401  (refuses, saying how to write a train_step)
from autoenc.utils import set_random_seed

__all__ = ["Input", "Model", "Sequential", "set_random_seed", "activations", "backend", "callbacks", "datasets",
           "initializers", "kernels", "layers", "losses", "metrics", "models", "optimizers", "regularizers", "utils",
           "__version__", "adjoint_check", "gradcheck", "reference_kernels", "set_reference_kernels"]
