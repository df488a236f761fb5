"""Keras 3's native ``.keras`` format, both ways: ``model.save("m.keras")`` writes the zip archive
Keras 3 writes, and ``autoenc.models.load_model("m.keras")`` builds a model from one Keras wrote.

A ``.keras`` file is a zip of three members (keras/src/saving/saving_lib.py, ``_save_model_to_fileobj``):

    metadata.json       {"keras_version": "3.15.1", "date_saved": "..."}
    config.json         the model serialized as Keras does (serialization_lib.serialize_keras_object):
                        {"module", "class_name": "Functional" | "Sequential", "config": {"name",
                        "layers": [...], "input_layers", "output_layers"}, "compile_config": {...}}
    model.weights.h5    the variables, in the h5 layout of autoenc.keras_files: layers/<path>/vars/0..,
                        optimizer/vars/0.. (iterations, learning rate, then the optimizer's slots)

Each layer of config.json is ``{"module", "class_name", "config", "registered_name", "name",
"inbound_nodes"}``; its config is the layer's ``get_config()``, which in autoenc already has Keras'
keys and defaults, with initializers, regularizers and the dtype as Keras serializes them. A nested
model is a layer entry whose config is its own model config. The optimizer's slots follow Keras'
``build``: for each kind of slot (``add_optimizer_variables`` with several names interleaves them per
variable) one array per trainable variable, in ``model.trainable_variables`` order; autoenc keeps
each slot as one flat buffer over the same variables, so writing slices it and reading concatenates.

Reading: the file is untrusted. Nothing is unpickled and nothing is imported: ``module`` and
``registered_name`` are never followed; a class name is looked up in an allow-list of autoenc's
layers (a Lambda layer, which carries Python bytecode, is refused, as is any class autoenc lacks,
naming it). Zip members are checked (count, names, declared sizes, inflation ratio) before they are
inflated (``keras_files.read_keras_archive``); every weight's shape is compared with the file's
before it is allocated (a config asking for ``filters=2**21`` allocates nothing), and the HDF5
hardening of ``autoenc.keras_files`` applies. Each refusal is a ValueError naming the file.
Needs h5py (``pip install "autoenc[h5]"``).
"""
import datetime
import inspect
import io
import json
import os
import zipfile

import numpy as np

from autoenc import __version__, files, initializers, keras_files, layers as layers_module, losses, optimizers
from autoenc.layers.base import InputLayer, Layer, snake_case

KERAS_VERSION = "3.15.1"   # the Keras whose format this writes (metadata.json); Keras 3.x reads it

# --- the allow-lists: class names from a file are only ever looked up here --------------------------

LAYER_CLASSES = {name: getattr(layers_module, name) for name in layers_module.__all__
                 if isinstance(getattr(layers_module, name), type)
                 and issubclass(getattr(layers_module, name), Layer)
                 and getattr(layers_module, name).__name__ == name and name not in ("Layer", "InputLayer")}
MODEL_CLASSES = ("Functional", "Sequential")
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in (optimizers.SGD, optimizers.RMSprop, optimizers.Adam,
                                                   optimizers.AdamW, optimizers.Adadelta, optimizers.Adagrad,
                                                   optimizers.Adamax, optimizers.Nadam)}
LOSS_CLASSES = {"MeanSquaredError": losses.MeanSquaredError, "MeanAbsoluteError": losses.MeanAbsoluteError,
                "BinaryCrossentropy": losses.BinaryCrossentropy}
INITIALIZER_CLASSES = {"Zeros": "zeros", "Ones": "ones", "Constant": "constant", "RandomUniform": "random_uniform",
                       "RandomNormal": "random_normal", "GlorotUniform": "glorot_uniform",
                       "GlorotNormal": "glorot_normal", "HeUniform": "he_uniform", "HeNormal": "he_normal",
                       "VarianceScaling": "variance_scaling"}
REGULARIZER_CLASSES = ("L1", "L2", "L1L2")
CODE_CLASSES = ("Lambda", "TFOpLambda", "TorchModuleWrapper", "JaxLayer", "FlaxLayer")

# Keras layer options autoenc has no argument for, accepted when they hold Keras' default
KERAS_ONLY_DEFAULTS = {"renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99, "quantization_config": None,
                       "lora_rank": None, "lora_alpha": None, "autocast": True, "synchronized": False}


def _slot_groups(optimizer):
    """The optimizer's slot names as Keras' ``build`` creates them: a list of groups, each group's
    slots interleaved per variable (autoenc's slot names; Keras calls Adam's m and v 'momentum' and
    'velocity', Adamax's u 'norm')."""
    kind = type(optimizer).__name__
    if kind == "SGD":
        return [("momentum",)] if optimizer.momentum else []
    if kind == "RMSprop":
        return ([("velocity",)] + ([("momentum",)] if optimizer.momentum > 0 else [])
                + ([("average_gradient",)] if optimizer.centered else []))
    return {"Adam": [("m", "v")], "AdamW": [("m", "v")], "Nadam": [("m", "v")], "Adamax": [("m", "u")],
            "Adadelta": [("accumulated_grad", "accumulated_delta_var")], "Adagrad": [("accumulator",)]}[kind]


def _import_h5py():
    return keras_files.import_h5py("Writing and reading .keras files")


# --- autoenc -> Keras -------------------------------------------------------------------------------

def _object(module, class_name, config):
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dtype_policy(dtype):
    return _object("keras", "DTypePolicy", {"name": np.dtype(dtype).name})


def _keras_value(key, value, where):
    """A config value of an autoenc layer as Keras serializes it."""
    if key.endswith("_initializer") and isinstance(value, dict):
        keras_name = {v: k for k, v in INITIALIZER_CLASSES.items()}[value["class_name"]]
        config = dict(value["config"])
        if keras_name in ("Zeros", "Ones") and config.get("seed") is None:
            config.pop("seed", None)
        return _object("keras.initializers", keras_name, config)
    if key.endswith("_regularizer") and isinstance(value, dict):
        return _object("keras.regularizers", value["class_name"], dict(value["config"]))
    if key == "activation" and isinstance(value, dict):
        raise ValueError(f"{where}: the activation {value} has parameters Keras cannot spell in a layer's "
                         "activation; use the activation layer (LeakyReLU, ReLU, ELU) instead")
    if key == "dtype":
        return _dtype_policy(value)
    return list(value) if isinstance(value, tuple) else value


def _layer_config(layer):
    where = f"layer {layer.name!r} ({type(layer).__name__})"
    return {k: _keras_value(k, v, where) for k, v in layer.get_config().items()}


def _shape(shape):
    return [None if d is None else int(d) for d in shape]


def _container_layers(model):
    """The layers of ``model`` in the order Keras lists them in its config and walks them in its
    weights file: a Sequential's without its InputLayer; a functional model's as its get_config
    lists them (InputLayers included)."""
    from autoenc.models import Sequential
    if isinstance(model, Sequential):
        return list(model.layers)
    known = {layer.name: layer for layer in model.layers}
    known.update({t.node.layer.name: t.node.layer for t in model.inputs})
    return [known[entry["config"]["name"]] for entry in model.get_config()["layers"]]


def walk(model):
    """[(layer, h5 path, parent model)] for every layer of ``model``, sub-models included and
    expanded in place (depth first, each in Keras' order): the order of Keras' ``model.layers``
    walk, hence of ``model.trainable_variables``. Paths as in ``autoenc.keras_files``."""
    out = []
    stack = [(model, "", iter(_container_layers(model)), {})]
    while stack:
        container, prefix, pending, used = stack[-1]
        layer = next(pending, None)
        if layer is None:
            stack.pop()
            continue
        kind = keras_class_name(layer)
        base = snake_case(kind)
        used[base] = used.get(base, -1) + 1
        path = f"{prefix}layers/{base}" + (f"_{used[base]}" if used[base] else "")
        out.append((layer, path, container))
        if kind in MODEL_CLASSES:
            stack.append((layer, path + "/", iter(_container_layers(layer)), {}))
    return out


def keras_class_name(layer):
    """The class name Keras gives ``layer``: 'Sequential', 'Functional' for any other model (a
    subclassed model is saved as the graph its call traced), else the layer's class name."""
    from autoenc.models import Model, Sequential
    if isinstance(layer, Sequential):
        return "Sequential"
    return "Functional" if isinstance(layer, Model) else type(layer).__name__


def _output_index(t):
    """Which output of its node the tensor ``t`` is (0 but for a sub-model of several outputs)."""
    return next(k for k, o in enumerate(t.node.outputs) if o is t)


def _tensor(t):
    # node 0: inbound nodes count only the calls inside this model (functional.serialize_node)
    return {"class_name": "__keras_tensor__",
            "config": {"shape": _shape(t.shape), "dtype": np.dtype(t.dtype).name,
                       "keras_history": [t.node.layer.name, 0, _output_index(t)]}}


def _input_entry(layer):
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": _shape(layer.batch_shape), "dtype": layer.dtype.name, "sparse": False,
                       "ragged": False, "name": layer.name, "optional": False}, "registered_name": None}


def _layer_entry(layer):
    """A layer (or nested model) as an entry of a Keras config, without its inbound nodes."""
    kind = keras_class_name(layer)
    if isinstance(layer, InputLayer):
        return _input_entry(layer)
    if kind == "Functional":
        return {"module": "keras.src.models.functional", "class_name": "Functional", "config": model_config(layer),
                "registered_name": "Functional", "build_config": {"input_shape": None}}
    if kind == "Sequential":
        return {"module": "keras", "class_name": "Sequential", "config": model_config(layer), "registered_name": None,
                "build_config": {"input_shape": _shape(layer.inputs[0].shape)}}
    entry = {"module": "keras.layers", "class_name": kind, "config": _layer_config(layer), "registered_name": None}
    if kind in AUTOENC_ONLY:   # no Keras built-in: a custom class Keras loads from custom_objects
        entry.update(module="autoenc.layers", registered_name=AUTOENC_ONLY[kind])
        if entry["config"].get("seed") is None:
            entry["config"].pop("seed", None)   # keras-io's Sampling takes no seed argument
    if layer.input_shape is not None:
        shape = layer.input_shape
        several = len(shape) > 0 and isinstance(shape[0], (tuple, list))   # a merging layer's list of shapes
        entry["build_config"] = {"input_shape": [_shape(s) for s in shape] if several else _shape(shape)}
    return entry


def _history(tensors):
    """Keras' input_layers / output_layers: one [name, node, index] triple, or a list of them. Here a
    Functional model's call is node 1: node 0 is its own construction (functional.get_config)."""
    triples = [[t.node.layer.name, 1 if keras_class_name(t.node.layer) == "Functional" else 0, _output_index(t)]
               for t in tensors]
    return triples[0] if len(triples) == 1 else triples


def model_config(model):
    """The ``config`` of ``model`` (an autoenc Model or Sequential, built) as Keras 3 writes it in
    config.json: a Sequential's {"name", "trainable", "dtype", "layers", "build_input_shape"}, a
    functional model's {"name", "trainable", "layers", "input_layers", "output_layers"}."""
    from autoenc.models import Sequential
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; build it (call it on data or give it an Input) "
                         "before saving it as .keras")
    if isinstance(model, Sequential):
        return {"name": model.name, "trainable": model.trainable, "dtype": _dtype_policy(model.dtype),
                "layers": [_input_entry(model.inputs[0].node.layer)] + [_layer_entry(l) for l in model.layers],
                "build_input_shape": _shape(model.inputs[0].shape)}
    inbound = {id(node.layer): node.inputs for node in model.nodes}
    entries = []
    for layer in _container_layers(model):
        entry = _layer_entry(layer)
        entry["name"] = layer.name
        ins = inbound.get(id(layer), [])
        args = [_tensor(t) for t in ins]
        entry["inbound_nodes"] = [] if not ins else [{"args": [args[0] if len(args) == 1 else args], "kwargs": {}}]
        entries.append(entry)
    return {"name": model.name, "trainable": model.trainable, "layers": entries,
            "input_layers": _history(model.inputs), "output_layers": _history(list(model.outputs))}


def keras_config(model, include_optimizer=True):
    """config.json of ``model`` as Keras 3 writes it, with its compile_config (optimizer, loss,
    metrics) when ``include_optimizer`` and the model is compiled."""
    kind = keras_class_name(model)
    config = _layer_entry(model)
    config.pop("build_config", None)
    config["build_config"] = {"input_shape": None} if kind == "Functional" else {
        "input_shape": _shape(model.inputs[0].shape)}
    if include_optimizer and model.compiled:
        opt = model.optimizer
        loss = model.loss.get_config()
        loss_name = loss.pop("name")
        default = type(model.loss)().get_config()
        default.pop("name")
        config["compile_config"] = {
            "optimizer": _object("keras.optimizers", type(opt).__name__, {"name": opt.name, **opt.get_config()}),
            "loss": loss_name if loss == default else _object("keras.losses", type(model.loss).__name__, loss),
            "loss_weights": None, "metrics": [name for name, _ in model.metrics] or None,
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}
    return config


def _trainable_variables(entries):
    """[(layer, param name)] in Keras' model.trainable_variables order."""
    return [(layer, n) for layer, _, _ in entries if keras_class_name(layer) not in MODEL_CLASSES
            for n in layer.trainable_names]


def _optimizer_arrays(model, entries):
    """optimizer/vars/0.. as Keras' optimizer.variables: iterations, learning rate, the slots per
    group per variable (see _slot_groups), Nadam's u_product last."""
    opt = model.optimizer
    variables = _trainable_variables(entries)
    state = opt.get_state()
    slots = state["slots"]
    params = [layer.params[n] for layer, n in variables]
    if slots is None:   # never stepped: what Keras' freshly built optimizer holds
        per_var = [opt.make_slots(p) for p in params]
    elif len(slots) == 1 and all(np.size(a) == sum(p.size for p in params) for a in slots[0].values()):
        # one flat buffer over the trainable variables in flat_layers order (autoenc's); sliced per variable
        offsets, total = {}, 0
        for layer in model.flat_layers():
            for n in layer.trainable_names:
                offsets[(id(layer), n)] = total
                total += layer.params[n].size
        per_var = [{name: np.asarray(a).reshape(-1)[offsets[(id(layer), n)]:offsets[(id(layer), n)] + p.size]
                    .reshape(p.shape) for name, a in slots[0].items()} for (layer, n), p in zip(variables, params)]
    elif len(slots) == len(params):
        per_var = slots
    else:
        raise ValueError(f"optimizer {opt.name!r} holds {len(slots)} slot sets for {len(params)} variables; "
                         "cannot write its state in Keras' layout (save with include_optimizer=False)")
    dtype = params[0].dtype if params else np.float32
    arrays = [np.array(state["iterations"], np.int64), np.array(opt.learning_rate, np.float32)]
    for group in _slot_groups(opt):
        for s in per_var:
            arrays.extend(np.asarray(s[name], dtype) for name in group)
    if type(opt).__name__ == "Nadam":
        arrays.append(np.array(opt.u_product(int(state["iterations"]), dtype), dtype))
    return arrays


def save_keras_model(model, filepath, overwrite=True, include_optimizer=True):
    """Write ``model`` to ``filepath`` (a name ending in .keras) as Keras 3 does, atomically: config.json
    (the architecture, and the compile config with ``include_optimizer``), metadata.json and
    model.weights.h5 (weights, and the optimizer's state with ``include_optimizer``).
    ``keras.saving.load_model(filepath)`` opens it, compiled and ready to ``fit`` on."""
    h5py = _import_h5py()
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise ValueError(f"A Keras 3 model file needs the .keras extension, got {filepath!r}")
    if os.path.isdir(filepath):
        raise ValueError(f"{filepath!r} is a directory; give a file name such as 'model.keras'")
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")
    config = keras_config(model, include_optimizer)
    entries = walk(model)
    names = [layer.name for layer, _, _ in entries if not isinstance(layer, InputLayer)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"The model has several layers named {twice}; Keras needs unique layer names")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_group("vars").attrs["name"] = model.name
        f.create_group("layers")
        for layer, path, _ in entries:
            group = f.create_group(f"{path}/vars")
            group.attrs["name"] = layer.name
            if keras_class_name(layer) not in MODEL_CLASSES:
                for k, p in enumerate(layer.params.values()):
                    group[str(k)] = np.asarray(p)
        if include_optimizer and model.compiled:
            group = f.create_group("optimizer/vars")
            group.attrs["name"] = model.optimizer.name
            for k, a in enumerate(_optimizer_arrays(model, entries)):
                group[str(k)] = a
    metadata = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "written_by": f"autoenc {__version__}"}

    def write(f):
        with zipfile.ZipFile(f, "w") as archive:   # stored, as Keras writes it
            archive.writestr("metadata.json", json.dumps(metadata))
            archive.writestr("config.json", json.dumps(config))
            archive.writestr("model.weights.h5", buffer.getvalue())

    files.atomic_write(filepath, write)


# --- Keras -> autoenc -------------------------------------------------------------------------------

# autoenc's layers that Keras has no built-in for, written as registered custom classes: Keras loads
# them with keras.saving.load_model(path, custom_objects={"autoenc>Sampling": YourSampling}).
AUTOENC_ONLY = {"Sampling": "autoenc>Sampling"}


class _Refused(ValueError):
    """A config entry autoenc cannot or will not build; the message names the entry."""


def _class(entry, where):
    """The class name of a config entry, refused unless it is in the allow-lists."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise _Refused(f"{where}: expected an object with a class_name, got {str(entry)[:200]}")
    name = entry["class_name"]
    registered = entry.get("registered_name")
    if name in CODE_CLASSES:
        raise _Refused(f"{where}: a {name} layer carries Python code (Keras stores its function as marshalled "
                       "bytecode); autoenc never runs code from a file. Rewrite it as a layer (docs/custom_layer.md)")
    if name in AUTOENC_ONLY and registered == AUTOENC_ONLY[name]:
        return name
    if registered not in (None, name, "Functional") or name not in LAYER_CLASSES and name not in MODEL_CLASSES \
            and name != "InputLayer":
        what = registered if registered not in (None, name) else name
        raise _Refused(f"{where}: layer class {what!r} is not one autoenc has (custom or registered classes are "
                       f"never imported from a file); autoenc has {sorted(LAYER_CLASSES)}")
    return name


def _plain(value, where):
    """A Keras config value as autoenc's config wants it (initializers, regularizers, dtype policies)."""
    if isinstance(value, dict) and "class_name" in value:
        name = value["class_name"]
        config = value.get("config") or {}
        if name in ("DTypePolicy", "FloatDTypePolicy"):
            return config.get("name")
        if name in INITIALIZER_CLASSES:
            cls = type(initializers.get(INITIALIZER_CLASSES[name]))
            return cls(**_accepted(cls, config, f"{where} ({name})"))
        if name in REGULARIZER_CLASSES:
            from autoenc import regularizers
            return regularizers.deserialize({"class_name": name, "config": config})
        if name == "function" and isinstance(config, str):   # a Keras activation given as a function
            return config
        raise _Refused(f"{where}: {name!r} is not an initializer, regularizer or dtype autoenc has")
    return value


def _accepted(cls, config, where, defaults=None):
    """``config`` with the keys ``cls.__init__`` (or Layer's) takes; any other key must hold None or its
    Keras default (``defaults``), else the option is refused, naming it."""
    params = set(inspect.signature(cls.__init__).parameters)
    if issubclass(cls, Layer):
        params |= set(inspect.signature(Layer.__init__).parameters)
    out = {}
    for key, value in config.items():
        if key in params:
            out[key] = value
        elif value is not None and (defaults or {}).get(key, None) != value:
            raise _Refused(f"{where}: option {key}={value!r} is not supported by autoenc")
    return out


def _leaf(entry, name, where):
    """An autoenc architecture entry (without inbound) from a Keras layer entry."""
    config = entry.get("config")
    if not isinstance(config, dict):
        raise _Refused(f"{where}: config should be an object")
    if name == "InputLayer":
        shape = config.get("batch_shape", config.get("batch_input_shape"))
        if not isinstance(shape, list) or len(shape) < 2:
            raise _Refused(f"{where}: InputLayer needs a batch_shape such as [null, 28, 28, 1], got {shape!r}")
        for key in ("sparse", "ragged", "optional"):
            if config.get(key):
                raise _Refused(f"{where}: InputLayer option {key}=True is not supported by autoenc")
        dtype = _plain(config.get("dtype") or "float32", where)
        return {"class_name": "InputLayer", "config": {"name": config.get("name"), "shape": shape[1:], "dtype": dtype}}
    cls = LAYER_CLASSES[name]
    config = {key: _plain(value, f"{where}.{key}") for key, value in config.items()}
    if config.get("data_format") == "channels_last":
        config.pop("data_format")   # autoenc is channels_last throughout; other values go to the layer, which refuses
    return {"class_name": name, "config": _accepted(cls, config, where, KERAS_ONLY_DEFAULTS)}


def _ref(history, several, where):
    """autoenc's reference to the tensor a keras_history [name, node, index] names: the name, or
    [name, k] for the k-th output of a sub-model of several outputs (``several``: {name: count})."""
    name, k = history[0], history[2]
    if name in several:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < several[name]:
            raise _Refused(f"{where}: reads output {k!r} of {name!r}, which has {several[name]} outputs")
        return [name, k]
    if k != 0:
        raise _Refused(f"{where}: reads output {k!r} of {name!r}, which has one output")
    return name


def _n_outputs(entry):
    """How many outputs a Functional entry of a Keras config declares (1 for anything else)."""
    body = entry.get("config") if isinstance(entry, dict) else None
    value = body.get("output_layers") if isinstance(body, dict) and entry.get("class_name") == "Functional" else None
    return len(value) if isinstance(value, list) and value and isinstance(value[0], list) else 1


def _inbound(entry, where, several):
    """The names of the layers feeding a functional model's entry (autoenc calls each layer once)."""
    nodes = entry.get("inbound_nodes", [])
    if not isinstance(nodes, list):
        raise _Refused(f"{where}: inbound_nodes should be a list")
    if len(nodes) > 1:
        raise _Refused(f"{where}: the layer is called {len(nodes)} times (a shared layer); autoenc calls each "
                       "layer once per model")
    if not nodes:
        return []
    node = nodes[0]
    if not isinstance(node, dict) or not isinstance(node.get("args"), list) or len(node["args"]) != 1:
        raise _Refused(f"{where}: unsupported inbound node {str(node)[:200]} (Keras 3 writes {{'args': [...]}})")
    kwargs = node.get("kwargs") or {}
    extra = {k: v for k, v in kwargs.items() if v is not None} if isinstance(kwargs, dict) else kwargs
    if extra:
        raise _Refused(f"{where}: the layer is called with {extra}, which autoenc does not support")
    arg = node["args"][0]
    tensors = arg if isinstance(arg, list) else [arg]
    names = []
    for t in tensors:
        history = t.get("config", {}).get("keras_history") if isinstance(t, dict) else None
        if not (isinstance(history, list) and len(history) == 3 and isinstance(history[0], str)):
            raise _Refused(f"{where}: an input tensor without a keras_history: {str(t)[:200]}")
        names.append(_ref(history, several, where))
    return names


def _history_names(value, where, several=None):
    triples = value if value and isinstance(value[0], list) else [value]
    if not all(isinstance(t, list) and len(t) == 3 and isinstance(t[0], str) for t in triples):
        raise _Refused(f"{where}: expected [name, node, index] triples, got {str(value)[:200]}")
    return [t[0] if several is None else _ref(t, several, where) for t in triples]


def translate(config, where="config.json"):
    """``(architecture, paths)``: the autoenc architecture (what ``Model.from_config`` / ``Sequential.
    from_config`` take) of a Keras model config (config.json's top-level object), and each layer's h5
    path ({layer name: path}, as ``walk`` computes them). Walks nested models with an explicit stack.
    Raises ValueError (``_Refused``) naming the entry for anything autoenc does not build."""
    paths = {}
    result = {}
    # (keras entry, where, h5 prefix, slot to fill: (dict, key))
    stack = [(config, where, "", (result, "model"))]
    while stack:
        entry, here, prefix, (target, key) = stack.pop()
        kind = _class(entry, here)
        if kind not in MODEL_CLASSES:
            raise _Refused(f"{here}: the model must be Functional or Sequential, got {kind!r}")
        body = entry.get("config")
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise _Refused(f"{here}: config.layers should be a list")
        arch = {"class_name": "Sequential" if kind == "Sequential" else "Model", "name": body.get("name"), "layers": []}
        used = {}
        several = {}   # sub-models of several outputs in this model: {name: count}
        for k, layer_entry in enumerate(body["layers"]):
            lw = f"{here}.layers[{k}]"
            name = _class(layer_entry, lw)
            config = layer_entry.get("config")
            layer_name = layer_entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
            if not isinstance(layer_name, str):
                raise _Refused(f"{lw}: a layer needs a name")
            lw += f" ({name} {layer_name!r})"
            if name == "InputLayer" and kind == "Sequential":
                if k != 0:
                    raise _Refused(f"{lw}: an InputLayer can only come first in a Sequential")
                arch["input"] = _leaf(layer_entry, name, lw)["config"]
                continue
            base = snake_case(name)
            used[base] = used.get(base, -1) + 1
            path = f"{prefix}layers/{base}" + (f"_{used[base]}" if used[base] else "")
            if layer_name in paths:
                raise _Refused(f"{lw}: a second layer named {layer_name!r}; autoenc needs unique layer names")
            paths[layer_name] = path
            inbound = [] if kind == "Sequential" else _inbound(layer_entry, lw, several)
            n_outputs = _n_outputs(layer_entry)
            if n_outputs > 1:
                several[layer_name] = n_outputs
            if name in MODEL_CLASSES:
                arch_entry = {"class_name": name, "config": None, "inbound": inbound}
                stack.append((layer_entry, lw, path + "/", (arch_entry, "config")))
            else:
                arch_entry = dict(_leaf(layer_entry, name, lw), inbound=inbound)
            arch["layers"].append(arch_entry)
        if kind == "Sequential":
            if "input" not in arch:
                shape = body.get("build_input_shape")
                arch["input"] = None if shape is None else {"name": None, "shape": list(shape)[1:]}
        else:
            arch["inputs"] = _history_names(body.get("input_layers"), f"{here}.input_layers")
            outputs = _history_names(body.get("output_layers"), f"{here}.output_layers", several)
            if len(outputs) > 1:
                arch["outputs"] = outputs
            else:
                arch["output"] = outputs[0]
        target[key] = arch
    return result["model"], paths


def _check_shapes_against(datasets, paths, path):
    """An ``on_layer`` hook: each weight a layer creates is compared with the file's array (same path,
    same position) before it is allocated."""
    def on_layer(layer):
        original = layer.add_weight
        where = paths.get(layer.name)
        found = datasets.get(where, (None, []))[1]
        count = [0]

        def add_weight(name, shape, *args, **kwargs):
            k = count[0]
            count[0] += 1
            if k >= len(found):
                raise ValueError(f"{path}: layer {layer.name!r} creates the weight {name!r}, which the file does "
                                 f"not hold (it has {len(found)} arrays at {where}/vars)")
            if tuple(found[k].shape) != tuple(shape):
                raise ValueError(f"{path}: {where}/vars/{k} has shape {found[k].shape}, but layer {layer.name!r} "
                                 f"as config.json describes it builds {name} of shape {tuple(shape)}")
            return original(name, shape, *args, **kwargs)

        layer.add_weight = add_weight
    return on_layer


def _loss_from(value, where):
    if isinstance(value, str):
        return losses.get(value)
    if isinstance(value, dict):
        name, config = value.get("class_name"), value.get("config") or {}
        if name == "function" and isinstance(config, str):
            return losses.get(config)
        if name in LOSS_CLASSES:
            cls = LOSS_CLASSES[name]
            config = {k: v for k, v in config.items() if k not in ("name", "dtype")
                      and (k, v) not in (("reduction", "sum_over_batch_size"), ("axis", -1), ("label_smoothing", 0.0))}
            return cls(**_accepted(cls, config, where))
    raise _Refused(f"{where}: loss {str(value)[:200]} is not one autoenc has ({sorted(LOSS_CLASSES)})")


def _compile(model, compile_config, datasets, where):
    """Compile ``model`` as compile_config says, and give its optimizer the state of optimizer/vars."""
    opt_entry = compile_config.get("optimizer")
    name = opt_entry.get("class_name") if isinstance(opt_entry, dict) else opt_entry
    if isinstance(opt_entry, str) and opt_entry.lower() in [k.lower() for k in OPTIMIZER_CLASSES]:
        optimizer = optimizers.get(opt_entry)
    elif isinstance(opt_entry, dict) and name in OPTIMIZER_CLASSES and opt_entry.get("registered_name") in (None, name):
        config = dict(opt_entry.get("config") or {})
        if isinstance(config.get("learning_rate"), dict):
            raise _Refused(f"{where}.optimizer: a learning-rate schedule ({config['learning_rate'].get('class_name')}) "
                           "is not supported; autoenc uses callbacks for schedules")
        optimizer = OPTIMIZER_CLASSES[name](**config)
    else:
        raise _Refused(f"{where}.optimizer: optimizer {str(name)[:100]!r} is not one autoenc has "
                       f"({sorted(OPTIMIZER_CLASSES)})")
    loss = _loss_from(compile_config.get("loss"), f"{where}.loss")
    metrics = compile_config.get("metrics")
    if metrics is not None and not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise _Refused(f"{where}.metrics: only metric names are read, got {str(metrics)[:200]}")
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    found = datasets.get("optimizer", (None, []))[1]
    if not found:
        return
    entries = walk(model)
    variables = _trainable_variables(entries)
    groups = _slot_groups(optimizer)
    expected = 2 + sum(len(g) for g in groups) * len(variables) + (type(optimizer).__name__ == "Nadam")
    if len(found) == 2 and expected > 2:   # an optimizer Keras never built (compiled, not trained): no slots yet
        groups = []
    elif len(found) != expected:
        raise _Refused(f"optimizer/vars holds {len(found)} arrays; {name} over the model's {len(variables)} "
                       f"trainable variables has {expected}")
    shapes = [()] * 2 + [layer.params[n].shape for g in groups for layer, n in variables for _ in g]
    shapes += [()] * (len(found) - len(shapes))
    for k, (ds, shape) in enumerate(zip(found, shapes)):
        if tuple(ds.shape) != tuple(shape):
            raise _Refused(f"optimizer/vars/{k} has shape {ds.shape}, expected {tuple(shape)}")
    arrays = [np.array(ds[()]) for ds in found]
    iterations = arrays[0]
    if iterations.dtype.kind not in "iuf" or not np.isfinite(iterations) or iterations < 0 \
            or iterations != int(iterations):
        raise _Refused(f"optimizer/vars/0 (iterations) should be a non-negative integer, got {iterations!r}")
    lr = float(arrays[1])
    if not (np.isfinite(lr) and lr > 0):
        raise _Refused(f"optimizer/vars/1 (learning rate) should be a positive number, got {lr!r}")
    optimizer.learning_rate = lr
    dtype = model.dtype
    order = [(layer, n) for layer in model.flat_layers() for n in layer.trainable_names]
    sizes = {(id(layer), n): layer.params[n].size for layer, n in order}
    offsets, total = {}, 0
    for layer, n in order:
        offsets[(id(layer), n)] = total
        total += sizes[(id(layer), n)]
    slots, k = {}, 2
    for group in groups:
        for layer, n in variables:
            for slot in group:
                buf = slots.setdefault(slot, np.zeros(total, dtype))
                a = arrays[k].astype(dtype)
                if not np.all(np.isfinite(a)):
                    raise _Refused(f"optimizer/vars/{k} ({slot} of {layer.name}/{n}) holds NaN or Inf")
                start = offsets[(id(layer), n)]
                buf[start:start + a.size] = a.reshape(-1)
                k += 1
    optimizer.set_state({"iterations": int(iterations), "slots": [slots] if slots else None})


def load_keras_model(filepath, custom_objects=None, compile=True):
    """The model in the Keras 3 ``.keras`` file at ``filepath``: its architecture (functional,
    Sequential, nested), weights and, when the file has them and ``compile``, its compile settings
    and optimizer state. See the module docstring for what is refused."""
    from autoenc.models import Model, Sequential
    _import_h5py()   # a clear ImportError before anything else
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No Keras file at {filepath}")
    if not zipfile.is_zipfile(filepath):
        raise ValueError(f"{filepath} is not a .keras file (not a zip archive)")
    if custom_objects:
        raise ValueError("custom_objects are not used for .keras files: every layer is autoenc's own")
    config, _, weights = keras_files.read_keras_archive(filepath, files.MAX_BYTES + keras_files.H5_OVERHEAD_BYTES)
    if config is None:
        raise ValueError(f"{filepath} has no config.json; to read its weights into a model, use model.load_weights")
    try:
        architecture, paths = translate(config)
    except _Refused as error:
        raise ValueError(f"{filepath}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RecursionError) as error:
        raise ValueError(f"{filepath}: malformed config.json: {type(error).__name__}: {error}") from None
    with keras_files.open_weights(filepath, 0, source=weights) as (datasets, _):
        keras_files.check_declared_sizes(datasets, filepath, files.MAX_BYTES)
        built = []
        check = _check_shapes_against(datasets, paths, filepath)

        def on_layer(layer):
            check(layer)
            built.append(layer)

        cls = Sequential if architecture["class_name"] == "Sequential" else Model
        try:
            model = cls.from_config(architecture, {}, on_layer=on_layer)
        except ValueError as error:   # the layer's own check (groups=2, a bad shape): name the file too
            message = str(error)
            raise ValueError(message if message.startswith(filepath) else f"{filepath}: {message}") from None
        finally:
            for layer in built:
                layer.__dict__.pop("add_weight", None)
        layers = [layer for layer in model.flat_layers() if layer.params]
        for layer in layers:
            found = datasets.get(paths.get(layer.name), (None, []))[1]
            if len(found) != len(layer.params):
                raise ValueError(f"{filepath}: layer {layer.name!r} has {len(layer.params)} weights, the file "
                                 f"{len(found)} at {paths.get(layer.name)}/vars")
        used = {paths[layer.name] for layer in layers} | {"optimizer"}
        unused = sorted(set(datasets) - used)
        if unused:
            raise ValueError(f"{filepath}: model.weights.h5 holds arrays the model does not use: {unused[:5]}")
        expected = 8 * sum(p.size for layer in layers for p in layer.params.values())
        arrays = keras_files.read_datasets({paths[l.name]: datasets[paths[l.name]][1] for l in layers},
                                           filepath, expected)
        try:
            model.set_weights([a for layer in layers for a in arrays[paths[layer.name]]])
        except ValueError as error:
            raise ValueError(f"{filepath}: {error}") from None
        compile_config = config.get("compile_config")
        if compile and isinstance(compile_config, dict) and compile_config.get("optimizer") is not None:
            try:
                _compile(model, compile_config, datasets, "config.json compile_config")
            except _Refused as error:
                raise ValueError(f"{filepath}: {error}") from None
    return model
