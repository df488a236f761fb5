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

The file is untrusted: only plain float datasets stored in the file itself are read. External
storage, external links, soft links and virtual datasets (which would read other local files into the
model) are refused, and every size (a zip member's, a dataset's shape) is checked against a cap and
against the model's weights before anything is inflated or read. Each refusal is a ValueError naming
the file and the path inside it.
"""
import contextlib
import io
import json
import math
import os
import re
import zipfile
import zlib

import numpy as np

from autoenc import files

# config.json of a .keras archive: the architecture, a few KB to a few MB
MAX_CONFIG_BYTES = 16 * 2**20
# HDF5's own bytes (superblock, groups, attributes) allowed above the weights in model.weights.h5
H5_OVERHEAD_BYTES = 16 * 2**20


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("Reading Keras weight files needs h5py: pip install 'autoenc[h5]'") from None
    return h5py


def _member(group, key, path):
    """group[key], after checking that the link to it is a hard link (no file outside this one)."""
    h5py = _import_h5py()
    where = f"{group.name.rstrip('/')}/{key}"
    link = group.get(key, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise ValueError(f"{path}: {where} is an external link to {link.filename}:{link.path}; "
                         "weights are read only from the file itself")
    if isinstance(link, h5py.SoftLink):
        raise ValueError(f"{path}: {where} is a soft link to {link.path}; weights are read only from plain datasets")
    if not isinstance(link, h5py.HardLink):
        raise ValueError(f"{path}: {where} is a {type(link).__name__}, not a plain group or dataset")
    return group[key]


def _check_dataset(ds, path):
    """Refuse anything but a plain float dataset whose bytes are in the file itself."""
    h5py = _import_h5py()
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: {ds.name} is a group, where a weight array should be")
    if ds.is_virtual:
        raise ValueError(f"{path}: {ds.name} is a virtual dataset (its data is in other files); refused")
    if ds.external:
        raise ValueError(f"{path}: {ds.name} uses external storage ({ds.external[0][0]!r}, ...); "
                         "weights are read only from the file itself")
    if ds.dtype.kind != "f" or ds.dtype.fields is not None or ds.shape is None:
        raise ValueError(f"{path}: {ds.name} holds {ds.dtype} data of shape {ds.shape}; "
                         "weights must be plain float arrays")


def _datasets(f, path):
    """{layer name: [h5py Datasets in Keras' order]} for every layer with weights, each link and
    dataset checked; nothing is read."""
    h5py = _import_h5py()
    if "layers" not in f:
        raise ValueError(f"{path} is not a Keras 3 weights file: no 'layers' group (top-level keys "
                         f"{sorted(f)}); Keras 2 .h5 files are not supported")
    layers = _member(f, "layers", path)
    if not isinstance(layers, h5py.Group):
        raise ValueError(f"{path}: /layers is not a group")
    datasets = {}
    for name in layers:
        group = _member(layers, name, path)
        if not isinstance(group, h5py.Group):
            raise ValueError(f"{path}: {group.name} is not a group")
        if "layers" in group:
            raise ValueError(f"{path}: layer {name!r} is a nested model, which autoenc does not support")
        if "vars" not in group:
            continue
        vars_ = _member(group, "vars", path)
        if not isinstance(vars_, h5py.Group):
            raise ValueError(f"{path}: {vars_.name} is not a group")
        if not len(vars_):
            continue
        arrays = []
        for k in range(len(vars_)):
            if str(k) not in vars_:
                raise ValueError(f"{path}: {vars_.name} holds {sorted(vars_)}, not 0..{len(vars_) - 1}")
            ds = _member(vars_, str(k), path)
            _check_dataset(ds, path)
            arrays.append(ds)
        datasets[name] = arrays
    return datasets


def _nbytes(ds):
    return math.prod(ds.shape) * ds.dtype.itemsize   # Python ints: no overflow, whatever the file says


def _read(datasets, path, max_bytes):
    """Read the checked datasets, refusing first if together they declare more than ``max_bytes``."""
    total = sum(_nbytes(ds) for arrays in datasets.values() for ds in arrays)
    if total > max_bytes:
        raise ValueError(f"{path}: its weights declare {total} bytes, more than the limit of {max_bytes} "
                         "bytes; the file is probably hostile or corrupt")
    try:
        return {name: [np.array(ds[()]) for ds in arrays] for name, arrays in datasets.items()}
    except (OSError, ValueError, TypeError) as error:   # h5py's answer to damaged chunks, unknown filters
        raise ValueError(f"{path}: a weight array cannot be read: {error}") from error


def _natural_key(name):
    """'conv2d_10' -> ('conv2d', 10), 'conv2d' -> ('conv2d', 0): Keras' creation order within a type."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return m.group(1), int(m.group(2) or 0)


def _config_order(config, names):
    """The layer names of config.json that have weights, in the model's order; None if config.json
    does not list them all (a subclassed model, another layout): then the names decide."""
    try:
        order = [layer["config"]["name"] for layer in config["config"]["layers"]]
    except (KeyError, TypeError, IndexError):
        return None
    order = [name for name in order if isinstance(name, str) and name in names]
    return order if sorted(order) == sorted(names) else None


@contextlib.contextmanager
def _open(path, max_bytes):
    """Yields ``(datasets, order)`` of the Keras file at ``path`` while it is open: the checked
    datasets of every layer with weights (see ``_datasets``), and the layer names in model order.
    A .keras archive's model.weights.h5 may declare at most ``max_bytes``."""
    h5py = _import_h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No Keras file at {path}")
    config = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if "model.weights.h5" not in names:
                    raise ValueError(f"{path} is a zip archive without model.weights.h5 (it holds {names})")
                source = io.BytesIO(files.read_zip_member(archive, "model.weights.h5", path, max_bytes))
                if "config.json" in names:
                    text = files.read_zip_member(archive, "config.json", path, MAX_CONFIG_BYTES)
                    try:
                        config = json.loads(text)
                    except (ValueError, RecursionError) as error:
                        raise ValueError(f"{path}: config.json is not valid JSON: {error}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as error:
            raise ValueError(f"{path} is a damaged zip archive: {error}") from error
        where = f"{path} (model.weights.h5)"
    else:
        source, where = path, path
    try:
        f = h5py.File(source, "r")
    except OSError as error:
        raise ValueError(f"{where} is not an HDF5 file: {error}") from None
    with f:
        datasets = _datasets(f, where)
        order = _config_order(config, datasets) if config is not None else None
        yield datasets, order or sorted(datasets, key=_natural_key)


def read_keras_weights(path, max_bytes=None):
    """The weights in a Keras ``.weights.h5`` or ``.keras`` file.

    Returns ``(weights, order)``: ``weights`` maps each layer name to its arrays (kernel, bias), and
    ``order`` lists those names in the model's layer order (from config.json, or guessed from the names
    for a ``.weights.h5`` file, see the module docstring).

    Raises FileNotFoundError when there is no file, and ValueError naming the file (and the dataset)
    when it is not a Keras 3 weights file, holds anything but plain float datasets stored in the file
    (external storage, external or soft links, virtual datasets), or declares more than ``max_bytes``
    (default ``autoenc.files.MAX_BYTES``) of weights or of archive member.
    """
    max_bytes = files.MAX_BYTES if max_bytes is None else max_bytes
    with _open(path, max_bytes + H5_OVERHEAD_BYTES) as (datasets, order):
        return _read(datasets, os.fspath(path), max_bytes), order


def load_keras_weights(model, path):
    """Copy the weights of a Keras 3 ``.weights.h5`` or ``.keras`` file into ``model`` (an autoenc
    Model or Sequential of the same architecture). Raises ValueError if the layers or shapes differ,
    or for any file ``read_keras_weights`` refuses; every shape is compared with the model's before
    anything is read, and the model is changed only when every array is good."""
    path = os.fspath(path)
    layers = [layer for layer in model.layers if layer.params]
    expected_bytes = 8 * sum(p.size for layer in layers for p in layer.params.values())   # float64 at most
    with _open(path, expected_bytes + H5_OVERHEAD_BYTES) as (datasets, order):
        if all(layer.name in datasets for layer in layers) and len(layers) == len(datasets):
            pairs = [(layer, layer.name) for layer in layers]
        elif len(layers) == len(order):
            pairs = list(zip(layers, order))
        else:
            raise ValueError(f"{path} has weights for {len(datasets)} layers ({order}), but the model has "
                             f"{len(layers)} layers with weights ({[l.name for l in layers]})")
        for layer, name in pairs:
            expected = [p.shape for p in layer.params.values()]
            found = [ds.shape for ds in datasets[name]]
            if expected != found:
                raise ValueError(f"Keras layer {name!r} in {path} has weights of shapes {found}, but autoenc "
                                 f"layer {layer.name!r} expects {expected}")
        weights = _read(datasets, path, expected_bytes)
    # in model.layers order, as model.set_weights wants them: all checked before any is written
    model.set_weights([w for _, name in pairs for w in weights[name]])
