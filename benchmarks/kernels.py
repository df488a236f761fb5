"""Per-kernel speed on the seed model's convolution shapes (batch 256), in GFLOP/s.

    python benchmarks/kernels.py [--batch 256] [--repeat 7]

Each kernel is timed on preallocated arrays, as the layers call it; the best of ``--repeat`` runs
is reported (the machine may be shared). Peak: 2 cores x 2 FMA units x 8 float32 lanes x 2 flops
x ~2.45 GHz = ~157 GFLOP/s (AVX2 FMA; the EPYC's AVX-512 runs on the same 256-bit units).
"""
import argparse
import os
import sys
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEAK_GFLOPS = 157.0

# (name, h, w, cin, cout) of the seed model's 3x3 'same' convolutions
SEED_CONVS = [("enc1 1->16 @28", 28, 28, 1, 16), ("enc2 16->8 @14", 14, 14, 16, 8),
              ("enc3 8->8 @7", 7, 7, 8, 8), ("dec1 8->8 @7", 7, 7, 8, 8),
              ("dec2 8->8 @14", 14, 14, 8, 8), ("dec3 8->16 @28", 28, 28, 8, 16),
              ("out 16->1 @28", 28, 28, 16, 1)]


def best_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    import numba

    from autoenc.kernels import convolution as K
    from autoenc.kernels import pooling as P
    from autoenc.kernels import upsampling as U

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    n, rep = args.batch, args.repeat
    rng = np.random.default_rng(0)
    print(f"numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} threads, layer "
          f"{numba.threading_layer() if K.conv2d_forward.signatures else '?'}; batch {n}; "
          f"best of {rep}; peak ~{PEAK_GFLOPS:.0f} GFLOP/s\n")
    print("| layer | kernel | ms | GFLOP/s | % of peak |")
    print("|---|---|---:|---:|---:|")
    total_ms, total_flop = 0.0, 0.0
    for name, h, w, cin, cout in SEED_CONVS:
        x = rng.random((n, h, w, cin), dtype=np.float32)
        xp = np.zeros((n, h + 2, w + 2, cin), np.float32)
        K.pad_into(x, 1, 1, xp)
        wk = (rng.standard_normal((3, 3, cin, cout)) * 0.1).astype(np.float32)
        b = np.zeros(cout, np.float32)
        y = np.empty((n, h, w, cout), np.float32)
        dy = rng.standard_normal((n, h, w, cout)).astype(np.float32)
        dx = np.empty_like(x)
        dw = np.empty_like(wk)
        db = np.empty_like(b)
        part = np.empty((K.n_chunks(n),) + wk.shape, np.float32)
        dyp = np.zeros((n, h + 2, w + 2, cout), np.float32)
        wt = np.empty((3, 3, cout, cin), np.float32)
        zb = np.zeros(cin, np.float32)
        flop = 2.0 * n * h * w * 9 * cin * cout
        dz = np.empty_like(dy)
        db_part = np.empty((K.n_chunks(n), cout), np.float32)
        # the kernels a Conv2D layer with ReLU calls in one training step
        runs = [("pad_into", lambda: K.pad_into(x, 1, 1, xp), 0),
                ("conv2d_forward (+relu)", lambda: K.conv2d_forward(xp, wk, b, 1, 1, K.ACT_RELU, y), flop),
                ("conv2d_backward_dz (relu mask, bias, dilate)",
                 lambda: K.conv2d_backward_dz(dy, y, True, 1, 1, 1, 1, dz, dyp, db_part, db), 0),
                ("conv2d_backward_kernel", lambda: K.conv2d_backward_kernel_chunks(xp, dz, 1, 1, part, dw), flop),
                ("conv2d_backward_input_padded", lambda: K.conv2d_backward_input_padded(dyp, wk, wt, zb, dx), flop)]
        for kname, fn, fl in runs:
            t = best_time(fn, rep)
            if not (name.startswith("enc1") and kname == "conv2d_backward_input_padded"):  # training skips it
                total_ms += t * 1e3
                total_flop += fl
            g = fl / t / 1e9 if fl else float("nan")
            print(f"| {name} | {kname} | {t * 1e3:.2f} | {g:.1f} | {100 * g / PEAK_GFLOPS:.0f}% |"
                  if fl else f"| {name} | {kname} | {t * 1e3:.2f} | | |")
    for name, h, w, c in [("pool1 @28x16", 28, 28, 16), ("pool2 @14x8", 14, 14, 8)]:
        x = rng.random((n, h, w, c), dtype=np.float32)
        y = np.empty((n, h // 2, w // 2, c), np.float32)
        am = np.empty(y.shape, np.int32)
        dx = np.empty_like(x)
        for kname, fn in [("maxpool2d_forward", lambda: P.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y, am)),
                          ("maxpool2d_backward", lambda: P.maxpool2d_backward(y, am, dx))]:
            t = best_time(fn, rep)
            total_ms += t * 1e3
            print(f"| {name} | {kname} | {t * 1e3:.2f} | | |")
    for name, h, w, c in [("up1 @7x8", 7, 7, 8), ("up2 @14x8", 14, 14, 8)]:
        x = rng.random((n, h, w, c), dtype=np.float32)
        y = np.empty((n, 2 * h, 2 * w, c), np.float32)
        dx = np.empty_like(x)
        for kname, fn in [("upsample2d_forward", lambda: U.upsample2d_forward(x, 2, 2, y)),
                          ("upsample2d_backward", lambda: U.upsample2d_backward(y, 2, 2, dx))]:
            t = best_time(fn, rep)
            total_ms += t * 1e3
            print(f"| {name} | {kname} | {t * 1e3:.2f} | | |")
    print(f"\nall kernels of one training step (the first layer's input gradient is never needed): "
          f"{total_ms:.1f} ms, convolutions "
          f"{total_flop / 1e9:.2f} GFLOP")


if __name__ == "__main__":
    main()
