"""predict and evaluate on several threads: the samples in small parts, one copy of the model per thread.

A forward pass over a batch of 256 runs every layer over the whole batch, one layer after the other:
each layer's output (13 MB for the seed's first convolution) leaves the caches before the next layer
reads it, and every layer is a parallel region that waits for its slowest thread. ``predict`` instead
cuts its samples into parts small enough for a layer's output to stay in a core's caches (twice
its L2: :func:`part_size`), and each thread runs the whole network on one part after another, with nothing
to wait for between the layers. Each thread needs its own work arrays, so it runs a *replica*: a
copy of the model's layers, nodes and kernel objects that shares every array with the model (the
parameters first) but has fresh, empty work arrays (:func:`replica`).

The parts do not depend on the number of threads, so neither do the results: predict gives the
same bits on one thread or on several. ``evaluate`` (and fit's validation) computes its outputs, and
the logits its loss may read, the same way, then each batch's loss and metrics from them as
``test_step`` would. Only models made of autoenc's own layers, whose forward pass in inference keeps
no state, run this way (:func:`supported`); any other model (one with a Sampling layer, whose draws
must stay in order, or with a layer defined elsewhere) predicts batch by batch as before, and a
model with its own ``test_step`` evaluates with it.
"""
import copy
import glob
import math
import os
import threading

import numpy as np

from autoenc import threads


def core_cache_bytes(root="/sys/devices/system/cpu/cpu0/cache"):
    """The size in bytes of one core's L2 cache as Linux reports it (``root``: the first CPU's cache
    directory in sysfs), or None where it cannot be read (another system, a container without sysfs)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

    def read(index, name):
        with open(os.path.join(index, name)) as f:
            return f.read().strip()
    try:
        for index in sorted(glob.glob(os.path.join(root, "index*"))):
            level, kind, size = (read(index, name) for name in ("level", "type", "size"))
            if level == "2" and kind in ("Unified", "Data"):
                n = int(size[:-1]) * units[size[-1].upper()] if size[-1:].upper() in units else int(size)
                return n if n > 0 else None
    except (OSError, ValueError):
        return None
    return None


def part_bytes(cache):
    """The bytes of a layer output a part may hold for a core cache of ``cache`` bytes: twice the cache,
    2 MB where it is not known (None), and within 0.5 to 4 MB."""
    return min(max(2 * cache if cache else 2 << 20, 512 << 10), 4 << 20)


# the largest layer output of a part: twice a core's L2. Since a forward pass in inference keeps no
# padded copy of a layer's input (kernels/convolution.py), a layer call touches its input and output
# only, and larger parts cost less Python per sample. On a Zen 4 host (1 MB L2 a core, 2026-12-04),
# against parts of 1 MB on 2 threads: 2 MB 0.93x predict's time for the seed model, 3 MB 0.94x,
# 4 MB 0.94-0.97x; wide64 2 MB 0.98x, 4 MB 1.00x; on 1 thread 0.97-1.00x. (Before that change, parts of
# one L2 had been the faster: 0.93x.) A Zen 5 host reports 1 MB a core as well (2 MB parts): there, 2 MB
# 0.88x the time of 1 MB for the seed, 4 MB 0.98x; wide64 2 MB 1.00x, 4 MB 1.07x.
PART_BYTES = part_bytes(core_cache_bytes())
# copy.deepcopy, which makes a replica, recurses along the graph: a deeper model predicts batch by batch
MAX_NODES = 200
# predict and evaluate take the compute lock for this many parts at a time, then let other callers
# have it. Each such call of forward_parts ends with a thread waiting for the others' last parts: on the
# seed model with 2 threads, 64 parts a call ran in 0.93-0.95x the time of 16, and 4 parts in 1.24x
# (2026-12-03, Zen 4 host). 64 parts of the seed model are 2,624 samples, about 0.1 s.
PARTS_PER_CALL = 64


def _models(model):
    """The model and every sub-model in it, recursively."""
    out, stack = [], [model]
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(layer for layer in m.layers if hasattr(layer, "_nodes"))
    return out


def supported(model):
    """Whether ``model`` can predict in parts on replicas: every layer is one of autoenc's own
    (autoenc.layers, but Sampling, which draws random numbers in order and keeps them), with no method
    replaced on it, its kernel objects or a model in it, and no activity regularizer (its penalty, part of evaluate's
    loss, is the batch's); every model in it runs the graph forward pass of autoenc's Model; and the
    graph has at most MAX_NODES layer calls."""
    from autoenc.layers.sampling import Sampling
    if not getattr(model, "built", False):
        return False
    models = _models(model)
    if sum(len(m._nodes) for m in models) > MAX_NODES:
        return False
    for m in models:
        if not runs_models_own(m, "forward") or _wrapped(m):
            return False
    for layer in model.flat_layers():
        if (isinstance(layer, Sampling) or not type(layer).__module__.startswith("autoenc.layers.")
                or layer.activity_regularizer is not None):
            return False
        kernels = [v for v in vars(layer).values() if type(v).__module__.startswith("autoenc.kernels.")]
        if any(_wrapped(o) for o in [layer] + kernels):
            return False
    return True


def runs_models_own(model, name):
    """Whether ``model``'s class runs autoenc's Model.<name> itself (``name``: "forward" or "backward"),
    not an override; checked by the method's module and name, so that this module imports no model."""
    method = getattr(type(model), name)
    return (method.__module__, method.__qualname__) == ("autoenc.models.model", f"Model.{name}")


def _wrapped(obj):
    """Whether a method of ``obj`` is replaced on the object itself (a hook that records the calls, as
    examples/watch_backprop.py sets): a replica would call it, on the original object."""
    return any(callable(v) and hasattr(type(obj), k) for k, v in vars(obj).items())


def part_size(model, batch_size):
    """Samples per part: as many as keep the largest layer output of a part within PART_BYTES (at
    least 1), at most ``batch_size``."""
    largest = 1
    for m in _models(model):
        for node in m._nodes:
            for t in node.output if isinstance(node.output, list) else [node.output]:
                largest = max(largest, math.prod(d for d in t.shape[1:] if d) * np.dtype(t.dtype).itemsize)
    return max(1, min(batch_size, PART_BYTES // largest))


def replica(model):
    """A copy of ``model`` for inference on another thread: its layers, models, nodes, tensors and
    kernel objects are copied, and the lists, tuples and dicts that hold them; every other object is
    shared (every array: the parameters and moving statistics; the optimizer, loss and callbacks);
    work arrays (``Workspace``, a layer's ``_buffers``) start empty."""
    from autoenc.kernels.workspace import Workspace
    from autoenc.layers.base import KerasTensor, Layer, Node
    structure = (Layer, Node, KerasTensor)
    memo, seen, stack = {}, set(), [model]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, Workspace):
            memo[id(o)] = Workspace()
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, structure) or hasattr(o, "_nodes") or type(o).__module__.startswith("autoenc.kernels."):
            if isinstance(o, Layer):
                memo[id(o._buffers)] = {}
            stack.extend(vars(o).values())
        else:
            memo[id(o)] = o
    # the replicas, and the buffers of a training step in parts (parallel_step.py), are not copied
    kept = {k: model.__dict__.pop(k) for k in list(model.__dict__) if k == "_replicas" or k.startswith("_part_")}
    try:
        return copy.deepcopy(model, memo)
    finally:
        model.__dict__.update(kept)


def _signature(model):
    """What a replica was copied from: the model's layers and parameter arrays, by identity."""
    return tuple(id(x) for layer in model.flat_layers() for x in (layer, *layer.params.values()))


def replicas(model, count):
    """``count`` models to run at the same time: ``model`` itself, then replicas kept on the model
    (made again when its layers or parameter arrays are no longer those they were copied from)."""
    kept = model.__dict__.get("_replicas")
    sig = _signature(model)
    if kept is None or kept[0] != sig:
        kept = model.__dict__["_replicas"] = (sig, [])
    reps = kept[1]
    while len(reps) < count - 1:
        reps.append(replica(model))
    return [model] + reps[:count - 1]


def thread_count(parts):
    """Threads to run ``parts`` parts on: the calling thread's Numba count, at most one per part (one
    under NUMBA_DISABLE_JIT, whose Python kernels hold the GIL)."""
    import numba
    return 1 if numba.config.DISABLE_JIT else max(1, min(numba.get_num_threads(), parts))


def forward_parts(model, xs, outs, lo, hi, part, logits=None, origin=0):
    """outs[k][lo - origin:hi - origin] = the model's output k for the samples xs[..][lo:hi], in parts
    of ``part`` samples from ``lo`` (part i: lo + i*part onwards), on as many threads as the calling
    thread's Numba count and the parts allow: each thread runs a replica of the model on the next
    part not yet taken. ``logits``, if given (shaped like outs[0]), gets the output layer's
    pre-activation the same way. The model itself runs the last part, so that what it keeps of its
    last forward pass (``layer_output``, ``logits``) is that part's, whatever the thread count."""
    starts = list(range(lo, hi, part))
    count = thread_count(len(starts))
    models = replicas(model, count) if count > 1 else [model]
    taken = threading.Lock()
    nxt = [0]

    def run(first, last):
        for k in range(first, last):
            m = models[k]
            while True:
                with taken:
                    i = nxt[0]
                    if i >= len(starts) or (k > 0 and i == len(starts) - 1):   # the last is the model's
                        break
                    nxt[0] += 1
                a = starts[i]
                b = min(a + part, hi)
                batch = [x[a:b] for x in xs]
                ys = m.forward(batch if len(batch) > 1 else batch[0], training=False)
                for out, y in zip(outs, ys if len(outs) > 1 else [ys]):
                    out[a - origin:b - origin] = y
                if logits is not None:
                    logits[a - origin:b - origin] = m.output_layer.logits

    threads.parallel_for(run, count)
