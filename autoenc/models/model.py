"""The functional Model: a graph of layer calls from symbolic inputs to one output.

``Model(inputs, outputs)`` walks back from ``outputs`` through the nodes that the layer calls
recorded, orders them so every node comes after its inputs, and from then on runs ``forward`` in
that order and ``backward`` in the reverse order, adding up gradients where a tensor feeds
several layers. Training (compile, fit, ...) lives in :mod:`autoenc.models.training`.
"""
import numpy as np

from autoenc.layers.base import InputLayer, KerasTensor, format_shape, unique_name
from autoenc.models.training import Trainer


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _topological_nodes(outputs):
    """Every node the outputs depend on, each after the nodes that produce its inputs."""
    order, done, active = [], set(), set()

    def visit(node):
        if id(node) in done:
            return
        if id(node) in active:
            raise ValueError("The layer graph has a cycle")
        active.add(id(node))
        for t in node.inputs:
            visit(t.node)
        active.discard(id(node))
        done.add(id(node))
        order.append(node)

    for t in outputs:
        visit(t.node)
    return order


def _keras_order(nodes, outputs):
    """The nodes in the order Keras lists a functional model's layers: by decreasing depth (the longest
    path to the output), ties by when a walk back from the output first reaches them.

    ``nodes`` must be in topological order (producers first), as ``_topological_nodes`` returns them.
    """
    first_seen = {}

    def visit(node):
        if id(node) not in first_seen:
            first_seen[id(node)] = len(first_seen)
            for t in node.inputs:
                visit(t.node)

    for t in outputs:
        visit(t.node)
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
        layers = []
        for node in nodes:
            if any(node.layer is l for l in layers):
                raise ValueError(f"Layer {node.layer.name!r} is called more than once in this model; "
                                 "autoenc does not support shared layers")
            layers.append(node.layer)
        self.inputs, self.outputs = inputs, outputs
        self._nodes = [n for n in nodes if not isinstance(n.layer, InputLayer)]
        # ``layers`` (and so get_weights) in Keras' order, which differs from ``nodes`` for branching graphs
        self._layers = [node.layer for node in _keras_order(nodes, outputs)]
        self.built = True
        self.dtype = outputs[0].dtype

    # --- structure -----------------------------------------------------------------------------

    @property
    def layers(self):
        return list(self._layers) if self.built else []

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
        """Copy ``weights`` (as get_weights returns them) into the model's parameters."""
        weights = list(weights)
        expected = [w.shape for w in self.weights]
        if len(weights) != len(expected):
            raise ValueError(f"set_weights expects {len(expected)} arrays, got {len(weights)}")
        for k, (w, shape) in enumerate(zip(weights, expected)):
            if np.shape(w) != shape:
                raise ValueError(f"set_weights: array {k} has shape {np.shape(w)}, expected {shape}")
        k = 0
        for layer in self.layers:
            n = len(layer.params)
            layer.set_weights(weights[k:k + n])
            k += n

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
        return np.array(self.forward(xs if len(xs) > 1 else xs[0], training=training), copy=True)

    def get_config(self):
        return {"name": self.name, "layers": [(type(l).__name__, l.get_config()) for l in self.layers]}
