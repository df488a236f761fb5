"""The fast convolution kernels against their slow, obvious versions (the oracles), on the seed
model's shapes and on odd ones, and bit-identical results whatever the number of threads."""
import os
import subprocess
import sys

import numpy as np
import pytest

from autoenc.kernels import convolution as K

SEED_SHAPES = [(28, 28, 1, 16), (14, 14, 16, 8), (7, 7, 8, 8), (14, 14, 8, 8), (28, 28, 8, 16), (28, 28, 16, 1)]

# (h, w, cin, cout, kh, kw, sh, sw, padding): kernels 1-5 and even, strides 1-3, odd sizes
ODD_CASES = [
    (9, 11, 3, 17, 4, 2, 2, 3, "same"),
    (9, 11, 17, 3, 5, 1, 3, 2, "valid"),
    (5, 3, 1, 1, 1, 1, 1, 1, "valid"),
    (13, 12, 16, 8, 2, 4, 1, 2, "same"),
    (6, 7, 8, 16, 5, 5, 1, 1, "same"),
    (3, 2, 17, 1, 3, 3, 1, 1, "same"),    # fewer than 8 output pixels
    (10, 10, 1, 3, 1, 2, 3, 1, "valid"),  # fewer than 8 patch elements
    (8, 9, 3, 8, 3, 3, 2, 2, "valid"),
    (7, 7, 8, 9, 3, 3, 1, 1, "same"),     # odd pixel count, an odd number of weight-gradient blocks, 1 channel left
]


def run_all(x, w, b, sh, sw, padding):
    """Fast forward (linear and relu), input and kernel gradients, and bias gradient."""
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    pt, pb, oh = K.conv_padding(h, kh, sh, padding)
    pl, pr, ow = K.conv_padding(wd, kw, sw, padding)
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, cin), x.dtype)
    K.pad_into(x, pt, pl, xp)
    y = np.empty((n, oh, ow, cout), x.dtype)
    K.conv2d_forward(xp, w, b, sh, sw, K.ACT_LINEAR, y)
    yr = np.empty_like(y)
    K.conv2d_forward(xp, w, b, sh, sw, K.ACT_RELU, yr)
    dy = np.cos(np.arange(y.size, dtype=x.dtype).reshape(y.shape))
    dx = np.empty_like(x)
    K.conv2d_backward_input(dy, w, sh, sw, pt, pl, dx)
    dw = np.empty_like(w)
    K.conv2d_backward_kernel(xp, dy, sh, sw, dw)
    db = np.empty_like(b)
    K.conv2d_backward_bias(dy, db)
    return y, yr, dy, dx, dw, db


def check(h, wd, cin, cout, kh, kw, sh, sw, padding, dtype=np.float32, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, wd, cin)).astype(dtype)
    w = rng.standard_normal((kh, kw, cin, cout)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y, yr, dy, dx, dw, db = run_all(x, w, b, sh, sw, padding)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    expected = K.conv2d_forward_naive(x, w, b, (sh, sw), padding)
    for got, want in [(y, expected), (yr, np.maximum(expected, 0)),
                      (dx, K.conv2d_backward_input_naive(dy, w, x.shape, (sh, sw), padding)),
                      (dw, K.conv2d_backward_kernel_naive(x, dy, (kh, kw), (sh, sw), padding)),
                      (db, K.conv2d_backward_bias_naive(dy))]:
        assert got.dtype == dtype
        scale = np.abs(want).max() + 1e-30
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("h, wd, cin, cout", SEED_SHAPES)
def test_seed_shapes_match_oracle(h, wd, cin, cout):
    check(h, wd, cin, cout, 3, 3, 1, 1, "same", n=4)


@pytest.mark.parametrize("case", ODD_CASES)
def test_odd_shapes_match_oracle(case):
    check(*case)


@pytest.mark.parametrize("case", [ODD_CASES[0], ODD_CASES[3], (7, 7, 8, 8, 3, 3, 1, 1, "same")])
def test_float64_matches_oracle(case):
    check(*case, dtype=np.float64, n=2)


_DETERMINISM_SCRIPT = r"""
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_kernels_fast import run_all
rng = np.random.default_rng(1)
digest = hashlib.sha256()
for h, wd, cin, cout, kh, kw, sh, sw, pad in [(28, 28, 8, 16, 3, 3, 1, 1, "same"), (14, 14, 16, 1, 3, 3, 1, 1, "same"),
                                              (9, 11, 3, 17, 4, 2, 2, 3, "same")]:
    x = rng.standard_normal((37, h, wd, cin)).astype(np.float32)
    w = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for a in run_all(x, w, b, sh, sw, pad):
        digest.update(a.tobytes())
print(digest.hexdigest())
"""


def test_results_do_not_depend_on_thread_count():
    script = _DETERMINISM_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    digests = []
    for threads in ("1", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]
