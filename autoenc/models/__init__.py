"""Models: the functional ``Model`` and ``Sequential``."""
from autoenc.models.model import Model
from autoenc.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
