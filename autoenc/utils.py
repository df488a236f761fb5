"""Random state, the compute lock and small helpers shared by the package."""
import contextlib
import threading

import numpy as np

_rng = np.random.default_rng()

# Layers keep work buffers and the values their backward pass reads between calls, so two threads must
# not run a layer at the same time. Every public computation (predict, evaluate, fit, train_on_batch,
# model(x), layer(x), ...) holds this lock for one batch: calls from several threads take turns batch
# by batch, and each batch already uses every core (threads.parallel_for).
compute_lock = threading.RLock()


def set_random_seed(seed):
    """Seed every source of randomness autoenc uses (initializers, shuffling, dropout) and NumPy's.

    The same seed gives the same initial weights and, on one machine, the same training bit for bit.
    """
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    np.random.seed(int(seed) % 2**32)
    _rng = np.random.default_rng(int(seed))


def rng():
    """The package's random generator (reseeded by :func:`set_random_seed`)."""
    return _rng


def normalize_tuple(value, n, name):
    """Turn an int or a sequence of n positive ints into a tuple of n ints, or raise ValueError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value!r}") from None
    if len(value) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                  for v in value):
        raise ValueError(f"{name} must be a positive int or a tuple of {n} positive ints, got {value!r}")
    return tuple(int(v) for v in value)


def normalize_padding(value):
    """'valid' or 'same' (any case), or raise ValueError."""
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {value!r}")
    return value.lower()


def check_data_format(value, layer):
    if value not in (None, "channels_last"):
        raise ValueError(f"{layer} supports data_format='channels_last' (NHWC) only, got {value!r}")



@contextlib.contextmanager
def field_errors(where, error_class):
    """Re-raise any error that reading the field ``where`` of a file raises as ``error_class``, with a
    message naming the field: KeyError and friends from a malformed file must not reach the user bare.
    An error whose class sets ``names_its_field`` (it already says where) keeps its message."""
    try:
        yield
    except error_class:
        raise
    except (KeyError, IndexError) as error:
        raise error_class(f"{where}: missing entry {error}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, MemoryError, RecursionError) as error:
        if getattr(error, "names_its_field", False):
            raise error_class(str(error)) from None
        raise error_class(f"{where}: {type(error).__name__}: {error}") from None
