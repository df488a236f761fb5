"""Where a training step goes: GFLOP/s of each convolution's three kernels (forward, input gradient,
weight gradient) on the shapes of the seed model and of two wider models, with 1 and 2 threads, and
each model's median training step.

    python benchmarks/profile_layers.py [--models seed,wide64,wide128] [--threads 1,2] [--repeat 5]

Models (3x3 'same' ReLU convolutions, sigmoid output, MSE, Adam):

    seed     28x28x1,   16-8-8 / 8-8-16-1,         batch 256 (models.seed_autoencoder)
    wide64   64x64x3,   32-64 / 64-32-3,           batch 64  (conv/pool encoder, conv/upsampling decoder)
    wide128  128x128x3, 32-64-128 / 128-64-32-3,   batch 16

Each kernel runs on preallocated arrays, as Conv2DKernels calls it; the best of ``--repeat`` runs is
reported (the machine may be shared: compare runs interleaved, and note ``uptime``). The first
layer's input gradient is timed but a training step skips it. A convolution that reads a 2x2
upsampling is timed as the step runs it, as its phase convolution on the small input ("(phases)":
a 2x2 kernel to four times the channels, autoenc.kernels.upsample_conv); MFLOP and GF/s count the
multiply-adds the kernels do, which for those layers are about half of the 3x3 convolution's.
"""
import argparse
import os
import sys
import time

import numpy as np

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wide_model(autoenc, size, filters):
    """Conv(f)-MaxPool per entry of ``filters``, then Conv(filters[-1]), then Conv(f)-UpSampling per
    entry in reverse, and a Conv(3, sigmoid): size x size x 3 -> the same."""
    from autoenc.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
    inp = Input(shape=(size, size, 3))
    h = inp
    for f in filters:
        h = Conv2D(f, 3, activation="relu", padding="same")(h)
        h = MaxPooling2D(2, padding="same")(h)
    for f in reversed(filters):
        h = Conv2D(f, 3, activation="relu", padding="same")(h)
        h = UpSampling2D(2)(h)
    out = Conv2D(3, 3, activation="sigmoid", padding="same")(h)
    return autoenc.models.Model(inp, out)


MODELS = {"seed": (lambda a: a.models.seed_autoencoder(), (28, 28, 1), 256),
          "wide64": (lambda a: wide_model(a, 64, (32, 64)), (64, 64, 3), 64),
          "wide128": (lambda a: wide_model(a, 128, (32, 64, 128)), (128, 128, 3), 16)}


def best_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def on_lines(a):
    """A copy of ``a`` that starts on a cache line, as a training step's work arrays do
    (workspace.aligned, which makes the empty and zeroed ones here; NumPy's own start 16 bytes into one)."""
    from autoenc.kernels.workspace import aligned
    out = aligned(a.shape, a.dtype)
    out[...] = a
    return out


def conv_shapes(model):
    """(name, h, w, cin, cout, first, phased) of each 3x3 'same' stride-1 Conv2D of a built model: h, w
    its input's; phased where a training step runs it with the UpSampling2D before it, as four 2x2
    convolutions on the small input (Conv2D.forward_upsampled)."""
    from autoenc.layers import Conv2D
    from autoenc.models.model import _runs_fused
    phased = {id(c.layer) for u, c in model._fusable if _runs_fused(u.layer, c.layer)}
    out = []
    for node in model.nodes:
        layer = node.layer
        if isinstance(layer, Conv2D):
            _, h, w, cin = layer.input_shape
            out.append((layer.name, h, w, cin, layer.filters, not out, id(layer) in phased))
    return out


def profile_convs(model, batch, repeat, rng):
    """Rows (layer, shape, FLOPs its kernels do, seconds of forward, input gradient, weight gradient,
    first layer?), each kernel as a training step calls it."""
    from autoenc.kernels import config, conv_forward, conv_input_grad, conv_weight_grad, padding
    from autoenc.kernels.workspace import aligned
    rows = []
    for name, h, w, cin, cout, first, phased in conv_shapes(model):
        n = batch
        if phased:
            rows.append(profile_phases(name, n, h, w, cin, cout, first, repeat, rng))
            continue
        x = rng.random((n, h, w, cin), dtype=np.float32)
        xp = aligned((n, h + 2, w + 2, cin), np.float32, zeros=True)
        padding.pad_into(x, 1, 1, xp)
        wk = on_lines((rng.standard_normal((3, 3, cin, cout)) * 0.1).astype(np.float32))
        b = aligned((cout,), np.float32, zeros=True)
        y = aligned((n, h, w, cout), np.float32)
        dz = on_lines(rng.standard_normal((n, h, w, cout)).astype(np.float32))
        dzp = aligned((n, h + 2, w + 2, cout), np.float32, zeros=True)
        padding.pad_into(dz, 1, 1, dzp)
        dx, dw = aligned(x.shape, np.float32), aligned(wk.shape, np.float32)
        part = aligned((config.n_chunks(n),) + wk.shape, np.float32)
        wt, zb = aligned((3, 3, cout, cin), np.float32), aligned((cin,), np.float32, zeros=True)
        flop = 2.0 * n * h * w * 9 * cin * cout
        t_f = best_time(lambda: conv_forward.conv2d_forward(xp, wk, b, 1, 1, conv_forward.ACT_RELU, y), repeat)
        t_i = best_time(lambda: conv_input_grad.conv2d_backward_input_padded(dzp, wk, wt, zb, dx), repeat)
        t_w = best_time(lambda: conv_weight_grad.conv2d_backward_kernel_chunks(xp, dz, 1, 1, part, dw), repeat)
        rows.append((name, f"{cin}->{cout} @{h}", flop, t_f, t_i, t_w, first))
    return rows


def profile_phases(name, n, h, w, cin, cout, first, repeat, rng):
    """profile_convs' row for a convolution run on the output of a 2x2 upsampling of an (h/2, w/2) input:
    its phase convolution (autoenc.kernels.upsample_conv), a 2x2 kernel from cin to 4*cout channels on
    the small input in a 1-pixel halo, which the forward pass interleaves into the (h, w) output."""
    from autoenc.kernels import config, conv_forward, conv_input_grad, conv_weight_grad, padding, upsample_conv
    from autoenc.kernels.workspace import aligned
    hs, ws = h // 2, w // 2
    x = on_lines(rng.random((n, hs, ws, cin), dtype=np.float32))
    xp = aligned((n, hs + 2, ws + 2, cin), np.float32, zeros=True)
    padding.pad_into(x, 1, 1, xp)
    wq = on_lines(upsample_conv.phase_kernel((rng.standard_normal((3, 3, cin, cout)) * 0.1).astype(np.float32),
                                             "same"))
    bq = aligned((4 * cout,), np.float32, zeros=True)
    (base, step), _ = upsample_conv.phase_offsets("same")
    z = aligned((n, h, w, cout), np.float32)
    dq = on_lines(rng.standard_normal((n, hs + 1, ws + 1, 4 * cout)).astype(np.float32))
    dx, dwq = aligned(x.shape, np.float32), aligned(wq.shape, np.float32)
    part = aligned((config.n_chunks(n),) + wq.shape, np.float32)
    wt, zb = aligned((2, 2, 4 * cout, cin), np.float32), aligned((cin,), np.float32, zeros=True)
    flop = 2.0 * n * (hs + 1) * (ws + 1) * 4 * cin * 4 * cout
    t_f = best_time(lambda: conv_forward.conv2d_forward_phases(x, xp, wq, bq, conv_forward.ACT_RELU, base, step, z),
                    repeat)
    t_i = best_time(lambda: conv_input_grad.conv2d_backward_input_padded(dq, wq, wt, zb, dx), repeat)
    t_w = best_time(lambda: conv_weight_grad.conv2d_backward_kernel_chunks(xp, dq, 1, 1, part, dwq), repeat)
    return name, f"{cin}->{cout} @{h} (phases)", flop, t_f, t_i, t_w, first


def step_time(model, shape, batch, repeat, rng):
    x = rng.random((batch,) + shape, dtype=np.float32)
    model.train_on_batch(x, x)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        model.train_on_batch(x, x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), min(ts)


def main():
    import numba

    import autoenc
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="seed,wide64,wide128")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from autoenc.kernels import blocks
    print(f"numba {numba.__version__}, CPU {numba.config.CPU_NAME or 'host'}, "
          f"float32 lanes {getattr(blocks, 'LANES', 8)}; "
          f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    rng = np.random.default_rng(0)
    for mname in args.models.split(","):
        make, shape, batch = MODELS[mname]
        model = make(autoenc)
        model.compile(optimizer="adam", loss="mse")
        model.train_on_batch(np.zeros((batch,) + shape, np.float32), np.zeros((batch,) + shape, np.float32))
        for threads in [int(t) for t in args.threads.split(",")]:
            numba.set_num_threads(threads)
            rows = profile_convs(model, batch, args.repeat, rng)
            med, best = step_time(model, shape, batch, max(args.repeat, 5), rng)
            print(f"\n{mname}, batch {batch}, {threads} thread(s); load {os.getloadavg()[0]:.2f}: "
                  f"train_on_batch median {med * 1e3:.1f} ms (best {best * 1e3:.1f})")
            print("| layer | shape | MFLOP | fwd ms | fwd GF/s | dx ms | dx GF/s | dw ms | dw GF/s |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            tot_t = tot_f = 0.0
            for name, sh, flop, t_f, t_i, t_w, first in rows:
                print(f"| {name} | {sh} | {flop / 1e6:.0f} | {t_f * 1e3:.2f} | {flop / t_f / 1e9:.0f} | "
                      f"{t_i * 1e3:.2f} | {flop / t_i / 1e9:.0f} | {t_w * 1e3:.2f} | {flop / t_w / 1e9:.0f} |")
                tot_t += t_f + t_w + (0 if first else t_i)
                tot_f += flop * (2 if first else 3)
            print(f"convolutions of one step: {tot_t * 1e3:.1f} ms, {tot_f / 1e9:.2f} GFLOP, "
                  f"{tot_f / tot_t / 1e9:.0f} GFLOP/s")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


if __name__ == "__main__":
    main()
