import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first call: no per-example deadline; a modest number of examples per sweep.
settings.register_profile("autoenc", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("autoenc")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
