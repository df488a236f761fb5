"""Every kernel also runs as plain Python, with NUMBA_DISABLE_JIT=1: the code a learner steps through in a
debugger (docs/debugging.md) is the code that runs. One subprocess (the variable is read when Numba is
first imported) runs tiny cases of every kernel against its naive oracle, float64 gradient checks of each
layer, and training steps of a small model; it takes a few seconds.

The fast no-JIT CI subset (about 25 s):
    NUMBA_DISABLE_JIT=1 python -m pytest -q tests/test_nojit.py tests/test_gradcheck.py tests/test_kernels.py tests/test_layers.py
"""
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import inspect
    import numba
    import numpy as np

    import autoenc
    from autoenc import layers, optimizers
    from autoenc import kernels as C
    from autoenc.kernels import pooling as P, upsampling as U

    assert numba.config.DISABLE_JIT, "NUMBA_DISABLE_JIT was not seen"
    assert inspect.isfunction(C.conv2d_forward) and inspect.isfunction(P.maxpool2d_forward), \\
        "kernels should be plain Python functions without the JIT"
    rng = np.random.default_rng(0)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    # convolution: forward, input, kernel and bias gradients, through the layer, against the oracles
    for strides, padding in [((1, 1), "same"), ((2, 1), "same"), ((2, 2), "valid")]:
        x = rng.standard_normal((2, 6, 5, 3))
        conv = layers.Conv2D(9, (3, 2), strides=strides, padding=padding, dtype="float64")
        y = conv(x)
        w, b = conv.params["kernel"], conv.params["bias"]
        close(y, C.conv2d_forward_naive(x, w, b, strides, padding))
        dy = rng.standard_normal(y.shape)
        dx = conv.backward(dy)
        close(dx, C.conv2d_backward_input_naive(dy, w, x.shape, strides, padding))
        close(conv.grads["kernel"], C.conv2d_backward_kernel_naive(x, dy, (3, 2), strides, padding))
        close(conv.grads["bias"], C.conv2d_backward_bias_naive(dy))
        print("conv2d", strides, padding, "ok")

    # the wide paths: 16-channel forward blocks where vectors hold 16 float32 (patch rows of 33),
    # and the input gradient's forward pass with 17 -> 11 channels
    x = rng.standard_normal((1, 4, 9, 11))
    conv = layers.Conv2D(17, (2, 3), padding="same", dtype="float64")
    y = conv(x)
    w, b = conv.params["kernel"], conv.params["bias"]
    close(y, C.conv2d_forward_naive(x, w, b, (1, 1), "same"))
    dy = rng.standard_normal(y.shape)
    close(conv.backward(dy), C.conv2d_backward_input_naive(dy, w, x.shape, (1, 1), "same"))
    close(conv.grads["kernel"], C.conv2d_backward_kernel_naive(x, dy, (2, 3), (1, 1), "same"))
    print("conv2d wide ok")

    # the weight gradient's groups of 9 patch elements x 32 channels (AVX-512; kernel rows of 9 numbers),
    # 32 + 1 channels
    x, dy = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((2, 5, 4, 33))
    xp = np.zeros((2, 7, 6, 3))
    xp[:, 1:6, 1:5] = x
    dw = np.empty((3, 3, 3, 33))
    C.conv2d_backward_kernel(xp, dy, 1, 1, dw)
    close(dw, C.conv2d_backward_kernel_naive(x, dy, (3, 3), (1, 1), "same"))
    print("conv2d weight gradient wide ok")

    x = rng.standard_normal((2, 5, 7, 2))
    pool = layers.MaxPooling2D((2, 2), padding="same", dtype="float64")
    y = pool(x)
    y_ref, argmax = P.maxpool2d_forward_naive(x, (2, 2), (2, 2), "same")
    close(y, y_ref)
    dy = rng.standard_normal(y.shape)
    close(pool.backward(dy), P.maxpool2d_backward_naive(dy, argmax, x.shape))
    up = layers.UpSampling2D((2, 3), dtype="float64")
    y = up(x)
    close(y, U.upsample2d_forward_naive(x, (2, 3)))
    dy = rng.standard_normal(y.shape)
    close(up.backward(dy), U.upsample2d_backward_naive(dy, (2, 3)))
    print("pooling, upsampling ok")

    # Adam's kernel, against its formula
    w, g = rng.standard_normal(5), rng.standard_normal(5)
    m, v = np.zeros(5), np.zeros(5)
    optimizers.adam_update(w, g, m, v, 0.1, 0.1, 0.001, 1e-7)
    close(m, 0.1 * g)
    close(v, 0.001 * g * g)
    print("adam ok")

    # gradient checks, float64 central differences, through the plain-Python kernels
    for layer in [layers.Conv2D(2, 3, strides=2, padding="same", activation="relu"), layers.MaxPooling2D(),
                  layers.UpSampling2D()]:
        errors = autoenc.gradcheck(layer, rng.standard_normal((1, 4, 4, 2)), max_checks=12)
        assert max(errors.values()) < 1e-6, errors
    print("gradcheck ok")

    # a small autoencoder: two training steps and a prediction
    inp = layers.Input(shape=(8, 8, 1))
    h = layers.Conv2D(4, 3, activation="relu", padding="same")(inp)
    h = layers.MaxPooling2D(padding="same")(h)
    h = layers.UpSampling2D()(h)
    out = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(h)
    model = autoenc.Model(inp, out)
    model.compile("adam", "binary_crossentropy")
    x = rng.random((4, 8, 8, 1)).astype(np.float32)
    losses = [model.train_on_batch(x, x) for _ in range(2)]
    assert all(np.isfinite(losses)), losses
    assert model.predict(x, verbose=0).shape == x.shape
    print("train step ok", losses)

    # the reference path (the *_naive kernels) runs without the JIT too, training included
    y_fast = model.predict(x, verbose=0)
    with autoenc.reference_kernels():
        y_ref = model.predict(x, verbose=0)
        loss = model.train_on_batch(x, x)
    # float32 sums of K terms differ by at most (K + 2) eps of the terms' size: conv 1 (K = 9, |x| < 1,
    # |w| < 0.37) by 1.5e-5, conv 2 (K = 36, inputs < 3.3) by 1.8e-4 plus the first error carried
    # (36 x 0.37 x 1.5e-5 = 2e-4); the sigmoid divides by 4: below 1e-4
    assert np.abs(y_fast - y_ref).max() < 1e-4 and np.isfinite(loss), (np.abs(y_fast - y_ref).max(), loss)
    print("reference path ok")
''')


def test_everything_runs_without_the_jit():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train step ok" in result.stdout and "reference path ok" in result.stdout
    assert "conv2d weight gradient wide ok" in result.stdout
