"""Watch backpropagation: one training step of the seed autoencoder, layer by layer.

Prints, for every layer, the shape of its output in the forward pass, the shapes of the gradient it
receives (dy) and returns (dx) in the backward pass, and the norm of each parameter's gradient; then
checks those gradients against central differences with autoenc.gradcheck (float64, a small batch).
docs/training_step.md explains every line.

Run: python examples/watch_backprop.py [--batch-size 256] [--check-batch 1]
"""
import argparse

import numpy as np

import autoenc

TOL = 1e-5


def digit_like_images(n, seed=0, size=28):
    """Soft bright strokes on black in [0, 1], shaped like MNIST (no download needed)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), np.float32)
    for k in range(n):
        for _ in range(g.integers(1, 4)):
            cy, cx = g.uniform(6, size - 6, 2)
            angle, length = g.uniform(0, np.pi), g.uniform(3, 8)
            t = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            d2 = (yy - cy - t * np.sin(angle)) ** 2 + (xx - cx - t * np.cos(angle)) ** 2
            out[k, :, :, 0] += np.exp(-d2 / 2.0) * (np.abs(t) < length)
    return np.clip(out, 0, 1)


def record_backward_shapes(model):
    """Wrap every layer's backward to record the shapes of dy in and dx out. Returns the record."""
    seen = {}
    for layer in model.layers[1:]:
        def wrapped(dy, *args, _layer=layer, _backward=layer.backward, **kwargs):
            dx = _backward(dy, *args, **kwargs)
            # a first layer skips dx in training: nothing upstream needs it
            seen[_layer.name] = (dy.shape, None if dx is None else dx.shape)
            return dx
        layer.backward = wrapped  # an instance attribute, shadowing the method
    return seen


def stop_recording(model):
    for layer in model.layers[1:]:
        del layer.backward


def shape(s):
    return "(" + ", ".join(map(str, s)) + ")"


def main(batch_size=256, check_batch=1, loss="mean_squared_error", max_checks=8):
    autoenc.set_random_seed(0)
    model = autoenc.models.seed_autoencoder()
    model.compile(optimizer="adam", loss=loss)
    x = digit_like_images(batch_size)

    backward_shapes = record_backward_shapes(model)
    loss_value = model.train_on_batch(x, x)  # forward, loss, backward, Adam: one step
    stop_recording(model)

    print(f"One training step of the seed model: batch {batch_size}, loss {loss!r} = {loss_value:.5f}\n")
    print(f"{'layer':<17}{'forward: output':<22}{'backward: dy -> dx':<46}gradient norms")
    print(f"{'input':<17}{shape(x.shape):<22}")
    for node in model.nodes:
        layer = node.layer
        out = model.layer_output(layer)
        dy, dx = backward_shapes[layer.name]
        norms = "  ".join(f"{k} {np.linalg.norm(g):.2e}" for k, g in layer.grads.items())
        dx = "(not needed)" if dx is None else shape(dx)
        print(f"{layer.name:<17}{shape(out.shape):<22}{shape(dy) + ' -> ' + dx:<46}{norms}")
    print("\nBackward runs bottom to top: each layer's dx is the dy of the layer above it in this table.")
    first, last = model.layers[1], model.layers[-1]
    ratio = np.linalg.norm(last.grads["kernel"]) / np.linalg.norm(first.grads["kernel"])
    print(f"The output layer's kernel gradient is {ratio:.0f}x the first layer's: gradients shrink on the "
          "way down (Adam rescales each weight's step, so the first layers still learn).")

    # The gradients of this step, checked: same model, float64 copy, central differences.
    # The check needs a point where the loss is differentiable. On a flat black background every pixel
    # of a window gives the same conv output, so max pooling has exact ties, and nudging one input pixel
    # picks a different winner: central differences then disagree with the (valid) subgradient that
    # backward uses. A little noise removes the ties. And a bias nudged by eps moves all 12,544 ReLU
    # inputs of its channel at once: with eps = 1e-7 it is unlikely that one of them crosses 0, where the
    # slope jumps. The price is rounding: 1e-16 / eps on a loss of gradients this small (they carry the
    # 1/m of the mean) gives relative errors up to a few 1e-6, hence TOL = 1e-5. A wrong backward pass
    # gives 1e-2 or more (tests/test_gradcheck.py breaks one on purpose).
    xc = x[:check_batch] + 0.1 * np.random.default_rng(1).random(x[:check_batch].shape, dtype=np.float32)
    print(f"\ngradcheck (float64 copy, batch {check_batch}): relative error per tensor, < {TOL:g} means correct")
    errors = autoenc.gradcheck(model, xc, xc, eps=1e-7, max_checks=max_checks)
    for key, err in errors.items():
        print(f"  {key:<20} {err:.1e}  {'ok' if err < TOL else 'WRONG'}")
    worst = max(errors.values())
    assert worst < TOL, errors
    print(f"all {len(errors)} gradients agree with central differences (worst {worst:.1e})")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--check-batch", type=int, default=1)
    parser.add_argument("--loss", default="mean_squared_error", choices=["mean_squared_error", "binary_crossentropy"])
    args = parser.parse_args()
    main(args.batch_size, args.check_batch, args.loss)
