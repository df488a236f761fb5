"""How autoenc uses Numba's threads: the wait policy set before Numba starts its thread pool, and
the number of threads each training step runs on, chosen by timing steps.

Why. A training step of the seed model is about 44 short parallel regions (one per kernel call,
0.05-1 ms each on a quiet machine). Each region ends when its slowest thread does. When another
program keeps a core busy, one of autoenc's threads is often waiting for the CPU, and every region
waits for it; OpenMP's default spin-wait makes it worse, since the thread that has finished spins
on the core the other one needs (issue 15: an epoch of 18.6 s beside one busy process, 2.65 s on one
thread; benchmarks/threads.py and benchmarks/regions.py measure it). Two remedies, both here:

1. ``configure()``, called when autoenc's kernels are imported, before any parallel call: Numba's
   OpenMP layer is tried first (before TBB), and a waiting OpenMP thread spins briefly
   (GOMP_SPINCOUNT) and then sleeps, instead of spinning for milliseconds (GNU OpenMP's default).
   A setting the user has made is never changed, and ``AUTOENC_THREADS=off`` leaves all of them alone.
2. :class:`ThreadTuner`: ``fit`` times its steps on all threads and on one, now and then, and keeps
   the faster, so a step is never much slower than on one thread, whatever the layer, the wait
   policy the user chose and the load (with the short spin, all threads still won under load
   here; with GOMP's default spin, one thread does). The choice cannot
   change the results: every kernel sums in fixed chunks whatever the number of threads
   (kernels/config.py), so a step gives the same numbers bit for bit on 1 thread or on 8
   (tests/test_threads.py checks it).
"""
import os
import time

# Spin iterations of a waiting GNU OpenMP thread before it sleeps: about 50 us, the gap between two
# kernel calls of a step, so a quiet machine rarely pays for a wake-up (GOMP's default, 300,000, is
# milliseconds: under load the finished thread spins on the core the late one waits for). Measured
# by benchmarks/threads.py on a busy machine: 300 to 3,000 are alike, 0 (passive) and 10,000 slower.
GOMP_SPINCOUNT = "1000"

# Numba's threading layers in the order autoenc tries them, when the user chose none: OpenMP (GNU's,
# with the short spin above) was the fastest here on a busy machine; TBB, where installed, the slowest.
LAYER_PRIORITY = ("omp", "tbb", "workqueue")

# Variables that decide how OpenMP threads wait: if the user set any of them, autoenc sets none.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_configured = None   # what configure() set at import: {name: value}


def policy_enabled():
    """Whether autoenc's thread policy is on: it is unless the environment says AUTOENC_THREADS=off."""
    return os.environ.get("AUTOENC_THREADS", "").strip().lower() not in ("off", "0", "false", "no")


def _openmp_loaded():
    """Whether GNU OpenMP is already loaded in this process (its settings are then fixed)."""
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:
        return False


def _pool_started():
    try:
        from numba.np.ufunc import parallel
    except ImportError:
        return False
    return bool(parallel._is_initialized)


def configure(environ=None):
    """Set autoenc's defaults: the OpenMP wait policy in ``environ`` (os.environ) unless the user has
    set a wait variable, and (for os.environ only) OpenMP first in Numba's threading-layer order
    unless the user chose a layer or an order; nothing when the policy is off or it is too late
    (Numba's thread pool or OpenMP already started). Returns {name: value} of what it set (empty
    when nothing). Idempotent."""
    global _configured
    env = os.environ if environ is None else environ
    if environ is None and _configured is not None:
        return dict(_configured)
    chosen = {}
    late = environ is None and (_pool_started() or _openmp_loaded())
    if policy_enabled() and not late and not any(v in env for v in _WAIT_VARIABLES):
        chosen["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    env.update(chosen)
    if environ is None and policy_enabled() and not late and _prefer_omp():
        chosen["numba.config.THREADING_LAYER_PRIORITY"] = " ".join(LAYER_PRIORITY)
    if environ is None:
        _configured = chosen
    return dict(chosen)


def _prefer_omp():
    """Put OpenMP first in Numba's choice of threading layer (Numba's own order tries TBB first, where
    it is installed), unless the user chose a layer or an order. Set in numba.config, not in the
    environment: a changed NUMBA_* variable makes Numba reload its whole configuration at the next
    compile, which would undo the SLP_VECTORIZE that kernels/config.py sets. True if it did."""
    import numba
    if any(v in os.environ for v in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")):
        return False
    cfg = numba.config
    if str(cfg.THREADING_LAYER).lower() != "default" or list(cfg.THREADING_LAYER_PRIORITY) != ["tbb", "omp",
                                                                                                "workqueue"]:
        return False
    cfg.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)
    return True


def configured():
    """What :func:`configure` set at import: {environment variable or numba.config name: value}."""
    return dict(_configured or {})


class ThreadTuner:
    """Chooses the number of threads of each training step: all of them (``max_threads``) or one,
    whichever made the recent steps faster per sample.

    The first steps alternate between the two counts (after one step on all threads, which also
    warms up); then one step in every ``period`` runs on the other count, to notice when the load
    changes. ``period`` doubles (up to ``max_period``) each time the probe confirms the choice and
    goes back to ``min_period`` when the choice flips, so on a steady machine the probes cost little.
    A step much slower than usual (1.5x the recent median) triggers a probe at once, and so does a
    probe faster than the current count's median that its own median (of ``window`` probes) outvoted.

    Use: ``n = tuner.next_count()``; run the step with ``numba.set_num_threads(n)``; then
    ``tuner.record(n, seconds, samples)``. The tuner itself never calls Numba.
    """

    def __init__(self, max_threads, min_period=8, max_period=256, window=3):
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ValueError(f"max_threads must be a positive int, got {max_threads!r}")
        self.max_threads = max_threads
        self.min_period, self.max_period, self.window = min_period, max_period, window
        self.current = max_threads          # the count the steps run on, between probes
        self.period = min_period
        self._times = {max_threads: [], 1: []}   # recent seconds per sample, per count
        self._since_probe = 0
        self._steps = 0
        self._probe_now = False

    @property
    def counts(self):
        """The thread counts the tuner chooses between."""
        return (self.max_threads, 1) if self.max_threads > 1 else (1,)

    def _other(self):
        return 1 if self.current == self.max_threads else self.max_threads

    def _median(self, n):
        t = sorted(self._times[n])
        return t[len(t) // 2] if t else None

    def next_count(self):
        """The number of threads for the next step."""
        if self.max_threads == 1:
            return 1
        if self._steps == 0:
            return self.max_threads          # the first step warms up (and is not recorded)
        if len(self._times[1]) < 2 or len(self._times[self.max_threads]) < 2:
            return self.max_threads if len(self._times[self.max_threads]) <= len(self._times[1]) else 1
        if self._probe_now or self._since_probe >= self.period:
            return self._other()
        return self.current

    def record(self, count, seconds, samples=1):
        """Record that a step on ``count`` threads took ``seconds`` for ``samples`` samples, and update
        the choice."""
        self._steps += 1
        if self.max_threads == 1 or self._steps == 1 or count not in self._times or samples <= 0:
            return
        per_sample = seconds / samples
        usual = self._median(count)
        times = self._times[count]
        times.append(per_sample)
        del times[:-self.window]
        if len(self._times[1]) < 2 or len(self._times[self.max_threads]) < 2:
            return
        if count != self.current:             # a probe: compare, keep the faster
            self._since_probe = 0
            self._probe_now = False
            best = min(self.counts, key=self._median)
            if best != self.current:
                self.current, self.period = best, self.min_period
            elif per_sample < self._median(self.current):
                self._probe_now = True        # this probe alone says switch: look again at once
            else:
                self.period = min(self.max_period, self.period * 2)
        else:
            self._since_probe += 1
            if usual is not None and per_sample > 1.5 * usual:
                self._probe_now = True


class tuned_threads:
    """``with tuned_threads(tuner) as step: step(fn, samples)``: runs fn() on the thread count the
    tuner chooses and records its time; the thread count in force before is restored at the end.
    With ``tuner`` None it just calls fn()."""

    def __init__(self, tuner):
        self.tuner = tuner
        self._before = None

    def __enter__(self):
        if self.tuner is not None:
            import numba
            self._before = numba.get_num_threads()
        return self.run

    def run(self, fn, samples=1):
        tuner = self.tuner
        if tuner is None:
            return fn()
        import numba
        n = tuner.next_count()
        if numba.get_num_threads() != n:
            numba.set_num_threads(n)
        t = time.perf_counter()
        result = fn()
        tuner.record(n, time.perf_counter() - t, samples)
        return result

    def __exit__(self, *exc):
        if self.tuner is not None:
            import numba
            numba.set_num_threads(self._before)
        return False


def tuner_for_fit(previous=None):
    """A ThreadTuner over the calling thread's Numba thread count (``previous``, the tuner of the
    model's last fit, when it chose for the same count), or None when there is nothing to choose
    (one thread, or AUTOENC_THREADS=off)."""
    if not policy_enabled():
        return None
    import numba
    n = numba.get_num_threads()
    if n <= 1:
        return None
    return previous if isinstance(previous, ThreadTuner) and previous.max_threads == n else ThreadTuner(n)
