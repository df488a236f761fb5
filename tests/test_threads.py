"""autoenc/threads.py: the wait policy set at import respects what the user set; the thread-count
tuner keeps the faster count; and the count it picks never changes a result, bit for bit."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import autoenc
from autoenc import threads
from autoenc.threads import ThreadTuner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the wait policy -------------------------------------------------------------------------

def test_configure_sets_a_short_spin_when_nothing_is_set(monkeypatch):
    monkeypatch.delenv("AUTOENC_THREADS", raising=False)
    env = {}
    assert threads.configure(env) == {"GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT}
    assert env == {"GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT}


@pytest.mark.parametrize("user", [{"OMP_WAIT_POLICY": "active"}, {"OMP_WAIT_POLICY": "PASSIVE"},
                                  {"GOMP_SPINCOUNT": "300000"}, {"GOMP_SPINCOUNT": "infinite"}])
def test_configure_never_overrides_a_wait_variable_the_user_set(monkeypatch, user):
    monkeypatch.delenv("AUTOENC_THREADS", raising=False)
    env = dict(user)
    assert threads.configure(env) == {}
    assert env == user


@pytest.mark.parametrize("off", ["off", "OFF", "0", "false"])
def test_autoenc_threads_off_sets_nothing_and_tunes_nothing(monkeypatch, off):
    monkeypatch.setenv("AUTOENC_THREADS", off)
    env = {}
    assert threads.configure(env) == {} and env == {}
    assert threads.tuner_for_fit() is None


CHILD = textwrap.dedent("""
    import json, os, numpy as np
    import autoenc, numba
    from autoenc.kernels import upsampling
    x = np.ones((2, 3, 3, 4), np.float32)
    upsampling.upsample2d_forward(x, 2, 2, np.empty((2, 6, 6, 4), np.float32))   # starts the thread pool
    print("RESULT " + json.dumps({"layer": numba.threading_layer(), "configured": autoenc.threads.configured(),
                                  "priority": list(numba.config.THREADING_LAYER_PRIORITY),
                                  "slp": numba.config.SLP_VECTORIZE,
                                  **{k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))
""")


def child(env):
    base = {k: v for k, v in os.environ.items() if k not in (
        "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY", "AUTOENC_THREADS")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    import json
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][0][7:])


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no thread pool without the JIT")
def test_import_sets_the_spin_count_before_the_pool_starts_and_keeps_the_users_choices():
    fresh = child({})
    assert fresh["configured"] == {"GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT,
                                   "numba.config.THREADING_LAYER_PRIORITY": "omp tbb workqueue"}
    assert fresh["GOMP_SPINCOUNT"] == threads.GOMP_SPINCOUNT and fresh["OMP_WAIT_POLICY"] is None
    assert fresh["layer"] == "omp" and fresh["priority"] == ["omp", "tbb", "workqueue"]
    assert fresh["slp"] == 1                   # the priority is set without making Numba reload its config
    user = child({"OMP_WAIT_POLICY": "active", "NUMBA_THREADING_LAYER": "workqueue"})
    assert user["configured"] == {} and user["OMP_WAIT_POLICY"] == "active" and user["GOMP_SPINCOUNT"] is None
    assert user["layer"] == "workqueue"
    order = child({"NUMBA_THREADING_LAYER_PRIORITY": "workqueue omp tbb"})
    assert order["configured"] == {"GOMP_SPINCOUNT": threads.GOMP_SPINCOUNT} and order["layer"] == "workqueue"
    off = child({"AUTOENC_THREADS": "off"})
    assert off["configured"] == {} and off["GOMP_SPINCOUNT"] is None
    assert off["priority"] == ["tbb", "omp", "workqueue"]   # Numba's own order


# --- the tuner, on made-up step times (never timed) ------------------------------------------

def drive(tuner, seconds_per_count, steps):
    """Run `steps` steps whose time depends only on the count; returns the counts used."""
    used = []
    for k in range(steps):
        n = tuner.next_count()
        used.append(n)
        tuner.record(n, seconds_per_count(n, k), samples=256)
    return used


def test_the_tuner_keeps_all_threads_when_they_are_faster_and_probes_less_and_less():
    tuner = ThreadTuner(2)
    used = drive(tuner, lambda n, k: 0.025 if n == 2 else 0.045, 600)
    assert used[0] == 2 and set(used[1:5]) == {1, 2}   # a warm-up, then both counts tried
    assert tuner.current == 2
    probes = [k for k, n in enumerate(used) if n == 1 and k > 5]
    assert len(probes) < 15                              # the period doubled up to 256
    assert tuner.period == tuner.max_period


def test_the_tuner_goes_to_one_thread_under_load_and_back_when_it_lifts():
    tuner = ThreadTuner(4)
    busy = drive(tuner, lambda n, k: 0.30 if n == 4 else 0.045, 100)
    assert tuner.current == 1 and busy[-20:].count(1) >= 18
    drive(tuner, lambda n, k: 0.025 if n == 4 else 0.045, 300)    # the load goes away
    assert tuner.current == 4


def test_a_sudden_slow_step_makes_the_tuner_probe_at_once():
    tuner = ThreadTuner(2)
    drive(tuner, lambda n, k: 0.025 if n == 2 else 0.045, 200)
    assert tuner.period > 16
    tuner.record(2, 0.2, 256)                 # 8x the usual time
    assert tuner.next_count() == 1


def test_the_tuner_compares_time_per_sample():
    tuner = ThreadTuner(2)
    # the 1-thread steps are short batches: per sample they are slower
    for n, s, b in [(2, 1.0, 256)] * 3 + [(1, 0.5, 64), (2, 1.0, 256), (1, 0.5, 64), (2, 1.0, 256)]:
        tuner.record(n, s, b)
    assert tuner.current == 2 and tuner.period == 2 * tuner.min_period   # compared, and 2 threads confirmed


def test_one_thread_has_nothing_to_tune():
    tuner = ThreadTuner(1)
    assert drive(tuner, lambda n, k: 0.01, 20) == [1] * 20 and tuner.counts == (1,)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2", None])
def test_the_tuner_refuses_a_bad_thread_count(bad):
    with pytest.raises(ValueError, match="max_threads must be a positive int"):
        ThreadTuner(bad)


# --- the thread count never changes a result -------------------------------------------------

SAME_RESULTS = textwrap.dedent("""
    import hashlib, numpy as np, numba, autoenc
    from autoenc.layers import (AveragePooling2D, BatchNormalization, Conv2D, Conv2DTranspose, Input,
                                MaxPooling2D, UpSampling2D)
    from autoenc.models import Model
    def train(threads, batch):
        numba.set_num_threads(threads)
        autoenc.set_random_seed(3)
        inp = Input(shape=(12, 12, 3))
        x = Conv2D(16, 3, padding="same", activation="relu")(inp)
        x = BatchNormalization()(x)
        x = MaxPooling2D(padding="same")(x)
        x = AveragePooling2D(pool_size=2, strides=1, padding="same")(x)
        x = Conv2D(9, 3, strides=2, padding="same", activation="relu")(x)
        x = Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
        x = UpSampling2D()(x)
        x = Conv2D(12, 3, padding="same", activation="relu")(x)
        model = Model(inp, Conv2D(3, 3, padding="same", activation="sigmoid")(x))
        model.compile("adam", "binary_crossentropy")
        x = np.random.default_rng(0).random((2 * batch + 3, 12, 12, 3)).astype(np.float32)
        model.fit(x, x, epochs=2, batch_size=batch, verbose=0)
        out = model.predict(x[:5], verbose=0)
        return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights()) + out.tobytes()).hexdigest()
    for batch in (1, 7, 20):
        print(batch, *[train(t, batch) for t in (1, 2, 3, 5)])
""")


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="one thread without the JIT")
def test_training_gives_the_same_bits_on_1_2_3_and_5_threads():
    """Weights after two epochs and a prediction, on every layer family with a parallel kernel (odd
    batches, batches smaller and larger than the 8 reduction chunks, a last batch of 3): the
    digests must agree across thread counts. fit's tuner is off, so each count is the one asked."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "5", "AUTOENC_THREADS": "off",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", SAME_RESULTS], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    rows = [ln.split() for ln in out.stdout.strip().splitlines()]
    assert len(rows) == 3
    for batch, *digests in rows:
        assert len(set(digests)) == 1, f"batch {batch}: the thread counts disagree: {digests}"


def test_fit_with_the_tuner_trains_exactly_as_without(monkeypatch):
    from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
    from autoenc.models import Model

    def trained():
        autoenc.set_random_seed(5)
        inp = Input(shape=(8, 8, 1))
        x = Conv2D(8, 3, padding="same", activation="relu")(inp)
        x = UpSampling2D()(MaxPooling2D()(x))
        model = Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(x))
        model.compile("adam", "mse")
        x = np.random.default_rng(1).random((70, 8, 8, 1)).astype(np.float32)
        model.fit(x, x, epochs=3, batch_size=4, verbose=0)
        return model.get_weights()

    monkeypatch.delenv("AUTOENC_THREADS", raising=False)
    tuned = trained()
    monkeypatch.setenv("AUTOENC_THREADS", "off")
    fixed = trained()
    for a, b in zip(tuned, fixed):
        np.testing.assert_array_equal(a, b)


def test_fit_restores_the_callers_thread_count(monkeypatch):
    import numba
    from autoenc.layers import Dense, Input
    from autoenc.models import Sequential
    monkeypatch.delenv("AUTOENC_THREADS", raising=False)
    model = Sequential([Input(shape=(4,)), Dense(3)])
    model.compile("sgd", "mse")
    before = numba.get_num_threads()
    model.fit(np.zeros((64, 4), np.float32), np.zeros((64, 3), np.float32), batch_size=2, verbose=0)
    assert numba.get_num_threads() == before
