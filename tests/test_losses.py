"""Losses: values against their formulas, and float64 central-difference gradient checks."""
import numpy as np
import pytest

from autoenc import losses
from autoenc.gradcheck import _relative_error


def numeric_gradient(f, p, eps=1e-6):
    g = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + eps
        plus = f(p)
        p[i] = old - eps
        minus = f(p)
        p[i] = old
        g[i] = (plus - minus) / (2 * eps)
    return g


@pytest.mark.parametrize("name", ["mse", "mean_squared_error", "mae", "mean_absolute_error", "binary_crossentropy"])
def test_loss_gradients(rng, name):
    loss = losses.get(name)
    t = rng.random((3, 4, 5))
    p = rng.uniform(0.05, 0.95, (3, 4, 5))
    value, grad = loss.value_and_gradient(t, p.copy())
    assert value == loss(t, p) == loss.value(t, p)  # evaluation computes the same number, without a gradient
    num = numeric_gradient(lambda q: loss.value_and_gradient(t, q)[0], p.copy())
    assert _relative_error(grad, num) < 1e-7


@pytest.mark.parametrize("loss", [losses.MeanSquaredError(), losses.MeanAbsoluteError(), losses.BinaryCrossentropy(),
                                  losses.BinaryCrossentropy(from_logits=True)], ids=lambda l: repr(l.get_config()))
def test_gradient_into_out_is_the_same_as_a_new_array(rng, loss):
    t = rng.random((3, 4, 5)).astype(np.float32)
    p = rng.uniform(-0.1, 1.1, (3, 4, 5)).astype(np.float32)  # below and above BCE's clip range too
    p_before = p.copy()
    value, grad = loss.value_and_gradient(t, p)
    out = np.full_like(p, np.nan)
    value_out, grad_out = loss.value_and_gradient(t, p, out=out)
    assert grad_out is out and value_out == value
    np.testing.assert_array_equal(out, grad)
    np.testing.assert_array_equal(p, p_before)  # y_pred is read, never written


@pytest.mark.parametrize("loss", [losses.MeanSquaredError(), losses.MeanAbsoluteError(), losses.BinaryCrossentropy(),
                                  losses.BinaryCrossentropy(from_logits=True)], ids=lambda l: repr(l.get_config()))
def test_a_parts_gradient_with_the_batch_size_is_the_slice_of_the_batch_gradient(rng, loss):
    """size=: a part of a batch gets the batch loss's gradient, bit for bit (the training step in parts,
    models/parallel_step.py), and its own loss."""
    t = rng.random((6, 4, 5)).astype(np.float32)
    p = rng.uniform(-0.1, 1.1, (6, 4, 5)).astype(np.float32)
    _, whole = loss.value_and_gradient(t, p)
    value, part = loss.value_and_gradient(t[2:5], p[2:5], size=t.size)
    np.testing.assert_array_equal(part, whole[2:5])
    assert value == loss.value_and_gradient(t[2:5], p[2:5])[0]


def test_loss_values_follow_keras_formulas(rng):
    t, p = rng.random((4, 6)), rng.uniform(0.01, 0.99, (4, 6))
    assert losses.get("mse")(t, p) == pytest.approx(np.mean((p - t) ** 2))
    assert losses.get("mae")(t, p) == pytest.approx(np.mean(np.abs(p - t)))
    assert losses.get("binary_crossentropy")(t, p) == pytest.approx(
        -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    # Keras reduction: mean over the last axis per sample, then over the batch
    np.testing.assert_allclose(losses.mean_squared_error(t, p), np.mean((p - t) ** 2, axis=-1))


def test_bce_from_logits_is_stable_and_correct(rng):
    bce = losses.BinaryCrossentropy()
    t = rng.random((2, 7))
    z = rng.standard_normal((2, 7)) * 3
    value, grad = bce.value_and_gradient_from_logits(t, z.copy())
    assert bce.value_from_logits(t, z) == value
    sig = 1 / (1 + np.exp(-z))
    assert value == pytest.approx(-np.mean(t * np.log(sig) + (1 - t) * np.log(1 - sig)))
    num = numeric_gradient(lambda q: bce.value_and_gradient_from_logits(t, q)[0], z.copy())
    assert _relative_error(grad, num) < 1e-7
    # saturated logits: finite loss, gradient = (sigmoid(z) - t) / m
    z = np.array([[80.0, -80.0]], np.float32)
    value, grad = bce.value_and_gradient_from_logits(np.array([[0.0, 1.0]], np.float32), z)
    assert np.isfinite(value) and value == pytest.approx(80.0, rel=1e-5)
    np.testing.assert_allclose(grad, [[0.5, -0.5]])


def test_bce_clips_saturated_probabilities():
    bce = losses.get("binary_crossentropy")
    value, grad = bce.value_and_gradient(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert value == pytest.approx(-np.log(1e-7), rel=1e-6)
    np.testing.assert_array_equal(grad, 0)  # clipped away, as TensorFlow's clip_by_value gradient


def test_loss_errors():
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get("hinge_of_doom")
    with pytest.raises(ValueError, match="same shape"):
        losses.get("mse")(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("call", [
    lambda t, p: losses.get("mse")(t, p),
    lambda t, p: losses.get("mae")(t, p),
    lambda t, p: losses.BinaryCrossentropy()(t, p),
    lambda t, p: losses.BinaryCrossentropy(from_logits=True)(t, p),
    losses.mean_squared_error, losses.mean_absolute_error, losses.binary_crossentropy,
], ids=["mse", "mae", "bce", "bce_logits", "mse_fn", "mae_fn", "bce_fn"])
def test_public_loss_calls_refuse_nan_and_inf_naming_argument_and_index(call, bad):
    """Issue 17.15: a NaN in a user's loss call gave NaN; it is refused, naming the argument and index."""
    y = np.full((2, 3, 4), 0.5, np.float32)
    bad_y = y.copy()
    bad_y[1, 2, 0] = bad
    with pytest.raises(ValueError, match=r"y_pred contains NaN or Inf \(first at index \(1, 2, 0\)"):
        call(y, bad_y)
    with pytest.raises(ValueError, match=r"y_true contains NaN or Inf \(first at index \(1, 2, 0\)"):
        call(bad_y, y)
    assert np.all(np.isfinite(call(y, y)))


def test_training_path_does_not_scan_for_nan():
    """The training loop calls value / value_and_gradient on data it checked once: no per-step scan there
    (a diverged step must reach the NaN stop, not a ValueError from a metric)."""
    y = np.full((2, 3), 0.5, np.float32)
    p = y.copy()
    p[0, 0] = np.nan
    loss = losses.get("mse")
    assert np.isnan(loss.value(y, p))
    assert np.isnan(loss.value_and_gradient(y, p)[0])


# --- the VAE's two terms (keras-io's formulas) ------------------------------------------------------

def test_kl_divergence_value_and_float64_gradient(rng):
    m, v = rng.standard_normal((5, 3)), rng.uniform(-2, 1.5, (5, 3))
    kl, dm, dv = losses.kl_divergence_and_gradient(m, v)
    assert kl == pytest.approx(np.mean(np.sum(-0.5 * (1 + v - m ** 2 - np.exp(v)), axis=1)), rel=1e-14)
    assert losses.kl_divergence(m, v) == kl
    num_m = numeric_gradient(lambda q: losses.kl_divergence(q, v), m.copy())
    num_v = numeric_gradient(lambda q: losses.kl_divergence(m, q), v.copy())
    assert _relative_error(dm, num_m) < 1e-8 and _relative_error(dv, num_v) < 1e-8


def test_kl_divergence_is_zero_at_the_prior_and_positive_elsewhere(rng):
    zero = np.zeros((4, 2))
    kl, dm, dv = losses.kl_divergence_and_gradient(zero, zero)   # q = N(0, 1) = the prior
    assert kl == 0 and not dm.any() and not dv.any()
    # by hand: one sample, m = 1, v = 0: -0.5 (1 + 0 - 1 - 1) = 0.5
    assert losses.kl_divergence(np.array([[1.0]]), np.array([[0.0]])) == 0.5
    assert losses.kl_divergence(rng.standard_normal((4, 2)), rng.standard_normal((4, 2))) > 0


def test_kl_divergence_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(3, 4\)"):
        losses.kl_divergence(np.zeros((3, 2)), np.zeros((3, 4)))


@pytest.mark.parametrize("from_logits", [False, True])
def test_reconstruction_crossentropy_sums_pixels_and_averages_the_batch(rng, from_logits):
    """keras-io: mean over the batch of sum over (h, w) of binary crossentropy (itself a mean over the
    channels); its float64 gradient, from the probabilities or from the logits."""
    t = rng.random((3, 4, 5, 2))
    z = rng.standard_normal((3, 4, 5, 2))
    p = 1 / (1 + np.exp(-z))
    per_pixel = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p), axis=-1)
    expected = np.mean(np.sum(per_pixel, axis=(1, 2)))
    value, grad = losses.reconstruction_crossentropy(t, p, logits=z if from_logits else None)
    assert value == pytest.approx(expected, rel=1e-12)
    wrt = z if from_logits else p
    f = (lambda q: losses.reconstruction_crossentropy(t, 1 / (1 + np.exp(-q)), logits=q)[0]) if from_logits else (
        lambda q: losses.reconstruction_crossentropy(t, q)[0])
    assert _relative_error(grad, numeric_gradient(f, wrt.copy())) < 1e-7
