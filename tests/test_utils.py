"""autoenc.utils: seeding and argument normalisation (atomic writes: tests/test_files.py)."""

import numpy as np
import pytest

from autoenc import utils


def test_set_random_seed_reseeds_the_package_generator():
    utils.set_random_seed(3)
    a = utils.rng().random(4)
    utils.set_random_seed(3)
    np.testing.assert_array_equal(a, utils.rng().random(4))
    with pytest.raises(ValueError, match="seed"):
        utils.set_random_seed(-1)


def test_normalize_tuple_and_padding():
    assert utils.normalize_tuple(3, 2, "kernel_size") == (3, 3)
    assert utils.normalize_tuple((2, 5), 2, "strides") == (2, 5)
    with pytest.raises(ValueError, match=r"strides must be .* got \(2, 0\)"):
        utils.normalize_tuple((2, 0), 2, "strides")
    assert utils.normalize_padding("SAME") == "same"
    with pytest.raises(ValueError, match="padding"):
        utils.normalize_padding("full")

