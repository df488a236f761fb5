"""Sequential: a stack of layers, each feeding the next."""
from autoenc.layers.base import Input, InputLayer, KerasTensor, Layer
from autoenc.models.model import Model, config_field, layer_entry, layer_from_entry


class Sequential(Model):
    """``Sequential([layer, ...])`` or ``.add(layer)``. Built as soon as the input shape is known: from
    an ``Input``/``InputLayer`` first, a first layer's ``input_shape=`` (or a built first model's
    input), or the first data seen. An entry may be a model (``Sequential([encoder, decoder])``): it is
    nested, sharing its layers and weights."""

    _default_name = "sequential"

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self._stack = []
        self._input = None
        for layer in layers or []:
            self.add(layer, rebuild=False)
        if self._input is not None and self._stack:
            self.build()   # once, not after every layer

    def add(self, layer, rebuild=True):
        """Append a layer (or an Input tensor, which must come first). ``rebuild=False`` leaves
        connecting the layers to a later ``build()``."""
        if isinstance(layer, KerasTensor) and isinstance(layer.node.layer, InputLayer):
            layer = layer.node.layer
        if isinstance(layer, InputLayer):
            if self._stack or self._input is not None:
                raise ValueError("An Input can only be the first entry of a Sequential model")
            self._input = layer.output
            return
        if not isinstance(layer, (Layer, Model)):
            raise TypeError(f"Sequential.add expects a Layer or a Model, got {layer!r}")
        if layer is self:
            raise ValueError(f"Sequential {self.name!r} cannot contain itself")
        if not self._stack and self._input is None:
            if isinstance(layer, Model):   # a built sub-model first: its input is the Sequential's
                if layer.built:
                    if len(layer.inputs) != 1:
                        raise ValueError(f"A Sequential model has one input; model {layer.name!r} has "
                                         f"{len(layer.inputs)}")
                    self._input = Input(shape=layer.inputs[0].shape[1:], dtype=layer.dtype)
            elif layer._input_shape_arg is not None:
                self._input = Input(shape=layer._input_shape_arg, dtype=layer.dtype)
        self._stack.append(layer)
        self.built = False
        if self._input is not None and rebuild:
            self.build()

    def pop(self):
        """Remove the last layer."""
        if not self._stack:
            raise ValueError("There are no layers to pop")
        layer = self._stack.pop()
        self.built = False
        if self._input is not None and self._stack:
            self.build()
        return layer

    def build(self, input_shape=None):
        """Connect the layers from an input of ``input_shape`` (batch entry included or not)."""
        if self._input is None:
            if input_shape is None:
                raise ValueError("Sequential.build needs an input_shape")
            shape = tuple(input_shape)
            self._input = Input(shape=shape[1:] if shape[0] is None else shape)
        if not self._stack:
            return
        self.dtype = self._input.dtype
        x = self._input
        for layer in self._stack:
            x = layer(x)
        self._init_graph(self._input, x)
        # Keras' Sequential.layers does not list the InputLayer
        self._layers = [l for l in self._layers if not isinstance(l, InputLayer)]

    @property
    def layers(self):
        return list(self._layers) if self.built else list(self._stack)

    def get_config(self):
        """The architecture as a JSON-able dict: ``{"class_name": "Sequential", "name", "input",
        "layers"}`` (``input``: the Input's config, or None when the input shape is not known yet)."""
        first = self._input.node.layer if self._input is not None else None
        return {"class_name": "Sequential", "name": self.name,
                "input": None if first is None else layer_entry(first, [])["config"],
                "layers": [layer_entry(layer, []) for layer in self.layers]}

    @classmethod
    def from_config(cls, config, custom_objects=None, on_layer=None):
        """The model ``get_config()`` describes (weights freshly initialised); ``on_layer(layer)`` is
        called on each layer before it is built. A malformed config raises ConfigError naming the entry."""
        custom_objects = dict(custom_objects or {})
        with config_field("architecture.input"):
            stack = [] if config["input"] is None else [Input(**config["input"])]
        for k, entry in enumerate(config["layers"]):
            with config_field(f"architecture.layers[{k}]", entry):
                layer = layer_from_entry(entry, custom_objects, on_layer)
            stack.append(layer)
        with config_field("architecture.layers (connecting the Sequential model)"):
            return cls(stack, name=config["name"])
