"""Model files: whole models (architecture, weights, optimizer state, compile settings, one file) and
weights files. The methods of the model delegate here, as Keras' do to its saving module:

    model.save("model.autoenc")                           # save_model
    model = autoenc.models.load_model("model.autoenc")   # load_model_file, given Model.from_config
    model.save_weights("w.npz"); model.load_weights("w.npz")

This module knows a model only through its public face (``layers``, ``get_config``, ``set_weights``,
``compiled``, ``optimizer``...) and never imports autoenc.models: rebuilding a model from its
architecture is the models' own job (``Model.from_config``, ``autoenc.models.load_model``).

The file is an uncompressed .npz (a zip of .npy arrays), so ``np.load(path)`` opens it too:

    format.json                 {"format": "autoenc.model", "version": 1, "sha256": "..."}
    model.json                  the architecture, compile settings, optimizer config, random state, metadata
    weights/<layer>/<param>     every parameter, e.g. weights/conv2d/kernel of shape (3, 3, 1, 16)
    optimizer/<k>/<slot>        the optimizer's state per parameter buffer, e.g. optimizer/0/m for Adam

JSON documents are stored as uint8 arrays of their UTF-8 bytes. The SHA-256 in format.json is taken
over every other member in name order (its name, dtype, shape, then its bytes), so any change to the
content is caught, not only what the zip's own CRC-32s catch.

The architecture is the model's ``get_config()``: it lists each layer as ``{"class_name", "config",
"inbound"}``: the layer's class, its ``get_config()`` and the names of the layers whose outputs feed it
(autoenc layers are called once per model, so a layer's name also names its output tensor). That is
enough to rebuild any functional DAG; a Sequential model is rebuilt with ``Sequential``. A nested model
(format version 2) is one entry of class "Functional" or "Sequential" whose config is its own
architecture; its layers' weights are stored under their own names like the others' (``flat_layers``),
so the encoder and decoder of a loaded autoencoder are models sharing its layers. A model of several
outputs (format version 3) lists ``"outputs"`` instead of ``"output"``, and names the k-th output of a
sub-model of several outputs ``[name, k]``; a VAE's architecture is its graph with class_name "VAE"
and its beta, and its compile settings have no loss. Files without these are still written as
version 1 or 2.

The file also keeps the state of autoenc's random generator (``autoenc.utils.rng()``, used to shuffle
batches, drop out units and initialise new layers): loading it back makes training resumed from the
file continue exactly as the uninterrupted run would have.
"""
import hashlib
import json
import os

import numpy as np

from autoenc import files, losses, optimizers, utils
from autoenc.files import atomic_write, read_npz

FORMAT = "autoenc.model"
VERSION = 3            # the newest format this autoenc writes and reads
READABLE_VERSIONS = (1, 2, 3)
# version 3 adds models of several outputs ("outputs" and [name, k] references) and the VAE (no loss)
# version 2 adds nested models (an architecture entry of class "Functional" or "Sequential" whose config is
# the sub-model's own architecture); a model without them is still written as version 1, readable by any
NESTED_CLASS_NAMES = ("Functional", "Sequential")
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
    architecture = model.get_config()   # first: it refuses a model that is not built
    layers = model.flat_layers()
    _check_unique_names(layers)
    arrays = {}
    for layer in layers:
        for name, p in layer.params.items():
            arrays[f"weights/{layer.name}/{name}"] = np.asarray(p)
    document = {"architecture": architecture, "compile": None, "optimizer": None,
                "random_state": utils.rng().bit_generator.state, "metadata": metadata or {},
                # layers with a generator of their own (Dropout(seed=...)) continue where they were
                "layer_random_states": {layer.name: layer._gen.bit_generator.state for layer in layers
                                        if getattr(layer, "_gen", None) is not None}}
    if include_optimizer and model.compiled:
        document["compile"] = {"loss": None if model.loss is None else model.loss.get_config(),   # VAE: None
                               "metrics": [name for name, _ in model.metrics]}
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
    version = 3 if _has_several_outputs(architecture) else 2 if _nests_models(architecture) else 1
    arrays[_HEADER] = _to_array({"format": FORMAT, "version": version, "sha256": _digest(arrays)})
    atomic_write(filepath, lambda f: np.savez(f, **arrays))


def _nests_models(architecture):
    """Whether an architecture (a model's get_config()) holds a nested model entry."""
    return any(isinstance(e, dict) and e.get("class_name") in NESTED_CLASS_NAMES
               for e in architecture.get("layers", []))


def _has_several_outputs(architecture):
    """Whether an architecture or one of its nested models has several outputs, or is a VAE."""
    return architecture.get("class_name") == "VAE" or "outputs" in architecture or any(
        isinstance(e, dict) and e.get("class_name") in NESTED_CLASS_NAMES and _has_several_outputs(e["config"])
        for e in architecture.get("layers", []))


def _check_unique_names(layers):
    """Weights are stored by layer name: two layers of one name (two loaded copies of a model nested
    in one) would overwrite each other's weights."""
    seen = set()
    for layer in layers:
        if not (layer.params or getattr(layer, "_gen", None) is not None):   # Inputs: nothing stored by name
            continue
        if layer.name in seen:
            raise ValueError(f"The model has two layers named {layer.name!r} (inside different sub-models?); "
                             "files store weights by layer name: give the layers unique names")
        seen.add(layer.name)


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
    """Raised inside ``_field`` blocks; load_model_file turns it into a ValueError naming the file."""


def _field(where):
    """Report any error raised while reading the field ``where`` of model.json as _Malformed."""
    return utils.field_errors(where, _Malformed)


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
    if header.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{filepath!r} is an autoenc model file of format version {header.get('version')!r}; "
                         f"this autoenc reads versions {', '.join(map(str, READABLE_VERSIONS))}")
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


def read_model_file(filepath):
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
            layer = next((l for l in model.flat_layers() if l.name == name), None)
            states.append((layer._gen.bit_generator, state, f"layer_random_states.{name}"))
    for generator, state, where in states:
        with _field(where):
            type(generator)().state = state
    return [(generator, state) for generator, state, _ in states]


def load_model_file(filepath, from_config, custom_objects=None, compile=True, restore_random_state=True):
    """The model saved at ``filepath`` by ``model.save``, built by ``from_config(architecture,
    custom_objects, on_layer)`` (``autoenc.models.load_model`` passes Model's or Sequential's), with its
    weights, (if saved and ``compile``) its compile settings and optimizer state, and (with
    ``restore_random_state``) autoenc's random generator as it was when the file was written, so that
    fitting on continues exactly as the uninterrupted run would have.

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
            if arch.get("class_name") == "Sequential" and arch.get("input") is not None:
                if not isinstance(arch["input"], dict):
                    raise ValueError(f"architecture.input should be an object, got {arch['input']!r:.200}")
        built = []

        def on_layer(layer):
            _check_weights_against(headers, layer)
            built.append(layer)

        try:
            with _field("architecture"):
                model = from_config(arch, dict(custom_objects or {}), on_layer)
        finally:
            for layer in built:
                layer.__dict__.pop("add_weight", None)
        expected = {_HEADER, _MODEL}
        layers = model.flat_layers()
        for layer in layers:
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
        try:   # all checked (shapes, finiteness after the cast), then all assigned
            model.set_weights([arrays[f"weights/{layer.name}/{n}"] for layer in layers for n in layer.params])
        except ValueError as error:
            raise ValueError(f"{filepath!r}: {error}") from None
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
        loss = None   # a model with a loss of its own (the VAE)
        if document["compile"]["loss"] is not None:
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
    """The ``metadata`` dict given to ``save_model`` (checked like ``load_model_file``, without building)."""
    metadata = read_model_file(filepath)[0].get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError(f"{os.fspath(filepath)!r} has a malformed {_MODEL}: metadata should be an object, "
                         f"got {metadata!r:.200}")
    return metadata


# --- weights files --------------------------------------------------------------------------------

def save_weights(model, filepath, overwrite=True):
    """Write every parameter of ``model`` to an .npz file at ``filepath`` (keys 'layer/param', and
    '__order__' listing them in get_weights order), atomically."""
    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")
    layers = model.flat_layers()
    _check_unique_names(layers)
    arrays = {f"{layer.name}/{n}": p for layer in layers for n, p in layer.params.items()}
    arrays["__order__"] = np.array(list(arrays))
    atomic_write(filepath, lambda f: np.savez(f, **arrays))


def load_weights(model, filepath):
    """Read parameters written by ``save_weights`` into ``model`` (matched by position, shapes checked),
    or from a Keras ``.weights.h5`` / ``.keras`` file of the same architecture (needs h5py). All or
    nothing: every array is checked (see ``model.set_weights``) before any is written."""
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No weights file at {filepath}")
    if filepath.endswith((".h5", ".keras")):
        from autoenc.keras_files import load_keras_weights
        return load_keras_weights(model, filepath)
    try:
        # float64 at most, plus the names: a bigger file cannot hold this model's weights
        arrays = read_npz(filepath, max_bytes=8 * model.count_params() + 2**20 + 300 * len(model.weights))
    except ValueError as e:
        raise ValueError(f"{filepath} is not a readable autoenc weights file: {e}") from None
    if "__order__" not in arrays or arrays["__order__"].dtype.kind != "U":
        raise ValueError(f"{filepath} is not an autoenc weights file (it has no '__order__' entry; "
                         f"it holds {sorted(arrays)})")
    order = [str(k) for k in arrays["__order__"]]
    if set(order) - set(arrays):
        raise ValueError(f"{filepath} lists weights {sorted(set(order) - set(arrays))} that it does not hold")
    model.set_weights([arrays[k] for k in order])
