"""autoenc/models/inference.py: predict in parts on a replica of the model per thread gives the same
bits on any number of threads and the same numbers as the forward pass; the replicas share the
parameters (so they follow training) and never each other's work arrays; models it cannot copy
safely predict batch by batch as before."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import autoenc
from autoenc import layers
from autoenc.layers.base import Layer
from autoenc.models import Model, Sequential, inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def threads_of():
    """Run with the calling thread's Numba count set to k (skipped beyond what Numba has), then put back."""
    import numba
    before = numba.get_num_threads()

    def set_count(k):
        if k > numba.config.NUMBA_NUM_THREADS:
            pytest.skip(f"Numba has fewer than {k} threads")
        numba.set_num_threads(k)
    yield set_count
    numba.set_num_threads(before)


def seed_model():
    m = autoenc.models.seed_autoencoder()
    m.compile(optimizer="adam", loss="mean_squared_error")
    return m


def mixed_model():
    """Conv2D (ReLU, under MaxPooling2D), BatchNormalization, Dropout, Dense, Reshape, UpSampling2D
    and a 3x3 Conv2D (fused), Conv2DTranspose: the layers whose inference holds moving statistics, a
    matmul and the fused paths. Returns (the model of one output, compiled; a model of the same
    layers with two outputs, the code too)."""
    inp = layers.Input(shape=(8, 8, 2))
    x = layers.Conv2D(4, 3, activation="relu", padding="same")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.3)(x)
    code = layers.Dense(6, activation="tanh")(layers.Flatten()(x))
    x = layers.Reshape((2, 2, 4))(layers.Dense(16, activation="relu")(code))
    x = layers.Conv2D(3, 3, activation="relu", padding="same")(layers.UpSampling2D((2, 2))(x))
    out = layers.Conv2DTranspose(2, 3, strides=2, padding="same", activation="sigmoid")(x)
    trained = Model(inp, out)
    trained.compile(optimizer="adam", loss="mean_squared_error")
    return trained, Model(inp, [out, code])


def images(n, shape, seed=0):
    return np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)


def parts_by_hand(model, x, part, size):
    """The definition: model.forward on x[a:a+part] for each part, parts counted from each step of
    ``size`` samples (predict's loop), outputs stacked."""
    outs = None
    for lo in range(0, len(x), size):
        for a in range(lo, min(lo + size, len(x)), part):
            y = model.forward(x[a:min(a + part, lo + size, len(x))], training=False)
            ys = [np.array(v) for v in (y if isinstance(y, list) else [y])]
            outs = [[v] for v in ys] if outs is None else [o + [v] for o, v in zip(outs, ys)]
    return [np.concatenate(o) for o in outs]


def test_the_seed_model_is_supported_and_its_parts_stay_within_a_cores_cache(monkeypatch):
    m = seed_model()
    assert inference.supported(m)
    # its largest output is 28x28x16 float32 per sample (50 KB): 41 samples in 2 MB, 20 in 1 MB
    assert inference.part_size(m, 256) == inference.PART_BYTES // (28 * 28 * 16 * 4)
    monkeypatch.setattr(inference, "PART_BYTES", 2 << 20)
    assert inference.part_size(m, 256) == 41
    monkeypatch.setattr(inference, "PART_BYTES", 1 << 20)
    assert inference.part_size(m, 256) == 20
    assert inference.part_size(m, 16) == 16           # never more than the batch
    big = Sequential([layers.Input(shape=(512, 512, 3)), layers.Conv2D(8, 3, padding="same")])
    assert inference.part_size(big, 64) == 1           # 8 MB a sample: one at a time


def _cache_dir(root, entries):
    """A sysfs-like cache directory: index0, index1, ... with the files level, type, size."""
    for i, (level, kind, size) in enumerate(entries):
        d = root / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return str(root)


@pytest.mark.parametrize("entries, want", [
    ([(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"), (3, "Unified", "32768K")], 1 << 20),
    ([(1, "Data", "48K"), (2, "Unified", "2048K")], 2 << 20),
    ([(2, "Unified", "2M")], 2 << 20),
    ([(2, "Unified", "1310720")], 1310720),           # bytes, no unit
    ([(1, "Data", "32K"), (3, "Unified", "8192K")], None),   # no L2
    ([(2, "Unified", "lots")], None),                 # unreadable
    ([(2, "Unified", "0K")], None),
    ([], None),
])
def test_core_cache_bytes_reads_the_l2_size_from_sysfs(tmp_path, entries, want):
    assert inference.core_cache_bytes(_cache_dir(tmp_path, entries)) == want


def test_core_cache_bytes_is_none_without_sysfs(tmp_path):
    assert inference.core_cache_bytes(str(tmp_path / "missing")) is None
    (tmp_path / "index0").mkdir()   # an entry without its files
    assert inference.core_cache_bytes(str(tmp_path)) is None


@pytest.mark.parametrize("cache, want", [(None, 2 << 20), (1 << 20, 2 << 20), (2 << 20, 4 << 20),
                                         (128 << 10, 512 << 10), (384 << 10, 768 << 10), (32 << 20, 4 << 20)])
def test_part_bytes_is_twice_a_cores_cache_within_bounds(cache, want):
    assert inference.part_bytes(cache) == want


def test_part_bytes_follows_this_machines_cache():
    assert inference.PART_BYTES == inference.part_bytes(inference.core_cache_bytes())


@pytest.mark.parametrize("count", [1, 2])
def test_predict_gives_the_same_bits_on_any_thread_count_and_those_of_the_parts(threads_of, count):
    trained, m = mixed_model()
    x = images(300, (8, 8, 2))
    trained.fit(x, x, epochs=1, batch_size=64, verbose=0)   # moving statistics that are not the defaults
    part = inference.part_size(m, 50)
    want = parts_by_hand(m, x, part, max(50, inference.PARTS_PER_CALL * part))
    threads_of(count)
    got = m.predict(x, batch_size=50, verbose=0)
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


MANY_THREADS = """
import hashlib, numba, numpy as np
from test_inference import mixed_model, images
trained, m = mixed_model()
x = images(300, (8, 8, 2))
trained.fit(x, x, epochs=1, batch_size=64, verbose=0)
for k in (1, 2, 3, 4):
    numba.set_num_threads(k)
    print(hashlib.sha256(b"".join(y.tobytes() for y in m.predict(x, batch_size=20, verbose=0))).hexdigest())
print(len(vars(m)["_replicas"][1]))     # the model itself and 3 replicas ran
"""


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="one thread without the JIT")
def test_predict_gives_the_same_bits_on_one_to_four_threads():
    """More threads than this machine's cores (NUMBA_NUM_THREADS=4, in a child): 4 replicas."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "4",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(REPO, "tests"), REPO,
                                                       os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", MANY_THREADS], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    *digests, replicas = out.stdout.split()
    assert replicas == "3"
    assert len(digests) == 4 and len(set(digests)) == 1, digests


def test_predict_of_a_convolutional_model_is_its_full_batch_forward_bit_for_bit(threads_of):
    """Every convolution kernel computes a sample on its own, so the parts change no bit."""
    threads_of(2)
    m = seed_model()
    x = images(700, (28, 28, 1))
    np.testing.assert_array_equal(m.predict(x, batch_size=256, verbose=0),
                                  np.concatenate([m.forward(x[a:a + 350], training=False).copy() for a in (0, 350)]))
    np.testing.assert_array_equal(m.predict_on_batch(x[:90]), m.forward(x[:90], training=False))


def test_the_replicas_share_the_parameters_and_follow_training_and_set_weights(threads_of):
    threads_of(2)
    m = seed_model()
    x = images(400, (28, 28, 1))
    before = m.predict(x, verbose=0)                # replicas of the weights before any training
    m.fit(x, x, epochs=1, batch_size=100, verbose=0)    # moves the weights into one flat buffer
    after = m.predict(x, verbose=0)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, m.forward(x, training=False))
    m.set_weights([w * 0.5 for w in m.get_weights()])
    np.testing.assert_array_equal(m.predict(x, verbose=0), m.forward(x, training=False))
    rep = inference.replicas(m, 2)[1]
    for a, b in zip(m.flat_layers(), rep.flat_layers()):
        assert a is not b
        assert all(a.params[k] is b.params[k] for k in a.params)
    conv, conv_rep = m.layers[1], rep.layers[1]
    assert conv._kernels is not conv_rep._kernels
    assert conv._kernels.workspace is not conv_rep._kernels.workspace
    assert rep.optimizer is m.optimizer


def test_after_predict_the_model_keeps_its_last_part_as_its_last_forward_pass(threads_of):
    """layer_output and logits show the last part (the end of the input), run by the model itself."""
    threads_of(2)
    m = seed_model()
    x = images(200, (28, 28, 1))
    out = m.predict(x, verbose=0)
    part = inference.part_size(m, 32)
    last = (199 // part) * part                  # parts of 32 (2 MB): 192-200, the last has 8 samples
    np.testing.assert_array_equal(m.layer_output(m.output_layer), out[last:])
    np.testing.assert_array_equal(m.layer_output(m.layers[0]), x[last:])
    assert m.output_layer.logits.shape == (200 - last, 28, 28, 1)


def test_predict_from_four_threads_at_once_gives_each_its_own_answer(threads_of):
    """A web server's threads sharing one model."""
    threads_of(2)
    m = seed_model()
    xs = [images(150, (28, 28, 1), seed=k) for k in range(4)]
    want = [m.forward(x, training=False).copy() for x in xs]
    got, errors = [None] * 4, []

    def call(k):
        try:
            for _ in range(3):
                got[k] = m.predict(xs[k], batch_size=32, verbose=0)
        except BaseException as e:      # reported below
            errors.append(e)

    ts = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    assert not errors
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


class Doubling(Layer):
    """A layer defined outside autoenc: its forward pass might keep state."""

    def forward(self, x, training=False):
        return 2 * x


def test_models_it_cannot_copy_safely_predict_batch_by_batch():
    inp = layers.Input(shape=(4,))
    z_mean, z_log_var = layers.Dense(2)(inp), layers.Dense(2)(inp)
    encoder = Model(inp, layers.Sampling(seed=3)([z_mean, z_log_var]))
    assert not inference.supported(encoder)         # Sampling: draws in order, keeps last_epsilon
    m = Sequential([layers.Input(shape=(4,)), layers.Dense(3), Doubling()])
    assert not inference.supported(m)
    x = images(70, (4,))
    np.testing.assert_allclose(m.predict(x, batch_size=32, verbose=0), m.forward(x, training=False), rtol=1e-6)
    assert "_replicas" not in vars(m)

    class Overridden(Model):
        def forward(self, inputs, training=False):
            return super().forward(inputs, training)

    inp = layers.Input(shape=(4,))
    assert not inference.supported(Overridden(inp, layers.Dense(2)(inp)))
    assert not inference.supported(Model(inp, layers.Dense(2, activity_regularizer="l2")(inp)))
    x = inp
    for _ in range(inference.MAX_NODES + 1):
        x = layers.Activation("linear")(x)
    assert not inference.supported(Model(inp, x))
    seed, calls = seed_model(), []
    conv = seed.layers[1]
    plain = conv.forward
    assert inference.supported(seed)
    conv.forward = lambda *a, **k: calls.append(1) or plain(*a, **k)    # a hook on one layer
    assert not inference.supported(seed)
    seed.predict(images(100, (28, 28, 1)), batch_size=50, verbose=0)
    assert calls == [1, 1]                                              # it saw every batch
    del conv.forward
    conv._kernels.forward = lambda *a, **k: calls.append(2) or type(conv._kernels).forward(conv._kernels, *a, **k)
    assert not inference.supported(seed)
    assert not inference.supported(Sequential([layers.Dense(2)]))    # not built


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mean_squared_error"])
@pytest.mark.parametrize("count", [1, 2])
def test_evaluate_in_parts_gives_the_numbers_of_test_step_batch_by_batch(threads_of, monkeypatch, loss, count):
    """The loss (from the logits after a sigmoid for binary crossentropy) and the metrics of each
    batch, from outputs computed in parts, are test_step's, bit for bit; fit's validation too."""
    threads_of(count)
    m = seed_model()
    m.compile(optimizer="adam", loss=loss, metrics=["mae"])
    x = images(700, (28, 28, 1))
    history = m.fit(x[:300], x[:300], epochs=2, batch_size=100, validation_data=(x, x), verbose=0)
    got = m.evaluate(x, x, batch_size=64, verbose=0)
    monkeypatch.setattr(inference, "supported", lambda model: False)
    assert m.evaluate(x, x, batch_size=64, verbose=0) == got
    monkeypatch.undo()
    want = m.evaluate(x, x, batch_size=100, verbose=0)
    assert history.history["val_loss"][-1] == want[0] and history.history["val_mae"][-1] == want[1]


def test_a_model_with_its_own_test_step_evaluates_with_it():
    class Own(Model):
        def test_step(self, data):
            return {"loss": 7.0}

    inp = layers.Input(shape=(4,))
    m = Own(inp, layers.Dense(2)(inp))
    m.compile(optimizer="adam", loss="mean_squared_error")
    assert inference.supported(m)
    assert m.evaluate(images(10, (4,)), np.zeros((10, 2), np.float32), verbose=0) == 7.0
