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
import contextlib
import hashlib
import json
import os

import numpy as np

from autoenc import files, initializers, layers as layers_module, losses, optimizers, regularizers, utils
from autoenc.files import atomic_write, read_npz
from autoenc.layers.base import Input, InputLayer, Layer

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


def _model_from_architecture(arch, custom_objects, on_layer=None):
    """The model ``arch`` describes; ``on_layer(layer)`` is called on each layer before it is built."""
    from autoenc.models.model import Model
    from autoenc.models.sequential import Sequential
    on_layer = on_layer or (lambda layer: None)

    def make(entry, where):
        with _field(where + f" ({entry.get('class_name')} {entry['config'].get('name')!r})"):
            layer = _layer_from_entry(entry, custom_objects)
        on_layer(layer)
        return layer

    if arch["class_name"] == "Sequential":
        with _field("architecture.input"):
            stack = [] if arch["input"] is None else [Input(**_checked_input(arch["input"]))]
        stack += [make(entry, f"architecture.layers[{k}]") for k, entry in enumerate(arch["layers"])]
        with _field("architecture.layers (connecting the Sequential model)"):
            return Sequential(stack, name=arch["name"])
    tensors = {}   # layer name -> its output tensor
    for k, entry in enumerate(arch["layers"]):
        where = f"architecture.layers[{k}]"
        if entry["class_name"] == "InputLayer":
            with _field(where + " (InputLayer)"):
                tensors[entry["config"]["name"]] = Input(**_checked_input(entry["config"]))
            continue
        layer = make(entry, where)
        with _field(where + f" ({entry.get('class_name')} {layer.name!r}).inbound"):
            inbound = [tensors[name] for name in entry["inbound"]]
            tensors[layer.name] = layer(inbound[0] if len(inbound) == 1 else inbound)
    with _field("architecture.inputs / architecture.output"):
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
#
# A model file is untrusted. Loading reads the zip directory and every array header first (sizes
# checked against autoenc.files.MAX_BYTES and against the bytes present), then the two JSON documents,
# builds the layers while checking each weight's shape against the file's header before it is
# allocated, refuses members the model does not use, and only then inflates the arrays and checks the
# checksum. Anything malformed is a ValueError naming the file and the field.

MAX_JSON_BYTES = 64 * 2**20     # format.json and model.json: a few KB in practice
MAX_DIMENSION = 2**31 - 1       # an input dimension above this cannot be a real image or vector


class _Malformed(Exception):
    """Raised inside ``_field`` blocks; load_model turns it into a ValueError naming the file."""


@contextlib.contextmanager
def _field(where):
    """Report any error raised while reading the field ``where`` of model.json as _Malformed."""
    try:
        yield
    except _Malformed:
        raise
    except (KeyError, IndexError) as error:
        raise _Malformed(f"{where}: missing entry {error}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, MemoryError, RecursionError) as error:
        raise _Malformed(f"{where}: {type(error).__name__}: {error}") from None


def _checked_input(config):
    """An Input's config from the file, its shape checked (positive ints below MAX_DIMENSION)."""
    config = dict(config)
    shape = config.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              and 0 < d <= MAX_DIMENSION for d in shape):
        raise ValueError(f"shape must be a list of ints in 1..{MAX_DIMENSION}, got {shape!r}")
    return config


def _headers(filepath):
    """The shape and dtype of every member of the model file, checked before any data is read."""
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
        headers = files.read_npz_headers(filepath)   # sizes checked against the cap and the bytes present
    except ValueError as error:
        raise ValueError(f"{filepath!r} is truncated or damaged and cannot be read as an autoenc model "
                         f"file: {error}") from None
    if _HEADER not in headers or _MODEL not in headers:
        raise ValueError(f"{filepath!r} is a .npz archive but not an autoenc model file "
                         f"(it holds {sorted(headers)[:5]}, no {_HEADER!r})")
    for name in (_HEADER, _MODEL):
        shape, dtype = headers[name]
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_JSON_BYTES:
            raise ValueError(f"{filepath!r}: {name} should be at most {MAX_JSON_BYTES} bytes of UTF-8 text, "
                             f"it is {dtype} of shape {shape}")
    return headers


def _documents(filepath):
    """(headers, format.json, model.json) of the model file, format and version checked."""
    headers = _headers(filepath)
    try:
        small = read_npz(filepath, [_HEADER, _MODEL])
    except ValueError as error:
        raise ValueError(f"{filepath!r} is truncated or damaged and cannot be read as an autoenc model "
                         f"file: {error}") from None
    documents = []
    for name in (_HEADER, _MODEL):
        try:
            documents.append(_from_array(small[name]))
        except (ValueError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{filepath!r} has an unreadable {name}: {error}") from None
    header, document = documents
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{filepath!r} is not an autoenc model file (format {header!r})")
    if header.get("version") != VERSION:
        raise ValueError(f"{filepath!r} is an autoenc model file of format version {header.get('version')!r}; "
                         f"this autoenc reads version {VERSION}")
    if not isinstance(document, dict):
        raise ValueError(f"{filepath!r}: {_MODEL} should be a JSON object, got {type(document).__name__}")
    return headers, header, document


def _verified_arrays(filepath, header):
    """Every member, inflated (their sizes were checked by _headers), and the checksum verified."""
    try:
        arrays = read_npz(filepath)
    except ValueError as error:
        raise ValueError(f"{filepath!r} is truncated or damaged and cannot be read as an autoenc model "
                         f"file: {error}") from None
    actual = _digest(arrays)
    if header.get("sha256") != actual:
        raise ValueError(f"{filepath!r} is corrupted: its checksum does not match its content "
                         f"(SHA-256 {actual}, expected {header.get('sha256')})")
    return arrays


def _read(filepath):
    """Every member of a model file, checked: format, version and checksum. Returns (document, arrays)."""
    filepath = os.fspath(filepath)
    _, header, document = _documents(filepath)
    return document, _verified_arrays(filepath, header)


def _check_weights_against(headers, layer):
    """Make ``layer.add_weight`` compare each weight's shape with the file's array header before
    allocating it: a hostile architecture (filters=2**21) cannot allocate more than the file holds."""
    original = layer.add_weight

    def add_weight(name, shape, *args, **kwargs):
        key = f"weights/{layer.name}/{name}"
        if key not in headers:
            raise _Malformed(f"layer {layer.name!r} creates the weight {key}, which the file does not hold")
        if headers[key][0] != tuple(shape):
            try:
                config = json.dumps(layer.get_config(), default=_json_default)
            except Exception:   # noqa: BLE001  only for the message
                config = "?"
            raise _Malformed(f"{key} has shape {headers[key][0]} in the file, but layer {layer.name!r} as the "
                             f"architecture describes it ({config:.300}) builds {tuple(shape)}")
        return original(name, shape, *args, **kwargs)

    layer.add_weight = add_weight


def _random_states(document, model):
    """The generator states to restore, [(bit generator, state)], each checked on a scratch generator."""
    with _field("random_state"):
        states = [(utils.rng().bit_generator, document["random_state"], "random_state")]
    with _field("layer_random_states"):
        layer_states = dict(document.get("layer_random_states", {}))
    for name, state in layer_states.items():
        with _field(f"layer_random_states.{name}"):
            states.append((model.get_layer(name)._gen.bit_generator, state, f"layer_random_states.{name}"))
    for generator, state, where in states:
        with _field(where):
            type(generator)().state = state
    return [(generator, state) for generator, state, _ in states]


def load_model(filepath, custom_objects=None, compile=True, restore_random_state=True):
    """The model saved at ``filepath`` by ``model.save``: same layers, names and weights, and (if saved
    and ``compile``) compiled with the same loss and an optimizer in the same state.

    restore_random_state : also restore autoenc's random generator as it was when the file was written,
        so that fitting on continues exactly as the uninterrupted run would have.

    Raises FileNotFoundError when there is no file, ValueError (naming the file and, for a malformed
    architecture, the field) when it is not an autoenc model file, has another format version, is
    truncated, declares more than ``autoenc.files.MAX_BYTES``, describes weights other than it holds,
    holds members the model does not use, or fails its checksum. Sizes are checked before anything
    is allocated or inflated.
    """
    filepath = os.fspath(filepath)
    headers, header, document = _documents(filepath)
    try:
        with _field("architecture"):
            arch = document["architecture"]
            if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
                raise ValueError(f"architecture.layers should be a list, got {arch!r:.200}")
            if not all(isinstance(e, dict) and isinstance(e.get("config"), dict) for e in arch["layers"]):
                raise ValueError("every entry of architecture.layers needs a class_name and a config object")
        built = []

        def on_layer(layer):
            _check_weights_against(headers, layer)
            built.append(layer)

        try:
            with _field("architecture"):
                model = _model_from_architecture(arch, dict(custom_objects or {}), on_layer)
        finally:
            for layer in built:
                layer.__dict__.pop("add_weight", None)
        expected = {_HEADER, _MODEL}
        for layer in model.layers:
            missing = [f"weights/{layer.name}/{n}" for n in layer.params if f"weights/{layer.name}/{n}" not in headers]
            if missing:
                raise _Malformed(f"architecture: the file lacks the weights {missing}")
            expected.update(f"weights/{layer.name}/{n}" for n in layer.params)
        compiled = compile and document.get("compile") is not None
        with _field("optimizer.slots"):
            opt_doc = document.get("optimizer")
            slots = opt_doc.get("slots") if isinstance(opt_doc, dict) else None
            expected.update(f"optimizer/{k}/{name}" for k, names in enumerate(slots or []) for name in names)
        unused = sorted(set(headers) - expected)
        if unused:
            raise ValueError(f"{filepath!r} holds arrays the model does not use: {unused[:5]}; refused "
                             "before reading them")
        for key in sorted(expected - {_HEADER, _MODEL}):
            if key not in headers:
                raise ValueError(f"{filepath!r} lacks the array {key} that {_MODEL} lists")
            if headers[key][1].kind != "f":
                raise ValueError(f"{filepath!r}: {key} holds {headers[key][1]} data; weights and optimizer "
                                 "state are float arrays")
        arrays = _verified_arrays(filepath, header)
        weights = {layer: [arrays[f"weights/{layer.name}/{n}"] for n in layer.params] for layer in model.layers}
        for layer, values in weights.items():   # everything checked, then assigned
            for name, w in zip(layer.params, values):
                if not np.all(np.isfinite(w)):
                    raise ValueError(f"{filepath!r}: weights/{layer.name}/{name} contains NaN or Inf")
        for layer, values in weights.items():
            layer.set_weights(values)
        if compiled:
            _compile_from(model, document, arrays, custom_objects or {})
        if restore_random_state:
            for generator, state in _random_states(document, model):
                generator.state = state
    except _Malformed as error:
        raise ValueError(f"{filepath!r} has a malformed {_MODEL}: {error}") from None
    return model


def _compile_from(model, document, arrays, custom_objects):
    with _field("compile.loss"):
        loss_config = dict(document["compile"]["loss"])
        name = loss_config.pop("name")
        loss = custom_objects.get(name) if name in custom_objects else type(losses.get(name))(**loss_config)
    with _field("optimizer"):
        opt_doc = document["optimizer"]
        cls = custom_objects.get(opt_doc["class_name"]) or getattr(optimizers, opt_doc["class_name"], None)
        if not (isinstance(cls, type) and issubclass(cls, optimizers.Optimizer)):
            raise ValueError(f"Unknown optimizer class {opt_doc['class_name']!r} in the model file")
        optimizer = cls(**opt_doc["config"])
        iterations = opt_doc["iterations"]
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
        slots = None
        if opt_doc["slots"] is not None:
            slots = [{name: np.array(arrays[f"optimizer/{k}/{name}"]) for name in names}
                     for k, names in enumerate(opt_doc["slots"])]
        optimizer.set_state({"iterations": iterations, "slots": slots})
    with _field("compile.metrics"):
        model.compile(optimizer=optimizer, loss=loss, metrics=document["compile"]["metrics"] or None)


def load_metadata(filepath):
    """The ``metadata`` dict given to ``save_model`` (checked like ``load_model``, without building)."""
    metadata = _read(filepath)[0].get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError(f"{os.fspath(filepath)!r} has a malformed {_MODEL}: metadata should be an object, "
                         f"got {metadata!r:.200}")
    return metadata
