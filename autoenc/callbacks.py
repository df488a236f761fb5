"""Callbacks with Keras' names: hooks that fit calls at the start and end of epochs and steps."""
import math
import os
import shutil
import sys
import time

import numpy as np


class Callback:
    """Base class. ``self.model`` is set by fit; ``logs`` are dicts like {'loss': 0.05, 'val_loss': 0.06}."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls every callback's hook in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be autoenc.callbacks.Callback instances, got {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)
        return call


class History(Callback):
    """Records every epoch's logs: ``history.history['loss']`` is the list of epoch losses."""

    def __init__(self):
        super().__init__()
        self.epoch = []
        self.history = {}

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


def _format_logs(logs):
    return "".join(f" - {k}: {v:.4f}" if isinstance(v, float) else f" - {k}: {v}" for k, v in logs.items())


class Progbar:
    """A Keras-like progress bar: ``12/235 [==>......] - ETA: 9s - loss: 0.0812``.

    On a terminal it redraws in place at most every 0.05 s; elsewhere it prints only the last line.
    """

    def __init__(self, target, width=30, stream=None, interactive=None):
        self.target = target
        self.width = width
        self.stream = stream or sys.stdout
        self.interactive = (hasattr(self.stream, "isatty") and self.stream.isatty()) if interactive is None else interactive
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, current, logs=None, finalize=False):
        now = time.perf_counter()
        if not finalize and (not self.interactive or now - self._last_draw < 0.05):
            return
        self._last_draw = now
        elapsed = now - self.start
        digits = len(str(self.target))
        done = int(self.width * current / max(self.target, 1))
        bar = "=" * max(done - 1, 0) + (">" if done < self.width else "=") + "." * (self.width - done)
        line = f"{current:{digits}d}/{self.target} [{bar[:self.width]}]"
        if finalize:
            per_step = elapsed / max(current, 1)
            line += f" - {_format_time(elapsed)} {per_step * 1e3:.0f}ms/step"
        else:
            eta = elapsed / max(current, 1) * (self.target - current)
            line += f" - ETA: {_format_time(eta)}"
        line += _format_logs(logs or {})
        if self.interactive:
            cols = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r" + line[:cols - 1].ljust(min(cols - 1, len(line))))
            if finalize:
                self.stream.write("\n")
        elif finalize:
            self.stream.write(line + "\n")
        self.stream.flush()


class ProgbarLogger(Callback):
    """verbose=1: a progress bar per epoch, redrawn every step; verbose=2: one line per epoch."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        self._bar = Progbar(self.params.get("steps", 0), stream=self.stream,
                            interactive=None if self.verbose == 1 else False)
        self._epoch_start = time.perf_counter()
        if self.verbose:
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")

    def on_train_batch_end(self, batch, logs=None):
        if self.verbose == 1:
            self._bar.update(batch + 1, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose:
            self._bar.update(self.params.get("steps", 0), logs, finalize=True)


class TerminateOnNaN(Callback):
    """Stops training when a batch loss is NaN or Inf."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback built from functions: on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs),
    on_train_batch_begin(batch, logs), on_train_batch_end(batch, logs), on_train_begin(logs), on_train_end(logs)."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None):
        super().__init__()
        for name, fn in list(locals().items()):
            if name.startswith("on_") and fn is not None:
                setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.verbose = monitor, patience, verbose
        self.min_delta = abs(min_delta)
        self.sign = -1 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1
        self.baseline, self.restore_best_weights, self.start_from_epoch = baseline, restore_best_weights, start_from_epoch
        self.stopped_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.best = np.inf if self.baseline is None else self.sign * self.baseline
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but the logs hold only {sorted(logs or {})}")
        if epoch < self.start_from_epoch:
            return
        if self.sign * value < self.best - self.min_delta:
            self.best, self.wait, self.best_epoch = self.sign * value, 0, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping")


class ModelCheckpoint(Callback):
    """Saves the model (``model.save``) or its weights at the end of every epoch, atomically.

    ``filepath`` may hold the epoch and the logs as format fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.autoenc"``
    (``epoch`` counts from 1, as Keras prints it). With ``save_best_only`` the file is written only
    when ``monitor`` improves on the best value seen so far.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint supports save_freq='epoch' only, got {save_freq!r}")
        self.filepath, self.monitor, self.verbose = filepath, monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        # compare sign * value: smaller is better
        self.sign = -1 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1
        self.best = np.inf if initial_value_threshold is None else self.sign * initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        try:
            path = str(self.filepath).format(epoch=epoch + 1, **logs)
        except KeyError as e:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} names {e}, but the logs hold only "
                             f"{sorted(logs)}") from None
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, but the logs hold only {sorted(logs)}")
            if not self.sign * value < self.best:
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.sign * self.best:.5f}")
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved to {value:.5f}, saving model to {path}")
            self.best = self.sign * value
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` (from 0, as Keras) then every log, e.g. loss, val_loss.

    Each row is flushed as it is written, so the file is complete up to the last finished epoch.
    With ``append`` an existing file is continued (its header kept) instead of overwritten.
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = filename, separator, append
        self._file = None
        self._keys = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._keys = None
        if exists:
            with open(self.filename, encoding="utf-8") as f:
                header = f.readline().rstrip("\n")
            self._keys = header.split(self.separator)[1:] or None
        self._file = open(self.filename, "a" if self.append else "w", encoding="utf-8")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._file.write(self.separator.join(["epoch"] + self._keys) + "\n")
        row = [str(epoch)] + [_csv_value(logs.get(k, "")) for k in self._keys]
        self._file.write(self.separator.join(row) + "\n")
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_value(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)
