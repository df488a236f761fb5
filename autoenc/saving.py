"""Saving and loading whole models: architecture, weights, optimizer state and compile settings, one file.

    model.save("model.autoenc")
    model = autoenc.models.load_model("model.autoenc")   # ready to predict, or to fit on

The file is an uncompressed .npz (a zip of .npy arrays), so ``np.load(path)`` opens it too:

    format.json                 {"format": "autoenc.model", "version": 1, "sha256": "..."}
    model.json                  the architecture, compile settings, optimizer config, random state, metadata
    weights/<layer>/<param>     every parameter, e.g. weights/conv2d/kernel of shape (3, 3, 1, 16)
    optimizer/<k>/<slot>        the optimizer's state per parameter buffer, e.g. optimizer/0/m for Adam

JSON documents are stored as uint8 arrays of their UTF-8 bytes. The SHA-256 in format.json is taken
over every other member in name order (its name, dtype, shape, then its bytes), so any change to the
content is caught, not only what the zip's own CRC-32s catch.

The architecture lists each layer as ``{"class_name", "config", "inbound"}``: the layer's class, its
``get_config()`` and the names of the layers whose outputs feed it (autoenc layers are called once per
model, so a layer's name also names its output tensor). That is enough to rebuild any functional DAG;
a Sequential model is rebuilt with ``Sequential``.

The file also keeps the state of autoenc's random generator (``autoenc.utils.rng()``, used to shuffle
batches, drop out units and initialise new layers): loading it back makes training resumed from the
file continue exactly as the uninterrupted run would have.
"""
import hashlib
import json
import os

import numpy as np

from autoenc import initializers, layers as layers_module, losses, optimizers, regularizers, utils
from autoenc.layers.base import Input, InputLayer, Layer
from autoenc.files import atomic_write, read_npz

FORMAT = "autoenc.model"
VERSION = 1
_HEADER = "format.json"
_MODEL = "model.json"


# --- JSON inside .npz ---------------------------------------------------------------------------

def _json_default(value):
    # NumPy scalars and arrays sneak into configs (a layer's rate, a target shape); JSON wants Python
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} cannot be saved in a model file")


def _to_array(document):
    return np.frombuffer(json.dumps(document, default=_json_default).encode("utf-8"), dtype=np.uint8)


def _from_array(array):
    return json.loads(array.tobytes().decode("utf-8"))


def _digest(arrays):
    """SHA-256 over the members other than format.json: name, dtype and shape as JSON, then the bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == _HEADER:
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        h.update(a.tobytes())
    return h.hexdigest()


# --- architecture ---------------------------------------------------------------------------------

def _layer_entry(layer, inbound):
    if isinstance(layer, InputLayer):
        config = {"name": layer.name, "shape": list(layer.batch_shape[1:]), "dtype": layer.dtype.name}
    else:
        config = layer.get_config()
    return {"class_name": type(layer).__name__, "config": config, "inbound": inbound}


def _architecture(model):
    from autoenc.models.sequential import Sequential
    if isinstance(model, Sequential):
        first = model._input.node.layer if model._input is not None else None
        return {"class_name": "Sequential", "name": model.name,
                "input": None if first is None else _layer_entry(first, [])["config"],
                "layers": [_layer_entry(layer, []) for layer in model.layers]}
    model._require_built("save")
    node_of = {id(node.layer): node for node in model._nodes}
    entries = []
    for layer in model.layers:   # graph order: every layer after the layers that feed it
        node = node_of.get(id(layer))
        entries.append(_layer_entry(layer, [] if node is None else [t.node.layer.name for t in node.inputs]))
    return {"class_name": "Model", "name": model.name, "layers": entries,
            "inputs": [t.node.layer.name for t in model.inputs], "output": model.outputs[0].node.layer.name}


def _layer_from_entry(entry, custom_objects):
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


def _model_from_architecture(arch, custom_objects):
    from autoenc.models.model import Model
    from autoenc.models.sequential import Sequential
    if arch["class_name"] == "Sequential":
        stack = [] if arch["input"] is None else [Input(**arch["input"])]
        stack += [_layer_from_entry(entry, custom_objects) for entry in arch["layers"]]
        return Sequential(stack, name=arch["name"])
    tensors = {}   # layer name -> its output tensor
    for entry in arch["layers"]:
        if entry["class_name"] == "InputLayer":
            tensors[entry["config"]["name"]] = Input(**entry["config"])
            continue
        layer = _layer_from_entry(entry, custom_objects)
        inbound = [tensors[name] for name in entry["inbound"]]
        tensors[layer.name] = layer(inbound[0] if len(inbound) == 1 else inbound)
    return Model([tensors[name] for name in arch["inputs"]], tensors[arch["output"]], name=arch["name"])


# --- save -----------------------------------------------------------------------------------------

def save_model(model, filepath, overwrite=True, include_optimizer=True, metadata=None):
    """Write ``model`` to one file at ``filepath``, atomically (a crash mid-write leaves any previous
    file intact). Any name works; ``.autoenc`` is the convention.

    include_optimizer : also keep the compile settings (loss, metrics) and the optimizer's config and
        state (step count, Adam's moments), so ``fit`` continues where it stopped.
    metadata : a JSON-serialisable dict kept in the file, read back by ``load_metadata``.
    """
    filepath = os.fspath(filepath)
    if os.path.isdir(filepath):
        raise ValueError(f"{filepath!r} is a directory; give a file name such as 'model.autoenc'")
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")
    arrays = {}
    for layer in model.layers:
        for name, p in layer.params.items():
            arrays[f"weights/{layer.name}/{name}"] = np.asarray(p)
    document = {"architecture": _architecture(model), "compile": None, "optimizer": None,
                "random_state": utils.rng().bit_generator.state, "metadata": metadata or {},
                # layers with a generator of their own (Dropout(seed=...)) continue where they were
                "layer_random_states": {layer.name: layer._gen.bit_generator.state for layer in model.layers
                                        if getattr(layer, "_gen", None) is not None}}
    if include_optimizer and model.compiled:
        document["compile"] = {"loss": model.loss.get_config(), "metrics": [name for name, _ in model.metrics]}
        opt = model.optimizer
        state = opt.get_state()
        slots = state["slots"] or []
        document["optimizer"] = {"class_name": type(opt).__name__, "config": opt.get_config(),
                                 "iterations": int(state["iterations"]),
                                 "slots": None if state["slots"] is None else [sorted(s) for s in slots]}
        for k, s in enumerate(slots):
            for name, value in s.items():
                arrays[f"optimizer/{k}/{name}"] = np.asarray(value)
    arrays[_MODEL] = _to_array(document)
    arrays[_HEADER] = _to_array({"format": FORMAT, "version": VERSION, "sha256": _digest(arrays)})
    atomic_write(filepath, lambda f: np.savez(f, **arrays))


# --- load -----------------------------------------------------------------------------------------

def _read(filepath):
    """Every member of a model file, checked: format, version and checksum. Returns (document, arrays)."""
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No model file at {filepath!r}")
    if os.path.isdir(filepath):
        raise ValueError(f"{filepath!r} is a directory, not a model file")
    with open(filepath, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"{filepath!r} is not an autoenc model file (it is not a .npz archive; "
                         f"it starts with {magic!r})")
    try:
        arrays = read_npz(filepath)  # array headers checked against the bytes present, no unpickling
    except ValueError as error:
        raise ValueError(f"{filepath!r} is truncated or damaged and cannot be read as an autoenc model "
                         f"file: {error}") from None
    if _HEADER not in arrays or _MODEL not in arrays:
        raise ValueError(f"{filepath!r} is a .npz archive but not an autoenc model file "
                         f"(it holds {sorted(arrays)[:5]}, no {_HEADER!r})")
    try:
        header = _from_array(arrays[_HEADER])
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{filepath!r} has an unreadable {_HEADER}: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{filepath!r} is not an autoenc model file (format {header!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{filepath!r} is an autoenc model file of format version {header.get('version')!r}; "
                         f"this autoenc reads version {VERSION}")
    actual = _digest(arrays)
    if header.get("sha256") != actual:
        raise ValueError(f"{filepath!r} is corrupted: its checksum does not match its content "
                         f"(SHA-256 {actual}, expected {header.get('sha256')})")
    return _from_array(arrays[_MODEL]), arrays


def load_model(filepath, custom_objects=None, compile=True, restore_random_state=True):
    """The model saved at ``filepath`` by ``model.save``: same layers, names and weights, and (if saved
    and ``compile``) compiled with the same loss and an optimizer in the same state.

    restore_random_state : also restore autoenc's random generator as it was when the file was written,
        so that fitting on continues exactly as the uninterrupted run would have.

    Raises FileNotFoundError when there is no file, ValueError when it is not an autoenc model file,
    has another format version, is truncated, or fails its checksum.
    """
    document, arrays = _read(filepath)
    model = _model_from_architecture(document["architecture"], dict(custom_objects or {}))
    for layer in model.layers:
        missing = [f"weights/{layer.name}/{n}" for n in layer.params if f"weights/{layer.name}/{n}" not in arrays]
        if missing:
            raise ValueError(f"{os.fspath(filepath)!r} lacks the weights {missing}")
        layer.set_weights([arrays[f"weights/{layer.name}/{n}"] for n in layer.params])
    if compile and document["compile"] is not None:
        _compile_from(model, document, arrays, custom_objects or {})
    if restore_random_state:
        utils.rng().bit_generator.state = document["random_state"]
        for name, state in document.get("layer_random_states", {}).items():
            model.get_layer(name)._gen.bit_generator.state = state
    return model


def _compile_from(model, document, arrays, custom_objects):
    loss_config = dict(document["compile"]["loss"])
    name = loss_config.pop("name")
    loss = custom_objects.get(name) if name in custom_objects else type(losses.get(name))(**loss_config)
    opt_doc = document["optimizer"]
    cls = custom_objects.get(opt_doc["class_name"]) or getattr(optimizers, opt_doc["class_name"], None)
    if not (isinstance(cls, type) and issubclass(cls, optimizers.Optimizer)):
        raise ValueError(f"Unknown optimizer class {opt_doc['class_name']!r} in the model file")
    optimizer = cls(**opt_doc["config"])
    slots = None
    if opt_doc["slots"] is not None:
        slots = [{name: np.array(arrays[f"optimizer/{k}/{name}"]) for name in names}
                 for k, names in enumerate(opt_doc["slots"])]
    optimizer.set_state({"iterations": opt_doc["iterations"], "slots": slots})
    model.compile(optimizer=optimizer, loss=loss, metrics=document["compile"]["metrics"] or None)


def load_metadata(filepath):
    """The ``metadata`` dict given to ``save_model`` (checked like ``load_model``, without building)."""
    return _read(filepath)[0]["metadata"]
