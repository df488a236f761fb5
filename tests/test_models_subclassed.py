"""Subclassed models: layers and sub-models assigned in __init__, call() traced into a graph on first use
(TensorFlow's "Intro to Autoencoders" classes), eager results with .numpy(), custom train_step, and the
clear errors for code that cannot be traced."""
import pickle

import numpy as np
import pytest

import autoenc
from autoenc import Input, Model, Sequential, layers, losses
from autoenc.layers.base import EagerArray
from autoenc.models import load_model
from live_keras import import_keras

EPS32 = float(np.finfo(np.float32).eps)


def tutorial_autoencoder(lib, latent_dim=8, shape=(28, 28)):
    """TensorFlow's tutorial class, with ``tf.math.reduce_prod(shape).numpy()`` as ``int(np.prod(shape))``."""

    class Autoencoder(lib.Model):
        def __init__(self, latent_dim, shape):
            super(Autoencoder, self).__init__()
            self.latent_dim = latent_dim
            self.shape = shape
            self.encoder = lib.Sequential([lib.layers.Flatten(), lib.layers.Dense(latent_dim, activation="relu")])
            self.decoder = lib.Sequential([lib.layers.Dense(int(np.prod(shape)), activation="sigmoid"),
                                           lib.layers.Reshape(shape)])

        def call(self, x):
            encoded = self.encoder(x)
            decoded = self.decoder(encoded)
            return decoded

    return Autoencoder(latent_dim, shape)


def images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 28, 28)).astype(np.float32)


class AnomalyDetector(Model):
    """The tutorial's ECG model (140 samples per beat)."""

    def __init__(self):
        super(AnomalyDetector, self).__init__()
        self.encoder = Sequential([layers.Dense(32, activation="relu"), layers.Dense(16, activation="relu"),
                                   layers.Dense(8, activation="relu")])
        self.decoder = Sequential([layers.Dense(16, activation="relu"), layers.Dense(32, activation="relu"),
                                   layers.Dense(140, activation="sigmoid")])

    def call(self, x):
        encoded = self.encoder(x)
        decoded = self.decoder(encoded)
        return decoded


# --- tracing ---------------------------------------------------------------------------------------

def test_tutorial_autoencoder_fits_predicts_and_answers_numpy():
    model = tutorial_autoencoder(autoenc)
    assert model.name.startswith("autoencoder") and not model.built
    assert model.layers == [model.encoder, model.decoder]   # tracked in assignment order
    assert model.shape == (28, 28) and model.latent_dim == 8   # ordinary attributes stay ordinary
    model.compile(optimizer="adam", loss=losses.MeanSquaredError())
    x = images(32)
    history = model.fit(x, x, epochs=2, shuffle=True, validation_data=(x, x), verbose=0)
    assert model.built and len(history.history["val_loss"]) == 2
    encoded = model.encoder(x).numpy()
    decoded = model.decoder(encoded).numpy()
    assert type(encoded) is np.ndarray and encoded.shape == (32, 8) and decoded.shape == (32, 28, 28)
    assert np.array_equal(decoded, model.predict(x))
    assert np.array_equal(model(x).numpy(), model.predict(x))
    assert [w.shape for w in model.get_weights()] == [(784, 8), (8,), (8, 784), (784,)]


@pytest.mark.parametrize("first_use", ["build", "call", "predict", "train_on_batch", "evaluate", "symbolic"])
def test_traced_on_first_use(first_use):
    model = tutorial_autoencoder(autoenc, latent_dim=4)
    model.compile(optimizer="sgd", loss="mse")
    x = images(4)
    if first_use == "build":
        model.build((None, 28, 28))
    elif first_use == "call":
        assert isinstance(model(x), EagerArray)
    elif first_use == "predict":
        model.predict(x)
    elif first_use == "train_on_batch":
        model.train_on_batch(x, x)
    elif first_use == "evaluate":
        model.evaluate(x, x)
    else:
        inp = Input(shape=(28, 28))
        outer = Model(inp, model(inp))
        assert outer.layers[1] is model
    assert model.built and model.input_shape == (None, 28, 28) and model.output_shape == (None, 28, 28)
    assert [type(n.layer).__name__ for n in model.nodes] == ["Sequential", "Sequential"]
    assert model.count_params() == 784 * 4 + 4 + 4 * 784 + 784


def test_summary_after_build_shows_the_sub_models():
    model = tutorial_autoencoder(autoenc)
    with pytest.raises(ValueError, match="not built yet: call build"):
        model.summary()
    model.build((None, 28, 28))
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    rows = [line.split() for line in text.splitlines() if "(Sequential)" in line]
    assert [r[1:] for r in rows] == [["(Sequential)", "(None,", "8)", "6280"],
                                     ["(Sequential)", "(None,", "28,", "28)", "7056"]]
    assert "Total params: 13,336" in text


def test_lists_of_layers_are_tracked_and_python_logic_in_init_runs():
    class Stack(Model):
        def __init__(self, sizes, name=None):
            super().__init__(name=name)
            self.blocks = [layers.Dense(n, activation="relu") for n in sizes]
            self.head = layers.Dense(1)
            self.sizes = list(sizes)   # a list of ints: not tracked

        def call(self, inputs, training=None):
            x = inputs
            for block in self.blocks:   # Python loops over layers trace fine
                x = block(x)
            return self.head(x)

    model = Stack([5, 3], name="stack")
    assert model.name == "stack" and model.sizes == [5, 3]
    assert model.layers == model.blocks + [model.head]
    model.build((None, 4))
    assert [w.shape for w in model.get_weights()] == [(4, 5), (5,), (5, 3), (3,), (3, 1), (1,)]


def test_a_layer_created_in_call_is_part_of_the_model():
    class Inline(Model):
        def __init__(self):
            super().__init__()
            self.first = layers.Dense(3)

        def call(self, x):
            return layers.Dense(2, name="made_in_call")(self.first(x))   # runs once, at tracing

    model = Inline()
    model.build((None, 5))
    assert [l.name for l in model.layers][-1] == "made_in_call" and model.count_params() == 18 + 8


def test_dropout_follows_training_after_tracing():
    class Noisy(Model):
        def __init__(self):
            super().__init__()
            self.drop = layers.Dropout(0.5)
            self.dense = layers.Dense(3, kernel_initializer="ones")

        def call(self, x, training=None):
            return self.dense(self.drop(x, training=training))

    model = Noisy()
    x = np.ones((64, 10), np.float32)
    assert np.array_equal(model(x), model(x, training=False))   # inference: no dropout
    assert np.allclose(model(x), 10)
    assert not np.allclose(model(x, training=True), 10)


def test_functional_forms_of_the_constructor():
    inp = Input(shape=(3,))
    out = layers.Dense(2)(inp)
    a = Model(inp, out, name="a")
    b = Model(inputs=inp, outputs=out, name="b")
    assert a.layers == b.layers and a.name == "a" and b.name == "b"
    with pytest.raises(ValueError, match="has no graph"):
        Model().build((None, 3))
    with pytest.raises(TypeError, match="unexpected keyword"):
        Model(inp, out, nmae="typo")


def test_a_functional_subclass_without_call():
    class Head(Model):
        def __init__(self):
            inp = Input(shape=(4,))
            super().__init__(inp, layers.Dense(2)(inp), name="head")

    model = Head()
    assert model.built and model.output_shape == (None, 2) and model.name == "head"


def test_saved_subclassed_model_loads_as_the_functional_graph_it_traced(tmp_path):
    model = tutorial_autoencoder(autoenc, latent_dim=4)
    model.compile(optimizer="adam", loss="mse")
    x = images(8)
    model.fit(x, x, verbose=0)
    path = str(tmp_path / "sub.autoenc")
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is Model
    assert [type(l).__name__ for l in loaded.layers] == ["InputLayer", "Sequential", "Sequential"]
    assert np.array_equal(loaded.predict(x), model.predict(x))


# --- custom train_step -------------------------------------------------------------------------------

def test_custom_train_step_on_x_alone_is_called_with_the_data_and_its_logs_kept():
    seen = []

    class OnX(Model):
        def __init__(self):
            super().__init__()
            self.encoder = Sequential([layers.Dense(3, activation="relu")])
            self.decoder = Sequential([layers.Dense(6)])

        def call(self, x):
            return self.decoder(self.encoder(x))

        def train_step(self, data):
            seen.append(data.shape)
            y_pred = self(data, training=True)
            loss, dy, from_logits = self.compute_loss_and_gradient(data, y_pred)
            self.backward(dy, from_logits=from_logits)
            self.apply_gradients()
            return {"loss": loss, "twice": 2 * loss}

    model = OnX()
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).uniform(0, 1, (20, 6)).astype(np.float32)
    history = model.fit(x, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert seen == [(8, 6), (8, 6), (4, 6)] * 3
    assert np.allclose(history.history["twice"], 2 * np.array(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    seen.clear()
    logs = model.train_on_batch(x)   # one step on x alone: the logs as a list, in the dict's order
    assert seen == [(20, 6)] and logs[1] == 2 * logs[0]


def test_custom_train_step_must_return_a_dict():
    class NoDict(Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            return 0.5

    model = NoDict()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(TypeError, match="train_step must return a dict"):
        model.fit(np.ones((4, 2), np.float32), verbose=0)


def test_gradient_tape_says_how_to_write_a_train_step():
    with pytest.raises(TypeError, match="no GradientTape.*compute_loss_and_gradient.*docs/custom_layer.md"):
        autoenc.GradientTape()   # code written for tf.GradientTape, with tf swapped for autoenc


# --- what cannot be traced -------------------------------------------------------------------------

def _untraceable(body):
    class Bad(Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3)

        def call(self, x, training=None):
            return body(self, x, training)

    return Bad()


@pytest.mark.parametrize("body, what", [
    (lambda self, x, training: self.dense(x) * 2, r"operator \*"),
    (lambda self, x, training: 1.0 - self.dense(x), "operator -"),
    (lambda self, x, training: np.tanh(self.dense(x)), "NumPy function tanh"),
    (lambda self, x, training: np.sum(self.dense(x)), "NumPy function sum"),
    (lambda self, x, training: self.dense(x).numpy(), r"\.numpy\(\)"),
    (lambda self, x, training: self.dense(x) if x else x, "Python control flow"),
    (lambda self, x, training: self.dense(x)[:, 0], "Indexing"),
])
def test_operations_on_symbolic_tensors_are_refused_clearly(body, what):
    model = _untraceable(body)
    with pytest.raises(TypeError, match=f"Bad.call could not be traced on a symbolic input of shape \\(None, 4\\): "
                                        f".*{what}.*docs/custom_layer.md"):
        model.predict(np.ones((2, 4), np.float32))
    assert not model.built


def test_control_flow_on_training_is_refused_clearly():
    model = _untraceable(lambda self, x, training: self.dense(x) if training else x)
    with pytest.raises(TypeError, match="Python control flow on `training`.*Pass training on to the layers"):
        model.build((None, 4))


def test_call_must_return_a_layer_output():
    with pytest.raises(TypeError, match="returned ndarray on a symbolic input"):
        _untraceable(lambda self, x, training: np.ones((2, 3))).build((None, 4))
    with pytest.raises(ValueError, match="returned its input unchanged"):
        _untraceable(lambda self, x, training: x).build((None, 4))


def test_a_shape_error_while_tracing_stays_a_value_error():
    model = _untraceable(lambda self, x, training: layers.Add()([self.dense(x), x]))
    with pytest.raises(ValueError, match="Bad.call could not be traced"):
        model.build((None, 4))


def test_layers_assigned_before_super_init_are_refused():
    class Early(Model):
        def __init__(self):
            self.dense = layers.Dense(2)
            super().__init__()

    with pytest.raises(RuntimeError, match=r"call super\(\).__init__\(\) before assigning layers"):
        Early()


# --- eager results ----------------------------------------------------------------------------------

def test_eager_array_is_an_ndarray_with_numpy():
    y = layers.Dense(3)(np.ones((2, 4), np.float32))
    assert isinstance(y, EagerArray) and isinstance(y, np.ndarray) and y.dtype == np.float32
    plain = y.numpy()
    assert type(plain) is np.ndarray and np.shares_memory(plain, y)
    assert type(np.mean(y)) is np.float32 and type(y.sum()) is np.float32   # full reductions: scalars
    again = pickle.loads(pickle.dumps(y))
    assert type(again) is EagerArray and np.array_equal(again, y)
    assert type(np.asarray(y)) is np.ndarray is type(np.array(y))
    assert np.array_equal(np.exp(y), np.exp(plain))


def test_anomaly_detector_trains():
    model = AnomalyDetector()
    model.compile(optimizer="adam", loss="mae")
    x = np.random.default_rng(0).uniform(0, 1, (64, 140)).astype(np.float32)
    history = model.fit(x, x, epochs=2, batch_size=16, validation_data=(x, x), shuffle=True, verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.encoder(x).numpy().shape == (64, 8)


# --- live parity with Keras -----------------------------------------------------------------------

@pytest.mark.keras
def test_keras_parity_tutorial_autoencoder_predict():
    """Keras' tutorial Autoencoder and autoenc's, Keras' weights in both, predict on the same images.

    Asserted twice: (1) per element, within twice the rounding bound of the exact result, computed from the
    data: a float32 dot product of n terms is off by at most gamma_n sum|x_i w_i| (gamma_n = n u / (1 - n u),
    u = eps32 / 2), carried through relu (1-Lipschitz), the second dot product and the sigmoid (slope
    <= 1/4); this worst case is loose (4e-4 of the largest output on these images) but holds on any data.
    (2) the house's forward parity tolerance, 1e-5 relative (tests/test_keras_parity.py TOL), which the
    blocked sums of both frameworks meet by a wide margin (measured 2.0e-7)."""
    keras = import_keras()[1]
    x = images(32, seed=3)
    km = tutorial_autoencoder(keras)
    km(x[:1])   # Keras builds a subclassed model on its first call
    am = tutorial_autoencoder(autoenc)
    am.build((None, 28, 28))
    assert [w.shape for w in am.get_weights()] == [w.shape for w in km.get_weights()]
    am.set_weights(km.get_weights())
    a, k = am.predict(x), km.predict(x, verbose=0)
    # the rounding bound per element, as in test_models_nested: two dot products, relu and sigmoid
    w1, b1, w2, b2 = [w.astype(np.float64) for w in km.get_weights()]
    u = EPS32 / 2
    gamma = lambda n: n * u / (1 - n * u)   # noqa: E731
    x64 = x.reshape(32, -1).astype(np.float64)
    z1 = x64 @ w1 + b1
    e1 = gamma(785) * (np.abs(x64) @ np.abs(w1) + np.abs(b1))
    h = np.maximum(z1, 0)
    z2 = h @ w2 + b2
    e2 = gamma(9) * (np.abs(h) @ np.abs(w2) + np.abs(b2)) + e1 @ np.abs(w2)
    bound = (e2 / 4 + 4 * u).reshape(32, 28, 28)   # both outputs within this of the exact one
    assert np.all(np.abs(a - k) <= 2 * bound)
    rel = np.max(np.abs(a - k)) / np.max(np.abs(k))
    assert rel <= 1e-5, rel
