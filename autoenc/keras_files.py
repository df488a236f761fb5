"""Read the weights of a Keras 3 model file into an autoenc model of the same architecture.

Keras 3 writes weights with h5py in this layout (``model.save_weights("m.weights.h5")``; a ``.keras``
file is a zip archive holding the same layout as ``model.weights.h5``, beside ``config.json``):

    layers/<layer name>/vars/0     the first weight of the layer (kernel), e.g. (3, 3, 1, 16)
    layers/<layer name>/vars/1     the second (bias), e.g. (16,)
    layers/<layer name>/vars       an empty group for layers without weights (pooling, ...)

The groups are keyed by layer name, and HDF5 lists them alphabetically ('conv2d_10' before
'conv2d_2'), so the model's layer order is not in a ``.weights.h5`` file. Layers are therefore matched
by name when every weighted layer of the autoenc model has a namesake in the file; otherwise by
position: the order in ``config.json`` for a ``.keras`` file, or, for a ``.weights.h5`` file, Keras'
automatic names sorted by their numeric suffix (conv2d, conv2d_1, conv2d_2, ..., the order Keras
created them in). Every shape is checked before anything is copied. Needs h5py (``pip install
autoenc[h5]``).
"""
import io
import json
import os
import re
import zipfile

import numpy as np


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("Reading Keras weight files needs h5py: pip install 'autoenc[h5]'") from None
    return h5py


def _read_h5(fileobj):
    """{layer name: [arrays in Keras' order]} for every layer with weights, from an open h5 file."""
    h5py = _import_h5py()
    weights = {}
    with h5py.File(fileobj, "r") as f:
        if "layers" not in f:
            raise ValueError(f"not a Keras 3 weights file: no 'layers' group (top-level keys {sorted(f)}); "
                             "Keras 2 .h5 files are not supported")
        for name, group in f["layers"].items():
            if "layers" in group:
                raise ValueError(f"layer {name!r} in the file is a nested model, which autoenc does not support")
            vars_ = group.get("vars")
            if vars_ is None or not len(vars_):
                continue
            weights[name] = [np.array(vars_[str(k)]) for k in range(len(vars_))]
    return weights


def _natural_key(name):
    """'conv2d_10' -> ('conv2d', 10), 'conv2d' -> ('conv2d', 0): Keras' creation order within a type."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return m.group(1), int(m.group(2) or 0)


def read_keras_weights(path):
    """The weights in a Keras ``.weights.h5`` or ``.keras`` file.

    Returns ``(weights, order)``: ``weights`` maps each layer name to its arrays (kernel, bias), and
    ``order`` lists those names in the model's layer order (from config.json, or guessed from the names
    for a ``.weights.h5`` file, see the module docstring).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No Keras file at {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "model.weights.h5" not in names:
                raise ValueError(f"{path} is a zip archive without model.weights.h5 (it holds {names})")
            weights = _read_h5(io.BytesIO(archive.read("model.weights.h5")))
            config = json.loads(archive.read("config.json")) if "config.json" in names else None
        if config is not None:
            layers = config.get("config", {}).get("layers", [])
            order = [l["config"]["name"] for l in layers if l.get("config", {}).get("name") in weights]
            if sorted(order) == sorted(weights):
                return weights, order
    else:
        weights = _read_h5(path)
    return weights, sorted(weights, key=_natural_key)


def load_keras_weights(model, path):
    """Copy the weights of a Keras 3 ``.weights.h5`` or ``.keras`` file into ``model`` (an autoenc
    Model or Sequential of the same architecture). Raises ValueError if the layers or shapes differ."""
    weights, order = read_keras_weights(path)
    layers = [layer for layer in model.layers if layer.params]
    if all(layer.name in weights for layer in layers) and len(layers) == len(weights):
        pairs = [(layer, layer.name) for layer in layers]
    elif len(layers) == len(order):
        pairs = list(zip(layers, order))
    else:
        raise ValueError(f"{path} has weights for {len(weights)} layers ({order}), but the model has "
                         f"{len(layers)} layers with weights ({[l.name for l in layers]})")
    for layer, name in pairs:
        expected = [p.shape for p in layer.params.values()]
        found = [w.shape for w in weights[name]]
        if expected != found:
            raise ValueError(f"Keras layer {name!r} in {path} has weights of shapes {found}, but autoenc layer "
                             f"{layer.name!r} expects {expected}")
    # in model.layers order, as model.set_weights wants them: all checked before any is written
    model.set_weights([w for _, name in pairs for w in weights[name]])
