"""How autoenc runs its kernels on several threads, and how many threads each step gets.

1. :func:`parallel_for` runs a kernel in pieces (samples, chunks of the batch, blocks of an array),
   one per thread, on a pool of Python threads; the kernels release the GIL (Numba's nogil), so the
   pieces run at the same time. It replaced Numba's prange loops, which Numba compiles twice (the
   loop body once more as a function of its own, with every kernel it calls linked into both): the
   cold start from an empty Numba cache went from 49 to 31 s (issue 15; autoenc/warmup.py takes it
   further). The count is the calling thread's Numba thread count (``numba.get_num_threads()``:
   NUMBA_NUM_THREADS, or ``numba.set_num_threads``). A waiting worker sleeps on a lock, so a
   finished thread never spins on a core that another program needs, and the calling thread takes
   any piece no worker has started yet.
2. :class:`ThreadTuner`: ``fit`` (and ``train_on_batch``), ``predict`` and ``evaluate`` time their
   steps on all threads and on one, and keep the faster. A training step of the seed model is about
   40 short kernel calls (0.05-1 ms each); when another program keeps a core busy, one of autoenc's
   threads is often waiting for the CPU and every call waits for it (issue 15: 18.6 s an epoch beside
   one busy process, 2.65 s on one thread). The first steps alternate the two counts, then a probe
   now and then (less and less often while it confirms the choice, at once when the step time
   drifts) follows a load that starts or stops. So a step is never much slower than on one thread.
   ``AUTOENC_THREADS=off`` turns the tuner off (every step on the caller's count).

The count cannot change the results: every kernel sums in fixed chunks whatever the number of
threads (kernels/config.py), so a step gives the same numbers bit for bit on 1 thread or on 8
(tests/test_threads.py checks it).
"""
import os
import threading
import time


def policy_enabled():
    """Whether autoenc's thread tuner is on: it is unless the environment says AUTOENC_THREADS=off."""
    return os.environ.get("AUTOENC_THREADS", "").strip().lower() not in ("off", "0", "false", "no")


# --- the pool that runs the kernels' pieces ------------------------------------------------------
#
# Every kernel that runs on several threads is a Numba function compiled with nogil=True over a
# range of items: ``kernel(lo, hi, *args)``. ``parallel_for`` cuts the items into one contiguous
# piece per thread and runs them on the pool, the calling thread included.


class _Region:
    """One call of :func:`parallel_for`: the pieces not yet taken, how many are unfinished, how many a
    worker is running, the first error raised by a piece, and ``done``, a lock released when the last
    piece ends. ``stopped``: no more pieces start (the caller was interrupted)."""
    __slots__ = ("kernel", "args", "pieces", "left", "running", "stopped", "error", "mutex", "done")

    def __init__(self, kernel, args, pieces):
        self.kernel, self.args, self.pieces = kernel, args, pieces
        self.left, self.running, self.stopped, self.error = len(pieces), 0, False, None
        self.mutex = threading.Lock()
        self.done = threading.Lock()
        self.done.acquire()


def _run_pieces(region, worker=False):
    """Take pieces of ``region`` until none is left, and run them (``worker``: on a pool thread)."""
    while True:
        with region.mutex:              # a piece is taken by one thread only
            if region.stopped or not region.pieces:
                return
            lo, hi = region.pieces.pop()
            region.running += worker
        try:
            region.kernel(lo, hi, *region.args)
        except BaseException as e:      # re-raised by the caller, once every piece has ended
            if region.error is None:
                region.error = e
        with region.mutex:
            region.running -= worker
            region.left -= 1
            last = region.left == 0
        if last:
            region.done.release()


class _Pool:
    """Worker threads, started when first needed; each sleeps on its own lock until woken."""

    def __init__(self):
        self.busy = threading.Lock()    # held by the parallel_for that uses the workers
        self.region = None
        self.wakes = []

    def workers(self, k):
        while len(self.wakes) < k:
            wake = threading.Lock()
            wake.acquire()
            threading.Thread(target=self._work, args=(wake,), name=f"autoenc-{len(self.wakes) + 1}",
                             daemon=True).start()
            self.wakes.append(wake)
        return self.wakes[:k]

    def _work(self, wake):
        while True:
            wake.acquire()
            region = self.region
            if region is not None:
                _run_pieces(region, worker=True)


_pool = _Pool()
os.register_at_fork(after_in_child=lambda: globals().update(_pool=_Pool()))   # a child has no workers


def pieces(n, count):
    """The contiguous pieces [(lo, hi), ...] that :func:`parallel_for` cuts n items into, for
    ``count`` threads: min(count, n) of them, sizes differing by at most one."""
    count = max(1, min(count, n))
    return [(i * n // count, (i + 1) * n // count) for i in range(count)]


def parallel_for(kernel, n, *args):
    """Run ``kernel(lo, hi, *args)`` over the items 0..n-1, in one contiguous piece per thread of the
    calling thread's Numba thread count (``numba.get_num_threads()``, at most n), and return when
    every piece has ended. The calling thread runs pieces too, and takes any piece that no worker
    has started yet (so a worker that the OS keeps waiting, on a busy machine, costs little). An
    error raised by a piece is raised here, after the others end; an interrupt (Ctrl-C) too, once the
    pieces running on workers have ended (no more start), so they never overlap the next call.

    The pieces must write disjoint parts of the arrays; a kernel's result then does not depend on
    the number of threads. The kernel must release the GIL (``njit(nogil=True)``, the default of
    kernels/config.njit) for the pieces to run at the same time. One call at a time uses the
    workers: a call made meanwhile (from another thread, or from inside a piece) runs all its
    items on its own thread. Under NUMBA_DISABLE_JIT=1 (Python kernels, which hold the GIL) the
    items run as one piece on the calling thread, where a debugger steps through them."""
    if n <= 0:
        return
    pool = _pool
    if pool.busy.locked():   # the workers are taken (as in a piece of a step in parts): no need to ask Numba
        kernel(0, n, *args)
        return
    import numba
    count = 1 if numba.config.DISABLE_JIT else min(numba.get_num_threads(), n)
    if count <= 1 or not pool.busy.acquire(blocking=False):
        kernel(0, n, *args)
        return
    try:
        region = _Region(kernel, args, pieces(n, count)[::-1])   # popped from the end: the first piece first
        pool.region = region
        for wake in pool.workers(count - 1):
            try:
                wake.release()
            except RuntimeError:    # already woken, and not yet back: it will find this region
                pass
        try:
            _run_pieces(region)
            region.done.acquire()
        except BaseException:
            # Ctrl-C: no more pieces start, and the workers' pieces end before the next call can meet
            # them in the same arrays
            with region.mutex:
                region.stopped = True
            while region.running:
                time.sleep(0.001)
            raise
    finally:
        pool.region = None
        pool.busy.release()
    if region.error is not None:
        raise region.error


class ThreadTuner:
    """Chooses the number of threads of each step of a loop (fit's training steps, predict's or
    evaluate's batches): all of them (``max_threads``) or one, whichever the recent steps measured
    faster per sample. The choice never changes a result (every kernel sums in fixed chunks).

    1. Warm-up: the first step runs on all threads and is not recorded (it may load or compile
       kernels).
    2. Settle: the next ``2 * settle`` steps alternate all threads and one; the count of the lower
       median time per sample is kept (all threads on a tie).
    3. Run on that count, keeping the last ``window`` step times of each count. After ``period``
       steps, one probe step runs on the other count and joins its window. If the medians still
       say the same and the probe is not much faster than its count's median (by ``drift``),
       ``period`` doubles (up to ``max_period``): on a steady machine the probes cost less and less.
       A probe also runs at once when the median of the current count's last ``drift_steps`` steps
       has drifted by more than ``drift`` from its value at the last decision (the load started or
       stopped; checked from ``min_gap`` steps after the last decision or probe); if the other count
       is no better, ``period`` goes back to ``min_period`` and the drifted time is the new reference.
    4. A probe that flips the medians or is much faster than before starts a burst: the other
       count's older times are dropped as stale, the next steps run on it until it has ``settle``
       fresh ones, and their median against the current count's last 3 decides, the other count
       winning only by more than ``margin``; ``period`` goes back to ``min_period``.

    Decisions rest on medians, so one step slowed by a descheduled thread does not flip the choice.
    Only the tuner's own measurements count, not the load average (which also counts autoenc's own
    threads).

    Use: ``n = tuner.next_count()``; run the step on ``n`` threads; then
    ``tuner.record(n, seconds, samples)``. The tuner itself never calls Numba (see
    :class:`tuned_threads`), so its logic can be driven by made-up timings.
    """

    def __init__(self, max_threads, settle=3, window=7, min_period=8, max_period=128, min_gap=4, drift=0.2,
                 drift_steps=4, margin=0.03):
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ValueError(f"max_threads must be a positive int, got {max_threads!r}")
        self.max_threads = max_threads
        self.settle, self.window, self.min_period, self.max_period = settle, window, min_period, max_period
        self.min_gap, self.drift, self.drift_steps, self.margin = min_gap, drift, drift_steps, margin
        self.current = max_threads          # the count the steps run on, between probes
        self.period = min_period
        self.steps = 0                      # steps recorded (the warm-up included)
        self.phase = "warm-up" if max_threads > 1 else "run"   # then "settle", "run", "probe", "burst"
        self.switches = []                  # (step, new count) each time the choice changed after settling
        self._times = {max_threads: [], 1: []}   # per count: recent seconds per sample, newest last
        self._since = 0                     # steps on the current count since the last decision or probe
        self._baseline = None               # the current count's median at the last decision
        self._drifted = False               # the probe under way was started by a drift

    @property
    def counts(self):
        """The thread counts the tuner chooses between."""
        return (self.max_threads, 1) if self.max_threads > 1 else (1,)

    def _other(self):
        return 1 if self.current == self.max_threads else self.max_threads

    @staticmethod
    def _median(values):
        t = sorted(values)
        n = len(t)
        return (t[n // 2] + t[(n - 1) // 2]) / 2 if n else None

    def _med(self, count, last=None):
        return self._median(self._times[count][-(last or self.window):])

    def next_count(self):
        """The number of threads for the next step."""
        if self.max_threads == 1:
            return 1
        if self.phase == "warm-up":
            return self.max_threads
        if self.phase in ("settle", "burst"):   # alternate; all threads first in the settling
            a, b = (self.max_threads, 1) if self.phase == "settle" else (self._other(), self.current)
            return a if len(self._times[a]) <= len(self._times[b]) else b
        if self.phase == "probe":
            return self._other()
        return self.current

    def record(self, count, seconds, samples=1):
        """Record that a step on ``count`` threads took ``seconds`` for ``samples`` samples, and update
        the choice. A step on a count the tuner did not offer, or of no samples, is ignored."""
        self.steps += 1
        if self.max_threads == 1 or count not in self._times or samples <= 0:
            return
        if self.phase == "warm-up":
            self.phase = "settle"
            return
        t = seconds / samples
        times = self._times[count]
        before = self._med(count)
        times.append(t)
        del times[:-self.window]
        other = self._other()
        if self.phase == "settle" or self.phase == "burst":
            fresh = min(len(v) for v in self._times.values())
            if fresh >= self.settle:
                if self.phase == "settle":
                    best = min(self.counts, key=lambda c: (self._med(c), c != self.max_threads))
                else:
                    best = other if self._med(other) * (1 + self.margin) < self._med(self.current) else self.current
                self._decide(best, self.min_period)
            return
        if self.phase == "probe" and count == other:
            flips = self._med(other) * (1 + self.margin) < self._med(self.current)
            # the other count got faster, and this step beat the current count's median
            faster = (before is not None and t * (1 + self.drift) < before
                      and t * (1 + self.margin) < self._med(self.current))
            if flips or faster:
                self._burst(keep=[t])
            elif self._drifted:           # the current count's time changed, but the other is no better
                self._decide(self.current, self.min_period)
            else:
                self.phase, self._since = "run", 0
                self.period = min(self.max_period, 2 * self.period)
            return
        if count != self.current:
            return
        self._since += 1
        if self._since < self.min_gap:
            return
        recent = self._med(count, self.drift_steps)
        self._drifted = not self._baseline / (1 + self.drift) <= recent <= self._baseline * (1 + self.drift)
        if self._drifted or self._since >= self.period:
            self.phase = "probe"

    def _burst(self, keep):
        """Drop the other count's stale times (but ``keep``) and alternate until it has fresh ones."""
        self._times[self._other()] = list(keep)
        self._times[self.current] = self._times[self.current][-3:]   # the latest, after a drift
        self.phase = "burst"

    def _decide(self, count, period):
        if count != self.current and self.phase != "settle":
            self.switches.append((self.steps, count))
        self.current, self.period = count, period
        self.phase, self._since, self._drifted = "run", 0, False
        self._baseline = self._med(count)


class tuned_threads:
    """``with tuned_threads(tuner) as step: step(fn, samples)``: each ``step`` runs fn() on the thread
    count the tuner chooses, records its time, and puts back the count that was in force (so code
    between the steps, a callback or a validation pass, runs on the caller's count). With ``tuner``
    None it just calls fn()."""

    def __init__(self, tuner):
        self.tuner = tuner

    def __enter__(self):
        return self.run

    def run(self, fn, samples=1):
        tuner = self.tuner
        if tuner is None:
            return fn()
        import numba
        before = numba.get_num_threads()
        n = tuner.next_count()
        if n != before:
            numba.set_num_threads(n)
        try:
            t = time.perf_counter()
            result = fn()
            tuner.record(n, time.perf_counter() - t, samples)
        finally:
            if n != before:
                numba.set_num_threads(before)
        return result

    def __exit__(self, *exc):
        return False


def tuner_for_fit(previous=None):
    """A ThreadTuner over the calling thread's Numba thread count (``previous``, the tuner of the
    model's last call, when it chose for the same count), or None when there is nothing to choose
    (one thread, or AUTOENC_THREADS=off)."""
    if not policy_enabled():
        return None
    import numba
    n = numba.get_num_threads()
    if n <= 1:
        return None
    return previous if isinstance(previous, ThreadTuner) and previous.max_threads == n else ThreadTuner(n)


def model_tuner(model, kind):
    """The tuner of ``model``'s ``kind`` of loop ("train": fit and train_on_batch; "predict":
    predict and predict_on_batch; "test": evaluate, test_on_batch and fit's validation), kept on the
    model between calls (``model._thread_tuners``), made anew when the caller's thread count changed;
    None when there is nothing to choose (see :func:`tuner_for_fit`)."""
    tuners = getattr(model, "_thread_tuners", None)
    if tuners is None:
        tuners = model._thread_tuners = {}
    tuner = tuners[kind] = tuner_for_fit(tuners.get(kind))
    return tuner
