"""Pictures of autoencoders: reconstructions, loss curves, bottleneck maps, filters and the layer graph.

Every function draws on a ``matplotlib.figure.Figure`` (rendered by the Agg backend for PNG, no
display and no pyplot state needed) and writes the file atomically: the format follows the file's
extension (.png, .svg, .pdf), and a failure leaves any previous file intact.

Images are NHWC arrays of shape (n, height, width, 1) or (n, height, width), values in [0, 1].
"""
import io
import os

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from autoenc.layers.base import InputLayer, format_shape
from autoenc.files import atomic_write

_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` in the format of its extension, atomically. Returns ``path``."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"Cannot tell the picture format from {path!r}; use one of {sorted(_FORMATS)}")
    buffer = io.BytesIO()   # render first, so a drawing error never touches the file
    fig.savefig(buffer, format=_FORMATS[ext], dpi=dpi, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def _images(x, what):
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"{what} should have shape (n, height, width, 1) or (n, height, width), got {x.shape}")
    return x


def _mosaic(tiles, gap=2):
    """Tiles of shape (count, h, w) side by side, separated by ``gap`` columns of NaN (drawn blank)."""
    count, h, w = tiles.shape
    out = np.full((h, count * (w + gap) - gap), np.nan, dtype=np.float32)
    for k in range(count):
        out[:, k * (w + gap):k * (w + gap) + w] = tiles[k]
    return out


def _cmap(name):
    return matplotlib.colormaps[name].with_extremes(bad="white")   # NaN, the gaps between tiles, drawn white


def plot_image_rows(rows, path, n=10, title=None):
    """Rows of images, one row per entry of ``rows`` (a dict label -> images), n images per row.

    Every array: shape (count, height, width, 1) or (count, height, width), values in [0, 1].
    Each row is one mosaic (one axes), which draws much faster than one axes per image.
    """
    rows = {label: _images(x, f"images {label!r}") for label, x in rows.items()}
    n = min([n] + [len(x) for x in rows.values()])
    if n < 1:
        raise ValueError("There are no images to plot")
    fig = Figure(figsize=(1.0 * n + 1.4, 1.05 * len(rows) + (0.45 if title else 0.1)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, x) in zip(axes, rows.items()):
        ax.imshow(_mosaic(x[:n]), cmap=_cmap("gray"), vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_reconstructions(originals, reconstructions, path, n=10, title=None):
    """The first ``n`` originals (top row) over their reconstructions (bottom row).

    originals, reconstructions : ndarray of shape (count, 28, 28, 1) (or without the channel axis),
        values in [0, 1]
    """
    return plot_image_rows({"original": originals, "reconstruction": reconstructions}, path, n=n, title=title)


def plot_history(history, path, title=None):
    """Training curves: each log (loss, mse, ...) per epoch, solid, and its ``val_`` twin, dashed.

    history : a ``History`` (what fit returns) or its ``history`` dict, e.g. {'loss': [...], 'val_loss': [...]}
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError(f"plot_history needs a History or a dict of lists such as {{'loss': [...]}}, got {history!r}")
    names = [k for k in logs if not k.startswith("val_")] or list(logs)
    fig = Figure(figsize=(6.4 * min(len(names), 2) if len(names) > 1 else 6.4, 4.2))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for key, label, style in ((name, "train", "-"), ("val_" + name, "validation", "--")):
            values = logs.get(key)
            if not values:
                continue
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, style, marker="o", markersize=4, label=f"{label} ({values[-1]:.4f})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name if not title else f"{title}: {name}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        if max(len(logs.get(name) or []), len(logs.get("val_" + name) or [])) == 1:
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_latent(maps, path, images=None, title=None):
    """The bottleneck of a few images: one row per image, one panel per channel (e.g. 8 maps of 7x7).

    maps : ndarray of shape (n, h, w, channels), e.g. (5, 7, 7, 8), the bottleneck layer's outputs
    images : ndarray of shape (n, 28, 28, 1), optional; the inputs, drawn at the left of each row
    Each row shares one colour scale from 0 to its largest activation, so a dead channel shows dark.
    """
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps should have shape (n, height, width, channels), got {maps.shape}")
    n, h, w, channels = maps.shape
    if images is not None:
        images = _images(images, "images")
    # explicit positions, in inches: a square of side `side` per input, then the row's maps at that height
    side, pad, left, top, bottom, row_gap = 0.8, 0.1, 0.45, 0.55, 0.3, 0.12
    aspect = (channels * (w + 1) - 1) / h
    width = left + (side + pad if images is not None else 0) + side * aspect + 0.15
    height = top + n * (side + row_gap) + bottom
    fig = Figure(figsize=(width, height))
    for r in range(n):
        y = height - top - (r + 1) * side - r * row_gap
        x = left
        if images is not None:
            ax = fig.add_axes([x / width, y / height, side / width, side / height])
            ax.imshow(images[r], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("input", fontsize=9)
            x += side + pad
        ax = fig.add_axes([x / width, y / height, side * aspect / width, side / height])
        tiles = np.moveaxis(maps[r], -1, 0)   # (channels, h, w)
        ax.imshow(_mosaic(tiles, gap=1), cmap=_cmap("viridis"), vmin=min(0.0, float(maps[r].min())),
                  vmax=float(maps[r].max()) or 1.0, interpolation="nearest", aspect="auto")
        ax.set_yticks([])
        ax.set_xticks([(w + 1) * c + (w - 1) / 2 for c in range(channels)])
        ax.set_xticklabels([f"ch {c}" for c in range(channels)] if r == n - 1 else [], fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.text(0.2 / width, (y + side / 2) / height, f"image {r}", rotation=90, va="center", fontsize=9)
    fig.suptitle(title or f"bottleneck maps: {h}x{w}x{channels} per image (each row: 0 = dark, its largest = yellow)")
    return save_figure(fig, path)


def plot_filters(conv_layer_or_kernel, path, max_inputs=16, title=None):
    """A convolution's kernel: one panel per (input channel, filter), red positive, blue negative.

    conv_layer_or_kernel : a built Conv2D, or a kernel of shape (kh, kw, in_channels, filters)
    Rows are input channels (the first ``max_inputs``), columns are filters.
    """
    kernel = getattr(conv_layer_or_kernel, "params", {}).get("kernel") if hasattr(conv_layer_or_kernel, "params") \
        else conv_layer_or_kernel
    name = getattr(conv_layer_or_kernel, "name", "kernel")
    if kernel is None:
        raise ValueError(f"{conv_layer_or_kernel!r} has no kernel (is it a built Conv2D?)")
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"A conv kernel has shape (kh, kw, in_channels, filters), got {kernel.shape}")
    kh, kw, cin, cout = kernel.shape
    rows = min(cin, max_inputs)
    limit = float(np.abs(kernel).max()) or 1.0
    fig = Figure(figsize=(0.8 * cout + 1.2, 0.8 * rows + 0.9))
    axes = fig.subplots(rows, cout, squeeze=False)
    for i in range(rows):
        for f in range(cout):
            ax = axes[i, f]
            im = ax.imshow(kernel[:, :, i, f], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(f), fontsize=8)
        axes[i, 0].set_ylabel(f"in {i}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title or f"{name}: {kh}x{kw} kernels, {cin} input channel(s) x {cout} filters"
                 + ("" if rows == cin else f" (first {rows} inputs)"))
    return save_figure(fig, path)


def _graph(model):
    """(layers, edges): the layers in graph order and (from_index, to_index) for every connection."""
    layers = list(model.layers)
    if not getattr(model, "built", False):
        raise ValueError(f"Model {model.name!r} is not built yet: give it an Input first")
    index = {id(layer): k for k, layer in enumerate(layers)}
    edges = []
    nodes = model.nodes
    for node in nodes:
        for t in node.inputs:
            if id(t.node.layer) in index:   # Sequential.layers leaves out its InputLayer
                edges.append((index[id(t.node.layer)], index[id(node.layer)]))
    inputs = [t.node.layer for t in model.inputs if id(t.node.layer) not in index]
    return inputs + layers, [(a + len(inputs), b + len(inputs)) for a, b in edges] + [
        (k, len(inputs) + index[id(node.layer)]) for k, inp in enumerate(inputs)
        for node in nodes for t in node.inputs if t.node.layer is inp]


def plot_model(model, path, show_shapes=True, title=None):
    """The layer graph, one box per layer (name, type, output shape) with arrows along the data flow,
    as keras.utils.plot_model draws it. PNG or SVG by the file's extension."""
    layers, edges = _graph(model)
    # depth = longest path from an input, so every arrow points down; layers at one depth sit side by side
    depth = [0] * len(layers)
    for a, b in sorted(edges, key=lambda e: e[1]):
        depth[b] = max(depth[b], depth[a] + 1)
    by_depth = {}
    for k, d in enumerate(depth):
        by_depth.setdefault(d, []).append(k)
    width = max(len(v) for v in by_depth.values())
    rows = max(by_depth) + 1
    box_w, box_h, gap = 3.2, 0.62, 0.38
    margin = 1.2 if any(depth[b] - depth[a] > 1 for a, b in edges) else 0.2   # room for skip arrows
    fig = Figure(figsize=(box_w * width + margin + 0.2, (box_h + gap) * rows + 0.6))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-0.2, box_w * width + margin)
    ax.set_ylim(-(box_h + gap) * rows, 0.4)
    ax.axis("off")
    centre = {}
    for d, members in by_depth.items():
        offset = (width - len(members)) * box_w / 2
        for j, k in enumerate(members):
            x = offset + j * box_w + 0.2
            y = -d * (box_h + gap) - box_h
            layer = layers[k]
            shape = layer.output.shape if isinstance(layer, InputLayer) else layer.output_shape
            text = f"{layer.name} ({type(layer).__name__})"
            if show_shapes:
                text += f"\noutput {format_shape(shape)}"
            colour = "#dde8f6" if isinstance(layer, InputLayer) else "#f4f4f4"
            ax.add_patch(FancyBboxPatch((x, y), box_w - 0.4, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                        facecolor=colour, edgecolor="#333333", linewidth=1))
            ax.text(x + (box_w - 0.4) / 2, y + box_h / 2, text, ha="center", va="center", fontsize=9,
                    family="monospace")
            centre[k] = (x + (box_w - 0.4) / 2, y)
    for a, b in edges:
        (xa, ya), (xb, yb) = centre[a], centre[b]
        if depth[b] - depth[a] == 1:
            start, end, style = (xa, ya), (xb, yb + box_h), "arc3"
        else:   # a skip connection: around the boxes in between, along their right side
            half = (box_w - 0.4) / 2
            start, end, style = (xa + half, ya + box_h / 2), (xb + half, yb + box_h / 2), "arc3,rad=-0.35"
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, connectionstyle=style,
                                     color="#333333", linewidth=1, shrinkA=1, shrinkB=1))
    if title:
        ax.text(0.2, 0.2, title, fontsize=11, weight="bold")
    return save_figure(fig, path)


# --- variational autoencoders ---------------------------------------------------------------------

def plot_latent_scatter(z_mean, labels, path, title=None):
    """The 2-D codes of images coloured by their label (keras-io's ``plot_label_clusters``).

    z_mean : ndarray of shape (n, 2), the encoder's z_mean of n images
    labels : ndarray of shape (n,), ints (e.g. the digit or clothing class)
    """
    z_mean, labels = np.asarray(z_mean), np.asarray(labels)
    if z_mean.ndim != 2 or z_mean.shape[1] != 2 or labels.shape != (len(z_mean),):
        raise ValueError(f"plot_latent_scatter needs z_mean of shape (n, 2) and labels of shape (n,), got "
                         f"{z_mean.shape} and {labels.shape}")
    fig = Figure(figsize=(7.4, 6))
    ax = fig.subplots()
    points = ax.scatter(z_mean[:, 0], z_mean[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"z_mean of {len(z_mean)} test images")
    return save_figure(fig, path)


def _grid_figure(tiles, rows, cols, title, extent=None):
    """tiles (rows * cols, h, w) as one picture of rows x cols tiles, without gaps."""
    _, h, w = tiles.shape
    picture = tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    fig = Figure(figsize=(7.2, 7.2 * rows / cols + 0.6))
    ax = fig.subplots()
    ax.imshow(picture, cmap="Greys_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    if extent is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        xs, ys = extent
        step = max(1, cols // 6)
        ax.set_xticks(np.arange(w // 2, cols * w, w)[::step], [f"{v:.1f}" for v in xs[::step]])
        ax.set_yticks(np.arange(h // 2, rows * h, h)[::step], [f"{v:.1f}" for v in ys[::step]])
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    if title:
        ax.set_title(title)
    return fig


def plot_manifold(decoder, path, n=20, scale=1.0, title=None):
    """Decoded points of a regular n x n grid of the 2-D latent plane, [-scale, scale]^2 (keras-io's
    ``plot_latent_space``): z[0] grows to the right, z[1] upwards.

    decoder : a model from (batch, 2) codes to images (batch, h, w, 1)
    """
    grid_x = np.linspace(-scale, scale, n)
    grid_y = np.linspace(-scale, scale, n)[::-1]
    z = np.array([[xi, yi] for yi in grid_y for xi in grid_x], np.float32)
    tiles = _images(decoder.predict(z, batch_size=256, verbose=0), "decoded images")
    fig = _grid_figure(tiles, n, n, title or f"decoded grid of the latent plane, [-{scale:g}, {scale:g}]^2",
                       extent=(grid_x, grid_y))
    return save_figure(fig, path)


def plot_samples(decoder, latent_dim, path, n=8, seed=0, title=None):
    """n x n images decoded from codes drawn from the prior N(0, I) of ``latent_dim`` dimensions.

    decoder : a model from (batch, latent_dim) codes to images (batch, h, w, 1)
    """
    z = np.random.default_rng(seed).standard_normal((n * n, latent_dim)).astype(np.float32)
    tiles = _images(decoder.predict(z, batch_size=256, verbose=0), "decoded images")
    fig = _grid_figure(tiles, n, n, title or f"{n * n} draws z ~ N(0, I), decoded")
    return save_figure(fig, path)
