"""Optimizers: the first steps of each against its formula, written out here by hand."""
import numpy as np
import pytest

from autoenc import optimizers


def run(opt, w0, grads):
    w = w0.astype(np.float32).copy()
    for g in grads:
        opt.apply([g.astype(np.float32)], [w])
    return w


def test_adam_matches_keras3_formula(rng):
    w0 = rng.standard_normal(11)
    grads = [rng.standard_normal(11) for _ in range(4)]
    w, m, v = w0.copy(), np.zeros(11), np.zeros(11)
    for t, g in enumerate(grads, start=1):
        alpha = 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        m += (g - m) * (1 - 0.9)
        v += (g * g - v) * (1 - 0.999)
        w -= m * alpha / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(run(optimizers.get("adam"), w0, grads), w, rtol=1e-5, atol=1e-7)
    opt = optimizers.Adam()
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (0.001, 0.9, 0.999, 1e-7)


def test_first_adam_step_moves_each_weight_by_about_lr(rng):
    w0 = rng.standard_normal(5)
    w = run(optimizers.Adam(learning_rate=0.01), w0, [rng.standard_normal(5)])
    np.testing.assert_allclose(np.abs(w - w0), 0.01, rtol=1e-4)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_formula(rng, momentum, nesterov):
    w0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(3)]
    w, m, lr = w0.copy(), np.zeros(7), 0.05
    for g in grads:
        if momentum:
            m = momentum * m - lr * g
            w = w + (momentum * m - lr * g if nesterov else m)
        else:
            w = w - lr * g
    got = run(optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov), w0, grads)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.5, False), (0.0, True)])
def test_rmsprop_matches_formula(rng, momentum, centered):
    w0 = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(3)]
    w, v, a, m = w0.copy(), np.zeros(6), np.zeros(6), np.zeros(6)
    lr, rho, eps = 0.01, 0.9, 1e-7
    for g in grads:
        v = rho * v + (1 - rho) * g * g
        if centered:
            a = rho * a + (1 - rho) * g
            step = lr * g / np.sqrt(v - a * a + eps)
        else:
            step = lr * g / np.sqrt(v + eps)
        if momentum:
            m = momentum * m + step
            w = w - m
        else:
            w = w - step
    got = run(optimizers.RMSprop(learning_rate=lr, momentum=momentum, centered=centered), w0, grads)
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-7)


def test_optimizer_names_and_errors():
    assert isinstance(optimizers.get("adam"), optimizers.Adam)
    assert isinstance(optimizers.get("SGD"), optimizers.SGD)
    assert isinstance(optimizers.get("rmsprop"), optimizers.RMSprop)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        optimizers.get("adamw2000")
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.Adam(learning_rate=-1)


def test_step_counter_and_state_is_per_parameter(rng):
    opt = optimizers.Adam()
    a, b = np.zeros(3, np.float32), np.zeros((2, 2), np.float32)
    opt.apply([np.ones(3, np.float32), np.ones((2, 2), np.float32)], [a, b])
    assert opt.iterations == 1
    np.testing.assert_allclose(a, -1e-3, rtol=1e-4)
    np.testing.assert_allclose(b, -1e-3, rtol=1e-4)
