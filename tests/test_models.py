"""Models: the seed autoencoder's structure and summary, training, the Keras API around it."""
import io
import contextlib

import numpy as np
import pytest

import autoenc
from autoenc import callbacks, layers, optimizers
from autoenc.gradcheck import gradcheck
from autoenc.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D, Reshape, UpSampling2D
from autoenc.models import Model, Sequential, seed_autoencoder


def seed_model():
    """The blog post's model (test_seed_script_runs_with_the_import_swap spells it out as the post does)."""
    return seed_autoencoder()


def blobs(n, seed=0, size=28):
    """Images of one or two soft bright discs on black: easy to learn, like digits in [0, 1]."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size, 1), np.float32)
    for k in range(n):
        for _ in range(g.integers(1, 3)):
            m = size / 5
            cy, cx, r = g.uniform(m, size - m), g.uniform(m, size - m), g.uniform(m / 2, m * 1.2)
            out[k, :, :, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))
    return np.clip(out, 0, 1)


def summary_text(model):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.summary()
    return buf.getvalue()


def test_seed_model_structure_and_summary():
    model = seed_model()
    assert model.count_params() == 4385
    text = summary_text(model)
    rows = [line.split() for line in text.splitlines() if "(None," in line]
    assert [r[1] for r in rows] == ["(InputLayer)", "(Conv2D)", "(MaxPooling2D)", "(Conv2D)", "(MaxPooling2D)",
                                    "(Conv2D)", "(Conv2D)", "(UpSampling2D)", "(Conv2D)", "(UpSampling2D)",
                                    "(Conv2D)", "(Conv2D)"]
    shapes = [" ".join(r[2:-1]) for r in rows]
    assert shapes == ["(None, 28, 28, 1)", "(None, 28, 28, 16)", "(None, 14, 14, 16)", "(None, 14, 14, 8)",
                      "(None, 7, 7, 8)", "(None, 7, 7, 8)", "(None, 7, 7, 8)", "(None, 14, 14, 8)",
                      "(None, 14, 14, 8)", "(None, 28, 28, 8)", "(None, 28, 28, 16)", "(None, 28, 28, 1)"]
    assert [int(r[-1]) for r in rows] == [0, 160, 0, 1160, 0, 584, 584, 0, 584, 0, 1168, 145]
    assert "Total params: 4,385" in text and "Trainable params: 4,385" in text
    assert [w.shape for w in model.get_weights()][:2] == [(3, 3, 1, 16), (16,)]


def test_seed_script_runs_with_the_import_swap():
    """The post's code with `keras` replaced by `autoenc`, on random (N, 28, 28, 1) float32 data."""
    from autoenc.models import Model, Sequential  # noqa: F401  (the post's imports, as written)
    from autoenc.layers import Input, Dense, Conv2D, MaxPooling2D, UpSampling2D, Flatten, Reshape, Dropout  # noqa
    from autoenc import regularizers  # noqa: F401
    g = np.random.default_rng(0)
    x_train = g.random((64, 28, 28), dtype=np.float32)
    x_test = g.random((32, 28, 28), dtype=np.float32)
    max_value = float(x_train.max())
    x_train = x_train.astype("float32") / max_value
    x_test = x_test.astype("float32") / max_value
    x_train = x_train[:, :, :, None]
    x_test = x_test[:, :, :, None]
    input_img = Input(shape=(28, 28, 1))
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(input_img)
    x = MaxPooling2D((2, 2), padding="same")(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = MaxPooling2D((2, 2), padding="same")(x)
    encoded = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = UpSampling2D((2, 2))(x)
    x = Conv2D(16, (3, 3), activation="relu", padding="same")(x)
    decoded = Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    autoencoder = Model(input_img, decoded)
    text = summary_text(autoencoder)
    assert "Total params: 4,385" in text
    autoencoder.compile(optimizer="adam", loss="mean_squared_error")
    history = autoencoder.fit(x_train, x_train, epochs=2, batch_size=256, shuffle=True,
                              validation_data=(x_test, x_test), verbose=0)
    assert len(history.history["loss"]) == 2 and len(history.history["val_loss"]) == 2
    assert all(np.isfinite(history.history["val_loss"]))


def test_a_few_hundred_steps_drive_the_mse_down():
    autoenc.set_random_seed(0)
    model = seed_model()
    model.compile(optimizer=optimizers.Adam(learning_rate=3e-3), loss="mse")
    x = blobs(16)
    first = model.test_on_batch(x, x)
    for _ in range(300):
        loss = model.train_on_batch(x, x)
    assert loss < 0.25 * first, (first, loss)
    assert model.evaluate(x, x, verbose=0) == pytest.approx(model.test_on_batch(x, x), rel=1e-6)


def test_model_gradients_by_central_differences():
    """The whole graph's backward pass, loss included, in float64 (a smaller seed-like model)."""
    inp = Input(shape=(8, 8, 1))
    x = Conv2D(3, 3, activation="relu", padding="same")(inp)
    x = MaxPooling2D(padding="same")(x)
    x = Conv2D(2, 3, activation="tanh", padding="same", kernel_regularizer="l2", activity_regularizer="l1")(x)
    x = UpSampling2D()(x)
    out = Conv2D(1, 3, activation="sigmoid", padding="same", bias_regularizer="l1_l2")(x)
    model = Model(inp, out)
    x = blobs(2, size=8)
    for loss in ["mse", "mae", "binary_crossentropy"]:
        model.compile(optimizer="adam", loss=loss)
        errors = gradcheck(model, x, x)
        assert max(errors.values()) < 1e-6, (loss, errors)


def test_functional_dag_with_branches_trains():
    inp = Input(shape=(6, 6, 2))
    a = Conv2D(3, 3, padding="same", activation="relu")(inp)
    b = Conv2D(3, 1, activation="tanh")(inp)
    s = layers.Add()([a, b])
    c = layers.Concatenate()([s, inp])
    out = Conv2D(2, 3, padding="same")(c)
    model = Model(inp, out)
    assert [type(l).__name__ for l in model.layers][0] == "InputLayer"
    model.compile("adam", "mse")
    x = np.random.default_rng(0).random((4, 6, 6, 2)).astype(np.float32)
    errors = gradcheck(model, x, x)
    assert max(errors.values()) < 1e-6, errors
    losses = [model.train_on_batch(x, x) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_sequential_forms_agree():
    autoenc.set_random_seed(3)
    a = Sequential([Input(shape=(4, 4, 1)), Conv2D(2, 3, padding="same", activation="relu"), Flatten(), Dense(3)])
    autoenc.set_random_seed(3)
    b = Sequential()
    b.add(Conv2D(2, 3, padding="same", activation="relu", input_shape=(4, 4, 1)))
    b.add(Flatten())
    b.add(Dense(3))
    autoenc.set_random_seed(3)
    c = Sequential([Conv2D(2, 3, padding="same", activation="relu"), Flatten(), Dense(3)])
    assert not c.built
    x = np.random.default_rng(1).random((5, 4, 4, 1)).astype(np.float32)
    pa, pb, pc = a.predict(x, verbose=0), b.predict(x, verbose=0), c.predict(x, verbose=0)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(pa, pc)
    assert [type(l).__name__ for l in a.layers] == ["Conv2D", "Flatten", "Dense"]  # as Keras: no InputLayer
    assert a.count_params() == 2 * 9 + 2 + 32 * 3 + 3


def test_dense_autoencoder_with_dropout_reshape_trains():
    autoenc.set_random_seed(1)
    model = Sequential([Input(shape=(28, 28, 1)), Flatten(), Dense(32, activation="relu"), Dropout(0.1),
                        Dense(784, activation="sigmoid"), Reshape((28, 28, 1))])
    model.compile("adam", "binary_crossentropy")
    x = blobs(64)
    h = model.fit(x, x, epochs=15, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_fit_history_is_the_sample_weighted_mean_of_batch_losses():
    autoenc.set_random_seed(0)
    model = seed_model()
    model.compile("adam", "mse")
    x = blobs(40)
    weights = model.get_weights()
    seen = []
    cb = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs["loss"]))
    h = model.fit(x, x, epochs=1, batch_size=16, shuffle=False, callbacks=[cb], verbose=0)
    # replay the same three batches (16, 16 and the last partial 8) with train_on_batch
    model.set_weights(weights)
    model.optimizer = optimizers.Adam()
    batch_losses = [model.train_on_batch(x[i:i + 16], x[i:i + 16]) for i in (0, 16, 32)]
    expected = (16 * batch_losses[0] + 16 * batch_losses[1] + 8 * batch_losses[2]) / 40
    assert h.history["loss"][0] == pytest.approx(expected, rel=1e-6)
    assert seen[-1] == pytest.approx(expected, rel=1e-6) and len(seen) == 3


def test_validation_split_uses_the_last_samples():
    model = Sequential([Input(shape=(3,)), Dense(1)])
    model.compile("sgd", "mse")
    x = np.arange(30, dtype=np.float32).reshape(10, 3) / 30
    y = np.ones((10, 1), np.float32)
    h = model.fit(x, y, epochs=1, validation_split=0.2, verbose=0, shuffle=False)
    assert "val_loss" in h.history


def test_set_random_seed_gives_bit_identical_training():
    def train():
        autoenc.set_random_seed(42)
        model = seed_model()
        model.compile("adam", "mse")
        x = blobs(24, seed=3)
        model.fit(x, x, epochs=2, batch_size=8, verbose=0)
        return model.get_weights()
    for a, b in zip(train(), train()):
        np.testing.assert_array_equal(a, b)


def test_get_set_weights_and_save_load(tmp_path):
    autoenc.set_random_seed(0)
    a = seed_model()
    b = seed_model()
    x = blobs(3)
    assert not np.array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))
    path = tmp_path / "w.npz"
    a.save_weights(path)
    c = seed_model()
    c.load_weights(path)
    np.testing.assert_array_equal(a.predict(x, verbose=0), c.predict(x, verbose=0))
    with pytest.raises(ValueError, match="expects 14 arrays"):
        c.set_weights(a.get_weights()[:-1])
    with pytest.raises(FileNotFoundError):
        c.load_weights(tmp_path / "missing.npz")


def test_predict_is_batched_and_matches_a_single_batch():
    model = seed_model()
    x = blobs(37)
    np.testing.assert_allclose(model.predict(x, batch_size=8, verbose=0), model.predict_on_batch(x), rtol=1e-6)
    np.testing.assert_allclose(model(x), model.predict_on_batch(x), rtol=1e-6)


def test_get_layer_and_errors():
    model = seed_model()
    conv = model.layers[1]
    assert model.get_layer(conv.name) is conv and model.get_layer(index=1) is conv
    with pytest.raises(ValueError, match="No layer named"):
        model.get_layer("nope")
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(blobs(2), blobs(2), verbose=0)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match=r"shape \(batch, 28, 28, 1\), got \(2, 32, 32, 1\)"):
        model.fit(np.zeros((2, 32, 32, 1), np.float32), np.zeros((2, 32, 32, 1), np.float32), verbose=0)
    with pytest.raises(ValueError, match="same number of samples"):
        model.fit(blobs(3), blobs(2), verbose=0)
    with pytest.raises(ValueError, match="batch_size"):
        model.fit(blobs(2), blobs(2), batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        bad = blobs(2)
        bad[1, 3, 3, 0] = np.nan
        model.fit(bad, bad, verbose=0)
    with pytest.raises(ValueError, match="Unknown loss"):
        model.compile("adam", "msee")


# --- issue 17: all-or-nothing set_weights, deep graphs ---------------------------------------------

def _two_layer_model():
    autoenc.set_random_seed(0)
    inp = Input(shape=(4,))
    return Model(inp, Dense(2)(Dense(3)(inp)))


def test_set_weights_refuses_values_that_overflow_the_layer_dtype():
    # 1e39 is finite in float64 but inf in float32: the check must look at the cast value
    model = _two_layer_model()
    weights = [w.astype(np.float64) for w in model.get_weights()]
    weights[0][0, 0] = 1e39
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.set_weights(weights)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.layers[1].set_weights(weights[:2])


def test_set_weights_is_all_or_nothing():
    model = _two_layer_model()
    before = model.get_weights()
    new = [w + 1 for w in before]
    new[-1][0] = np.nan   # the last array is bad: nothing may be written
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.set_weights(new)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    layer = model.layers[1]
    layer_before = layer.get_weights()
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer.set_weights([layer_before[0] + 1, np.full_like(layer_before[1], np.inf)])
    np.testing.assert_array_equal(layer.get_weights()[0], layer_before[0])


def test_load_weights_is_all_or_nothing(tmp_path):
    model = _two_layer_model()
    before = model.get_weights()
    other = _two_layer_model()
    other.set_weights([w + 1 for w in before])
    other.layers[-1].params["bias"][0] = np.inf   # written behind set_weights' back
    other.save_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.load_weights(tmp_path / "w.npz")
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def _deep_sequential(depth):
    from autoenc.layers import Activation
    return Sequential([Input(shape=(3,))] + [Activation("linear") for _ in range(depth)])


@pytest.fixture
def recursion_limit_1000():
    """Python's default recursion limit (another test may have raised it): a recursive walk of 1,500
    layers then fails."""
    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(old)


def test_a_model_of_1500_layers_builds_runs_and_saves_without_recursion(tmp_path, recursion_limit_1000):
    depth = 1500
    from autoenc.layers import Activation
    inp = Input(shape=(3,))
    x = inp
    for _ in range(depth):
        x = Activation("linear")(x)
    model = Model(inp, x)
    assert len(model.layers) == depth + 1
    seq = _deep_sequential(depth)
    assert len(seq.layers) == depth
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model.predict(data, verbose=0), data)
    for m, name in ((model, "f.autoenc"), (seq, "s.autoenc")):
        m.save(tmp_path / name)
        loaded = autoenc.models.load_model(tmp_path / name)
        assert len(loaded.layers) == len(m.layers)
        np.testing.assert_array_equal(loaded.predict(data, verbose=0), data)


# --- issue 12: the graph is public --------------------------------------------------------------------

def test_nodes_and_layer_output_show_the_last_forward_pass():
    model = seed_model()
    assert [node.layer for node in model.nodes] == model.layers[1:]   # a chain: forward order is Keras' order
    assert model.layer_output(model.layers[3]) is None   # no forward pass yet
    x = blobs(3)
    out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.layer_output(model.output_layer), out)
    np.testing.assert_array_equal(model.layer_output(model.layers[0]), x)          # the InputLayer: the batch
    assert model.layer_output(model.layers[3].name).shape == (3, 14, 14, 8)   # conv2d_1
    with pytest.raises(ValueError, match="not a layer of model"):
        model.layer_output(Dense(2))


def test_logits_are_the_output_layers_pre_activation():
    model = seed_model()
    out = model.predict(blobs(2), verbose=0)
    z = model.output_layer.logits
    np.testing.assert_allclose(1 / (1 + np.exp(-z.astype(np.float64))), out, rtol=0, atol=1e-6)
    assert model.layers[1].logits is None           # relu is fused into the convolution: no pre-activation kept
    assert layers.MaxPooling2D().logits is None     # the base class: no activation


def test_a_sigmoid_layer_without_logits_trains_on_probabilities():
    class Squash(layers.Activation):
        @property
        def logits(self):
            return None
    autoenc.set_random_seed(0)
    inp = Input(shape=(4,))
    model = Model(inp, Squash("sigmoid")(Dense(4)(inp)))
    model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    from autoenc.losses import BinaryCrossentropy
    expected = float(BinaryCrossentropy().value(x, model.predict(x, verbose=0)))
    # the same mean of 32 float32 terms, maybe summed in another order: |error| <= 32 * 1.2e-7 relative
    np.testing.assert_allclose(model.train_on_batch(x, x), expected, rtol=32 * 1.2e-7)


def test_no_module_outside_models_reads_the_models_private_fields():
    import pathlib
    import re
    root = pathlib.Path(autoenc.__file__).parent
    private = re.compile(r"\.(_nodes|_values|_node_of|_loss_logits|_loss_grad|_flat_params|_flat_grads|_param_refs|"
                         r"_regularization_loss|_stack|_input|_layers)\b")
    offenders = [f"{path.relative_to(root)}:{k + 1}" for path in root.rglob("*.py") if path.parent.name != "models"
                 for k, line in enumerate(path.read_text().splitlines()) if private.search(line)]
    assert offenders == []


# --- the execution plan: UpSampling2D((2, 2)) then a 3x3 Conv2D, run fused -------------------------
#
# A model runs such a pair as one call, Conv2D.forward_upsampled on the small input (the kernels and
# their bounds: tests/test_kernels_upsample_conv.py). These tests check the plan (which pairs fuse)
# and its wiring: the model computes exactly what the fused layer calls compute by hand, bit for
# bit, and its gradients pass the float64 central-difference check.

def _forbid_forward(layer):
    """Make the UpSampling2D ``layer``'s kernel raise if the model runs it (the layer's own methods are
    left alone: a wrapper set on the layer itself turns its fusion off)."""
    def fail(*args, **kwargs):
        raise AssertionError(f"{layer.name} ran: it should have been fused into the next Conv2D")
    layer._kernels.forward = fail


def _count_forward(layer):
    """The list that gets one entry per run of the UpSampling2D ``layer``'s forward kernel."""
    calls = []
    plain = layer._kernels.forward
    layer._kernels.forward = lambda *args, **kwargs: calls.append(1) or plain(*args, **kwargs)
    return calls


def test_seed_model_runs_its_two_upsamplings_fused(rng):
    model = seed_model()
    x = rng.random((3, 28, 28, 1)).astype(np.float32)
    ups = [n.layer for n in model.nodes if isinstance(n.layer, UpSampling2D)]
    for up in ups:
        _forbid_forward(up)
    y = np.array(model.forward(x), copy=True)
    # by hand, with the same calls: the model's wiring adds nothing
    v = x
    nodes = model.nodes
    for k, node in enumerate(nodes):
        if isinstance(node.layer, UpSampling2D):
            continue
        if k > 0 and isinstance(nodes[k - 1].layer, UpSampling2D):
            v = np.array(node.layer.forward_upsampled(v), copy=True)
        else:
            v = np.array(node.layer.forward(v), copy=True)
    np.testing.assert_array_equal(y, v)
    model.forward(x)
    for k, node in enumerate(nodes):   # a fused UpSampling2D's output is made when asked for: its input, repeated
        if isinstance(node.layer, UpSampling2D):
            small = model.layer_output(nodes[k - 1].layer)
            np.testing.assert_array_equal(model.layer_output(node.layer), small.repeat(2, axis=1).repeat(2, axis=2))
            assert model.layer_output(node.layer) is model.layer_output(node.layer)


def _small_fused_model():
    """Input -> UpSampling -> Conv(relu, 'same') -> UpSampling -> Conv(1, sigmoid, 'valid'): both pairs
    fuse, the first reads the model input (its gradient is the input's), the last is the output
    (binary crossentropy takes it from the logits)."""
    inp = Input(shape=(3, 4, 2))
    h = UpSampling2D(2)(inp)
    h = Conv2D(3, 3, padding="same", activation="relu", bias_initializer="random_normal")(h)
    h = UpSampling2D(2)(h)
    out = Conv2D(1, 3, padding="valid", activation="sigmoid")(h)
    return Model(inp, out)


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_fused_model_passes_the_gradient_check(loss, rng):
    model = _small_fused_model()
    model.compile(optimizer="adam", loss=loss)
    x = rng.standard_normal((2, 3, 4, 2))
    y = rng.random((2, 10, 14, 1))
    errors = gradcheck(model, x, y)
    assert max(errors.values()) < 1e-6, errors


def test_fused_model_input_gradient_and_need_dx(rng):
    model = _small_fused_model()
    for node in model.nodes:
        if isinstance(node.layer, UpSampling2D):
            _forbid_forward(node.layer)
    x = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    dy = rng.standard_normal((2, 10, 14, 1)).astype(np.float32)
    model.forward(x)
    assert model.backward(dy, input_gradients=False) is None   # the first Conv2D skips dL/dx
    model.forward(x)
    dx = model.backward(dy)
    assert dx.shape == x.shape
    # by hand
    conv1, conv2 = [n.layer for n in model.nodes if isinstance(n.layer, Conv2D)]
    h = np.array(conv1.forward_upsampled(x), copy=True)
    conv2.forward_upsampled(h)
    np.testing.assert_array_equal(dx, conv1.backward(conv2.backward(dy)))


def test_fused_pairs_inside_sequential_nested_and_multi_output_models(rng):
    x = rng.standard_normal((2, 4, 4, 2)).astype(np.float32)
    # Sequential goes through the same graph
    seq = Sequential([Input(shape=(4, 4, 2)), Conv2D(3, 3, padding="same", activation="relu"), UpSampling2D(2),
                      Conv2D(2, 3, padding="same")])
    _forbid_forward(seq.layers[1])
    conv_a, conv_b = seq.layers[0], seq.layers[2]
    y = np.array(seq.forward(x), copy=True)
    np.testing.assert_array_equal(y, conv_b.forward_upsampled(np.array(conv_a.forward(x), copy=True)))
    # a nested decoder fuses its own pair
    inp = Input(shape=(4, 4, 2))
    decoder = Sequential([Input(shape=(4, 4, 3)), UpSampling2D(2), Conv2D(1, 3, padding="same", activation="sigmoid")])
    enc = Conv2D(3, 3, padding="same", activation="relu")
    outer = Model(inp, decoder(enc(inp)))
    _forbid_forward(decoder.layers[0])
    outer.compile(optimizer="sgd", loss="binary_crossentropy")
    outer.train_on_batch(x, rng.random((2, 8, 8, 1)).astype(np.float32))
    # several outputs: the fused Conv2D's output and the tensor before the UpSampling
    inp = Input(shape=(4, 4, 2))
    c1 = Conv2D(3, 3, padding="same", activation="relu")
    up, c2 = UpSampling2D(2), Conv2D(2, 3, padding="same")
    h = c1(inp)
    model = Model(inp, [c2(up(h)), h])
    _forbid_forward(up)
    y2, y1 = [np.array(v, copy=True) for v in model.forward(x)]
    d2 = rng.standard_normal(y2.shape).astype(np.float32)
    d1 = rng.standard_normal(y1.shape).astype(np.float32)
    dx = np.array(model.backward([d2, d1]), copy=True)
    dk2 = c2.grads["kernel"].copy()
    h_ = np.array(c1.forward(x), copy=True)
    np.testing.assert_array_equal(y1, h_)
    np.testing.assert_array_equal(y2, c2.forward_upsampled(h_))
    np.testing.assert_array_equal(dk2, (c2.backward(d2), c2.grads["kernel"])[1])
    c2.forward_upsampled(h_)
    np.testing.assert_array_equal(dx, c1.backward(d1 + c2.backward(d2)))


def _pair_model(up_kwargs=None, conv_kwargs=None, extra=None):
    inp = Input(shape=(5, 5, 2))
    up = UpSampling2D(**(up_kwargs or {}))
    conv = (extra or {}).get("conv_class", Conv2D)(2, **{"kernel_size": 3, "padding": "same", **(conv_kwargs or {})})
    u = up(inp)
    y = conv(u)
    outputs = y
    if (extra or {}).get("also_output"):
        outputs = [y, u]
    if (extra or {}).get("read_twice"):
        outputs = layers.Add()([y, Conv2D(2, 3, padding="same")(u)])
    return Model(inp, outputs), up


class _Doubled(Conv2D):
    """A Conv2D that computes something else: never fused."""

    def forward(self, x, training=False):
        return 2 * super().forward(x, training)


@pytest.mark.parametrize("case", [
    {"up_kwargs": {"size": (2, 3)}},
    {"up_kwargs": {"activity_regularizer": "l2"}},
    {"conv_kwargs": {"kernel_size": 5}},
    {"conv_kwargs": {"strides": 2}},
    {"extra": {"also_output": True}},
    {"extra": {"read_twice": True}},
    {"extra": {"conv_class": _Doubled}},
    {"wrapped": True},
    {"reference": True},
])
def test_pairs_that_do_not_fuse(case, rng):
    model, up = _pair_model(case.get("up_kwargs"), case.get("conv_kwargs"), case.get("extra"))
    calls = _count_forward(up)
    if case.get("wrapped"):   # a layer whose method the user wrapped runs as it is (watch_backprop.py)
        conv = model.nodes[-1].layer
        plain_backward = conv.backward
        conv.backward = lambda dy, **kwargs: plain_backward(dy, **kwargs)
    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    with autoenc.reference_kernels(case.get("reference", False)):
        model.forward(x)
    assert calls == [1]
    np.testing.assert_array_equal(model.layer_output(up), up.forward(x))


def test_a_pair_fuses_by_model_not_by_layer(rng):
    """Layers shared by two models: fused in the one where the UpSampling2D output feeds only the
    Conv2D, not in the one that also returns it."""
    inp = Input(shape=(5, 5, 2))
    up, conv = UpSampling2D(2), Conv2D(2, 3, padding="same")
    u = up(inp)
    y = conv(u)
    fused, plain = Model(inp, y), Model(inp, [y, u])
    calls = _count_forward(up)
    x = rng.standard_normal((2, 5, 5, 2)).astype(np.float32)
    y_fused = np.array(fused.forward(x), copy=True)
    assert calls == []
    plain.forward(x)
    assert calls == [1]
    np.testing.assert_array_equal(y_fused, conv.forward_upsampled(x))


# --- the execution plan: a ReLU Conv2D then MaxPooling2D, backward run fused ------------------------
#
# A model runs the pooling's backward inside the Conv2D's (Conv2D.backward_maxpooled; the kernel
# against the two passes it replaces: tests/test_kernels.py). These tests check the plan and that a
# step gives the same bits fused and not (a method set on the layer itself turns fusion off).

def _forbid_pool_backward(pool):
    """Make the MaxPooling2D ``pool``'s backward kernel raise if the model runs it: its backward must
    run inside the Conv2D's. Returns a function that undoes it."""
    def fail(*args, **kwargs):
        raise AssertionError(f"{pool.name}'s backward ran: it should have been fused into the Conv2D's")
    pool._kernels.backward = fail
    return lambda: vars(pool._kernels).pop("backward")


def _unfused(model):
    """Turn the model's Conv2D-MaxPooling2D fusion off (a method wrapped on each pooling layer)."""
    for layer in model.flat_layers():
        if isinstance(layer, MaxPooling2D):
            layer.backward = layer.backward


def _gradients(model, x, target, input_gradients):
    """dx (None without input gradients) and every gradient of one training step's backward pass, copied."""
    y = model.forward(x, training=True)
    _, dy, from_logits = model.compute_loss_and_gradient(target, y)
    dx = model.backward(dy, from_logits=from_logits, input_gradients=input_gradients)
    grads = [np.array(g, copy=True) for layer in model.flat_layers() for g in layer.grads.values()]
    return (None if dx is None else np.array(dx, copy=True)), grads


def _nested_pooling_model():
    """An encoder sub-model ending in its pooling (its output), an activity penalty on a pooled
    output, odd sizes with 'same' pooling, overlapping windows (strides 1), 3 and 9 channels."""
    inp = Input(shape=(9, 7, 3))
    h = Conv2D(9, 3, padding="same", activation="relu", bias_initializer="random_normal")(inp)
    h = MaxPooling2D(2, strides=1, padding="same", activity_regularizer="l2")(h)
    h = Conv2D(3, 3, padding="valid", activation="relu", bias_initializer="random_normal")(h)
    encoder = Model(inp, MaxPooling2D(2, padding="same")(h))
    outer_in = Input(shape=(9, 7, 3))
    h = encoder(outer_in)
    h = UpSampling2D(2)(h)
    return Model(outer_in, Conv2D(3, 3, padding="same", activation="sigmoid")(h))


@pytest.mark.parametrize("make", [seed_model, _nested_pooling_model])
def test_conv_pool_pairs_give_the_same_bits_fused_and_not_on_1_and_2_threads(make, rng):
    import numba
    autoenc.set_random_seed(1)
    model = make()
    model.compile("adam", "binary_crossentropy")
    pools = [layer for layer in model.flat_layers() if isinstance(layer, MaxPooling2D)]
    assert len(pools) == 2
    shape = model.inputs[0].shape[1:]
    x = rng.random((9,) + shape).astype(np.float32)   # 9 samples: more than the 8 reduction chunks
    target = rng.random(model.outputs[0].shape[1:]).astype(np.float32) * np.ones((9, 1, 1, 1), np.float32)
    before = numba.get_num_threads()
    try:
        results = {}
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            undo = [_forbid_pool_backward(p) for p in pools]
            for input_gradients in (False, True):   # the first Conv2D skips dx, or not
                results[threads, input_gradients] = _gradients(model, x, target, input_gradients)
            for u in undo:
                u()
    finally:
        numba.set_num_threads(before)
    numba.set_num_threads(1)
    try:
        _unfused(model)
        want = {flag: _gradients(model, x, target, flag) for flag in (False, True)}
    finally:
        numba.set_num_threads(before)
    for (threads, flag), (dx, grads) in results.items():
        assert (dx is None) == (not flag)
        if flag:
            assert dx.tobytes() == want[flag][0].tobytes(), threads
        for g, w in zip(grads, want[flag][1]):
            assert g.tobytes() == w.tobytes(), threads


def test_conv_pool_pairs_pass_the_gradient_check(rng):
    model = _nested_pooling_model()
    model.compile(optimizer="adam", loss="mse")
    for layer in model.flat_layers():
        if isinstance(layer, MaxPooling2D):   # gradcheck's float64 copy keeps it: the pair must fuse there
            _forbid_pool_backward(layer)
    x = rng.standard_normal((2, 9, 7, 3))
    y = rng.random((2, 8, 6, 3))
    errors = gradcheck(model, x, y)
    assert max(errors.values()) < 1e-6, errors


def _conv_pool_model(conv_kwargs=None, also_output=False, read_twice=False, upsample_first=False, conv_class=Conv2D):
    inp = Input(shape=(6, 6, 2))
    h = UpSampling2D(2)(inp) if upsample_first else inp
    y = conv_class(4, 3, padding="same", **{"activation": "relu", **(conv_kwargs or {})})(h)
    pool = MaxPooling2D(2)
    out = Conv2D(2, 3, padding="same")(pool(y))
    if read_twice:
        out = layers.Add()([out, Conv2D(2, 3, strides=2, padding="same")(y)])
    return Model(inp, [out, y] if also_output else out), pool


@pytest.mark.parametrize("case, fuses", [
    ({}, True),
    ({"conv_kwargs": {"activation": autoenc.activations.get("relu")}}, True),
    ({"conv_kwargs": {"activation": "sigmoid"}}, False),
    ({"conv_kwargs": {"activation": "linear"}}, False),
    ({"conv_kwargs": {"activity_regularizer": "l1"}}, False),   # it needs the Conv2D output's gradient
    ({"also_output": True}, False),
    ({"read_twice": True}, False),
    ({"upsample_first": True}, False),   # the Conv2D runs forward_upsampled
    ({"conv_class": _Doubled}, False),
    ({"wrapped": "conv"}, False),
    ({"wrapped": "pool"}, False),
    ({"reference": True}, False),
])
def test_which_conv_pool_pairs_fuse(case, fuses, rng):
    model, pool = _conv_pool_model(**{k: v for k, v in case.items() if k not in ("wrapped", "reference")})
    calls = []
    plain = pool._kernels.backward
    pool._kernels.backward = lambda dy: calls.append(1) or plain(dy)
    conv = [layer for layer in model.layers if isinstance(layer, Conv2D)][0]
    if case.get("wrapped"):   # a method wrapped on the layer itself (watch_backprop.py): run as written
        layer = conv if case["wrapped"] == "conv" else pool
        layer.backward = layer.backward
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    with autoenc.reference_kernels(case.get("reference", False)):
        ys = model.forward(x)
        model.backward([np.ones_like(y) for y in ys] if isinstance(ys, list) else np.ones_like(ys))
    assert calls == ([] if fuses else [1])


def test_backward_maxpooled_refuses_a_conv_without_relu():
    conv = Conv2D(2, 3, activation="sigmoid")
    with pytest.raises(ValueError, match="activation='relu', got 'sigmoid'"):
        conv.backward_maxpooled(np.zeros((1, 1, 1, 2), np.float32), MaxPooling2D())
