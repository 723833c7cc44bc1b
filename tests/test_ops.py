"""cnntrace.ops, one op at a time: small cases worked on paper, then each forward/backward
pair against the loop-based oracle in naive.py over shapes drawn by hypothesis."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from cnntrace import ops
from tests import naive

ORACLE = {"rtol": 1e-12, "atol": 1e-12}
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

# The 3×3 image and asymmetric 2×2 kernel of the hand-worked convolution cases: one image
# of one channel, one filter.
X_3x3 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
W1_2x2 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])


def conv(X, W1, B1, stride=1, padding=0):
    return ops.conv2d_forward(
        X, W1, np.asarray(B1, dtype=float), (stride, stride), (padding, padding)
    )


# -- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "window", "stride", "expected"),
    [
        (6, 3, 1, 4),  # the reference 6×6 image and 3×3 filter
        (4, 2, 2, 2),
        (5, 2, 2, 2),  # the last row is left over and not used
        (3, 3, 3, 1),  # the window fits once
        (7, 3, 2, 3),
    ],
)
def test_output_size_counts_whole_windows(size, window, stride, expected):
    assert ops.output_size(size, window, stride) == expected
    assert naive.positions(size, window, stride) == expected


# -- convolution --------------------------------------------------------------------------


def test_conv_is_cross_correlation_without_kernel_flip():
    Z1, _ = conv(X_3x3, W1_2x2, [0.0])
    # Z1[0,0] = 1·1 + 2·2 + 3·4 + 4·5 = 37; a flipped kernel would give 4·1 + 3·2 + 2·4 + 1·5 = 23.
    assert_array_equal(Z1, [[[[37.0, 47.0], [67.0, 77.0]]]])


def test_conv_bias_is_added_to_every_position_of_its_own_filter():
    W1 = np.stack([W1_2x2[0], np.zeros((1, 2, 2))])  # filter 1 sees nothing but its bias
    Z1, _ = conv(X_3x3, W1, [0.5, -3.0])
    assert_array_equal(Z1[0, 0], [[37.5, 47.5], [67.5, 77.5]])
    assert_array_equal(Z1[0, 1], np.full((2, 2), -3.0))


def test_conv_stride_2_padding_1_by_hand():
    # Xp is X framed by zeros (5×5); windows start at rows/cols 0 and 2.
    # Z1[0,0] sees only X[0,0]=1 under W1[1,1]=4; Z1[0,1] sees 2, 3 under 3, 4; and so on.
    Z1, _ = conv(X_3x3, W1_2x2, [0.0], stride=2, padding=1)
    assert_array_equal(Z1, [[[[4.0, 18.0], [36.0, 77.0]]]])


def test_conv_backward_one_hot_gradient_picks_out_one_window():
    _, cache = conv(X_3x3, W1_2x2, [0.0])
    dL_dZ1 = np.array([[[[0.0, 1.0], [0.0, 0.0]]]])  # only Z1[0,1] matters
    dL_dX, dL_dW1, dL_dB1 = ops.conv2d_backward(dL_dZ1, cache)
    assert_array_equal(dL_dW1, [[[[2.0, 3.0], [5.0, 6.0]]]])  # the window Z1[0,1] was made from
    # W1 itself, unflipped, laid where that window lay.
    assert_array_equal(dL_dX, [[[[0.0, 1.0, 2.0], [0.0, 3.0, 4.0], [0.0, 0.0, 0.0]]]])
    assert_array_equal(dL_dB1, [1.0])


def test_conv_backward_stride_2_padding_1_by_hand():
    _, cache = conv(X_3x3, W1_2x2, [0.0], stride=2, padding=1)
    dL_dX, dL_dW1, dL_dB1 = ops.conv2d_backward(np.ones((1, 1, 2, 2)), cache)
    # dL/dW1[i,j] = sum of Xp[2h+i, 2w+j]: W1[0,0] meets only X[1,1]=5 (the rest is frame),
    # W1[0,1] meets 4 and 6, W1[1,0] meets 2 and 8, W1[1,1] meets the four corners.
    assert_array_equal(dL_dW1, [[[[5.0, 10.0], [10.0, 20.0]]]])
    # Each pixel lies in exactly one window; X[r,c] sits at Xp[r+1, c+1] under W1[(r+1)%2, (c+1)%2].
    assert_array_equal(dL_dX, [[[[4.0, 3.0, 4.0], [2.0, 1.0, 2.0], [4.0, 3.0, 4.0]]]])
    assert_array_equal(dL_dB1, [4.0])


# -- ReLU ---------------------------------------------------------------------------------


def test_relu_forward_and_its_slope_at_zero_is_zero():
    Z1 = np.array([-2.0, -0.0, 0.0, 1e-300, 3.0])
    assert_array_equal(ops.relu_forward(Z1), [0.0, 0.0, 0.0, 1e-300, 3.0])
    assert_array_equal(ops.relu_grad(Z1), [0.0, 0.0, 0.0, 1.0, 1.0])


# -- max pooling --------------------------------------------------------------------------


def pool_routes(A1, dL_dP1, pool, stride):
    P1, cache = ops.maxpool_forward(
        np.asarray(A1, dtype=float)[None, None], (pool, pool), (stride, stride)
    )
    dL_dA1 = ops.maxpool_backward(np.asarray(dL_dP1, dtype=float)[None, None], cache)
    return P1[0, 0], dL_dA1[0, 0], cache


def test_maxpool_tie_in_a_flat_window_goes_to_the_top_left_cell():
    P1, dL_dA1, _ = pool_routes([[1.0, 1.0], [1.0, 1.0]], [[5.0]], pool=2, stride=2)
    assert_array_equal(P1, [[1.0]])
    assert_array_equal(dL_dA1, [[5.0, 0.0], [0.0, 0.0]])


def test_maxpool_tie_goes_to_the_first_maximum_in_row_major_order():
    # (0,1) and (1,0) both hold the maximum 2; (0,1) comes first reading row by row.
    _, dL_dA1, _ = pool_routes([[0.0, 2.0], [2.0, 1.0]], [[5.0]], pool=2, stride=2)
    assert_array_equal(dL_dA1, [[0.0, 5.0], [0.0, 0.0]])


def test_maxpool_routes_each_window_to_its_own_maximum():
    A1 = [[1, 9, 2, 0], [3, 4, 8, 1], [0, 0, 1, 1], [7, 0, 2, 6]]
    P1, dL_dA1, _ = pool_routes(A1, [[1.0, 2.0], [3.0, 4.0]], pool=2, stride=2)
    assert_array_equal(P1, [[9.0, 8.0], [7.0, 6.0]])
    assert_array_equal(dL_dA1, [[0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0], [3, 0, 0, 4]])


def test_overlapping_windows_accumulate_into_a_shared_cell():
    # pool 2, stride 1: the centre is the maximum of all four windows and gets all four gradients.
    A1 = [[1.0, 2.0, 1.0], [2.0, 9.0, 2.0], [1.0, 2.0, 1.0]]
    P1, dL_dA1, cache = pool_routes(A1, [[1.0, 2.0], [3.0, 4.0]], pool=2, stride=1)
    assert_array_equal(P1, np.full((2, 2), 9.0))
    assert_array_equal(dL_dA1, [[0, 0, 0], [0, 10.0, 0], [0, 0, 0]])
    assert_array_equal(ops.pool_wins(cache)[0, 0], [[0, 0, 0], [0, 4.0, 0], [0, 0, 0]])


def test_pool_stride_larger_than_pool_skips_cells_that_get_no_gradient():
    A1 = np.arange(25.0).reshape(5, 5)  # pool 2, stride 3: windows at rows/cols 0-1 and 3-4
    P1, dL_dA1, _ = pool_routes(A1, np.ones((2, 2)), pool=2, stride=3)
    assert_array_equal(P1, [[6.0, 9.0], [21.0, 24.0]])
    assert dL_dA1[2, :].sum() == 0 and dL_dA1[:, 2].sum() == 0
    assert dL_dA1.sum() == 4.0


# -- padded pools and average pooling ------------------------------------------------------


def test_maxpool_padding_is_minus_infinity_and_never_wins():
    # Every A is negative: a zero padding would win the corner windows, −∞ never does.
    A = -np.arange(1.0, 5.0).reshape(1, 1, 2, 2)  # [[-1 -2] [-3 -4]]
    P, cache = ops.maxpool_forward(A, (2, 2), (1, 1), (1, 1))
    assert_array_equal(P[0, 0], [[-1.0, -1.0, -2.0], [-1.0, -1.0, -2.0], [-3.0, -3.0, -4.0]])
    assert_array_equal(ops.pool_wins(cache)[0, 0], [[4.0, 2.0], [2.0, 1.0]])
    dL_dA = ops.maxpool_backward(np.ones(P.shape), cache)
    assert dL_dA.shape == A.shape and dL_dA.sum() == 9.0  # no share lost to the padding


def test_avgpool_counts_the_zero_padding_in_the_mean():
    A = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)  # [[1 2] [3 4]]
    P, cache = ops.avgpool_forward(A, (2, 2), (2, 2), (1, 1))
    # Each 2×2 window holds one cell of A and three zeros of the frame.
    assert_array_equal(P[0, 0], [[0.25, 0.5], [0.75, 1.0]])
    dL_dA = ops.avgpool_backward(np.ones(P.shape), cache)
    assert_array_equal(dL_dA[0, 0], np.full((2, 2), 0.25))  # the frame's shares are dropped


def test_avgpool_without_padding_is_the_plain_mean_of_each_window():
    A = np.array([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    P, cache = ops.avgpool_forward(A, (2, 2), (1, 1))
    assert_array_equal(P[0, 0], [[3.0, 4.0]])
    # Overlapping windows: the middle column is in both and gets both quarters.
    assert_array_equal(ops.avgpool_backward(np.array([[[[4.0, 8.0]]]]), cache)[0, 0],
                       [[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])  # fmt: skip


# -- other activations ----------------------------------------------------------------------


def test_leaky_relu_keeps_alpha_of_the_negative_side_and_at_zero():
    Z = np.array([-2.0, 0.0, 3.0])
    assert_array_equal(ops.leaky_relu_forward(Z, 0.1), [-0.2, 0.0, 3.0])
    assert_array_equal(ops.leaky_relu_grad(Z, 0.1), [0.1, 0.1, 1.0])


def test_tanh_and_its_slope_from_A():
    A = ops.tanh_forward(np.array([0.0, 1.0]))
    assert A[0] == 0.0 and A[1] == pytest.approx(math.tanh(1.0), rel=1e-15)
    assert_array_equal(ops.tanh_grad(A), 1.0 - A * A)
    assert ops.tanh_grad(A)[0] == 1.0


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    with np.errstate(over="raise", invalid="raise"):
        A = ops.softmax(np.array([[0.0, 0.0], [1000.0, 1000.0 + math.log(3.0)]]))
    assert_allclose(A, [[0.5, 0.5], [0.25, 0.75]], rtol=1e-12)


def test_softmax_jacobian_by_hand():
    J = ops.softmax_jacobian(np.array([[0.25, 0.75]]))
    # A_i(δij − A_j): [[.25·.75, −.25·.75], [−.75·.25, .75·.25]]
    assert_array_equal(J[0], [[0.1875, -0.1875], [-0.1875, 0.1875]])


# -- flatten and dense --------------------------------------------------------------------


def test_flatten_order_is_filter_then_row_then_column():
    P1 = np.array(
        [[[[100 * k + 10 * r + c for c in range(2)] for r in range(2)] for k in range(2)]]
    )
    F = ops.flatten_forward(P1.astype(float))
    assert_array_equal(F, [[0, 1, 10, 11, 100, 101, 110, 111]])
    assert_array_equal(ops.flatten_backward(F, P1.shape), P1)


def test_dense_forward_and_backward_by_hand():
    F = np.array([[1.0, 2.0], [3.0, 4.0]])
    W2, B2 = np.array([[1.0], [-1.0]]), np.array([0.5])
    assert_array_equal(ops.dense_forward(F, W2, B2), [[-0.5], [-0.5]])
    dL_dF, dL_dW2, dL_dB2 = ops.dense_backward(np.array([[1.0], [2.0]]), F, W2)
    assert_array_equal(dL_dF, [[1.0, -1.0], [2.0, -2.0]])  # dL/dZ2[m]·W2ᵀ
    assert_array_equal(dL_dW2, [[7.0], [10.0]])  # Fᵀ·dL/dZ2 = [1·1 + 3·2, 2·1 + 4·2]
    assert_array_equal(dL_dB2, [3.0])


def test_dense_with_several_outputs_by_hand():
    F = np.array([[1.0, 2.0]])
    W = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    assert_array_equal(ops.dense_forward(F, W, np.array([0.0, 1.0, 0.5])), [[1.0, 3.0, 0.5]])
    dL_dF, dL_dW, dL_dB = ops.dense_backward(np.array([[1.0, -1.0, 2.0]]), F, W)
    assert_array_equal(dL_dF, [[5.0, -3.0]])  # [1 − 0 + 4, 0 − 1 − 2]
    assert_array_equal(dL_dW, [[1.0, -1.0, 2.0], [2.0, -2.0, 4.0]])
    assert_array_equal(dL_dB, [1.0, -1.0, 2.0])


# -- sigmoid and binary cross-entropy -----------------------------------------------------


def test_sigmoid_is_finite_and_warning_free_at_extreme_inputs():
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        A2 = ops.sigmoid(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    assert A2[2] == 0.5
    assert A2[0] == 0.0 and A2[4] == 1.0
    assert A2[1] == pytest.approx(np.exp(-30.0) / (1 + np.exp(-30.0)), rel=1e-15, abs=0)


@pytest.mark.parametrize(
    ("z", "y", "loss"),
    [
        (0.0, 1.0, np.log(2.0)),
        (0.0, 0.3, np.log(2.0)),  # σ(0) = 1/2 whatever the label
        (500.0, 0.0, 500.0),  # -log(1 - σ(500)) = log(1 + e^500) = 500 + log(1 + e^-500)
        (-500.0, 1.0, 500.0),
        # 1 - σ(30) ≈ 9e-14 keeps only a few digits if taken literally
        (30.0, 0.0, np.log1p(np.exp(30.0))),
        (-30.0, 1.0, np.log1p(np.exp(30.0))),
        (30.0, 1.0, np.log1p(np.exp(-30.0))),
    ],
)
def test_bce_loss_matches_the_closed_form_even_when_saturated(z, y, loss):
    assert ops.bce_loss(np.array([z]), np.array([y])) == pytest.approx(loss, rel=1e-15, abs=0)


def test_bce_loss_is_the_mean_over_the_batch():
    Z2, Y = np.array([0.0, 500.0]), np.array([1.0, 0.0])
    assert ops.bce_loss(Z2, Y) == pytest.approx((np.log(2.0) + 500.0) / 2, rel=1e-15, abs=0)


def test_bce_loss_and_gradient_are_the_mean_over_every_entry():
    # Two images of two outputs: N = 4 entries, not M = 2 images.
    Z, Y = np.zeros((2, 2)), np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ops.bce_loss(Z, Y) == pytest.approx(np.log(2.0), rel=1e-15, abs=0)
    assert_array_equal(ops.bce_grad_A(Z, Y), [[-0.5, 0.5], [0.5, -0.5]])  # ∓2 / 4


def test_bce_grad_A_drops_the_term_whose_label_weight_is_zero():
    # With Y = 1 the (1 - Y)/(1 - A2) term is 0 even where 1 - A2 underflows to 0; 0·∞ would be NaN.
    dL_dA2 = ops.bce_grad_A(np.array([800.0, -800.0]), np.array([1.0, 0.0]))
    assert_array_equal(dL_dA2, [-0.5, 0.5])  # -1/A2 and 1/(1 - A2), each divided by M = 2


def test_bce_sigmoid_backward_is_A2_minus_Y_over_M():
    A2, Y = np.array([0.5, 0.25, 1.0]), np.array([1.0, 0.0, 0.0])
    assert_array_equal(ops.bce_sigmoid_backward(A2, Y), [-0.5 / 3, 0.25 / 3, 1.0 / 3])


def test_sigmoid_grad_is_A2_times_one_minus_A2():
    assert_array_equal(ops.sigmoid_grad(np.array([0.0])), [0.25])
    assert ops.sigmoid_grad(np.array([-1000.0, 1000.0])).tolist() == [0.0, 0.0]


# -- cross-entropy and mean squared error ---------------------------------------------------


def test_cross_entropy_by_hand_is_the_mean_over_images():
    # Z = [0, log 3]: A = [1/4, 3/4]. Image 0 is class 1, image 1 class 0.
    Z = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    Y = np.array([[0.0, 1.0], [1.0, 0.0]])
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert ops.cross_entropy_loss(Z, Y) == pytest.approx(expected, rel=1e-15)
    A = ops.softmax(Z)
    assert_allclose(ops.cross_entropy_softmax_backward(A, Y), [[0.125, -0.125], [-0.375, 0.375]],
                    rtol=1e-15)  # (A − Y)/2  # fmt: skip
    assert_allclose(ops.cross_entropy_grad_A(A, Y), [[0.0, -2 / 3], [-2.0, 0.0]], rtol=1e-15)


def test_cross_entropy_ignores_a_class_of_weight_zero_even_at_minus_infinity_log():
    # log A of class 0 is −2000: a term 0·(−2000) is 0, and so is its share of dL/dA.
    Z, Y = np.array([[-1000.0, 1000.0]]), np.array([[0.0, 1.0]])
    assert ops.cross_entropy_loss(Z, Y) == 0.0
    assert_array_equal(ops.cross_entropy_grad_A(ops.softmax(Z), Y), [[0.0, -1.0]])


def test_mse_by_hand_is_the_mean_over_every_entry():
    A, Y = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([[0.0, 2.0], [2.0, -1.0]])
    assert ops.mse_loss(A, Y) == 5.0 / 4  # (1 + 0 + 4 + 0)/4
    assert_array_equal(ops.mse_grad(A, Y), [[0.5, 0.0], [-1.0, 0.0]])  # 2(A − Y)/4


# -- against the oracle -------------------------------------------------------------------


@st.composite
def conv_cases(draw):
    M, C, K = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, kh - 2 * padding[0]), 7))
    W = draw(st.integers(max(1, kw - 2 * padding[1]), 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X, W1 = rng.normal(size=(M, C, H, W)), rng.normal(size=(K, C, kh, kw))
    return X, W1, rng.normal(size=K), stride, padding, rng


@PROPERTY
@given(conv_cases())
def test_conv_forward_and_backward_match_the_oracle(case):
    X, W1, B1, stride, padding, rng = case
    Z1, cache = ops.conv2d_forward(X, W1, B1, stride, padding)
    assert_allclose(Z1, naive.conv_forward(X, W1, B1, stride, padding), **ORACLE)
    dL_dZ1 = rng.normal(size=Z1.shape)
    for got, expected in zip(
        ops.conv2d_backward(dL_dZ1, cache),
        naive.conv_backward(dL_dZ1, X, W1, stride, padding),
        strict=True,
    ):
        assert got.shape == expected.shape
        assert_allclose(got, expected, **ORACLE)


@PROPERTY
@given(conv_cases())
def test_conv_backward_is_the_adjoint_of_the_forward_map(case):
    # Z1 - B1 is linear in X and in W1, so <conv(X, W1), G> = <X, dL/dX> = <W1, dL/dW1>
    # for dL/dZ1 = G: an identity that holds whatever the loop structure.
    X, W1, B1, stride, padding, rng = case
    Z1, cache = ops.conv2d_forward(X, W1, np.zeros_like(B1), stride, padding)
    G = rng.normal(size=Z1.shape)
    dL_dX, dL_dW1, dL_dB1 = ops.conv2d_backward(G, cache)
    inner = np.sum(Z1 * G)
    assert np.sum(X * dL_dX) == pytest.approx(inner, rel=1e-10, abs=1e-10)
    assert np.sum(W1 * dL_dW1) == pytest.approx(inner, rel=1e-10, abs=1e-10)
    assert_allclose(dL_dB1, G.sum(axis=(0, 2, 3)), **ORACLE)


@st.composite
def pool_cases(draw):
    """A map of values from {-1, 0, 1, 2}, which make ties in most windows, so the tie rule
    decides the routing; a stride below the size makes windows overlap; padding up to half
    the window (PyTorch's limit), so some windows hang over the edge."""
    M, C = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, size[0] // 2)), draw(st.integers(0, size[1] // 2)))
    H, W = size[0] + draw(st.integers(0, 4)), size[1] + draw(st.integers(0, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.integers(-1, 3, size=(M, C, H, W)).astype(float)
    return A, size, stride, padding, rng


@PROPERTY
@given(pool_cases())
def test_maxpool_matches_the_oracle_with_many_ties(case):
    A1, pool, stride, padding, rng = case
    P1, cache = ops.maxpool_forward(A1, pool, stride, padding)
    assert_array_equal(P1, naive.maxpool_forward(A1, pool, stride, padding))
    dL_dP1 = rng.normal(size=P1.shape)
    assert_allclose(
        ops.maxpool_backward(dL_dP1, cache),
        naive.maxpool_backward(dL_dP1, A1, pool, stride, padding),
        **ORACLE,
    )
    wins = naive.maxpool_backward(np.ones(P1.shape), A1, pool, stride, padding)
    assert_array_equal(ops.pool_wins(cache), wins)


@PROPERTY
@given(pool_cases())
def test_avgpool_matches_the_oracle(case):
    A, size, stride, padding, rng = case
    A = A + rng.normal(size=A.shape)
    P, cache = ops.avgpool_forward(A, size, stride, padding)
    assert_allclose(P, naive.avgpool_forward(A, size, stride, padding), **ORACLE)
    dL_dP = rng.normal(size=P.shape)
    dL_dA = ops.avgpool_backward(dL_dP, cache)
    assert dL_dA.shape == A.shape
    assert_allclose(dL_dA, naive.avgpool_backward(dL_dP, A.shape, size, stride, padding), **ORACLE)


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_activations_match_the_oracle(M, n, seed):
    # Scaled values reach into saturation; some are exactly 0, where the kinks are.
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(M, n)) * rng.choice([1.0, 10.0, 30.0])
    Z[rng.uniform(size=Z.shape) < 0.2] = 0.0
    assert_array_equal(ops.relu_forward(Z), naive.relu_forward(Z))
    assert_array_equal(ops.relu_grad(Z), naive.relu_grad(Z))
    assert_array_equal(ops.leaky_relu_forward(Z, 0.01), naive.leaky_relu_forward(Z, 0.01))
    assert_array_equal(ops.leaky_relu_grad(Z, 0.01), naive.leaky_relu_grad(Z, 0.01))
    assert_allclose(ops.tanh_forward(Z), naive.tanh_forward(Z), **ORACLE)
    assert_allclose(ops.tanh_grad(ops.tanh_forward(Z)), naive.tanh_grad(Z), **ORACLE)
    assert_allclose(ops.sigmoid(Z), naive.sigmoid_forward(Z), **ORACLE)
    assert_allclose(ops.sigmoid_grad(Z), naive.sigmoid_grad(Z), **ORACLE)
    A = ops.softmax(Z)
    assert_allclose(A, naive.softmax(Z), **ORACLE)
    dL_dA = rng.normal(size=Z.shape)
    assert_allclose(ops.softmax_backward(dL_dA, A), naive.softmax_backward(dL_dA, Z), **ORACLE)
    # The Jacobian itself, applied as Jᵀ·dL/dA, gives the same.
    J = ops.softmax_jacobian(A)
    assert_allclose(np.einsum("mij,mi->mj", J, dL_dA), naive.softmax_backward(dL_dA, Z), **ORACLE)


@PROPERTY
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_cross_entropy_and_mse_match_the_oracle(M, n, seed):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(M, n)) * rng.choice([1.0, 10.0, 100.0])
    # One-hot rows (many weights exactly 0) or soft labels.
    if rng.uniform() < 0.5:
        Y = np.eye(n)[rng.integers(0, n, size=M)]
    else:
        Y = rng.dirichlet(np.ones(n), size=M)
    assert ops.cross_entropy_loss(Z, Y) == pytest.approx(
        naive.cross_entropy_loss(Z, Y), rel=1e-12, abs=1e-12
    )
    A = ops.softmax(Z)
    assert_allclose(ops.cross_entropy_grad_A(A, Y), naive.cross_entropy_grad_A(A, Y), **ORACLE)
    # The fused (A − Y)/M is the Jacobian applied to dL/dA, where A has its digits.
    if np.all(A > 1e-6):
        assert_allclose(ops.cross_entropy_softmax_backward(A, Y),
                        naive.softmax_backward(naive.cross_entropy_grad_A(A, Y), Z), rtol=1e-9, atol=1e-12)  # fmt: skip
    T = rng.normal(size=(M, n))
    assert ops.mse_loss(Z, T) == pytest.approx(naive.mse_loss(Z, T), rel=1e-12, abs=1e-12)
    assert_allclose(ops.mse_grad(Z, T), naive.mse_grad(Z, T), **ORACLE)


@PROPERTY
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
    st.integers(1, 3), st.integers(0, 2**32 - 1),
)  # fmt: skip
def test_flatten_dense_and_loss_match_the_oracle(M, K, Hp, Wp, n_out, seed):
    rng = np.random.default_rng(seed)
    P1 = rng.normal(size=(M, K, Hp, Wp))
    F = ops.flatten_forward(P1)
    assert_array_equal(F, naive.flatten_forward(P1))
    W2, B2 = rng.normal(size=(F.shape[1], n_out)), rng.normal(size=n_out)
    Z2 = ops.dense_forward(F, W2, B2) * rng.choice([1.0, 10.0, 30.0])  # reach into saturation
    assert_allclose(ops.dense_forward(F, W2, B2), naive.dense_forward(F, W2, B2), **ORACLE)
    # Labels at 0 and 1 exercise the dropped terms of dL/dA2.
    Y = np.where(rng.uniform(size=Z2.shape) < 0.5, rng.integers(0, 2, size=Z2.shape),
                 rng.uniform(size=Z2.shape))  # fmt: skip
    A2 = ops.sigmoid(Z2)
    assert_allclose(A2, naive.sigmoid_forward(Z2), **ORACLE)
    assert ops.bce_loss(Z2, Y) == pytest.approx(naive.bce_loss(Z2, Y), rel=1e-12, abs=1e-12)
    with np.errstate(divide="ignore", over="ignore"):
        assert_allclose(ops.bce_grad_A(Z2, Y), naive.bce_grad_A(Z2, Y), **ORACLE)
    assert_allclose(ops.sigmoid_grad(Z2), naive.sigmoid_grad(Z2), **ORACLE)
    dL_dZ2 = ops.bce_sigmoid_backward(A2, Y)
    for got, expected in zip(
        ops.dense_backward(dL_dZ2, F, W2), naive.dense_backward(dL_dZ2, F, W2), strict=True
    ):
        assert got.shape == expected.shape
        assert_allclose(got, expected, **ORACLE)
    assert_allclose(ops.flatten_backward(F, P1.shape), naive.flatten_backward(F, P1.shape))


# -- purity -------------------------------------------------------------------------------


def test_ops_never_write_into_their_arguments():
    rng = np.random.default_rng(7)
    X, W1, B1 = rng.normal(size=(2, 2, 5, 5)), rng.normal(size=(2, 2, 3, 2)), rng.normal(size=2)
    W2, B2, Y = rng.normal(size=(18, 1)), np.array([0.3]), np.array([[0.0], [1.0]])
    inputs = [X, W1, B1, W2, B2, Y]
    before = [a.copy() for a in inputs]

    Z1, conv_cache = ops.conv2d_forward(X, W1, B1, (1, 1), (1, 1))
    A1 = ops.relu_forward(Z1)
    P1, pool_cache = ops.maxpool_forward(A1, (3, 3), (2, 2), (1, 1))
    P1_avg, avg_cache = ops.avgpool_forward(A1, (3, 3), (2, 2), (1, 1))
    F = ops.flatten_forward(P1)
    Z2 = ops.dense_forward(F, W2, B2)
    A2 = ops.sigmoid(Z2)
    S = ops.softmax(F)
    T = ops.tanh_forward(Z1)
    saved = [a.copy() for a in (Z1, A1, P1, P1_avg, F, Z2, A2, S, T)]
    ops.bce_loss(Z2, Y), ops.bce_grad_A(Z2, Y), ops.sigmoid_grad(Z2)
    ops.leaky_relu_forward(Z1, 0.1), ops.leaky_relu_grad(Z1, 0.1), ops.tanh_grad(T)
    one_hot = np.eye(F.shape[1])[[0, 1]]
    ops.cross_entropy_loss(F, one_hot), ops.cross_entropy_grad_A(S, one_hot)
    ops.cross_entropy_softmax_backward(S, one_hot), ops.softmax_jacobian(S)
    ops.softmax_backward(F, S), ops.mse_loss(A2, Y), ops.mse_grad(A2, Y)
    ops.avgpool_backward(P1_avg, avg_cache)
    dL_dZ2 = ops.bce_sigmoid_backward(A2, Y)
    dL_dF, _, _ = ops.dense_backward(dL_dZ2, F, W2)
    dL_dP1 = ops.flatten_backward(dL_dF, P1.shape)
    dL_dA1 = ops.maxpool_backward(dL_dP1, pool_cache)
    ops.conv2d_backward(dL_dA1 * ops.relu_grad(Z1), conv_cache)

    for original, now in zip(
        before + saved, inputs + [Z1, A1, P1, P1_avg, F, Z2, A2, S, T], strict=True
    ):
        assert_array_equal(now, original)


def test_integer_inputs_give_float_gradients():
    # The gradient arrays must not take the inputs' dtype: int64 would truncate them to 0.
    X = np.array([[[[0.5, 1.0, 0.25], [0.75, 0.1, 0.3], [0.2, 0.9, 0.6]]]])
    W1 = np.array([[[[1, 2], [3, 4]]]])
    dZ1 = np.full((1, 1, 2, 2), 0.1)
    for X_given, W1_given in ((X, W1), (np.array([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]]), W1)):
        _, cache = ops.conv2d_forward(X_given, W1_given, np.array([0.0]))
        dX, dW1, _ = ops.conv2d_backward(dZ1, cache)
        _, float_cache = ops.conv2d_forward(
            X_given.astype(float), W1_given.astype(float), np.array([0.0])
        )
        expected = ops.conv2d_backward(dZ1, float_cache)
        assert dX.dtype == dW1.dtype == np.float64
        assert_allclose(dW1, expected[1], rtol=1e-15)
        assert_allclose(dX, expected[0], rtol=1e-15)


def test_mean_loss_of_huge_losses_does_not_overflow():
    # Two losses of 1e308 each: their mean fits in float64, their sum does not.
    assert ops.bce_loss(np.array([1e308, 1e308]), np.array([0.0, 0.0])) == 1e308
