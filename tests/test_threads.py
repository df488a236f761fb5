"""autoenc/threads.py: parallel_for runs every item once, in pieces on several threads at the same
time; the thread-count tuner keeps the faster count; and the count never changes a result, bit for
bit."""
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


# --- the pool: parallel_for ------------------------------------------------------------------

@pytest.fixture
def two_threads():
    """The calling thread's Numba count set to 2 (skipped where Numba has fewer), then put back."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2 or numba.config.DISABLE_JIT:
        pytest.skip("fewer than 2 Numba threads, or no JIT (one piece on the calling thread)")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 200])
def test_pieces_cover_the_items_once_in_order_with_sizes_one_apart(n, count):
    got = threads.pieces(n, count)
    assert len(got) == min(n, count)
    assert got[0][0] == 0 and got[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
    sizes = [hi - lo for lo, hi in got]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64])
def test_parallel_for_runs_every_item_exactly_once(two_threads, n):
    from autoenc.kernels.config import njit

    @njit()
    def count_items(lo, hi, seen):
        for i in range(lo, hi):
            seen[i] += 1

    seen = np.zeros(n, np.int64)
    threads.parallel_for(count_items, n, seen)
    np.testing.assert_array_equal(seen, np.ones(n, np.int64))


def test_the_pieces_run_at_the_same_time_on_two_threads(two_threads):
    import threading
    meet = threading.Barrier(2, timeout=60)    # broken unless both pieces are running at once
    names = []

    def piece(lo, hi):
        names.append(threading.current_thread().name)
        meet.wait()

    threads.parallel_for(piece, 2)
    assert len(set(names)) == 2 and threading.current_thread().name in names


def test_without_the_jit_the_items_run_as_one_piece_on_the_calling_thread(monkeypatch):
    import threading
    import numba
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    seen = []
    threads.parallel_for(lambda lo, hi: seen.append((lo, hi, threading.current_thread().name)), 5)
    assert seen == [(0, 5, threading.current_thread().name)]


def test_an_error_in_a_piece_is_raised_by_the_caller_after_every_piece_ends(two_threads):
    import threading
    done = []

    def piece(lo, hi):
        if lo > 0:
            raise ValueError(f"piece {lo}-{hi} failed")
        done.append(threading.current_thread().name)

    with pytest.raises(ValueError, match="piece 1-2 failed"):
        threads.parallel_for(piece, 2)
    assert len(done) == 1
    seen = []
    threads.parallel_for(lambda lo, hi: seen.append((lo, hi)), 4)    # the pool still works
    assert sorted(seen) == [(0, 2), (2, 4)]


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_kill"), reason="no pthread_kill")
def test_an_interrupt_while_a_worker_runs_waits_for_its_piece_to_end(two_threads):
    import signal
    import threading
    import time
    started, ended, alone, taken = threading.Event(), [], [], []

    def on_sigint(signum, frame):           # Python's own Ctrl-C, once: the repeats below are ignored
        if not taken:
            taken.append(True)
            raise KeyboardInterrupt

    def piece(lo, hi):
        if threading.current_thread() is threading.main_thread():
            if hi - lo > 1:                 # both items here: the workers were in use (see below)
                alone.append(True)
                return
            started.wait(60)                # so that a worker takes the other piece
            return
        started.set()
        time.sleep(0.1)                     # the caller now waits for this piece: Ctrl-C
        for _ in range(100):                # again until the caller has taken it: twice in .ci/run
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)   # beside a busy process
            time.sleep(0.05)                # one Ctrl-C was not raised in the caller (not understood)
            if taken:
                break
        time.sleep(0.3)
        ended.append(lo)

    # A call made while another holds the workers runs all its items on the calling thread; then there
    # is no worker to interrupt, and the call is made again (the scenario was not set up).
    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        for _ in range(10):
            alone.clear()
            try:
                threads.parallel_for(piece, 2)
            except KeyboardInterrupt:
                break
            assert alone, "a worker ran its piece and sent Ctrl-C for 5 s, but the caller did not raise it"
            time.sleep(0.5)
        else:
            pytest.fail("the workers were in use at each of 10 calls")
    finally:
        signal.signal(signal.SIGINT, old)
    assert ended == [1], "the interrupted call returned before the worker's piece ended"


def test_a_call_from_inside_a_piece_or_another_thread_runs_on_its_own_thread(two_threads):
    import threading
    inner = []

    def piece(lo, hi):
        threads.parallel_for(lambda a, b: inner.append((a, b, threading.current_thread().name)), 3)

    threads.parallel_for(piece, 2)
    assert sorted(x[:2] for x in inner) == [(0, 3), (0, 3)]   # each inner call did its 3 items in one piece
    results = []
    callers = [threading.Thread(target=lambda: results.append(predict_like())) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(60)
    assert results == [list(range(10))] * 4


def predict_like():
    out = np.zeros(10, np.int64)
    threads.parallel_for(lambda lo, hi: out.__setitem__(slice(lo, hi), np.arange(lo, hi)), 10)
    return out.tolist()


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="no compiled kernels without the JIT")
def test_every_kernel_releases_the_gil_and_none_uses_numba_parallel_loops():
    """Numba's parallel=True would compile a kernel twice (issue 15's cold start); without nogil the
    pieces would run one after the other."""
    from numba.core.registry import CPUDispatcher
    import sys
    kernels = [(name, v) for name, mod in list(sys.modules.items()) if name.startswith("autoenc.kernels")
               for v in vars(mod).values() if isinstance(v, CPUDispatcher)]
    assert len(kernels) > 20
    for name, k in kernels:
        assert not k.targetoptions.get("parallel"), f"{name}.{k.__name__} uses Numba's parallel loops"
        assert k.targetoptions.get("nogil"), f"{name}.{k.__name__} holds the GIL"


FORKED = textwrap.dedent("""
    import os, threading, numba
    from autoenc import threads
    numba.set_num_threads(2)
    threads.parallel_for(lambda lo, hi: None, 2)          # the parent's workers start
    pid = os.fork()
    if pid == 0:                                          # the child has no workers: new ones start
        meet = threading.Barrier(2, timeout=60)
        names = set()
        def piece(lo, hi):
            names.add(threading.current_thread().name)
            meet.wait()
        threads.parallel_for(piece, 2)
        os._exit(0 if len(names) == 2 else 3)
    print("RESULT", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_gets_workers_of_its_own():
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2 or numba.config.DISABLE_JIT:
        pytest.skip("fewer than 2 Numba threads")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", FORKED], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "RESULT 0" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("off", ["off", "OFF", "0", "false"])
def test_autoenc_threads_off_tunes_nothing(monkeypatch, off):
    monkeypatch.setenv("AUTOENC_THREADS", off)
    assert threads.tuner_for_fit() is None


# --- the tuner, on made-up step times (never timed) ------------------------------------------

def drive(tuner, seconds_per_count, steps, start=0, noise=0.0, seed=0):
    """Run `steps` steps whose time depends on the count and the step index k (from `start`), times a
    seeded log-normal noise of sigma `noise` with one step in 20 three times slower (a descheduled
    thread); returns the counts used."""
    import random
    rng = random.Random(seed)
    used = []
    for k in range(start, start + steps):
        n = tuner.next_count()
        used.append(n)
        slow = (rng.lognormvariate(0, noise) * (3 if rng.random() < 0.05 else 1)) if noise else 1
        tuner.record(n, seconds_per_count(n, k) * slow, samples=256)
    return used


QUIET = lambda n, k: 0.080 if n > 1 else 0.100     # noqa: E731 (seed model, batch 256, seconds per step)
LOADED = lambda n, k: 0.145 if n > 1 else 0.125    # noqa: E731 (one busy process beside it)


@pytest.mark.parametrize("timing, best", [(QUIET, 2), (LOADED, 1)])
def test_the_tuner_settles_after_a_warm_up_and_three_steps_on_each_count(timing, best):
    tuner = ThreadTuner(2)
    used = drive(tuner, timing, 7)
    assert used == [2, 2, 1, 2, 1, 2, 1]     # the warm-up, then alternating
    assert tuner.current == best and tuner.phase == "run"
    assert drive(tuner, timing, 7) == [best] * 7     # no probe before min_period steps


@pytest.mark.parametrize("timing, best", [(QUIET, 2), (LOADED, 1)])
def test_one_slow_step_in_the_settling_does_not_decide(timing, best):
    tuner = ThreadTuner(2)
    slow = {2: 4 if best == 2 else 1, 4: 4 if best == 1 else 1}   # the better count's first step 4x slower
    for k in range(7):
        n = tuner.next_count()
        tuner.record(n, timing(n, k) * slow.get(k, 1), 256)
    assert tuner.current == best


def test_the_tuner_keeps_all_threads_when_they_are_faster_and_probes_less_and_less():
    tuner = ThreadTuner(2)
    used = drive(tuner, QUIET, 1000)
    assert tuner.current == 2 and tuner.period == tuner.max_period and tuner.switches == []
    probes = [k for k, n in enumerate(used) if n == 1 and k > 6]
    assert 5 <= len(probes) <= 12                        # 8, 16, ..., 128, then one in 128
    assert all(b - a >= 8 for a, b in zip(probes, probes[1:]))


def test_one_thread_under_load_from_the_settling_on():
    tuner = ThreadTuner(4)
    used = drive(tuner, lambda n, k: 0.30 if n == 4 else 0.045, 100)
    assert tuner.current == 1 and used[7:].count(1) >= 88


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("timing, best", [(QUIET, 2), (LOADED, 1)])
def test_noisy_steps_still_run_mostly_on_the_faster_count(timing, best, seed):
    """15% log-normal noise and one step in 20 three times slower; the two counts differ by 16-25%:
    over 600 steps the tuner costs at most 6% over always running the faster count."""
    tuner = ThreadTuner(2)
    used = drive(tuner, timing, 600, noise=0.15, seed=seed)
    cost = sum(timing(n, 0) for n in used[60:]) / (len(used[60:]) * timing(best, 0))
    assert cost < 1.06, cost
    assert tuner.current == best or used[-100:].count(best) > 80


@pytest.mark.parametrize("seed", range(3))
def test_a_load_that_starts_and_stops_mid_run_is_followed_within_a_few_steps(seed):
    def changing(n, k):
        return LOADED(n, k) if 300 <= k < 600 else QUIET(n, k)
    tuner = ThreadTuner(2)
    used = drive(tuner, changing, 900, noise=0.05, seed=seed)
    assert tuner.period == tuner.max_period or used[250:300].count(2) >= 48   # settled and probing rarely
    assert used[300 + 12:600].count(1) >= 0.95 * (600 - 312)          # the load: on one thread
    assert used[600 + 12:].count(2) >= 0.95 * (900 - 612)             # the load lifted: back on all threads
    assert [c for _, c in tuner.switches] == [1, 2]


def test_a_probe_much_faster_than_before_starts_a_burst():
    tuner = ThreadTuner(2)
    drive(tuner, LOADED, 300)                # on one thread, probing all threads every 128 steps
    assert tuner.current == 1 and tuner.period == tuner.max_period
    while tuner.next_count() == 1:
        tuner.record(1, 0.125, 256)
    tuner.record(2, 0.080, 256)              # the load has lifted: the probe is much faster
    assert tuner.phase == "burst" and tuner.next_count() == 2
    drive(tuner, QUIET, 3)
    assert tuner.current == 2 and tuner.period == tuner.min_period


def test_a_drift_of_the_current_count_makes_the_tuner_probe_at_once():
    tuner = ThreadTuner(2)
    drive(tuner, QUIET, 200)
    assert tuner.period > 16
    used = drive(tuner, lambda n, k: 0.2 if n == 2 else 0.1, 8)   # all threads 2.5x slower from now on
    assert 1 in used[:5]


def test_the_tuner_compares_time_per_sample():
    tuner = ThreadTuner(2)
    # the 1-thread steps are short batches: per sample they are slower
    for n, s, b in [(2, 1.0, 256), (2, 1.0, 256), (1, 0.5, 64)] + [(2, 1.0, 256), (1, 0.5, 64)] * 2:
        tuner.record(n, s, b)
    assert tuner.phase == "run" and tuner.current == 2


def test_steps_on_a_count_not_offered_or_of_no_samples_are_ignored():
    tuner = ThreadTuner(2)
    drive(tuner, QUIET, 7)
    before = {c: list(v) for c, v in tuner._times.items()}
    tuner.record(3, 10.0, 256)
    tuner.record(2, 10.0, 0)
    assert tuner._times == before and tuner.current == 2


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


def small_model(seed=5):
    from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
    from autoenc.models import Model
    autoenc.set_random_seed(seed)
    inp = Input(shape=(8, 8, 1))
    x = Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = UpSampling2D()(MaxPooling2D()(x))
    model = Model(inp, Conv2D(1, 3, padding="same", activation="sigmoid")(x))
    model.compile("adam", "mse")
    return model


def needs_two_threads():
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: nothing to tune")


def test_each_step_runs_on_the_tuners_count_and_the_callers_count_is_put_back():
    import numba
    needs_two_threads()

    class One:                      # a tuner that always asks for one thread
        max_threads = numba.get_num_threads()
        recorded = []

        def next_count(self):
            return 1

        def record(self, n, seconds, samples):
            self.recorded.append((n, samples))

    before = numba.get_num_threads()
    with threads.tuned_threads(One()) as step:
        assert step(numba.get_num_threads, 7) == 1
        assert numba.get_num_threads() == before
    assert One.recorded == [(1, 7)]
    assert threads.tuned_threads(None).run(lambda: 42) == 42


def test_the_batch_methods_keep_their_tuner_on_the_model_and_predict_and_evaluate_need_none(monkeypatch):
    """predict and evaluate (fit's validation too) run in parts, a replica of the model per thread
    (models/inference.py): nothing waits for a slow thread but the last part, so they tune nothing."""
    needs_two_threads()
    monkeypatch.delenv("AUTOENC_THREADS", raising=False)
    model = small_model()
    x = np.random.default_rng(1).random((70, 8, 8, 1)).astype(np.float32)
    for _ in range(2):
        model.predict(x, batch_size=8, verbose=0)
        model.evaluate(x, x, batch_size=10, verbose=0)
    assert not getattr(model, "_thread_tuners", {})
    for _ in range(3):
        model.test_on_batch(x[:8], x[:8])
    tuners = model._thread_tuners
    test_tuner = tuners["test"]
    model.predict_on_batch(x[:8])
    for _ in range(3):
        model.train_on_batch(x[:8], x[:8])
    model.fit(x, x, batch_size=8, epochs=1, verbose=0, validation_data=(x, x))   # 9 steps, 9 validation batches
    assert tuners["test"] is test_tuner and tuners["test"].steps == 3
    assert tuners["train"].steps == 3 + 9
    assert "predict" not in tuners


def test_predict_and_evaluate_with_the_tuner_give_the_same_bits_as_without(monkeypatch):
    """The tuner moves predict's and evaluate's batches between 1 and all threads (the settling
    alternates them): the outputs and the loss are the same bit for bit as with the tuner off."""
    x = np.random.default_rng(2).random((70, 8, 8, 1)).astype(np.float32)
    results = []
    for off in (False, True):
        if off:
            monkeypatch.setenv("AUTOENC_THREADS", "off")
        else:
            monkeypatch.delenv("AUTOENC_THREADS", raising=False)
        model = small_model()
        model.fit(x, x, batch_size=8, epochs=1, verbose=0)
        results.append((np.concatenate([model.predict(x, batch_size=4, verbose=0) for _ in range(2)]),
                        [model.evaluate(x, x, batch_size=4, verbose=0) for _ in range(2)]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_a_vaes_fit_and_predict_go_through_the_tuner_and_train_exactly_as_without(monkeypatch):
    from test_vae import small_vae
    x = np.random.default_rng(3).random((40, 8, 8, 1)).astype(np.float32)
    weights = []
    for off in (False, True):
        if off:
            monkeypatch.setenv("AUTOENC_THREADS", "off")
        else:
            monkeypatch.delenv("AUTOENC_THREADS", raising=False)
        autoenc.set_random_seed(4)
        vae = small_vae(seed=9)
        vae.compile("adam")
        vae.fit(x, epochs=2, batch_size=4, verbose=0)
        vae.encoder.predict(x, batch_size=4, verbose=0)
        weights.append(vae.get_weights())
        if not off and threads.tuner_for_fit() is not None:
            assert vae._thread_tuners["train"].steps == 20 and vae.encoder._thread_tuners["predict"].steps == 10
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_call_inside_a_piece_runs_without_asking_numba_for_its_thread_count(two_threads, monkeypatch):
    # numba.get_num_threads takes Numba's launch lock: the ~30 kernel calls of each part of a step
    # in parts (both threads at once) skip it, since the workers are taken anyway
    import numba
    asked = []
    real = numba.get_num_threads

    def counting():
        asked.append(1)
        return real()

    def piece(lo, hi):
        for _ in range(5):
            threads.parallel_for(lambda a, b: None, 4)

    monkeypatch.setattr(numba, "get_num_threads", counting)
    threads.parallel_for(piece, 2)
    assert len(asked) <= 1   # the outer call's only (none without the JIT), not 10 more
