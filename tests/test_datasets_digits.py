"""Synthetic digits: shapes, determinism, cache, MNIST-like statistics; helpers against obvious versions."""

import numpy as np
import pytest

from autoenc.datasets import digits
from autoenc.datasets._cache import cache_dir


pytestmark = pytest.mark.usefixtures("private_dataset_homes")  # tests/conftest.py


@pytest.fixture(scope="module")
def sample():
    """500 digits, shared by the statistics tests (generating them takes a fraction of a second)."""
    return digits.generate(500, seed=11)


# ---- what load_data returns ------------------------------------------------------------------------


def test_shapes_and_dtypes():
    (x_train, y_train), (x_test, y_test) = digits.load_data(n_train=30, n_test=20, cache=False)
    assert x_train.shape == (30, 28, 28) and x_test.shape == (20, 28, 28)
    assert y_train.shape == (30,) and y_test.shape == (20,)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.uint8


def test_all_ten_classes_equally_often():
    (_, y_train), (_, y_test) = digits.load_data(n_train=50, n_test=23, cache=False)
    assert np.bincount(y_train, minlength=10).tolist() == [5] * 10
    assert sorted(set(np.bincount(y_test, minlength=10).tolist())) == [2, 3]  # 23 = 3 * 3 + 7 * 2
    assert y_train.max() <= 9


def test_same_seed_same_digits():
    first = digits.load_data(n_train=40, n_test=10, seed=3, cache=False)
    second = digits.load_data(n_train=40, n_test=10, seed=3, cache=False)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)


def test_other_seed_other_digits():
    (x_a, _), _ = digits.load_data(n_train=40, n_test=0, seed=3, cache=False)
    (x_b, _), _ = digits.load_data(n_train=40, n_test=0, seed=4, cache=False)
    assert not np.array_equal(x_a, x_b)


def test_test_set_does_not_depend_on_training_size():
    _, (x_small, y_small) = digits.load_data(n_train=10, n_test=20, seed=5, cache=False)
    _, (x_large, y_large) = digits.load_data(n_train=30, n_test=20, seed=5, cache=False)
    np.testing.assert_array_equal(x_small, x_large)
    np.testing.assert_array_equal(y_small, y_large)


def test_training_and_test_sets_differ():
    (x_train, _), (x_test, _) = digits.load_data(n_train=20, n_test=20, seed=5, cache=False)
    assert not np.array_equal(x_train, x_test)


def test_empty_sets():
    (x_train, y_train), (x_test, y_test) = digits.load_data(n_train=0, n_test=3, cache=False)
    assert x_train.shape == (0, 28, 28) and y_train.shape == (0,) and x_test.shape == (3, 28, 28)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_train": -1}, "n_train=-1"),
    ({"n_test": 2.5}, "n_test=2.5"),
    ({"seed": "zero"}, "seed='zero'"),
    ({"n_train": True}, "n_train=True"),
])
def test_bad_arguments_are_quoted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        digits.load_data(cache=False, **kwargs)


# ---- the cache -------------------------------------------------------------------------------------


def test_cache_round_trip(monkeypatch):
    first = digits.load_data(n_train=20, n_test=10, seed=2)
    path = digits.cache_file(20, 10, 2)
    assert path.parent == cache_dir() and path.is_file()
    assert f"v{digits.GENERATOR_VERSION}" in path.name
    assert [p.name for p in cache_dir().iterdir()] == [path.name]  # no temporary file left

    def must_not_run(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(digits, "generate", must_not_run)
    second = digits.load_data(n_train=20, n_test=10, seed=2)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)


def test_cache_key_includes_sizes_seed_and_version():
    names = {digits.cache_file(*key).name for key in [(20, 10, 2), (21, 10, 2), (20, 11, 2), (20, 10, 3)]}
    assert len(names) == 4


def test_damaged_cache_file_is_made_again():
    path = digits.cache_file(20, 10, 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    (x_train, _), _ = digits.load_data(n_train=20, n_test=10, seed=2)
    assert x_train.shape == (20, 28, 28)
    np.testing.assert_array_equal(np.load(path)["x_train"], x_train)


def test_no_cache_writes_nothing():
    digits.load_data(n_train=5, n_test=5, cache=False)
    assert not cache_dir().exists()


# ---- do they look like MNIST? ----------------------------------------------------------------------


def test_pixel_statistics_resemble_mnist(sample):
    x, _ = sample
    ink = x / 255.0
    assert 0.10 < ink.mean() < 0.20  # MNIST: 0.13
    assert 0.70 < np.mean(x == 0) < 0.90  # MNIST: about 81% of the pixels are exactly 0
    assert np.all(x.max(axis=(1, 2)) == 255)  # every digit has solid strokes
    assert np.all((x > 0).sum(axis=(1, 2)) > 40)  # and is not a speck


def test_centred_by_centre_of_mass(sample):
    x, _ = sample
    rows, cols = np.mgrid[0:28, 0:28]
    mass = x.sum(axis=(1, 2), dtype=np.float64)
    centre_row = (x * rows).sum(axis=(1, 2)) / mass
    centre_col = (x * cols).sum(axis=(1, 2)) / mass
    assert np.all(np.abs(centre_row - 13.5) < 1.0) and np.all(np.abs(centre_col - 13.5) < 1.0)


def test_fitted_in_a_20_pixel_box(sample):
    x, _ = sample
    solid = x >= 128
    height = 28 - solid.any(axis=2)[:, ::-1].argmax(axis=1) - solid.any(axis=2).argmax(axis=1)
    width = 28 - solid.any(axis=1)[:, ::-1].argmax(axis=1) - solid.any(axis=1).argmax(axis=1)
    larger = np.maximum(height, width)
    assert np.all((18 <= larger) & (larger <= 22))
    assert np.mean(x[:, [0, -1], :].any(axis=(1, 2)) | x[:, :, [0, -1]].any(axis=(1, 2))) < 0.05  # margins


def test_each_class_has_its_own_shape(sample):
    # Mean images of different digits must differ clearly: the labels match the pictures.
    x, y = sample
    means = np.stack([x[y == d].mean(axis=0) for d in range(10)]) / 255
    nearest = [np.argmin(((means - x_i / 255) ** 2).sum(axis=(1, 2))) for x_i in x[:200]]
    assert np.mean(np.array(nearest) == y[:200]) > 0.6  # a nearest-class-mean classifier works


# ---- the helpers against obvious versions ----------------------------------------------------------


def bilinear_naive(images, index, x, y):
    """One point at a time, straight from the definition (with the same clamping)."""
    n_images, h, w = images.shape
    out = np.zeros(x.shape)
    for b in range(x.shape[0]):
        for p in range(x.shape[1]):
            xx = min(max(x[b, p], 0), w - 1.001)
            yy = min(max(y[b, p], 0), h - 1.001)
            c, r = int(np.floor(xx)), int(np.floor(yy))
            fx, fy = xx - c, yy - r
            image = images[index[b]]
            out[b, p] = ((1 - fy) * ((1 - fx) * image[r, c] + fx * image[r, c + 1])
                         + fy * ((1 - fx) * image[r + 1, c] + fx * image[r + 1, c + 1]))
    return out


def test_bilinear_matches_the_obvious_version():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 5, 7)).astype(np.float32)
    index = np.array([2, 0, 1, 2])
    x = rng.uniform(-2, 9, (4, 30)).astype(np.float32)
    y = rng.uniform(-2, 7, (4, 30)).astype(np.float32)
    np.testing.assert_allclose(digits._bilinear(images, index, x, y), bilinear_naive(images, index, x, y),
                               rtol=1e-5, atol=1e-5)


def test_bilinear_hits_pixel_centres_exactly():
    images = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    x = np.array([[0.0, 3.0, 1.0, 1.5]], dtype=np.float32)
    y = np.array([[0.0, 0.0, 2.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(digits._bilinear(images, np.array([0]), x, y)[0],
                               [0, 3, 9, (1 + 2 + 5 + 6) / 4], atol=1e-2)


def test_smooth_field_has_unit_std_everywhere():
    field = digits._smooth_field(np.random.default_rng(0), 4000, 1, 20, sigma=4.0)[:, 0]
    std = field.std(axis=0)  # per pixel, over 4000 fields
    assert np.all(np.abs(std - 1) < 0.1)  # corners included
    # and it is smooth: neighbours are strongly correlated
    assert np.corrcoef(field[:, 10, 10], field[:, 10, 11])[0, 1] > 0.9


def test_gaussian_weights_rows_have_unit_norm():
    weights = digits._gaussian_weights(28, 9, 5.0)
    assert weights.shape == (28, 9)
    np.testing.assert_allclose((weights**2).sum(axis=1), 1, rtol=1e-5)


def test_signed_distance_of_a_disc():
    # A disc of radius 10 centred at (15, 15): the signed distance is |p - c| - 10.
    rows, cols = np.mgrid[0:32, 0:32]
    radius_at = np.hypot(cols - 15, rows - 15)
    angles = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    outline = np.stack([15 + 10 * np.cos(angles), 15 + 10 * np.sin(angles)], axis=1)
    sdf = digits._signed_distance(radius_at < 10, outline)
    np.testing.assert_allclose(sdf, radius_at - 10, atol=0.05)


def test_glyph_table():
    table = digits.glyphs()
    n_glyphs = len(table["digit"])
    assert sorted(set(table["digit"].tolist())) == list(range(10))
    assert table["sdf"].shape == (n_glyphs, digits.GRID, digits.GRID) and table["sdf"].dtype == np.float32
    assert np.all(table["sdf"].min(axis=(1, 2)) < -1)  # every glyph has ink
    border = np.concatenate([table["sdf"][:, 0, :], table["sdf"][:, -1, :]], axis=1)
    assert np.all(border > 4)  # and a blank margin around it
    assert np.all((table["width"] > 2) & (table["width"] < 15))
