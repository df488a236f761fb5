import numpy as np
import pytest

from autoenc import initializers, utils


@pytest.mark.parametrize("name,limit", [("glorot_uniform", np.sqrt(6 / (27 + 9 * 64))),
                                        ("he_uniform", np.sqrt(6 / 27))])
def test_uniform_limits(name, limit):
    w = initializers.get(name)((3, 3, 3, 64))
    assert w.dtype == np.float32
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    assert abs(w.std() - limit / np.sqrt(3)) < 0.05 * limit


@pytest.mark.parametrize("name,std", [("glorot_normal", np.sqrt(2 / (32 * 9 + 64 * 9))), ("he_normal", np.sqrt(2 / (32 * 9)))])
def test_truncated_normal_std(name, std):
    w = initializers.get(name)((3, 3, 32, 64))
    assert abs(w.std() - std) < 0.03 * std
    assert np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-6


def test_constants_and_seeding():
    assert (initializers.get("zeros")((2, 3)) == 0).all() and (initializers.get("ones")((4,)) == 1).all()
    utils.set_random_seed(5)
    a = initializers.get("glorot_uniform")((3, 3))
    utils.set_random_seed(5)
    np.testing.assert_array_equal(a, initializers.get("glorot_uniform")((3, 3)))
    with pytest.raises(ValueError, match="Unknown initializer"):
        initializers.get("glorot_gaussian_9000")
