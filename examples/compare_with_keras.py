"""Train the seed autoencoder in Keras and in autoenc side by side, and draw both loss curves.

Both frameworks start from the same initial weights (Keras' glorot_uniform draw, copied into autoenc
with ``set_weights``) and see the same batches in the same order (one fixed permutation per epoch),
through ``train_on_batch`` loops; after every epoch both are evaluated on the same validation images.
The curves go to ``docs/images/keras_overlay.png`` and the final losses to a JSON file.

    python examples/compare_with_keras.py                        # 10 epochs on all 60,000 images
    python examples/compare_with_keras.py --limit 12000 --epochs 3

Data: Fashion-MNIST (Debian: ``apt-get install dataset-fashion-mnist``, or downloaded once), or MNIST
with ``--dataset mnist`` where it can be had. Needs ``keras`` and ``tensorflow-cpu``.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import autoenc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seed_model(lib):
    """The blog post's autoencoder, built with ``lib`` = keras or autoenc (same API)."""
    L = lib.layers
    inputs = lib.Input(shape=(28, 28, 1))
    x = L.Conv2D(16, (3, 3), activation="relu", padding="same")(inputs)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = L.MaxPooling2D((2, 2), padding="same")(x)
    encoded = L.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(encoded)
    x = L.UpSampling2D((2, 2))(x)
    x = L.Conv2D(8, (3, 3), activation="relu", padding="same")(x)
    x = L.UpSampling2D((2, 2))(x)
    x = L.Conv2D(16, (3, 3), activation="relu", padding="same")(x)
    decoded = L.Conv2D(1, (3, 3), activation="sigmoid", padding="same")(x)
    return lib.Model(inputs, decoded)


def load_images(name):
    """(x_train, x_test) as float32 arrays of shape (n, 28, 28, 1) in [0, 1], and the source's name."""
    from autoenc import datasets
    (x_train, _), (x_test, _) = datasets.load(name)
    scale = np.float32(x_train.max())
    return (x_train.astype(np.float32)[..., None] / scale, x_test.astype(np.float32)[..., None] / scale)


def train(model, x_train, x_val, epochs, batch_size, seed, label):
    """train_on_batch over one fixed permutation per epoch; returns per-epoch train and val losses."""
    history = {"loss": [], "val_loss": [], "batch_loss": [], "seconds": []}
    n = len(x_train)
    for epoch in range(epochs):
        order = np.random.default_rng(seed + epoch).permutation(n)
        start, total = time.perf_counter(), 0.0
        for lo in range(0, n, batch_size):
            batch = x_train[order[lo:lo + batch_size]]
            loss = float(model.train_on_batch(batch, batch))
            history["batch_loss"].append(loss)
            total += loss * len(batch)
        val = model.evaluate(x_val, x_val, batch_size=batch_size, verbose=0)
        history["loss"].append(total / n)
        history["val_loss"].append(float(val))
        history["seconds"].append(time.perf_counter() - start)
        print(f"{label:8s} epoch {epoch + 1}/{epochs}: loss {total / n:.6f}  val_loss {val:.6f}  "
              f"({history['seconds'][-1]:.1f} s)", flush=True)
    return history


def plot(results, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_batch) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"keras": dict(color="tab:red", lw=2.5, alpha=0.6), "autoenc": dict(color="black", lw=1.2)}
    for name, h in results.items():
        epochs = np.arange(1, len(h["loss"]) + 1)
        ax.plot(epochs, h["loss"], marker="o", label=f"{name} train", **styles[name])
        ax.plot(epochs, h["val_loss"], marker="s", ls="--", label=f"{name} val", **styles[name])
        ax_batch.plot(h["batch_loss"], label=name, **styles[name])
    ax.set(xlabel="epoch", ylabel="binary crossentropy" if "bce" in title else "mean squared error",
           title="per epoch (train: mean of batch losses)")
    ax_batch.set(xlabel="step", yscale="log", title="every train_on_batch loss")
    for a in (ax, ax_batch):
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="number of training images (default: all)")
    parser.add_argument("--val-limit", type=int, default=None, help="number of validation images (default: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--loss", default="mean_squared_error", help="as in the blog post; or binary_crossentropy")
    parser.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "keras_overlay.png"))
    parser.add_argument("--json", default=os.path.join(ROOT, "docs", "images", "keras_overlay.json"))
    args = parser.parse_args(argv)

    import keras

    x_train, x_val = load_images(args.dataset)
    x_train, x_val = x_train[:args.limit], x_val[:args.val_limit]
    print(f"{args.dataset}: {len(x_train)} training, {len(x_val)} validation images", flush=True)

    keras.utils.set_random_seed(args.seed)
    keras_model = seed_model(keras)
    autoenc_model = seed_model(autoenc)
    autoenc_model.set_weights(keras_model.get_weights())
    keras_model.compile(optimizer=keras.optimizers.Adam(), loss=args.loss)
    autoenc_model.compile(optimizer=autoenc.optimizers.Adam(), loss=args.loss)

    results = {}
    for name, model in (("keras", keras_model), ("autoenc", autoenc_model)):
        results[name] = train(model, x_train, x_val, args.epochs, args.batch_size, args.seed, name)

    k, a = results["keras"], results["autoenc"]
    summary = {
        "dataset": args.dataset, "train_images": len(x_train), "val_images": len(x_val),
        "epochs": args.epochs, "batch_size": args.batch_size, "loss": args.loss,
        "keras": {"version": keras.__version__, "backend": keras.backend.backend(),
                  "final_loss": k["loss"][-1], "final_val_loss": k["val_loss"][-1],
                  "seconds_per_epoch": float(np.mean(k["seconds"]))},
        "autoenc": {"version": autoenc.__version__, "final_loss": a["loss"][-1],
                    "final_val_loss": a["val_loss"][-1], "seconds_per_epoch": float(np.mean(a["seconds"]))},
        "max_relative_difference": {
            "epoch_loss": float(np.max(np.abs(np.subtract(a["loss"], k["loss"])) / np.abs(k["loss"]))),
            "val_loss": float(np.max(np.abs(np.subtract(a["val_loss"], k["val_loss"])) / np.abs(k["val_loss"]))),
        },
        "history": {"keras": {key: k[key] for key in ("loss", "val_loss")},
                    "autoenc": {key: a[key] for key in ("loss", "val_loss")}},
    }
    title = (f"Seed autoencoder, {args.dataset} ({len(x_train)} images), {args.epochs} epochs, batch "
             f"{args.batch_size}, Adam, {'bce' if 'binary' in args.loss else 'mse'}: Keras {keras.__version__} "
             f"(TF) vs autoenc {autoenc.__version__}")
    plot(results, args.out, title)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({key: summary[key] for key in ("keras", "autoenc", "max_relative_difference")}, indent=2))
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
