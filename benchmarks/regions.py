"""The parallel regions of one training step: how many kernel calls a step runs through
threads.parallel_for, and how long each takes. On a busy machine every region waits for its slowest thread, so their
number matters as much as their work (see autoenc/threads.py).

    python benchmarks/regions.py [--model seed|wide64|wide128] [--steps 10] [--by-shape]
    python benchmarks/regions.py --parts 4,8,16,32 [--rounds 12]

Run it with NUMBA_NUM_THREADS=1 and without, quiet and beside a busy process, to compare.
parallel_for is wrapped by a timer in every autoenc module that imported it.

``--parts``: the step in parts (models/parallel_step.py) with each number of parts in turn, for
``--rounds`` alternated rounds of ``--steps`` steps: the median step, and the threads' time inside the
kernels and outside them. Each part runs on a model of its own, so smaller parts cut the same work
arrays into more pieces, and each part adds its Python (the layers' glue): the time outside.
"""
import argparse
import collections
import os
import sys
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def wrap_parallel_kernels(stats, by_shape=False):
    """Replace parallel_for, in every autoenc module that imported it, by a call timed under the name of
    the kernel it runs (``by_shape``: and the shapes of its array arguments of 2 or more dimensions)."""
    from autoenc.threads import parallel_for

    def timed(kernel, n, *args):
        t = time.perf_counter()
        parallel_for(kernel, n, *args)
        name = f"{kernel.__module__.rsplit('.', 1)[-1]}.{kernel.__name__}"
        if by_shape:
            name += " " + " ".join("x".join(map(str, a.shape)) for a in args
                                   if isinstance(a, np.ndarray) and a.ndim >= 2 and a.size)
        stats[name].append(time.perf_counter() - t)

    for modname, mod in list(sys.modules.items()):
        if modname.startswith("autoenc.kernels.") and getattr(mod, "parallel_for", None) is parallel_for:
            mod.parallel_for = timed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="seed")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--by-shape", action="store_true", help="one row per kernel and shapes of its arrays")
    ap.add_argument("--parts", help="comma-separated part counts of the step in parts, compared")
    ap.add_argument("--rounds", type=int, default=12, help="with --parts: alternated rounds")
    args = ap.parse_args()
    import numba

    import autoenc
    from epoch import MODELS, build
    stats = collections.defaultdict(list)
    wrap_parallel_kernels(stats, args.by_shape)
    shape, batch, _ = MODELS[args.model]

    def make():
        m = build(autoenc.layers, autoenc.Model, lambda s: autoenc.Input(shape=s), args.model)
        m.compile(optimizer="adam", loss="mean_squared_error")
        return m

    model = make()
    x = np.random.default_rng(0).random((batch,) + shape, dtype=np.float32)
    if args.parts:
        compare_parts(model, make, x, stats, [int(p) for p in args.parts.split(",")], args.rounds, args.steps)
        return
    model.train_on_batch(x, x)
    stats.clear()
    t = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, x)
    step = (time.perf_counter() - t) / args.steps
    calls = sum(len(v) for v in stats.values()) / args.steps
    inside = sum(sum(v) for v in stats.values()) / args.steps
    print(f"{args.model}, batch {batch}, {numba.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}: step {step * 1e3:.1f} ms; {calls:.0f} parallel regions per step, "
          f"{inside * 1e3:.1f} ms inside them, {(step - inside) * 1e3:.1f} ms between\n")
    print("| kernel | calls per step | median (us) | shortest (us) | ms per step |")
    print("|---|---:|---:|---:|---:|")
    for name, v in sorted(stats.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {name} | {len(v) / args.steps:.0f} | {np.median(v) * 1e6:.0f} | {min(v) * 1e6:.0f} | "
              f"{sum(v) / args.steps * 1e3:.2f} |")


def compare_parts(model, make, x, stats, counts, rounds, steps):
    """Print, per number of parts, the median over ``rounds`` of a step's time, and of the threads' time
    inside the kernels and outside them (each round ``steps`` steps; the counts' order reversed every
    other round). Each count trains a model of its own from ``make()``, starting from ``model``'s
    weights: on one model, a new part size would make every work array again (Workspace.array) at
    each change of count."""
    import numba

    from autoenc.models import parallel_step
    default = parallel_step.PARTS
    models, times, sizes = {}, {p: [] for p in counts}, {}
    try:
        for p in counts:   # each count's model and work arrays made before the timing
            parallel_step.PARTS = p
            models[p] = make()
            models[p].set_weights(model.get_weights())
            sizes[p] = parallel_step.part_size(models[p], x.shape[0])
            for _ in range(2):
                models[p].train_on_batch(x, x)
        for r in range(rounds):
            for p in counts if r % 2 == 0 else counts[::-1]:
                parallel_step.PARTS = p
                stats.clear()
                t = time.perf_counter()
                for _ in range(steps):
                    models[p].train_on_batch(x, x)
                step = (time.perf_counter() - t) / steps
                inside = sum(sum(v) for v in stats.values()) / steps
                times[p].append((step, inside))
    finally:
        parallel_step.PARTS = default
    k = numba.get_num_threads()
    print(f"batch {x.shape[0]}, {k} thread(s), {rounds} rounds of {steps} steps, load average "
          f"{os.getloadavg()[0]:.1f}; thread time in and outside the kernels summed over the threads (outside: "
          f"Python, and on several threads their waits)\n")
    print("| parts | samples a part | step (ms) | in kernels (ms) | outside (ms) | step vs the first |")
    print("|---:|---:|---:|---:|---:|---:|")
    first = times[counts[0]]
    for p in counts:
        v = times[p]
        print(f"| {p} | {sizes[p]} | {np.median([a for a, _ in v]) * 1e3:.2f} | "
              f"{np.median([b for _, b in v]) * 1e3:.2f} | {np.median([k * a - b for a, b in v]) * 1e3:.2f} | "
              f"{np.median([a / f for (a, _), (f, _) in zip(v, first)]):.3f} |")


if __name__ == "__main__":
    main()
