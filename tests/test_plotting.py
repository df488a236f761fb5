"""autoenc.plotting: every function writes a real picture, atomically, and rejects bad shapes clearly."""
import contextlib

import numpy as np
import pytest

from autoenc import plotting
from autoenc.callbacks import History
from autoenc.layers import Add, Conv2D, Input
from autoenc.models import Model, Sequential

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def images():
    return np.random.default_rng(0).random((12, 28, 28, 1)).astype("float32")


def test_reconstructions_and_rows(tmp_path, images):
    plotting.plot_reconstructions(images, images[::-1], tmp_path / "r.png", n=10)
    assert (tmp_path / "r.png").read_bytes().startswith(PNG)
    plotting.plot_image_rows({"noisy": images, "denoised": images[..., 0], "clean": images}, tmp_path / "rows.png", n=4)
    assert (tmp_path / "rows.png").read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_reconstructions(images[0, :, :, 0], images[0, :, :, 0], tmp_path / "bad.png")


def test_history_from_a_history_or_a_dict(tmp_path):
    history = History()
    history.history = {"loss": [0.3, 0.2], "val_loss": [0.35, 0.25], "mse": [0.1, 0.05], "val_mse": [0.1, 0.06]}
    plotting.plot_history(history, tmp_path / "h.png")
    plotting.plot_history({"loss": [0.3]}, tmp_path / "one.svg")
    assert (tmp_path / "h.png").read_bytes().startswith(PNG)
    assert b"<svg" in (tmp_path / "one.svg").read_bytes()
    with pytest.raises(ValueError, match="History"):
        plotting.plot_history({}, tmp_path / "empty.png")


def test_latent_and_filters(tmp_path, images):
    plotting.plot_latent(np.random.default_rng(1).random((3, 7, 7, 8)), tmp_path / "l.png", images=images[:3])
    layer = Conv2D(16, 3)
    layer(images[:1])   # builds it
    plotting.plot_filters(layer, tmp_path / "f.png")
    plotting.plot_filters(np.ones((3, 3, 2, 4)), tmp_path / "k.png")
    for name in ("l.png", "f.png", "k.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="kernel"):
        plotting.plot_filters(np.ones((3, 3)), tmp_path / "bad.png")


def test_plot_model_draws_a_dag_and_a_sequential(tmp_path):
    i = Input(shape=(8, 8, 1))
    a = Conv2D(2, 3, padding="same", name="first")(i)
    b = Conv2D(2, 3, padding="same", name="second")(a)
    model = Model(i, Add(name="skip_sum")([a, b]))
    plotting.plot_model(model, tmp_path / "dag.svg")
    svg = (tmp_path / "dag.svg").read_text()
    for text in ("first", "second", "skip_sum", "Conv2D", "(None, 8, 8, 2)"):
        assert text in svg
    plotting.plot_model(Sequential([Input(shape=(8, 8, 1)), Conv2D(1, 3)]), tmp_path / "seq.png")
    assert (tmp_path / "seq.png").read_bytes().startswith(PNG)


def test_unknown_extension_and_atomic_failure(tmp_path, images, monkeypatch):
    with pytest.raises(ValueError, match="format"):
        plotting.plot_reconstructions(images, images, tmp_path / "r.bmpx")
    path = tmp_path / "r.png"
    plotting.plot_reconstructions(images, images, path)
    before = path.read_bytes()

    def broken(fig, *args, **kwargs):
        raise RuntimeError("renderer crashed")
    monkeypatch.setattr(plotting.Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plotting.plot_reconstructions(images, 1 - images, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.png"]


@contextlib.contextmanager
def disk_full_after(nbytes):
    """Every file write beyond ``nbytes`` fails with EFBIG, as on a disk that fills up mid-write."""
    import resource
    import signal
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_picture_written_on_a_full_disk_leaves_the_old_file(tmp_path, images):
    path = tmp_path / "r.png"
    plotting.plot_reconstructions(images, images, path)
    before = path.read_bytes()
    assert len(before) > 8192
    with disk_full_after(4096), pytest.raises(OSError):
        plotting.plot_reconstructions(images, 1 - images, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.png"]


def test_vae_pictures(tmp_path):
    from autoenc import layers
    rng = np.random.default_rng(0)
    plotting.plot_latent_scatter(rng.standard_normal((50, 2)), rng.integers(0, 10, 50), tmp_path / "s.png")
    lat = Input(shape=(2,))
    decoder = Model(lat, layers.Reshape((4, 4, 1))(layers.Dense(16, activation="sigmoid")(lat)))
    plotting.plot_manifold(decoder, tmp_path / "m.png", n=5)
    plotting.plot_samples(decoder, 2, tmp_path / "d.png", n=3)
    for name in ("s.png", "m.png", "d.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match=r"z_mean of shape \(n, 2\) and labels of shape \(n,\), got \(50, 3\)"):
        plotting.plot_latent_scatter(np.zeros((50, 3)), np.zeros(50), tmp_path / "bad.png")


def test_manifold_grid_is_keras_io_order(tmp_path, monkeypatch):
    """keras-io's plot_latent_space: row i is z[1] = grid_y[i] (from +scale down), column j is z[0] = grid_x[j]."""
    seen = []

    class Decoder:
        def predict(self, z, batch_size=None, verbose=0):
            seen.append(np.array(z))
            return np.zeros((len(z), 4, 4, 1), np.float32)

    plotting.plot_manifold(Decoder(), tmp_path / "m.png", n=3, scale=2.0)
    z = seen[0]
    np.testing.assert_array_equal(z[:3], [[-2, 2], [0, 2], [2, 2]])     # the top row: z[1] = +2
    np.testing.assert_array_equal(z[-1], [2, -2])
