"""Training and predict speed of autoenc against Keras-TensorFlow (and PyTorch, where installed) on
the seed autoencoder and on two wider ones, side by side in one run, optionally beside busy
processes and with the kernels compiled for an older vector ISA.

    python benchmarks/epoch.py [--models seed,wide64,wide128] [--frameworks autoenc,autoenc-1,autoenc-off,keras]
                               [--rounds 3] [--load 1] [--isa native|avx2] [--quick]

Models (3x3 'same' convolutions with ReLU, a sigmoid output, Adam, MSE):
    seed     28x28x1, Conv(16)-Pool-Conv(8)-Pool-Conv(8) / Conv(8)-Up-Conv(8)-Up-Conv(16)-Conv(1), batch 256
    wide64   64x64x3, Conv(32)-Pool-Conv(64)-Pool / Conv(64)-Up-Conv(32)-Up-Conv(3), batch 64
    wide128  128x128x3, Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool / Conv(128)-Up-Conv(64)-Up-Conv(32)-Up-Conv(3),
             batch 16
An epoch is ``--images`` synthetic images (default: 60 steps, 15,360 images of the seed model, as
issue 15 counts). Each framework runs in its own subprocess, the frameworks interleaved A B A B for
``--rounds`` rounds; each process does a warm-up epoch, then ``--epochs`` timed epochs (their
median), then predicts ``--predict`` images (best of 3). The table gives the medians over rounds
and the ratios to Keras, and the 1-minute load average after each of a row's runs (their median).
Every framework gets all CPUs (NUMBA_NUM_THREADS and TensorFlow's intra-
and inter-op threads), unless NUMBA_NUM_THREADS is set.

Two more rows of autoenc: ``autoenc-1`` on one thread (NUMBA_NUM_THREADS=1) and ``autoenc-off`` with
autoenc's thread policy off (AUTOENC_THREADS=off: Numba's default wait policy, all threads, no
tuner). The autoenc rows say, after the version, on how many threads the tuner ran the steps.

``--load N`` starts N busy processes (``sh -c 'while :; do :; done'``) beside the runs and kills
them at the end. ``--isa avx2`` compiles autoenc's kernels for Haswell (NUMBA_CPU_NAME=haswell and this CPU's
features without AVX-512, NUMBA_CPU_FEATURES: AVX2 and FMA, 256-bit vectors; a cache of its own, so the first run compiles) and caps oneDNN at
AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) for Keras. ``--quick``: the seed model, 15 steps, one timed epoch,
2 rounds, about a minute on a quiet 2-core machine. The machine's load average is printed beside
the figures: other work on the machine counts as load too.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (input shape, batch, layers): ("conv", filters) 3x3 same relu, ("pool",) 2x2 max, ("up",) 2x2
# nearest, ("out", channels) 3x3 same sigmoid
MODELS = {
    "seed": ((28, 28, 1), 256, [("conv", 16), ("pool",), ("conv", 8), ("pool",), ("conv", 8), ("conv", 8), ("up",),
                                ("conv", 8), ("up",), ("conv", 16), ("out", 1)]),
    "wide64": ((64, 64, 3), 64, [("conv", 32), ("pool",), ("conv", 64), ("pool",), ("conv", 64), ("up",),
                                 ("conv", 32), ("up",), ("out", 3)]),
    "wide128": ((128, 128, 3), 16, [("conv", 32), ("pool",), ("conv", 64), ("pool",), ("conv", 128), ("pool",),
                                    ("conv", 128), ("up",), ("conv", 64), ("up",), ("conv", 32), ("up",),
                                    ("out", 3)]),
}
SEED_STEPS = 60   # an epoch of the seed model in issue 15: 60 steps of 256 = 15,360 images


def flops_per_step(name):
    """Multiply-adds x 2 of the convolutions in one training step (forward, input and kernel
    gradients: 3x the forward; the first layer's input gradient is not computed)."""
    shape, batch, spec = MODELS[name]
    h, w, c = shape
    total = 0
    first = True
    for layer in spec:
        if layer[0] in ("conv", "out"):
            fwd = 2 * batch * h * w * 9 * c * layer[1]
            total += fwd * (2 if first else 3)
            c, first = layer[1], False
        elif layer[0] == "pool":
            h, w = -(-h // 2), -(-w // 2)
        else:
            h, w = h * 2, w * 2
    return total


def data(name, n):
    import numpy as np
    shape = MODELS[name][0]
    return np.random.default_rng(0).random((n,) + shape, dtype=np.float32)


def build(layers_module, model_cls, input_fn, name):
    """The model `name` in autoenc or Keras (same layer names and arguments)."""
    shape, _, spec = MODELS[name]
    inp = input_fn(shape)
    h = inp
    for layer in spec:
        if layer[0] == "conv":
            h = layers_module.Conv2D(layer[1], 3, activation="relu", padding="same")(h)
        elif layer[0] == "out":
            h = layers_module.Conv2D(layer[1], 3, activation="sigmoid", padding="same")(h)
        elif layer[0] == "pool":
            h = layers_module.MaxPooling2D(2, padding="same")(h)
        else:
            h = layers_module.UpSampling2D(2)(h)
    return model_cls(inp, h)


def time_fit_and_predict(model, x, xp, batch, epochs):
    """Seconds per fit epoch over x (a warm-up, then ``epochs`` more) and the best of 3 predicts of xp,
    for a model with Keras' fit/predict API (autoenc's or Keras')."""
    times = []
    for _ in range(epochs + 1):
        t = time.perf_counter()
        model.fit(x, x, batch_size=batch, epochs=1, verbose=0)
        times.append(time.perf_counter() - t)
    pred = []
    for _ in range(3):
        t = time.perf_counter()
        model.predict(xp, batch_size=batch, verbose=0)
        pred.append(time.perf_counter() - t)
    return {"epochs": times[1:], "warmup": times[0], "predict_s": min(pred)}


def run_autoenc(name, images, n_predict, epochs):
    import numba

    import autoenc
    x = data(name, images)
    model = build(autoenc.layers, autoenc.Model, lambda s: autoenc.Input(shape=s), name)
    model.compile(optimizer="adam", loss="mean_squared_error")
    timings = time_fit_and_predict(model, x, x[:n_predict], MODELS[name][1], epochs)
    cpu = os.environ.get("NUMBA_CPU_NAME") or "native"
    tuners = getattr(model, "_thread_tuners", {})
    chosen = {k: f"{t.current} ({t.steps} steps, {len(t.switches)} switches)" for k, t in tuners.items() if t}
    return {"version": f"autoenc {autoenc.__version__}, numba {numba.__version__} "
                       f"({numba.config.NUMBA_NUM_THREADS} threads, {cpu})",
            "tuner": chosen or "off", **timings}


def run_keras(name, images, n_predict, epochs):
    import keras
    import tensorflow as tf
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    x = data(name, images)
    model = build(keras.layers, keras.Model, lambda s: keras.Input(s), name)
    model.compile(optimizer="adam", loss="mean_squared_error")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    return {"version": f"keras {keras.__version__}, tensorflow {tf.__version__} ({threads} threads, {isa})",
            **time_fit_and_predict(model, x, x[:n_predict], MODELS[name][1], epochs)}


def run_torch(name, images, n_predict, epochs):
    import torch
    from torch import nn
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    shape, batch, spec = MODELS[name]
    x = torch.from_numpy(data(name, images)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    mods, c = [], shape[2]
    for layer in spec:
        if layer[0] in ("conv", "out"):
            mods += [nn.Conv2d(c, layer[1], 3, padding=1), nn.ReLU() if layer[0] == "conv" else nn.Sigmoid()]
            c = layer[1]
        elif layer[0] == "pool":
            mods.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            mods.append(nn.Upsample(scale_factor=2))
    model = nn.Sequential(*mods).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.MSELoss()

    def epoch():
        order = torch.randperm(images)
        for lo in range(0, images, batch):
            xb = x[order[lo:lo + batch]]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), xb).backward()
            opt.step()

    times = []
    for _ in range(epochs + 1):
        t = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t)
    pred = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            for lo in range(0, n_predict, batch):
                model(x[lo:lo + batch])
            pred.append(time.perf_counter() - t)
    return {"version": f"torch {torch.__version__} ({threads} threads, channels_last)", "epochs": times[1:],
            "warmup": times[0], "predict_s": min(pred)}


RUNNERS = {"autoenc": run_autoenc, "autoenc-1": run_autoenc, "autoenc-off": run_autoenc, "keras": run_keras,
           "torch": run_torch}
IMPORTS = {"autoenc": "numba", "autoenc-1": "numba", "autoenc-off": "numba", "keras": "tensorflow", "torch": "torch"}
VARIANTS = {"autoenc-1": {"NUMBA_NUM_THREADS": "1", "BENCH_THREADS": "1"}, "autoenc-off": {"AUTOENC_THREADS": "off"}}


@contextlib.contextmanager
def busy_processes(n):
    """n processes, each keeping one core busy, for the duration of the block."""
    procs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def avx2_features():
    """This CPU's feature string for LLVM with every AVX-512, AMX and AVX10 feature switched off. The CPU
    name alone is not enough: Numba keeps the host's features, so NUMBA_CPU_NAME=haswell by itself still
    emits 512-bit code on an AVX-512 machine."""
    import llvmlite.binding as ll
    ll.initialize_native_target()
    flags = ll.get_host_cpu_features().flatten().split(",")
    off = ("avx512", "amx", "avx10", "evex512")
    return ",".join("-" + f[1:] if f[1:].startswith(off) else f for f in flags if f)


def child_env(framework, isa):
    """The environment of a framework's subprocess: this checkout first on the path, all CPUs, the ISA cap."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    env.update(VARIANTS.get(framework, {}))
    env.setdefault("BENCH_THREADS", env.get("NUMBA_NUM_THREADS", str(os.cpu_count())))
    env.setdefault("NUMBA_NUM_THREADS", env["BENCH_THREADS"])
    if isa == "avx2":
        if framework.startswith("autoenc"):
            env["NUMBA_CPU_NAME"] = "haswell"
            env["NUMBA_CPU_FEATURES"] = avx2_features()
        else:
            env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return env


def run_child(framework, name, images, n_predict, epochs, isa):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", framework, "--models", name,
           "--images", str(images), "--predict", str(n_predict), "--epochs", str(epochs)]
    out = subprocess.run(cmd, env=child_env(framework, isa), capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not line:
        print(f"{framework} {name} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[0][7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seed", help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--frameworks", default="autoenc,keras,torch")
    ap.add_argument("--rounds", type=int, help="A B A B rounds, one process per framework each (default 3; quick 2)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per process, after a warm-up")
    ap.add_argument("--images", type=int, help="images per epoch (default: 60 steps of the model's batch)")
    ap.add_argument("--predict", type=int, default=10000, help="images to predict")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--quick", action="store_true", help="seed model, 15 steps, 1 epoch, 2 rounds")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.models, args.epochs, args.predict = "seed", 1, 2560
        args.images = args.images or 15 * MODELS["seed"][1]
    args.rounds = args.rounds or (2 if args.quick else 3)
    models = args.models.split(",")
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    images = {m: args.images or SEED_STEPS * MODELS[m][1] for m in models}
    if args.child:
        result = RUNNERS[args.child](models[0], images[models[0]], min(args.predict, images[models[0]]), args.epochs)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return

    import importlib.util
    frameworks = [f for f in args.frameworks.split(",") if importlib.util.find_spec(IMPORTS[f]) is not None]
    skipped = sorted(set(args.frameworks.split(",")) - set(frameworks))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    results = {(m, f): [] for m in models for f in frameworks}
    row_loads = {(m, f): [] for m in models for f in frameworks}
    loads = [os.getloadavg()[0]]
    started = datetime.datetime.now(datetime.timezone.utc)
    with busy_processes(args.load):
        for r in range(args.rounds):
            for m in models:
                for f in frameworks:   # A B A B: each round runs every framework once
                    res = run_child(f, m, images[m], min(args.predict, images[m]), args.epochs, args.isa)
                    loads.append(os.getloadavg()[0])
                    row_loads[m, f].append(loads[-1])
                    if res:
                        results[m, f].append(res)
                        print(f"round {r + 1} {m} {f}: epoch {statistics.median(res['epochs']):.2f} s, "
                              f"predict {res['predict_s']:.3f} s, load {loads[-1]:.1f}"
                              + (f", threads {res['tuner']}" if "tuner" in res else ""), file=sys.stderr, flush=True)

    print(f"# Training epoch and predict, side by side ({args.rounds} rounds A B A B, medians)\n")
    versions = sorted({res[0]["version"] for res in results.values() if res})
    print(f"{started:%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"{'; '.join(versions)}. Busy processes added: {args.load}; load average during the run "
          f"{min(loads):.1f}-{max(loads):.1f}; ISA: {args.isa}; {args.epochs} timed epoch(s) per process after a "
          "warm-up.\n")
    print("| model | framework | epoch (s) | step (ms) | GFLOP/s | vs Keras | predict (img/s) | predict vs Keras | "
          "peak RSS (MB) | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in models:
        batch = MODELS[m][1]
        steps = -(-images[m] // batch)
        med = {}
        for f in frameworks:
            rs = results[m, f]
            if rs:
                med[f] = (statistics.median(statistics.median(r["epochs"]) for r in rs),
                          statistics.median(min(args.predict, images[m]) / r["predict_s"] for r in rs),
                          max(r["peak_rss_mb"] for r in rs))
        for f, (epoch, ips, rss) in med.items():
            vs = f"{epoch / med['keras'][0]:.2f}x" if "keras" in med else "-"
            pvs = f"{ips / med['keras'][1]:.2f}x" if "keras" in med else "-"
            gflops = flops_per_step(m) * steps / epoch / 1e9
            print(f"| {m} ({images[m]:,} images, batch {batch}) | {f} | {epoch:.2f} | {epoch / steps * 1e3:.1f} | "
                  f"{gflops:.0f} | {vs} | {ips:,.0f} | {pvs} | {rss:.0f} | {statistics.median(row_loads[m, f]):.1f} |")


if __name__ == "__main__":
    main()
