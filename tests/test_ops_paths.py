"""The convolution's two ways of summing over the kernel give the same values: the offset
loop (large batches) and the window matrix (small batches, see ops.IM2COL_BYTES)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnntrace import ops


def both_paths(monkeypatch, X, W1, B1, stride, padding, dL_dZ1_seed, dyadic=False):
    results = {}
    for name, limit in (("loop", 0), ("windows", 2**40)):
        monkeypatch.setattr(ops, "IM2COL_BYTES", limit)
        Z1, cache = ops.conv2d_forward(X, W1, B1, stride, padding)
        assert (cache.windows is None) == (name == "loop")
        rng = np.random.default_rng(dL_dZ1_seed)
        dL_dZ1 = rng.integers(-8, 9, size=Z1.shape) / 8 if dyadic else rng.normal(size=Z1.shape)
        results[name] = (Z1, *ops.conv2d_backward(dL_dZ1, cache))
    return results


@settings(max_examples=60, deadline=None)
@given(
    M=st.integers(1, 3), C=st.integers(1, 3), K=st.integers(1, 3), H=st.integers(3, 8),
    W=st.integers(3, 8), kh=st.integers(1, 3), kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_window_matrix_and_offset_loop_agree(M, C, K, H, W, kh, kw, stride, padding, seed):
    rng = np.random.default_rng(seed)
    X, W1 = rng.normal(size=(M, C, H, W)), rng.normal(size=(K, C, kh, kw))
    B1 = rng.normal(size=K)
    with pytest.MonkeyPatch.context() as monkeypatch:
        results = both_paths(monkeypatch, X, W1, B1, stride, padding, seed)
    for loop, windows in zip(results["loop"], results["windows"]):
        assert loop.shape == windows.shape
        np.testing.assert_allclose(windows, loop, rtol=1e-12, atol=1e-12)


def test_exact_numbers_give_exactly_the_same_result(monkeypatch):
    # Multiples of 1/8 add up without rounding, whatever the order.
    rng = np.random.default_rng(0)
    X = rng.integers(-8, 9, size=(2, 2, 6, 6)) / 8
    W1 = rng.integers(-8, 9, size=(2, 2, 3, 3)) / 8
    results = both_paths(
        monkeypatch, X, W1, np.array([0.125, -0.5]), (1, 1), (1, 1), 0, dyadic=True
    )
    # Z1, dL/dX, dL/dW1 and dL/dB1 alike.
    for loop, windows in zip(results["loop"], results["windows"], strict=True):
        assert np.array_equal(loop, windows)


def test_large_batches_take_the_offset_loop():
    X = np.zeros((ops.IM2COL_BYTES // (8 * 9 * 16) + 1, 1, 6, 6))
    _, cache = ops.conv2d_forward(X, np.ones((1, 1, 3, 3)), np.zeros(1))
    assert cache.windows is None
    _, cache = ops.conv2d_forward(X[:1], np.ones((1, 1, 3, 3)), np.zeros(1))
    assert cache.windows is not None
    # Channels count in the copy's size: half the images with two channels each are as much.
    two_channels = np.zeros((X.shape[0] // 2 + 1, 2, 6, 6))
    _, cache = ops.conv2d_forward(two_channels, np.ones((1, 2, 3, 3)), np.zeros(1))
    assert cache.windows is None
    _, cache = ops.conv2d_forward(two_channels[:, :1], np.ones((1, 1, 3, 3)), np.zeros(1))
    assert cache.windows is not None
