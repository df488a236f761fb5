"""A training step in parts: the batch cut into parts of a few samples, each part's forward and
backward pass run by one thread on its own copy of the model, the parts' gradients added at the end.

Run as one batch (Model.train_step's plain path), a step is about 30 kernel calls, and each one is a
parallel region that splits its samples between the threads and waits for the slowest. On 2 cores
that gave 1.17x one thread's speed (seed model, batch 256, Zen 4), while two separate one-thread
processes each trained at full speed. Here each thread instead runs whole forward and backward passes
on one part after another (as predict does, models/inference.py), so nothing waits between the layers,
and a thread that the OS keeps waiting takes fewer parts.

The parts are cut by the batch size only (:func:`part_size`), never by the number of threads, and
their gradients are added in a fixed order (the last part's, then the others' in order): a step
gives the same bits on one thread or on several. Each sample's output and dL/dy are the plain path's,
bit for bit (each part's dL/dy is scaled by the whole batch's size); the loss is the mean of the
parts' means weighted by their sizes (the batch mean up to rounding); the weight gradients are sums
over the parts of sums over their samples, the same numbers up to rounding. After the step the layers' ``grads`` are the whole batch's, and ``layer_output`` joins
the parts' outputs into the batch's (as callbacks such as monitors.CollapseMonitor read them);
``logits`` is the last part's.

A step runs so when every layer computes each sample on its own (no BatchNormalization, whose
statistics are the batch's, no Dropout, whose draws must stay in order), no weight has a regularizer
(its gradient would be added once per part), the model has one output and its loss is one of
mean_squared_error, mean_absolute_error and binary_crossentropy (:func:`applies`); else the batch
runs as one.
"""
import math
import threading

import numpy as np

from autoenc import losses, threads
from autoenc.kernels.workspace import Workspace
from autoenc.models import inference

# a batch is cut into this many parts where it allows parts of at least MIN_PART samples: enough for
# two threads to share (the model's thread takes the last part first, so neither waits long at the
# end), few enough that a part's Python glue (a few hundred microseconds) stays small beside its
# kernels. Seed model, 2 threads, against the plain step: 4 parts of 64 0.82-0.90x, 8 of 32 0.88-0.97x.
PARTS = 4
MIN_PART = 8
_LOSSES = (losses.MeanSquaredError, losses.MeanAbsoluteError, losses.BinaryCrossentropy)


def applies(model, x, y):
    """Whether model.train_step runs the batch (x, y) in parts (see the module's docstring)."""
    from autoenc.layers.dropout import Dropout
    from autoenc.layers.normalization import BatchNormalization
    if y is None or not isinstance(y, np.ndarray) or len(model.outputs) != 1 or type(model.loss) not in _LOSSES:
        return False
    if part_size(model, y.shape[0]) >= y.shape[0] or not inference.supported(model):
        return False
    if not all(inference.runs_models_own(m, "backward") for m in inference._models(model)):
        return False
    return not any(isinstance(layer, (Dropout, BatchNormalization)) or layer._regularizers
                   for layer in model.flat_layers())


def part_size(model, n):
    """Samples per part of a batch of n: n / PARTS, rounded up, and at least MIN_PART."""
    return max(MIN_PART, math.ceil(n / PARTS))


def _own_grads(rep, model):
    """Give replica ``rep`` gradient arrays of its own, laid out as the model's flat gradient buffer
    (a replica shares every array of the model, its gradients too). Returns the flat buffer."""
    flat = rep.__dict__.get("_part_flat_grads")
    if flat is not None and flat.shape == model._flat_grads.shape:
        return flat
    flat = np.zeros_like(model._flat_grads)
    offset = 0
    layers = dict(zip(map(id, model.flat_layers()), rep.flat_layers()))
    for layer, name in model._param_refs:
        g = layer.grads[name]
        layers[id(layer)].grads[name] = flat[offset:offset + g.size].reshape(g.shape)
        offset += g.size
    rep.__dict__["_part_flat_grads"] = flat
    return flat


def _workspace(model):
    """The work arrays of a step in parts on ``model`` or a replica (not copied into a replica)."""
    return model.__dict__.setdefault("_part_workspace", Workspace())


def train_step(model, x, y):
    """Model.train_step on the batch (x, y) in parts: the logs of the batch, the optimizer updated once
    from the sum of the parts' gradients. x: the input array (a list for several inputs), y: the
    targets, shaped like the output; the model compiled, its flat parameters in place.

    Part i runs on a model of its own: the last on the model, the others on replicas of it
    (inference.replicas), each with gradient arrays of its own, whichever thread takes the part (the
    calling thread takes the last first). So the work arrays do not depend on the thread count, and
    after the step each part's forward pass is still in its model: Model.layer_output joins them."""
    xs = x if isinstance(x, list) else [x]
    n = y.shape[0]
    part = part_size(model, n)
    starts = list(range(0, n, part))
    models = inference.replicas(model, len(starts))
    models = models[1:] + models[:1]       # part i's model: the model itself runs the last part
    flats = [_own_grads(m, model) for m in models[:-1]] + [model._flat_grads]
    # the batch's output, for the metrics
    out = _workspace(model).array("output", y.shape, y.dtype) if model.metrics else None
    from_logits = model._loss_takes_logits()
    part_loss = [0.0] * len(starts)

    def run_part(i):
        """Part i's forward and backward pass: its loss (a sum) into part_loss[i], its gradients into
        flats[i], its output into out (if there are metrics)."""
        m = models[i]
        a, b = starts[i], min(starts[i] + part, n)
        y_pred = m.forward([v[a:b] for v in xs] if len(xs) > 1 else xs[0][a:b], training=True)
        if out is not None:
            out[a:b] = y_pred
        dy = _workspace(m).array("dy", y_pred.shape, y_pred.dtype)
        if from_logits:   # the batch loss's gradient: each part's scaled by the whole batch's size
            loss, _ = model.loss.value_and_gradient_from_logits(y[a:b], m.output_layer.logits, out=dy, size=y.size)
        else:
            loss, _ = model.loss.value_and_gradient(y[a:b], y_pred, out=dy, size=y.size)
        part_loss[i] = float(loss) * dy.size   # the part's sum, in float64
        m.backward(dy, from_logits=from_logits, input_gradients=False)

    taken = threading.Lock()
    nxt = [0]

    def run(first, last):
        if first == 0:
            run_part(len(starts) - 1)
        while True:
            with taken:
                i = nxt[0]
                if i >= len(starts) - 1:
                    return
                nxt[0] += 1
            run_part(i)

    threads.parallel_for(run, inference.thread_count(len(starts)))
    grads = model._flat_grads
    for i in range(len(starts) - 1):   # the last part's, then the others' in order, whatever thread ran them
        grads += flats[i]
    model.__dict__["_part_models"] = models[:-1]   # for Model.layer_output: the parts before the model's
    loss = math.fsum(part_loss) / y.size + model._regularization_loss()   # the batch mean, from the parts'
    logs = {"loss": loss, **{name: float(m(y, out)) for name, m in model.metrics}}
    model.apply_gradients()
    return logs
