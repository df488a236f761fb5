"""Per-kernel speed on the seed model's convolution shapes (batch 256), in GFLOP/s, against the
machine's multiply-add peak.

    python benchmarks/kernels.py [--batch 256] [--repeat 7] [--peak GFLOPS]

Each kernel is timed on preallocated arrays, as the layers call it; the best of ``--repeat`` runs
is reported (the machine may be shared). The peak is measured, not assumed: benchmarks/fma_peak.c,
built with the system C compiler, runs one copy per Numba thread at once and the rates are added
(on this 2-core EPYC: 2 x 117 = 233 GFLOP/s). ``--peak`` gives it by hand where there is no compiler.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))

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


def measured_peak(threads):
    """Float32 multiply-add GFLOP/s of `threads` cores together: one copy of fma_peak.c per thread,
    run at once, rates added. None when no C compiler can build it."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "fma_peak")
        if subprocess.run([cc, "-O2", "-march=native", "-o", exe, os.path.join(HERE, "fma_peak.c")],
                          capture_output=True).returncode:
            return None
        runs = [subprocess.Popen([exe], stdout=subprocess.PIPE, text=True) for _ in range(threads)]
        return sum(float(r.communicate()[0]) for r in runs)


def main():
    import numba

    from autoenc.kernels import config, conv_forward, conv_input_grad, conv_weight_grad, padding
    from autoenc.kernels import pooling as P
    from autoenc.kernels import upsampling as U

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--peak", type=float, help="multiply-add peak in GFLOP/s (default: measured)")
    args = ap.parse_args()
    n, rep = args.batch, args.repeat
    threads = numba.config.NUMBA_NUM_THREADS
    peak = args.peak or measured_peak(threads)
    rng = np.random.default_rng(0)
    padding.pad_into(np.zeros((2, 1, 1, 1), np.float32), 0, 0, np.zeros((2, 1, 1, 1), np.float32))  # starts the workers
    print(f"numba {numba.__version__}, {threads} threads; batch {n}; "
          f"best of {rep}; peak {f'{peak:.0f} GFLOP/s' if peak else 'unknown (no C compiler; pass --peak)'}\n")
    print("| layer | kernel | ms | GFLOP/s | % of peak |")
    print("|---|---|---:|---:|---:|")
    total_ms, total_flop = 0.0, 0.0
    for name, h, w, cin, cout in SEED_CONVS:
        x = rng.random((n, h, w, cin), dtype=np.float32)
        xp = np.zeros((n, h + 2, w + 2, cin), np.float32)
        padding.pad_into(x, 1, 1, xp)
        wk = (rng.standard_normal((3, 3, cin, cout)) * 0.1).astype(np.float32)
        b = np.zeros(cout, np.float32)
        y = np.empty((n, h, w, cout), np.float32)
        dy = rng.standard_normal((n, h, w, cout)).astype(np.float32)
        dx = np.empty_like(x)
        dw = np.empty_like(wk)
        db = np.empty_like(b)
        part = np.empty((config.n_chunks(n),) + wk.shape, np.float32)
        dyp = np.zeros((n, h + 2, w + 2, cout), np.float32)
        wt = np.empty((3, 3, cout, cin), np.float32)
        zb = np.zeros(cin, np.float32)
        flop = 2.0 * n * h * w * 9 * cin * cout
        dz = np.empty_like(dy)
        db_part = np.empty((config.n_chunks(n), cout), np.float32)
        # the kernels a Conv2D layer with ReLU calls in one training step
        runs = [("pad_into", lambda: padding.pad_into(x, 1, 1, xp), 0),
                ("conv2d_forward (+relu)",
                 lambda: conv_forward.conv2d_forward(xp, wk, b, 1, 1, conv_forward.ACT_RELU, y), flop),
                ("conv2d_backward_dz (relu mask, bias, dilate)",
                 lambda: conv_weight_grad.conv2d_backward_dz(dy, y, True, 1, 1, 1, 1, dz, dyp, db_part, db), 0),
                ("conv2d_backward_kernel",
                 lambda: conv_weight_grad.conv2d_backward_kernel_chunks(xp, dz, 1, 1, part, dw), flop),
                ("conv2d_backward_input_padded",
                 lambda: conv_input_grad.conv2d_backward_input_padded(dyp, wk, wt, zb, dx), flop)]
        for kname, fn, fl in runs:
            t = best_time(fn, rep)
            if not (name.startswith("enc1") and kname == "conv2d_backward_input_padded"):  # training skips it
                total_ms += t * 1e3
                total_flop += fl
            g = fl / t / 1e9 if fl else float("nan")
            share = f"{100 * g / peak:.0f}%" if fl and peak else ""
            print(f"| {name} | {kname} | {t * 1e3:.2f} | {f'{g:.1f}' if fl else ''} | {share} |")
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
    conv = total_flop / 1e9
    print(f"\nall kernels of one training step (the first layer's input gradient is never needed): "
          f"{total_ms:.1f} ms, convolutions {conv:.2f} GFLOP: {conv / total_ms * 1e3:.0f} GFLOP/s over the step"
          + (f", {100 * conv / total_ms * 1e3 / peak:.0f}% of peak" if peak else ""))


if __name__ == "__main__":
    main()
