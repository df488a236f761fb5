"""What a training step waits on besides its multiply-adds: memory bandwidth by working-set size on 1 and
2 threads, and one kernel of the seed model timed with its arrays in the caches and after a sweep.

    python benchmarks/memory.py [--sizes 1,4,16,64] [--repeat 5]

1. Bandwidth: each thread reads one float32 array and writes another of the same size (SIZE MB each),
   over and over, in a Numba kernel that releases the GIL; GB/s per thread (bytes read + written).
   Two threads each on their own arrays show what the cores share: a cache level, or the memory.
2. The seed's 16 -> 1 output layer, forward pass (28x28x16 input padded sample by sample, 64 samples,
   one thread): with its arrays used just before (warm), and after writing a 64 MB array (cold: its
   input, padded copy and output must come back from memory), medians of ``--repeat`` x 20 calls.
"""
import argparse
import os
import sys
import threading
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scale(a, b, reps):
    """b = a * 1.0001, reps times over (compiled in main, GIL released)."""
    for _ in range(reps):
        for i in range(a.size):
            b[i] = a[i] * np.float32(1.0001)


def bandwidth(scale, size_mb, threads, repeat):
    """GB/s per thread of ``scale`` (:func:`_scale` compiled) over two arrays of size_mb each, ``threads``
    at once; the median of ``repeat`` runs."""
    n = (size_mb << 20) // 4
    reps = max(1, 512 // size_mb)
    arrays = [(np.ones(n, np.float32), np.zeros(n, np.float32)) for _ in range(threads)]
    scale(arrays[0][0], arrays[0][1], 1)
    out = []
    for _ in range(repeat):
        times = []

        def run(a, b):
            t = time.perf_counter()
            scale(a, b, reps)
            times.append(time.perf_counter() - t)
        workers = [threading.Thread(target=run, args=ab) for ab in arrays]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        out.append(2 * size_mb * reps / np.mean(times) / 1024)
    return float(np.median(out))


def output_layer(repeat):
    """us an image of the seed's output convolution's forward pass, warm and after a 64 MB sweep."""
    from autoenc.kernels.conv_forward import ACT_LINEAR, conv2d_forward_padded
    rng = np.random.default_rng(0)
    n = 64
    x = rng.random((n, 28, 28, 16), dtype=np.float32)
    xp = np.zeros((n, 30, 30, 16), np.float32)
    w = rng.standard_normal((3, 3, 16, 1)).astype(np.float32)
    b = np.zeros(1, np.float32)
    y = np.empty((n, 28, 28, 1), np.float32)
    sweep = np.ones((64 << 20) // 4, np.float32)
    conv2d_forward_padded(x, 1, 1, xp, w, b, 1, 1, ACT_LINEAR, y)
    result = {}
    for name, cold in (("warm", False), ("cold", True)):
        times = []
        for _ in range(repeat * 20):
            if cold:
                sweep += 1
            t = time.perf_counter()
            conv2d_forward_padded(x, 1, 1, xp, w, b, 1, 1, ACT_LINEAR, y)
            times.append(time.perf_counter() - t)
        result[name] = float(np.median(times)) / n * 1e6
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4,16,64", help="MB per array, comma-separated")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import numba

    from autoenc.kernels.config import njit
    numba.set_num_threads(1)   # the kernels below run on the thread that calls them
    scale = njit()(_scale)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()[0]:.1f}\n")
    print("| MB per array | 1 thread (GB/s) | each of 2 threads (GB/s) |")
    print("|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        one, two = bandwidth(scale, size, 1, args.repeat), bandwidth(scale, size, 2, args.repeat)
        print(f"| {size} | {one:.1f} | {two:.1f} |")
    layer = output_layer(args.repeat)
    print(f"\nSeed output layer forward (16 -> 1, 64 samples, one thread): {layer['warm']:.2f} us an image warm, "
          f"{layer['cold']:.2f} after a 64 MB sweep ({layer['cold'] / layer['warm']:.2f}x)")


if __name__ == "__main__":
    main()
