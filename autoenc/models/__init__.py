"""Models: the functional ``Model`` and ``Sequential``, and ``load_model`` for files written by ``model.save``."""
from autoenc.models.model import Model
from autoenc.models.seed import seed_autoencoder
from autoenc.models.sequential import Sequential


def load_model(filepath, custom_objects=None, compile=True, restore_random_state=True):
    """The model saved by ``model.save(filepath)``; see :func:`autoenc.saving.load_model`."""
    from autoenc import saving  # saving imports this package
    return saving.load_model(filepath, custom_objects=custom_objects, compile=compile,
                             restore_random_state=restore_random_state)


__all__ = ["Model", "Sequential", "load_model", "seed_autoencoder"]
