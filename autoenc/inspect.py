"""Looking inside a model: FLOPs and activation memory per layer, and statistics during training.

    layer_table(model, batch_size=1)     one row per layer: output shape, params, FLOPs, memory
    format_layer_table(model, ...)       the same as text, as model.summary(show_flops=True) prints it
    GradientStats()                      a callback for fit: per step, each layer's activation mean,
                                         std and fraction of zeros, and each parameter's gradient norm
    plot_gradient_norms(stats, path)     gradient norm per layer over steps, as a PNG

FLOPs count the forward pass only, as 2 x multiply-adds (one multiply and one add each), the
convention of most FLOP counters. A Conv2D output pixel of one filter takes kh*kw*cin multiply-adds:

    flops = 2 * batch * oh * ow * cout * kh * kw * cin          Conv2D
    flops = 2 * batch * ih * iw * cin * kh * kw * cout          Conv2DTranspose (each input pixel is
                                                                spread over kh*kw outputs)
    flops = 2 * batch * osteps * cout * k * cin                 Conv1D
    flops = 2 * batch * isteps * cin * k * cout                 Conv1DTranspose
    flops = 2 * batch * (rows) * in * units                     Dense (rows: every axis but the last)

Transposed convolutions count only the multiply-adds whose input is not an inserted zero.

Pooling, upsampling and reshapes only compare or copy: 0 multiply-adds. The backward pass of a
convolution costs about twice its forward (one product for dx, one for dw). Activation memory is
the size of each layer's output for ``batch_size`` samples, in its dtype: backward keeps these.
A layer of your own can report its FLOPs by defining ``flops(batch_size)``.
"""
import math

import numpy as np

from autoenc.callbacks import Callback
from autoenc.layers.base import InputLayer, format_shape


def _output_shape(layer):
    return layer.output.shape if isinstance(layer, InputLayer) else layer.output_shape


def layer_flops(layer, batch_size=1):
    """Forward FLOPs (2 x multiply-adds) of one built layer for ``batch_size`` samples."""
    if hasattr(layer, "flops") and callable(layer.flops):
        return int(layer.flops(batch_size))
    kind = type(layer).__name__
    out = _output_shape(layer)
    if kind in ("Conv2D", "Conv1D"):
        # kernel (kh, kw, cin, cout) or (k, cin, cout): every output pixel of every filter
        taps = math.prod(layer.params["kernel"].shape)
        return 2 * batch_size * math.prod(out[1:-1]) * taps
    if kind in ("Conv2DTranspose", "Conv1DTranspose"):
        # kernel (kh, kw, cout, cin) or (k, cout, cin): every input pixel of every input channel
        taps = math.prod(layer.params["kernel"].shape)
        return 2 * batch_size * math.prod(layer.input_shape[1:-1]) * taps
    if kind == "Dense":
        n_in, units = layer.params["kernel"].shape
        rows = math.prod(out[1:-1])
        return 2 * batch_size * rows * n_in * units
    return 0


def layer_table(model, batch_size=1):
    """One dict per layer: name, type, output_shape, params, flops, activation_bytes.

    ``flops``: forward FLOPs for ``batch_size`` samples (see the module docstring);
    ``activation_bytes``: the layer's output for ``batch_size`` samples, in bytes.
    """
    if not getattr(model, "built", False):
        raise ValueError(f"layer_table needs a built model; {model.name!r} has no input shape yet")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    rows = []
    for layer in model.layers:
        shape = _output_shape(layer)
        shapes = shape if isinstance(shape, list) else [shape]   # a sub-model of several outputs: a list
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": shape,
                     "params": layer.count_params(), "flops": layer_flops(layer, batch_size),
                     "activation_bytes": sum(batch_size * math.prod(s[1:]) * layer.dtype.itemsize for s in shapes)})
    return rows


def _human(n, unit=""):
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n} {unit}".rstrip()


def format_layer_table(model, batch_size=1):
    """The layer table as text: one line per layer, then the totals."""
    rows = layer_table(model, batch_size)
    head = ("Layer (type)", "Output Shape", "Param #", "FLOPs", "Activations")
    lines = [(f"{r['name']} ({r['type']})", ", ".join(map(format_shape, r["output_shape"])) if isinstance(
              r["output_shape"], list) else format_shape(r["output_shape"]), f"{r['params']:,}",
              _human(r["flops"]), _human(r["activation_bytes"], "B")) for r in rows]
    widths = [max(len(row[k]) for row in [head] + lines) for k in range(len(head))]

    def fmt(row):
        return "  ".join(t.ljust(w) if k < 2 else t.rjust(w) for k, (t, w) in enumerate(zip(row, widths)))

    rule = "-" * len(fmt(head))
    flops = sum(r["flops"] for r in rows)
    memory = sum(r["activation_bytes"] for r in rows)
    return "\n".join([f"Forward FLOPs and activation memory for a batch of {batch_size}:", fmt(head), rule]
                     + [fmt(row) for row in lines]
                     + [rule, f"Total forward FLOPs: {flops:,} ({_human(flops)}); backward about twice that",
                        f"Total activation memory: {memory:,} bytes ({_human(memory, 'B')})"])


class GradientStats(Callback):
    """Records, every ``every`` training steps of fit, for each layer (InputLayer excepted):

        activations[layer]['mean' | 'std' | 'zeros']   statistics of the layer's output on the batch
        grad_norms['layer/param']                       ||dL/dparam||_2 of that step
        steps                                           the global step numbers recorded (0, 1, ...)

    A ReLU layer whose 'zeros' approaches 1 is dying; gradient norms that shrink layer after layer
    towards the input are vanishing. Reads the outputs of the last forward pass
    (``model.layer_output``) and the gradients that backward left in each layer's ``grads`` (before the next step overwrites them).
    """

    def __init__(self, every=1):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every <= 0:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = int(every)
        self.steps = []
        self.activations = {}
        self.grad_norms = {}
        self._step = 0

    def on_train_begin(self, logs=None):
        self._step = 0

    def on_train_batch_end(self, batch, logs=None):
        step, self._step = self._step, self._step + 1
        if step % self.every:
            return
        self.steps.append(step)
        for node in self.model.nodes:
            layer = node.layer
            out = self.model.layer_output(layer)
            stats = self.activations.setdefault(layer.name, {"mean": [], "std": [], "zeros": []})
            stats["mean"].append(float(np.mean(out)))
            stats["std"].append(float(np.std(out)))
            stats["zeros"].append(float(np.count_nonzero(out == 0)) / out.size)
            for name, g in layer.grads.items():
                self.grad_norms.setdefault(f"{layer.name}/{name}", []).append(float(np.linalg.norm(g)))

    def layer_grad_norms(self):
        """{layer: [norm per recorded step]}, the norm taken over all the layer's parameters at once."""
        per_layer = {}
        for key, norms in self.grad_norms.items():
            layer = key.rsplit("/", 1)[0]
            squares = np.square(norms)
            per_layer[layer] = per_layer[layer] + squares if layer in per_layer else squares
        return {k: np.sqrt(v).tolist() for k, v in per_layer.items()}


def plot_gradient_norms(stats, path, title="Gradient norm per layer"):
    """Plot each layer's gradient norm over the recorded steps (log scale) and save it to ``path``.

    stats: a GradientStats after fit. Returns the path. Layers are coloured from the input (dark)
    to the output (light), so a vanishing gradient shows as dark lines far below light ones.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoenc.plotting import save_figure

    norms = stats.layer_grad_norms()
    if not norms:
        raise ValueError("No gradient norms recorded: pass the GradientStats to fit(callbacks=[...]) first")
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(norms)))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for (layer, values), color in zip(norms.items(), colors):
        ax.plot(stats.steps, values, label=layer, color=color, marker="o" if len(values) < 30 else None, ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("||dL/d(parameters)||  (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    try:
        save_figure(fig, path)   # atomically: a full disk leaves any previous picture intact
    finally:
        plt.close(fig)
    return path
