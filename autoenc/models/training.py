"""Training: compile, fit, evaluate, predict and the single-batch methods, as Keras spells them.

One training step (``train_step``, which a subclass may override, as in Keras) is
    y_pred = forward(x)              every layer, in graph order
    L      = loss(y, y_pred) + sum of regularization penalties
    dy     = dL/dy_pred               (or dL/dz from the logits, see below)
    backward(dy)                      every layer fills its grads, in reverse order
    apply_gradients()                 one optimizer update of the flat parameter buffer

When the loss is binary crossentropy and the output layer ends in a sigmoid, the loss and its
gradient are computed from the pre-activation z (the output layer's ``logits``), as Keras'
TensorFlow backend does: stable when the sigmoid saturates. See docs/training_step.md.
"""
import math
import threading
import warnings

import numpy as np

from autoenc import callbacks as callbacks_module
from autoenc import losses as losses_module
from autoenc import metrics as metrics_module
from autoenc import optimizers as optimizers_module
from autoenc import threads, utils, warmup
from autoenc.kernels.workspace import aligned
from autoenc.models import inference, parallel_step


_FIT_FLAG_LOCK = threading.Lock()   # makes the check-and-set of a model's ``_fitting`` atomic


class NotCompiledError(ValueError, RuntimeError):
    """Training or evaluating a model that has not been compiled."""


class GradientTape:
    """Not supported: autoenc computes gradients with each layer's own backward, not by recording
    operations. Here so that code written for ``tf.GradientTape`` fails with a clear message."""

    def __init__(self, *args, **kwargs):
        raise TypeError("autoenc has no GradientTape: gradients come from each layer's backward. In a custom "
                        "train_step(self, data), run y_pred = self(x, training=True); loss, dy, "
                        "from_logits = self.compute_loss_and_gradient(y, y_pred); self.backward(dy, "
                        "from_logits=from_logits); self.apply_gradients(); return {'loss': loss}; see docs/custom_layer.md")


def _metric_name(identifier):
    return identifier if isinstance(identifier, str) else getattr(identifier, "__name__", type(identifier).__name__)


class Trainer:
    """The training half of Model (mixed in): needs ``forward``, ``backward``, ``layers``, ``inputs``,
    ``outputs`` and ``output_layer``."""

    def __init__(self):
        self.optimizer = None
        self.loss = None
        self.metrics = []             # (name, loss function) pairs, from compile
        self.compiled = False
        self.history = None
        self._flat_params = None      # every trainable parameter, one buffer (see _ensure_flat_parameters)
        self._flat_grads = None
        self._param_refs = []
        self._loss_grad = None        # dL/dy_pred, reused between steps
        self._batch_buffers = None    # shuffled batches are gathered here
        self._epoch, self._step = 0, 0   # where fit is, for the interrupt message
        self._fitting = False         # a fit is running (a second one, from another thread, is refused)

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
            raise ValueError("loss_weights is not supported: a compiled loss applies to a model of one output")
        if getattr(self, "built", False) and len(self.outputs) > 1:
            raise ValueError(f"Model {self.name!r} has {len(self.outputs)} outputs: a compiled loss needs one. Train "
                             "it inside a model of one output, or override train_step (as autoenc.models.VAE does)")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss)
        self.metrics = [(_metric_name(m), metrics_module.get(m)) for m in (metrics or [])]
        self.compiled = True

    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"You must call compile(optimizer, loss) before {what}()")

    # --- the flat parameter buffer -------------------------------------------------------------

    def _ensure_flat_parameters(self):
        """Keep every trainable parameter (and its gradient) as a view into one flat buffer, so that
        the optimizer updates all of them in one call. Rebuilt if a layer's arrays were replaced."""
        # each layer once, sub-models expanded: a layer reached through two sub-models is trained once
        refs = [(layer, name) for layer in self.flat_layers() for name in layer.trainable_names]
        self.optimizer.variable_sizes = [layer.params[n].size for layer, n in refs]  # for clipnorm, per variable
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
        if a.dtype.kind in "iub" and a.size and a.max() > 1 and self._output_is_sigmoid():
            warnings.warn(f"{what} holds integers up to {a.max()} (dtype {a.dtype}) but the model's output is a "
                          "sigmoid in [0, 1]: scale the data first, e.g. x.astype('float32') / 255", stacklevel=4)
        # converted once here (uint8 and float64 alike), never per step
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{what} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")
        return a

    def _output_is_sigmoid(self):
        """Whether the output layer ends in a sigmoid (outputs in [0, 1])."""
        return getattr(getattr(self.output_layer, "activation", None), "name", None) == "sigmoid"

    def _require_built_for_data(self, x):
        if not self.built:   # a Sequential without an input shape, or a subclassed model (traced here)
            if isinstance(x, (list, tuple)) and len(x) > 1 and all(np.ndim(a) > 1 for a in x):
                self.build([(None,) + np.shape(a)[1:] for a in x])
            else:
                first = x[0] if isinstance(x, (list, tuple)) else x
                self.build((None,) + np.shape(first)[1:])

    def _prepare_xy(self, x, y, what="fit"):
        """The inputs (a list of arrays) and targets, checked and converted. y may be None only for
        a model whose own train_step / test_step (the one ``what`` runs) takes x alone."""
        xs = self._prepare_x(x, "x")
        if y is None:
            step = Trainer.test_step if what in ("evaluate", "test_on_batch", "validation") else Trainer.train_step
            if getattr(type(self), step.__name__) is not step:
                return xs, None   # a custom step on x alone, as a VAE's
            raise ValueError(f"{what} needs targets y (for an autoencoder, y = x)")
        if len(self.outputs) > 1:
            raise ValueError(f"Model {self.name!r} has {len(self.outputs)} outputs: {what} with targets y needs a "
                             "model of one output, or a train_step / test_step of its own")
        # y is x (an autoencoder's fit(x, x)): converted once, one array for both
        y = self._prepare_array(xs[0] if y is x and len(xs) == 1 else y, self.outputs[0].shape, "y")
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

    def _loss_takes_logits(self):
        """Whether the loss is taken from the output layer's pre-activation z (binary crossentropy
        after a sigmoid)."""
        return (isinstance(self.loss, losses_module.BinaryCrossentropy) and not self.loss.from_logits
                and self._output_is_sigmoid())

    def _loss_logits(self):
        """The output layer's pre-activation z of the last forward pass when the loss is to be taken
        from it (binary crossentropy after a sigmoid), else None."""
        return self.output_layer.logits if self._loss_takes_logits() else None

    def compute_loss(self, x=None, y=None, y_pred=None):
        """The loss of the last forward pass, whose output was ``y_pred``, against targets ``y``: the
        compiled loss plus every regularization penalty, a float (Keras' Model.compute_loss; ``x`` is
        not used). y, y_pred: arrays of the output's shape (batch, ...)."""
        return self._loss_of(y, y_pred, self._loss_logits())

    def _loss_of(self, y, y_pred, z):
        """compute_loss for the output y_pred, taken from its pre-activation z unless z is None."""
        loss = self.loss.value(y, y_pred) if z is None else self.loss.value_from_logits(y, z)
        return float(loss) + self._regularization_loss()

    def compute_loss_and_gradient(self, y, y_pred):
        """(loss, dy, from_logits) for the last forward pass, whose output was ``y_pred``: the loss as
        ``compute_loss`` gives it, and dy = dL/dy_pred, or dL/dz for the output layer's logits z when
        ``from_logits`` (pass it on to ``backward``). dy is a buffer kept between steps."""
        grad = self._loss_grad
        if grad is None or grad.shape != y_pred.shape or grad.dtype != y_pred.dtype:
            grad = self._loss_grad = np.empty_like(y_pred)
        z = self._loss_logits()
        if z is None:
            loss, grad = self.loss.value_and_gradient(y, y_pred, out=grad)
        else:
            loss, grad = self.loss.value_and_gradient_from_logits(y, z, out=grad)
        return float(loss) + self._regularization_loss(), grad, z is not None

    def _regularization_loss(self):
        return sum(layer.regularization_loss() for layer in self.flat_layers())

    def apply_gradients(self):
        """One optimizer update of every trainable parameter from the gradients that ``backward``
        left in the layers' ``grads`` (all of them at once: they share one flat buffer)."""
        self.optimizer.apply([self._flat_grads], [self._flat_params])

    def train_step(self, data):
        """One forward, backward and update on one batch, as Keras' ``Model.train_step``; override it
        for a custom step (fit, train_on_batch call it once per batch).

        data : the tuple (x, y) of the batch, checked and in the model's dtype: x the input array of
            shape (batch, *input_shape) (a list of arrays for a model of several inputs), y the
            targets, shaped like the output. A model that overrides train_step may be fit on x alone
            (``fit(x)``, as a VAE is): ``data`` is then x itself, as in Keras.
        Returns the logs: {"loss": the batch loss (regularization included), metric name: value, ...},
        floats; fit averages them over the epoch, weighted by batch size. A NaN or Inf "loss" (or
        parameters) stops fit with the weights of a step whose loss was finite.
        """
        x, y = data
        if parallel_step.applies(self, x, y):   # the batch in parts, on a copy of the model per thread
            return parallel_step.train_step(self, x, y)
        y_pred = self.forward(x, training=True)
        loss, dy, from_logits = self.compute_loss_and_gradient(y, y_pred)
        logs = {"loss": loss, **{name: float(m(y, y_pred)) for name, m in self.metrics}}
        self.backward(dy, from_logits=from_logits, input_gradients=False)
        self.apply_gradients()
        return logs

    def test_step(self, data):
        """The logs of one batch without updating (Keras' ``Model.test_step``): ``data`` and the
        returned dict as for ``train_step``."""
        x, y = data
        y_pred = self.forward(x, training=False)
        return {"loss": self.compute_loss(x, y, y_pred), **{name: float(m(y, y_pred)) for name, m in self.metrics}}

    @staticmethod
    def _step_data(xs, y):
        """The ``data`` a step receives: (x, y), or x alone when there are no targets (as Keras packs it)."""
        x = xs if len(xs) > 1 else xs[0]
        return x if y is None else (x, y)

    @staticmethod
    def _batch_result(logs):
        return next(iter(logs.values())) if len(logs) == 1 else list(logs.values())

    def _tuned_step(self, loop):
        """``run(fn, samples)``: fn() on one or on all threads, as the model's tuner for ``loop``
        ('train', 'test' or 'predict') decides from its step times (threads.ThreadTuner)."""
        return threads.tuned_threads(threads.model_tuner(self, loop)).run

    def train_on_batch(self, x, y=None):
        """One update on one batch. Returns the loss before the update (regularization included)."""
        self._require_compiled("train_on_batch")
        xs, y = self._prepare_xy(x, y, "train_on_batch")
        self._ensure_flat_parameters()
        data = self._step_data(xs, y)
        warmup.start(self)   # on a cold Numba cache: the weight-gradient kernel compiles in a second process
        with utils.compute_lock:
            step = self._tuned_step("train")
            return self._batch_result(self._checked_logs(step(lambda: self.train_step(data), xs[0].shape[0])))

    def test_on_batch(self, x, y=None):
        """The loss on one batch, without updating."""
        self._require_compiled("test_on_batch")
        xs, y = self._prepare_xy(x, y, "test_on_batch")
        data = self._step_data(xs, y)
        with utils.compute_lock:
            step = self._tuned_step("test")
            return self._batch_result(step(lambda: self.test_step(data), xs[0].shape[0]))

    def predict_on_batch(self, x):
        """The model output for one batch (a new array; a list of them for several outputs)."""
        xs = self._prepare_x(x, "x")
        x = xs if len(xs) > 1 else xs[0]
        if inference.supported(self):   # in parts, on a replica per thread (see predict)
            n = xs[0].shape[0]
            outs = self._new_outputs(n)
            with utils.compute_lock:
                inference.forward_parts(self, xs, outs, 0, n, inference.part_size(self, n))
            return outs[0] if len(outs) == 1 else outs
        with utils.compute_lock:
            step = self._tuned_step("predict")
            y = step(lambda: self.forward(x, training=False), xs[0].shape[0])
            return [np.array(v, copy=True) for v in y] if isinstance(y, list) else np.array(y, copy=True)

    # --- loops ---------------------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            validation_batch_size=None, **kwargs):
        """Train for ``epochs`` passes over (x, y) in batches of ``batch_size`` (the last one may be
        smaller). Returns a History whose ``history['loss']`` holds each epoch's sample-weighted
        mean batch loss, and ``history['val_loss']`` the validation loss after each epoch.

        shuffle : True, a new order of the samples every epoch; False, none; 'batch', as Keras 3: the
            batches x[0:b], x[b:2b], ... in order, the samples shuffled within each.
        """
        unsupported = {k for k, v in kwargs.items() if v is not None}
        if unsupported:
            raise TypeError(f"fit got unsupported keyword argument(s): {sorted(unsupported)}")
        self._require_compiled("fit")
        batch_size = self._check_batch_size(batch_size)
        if isinstance(shuffle, str) and shuffle != "batch":
            raise ValueError(f"shuffle must be True, False or 'batch' (as in Keras), got {shuffle!r}")
        for name, value in (("epochs", epochs), ("initial_epoch", initial_epoch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        xs, y = self._prepare_xy(x, y)
        if not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None:
            if isinstance(validation_data, np.ndarray) or (isinstance(validation_data, tuple)
                                                           and len(validation_data) == 1):
                # x_val alone (or (x_val,), as Keras unpacks it): for a model whose test_step takes x alone
                validation_data = (validation_data if isinstance(validation_data, np.ndarray)
                                   else validation_data[0], None)
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            val = self._prepare_xy(validation_data[0], validation_data[1], "validation")
        elif validation_split:
            # as Keras: the last fraction of the data, taken before shuffling
            split = int(xs[0].shape[0] * (1 - validation_split))
            if split == 0 or split == xs[0].shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no data to train or validate on")
            val = ([a[split:] for a in xs], None if y is None else y[split:])
            xs, y = [a[:split] for a in xs], None if y is None else y[:split]
        else:
            val = None
        with _FIT_FLAG_LOCK:
            if self._fitting:
                raise RuntimeError(f"fit is already running on model {self.name!r} (in another thread): two fits "
                                   "of one model would mix their steps; wait for the first, or train a copy")
            self._fitting = True
        try:
            return self._fit(xs, y, val, callbacks, verbose, epochs, initial_epoch, batch_size, shuffle,
                             validation_batch_size)
        finally:
            self._fitting = False

    def _fit(self, xs, y, val, callbacks, verbose, epochs, initial_epoch, batch_size, shuffle, validation_batch_size):
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
        self.history = history
        cb.on_train_begin()
        snapshot = _StepSnapshot(self)
        self._epoch, self._step = initial_epoch, 0
        self.stop_training = False
        warmup.start(self)   # on a cold Numba cache: the weight-gradient kernel compiles in a second process
        try:
            # each step on all threads or on one, whichever is faster now (the results are the same);
            # the tuner is kept on the model across fits and train_on_batch calls
            with threads.tuned_threads(threads.model_tuner(self, "train")) as self._run_step:
                self._fit_epochs(xs, y, val, cb, snapshot, epochs, initial_epoch, batch_size, steps, shuffle,
                                 validation_batch_size)
        except KeyboardInterrupt:
            snapshot.restore()
            print(f"\nTraining interrupted by the user at epoch {self._epoch + 1}, step {self._step + 1}; "
                  "the model keeps the weights of the last completed step.")
            history.interrupted = True
        cb.on_train_end()
        return history

    def _fit_epochs(self, xs, y, val, cb, snapshot, epochs, initial_epoch, batch_size, steps, shuffle,
                    validation_batch_size):
        n = xs[0].shape[0]
        within_batches = isinstance(shuffle, str)   # 'batch' (fit refused any other string)
        for epoch in range(initial_epoch, epochs):
            self._epoch, self._step = epoch, 0
            cb.on_epoch_begin(epoch)
            order = utils.rng().permutation(n) if shuffle and not within_batches else None
            totals, seen = {}, 0
            for step in range(steps):
                lo, hi = step * batch_size, min((step + 1) * batch_size, n)
                if within_batches:
                    xb, yb = self._gather_batch(xs, y, lo + utils.rng().permutation(hi - lo))
                elif order is None:
                    xb, yb = [a[lo:hi] for a in xs], None if y is None else y[lo:hi]
                else:
                    xb, yb = self._gather_batch(xs, y, order[lo:hi])
                self._step = step
                cb.on_train_batch_begin(step)
                with utils.compute_lock:   # one step at a time; other threads' predict calls wait
                    snapshot.take(epoch, step)
                    data = self._step_data(xb, yb)
                    step_logs = self._checked_logs(self._run_step(lambda: self.train_step(data), hi - lo))
                    loss = step_logs.get("loss", 0.0)   # a custom train_step may log other names only
                    finite = math.isfinite(loss) and self._weights_are_finite()
                    if finite:
                        snapshot.done()  # the step is complete, and its loss was finite
                    else:
                        self._stop_on_nan(snapshot, loss, epoch, step)
                if not finite:
                    return
                seen += hi - lo
                for k, v in step_logs.items():
                    totals[k] = totals.get(k, 0.0) + v * (hi - lo)
                logs = {k: v / seen for k, v in totals.items()}
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if val is not None:
                val_logs = self._evaluate_arrays(val[0], val[1], validation_batch_size or batch_size)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break

    def _checked_logs(self, logs):
        """A step's logs as {name: float}: train_step must return a dict (Keras' contract)."""
        if not isinstance(logs, dict):
            raise TypeError(f"{type(self).__name__}.train_step must return a dict of logs such as "
                            f"{{'loss': value}}, got {type(logs).__name__}")
        try:
            return {k: float(v) for k, v in logs.items()}
        except (TypeError, ValueError):
            raise TypeError(f"{type(self).__name__}.train_step must return a dict of numbers, got {logs!r:.200}") from None

    def _gather_batch(self, xs, y, index):
        """x[index] and y[index] into reused buffers (no allocation per step). Where y is one of the
        inputs (an autoencoder) and the model's train_step is autoenc's own, which writes into
        neither, y's batch is that input's: gathered once (one np.take of 70 us a step saved, seed model)."""
        bufs = self._batch_buffers
        own = type(self).train_step is Trainer.train_step
        shared = next((k for k, a in enumerate(xs) if a is y), None) if own else None
        arrays = list(xs) + ([] if y is None or shared is not None else [y])
        shapes = [(len(index),) + a.shape[1:] for a in arrays]
        if bufs is None or [b.shape for b in bufs] != shapes:
            bufs = self._batch_buffers = [aligned(s, self.dtype) for s in shapes]
        for a, b in zip(arrays, bufs):
            np.take(a, index, axis=0, out=b)
        return bufs[:len(xs)], None if y is None else bufs[-1 if shared is None else shared]

    def _evaluate_arrays(self, xs, y, batch_size):
        n = xs[0].shape[0]
        totals = {}

        def add(step_logs, samples):
            for k, v in step_logs.items():
                totals[k] = totals.get(k, 0.0) + v * samples

        if y is not None and type(self).test_step is Trainer.test_step and inference.supported(self):
            # the outputs (and the logits the loss reads) in parts on a replica per thread, as predict
            # computes them, inference.PARTS_PER_CALL parts or more at a time; then each batch's logs from
            # them, as test_step
            part = inference.part_size(self, batch_size)
            size = max(batch_size, inference.PARTS_PER_CALL * part) // batch_size * batch_size   # whole batches
            takes_logits = self._loss_takes_logits()
            for lo in range(0, n, size):
                hi = min(lo + size, n)
                with utils.compute_lock:
                    (y_pred,) = self._new_outputs(hi - lo)
                    z = np.empty_like(y_pred) if takes_logits else None
                    inference.forward_parts(self, xs, [y_pred], lo, hi, part, logits=z, origin=lo)
                    for a in range(0, hi - lo, batch_size):
                        b = min(a + batch_size, hi - lo)
                        yb, pb = y[lo + a:lo + b], y_pred[a:b]
                        add({"loss": self._loss_of(yb, pb, None if z is None else z[a:b]),
                             **{name: float(m(yb, pb)) for name, m in self.metrics}}, b - a)
            return {k: v / n for k, v in totals.items()}
        step = self._tuned_step("test")   # the same batches on 1 or all threads
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            yb = None if y is None else y[lo:hi]
            data = self._step_data([a[lo:hi] for a in xs], yb)
            with utils.compute_lock:
                add(step(lambda: self.test_step(data), hi - lo), hi - lo)
        return {k: v / n for k, v in totals.items()}

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
        """The model output for every sample of x, computed in batches. Returns a new array, or a list
        of arrays (one per output, as Keras) for a model of several outputs."""
        batch_size = self._check_batch_size(batch_size)
        xs = self._prepare_x(x, "x")
        n = xs[0].shape[0]
        outs = self._new_outputs(n)
        if inference.supported(self):
            # parts of a few samples, each run through the whole model by one thread, on a replica of
            # the model per thread, which takes the next part when it is done (models/inference.py):
            # nothing waits for a slow thread but the last part, so there is no thread count to tune.
            # The lock is taken for inference.PARTS_PER_CALL parts at a time, so that other callers get
            # their turn.
            part = inference.part_size(self, batch_size)
            size = max(batch_size, inference.PARTS_PER_CALL * part)
            for lo in range(0, n, size):
                hi = min(lo + size, n)
                with utils.compute_lock:
                    inference.forward_parts(self, xs, outs, lo, hi, part)
            return outs[0] if len(outs) == 1 else outs
        step = self._tuned_step("predict")   # 1 or all threads, kept per model
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            batch = [a[lo:hi] for a in xs]
            with utils.compute_lock:   # the layers' work buffers hold one batch at a time
                ys = step(lambda: self.forward(batch if len(batch) > 1 else batch[0], training=False), hi - lo)
                for out, y in zip(outs, ys if len(outs) > 1 else [ys]):
                    out[lo:hi] = y
        return outs[0] if len(outs) == 1 else outs

    def _new_outputs(self, n):
        """An uninitialised array per model output, for n samples."""
        return [np.empty((n,) + tuple(t.shape[1:]), self.dtype) for t in self.outputs]

    def _weights_are_finite(self):
        """Whether every trainable parameter and every non-trainable weight (moving statistics) is finite."""
        return bool(np.isfinite(self._flat_params).all()) and all(
            np.isfinite(w).all() for w in self.non_trainable_weights)

    def _stop_on_nan(self, snapshot, loss, epoch, step):
        """After a step whose loss or parameters are not finite: go back to the last weights whose
        loss was finite (a finite loss means finite outputs on that batch), stop, and say which."""
        self.stop_training = True
        self.history.nan_stop = (epoch, step)
        where = f"at epoch {epoch + 1}, step {step + 1}"
        what = f"the loss became {loss}" if not math.isfinite(loss) else "the weights became NaN or Inf"
        advice = ("Try a lower learning rate, check the data for extreme values, or use a loss that stays "
                  "finite.")
        if math.isfinite(loss):
            snapshot.restore()   # the weights before this step gave this finite loss
            kept = "the model keeps the last finite weights, those before this step (their loss was finite)."
        elif snapshot.restore_last_finite():
            e, k = snapshot.finite_at
            kept = (f"the model keeps the last finite weights whose loss was finite, those before epoch {e + 1}, "
                    f"step {k + 1} (the weights before this step were finite but gave a loss of {loss}).")
        else:
            snapshot.restore()
            kept = ("the model keeps the last finite weights, but no weights with a finite loss were found: the "
                    "loss was not finite from the first step of this fit, and the model keeps the weights it "
                    "started with.")
        warnings.warn(f"Training stopped: {what} {where}; {kept} {advice}", RuntimeWarning, stacklevel=4)


class _StepSnapshot:
    """Copies of the parameters, the non-trainable weights (BatchNormalization's moving statistics) and
    the optimizer state (``get_state``) before the step under way and before the last step whose loss
    was finite, to go back to when a step is interrupted or produces NaN. Two sets of buffers,
    allocated once and refilled in turn."""

    def __init__(self, model):
        self.model = model
        self._states = [None, None]   # each [params, iterations, slots (None or dicts), non-trainable]
        self._current = 0             # index of the state before the step under way
        self._finite = None           # index of the state before the last step with a finite loss
        self.finite_at = None         # that step's (epoch, step)
        self._at = [None, None]
        self.valid = False            # a step is under way: restore() has something to undo

    def take(self, epoch=None, step=None):
        """Copy the state before a step (into the buffers not holding the last finite state)."""
        k = 0 if self._finite is None else 1 - self._finite
        m, state = self.model, self.model.optimizer.get_state()
        saved = self._states[k]
        slots = state["slots"]
        fixed = m.non_trainable_weights
        if saved is None or saved[0].shape != m._flat_params.shape or not _same_layout(saved[2], slots) or [
                a.shape for a in saved[3]] != [w.shape for w in fixed]:
            saved = self._states[k] = [np.empty_like(m._flat_params), 0,
                                       None if slots is None else [{n: np.empty_like(v) for n, v in s.items()}
                                                                   for s in slots],
                                       [np.empty_like(w) for w in fixed]]
        np.copyto(saved[0], m._flat_params)
        for copy, w in zip(saved[3], fixed):
            np.copyto(copy, w)
        saved[1] = state["iterations"]
        for copy, live in zip(saved[2] or [], slots or []):
            for n, v in live.items():
                np.copyto(copy[n], v)
        self._current, self._at[k], self.valid = k, (epoch, step), True

    def done(self):
        """The step under way completed with a finite loss: its starting state is a finite one."""
        self.valid = False
        self._finite, self.finite_at = self._current, self._at[self._current]

    def restore(self):
        """Undo the step under way, if any."""
        if self.valid:
            self._put(self._states[self._current])

    def restore_last_finite(self):
        """Go back to the state before the last step whose loss was finite. False if there was none."""
        if self._finite is None:
            return False
        self._put(self._states[self._finite])
        return True

    def _put(self, saved):
        m = self.model
        np.copyto(m._flat_params, saved[0])
        for copy, w in zip(saved[3], m.non_trainable_weights):
            np.copyto(w, copy)
        live = m.optimizer.get_state()["slots"]
        if saved[2] is not None and live is not None and _same_layout(saved[2], live):
            for copy, slot in zip(saved[2], live):
                for n, v in copy.items():
                    np.copyto(slot[n], v)
        else:   # no slots yet when the state was taken: the optimizer builds fresh ones
            live = None if saved[2] is None else [{n: v.copy() for n, v in s.items()} for s in saved[2]]
        m.optimizer.set_state({"iterations": saved[1], "slots": live})
        self.valid = False


def _same_layout(a, b):
    """Whether two optimizer slot lists hold arrays of the same names and shapes (None: no slots)."""
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(set(x) == set(y) and all(x[n].shape == y[n].shape for n in x)
                                    for x, y in zip(a, b))
