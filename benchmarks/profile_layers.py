"""Per-layer forward/backward timings of the seed model (batch 256), to see where a step goes.

    python benchmarks/profile_layers.py
"""
import os
import sys
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def seed_model(autoenc):
    model = autoenc.models.seed_autoencoder()
    model.compile(optimizer="adam", loss="mse")
    return model


def main(batch=256, reps=10):
    import autoenc
    model = seed_model(autoenc)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    model.train_on_batch(x, x)
    layers = [n.layer for n in model.nodes]
    fwd = {l.name: [] for l in layers}
    bwd = {l.name: [] for l in layers}
    for _ in range(reps):
        h = x
        for l in layers:
            t = time.perf_counter()
            h = l.forward(h, training=True)
            fwd[l.name].append(time.perf_counter() - t)
        dy = np.ones_like(h) * 1e-3
        for l in reversed(layers):
            t = time.perf_counter()
            dy = l.backward(dy)
            bwd[l.name].append(time.perf_counter() - t)
    tf = tb = 0
    print(f"{'layer':24s} {'fwd ms':>8s} {'bwd ms':>8s}")
    for l in layers:
        a, b = np.median(fwd[l.name]) * 1e3, np.median(bwd[l.name]) * 1e3
        tf += a
        tb += b
        print(f"{l.name:24s} {a:8.2f} {b:8.2f}   {l.output_shape}")
    print(f"{'total':24s} {tf:8.2f} {tb:8.2f}")
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        model.train_on_batch(x, x)
        ts.append(time.perf_counter() - t)
    print(f"train_on_batch: {np.median(ts) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
