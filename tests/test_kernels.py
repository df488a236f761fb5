"""Every kernel against its slow, obvious version, adjoint (dot-product) tests, and tiny cases by hand."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoenc.kernels import conv_forward, conv_input_grad, conv_weight_grad, elementwise
from autoenc.kernels.padding import conv_padding, pad_into
from autoenc.kernels import pooling as pool
from autoenc.kernels import upsampling as up


def padded(x, kernel_size, strides, padding):
    (kh, kw), (sh, sw) = kernel_size, strides
    n, h, w, c = x.shape
    pt, pb, oh = conv_padding(h, kh, sh, padding)
    pl, pr, ow = conv_padding(w, kw, sw, padding)
    xp = np.zeros((n, h + pt + pb, w + pl + pr, c), x.dtype)
    pad_into(x, pt, pl, xp)
    return xp, (pt, pl), (oh, ow)


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["same", "valid"]))
    h = draw(st.integers(kh if padding == "valid" else 1, 11))
    w = draw(st.integers(kw if padding == "valid" else 1, 11))
    n, cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31))
    return (n, h, w, cin, cout), (kh, kw), (sh, sw), padding, seed


def conv_case_arrays(case, dtype):
    """The arrays of a drawn convolution case: (g, x, w, b, xp, (pt, pl), (oh, ow)), x, w and b
    standard normal from the case's seed (g, the generator, draws the rest of the test's arrays)."""
    (n, h, w, cin, cout), ks, strides, padding, seed = case
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, h, w, cin)).astype(dtype)
    wt = g.standard_normal(ks + (cin, cout)).astype(dtype)
    b = g.standard_normal(cout).astype(dtype)
    return (g, x, wt, b) + padded(x, ks, strides, padding)


def close(a, b, dtype):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=conv_cases())
def test_conv2d_kernels_match_naive(dtype, case):
    (n, h, w, cin, cout), ks, strides, padding, _ = case
    g, x, wt, b, xp, (pt, pl), (oh, ow) = conv_case_arrays(case, dtype)
    y = np.empty((n, oh, ow, cout), dtype)
    conv_forward.conv2d_forward(xp, wt, b, strides[0], strides[1], conv_forward.ACT_LINEAR, y)
    expected = conv_forward.conv2d_forward_naive(x, wt, b, strides, padding)
    close(y, expected, dtype)
    conv_forward.conv2d_forward(xp, wt, b, strides[0], strides[1], conv_forward.ACT_RELU, y)
    close(y, np.maximum(expected, 0), dtype)

    dy = g.standard_normal((n, oh, ow, cout)).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)  # every entry must be overwritten
    conv_input_grad.conv2d_backward_input(dy, wt, strides[0], strides[1], pt, pl, dx)
    close(dx, conv_input_grad.conv2d_backward_input_naive(dy, wt, x.shape, strides, padding), dtype)
    dw = np.full(wt.shape, np.nan, dtype)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, strides[0], strides[1], dw)
    close(dw, conv_weight_grad.conv2d_backward_kernel_naive(x, dy, ks, strides, padding), dtype)
    db = np.full(cout, np.nan, dtype)
    conv_weight_grad.conv2d_backward_bias(dy, db)
    close(db, conv_weight_grad.conv2d_backward_bias_naive(dy), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_conv2d_forward_padded_is_pad_then_convolve_bit_for_bit(dtype, case):
    """conv2d_forward_padded (each sample padded, then convolved) gives the bits of pad_into over the
    batch, then conv2d_forward, and leaves the same padded copy in xp; given an xp of no samples, the
    same bits."""
    (n, h, w, cin, cout), ks, strides, padding, _ = case
    g, x, wt, b, xp, (pt, pl), (oh, ow) = conv_case_arrays(case, dtype)
    for act in (conv_forward.ACT_LINEAR, conv_forward.ACT_RELU):
        want = np.empty((n, oh, ow, cout), dtype)
        conv_forward.conv2d_forward(xp, wt, b, strides[0], strides[1], act, want)
        got, xp_got = np.full_like(want, np.nan), np.zeros_like(xp)
        conv_forward.conv2d_forward_padded(x, pt, pl, xp_got, wt, b, strides[0], strides[1], act, got)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(xp_got, xp)
        # xp without samples: each sample padded into a halo of the kernel's own (inference)
        got[...] = np.nan
        conv_forward.conv2d_forward_padded(x, pt, pl, xp[:0], wt, b, strides[0], strides[1], act, got)
        np.testing.assert_array_equal(got, want)


@st.composite
def one_channel_cases(draw):
    """The one-channel fast paths: one or two input channels and up to 33 output channels (16-channel
    forward blocks, groups of 9 patch elements in the weight gradient, and the input gradient of the
    converse), or up to 33 input channels and one to three output channels (dot products along the
    patch, groups of 16-wide element vectors)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["same", "valid"]))
    h = draw(st.integers(kh if padding == "valid" else 1, 7))
    w = draw(st.integers(kw if padding == "valid" else 1, 9))
    if draw(st.booleans()):
        cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 33))
    else:
        cin, cout = draw(st.integers(1, 33)), draw(st.integers(1, 3))
    return (draw(st.integers(1, 2)), h, w, cin, cout), (kh, kw), (sh, sw), padding, draw(st.integers(0, 2**31))


def assert_within_sum_bound(got, want, abs_sum, terms, dtype):
    """|got - want| <= 2 (terms + 2) eps * abs_sum: two sums of the same ``terms`` products (fast kernel
    and oracle, each in its own order, the oracle's in float32 too), each off by at most
    (terms + 1) eps times the sum of the products' magnitudes ``abs_sum``, plus the bias' rounding."""
    bound = 2 * (terms + 2) * np.finfo(dtype).eps * abs_sum
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound), np.max(np.abs(got - want) - bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=15)
@given(case=one_channel_cases())
def test_one_channel_kernels_match_naive(dtype, case):
    """Forward, input and kernel gradients where one side has few channels, within a bound derived from
    the arithmetic (the sums of the magnitudes, computed by the oracles on |x|, |w|, |dy|)."""
    (n, h, w, cin, cout), ks, strides, padding, _ = case
    g, x, wt, b, xp, (pt, pl), (oh, ow) = conv_case_arrays(case, dtype)
    ax, aw, ab = (np.abs(a).astype(np.float64) for a in (x, wt, b))
    y = np.empty((n, oh, ow, cout), dtype)
    for act, relu in [(conv_forward.ACT_LINEAR, False), (conv_forward.ACT_RELU, True)]:
        conv_forward.conv2d_forward(xp, wt, b, strides[0], strides[1], act, y)
        want = conv_forward.conv2d_forward_naive(x.astype(np.float64), wt.astype(np.float64), b, strides, padding)
        assert_within_sum_bound(y, np.maximum(want, 0) if relu else want,
                                conv_forward.conv2d_forward_naive(ax, aw, ab, strides, padding), ks[0] * ks[1] * cin,
                                dtype)
    dy = g.standard_normal((n, oh, ow, cout)).astype(dtype)
    ady = np.abs(dy).astype(np.float64)
    dx = np.full(x.shape, np.nan, dtype)
    conv_input_grad.conv2d_backward_input(dy, wt, strides[0], strides[1], pt, pl, dx)
    assert_within_sum_bound(dx, conv_input_grad.conv2d_backward_input_naive(dy.astype(np.float64), wt.astype(np.float64),
                                                                             x.shape, strides, padding),
                            conv_input_grad.conv2d_backward_input_naive(ady, aw, x.shape, strides, padding),
                            ks[0] * ks[1] * cout, dtype)
    dw = np.full(wt.shape, np.nan, dtype)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, strides[0], strides[1], dw)
    assert_within_sum_bound(dw, conv_weight_grad.conv2d_backward_kernel_naive(x.astype(np.float64),
                                                                               dy.astype(np.float64), ks, strides,
                                                                               padding),
                            conv_weight_grad.conv2d_backward_kernel_naive(ax, ady, ks, strides, padding), n * oh * ow,
                            dtype)


@given(case=conv_cases())
def test_conv2d_backward_kernels_are_adjoints(case):
    """<conv(x, w), dy> = <x, backward_input(dy)> = <w, backward_kernel(x, dy)>."""
    (n, h, w, cin, cout), ks, strides, padding, seed = case
    g = np.random.default_rng(seed)
    x, wt = g.standard_normal((n, h, w, cin)), g.standard_normal(ks + (cin, cout))
    xp, (pt, pl), (oh, ow) = padded(x, ks, strides, padding)
    y = np.empty((n, oh, ow, cout))
    conv_forward.conv2d_forward(xp, wt, np.zeros(cout), strides[0], strides[1], conv_forward.ACT_LINEAR, y)
    dy = g.standard_normal(y.shape)
    dx, dw, db = np.empty_like(x), np.empty_like(wt), np.empty(cout)
    conv_input_grad.conv2d_backward_input(dy, wt, strides[0], strides[1], pt, pl, dx)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, strides[0], strides[1], dw)
    conv_weight_grad.conv2d_backward_bias(dy, db)
    lhs = np.sum(y * dy)
    assert np.sum(x * dx) == pytest.approx(lhs, rel=1e-10, abs=1e-10)
    assert np.sum(wt * dw) == pytest.approx(lhs, rel=1e-10, abs=1e-10)
    # bias: <ones-broadcast b, dy> = <b, db>
    b = g.standard_normal(cout)
    assert np.sum(b * dy) == pytest.approx(np.sum(b * db), rel=1e-10, abs=1e-10)


def test_conv2d_backward_kernel_writes_into_a_dw_that_is_not_contiguous():
    """dw is overwritten in place whatever its layout: a slice of a wider array gets the same bits as a
    contiguous dw (its flat view would be a copy)."""
    g = np.random.default_rng(4)
    xp, dy = g.standard_normal((5, 8, 8, 3)).astype(np.float32), g.standard_normal((5, 6, 6, 4)).astype(np.float32)
    dw = np.empty((3, 3, 3, 4), np.float32)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, 1, 1, dw)
    wider = np.zeros((3, 3, 3, 8), np.float32)
    conv_weight_grad.conv2d_backward_kernel(xp, dy, 1, 1, wider[..., :4])
    np.testing.assert_array_equal(wider[..., :4], dw)
    np.testing.assert_array_equal(wider[..., 4:], 0)


def test_conv2d_tiny_case_by_hand():
    # x is 1x3x3x1 = [[1,2,3],[4,5,6],[7,8,9]], w is 2x2 = [[1,0],[0,-1]], valid, stride 1
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.array([[1, 0], [0, -1]], np.float32).reshape(2, 2, 1, 1)
    y = np.empty((1, 2, 2, 1), np.float32)
    conv_forward.conv2d_forward(x, w, np.array([0.5], np.float32), 1, 1, conv_forward.ACT_LINEAR, y)
    assert y[0, 0, 0, 0] == 1 * 1 + 5 * -1 + 0.5
    assert y[0, :, :, 0].tolist() == [[-3.5, -3.5], [-3.5, -3.5]]
    # dx scatters dy through w: with dy = 1 at (0,0) only, dx = w placed at (0,0)
    dy = np.zeros((1, 2, 2, 1), np.float32)
    dy[0, 0, 0, 0] = 1
    dx = np.empty_like(x)
    conv_input_grad.conv2d_backward_input(dy, w, 1, 1, 0, 0, dx)
    assert dx[0, :, :, 0].tolist() == [[1, 0, 0], [0, -1, 0], [0, 0, 0]]
    # dw[i, j] = x[i, j] * 1 for the single nonzero dy
    dw = np.empty_like(w)
    conv_weight_grad.conv2d_backward_kernel(x, dy, 1, 1, dw)
    assert dw[:, :, 0, 0].tolist() == [[1, 2], [4, 5]]


@pytest.mark.parametrize("size,kernel,stride,padding,expected", [
    (28, 3, 1, "same", (1, 1, 28)),
    (28, 2, 2, "same", (0, 0, 14)),
    (7, 2, 2, "same", (0, 1, 4)),     # odd: the extra row goes at the bottom
    (5, 4, 1, "same", (1, 2, 5)),     # even kernel: the extra padding goes after
    (10, 3, 3, "same", (1, 1, 4)),
    (7, 3, 2, "valid", (0, 0, 3)),
])
def test_conv_padding_follows_tensorflow(size, kernel, stride, padding, expected):
    assert conv_padding(size, kernel, stride, padding) == expected


@st.composite
def pool_cases(draw):
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    strides = (draw(st.integers(1, 4)), draw(st.integers(1, 4))) if draw(st.booleans()) else (ph, pw)
    padding = draw(st.sampled_from(["same", "valid"]))
    h = draw(st.integers(ph if padding == "valid" else 1, 10))
    w = draw(st.integers(pw if padding == "valid" else 1, 10))
    return (draw(st.integers(1, 3)), h, w, draw(st.integers(1, 4))), (ph, pw), strides, padding, draw(st.integers(0, 2**31))


def run_pool(x, ps, strides, padding):
    pt, _, oh = conv_padding(x.shape[1], ps[0], strides[0], padding)
    pl, _, ow = conv_padding(x.shape[2], ps[1], strides[1], padding)
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    argmax = np.empty(y.shape, np.int32)
    pool.maxpool2d_forward(x, ps[0], ps[1], strides[0], strides[1], pt, pl, y, argmax)
    return y, argmax


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=pool_cases(), ties=st.booleans())
def test_maxpool_kernels_match_naive(dtype, case, ties):
    shape, ps, strides, padding, seed = case
    g = np.random.default_rng(seed)
    # with ties (few distinct values) the first maximum of each window must win
    x = (g.integers(0, 3, shape) if ties else g.standard_normal(shape)).astype(dtype)
    y, argmax = run_pool(x, ps, strides, padding)
    y_ref, argmax_ref = pool.maxpool2d_forward_naive(x, ps, strides, padding)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    dy = g.standard_normal(y.shape).astype(dtype)
    dx = np.full(shape, np.nan, dtype)
    pool.maxpool2d_backward(dy, argmax, dx)
    close(dx, pool.maxpool2d_backward_naive(dy, argmax_ref, shape), dtype)
    # adjoint: for a fixed argmax, pooling is the linear selection S; <S x, dy> = <x, S^T dy>
    assert np.sum(y.astype(np.float64) * dy) == pytest.approx(np.sum(x.astype(np.float64) * dx), rel=1e-5, abs=1e-5)


def test_maxpool_tiny_case_by_hand():
    x = np.array([[1, 3, 2, 0], [3, 0, 1, 5], [0, 0, 7, 7]], np.float32).reshape(1, 3, 4, 1)
    y, argmax = run_pool(x, (2, 2), (2, 2), "same")   # 'same' on 3 rows: the last window has one row
    assert y[0, :, :, 0].tolist() == [[3, 5], [0, 7]]
    assert argmax[0, :, :, 0].tolist() == [[1, 7], [8, 10]]   # first maximum wins: 3 at (0,1), 7 at (2,2)
    dx = np.empty_like(x)
    pool.maxpool2d_backward(np.ones((1, 2, 2, 1), np.float32), argmax, dx)
    assert dx[0, :, :, 0].tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8), st.integers(1, 5)),
       size=st.tuples(st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 2**31))
def test_upsample_kernels_match_naive(dtype, shape, size, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape).astype(dtype)
    n, h, w, c = shape
    y = np.empty((n, h * size[0], w * size[1], c), dtype)
    up.upsample2d_forward(x, size[0], size[1], y)
    np.testing.assert_array_equal(y, up.upsample2d_forward_naive(x, size))
    dy = g.standard_normal(y.shape).astype(dtype)
    dx = np.full(shape, np.nan, dtype)
    up.upsample2d_backward(dy, size[0], size[1], dx)
    close(dx, up.upsample2d_backward_naive(dy, size), dtype)
    assert np.sum(y.astype(np.float64) * dy) == pytest.approx(np.sum(x.astype(np.float64) * dx), rel=1e-5, abs=1e-5)


def test_upsample_tiny_case_by_hand():
    x = np.array([[1, 2]], np.float32).reshape(1, 1, 2, 1)
    y = np.empty((1, 2, 4, 1), np.float32)
    up.upsample2d_forward(x, 2, 2, y)
    assert y[0, :, :, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2]]
    dx = np.empty_like(x)
    up.upsample2d_backward(np.arange(8, dtype=np.float32).reshape(1, 2, 4, 1), 2, 2, dx)
    assert dx[0, 0, :, 0].tolist() == [0 + 1 + 4 + 5, 2 + 3 + 6 + 7]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window, value, winner", [
    ([1, np.nan, 3, 2], 3, 2),          # a NaN never wins the value...
    ([np.nan, 1, 3, 2], 3, 0),          # ...but first in its window it takes the gradient (TF's MaxPoolGrad)
    ([1, 2, 3, np.nan], 3, 2),
    ([-1, np.nan, -3, -2], -1, 0),
    ([np.nan] * 4, "lowest", 0),        # TensorFlow's max starts from the lowest finite number
    ([-np.inf] * 4, "lowest", 0),
    ([np.nan, -np.inf, np.nan, np.nan], "lowest", 0),
    ([1, 2, np.inf, np.nan], np.inf, 2),
])
def test_maxpool_nan_and_inf_as_tensorflow(dtype, window, value, winner):
    """What tf.nn.max_pool2d and its gradient give for one 2x2 window (checked live in
    tests/test_layers.py::test_maxpooling_nan_matches_keras)."""
    x = np.array(window, dtype).reshape(1, 2, 2, 1)
    want = np.finfo(dtype).min if value == "lowest" else value
    for y, argmax in [run_pool(x, (2, 2), (2, 2), "valid"), pool.maxpool2d_forward_naive(x, (2, 2), (2, 2), "valid")]:
        assert y.dtype == dtype
        assert y[0, 0, 0, 0] == want and argmax[0, 0, 0, 0] == winner


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=pool_cases(), nan_share=st.sampled_from([0.2, 0.6, 1.0]))
def test_maxpool_with_nan_and_inf_matches_naive(dtype, case, nan_share):
    shape, ps, strides, padding, seed = case
    g = np.random.default_rng(seed)
    x = g.standard_normal(shape).astype(dtype)
    x[g.random(shape) < nan_share] = np.nan
    x[g.random(shape) < 0.1] = -np.inf
    y, argmax = run_pool(x, ps, strides, padding)
    y_ref, argmax_ref = pool.maxpool2d_forward_naive(x, ps, strides, padding)
    assert not np.isnan(y).any()
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)


def test_maxpool_forward_flags_the_samples_with_a_nonfinite_winner():
    """nonfinite[s]: some window of sample s has a NaN or -inf winner (its y is then not x at argmax)."""
    x = np.ones((4, 2, 4, 1), np.float32)
    x[1, 0, 0, 0] = np.nan      # first in its window: the winner
    x[2, 0, 1, 0] = np.nan      # not first: never the winner
    x[3, :, 2:, 0] = -np.inf    # a window of only -inf
    y = np.empty((4, 1, 2, 1), np.float32)
    argmax = np.empty(y.shape, np.int32)
    nonfinite = np.ones(4, np.bool_)
    pool.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y, argmax, nonfinite)
    assert nonfinite.tolist() == [False, True, False, True]
    y_without = np.empty_like(y)
    pool.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y_without, argmax)   # the flag is optional
    np.testing.assert_array_equal(y, y_without)


@st.composite
def pooled_relu_cases(draw):
    """A ReLU convolution's output y (n, h, w, c) and the max pooling reading it, with the
    convolution's strides and dzp halo; channels below, at and above the 8-channel blocks."""
    (n, h, w, _), ps, strides, padding, seed = draw(pool_cases())
    c = draw(st.sampled_from([1, 3, 8, 9, 16, 17]))
    conv_strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    halo = tuple(draw(st.integers(0, 2)) for _ in range(4))   # top, bottom, left, right
    return (n, h, w, c), ps, strides, padding, conv_strides, halo, draw(st.booleans()), seed


@st.composite
def tiled_pool_cases(draw):
    """2x2 windows with stride 2 inside x (the kernels' own path, pooling.tiles_2x2): 'valid' on any
    size (an odd last row or column is left out), 'same' on even sizes; channels below, at and above
    the 8-channel blocks."""
    padding = draw(st.sampled_from(["same", "valid"]))
    h, w = (draw(st.integers(1, 6)) * 2 if padding == "same" else draw(st.integers(2, 11)) for _ in range(2))
    c = draw(st.sampled_from([1, 3, 8, 9, 16, 17]))
    return (draw(st.integers(1, 3)), h, w, c), (2, 2), (2, 2), padding, draw(st.integers(0, 2**31))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=60, deadline=None)
@given(case=tiled_pool_cases(), values=st.sampled_from(["normal", "ties", "nan"]))
def test_maxpool_2x2_forward_is_the_generic_kernel_bit_for_bit(dtype, case, values):
    """The 2x2 stride-2 path against the naive pooling and the generic kernel: y, argmax, nonfinite."""
    shape, ps, strides, padding, seed = case
    g = np.random.default_rng(seed)
    x = (g.integers(0, 3, shape) if values == "ties" else g.standard_normal(shape)).astype(dtype)
    if values == "nan":
        x[g.random(shape) < 0.3] = np.nan
        x[g.random(shape) < 0.1] = -np.inf
    pt, _, oh = conv_padding(shape[1], 2, 2, padding)
    pl, _, ow = conv_padding(shape[2], 2, 2, padding)
    assert pool.tiles_2x2(2, 2, 2, 2, pt, pl, shape, (shape[0], oh, ow, shape[3]))
    y, argmax = run_pool(x, ps, strides, padding)
    y_ref, argmax_ref = pool.maxpool2d_forward_naive(x, ps, strides, padding)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    nonfinite, y_gen, argmax_gen, nonfinite_gen = (np.empty(shape[0], np.bool_), np.empty_like(y),
                                                   np.empty_like(argmax), np.empty(shape[0], np.bool_))
    pool.maxpool2d_forward(x, 2, 2, 2, 2, pt, pl, y, argmax, nonfinite)
    pool._maxpool2d_forward_samples(0, shape[0], x, 2, 2, 2, 2, pt, pl, y_gen, argmax_gen, nonfinite_gen)
    assert y.tobytes() == y_gen.tobytes() and argmax.tobytes() == argmax_gen.tobytes()
    np.testing.assert_array_equal(nonfinite, nonfinite_gen)


@st.composite
def tiled_relu_cases(draw):
    """pooled_relu_cases with 2x2 windows of stride 2 inside y (pooling.tiles_2x2)."""
    (n, h, w, c), ps, strides, padding, seed = draw(tiled_pool_cases())
    conv_strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    halo = tuple(draw(st.integers(0, 2)) for _ in range(4))
    return (n, h, w, c), ps, strides, padding, conv_strides, halo, draw(st.booleans()), seed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=60, deadline=None)
@given(case=tiled_relu_cases(), nonfinite_share=st.sampled_from([0.0, 0.05, 0.5]))
def test_maxpool_2x2_backward_relu_dz_equals_the_two_passes_bit_for_bit(dtype, case, nonfinite_share):
    """As below, on the 2x2 stride-2 path: dz, dzp and db written in one pass (samples with a NaN
    or -inf winner take the generic path)."""
    assert check_backward_relu_dz(dtype, case, nonfinite_share)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=60, deadline=None)
@given(case=pooled_relu_cases(), nonfinite_share=st.sampled_from([0.0, 0.05, 0.5]))
def test_maxpool_backward_relu_dz_equals_the_two_passes_bit_for_bit(dtype, case, nonfinite_share):
    """maxpool2d_backward_relu_dz = maxpool2d_backward then conv2d_backward_dz with the relu mask,
    bit for bit: dz, dzp and db. y holds what a convolution's output may: exact zeros (y[winner] = 0
    takes no gradient), positives, and NaN and +-inf (a NaN first in its window wins the gradient,
    which its mask then drops, while the pooled value beside it may be positive)."""
    check_backward_relu_dz(dtype, case, nonfinite_share)


def check_backward_relu_dz(dtype, case, nonfinite_share):
    """The check of the two tests above; returns whether the case took the 2x2 path."""
    shape, ps, strides, padding, (sh, sw), (top, bottom, left, right), need_dzp, seed = case
    n, h, w, c = shape
    g = np.random.default_rng(seed)
    y = np.maximum(g.standard_normal(shape), 0).astype(dtype)   # half exact zeros
    y[g.random(shape) < 0.1] = -1.0
    y[g.random(shape) < nonfinite_share] = np.nan
    y[g.random(shape) < nonfinite_share / 2] = -np.inf
    y[g.random(shape) < nonfinite_share / 2] = np.inf
    pt, _, oh = conv_padding(h, ps[0], strides[0], padding)
    pl, _, ow = conv_padding(w, ps[1], strides[1], padding)
    py = np.empty((n, oh, ow, c), dtype)
    argmax = np.empty(py.shape, np.int32)
    nonfinite = np.empty(n, np.bool_)
    pool.maxpool2d_forward(y, ps[0], ps[1], strides[0], strides[1], pt, pl, py, argmax, nonfinite)
    dy = g.standard_normal(py.shape).astype(dtype)
    hp, wp = top + (h - 1) * sh + 1 + bottom, left + (w - 1) * sw + 1 + right
    nc = max(1, min(n, 8))

    def outputs():
        return (np.full(shape, np.nan, dtype), np.zeros((n if need_dzp else 0, hp, wp, c), dtype),
                np.full((nc, c), np.nan, dtype), np.full(c, np.nan, dtype))

    dz, dzp, part, db = outputs()
    tiles = pool.tiles_2x2(ps[0], ps[1], strides[0], strides[1], pt, pl, shape, py.shape)
    pool.maxpool2d_backward_relu_dz(dy, argmax, py, nonfinite, y, sh, sw, top, left, dz, dzp, part, db, tiles)
    dz_ref, dzp_ref, part_ref, db_ref = outputs()
    dx = np.full(shape, np.nan, dtype)
    pool.maxpool2d_backward(dy, argmax, dx)
    conv_weight_grad.conv2d_backward_dz(dx, y, True, sh, sw, top, left, dz_ref, dzp_ref, part_ref, db_ref)
    for got, want in [(dz, dz_ref), (dzp, dzp_ref), (db, db_ref)]:
        assert got.tobytes() == want.tobytes()
    close(dz, pool.maxpool2d_backward_relu_naive(dy, argmax, y), dtype)
    return tiles


def test_maxpool_backward_relu_dz_tiny_case_by_hand():
    """One 2x2 window per sample; sample 1 has a NaN first in its window, which wins the gradient
    and drops it (NaN > 0 is false) although the pooled value, 3, is positive."""
    y = np.array([[0, 2, 3, 1], [np.nan, 0, 3, 2]], np.float32).reshape(2, 2, 2, 1)
    py = np.empty((2, 1, 1, 1), np.float32)
    argmax = np.empty(py.shape, np.int32)
    nonfinite = np.empty(2, np.bool_)
    pool.maxpool2d_forward(y, 2, 2, 2, 2, 0, 0, py, argmax, nonfinite)
    assert py.ravel().tolist() == [3, 3] and argmax.ravel().tolist() == [2, 0] and nonfinite.tolist() == [False, True]
    dz, db = np.empty_like(y), np.empty(1, np.float32)
    pool.maxpool2d_backward_relu_dz(np.array([5, 7], np.float32).reshape(py.shape), argmax, py, nonfinite, y, 1, 1,
                                    0, 0, dz, np.zeros((0, 2, 2, 1), np.float32), np.empty((2, 1), np.float32), db)
    assert dz.ravel().tolist() == [0, 0, 5, 0, 0, 0, 0, 0] and db.tolist() == [5]


# --- the sigmoid kernel (elementwise.py) -------------------------------------------------------------

def _sigmoid_cases(rng):
    """float32 inputs across the range: normal ones, the whole underflow range, a fine grid, specials."""
    return np.concatenate([rng.standard_normal(200_000) * 6, rng.uniform(-110, 110, 50_000),
                           np.linspace(-30, 30, 100_001), np.linspace(-104.5, -86, 20_001),
                           [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 16.6, 17.0, 89.0, -103.28, -104.0]]
                          ).astype(np.float32)


def test_sigmoid_float32_is_the_exact_sigmoid_rounded_once():
    """The float32 kernel computes in float64 and rounds once: within half a unit in the last place of
    the float64 sigmoid everywhere (the float64 result is within 1e-12 of exact, far below a float32
    half-unit, so only near-ties can round the other way), and rounds to the nearest float32 for all
    but a handful of a wide sample. NaN stays NaN, -inf gives 0, +inf 1, and below -104 the result
    underflows to 0 (2^-150 > e^-104)."""
    z = _sigmoid_cases(np.random.default_rng(0))
    y = np.empty_like(z)
    elementwise.sigmoid_forward(z.reshape(1, -1), y.reshape(1, -1))
    exact = 1 / (1 + np.exp(-z.astype(np.float64)))
    finite = ~np.isnan(z)
    half_ulp = np.spacing(exact[finite].astype(np.float32)).astype(np.float64) / 2
    assert np.all(np.abs(y[finite] - exact[finite]) <= half_ulp * (1 + 1e-6))
    assert np.mean(y[finite] == exact[finite].astype(np.float32)) > 1 - 1e-5
    assert np.isnan(y[~finite]).all()
    specials = dict(zip(z[-12:].tolist(), y[-12:].tolist()))
    assert specials[np.inf] == 1.0 and specials[-np.inf] == 0.0 and specials[0.0] == 0.5
    assert y[z <= -104].max() == 0 and y[(z > -103.27) & (z < -87)].min() > 0   # denormals, not flushed


def test_sigmoid_float64_keeps_libm_exp():
    """float64 inputs keep libm's exp (the float64 polynomial would be 1000 units in the last place
    off): within 2 units of NumPy's exp (NumPy's own, vectorised exp and libm's may differ by one)."""
    z = _sigmoid_cases(np.random.default_rng(1)).astype(np.float64)
    y = np.empty_like(z)
    elementwise.sigmoid_forward(z, y)
    e = np.exp(-np.abs(z))
    np.testing.assert_allclose(y, np.where(z >= 0, 1 / (1 + e), e * (1 / (1 + e))), rtol=4e-16, atol=0)


def test_exp_nonpositive_relative_error():
    """The float64 e^x the float32 sigmoid uses: relative error under 3e-13 on [-745 + 1, 0] (the Taylor
    polynomial to r^10 on |r| <= ln2/2, and the split ln 2), exactly 1 at 0."""
    x = np.concatenate([-np.logspace(-12, np.log10(700), 4000), np.linspace(-0.35, 0, 1001), [-0.0]])
    e = np.array([elementwise._exp_nonpositive(v) for v in x])
    assert np.max(np.abs(e - np.exp(x)) / np.exp(x)) < 3e-13
    assert elementwise._exp_nonpositive(0.0) == 1.0
    assert np.isnan(elementwise._exp_nonpositive(np.nan))


@pytest.mark.parametrize("shape, dtype", [((3, 30, 30, 16), np.float32), ((5, 7), np.float64), ((0, 4), np.float32),
                                          ((13,), np.int8), ((), np.float32)])
def test_work_arrays_start_on_a_cache_line(shape, dtype):
    """workspace.aligned and Workspace.array: C-contiguous arrays of the shape and dtype asked, zeros when
    asked, whose data starts at a multiple of 64 bytes (NumPy's own start 16 bytes into a line here), each
    with memory of its own."""
    from autoenc.kernels.workspace import ALIGN, Workspace, aligned
    assert ALIGN == 64
    ws = Workspace()
    arrays = [aligned(shape, dtype), aligned(shape, dtype, zeros=True), ws.array("a", shape, dtype),
              ws.array("b", shape, dtype, zeros=True)]
    for a in arrays:
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0 or a.size == 0   # an empty array's pointer is NumPy's choice
    assert not arrays[1].any() and not arrays[3].any()
    arrays[0][...] = 1
    assert not any(np.shares_memory(arrays[0], b) for b in arrays[1:])
    assert ws.array("a", shape, dtype) is arrays[2]
