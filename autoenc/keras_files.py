"""Read the weights of a Keras 3 model file into an autoenc model of the same architecture.

Keras 3 writes weights with h5py (``model.save_weights("m.weights.h5")``; a ``.keras`` file is a zip
archive holding the same layout as ``model.weights.h5``, beside ``config.json``). Each object with
variables gets a group ``<path>/vars`` holding its arrays ``0``, ``1``, ... in creation order, and an
attribute ``name`` (the layer's name):

    layers/conv2d/vars/0                          the first Conv2D's kernel, e.g. (3, 3, 1, 16)
    layers/conv2d/vars/1                          its bias, (16,)
    layers/conv2d_1/vars/...                      the second Conv2D of the same model
    layers/sequential/layers/conv2d/vars/...      a Conv2D inside a nested Sequential model
    optimizer/vars/0, 1, 2, ...                   the optimizer: iterations, learning rate, its slots

The path is not the layer's name: Keras walks ``model.layers`` in order and names each entry after its
class in snake case (``conv2d``, ``conv2d_transpose``, ``functional``, ``sequential``), counting repeats
within one model (``conv2d``, ``conv2d_1``, ...; see ``_get_unique_name`` in keras/src/saving/
saving_lib.py); a nested model's layers are under ``<its path>/layers``. ``weight_paths(model)``
computes these paths for an autoenc model, and weights are matched by them, as Keras itself matches
them; when a file's paths do not fit the model (another Keras version, a hand-made file), by the
layer names in the ``name`` attributes. Every shape is checked before anything is copied. Needs h5py
(``pip install autoenc[h5]``).

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
# metadata.json of a .keras archive: two short fields
MAX_METADATA_BYTES = 2**20
# HDF5's own bytes (superblock, groups, attributes) allowed above the weights in model.weights.h5
H5_OVERHEAD_BYTES = 16 * 2**20
# A .keras archive holds 3 members (and an assets/ folder for layers with files, which autoenc has none of)
MAX_MEMBERS = 1000
# A member inflating to more than BOMB_FLOOR_BYTES and BOMB_RATIO times its stored size is a zip bomb
# (Keras stores its members uncompressed: ratio 1); Keras' own guard (_reject_zip_bomb) has 100 too
BOMB_FLOOR_BYTES = 16 * 2**20
BOMB_RATIO = 100
# An HDF5 file of weights nests a few levels (layers/<model>/layers/<layer>/vars/0) and holds a few
# groups per layer; more is not a Keras file
MAX_H5_OBJECTS = 200_000


def import_h5py(purpose="Reading Keras weight files"):
    """The h5py module, or an ImportError saying that ``purpose`` needs it and how to install it."""
    try:
        import h5py
    except ImportError:
        raise ImportError(f"{purpose} needs h5py: pip install 'autoenc[h5]'") from None
    return h5py


def _member(group, key, path):
    """group[key], after checking that the link to it is a hard link (no file outside this one)."""
    h5py = import_h5py()
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


def _check_dataset(ds, path, kinds="f"):
    """Refuse anything but a plain dataset of ``kinds`` (float; the optimizer's step count may be an
    integer) whose bytes are in the file itself."""
    h5py = import_h5py()
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{path}: {ds.name} is a group, where a weight array should be")
    if ds.is_virtual:
        raise ValueError(f"{path}: {ds.name} is a virtual dataset (its data is in other files); refused")
    if ds.external:
        raise ValueError(f"{path}: {ds.name} uses external storage ({ds.external[0][0]!r}, ...); "
                         "weights are read only from the file itself")
    if ds.dtype.kind not in kinds or ds.dtype.fields is not None or ds.shape is None:
        raise ValueError(f"{path}: {ds.name} holds {ds.dtype} data of shape {ds.shape}; "
                         "weights must be plain float arrays")


def _attr_name(group):
    """The ``name`` attribute Keras gives a vars group (the layer's name), or None when absent or odd."""
    try:
        value = group.attrs.get("name")
    except (OSError, TypeError, ValueError):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and len(value) < 1000 else None


def _datasets(f, path):
    """{h5 path: (layer name or None, [h5py Datasets in Keras' order])} for every ``<path>/vars`` group
    of the file that holds arrays (``layers/conv2d``, ``layers/sequential/layers/conv2d``,
    ``optimizer``), each link and dataset checked; nothing is read. Walks the tree with an explicit
    stack, at most MAX_H5_OBJECTS objects."""
    h5py = import_h5py()
    if "layers" not in f:
        raise ValueError(f"{path} is not a Keras 3 weights file: no 'layers' group (top-level keys "
                         f"{sorted(f)[:10]}); Keras 2 .h5 files are not supported")
    datasets, seen = {}, 0
    stack = [("", f)]
    while stack:
        prefix, group = stack.pop()
        for key in group:
            seen += 1
            if seen > MAX_H5_OBJECTS:
                raise ValueError(f"{path} holds more than {MAX_H5_OBJECTS} groups and arrays; not a Keras weights file")
            child = _member(group, key, path)
            where = f"{prefix}/{key}" if prefix else key
            if key != "vars":
                if isinstance(child, h5py.Group):
                    stack.append((where, child))
                continue   # a stray dataset outside vars/ is not a weight: never read
            if not isinstance(child, h5py.Group):
                raise ValueError(f"{path}: {child.name} is not a group")
            arrays = []
            for k in range(len(child)):
                if str(k) not in child:
                    raise ValueError(f"{path}: {child.name} holds {sorted(child)[:10]}, not 0..{len(child) - 1}")
                ds = _member(child, str(k), path)
                _check_dataset(ds, path, "fiu" if prefix == "optimizer" else "f")
                arrays.append(ds)
            if arrays:
                datasets[prefix] = (_attr_name(child), arrays)
    return datasets


def _nbytes(ds):
    return math.prod(ds.shape) * ds.dtype.itemsize   # Python ints: no overflow, whatever the file says


def read_datasets(datasets, path, max_bytes):
    """Read the checked datasets, refusing first if together they declare more than ``max_bytes``."""
    total = sum(_nbytes(ds) for arrays in datasets.values() for ds in arrays)
    if total > max_bytes:
        raise ValueError(f"{path}: its weights declare {total} bytes, more than the limit of {max_bytes} "
                         "bytes; the file is probably hostile or corrupt")
    try:
        return {name: [np.array(ds[()]) for ds in arrays] for name, arrays in datasets.items()}
    except (OSError, ValueError, TypeError) as error:   # h5py's answer to damaged chunks, unknown filters
        raise ValueError(f"{path}: a weight array cannot be read: {error}") from error


def check_declared_sizes(datasets, path, max_bytes):
    """Refuse, before anything is allocated, datasets that together declare more than ``max_bytes``,
    or one that declares more than BOMB_RATIO times the bytes the file stores for it (above
    BOMB_FLOOR_BYTES): a sparse or compressed dataset of a few KB asking for gigabytes. ``datasets``
    as ``_datasets`` returns them."""
    total = 0
    for where, (_, arrays) in datasets.items():
        for k, ds in enumerate(arrays):
            declared = _nbytes(ds)
            total += declared
            stored = ds.id.get_storage_size()
            if declared > BOMB_FLOOR_BYTES and declared > BOMB_RATIO * max(stored, 1):
                raise ValueError(f"{path}: {where}/vars/{k} declares shape {ds.shape} ({declared} bytes) but the "
                                 f"file stores {stored} bytes for it; refused before reading")
    if total > max_bytes:
        raise ValueError(f"{path}: its arrays declare {total} bytes, more than the limit of {max_bytes} bytes; "
                         "the file is probably hostile or corrupt")


def weight_paths(model):
    """{id(layer): h5 path} for every layer of ``model`` (an autoenc Model or Sequential, sub-models
    expanded): where Keras 3 keeps its variables, ``layers/conv2d``, ``layers/conv2d_1``,
    ``layers/sequential/layers/dense``, ... (see the module docstring; computed by
    ``autoenc.keras_format.walk``, which also writes them)."""
    from autoenc.keras_format import walk
    return {id(layer): path for layer, path, _ in walk(model)}


def _safe_member_name(name):
    parts = name.replace("\\", "/").split("/")
    return name and not name.startswith("/") and "\\" not in name and "\0" not in name and ".." not in parts \
        and ":" not in parts[0]


def read_keras_archive(path, max_weights_bytes):
    """``(config, metadata, weights)`` of the ``.keras`` zip at ``path``: config.json and metadata.json
    parsed (None when absent), and the bytes of model.weights.h5.

    Checked before anything is inflated: at most MAX_MEMBERS members, each name a plain relative path
    (no ``..``, no absolute path: nothing is extracted, but such a name marks a hostile file), no name
    twice, config.json at most MAX_CONFIG_BYTES, metadata.json MAX_METADATA_BYTES, model.weights.h5
    ``max_weights_bytes``, and no member inflating more than BOMB_RATIO times above BOMB_FLOOR_BYTES.
    Raises ValueError naming the file and the member.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ValueError(f"{path} is a zip archive of {len(infos)} members, more than the {MAX_MEMBERS} "
                                 "a .keras file can hold; refused")
            names = [info.filename for info in infos]
            for name in names:
                if not _safe_member_name(name):
                    raise ValueError(f"{path}: the zip member name {name!r} is not a plain relative path "
                                     "(a path-traversal attempt?); refused")
            if len(set(names)) != len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"{path}: the zip members {twice[:5]} appear more than once; refused")
            if "model.weights.h5" not in names:
                raise ValueError(f"{path} is a zip archive without model.weights.h5 (it holds {names[:10]})")
            for info in infos:
                if info.file_size > BOMB_FLOOR_BYTES and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
                    raise ValueError(f"{path}: member {info.filename} declares {info.file_size} bytes from "
                                     f"{info.compress_size} stored (more than {BOMB_RATIO} times); a zip bomb, refused")
            documents = []
            for name, cap in (("config.json", MAX_CONFIG_BYTES), ("metadata.json", MAX_METADATA_BYTES)):
                if name not in names:
                    documents.append(None)
                    continue
                text = files.read_zip_member(archive, name, path, cap)
                try:
                    documents.append(json.loads(text))
                except (ValueError, RecursionError) as error:
                    raise ValueError(f"{path}: {name} is not valid JSON: {error}") from None
            weights = files.read_zip_member(archive, "model.weights.h5", path, max_weights_bytes)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as error:
        raise ValueError(f"{path} is a damaged zip archive: {error}") from error
    return documents[0], documents[1], weights


@contextlib.contextmanager
def open_weights(path, max_bytes, source=None):
    """Yields ``(datasets, config)`` of the Keras file at ``path`` while it is open: the checked
    datasets of every object with variables (see ``_datasets``), and config.json (None for a
    .weights.h5 file). A .keras archive's model.weights.h5 may declare at most ``max_bytes``;
    ``source``: its bytes, when the caller has read the archive already."""
    h5py = import_h5py()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No Keras file at {path}")
    config = None
    if source is not None or zipfile.is_zipfile(path):
        if source is None:
            config, _, source = read_keras_archive(path, max_bytes)
        source = io.BytesIO(source)
        where = f"{path} (model.weights.h5)"
    else:
        source, where = path, path
    try:
        f = h5py.File(source, "r")
    except OSError as error:
        raise ValueError(f"{where} is not an HDF5 file: {error}") from None
    with f:
        yield _datasets(f, where), config


def read_keras_weights(path, max_bytes=None):
    """The weights in a Keras ``.weights.h5`` or ``.keras`` file.

    Returns ``(weights, names)``: ``weights`` maps each h5 path with variables (``layers/conv2d``,
    ``layers/sequential/layers/dense``, ``optimizer``: see the module docstring) to its arrays in
    Keras' order (kernel, bias), and ``names`` maps the same paths to the layer names the file records
    (None where it records none).

    Raises FileNotFoundError when there is no file, and ValueError naming the file (and the dataset)
    when it is not a Keras 3 weights file, holds anything but plain float datasets stored in the file
    (external storage, external or soft links, virtual datasets), or declares more than ``max_bytes``
    (default ``autoenc.files.MAX_BYTES``) of weights or of archive member.
    """
    max_bytes = files.MAX_BYTES if max_bytes is None else max_bytes
    with open_weights(path, max_bytes + H5_OVERHEAD_BYTES) as (datasets, _):
        arrays = read_datasets({p: a for p, (_, a) in datasets.items()}, os.fspath(path), max_bytes)
        return arrays, {p: name for p, (name, _) in datasets.items()}


def match_layers(model, datasets, path):
    """[(layer, h5 path)] for every layer of ``model`` with weights, in ``model.flat_layers()`` order:
    by Keras' paths (``weight_paths``) when the file has them all, else by the layer names the file
    records. Raises ValueError when neither fits, or a shape differs (nothing is read)."""
    layers = [layer for layer in model.flat_layers() if layer.params]
    layer_paths = [p for p in datasets if p.startswith("layers/")]
    paths = weight_paths(model)
    if all(paths[id(layer)] in datasets for layer in layers) and len(layers) == len(layer_paths):
        pairs = [(layer, paths[id(layer)]) for layer in layers]
    else:
        by_name = {datasets[p][0]: p for p in layer_paths if datasets[p][0] is not None}
        if not (all(layer.name in by_name for layer in layers) and len(layers) == len(layer_paths)):
            raise ValueError(f"{path} has weights for {len(layer_paths)} layers ({layer_paths[:8]}), which do not "
                             f"match the model's {len(layers)} layers with weights "
                             f"({[paths[id(l)] for l in layers][:8]}, named {[l.name for l in layers][:8]})")
        pairs = [(layer, by_name[layer.name]) for layer in layers]
    for layer, where in pairs:
        expected = [p.shape for p in layer.params.values()]
        found = [ds.shape for ds in datasets[where][1]]
        if expected != found:
            raise ValueError(f"Keras layer {where} ({datasets[where][0]!r}) in {path} has weights of shapes "
                             f"{found}, but autoenc layer {layer.name!r} expects {expected}")
    return pairs


def load_keras_weights(model, path):
    """Copy the weights of a Keras 3 ``.weights.h5`` or ``.keras`` file into ``model`` (an autoenc
    Model or Sequential of the same architecture, nested models included). Raises ValueError if the
    layers or shapes differ, or for any file ``read_keras_weights`` refuses; every shape is compared
    with the model's before anything is read, and the model is changed only when every array is good."""
    path = os.fspath(path)
    layers = [layer for layer in model.flat_layers() if layer.params]
    expected_bytes = 8 * sum(p.size for layer in layers for p in layer.params.values())   # float64 at most
    with open_weights(path, expected_bytes + H5_OVERHEAD_BYTES) as (datasets, _):
        pairs = match_layers(model, datasets, path)
        weights = read_datasets({where: datasets[where][1] for _, where in pairs}, path, expected_bytes)
    # in flat_layers order, as model.set_weights wants them: all checked before any is written
    model.set_weights([w for _, where in pairs for w in weights[where]])
