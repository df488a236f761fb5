"""Losses with Keras' names and reduction.

Each loss is a mean over the last axis, then over everything else (Keras' 'sum_over_batch_size'),
which for equal-sized samples is the mean over all m elements:
    mean_squared_error:   L = mean((p - t)^2)                          dL/dp = 2 (p - t) / m
    mean_absolute_error:  L = mean(|p - t|)                            dL/dp = sign(p - t) / m
    binary_crossentropy:  L = -mean(t log p + (1 - t) log(1 - p)),     p clipped to [1e-7, 1 - 1e-7]
                          dL/dp = ((1 - t) / (1 - p) - t / p) / m      (0 where p was clipped)
    from logits z (what Keras' TensorFlow backend uses when p = sigmoid(z)):
                          L = mean(max(z, 0) - z t + log(1 + e^-|z|))   dL/dz = (sigmoid(z) - t) / m
See docs/mse.md and docs/bce.md.

The two terms of a variational autoencoder's loss, as keras-io's VAE computes them (docs/vae.md), for
a batch of n samples with latent codes of size k:
    kl_divergence:           KL = (1/n) sum_{i,j} -0.5 (1 + v_ij - m_ij^2 - exp(v_ij))
                             dKL/dm_ij = m_ij / n,   dKL/dv_ij = 0.5 (exp(v_ij) - 1) / n
    reconstruction_crossentropy: R = (1/n) sum_i sum_{pixels} bce, bce averaged over the last axis (c)
                             = (m / (n c)) * binary_crossentropy, and its gradient scaled alike
"""
import numpy as np

from autoenc.activations import sigmoid_into

EPSILON = 1e-7


def _check_finite(y_true, y_pred):
    """At the public entry points only (``loss(y_true, y_pred)``, the per-sample functions): refuse NaN and
    Inf, naming the argument and the first bad index. The training loop calls ``value`` and
    ``value_and_gradient`` on data it checked once, so no step pays for this scan."""
    for what, a in (("y_true", y_true), ("y_pred", y_pred)):
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{what} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}: "
                             f"{a[tuple(bad)]})")


def _check(y_true, y_pred):
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")


class Loss:
    """``loss(y_true, y_pred)`` (or ``value``) is the scalar loss; ``value_and_gradient`` also gives
    dL/dy_pred, for training."""

    name = None
    supports_logits = False

    def __call__(self, y_true, y_pred):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        _check_finite(y_true, y_pred)
        return self.value(y_true, y_pred)

    def value(self, y_true, y_pred):
        raise NotImplementedError

    def value_and_gradient(self, y_true, y_pred, out=None, size=None):
        """(loss, dL/dy_pred). The gradient is written into ``out`` (an array shaped like y_pred,
        which the training loop reuses between steps) or a new array when it is None. ``size``: the
        number of elements the mean is over, y_pred.size unless given (a part of a batch passes the
        batch's, so that its gradient is the batch loss's; the loss returned is the part's own)."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def value(self, y_true, y_pred):
        _check(y_true, y_pred)
        return np.mean(np.square(y_pred - y_true))

    def value_and_gradient(self, y_true, y_pred, out=None, size=None):
        _check(y_true, y_pred)
        sq = np.square(np.subtract(y_pred, y_true, out=out), out=out)  # (p - t)^2, in out
        loss = np.mean(sq)
        d = np.subtract(y_pred, y_true, out=sq)
        d *= d.dtype.type(2 / (size or d.size))
        return loss, d


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def value(self, y_true, y_pred):
        _check(y_true, y_pred)
        return np.mean(np.abs(y_pred - y_true))

    def value_and_gradient(self, y_true, y_pred, out=None, size=None):
        _check(y_true, y_pred)
        a = np.abs(np.subtract(y_pred, y_true, out=out), out=out)  # |p - t|, in out
        loss = np.mean(a)
        d = np.sign(np.subtract(y_pred, y_true, out=a), out=a)
        d *= d.dtype.type(1 / (size or d.size))
        return loss, d


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    supports_logits = True

    def __init__(self, from_logits=False):
        self.from_logits = from_logits

    def value(self, y_true, y_pred):
        if self.from_logits:
            return self.value_from_logits(y_true, y_pred)
        _check(y_true, y_pred)
        return _bce(y_true, _clip(y_pred))

    def value_from_logits(self, y_true, z):
        """The loss of predictions sigmoid(z), computed from z without overflow."""
        _check(y_true, z)
        return _bce_from_logits(y_true, z)

    def value_and_gradient(self, y_true, y_pred, out=None, size=None):
        if self.from_logits:
            return self.value_and_gradient_from_logits(y_true, y_pred, out, size)
        _check(y_true, y_pred)
        one = y_pred.dtype.type(1)
        eps = y_pred.dtype.type(EPSILON)
        p = _clip(y_pred)
        loss = _bce(y_true, p)
        grad = np.multiply((one - y_true) / (one - p) - y_true / p, y_pred.dtype.type(1 / (size or p.size)), out=out)
        grad[(y_pred < eps) | (y_pred > one - eps)] = 0
        return loss, grad

    def value_and_gradient_from_logits(self, y_true, z, out=None, size=None):
        """Loss and dL/dz for predictions sigmoid(z), computed from z without overflow; dL/dz goes
        into ``out`` when given (``size`` as value_and_gradient)."""
        _check(y_true, z)
        loss = _bce_from_logits(y_true, z)
        grad = np.empty_like(z) if out is None else out
        sigmoid_into(z, grad)
        grad -= y_true
        grad *= z.dtype.type(1 / (size or z.size))
        return loss, grad

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


def _clip(p):
    """p clipped to [1e-7, 1 - 1e-7] in its own dtype, as Keras does before taking logs."""
    eps = p.dtype.type(EPSILON)
    return np.clip(p, eps, p.dtype.type(1) - eps)


def _bce(t, p):
    """-mean(t log p + (1 - t) log(1 - p)) of clipped probabilities p."""
    one = p.dtype.type(1)
    return -np.mean(t * np.log(p) + (one - t) * np.log(one - p))


def _bce_from_logits(t, z):
    """mean(max(z, 0) - z t + log(1 + e^-|z|)): the binary crossentropy of sigmoid(z)."""
    return np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))


def mean_squared_error(y_true, y_pred):
    """Per-sample MSE: mean over the last axis, as keras.losses.mean_squared_error."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_finite(y_true, y_pred)
    return np.mean(np.square(y_pred - y_true), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """Per-sample MAE: mean over the last axis."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_finite(y_true, y_pred)
    return np.mean(np.abs(y_pred - y_true), axis=-1)


def binary_crossentropy(y_true, y_pred):
    """Per-sample binary crossentropy of probabilities: mean over the last axis."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_finite(y_true, y_pred)
    p = np.clip(y_pred, EPSILON, 1 - EPSILON)
    return -np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p), axis=-1)


def kl_divergence(z_mean, z_log_var):
    """The KL divergence of N(z_mean, exp(z_log_var)) from N(0, 1), summed over the latent axis and
    averaged over the batch, as keras-io's VAE: mean_i sum_j -0.5 (1 + v_ij - m_ij^2 - exp(v_ij)).

    z_mean, z_log_var : arrays of shape (batch, latent). Returns a float."""
    return kl_divergence_and_gradient(z_mean, z_log_var)[0]


def kl_divergence_and_gradient(z_mean, z_log_var):
    """(KL, dKL/dz_mean, dKL/dz_log_var) of :func:`kl_divergence`; the gradients are new arrays of
    shape (batch, latent): m / n and 0.5 (exp(v) - 1) / n."""
    m, v = np.asarray(z_mean), np.asarray(z_log_var)
    if m.shape != v.shape or m.ndim != 2:
        raise ValueError(f"z_mean and z_log_var must both have shape (batch, latent), got {m.shape} and {v.shape}")
    one, half, n = m.dtype.type(1), m.dtype.type(0.5), m.shape[0]
    exp_v = np.exp(v)
    per_sample = np.sum(-half * (one + v - np.square(m) - exp_v), axis=1)
    loss = float(np.mean(per_sample))
    inv_n = m.dtype.type(1 / n)
    return loss, m * inv_n, half * (exp_v - one) * inv_n


def reconstruction_crossentropy(y_true, y_pred, logits=None, out=None):
    """keras-io VAE's reconstruction loss: the binary crossentropy of each pixel (averaged over the
    last axis, channels, as keras.losses.binary_crossentropy), summed over the rest of a sample,
    averaged over the batch: R = sum(bce) / (n c). With ``logits`` (the decoder output's pre-activation
    z, y_pred = sigmoid(z)) it is taken from z, as Keras' TensorFlow backend does after a sigmoid;
    else from y_pred clipped to [1e-7, 1 - 1e-7].

    y_true, y_pred, logits : arrays of shape (batch, ..., c). Returns (R, dR/d(logits or y_pred)), the
    gradient written into ``out`` when given."""
    bce = BinaryCrossentropy()
    if logits is None:
        loss, grad = bce.value_and_gradient(y_true, y_pred, out=out)
    else:
        loss, grad = bce.value_and_gradient_from_logits(y_true, logits, out=out)
    scale = y_true.size / (y_true.shape[0] * y_true.shape[-1])   # pixels per sample: the mean becomes a sum
    grad *= grad.dtype.type(scale)
    return float(loss) * scale, grad


_BY_NAME = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
}
_FUNCTIONS = {mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
              binary_crossentropy: BinaryCrossentropy}

# Keras' aliases
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


def get(identifier):
    """A Loss from a name ('mse', 'mean_squared_error', 'mae', 'binary_crossentropy'), a Loss, or a
    function of this module."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if callable(identifier) and identifier in _FUNCTIONS:
        return _FUNCTIONS[identifier]()
    raise ValueError(f"Unknown loss {identifier!r}; expected one of {sorted(_BY_NAME)} or an autoenc.losses.Loss")
