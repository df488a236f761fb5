"""Training: compile, fit, evaluate, predict and the single-batch methods, as Keras spells them.

One training step is
    y_pred = forward(x)              every layer, in graph order
    L      = loss(y, y_pred) + sum of regularization penalties
    dy     = dL/dy_pred               (or dL/dz from the logits, see below)
    backward(dy)                      every layer fills its grads, in reverse order
    optimizer.apply(grads, params)    one update of the flat parameter buffer

When the loss is binary crossentropy and the output layer ends in a sigmoid, the loss and its
gradient are computed from the pre-activation z, as Keras' TensorFlow backend does: stable when
the sigmoid saturates.
"""
import math
import os
import warnings

import numpy as np

from autoenc import callbacks as callbacks_module
from autoenc import losses as losses_module
from autoenc import optimizers as optimizers_module
from autoenc import utils
from autoenc.utils import atomic_write


class NotCompiledError(ValueError, RuntimeError):
    """Training or evaluating a model that has not been compiled."""


def _metric_name(identifier):
    return identifier if isinstance(identifier, str) else getattr(identifier, "__name__", type(identifier).__name__)


class Trainer:
    """The training half of Model (mixed in): needs ``forward``, ``backward``, ``layers``, ``inputs``."""

    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.compiled = False
        self._flat_params = None
        self._flat_grads = None
        self._param_refs = []
        self.history = None

    # --- compile -------------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, **kwargs):
        """Choose the optimizer (name or instance) and loss (name, function or Loss), and optional
        metrics (loss names, reported as logs under the given names)."""
        unsupported = {k for k, v in kwargs.items()
                       if k not in ("run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss")}
        if unsupported:
            raise TypeError(f"compile got unexpected keyword argument(s): {sorted(unsupported)}")
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='mean_squared_error'")
        if loss_weights is not None:
            raise ValueError("loss_weights is not supported: autoenc models have one output")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss)
        self.metrics = [(_metric_name(m), losses_module.get(m)) for m in (metrics or [])]
        self.compiled = True

    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"You must call compile(optimizer, loss) before {what}()")

    # --- the flat parameter buffer -------------------------------------------------------------

    def _ensure_flat_parameters(self):
        """Keep every trainable parameter (and its gradient) as a view into one flat buffer, so that
        the optimizer updates all of them in one call. Rebuilt if a layer's arrays were replaced."""
        refs = [(layer, name) for layer in self.layers for name in layer.trainable_names]
        flat = self._flat_params
        if flat is not None and refs == self._param_refs and all(
                layer.params[n].base is flat and layer.grads[n].base is self._flat_grads for layer, n in refs):
            return
        size = sum(layer.params[n].size for layer, n in refs)
        dtype = refs[0][0].params[refs[0][1]].dtype if refs else np.float32
        self._flat_params = np.empty(size, dtype)
        self._flat_grads = np.zeros(size, dtype)
        offset = 0
        for layer, n in refs:
            p = layer.params[n]
            view = self._flat_params[offset:offset + p.size].reshape(p.shape)
            view[...] = p
            layer.params[n] = view
            layer.grads[n] = self._flat_grads[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        self._param_refs = refs

    # --- data ----------------------------------------------------------------------------------

    def _prepare_x(self, x, what):
        """The model inputs as contiguous arrays of the model's dtype, converted once."""
        self._require_built_for_data(x)
        xs = x if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise ValueError(f"The model has {len(self.inputs)} input(s), got {len(xs)} arrays for {what}")
        return [self._prepare_array(a, t.shape, f"{what}" if len(xs) == 1 else f"{what}[{k}]")
                for k, (a, t) in enumerate(zip(xs, self.inputs))]

    def _prepare_array(self, a, shape, what):
        if not isinstance(a, np.ndarray):
            if isinstance(a, (list, tuple)):
                a = np.asarray(a)
            else:
                raise TypeError(f"{what} must be a NumPy array, got {type(a).__name__}")
        if a.dtype.kind not in "fiub":
            raise TypeError(f"{what} must hold numbers, got dtype {a.dtype}")
        expected = tuple(shape[1:])
        if a.shape[1:] != expected:
            raise ValueError(f"{what} should have shape (batch, {', '.join(map(str, expected))}), got {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{what} is empty (shape {a.shape})")
        if a.dtype.kind in "iub" and a.size and a.max() > 1 and self._output_is_bounded():
            warnings.warn(f"{what} holds integers up to {a.max()} (dtype {a.dtype}) but the model's output is a "
                          "sigmoid in [0, 1]: scale the data first, e.g. x.astype('float32') / 255", stacklevel=4)
        # converted once here (uint8 and float64 alike), never per step
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{what} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")
        return a

    def _output_is_bounded(self):
        out_layer = self._nodes[-1].layer if getattr(self, "_nodes", None) else None
        return getattr(getattr(out_layer, "activation", None), "name", None) == "sigmoid"

    def _require_built_for_data(self, x):
        if not self.built:
            first = x[0] if isinstance(x, (list, tuple)) else x
            self.build((None,) + np.shape(first)[1:])

    def _prepare_xy(self, x, y, what="fit"):
        xs = self._prepare_x(x, "x")
        if y is None:
            raise ValueError(f"{what} needs targets y (for an autoencoder, y = x)")
        y = self._prepare_array(y, self.outputs[0].shape, "y")
        if y.shape[0] != xs[0].shape[0]:
            raise ValueError(f"x and y must have the same number of samples, got {xs[0].shape[0]} and {y.shape[0]}")
        return xs, y

    @staticmethod
    def _check_batch_size(batch_size):
        if batch_size is None:
            return 32
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return int(batch_size)

    # --- single steps --------------------------------------------------------------------------

    def _uses_logits(self):
        """Whether to take the loss from the output layer's pre-activation (BCE after a sigmoid)."""
        out_layer = self._nodes[-1].layer if self._nodes else None
        return (isinstance(self.loss, losses_module.BinaryCrossentropy) and not self.loss.from_logits
                and getattr(getattr(out_layer, "activation", None), "name", None) == "sigmoid")

    def _logits(self, y_pred):
        """The output layer's pre-activation z of the last forward pass, shaped like y_pred."""
        return self._nodes[-1].layer._z.reshape(y_pred.shape)

    def _loss_and_gradient(self, y, y_pred):
        """(data loss, dL/dy_pred or dL/dz, from_logits) for the last forward pass. The gradient
        goes into a buffer kept between steps."""
        grad = getattr(self, "_loss_grad", None)
        if grad is None or grad.shape != y_pred.shape or grad.dtype != y_pred.dtype:
            grad = self._loss_grad = np.empty_like(y_pred)
        if self._uses_logits():
            loss, grad = self.loss.value_and_gradient_from_logits(y, self._logits(y_pred), out=grad)
            return loss, grad, True
        loss, grad = self.loss.value_and_gradient(y, y_pred, out=grad)
        return loss, grad, False

    def _loss_value(self, y, y_pred):
        """The data loss of the last forward pass, without its gradient (evaluation)."""
        if self._uses_logits():
            return self.loss.value_from_logits(y, self._logits(y_pred))
        return self.loss.value(y, y_pred)

    def _regularization_loss(self):
        return sum(layer.regularization_loss() for layer in self.layers)

    def _train_step(self, xs, y):
        """One forward, backward and update on a batch. Returns the batch loss (with regularization)."""
        y_pred = self.forward(xs if len(xs) > 1 else xs[0], training=True)
        loss, grad, from_logits = self._loss_and_gradient(y, y_pred)
        total = float(loss) + self._regularization_loss()
        metrics = {name: float(m(y, y_pred)) for name, m in self.metrics}
        self.backward(grad, from_logits=from_logits, input_gradients=False)
        self.optimizer.apply([self._flat_grads], [self._flat_params])
        return total, metrics

    def _test_step(self, xs, y):
        y_pred = self.forward(xs if len(xs) > 1 else xs[0], training=False)
        loss = float(self._loss_value(y, y_pred))
        return loss + self._regularization_loss(), {name: float(m(y, y_pred)) for name, m in self.metrics}

    def train_on_batch(self, x, y=None):
        """One update on one batch. Returns the loss before the update (regularization included)."""
        self._require_compiled("train_on_batch")
        xs, y = self._prepare_xy(x, y, "train_on_batch")
        self._ensure_flat_parameters()
        loss, metrics = self._train_step(xs, y)
        return loss if not metrics else [loss, *metrics.values()]

    def test_on_batch(self, x, y=None):
        """The loss on one batch, without updating."""
        self._require_compiled("test_on_batch")
        xs, y = self._prepare_xy(x, y, "test_on_batch")
        loss, metrics = self._test_step(xs, y)
        return loss if not metrics else [loss, *metrics.values()]

    def predict_on_batch(self, x):
        """The model output for one batch (a new array)."""
        xs = self._prepare_x(x, "x")
        return np.array(self.forward(xs if len(xs) > 1 else xs[0], training=False), copy=True)

    # --- loops ---------------------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            validation_batch_size=None, **kwargs):
        """Train for ``epochs`` passes over (x, y) in batches of ``batch_size`` (the last one may be
        smaller). Returns a History whose ``history['loss']`` holds each epoch's sample-weighted
        mean batch loss, and ``history['val_loss']`` the validation loss after each epoch."""
        unsupported = {k for k, v in kwargs.items() if v is not None}
        if unsupported:
            raise TypeError(f"fit got unsupported keyword argument(s): {sorted(unsupported)}")
        self._require_compiled("fit")
        batch_size = self._check_batch_size(batch_size)
        for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        xs, y = self._prepare_xy(x, y)
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            val = self._prepare_xy(validation_data[0], validation_data[1], "validation")
        elif validation_split:
            # as Keras: the last fraction of the data, taken before shuffling
            split = int(xs[0].shape[0] * (1 - validation_split))
            if split == 0 or split == xs[0].shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no data to train or validate on")
            val = ([a[split:] for a in xs], y[split:])
            xs, y = [a[:split] for a in xs], y[:split]
        else:
            val = None
        self._ensure_flat_parameters()

        n = xs[0].shape[0]
        steps = -(-n // batch_size)
        verbose = 1 if verbose == "auto" else verbose
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if verbose:
            cbs.append(callbacks_module.ProgbarLogger(verbose))
        cbs.append(history)
        cb = callbacks_module.CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose})
        self.stop_training = False
        self.history = history
        cb.on_train_begin()
        snapshot = _StepSnapshot(self)
        self._epoch, self._step = initial_epoch, 0
        try:
            self._fit_epochs(xs, y, val, cb, snapshot, epochs, initial_epoch, batch_size, shuffle,
                             validation_batch_size)
        except KeyboardInterrupt:
            snapshot.restore()
            print(f"\nTraining interrupted by the user at epoch {self._epoch + 1}, step {self._step + 1}; "
                  "the model keeps the weights of the last completed step.")
            history.interrupted = True
        cb.on_train_end()
        return history

    def _fit_epochs(self, xs, y, val, cb, snapshot, epochs, initial_epoch, batch_size, shuffle,
                    validation_batch_size):
        n = xs[0].shape[0]
        steps = -(-n // batch_size)
        self._epoch, self._step = initial_epoch, 0
        for epoch in range(initial_epoch, epochs):
            self._epoch, self._step = epoch, 0
            cb.on_epoch_begin(epoch)
            order = utils.rng().permutation(n) if shuffle else None
            total, seen = 0.0, 0
            metric_totals = {}
            for step in range(steps):
                lo, hi = step * batch_size, min((step + 1) * batch_size, n)
                if order is None:
                    xb, yb = [a[lo:hi] for a in xs], y[lo:hi]
                else:
                    xb, yb = self._gather_batch(xs, y, order[lo:hi])
                self._step = step
                cb.on_train_batch_begin(step)
                snapshot.take()
                loss, metrics = self._train_step(xb, yb)
                if math.isfinite(loss) and np.isfinite(self._flat_params).all():
                    snapshot.valid = False  # the step is complete: nothing to undo
                else:
                    snapshot.restore()
                    self.stop_training = True
                    self.history.nan_stop = (epoch, step)
                    warnings.warn(f"Training stopped: the loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                                  "the model keeps the last finite weights. Try a lower learning rate, "
                                  "check the data for extreme values, or use a loss that stays finite.",
                                  RuntimeWarning, stacklevel=3)
                    return
                total += loss * (hi - lo)
                seen += hi - lo
                for k, v in metrics.items():
                    metric_totals[k] = metric_totals.get(k, 0.0) + v * (hi - lo)
                logs = {"loss": total / seen, **{k: v / seen for k, v in metric_totals.items()}}
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if val is not None:
                val_logs = self._evaluate_arrays(val[0], val[1], validation_batch_size or batch_size)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break

    def _gather_batch(self, xs, y, index):
        """x[index] and y[index] into reused buffers (no allocation per step)."""
        bufs = getattr(self, "_batch_buffers", None)
        shapes = [(len(index),) + a.shape[1:] for a in xs] + [(len(index),) + y.shape[1:]]
        if bufs is None or [b.shape for b in bufs] != shapes:
            bufs = self._batch_buffers = [np.empty(s, self.dtype) for s in shapes]
        for a, b in zip(list(xs) + [y], bufs):
            np.take(a, index, axis=0, out=b)
        return bufs[:-1], bufs[-1]

    def _evaluate_arrays(self, xs, y, batch_size):
        n = xs[0].shape[0]
        total, metric_totals = 0.0, {}
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            loss, metrics = self._test_step([a[lo:hi] for a in xs], y[lo:hi])
            total += loss * (hi - lo)
            for k, v in metrics.items():
                metric_totals[k] = metric_totals.get(k, 0.0) + v * (hi - lo)
        return {"loss": total / n, **{k: v / n for k, v in metric_totals.items()}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, **kwargs):
        """The loss (sample-weighted mean over batches, regularization included) on (x, y)."""
        self._require_compiled("evaluate")
        batch_size = self._check_batch_size(batch_size)
        xs, y = self._prepare_xy(x, y, "evaluate")
        logs = self._evaluate_arrays(xs, y, batch_size)
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def predict(self, x, batch_size=None, verbose="auto", **kwargs):
        """The model output for every sample of x, computed in batches. Returns a new array."""
        batch_size = self._check_batch_size(batch_size)
        xs = self._prepare_x(x, "x")
        n = xs[0].shape[0]
        out = np.empty((n,) + tuple(self.outputs[0].shape[1:]), self.dtype)
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            batch = [a[lo:hi] for a in xs]
            out[lo:hi] = self.forward(batch if len(batch) > 1 else batch[0], training=False)
        return out

    # --- weights files -------------------------------------------------------------------------

    def save_weights(self, filepath, overwrite=True):
        """Write every parameter to an .npz file (keys 'layer/param'), atomically."""
        filepath = os.fspath(filepath)
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{filepath} exists and overwrite=False")
        arrays = {f"{layer.name}/{n}": p for layer in self.layers for n, p in layer.params.items()}
        arrays["__order__"] = np.array(list(arrays))
        atomic_write(filepath, lambda f: np.savez(f, **arrays))

    def save(self, filepath, overwrite=True, **kwargs):
        """Write the whole model (architecture, weights, optimizer state) to one file; see autoenc.saving."""
        from autoenc import saving  # saving imports the models package
        saving.save_model(self, filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath):
        """Read parameters written by save_weights (matched by position, shapes checked), or from a
        Keras ``.weights.h5`` / ``.keras`` file of the same architecture (needs h5py)."""
        from autoenc.datasets._formats import read_npz

        filepath = os.fspath(filepath)
        if not os.path.exists(filepath):
            raise FileNotFoundError(f"No weights file at {filepath}")
        if filepath.endswith((".h5", ".keras")):
            from autoenc.keras_files import load_keras_weights
            return load_keras_weights(self, filepath)
        try:
            arrays = read_npz(filepath)
        except ValueError as e:
            raise ValueError(f"{filepath} is not a readable autoenc weights file: {e}") from None
        if "__order__" not in arrays or arrays["__order__"].dtype.kind != "U":
            raise ValueError(f"{filepath} is not an autoenc weights file (it has no '__order__' entry; "
                             f"it holds {sorted(arrays)})")
        order = [str(k) for k in arrays["__order__"]]
        if set(order) - set(arrays):
            raise ValueError(f"{filepath} lists weights {sorted(set(order) - set(arrays))} that it does not hold")
        weights = [arrays[k] for k in order]
        self.set_weights(weights)


class _StepSnapshot:
    """A copy of the parameters and optimizer state before a step, to go back to when the step is
    interrupted or produces NaN. Buffers are allocated once and refilled every step."""

    def __init__(self, model):
        self.model = model
        self.params = None
        self.valid = False

    def take(self):
        m = self.model
        if self.params is None or self.params.shape != m._flat_params.shape:
            self.params = np.empty_like(m._flat_params)
        np.copyto(self.params, m._flat_params)
        opt = m.optimizer
        self.iterations = opt.iterations
        slots = opt._slots or []
        if not hasattr(self, "slots") or len(self.slots) != len(slots) or any(
                set(a) != set(b) or any(a[k].shape != b[k].shape for k in a) for a, b in zip(self.slots, slots)):
            self.slots = [{k: np.empty_like(v) for k, v in s.items()} for s in slots]
        for saved, live in zip(self.slots, slots):
            for k, v in live.items():
                np.copyto(saved[k], v)
        self.valid = True

    def restore(self):
        """Undo the step under way, if any."""
        if not self.valid:
            return
        m = self.model
        np.copyto(m._flat_params, self.params)
        m.optimizer.iterations = self.iterations
        for saved, live in zip(self.slots, m.optimizer._slots or []):
            for k, v in saved.items():
                np.copyto(live[k], v)
