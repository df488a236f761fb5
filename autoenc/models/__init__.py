"""Models: the functional ``Model``, ``Sequential``, the variational autoencoder ``VAE``, and ``load_model`` for files written by ``model.save``."""
from autoenc import saving
from autoenc.models.model import Model
from autoenc.models.seed import seed_autoencoder
from autoenc.models.sequential import Sequential
from autoenc.models.vae import VAE, keras_io_vae


def load_model(filepath, custom_objects=None, compile=True, restore_random_state=True):
    """The model saved at ``filepath`` by ``model.save``: same layers, names and weights, and (if saved
    and ``compile``) compiled with the same loss and an optimizer in the same state. A ``.keras`` file
    (Keras 3's format, written by Keras or by autoenc) is built from its config.json with
    :func:`autoenc.keras_format.load_keras_model`.

    custom_objects : {class name: class} for layers (or losses, optimizers) that are not autoenc's own.
    restore_random_state : also restore autoenc's random generator as it was when the file was written,
        so that fitting on continues exactly as the uninterrupted run would have.

    Raises FileNotFoundError when there is no file, ValueError when it is not an autoenc model file,
    has another format version, is truncated, is malformed (naming the field), declares more than it
    holds, or fails its checksum; sizes are checked before anything is allocated (see autoenc.saving).
    """
    if str(filepath).endswith(".keras"):   # Keras 3's own format (autoenc.keras_format; needs h5py)
        from autoenc.keras_format import load_keras_model
        return load_keras_model(filepath, custom_objects=custom_objects, compile=compile)
    return saving.load_model_file(filepath, _from_config, custom_objects=custom_objects, compile=compile,
                                  restore_random_state=restore_random_state)


def _from_config(architecture, custom_objects, on_layer):
    """Model or Sequential, as the architecture says; ``on_layer`` sees each layer before it is built."""
    kind = architecture.get("class_name")
    cls = Sequential if kind == "Sequential" else VAE if kind == "VAE" else Model
    return cls.from_config(architecture, custom_objects, on_layer=on_layer)


__all__ = ["Model", "Sequential", "VAE", "keras_io_vae", "load_model", "seed_autoencoder"]
