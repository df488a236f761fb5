"""Training and predict speed of autoenc against Keras-TensorFlow (and PyTorch, where installed) on
the seed autoencoder and on two wider ones, side by side in one run, optionally beside busy
processes and with the kernels compiled for an older vector ISA.

    python benchmarks/epoch.py [--models seed,wide64,wide128] [--frameworks autoenc,autoenc-1,autoenc-off,keras]
                               [--rounds 6] [--load 1] [--isa native|avx2] [--quick]

Models (3x3 'same' convolutions with ReLU, a sigmoid output, Adam, MSE):
    seed     28x28x1, Conv(16)-Pool-Conv(8)-Pool-Conv(8) / Conv(8)-Up-Conv(8)-Up-Conv(16)-Conv(1), batch 256
    wide64   64x64x3, Conv(32)-Pool-Conv(64)-Pool / Conv(64)-Up-Conv(32)-Up-Conv(3), batch 64
    wide128  128x128x3, Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool / Conv(128)-Up-Conv(64)-Up-Conv(32)-Up-Conv(3),
             batch 16
An epoch is ``--images`` synthetic images (default: 60 steps, 15,360 images of the seed model, as
issue 15 counts). Each framework runs in a process of its own, started once per model: it builds the
model, runs a warm-up epoch, then waits for the next command. The epochs alternate between the
processes, one at a time, A B then B A (``--rounds`` epochs each), then 3 predicts of ``--predict``
images each (the best counts). So two frameworks' epochs are seconds apart, and each ratio to Keras
is the median over the rounds of that round's own ratio: on a shared host whose speed drifts by
tens of percent within minutes, a ratio of processes run a minute apart does not hold (issue 15).
The table gives the median epoch, the best predict, the ratios, and the 1-minute load average after
each of a row's epochs (their median). Every framework gets all CPUs (NUMBA_NUM_THREADS and
TensorFlow's intra- and inter-op threads), unless NUMBA_NUM_THREADS is set.

Two more rows of autoenc: ``autoenc-1`` on one thread (NUMBA_NUM_THREADS=1) and ``autoenc-off`` with
autoenc's thread policy off (AUTOENC_THREADS=off: all threads, no tuner). The autoenc rows say how
many threads the tuner chose, and with ``autoenc-1`` in the run the tuned epochs are also given
against the one-thread ones, round by round.

``--load N`` starts N busy processes (``sh -c 'while :; do :; done'``) beside the runs and kills
them at the end. ``--isa avx2`` compiles autoenc's kernels for Haswell (NUMBA_CPU_NAME=haswell and this CPU's
features without AVX-512, NUMBA_CPU_FEATURES: AVX2 and FMA, 256-bit vectors; a cache of its own, so the first run compiles) and caps oneDNN at
AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) for Keras. ``--quick``: the seed model, 15 steps, 3 rounds, about a
minute on a quiet 2-core machine. The machine's load average is printed beside
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


class KerasLike:
    """One framework's model and data in a worker: ``fit()`` runs one epoch over x, ``predict()`` one
    predict of xp, for a model with Keras' fit/predict API (autoenc's or Keras'). Both return seconds."""

    def __init__(self, model, x, xp, batch, version):
        self.model, self.x, self.xp, self.batch, self.version = model, x, xp, batch, version

    def fit(self):
        t = time.perf_counter()
        self.model.fit(self.x, self.x, batch_size=self.batch, epochs=1, verbose=0)
        return time.perf_counter() - t

    def predict(self):
        t = time.perf_counter()
        self.model.predict(self.xp, batch_size=self.batch, verbose=0)
        return time.perf_counter() - t

    def info(self):
        return {"version": self.version}


class AutoencRun(KerasLike):
    def info(self):
        tuners = getattr(self.model, "_thread_tuners", {})
        chosen = {k: f"{t.current} ({t.steps} steps, {switches(t.switches)})" for k, t in tuners.items() if t}
        return {"version": self.version, "tuner": chosen or "off"}


def switches(changes):
    """'N switches', and where there are at most 3 the steps and counts: '1 switches: to 1 at step 57'."""
    head = f"{len(changes)} switches"
    return head + (": " + ", ".join(f"to {c} at step {s}" for s, c in changes) if 0 < len(changes) <= 3 else "")


def setup_autoenc(name, images, n_predict):
    import numba

    import autoenc
    x = data(name, images)
    model = build(autoenc.layers, autoenc.Model, lambda s: autoenc.Input(shape=s), name)
    model.compile(optimizer="adam", loss="mean_squared_error")
    cpu = os.environ.get("NUMBA_CPU_NAME") or "native"
    return AutoencRun(model, x, x[:n_predict], MODELS[name][1], f"autoenc {autoenc.__version__}, numba "
                      f"{numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads, {cpu})")


def setup_keras(name, images, n_predict):
    import keras
    import tensorflow as tf
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    x = data(name, images)
    model = build(keras.layers, keras.Model, lambda s: keras.Input(s), name)
    model.compile(optimizer="adam", loss="mean_squared_error")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    return KerasLike(model, x, x[:n_predict], MODELS[name][1],
                     f"keras {keras.__version__}, tensorflow {tf.__version__} ({threads} threads, {isa})")


class TorchRun:
    """The same model in PyTorch (channels_last), Adam and MSE, one epoch a ``fit()``."""

    def __init__(self, name, images, n_predict):
        import torch
        from torch import nn
        self.torch = torch
        threads = int(os.environ.get("BENCH_THREADS", os.cpu_count()))
        torch.set_num_threads(threads)
        shape, self.batch, spec = MODELS[name]
        self.images, self.n_predict = images, n_predict
        self.x = torch.from_numpy(data(name, images)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)
        mods, c = [], shape[2]
        for layer in spec:
            if layer[0] in ("conv", "out"):
                mods += [nn.Conv2d(c, layer[1], 3, padding=1), nn.ReLU() if layer[0] == "conv" else nn.Sigmoid()]
                c = layer[1]
            elif layer[0] == "pool":
                mods.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                mods.append(nn.Upsample(scale_factor=2))
        self.model = nn.Sequential(*mods).to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.loss_fn = nn.MSELoss()
        self.version = f"torch {torch.__version__} ({threads} threads, channels_last)"

    def fit(self):
        t = time.perf_counter()
        order = self.torch.randperm(self.images)
        for lo in range(0, self.images, self.batch):
            xb = self.x[order[lo:lo + self.batch]]
            self.opt.zero_grad(set_to_none=True)
            self.loss_fn(self.model(xb), xb).backward()
            self.opt.step()
        return time.perf_counter() - t

    def predict(self):
        t = time.perf_counter()
        with self.torch.no_grad():
            for lo in range(0, self.n_predict, self.batch):
                self.model(self.x[lo:lo + self.batch])
        return time.perf_counter() - t

    def info(self):
        return {"version": self.version}


def worker(framework, name, images, n_predict):
    """A framework's process: set up, say READY, then answer each command read from stdin ("fit",
    "predict", "info", "quit") with one line "RESULT <json>". The coordinator sends one command at a
    time to one worker at a time, so the others wait on stdin and the one timed has the CPUs."""
    run = SETUPS[framework](name, images, n_predict)
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            return
        if cmd == "info":
            out = {**run.info(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            out = {"seconds": getattr(run, cmd)()}
        print("RESULT " + json.dumps(out), flush=True)


SETUPS = {"autoenc": setup_autoenc, "autoenc-1": setup_autoenc, "autoenc-off": setup_autoenc, "keras": setup_keras,
          "torch": TorchRun}
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


class Worker:
    """The coordinator's handle on a framework's worker process (see :func:`worker`)."""

    def __init__(self, framework, name, images, n_predict, isa):
        import tempfile
        self.framework, self.err = framework, tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", framework, "--models", name,
               "--images", str(images), "--predict", str(n_predict)]
        self.proc = subprocess.Popen(cmd, env=child_env(framework, isa), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.ok = self._read("READY") is not None

    def _read(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
        self.err.seek(0)
        print(f"{self.framework} failed:\n{self.err.read()[-3000:]}", file=sys.stderr)
        return None

    def call(self, cmd):
        """Send a command; return its RESULT as a dict, or None if the worker died."""
        if not self.ok:
            return None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        out = self._read("RESULT")
        self.ok = out is not None
        return json.loads(out) if out is not None else None

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def paired_ratio(times, base):
    """Median over rounds of times[r] / base[r]: each epoch against the baseline's of the same round, a
    few seconds apart, so that a drift of the machine's speed over the run cancels."""
    return statistics.median(a / b for a, b in zip(times, base))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seed", help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--frameworks", default="autoenc,keras,torch")
    ap.add_argument("--rounds", type=int, help="timed epochs per framework, alternated (default 6; quick 3)")
    ap.add_argument("--images", type=int, help="images per epoch (default: 60 steps of the model's batch)")
    ap.add_argument("--predict", type=int, default=10000, help="images to predict")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the runs")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native")
    ap.add_argument("--quick", action="store_true", help="seed model, 15 steps, 3 rounds")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.models, args.predict = "seed", 2560
        args.images = args.images or 15 * MODELS["seed"][1]
    args.rounds = args.rounds or (3 if args.quick else 6)
    models = args.models.split(",")
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    images = {m: args.images or SEED_STEPS * MODELS[m][1] for m in models}
    if args.child:
        worker(args.child, models[0], images[models[0]], min(args.predict, images[models[0]]))
        return

    import importlib.util
    frameworks = [f for f in args.frameworks.split(",") if importlib.util.find_spec(IMPORTS[f]) is not None]
    skipped = sorted(set(args.frameworks.split(",")) - set(frameworks))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    epochs = {(m, f): [] for m in models for f in frameworks}
    predicts = {(m, f): [] for m in models for f in frameworks}
    infos, row_loads = {}, {(m, f): [] for m in models for f in frameworks}
    loads = [os.getloadavg()[0]]
    started = datetime.datetime.now(datetime.timezone.utc)
    with busy_processes(args.load):
        for m in models:
            workers = {f: Worker(f, m, images[m], min(args.predict, images[m]), args.isa) for f in frameworks}
            try:
                for f, w in workers.items():   # a warm-up epoch each (compiling, first touches), not timed
                    w.call("fit")
                for r in range(args.rounds):   # A B, then B A: a steady drift cancels within two rounds
                    for f in (frameworks if r % 2 == 0 else frameworks[::-1]):
                        res = workers[f].call("fit")
                        loads.append(os.getloadavg()[0])
                        row_loads[m, f].append(loads[-1])
                        epochs[m, f].append(res["seconds"] if res else None)
                        if res:
                            print(f"round {r + 1} {m} {f}: epoch {res['seconds']:.2f} s, load {loads[-1]:.1f}",
                                  file=sys.stderr, flush=True)
                for r in range(3):
                    for f in (frameworks if r % 2 == 0 else frameworks[::-1]):
                        res = workers[f].call("predict")
                        predicts[m, f].append(res["seconds"] if res else None)
                for f, w in workers.items():
                    infos[m, f] = w.call("info")
            finally:
                for w in workers.values():
                    w.close()

    print(f"# Training epoch and predict, side by side ({args.rounds} epochs each, alternated; medians)\n")
    versions = sorted({i["version"] for i in infos.values() if i})
    print(f"{started:%Y-%m-%d %H:%M} UTC; {cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}; "
          f"{'; '.join(versions)}. Busy processes added: {args.load}; load average during the run "
          f"{min(loads):.1f}-{max(loads):.1f}; ISA: {args.isa}. One process per framework, each after a "
          "warm-up epoch; the epochs alternate between them (A B, B A, ...), so each ratio to Keras is the "
          "median of the rounds' own ratios, epochs seconds apart.\n")
    print("| model | framework | epoch (s) | step (ms) | GFLOP/s | vs Keras | predict (img/s) | predict vs Keras | "
          "peak RSS (MB) | load avg | threads |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for m in models:
        batch = MODELS[m][1]
        steps = -(-images[m] // batch)
        n_pred = min(args.predict, images[m])
        ok = [f for f in frameworks if infos.get((m, f)) and None not in epochs[m, f] and None not in predicts[m, f]]
        for f in ok:
            epoch = statistics.median(epochs[m, f])
            ips = n_pred / min(predicts[m, f])
            base = "keras" in ok
            vs = f"{paired_ratio(epochs[m, f], epochs[m, 'keras']):.2f}x" if base else "-"
            pvs = f"{paired_ratio(predicts[m, 'keras'], predicts[m, f]):.2f}x" if base else "-"
            gflops = flops_per_step(m) * steps / epoch / 1e9
            tuner = infos[m, f].get("tuner", "")
            tuner = "; ".join(f"{k}: {v}" for k, v in tuner.items()) if isinstance(tuner, dict) else tuner
            print(f"| {m} ({images[m]:,} images, batch {batch}) | {f} | {epoch:.2f} | {epoch / steps * 1e3:.1f} | "
                  f"{gflops:.0f} | {vs} | {ips:,.0f} | {pvs} | {infos[m, f]['peak_rss_mb']:.0f} | "
                  f"{statistics.median(row_loads[m, f]):.1f} | {tuner} |")
        if "autoenc" in ok and "autoenc-1" in ok:
            print(f"\n{m}: autoenc's tuned epoch against its one-thread one, round by round: "
                  f"{paired_ratio(epochs[m, 'autoenc'], epochs[m, 'autoenc-1']):.2f}x (median)")


if __name__ == "__main__":
    main()
