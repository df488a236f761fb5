"""Nested models: a Model or Sequential called on a symbolic tensor inside another model is one node of it
and shares its layers and weights (the encoder / decoder / autoencoder triple), as in Keras."""
import json
import zipfile

import numpy as np
import pytest

import autoenc
from autoenc import Input, Model, Sequential, layers
from autoenc.layers.base import EagerArray
from autoenc.models import load_model
from live_keras import import_keras

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def triple(lib=autoenc, dtype=None, names=("encoder", "decoder", "autoencoder")):
    """encoder (6 -> 4 relu -> 3), decoder (3 -> 6 sigmoid) and autoencoder = decoder(encoder(inp)),
    built the same way with ``lib`` = autoenc or keras."""
    L = lib.layers
    kw = {} if dtype is None else {"dtype": dtype}
    inp = lib.Input(shape=(6,), name="x", **kw)
    h = L.Dense(4, activation="relu", name="e1", **kw)(inp)
    code = L.Dense(3, name="e2", **kw)(h)
    encoder = lib.Model(inp, code, name=names[0])
    code_inp = lib.Input(shape=(3,), name="code", **kw)
    out = L.Dense(6, activation="sigmoid", name="d1", **kw)(code_inp)
    decoder = lib.Model(code_inp, out, name=names[1])
    autoencoder = lib.Model(inp, decoder(encoder(inp)), name=names[2])
    return encoder, decoder, autoencoder


def flat_twin(dtype=None):
    """The autoencoder of ``triple`` without nesting: the same layers in one graph."""
    kw = {} if dtype is None else {"dtype": dtype}
    inp = Input(shape=(6,), **kw)
    x = layers.Dense(4, activation="relu", **kw)(inp)
    x = layers.Dense(3, **kw)(x)
    return Model(inp, layers.Dense(6, activation="sigmoid", **kw)(x))


def data(n=32, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(0, 1, (n, 6)).astype(dtype)


def summary_rows(model):
    lines = []
    model.summary(print_fn=lines.append)
    rows = [line.split() for line in lines[0].splitlines() if "(" in line and ")" in line and "params" not in line]
    return [r for r in rows[1:] if r[0] != "Layer"]   # drop the title row


# --- structure -------------------------------------------------------------------------------------

def test_layers_list_sub_models_as_one_entry_each():
    encoder, decoder, ae = triple()
    assert [l.name for l in ae.layers] == ["x", "encoder", "decoder"]
    assert ae.layers[1] is encoder and ae.layers[2] is decoder
    assert [l.name for l in ae.flat_layers()] == ["x", "e1", "e2", "code", "d1"]
    seq = Sequential([encoder, decoder])
    assert seq.layers == [encoder, decoder] and seq.built and seq.input_shape == (None, 6)


def test_summary_shows_each_sub_model_as_one_row():
    encoder, decoder, ae = triple()
    rows = summary_rows(ae)
    assert [r[:2] for r in rows] == [["x", "(InputLayer)"], ["encoder", "(Functional)"], ["decoder", "(Functional)"]]
    assert [r[-1] for r in rows] == ["0", "43", "24"]   # 6*4+4 + 4*3+3 ; 3*6+6
    lines = []
    ae.summary(print_fn=lines.append)
    assert "Total params: 67" in lines[0] and "(None, 3)" in lines[0]
    rows = summary_rows(Sequential([encoder, decoder], name="seq"))
    assert [r[:2] for r in rows] == [["encoder", "(Functional)"], ["decoder", "(Functional)"]]


def test_sequential_inside_a_functional_model_is_built_from_the_call():
    inner = Sequential([layers.Dense(5, activation="relu"), layers.Dense(2)], name="inner")
    assert not inner.built
    inp = Input(shape=(7,))
    out = layers.Dense(1)(inner(inp))
    model = Model(inp, out)
    assert inner.built and inner.input_shape == (None, 7)
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "Sequential", "Dense"]
    assert model.count_params() == 7 * 5 + 5 + 5 * 2 + 2 + 3
    x = np.random.default_rng(0).uniform(0, 1, (4, 7)).astype(np.float32)
    assert np.array_equal(model.predict(x), model.layers[2](inner.predict(x)))


def test_get_weights_order_and_set_weights_are_the_flat_layers():
    encoder, decoder, ae = triple()
    shapes = [w.shape for w in ae.get_weights()]
    assert shapes == [(6, 4), (4,), (4, 3), (3,), (3, 6), (6,)]
    new = [np.full(s, k, np.float32) for k, s in enumerate(shapes)]
    ae.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(encoder.get_weights() + decoder.get_weights(), new))
    assert len(ae.weights) == 6 and len(ae.trainable_weights) == 6 and ae.count_params() == 67


def test_eager_call_of_nested_models_returns_arrays_with_numpy():
    encoder, decoder, ae = triple()
    x = data(5)
    y = ae(x)
    assert isinstance(y, EagerArray) and type(y.numpy()) is np.ndarray
    assert np.array_equal(y, decoder(encoder(x)).numpy())
    assert np.array_equal(y.numpy(), ae.predict(x))


# --- training --------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mean_squared_error", "binary_crossentropy"])
def test_nested_trains_bit_identically_to_the_same_layers_in_one_graph(loss):
    """The nested triple runs the same kernels in the same order as its flat twin: 5 Adam steps give
    bit-identical losses and weights (binary crossentropy: from the logits of the decoder's sigmoid,
    reached through the sub-model)."""
    _, _, ae = triple()
    twin = flat_twin()
    twin.set_weights(ae.get_weights())
    for m in (ae, twin):
        m.compile(optimizer="adam", loss=loss)
    assert ae.output_layer is ae.get_layer("decoder").get_layer("d1")
    for step in range(5):
        x = data(16, seed=step)
        assert ae.train_on_batch(x, x) == twin.train_on_batch(x, x)
    assert all(np.array_equal(a, b) for a, b in zip(ae.get_weights(), twin.get_weights()))


@pytest.mark.parametrize("loss", ["mean_squared_error", "binary_crossentropy"])
def test_gradient_check_through_sub_models(loss):
    """float64 central differences of the whole nested model (loss included) against its backward, which
    runs each sub-model's backward: a correct gradient is off by ~1e-9 (truncation h^2 and rounding
    eps64 / h), a wrong one by O(1)."""
    autoenc.set_random_seed(3)   # initial weights with live relu units (a dead one has gradient 0 = 0)
    encoder, _, ae = triple()
    ae.compile(optimizer="adam", loss=loss)
    x = data(4, dtype=np.float64)
    ae.predict(x)
    assert (ae.layer_output(encoder.get_layer("e1")) > 0).any(axis=0).sum() >= 2
    errors = autoenc.gradcheck(ae, x, x)
    assert set(errors) == {"input", "e1/kernel", "e1/bias", "e2/kernel", "e2/bias", "d1/kernel", "d1/bias"}
    assert max(errors.values()) < 1e-6, errors


def test_training_the_outer_model_trains_the_shared_layers():
    encoder, decoder, ae = triple()
    x = data(64)
    code_before = encoder.predict(x)
    ae.compile(optimizer="adam", loss="mse")
    ae.fit(x, x, epochs=3, batch_size=16, verbose=0)
    code_after = encoder.predict(x)
    assert not np.array_equal(code_before, code_after)
    assert np.array_equal(decoder.predict(code_after), ae.predict(x))
    ae.predict(x[:8])
    code = encoder.predict(x[:8])
    assert np.array_equal(ae.layer_output(encoder.get_layer("e2")), code)   # a layer inside a sub-model
    assert np.array_equal(ae.layer_output("encoder"), code)


def test_flat_buffer_covers_each_layer_once_through_two_sub_models():
    """A subclassed model holding the encoder, the decoder and the autoencoder made of them: every layer
    is reached through two sub-models, and is trained (and counted) once."""
    encoder, decoder, ae = triple()

    class Holder(Model):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder, self.autoencoder = encoder, decoder, ae

        def call(self, x):
            return self.autoencoder(x)

    holder = Holder()
    holder.compile(optimizer="sgd", loss="mse")
    x = data(8)
    holder.train_on_batch(x, x)
    assert holder._flat_params.size == 67 == holder.count_params()
    assert [w.shape for w in holder.get_weights()] == [w.shape for w in ae.get_weights()]
    for layer in ae.flat_layers():
        for p in layer.params.values():
            assert p.base is holder._flat_params


def test_frozen_sub_model_is_not_updated():
    encoder, decoder, ae = triple()
    encoder.trainable = False
    assert not any(l.trainable for l in encoder.flat_layers())
    before = encoder.get_weights()
    ae.compile(optimizer="adam", loss="mse")
    x = data(16)
    ae.train_on_batch(x, x)
    assert all(np.array_equal(a, b) for a, b in zip(before, encoder.get_weights()))
    assert len(ae.trainable_weights) == 2 and len(ae.non_trainable_weights) == 4


def test_a_layer_called_twice_through_sub_models_is_refused():
    encoder, decoder, _ = triple()
    inp = Input(shape=(6,))
    with pytest.raises(ValueError, match="'e1' is called more than once in this model .sub-model 'encoder' and "
                                         "sub-model 'encoder'.*does not support shared layers"):
        Model(inp, decoder(encoder(decoder(encoder(inp)))))
    e1 = encoder.get_layer("e1")
    with pytest.raises(ValueError, match="'e1' is called more than once in this model .directly and sub-model "
                                         "'encoder'"):
        Model(inp, encoder(layers.Dense(6)(e1(inp))))


def test_calling_a_model_on_a_tensor_of_the_wrong_shape_is_refused():
    encoder, _, _ = triple()
    with pytest.raises(ValueError, match=r"expects inputs of shape \(None, 6\), called on \(None, 5\)"):
        encoder(Input(shape=(5,)))


# --- files ------------------------------------------------------------------------------------------

def _header(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(np.lib.format.read_array(z.open("format.json.npy")).tobytes())


@pytest.mark.parametrize("kind", ["functional", "sequential", "sequential_inside"])
def test_save_and_load_round_trip(tmp_path, kind):
    encoder, decoder, ae = triple()
    if kind == "sequential":
        model = Sequential([encoder, decoder], name="seq")
    elif kind == "sequential_inside":
        inp = Input(shape=(6,))
        model = Model(inp, layers.Dense(2, name="head")(Sequential([layers.Dense(5, name="s1")], name="sub")(inp)))
    else:
        model = ae
    model.compile(optimizer="adam", loss="mse")
    x = data(32)
    model.fit(x, x if kind != "sequential_inside" else x[:, :2], epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "model.autoenc")
    model.save(path)
    assert _header(path)["version"] == 2
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    weighted = lambda m: [l.name for l in m.flat_layers() if l.params]   # noqa: E731  (Inputs come back apart)
    assert weighted(loaded) == weighted(model)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
    assert np.array_equal(loaded.predict(x), model.predict(x))
    subs = [l for l in loaded.layers if isinstance(l, Model)]
    assert subs and all(any(leaf is own for own in loaded.flat_layers()) for s in subs for leaf in s.flat_layers())
    # training continues the same in both (optimizer state saved)
    y = x if kind != "sequential_inside" else x[:, :2]
    assert loaded.train_on_batch(x[:8], y[:8]) == model.train_on_batch(x[:8], y[:8])


def test_loaded_sub_models_share_layers_and_predict_alone(tmp_path):
    encoder, decoder, ae = triple()
    path = str(tmp_path / "ae.autoenc")
    ae.save(path)
    loaded = load_model(path)
    enc, dec = loaded.get_layer("encoder"), loaded.get_layer("decoder")
    assert enc.get_layer("e1") in loaded.flat_layers()
    x = data(8)
    assert np.array_equal(enc.predict(x), encoder.predict(x))
    assert np.array_equal(dec.predict(enc.predict(x)), ae.predict(x))


def test_a_model_without_nesting_is_still_written_as_version_1(tmp_path):
    path = str(tmp_path / "flat.autoenc")
    flat_twin().save(path)
    assert _header(path)["version"] == 1
    assert load_model(path).count_params() == 67


def test_weights_file_round_trip(tmp_path):
    _, _, ae = triple()
    path = str(tmp_path / "w.npz")
    ae.save_weights(path)
    other = triple()[2]
    other.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(other.get_weights(), ae.get_weights()))


def test_two_layers_of_one_name_in_sub_models_cannot_be_saved(tmp_path):
    a = triple(names=("enc_a", "dec_a", "ae_a"))[2]
    b = triple(names=("enc_b", "dec_b", "ae_b"))[2]   # the same explicit layer names e1, e2, d1
    inp = Input(shape=(6,))
    both = Model(inp, b(a(inp)))
    with pytest.raises(ValueError, match="two layers named 'e1'"):
        both.save(str(tmp_path / "both.autoenc"))


# --- live parity with Keras -----------------------------------------------------------------------

keras_only = pytest.mark.keras


def _keras():
    return import_keras()[1]


@keras_only
def test_keras_lists_the_same_layers_and_weights():
    keras = _keras()
    k_enc, k_dec, k_ae = triple(keras)
    encoder, decoder, ae = triple()
    assert [l.name for l in ae.layers] == [l.name for l in k_ae.layers]
    kind = lambda l: "Functional" if type(l) is Model else type(l).__name__   # noqa: E731  (as summary shows it)
    assert [kind(l) for l in ae.layers] == [type(l).__name__ for l in k_ae.layers]
    assert [w.shape for w in ae.get_weights()] == [w.shape for w in k_ae.get_weights()]
    ae.set_weights(k_ae.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(encoder.get_weights(), k_enc.get_weights()))
    seq, k_seq = Sequential([encoder, decoder]), keras.Sequential([k_enc, k_dec])
    assert [l.name for l in seq.layers] == [l.name for l in k_seq.layers]
    assert [w.shape for w in seq.get_weights()] == [w.shape for w in k_seq.get_weights()]


@keras_only
def test_keras_parity_five_adam_steps_float64():
    """The nested triple in float64, Keras' initial weights in both, the same 5 batches: every loss and
    final weight agrees to 1e-10 relative.

    Why 1e-10: each framework computes each value with sums of at most 32 (batch) or 6 (fan-in) terms, an
    error of at most 32 eps64 = 7e-15 times the sum of the magnitudes of the terms; the loss (a sum of
    positive terms) is conditioned 1, a weight gradient (a sum over the batch of terms of both signs) at
    most as ill-conditioned as |g| small against its terms, say 1e3 at worst on these uniform data, and
    Adam's step m / (sqrt(v) + eps) then carries that relative error (eps = 1e-7 is far below |g| ~ 1e-2),
    moving each weight by at most lr = 1e-3 per step: 5 steps x 1e-3 x 7e-12 relative to weights of size
    ~0.5 is ~1e-13, and the loss ~7e-12. 1e-10 leaves a factor 10 over the worst of these."""
    keras = _keras()
    keras.config.set_floatx("float64")
    try:
        _, _, k_ae = triple(keras, dtype="float64")
        _, _, ae = triple(dtype="float64")
        ae.set_weights(k_ae.get_weights())
        k_ae.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="binary_crossentropy")
        ae.compile(optimizer=autoenc.optimizers.Adam(learning_rate=1e-3), loss="binary_crossentropy")
        for step in range(5):
            x = data(32, seed=step, dtype=np.float64)
            lk, la = float(k_ae.train_on_batch(x, x)), float(ae.train_on_batch(x, x))
            assert abs(la - lk) <= 1e-10 * abs(lk), (step, la, lk)
        for wa, wk in zip(ae.get_weights(), k_ae.get_weights()):
            assert np.max(np.abs(wa - wk)) <= 1e-10 * np.max(np.abs(wk))
    finally:
        keras.config.set_floatx("float32")


@keras_only
def test_keras_parity_predict_float32_within_the_rounding_bound():
    """With Keras' weights, both frameworks' float32 predictions lie within the rounding bound of the exact
    (float64) result: a dot product of n terms is off by at most gamma_n sum|x_i w_i| (gamma_n = n u /
    (1 - n u), u = eps32 / 2), carried through relu (1-Lipschitz), the next dot product and the sigmoid
    (derivative at most 1/4). The bound is computed from the data, per element."""
    keras = _keras()
    _, _, k_ae = triple(keras)
    _, _, ae = triple()
    ae.set_weights(k_ae.get_weights())
    x = data(64, seed=7)
    w1, b1, w2, b2, w3, b3 = [w.astype(np.float64) for w in k_ae.get_weights()]
    u = EPS32 / 2
    gamma = lambda n: n * u / (1 - n * u)   # noqa: E731
    x64 = x.astype(np.float64)
    z1 = x64 @ w1 + b1
    e1 = gamma(7) * (np.abs(x64) @ np.abs(w1) + np.abs(b1)) + u * np.abs(z1)   # + the relu output's own rounding
    h = np.maximum(z1, 0)
    z2 = h @ w2 + b2
    e2 = gamma(5) * (np.abs(h) @ np.abs(w2) + np.abs(b2)) + (e1 @ np.abs(w2))
    z3 = z2 @ w3 + b3
    e3 = gamma(4) * (np.abs(z2) @ np.abs(w3) + np.abs(b3)) + (e2 @ np.abs(w3))
    exact = 1 / (1 + np.exp(-z3))
    bound = e3 / 4 + 4 * u * exact   # the sigmoid's own rounding: exp, add, divide, a few u
    for pred in (ae.predict(x), k_ae.predict(x, verbose=0)):
        assert np.all(np.abs(pred - exact) <= bound)
    a, k = ae.predict(x), k_ae.predict(x, verbose=0)
    assert np.max(np.abs(a - k)) / np.max(np.abs(k)) <= max(1e-5, 2 * np.max(bound) / np.max(np.abs(k)))
