"""The functional Model: a graph of layer calls from symbolic inputs to one output.

``Model(inputs, outputs)`` walks back from ``outputs`` through the nodes that the layer calls
recorded, orders them so every node comes after its inputs, and from then on runs ``forward`` in
that order and ``backward`` in the reverse order, adding up gradients where a tensor feeds
several layers. Training (compile, fit, ...) lives in :mod:`autoenc.models.training`; files
(save, save_weights, load_weights) are written and read by :mod:`autoenc.saving`, which knows the
model only through its public face: ``layers``, ``nodes``, ``get_config``, ``get_weights``...

The graph is public: ``model.nodes`` lists the layer calls in the order ``forward`` runs them, and
``model.layer_output(layer)`` is what a layer returned in the last forward pass (what callbacks such
as autoenc.monitors.CollapseMonitor read after each training step).
"""
import contextlib
import warnings

import numpy as np

from autoenc import initializers, layers as layers_module, regularizers, saving, utils
from autoenc.layers.base import Input, InputLayer, KerasTensor, Layer, format_shape, unique_name
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


class Model(Trainer):
    """A model from symbolic ``inputs`` (from ``Input``) to ``outputs`` (a layer call's result)."""

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        if kwargs:
            raise TypeError(f"Model got unexpected keyword argument(s): {sorted(kwargs)}")
        super().__init__()
        self.name = name or unique_name(self._default_name)
        self.built = False
        self.stop_training = False
        self._nodes = []      # the layer calls in forward order (InputLayers left out)
        self._values = None   # id(tensor) -> its array in the last forward pass
        self._node_of = {}    # id(layer) -> the node calling it
        if inputs is not None or outputs is not None:
            self._init_graph(inputs, outputs)

    _default_name = "functional"

    def _init_graph(self, inputs, outputs):
        inputs, outputs = _as_list(inputs), _as_list(outputs)
        for t in inputs + outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model inputs and outputs must be symbolic tensors (from Input and layer "
                                f"calls), got {t!r}")
        if len(outputs) != 1:
            raise ValueError(f"autoenc models have exactly one output, got {len(outputs)}")
        for t in inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model inputs must come from Input(), got the output of layer {t.node.layer.name!r}")
        nodes = _topological_nodes(outputs)
        input_ids = {id(t) for t in inputs}
        for node in nodes:
            if isinstance(node.layer, InputLayer) and id(node.output) not in input_ids:
                raise ValueError(f"Graph disconnected: the output depends on input {node.layer.name!r}, "
                                 "which is not among the model's inputs")
        seen = set()
        for node in nodes:
            if id(node.layer) in seen:
                raise ValueError(f"Layer {node.layer.name!r} is called more than once in this model; "
                                 "autoenc does not support shared layers")
            seen.add(id(node.layer))
        self.inputs, self.outputs = inputs, outputs
        self._nodes = [n for n in nodes if not isinstance(n.layer, InputLayer)]
        self._node_of = {id(n.layer): n for n in nodes}
        self._values = None   # the arrays of a previous graph (Sequential.add / pop) are stale
        # ``layers`` (and so get_weights) in Keras' order, which differs from ``nodes`` for branching graphs
        self._layers = [node.layer for node in _keras_order(nodes, outputs)]
        self.built = True
        self.dtype = outputs[0].dtype

    # --- structure -----------------------------------------------------------------------------

    @property
    def layers(self):
        return list(self._layers) if self.built else []

    @property
    def nodes(self):
        """The layer calls (``autoenc.layers.base.Node``: ``layer``, ``inputs``, ``output``) in the order
        ``forward`` runs them, every node after the nodes feeding it; InputLayers are left out. A new
        list; empty before the model is built."""
        return list(self._nodes) if self.built else []

    def layer_output(self, layer):
        """The array ``layer`` (a layer of this model, or its name) returned in the last forward pass
        (fit's last training step, predict's last batch, ...); for an InputLayer, the input batch.
        None before any forward pass. The array is the layer's own buffer, overwritten by the next
        pass: copy it to keep it."""
        if isinstance(layer, str):
            layer = self.get_layer(layer)
        node = self._node_of.get(id(layer))
        if node is None or node.layer is not layer:
            raise ValueError(f"Layer {getattr(layer, 'name', layer)!r} is not a layer of model {self.name!r}")
        return None if self._values is None else self._values.get(id(node.output))

    @property
    def output_layer(self):
        """The layer whose output is the model's output (None before the model is built)."""
        return self._nodes[-1].layer if self.built and self._nodes else None

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
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        return self.outputs[0].shape

    @property
    def weights(self):
        return [w for layer in self.layers for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self.layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self.layers for w in layer.non_trainable_weights]

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self):
        """Copies of every parameter in Keras' order: layer by layer, kernel then bias."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights):
        """Copy ``weights`` (as get_weights returns them) into the model's parameters.

        All or nothing: every array is checked (count, shape, and finite once cast to the layer's
        dtype: float64 1e39 is inf in float32) before any parameter is written."""
        weights = list(weights)
        expected = [(layer, name, p) for layer in self.layers for name, p in layer.params.items()]
        if len(weights) != len(expected):
            raise ValueError(f"set_weights expects {len(expected)} arrays, got {len(weights)}")
        for k, (w, (layer, name, p)) in enumerate(zip(weights, expected)):
            if np.shape(w) != p.shape:
                raise ValueError(f"set_weights: array {k} ({layer.name}/{name}) has shape {np.shape(w)}, "
                                 f"expected {p.shape}")
        cast, k = [], 0
        for layer in self.layers:
            n = len(layer.params)
            cast.append(layer.check_weights(weights[k:k + n]))   # raises before anything is written
            k += n
        for layer, arrays in zip(self.layers, cast):
            layer.set_weights(arrays)

    def summary(self, line_length=None, positions=None, print_fn=None, show_flops=False, batch_size=1, **kwargs):
        """Print the layers with output shapes and parameter counts, as Keras does; with ``show_flops``,
        also each layer's forward FLOPs and activation memory for ``batch_size`` (autoenc.inspect)."""
        self._require_built("summary")
        width = line_length or 70
        cols = [0, int(width * 0.5), int(width * 0.85), width]
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = layer.output_shape if not isinstance(layer, InputLayer) else layer.output.shape
            rows.append((f"{layer.name} ({type(layer).__name__})", format_shape(shape), f"{layer.count_params()}"))

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
            raise ValueError(f"{type(self).__name__} {self.name!r} is not built yet: give it an Input (or an "
                             f"input_shape) or call fit/predict before {what}()")

    # --- computing -----------------------------------------------------------------------------

    def forward(self, inputs, training=False):
        """Run every layer in order. ``inputs``: one array per model input. Returns the output array
        (a buffer of the last layer, overwritten by the next call)."""
        values = {id(t): x for t, x in zip(self.inputs, _as_list(inputs))}
        for node in self._nodes:
            layer = node.layer
            args = [values[id(t)] for t in node.inputs]
            y = layer.forward(args[0] if len(args) == 1 else args, training=training)
            if layer.activity_regularizer is not None:
                layer.activity_forward(y)
            values[id(node.output)] = y
        self._values = values
        return values[id(self.outputs[0])]

    def backward(self, dy, from_logits=False, input_gradients=True):
        """Backpropagate dy = dL/d(output) through every layer, filling each layer's ``grads``.

        With ``from_logits`` dy is dL/dz for the output layer's pre-activation z. Returns the
        gradients with respect to the model inputs; with ``input_gradients=False`` (training) they
        are not needed, and layers that read only model inputs may skip computing them (None).
        """
        grads = {id(self.outputs[0]): dy}
        last = self._nodes[-1]
        input_ids = {id(t) for t in self.inputs}
        for node in reversed(self._nodes):
            layer = node.layer
            g = grads.pop(id(node.output))
            if layer.activity_regularizer is not None:
                g = layer.activity_backward(g, self._values[id(node.output)])
            kwargs = {"from_logits": True} if (from_logits and node is last) else {}
            if layer.can_skip_dx and not input_gradients and all(id(t) in input_ids for t in node.inputs):
                kwargs["need_dx"] = False
            dx = layer.backward(g, **kwargs)
            layer.add_regularization_gradients()
            if dx is None:
                continue
            for t, d in zip(node.inputs, dx if isinstance(dx, list) else [dx]):
                grads[id(t)] = grads[id(t)] + d if id(t) in grads else d
        result = [grads.get(id(t)) for t in self.inputs]
        return result[0] if len(result) == 1 else result

    def __call__(self, x, training=False):
        if isinstance(x, KerasTensor) or (isinstance(x, (list, tuple)) and any(isinstance(t, KerasTensor) for t in x)):
            raise TypeError("Calling a Model on symbolic tensors (nesting models) is not supported; "
                            "build one Model from the layers instead")
        xs = self._prepare_x(x, "x")
        with utils.compute_lock:
            return np.array(self.forward(xs if len(xs) > 1 else xs[0], training=training), copy=True)

    # --- files (written and read by autoenc.saving) ---------------------------------------------

    def save(self, filepath, overwrite=True, save_format=None, **kwargs):
        """Write the whole model (architecture, weights, optimizer state) to one file; see
        :func:`autoenc.saving.save_model`. ``save_format`` (Keras 2's 'tf' / 'h5') is accepted for
        pasted code and ignored with a warning: the file is always autoenc's own format."""
        if save_format is not None:
            warnings.warn(f"save_format={save_format!r} is ignored: autoenc writes its own format (an .npz "
                          "archive, see autoenc.saving) whatever the name", UserWarning, stacklevel=2)
        saving.save_model(self, filepath, overwrite=overwrite, **kwargs)

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
        feeding it; autoenc layers are called once per model, so a layer's name names its output).
        ``Model.from_config`` rebuilds the model from it (untrained weights)."""
        self._require_built("get_config")
        node_of = {id(node.layer): node for node in self._nodes}
        entries = []
        for layer in self.layers:   # Keras' order: every layer after the layers that feed it
            node = node_of.get(id(layer))
            entries.append(layer_entry(layer, [] if node is None else [t.node.layer.name for t in node.inputs]))
        return {"class_name": "Model", "name": self.name, "layers": entries,
                "inputs": [t.node.layer.name for t in self.inputs], "output": self.outputs[0].node.layer.name}

    @classmethod
    def from_config(cls, config, custom_objects=None, on_layer=None):
        """The model described by ``get_config()``'s dict (layers built, weights freshly initialised).
        ``custom_objects``: {class name: class} for layers that are not autoenc's own; ``on_layer(layer)``
        is called on each layer before it is built. A malformed config raises ConfigError (a
        ValueError) naming the entry."""
        custom_objects = dict(custom_objects or {})
        tensors = {}   # layer name -> its output tensor
        for k, entry in enumerate(config["layers"]):
            with config_field(f"architecture.layers[{k}]", entry):
                if entry["class_name"] == "InputLayer":
                    tensors[entry["config"]["name"]] = Input(**entry["config"])
                    continue
                layer = layer_from_entry(entry, custom_objects)
                if on_layer is not None:
                    on_layer(layer)
                inbound = [tensors[name] for name in entry["inbound"]]
                tensors[layer.name] = layer(inbound[0] if len(inbound) == 1 else inbound)
        with config_field("architecture.inputs / architecture.output"):
            return cls([tensors[name] for name in config["inputs"]], tensors[config["output"]], name=config["name"])


class ConfigError(ValueError):
    """A malformed architecture: the message names the entry (``architecture.layers[3] (Conv2D 'conv')``)."""

    names_its_field = True   # autoenc.saving quotes the message as it is


@contextlib.contextmanager
def config_field(where, entry=None):
    """Turn any error raised while building from the architecture entry ``where`` into a ConfigError
    naming it (KeyError and friends from a malformed file must not reach the user bare)."""
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
        where += f" ({entry.get('class_name')} {entry['config'].get('name')!r})"
    try:
        yield
    except ConfigError:
        raise
    except (KeyError, IndexError) as error:
        raise ConfigError(f"{where}: missing entry {error}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, MemoryError, RecursionError) as error:
        raise ConfigError(f"{where}: {type(error).__name__}: {error}") from None


def layer_entry(layer, inbound):
    """One layer of an architecture: {"class_name", "config", "inbound"}."""
    if isinstance(layer, InputLayer):
        config = {"name": layer.name, "shape": list(layer.batch_shape[1:]), "dtype": layer.dtype.name}
    else:
        config = layer.get_config()
    return {"class_name": type(layer).__name__, "config": config, "inbound": inbound}


def layer_from_entry(entry, custom_objects):
    """The layer an architecture entry describes: its class (autoenc's, or from ``custom_objects``),
    called with its config (regularizers and initializers deserialized). Names never import code."""
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
