"""BatchNormalization: kernels against their naive twins, gradient checks through the batch statistics,
adjoint tests, non-trainable weights (optimizer, get/set_weights, summary, saving), and live Keras parity
of the layer (forward, dx, dgamma, dbeta; training and inference) and of small models with BN after 5
Adam steps (every weight, the moving statistics included)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autoenc
from autoenc import layers
from autoenc.gradcheck import adjoint_check, gradcheck
from autoenc.kernels import normalization as K
from live_keras import import_keras

EPS32 = float(np.finfo(np.float32).eps)  # 1.2e-7
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TrainingBN(layers.BatchNormalization):
    """BatchNormalization that always runs in training mode (gradcheck and adjoint_check call
    forward(x, training=False)), so the checks go through the batch mean and variance."""

    def forward(self, x, training=False):
        return super().forward(x, training=True)


def _data(rng, shape, offset=0.5, scale=2.0):
    return rng.standard_normal(shape) * scale + offset


# --- kernels against the obvious versions -------------------------------------------------------

@st.composite
def rows_cases(draw):
    m, c = draw(st.integers(1, 200)), draw(st.integers(1, 9))
    offset = draw(st.sampled_from([0.0, 3.0, -100.0]))  # a large mean: the two-pass variance keeps it exact
    return m, c, offset, draw(st.integers(0, 2**31))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=rows_cases())
def test_kernels_match_naive(dtype, case):
    m, c, offset, seed = case
    g = np.random.default_rng(seed)
    x = (g.standard_normal((m, c)) * g.uniform(0.1, 3, c) + offset).astype(dtype)
    dy = g.standard_normal((m, c)).astype(dtype)
    part = np.full((K.n_chunks(m), c), np.nan)
    mean, var = np.full(c, np.nan), np.full(c, np.nan)
    K.channel_moments(x, part, mean, var)
    want_mean, want_var = K.channel_moments_naive(x)
    # both sum float64 copies of the same values (in another order): m * 1.1e-16 of the terms' size
    scale = np.abs(x).max(axis=0)
    np.testing.assert_allclose(mean, want_mean, rtol=0, atol=1e-13 * m * scale.max())
    np.testing.assert_allclose(var, want_var, rtol=0, atol=1e-13 * m * scale.max() ** 2)

    gamma, beta = g.uniform(0.5, 2, c), g.standard_normal(c)
    rstd = 1 / np.sqrt(want_var + 1e-3)
    inv, shift = (gamma * rstd).astype(dtype), (beta - want_mean * gamma * rstd).astype(dtype)
    y = np.full((m, c), np.nan, dtype)
    K.normalize_forward(x, inv, shift, y)
    # y = x * inv + shift in the array's precision: two roundings (or one, fused) of terms up to
    # |x * inv| + |shift|
    bound = np.abs(x * inv) + np.abs(shift)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(y - K.normalize_forward_naive(x, inv, shift)) <= 2 * eps * bound)

    sums = np.full(c, np.nan), np.full(c, np.nan)
    K.normalize_backward_sums(dy, x, want_mean, rstd, np.full((2, K.n_chunks(m), c), np.nan), *sums)
    want_sums = K.normalize_backward_sums_naive(dy, x, want_mean, rstd)
    xhat_max = (np.abs(x - want_mean) * rstd).max()
    for got, want in zip(sums, want_sums):  # float64 sums of m terms of size |dy| * |xhat|
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * m * np.abs(dy).max() * max(xhat_max, 1))

    dx = np.full((m, c), np.nan, dtype)
    K.normalize_backward_dx(dy, x, want_mean, rstd, gamma, *want_sums, dx)
    want = K.normalize_backward_dx_naive(dy, x, want_mean, rstd, gamma, *want_sums)
    # computed in float64, rounded once to dtype; terms up to gamma*rstd*(|dy| + mean|dy| + |xhat|*...)
    terms = gamma * rstd * (np.abs(dy) + np.abs(want_sums[0]) / m
                            + np.abs((x - want_mean) * rstd) * np.abs(want_sums[1]) / m)
    assert np.all(np.abs(dx - want) <= (eps + 1e-14) * terms * 4)


def test_moments_by_hand():
    x = np.array([[1.0, 10.0], [2.0, 10.0], [6.0, 13.0]], np.float32)
    mean, var = np.empty(2), np.empty(2)
    K.channel_moments(x, np.empty((K.n_chunks(3), 2)), mean, var)
    assert mean.tolist() == [3.0, 11.0]
    assert var.tolist() == [(4 + 1 + 9) / 3, (1 + 1 + 4) / 3]  # biased: divides by m = 3


def test_large_mean_variance_is_exact():
    """E[x^2] - E[x]^2 would lose every digit here (x^2 ~ 1e8 in float32); the two-pass variance keeps them."""
    x = (1e4 + np.array([[-1.0], [1.0]] * 50)).astype(np.float32)
    mean, var = np.empty(1), np.empty(1)
    K.channel_moments(x, np.empty((K.n_chunks(100), 1)), mean, var)
    assert mean[0] == 1e4 and var[0] == 1.0


_DETERMINISM_SCRIPT = r"""
import hashlib, sys
import numpy as np
sys.path.insert(0, {root!r})
from autoenc.kernels import normalization as K
rng = np.random.default_rng(1)
digest = hashlib.sha256()
for m, c in [(37 * 28 * 28, 16), (1000, 3), (7, 5)]:
    x = rng.standard_normal((m, c)).astype(np.float32) + 2
    dy = rng.standard_normal((m, c)).astype(np.float32)
    mean, var = np.empty(c), np.empty(c)
    K.channel_moments(x, np.empty((K.n_chunks(m), c)), mean, var)
    rstd = 1 / np.sqrt(var + 1e-3)
    s, t = np.empty(c), np.empty(c)
    K.normalize_backward_sums(dy, x, mean, rstd, np.empty((2, K.n_chunks(m), c)), s, t)
    dx = np.empty_like(x)
    K.normalize_backward_dx(dy, x, mean, rstd, np.ones(c), s, t, dx)
    for a in (mean, var, s, t, dx):
        digest.update(a.tobytes())
print(digest.hexdigest())
"""


def test_results_do_not_depend_on_thread_count():
    script = _DETERMINISM_SCRIPT.format(root=ROOT)
    digests = []
    for threads in ("1", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


# --- the layer: gradients ------------------------------------------------------------------------

SHAPES_AXES = [((6, 5), -1), ((3, 4, 5, 3), -1), ((3, 4, 5, 3), 1), ((2, 3, 4, 5), 2), ((5, 4), 1)]


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
def test_gradcheck_training_mode(rng, shape, axis, center, scale):
    """Through the batch mean and variance: L = sum(y * r) with a random r (a per-channel constant r
    would give dx = 0, as y sums to a constant per channel)."""
    layer = TrainingBN(axis=axis, center=center, scale=scale, gamma_initializer="random_uniform",
                       beta_initializer="random_normal")
    errors = gradcheck(layer, _data(rng, shape))
    assert set(errors) == {"input"} | {f"{layer.name}/{n}" for n, on in (("gamma", scale), ("beta", center)) if on}
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
def test_gradcheck_inference_mode(rng, shape, axis):
    layer = layers.BatchNormalization(axis=axis, gamma_initializer="random_uniform",
                                      moving_mean_initializer="random_normal",
                                      moving_variance_initializer=autoenc.initializers.Constant(2.5))
    errors = gradcheck(layer, _data(rng, shape))
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("shape, axis", SHAPES_AXES)
@pytest.mark.parametrize("training", [True, False])
def test_adjoint(rng, shape, axis, training):
    """<J u, v> = <u, J^T v>: J^T v is backward(v); J u a central difference (exact to O(h^2) = 1e-12
    for this smooth map, with rounding of eps/h = 2e-10 per term). The error is relative to |<J u, v>|,
    which the batch statistics' projection can make small against its terms: over 300 random gammas
    the median was 4e-10 but one in 300 passed 1e-7 (shape (5, 4), training). So gamma comes from a
    fixed seed, not from whatever state the tests before left."""
    autoenc.set_random_seed(7)
    cls = TrainingBN if training else layers.BatchNormalization
    assert adjoint_check(cls(axis=axis, gamma_initializer="random_uniform"), _data(rng, shape)) < 1e-7


def test_training_backward_by_hand():
    """Two samples, one channel, gamma = 1: xhat = -+1/sqrt(1 + eps/var), and dx sums to 0."""
    layer = layers.BatchNormalization()
    x = np.array([[1.0], [3.0]], np.float64)
    layer.dtype = np.dtype(np.float64)
    y = layer(x, training=True)
    rstd = 1 / np.sqrt(1.0 + 1e-3)
    np.testing.assert_allclose(y.ravel(), [-rstd, rstd], rtol=1e-6)
    dx = layer.backward(np.array([[1.0], [0.0]]))
    # dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)) = rstd * ([1, 0] - 0.5 - [-r, r] * (-r / 2))
    r = rstd
    np.testing.assert_allclose(dx.ravel(), r * (np.array([1.0, 0.0]) - 0.5 - np.array([-r, r]) * (-r / 2)), rtol=1e-6)
    assert abs(dx.sum()) < 1e-12
    np.testing.assert_allclose(layer.grads["beta"], [1.0])
    np.testing.assert_allclose(layer.grads["gamma"], [-rstd], rtol=1e-6)


# --- the layer: statistics, modes, weights -------------------------------------------------------

def test_moving_statistics_update_as_keras(rng):
    x = _data(rng, (4, 3, 3, 2)).astype(np.float32)
    layer = layers.BatchNormalization(momentum=0.9)
    layer(x)  # build; inference: no update
    assert layer.params["moving_mean"].tolist() == [0, 0] and layer.params["moving_variance"].tolist() == [1, 1]
    layer(x, training=True)
    m, v = x.reshape(-1, 2).mean(axis=0), x.reshape(-1, 2).var(axis=0)  # var: biased (ddof=0)
    np.testing.assert_allclose(layer.params["moving_mean"], 0 * 0.9 + m * (1 - 0.9), rtol=1e-6)
    np.testing.assert_allclose(layer.params["moving_variance"], 1 * 0.9 + v * (1 - 0.9), rtol=1e-6)


def test_training_uses_batch_inference_uses_moving_statistics(rng):
    x = _data(rng, (8, 3)).astype(np.float32)
    layer = layers.BatchNormalization(moving_mean_initializer=autoenc.initializers.Constant(0.25),
                                      moving_variance_initializer=autoenc.initializers.Constant(4.0))
    y_inf = layer(x)
    np.testing.assert_allclose(y_inf, (x - 0.25) / np.sqrt(4.0 + 1e-3), rtol=1e-6)
    y_train = layer(x, training=True)
    np.testing.assert_allclose(y_train, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-5, atol=1e-6)


def test_frozen_layer_runs_in_inference_mode(rng):
    """As Keras: trainable=False on BatchNormalization means inference mode, also in fit."""
    inp = layers.Input(shape=(4,))
    bn = layers.BatchNormalization(trainable=False)
    model = autoenc.Model(inp, layers.Dense(4)(bn(inp)))
    model.compile("adam", "mse")
    x = _data(rng, (16, 4)).astype(np.float32)
    before = bn.get_weights()
    model.fit(x, x, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(bn.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_non_trainable_weights(rng):
    inp = layers.Input(shape=(6, 6, 2))
    conv = layers.Conv2D(3, 3, padding="same")
    bn = layers.BatchNormalization()
    model = autoenc.Model(inp, layers.Conv2D(2, 1)(layers.Activation("relu")(bn(conv(inp)))))
    assert [w.shape for w in bn.get_weights()] == [(3,)] * 4        # gamma, beta, moving_mean, moving_variance
    assert list(bn.params) == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert list(bn.grads) == ["gamma", "beta"]                      # no gradient for the moving statistics
    assert bn.trainable_names == ["gamma", "beta"]
    assert [id(w) for w in bn.non_trainable_weights] == [id(bn.params["moving_mean"]), id(bn.params["moving_variance"])]
    assert len(model.weights) == 2 + 4 + 2 and len(model.trainable_weights) == 2 + 2 + 2
    assert len(model.non_trainable_weights) == 2
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    total = (3 * 3 * 2 * 3 + 3) + 4 * 3 + (3 * 2 + 2)
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total - 6:,}" in text and "Non-trainable params: 6 " in text
    # the optimizer's buffer holds exactly the trainable weights
    model.compile("adam", "mse")
    x = _data(rng, (4, 6, 6, 2)).astype(np.float32)
    model.train_on_batch(x, x)
    assert model._flat_params.size == total - 6
    assert all(bn.params[n].base is not model._flat_params for n in ("moving_mean", "moving_variance"))
    # the step moved the moving statistics by the batch's (as the layer computes them), not by Adam
    assert not np.allclose(bn.params["moving_mean"], 0)


def test_set_weights_in_keras_order(rng):
    bn = layers.BatchNormalization()
    bn(np.zeros((2, 3), np.float32))
    w = [rng.uniform(1, 2, 3).astype(np.float32) for _ in range(4)]
    bn.set_weights(w)
    for name, value in zip(["gamma", "beta", "moving_mean", "moving_variance"], w):
        np.testing.assert_array_equal(bn.params[name], value)
    with pytest.raises(ValueError, match="expects 4 weight arrays"):
        bn.set_weights(w[:2])


def _bn_autoencoder(lib, dtype="float32"):
    """Conv2D -> BN -> ReLU -> MaxPool -> Conv2D -> BN -> ReLU -> UpSampling -> Conv2D sigmoid.

    The convolutions that feed a BN have no bias, as usual: BN subtracts the batch mean, so such a bias
    has gradient exactly 0 in exact arithmetic; in float32 it gets rounding noise (~1e-10), which Adam
    turns into steps of lr * noise / (|noise| + epsilon) that differ between any two implementations."""
    L = lib.layers
    inp = lib.Input(shape=(8, 8, 2), dtype=dtype)
    x = L.Conv2D(4, 3, padding="same", use_bias=False, dtype=dtype)(inp)
    x = L.BatchNormalization(dtype=dtype)(x)
    x = L.Activation("relu", dtype=dtype)(x)
    x = L.MaxPooling2D(dtype=dtype)(x)
    x = L.Conv2D(3, 3, padding="same", use_bias=False, dtype=dtype)(x)
    x = L.BatchNormalization(momentum=0.9, dtype=dtype)(x)
    x = L.Activation("relu", dtype=dtype)(x)
    x = L.UpSampling2D(dtype=dtype)(x)
    out = L.Conv2D(2, 3, padding="same", activation="sigmoid", dtype=dtype)(x)
    return lib.Model(inp, out)


def _dense_bn(lib, dtype="float32"):
    """Dense (no bias, see _bn_autoencoder) -> BN (2-D input) -> ReLU -> Dense."""
    L = lib.layers
    inp = lib.Input(shape=(10,), dtype=dtype)
    x = L.BatchNormalization(momentum=0.8, dtype=dtype)(L.Dense(6, use_bias=False, dtype=dtype)(inp))
    return lib.Model(inp, L.Dense(10, dtype=dtype)(L.Activation("relu", dtype=dtype)(x)))


def _images(rng, n):
    return rng.uniform(0, 1, (n, 8, 8, 2)).astype(np.float32)


def test_gradcheck_model_with_bn(rng):
    """The whole compiled model in inference mode (gradcheck's forward), BN's gamma and beta included."""
    autoenc.utils.set_random_seed(0)
    model = _bn_autoencoder(autoenc)
    model.compile("adam", "mse")
    x = _images(rng, 3)
    errors = gradcheck(model, x, x)
    assert max(errors.values()) < 1e-6, errors


def test_save_and_load_keep_moving_statistics(rng, tmp_path):
    autoenc.utils.set_random_seed(0)
    model = _bn_autoencoder(autoenc)
    model.compile("adam", "mse")
    x = _images(rng, 16)
    model.fit(x, x, epochs=2, batch_size=8, verbose=0)
    bn = [l for l in model.layers if isinstance(l, layers.BatchNormalization)]
    assert not np.allclose(bn[0].params["moving_mean"], 0) and not np.allclose(bn[1].params["moving_variance"], 1)
    model.save(tmp_path / "m.autoenc")
    loaded = autoenc.models.load_model(tmp_path / "m.autoenc")
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    lb = [l for l in loaded.layers if isinstance(l, layers.BatchNormalization)]
    assert lb[1].momentum == 0.9 and lb[1].epsilon == 1e-3
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # fitting on continues exactly (the moving statistics and Adam's state were both restored)
    model.fit(x, x, epochs=1, batch_size=8, verbose=0, shuffle=False)
    loaded.fit(x, x, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # save_weights / load_weights
    model.save_weights(tmp_path / "w.npz")
    autoenc.utils.set_random_seed(1)
    other = _bn_autoencoder(autoenc)
    other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_predict_uses_moving_statistics(rng):
    inp = layers.Input(shape=(3,))
    bn = layers.BatchNormalization(center=False, scale=False)
    model = autoenc.Model(inp, bn(inp))
    bn.set_weights([np.array([1.0, 2.0, 3.0], np.float32), np.array([4.0, 1.0, 0.25], np.float32)])
    x = _data(rng, (5, 3)).astype(np.float32)
    want = (x - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-3)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"axis": 0}, ValueError, "batch axis"),
    ({"axis": 3}, ValueError, "out of bounds"),
    ({"axis": 1.5}, TypeError, "axis must be an int"),
    ({"epsilon": 0}, ValueError, "epsilon must be positive"),
    ({"momentum": "fast"}, TypeError, "momentum must be a number"),
    ({"gamma_constraint": "non_neg"}, ValueError, "constraints"),
])
def test_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        layers.BatchNormalization(**kwargs)(np.zeros((2, 3, 4), np.float32))


def test_does_not_mutate_inputs(rng):
    x = _data(rng, (4, 3, 3, 2)).astype(np.float32)
    x0, dy = x.copy(), rng.standard_normal(x.shape).astype(np.float32)
    dy0 = dy.copy()
    layer = layers.BatchNormalization(axis=1)
    layer(x, training=True)
    layer.backward(dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)


# --- live Keras parity ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    return import_keras()[1]


def rel_err(a, b):
    """max|a - b| / max|b| (b: Keras')."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# A BN output is a few float32 roundings of terms of size |x - mean| * rstd (up to ~4 here), plus TF's
# float32 reductions for the mean and variance over m <= 60 values (errors of order sqrt(m) * eps ~ 1e-6
# of the terms: rounding errors of a sum are unbiased); gamma's and beta's gradients are such sums of
# m products. 1e-5 = 83 eps leaves a margin of ~10 over that; measured: <= 4.3e-7 (dgamma).
LAYER_TOL = 1e-5


@pytest.mark.keras
@pytest.mark.parametrize("shape, axis", [((10, 5), -1), ((2, 5, 6, 3), -1), ((2, 5, 6, 3), 1)])
@pytest.mark.parametrize("training", [True, False])
def test_keras_layer_parity(keras, rng, shape, axis, training):
    import tensorflow as tf
    x = _data(rng, shape).astype(np.float32)
    c = shape[axis]
    weights = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2, c)]
    weights = [w.astype(np.float32) for w in weights]
    kb = keras.layers.BatchNormalization(axis=axis, momentum=0.9)
    kb.build(shape)
    kb.set_weights(weights)
    ab = layers.BatchNormalization(axis=axis, momentum=0.9)
    ab(np.zeros((1,) + shape[1:], np.float32))
    ab.set_weights(weights)
    r = rng.standard_normal(shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        yk = kb(xt, training=training)
        loss = tf.reduce_sum(yk * r)
    dxk, dgk, dbk = tape.gradient(loss, [xt, kb.gamma, kb.beta])
    ya = ab.forward(x, training=training)
    dxa = ab.backward(r)
    assert rel_err(ya, yk) <= LAYER_TOL
    assert rel_err(dxa, dxk) <= LAYER_TOL
    assert rel_err(ab.grads["gamma"], dgk) <= LAYER_TOL
    assert rel_err(ab.grads["beta"], dbk) <= LAYER_TOL
    # moving statistics: updated in training (the same formula), untouched at inference
    assert rel_err(ab.params["moving_mean"], kb.moving_mean.numpy()) <= LAYER_TOL
    assert rel_err(ab.params["moving_variance"], kb.moving_variance.numpy()) <= LAYER_TOL
    assert np.array_equal(ab.params["moving_mean"], weights[2]) != training


# Five free-running Adam steps: the models' other tests (tests/test_keras_parity.py) hold at 1e-5; BN
# adds per step a few float32 roundings (above) and divides by the batch std, which for these inputs
# (uniform [0, 1] through a conv) is >= ~0.1, so an error grows by at most ~10x through one BN; measured
# <= 3.3e-7 in float32 after five steps (moving statistics <= 1.7e-7). In float64 the same chain
# agrees to <= 2e-15 (measured), 1e-12 leaves room for other BLAS builds.
MODEL_TOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.keras
@pytest.mark.parametrize("builder", [_bn_autoencoder, _dense_bn], ids=["conv-bn", "dense-bn"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_keras_model_parity_5_adam_steps(keras, builder, dtype):
    gen = np.random.default_rng(5)
    keras.utils.set_random_seed(0)
    if dtype == "float64":
        keras.config.set_floatx("float64")
    try:
        km = builder(keras, dtype=dtype)
        am = builder(autoenc, dtype=dtype)
        am.set_weights(km.get_weights())
        km.compile(optimizer=keras.optimizers.Adam(), loss="mean_squared_error")
        am.compile(optimizer=autoenc.optimizers.Adam(), loss="mean_squared_error")
        shape = (8,) + tuple(am.input_shape[1:])
        tol = MODEL_TOL[dtype]
        batches = [gen.uniform(0, 1, shape).astype(dtype) for _ in range(5)]
        for xb in batches:
            lk, la = float(km.train_on_batch(xb, xb)), float(am.train_on_batch(xb, xb))
            assert abs(la - lk) <= tol * abs(lk)
        names = [f"{l.name}/{n}" for l in am.layers for n in l.params]
        for name, wa, wk in zip(names, am.get_weights(), km.get_weights()):
            assert rel_err(wa, wk) <= tol, name
        moving = [w for n, w in zip(names, km.get_weights()) if "moving" in n]
        assert len(moving) == 2 * sum(isinstance(l, layers.BatchNormalization) for l in am.layers)
        assert not np.allclose(moving[0], 0)  # the statistics did move
        x = batches[0]
        assert rel_err(am.predict(x, verbose=0), km.predict(x, verbose=0)) <= tol
    finally:
        keras.config.set_floatx("float32")


def test_bias_before_batch_norm_gets_no_gradient(rng):
    """BN in training subtracts the batch mean, so a per-channel constant added before it (a conv's bias)
    changes nothing: its gradient is 0 (here to float64 rounding), the reason the parity models above
    leave that bias out."""
    conv = layers.Conv2D(3, 3, dtype="float64", bias_initializer="random_normal")
    bn = layers.BatchNormalization(dtype="float64", gamma_initializer="random_uniform")
    x = rng.standard_normal((4, 6, 6, 2))
    y = bn(conv(x), training=True)
    conv(x)  # refresh the conv's cache (the eager call above copies nothing into it that backward needs)
    dy = rng.standard_normal(y.shape)
    conv.backward(bn.backward(dy))
    assert np.abs(conv.grads["bias"]).max() <= 1e-13 * np.abs(dy).sum()
    assert np.abs(conv.grads["kernel"]).max() > 1e-3


@pytest.mark.keras
@pytest.mark.parametrize("ext", [".weights.h5", ".keras"])
def test_loads_keras_files_with_moving_statistics(keras, tmp_path, ext):
    """A Keras model with BN, trained, saved by Keras: load_weights reads all four BN weights in order."""
    keras.utils.set_random_seed(0)
    keras.backend.clear_session()
    autoenc.layers.base.clear_session()  # the same layer names in both, by which the weights are matched
    km = _bn_autoencoder(keras)
    km.compile("adam", "mse")
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 2)).astype("float32")
    km.fit(x, x, epochs=2, verbose=0)
    path = str(tmp_path / f"k{ext}")
    km.save_weights(path) if ext == ".weights.h5" else km.save(path)
    am = _bn_autoencoder(autoenc)
    am.load_weights(path)
    for a, b in zip(am.get_weights(), km.get_weights()):
        np.testing.assert_array_equal(a, b)
    # predictions: float32 roundings only (measured 1.9e-7); see LAYER_TOL
    assert rel_err(am.predict(x, verbose=0), km.predict(x, verbose=0)) <= LAYER_TOL
