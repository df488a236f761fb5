"""layers.Sampling: z = z_mean + exp(0.5 z_log_var) eps, its gradients (float64 central differences with eps
fixed), its draws (per call, seeded, also at inference as keras-io's) and its config."""
import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.gradcheck import gradcheck


def test_forward_is_the_reparameterization_with_the_given_eps(rng):
    m, v = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    eps = rng.standard_normal((4, 3)).astype(np.float32)
    s = layers.Sampling()
    s.epsilon = eps
    z = s([m, v])
    np.testing.assert_allclose(z, m + np.exp(0.5 * v) * eps, rtol=2e-7, atol=0)
    assert s.last_epsilon is not None and np.array_equal(s.last_epsilon, eps)
    # by hand: m = 1, v = 2 log 3 (standard deviation 3), eps = 2: z = 1 + 3 * 2 = 7
    s64 = layers.Sampling(dtype="float64")
    s64.epsilon = np.array([[2.0]])
    assert s64([np.array([[1.0]]), np.array([[2 * np.log(3.0)]])])[0, 0] == pytest.approx(7.0, rel=1e-15)


def test_float64_gradients_with_eps_fixed(rng):
    s = layers.Sampling()
    s.epsilon = rng.standard_normal((5, 4))
    errors = gradcheck(s, [rng.standard_normal((5, 4)), rng.uniform(-2, 2, (5, 4))])
    assert set(errors) == {"input[0]", "input[1]"}
    assert max(errors.values()) < 1e-8, errors


def test_backward_by_hand(rng):
    """dz/dm = 1 and dz/dv = 0.5 exp(0.5 v) eps = 0.5 (z - m), times the upstream gradient."""
    s = layers.Sampling(dtype="float64")
    m, v, eps, dy = (rng.standard_normal((3, 2)) for _ in range(4))
    s.epsilon = eps
    z = s.forward([m, v])
    dy_before = dy.copy()
    dm, dv = s.backward(dy)
    np.testing.assert_array_equal(dm, dy)
    np.testing.assert_allclose(dv, 0.5 * dy * (z - m), rtol=1e-12)
    np.testing.assert_array_equal(dy, dy_before)   # the incoming gradient is not written


def test_draws_standard_normal_noise_at_every_call_in_training_and_inference(rng):
    s = layers.Sampling()
    m, v = np.zeros((2000, 2), np.float32), np.zeros((2000, 2), np.float32)
    z1 = np.array(s.forward([m, v], training=True))
    z2 = np.array(s.forward([m, v], training=False))   # keras-io's Sampling draws at inference too
    assert not np.array_equal(z1, z2)
    both = np.concatenate([z1, z2]).ravel()
    # 8000 draws of N(0, 1): the mean within 5 standard errors (5/sqrt(8000) = 0.056), the variance within 0.1
    assert abs(both.mean()) < 0.056 and abs(both.var() - 1) < 0.1


def test_seeded_sampling_is_reproducible_and_the_global_one_follows_set_random_seed():
    m, v = np.zeros((3, 2), np.float32), np.ones((3, 2), np.float32)
    a, b = layers.Sampling(seed=3), layers.Sampling(seed=3)
    np.testing.assert_array_equal(a([m, v]), b([m, v]))
    assert not np.array_equal(a([m, v]), layers.Sampling(seed=4)([m, v]))
    autoenc.utils.set_random_seed(11)
    first = layers.Sampling()([m, v])
    autoenc.utils.set_random_seed(11)
    np.testing.assert_array_equal(layers.Sampling()([m, v]), first)


def test_config_round_trip_and_errors():
    s = layers.Sampling(seed=5, name="z")
    config = s.get_config()
    assert config["seed"] == 5 and config["name"] == "z"
    again = layers.Sampling(**config)
    assert again.seed == 5 and again.name == "z"
    with pytest.raises(TypeError, match="seed must be None or an int, got 'x'"):
        layers.Sampling(seed="x")
    with pytest.raises(ValueError, match=r"expects \[z_mean, z_log_var\]"):
        layers.Sampling()(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"expects \[z_mean, z_log_var\]"):
        layers.Sampling()([np.zeros((2, 3)), np.zeros((2, 4))])
    bad = layers.Sampling()
    bad.epsilon = np.zeros((1, 3))
    with pytest.raises(ValueError, match=r"epsilon has shape \(1, 3\), z_mean \(2, 3\)"):
        bad([np.zeros((2, 3)), np.zeros((2, 3))])
