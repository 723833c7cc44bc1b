"""cnntrace.network: the whole pass against its three oracles (central differences, the
loop-based twin in naive.py, torch autograd when installed), small cases worked on paper
that pin the conventions, the shapes a user gets back, and overflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from cnntrace.api import trace
from cnntrace.errors import CnntraceError, NumericError
from cnntrace.reference import reference_network, reference_stages
from tests import naive
from tests.inputs import reference_pass
from tests.torch_reference import torch_pass

STAGES = reference_stages()

ORACLE = {"rtol": 1e-12, "atol": 1e-12}
TORCH = {"rtol": 1e-9, "atol": 1e-9}
PARAMS = ("X", "W1", "B1", "W2", "B2")
#: The reference network's stages in the derivation's order (their names are the same for
#: one image and for a batch).


def gradient_step(W1, B1, W2, B2, grads, lr):
    """The reference network's update of these weights, in the shapes they are given in."""
    weights = {"W1": W1, "B1": B1, "W2": W2, "B2": B2}
    return reference_network().gradient_step(weights, grads, lr)


# -- random problems ----------------------------------------------------------------------


@dataclass
class Case:
    """One problem in the shapes a user writes: X (H, W) or (M, H, W), W1 (kh, kw) or
    (K, kh, kw), B1 a number or K numbers, W2 n numbers, B2 a number."""

    X: np.ndarray
    Y: np.ndarray
    W1: np.ndarray
    B1: np.ndarray
    W2: np.ndarray
    B2: np.ndarray
    options: dict = field(default_factory=dict)

    def trace(self, lr=0.1):
        return trace(self.X, self.Y, self.W1, self.B1, self.W2, self.B2, **self.options, lr=lr)

    def general(self, **replaced):
        """X (M, H, W), Y (M,), W1 (K, kh, kw), B1 (K,), W2 (n,), B2 (), as the pass takes them."""
        X, Y, W1, B1, W2, B2 = (
            replaced.get(name, getattr(self, name)) for name in ("X", "Y", *PARAMS[1:])
        )
        return (
            X.reshape(-1, *X.shape[-2:]), Y.reshape(-1), W1.reshape(-1, *W1.shape[-2:]),
            B1.reshape(-1), W2.reshape(-1), B2.reshape(()),
        )  # fmt: skip

    def forward_backward(self, **replaced):
        """The reference network's pass, every result in the shapes of ``general``."""
        return reference_pass(*self.general(**replaced), **self.options)


@st.composite
def problems(draw, discrete=False):
    """A random problem over the options' whole range: M and K of None mean the single-image
    and single-filter forms. ``discrete`` draws small integers instead of continuous values,
    so Z1 hits 0 exactly and pool windows hold ties."""
    M = draw(st.sampled_from([None, 1, 2, 3]))
    K = draw(st.sampled_from([None, 1, 2, 3]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    pool, pool_stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # The smallest image whose padded size lets Z1 hold one pool window, plus a few cells
    # (which also leaves rows that a stride cannot reach).
    H = max(1, kh - 2 * padding + stride * (pool - 1) + draw(st.integers(0, 2)))
    W = max(1, kw - 2 * padding + stride * (pool - 1) + draw(st.integers(0, 2)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    Hp, Wp = (Ho - pool) // pool_stride + 1, (Wo - pool) // pool_stride + 1
    n = (K or 1) * Hp * Wp

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = (H, W) if M is None else (M, H, W)
    kernel = (kh, kw) if K is None else (K, kh, kw)
    if discrete:
        X, W1 = rng.integers(-2, 3, size=image), rng.integers(-1, 3, size=kernel)
        B1 = rng.integers(-2, 3, size=() if K is None else K)
    else:
        X, W1 = rng.normal(size=image), rng.normal(size=kernel)
        B1 = rng.normal(size=() if K is None else K)
    W2, B2 = rng.normal(size=n), rng.normal(size=())
    # Labels at exactly 0 and 1 as well as in between.
    size = () if M is None else M
    Y = np.where(
        rng.uniform(size=size) < 0.3, rng.integers(0, 2, size=size), rng.uniform(size=size)
    )
    options = {"stride": stride, "padding": padding, "pool": pool, "pool_stride": pool_stride}
    arrays = (np.asarray(a, dtype=np.float64) for a in (X, Y, W1, B1, W2, B2))
    return Case(*arrays, options=options)


# -- oracle 1: central differences --------------------------------------------------------

STEP = 1e-6
KINK_GAP = 1e-4  # far larger than anything a step of 1e-6 can move Z1 or a pool entry by
# L carries round-off of about 1e-16·(its terms), so (L+ − L−)/2h is off by up to ~1e-9
# whatever the gradient's size: entries smaller than FLOOR are held to FLOOR·TOLERANCE.
FLOOR = 1e-2
TOLERANCE = 5e-7


def near_a_kink(values, pool, pool_stride):
    """True when a step could cross a kink of the loss: a Z1 near 0 (ReLU) or a pool
    window whose maximum is not clear of the runner-up (the winner could change)."""
    if np.any(np.abs(values["Z1"]) < KINK_GAP):
        return True
    A1 = values["A1"]
    _, _, Hp, Wp = values["P1"].shape
    for h in range(Hp):
        for w in range(Wp):
            rows = slice(h * pool_stride, h * pool_stride + pool)
            cols = slice(w * pool_stride, w * pool_stride + pool)
            window = np.sort(A1[:, :, rows, cols].reshape(*A1.shape[:2], -1), axis=-1)
            if pool > 1 and np.any(
                (window[..., -1] > 0) & (window[..., -1] - window[..., -2] < KINK_GAP)
            ):
                return True
    return False


def numerical_gradient(case: Case, name: str):
    """dL/d(name) by central differences, entry by entry, in the shape the user gave."""
    value = getattr(case, name)
    gradient = np.zeros(value.shape)
    for index in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[index] += STEP
        minus[index] -= STEP
        L_plus = case.forward_backward(**{name: plus})["L"]
        L_minus = case.forward_backward(**{name: minus})["L"]
        gradient[index] = (L_plus - L_minus) / (2 * STEP)
    return gradient


def relative_error(numerical, analytic):
    """max |n − a| / max(|n|, |a|, FLOOR). The floor keeps small or zero gradients (a filter
    whose Z1 is all negative) from dividing round-off by round-off."""
    scale = np.maximum(np.maximum(np.abs(numerical), np.abs(analytic)), FLOOR)
    return float(np.max(np.abs(numerical - analytic) / scale, initial=0.0))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(problems())
def test_gradients_match_central_differences(case):
    assume(
        not near_a_kink(case.forward_backward(), case.options["pool"], case.options["pool_stride"])
    )
    t = case.trace()
    for name in PARAMS:
        analytic = t["dL_d" + name]
        assert analytic.shape == getattr(case, name).shape
        error = relative_error(numerical_gradient(case, name), analytic)
        assert error < TOLERANCE, f"dL/d{name}: relative error {error:.2e}"


def test_central_differences_catch_a_wrong_gradient():
    # The check itself must be able to fail: a gradient off by 1e-5 in one entry is caught.
    case = Case(
        X=np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7], [0.2, 0.9, 1.1]]), Y=np.array(1.0),
        W1=np.array([[0.4, -0.3], [0.8, 0.6]]), B1=np.array(0.1),
        W2=np.array([0.7]), B2=np.array(-0.2), options={"pool": 2, "pool_stride": 2},
    )  # fmt: skip
    numerical = numerical_gradient(case, "W1")
    analytic = case.trace()["dL_dW1"]
    assert relative_error(numerical, analytic) < TOLERANCE
    assert relative_error(numerical, analytic + np.array([[1e-5, 0], [0, 0]])) > TOLERANCE


# -- oracle 2: the loop-based twin --------------------------------------------------------


def assert_matches_the_oracle(case: Case):
    general = case.general()
    expected = reference_pass(*general, oracle=True, **case.options)
    values = case.forward_backward()
    assert list(values) == list(expected)
    for name, value in values.items():
        assert np.shape(value) == np.shape(expected[name]), name
        assert_allclose(value, expected[name], **ORACLE, err_msg=name)

    # The trace presents the same numbers, in the same order, in the user's shapes,
    # and its update is one step of gradient descent.
    t = case.trace(lr=0.25)
    expected.update(naive.gradient_step(dict(zip(PARAMS[1:], general[2:])), expected, lr=0.25))
    for stage in STAGES:
        assert_allclose(
            np.ravel(t[stage.name]), np.ravel(expected[stage.name]), **ORACLE, err_msg=stage.name
        )


@settings(max_examples=60, deadline=None, derandomize=True)
@given(problems())
def test_pass_matches_the_naive_oracle(case):
    assert_matches_the_oracle(case)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(problems(discrete=True))
def test_pass_matches_the_naive_oracle_with_zeros_and_ties(case):
    # Integer inputs make exact zeros in Z1 and ties in pool windows, where the two
    # implementations agree only if they share ReLU'(0) = 0 and the first-maximum rule.
    assert_matches_the_oracle(case)


# -- oracle 3: torch autograd -------------------------------------------------------------


def test_trace_agrees_with_torch_autograd():
    torch = pytest.importorskip("torch")

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(problems())
    def agrees(case):
        theirs = torch_pass(torch, *case.general(), **case.options)
        t = case.trace()
        for name, value in theirs.items():
            assert_allclose(np.ravel(t[name]), value.ravel(), **TORCH, err_msg=name)

    agrees()


# -- conventions, on paper ----------------------------------------------------------------


def reference_6x6():
    """The seeds' shape: a 6×6 X, a 3×3 W1, pool 2 → Z1 4×4, P1 2×2, F 4, W2 4.

    X[r, c] = 6r + c and W1 picks the centre, so Z1[h, w] = X[h+1, w+1] = 6h + w + 7 and
    P1 holds each window's bottom-right: [[14, 16], [26, 28]]. W2 = [1, -1, 0, 0] and B2 = 2
    give Z2 = 14 − 16 + 2 = 0, so A2 = 1/2 exactly.
    """
    W1 = np.zeros((3, 3))
    W1[1, 1] = 1.0
    X = np.arange(36.0).reshape(6, 6)
    return {"X": X, "Y": 1.0, "W1": W1, "B1": 0.0, "W2": [1.0, -1.0, 0.0, 0.0], "B2": 2.0}


def test_reference_6x6_forward_by_hand():
    t = trace(**reference_6x6())
    assert t["Z1"].shape == (4, 4) and t["P1"].shape == (2, 2)
    assert_array_equal(t["Z1"], 6 * np.arange(4)[:, None] + np.arange(4) + 7)
    assert_array_equal(t["P1"], [[14.0, 16.0], [26.0, 28.0]])
    assert_array_equal(t["F"], [14.0, 16.0, 26.0, 28.0])
    assert t["Z2"] == 0.0 and t["A2"] == 0.5
    assert t["L"] == pytest.approx(math.log(2.0), rel=1e-15, abs=0)


def test_reference_6x6_backward_by_hand():
    t = trace(**reference_6x6())
    assert t["dL_dZ2"] == -0.5  # A2 − Y = 1/2 − 1
    assert_array_equal(t["dL_dW2"], [-7.0, -8.0, -13.0, -14.0])  # −F/2
    assert t["dL_dB2"] == -0.5
    assert_array_equal(t["dL_dF"], [-0.5, 0.5, 0.0, 0.0])  # −W2/2
    assert_array_equal(t["dL_dP1"], [[-0.5, 0.5], [0.0, 0.0]])
    # The two windows with a nonzero gradient send it to their maxima, Z1[1,1] and Z1[1,3].
    expected_dL_dZ1 = np.zeros((4, 4))
    expected_dL_dZ1[1, 1], expected_dL_dZ1[1, 3] = -0.5, 0.5
    assert_array_equal(t["dL_dA1"], expected_dL_dZ1)
    assert_array_equal(t["dL_dZ1"], expected_dL_dZ1)  # every Z1 is positive
    assert t["dL_dB1"] == 0.0
    # dL/dW1[i,j] = −X[1+i, 1+j]/2 + X[1+i, 3+j]/2 = (two columns apart)/2 = 1.
    assert_array_equal(t["dL_dW1"], np.ones((3, 3)))
    # dL/dX: each gradient times the centre-only W1, placed at its window's centre.
    expected_dL_dX = np.zeros((6, 6))
    expected_dL_dX[2, 2], expected_dL_dX[2, 4] = -0.5, 0.5
    assert_array_equal(t["dL_dX"], expected_dL_dX)


def test_one_step_update_is_W_minus_lr_dW_by_hand():
    t = trace(**reference_6x6(), lr=0.1)
    W1 = np.full((3, 3), -0.1)
    W1[1, 1] = 0.9
    assert_allclose(t["W1"], W1, rtol=1e-15)
    assert t["B1"] == 0.0
    # [1, −1, 0, 0] − 0.1·[−7, −8, −13, −14]
    assert_allclose(t["W2"], [1.7, -0.2, 1.3, 1.4], rtol=1e-15)
    assert t["B2"] == pytest.approx(2.05, rel=1e-15, abs=0)


def test_relu_slope_at_exactly_zero_blocks_the_gradient():
    # Z1 = [[1·1 − 1, 2·1 − 1]] = [[0, 1]]: the zero entry gets mask 0 even though dL/dA1 reaches it.
    t = trace(X=[[1.0, 2.0]], Y=1.0, W1=[[1.0]], B1=-1.0, W2=[1.0, 1.0], B2=0.0, pool=1)
    assert_array_equal(t["Z1"], [[0.0, 1.0]])
    assert_array_equal(t["dA1_dZ1"], [[0.0, 1.0]])
    assert t["dL_dA1"][0, 0] != 0.0
    assert t["dL_dZ1"][0, 0] == 0.0 and t["dL_dX"][0, 0] == 0.0
    # only the positive entry, Z1 = 1 from X = 2, feeds dL/dW1 and dL/dB1
    assert t["dL_dB1"] == t["dL_dZ1"][0, 1]
    assert t["dL_dW1"][0, 0] == 2.0 * t["dL_dZ1"][0, 1]


def test_pool_tie_sends_the_gradient_to_the_top_left_cell():
    # Every A1 is 1: the 2×2 window is one big tie.
    t = trace(X=np.ones((2, 2)), Y=0.0, W1=[[1.0]], B1=0.0, W2=[2.0], B2=0.0, pool=2)
    g = t["dL_dP1"][0, 0]
    assert g != 0.0
    assert_array_equal(t["dL_dA1"], [[g, 0.0], [0.0, 0.0]])


def test_overlapping_pool_windows_accumulate_in_the_pass():
    # pool 2, stride 1 on a 3×3 A1 whose centre is the maximum of all four windows.
    X = [[1.0, 2.0, 1.0], [2.0, 9.0, 2.0], [1.0, 2.0, 1.0]]
    W2 = [0.1, 0.2, 0.3, 0.4]
    t = trace(X=X, Y=0.0, W1=[[1.0]], B1=0.0, W2=W2, B2=-4.0, pool=2, pool_stride=1)
    assert_array_equal(t["P1"], np.full((2, 2), 9.0))
    dL_dZ2 = float(t["dL_dZ2"])
    expected = np.zeros((3, 3))
    expected[1, 1] = dL_dZ2 * sum(W2)
    assert_allclose(t["dL_dA1"], expected, rtol=1e-14)
    assert_allclose(t["dL_dX"], expected, rtol=1e-14)  # W1 = [[1]] passes it straight through


def test_dL_dZ2_is_A2_minus_Y_for_one_image():
    # W2 = [0] and B2 = 0 make Z2 = 0, A2 = 1/2.
    t = trace(X=np.ones((2, 2)), Y=1.0, W1=[[1.0]], B1=0.0, W2=[0.0], B2=0.0)
    assert t["A2"] == 0.5
    assert t["dL_dZ2"] == -0.5
    assert t["dL_dA2"] == -2.0  # −Y/A2
    assert t["dA2_dZ2"] == 0.25  # A2·(1 − A2)


def test_dL_dZ2_is_A2_minus_Y_over_M_for_a_batch():
    t = trace(X=np.ones((2, 2, 2)), Y=[1.0, 0.0], W1=[[1.0]], B1=0.0, W2=[0.0], B2=0.0)
    assert_array_equal(t["A2"], [0.5, 0.5])
    assert_array_equal(t["dL_dZ2"], [-0.25, 0.25])  # (A2 − Y)/2
    assert_array_equal(t["dL_dA2"], [-1.0, 1.0])  # (−Y/A2 + (1 − Y)/(1 − A2))/2
    assert t["dL_dB2"] == 0.0
    assert t["L"] == pytest.approx(math.log(2.0), rel=1e-15, abs=0)  # the mean, not the sum


def test_dL_dB1_is_the_sum_of_dL_dZ1_per_filter():
    rng = np.random.default_rng(3)
    t = trace(
        X=rng.normal(size=(2, 5, 5)), Y=[0.0, 1.0], W1=rng.normal(size=(2, 2, 2)),
        B1=[0.2, -0.1], W2=rng.normal(size=8), B2=0.0,
    )  # fmt: skip
    assert np.all(t["dL_dB1"] != 0.0)
    assert_allclose(t["dL_dB1"], t["dL_dZ1"].sum(axis=(0, 2, 3)), rtol=1e-13)


def test_F_order_is_filter_then_row_then_column():
    # Two 1×1 filters 1 and 10, pool 1: P1 is X for filter 0 and 10·X for filter 1.
    t = trace(
        X=[[1.0, 2.0], [3.0, 4.0]], Y=0.0, W1=[[[1.0]], [[10.0]]], B1=[0.0, 0.0],
        W2=np.arange(1.0, 9.0) / 100, B2=0.0, pool=1,
    )  # fmt: skip
    assert_array_equal(t["F"], [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0])
    g = float(t["dL_dZ2"])
    assert_allclose(t["dL_dW2"], g * t["F"], rtol=1e-15)
    # W2[5] (the 6th weight) goes back to filter 1, row 0, column 1.
    assert t["dL_dP1"][1, 0, 1] == pytest.approx(g * 0.06, rel=1e-15, abs=0)


def saturated(Z2, Y):
    """A pass whose Z2 is exactly the given value: X = [[1]], W1 = [[1]], W2 = [0], B2 = Z2."""
    return trace(X=[[1.0]], Y=Y, W1=[[1.0]], B1=0.0, W2=[0.0], B2=Z2, pool=1)


@pytest.mark.parametrize(
    ("Z2", "Y", "L"),
    [
        (500.0, 0.0, 500.0),  # −log(1 − σ(500)) = 500 + log(1 + e^−500)
        (-500.0, 1.0, 500.0),
        (500.0, 1.0, math.exp(-500.0)),  # log(1 + e^−500) ≈ e^−500
        (30.0, 0.0, math.log1p(math.exp(30.0))),  # 30 + 9.36e−14, which 1 − σ(30) can't resolve
        (-30.0, 1.0, math.log1p(math.exp(30.0))),
        (30.0, 1.0, math.log1p(math.exp(-30.0))),
    ],
)
def test_saturated_sigmoid_gives_the_analytic_loss_and_exact_dL_dZ2(Z2, Y, L):
    t = saturated(Z2, Y)
    assert t["Z2"] == Z2
    assert math.isfinite(t["L"]) and t["L"] == pytest.approx(L, rel=1e-14, abs=0)
    # Exactly σ(Z2) − Y: not the product of dL/dA2 ≈ e^|Z2| and dA2/dZ2 ≈ e^−|Z2|.
    assert t["dL_dZ2"] == t["A2"] - Y == naive.sigmoid(Z2) - Y
    assert t["dL_dB2"] == t["A2"] - Y
    # dA2/dZ2 = σ(Z2)·σ(−Z2) = e^−|Z2| / (1 + e^−|Z2|)², which 1 − A2 would round to 0 or garble.
    assert t["dA2_dZ2"] == pytest.approx(
        math.exp(-abs(Z2)) / (1 + math.exp(-abs(Z2))) ** 2, rel=1e-14, abs=0
    )


# -- shapes -------------------------------------------------------------------------------

# X 5×5 and W1 2×2 give Z1 4×4; pool 2 gives P1 2×2.
MAP, POOLED = (4, 4), (2, 2)


def expected_shapes(M, K, W2_shape, B1_shape, B2_shape):
    """Each named matrix's shape: a batch adds an image axis, several filters a filter axis."""
    image = () if M is None else (M,)
    filters = () if K is None else (K,)
    n = (K or 1) * 4
    X_shape, W1_shape = image + (5, 5), filters + (2, 2)
    shapes = {
        "Z1": image + filters + MAP, "A1": image + filters + MAP, "P1": image + filters + POOLED,
        "F": image + (n,), "Z2": image, "A2": image, "L": (),
        "dL_dA2": image, "dA2_dZ2": image, "dL_dZ2": image, "dL_dW2": W2_shape, "dL_dB2": B2_shape,
        "dL_dF": image + (n,), "dL_dP1": image + filters + POOLED, "dL_dA1": image + filters + MAP,
        "dA1_dZ1": image + filters + MAP, "dL_dZ1": image + filters + MAP, "dL_dB1": B1_shape,
        "dL_dW1": W1_shape, "dL_dX": X_shape,
        "W1": W1_shape, "B1": B1_shape, "W2": W2_shape, "B2": B2_shape,
    }  # fmt: skip
    return shapes


@pytest.mark.parametrize("M", [None, 1, 2], ids=["one image", "batch of 1", "batch of 2"])
@pytest.mark.parametrize("K", [None, 1, 2], ids=["one filter", "1 filter", "2 filters"])
@pytest.mark.parametrize("W2_form", ["list", "column", "row"])
@pytest.mark.parametrize("B2_form", [0.5, [0.5], [[0.5]]], ids=["number", "[b]", "[[b]]"])
def test_every_matrix_has_the_shape_the_user_would_expect(M, K, W2_form, B2_form):
    rng = np.random.default_rng(0)
    n = (K or 1) * 4
    X = rng.normal(size=(5, 5) if M is None else (M, 5, 5))
    Y = 1.0 if M is None else [1.0, 0.0][:M]
    W1 = rng.normal(size=(2, 2) if K is None else (K, 2, 2))
    B1 = 0.1 if K is None else [0.1] * K
    W2 = {
        "list": rng.normal(size=n).tolist(),
        "column": rng.normal(size=(n, 1)),
        "row": rng.normal(size=(1, n)),
    }[W2_form]
    t = trace(X, Y, W1, B1, W2, B2_form)

    expected = expected_shapes(M, K, np.shape(W2), np.shape(B1), np.shape(B2_form))
    assert set(expected) == {stage.name for stage in STAGES}
    for name, shape in expected.items():
        assert np.shape(t[name]) == shape, name


@pytest.mark.parametrize("B1", [0.1, [0.1]], ids=["number", "list of 1"])
def test_dL_dB1_and_updated_B1_take_the_shape_B1_was_given_in(B1):
    t = trace(np.ones((5, 5)), 1.0, np.ones((2, 2)), B1, np.ones(4), 0.0)
    assert np.shape(t["dL_dB1"]) == np.shape(B1) and np.shape(t["B1"]) == np.shape(B1)


def test_leading_axes_name_the_image_and_filter_axes():
    batch_multi = trace(
        np.ones((2, 5, 5)), [1.0, 0.0], np.ones((3, 2, 2)), [0.0] * 3, np.ones(12), 0.0
    )
    assert batch_multi.leading_axes("Z1") == ("image", "filter")
    assert batch_multi.leading_axes("F") == ("image",)
    assert batch_multi.leading_axes("dL_dW1") == ("filter",)
    assert batch_multi.leading_axes("L") == ()
    single = trace(np.ones((5, 5)), 1.0, np.ones((2, 2)), 0.0, np.ones(4), 0.0)
    assert single.leading_axes("Z1") == () and single.leading_axes("dL_dX") == ()


def test_sections_hold_the_stages_in_the_derivations_order():
    t = trace(**reference_6x6())
    names = [name for section in t.sections().values() for name in section]
    assert names == [stage.name for stage in STAGES]


# -- overflow -----------------------------------------------------------------------------


def test_overflowing_Z1_raises_NumericError_naming_Z1():
    with pytest.raises(NumericError) as raised:
        trace(X=np.full((2, 2), 1e200), Y=1.0, W1=[[1e200]], B1=0.0, W2=[1.0], B2=0.0)
    assert raised.value.key == "Z1"
    assert isinstance(raised.value, CnntraceError)


def test_overflowing_Z2_raises_NumericError_naming_Z2():
    with pytest.raises(NumericError) as raised:
        trace(X=[[1e300]], Y=1.0, W1=[[1.0]], B1=0.0, W2=[1e10], B2=0.0, pool=1)
    assert raised.value.key == "Z2"


def test_Z2_of_800_overflows_dL_dA2_which_is_genuinely_e_to_the_800():
    # L = 800 and dL/dZ2 = 1 are fine, but dL/dA2 = 1/(1 − A2) = 1 + e^800 is not a float64.
    with pytest.raises(NumericError) as raised:
        saturated(800.0, 0.0)
    assert raised.value.key == "dL_dA2"


def test_the_first_overflowing_stage_is_named_even_deep_in_the_backward_pass():
    # X·W1·W2 ≈ 1 keeps the forward pass tame, but dL/dX = dL/dZ2·W2·W1 ≈ 1e320.
    with pytest.raises(NumericError) as raised:
        trace(X=[[1e-320]], Y=0.5, W1=[[1e160]], B1=0.0, W2=[1e160], B2=0.0, pool=1)
    assert raised.value.key == "dL_dX"


def test_an_overflowing_update_names_the_updated_parameter():
    # dL/dW1 = ones is fine at lr = 1e308; dL/dW2 = [−7, −8, −13, −14] is not.
    with pytest.raises(NumericError) as raised:
        trace(**reference_6x6(), lr=1e308)
    assert raised.value.key == "W2"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    problems(),
    st.integers(-320, 300), st.integers(-300, 300), st.integers(-300, 300), st.integers(-300, 300),
)  # fmt: skip
def test_a_trace_never_holds_inf_or_nan(case, x_scale, w1_scale, w2_scale, lr_scale):
    # Scales from 1e-320 to 1e300 push some passes past float64 and leave others finite.
    case = replace(
        case, X=case.X * 10.0**x_scale, W1=case.W1 * 10.0**w1_scale, W2=case.W2 * 10.0**w2_scale
    )
    lr = 10.0**lr_scale
    try:
        t = case.trace(lr=lr)
    except NumericError as error:
        # The key is the first stage, in the pass's order, whose value is not finite.
        with np.errstate(all="ignore"):
            values = case.forward_backward()
            values.update(gradient_step(*case.general()[2:], values, lr))
        overflowed = [stage.name for stage in STAGES if not np.all(np.isfinite(values[stage.name]))]
        assert overflowed and error.key == overflowed[0]
        return
    for section in t.sections().values():
        for name, value in section.items():
            assert np.all(np.isfinite(value)), name
