"""The functional Model: a graph of layer calls from symbolic inputs to one output or several.

``Model(inputs, outputs)`` walks back from ``outputs`` through the nodes that the layer calls
recorded, orders them so every node comes after its inputs, and from then on runs ``forward`` in
that order and ``backward`` in the reverse order, adding up gradients where a tensor feeds
several layers. A model of several outputs (``Model(x, [z_mean, z_log_var, z])``, as Keras) returns a
list from ``model(x)``, ``forward`` and ``predict``, and its ``backward`` takes one upstream gradient
per output (None for an output the loss does not use: zero). Training (compile, fit, ...) lives in :mod:`autoenc.models.training`; files
(save, save_weights, load_weights) are written and read by :mod:`autoenc.saving`, which knows the
model only through its public face: ``layers``, ``nodes``, ``get_config``, ``get_weights``...

The execution plan fuses two patterns. In the forward pass, an UpSampling2D((2, 2)) whose output
only a 3x3 stride-1 Conv2D reads (and is not a model output) is not run; the Conv2D computes from
the small input (``Conv2D.forward_upsampled``: four 2x2 convolutions, about half the multiplies, no
upsampled tensor) and its backward returns the small input's gradient. The layers stay as they are (they may
be shared with a model where the pair does not fuse); ``autoenc.set_reference_kernels(True)`` runs
every layer on its own.

The backward pass fuses a second pattern: a ReLU Conv2D whose output only a MaxPooling2D reads (and
is not a model output). The pooling's backward is not run; the Conv2D takes the pooled gradient
(``Conv2D.backward_maxpooled``: one pass writes its dz and bias gradient from the pooled gradient,
the winners and the pooled output, without the pooling's dx) and gives the same gradients bit for bit.
Both forward passes run as they are, so every layer output exists.

The graph is public: ``model.nodes`` lists the layer calls in the order ``forward`` runs them, and
``model.layer_output(layer)`` is what a layer returned in the last forward pass (what callbacks such
as autoenc.monitors.CollapseMonitor read after each training step).

A model is also a layer of a bigger model (nesting, as in Keras): ``decoder(encoder(inp))`` records
one node per sub-model, whose ``forward`` and ``backward`` run the sub-model's own graph, so the
sub-models share their layers and weights with the outer model. ``flat_layers()`` lists the layers
with the sub-models expanded, each once: the flat parameter buffer, get_weights and the files use it.

A subclass that defines ``call(self, inputs, training=None)`` (and assigns its layers and sub-models
as attributes in ``__init__``) is traced on first use: ``call`` runs once on symbolic inputs of the
data's shape, and the layer calls it makes become the graph; from then on it is a functional model.
"""
import inspect
import warnings

import numpy as np

from autoenc import initializers, layers as layers_module, regularizers, saving, utils
from autoenc.kernels.config import reference_kernels_enabled
from autoenc.kernels.upsampling import upsample2d_forward_naive
from autoenc.layers.base import (Input, InputLayer, KerasTensor, Layer, Node, snake_case, TRACE_HELP, eager,
                                 format_shape, unique_name)
from autoenc.layers.convolution import Conv2D
from autoenc.layers.pooling import MaxPooling2D
from autoenc.layers.upsampling import UpSampling2D
from autoenc.models.training import Trainer


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _topological_nodes(outputs):
    """Every node the outputs depend on, each after the nodes that produce its inputs.

    A depth-first walk back from the outputs with an explicit stack (no recursion, so a chain of
    thousands of layers is fine): a node is emitted once all the nodes feeding it have been."""
    order, done, active = [], set(), set()
    for t in outputs:
        if id(t.node) in done:
            continue
        stack = [(t.node, iter(t.node.inputs))]   # (node, its inputs not yet looked at)
        active.add(id(t.node))
        while stack:
            node, pending = stack[-1]
            for t_in in pending:
                child = t_in.node
                if id(child) in done:
                    continue
                if id(child) in active:
                    raise ValueError("The layer graph has a cycle")
                active.add(id(child))
                stack.append((child, iter(child.inputs)))
                break
            else:   # every input of node is done
                stack.pop()
                active.discard(id(node))
                done.add(id(node))
                order.append(node)
    return order


def _keras_order(nodes, outputs):
    """The nodes in the order Keras lists a functional model's layers: by decreasing depth (the longest
    path to the output), ties by when a walk back from the output first reaches them.

    ``nodes`` must be in topological order (producers first), as ``_topological_nodes`` returns them.
    """
    first_seen = {}
    for t in outputs:   # pre-order depth-first walk, inputs in order, with an explicit stack
        stack = [t.node]
        while stack:
            node = stack.pop()
            if id(node) in first_seen:
                continue
            first_seen[id(node)] = len(first_seen)
            stack.extend(t_in.node for t_in in reversed(node.inputs))
    depth = {}
    for node in reversed(nodes):  # every consumer before its producers
        d = depth.setdefault(id(node), 0)
        for t in node.inputs:
            depth[id(t.node)] = max(depth.get(id(t.node), 0), d + 1)
    return sorted(nodes, key=lambda n: (-depth[id(n)], first_seen[id(n)]))


def _expand_models(layers):
    """``layers`` with every Model in it replaced by its own layers (recursively, with an explicit
    stack), each layer once, in order: the layers that hold a nested model's weights."""
    out, seen = [], set()
    stack = list(reversed(layers))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, Model):
            stack.extend(reversed(layer.layers))
        else:
            out.append(layer)
    return out


def _read_only_by(nodes, outputs, cls, reader_cls):
    """(node, reader) for each node of a plain ``cls`` whose output only a plain ``reader_cls`` node
    reads: one reader, reading that tensor alone, the tensor not a model output."""
    readers = {}
    for node in nodes:
        for t in node.inputs:
            readers.setdefault(id(t), []).append(node)
    output_ids = {id(t) for t in outputs}
    pairs = []
    for node in nodes:
        if not _plain(node.layer, cls) or id(node.output) in output_ids:
            continue
        found = readers.get(id(node.output), [])
        if len(found) == 1 and len(found[0].inputs) == 1 and _plain(found[0].layer, reader_cls):
            pairs.append((node, found[0]))
    return pairs


def _fusable_pairs(nodes, outputs):
    """(upsampling node, conv node) for each UpSampling2D node whose output only a Conv2D reads (see
    _read_only_by). Whether the pair is run fused is decided at each forward pass (:func:`_runs_fused`)."""
    return _read_only_by(nodes, outputs, UpSampling2D, Conv2D)


def _poolable_pairs(nodes, outputs):
    """(conv node, pooling node) for each Conv2D node whose output only a MaxPooling2D reads (see
    _read_only_by). Whether the pair's backward is run fused is decided at each forward pass
    (:func:`_runs_maxpool_fused`)."""
    return _read_only_by(nodes, outputs, Conv2D, MaxPooling2D)


def _plain(layer, cls):
    """Whether ``layer`` is a ``cls`` whose class computes as ``cls`` does (a subclass may override
    forward or backward)."""
    return (isinstance(layer, cls) and type(layer).forward is cls.forward and type(layer).backward is cls.backward
            and type(layer).compute_output_shape is cls.compute_output_shape)


_WRAPPABLE = frozenset({"forward", "backward", "forward_upsampled", "backward_maxpooled"})


def _runs_fused(up, conv):
    """Whether UpSampling2D ``up`` and the Conv2D ``conv`` reading its output run as one
    (Conv2D.forward_upsampled): nearest by (2, 2), no activity penalty on the upsampled tensor, a 3x3
    stride-1 convolution, and neither layer's methods wrapped on the layer itself (as
    examples/watch_backprop.py does to record each backward call: they then run as written)."""
    return (up.size == (2, 2) and up.activity_regularizer is None and conv.fuses_upsampling
            and not (_WRAPPABLE & vars(up).keys() or _WRAPPABLE & vars(conv).keys()))


def _runs_maxpool_fused(conv, pool):
    """Whether the backward pass of MaxPooling2D ``pool``, reading the output of Conv2D ``conv``, runs
    inside the Conv2D's (Conv2D.backward_maxpooled): a plain relu (fused into the convolution), no
    activity penalty on the Conv2D's output (it would need that output's gradient), and neither
    layer's methods wrapped on the layer itself."""
    return (conv.fuses_maxpooling and conv.activity_regularizer is None
            and not (_WRAPPABLE & vars(conv).keys() or _WRAPPABLE & vars(pool).keys()))


class _TracedTraining:
    """The ``training`` argument that ``call`` sees while it is traced: decided per call later, so it
    refuses to be tested as a value."""

    def __bool__(self):
        raise TypeError("Python control flow on `training` (`if training:`) cannot be traced: call() runs once, "
                        "on symbolic tensors, to build the graph. Pass training on to the layers instead "
                        "(Dropout and BatchNormalization behave by it at each step); see docs/custom_layer.md")

    def __repr__(self):
        return "<training: decided at each call of the traced model>"


class Model(Trainer):
    """A model from symbolic ``inputs`` (from ``Input``) to ``outputs`` (a layer call's result), or a
    subclass defining ``call(self, inputs, training=None)``, traced into such a graph on first use.

    ``Model(inputs, outputs, name=None)``, ``Model(inputs=..., outputs=...)`` or, in a subclass,
    ``super().__init__()`` / ``super().__init__(name=...)``, as Keras spells them.
    """

    # a model called inside another model is one node of it, and acts as a layer there
    activity_regularizer = None
    can_skip_dx = True

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, dtype=None, **kwargs):
        object.__setattr__(self, "_tracked", {})   # attribute name -> the layers/models assigned to it
        if kwargs:
            raise TypeError(f"Model got unexpected keyword argument(s): {sorted(kwargs)}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, got {name!r}")
        super().__init__()
        base = snake_case(type(self).__name__) if self._subclassed() else self._default_name
        self.name = name or unique_name(base)
        self.built = False
        self.stop_training = False
        self.dtype = np.dtype(dtype or "float32")
        self._trainable = bool(trainable)
        self.inputs, self.outputs = [], []
        self._nodes = []      # the layer calls in forward order (InputLayers left out)
        self._values = None   # id(tensor) -> its array in the last forward pass
        self._node_of = {}    # id(layer) -> the node calling it
        self._fusable = []    # (UpSampling2D node, the Conv2D node reading it): see _fusable_pairs
        self._fused = {}      # id(Conv2D node) -> its UpSampling2D node, for the pairs the last forward ran fused
        self._poolable = []   # (Conv2D node, the MaxPooling2D node reading it): see _poolable_pairs
        self._pool_fused = {}   # id(Conv2D node) -> its MaxPooling2D node, for the pairs backward runs fused
        self._layers = []
        self._graph_layers = []   # the graph's layers (InputLayers included) in Keras' order
        if inputs is not None or outputs is not None:
            self._init_graph(inputs, outputs)
            if not self._trainable:
                self.trainable = False   # freezes the layers

    _default_name = "functional"

    @classmethod
    def _subclassed(cls):
        """Whether this class defines its own ``call`` (a subclassed model, traced on first use)."""
        return cls.call is not Model.call

    def __setattr__(self, name, value):
        # attribute tracking, as Keras': layers and models (or lists of them) assigned to public attributes
        # are the subclassed model's layers, in assignment order
        if name.startswith("_"):   # the model's own state (set at every training step: keep it cheap)
            return super().__setattr__(name, value)
        tracked = self.__dict__.get("_tracked")
        items = list(value.values()) if isinstance(value, dict) else (
            list(value) if isinstance(value, (list, tuple)) else [value])
        found = [v for v in items if isinstance(v, (Layer, Model))]
        if tracked is None and found:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning layers to "
                               f"attributes (self.{name} = ...)")
        super().__setattr__(name, value)
        if tracked is not None:
            if found:
                tracked[name] = found
            else:
                tracked.pop(name, None)

    def __delattr__(self, name):
        super().__delattr__(name)
        self.__dict__["_tracked"].pop(name, None)

    def call(self, inputs, training=None):
        """The model's computation on ``inputs``. A subclass overrides it with layer calls; here (a
        functional model) it is calling the model: a new node on symbolic tensors, the output on arrays."""
        return self(inputs, training=bool(training))

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze (False) or unfreeze every layer of the model, sub-models' included, as Keras does."""
        self._trainable = bool(value)
        for layer in self.flat_layers():
            layer.trainable = bool(value)

    def _init_graph(self, inputs, outputs):
        inputs, outputs = _as_list(inputs), _as_list(outputs)
        for t in inputs + outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors (from Input and layer "
                                f"calls), got {t!r}")
        if not outputs:
            raise ValueError("Model needs at least one output, got an empty list")
        for t in inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model inputs must come from Input(), got the output of layer {t.node.layer.name!r}")
        nodes = _topological_nodes(outputs)
        input_ids = {id(t) for t in inputs}
        for node in nodes:
            if isinstance(node.layer, InputLayer) and id(node.output) not in input_ids:
                raise ValueError(f"Graph disconnected: the output depends on input {node.layer.name!r}, "
                                 "which is not among the model's inputs")
        seen = {}   # id(layer) -> the node (layer or sub-model) through which it is called
        for node in nodes:
            for layer in _expand_models([node.layer]):
                if isinstance(layer, InputLayer):   # a sub-model's own Input is not called
                    continue
                if id(layer) in seen:
                    where = [f"sub-model {n.layer.name!r}" if n.layer is not layer else "directly"
                             for n in (seen[id(layer)], node)]
                    raise ValueError(f"Layer {layer.name!r} is called more than once in this model ({where[0]} "
                                     f"and {where[1]}); autoenc does not support shared layers: a layer "
                                     "or sub-model can be called once per model")
                seen[id(layer)] = node
        self.inputs, self.outputs = inputs, outputs
        self._nodes = [n for n in nodes if not isinstance(n.layer, InputLayer)]
        self._node_of = {id(n.layer): n for n in nodes}
        self._fusable = _fusable_pairs(self._nodes, outputs)
        self._poolable = _poolable_pairs(self._nodes, outputs)
        self._values = None   # the arrays of a previous graph (Sequential.add / pop) are stale
        self._fused = {}
        self._pool_fused = {}
        # ``layers`` (and so get_weights) in Keras' order, which differs from ``nodes`` for branching graphs
        self._graph_layers = [node.layer for node in _keras_order(nodes, outputs)]
        self._layers = list(self._graph_layers)
        if self._subclassed():
            # a subclassed model lists its attributes' layers (assignment order), then any other it called
            tracked = [l for found in self._tracked.values() for l in found]
            rest = [l for l in self._graph_layers if not isinstance(l, InputLayer)]
            self._layers = list({id(l): l for l in tracked + rest}.values())
        self.built = True
        self.dtype = outputs[0].dtype

    # --- structure -----------------------------------------------------------------------------

    @property
    def layers(self):
        """The model's layers, a sub-model being one entry, in Keras' order (which get_weights follows):
        a functional model's by depth in the graph, a subclassed model's in attribute assignment order."""
        if self.built:
            return list(self._layers)
        return list({id(l): l for found in self._tracked.values() for l in found}.values())

    def flat_layers(self):
        """Every layer, sub-models expanded into their layers (recursively), each layer once, in
        get_weights order: the layers whose parameters the model trains and saves."""
        return _expand_models(self.layers)

    @property
    def nodes(self):
        """The layer calls (``autoenc.layers.base.Node``: ``layer``, ``inputs``, ``output``) in the order
        ``forward`` runs them, every node after the nodes feeding it; InputLayers are left out. A new
        list; empty before the model is built."""
        return list(self._nodes) if self.built else []

    def layer_output(self, layer):
        """The array ``layer`` (a layer of this model, or its name) returned in the last forward pass
        (fit's last training step, whole, where it ran in parts (models/parallel_step.py); predict's
        and evaluate's last part, the end of their input, when they run in parts (models/inference.py),
        else their last batch); for an InputLayer, the input. None before any forward pass. The array
        is the layer's own buffer (a new one joining the parts of a training step), overwritten by the
        next pass: copy it to keep it."""
        if isinstance(layer, str):
            layer = self.get_layer(layer)
        last = self._last_output(layer)
        parts = self.__dict__.get("_part_models")
        ids = [id(l) for l in self._layers_and_inputs()]
        if not parts or last is None or id(layer) not in ids:
            return last
        # a training step in parts: the parts before the last ran on replicas, whose layers are in
        # the same order
        earlier = [p._last_output(p._layers_and_inputs()[ids.index(id(layer))], id(layer)) for p in parts]
        if isinstance(last, list):
            return [np.concatenate([e[j] for e in earlier] + [v]) for j, v in enumerate(last)]
        return np.concatenate(earlier + [last])

    def _layers_and_inputs(self):
        """flat_layers, then the InputLayer of each model input (a Sequential's is not among its layers)."""
        return self.flat_layers() + [t.node.layer for t in self.inputs]

    def _last_output(self, layer, key=None):
        """layer_output of this model's own last forward pass (a layer object). A replica
        (models/inference.py) finds its nodes by the ids of the model's layers it was copied from:
        ``key``, the id of the model's layer that ``layer`` is the copy of."""
        models = [self]   # the layer may be inside a sub-model: look there too
        while models:
            model = models.pop()
            node = model._node_of.get(id(layer) if key is None else key)
            if node is not None and node.layer is layer:
                if model._values is None:
                    return None
                values = [model._value(t) for t in node.outputs]
                return values[0] if len(values) == 1 else values
            models.extend(n.layer for n in model._nodes if isinstance(n.layer, Model))
        raise ValueError(f"Layer {getattr(layer, 'name', layer)!r} is not a layer of model {self.name!r}")

    def _value(self, t):
        """The array of tensor ``t`` in the last forward pass (None if it did not run). The output of
        an UpSampling2D run fused into the next Conv2D was never made: it is made now, from its input,
        and kept until the next pass."""
        value = self._values.get(id(t))
        if value is None and t.node is not None and isinstance(t.node.layer, UpSampling2D):
            x = self._values.get(id(t.node.inputs[0]))
            if x is not None:
                value = self._values[id(t)] = upsample2d_forward_naive(x, t.node.layer.size).astype(x.dtype)
        return value

    @property
    def output_layer(self):
        """The layer whose output is the model's (first) output, inside a sub-model when the model ends
        in one; None before the model is built."""
        if not (self.built and self._nodes):
            return None
        t = self.outputs[0]
        while isinstance(t.node.layer, Model):   # follow the tensor into the sub-model that made it
            sub = t.node.layer
            if not sub._nodes:
                return None
            t = sub.outputs[next(k for k, o in enumerate(t.node.outputs) if o is t)]
        return None if isinstance(t.node.layer, InputLayer) else t.node.layer

    @property
    def logits(self):
        """The output layer's pre-activation of the last forward pass (see Layer.logits)."""
        layer = self.output_layer
        return None if layer is None else layer.logits

    def get_layer(self, name=None, index=None):
        """The layer called ``name``, or at position ``index`` in ``layers``."""
        if index is not None:
            if not isinstance(index, int) or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index {index!r} is out of range: the model has {len(self.layers)} layers")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r}; the layers are {[l.name for l in self.layers]}")

    @property
    def input_shape(self):
        self._require_built("input_shape")
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        """The output's shape (batch entry None); a list of shapes for a model of several outputs."""
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def weights(self):
        return [w for layer in self.flat_layers() for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self.flat_layers() for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self.flat_layers() for w in layer.non_trainable_weights]

    @property
    def params(self):
        """{'layer/param': array} of every layer's parameters (sub-models expanded), read only: a
        model used as a layer shows its parameters here; training and saving go through the layers."""
        return {f"{layer.name}/{n}": p for layer in self.flat_layers() for n, p in layer.params.items()}

    @property
    def grads(self):
        """{'layer/param': gradient} as ``params``, for the trainable weights."""
        return {f"{layer.name}/{n}": g for layer in self.flat_layers() for n, g in layer.grads.items()}

    def count_params(self):
        return sum(layer.count_params() for layer in self.flat_layers())

    def get_weights(self):
        """Copies of every parameter in Keras' order: layer by layer (a sub-model's layers in its own
        order, each layer once), kernel then bias."""
        return [w for layer in self.flat_layers() for w in layer.get_weights()]

    def set_weights(self, weights):
        """Copy ``weights`` (as get_weights returns them) into the model's parameters.

        All or nothing: every array is checked (count, shape, and finite once cast to the layer's
        dtype: float64 1e39 is inf in float32) before any parameter is written."""
        weights = list(weights)
        layers = self.flat_layers()
        expected = [(layer, name, p) for layer in layers for name, p in layer.params.items()]
        if len(weights) != len(expected):
            raise ValueError(f"set_weights expects {len(expected)} arrays, got {len(weights)}")
        for k, (w, (layer, name, p)) in enumerate(zip(weights, expected)):
            if np.shape(w) != p.shape:
                raise ValueError(f"set_weights: array {k} ({layer.name}/{name}) has shape {np.shape(w)}, "
                                 f"expected {p.shape}")
        cast, k = [], 0
        for layer in layers:
            n = len(layer.params)
            cast.append(layer.check_weights(weights[k:k + n]))   # raises before anything is written
            k += n
        for layer, arrays in zip(layers, cast):
            layer.set_weights(arrays)

    def regularization_loss(self):
        """The weight and activity penalties of every layer (sub-models included), as Layer's."""
        return sum(layer.regularization_loss() for layer in self.flat_layers())

    def add_regularization_gradients(self):
        """Nothing: a sub-model's backward adds its layers' penalty gradients itself."""

    def summary(self, line_length=None, positions=None, print_fn=None, show_flops=False, batch_size=1, **kwargs):
        """Print the layers with output shapes and parameter counts, as Keras does; with ``show_flops``,
        also each layer's forward FLOPs and activation memory for ``batch_size`` (autoenc.inspect)."""
        self._require_built("summary")
        width = line_length or 70
        cols = [0, int(width * 0.5), int(width * 0.85), width]
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = layer.output_shape if not isinstance(layer, InputLayer) else layer.output.shape
            kind = "Functional" if type(layer) is Model else type(layer).__name__   # Keras' names
            shape = ("?" if shape is None else   # a subclassed model's unused layer
                     ", ".join(map(format_shape, shape)) if isinstance(shape, list) else format_shape(shape))
            rows.append((f"{layer.name} ({kind})", shape, f"{layer.count_params()}"))

        def fmt(row):
            line = ""
            for text, start, end in zip(row, cols[:-1], cols[1:]):
                line = (line + " " + text)[:end].ljust(end)
            return line

        total = self.count_params()
        trainable = sum(w.size for w in self.trainable_weights)
        lines = [f'Model: "{self.name}"', "_" * width, fmt(rows[0]), "=" * width]
        for k, row in enumerate(rows[1:]):
            lines.append(fmt(row))
            lines.append(("=" if k == len(rows) - 2 else "_") * width)
        size = lambda n: f"{n:,} ({n * 4 / 1024:.2f} KB)"
        lines += [f"Total params: {size(total)}", f"Trainable params: {size(trainable)}",
                  f"Non-trainable params: {size(total - trainable)}", "_" * width]
        if show_flops:
            from autoenc.inspect import format_layer_table
            lines.append(format_layer_table(self, batch_size))
        (print_fn or print)("\n".join(lines))

    def _require_built(self, what):
        if not self.built:
            how = ("call build(input_shape), the model on data, or fit/predict" if self._subclassed() else
                   "give it an Input (or an input_shape) or call fit/predict")
            raise ValueError(f"{type(self).__name__} {self.name!r} is not built yet: {how} before {what}")

    def build(self, input_shape):
        """Build the model for inputs of ``input_shape`` (with the batch entry, e.g. (None, 28, 28); a list
        of shapes for several inputs). A subclassed model is traced: ``call`` runs once on symbolic
        inputs of that shape and the layer calls it makes become the graph. A functional model is built
        when created: nothing to do."""
        if self.built:
            return
        if not self._subclassed():
            raise ValueError(f"Model {self.name!r} has no graph: create it as Model(inputs, outputs), or subclass "
                             "Model and define call(self, inputs, training=None)")
        several = isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], (list, tuple))
        shapes = [tuple(s) for s in (input_shape if several else [input_shape])]
        for shape in shapes:
            if len(shape) < 2:
                raise ValueError(f"build expects an input shape with the batch entry, e.g. (None, 28, 28), got "
                                 f"{input_shape!r}")
        inputs = [Input(shape=shape[1:], dtype=self.dtype) for shape in shapes]
        arg = inputs if several else inputs[0]
        cls = type(self).__name__
        kwargs = {"training": _TracedTraining()} if "training" in inspect.signature(self.call).parameters else {}
        where = (f"{cls}.call could not be traced on a symbolic input of shape "
                 f"{format_shape(shapes[0]) if not several else shapes}")
        try:
            outputs = self.call(arg, **kwargs)
        except (TypeError, AttributeError) as error:
            raise TypeError(f"{where}: {error}" + ("" if "docs/custom_layer.md" in str(error) else
                                                   f". {TRACE_HELP}")) from error
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        several_out = isinstance(outputs, (list, tuple)) and outputs and all(isinstance(t, KerasTensor)
                                                                             for t in outputs)
        if not (isinstance(outputs, KerasTensor) or several_out):
            raise TypeError(f"{cls}.call returned {type(outputs).__name__} on a symbolic input, not the symbolic "
                            f"tensor of a layer call. {TRACE_HELP}")
        for t in _as_list(outputs):
            if t.node is None or isinstance(t.node.layer, InputLayer):
                raise ValueError(f"{cls}.call returned its input unchanged: it calls no layer")
        outputs = list(outputs) if several_out else outputs
        self._init_graph(arg, outputs)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"

    # --- computing -----------------------------------------------------------------------------

    def forward(self, inputs, training=False):
        """Run every layer in order (a fused UpSampling2D and Conv2D as one call: see the module's
        docstring). ``inputs``: one array per model input. Returns the output array (a buffer of the
        layer that made it, overwritten by the next call), or the list of output arrays for a model
        of several outputs."""
        self.__dict__.pop("_part_models", None)   # the parts of a training step (parallel_step.py) are over
        values = {id(t): x for t, x in zip(self.inputs, _as_list(inputs))}
        # the execution plan: an UpSampling2D((2, 2)) read only by a 3x3 Conv2D is not run; the Conv2D
        # computes from the small input (Conv2D.forward_upsampled); the naive path runs every layer
        fused = {} if reference_kernels_enabled() else {
            id(conv): up for up, conv in self._fusable if _runs_fused(up.layer, conv.layer)}
        skipped = {id(up) for up in fused.values()}
        for node in self._nodes:
            layer = node.layer
            if id(node) in skipped:
                continue
            if id(node) in fused:
                y = layer.forward_upsampled(values[id(fused[id(node)].inputs[0])], training=training)
            else:
                args = [values[id(t)] for t in node.inputs]
                y = layer.forward(args[0] if len(args) == 1 else args, training=training)
            if layer.activity_regularizer is not None:
                layer.activity_forward(y)
            if isinstance(node.output, list):   # a sub-model of several outputs
                for t, v in zip(node.output, y):
                    values[id(t)] = v
            else:
                values[id(node.output)] = y
        self._values = values
        self._fused = fused
        # and for backward: a MaxPooling2D reading only a ReLU Conv2D runs inside its backward
        self._pool_fused = {} if reference_kernels_enabled() else {
            id(conv): pool for conv, pool in self._poolable
            if id(conv) not in fused and _runs_maxpool_fused(conv.layer, pool.layer)}
        ys = [values[id(t)] for t in self.outputs]
        return ys[0] if len(ys) == 1 else ys

    def backward(self, dy, from_logits=False, input_gradients=True, need_dx=None):
        """Backpropagate dy = dL/d(output) through every layer, filling each layer's ``grads``.

        dy : an array shaped like the output; for a model of several outputs, a list with one entry
            per output, each shaped like it or None (the loss does not use that output: zero).
        With ``from_logits`` dy is dL/dz for the output layer's pre-activation z (one output only).
        Returns the gradients with respect to the model inputs; with ``input_gradients=False``
        (training) they are not needed, and layers that read only model inputs may skip computing
        them (None). ``need_dx=False`` (what an outer model passes to a sub-model, as to a layer)
        means the same.
        """
        if need_dx is False:
            input_gradients = False
        dys = [dy] if len(self.outputs) == 1 else list(dy) if isinstance(dy, (list, tuple)) else None
        if dys is None or len(dys) != len(self.outputs):
            raise ValueError(f"Model {self.name!r} has {len(self.outputs)} outputs: backward needs a list of "
                             f"{len(self.outputs)} gradients (None for an unused output), got {dy!r:.100}")
        if from_logits and len(self.outputs) > 1:
            raise ValueError("backward(from_logits=True) needs a model of one output")
        grads = {}
        for t, d in zip(self.outputs, dys):   # an output listed twice gets the sum
            if d is not None:
                grads[id(t)] = grads[id(t)] + d if id(t) in grads else d
        last = self._nodes[-1]
        input_ids = {id(t) for t in self.inputs}
        fused = self._fused   # the plan the forward pass ran
        skipped = {id(up) for up in fused.values()}
        # id(Conv2D node) -> its MaxPooling2D node (a last layer given dL/dz runs on its own, as it is)
        pool_fused = {conv: pool for conv, pool in self._pool_fused.items() if not (from_logits and pool is last)}
        pooled = {id(pool): None for pool in pool_fused.values()}   # -> the gradient of its output
        for node in reversed(self._nodes):
            layer = node.layer
            if id(node) in skipped:   # its Conv2D returned the gradient of its input
                continue
            if id(node) in pool_fused:   # no gradient reached the output: the pooling's comes in
                g = pooled.pop(id(pool_fused[id(node)]))
            else:
                # a tensor no gradient reached (it feeds only unused outputs) has gradient zero
                gs = [grads.pop(id(t), None) for t in node.outputs]
                gs = [np.zeros_like(self._values[id(t)]) if g is None else g for g, t in zip(gs, node.outputs)]
                g = gs if isinstance(node.output, list) else gs[0]
                if layer.activity_regularizer is not None:
                    g = layer.activity_backward(g, self._values[id(node.output)])
            if id(node) in pooled:   # its Conv2D runs this backward inside its own
                pooled[id(node)] = g
                continue
            kwargs = {"from_logits": True} if (from_logits and node is last) else {}
            inputs = fused[id(node)].inputs if id(node) in fused else node.inputs
            if layer.can_skip_dx and not input_gradients and all(id(t) in input_ids for t in inputs):
                kwargs["need_dx"] = False
            if id(node) in pool_fused:
                dx = layer.backward_maxpooled(g, pool_fused[id(node)].layer, **kwargs)
            else:
                dx = layer.backward(g, **kwargs)
            layer.add_regularization_gradients()
            if dx is None:
                continue
            for t, d in zip(inputs, dx if isinstance(dx, list) else [dx]):
                grads[id(t)] = grads[id(t)] + d if id(t) in grads else d
        result = [grads.get(id(t)) for t in self.inputs]
        if input_gradients:   # an input no layer reads has gradient zero
            result = [np.zeros_like(self._values[id(t)]) if g is None else g for g, t in zip(result, self.inputs)]
        return result[0] if len(result) == 1 else result

    def __call__(self, x, training=None, **kwargs):
        """On symbolic tensors: one node of the graph being built (the model is nested: it shares its
        layers and weights). On arrays: the output, a new EagerArray (an ndarray with ``.numpy()``)."""
        unsupported = {k for k, v in kwargs.items() if v is not None}
        if unsupported:
            raise TypeError(f"Model call got unsupported keyword argument(s): {sorted(unsupported)}")
        if isinstance(x, KerasTensor) or (isinstance(x, (list, tuple)) and x
                                          and all(isinstance(t, KerasTensor) for t in x)):
            return self._call_symbolic(x)
        if isinstance(x, (list, tuple)) and any(isinstance(t, KerasTensor) for t in x):
            raise TypeError(f"Model {self.name!r} was called on a mix of symbolic tensors and arrays: {x!r}")
        xs = self._prepare_x(x, "x")
        with utils.compute_lock:
            y = self.forward(xs if len(xs) > 1 else xs[0], training=bool(training))
            return [eager(np.array(v, copy=True)) for v in y] if isinstance(y, list) else eager(np.array(y, copy=True))

    def _call_symbolic(self, x):
        tensors = _as_list(x)
        if not self.built:
            shapes = [t.shape for t in tensors]
            self.build(shapes if len(shapes) > 1 else shapes[0])
        if len(tensors) != len(self.inputs):
            raise ValueError(f"Model {self.name!r} has {len(self.inputs)} input(s), called on {len(tensors)} tensors")
        for t, own in zip(tensors, self.inputs):
            if tuple(t.shape[1:]) != tuple(own.shape[1:]):
                raise ValueError(f"Model {self.name!r} expects inputs of shape {format_shape(own.shape)}, "
                                 f"called on {format_shape(t.shape)}")
        outs = [KerasTensor(t.shape, self.dtype, name=self.name) for t in self.outputs]
        out = outs[0] if len(outs) == 1 else outs
        node = Node(self, tensors, out)
        for t in outs:
            t.node = node
        return out

    # --- files (written and read by autoenc.saving) ---------------------------------------------

    def save(self, filepath, overwrite=True, save_format=None, **kwargs):
        """Write the whole model (architecture, weights, optimizer state) to one file; see
        :func:`autoenc.saving.save_model`. A name ending in ``.keras`` gets Keras 3's own format, which
        ``keras.saving.load_model`` opens (:func:`autoenc.keras_format.save_keras_model`; needs h5py).
        ``save_format`` (Keras 2's 'tf' / 'h5') is accepted for pasted code and ignored with a warning."""
        if str(filepath).endswith(".keras"):
            from autoenc.keras_format import save_keras_model
            return save_keras_model(self, filepath, overwrite=overwrite, **kwargs)
        if save_format is not None:
            warnings.warn(f"save_format={save_format!r} is ignored: autoenc writes its own format (an .npz "
                          "archive, see autoenc.saving) whatever the name", UserWarning, stacklevel=2)
        saving.save_model(self, filepath, overwrite=overwrite, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Export the model for inference, as Keras' ``Model.export``: ``format="onnx"`` writes an ONNX
        graph that onnxruntime serves (:func:`autoenc.onnx_export.export_onnx`; needs
        ``pip install "autoenc[onnx]"``); ``opset_version=`` is the one keyword argument it takes.
        Keras' default format, a TensorFlow SavedModel, needs TensorFlow: autoenc refuses it."""
        if format != "onnx":
            raise ValueError(f"autoenc exports format='onnx' only, got format={format!r}"
                             + (" (Keras' default, a TensorFlow SavedModel); pass format='onnx', or save a "
                                "'.keras' file with model.save" if format == "tf_saved_model" else ""))
        unknown = set(kwargs) - {"opset_version"}
        if unknown:
            raise TypeError(f"export(format='onnx') got unexpected keyword argument(s) {sorted(unknown)}; "
                            "it takes verbose, input_signature and opset_version")
        from autoenc import onnx_export
        onnx_export.export_onnx(self, filepath, verbose=verbose, input_signature=input_signature, **kwargs)

    def save_weights(self, filepath, overwrite=True):
        """Write every parameter to an .npz file (keys 'layer/param'), atomically; see
        :func:`autoenc.saving.save_weights`."""
        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Read parameters written by save_weights (matched by position, shapes checked), or from a
        Keras ``.weights.h5`` / ``.keras`` file of the same architecture (needs h5py). All or nothing:
        on any error the model keeps its weights. See :func:`autoenc.saving.load_weights`."""
        return saving.load_weights(self, filepath)

    # --- architecture ----------------------------------------------------------------------------

    def get_config(self):
        """The architecture as a JSON-able dict: ``{"class_name": "Model", "name", "layers", "inputs",
        "output"}``, each layer as ``{"class_name", "config", "inbound"}`` (the names of the layers
        feeding it; autoenc layers are called once per model, so a layer's name names its output;
        the k-th output of a sub-model of several outputs is ``[name, k]``). A model of several
        outputs has ``"outputs"``, a list of such references, instead of ``"output"``.
        A sub-model is one entry, its config its own architecture. A subclassed model is described by
        the graph its ``call`` traced (it loads back as a functional Model computing the same).
        ``Model.from_config`` rebuilds the model from it (untrained weights)."""
        self._require_built("get_config")
        node_of = {id(node.layer): node for node in self._nodes}
        entries = []
        for layer in self._graph_layers:   # Keras' order: every layer after the layers that feed it
            node = node_of.get(id(layer))
            entries.append(layer_entry(layer, [] if node is None else [tensor_ref(t) for t in node.inputs]))
        config = {"class_name": "Model", "name": self.name, "layers": entries,
                  "inputs": [t.node.layer.name for t in self.inputs]}
        if len(self.outputs) == 1:
            config["output"] = tensor_ref(self.outputs[0])
        else:
            config["outputs"] = [tensor_ref(t) for t in self.outputs]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None, on_layer=None):
        """The model described by ``get_config()``'s dict (layers built, weights freshly initialised).
        ``custom_objects``: {class name: class} for layers that are not autoenc's own; ``on_layer(layer)``
        is called on each layer before it is built. A malformed config raises ConfigError (a
        ValueError) naming the entry."""
        custom_objects = dict(custom_objects or {})
        tensors = {}   # layer name -> its output tensor (a list for a sub-model of several outputs)

        def tensor(ref):   # a name, or [name, k] for the k-th output of a sub-model
            if isinstance(ref, list):
                name, k = ref
                if not isinstance(tensors[name], list) or isinstance(k, bool) or not isinstance(k, int):
                    raise ValueError(f"{ref!r} names output {k!r} of {name!r}, which has one output")
                return tensors[name][k]
            if isinstance(tensors[ref], list):
                raise ValueError(f"{ref!r} has several outputs: name one as [{ref!r}, k]")
            return tensors[ref]
        for k, entry in enumerate(config["layers"]):
            with config_field(f"architecture.layers[{k}]", entry):
                if entry["class_name"] == "InputLayer":
                    tensors[entry["config"]["name"]] = Input(**entry["config"])
                    continue
                layer = layer_from_entry(entry, custom_objects, on_layer)
                inbound = [tensor(ref) for ref in entry["inbound"]]
                tensors[layer.name] = layer(inbound[0] if len(inbound) == 1 else inbound)
        with config_field("architecture.inputs / architecture.output"):
            outputs = ([tensor(ref) for ref in config["outputs"]] if "outputs" in config
                       else tensor(config["output"]))
            return cls([tensors[name] for name in config["inputs"]], outputs, name=config["name"])


class ConfigError(ValueError):
    """A malformed architecture: the message names the entry (``architecture.layers[3] (Conv2D 'conv')``)."""

    names_its_field = True   # autoenc.saving quotes the message as it is


def config_field(where, entry=None):
    """Turn any error raised while building from the architecture entry ``where`` into a ConfigError
    naming it (and the entry's class and name, when ``entry`` is a layer's)."""
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
        where += f" ({entry.get('class_name')} {entry['config'].get('name')!r})"
    return utils.field_errors(where, ConfigError)


MODEL_CLASS_NAMES = ("Functional", "Sequential")   # a nested model's entry in an architecture


def tensor_ref(t):
    """How an architecture names the symbolic tensor ``t``: its layer's name, or [name, k] when it is
    the k-th output of a sub-model of several outputs."""
    node = t.node
    if isinstance(node.output, list):
        return [node.layer.name, next(k for k, o in enumerate(node.output) if o is t)]
    return node.layer.name


def layer_entry(layer, inbound):
    """One layer of an architecture: {"class_name", "config", "inbound"}; a nested model's class_name is
    "Sequential" or "Functional" (any other model, subclassed included, is saved as its graph)."""
    if isinstance(layer, Model):
        from autoenc.models.sequential import Sequential
        kind = "Sequential" if isinstance(layer, Sequential) else "Functional"
        return {"class_name": kind, "config": layer.get_config(), "inbound": inbound}
    if isinstance(layer, InputLayer):
        config = {"name": layer.name, "shape": list(layer.batch_shape[1:]), "dtype": layer.dtype.name}
    else:
        config = layer.get_config()
    return {"class_name": type(layer).__name__, "config": config, "inbound": inbound}


def layer_from_entry(entry, custom_objects, on_layer=None):
    """The layer an architecture entry describes: its class (autoenc's, or from ``custom_objects``),
    called with its config (regularizers and initializers deserialized), after which ``on_layer(layer)``
    sees it, still unbuilt. A nested model's entry gives the model, rebuilt from its own architecture
    (``on_layer`` sees each of its layers). Names never import code."""
    class_name = entry["class_name"]
    if class_name in MODEL_CLASS_NAMES:
        from autoenc.models.sequential import Sequential
        cls = Sequential if class_name == "Sequential" else Model
        return cls.from_config(entry["config"], custom_objects, on_layer=on_layer)
    layer = _leaf_from_entry(entry, custom_objects)
    if on_layer is not None:
        on_layer(layer)
    return layer


def _leaf_from_entry(entry, custom_objects):
    class_name, config = entry["class_name"], dict(entry["config"])
    cls = custom_objects.get(class_name) or getattr(layers_module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"Unknown layer class {class_name!r} in the model file; pass it in "
                         f"custom_objects={{{class_name!r}: ...}}")
    for key, value in config.items():
        if key.endswith("_regularizer") and isinstance(value, dict):
            config[key] = regularizers.deserialize(value)
        elif key.endswith("_initializer") and isinstance(value, dict):
            config[key] = initializers.deserialize(value)
    return cls(**config)
