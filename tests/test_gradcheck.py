"""gradcheck and adjoint_check themselves: they pass correct backward passes (built-in layers, a
user's own layer, models) and, just as important, they catch wrong ones."""
import importlib.util
import pathlib

import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.layers import Conv2D, Input, Layer
from autoenc.models import Model, Sequential

TOL = 1e-6
ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Scale = load_example("custom_layer").Scale


class LeakyReLU(Layer):
    """y = x if x > 0 else alpha x; the second custom layer of docs/custom_layer.md."""

    def __init__(self, alpha=0.3, wrong=False, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.wrong = alpha, wrong

    def forward(self, x, training=False):
        self._positive = x > 0
        return np.where(self._positive, x, self.alpha * x)

    def backward(self, dy):
        if self.wrong:  # a classic slip: the slope of the negative side forgotten
            return np.where(self._positive, dy, 0.0)
        return np.where(self._positive, dy, self.alpha * dy)


class WrongScale(Scale):
    """Scale with a deliberately wrong dgamma: the sum of dy, not of dy * x."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["gamma"][...] = np.sum(dy, axis=tuple(range(dy.ndim - 1)))
        return dx


def test_top_level_names():
    from autoenc.gradcheck import adjoint_check, gradcheck
    assert autoenc.gradcheck is gradcheck and autoenc.adjoint_check is adjoint_check
    assert {"gradcheck", "adjoint_check"} <= set(autoenc.__all__)


@pytest.mark.parametrize("make", [lambda: layers.Conv2D(2, 3, strides=2, padding="same", activation="tanh"),
                                  lambda: layers.MaxPooling2D(padding="same"),
                                  lambda: layers.UpSampling2D((2, 3)),
                                  lambda: layers.Dense(3, activation="sigmoid")])
def test_builtin_layers_pass(rng, make):
    errors = autoenc.gradcheck(make(), rng.standard_normal((2, 5, 5, 2)))
    assert errors and max(errors.values()) < TOL, errors


def test_custom_layer_passes_and_is_left_untouched(rng):
    layer = Scale(gamma_initializer="random_normal", beta_initializer="random_normal")
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    errors = autoenc.gradcheck(layer, x)
    assert set(errors) == {"input", f"{layer.name}/gamma", f"{layer.name}/beta"}
    assert max(errors.values()) < TOL, errors
    assert layer.params["gamma"].dtype == np.float32  # checked on a float64 copy
    assert autoenc.adjoint_check(layer, x) < 1e-8
    assert autoenc.gradcheck(LeakyReLU(0.2), rng.standard_normal((3, 7)))["input"] < TOL


def test_wrong_backward_is_detected(rng):
    x = rng.standard_normal((2, 4, 4, 3))
    errors = autoenc.gradcheck(WrongScale(gamma_initializer="random_normal"), x)
    assert errors[next(k for k in errors if k.endswith("/gamma"))] > 1e-2, errors
    assert errors["input"] < TOL and errors[next(k for k in errors if k.endswith("/beta"))] < TOL
    assert autoenc.gradcheck(LeakyReLU(0.2, wrong=True), x)["input"] > 1e-2
    # the adjoint test catches a wrong linear backward too
    assert autoenc.adjoint_check(LeakyReLU(0.2, wrong=True), np.abs(x) * -1) > 0.5


def test_wrong_backward_in_a_model_is_detected(rng):
    autoenc.set_random_seed(0)
    inp = Input(shape=(6, 6, 1))
    h = Conv2D(2, 3, padding="same")(inp)
    h = LeakyReLU(0.1, wrong=True)(h)
    out = Conv2D(1, 3, padding="same", activation="sigmoid")(h)
    model = Model(inp, out)
    model.compile("adam", "mse")
    x = rng.random((2, 6, 6, 1))
    errors = autoenc.gradcheck(model, x, x)
    # the error shows up below the broken layer (the first conv and the input), not above it
    first_conv = model.layers[1].name
    assert errors[f"{first_conv}/kernel"] > 1e-3 and errors["input"] > 1e-3, errors
    assert errors[f"{model.layers[3].name}/kernel"] < TOL, errors


def test_unbuilt_sequential_with_a_custom_layer(rng):
    model = Sequential([Scale(gamma_initializer="random_normal"), layers.Flatten(), layers.Dense(2)])
    errors = autoenc.gradcheck(model, rng.standard_normal((3, 2, 2, 2)))
    assert len(errors) == 5 and max(errors.values()) < TOL, errors


def test_stale_parameter_attribute_is_reported(rng):
    class Stale(Scale):
        def build(self, input_shape):
            super().build(input_shape)
            self.gamma = self.params["gamma"]  # goes stale once fit() moves params into its buffer

    with pytest.raises(ValueError, match=r"self\.params\['gamma'\]"):
        autoenc.gradcheck(Stale(), rng.standard_normal((2, 3)))


def test_rebound_gradient_is_reported(rng):
    class Rebinds(Scale):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["beta"] = np.sum(dy, axis=0)  # a new array: the optimizer would never see it
            return dx

    with pytest.raises(ValueError, match="in place"):
        autoenc.gradcheck(Rebinds(), rng.standard_normal((2, 3)))


def test_backward_that_writes_into_dy_does_not_fool_the_check(rng):
    class Mutates(Layer):
        def forward(self, x, training=False):
            return 2 * x

        def backward(self, dy):
            dy *= 2  # bad manners, but the gradient it returns is right
            return dy

    assert autoenc.gradcheck(Mutates(), rng.standard_normal((2, 3)))["input"] < TOL
