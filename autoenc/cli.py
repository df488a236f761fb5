"""The ``autoenc`` command: train the seed post's autoencoder, then look at what it learned.

    autoenc train                      10 epochs on MNIST (or synthetic digits offline), into ./runs/<name>/
    autoenc train --limit 6000 --epochs 2 --dataset digits     a quick run
    autoenc train --resume             continue the run from its last checkpoint
    autoenc train --model vae          keras-io's variational autoencoder (latent plane 2-D), into ./runs/<dataset>-vae/
    autoenc evaluate runs/digits-default
    autoenc reconstruct runs/digits-default --out reconstructions.png
    autoenc summary [RUN_OR_MODEL] [--plot model.svg]
    autoenc export runs/digits-default --format onnx [--out model.onnx]    for onnxruntime (or keras: .keras)

A run directory holds: model.autoenc (the model, checkpointed after every epoch), reconstructions.png,
loss.png, latent.png and metrics.json; a VAE's also latent_scatter.png (the test images' z_mean coloured by
label), manifold.png (decoded points of a grid of the latent plane) and samples.png (decoded draws of
the prior N(0, I)).

Recipes. ``--recipe seed`` is the post's: MSE loss, Adam with learning rate 1e-3, batch 256. On MNIST
digits it can collapse: every ReLU of a decoder layer dies within the first epoch and the output goes
blank. ``--recipe default`` is the same model and optimizer with binary crossentropy, the loss of
Keras' own autoencoder tutorial: its gradient at the sigmoid output, (p - x) / m, does not vanish as
the output saturates, where MSE's, 2 (p - x) p (1 - p) / m, does.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time

import numpy as np

import autoenc
from autoenc import datasets, losses, models, plotting, saving
from autoenc.callbacks import Callback
from autoenc.files import atomic_write
from autoenc.monitors import CollapseMonitor

RECIPES = {
    "default": {"loss": "binary_crossentropy", "learning_rate": 1e-3,
                "about": "binary crossentropy, Adam 1e-3 (learns reliably on MNIST-like digits)"},
    "seed": {"loss": "mean_squared_error", "learning_rate": 1e-3,
             "about": "the post's recipe: MSE, Adam 1e-3 (may collapse to a blank output on MNIST)"},
}
DATASETS = ("auto", "mnist", "fashion_mnist", "digits")
MODEL_FILE = "model.autoenc"
RUN_KEYS = ("dataset", "recipe", "limit", "batch_size", "seed", "epochs_done", "history")  # what --resume reads
MODELS = ("seed", "vae")
BOTTLENECK = "conv2d_2"   # the third Conv2D, the post's "encoded" (Keras 2 called it conv2d_3)


def build_seed_model():
    """The seed post's autoencoder with the same layer names every time (conv2d, conv2d_1, ...)."""
    from autoenc.layers.base import clear_session
    from autoenc.models import seed_autoencoder
    clear_session()
    return seed_autoencoder()


def compile_recipe(model, recipe, learning_rate=None):
    from autoenc.optimizers import Adam
    spec = RECIPES[recipe]
    metrics = [] if spec["loss"] == "mean_squared_error" else ["mse"]
    rate = spec["learning_rate"] if learning_rate is None else learning_rate   # not `or`: 0 is a value
    model.compile(optimizer=Adam(rate), loss=spec["loss"], metrics=metrics)
    return model


# --- data -----------------------------------------------------------------------------------------

def load_dataset(name, limit=None, say=print):
    """(x_train, x_test, used): float32 images of shape (n, 28, 28, 1) in [0, 1], and the dataset's name.

    ``auto`` is MNIST when it can be had, else the synthetic digits (saying why in one line).
    ``limit`` keeps the first ``limit`` training images and a sixth as many test images (MNIST's ratio).
    """
    if name in ("mnist", "digits"):
        # datasets.load_images draws only as many synthetic digits as a limit needs
        return (*datasets.load_images(use_mnist=name == "mnist", limit=limit or 0), name)
    used = name
    if name == "auto":
        quiet = io.StringIO()
        with contextlib.redirect_stderr(quiet):   # the one line below replaces "Downloading ..." on failure
            data, reason = datasets.load_mnist_or_digits(timeout=15)
        used = "mnist" if reason is None else "digits"
        if reason:
            say(reason)
        elif quiet.getvalue().strip():
            print(quiet.getvalue().strip(), file=sys.stderr)
    else:
        data = datasets.load(name)
    (x_train, _), (x_test, _) = data
    if limit:
        x_train, x_test = x_train[:limit], x_test[:_test_count(limit, len(x_test))]
    # as datasets.load_images: scale by the largest value, add the channel axis
    scale = np.float32(255.0)
    return ((x_train.astype("float32") / scale)[..., None], (x_test.astype("float32") / scale)[..., None], used)


def load_test_labels(used, limit, n_test):
    """The labels of the ``n_test`` test images load_dataset gave for dataset ``used`` and ``limit``
    (the synthetic digits are drawn again: the same seed gives the same digits and labels)."""
    if used == "digits":
        n = limit or 60000
        (_, _), (_, y_test) = datasets.digits.load_data(n_train=n, n_test=max(1, n // 6), cache=not limit)
    else:
        (_, _), (_, y_test) = datasets.load(used)
    return np.asarray(y_test[:n_test])


def _test_count(limit, available):
    return max(1, min(available, limit // 6))


def _rounded(value):
    return float(f"{value:.6g}")


# --- the run directory ----------------------------------------------------------------------------

def resolve_model_path(run_or_model):
    """A model file from a run directory (its model.autoenc) or a model file path."""
    path = os.fspath(run_or_model)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path!r}: give a run directory (with {MODEL_FILE}) or a model file")
    return path


def layer_output(model, x, layer_name):
    """The output of the layer ``layer_name`` for inputs x (one forward pass), a new array."""
    model.predict(x, batch_size=len(x), verbose=0)
    return np.array(model.layer_output(layer_name), copy=True)


def bottleneck_name(model):
    """The post's bottleneck: the first Conv2D with the smallest output."""
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    return min(convs, key=lambda l: int(np.prod(l.output_shape[1:]))).name


def write_pictures(model, history, x_test, run_dir, title, collapsed=False):
    probe = x_test[:10]
    reconstructions = model.predict(probe, verbose=0)
    note = " - COLLAPSED, see metrics.json" if collapsed else ""
    plotting.plot_reconstructions(probe, reconstructions, os.path.join(run_dir, "reconstructions.png"),
                                  title=f"{title}: test digits (top) and their reconstructions (bottom){note}")
    if history:
        plotting.plot_history(history, os.path.join(run_dir, "loss.png"), title=title)
    name = bottleneck_name(model)
    maps = layer_output(model, x_test[:5], name)
    plotting.plot_latent(maps, os.path.join(run_dir, "latent.png"), images=x_test[:5],
                         title=f"{title}: bottleneck {name}, {'x'.join(map(str, maps.shape[1:]))} per image")


def test_errors(model, x_test, batch_size=256):
    """MSE and binary crossentropy of the reconstructions of x_test, whatever loss the model trained with."""
    p = model.predict(x_test, batch_size=batch_size, verbose=0)
    return {"test_mse": _rounded(float(np.mean((p - x_test) ** 2))),
            "test_binary_crossentropy": _rounded(float(losses.BinaryCrossentropy()(x_test, p)))}


def versions():
    import matplotlib
    import numba
    return {"autoenc": autoenc.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "matplotlib": matplotlib.__version__, "python": platform.python_version()}


def write_json(path, document):
    text = json.dumps(document, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# --- train ----------------------------------------------------------------------------------------

class RunCheckpoint(Callback):
    """Saves the model with the run's state (epochs done, history, seconds) after every epoch, atomically."""

    def __init__(self, path, state):
        super().__init__()
        self.path, self.state = path, state

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.seconds_before = self.state.get("train_seconds", 0.0)

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.state["history"].setdefault(k, []).append(float(v))
        self.state["epochs_done"] = epoch + 1
        self.state["train_seconds"] = self.seconds_before + time.perf_counter() - self.started
        self.model.save(self.path, metadata=self.state)


def _find_run(args):
    """The run directory to resume: --out, runs/--name, or runs/<dataset>-<recipe> that has a checkpoint."""
    if args.out:
        return args.out
    if args.name:
        return os.path.join("runs", args.name)
    names = ["mnist", "digits"] if args.dataset == "auto" else [args.dataset]
    kind = "vae" if args.model == "vae" else args.recipe
    candidates = [os.path.join("runs", f"{d}-{kind}") for d in names]
    return next((c for c in candidates if os.path.exists(os.path.join(c, MODEL_FILE))), candidates[0])


def train(args):
    state = None
    run_dir = args.out
    if args.resume:
        run_dir = _find_run(args)
        model_path = os.path.join(run_dir, MODEL_FILE)
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {model_path}; start a run without --resume")
        state = saving.load_metadata(model_path)
        missing = [key for key in RUN_KEYS if key not in state]
        if missing:
            raise ValueError(f"--resume: {model_path} holds no run state ({', '.join(missing)} missing): it was "
                             f"not written by autoenc train; start a new run with another --out")
        args.dataset, args.recipe, args.limit = state["dataset"], state["recipe"], state["limit"]
        args.batch_size, args.seed = state["batch_size"], state["seed"]
        args.model = state.get("model", "seed")
    if args.model == "vae":
        return train_vae(args, state, run_dir)

    autoenc.set_random_seed(args.seed)
    x_train, x_test, used = load_dataset(args.dataset, args.limit)
    run_dir = run_dir or os.path.join("runs", args.name or f"{used}-{args.recipe}")
    model_path = os.path.join(run_dir, MODEL_FILE)
    os.makedirs(run_dir, exist_ok=True)

    if state is not None:
        model = models.load_model(model_path)   # weights, Adam's moments and the shuffling RNG, as saved
        print(f"Resuming {run_dir} after epoch {state['epochs_done']} of {args.epochs}")
    else:
        model = compile_recipe(build_seed_model(), args.recipe, args.learning_rate)
        state = {"dataset": used, "requested_dataset": args.dataset, "recipe": args.recipe,
                 "loss": RECIPES[args.recipe]["loss"], "learning_rate": RECIPES[args.recipe]["learning_rate"]
                 if args.learning_rate is None else args.learning_rate, "batch_size": args.batch_size, "seed": args.seed,
                 "limit": args.limit, "epochs_done": 0, "history": {}, "train_seconds": 0.0}
    print(f"Training the seed autoencoder on {len(x_train)} {used} images ({len(x_test)} for validation), "
          f"recipe {args.recipe}: {RECIPES[args.recipe]['about']}; writing {run_dir}")

    callbacks = [RunCheckpoint(model_path, state)]
    monitor = None
    if args.monitor:
        remedy = ("Try --recipe default (binary crossentropy) or a lower --learning-rate." if args.recipe == "seed"
                  else "Try a lower --learning-rate or another --seed.")
        monitor = CollapseMonitor(probe=x_test[:64], remedy=remedy)
        callbacks.append(monitor)
    try:
        history = model.fit(x_train, x_train, epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
                            validation_data=(x_test, x_test), initial_epoch=state["epochs_done"],
                            callbacks=callbacks, verbose=args.verbose)
        interrupted = getattr(history, "interrupted", False)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        done = state["epochs_done"]
        print(f"Interrupted. {model_path} holds the model after epoch {done}; "
              f"continue with: autoenc train --resume --out {run_dir} --epochs {args.epochs}")
        return 130

    title = f"{used}, recipe {args.recipe}"
    write_pictures(model, state["history"], x_test, run_dir, title, collapsed=bool(monitor and monitor.collapsed))
    final = {k: _rounded(v[-1]) for k, v in state["history"].items()}
    metrics = {"dataset": used, "requested_dataset": state.get("requested_dataset", args.dataset),
               "recipe": args.recipe, "loss": state["loss"], "optimizer": "adam",
               "learning_rate": state["learning_rate"], "batch_size": args.batch_size,
               "epochs": state["epochs_done"], "seed": args.seed, "limit": args.limit,
               "train_samples": len(x_train), "test_samples": len(x_test),
               "final": {**final, **test_errors(model, x_test)},
               "history": {k: [_rounded(v) for v in vs] for k, vs in state["history"].items()},
               "collapse": monitor.message if monitor is not None else None,
               "train_seconds": round(state.get("train_seconds", 0.0), 1),
               "versions": versions(), "files": sorted(os.listdir(run_dir) + ["metrics.json"])}
    # hidden files and temporary files of atomic_write (".<hash>.<random>.part") are not results
    metrics["files"] = sorted(set(metrics["files"]) - {f for f in metrics["files"]
                                                       if f.startswith(".") or f.endswith(".part")})
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    print(f"Done: val_loss {final.get('val_loss', float('nan')):.4f}, test MSE {metrics['final']['test_mse']:.4f} "
          f"after {state['epochs_done']} epochs in {metrics['train_seconds']:.0f} s. Wrote {run_dir}/: "
          + ", ".join(metrics["files"]))
    return 0


def train_vae(args, state, run_dir):
    """``autoenc train --model vae``: keras-io's VAE (models.keras_io_vae), Adam, its own loss; the run
    directory as for the seed model, plus latent_scatter.png, manifold.png and samples.png."""
    from autoenc.layers.base import clear_session
    from autoenc.optimizers import Adam
    autoenc.set_random_seed(args.seed)
    x_train, x_test, used = load_dataset(args.dataset, args.limit)
    run_dir = run_dir or os.path.join("runs", args.name or f"{used}-vae")
    model_path = os.path.join(run_dir, MODEL_FILE)
    os.makedirs(run_dir, exist_ok=True)
    if state is not None and state["epochs_done"]:
        model = models.load_model(model_path)   # weights, Adam's moments and the random state, as saved
        print(f"Resuming {run_dir} after epoch {state['epochs_done']} of {args.epochs}")
    else:
        clear_session()
        model = models.keras_io_vae(latent_dim=args.latent_dim, beta=args.beta)
        rate = 1e-3 if args.learning_rate is None else args.learning_rate
        model.compile(optimizer=Adam(rate))
        state = {"model": "vae", "dataset": used, "requested_dataset": args.dataset, "recipe": "vae",
                 "loss": "reconstruction_loss + beta * kl_loss", "beta": args.beta, "latent_dim": args.latent_dim,
                 "learning_rate": rate, "batch_size": args.batch_size, "seed": args.seed, "limit": args.limit,
                 "epochs_done": 0, "history": {}, "train_seconds": 0.0}
    latent_dim = model.encoder.outputs[0].shape[1]
    print(f"Training keras-io's variational autoencoder (latent {latent_dim}-D, beta {model.beta:g}) on "
          f"{len(x_train)} {used} images ({len(x_test)} for validation); writing {run_dir}")
    try:
        history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
                            validation_data=x_test, initial_epoch=state["epochs_done"],
                            callbacks=[RunCheckpoint(model_path, state)], verbose=args.verbose)
        interrupted = getattr(history, "interrupted", False)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:
        print(f"Interrupted. {model_path} holds the model after epoch {state['epochs_done']}; continue with: "
              f"autoenc train --model vae --resume --out {run_dir} --epochs {args.epochs}")
        return 130
    title = f"{used}, VAE"
    z_mean = model.encoder.predict(x_test, batch_size=256, verbose=0)[0]
    probe = x_test[:10]
    decoded = model.decoder.predict(z_mean[:10], verbose=0)
    plotting.plot_reconstructions(probe, decoded, os.path.join(run_dir, "reconstructions.png"),
                                  title=f"{title}: test images (top), decoded from their z_mean (bottom)")
    plotting.plot_history(state["history"], os.path.join(run_dir, "loss.png"), title=title)
    conv = [l for l in model.encoder.layers if type(l).__name__ == "Conv2D"][-1]
    maps = layer_output(model.encoder, x_test[:5], conv.name)
    plotting.plot_latent(maps[..., :16], os.path.join(run_dir, "latent.png"), images=x_test[:5],
                         title=f"{title}: encoder's {conv.name}, first 16 of {maps.shape[-1]} channels")
    labels = load_test_labels(used, args.limit, len(x_test))
    if latent_dim == 2:
        plotting.plot_latent_scatter(z_mean, labels, os.path.join(run_dir, "latent_scatter.png"),
                                     title=f"{title}: z_mean of {len(x_test)} test images")
        plotting.plot_manifold(model.decoder, os.path.join(run_dir, "manifold.png"), n=20, scale=1.0,
                               title=f"{title}: decoded grid of the latent plane (keras-io's plot_latent_space)")
    plotting.plot_samples(model.decoder, latent_dim, os.path.join(run_dir, "samples.png"), seed=args.seed,
                          title=f"{title}: 64 draws z ~ N(0, I), decoded")
    final = {k: _rounded(v[-1]) for k, v in state["history"].items()}
    test = model.evaluate(x_test, batch_size=256, verbose=0, return_dict=True)
    mse = float(np.mean((model.decoder.predict(z_mean, batch_size=256, verbose=0) - x_test) ** 2))
    metrics = {"model": "vae", "dataset": used, "requested_dataset": state.get("requested_dataset", args.dataset),
               "loss": state["loss"], "beta": model.beta, "latent_dim": latent_dim, "optimizer": "adam",
               "learning_rate": state["learning_rate"], "batch_size": args.batch_size, "epochs": state["epochs_done"],
               "seed": args.seed, "limit": args.limit, "train_samples": len(x_train), "test_samples": len(x_test),
               "final": {**final, **{f"test_{k}": _rounded(v) for k, v in test.items()},
                         "test_mse_from_z_mean": _rounded(mse)},
               "history": {k: [_rounded(v) for v in vs] for k, vs in state["history"].items()},
               "train_seconds": round(state.get("train_seconds", 0.0), 1), "versions": versions(),
               "files": sorted(os.listdir(run_dir) + ["metrics.json"])}
    metrics["files"] = sorted(set(metrics["files"]) - {f for f in metrics["files"]
                                                       if f.startswith(".") or f.endswith(".part")})
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    print(f"Done: loss {final.get('loss', float('nan')):.2f} (reconstruction {final.get('reconstruction_loss', 0):.2f}, "
          f"KL {final.get('kl_loss', 0):.2f}), val_loss {final.get('val_loss', float('nan')):.2f} after "
          f"{state['epochs_done']} epochs in {metrics['train_seconds']:.0f} s. Wrote {run_dir}/: "
          + ", ".join(metrics["files"]))
    return 0


# --- evaluate, reconstruct, summary ---------------------------------------------------------------

def _load_for_data(args):
    path = resolve_model_path(args.model)
    model = models.load_model(path, restore_random_state=False)
    meta = saving.load_metadata(path)
    dataset = args.dataset or meta.get("dataset") or "auto"
    limit = args.limit if args.limit is not None else meta.get("limit")
    _, x_test, used = load_dataset(dataset, limit)
    return model, x_test, used, path


def evaluate(args):
    model, x_test, used, path = _load_for_data(args)
    results = {}
    if model.compiled:
        results["loss"] = _rounded(model.evaluate(x_test, x_test, batch_size=256, verbose=0, return_dict=True)["loss"])
    results.update(test_errors(model, x_test))
    if args.json:
        print(json.dumps({"model": path, "dataset": used, "test_samples": len(x_test), **results}))
    else:
        print(f"{path} on {len(x_test)} {used} test images:")
        for k, v in results.items():
            print(f"  {k}: {v:.5f}")
    return 0


def reconstruct(args):
    model, x_test, used, path = _load_for_data(args)
    probe = x_test[:args.n]
    plotting.plot_reconstructions(probe, model.predict(probe, verbose=0), args.out,
                                  n=args.n, title=f"{used}: test digits (top) and their reconstructions (bottom)")
    print(f"Wrote {args.out}")
    return 0


def summary(args):
    if args.model:
        path = resolve_model_path(args.model)
        model = models.load_model(path, restore_random_state=False)
        meta = saving.load_metadata(path)
    else:
        model, meta = build_seed_model(), {}
    model.summary()
    if meta:
        final = {k: round(v[-1], 5) for k, v in meta.get("history", {}).items()}
        print(f"Trained {meta.get('epochs_done')} epochs on {meta.get('dataset')} (recipe {meta.get('recipe')}, "
              f"batch {meta.get('batch_size')}): {final}")
    if args.plot:
        plotting.plot_model(model, args.plot)
        print(f"Wrote {args.plot}")
    return 0


def export(args):
    """Write the run's model as an ONNX graph (model.export) or a Keras 3 ``.keras`` file (model.save),
    beside its model.autoenc unless --out says where."""
    path = resolve_model_path(args.model)
    suffix = {"onnx": ".onnx", "keras": ".keras"}[args.format]
    out = args.out or os.path.splitext(path)[0] + suffix
    if args.format == "keras" and not out.endswith(".keras"):
        raise ValueError(f"--format keras writes a .keras file; --out must end in .keras, got {out!r}")
    model = models.load_model(path, restore_random_state=False)
    if args.format == "onnx":
        kwargs = {} if args.opset is None else {"opset_version": args.opset}
        model.export(out, format="onnx", verbose=False, **kwargs)
    else:
        model.save(out)
    print(f"Wrote {out}")
    return 0


# --- the parser -----------------------------------------------------------------------------------

def _positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _learning_rate(text):
    value = float(text)
    if not np.isfinite(value) or value <= 0:   # NaN fails both comparisons: test isfinite first
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _beta(text):
    value = float(text)
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _run_directory(text):
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a run directory")
    return text


def make_parser():
    parser = argparse.ArgumentParser(prog="autoenc", description="Train and inspect the seed convolutional autoencoder.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the seed autoencoder and write a run directory",
                       description="Train the seed post's autoencoder; write model.autoenc, reconstructions.png, "
                                   "loss.png, latent.png and metrics.json into the run directory.")
    p.add_argument("--dataset", choices=DATASETS, default="auto",
                   help="auto: MNIST if it can be had, else synthetic digits (default)")
    p.add_argument("--model", choices=MODELS, default="seed",
                   help="seed: the post's autoencoder (default); vae: keras-io's variational autoencoder")
    p.add_argument("--latent-dim", type=_positive, default=2,
                   help="--model vae: size of the latent code (default 2: the pictures of the plane)")
    p.add_argument("--beta", type=_beta, default=1.0, help="--model vae: weight of the KL term (default 1)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                   help="default: binary crossentropy; seed: the post's MSE (can collapse on MNIST); "
                        "not used by --model vae")
    p.add_argument("--epochs", type=_positive, default=10, help="total epochs (default 10)")
    p.add_argument("--batch-size", type=_positive, default=256, help="default 256")
    p.add_argument("--learning-rate", type=_learning_rate, default=None,
                   help="Adam's learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--limit", type=_positive, default=None,
                   help="train on the first N images (and validate on N/6) for a quick run")
    p.add_argument("--out", type=_run_directory, default=None, help="run directory (default runs/<name>)")
    p.add_argument("--name", default=None, help="run name under runs/ (default <dataset>-<recipe>)")
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.add_argument("--no-monitor", dest="monitor", action="store_false",
                   help="do not watch for a collapse to a blank output")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="1: progress bar (default), 2: one line per epoch, 0: silent")
    p.set_defaults(run=train)

    for name, run, about in (("evaluate", evaluate, "the test losses of a trained model"),
                             ("reconstruct", reconstruct, "draw test digits over their reconstructions")):
        p = sub.add_parser(name, help=about, description=about)
        p.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a model file")
        p.add_argument("--dataset", choices=DATASETS, default=None, help="default: the one it trained on")
        p.add_argument("--limit", type=_positive, default=None, help="default: the one it trained with")
        if name == "evaluate":
            p.add_argument("--json", action="store_true", help="print one JSON line")
        else:
            p.add_argument("--out", default="reconstructions.png", help="picture file (.png or .svg)")
            p.add_argument("-n", type=_positive, default=10, help="number of digits (default 10)")
        p.set_defaults(run=run)

    p = sub.add_parser("summary", help="print the layers of the seed model or of a trained one")
    p.add_argument("model", metavar="RUN_OR_MODEL", nargs="?", default=None,
                   help="a run directory or model file (default: the untrained seed model)")
    p.add_argument("--plot", default=None, help="also draw the layer graph into this file (.png or .svg)")
    p.set_defaults(run=summary)

    p = sub.add_parser("export", help="write a trained model for onnxruntime (.onnx) or Keras (.keras)",
                       description="Write the model of a run as an ONNX graph that onnxruntime serves, or as a Keras 3 "
                                   ".keras file that keras.saving.load_model opens.")
    p.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a model file")
    p.add_argument("--format", choices=("onnx", "keras"), default="onnx", help="onnx (default) or keras")
    p.add_argument("--out", default=None, help="the file to write (default: beside the model, model.onnx or "
                                                 "model.keras)")
    p.add_argument("--opset", type=_positive, default=None,
                   help="ONNX opset version (default 17; 13 up to the installed onnx's newest)")
    p.set_defaults(run=export)
    return parser


def _one_line(error):
    """An exception as one line: an OSError as 'path: reason', anything else as its message."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ""
        return f"{where}: {error.strerror}" if where else error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    """Entry point of the ``autoenc`` command. Returns the exit status: 0, 1 when the command failed
    (a missing or unreadable file, no network, a full or read-only disk: one line on stderr, no traceback),
    2 for a usage error (argparse's), 130 when interrupted."""
    args = make_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, TypeError, ImportError) as error:   # OSError: FileNotFoundError, DownloadError, ENOSPC ...
        print(f"autoenc {args.command}: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"autoenc {args.command}: interrupted", file=sys.stderr)
        return 130
