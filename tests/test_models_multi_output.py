"""Models of several outputs (Model(x, [z_mean, z_log_var, z]), as Keras): lists from model(x), forward and
predict; backward with one upstream gradient per output (None for an unused one), checked by float64
central differences; the architecture ([name, k] references), files, and nested use."""
import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.models import Model, load_model


def encoder(latent=2, seed=None, dtype="float32"):
    inp = layers.Input(shape=(6,), dtype=dtype)
    h = layers.Dense(5, activation="tanh", dtype=dtype)(inp)
    z_mean = layers.Dense(latent, name="z_mean", dtype=dtype)(h)
    z_log_var = layers.Dense(latent, name="z_log_var", dtype=dtype)(h)
    z = layers.Sampling(seed=seed, dtype=dtype)([z_mean, z_log_var])
    return Model(inp, [z_mean, z_log_var, z], name="encoder")


def sampling_of(model):
    return next(l for l in model.flat_layers() if isinstance(l, layers.Sampling))


def test_call_forward_and_predict_return_one_array_per_output(rng):
    enc = encoder()
    x = rng.random((7, 6)).astype(np.float32)
    sampling_of(enc).epsilon = np.zeros((7, 2), np.float32)   # z = z_mean
    out = enc(x)
    assert isinstance(out, list) and [o.shape for o in out] == [(7, 2)] * 3
    assert hasattr(out[0], "numpy")
    sampling_of(enc).epsilon = None
    pred = enc.predict(x, batch_size=3)   # in batches: each output assembled
    assert isinstance(pred, list) and [p.shape for p in pred] == [(7, 2)] * 3
    np.testing.assert_allclose(pred[0], out[0], rtol=1e-6)
    assert enc.output_shape == [(None, 2)] * 3
    single = Model(enc.inputs, enc.outputs[0])
    assert isinstance(single.predict(x), np.ndarray)   # one output: an array, as before


def _loss(model, x, r):
    """L = sum_k sum(out_k * r_k), the loss whose output gradients are exactly r (None: not used)."""
    return sum(float(np.sum(o * rk)) for o, rk in zip(model.forward(x), r) if rk is not None)


@pytest.mark.parametrize("unused", [None, 0, 2])
def test_backward_one_gradient_per_output_float64(rng, unused):
    """Analytic gradients of every weight and of the input against central differences in float64, with
    eps fixed in Sampling; an output given None contributes nothing."""
    enc = encoder(dtype="float64")
    x = rng.standard_normal((4, 6))
    sampling_of(enc).epsilon = rng.standard_normal((4, 2))
    r = [rng.standard_normal((4, 2)) for _ in range(3)]
    if unused is not None:
        r[unused] = None
    enc.forward(x)
    dx = enc.backward([None if g is None else g.copy() for g in r])
    analytic = {k: g.copy() for k, g in enc.grads.items()}
    h = 1e-6
    for key, p in enc.params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            plus = _loss(enc, x, r)
            p[i] = old - h
            minus = _loss(enc, x, r)
            p[i] = old
            num[i] = (plus - minus) / (2 * h)
        err = np.linalg.norm(analytic[key] - num) / max(np.linalg.norm(analytic[key]) + np.linalg.norm(num), 1e-300)
        assert err < 1e-8, (key, err)
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        plus = _loss(enc, x, r)
        x[i] = old - h
        minus = _loss(enc, x, r)
        x[i] = old
        num[i] = (plus - minus) / (2 * h)
    assert np.linalg.norm(dx - num) / np.linalg.norm(num) < 1e-8


def test_backward_wants_one_gradient_per_output(rng):
    enc = encoder()
    enc.forward(rng.random((2, 6)).astype(np.float32))
    with pytest.raises(ValueError, match="3 outputs: backward needs a list of 3 gradients"):
        enc.backward(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="3 outputs: backward needs a list of 3"):
        enc.backward([None, None])


def test_a_compiled_loss_needs_one_output():
    with pytest.raises(ValueError, match="has 3 outputs: a compiled loss needs one"):
        encoder().compile(optimizer="adam", loss="mse")


def test_config_round_trip_and_file(tmp_path, rng):
    enc = encoder(seed=1)
    config = enc.get_config()
    assert config["outputs"] == ["z_mean", "z_log_var", sampling_of(enc).name]
    assert "output" not in config
    again = Model.from_config(config)
    assert [t.shape for t in again.outputs] == [t.shape for t in enc.outputs]
    assert [l.name for l in again.layers] == [l.name for l in enc.layers]
    enc.save(tmp_path / "enc.autoenc")
    loaded = load_model(tmp_path / "enc.autoenc")
    x = rng.random((3, 6)).astype(np.float32)
    eps = rng.standard_normal((3, 2)).astype(np.float32)
    sampling_of(enc).epsilon = sampling_of(loaded).epsilon = eps
    for a, b in zip(enc.predict(x), loaded.predict(x)):
        np.testing.assert_array_equal(a, b)
    import json
    header = json.loads(np.load(tmp_path / "enc.autoenc")["format.json"].tobytes())
    assert header["version"] == 3


def test_single_output_files_keep_their_format_version(tmp_path):
    inp = layers.Input(shape=(4,))
    m = Model(inp, layers.Dense(2)(inp))
    assert "output" in m.get_config() and "outputs" not in m.get_config()
    m.save(tmp_path / "m.autoenc")
    import json
    assert json.loads(np.load(tmp_path / "m.autoenc")["format.json"].tobytes())["version"] == 1


def test_nested_encoder_of_three_outputs_inside_another_model(rng, tmp_path):
    """decoder(encoder(x)[2]) and a model exposing z_mean too: the sub-model's outputs are tensors of the
    outer graph, referenced as [name, k] in its architecture; gradients reach both heads through Sampling."""
    enc = encoder(dtype="float64")
    lat = layers.Input(shape=(2,), dtype="float64")
    dec = Model(lat, layers.Dense(6, activation="sigmoid", dtype="float64")(lat), name="decoder")
    inp = layers.Input(shape=(6,), dtype="float64")
    z_mean, z_log_var, z = enc(inp)
    outer = Model(inp, [dec(z), z_mean])
    x = rng.random((3, 6))
    sampling_of(outer).epsilon = rng.standard_normal((3, 2))
    y, zm = outer.forward(x)
    assert y.shape == (3, 6) and zm.shape == (3, 2)
    r = [rng.standard_normal((3, 6)), rng.standard_normal((3, 2))]
    outer.forward(x)
    outer.backward([g.copy() for g in r], input_gradients=False)
    h, key = 1e-6, "z_log_var/kernel"
    p = outer.params[key]
    analytic = outer.grads[key].copy()
    num = np.zeros_like(p)
    for i in np.ndindex(p.shape):
        old = p[i]
        p[i] = old + h
        plus = _loss(outer, x, r)
        p[i] = old - h
        minus = _loss(outer, x, r)
        p[i] = old
        num[i] = (plus - minus) / (2 * h)
    assert np.abs(analytic).max() > 0
    assert np.linalg.norm(analytic - num) / np.linalg.norm(num) < 1e-8
    config = outer.get_config()
    assert next(e for e in config["layers"] if e["config"].get("name") == "decoder")["inbound"] == [["encoder", 2]]
    assert config["outputs"] == ["decoder", ["encoder", 0]]
    outer.save(tmp_path / "outer.autoenc")
    loaded = load_model(tmp_path / "outer.autoenc")
    sampling_of(loaded).epsilon = sampling_of(outer).epsilon
    for a, b in zip(outer.predict(x), loaded.predict(x)):
        np.testing.assert_allclose(a, b, rtol=1e-6)   # float64 computed, loaded in the file's dtype


def test_subclassed_model_may_return_several_outputs(rng):
    class Two(Model):
        def __init__(self):
            super().__init__()
            self.a = layers.Dense(3)
            self.b = layers.Dense(2)

        def call(self, x):
            return [self.a(x), self.b(x)]

    m = Two()
    out = m(rng.random((4, 5)).astype(np.float32))
    assert [o.shape for o in out] == [(4, 3), (4, 2)]


def test_summary_shows_every_output_shape():
    enc = encoder()
    inp = layers.Input(shape=(6,))
    outer = Model(inp, enc(inp))
    lines = []
    outer.summary(print_fn=lines.append, show_flops=True)
    assert "(None, 2), (None, 2), (None, 2)" in lines[0]
