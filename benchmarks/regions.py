"""The parallel regions of one training step: how many kernel calls a step runs through
threads.parallel_for, and how long each takes. On a busy machine every region waits for its slowest thread, so their
number matters as much as their work (see autoenc/threads.py).

    python benchmarks/regions.py [--model seed|wide64|wide128] [--steps 10] [--by-shape]

Run it with NUMBA_NUM_THREADS=1 and without, quiet and beside a busy process, to compare.
parallel_for is wrapped by a timer in every autoenc module that imported it.
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
    args = ap.parse_args()
    import numba

    import autoenc
    from epoch import MODELS, build
    stats = collections.defaultdict(list)
    wrap_parallel_kernels(stats, args.by_shape)
    shape, batch, _ = MODELS[args.model]
    model = build(autoenc.layers, autoenc.Model, lambda s: autoenc.Input(shape=s), args.model)
    model.compile(optimizer="adam", loss="mean_squared_error")
    x = np.random.default_rng(0).random((batch,) + shape, dtype=np.float32)
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


if __name__ == "__main__":
    main()
