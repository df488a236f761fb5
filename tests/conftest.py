import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# tests/fixtures holds modules the test files import (parity_models, adam_parity, live_keras, ...)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))

# Numba compiles on first call: no per-example deadline; a modest number of examples per sweep.
settings.register_profile("autoenc", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("autoenc")


@pytest.fixture(scope="module")
def keep_autoenc_random_state():
    """For a module that builds layers (their initial weights draw from autoenc's generator): puts the
    generator's state back after the module, so the test files after it see it as without it. Use it
    as ``pytestmark = pytest.mark.usefixtures("keep_autoenc_random_state")``."""
    import autoenc
    state = autoenc.utils.rng().bit_generator.state
    yield
    autoenc.utils.rng().bit_generator.state = state


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def closed_url():
    """A base URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def private_dataset_homes(tmp_path, monkeypatch, closed_url):
    """Never touch the real ~/.autoenc or ~/.keras, never reach a real server, no system dataset copy."""
    from autoenc.datasets import fashion_mnist, mnist
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUTOENC_HOME", str(tmp_path / "autoenc"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("AUTOENC_DATASETS_URL", raising=False)
    monkeypatch.setattr(mnist, "BASE_URL", closed_url)
    monkeypatch.setattr(fashion_mnist, "BASE_URL", closed_url)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(tmp_path / "no-system-copy"),))
