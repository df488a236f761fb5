"""CollapseMonitor: notice when training has collapsed to a blank (or constant) output, and say why.

The seed post's recipe (MSE, Adam 1e-3, batch 256) on MNIST can drive every ReLU of a decoder layer
below zero within the first epoch. Such a layer outputs zeros for every input, passes no gradient
back (relu'(z) = 0 for z < 0), and so never recovers: the model outputs the same picture, the
sigmoid of a bias, whatever the input, and the validation MSE sticks at about mean(x^2). Nothing
fails: the loss just stops improving. This callback notices and prints one line with the cause and
the remedy.

How it looks. After every training batch it scans the activations the forward pass left
(``model.layer_output(layer)``, the outputs for the batch just trained on) for layers whose outputs
are all exactly zero. At the end of each epoch it confirms on a fixed probe batch (the first
training samples, or ``probe`` if given) in inference mode: a layer all zeros there too, or a model
output that is the same number for every pixel of every probe image, is a collapse.

A softer collapse keeps every layer alive but drives the output to (nearly) the same blank picture
for every input; the loss then sits at what a blank picture scores (for MSE, mean(x^2)). For an
autoencoder (output shaped like the input) the monitor compares how much the output varies across
the probe images with how much the inputs do,
    ratio = mean over pixels of std over images (output) / the same for the inputs,
and calls the output blank when ratio < ``blank_ratio`` at ``blank_epochs`` consecutive epoch ends
(a model can start near blank and then learn).
"""
import sys

import numpy as np

from autoenc.callbacks import Callback
from autoenc.layers.base import InputLayer
from autoenc.layers.resampling1d import UpSampling1D
from autoenc.layers.upsampling import UpSampling2D

DEFAULT_REMEDY = "Try loss='binary_crossentropy' or a lower learning rate."


class CollapseMonitor(Callback):
    """Prints ONE line when a layer outputs all zeros over a batch (dead ReLUs) or the output is constant.

    probe : ndarray of shape (n, *input_shape), optional; the images to confirm on at each epoch's
        end. Default: the first ``probe_size`` samples of the first training batch.
    remedy : the advice printed after the cause.
    stop_training : also stop fit when a collapse is confirmed (it does not recover). Default False,
        so a run reproducing a collapse (as Keras would) still runs its epochs.
    tolerance : an output whose values span less than this (max - min) counts as constant.
    blank_ratio, blank_epochs : the output is blank when it varies across the probe images less than
        ``blank_ratio`` times as much as the inputs do, at ``blank_epochs`` consecutive epoch ends.
    stream : where the line goes (default sys.stdout).

    After fit, ``collapsed`` is True once a collapse was seen, and ``message`` holds the line.
    """

    def __init__(self, probe=None, probe_size=64, remedy=DEFAULT_REMEDY, stop_training=False,
                 tolerance=1e-6, blank_ratio=0.1, blank_epochs=2, stream=None):
        super().__init__()
        self.probe = None if probe is None else np.asarray(probe)
        self.probe_size = int(probe_size)
        self.remedy = remedy
        self.stop_training = stop_training
        self.tolerance = float(tolerance)
        self.blank_ratio, self.blank_epochs = float(blank_ratio), int(blank_epochs)
        self.stream = stream
        self.collapsed = False
        self.message = None
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self._epoch = 0
        self._zero_since = {}      # layer name -> first epoch (0-based) it was all zeros on a batch
        self._pending = None       # a confirmed message, printed once the progress bar has ended its line
        self._blank_since = None   # first epoch of the current run of blank outputs

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        x = model.layer_output(model.inputs[0].node.layer)
        if x is None:   # no forward pass yet
            return
        if self.probe is None:
            # a copy: fit refills its batch buffers in place
            self.probe = np.array(x[:self.probe_size], copy=True)
        for node in model.nodes:
            # an upsampled output is all zeros exactly when its input is, which is checked where it is
            # made; a model may not have made it at all (fused into the next Conv2D: Model.forward)
            if isinstance(node.layer, (UpSampling2D, UpSampling1D)):
                continue
            y = model.layer_output(node.layer)
            if y is None:
                continue
            if y.any():
                self._zero_since.pop(node.layer.name, None)
            else:
                self._zero_since.setdefault(node.layer.name, self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.collapsed or self.probe is None:
            return
        message = self.diagnose(self.probe)
        if message is None:
            return
        self.collapsed, self.message = True, message
        self._pending = message
        if self.stop_training:
            self.model.stop_training = True

    def diagnose(self, x):
        """The one-line diagnosis of the model on inputs ``x`` (shape (n, *input_shape)), or None if
        no layer is all zeros and the output is neither constant nor (for long enough) blank."""
        model = self.model
        out = model.predict(x, batch_size=len(x), verbose=0)
        # predict ran one forward pass over the whole probe
        dead = None
        for node in model.nodes:
            if isinstance(node.layer, InputLayer):
                continue
            if not model.layer_output(node.layer).any():
                dead = node.layer
                break
        spread = float(out.max() - out.min())
        constant = spread < self.tolerance
        blank = None
        if not constant and out.shape == x.shape and len(x) > 1:
            ratio = float(out.std(axis=0).mean() / max(float(x.std(axis=0).mean()), 1e-12))
            if ratio < self.blank_ratio:
                self._blank_since = self._epoch if self._blank_since is None else self._blank_since
                if self._epoch - self._blank_since + 1 >= self.blank_epochs:
                    blank = ratio
            else:
                self._blank_since = None
        if dead is None and not constant and blank is None:
            return None
        parts = []
        if dead is not None:
            relu = getattr(getattr(dead, "activation", None), "name", None) == "relu"
            since = self._zero_since.get(dead.name, self._epoch)
            parts.append(f"layer {dead.name} outputs all zeros{' (dead ReLUs)' if relu else ''} "
                         f"since epoch {since + 1}")
        if constant:
            parts.append(f"the output is constant ({float(out.flat[0]):.3g} for every pixel of every image)")
        elif blank is not None:
            parts.append(f"the output is nearly the same blank picture for every input since epoch "
                         f"{self._blank_since + 1} (it varies {blank:.1%} as much as the inputs; "
                         f"mean {float(out.mean()):.3f})")
        return "collapse: " + "; ".join(parts) + ". " + self.remedy

    def _flush(self):
        if self._pending is not None:
            print(self._pending, file=self.stream or sys.stdout, flush=True)
            self._pending = None
