"""Activations: values pinned by hand, float64 central differences of every backward, the GELU kernel
against its naive twin, the layers that call activation.backward (Dense, Conv2D, Activation) passing
z, and live parity with keras.activations (forward and gradient)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoenc import activations, layers
from autoenc.activations import SELU_ALPHA, SELU_SCALE, Activation
from autoenc.gradcheck import gradcheck
from autoenc.kernels import activation as K
from live_keras import import_keras

NEW = ["leaky_relu", "elu", "selu", "gelu", "softplus", "softsign", "silu", "hard_sigmoid", "relu6", "exponential"]
ALL = ["linear", "relu", "sigmoid", "tanh", "softmax"] + NEW
# every activation with parameters other than its defaults, as layers build them
PARAMETRISED = [("relu", {"negative_slope": 0.1}), ("relu", {"max_value": 6.0}), ("relu", {"max_value": 1.5}),
                ("relu", {"threshold": 0.5}), ("relu", {"negative_slope": 0.2, "max_value": 2.0, "threshold": 0.5}),
                ("leaky_relu", {"negative_slope": 0.3}), ("elu", {"alpha": 0.5}), ("softmax", {"axis": 1}),
                ("softmax", {"axis": (1, 2)})]
KINKS = {"relu": [0.0], "leaky_relu": [0.0], "elu": [0.0], "selu": [0.0], "hard_sigmoid": [-3.0, 3.0],
         "relu6": [0.0, 6.0]}


def apply(act, z):
    y = np.empty_like(z)
    act.forward(z, y)
    return y


def grad(act, dy, z):
    dz = np.empty_like(z)
    act.backward(dy, apply(act, z), dz, z=z)
    return dz


def away_from_kinks(z, points):
    """z with every entry moved at least 1e-3 from the activation's kinks (where no derivative exists)."""
    for p in points:
        near = np.abs(z - p) < 1e-3
        z[near] = p + 1e-2
    return z


# --- values by hand ------------------------------------------------------------------------------

def test_values_by_hand():
    a = activations
    np.testing.assert_array_equal(a.leaky_relu(np.array([-1.0, 0.0, 2.0])), [-0.2, 0.0, 2.0])
    np.testing.assert_allclose(a.elu(np.array([-1.0, 0.0, 2.0])), [math.e ** -1 - 1, 0.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(a.elu(np.array([-1.0]), alpha=2.0), [2 * (math.e ** -1 - 1)], rtol=1e-15)
    np.testing.assert_allclose(a.selu(np.array([-1.0, 1.0])),
                               [SELU_SCALE * SELU_ALPHA * (math.e ** -1 - 1), SELU_SCALE], rtol=1e-15)
    np.testing.assert_allclose(a.gelu(np.array([0.0, 1.0, -1.0])), [0.0, 0.8413447460685429, -0.15865525393145707],
                               rtol=1e-14)  # x Phi(x), Phi(1) = 0.8413447460685429
    np.testing.assert_allclose(a.softplus(np.array([0.0, 800.0])), [math.log(2), 800.0], rtol=1e-15)
    np.testing.assert_array_equal(a.softsign(np.array([-3.0, 1.0])), [-0.75, 0.5])
    np.testing.assert_allclose(a.silu(np.array([0.0, 2.0])), [0.0, 2 / (1 + math.exp(-2))], rtol=1e-15)
    assert a.swish is a.silu
    np.testing.assert_array_equal(a.hard_sigmoid(np.array([-4.0, -3.0, 0.0, 1.5, 3.0, 9.0])),
                                  [0.0, 0.0, 0.5, 0.75, 1.0, 1.0])
    np.testing.assert_array_equal(a.relu6(np.array([-1.0, 3.0, 7.0])), [0.0, 3.0, 6.0])
    np.testing.assert_allclose(a.exponential(np.array([0.0, 1.0])), [1.0, math.e], rtol=1e-15)
    # Keras' ReLU: threshold 1, cap 3, slope 0.5 below the threshold
    np.testing.assert_array_equal(a.relu(np.array([-1.0, 0.5, 2.0, 5.0]), negative_slope=0.5, max_value=3.0,
                                         threshold=1.0), [-1.0, -0.25, 2.0, 3.0])
    assert a.relu(np.array([3])).dtype == np.float32  # integers become float32, as Keras' floatx


def test_derivatives_at_kinks_are_tensorflows():
    z = np.array([0.0])
    one = np.array([1.0])
    assert grad(Activation("relu"), one, z)[0] == 0
    assert grad(Activation("leaky_relu"), one, z)[0] == 0.2
    assert grad(Activation("elu"), one, z)[0] == 1
    assert grad(Activation("elu", alpha=0.5), one, z)[0] == 0.5
    assert grad(Activation("selu"), one, z)[0] == pytest.approx(SELU_SCALE, rel=1e-15)
    assert grad(Activation("relu6"), one, np.array([6.0]))[0] == 0
    assert grad(Activation("hard_sigmoid"), one, np.array([3.0]))[0] == 0
    np.testing.assert_allclose(grad(Activation("hard_sigmoid"), one, z), [1 / 6], rtol=1e-15)
    assert grad(Activation("gelu"), one, z)[0] == 0.5


# --- gradients -----------------------------------------------------------------------------------

def central_difference(act, dy, z, h=1e-6):
    """dz_l = sum_k dy_k dy_k/dz_l by central differences, one entry of z at a time (float64)."""
    out = np.zeros_like(z)
    flat = z.reshape(-1)
    for l in range(flat.size):
        old = flat[l]
        flat[l] = old + h
        plus = np.sum(dy * apply(act, z))
        flat[l] = old - h
        minus = np.sum(dy * apply(act, z))
        flat[l] = old
        out.reshape(-1)[l] = (plus - minus) / (2 * h)
    return out


@pytest.mark.parametrize("name,params", [(n, {}) for n in ALL] + PARAMETRISED,
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()))
def test_backward_matches_central_differences_float64(rng, name, params):
    act = Activation(name, **params)
    z = away_from_kinks(rng.standard_normal((3, 4, 5)) * 3, KINKS.get(name, []) + [params.get("threshold", 0.0),
                                                                                   params.get("max_value") or 0.0])
    dy = rng.standard_normal(z.shape)
    analytic, numeric = grad(act, dy, z), central_difference(act, dy, z)
    # the difference quotient is exact to ~1e-9 (h^2 f''' / 6 plus 1e-16 / h rounding); a wrong one ~1e-1
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(numeric).max()))


@pytest.mark.parametrize("name", NEW)
def test_layers_that_call_backward_pass_z(rng, name):
    """Dense, Conv2D and the Activation layer give each activation its z: float64 gradcheck."""
    x = rng.standard_normal((2, 5, 6, 3))
    for layer in (layers.Dense(4, activation=name), layers.Conv2D(2, 3, padding="same", activation=name),
                  layers.Activation(name)):
        errors = gradcheck(layer, away_from_kinks(x.copy(), KINKS.get(name, [])))
        assert errors and all(e < 1e-6 for e in errors.values()), (type(layer).__name__, errors)


def test_backward_without_z_is_refused_where_z_is_needed():
    y = dy = dz = np.zeros(3)
    for act in (Activation("gelu"), Activation("silu"), Activation("softsign"), Activation("relu", max_value=1.0)):
        assert act.uses_z
        with pytest.raises(ValueError, match="needs the pre-activation z"):
            act.backward(dy, y, dz)
    for name in ("relu", "sigmoid", "elu", "selu", "softplus", "leaky_relu", "exponential"):
        assert not Activation(name).uses_z
        Activation(name).backward(dy, y, dz)


# --- the GELU kernel against its naive twin ------------------------------------------------------

@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 70)), scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_gelu_kernels_match_naive(shape, scale, dtype, seed):
    gen = np.random.default_rng(seed)
    z = (gen.standard_normal(shape) * scale).astype(dtype)
    dy = gen.standard_normal(shape).astype(dtype)
    fast, slow = np.empty_like(z), np.empty_like(z)
    K.gelu_forward(z, fast)
    K.gelu_forward_naive(z, slow)
    # both compute each element in double precision and round once: equal to the last bit
    np.testing.assert_array_equal(fast, slow)
    K.gelu_backward(dy, z, fast)
    K.gelu_backward_naive(dy, z, slow)
    np.testing.assert_array_equal(fast, slow)


def test_gelu_far_left_tail_keeps_its_digits():
    # z Phi(z) at z = -10 is -7.6e-23: erfc keeps it, where 1 + erf(z / sqrt 2) would round to 0
    y = activations.gelu(np.array([-10.0]))
    assert y[0] == pytest.approx(-10 * 0.5 * math.erfc(10 / math.sqrt(2)), rel=1e-14) and y[0] < 0


# --- names ---------------------------------------------------------------------------------------

def test_get_names_aliases_functions_and_errors():
    for name in ALL:
        assert activations.get(name).name == name
        assert activations.get(name.upper()).name == name
        assert activations.get(getattr(activations, name)).name == name
    assert activations.get("swish").name == "silu" and activations.get(activations.swish).name == "silu"
    assert activations.get(None).name == "linear"
    assert activations.get("leaky_relu").params == {"negative_slope": 0.2}  # keras.activations.leaky_relu's default
    assert repr(Activation("elu", alpha=0.5)) == "Activation('elu', alpha=0.5)"
    with pytest.raises(ValueError, match="Unknown activation 'mish'"):
        activations.get("mish")
    with pytest.raises(ValueError, match="arbitrary callables"):
        activations.get(np.tanh)
    with pytest.raises(TypeError, match="unexpected parameter"):
        Activation("selu", alpha=2.0)
    with pytest.raises(ValueError, match="approximate=True"):
        activations.gelu(np.zeros(2), approximate=True)


def test_dense_config_names_the_activation_as_keras():
    assert layers.Dense(3, activation="swish").get_config()["activation"] == "silu"
    assert layers.Conv2D(3, 2, activation="gelu").get_config()["activation"] == "gelu"


# --- live Keras parity ---------------------------------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("name", ALL + ["swish"])
def test_keras_parity_forward_and_gradient(name):
    """float32 forward and dz against keras.activations.get(name) under tf.GradientTape, inputs with |z| up
    to ~15 and the kinks themselves. Forward: a few roundings of values <= max|y|, so 1e-6 of max|y|
    (8 float32 ulps); backward: products of up to ~4 rounded factors, one of them z (silu's z (1 - s)),
    so 1e-5 of max|dz|. Measured: forward <= 2.4e-7 (tanh), backward <= 7.3e-7 (tanh)."""
    tf, keras = import_keras()
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((6, 50)) * 4).astype(np.float32)
    z[0, :6] = [0.0, -3.0, 3.0, 6.0, -20.0, 15.0]
    dy = rng.standard_normal(z.shape).astype(np.float32)
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        yk = keras.activations.get(name)(zt)
    dzk = tape.gradient(yk, zt, output_gradients=tf.constant(dy)).numpy()
    act = activations.get(name)
    y = apply(act, z)
    dz = np.empty_like(z)
    act.backward(dy, y, dz, z=z)
    assert np.max(np.abs(y - yk.numpy())) <= 1e-6 * np.max(np.abs(yk.numpy()))
    assert np.max(np.abs(dz - dzk)) <= 1e-5 * np.max(np.abs(dzk))


@pytest.mark.keras
@pytest.mark.parametrize("name", NEW)
def test_keras_parity_in_dense_and_conv2d(name):
    """Dense and Conv2D with each new activation: output, dL/dx, kernel and bias gradients against Keras
    (tf.GradientTape), float32, at 1e-5 of each tensor's largest entry, as tests/test_keras_parity.py
    checks the seed activations (sums of 3x3x3 = 27 products before the activation)."""
    tf, keras = import_keras()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    for klayer, alayer in [(keras.layers.Dense(4, activation=name, bias_initializer="random_normal"),
                            layers.Dense(4, activation=name)),
                           (keras.layers.Conv2D(4, 3, padding="same", activation=name,
                                                bias_initializer="random_normal"),
                            layers.Conv2D(4, 3, padding="same", activation=name))]:
        xk = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xk)
            yk = klayer(xk)
        dy = rng.standard_normal(tuple(yk.shape)).astype(np.float32)
        gk = tape.gradient(yk, [xk] + list(klayer.trainable_weights), output_gradients=tf.constant(dy))
        alayer(x)
        alayer.set_weights(klayer.get_weights())
        y = np.array(alayer.forward(x), copy=True)
        dx = alayer.backward(dy)
        for what, a, k in [("output", y, yk.numpy()), ("dx", dx, gk[0].numpy()),
                           ("kernel", alayer.grads["kernel"], gk[1].numpy()),
                           ("bias", alayer.grads["bias"], gk[2].numpy())]:
            assert np.max(np.abs(a - k)) <= 1e-5 * np.max(np.abs(k)), (type(alayer).__name__, what)
