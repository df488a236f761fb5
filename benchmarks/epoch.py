"""One-epoch training time of the seed autoencoder: autoenc against Keras-TensorFlow and native
PyTorch (whichever are installed), each in its own subprocess, on the same synthetic data.

    python benchmarks/epoch.py [--epochs 3] [--frameworks autoenc,keras,torch]

Seed model: Conv2D(16)-MaxPool-Conv2D(8)-MaxPool-Conv2D(8) / Conv2D(8)-Up-Conv2D(8)-Up-Conv2D(16)-
Conv2D(1, sigmoid), 3x3 'same' ReLU, 28x28x1, batch 256, Adam, MSE; 60,000 training and 10,000
validation images per epoch. One warm-up epoch, then the median of ``--epochs`` epochs. Also
reports predict throughput (10,000 images, batch 256, best of 3) and the peak RSS of the process.
Every framework gets 2 threads.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

# Measure the checkout this file sits in, not a copy of autoenc installed elsewhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_TRAIN, N_VAL, BATCH = 60000, 10000, 256


def data():
    import numpy as np
    rng = np.random.default_rng(0)
    # smooth blobs in [0, 1], MNIST-like sparsity does not matter for speed
    x = rng.random((N_TRAIN + N_VAL, 28, 28, 1), dtype=np.float32)
    return x[:N_TRAIN], x[N_TRAIN:]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_fit_and_predict(model, x_train, x_val, epochs):
    """Seconds per fit epoch (a warm-up, then ``epochs`` more) and the best of 3 predicts, for a model
    with Keras' fit/predict API (autoenc's or Keras')."""
    times = []
    for _ in range(epochs + 1):
        t = time.perf_counter()
        model.fit(x_train, x_train, batch_size=BATCH, epochs=1, verbose=0, validation_data=(x_val, x_val))
        times.append(time.perf_counter() - t)
    pred = []
    for _ in range(3):
        t = time.perf_counter()
        model.predict(x_val, batch_size=BATCH, verbose=0)
        pred.append(time.perf_counter() - t)
    return {"epochs": times[1:], "warmup": times[0], "predict_s": min(pred)}


def run_autoenc(epochs):
    import numba

    import autoenc
    x_train, x_val = data()
    model = autoenc.models.seed_autoencoder()
    model.compile(optimizer="adam", loss="mean_squared_error")
    timings = time_fit_and_predict(model, x_train, x_val, epochs)  # first: it starts Numba's threads
    return {"version": f"autoenc {autoenc.__version__}, numba {numba.__version__} "
                       f"({numba.threading_layer()}, {numba.get_num_threads()} threads)", **timings}


def run_keras(epochs):
    import keras
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    from keras import layers
    x_train, x_val = data()
    inp = keras.Input((28, 28, 1))
    h = layers.Conv2D(16, 3, activation="relu", padding="same")(inp)
    h = layers.MaxPooling2D(2, padding="same")(h)
    h = layers.Conv2D(8, 3, activation="relu", padding="same")(h)
    h = layers.MaxPooling2D(2, padding="same")(h)
    h = layers.Conv2D(8, 3, activation="relu", padding="same")(h)
    h = layers.Conv2D(8, 3, activation="relu", padding="same")(h)
    h = layers.UpSampling2D(2)(h)
    h = layers.Conv2D(8, 3, activation="relu", padding="same")(h)
    h = layers.UpSampling2D(2)(h)
    h = layers.Conv2D(16, 3, activation="relu", padding="same")(h)
    out = layers.Conv2D(1, 3, activation="sigmoid", padding="same")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="mean_squared_error")
    return {"version": f"keras {keras.__version__}, tensorflow {tf.__version__}",
            **time_fit_and_predict(model, x_train, x_val, epochs)}


def run_torch(epochs):
    import numpy as np
    import torch
    from torch import nn
    torch.set_num_threads(2)
    x_train, x_val = data()
    xt = torch.from_numpy(x_train).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    xv = torch.from_numpy(x_val).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    def conv(cin, cout, act=nn.ReLU):
        return [nn.Conv2d(cin, cout, 3, padding=1), act()]
    model = nn.Sequential(*conv(1, 16), nn.MaxPool2d(2), *conv(16, 8), nn.MaxPool2d(2), *conv(8, 8),
                          *conv(8, 8), nn.Upsample(scale_factor=2), *conv(8, 8), nn.Upsample(scale_factor=2),
                          *conv(8, 16), *conv(16, 1, nn.Sigmoid)).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.MSELoss()

    def epoch():
        model.train()
        order = torch.from_numpy(np.random.default_rng().permutation(N_TRAIN))
        for lo in range(0, N_TRAIN, BATCH):
            xb = xt[order[lo:lo + BATCH]]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for lo in range(0, N_VAL, BATCH):
                loss_fn(model(xv[lo:lo + BATCH]), xv[lo:lo + BATCH]).item()

    times = []
    for _ in range(epochs + 1):
        t = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t)
    pred = []
    with torch.no_grad():
        for _ in range(3):
            t = time.perf_counter()
            for lo in range(0, N_VAL, BATCH):
                model(xv[lo:lo + BATCH])
            pred.append(time.perf_counter() - t)
    return {"version": f"torch {torch.__version__} (channels_last)", "epochs": times[1:], "warmup": times[0],
            "predict_s": min(pred)}


RUNNERS = {"autoenc": run_autoenc, "keras": run_keras, "torch": run_torch}
IMPORTS = {"autoenc": "autoenc", "keras": "tensorflow", "torch": "torch"}


def child(name, epochs):
    result = RUNNERS[name](epochs)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--frameworks", default="autoenc,keras,torch")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.epochs)
        return
    import importlib.util
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    results = {}
    for name in args.frameworks.split(","):
        if importlib.util.find_spec(IMPORTS[name]) is None:
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", name, "--epochs", str(args.epochs)], env=env,
                             capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            print(f"{name} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(line[0][7:])
        print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)

    blas_env = {k: v for k, v in os.environ.items() if "BLAS" in k or k.startswith(("OMP_", "MKL_"))}
    print(f"# Seed autoencoder, one epoch ({N_TRAIN:,} train + {N_VAL:,} validation images, batch {BATCH})\n")
    print(f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; median of {args.epochs} epochs after a warm-up epoch; "
          f"BLAS/OpenMP environment: {blas_env or 'none set'}\n")
    print("| framework | epoch (s) | warm-up (s) | vs Keras-TF | vs PyTorch | predict (img/s) | "
          "predict vs Keras | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ref_k = median(results["keras"]["epochs"]) if "keras" in results else None
    ref_t = median(results["torch"]["epochs"]) if "torch" in results else None
    pk = N_VAL / results["keras"]["predict_s"] if "keras" in results else None
    for name, r in results.items():
        m = median(r["epochs"])
        thr = N_VAL / r["predict_s"]
        print(f"| {r['version']} | {m:.2f} | {r['warmup']:.2f} | "
              f"{f'{m / ref_k:.2f}x' if ref_k else '-'} | {f'{m / ref_t:.2f}x' if ref_t else '-'} | "
              f"{thr:,.0f} | {f'{thr / pk:.2f}x' if pk else '-'} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
