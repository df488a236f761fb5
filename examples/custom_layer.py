"""Writing your own layer: a learned per-channel scale and shift, checked by gradcheck.

    y[n, r, q, c] = x[n, r, q, c] * gamma[c] + beta[c]

The whole recipe (docs/custom_layer.md derives the backward pass):
  1. subclass autoenc.layers.Layer and pass **kwargs (name=, dtype=, ...) to super().__init__;
  2. build(input_shape): create parameters with self.add_weight(name, shape, initializer);
  3. compute_output_shape(input_shape): the output shape, batch entry included (None when symbolic);
  4. forward(x, training): compute y, and keep in self._something only what backward needs;
  5. backward(dy): fill self.grads[name][...] IN PLACE and return dx = dL/dx, a new array;
  6. check it: autoenc.gradcheck(layer, x) in float64, every error below 1e-6.

Run: python examples/custom_layer.py
"""
import numpy as np

import autoenc
from autoenc import initializers
from autoenc.layers import Conv2D, Input, Layer
from autoenc.models import Model


class Scale(Layer):
    """y = x * gamma + beta over the last (channel) axis. gamma, beta: (channels,).

    Input (batch, ..., channels); output the same shape.
    """

    def __init__(self, gamma_initializer="ones", beta_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)

    def build(self, input_shape):
        c = input_shape[-1]
        # Parameters live in self.params only: always read them as self.params["gamma"], because
        # fit() replaces the arrays in params with views into one flat buffer.
        self.add_weight("gamma", (c,), self.gamma_initializer)
        self.add_weight("beta", (c,), self.beta_initializer)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, training=False):
        self._x = x  # dL/dgamma needs x
        return x * self.params["gamma"] + self.params["beta"]

    def backward(self, dy):
        # y[..., c] = x[..., c] * gamma[c] + beta[c], so by the chain rule:
        #   dgamma[c] = sum over every other index of dy[..., c] * x[..., c]
        #   dbeta[c]  = sum over every other index of dy[..., c]
        #   dx[..., c] = dy[..., c] * gamma[c]
        axes = tuple(range(dy.ndim - 1))
        self.grads["gamma"][...] = np.sum(dy * self._x, axis=axes)  # [...]: fill in place
        self.grads["beta"][...] = np.sum(dy, axis=axes)
        return dy * self.params["gamma"]  # a new array: never write into dy

    def get_config(self):
        return {**super().get_config(), "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "beta_initializer": initializers.serialize(self.beta_initializer)}


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 3))

    # 1. The layer alone: every error should be ~1e-10, far below 1e-6.
    scale = Scale(gamma_initializer="random_normal", beta_initializer="random_normal")
    errors = autoenc.gradcheck(scale, x)
    print("gradcheck(Scale):", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < 1e-6, errors
    # Scale is linear in x, so the dot-product test <J u, v> = <u, J^T v> holds to rounding.
    print(f"adjoint_check(Scale): {autoenc.adjoint_check(scale, x):.1e}")

    # 2. Inside a model, with a loss: gradcheck follows the gradient through every layer.
    inp = Input(shape=(8, 8, 1))
    h = Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = Scale()(h)
    out = Conv2D(1, 3, padding="same", activation="sigmoid")(h)
    model = Model(inp, out)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images = rng.random((4, 8, 8, 1)).astype(np.float32)
    errors = autoenc.gradcheck(model, images, images)
    worst = max(errors, key=errors.get)
    print(f"gradcheck(model): worst {worst} = {errors[worst]:.1e}")
    assert errors[worst] < 1e-6, errors

    # 3. And it trains like any built-in layer.
    first = model.train_on_batch(images, images)
    for _ in range(30):
        last = model.train_on_batch(images, images)
    print(f"loss {first:.4f} -> {last:.4f}; gamma = {np.round(model.layers[2].params['gamma'], 3)}")
    assert last < first


if __name__ == "__main__":
    main()
