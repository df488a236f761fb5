import numpy as np
import pytest

from autoenc import regularizers
from autoenc.gradcheck import _relative_error


@pytest.mark.parametrize("reg", [regularizers.l1(0.02), regularizers.l2(0.03), regularizers.l1_l2(l1=0.01, l2=0.05),
                                 regularizers.get("l1"), regularizers.get("l2"), regularizers.get("l1_l2")])
def test_penalty_gradient(rng, reg):
    w = rng.standard_normal((3, 4))
    eps = 1e-6
    num = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[i] += eps
        wm[i] -= eps
        num[i] = (reg(wp) - reg(wm)) / (2 * eps)
    assert _relative_error(reg.gradient(w), num) < 1e-7


def test_keras_defaults():
    assert regularizers.L1().l1 == 0.01 and regularizers.L2().l2 == 0.01
    r = regularizers.get("l1_l2")
    assert (r.l1, r.l2) == (0.01, 0.01)
    assert (regularizers.L1L2().l1, regularizers.L1L2().l2) == (0.0, 0.0)
    w = np.array([1.0, -2.0])
    assert regularizers.l2(0.5)(w) == pytest.approx(0.5 * 5)
    assert regularizers.l1(0.5)(w) == pytest.approx(0.5 * 3)
    with pytest.raises(ValueError, match="l1"):
        regularizers.L1(-1)
