"""Optimizers: the first steps of each against its formula, written out here by hand."""
import numpy as np
import pytest

from autoenc import optimizers
from live_keras import import_keras


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


# --- Adadelta, Adagrad, Adamax, Nadam, AdamW: their rules written out in float64 -------------------

def adadelta_reference(w, grads, lr=0.001, rho=0.95, eps=1e-7):
    a, b = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        a = rho * a + (1 - rho) * g * g
        d = -np.sqrt(b + eps) * g / np.sqrt(a + eps)
        b = rho * b + (1 - rho) * d * d
        w = w + lr * d
    return w


def adagrad_reference(w, grads, lr=0.001, initial=0.1, eps=1e-7):
    a = np.full_like(w, initial)
    for g in grads:
        a = a + g * g
        w = w - lr * g / np.sqrt(a + eps)
    return w


def adamax_reference(w, grads, lr=0.001, b1=0.9, b2=0.999, eps=1e-7):
    m, u = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g))
        w = w - lr * m / ((1 - b1 ** t) * (u + eps))
    return w


def nadam_reference(w, grads, lr=0.001, b1=0.9, b2=0.999, eps=1e-7):
    m, v, product = np.zeros_like(w), np.zeros_like(w), 1.0
    for t, g in enumerate(grads, start=1):
        u_t, u_next = b1 * (1 - 0.5 * 0.96 ** t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        product *= u_t
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = u_next * m / (1 - product * u_next) + (1 - u_t) * g / (1 - product)
        w = w - lr * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


def adamw_reference(w, grads, lr=0.001, wd=0.004, b1=0.9, b2=0.999, eps=1e-7):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - w * wd * lr
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


NEW = {"adadelta": (optimizers.Adadelta, adadelta_reference, (0.001, 0.95, 1e-7)),
       "adagrad": (optimizers.Adagrad, adagrad_reference, (0.001, 0.1, 1e-7)),
       "adamax": (optimizers.Adamax, adamax_reference, (0.001, 0.9, 0.999, 1e-7)),
       "nadam": (optimizers.Nadam, nadam_reference, (0.001, 0.9, 0.999, 1e-7)),
       "adamw": (optimizers.AdamW, adamw_reference, (0.001, 0.004, 0.9, 0.999, 1e-7))}


@pytest.mark.parametrize("name", list(NEW))
def test_new_optimizers_match_their_formulas_and_keras_defaults(rng, name):
    cls, reference, defaults = NEW[name]
    w0 = rng.standard_normal(9)
    grads = [rng.standard_normal(9) * (k + 1) for k in range(5)]
    lr = 0.5 if name == "adadelta" else 0.01   # Adadelta's steps are ~lr * 1e-3 at first: make them visible
    # float32 against float64: each step ~10 roundings of numbers of size |w|, so 1e-5 of |w| with room
    np.testing.assert_allclose(run(cls(learning_rate=lr), w0, grads), reference(w0, grads, lr=lr), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(run(cls(learning_rate=lr), w0, grads), w0, atol=1e-4)  # they did move
    opt = optimizers.get(name)
    assert isinstance(opt, cls)
    assert tuple(opt.get_config()[k] for k in opt.get_config() if k not in
                 ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm") or (name == "adamw" and
                                                                                 k == "weight_decay")) == defaults


def test_nadam_u_product_recomputed_from_the_step_count(rng):
    """The momentum schedule's running product depends only on the step: an optimizer whose state is set
    to step 4 continues exactly as the one that took the 4 steps."""
    w0 = rng.standard_normal(6).astype(np.float32)
    grads = [rng.standard_normal(6).astype(np.float32) for _ in range(7)]
    a, wa = optimizers.Nadam(0.01), w0.copy()
    for g in grads:
        a.apply([g], [wa])
    b, wb = optimizers.Nadam(0.01), w0.copy()
    for g in grads[:4]:
        b.apply([g], [wb])
    c = optimizers.Nadam(0.01)
    c.set_state({"iterations": 4, "slots": [{k: v.copy() for k, v in b.get_state()["slots"][0].items()}]})
    for g in grads[4:]:
        c.apply([g], [wb])
    np.testing.assert_array_equal(wb, wa)
    t = np.float32
    expected = t(1)
    for k in range(1, 8):
        expected = expected * t(0.9) * (t(1) - t(0.5) * t(0.96) ** t(k))
    assert a.u_product(7, np.float32) == expected


# --- Keras' base arguments: lr=, weight_decay, clipping ------------------------------------------

ALL_CLASSES = [optimizers.SGD, optimizers.RMSprop, optimizers.Adam, optimizers.Adadelta, optimizers.Adagrad,
               optimizers.Adamax, optimizers.Nadam, optimizers.AdamW]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_keras2_lr_is_accepted_with_a_deprecation_warning(cls):
    with pytest.warns(DeprecationWarning, match="learning_rate"):
        opt = cls(lr=0.123)
    assert opt.learning_rate == 0.123
    assert cls(**opt.get_config()).get_config() == opt.get_config()  # the config rebuilds the optimizer


def test_base_argument_errors():
    with pytest.raises(ValueError, match="Only one of `clipnorm`"):
        optimizers.Adam(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match="use_ema"):
        optimizers.Adam(use_ema=True)
    optimizers.Adam(use_ema=False, loss_scale_factor=None)  # Keras' defaults are accepted
    with pytest.raises(TypeError, match="momentum_decay"):
        optimizers.Nadam(momentum_decay=0.004)
    with pytest.raises(ValueError, match="clipnorm=-1"):
        optimizers.SGD(clipnorm=-1)
    with pytest.raises(ValueError, match="weight_decay=None"):
        optimizers.AdamW(weight_decay=None)
    with pytest.warns(UserWarning, match="decay"):
        optimizers.SGD(decay=1e-4)


def test_clipping_as_keras(rng):
    g = [np.array([3.0, 4.0], np.float32), np.array([0.3, 0.4], np.float32)]   # norms 5 and 0.5
    w = [np.zeros(2, np.float32), np.zeros(2, np.float32)]
    keep = [x.copy() for x in g]
    optimizers.SGD(1.0, clipnorm=1.0).apply(g, w)
    np.testing.assert_allclose(w[0], [-0.6, -0.8], rtol=1e-6)     # scaled to norm 1
    np.testing.assert_allclose(w[1], [-0.3, -0.4], rtol=1e-6)     # within the norm: unchanged
    for a, b in zip(g, keep):
        np.testing.assert_array_equal(a, b)                        # the gradients themselves untouched
    w = [np.zeros(2, np.float32), np.zeros(2, np.float32)]
    optimizers.SGD(1.0, global_clipnorm=1.0).apply(g, w)           # global norm sqrt(25.25)
    np.testing.assert_allclose(np.concatenate(w), -np.concatenate(g) / np.sqrt(25.25), rtol=1e-6)
    w = [np.zeros(2, np.float32), np.zeros(2, np.float32)]
    optimizers.SGD(1.0, clipvalue=0.35).apply(g, w)
    np.testing.assert_allclose(np.concatenate(w), [-0.35, -0.35, -0.3, -0.35], rtol=1e-6)
    # one flat buffer holding both variables: variable_sizes makes clipnorm per variable
    flat_w = np.zeros(4, np.float32)
    opt = optimizers.SGD(1.0, clipnorm=1.0)
    opt.variable_sizes = [2, 2]
    opt.apply([np.concatenate(g)], [flat_w])
    np.testing.assert_allclose(flat_w, [-0.6, -0.8, -0.3, -0.4], rtol=1e-6)


def test_weight_decay_on_any_optimizer(rng):
    w0 = rng.standard_normal(5)
    g = rng.standard_normal(5)
    got = run(optimizers.SGD(0.1, weight_decay=0.5), w0, [g])
    np.testing.assert_allclose(got, (w0 - w0 * 0.5 * 0.1) - 0.1 * g, rtol=1e-6)


def test_clipnorm_in_a_model_clips_each_weight(rng):
    """fit() updates one flat buffer; the model tells the optimizer where each variable lies."""
    import autoenc
    inputs = autoenc.Input((4,))
    model = autoenc.Model(inputs, autoenc.layers.Dense(3)(inputs))
    model.compile(optimizers.SGD(1.0, clipnorm=1e-3), "mse")
    x = rng.standard_normal((8, 4)).astype(np.float32) * 10
    before = model.get_weights()
    model.train_on_batch(x, rng.standard_normal((8, 3)).astype(np.float32))
    assert model.optimizer.variable_sizes == [12, 3]
    for a, b in zip(model.get_weights(), before):
        assert np.linalg.norm(a - b) == pytest.approx(1e-3, rel=1e-4)   # each weight moved by exactly clipnorm


@pytest.mark.parametrize("name", ["adadelta", "adagrad", "adamax", "nadam", "adamw"])
def test_save_and_load_continue_exactly(tmp_path, rng, name):
    import autoenc
    from autoenc.models import load_model

    def build():
        autoenc.utils.set_random_seed(0)
        inputs = autoenc.Input((6,))
        h = autoenc.layers.Dense(4, activation="elu")(inputs)
        return autoenc.Model(inputs, autoenc.layers.Dense(6)(h))

    x = rng.standard_normal((12, 6)).astype(np.float32)
    straight = build()
    straight.compile(optimizers.get(name), "mse")
    for _ in range(6):
        straight.train_on_batch(x, x)
    halfway = build()
    halfway.compile(optimizers.get(name), "mse")
    for _ in range(3):
        halfway.train_on_batch(x, x)
    halfway.save(tmp_path / "m.autoenc")
    resumed = load_model(tmp_path / "m.autoenc")
    assert type(resumed.optimizer) is type(straight.optimizer) and resumed.optimizer.iterations == 3
    for _ in range(3):
        resumed.train_on_batch(x, x)
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- live Keras parity ---------------------------------------------------------------------------

KERAS_CASES = {
    "Adadelta()": lambda O: O.Adadelta(),
    "Adadelta(learning_rate=1.0)": lambda O: O.Adadelta(1.0),
    "Adagrad(0.01)": lambda O: O.Adagrad(0.01),
    "Adagrad(0.01, initial_accumulator_value=0.5)": lambda O: O.Adagrad(0.01, initial_accumulator_value=0.5),
    "Adamax(0.01)": lambda O: O.Adamax(0.01),
    "Nadam(0.01)": lambda O: O.Nadam(0.01),
    "Nadam(0.002, beta_1=0.8)": lambda O: O.Nadam(0.002, beta_1=0.8),
    "AdamW(0.01)": lambda O: O.AdamW(0.01),
    "AdamW(0.01, weight_decay=0.1)": lambda O: O.AdamW(0.01, weight_decay=0.1),
    "Adam(0.01, clipnorm=1.0)": lambda O: O.Adam(0.01, clipnorm=1.0),
    "SGD(0.1, clipvalue=0.5)": lambda O: O.SGD(0.1, clipvalue=0.5),
    "RMSprop(0.01, global_clipnorm=1.0)": lambda O: O.RMSprop(0.01, global_clipnorm=1.0),
    "SGD(0.1, momentum=0.9, weight_decay=0.01)": lambda O: O.SGD(0.1, momentum=0.9, weight_decay=0.01),
}


@pytest.mark.keras
@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_keras_parity_six_steps(case):
    """Six steps on two variables (shapes (3, 4) and (5,)) from the same weights and gradients, gradient
    norms 0.3 to 10 (so clipping acts), against keras.optimizers.*.apply_gradients. Each step is the same
    float32 operations in the same order, so the results agree to the last bit except where a sum's order
    differs (global_clipnorm's norm: ~1 ulp of the scale); asserted at 1e-6 of each weight's total change."""
    tf, keras = import_keras()
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[(rng.standard_normal(s) * (0.1 + 2 * k)).astype(np.float32) for s in shapes] for k in range(6)]
    kvars = [tf.Variable(w) for w in w0]
    kopt, aopt = KERAS_CASES[case](keras.optimizers), KERAS_CASES[case](optimizers)
    aw = [w.copy() for w in w0]
    for g in grads:
        kopt.apply_gradients(zip([tf.constant(x) for x in g], kvars))
        aopt.apply(g, aw)
    for a, k, w in zip(aw, kvars, w0):
        k = k.numpy()
        assert np.max(np.abs(a - k)) <= 1e-6 * np.max(np.abs(k - w)), case


@pytest.mark.keras
@pytest.mark.parametrize("name", ["adadelta", "adagrad", "adamax", "nadam", "adamw"])
def test_keras_parity_by_name_in_a_model(name):
    """compile(optimizer=name) with Keras' defaults, 6 train_on_batch steps of a conv autoencoder, every loss
    and final weight against Keras at 1e-5 (the forward and backward passes' own float32 agreement, see
    tests/test_keras_parity.py)."""
    keras = import_keras()[1]
    import autoenc
    from parity_models import odd_model, rel_err, small_images
    keras.utils.set_random_seed(1)
    km, am = odd_model(keras), odd_model(autoenc)
    am.set_weights(km.get_weights())
    km.compile(optimizer=name, loss="mean_squared_error")
    am.compile(optimizer=name, loss="mean_squared_error")
    x = np.ascontiguousarray(small_images(8 * 6, size=13, channels=2)[:, :13, :11])
    for k in range(6):
        xb = x[k * 8:(k + 1) * 8]
        assert rel_err(float(am.train_on_batch(xb, xb)), float(km.train_on_batch(xb, xb))) <= 1e-5
    for wa, wk in zip(am.get_weights(), km.get_weights()):
        assert rel_err(wa, wk) <= 1e-5
