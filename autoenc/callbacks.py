"""Callbacks with Keras' names: hooks that fit calls at the start and end of epochs and steps."""
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

from autoenc import files
from autoenc.tensorboard import EventFileWriter


class Callback:
    """Base class. ``self.model`` is set by fit; ``logs`` are dicts like {'loss': 0.05, 'val_loss': 0.06}.

    The hooks and their arguments are Keras 3's. fit calls, through CallbackList:
    on_train_begin(logs), on_epoch_begin(epoch, logs), on_train_batch_begin(batch, logs=logs),
    on_train_batch_end(batch, logs=logs), on_epoch_end(epoch, logs), on_train_end(logs).
    As in Keras, on_train_batch_begin/end call on_batch_begin/end unless overridden.
    """

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
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs=logs)

    # Keras' evaluate and predict hooks: autoenc's evaluate and predict take no callbacks, so these
    # are never called; they exist so that Keras callbacks that override them still define cleanly.
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


def _pythonify(logs):
    """A new dict of the logs with Python floats (as Keras' CallbackList passes them): each hook
    call gets its own dict, which the callbacks of that call share (ReduceLROnPlateau's
    'learning_rate' reaches History)."""
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


class CallbackList:
    """Calls every callback's hook in order, with the arguments Keras 3's CallbackList passes:
    logs is always a dict (empty at the begin hooks), batch hooks get it as the keyword ``logs``,
    and on_train_end gets the last epoch's logs."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be autoenc.callbacks.Callback instances, got {cb!r}")
            cb.set_model(model)
            cb.set_params(params)
        self._epoch_logs = None

    def on_train_begin(self, logs=None):
        self._epoch_logs = None
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs=None):
        # as Keras' fit: on_train_end(logs=training_logs), the last epoch's logs as fit made them
        logs = _pythonify(self._epoch_logs if logs is None else logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_logs = dict(logs or {})
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        logs = _pythonify(logs)
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs=logs)


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
    """A callback built from functions, called as Keras calls them: on_epoch_begin(epoch, logs),
    on_epoch_end(epoch, logs), on_train_begin(logs), on_train_end(logs), on_train_batch_begin(batch,
    logs=logs), on_train_batch_end(batch, logs=logs). Any other hook may be given by name (as
    Keras' ``**kwargs``), e.g. ``on_batch_end=fn``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        self.__dict__.update(kwargs)
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

    Each row is flushed as it is written, so a killed run leaves the header and every finished
    epoch's row on disk. Without ``append`` the file is replaced as Keras replaces it, but only
    when the first row is ready (header and row written to a temporary file renamed over it): a run
    killed before its first epoch ends leaves the previous file as it was, not an empty one. With
    ``append`` an existing file is continued (its header kept).
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self._file = None
        self._keys = None

    def on_train_begin(self, logs=None):
        self._close()
        self._keys = None
        self._header = True
        if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
            with open(self.filename, encoding="utf-8") as f:
                header = f.readline().rstrip("\n")
            self._keys = header.split(self.separator)[1:] or None
            self._header = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        text = self.separator.join([str(epoch)] + [_csv_value(logs.get(k, "")) for k in self._keys]) + "\n"
        if self._file is None:
            if self._header:
                text = self.separator.join(["epoch"] + self._keys) + "\n" + text
            if not self.append:
                files.atomic_write(self.filename, lambda f: f.write(text.encode("utf-8")))
                text = ""
            self._file = open(self.filename, "a", encoding="utf-8")
        self._file.write(text)
        self._file.flush()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_value(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


# --- the learning rate ----------------------------------------------------------------------------

def _learning_rate(optimizer):
    """The optimizer's learning rate as Keras reads it: Keras holds it in a float32 variable, so
    every read is rounded to float32 (which decides, e.g., when it has reached ``min_lr``)."""
    if not hasattr(optimizer, "learning_rate"):
        raise ValueError(f'Optimizer must have a "learning_rate" attribute, got {optimizer!r}')
    return float(np.float32(optimizer.learning_rate))


def _monitor_sign(callback, monitor, mode):
    """+1 if smaller is better for ``monitor``, -1 if larger is; Keras 3's rule for mode='auto':
    a loss is minimised, an accuracy maximised, another compiled metric (a loss or error) minimised,
    anything else is an error asking for mode='min' or 'max'."""
    if mode == "min":
        return 1
    if mode == "max":
        return -1
    name = monitor.removeprefix("val_")
    if name == "loss":
        return 1
    if "acc" in name:
        return -1
    if name in [m[0] if isinstance(m, tuple) else getattr(m, "name", m)
                for m in getattr(callback.model, "metrics", None) or []]:
        return 1
    raise ValueError(f"{type(callback).__name__} callback received monitor={monitor}, but autoenc isn't able "
                     "to automatically determine whether that metric should be maximized or minimized. Pass "
                     "mode='max' in order to monitor based on the highest metric value, or pass mode='min' "
                     "in order to use the lowest value.")


class ReduceLROnPlateau(Callback):
    """Multiplies the learning rate by ``factor`` (not below ``min_lr``) when ``monitor`` has not
    improved by more than ``min_delta`` for ``patience`` epochs, then waits ``cooldown`` epochs
    before counting again. Each epoch's logs get the current rate as 'learning_rate' (before any
    reduction of that epoch), as in Keras 3, so History and CSVLogger record it.

    The order of checks at each epoch end is Keras 3's: during cooldown the counter goes down and
    the wait is cleared; an improvement (``value - min_delta < best`` when minimising) becomes the
    best and clears the wait; otherwise, outside cooldown, the wait grows, and at ``patience`` the
    rate is reduced if it is still above ``min_lr`` (compared in float32), which starts the cooldown.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        unknown = set(kwargs) - {"epsilon"}  # Keras 2's name for min_delta
        if unknown:
            raise TypeError(f"ReduceLROnPlateau got unexpected keyword argument(s): {sorted(unknown)}")
        if "epsilon" in kwargs:
            warnings.warn("`epsilon` argument is deprecated, use `min_delta` instead.", DeprecationWarning,
                          stacklevel=2)
            min_delta = kwargs["epsilon"]
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, factor, patience
        self.verbose, self.min_delta, self.cooldown, self.min_lr = verbose, abs(min_delta), cooldown, min_lr
        self.sign = None  # set at the first epoch end, when the model's metrics are known
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def _is_improvement(self, value):
        if self.best is None:
            return True
        # Keras: ops.less(value - min_delta, best) with min_delta negated when minimising; ops.less
        # and ops.greater turn Python floats into float32 tensors, so the comparison is in float32
        if self.sign > 0:
            return np.float32(value + self.min_delta) < np.float32(self.best)
        return np.float32(value - self.min_delta) > np.float32(self.best)

    def on_epoch_end(self, epoch, logs=None):
        if self.sign is None:
            self.sign = _monitor_sign(self, self.monitor, self.mode)
        logs = logs or {}  # as Keras: an empty dict is not written into
        logs["learning_rate"] = _learning_rate(self.model.optimizer)
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}.", stacklevel=2)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(value):
            self.best = value
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce(self, epoch):
        old_lr = _learning_rate(self.model.optimizer)
        if not old_lr > np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        self.model.optimizer.learning_rate = float(new_lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
        return True


class LearningRateScheduler(Callback):
    """At each epoch's start sets the learning rate to ``schedule(epoch, lr)`` (``epoch`` from 0,
    ``lr`` the current rate read as float32, as Keras reads it), or ``schedule(epoch)`` if the
    schedule takes one argument; the result must be a float. Each epoch's logs get the rate as
    'learning_rate'."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be a function (epoch, lr) -> lr, got {schedule!r}")
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        try:  # Keras' new API, then its old one
            learning_rate = self.schedule(epoch, _learning_rate(optimizer))
        except TypeError:
            learning_rate = self.schedule(epoch)
        if not isinstance(learning_rate, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {learning_rate}")
        optimizer.learning_rate = float(learning_rate)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}  # as Keras: an empty dict is not written into
        logs["learning_rate"] = _learning_rate(self.model.optimizer)


# --- TensorBoard ----------------------------------------------------------------------------------

class TensorBoard(Callback):
    """Writes TensorBoard event files as Keras 3's TensorBoard callback does, without TensorFlow
    (autoenc.tensorboard encodes them):

    - ``log_dir/train/events.out.tfevents.<time>.<host>.<pid>.<n>.v2``: at each epoch end
      ``epoch_loss``, ``epoch_<metric>`` and ``epoch_learning_rate`` (and ``epoch_steps_per_second``
      with ``write_steps_per_second``) at step ``epoch`` (from 0); with ``update_freq='batch'`` or an
      int N, also ``batch_loss``, ``batch_<metric>`` (the epoch's running means, as fit logs them) every
      N-th batch, the step counting batches from 1 across epochs; with ``histogram_freq`` N > 0, every
      N-th epoch a 30-bucket histogram of each weight, tagged ``<model>/<layer>/<weight>/histogram``.
    - ``log_dir/validation/...``: ``epoch_loss``, ``epoch_<metric>`` of the validation logs (without
      'val_') at step ``epoch``, and ``evaluation_<name>_vs_iterations`` at step
      ``optimizer.iterations``, as Keras writes when fit validates.

    One new pair of files per fit. Every record is flushed as it is written. Unlike Keras, epoch
    summaries are written every epoch also when ``update_freq`` is an int (Keras skips an epoch's
    whenever the batch count at its end is not a multiple of update_freq). ``write_graph`` writes
    nothing (Keras 3's documentation calls it not supported; what Keras writes there is its own
    model JSON); ``write_images`` and ``embeddings_freq`` are accepted with a warning that nothing is
    written; profiling (``profile_batch``) is not available.
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, (int, np.integer)) or histogram_freq < 0:
            raise ValueError(f"histogram_freq must be a non-negative int, got {histogram_freq!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, (int, np.integer))
                                       or update_freq < 1):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive int, got {update_freq!r}")
        if profile_batch:
            raise ValueError("Profiling is not available in autoenc. Received: "
                             f"profile_batch={profile_batch} (must be 0)")
        if write_images:
            warnings.warn("TensorBoard(write_images=True): autoenc does not write weight images; "
                          "the other summaries are written", stacklevel=2)
        if embeddings_freq:
            warnings.warn("TensorBoard(embeddings_freq=...): autoenc has no Embedding layer; "
                          "no embeddings are written", stacklevel=2)
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq, self.write_graph, self.write_images = int(histogram_freq), write_graph, write_images
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = update_freq if update_freq == "epoch" else int(update_freq)
        self.embeddings_freq, self.embeddings_metadata = embeddings_freq, embeddings_metadata
        self._writers = {}
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0
        self._batch_start_time = self._epoch_start_time = 0.0

    def set_model(self, model):
        super().set_model(model)
        self._train_dir = os.path.join(self.log_dir, "train")
        self._val_dir = os.path.join(self.log_dir, "validation")
        self._close_writers()

    def _writer(self, which):
        if which not in self._writers:  # created at its first summary, as Keras' writers
            self._writers[which] = EventFileWriter(self._train_dir if which == "train" else self._val_dir)
        return self._writers[which]

    def _close_writers(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0

    def on_train_end(self, logs=None):
        self._close_writers()

    def on_train_batch_begin(self, batch, logs=None):
        self._global_train_batch += 1
        if self.write_steps_per_second:
            self._batch_start_time = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq:
            return
        writer, step = self._writer("train"), self._global_train_batch
        if self.write_steps_per_second:
            writer.add_scalar("batch_steps_per_second", 1.0 / (time.time() - self._batch_start_time), step)
        for name, value in (logs or {}).items():
            writer.add_scalar(f"batch_{name}", value, step)

    def on_epoch_begin(self, epoch, logs=None):
        if self.write_steps_per_second:
            self._previous_epoch_iterations = self.model.optimizer.iterations
            self._epoch_start_time = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if val_logs and optimizer is not None and hasattr(optimizer, "iterations"):
            for name, value in val_logs.items():  # Keras writes these when fit's evaluate ends
                self._writer("validation").add_scalar(f"evaluation_{name}_vs_iterations", value,
                                                      optimizer.iterations)
        if logs:
            if optimizer is not None and hasattr(optimizer, "learning_rate"):
                train_logs["learning_rate"] = _learning_rate(optimizer)
            if self.write_steps_per_second:
                seconds = np.float32(time.time() - self._epoch_start_time)
                train_logs["steps_per_second"] = float(
                    np.float32(optimizer.iterations - self._previous_epoch_iterations) / seconds)
            for name, value in train_logs.items():
                self._writer("train").add_scalar(f"epoch_{name}", value, epoch)
            for name, value in val_logs.items():
                self._writer("validation").add_scalar(f"epoch_{name}", value, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)

    def _log_weights(self, epoch):
        writer = self._writer("train")
        for path, weight in _weight_paths(self.model):
            writer.add_histogram(f"{path.replace(':', '_')}/histogram", weight, epoch)


def _weight_paths(model):
    """(path, array) for every weight, paths as Keras 3 names them: '<model>/<layer>/<weight>'."""
    out = []
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "params"):
            out += [(f"{model.name}/{layer.name}/{name}", w) for name, w in layer.params.items()]
        elif hasattr(layer, "layers"):  # a nested model
            out += [(f"{model.name}/{path}", w) for path, w in _weight_paths(layer)]
    return out
