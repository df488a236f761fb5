"""UpSampling2D((2, 2)) then a 3x3 convolution, computed on the small input (autoenc.kernels.upsample_conv):
the phase decomposition pinned by hand, its weight map A and the adjoint A^T, and the fast path
(Conv2DKernels.forward_upsampled and its backward) against the definition (upsample, then convolve, in
float64) and against the unfused fast layers, on the seed model's shapes and odd ones; bit-identical
for any number of threads.

Tolerances follow from the arithmetic. A float32 sum of K products, in any order, is within
(K + 2) * eps * S of the exact sum, S the sum of the absolute values of its terms. The fused
pre-activation sums K = 4*cin + 1 terms (the bias and the 2x2 phase window) with weights wq = A w,
each a float64 sum rounded once (one more eps of S, as |wq| <= A |w|), so its bound is
(4*cin + 4) * eps * S with S = the definition computed on |x|, |w|, |b|. The backward pass is given
the fast forward's output (its ReLU mask and sigmoid), so both sides differentiate the same function:
dw sums n*(h+1)*(w+1) products per phase weight over at most 8 chunks, then A^T adds 4 of them in
float64; db sums every dz; dx sums 16*cout products of dq with wq.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from autoenc import activations
from autoenc.kernels.conv_weight_grad import conv2d_backward_bias_naive, conv2d_backward_kernel_naive
from autoenc.kernels.convolution import Conv2DKernels
from autoenc.kernels.conv_forward import ACT_LINEAR, ACT_RELU, conv2d_forward, conv2d_forward_phases
from autoenc.kernels.upsample_conv import (PHASE_ROWS, phase_interleave, phase_kernel, phase_kernel_grad, phase_offsets,
                                           upsample_conv2d_backward_naive, upsample_conv2d_forward_naive)
from autoenc.kernels.upsampling import upsample2d_backward_naive, upsample2d_forward_naive
from autoenc.kernels.conv_input_grad import conv2d_backward_input_naive
from autoenc.layers import Conv2D, UpSampling2D

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}

# (n, h, w, cin, cout): the seed model's two fused layers, then odd ones (odd sides, one row, 1/3/16 filters)
SHAPES = [(4, 7, 7, 8, 8), (4, 14, 14, 8, 16), (3, 5, 7, 3, 1), (2, 2, 3, 1, 3), (2, 9, 4, 2, 16), (1, 1, 6, 5, 3)]


def test_one_pixel_by_hand():
    """A 1x1 input of 1 upsampled is a 2x2 block of ones; a 3x3 'same' convolution of it sums, at
    each output pixel, the taps that land on the block: w = 0..8 row by row gives 4+5+7+8, 3+4+6+7,
    1+2+4+5 and 0+1+3+4."""
    x = np.ones((1, 1, 1, 1))
    w = np.arange(9.0).reshape(3, 3, 1, 1)
    z, _ = Conv2DKernels((1, 1), "same").forward_upsampled(x, w, None, activations.get("linear"))
    np.testing.assert_array_equal(z[0, :, :, 0], [[24, 20], [12, 8]])
    np.testing.assert_array_equal(upsample_conv2d_forward_naive(x, w, np.zeros(1), "same")[0, :, :, 0],
                                  [[24, 20], [12, 8]])


def test_phase_rows_are_the_taps_of_each_phase():
    """R[p][a, i] = 1 exactly where tap i of output row 2y + p reads row a of the phase's 2-row window
    of the small input: 'same' reads small row y + floor((p + i - 1) / 2), its window starts at
    y - 1 + p; 'valid' reads y + floor((p + i) / 2), its window starts at y."""
    for padding in ("same", "valid"):
        for p in (0, 1):
            expected = np.zeros((2, 3), int)
            for i in range(3):
                a = (p + i - 1) // 2 + 1 - p if padding == "same" else (p + i) // 2
                expected[a, i] = 1
            np.testing.assert_array_equal(PHASE_ROWS[padding][p], expected)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_the_phase_convolutions_are_the_upsampled_convolution(padding, rng):
    """In float64: each phase (py, px) of conv(upsample(x), w) is the 2x2 convolution of the (padded)
    small input with the phase kernel, read at the offsets phase_offsets gives."""
    from autoenc.kernels.conv_forward import conv2d_forward_naive
    x = rng.standard_normal((2, 5, 6, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    b = rng.standard_normal(4)
    z = upsample_conv2d_forward_naive(x, w, b, padding)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))) if padding == "same" else x
    q = conv2d_forward_naive(xp, phase_kernel(w, padding), np.tile(b, 4))
    (base, step), _ = phase_offsets(padding)
    oh, ow = z.shape[1] // 2, z.shape[2] // 2
    for py in (0, 1):
        for px in (0, 1):
            r, c, k = base + step * py, base + step * px, 2 * py + px
            np.testing.assert_allclose(z[:, py::2, px::2], q[:, r:r + oh, c:c + ow, 4 * k:4 * k + 4], rtol=0,
                                       atol=1e-12)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_phase_kernel_grad_is_the_adjoint(padding, rng):
    """<A w, v> = <w, A^T v> (A^T is what maps the phase kernels' gradient to the 3x3 kernel's)."""
    w = rng.standard_normal((3, 3, 2, 5))
    v = rng.standard_normal((2, 2, 2, 20))
    atv = np.empty_like(w)
    phase_kernel_grad(v, padding, atv)
    assert np.isclose(np.sum(phase_kernel(w, padding) * v), np.sum(w * atv), rtol=1e-13)


def _fused(x, w, b, padding, act, dy):
    """The fast fused forward and backward: (z, y, dx, dw, db)."""
    kern = Conv2DKernels((1, 1), padding)
    z, y = kern.forward_upsampled(x, w, b, act)
    z, y = z.copy(), y.copy()
    dw = np.empty_like(w)
    db = np.empty(w.shape[3], w.dtype)
    dx = kern.backward(dy, w, dw, db if b is not None else None, act)
    return z, y, dx.copy(), dw, db


def _dz_given(act, dy, y):
    """dz = dy * activation'(z) from the output y (float64)."""
    dy, y = dy.astype(np.float64), y.astype(np.float64)
    if act == "relu":
        return dy * (y > 0)
    if act == "sigmoid":
        return dy * y * (1 - y)
    return dy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("shape", SHAPES)
def test_fast_path_against_the_definition(shape, padding, dtype, rng):
    n, h, w_, cin, cout = shape
    if padding == "valid" and min(h, w_) < 2:
        return   # 2h - 2 = 0: nothing to compute ('valid' needs the upsampled side >= 3)
    eps = EPS[dtype]
    for act_name, use_bias in (("relu", True), ("sigmoid", True), ("linear", False)):
        act = activations.get(act_name)
        x = rng.standard_normal((n, h, w_, cin)).astype(dtype)
        w = rng.standard_normal((3, 3, cin, cout)).astype(dtype)
        b = rng.standard_normal(cout).astype(dtype) if use_bias else None
        b64 = np.zeros(cout) if b is None else b.astype(np.float64)
        z_ref = upsample_conv2d_forward_naive(x, w, b64, padding)
        dy = rng.standard_normal(z_ref.shape).astype(dtype)
        z, y, dx, dw, db = _fused(x, w, b, padding, act, dy)
        s_z = upsample_conv2d_forward_naive(np.abs(x), np.abs(w), np.abs(b64), padding)
        tol_z = (4 * cin + 4) * eps * s_z
        if act_name == "relu":   # the kernel fuses ReLU: z is relu(z), 1-Lipschitz
            z_ref = np.maximum(z_ref, 0)
        assert np.all(np.abs(z - z_ref) <= tol_z), (shape, padding, act_name)
        if act_name == "sigmoid":   # 1/4-Lipschitz, and its own few roundings
            y_ref = 1 / (1 + np.exp(-z_ref))
            assert np.all(np.abs(y - y_ref) <= tol_z / 4 + 4 * eps * y_ref), (shape, padding)
        dz = _dz_given(act_name, dy, y)
        dx_ref, dw_ref, db_ref = upsample_conv2d_backward_naive(x, w.astype(np.float64), dz, padding)
        adz = np.abs(dz)
        rel = 4 * eps * adz if act_name == "sigmoid" else 0   # dz's own roundings in the kernel
        big = upsample2d_forward_naive(np.abs(x), (2, 2))
        n_terms = n * (h + 1) * (w_ + 1) + 8 + 4
        tol_dw = (n_terms + 2) * eps * conv2d_backward_kernel_naive(big, adz + rel, (3, 3), (1, 1), padding)
        assert np.all(np.abs(dw - dw_ref) <= tol_dw), (shape, padding, act_name)
        if b is not None:
            tol_db = (adz.shape[1] * adz.shape[2] * n + 10) * eps * conv2d_backward_bias_naive(adz + rel)
            assert np.all(np.abs(db - db_ref) <= tol_db), (shape, padding, act_name)
        s_dx = upsample2d_backward_naive(conv2d_backward_input_naive(adz + rel, np.abs(w), big.shape, (1, 1), padding),
                                         (2, 2))
        tol_dx = (16 * cout + 4) * eps * s_dx
        assert np.all(np.abs(dx - dx_ref) <= tol_dx), (shape, padding, act_name)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("cout", [1, 3, 8, 16, 24, 32, 40])
@pytest.mark.parametrize("oh, ow", [(2, 2), (4, 6), (3, 5), (6, 1)])
def test_interleave_is_its_definition(oh, ow, cout, padding, rng):
    """phase_interleave against its formula, index by index: y[n, Y, X, f] = q[n, Y//2 + base +
    step*(Y%2), X//2 + base + step*(X%2), (2*(Y%2) + X%2)*cout + f], for channel counts that take the
    vector copies (multiples of 8, of 16) and those that do not, and odd widths (a last even pixel)."""
    (base, step), _ = phase_offsets(padding)
    n = 2
    q = rng.standard_normal((n, oh // 2 + 2, ow // 2 + 2, 4 * cout)).astype(np.float32)
    want = np.empty((n, oh, ow, cout), np.float32)
    for Y in range(oh):
        for X in range(ow):
            p = 2 * (Y % 2) + X % 2
            want[:, Y, X] = q[:, Y // 2 + base + step * (Y % 2), X // 2 + base + step * (X % 2),
                              p * cout:(p + 1) * cout]
    got = np.full((n, oh, ow, cout), np.nan, np.float32)
    phase_interleave(q, base, step, got)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("padding", ["same", "valid"])
# besides SHAPES: outputs of 16 and 32 channels (each vector one phase's, stored straight into z) on
# odd grids, with one input channel (short patch rows) and with fewer than 8 phase pixels; 24 and 12
# channels (through one sample of q with AVX-512)
@pytest.mark.parametrize("shape", SHAPES + [(3, 1, 1, 2, 3), (2, 2, 9, 1, 12), (4, 3, 3, 16, 1), (3, 3, 5, 8, 32),
                                   (2, 5, 3, 1, 16), (2, 1, 2, 8, 16), (2, 1, 3, 4, 16), (2, 4, 6, 16, 24),
                                   (2, 6, 5, 32, 48)])
def test_sample_by_sample_forward_is_the_phase_convolution_then_interleave(shape, padding, rng):
    """conv2d_forward_phases (pad, phase convolution and interleave, one sample at a time) gives the
    bits of the two passes over the whole batch: conv2d_forward into q, then phase_interleave; with
    an xp of no samples ('same'), the same bits."""
    n, h, w_, cin, cout = shape
    if padding == "valid" and min(h, w_) < 2:
        return
    x = rng.standard_normal((n, h, w_, cin)).astype(np.float32)
    k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    wq = np.ascontiguousarray(phase_kernel(k, padding))
    bq = np.tile(rng.standard_normal(cout).astype(np.float32), 4)
    pad = 1 if padding == "same" else 0
    xp = np.zeros((n, h + 2 * pad, w_ + 2 * pad, cin), np.float32)
    xp[:, pad:pad + h, pad:pad + w_] = x
    (base, step), _ = phase_offsets(padding)
    for act in (ACT_LINEAR, ACT_RELU):
        q = np.empty((n, h + 2 * pad - 1, w_ + 2 * pad - 1, 4 * cout), np.float32)
        conv2d_forward(xp, wq, bq, 1, 1, act, q)
        want = np.empty((n, 2 * (h + pad - 1), 2 * (w_ + pad - 1), cout), np.float32)
        phase_interleave(q, base, step, want)
        got = np.full_like(want, np.nan)
        xp_got = np.zeros_like(xp) if pad else xp
        conv2d_forward_phases(x if pad else x[:0], xp_got, wq, bq, act, base, step, got)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(xp_got, xp)
        if pad:   # xp without samples: each sample padded into a halo of the kernel's own (inference)
            got[...] = np.nan
            conv2d_forward_phases(x, xp[:0], wq, bq, act, base, step, got)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["relu", "linear", "sigmoid"])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_fused_layer_against_upsampling_then_conv2d(shape, padding, act, rng):
    """The two layers run one after the other (fast kernels) and fused: each is within its bound of
    the exact result, so they are within the sum of the two bounds of each other. Unfused, a
    pre-activation sums 9*cin + 1 terms, dw n*oh*ow per chunked sum, dx 9*cout and then UpSampling's
    backward 4. Both backward passes get the same dz: dy where both outputs are positive (ReLU)."""
    n, h, w_, cin, cout = shape
    eps = EPS[np.float32]
    x = rng.standard_normal((n, h, w_, cin)).astype(np.float32)
    up = UpSampling2D(2)
    conv = Conv2D(cout, 3, padding=padding, activation=act, bias_initializer="random_normal")
    conv(up(x))
    y_unfused = np.array(conv.forward(up.forward(x)), copy=True)
    y_fused = np.array(conv.forward_upsampled(x), copy=True)
    kernel, bias = conv.params["kernel"].astype(np.float64), conv.params["bias"].astype(np.float64)
    s_z = upsample_conv2d_forward_naive(np.abs(x), np.abs(kernel), np.abs(bias), padding)
    tol_z = (4 * cin + 4 + 9 * cin + 3) * eps * s_z
    assert np.all(np.abs(y_fused - y_unfused) <= (tol_z / 4 + 8 * eps if act == "sigmoid" else tol_z))
    if act == "sigmoid":
        return   # dz = dy * y * (1 - y) would differ with y: the definition test checks its backward
    dy = rng.standard_normal(y_fused.shape).astype(np.float32)
    if act == "relu":
        dy = dy * ((y_fused > 0) & (y_unfused > 0))
    dx_fused = np.array(conv.backward(dy), copy=True)
    dw_fused, db_fused = conv.grads["kernel"].copy(), conv.grads["bias"].copy()
    conv.forward(up.forward(x))
    dx_unfused = np.array(up.backward(conv.backward(dy)), copy=True)
    dw_unfused, db_unfused = conv.grads["kernel"], conv.grads["bias"]
    adz = np.abs(dy.astype(np.float64))
    big = upsample2d_forward_naive(np.abs(x), (2, 2))
    terms = n * (h + 1) * (w_ + 1) + 14 + n * adz.shape[1] * adz.shape[2] + 12
    tol_dw = terms * eps * conv2d_backward_kernel_naive(big, adz, (3, 3), (1, 1), padding)
    assert np.all(np.abs(dw_fused - dw_unfused) <= tol_dw)
    assert np.all(np.abs(db_fused - db_unfused) <= 2 * (n * adz.shape[1] * adz.shape[2] + 10) * eps * adz.sum((0, 1, 2)))
    s_dx = upsample2d_backward_naive(conv2d_backward_input_naive(adz, np.abs(kernel), big.shape, (1, 1), padding),
                                     (2, 2))
    assert np.all(np.abs(dx_fused - dx_unfused) <= (16 * cout + 4 + 9 * cout + 8) * eps * s_dx)


_DETERMINISM_SCRIPT = """
import hashlib, sys
import numpy as np
from autoenc import activations
from autoenc.kernels.convolution import Conv2DKernels
digest = hashlib.sha256()
rng = np.random.default_rng(0)
for (n, h, w, cin, cout) in {shapes!r}:
    for padding in ("same", "valid"):
        for act in ("relu", "sigmoid"):
            x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
            k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
            b = rng.standard_normal(cout).astype(np.float32)
            kern = Conv2DKernels((1, 1), padding)
            z, y = kern.forward_upsampled(x, k, b, activations.get(act))
            dy = rng.standard_normal(y.shape).astype(np.float32)
            digest.update(y.tobytes())
            dk, db = np.empty_like(k), np.empty_like(b)
            digest.update(kern.backward(dy, k, dk, db, activations.get(act)).tobytes())
            digest.update(dk.tobytes())
            digest.update(db.tobytes())
print(digest.hexdigest())
"""


def test_results_do_not_depend_on_thread_count():
    script = _DETERMINISM_SCRIPT.format(shapes=[(16, 7, 7, 8, 8), (16, 14, 14, 8, 16), (11, 5, 7, 3, 1)])
    digests = []
    for threads in ("1", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


def test_forward_upsampled_refuses_other_convolutions():
    for kwargs in ({"kernel_size": 5}, {"kernel_size": 3, "strides": 2}):
        conv = Conv2D(4, padding="same", **kwargs)
        conv(np.zeros((1, 8, 8, 2), np.float32))
        assert not conv.fuses_upsampling
        with pytest.raises(ValueError, match="needs a 3x3 kernel, strides \\(1, 1\\)"):
            conv.forward_upsampled(np.zeros((1, 4, 4, 2), np.float32))


def test_phase_weights_follow_the_kernel_and_bias_changed_in_place(rng):
    """forward_upsampled keeps the phase kernel between calls (predict runs one forward per part) and
    makes it again when the kernel's or the bias' bytes change, in place too (as the optimizer
    changes them), or the bias goes: each call gives the bits of a fresh Conv2DKernels."""
    x = rng.standard_normal((2, 4, 5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    kept = Conv2DKernels((1, 1), "same")
    linear = activations.get("linear")

    def check(bias):
        got = kept.forward_upsampled(x, w, bias, linear)[0].copy()
        want = Conv2DKernels((1, 1), "same").forward_upsampled(x, w, bias, linear)[0]
        np.testing.assert_array_equal(got, want)

    check(b)
    check(b)
    w[1, 2, 0, 4] += 1
    check(b)
    b[3] = -b[3]
    check(b)
    check(None)
    w[0, 0, 2, 1] = -0.0 if w[0, 0, 2, 1] == 0 else 0.0
    check(None)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("cin, cout", [(8, 16), (3, 1), (5, 7)])
def test_phase_kernel_and_its_grad_give_the_bits_of_the_einsum_definition(padding, cin, cout, rng):
    """The two matrix products give, in float32, the bits of the definition summed by einsum over
    the 5-index A (each number a sum of 1 to 4 terms in float64, rounded once), here on weights whose
    magnitudes span 1e-13 to 1e13. (Terms that far apart can round differently in another order: at
    64->32 channels, 11 of 368,640 gradient entries differed in the last bit; none where they span 400x.)"""
    from autoenc.kernels.upsample_conv import _PHASE_MATRIX
    a = _PHASE_MATRIX[padding]
    w = (rng.standard_normal((3, 3, cin, cout)) * np.exp(rng.uniform(-30, 30, (3, 3, cin, cout)))).astype(np.float32)
    v = (rng.standard_normal((2, 2, cin, 4 * cout)) * np.exp(rng.uniform(-30, 30, (2, 2, cin, 4 * cout)))).astype(np.float32)
    want = np.einsum("pabij,ijcf->abcpf", a, w.astype(np.float64)).reshape(2, 2, cin, 4 * cout).astype(np.float32)
    np.testing.assert_array_equal(phase_kernel(w, padding), want)
    out = np.empty_like(want)
    assert phase_kernel(w, padding, out) is out
    np.testing.assert_array_equal(out, want)
    want_grad = np.einsum("pabij,abcpf->ijcf", a, v.astype(np.float64).reshape(2, 2, cin, 4, cout)).astype(np.float32)
    dw = np.empty_like(w)
    phase_kernel_grad(v, padding, dw)
    np.testing.assert_array_equal(dw, want_grad)
    # and with their float64 work arrays in a Workspace, reused from call to call (as a layer runs them)
    from autoenc.kernels.workspace import Workspace
    ws = Workspace()
    for _ in range(2):
        np.testing.assert_array_equal(phase_kernel(w, padding, np.empty_like(want), ws), want)
        dw[...] = 0
        phase_kernel_grad(v, padding, dw, ws)
        np.testing.assert_array_equal(dw, want_grad)
