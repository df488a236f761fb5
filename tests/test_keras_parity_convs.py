"""Live numerical parity with Keras 3 (TensorFlow backend) of the transposed and 1-D convolutions:
Conv2DTranspose, Conv1D, Conv1DTranspose, MaxPooling1D, UpSampling1D, per layer (output, dL/dx,
dL/dkernel, dL/dbias at 1e-5, as tests/test_keras_parity.py) and in keras-io's denoising autoencoder
(Conv2D/MaxPooling2D encoder, Conv2DTranspose decoder), trained with Adam from Keras' weights.

Skipped, with the reason, where keras or tensorflow are not installed (``pip install autoenc[keras]``).
"""

import numpy as np
import pytest

from live_keras import import_keras

tf, keras = import_keras()

import autoenc  # noqa: E402
from autoenc.kernels.padding import conv_transpose_output_size  # noqa: E402

from parity_models import images, rel_err  # noqa: E402
from adam_parity import TOL_MOMENTS, adam_step_errors, copy_adam_state  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.usefixtures("keep_autoenc_random_state")]
TOL = 1e-5
ACTIVATIONS = ["linear", "relu", "sigmoid", "tanh"]



def assert_close(check, a, b, tol=TOL):
    err = rel_err(a, b)
    assert err <= tol, f"{check}: max|a-b|/max|b| = {err:.3g} > {tol}"


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_layer(check, klayer, alayer, x, seed=0):
    """Output, dL/dx and dL/dparams for a random upstream gradient dy, Keras (GradientTape) vs autoenc,
    through the fast kernels and through the reference (naive) path."""
    xk = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xk)
        yk = klayer(xk, training=False)
    dy = np.random.default_rng(seed).standard_normal(tuple(yk.shape)).astype(np.float32)
    grads = tape.gradient(yk, [xk] + list(klayer.trainable_weights), output_gradients=tf.constant(dy))
    alayer(x)  # build
    alayer.set_weights(klayer.get_weights())
    for reference in (False, True):
        with autoenc.reference_kernels(reference):
            ya = np.array(alayer.forward(np.ascontiguousarray(x)), copy=True)
            dxa = alayer.backward(dy)
        path = "reference path" if reference else "fast path"
        assert ya.shape == tuple(yk.shape), (check, ya.shape, yk.shape)
        assert_close(f"{check}, {path}: output", ya, yk.numpy())
        assert_close(f"{check}, {path}: input gradient", dxa, grads[0].numpy())
        assert len(alayer.grads) == len(grads) - 1
        for (pname, ga), gk in zip(alayer.grads.items(), grads[1:]):
            assert_close(f"{check}, {path}: {pname} gradient", ga, gk.numpy())


# --- Conv2DTranspose -----------------------------------------------------------------------------

T_CASES = [(k, s, p, op) for k in range(1, 6) for s in range(1, 4) for p in ("same", "valid")
           for op in [None] + list(range(s))]


@pytest.mark.parametrize("k,s,padding,output_padding", T_CASES)
def test_conv2d_transpose(k, s, padding, output_padding):
    """Kernels 1-5, strides 1-3, same/valid, output_padding None or 0..s-1, odd sizes (7 x 6 or 8 x 7).
    Where Keras' output-size rule gives no consistent shape, TensorFlow refuses and so must autoenc."""
    size = 7 + (k + s) % 2
    act = ACTIVATIONS[(k + s + size) % len(ACTIVATIONS)]
    keras.utils.set_random_seed(k * 100 + s * 10 + (output_padding or 0))
    kl = keras.layers.Conv2DTranspose(4, k, strides=s, padding=padding, output_padding=output_padding, activation=act,
                                      bias_initializer="random_normal")
    al = autoenc.layers.Conv2DTranspose(4, k, strides=s, padding=padding, output_padding=output_padding, activation=act)
    x = rand(2, size, size - 1, 3)
    try:
        for n in (size, size - 1):
            conv_transpose_output_size(n, k, s, padding, output_padding)
    except ValueError:
        with pytest.raises(Exception):
            kl(tf.constant(x))
        with pytest.raises(ValueError, match="output_padding"):
            al(x)
        return
    check_layer(f"Conv2DTranspose (k={k}, s={s}, {padding}, output_padding={output_padding})", kl, al, x)


@pytest.mark.parametrize("k,s,padding,op", [((2, 3), (3, 1), "same", (1, 0)), ((3, 1), (1, 2), "valid", None),
                                            ((4, 5), (2, 3), "valid", (1, 2))])
def test_conv2d_transpose_rectangular_and_many_channels(k, s, padding, op):
    keras.utils.set_random_seed(11)
    kl = keras.layers.Conv2DTranspose(17, k, strides=s, padding=padding, output_padding=op, activation="relu",
                                      bias_initializer="random_normal")
    al = autoenc.layers.Conv2DTranspose(17, k, strides=s, padding=padding, output_padding=op, activation="relu")
    check_layer(f"Conv2DTranspose (kernel {k}, strides {s}, {padding}, 17 filters, 9 channels)", kl, al,
                rand(3, 5, 6, 9, seed=2))


# --- 1-D layers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,padding", [(k, s, p) for k in (1, 3, 7) for s in (1, 2, 3)
                                         for p in ("same", "valid", "causal")])
def test_conv1d(k, s, padding):
    act = ACTIVATIONS[(k + s) % len(ACTIVATIONS)]
    keras.utils.set_random_seed(k * 10 + s)
    kl = keras.layers.Conv1D(5, k, strides=s, padding=padding, activation=act, bias_initializer="random_normal")
    al = autoenc.layers.Conv1D(5, k, strides=s, padding=padding, activation=act)
    check_layer(f"Conv1D (k={k}, s={s}, {padding})", kl, al, rand(2, 15, 3))


@pytest.mark.parametrize("k,s,padding,op", [(k, s, p, op) for k in (1, 3, 7) for s in (1, 2, 3)
                                            for p in ("same", "valid") for op in (None, s - 1)])
def test_conv1d_transpose(k, s, padding, op):
    act = ACTIVATIONS[(k + s + 1) % len(ACTIVATIONS)]
    keras.utils.set_random_seed(k * 10 + s)
    kl = keras.layers.Conv1DTranspose(5, k, strides=s, padding=padding, output_padding=op, activation=act,
                                      bias_initializer="random_normal")
    al = autoenc.layers.Conv1DTranspose(5, k, strides=s, padding=padding, output_padding=op, activation=act)
    x = rand(2, 11, 3)
    try:
        conv_transpose_output_size(11, k, s, padding, op)
    except ValueError:
        with pytest.raises(Exception):
            kl(tf.constant(x))
        return
    check_layer(f"Conv1DTranspose (k={k}, s={s}, {padding}, output_padding={op})", kl, al, x)


@pytest.mark.parametrize("pool,strides,padding", [(p, s, pad) for p in (1, 2, 3) for s in (None, 1, 2, 3)
                                                  for pad in ("same", "valid")])
def test_max_pooling1d(pool, strides, padding):
    check_layer(f"MaxPooling1D (pool {pool}, strides {strides}, {padding})",
                keras.layers.MaxPooling1D(pool, strides=strides, padding=padding),
                autoenc.layers.MaxPooling1D(pool, strides=strides, padding=padding), rand(2, 13, 3))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_upsampling1d(size):
    check_layer(f"UpSampling1D ({size})", keras.layers.UpSampling1D(size), autoenc.layers.UpSampling1D(size),
                rand(2, 7, 3))


# --- keras-io's denoising autoencoder ------------------------------------------------------------

def denoising_model(lib, dtype="float32"):
    """keras-io examples/vision/autoencoder.py: Conv2D(32)+MaxPooling2D twice, Conv2DTranspose(32,
    strides 2) twice, Conv2D(1, sigmoid); 28x28x1 -> 7x7x32 -> 28x28x1."""
    L = lib.layers
    inputs = lib.Input(shape=(28, 28, 1), dtype=dtype)
    x = L.Conv2D(32, (3, 3), activation="relu", padding="same", dtype=dtype)(inputs)
    x = L.MaxPooling2D((2, 2), padding="same", dtype=dtype)(x)
    x = L.Conv2D(32, (3, 3), activation="relu", padding="same", dtype=dtype)(x)
    x = L.MaxPooling2D((2, 2), padding="same", dtype=dtype)(x)
    x = L.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same", dtype=dtype)(x)
    x = L.Conv2DTranspose(32, (3, 3), strides=2, activation="relu", padding="same", dtype=dtype)(x)
    x = L.Conv2D(1, (3, 3), activation="sigmoid", padding="same", dtype=dtype)(x)
    return lib.Model(inputs, x)


STEPS, BATCH = 5, 8


def _pair(dtype="float32"):
    keras.utils.set_random_seed(0)
    km = denoising_model(keras, dtype)
    am = denoising_model(autoenc, dtype)
    am.set_weights(km.get_weights())
    for m, opt in ((km, keras.optimizers.Adam()), (am, autoenc.optimizers.Adam())):
        m.compile(optimizer=opt, loss="binary_crossentropy")
    return km, am


def _noisy_batches(dtype):
    clean = images(STEPS * BATCH, offset=100).astype(dtype)
    noisy = np.clip(clean + 0.4 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1).astype(dtype)
    return [(noisy[k * BATCH:(k + 1) * BATCH], clean[k * BATCH:(k + 1) * BATCH]) for k in range(STEPS)]


def test_denoising_model_shapes_and_parameters_as_keras():
    km, am = _pair()
    assert [tuple(layer.output.shape) for layer in km.layers[1:]] == [layer.output_shape for layer in am.layers[1:]]
    assert km.count_params() == am.count_params() == 28353


def test_denoising_model_every_step_float32():
    """5 Adam steps of keras-io's denoising autoencoder on noisy -> clean images, binary crossentropy
    (from the logits of the sigmoid, in both), each step taken from Keras' state (weights, Adam's m and v,
    the step count): the loss within 1e-5 (one forward pass, float32 rounding of sums of at most 288
    products per layer); the new moments within TOL_MOMENTS (a gross-error guard: at a ReLU or max-pool
    near-tie a gradient entry goes either way, see tests/test_keras_parity.py); and every updated weight
    within adam_step_bound, the bound the two frameworks' moments imply, which holds on any data."""
    km, am = _pair()
    for step, (xb, yb) in enumerate(_noisy_batches(np.float32)):
        w_before = km.get_weights()
        am.set_weights(w_before)
        if step:
            copy_adam_state(km, am)
        lk = float(km.train_on_batch(xb, yb))
        la = float(am.train_on_batch(xb, yb))
        assert_close(f"denoising model, step {step}: loss", la, lk)
        for row in adam_step_errors(w_before, am.get_weights(), km.get_weights(), am, km):
            assert row["m"] <= TOL_MOMENTS and row["v"] <= TOL_MOMENTS, (f"denoising model, step {step}: Adam's "
                                                                        f"moments", row)
            assert row["excess"] <= 1, (f"step {step}, weight {row['shape']}: |a-b| = {row['diff']:.3g} exceeds "
                                        f"the bound by {row['excess']:.3g}x")
    am.set_weights(km.get_weights())
    x = _noisy_batches(np.float32)[0][0]
    assert_close("denoising model: predictions", am.predict(x, verbose=0), km.predict(x, verbose=0))


def test_denoising_model_5_steps_float64():
    """5 free-running Adam steps in float64: every loss, every final weight and the predictions agree to
    1e-12 (each sum of at most 8*28*28 = 6272 products rounds at (K + 2) * 1.1e-16 = 7e-13 of its terms'
    size, and in float64 no ReLU or max-pool near-tie is within that of a decision), so the two frameworks
    compute the same function, gradient and update."""
    keras.config.set_floatx("float64")
    try:
        km, am = _pair("float64")
        for step, (xb, yb) in enumerate(_noisy_batches(np.float64)):
            lk, la = float(km.train_on_batch(xb, yb)), float(am.train_on_batch(xb, yb))
            assert_close(f"denoising model float64, step {step}: loss", la, lk, 1e-12)
        for wa, wk in zip(am.get_weights(), km.get_weights()):
            assert_close("denoising model float64, 5 steps: final weights", wa, wk, 1e-12)
        x = _noisy_batches(np.float64)[0][0]
        assert_close("denoising model float64: predictions", am.predict(x, verbose=0), km.predict(x, verbose=0), 1e-12)
    finally:
        keras.config.set_floatx("float32")


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_file_of_the_denoising_model(tmp_path, suffix):
    """A Keras file of the model loads into autoenc (.weights.h5: by layer name, both models named from
    fresh counters: conv2d, conv2d_1, conv2d_transpose, conv2d_transpose_1, conv2d_2; .keras: in
    config.json's order), kernels in Keras' (kh, kw, filters, cin) layout, and both predict the same."""
    pytest.importorskip("h5py", reason="reading Keras weight files needs h5py (pip install autoenc[h5])")
    keras.backend.clear_session()
    keras.utils.set_random_seed(5)
    km = denoising_model(keras)
    path = str(tmp_path / f"denoising{suffix}")
    km.save_weights(path) if suffix == ".weights.h5" else km.save(path)
    autoenc.backend.clear_session()
    am = denoising_model(autoenc)
    am.load_weights(path)
    for wa, wk in zip(am.get_weights(), km.get_weights()):
        np.testing.assert_array_equal(wa, wk)
    x = images(8, offset=700)
    assert_close(f"denoising model from a Keras {suffix} file: predictions", am.predict(x, verbose=0),
                 km.predict(x, verbose=0))
