"""Time from ``import autoenc`` to the first finished training step of the seed model, with an
empty Numba cache (cold: every kernel compiles) and with the cache filled by that run (warm).

    python benchmarks/startup.py

The cache goes to a fresh temporary NUMBA_CACHE_DIR, so the cache in the source tree is untouched.
"""
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import time
t0 = time.perf_counter()
import numpy as np
import autoenc
t_import = time.perf_counter() - t0
model = autoenc.models.seed_autoencoder()
model.compile(optimizer="adam", loss="mean_squared_error")
x = np.random.default_rng(0).random((256, 28, 28, 1), dtype=np.float32)
model.train_on_batch(x, x)
print(f"RESULT {t_import:.2f} {time.perf_counter() - t0:.2f}")
"""


def run(cache_dir):
    # the checkout this file sits in, not a copy of autoenc installed elsewhere
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "NUMBA_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][0].split()
    return float(line[1]), float(line[2])


def main():
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache)
        warm = [run(cache) for _ in range(3)]
    warm = min(warm, key=lambda r: r[1])
    print("| start | import (s) | import to first finished train step (s) | target |")
    print("|---|---:|---:|---:|")
    print(f"| cold (empty Numba cache) | {cold[0]:.2f} | {cold[1]:.2f} | <= 30 |")
    print(f"| warm (cache filled) | {warm[0]:.2f} | {warm[1]:.2f} | <= 3 |")


if __name__ == "__main__":
    main()
