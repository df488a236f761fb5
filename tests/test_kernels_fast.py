"""The fast convolution kernels against their slow, obvious versions (the oracles), on the seed
model's shapes and on odd ones, and bit-identical results whatever the number of threads."""
import os
import subprocess
import sys

import numpy as np
import pytest

from autoenc.kernels import config, conv_forward, conv_input_grad, conv_weight_grad
from autoenc.kernels.padding import conv_padding, dilate_pad_into, pad_into

SEED_SHAPES = [(28, 28, 1, 16), (14, 14, 16, 8), (7, 7, 8, 8), (14, 14, 8, 8), (28, 28, 8, 16), (28, 28, 16, 1)]

# (h, w, cin, cout, kh, kw, sh, sw, padding): kernels 1-5 and even, strides 1-3, odd sizes
ODD_CASES = [
    (9, 11, 3, 17, 4, 2, 2, 3, "same"),
    (9, 11, 17, 3, 5, 1, 3, 2, "valid"),
    (5, 3, 1, 1, 1, 1, 1, 1, "valid"),
    (13, 12, 16, 8, 2, 4, 1, 2, "same"),  # 8 channels by pairs of patch elements, rows of 64
    (6, 7, 8, 16, 5, 5, 1, 1, "same"),
    (3, 2, 17, 1, 3, 3, 1, 1, "same"),    # fewer than 8 output pixels
    (10, 10, 1, 3, 1, 2, 3, 1, "valid"),  # fewer than 8 patch elements
    (8, 9, 3, 8, 3, 3, 2, 2, "valid"),    # patch rows of 9: 8 channels not by pairs of elements (odd rows)
    (7, 7, 8, 9, 3, 3, 1, 1, "same"),     # odd pixel count, an odd number of weight-gradient blocks, 1 channel left
]

# Shapes for the wide paths: 16-channel forward blocks (AVX-512, patch rows of 32 or more numbers),
# with 8-wide blocks and single channels left over, also for the input gradient (the forward pass
# with cin and cout swapped); and weight gradients over several pixel tiles (conv_weight_grad.TILE_FLOATS).
WIDE_CASES = [
    (6, 7, 33, 17, 3, 3, 1, 1, "same"),   # 16 + 1 channels forward; 33 = 2x16 + 1 in the input gradient
    (5, 9, 15, 33, 3, 3, 2, 1, "same"),   # patch rows of 45, strides
    (7, 6, 32, 24, 3, 3, 1, 1, "valid"),  # 16 + 8 channels
    (4, 5, 5, 48, 3, 3, 1, 1, "same"),    # patch rows of 15: 8-wide blocks only; the input gradient: 16-wide, 5 left
    (9, 8, 64, 3, 1, 1, 1, 1, "valid"),   # 1x1 kernel, 3 output channels: dot products only
    (6, 6, 1, 64, 3, 3, 1, 1, "same"),    # one input channel, many output channels (rows of 3)
]
# The 32-channel forward blocks (AVX-512, patch rows of 8 or more numbers) with 16, 8 and single channels
# left over, rows of 8, 16 and 24 numbers, strides, fewer pixels than a block; the input gradient runs
# them with cin and cout swapped.
WIDE32_CASES = [
    (6, 7, 24, 33, 3, 3, 1, 1, "same"),   # 32 + 1 channels, rows of 72; the input gradient: 24 = 16 + 8
    (5, 9, 4, 40, 2, 2, 2, 1, "same"),    # 32 + 8, rows of 8, strides
    (7, 6, 8, 48, 2, 2, 1, 1, "valid"),   # 32 + 16, rows of 16 (the seed's fused decoder convolutions)
    (4, 5, 8, 96, 3, 3, 2, 2, "same"),    # 3 x 32, rows of 24, strides 2
    (8, 8, 64, 64, 3, 3, 1, 1, "same"),   # the wide models' 64 -> 64
    (2, 3, 40, 64, 3, 3, 1, 1, "same"),   # 6 output pixels: under one block
]
# The one-channel paths: 16-channel forward blocks on patch rows of 1 or 2 numbers; weight gradients in
# groups of 9 patch elements x 16 channels (a group repeating its last element, several groups, 8 or 1
# channels left over); the forward's dot products for the channels left over by its blocks (cout % 8),
# 16 pixels at a time over 16-number vectors of each kernel row and its last numbers by a masked load:
# rows of whole vectors, of vectors and a tail, of a tail only; under 16 output pixels (one output at a
# time), a last block overlapping the one before; one output channel (a vector store) or several.
ONE_CHANNEL_CASES = [
    (7, 9, 1, 16, 1, 3, 1, 1, "same"),    # 3 patch elements: one group, 6 repeats
    (8, 10, 2, 16, 3, 3, 2, 2, "valid"),  # 18 elements: two groups; strides
    (9, 7, 1, 33, 5, 5, 1, 2, "same"),    # 25 elements: three groups; 32 + 1 channels
    (11, 13, 1, 24, 3, 3, 1, 1, "valid"), # 16 + 8 channels
    (9, 11, 16, 1, 3, 3, 1, 1, "same"),   # the seed's last layer: rows of 3 vectors, one group
    (7, 8, 24, 1, 3, 3, 2, 1, "valid"),   # rows of 72: 4 vectors and 8 more, two groups
    (6, 7, 5, 1, 3, 3, 1, 1, "same"),     # rows of 15: a tail only
    (5, 6, 6, 1, 3, 3, 1, 1, "same"),     # rows of 18: a vector and 2 more
    (6, 6, 16, 3, 3, 3, 1, 1, "same"),    # three channels left over
    (3, 4, 16, 1, 3, 3, 1, 1, "same"),    # 12 output pixels: one at a time
    (4, 4, 8, 1, 3, 3, 1, 1, "same"),     # 16 output pixels: one block; rows of 24
    (3, 6, 8, 9, 3, 3, 1, 1, "same"),     # 18 pixels: the last block overlaps; 8 + 1 channels
    (5, 5, 20, 2, 3, 3, 1, 1, "same"),    # rows of 60: 3 vectors and 12 more; 2 channels
    (5, 20, 16, 1, 3, 3, 1, 1, "same"),   # 16 pixels of one output row at a time, the row's last 16 overlapping
    (7, 16, 32, 3, 3, 3, 2, 1, "same"),   # rows of 16 pixels, 2 vectors a tap, 3 channels, row stride 2
    (4, 35, 48, 9, 3, 3, 1, 1, "valid"),  # 33 pixels a row, 3 vectors a tap, 8 + 1 channels
]
# (h, w, cin, cout, n): the weight gradient's pixels in several tiles per chunk, the last one odd or even
TILED_CASES = [(40, 40, 64, 127, 2), (41, 41, 64, 127, 1), (33, 33, 1, 255, 1), (33, 33, 3, 253, 2),
               (64, 64, 64, 1, 1)]


def run_all(x, w, b, sh, sw, padding):
    """Fast forward (linear and relu), input and kernel gradients, and bias gradient."""
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    pt, pb, oh = conv_padding(h, kh, sh, padding)
    pl, pr, ow = conv_padding(wd, kw, sw, padding)
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, cin), x.dtype)
    pad_into(x, pt, pl, xp)
    y = np.empty((n, oh, ow, cout), x.dtype)
    conv_forward.conv2d_forward(xp, w, b, sh, sw, conv_forward.ACT_LINEAR, y)
    yr = np.empty_like(y)
    conv_forward.conv2d_forward(xp, w, b, sh, sw, conv_forward.ACT_RELU, yr)
    dy = np.cos(np.arange(y.size, dtype=x.dtype).reshape(y.shape))
    dx = np.empty_like(x)
    conv_input_grad.conv2d_backward_input(dy, w, sh, sw, pt, pl, dx)
    dw = np.empty_like(w)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, sh, sw, dw)
    db = np.empty_like(b)
    conv_weight_grad.conv2d_backward_bias(dy, db)
    return y, yr, dy, dx, dw, db


def check(h, wd, cin, cout, kh, kw, sh, sw, padding, dtype=np.float32, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, wd, cin)).astype(dtype)
    w = rng.standard_normal((kh, kw, cin, cout)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y, yr, dy, dx, dw, db = run_all(x, w, b, sh, sw, padding)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    expected = conv_forward.conv2d_forward_naive(x, w, b, (sh, sw), padding)
    for got, want in [(y, expected), (yr, np.maximum(expected, 0)),
                      (dx, conv_input_grad.conv2d_backward_input_naive(dy, w, x.shape, (sh, sw), padding)),
                      (dw, conv_weight_grad.conv2d_backward_kernel_naive(x, dy, (kh, kw), (sh, sw), padding)),
                      (db, conv_weight_grad.conv2d_backward_bias_naive(dy))]:
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


@pytest.mark.parametrize("case", WIDE_CASES)
def test_wide_shapes_match_oracle(case):
    check(*case, n=2)


@pytest.mark.parametrize("case", WIDE32_CASES)
def test_wide32_shapes_match_oracle(case):
    check(*case, n=2)


@pytest.mark.parametrize("case", ONE_CHANNEL_CASES)
def test_one_channel_shapes_match_oracle(case):
    check(*case)


@pytest.mark.parametrize("case", [ONE_CHANNEL_CASES[2], ONE_CHANNEL_CASES[5], ONE_CHANNEL_CASES[-2]])
def test_one_channel_float64_matches_oracle(case):
    check(*case, dtype=np.float64, n=2)


@pytest.mark.parametrize("h, wd, cin, cout, n", TILED_CASES)
def test_weight_gradient_over_several_tiles_matches_oracle(h, wd, cin, cout, n):
    """More pixels per batch chunk than one tile holds: the sums carried from tile to tile."""
    tile = max(64, conv_weight_grad.TILE_FLOATS // (cout + cin)) // 2 * 2
    # the case tests what it says: a chunk (one sample here) too big for one tile, and more than one tile
    assert h * wd * (cout + cin) > 4 * conv_weight_grad.TILE_FLOATS and h * wd > tile
    check(h, wd, cin, cout, 3, 3, 1, 1, "same", n=n)


# The weight gradient's groups of 9 patch elements x 32 channels (AVX-512, kernel rows of 8 or more numbers):
# (n, h, w, cin, cout, kh, kw, sh, sw, padding), cout a multiple of 32 or with 1, 8 or 16 channels left over;
# the first layer's rows of 9 (cin 3) and 15 (cin 5), rows of 8 to 24 numbers, strides, fewer samples than
# batch chunks, a patch whose last group repeats its last element (24 elements)
WIDE_DW_CASES = [
    (3, 9, 11, 3, 32, 3, 3, 1, 1, "same"),    # the wide models' first layer: 27 elements, 3 groups
    (2, 9, 7, 5, 33, 3, 3, 2, 2, "same"),     # 32 + 1 channels, strides
    (3, 7, 9, 8, 40, 3, 1, 1, 1, "same"),     # rows of 8: 32 + 8 channels; 3 groups, the last 3 repeats
    (2, 6, 7, 4, 48, 3, 3, 1, 2, "valid"),    # rows of 12: 32 + 16
    (5, 5, 6, 8, 96, 3, 3, 1, 1, "same"),     # rows of 24: three blocks of 32
    (9, 5, 5, 16, 64, 3, 3, 1, 1, "same"),    # more samples than chunks, 25 pixels a sample
    (1, 7, 9, 32, 128, 3, 3, 2, 1, "same"),   # one sample
    (2, 8, 8, 64, 64, 3, 3, 1, 1, "same"),
    (3, 6, 5, 1, 64, 3, 3, 1, 1, "valid"),    # rows of 3 (groups of 9 x 16 instead), 9 elements
    (3, 8, 9, 16, 16, 3, 3, 1, 1, "same"),    # a 16-channel layer: groups of 9 elements x 16 channels (AVX-512)
    (2, 9, 9, 3, 16, 3, 3, 1, 1, "same"),     # RGB to 16 channels: rows of 9, 27 elements, 3 groups
    (2, 7, 7, 16, 56, 3, 3, 2, 1, "same"),    # 32 + 16 + 8 channels: 9 x 32, 9 x 16, then pairs; strides
]


def check_weight_gradient(n, h, wd, cin, cout, kh, kw, sh, sw, padding, dtype=np.float32, seed=0):
    """conv2d_backward_kernel against its oracle in float64, within 2 (K + 2) eps times the sum of the
    magnitudes of its K = n*oh*ow products (each summed in float32, in its own order)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, wd, cin))
    pt, pb, oh = conv_padding(h, kh, sh, padding)
    pl, pr, ow = conv_padding(wd, kw, sw, padding)
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, cin), dtype)
    pad_into(x.astype(dtype), pt, pl, xp)
    dy = rng.standard_normal((n, oh, ow, cout))
    dw = np.full((kh, kw, cin, cout), np.nan, dtype)
    conv_weight_grad.conv2d_backward_kernel(xp, dy.astype(dtype), sh, sw, dw)
    xd, dyd = x.astype(dtype).astype(np.float64), dy.astype(dtype).astype(np.float64)
    want = conv_weight_grad.conv2d_backward_kernel_naive(xd, dyd, (kh, kw), (sh, sw), padding)
    abs_sum = conv_weight_grad.conv2d_backward_kernel_naive(np.abs(xd), np.abs(dyd), (kh, kw), (sh, sw), padding)
    bound = 2 * (n * oh * ow + 2) * np.finfo(dtype).eps * abs_sum
    assert np.all(np.abs(dw - want) <= bound), np.max(np.abs(dw - want) - bound)


@pytest.mark.parametrize("case", WIDE_DW_CASES)
def test_wide_weight_gradient_matches_oracle(case):
    check_weight_gradient(*case)


@pytest.mark.parametrize("case", [WIDE_DW_CASES[1], WIDE_DW_CASES[3]])
def test_wide_weight_gradient_float64_matches_oracle(case):
    check_weight_gradient(*case, dtype=np.float64)


@pytest.mark.parametrize("h, wd, n", [(61, 61, 1), (53, 53, 3)])
def test_wide_weight_gradient_over_several_tiles_matches_oracle(h, wd, n):
    """32 -> 64 channels over several tiles per chunk, the last with an odd number of pixels."""
    cin, cout = 32, 64
    tile = max(64, conv_weight_grad.TILE_FLOATS // (cout + cin)) // 2 * 2
    per_chunk = (n + config.n_chunks(n) - 1) // config.n_chunks(n) * h * wd
    assert per_chunk * (cout + cin) > 4 * conv_weight_grad.TILE_FLOATS and per_chunk > tile and h * wd % 2
    check_weight_gradient(n, h, wd, cin, cout, 3, 3, 1, 1, "same")


_LANES_SCRIPT = "from autoenc.kernels import blocks; print(blocks.LANES)"


@pytest.mark.skipif(not __import__("platform").machine().lower() in ("x86_64", "amd64"), reason="x86 CPU names")
@pytest.mark.parametrize("cpu, features, lanes", [("haswell", "+avx,+avx2,+fma,+f16c", 8),
                                                  ("skylake-avx512", "+avx512f,+avx512bw,+avx512vl", 16)])
def test_lanes_follow_numba_target(cpu, features, lanes):
    """blocks.LANES follows what Numba compiles for (NUMBA_CPU_NAME and NUMBA_CPU_FEATURES), whatever
    this CPU has: 8 float32 for an AVX2 target, 16 for an AVX-512 one."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features,
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    out = subprocess.run([sys.executable, "-c", _LANES_SCRIPT], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == lanes


def test_lanes_is_8_or_16():
    from autoenc.kernels import blocks
    assert blocks.LANES in (8, 16) and blocks.vector_lanes() == blocks.LANES


@pytest.mark.parametrize("shape, strides, relu, pad", [
    ((4, 28, 28, 16), (1, 1), True, True),     # the seed model's decoder
    ((4, 28, 28, 1), (1, 1), False, True),     # its output layer (sigmoid: the mask is applied before)
    ((3, 5, 7, 11), (2, 3), True, True),       # strides spread dz out; 8 + 3 channels
    ((3, 6, 5, 9), (1, 1), True, False),       # a first layer: no input gradient, so no dzp
])
def test_backward_dz_matches_the_kernels_it_fuses(shape, strides, relu, pad):
    """conv2d_backward_dz = relu mask, then conv2d_backward_bias and dilate_pad_into, bit for bit."""
    rng = np.random.default_rng(3)
    n, oh, ow, c = shape
    sh, sw = strides
    dy = rng.standard_normal(shape).astype(np.float32)
    y = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)   # a ReLU's output: many exact zeros
    hp, wp = (oh - 1) * sh + 3, (ow - 1) * sw + 3
    dz, db = np.full(shape, np.nan, np.float32), np.full(c, np.nan, np.float32)
    dzp = np.zeros((n if pad else 0, hp, wp, c), np.float32)
    conv_weight_grad.conv2d_backward_dz(dy, y, relu, sh, sw, 1, 1, dz, dzp, np.empty((config.n_chunks(n), c), np.float32),
                                        db)

    want_dz = np.where(y > 0, dy, 0).astype(np.float32) if relu else dy
    want_db = np.empty(c, np.float32)
    conv_weight_grad.conv2d_backward_bias(want_dz, want_db)
    np.testing.assert_array_equal(dz, want_dz)
    np.testing.assert_array_equal(db, want_db)
    np.testing.assert_allclose(db, conv_weight_grad.conv2d_backward_bias_naive(want_dz), rtol=0,
                               atol=1e-6 * np.abs(want_dz).sum(axis=(0, 1, 2)).max())  # float32 sums
    if pad:
        want_dzp = np.zeros_like(dzp)
        dilate_pad_into(want_dz, sh, sw, 1, 1, want_dzp)
        np.testing.assert_array_equal(dzp, want_dzp)
        assert want_dzp[:, 1:1 + (oh - 1) * sh + 1:sh, 1:1 + (ow - 1) * sw + 1:sw].tolist() == want_dz.tolist()


_DETERMINISM_SCRIPT = r"""
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_kernels_fast import run_all
rng = np.random.default_rng(1)
digest = hashlib.sha256()
for h, wd, cin, cout, kh, kw, sh, sw, pad in [(28, 28, 8, 16, 3, 3, 1, 1, "same"), (14, 14, 16, 1, 3, 3, 1, 1, "same"),
                                              (28, 28, 1, 16, 3, 3, 1, 1, "same"), (9, 7, 1, 33, 5, 5, 1, 2, "same"),
                                              (9, 11, 3, 17, 4, 2, 2, 3, "same"), (33, 33, 3, 253, 3, 3, 1, 1, "same"),
                                              (6, 7, 64, 48, 3, 3, 1, 1, "same"), (5, 5, 8, 64, 2, 2, 1, 1, "valid"),
                                              (5, 6, 32, 40, 3, 3, 2, 1, "same"), (7, 8, 24, 1, 3, 3, 2, 1, "valid"),
                                              (6, 7, 5, 3, 3, 3, 1, 1, "same"), (7, 7, 8, 8, 3, 3, 1, 1, "same"),
                                              (6, 5, 16, 24, 3, 3, 1, 1, "same"), (28, 28, 16, 1, 3, 3, 1, 1, "same"),
                                              (9, 20, 32, 3, 3, 3, 2, 1, "same")]:
    x = rng.standard_normal((37, h, wd, cin)).astype(np.float32)
    w = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    for a in run_all(x, w, b, sh, sw, pad):
        digest.update(a.tobytes())
# upsampled convolutions by their phases: channels of one phase per vector (stored straight into the
# output) or not (through one sample of q): 8 channels are the one with AVX2, the other with AVX-512
from autoenc.kernels.conv_forward import conv2d_forward_phases
from autoenc.kernels.upsample_conv import phase_kernel, phase_offsets
for h, wd, cin, cout, pad in [(7, 7, 8, 8, "same"), (14, 14, 8, 16, "same"), (5, 6, 3, 16, "valid"),
                              (4, 9, 16, 32, "same"), (3, 5, 1, 24, "same"), (1, 3, 8, 16, "same"), (6, 4, 2, 5, "valid")]:
    x = rng.standard_normal((5, h, wd, cin)).astype(np.float32)
    wq = np.ascontiguousarray(phase_kernel(rng.standard_normal((3, 3, cin, cout)).astype(np.float32), pad))
    bq = np.tile(rng.standard_normal(cout).astype(np.float32), 4)
    p = 1 if pad == "same" else 0
    xp = np.zeros((5, h + 2 * p, wd + 2 * p, cin), np.float32)
    xp[:, p:p + h, p:p + wd] = x
    z = np.empty((5, 2 * (h + p - 1), 2 * (wd + p - 1), cout), np.float32)
    (base, step), _ = phase_offsets(pad)
    for act in (0, 1):
        conv2d_forward_phases(x if p else x[:0], xp, wq, bq, act, base, step, z)
        digest.update(z.tobytes())
        if p:   # each sample in a halo of the kernel's own
            conv2d_forward_phases(x, xp[:0], wq, bq, act, base, step, z)
            digest.update(z.tobytes())
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


@pytest.mark.skipif(__import__("numba").config.DISABLE_JIT, reason="plain Python rounds a * v, then the sum")
def test_vfma_rounds_once():
    """blocks.vfmaL: acc + a*v rounded once, in every lane. With a = v = 1 + 2**-12, a*v = 1 + 2**-11 + 2**-24
    rounds to p = 1 + 2**-11 in float32; -p + a*v is then exactly 2**-24 when fused, 0 when the product is
    rounded first."""
    import numba

    from autoenc.kernels import blocks

    @numba.njit
    def fused(acc, a, v, out):
        blocks.vstoreL(out, 0, blocks.vfmaL(blocks.vloadL(acc, 0), a, blocks.vloadL(v, 0)))
    lanes = blocks.LANES
    a = np.float32(1 + 2 ** -12)
    p = np.float32(a * a)
    assert p == np.float32(1 + 2 ** -11)
    out = np.zeros(lanes, np.float32)
    fused(np.full(lanes, -p, np.float32), a, np.full(lanes, a, np.float32), out)
    np.testing.assert_array_equal(out, np.full(lanes, 2 ** -24, np.float32))
    fused(np.full(lanes, 0.5, np.float32), np.float32(2), np.arange(lanes, dtype=np.float32), out)
    np.testing.assert_array_equal(out, 0.5 + 2 * np.arange(lanes, dtype=np.float32))


def test_store_vector_is_max_zero():
    """blocks.storev (a tuple or a Vec): out[k:k+n] = v, or Python's max(v, 0) (-0.0 and NaN kept) when relu;
    nothing else written."""
    import numba

    from autoenc.kernels import blocks

    @numba.njit
    def store(out, k, v, relu):
        blocks.storev(out, k, v, relu)

    @numba.njit
    def store_vec(out, k, src, relu):
        blocks.storev(out, k, blocks.vload8(src, 0), relu)
    v = tuple(np.float32(t) for t in (-1.5, -0.0, np.nan, 2.0, 0.0, -3.0, 7.0, 1e-30))
    for relu in (False, True):
        for how in (store, store_vec):   # a tuple, a Vec
            out = np.full(12, 9, np.float32)
            how(out, 2, v if how is store else np.array(v, np.float32), relu)
            want = [9, 9] + [max(t, 0) if relu else t for t in v] + [9, 9]
            np.testing.assert_array_equal(out, np.array(want, np.float32))
            assert np.signbit(out[3])   # -0.0 stays -0.0, as max(-0.0, 0) returns -0.0


@pytest.mark.parametrize("cin, cout, wd", [(5, 1, 7), (6, 3, 7), (24, 1, 7), (16, 9, 7), (16, 1, 20), (32, 3, 18)])
def test_an_inf_reaches_only_the_outputs_whose_patch_holds_it(cin, cout, wd):
    """The dot products of the channels left over read each kernel row's last numbers by a masked
    load: an Inf in one input pixel makes only the outputs whose window covers it non-finite, as in the
    slow version (a load of the whole vector, times zero weights past the row, would make NaN of its
    neighbours' outputs too). On rows of 16 pixels or more (wd) with whole vectors a tap, the pixels of a
    row share their vectors: each output still sums only its own window."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, wd, cin)).astype(np.float32)
    x[0, 2, 3, cin - 1] = np.inf
    x[1, 4, wd - 1, 0] = -np.inf
    w = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    xp = np.zeros((2, 8, wd + 2, cin), np.float32)
    pad_into(x, 1, 1, xp)
    y = np.empty((2, 6, wd, cout), np.float32)
    conv_forward.conv2d_forward(xp, w, b, 1, 1, conv_forward.ACT_LINEAR, y)
    with np.errstate(invalid="ignore"):
        want = conv_forward.conv2d_forward_naive(x, w, b, (1, 1), "same")
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(want))
    assert np.isfinite(y).sum() == y.size - cout * (9 + 6)   # 9 windows hold the first Inf, 6 the second (last column)
    ok = np.isfinite(want)
    np.testing.assert_allclose(y[ok], want[ok], rtol=0, atol=1e-5 * np.abs(want[ok]).max())


def test_masked_load_and_pair_sums():
    """blocks.vload16_first(a, k, count): a[k:k+count] then zeros, reading nothing past a[k+count-1]
    (here, the end of the array); vpairs16 ... vpairs2 add each of 16 pixels' 16 lane sums in the
    documented order: l + (l+8), then + 4, + 2, + 1."""
    import numba

    from autoenc.kernels import blocks

    @numba.njit
    def first(a, k, count):
        return blocks.vtuple(blocks.vload16_first(a, k, count))

    a = np.arange(1, 21, dtype=np.float32)
    assert first(a, 17, 3) == (18, 19, 20) + (0,) * 13
    assert first(a, 2, 16) == tuple(range(3, 19))
    assert first(a, 5, 0) == (0,) * 16

    @numba.njit
    def pair(v, p):   # pixels p and p + 1 folded once
        return blocks.vpairs16(blocks.vload16(v[p], 0), blocks.vload16(v[p + 1], 0))

    @numba.njit
    def tree(v):
        t0 = blocks.vpairs8(pair(v, 0), pair(v, 2))
        t1 = blocks.vpairs8(pair(v, 4), pair(v, 6))
        t2 = blocks.vpairs8(pair(v, 8), pair(v, 10))
        t3 = blocks.vpairs8(pair(v, 12), pair(v, 14))
        return blocks.vtuple(blocks.vpairs2(blocks.vpairs4(t0, t1), blocks.vpairs4(t2, t3)))

    v = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) * np.float32(1e3) ** np.arange(
        -2, 2, 0.25, dtype=np.float32)   # magnitudes apart, so that another order gives other bits
    f1 = v[:, :8] + v[:, 8:]
    f2 = f1[:, :4] + f1[:, 4:]
    f3 = f2[:, :2] + f2[:, 2:]
    want = f3[:, 0] + f3[:, 1]
    np.testing.assert_array_equal(np.array(tree(v), np.float32), want)
    assert not np.array_equal(want, v.sum(axis=1, dtype=np.float32))


def test_backward_input_with_a_workspace_is_bit_identical():
    """conv2d_backward_input with a Workspace (as a transposed convolution's forward pass would call it)
    keeps its work arrays between calls and gives the same bits as without; strides and padding that
    change between calls on one workspace get their own spread-out buffer."""
    from autoenc.kernels.workspace import Workspace
    rng = np.random.default_rng(4)
    ws = Workspace()
    w = rng.standard_normal((3, 2, 5, 9)).astype(np.float32)
    for (sh, sw), (pt, pl), (h, wd) in [((2, 3), (1, 0), (9, 11)), ((2, 3), (1, 0), (9, 11)), ((1, 1), (0, 0), (9, 11)),
                                         ((2, 3), (1, 0), (9, 11))]:
        oh, ow = (h + 2 * pt - 3) // sh + 1, (wd + 2 * pl - 2) // sw + 1
        dy = rng.standard_normal((2, oh, ow, 9)).astype(np.float32)
        dx, dx_ws = np.empty((2, h, wd, 5), np.float32), np.empty((2, h, wd, 5), np.float32)
        conv_input_grad.conv2d_backward_input(dy, w, sh, sw, pt, pl, dx)
        conv_input_grad.conv2d_backward_input(dy, w, sh, sw, pt, pl, dx_ws, workspace=ws)
        np.testing.assert_array_equal(dx, dx_ws)
    kept = ws.array("wt", (3, 2, 9, 5), np.float32)
    assert ws.array("wt", (3, 2, 9, 5), np.float32) is kept and ws.array("wt", (3, 2, 9, 5), np.float64) is not kept


def _avx2_features():
    """This CPU's LLVM features with every AVX-512, AMX and AVX10 one switched off (as benchmarks/epoch.py
    --isa avx2): Numba then compiles 8-wide blocks (blocks.LANES = 8)."""
    import llvmlite.binding as ll
    ll.initialize_native_target()
    off = ("avx512", "amx", "avx10", "evex512")
    return ",".join("-" + f[1:] if f[1:].startswith(off) else f
                    for f in ll.get_host_cpu_features().flatten().split(",") if f)


@pytest.mark.skipif(not __import__("platform").machine().lower() in ("x86_64", "amd64"), reason="x86 CPU names")
def test_forward_and_input_gradient_do_not_depend_on_vector_width(request):
    """The forward pass and the input gradient compiled for AVX2 (8 float32 per vector) give the same bits
    as for this CPU: each output is summed in the same order whatever the block width (on an AVX-512
    machine this compares 16- with 8-wide blocks). The weight gradient has its own test below. The AVX2
    build keeps its Numba cache in pytest's."""
    script = _DETERMINISM_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__))).replace(
        "for a in run_all(x, w, b, sh, sw, pad):", "for a in run_all(x, w, b, sh, sw, pad)[:4]:")
    assert "[:4]:" in script
    avx2 = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": _avx2_features(),
            "NUMBA_CACHE_DIR": str(request.config.cache.mkdir("numba-avx2"))}
    digests = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.strip() for env in (dict(os.environ), avx2)]
    assert digests[0] == digests[1]


_WEIGHT_GRADIENT_SCRIPT = r"""
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_kernels_fast import ODD_CASES, ONE_CHANNEL_CASES, WIDE_CASES, WIDE_DW_CASES
from autoenc.kernels import conv_weight_grad
from autoenc.kernels.padding import conv_padding
rng = np.random.default_rng(2)
digest = hashlib.sha256()
cases = [(4,) + c for c in ODD_CASES + WIDE_CASES + ONE_CHANNEL_CASES] + WIDE_DW_CASES + [
    (2, 28, 28, 1, 16, 3, 3, 1, 1, "same"), (2, 28, 28, 16, 1, 3, 3, 1, 1, "same"),
    (1, 61, 61, 32, 64, 3, 3, 1, 1, "same"), (2, 16, 16, 32, 3, 3, 3, 1, 1, "same"), (2, 9, 9, 16, 7, 3, 3, 1, 1, "same"),
    (3, 9, 9, 8, 64, 2, 2, 1, 1, "valid"), (2, 9, 9, 8, 24, 2, 2, 1, 1, "valid")]
for n, h, wd, cin, cout, kh, kw, sh, sw, pad in cases:
    hp, wp = h + sum(conv_padding(h, kh, sh, pad)[:2]), wd + sum(conv_padding(wd, kw, sw, pad)[:2])
    oh, ow = conv_padding(h, kh, sh, pad)[2], conv_padding(wd, kw, sw, pad)[2]
    xp = rng.standard_normal((n, hp, wp, cin)).astype(np.float32)
    dy = rng.standard_normal((n, oh, ow, cout)).astype(np.float32)
    dw = np.empty((kh, kw, cin, cout), np.float32)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, sh, sw, dw)
    digest.update(dw.tobytes())
print(digest.hexdigest())
"""


@pytest.mark.skipif(not __import__("platform").machine().lower() in ("x86_64", "amd64"), reason="x86 CPU names")
def test_weight_gradient_does_not_depend_on_vector_width(request):
    """The weight gradient compiled for AVX2 gives the same bits as for this CPU, on every shape above:
    each weight is summed over the pixels in raster order, one fused multiply-add each, whatever the
    block (on an AVX-512 machine this compares the 9 x 32 and 9-accumulator blocks in 16-wide vectors
    with the 8 x 8 blocks of AVX2). The AVX2 build keeps its Numba cache in pytest's."""
    script = _WEIGHT_GRADIENT_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    avx2 = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": _avx2_features(),
            "NUMBA_CACHE_DIR": str(request.config.cache.mkdir("numba-avx2"))}
    digests = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              check=True).stdout.strip() for env in (dict(os.environ), avx2)]
    assert digests[0] == digests[1]


def test_prefetch_span_reads_and_writes_nothing():
    """blocks.prefetch_span only asks for cache lines: bounds past either end are clipped (no fault),
    the array is unchanged, and it works on any dtype's flat array."""
    import numba

    from autoenc.kernels import blocks

    @numba.njit
    def ask(a, lo, hi):
        blocks.prefetch_span(a, lo, hi)
    for dtype in (np.float32, np.float64, np.int64):
        a = np.arange(1000).astype(dtype)
        before = a.copy()
        for lo, hi in ((0, 1000), (-64, 5000), (990, 2000), (500, 400), (10**9, 10**9 + 64)):
            ask(a, lo, hi)
        np.testing.assert_array_equal(a, before)
