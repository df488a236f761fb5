"""Metrics: the numbers ``compile(metrics=[...])`` reports beside the loss, as Keras 3 computes them.

Each function gives one value per entry (or per sample), and a metric's value on a batch is their mean;
``fit`` and ``evaluate`` weight batches by their size, which is Keras' mean over samples:
    accuracy:                     y_true == y_pred                                    (exact equality)
    binary_accuracy:              y_true == (y_pred > threshold),  threshold = 0.5
    categorical_accuracy:         argmax(y_true) == argmax(y_pred)                    (over the last axis)
    sparse_categorical_accuracy:  y_true == argmax(y_pred)                            (integer labels)
    mean_squared_error, mse:      mean((y_true - y_pred)^2)   over the last axis
    mean_absolute_error, mae:     mean(|y_true - y_pred|)     over the last axis
The string 'accuracy' (or 'acc', any case) is resolved from the shapes, as Keras'
compile_utils.get_metric does: binary_accuracy when y_pred's last axis has size 1 (an image
autoencoder's (batch, h, w, 1) output), sparse_categorical_accuracy when y_true has a lower rank than
y_pred or a last axis of 1 against y_pred's > 1, else categorical_accuracy, whatever the loss.
Loss names autoenc knows ('binary_crossentropy', ...) are metrics too, as in Keras, and so is any
function fn(y_true, y_pred) returning an array.
"""
import re

import numpy as np

from autoenc import losses

_LOSS_NAMES = "a loss name ('mean_squared_error', 'mean_absolute_error', 'binary_crossentropy', ...)"


def _same_rank(y_true, y_pred):
    """Keras' squeeze_or_expand_to_same_rank: drop or add a trailing axis of size 1 so the ranks agree."""
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_pred = y_pred[..., 0]
    return y_true, y_pred


def accuracy(y_true, y_pred):
    """1.0 where y_true == y_pred, else 0.0 (float32), entrywise. y_true, y_pred: one shape (up to a
    trailing axis of 1)."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true).astype(y_pred.dtype)
    y_true, y_pred = _same_rank(y_true, y_pred)
    return np.equal(y_true, y_pred).astype(np.float32)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where y_true == (y_pred > threshold), entrywise (so only y_true entries of exactly 0 or 1 can
    match). y_true, y_pred: one shape."""
    y_true, y_pred = _same_rank(np.asarray(y_true), np.asarray(y_pred))
    return np.equal(y_true, (y_pred > threshold).astype(y_true.dtype)).astype(np.float32)


def categorical_accuracy(y_true, y_pred):
    """1.0 where argmax(y_true) == argmax(y_pred) over the last axis (first index on ties). y_true,
    y_pred: (..., classes); returns (...)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return np.equal(np.argmax(y_true, axis=-1), np.argmax(y_pred, axis=-1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where the integer label y_true == argmax(y_pred). y_true: (...) or (..., 1); y_pred: (..., classes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    return np.equal(y_true, np.argmax(y_pred, axis=-1).astype(y_true.dtype)).astype(np.float32)


def mean_squared_error(y_true, y_pred):
    """mean((y_true - y_pred)^2) over the last axis. y_true, y_pred: (..., d); returns (...)."""
    return np.mean(np.square(np.asarray(y_pred) - np.asarray(y_true)), axis=-1)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_true - y_pred|) over the last axis. y_true, y_pred: (..., d); returns (...)."""
    return np.mean(np.abs(np.asarray(y_pred) - np.asarray(y_true)), axis=-1)


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error


def is_binary_or_sparse_categorical(y_true_shape, y_pred_shape):
    """Keras' rule for the string 'accuracy': (binary, sparse categorical) from the two shapes."""
    is_binary = y_pred_shape[-1] == 1
    is_sparse = len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1)
    return is_binary, is_sparse


class Metric:
    """``metric(y_true, y_pred)`` is the mean of ``fn(y_true, y_pred, **kwargs)`` over a batch; ``name``
    is the key of the logs, as Keras' MeanMetricWrapper."""

    def __init__(self, fn, name=None, **kwargs):
        self.fn, self.kwargs = fn, kwargs
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    @property
    def __name__(self):  # the name compile() gives the logs
        return self.name

    def __call__(self, y_true, y_pred):
        return float(np.mean(self.fn(np.asarray(y_true), np.asarray(y_pred), **self.kwargs), dtype=np.float64))

    def get_config(self):
        return {"name": self.name, **self.kwargs}

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


class Accuracy(Metric):
    def __init__(self, name="accuracy"):
        super().__init__(accuracy, name)


class BinaryAccuracy(Metric):
    def __init__(self, name="binary_accuracy", threshold=0.5):
        super().__init__(binary_accuracy, name, threshold=float(threshold))


class CategoricalAccuracy(Metric):
    def __init__(self, name="categorical_accuracy"):
        super().__init__(categorical_accuracy, name)


class SparseCategoricalAccuracy(Metric):
    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(sparse_categorical_accuracy, name)


class MeanSquaredError(Metric):
    def __init__(self, name="mean_squared_error"):
        super().__init__(mean_squared_error, name)


class MeanAbsoluteError(Metric):
    def __init__(self, name="mean_absolute_error"):
        super().__init__(mean_absolute_error, name)


class AutoAccuracy(Metric):
    """The string 'accuracy' / 'acc': binary, sparse categorical or categorical accuracy, chosen from the
    shapes of y_true and y_pred at the first batch (Keras' compile_utils.get_metric). ``resolved`` tells
    which one."""

    def __init__(self, name="accuracy"):
        super().__init__(None, name)
        self.resolved = None

    def __call__(self, y_true, y_pred):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if self.resolved is None:
            binary, sparse = is_binary_or_sparse_categorical(y_true.shape, y_pred.shape)
            self.resolved = "binary_accuracy" if binary else (
                "sparse_categorical_accuracy" if sparse else "categorical_accuracy")
            self.fn = globals()[self.resolved]
        return super().__call__(y_true, y_pred)


_CLASSES = [Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, MeanSquaredError,
            MeanAbsoluteError]
_FUNCTIONS = [accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy, mean_squared_error,
              mean_absolute_error]
# the names keras.metrics.get accepts for these: class names, snake_case names, and Keras' aliases
_BY_NAME = {**{cls.__name__: cls for cls in _CLASSES}, **{fn.__name__: cls for fn, cls in zip(_FUNCTIONS, _CLASSES)},
            "mse": MeanSquaredError, "MSE": MeanSquaredError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError}
# Keras metrics that have no meaning or no implementation here, for a clearer error
_KERAS_ONLY = {"auc", "precision", "recall", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
               "categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence", "cosine_similarity",
               "mean_absolute_percentage_error", "mape", "mean_squared_logarithmic_error", "msle", "f1_score",
               "fbeta_score", "iou", "mean_iou", "r2_score", "hinge", "squared_hinge", "categorical_hinge",
               "poisson", "log_cosh_error", "root_mean_squared_error", "true_positives", "false_positives",
               "true_negatives", "false_negatives", "precision_at_recall", "recall_at_precision",
               "sensitivity_at_specificity", "specificity_at_sensitivity", "pearson_correlation",
               "concordance_correlation"}


def names():
    """The metric names ``get`` accepts (besides autoenc's loss names)."""
    return sorted(set(_BY_NAME) | {"accuracy", "acc"})


def get(identifier):
    """A Metric from a name ('accuracy', 'binary_accuracy', 'mae', 'mse', 'MeanSquaredError', a loss
    name, ...), one of this module's functions or classes, a Metric, or a function fn(y_true, y_pred)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric) and identifier is not Metric:
        return identifier()
    if isinstance(identifier, str):
        if identifier.lower() in ("accuracy", "acc"):
            return AutoAccuracy(identifier)
        if identifier in _BY_NAME:
            return _BY_NAME[identifier](name=identifier)
        try:
            loss = losses.get(identifier)
        except ValueError:
            loss = None
        if loss is not None:   # its value() (no NaN refusal: a diverged step must reach fit's NaN stop)
            return Metric(loss.value, identifier)
        # 'AUC' -> 'auc', 'TopKCategoricalAccuracy' -> 'top_k_categorical_accuracy'
        snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", identifier)).lower()
        if identifier.lower() in _KERAS_ONLY or snake in _KERAS_ONLY:
            raise ValueError(f"Metric {identifier!r} is a Keras metric that autoenc does not compute; autoenc "
                             f"computes {names()} and {_LOSS_NAMES}")
        raise ValueError(f"Unknown metric {identifier!r}; expected one of {names()}, {_LOSS_NAMES}, "
                         "or a function fn(y_true, y_pred)")
    for fn, cls in zip(_FUNCTIONS, _CLASSES):
        if identifier is fn:
            return cls()
    if callable(identifier):
        return Metric(identifier)
    raise TypeError(f"A metric must be a name, a function fn(y_true, y_pred) or an autoenc.metrics.Metric, "
                    f"got {identifier!r}")
