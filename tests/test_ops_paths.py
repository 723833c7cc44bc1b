"""The fast paths of the ops against their general ones.

The convolution's three ways of summing over the kernel give the same values: the window
matrix (small batches, see ops.IM2COL_BYTES), the same in chunks of images (large batches)
and the offset loop (an image whose windows alone pass the limit). The max-pool's path for
windows that tile the map gives the offset loop's results bit for bit, signed zeros and
ties included, and so does the one strided copy of the convolution's windows. Training's
float32 convolution of short rows, laid out with the images last, sums in another order:
on numbers that add up without rounding it gives the offset loop's values exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnntrace import ops


def both_paths(monkeypatch, X, W1, B1, stride, padding, dL_dZ1_seed, dyadic=False):
    """Z1, dL/dX, dL/dW1, dL/dB1 by each path: ``chunks`` takes one image at a time and
    keeps the windows for the backward pass, ``chunks copied again`` does not."""
    M, C = X.shape[:2]
    _, _, kh, kw = W1.shape
    Ho = ops.output_size(X.shape[2] + 2 * padding[0], kh, stride[0])
    Wo = ops.output_size(X.shape[3] + 2 * padding[1], kw, stride[1])
    one_image = C * kh * kw * Ho * Wo * 8
    results = {}
    paths = (("loop", 0, 2**40), ("windows", 2**40, 2**40), ("chunks", one_image, 2**40),
             ("chunks copied again", one_image, 0))  # fmt: skip
    for name, limit, kept in paths:
        if name.startswith("chunks") and M == 1:
            continue  # one image fits its own windows: no chunks to take
        monkeypatch.setattr(ops, "IM2COL_BYTES", limit)
        monkeypatch.setattr(ops, "KEPT_BYTES", kept)
        Z1, cache = ops.conv2d_forward(X, W1, B1, stride, padding)
        # One filter's backward pass takes the offset loop: it keeps no windows.
        assert (cache.windows is None) == (name in ("loop", "chunks copied again") or name == "chunks" and len(W1) == 1)
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
    for path in results:
        for loop, other in zip(results["loop"], results[path], strict=True):
            assert loop.shape == other.shape
            np.testing.assert_allclose(other, loop, rtol=1e-12, atol=1e-12)


def test_exact_numbers_give_exactly_the_same_result(monkeypatch):
    # Multiples of 1/8 add up without rounding, whatever the order.
    rng = np.random.default_rng(0)
    X = rng.integers(-8, 9, size=(2, 2, 6, 6)) / 8
    W1 = rng.integers(-8, 9, size=(2, 2, 3, 3)) / 8
    results = both_paths(
        monkeypatch, X, W1, np.array([0.125, -0.5]), (1, 1), (1, 1), 0, dyadic=True
    )
    # Z1, dL/dX, dL/dW1 and dL/dB1 alike, by each of the paths.
    assert set(results) == {"loop", "windows", "chunks", "chunks copied again"}
    for path in results:
        for loop, other in zip(results["loop"], results[path], strict=True):
            assert np.array_equal(loop, other)


@settings(max_examples=60, deadline=None)
@given(
    M=st.integers(1, 5), C=st.integers(1, 3), K=st.integers(1, 4), H=st.integers(3, 9), W=st.integers(3, 9),
    kh=st.integers(1, 3), kw=st.integers(1, 3), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_float32_batch_last_convolution_is_the_offset_loop(M, C, K, H, W, kh, kw, stride, padding, dilation, seed):
    # Multiples of 1/8 add up without rounding in float32 too: the batch-last path's values
    # are the float64 offset loop's exactly, whatever order it sums in.
    rng = np.random.default_rng(seed)
    X = rng.integers(-8, 9, size=(M, C, H + dilation[0] * (kh - 1), W + dilation[1] * (kw - 1))) / 8  # Wo < 16
    W1, B1 = rng.integers(-8, 9, size=(K, C, kh, kw)) / 8, rng.integers(-8, 9, size=K) / 8
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ops, "IM2COL_BYTES", 0)  # float64: the offset loop
        Z1, loop = ops.conv2d_forward(X, W1, B1, stride, padding, dilation)
    dL_dZ1 = rng.integers(-8, 9, size=Z1.shape) / 8
    narrow = [a.astype(np.float32) for a in (X, W1, B1, dL_dZ1)]
    Z1_32, cache = ops.conv2d_forward(*narrow[:3], stride, padding, dilation)
    assert cache.batch_last and cache.windows.dtype == np.float32
    for wide, other in zip((Z1, *ops.conv2d_backward(dL_dZ1, loop)), (Z1_32, *ops.conv2d_backward(narrow[3], cache)),
                           strict=True):  # fmt: skip
        assert other.dtype == np.float32 and np.array_equal(other, wide)
    assert ops.conv2d_backward(narrow[3], cache, need_dL_dX=False)[0] is None


def test_the_batch_last_path_is_float32_s_for_short_rows_only():
    rng = np.random.default_rng(0)
    for dtype, width, batch_last in ((np.float32, 12, True), (np.float64, 12, False), (np.float32, 20, False)):
        X, W1 = rng.normal(size=(2, 3, 6, width)).astype(dtype), rng.normal(size=(4, 3, 3, 3)).astype(dtype)
        assert ops.conv2d_forward(X, W1, np.zeros(4, dtype))[1].batch_last == batch_last


@settings(max_examples=40, deadline=None)
@given(M=st.integers(2, 9), C=st.integers(1, 3), K=st.integers(2, 4), H=st.integers(3, 9), kh=st.integers(1, 3),
       per_chunk=st.integers(1, 4), seed=st.integers(0, 2**16))  # fmt: skip
def test_windows_kept_for_the_backward_pass_give_its_numbers_bit_for_bit(M, C, K, H, kh, per_chunk, seed):
    """The chunks' windows kept from the forward pass, or each chunk's copied again: the
    same products, summed in the same order."""
    rng = np.random.default_rng(seed)
    X, W1, B1 = rng.normal(size=(M, C, H, H)), rng.normal(size=(K, C, kh, kh)), rng.normal(size=K)
    one_image = C * kh * kh * (H - kh + 1) ** 2 * 8
    results = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ops, "IM2COL_BYTES", per_chunk * one_image)
        monkeypatch.setattr(ops, "CHUNK_BYTES", per_chunk * one_image)
        for kept in (0, 2**40):
            monkeypatch.setattr(ops, "KEPT_BYTES", kept)
            Z1, cache = ops.conv2d_forward(X, W1, B1)
            dL_dZ1 = np.random.default_rng(seed + 1).normal(size=Z1.shape)
            results[kept] = (Z1, *ops.conv2d_backward(dL_dZ1, cache))
    for again, kept in zip(results[0], results[2**40], strict=True):
        assert_same_bits(kept, again, "kept windows")


def test_large_batches_keep_no_windows(monkeypatch):
    monkeypatch.setattr(ops, "KEPT_BYTES", ops.IM2COL_BYTES)
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


def copies_of_windows(monkeypatch):
    """A list that gets the number of images of every copy of windows the conv makes."""
    made, windows = [], ops._windows

    def counted(X_padded, *rest):
        made.append(len(X_padded))
        return windows(X_padded, *rest)

    monkeypatch.setattr(ops, "_windows", counted)
    return made


def naive_dL_dX_of_ones(M, K):
    """dL/dX of a 3×3 kernel of ones on 6×6 images, dL/dZ all ones: K times how many of the
    4×4 windows cover each cell."""
    covers = np.array([1, 2, 3, 3, 2, 1], dtype=float)
    return np.broadcast_to(K * np.outer(covers, covers), (M, 1, 6, 6))


def test_large_batches_go_in_chunks_that_keep_the_windows_bounded(monkeypatch):
    made = copies_of_windows(monkeypatch)
    one_image = 9 * 16 * 8  # 3×3 kernel on 6×6: 4×4 positions
    monkeypatch.setattr(ops, "IM2COL_BYTES", 3 * one_image)
    X = np.ones((7, 1, 6, 6))
    # Up to KEPT_BYTES the chunks' windows are kept: the backward pass copies nothing.
    Z1, cache = ops.conv2d_forward(X, np.ones((2, 1, 3, 3)), np.zeros(2))
    assert made == [3, 3, 1] and [w.shape for w in cache.windows] == [(9, 3, 4, 4), (9, 3, 4, 4), (9, 1, 4, 4)]
    made.clear()
    dL_dX, dL_dW, _ = ops.conv2d_backward(np.ones(Z1.shape), cache)
    assert made == [] and np.array_equal(dL_dW, np.full((2, 1, 3, 3), 7 * 16.0))
    monkeypatch.setattr(ops, "KEPT_BYTES", 7 * one_image - 1)
    made.clear()
    Z1, cache = ops.conv2d_forward(X, np.ones((2, 1, 3, 3)), np.zeros(2))
    assert made == [3, 3, 1] and cache.windows is None
    assert np.array_equal(Z1, np.full((7, 2, 4, 4), 9.0))
    made.clear()
    dL_dX, dL_dW, _ = ops.conv2d_backward(np.ones(Z1.shape), cache)
    assert made == [3, 3, 1]  # copied again, chunk by chunk
    assert np.array_equal(dL_dW, np.full((2, 1, 3, 3), 7 * 16.0))
    assert np.array_equal(dL_dX, naive_dL_dX_of_ones(7, 2))
    # One filter's backward pass takes the offset loop: no second copy.
    Z1, cache = ops.conv2d_forward(X, np.ones((1, 1, 3, 3)), np.zeros(1))
    made.clear()
    dL_dX, dL_dW, _ = ops.conv2d_backward(np.ones(Z1.shape), cache)
    assert made == [] and np.array_equal(dL_dW, np.full((1, 1, 3, 3), 7 * 16.0))
    assert np.array_equal(dL_dX, naive_dL_dX_of_ones(7, 1))
    # A chunk never holds more than CHUNK_BYTES of windows, whatever IM2COL_BYTES.
    monkeypatch.setattr(ops, "IM2COL_BYTES", 2**40)
    monkeypatch.setattr(ops, "CHUNK_BYTES", 2 * one_image)
    made.clear()
    ops.conv2d_forward(X, np.ones((1, 1, 3, 3)), np.zeros(1))
    assert made == [7]  # the whole batch fits IM2COL_BYTES: one copy, as before
    monkeypatch.setattr(ops, "IM2COL_BYTES", 6 * one_image)
    made.clear()
    ops.conv2d_forward(X, np.ones((1, 1, 3, 3)), np.zeros(1))
    assert made == [2, 2, 2, 1]


def test_float32_goes_in_chunks_of_its_own_size(monkeypatch):
    """Training's float32 convolution chunks its windows by FLOAT32_CHUNK_BYTES (float32
    bytes), where float64 keeps the whole batch; on numbers that add up without rounding it
    gives float64's values, and dL/dX goes back by float64's chunks (here all at once)."""
    made = copies_of_windows(monkeypatch)
    one_image = 2 * 9 * 4 * 16 * 4  # float32 windows of a 3×3 kernel, 2 channels, on 6×18: 4×16 positions
    monkeypatch.setattr(ops, "FLOAT32_CHUNK_BYTES", 3 * one_image)
    rng = np.random.default_rng(0)
    X, W1 = rng.integers(-4, 5, size=(7, 2, 6, 18)), rng.integers(-4, 5, size=(3, 2, 3, 3))
    B1, dL_dZ1 = np.array([0.5, -1.0, 2.0]), rng.integers(-8, 9, size=(7, 3, 4, 16)) / 8
    wide = ops.conv2d_forward(X.astype(float), W1.astype(float), B1)
    assert made == [7]
    wide_grads = ops.conv2d_backward(dL_dZ1, wide[1])
    made.clear()
    Z1, cache = ops.conv2d_forward(*(a.astype(np.float32) for a in (X, W1, B1)))
    assert made == [3, 3, 1] and cache.windows[0].dtype == np.float32 and not cache.batch_last
    narrow_grads = ops.conv2d_backward(dL_dZ1.astype(np.float32), cache)
    assert made == [3, 3, 1]  # the kept windows: no second copy
    for wide_value, narrow in zip((wide[0], *wide_grads), (Z1, *narrow_grads), strict=True):
        assert narrow.dtype == np.float32 and np.array_equal(narrow, wide_value)
    # Beyond KEPT_BYTES the backward pass copies each float32 chunk again.
    monkeypatch.setattr(ops, "KEPT_BYTES", 0)
    made.clear()
    Z1, cache = ops.conv2d_forward(*(a.astype(np.float32) for a in (X, W1, B1)))
    assert cache.windows is None
    again = ops.conv2d_backward(dL_dZ1.astype(np.float32), cache)
    assert made == [3, 3, 1, 3, 3, 1]
    for wide_value, narrow in zip(wide_grads, again, strict=True):
        assert narrow.dtype == np.float32 and np.array_equal(narrow, wide_value)


def test_an_image_too_large_for_its_windows_takes_the_offset_loop(monkeypatch):
    made = copies_of_windows(monkeypatch)
    monkeypatch.setattr(ops, "IM2COL_BYTES", 9 * 16 * 8 - 1)
    Z1, cache = ops.conv2d_forward(np.ones((2, 1, 6, 6)), np.ones((1, 1, 3, 3)), np.zeros(1))
    ops.conv2d_backward(np.ones(Z1.shape), cache)
    assert made == [] and np.array_equal(Z1, np.full((2, 1, 4, 4), 9.0))


# -- bit for bit: the fast paths against the general ones ------------------------------------


def assert_same_bits(fast, general, what):
    assert fast.dtype == general.dtype and fast.shape == general.shape, what
    assert np.array_equal(fast, general), what
    assert np.array_equal(np.signbit(fast), np.signbit(general)), f"{what}: the signs of zero"


def values(rng, shape, kind):
    """Arrays with many exact ties: ReLU outputs, small integers, ±0.0 and ±1."""
    if kind == "normal":
        return rng.normal(size=shape)
    if kind == "relu":
        return np.maximum(rng.normal(size=shape), 0.0)
    if kind == "integers":
        return rng.integers(-2, 3, size=shape).astype(float)
    if kind == "int64":
        return rng.integers(-2, 3, size=shape)
    if kind == "signed zeros":
        return rng.choice([-0.0, 0.0], size=shape)
    return rng.choice([-1.0, -0.0, 0.0, 1.0], size=shape)


KINDS = ["normal", "relu", "integers", "int64", "signed zeros", "zeros and ones"]


@settings(max_examples=150, deadline=None)
@given(
    M=st.sampled_from([1, 2, 3, 5, 32, 64]), C=st.integers(1, 4), H=st.integers(1, 13),
    W=st.integers(1, 13), size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    kind=st.sampled_from(KINDS), gradient=st.sampled_from(KINDS), seed=st.integers(0, 2**16),
    chunk=st.sampled_from([None, 1, 2000]), small=st.sampled_from([None, 0, 2**40]),
)  # fmt: skip
def test_maxpool_on_tiles_is_the_offset_loop_bit_for_bit(M, C, H, W, size, kind, gradient, seed, chunk, small):
    """chunk: CHUNK_BYTES, so that a batch goes one image or a few at a time; small:
    SMALL_POOL_CELLS, so that every map takes the argmax (2**40) or none does (0)."""
    rng = np.random.default_rng(seed)
    A = values(rng, (M, C, H, W), kind)
    if kind == "normal" and seed % 3 == 0:
        A[rng.random(A.shape) < 0.2] = np.nan  # never a window's maximum
    with pytest.MonkeyPatch.context() as monkeypatch:
        if chunk is not None:
            monkeypatch.setattr(ops, "CHUNK_BYTES", chunk)
        if small is not None:
            monkeypatch.setattr(ops, "SMALL_POOL_CELLS", small)
        fast = ops.maxpool_forward(A, size, size)
        fast_dL_dA = ops.maxpool_backward(values(np.random.default_rng(seed + 1), fast[0].shape, gradient), fast[1])
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ops, "_tiles", lambda *_: False)
        general = ops.maxpool_forward(A, size, size)
        dL_dP = values(np.random.default_rng(seed + 1), general[0].shape, gradient)
        general_dL_dA = ops.maxpool_backward(dL_dP, general[1])
        general_wins = ops.pool_wins(general[1])
    assert_same_bits(fast[0], general[0], "P")
    assert_same_bits(fast[1].winner, general[1].winner, "winner")
    assert fast[1]._replace(winner=None) == general[1]._replace(winner=None)
    assert_same_bits(fast_dL_dA, general_dL_dA, "dL/dA")
    assert_same_bits(ops.pool_wins(fast[1]), general_wins, "wins")


def test_maxpool_on_tiles_keeps_the_first_tie_and_its_sign():
    A = np.array([[[[-0.0, 0.0, 1.0, 1.0], [0.0, -0.0, 1.0, 1.0], [-1.0, -1.0, 0.0, -0.0]]]])
    P, cache = ops.maxpool_forward(A, (3, 2), (3, 2))
    assert np.array_equal(P, [[[[0.0, 1.0]]]]) and np.signbit(P[0, 0, 0, 0])  # the first zero
    assert np.array_equal(cache.winner, [[[[0, 0]]]])
    dL_dA = ops.maxpool_backward(np.array([[[[-0.0, -2.0]]]]), cache)
    # The winners get 0.0 + dL/dP, as the loop gives them: −0.0 becomes +0.0.
    assert np.array_equal(dL_dA, [[[[0.0, 0.0, -2.0, 0.0], [0.0] * 4, [0.0] * 4]]])
    assert not np.any(np.signbit(dL_dA[..., :2]))


def test_maxpool_on_tiles_passes_over_nan_as_the_loop_does(monkeypatch):
    # NaN is never larger: it takes no window, not even as the first cell.
    A = np.array([[[[np.nan, 1.0, -np.inf, np.nan], [2.0, np.nan, 3.0, -np.inf]]]])
    P, cache = ops.maxpool_forward(A, (2, 2), (2, 2))
    assert np.array_equal(P, [[[[2.0, 3.0]]]]) and np.array_equal(cache.winner, [[[[2, 2]]]])
    monkeypatch.setattr(ops, "_tiles", lambda *_: False)
    general = ops.maxpool_forward(A, (2, 2), (2, 2))
    assert_same_bits(P, general[0], "P")
    assert_same_bits(cache.winner, general[1].winner, "winner")


def offset_by_offset(X_padded, kh, kw, Ho, Wo, stride):
    """The windows as the offset loop would copy them, one slice per kernel weight."""
    M, C = X_padded.shape[:2]
    windows = np.empty((C, kh, kw, M, Ho, Wo))
    for i, j, rows, cols in ops._offsets((kh, kw), (Ho, Wo), stride):
        windows[:, i, j] = X_padded[:, :, rows, cols].transpose(1, 0, 2, 3)
    return windows.reshape(C * kh * kw, M, Ho, Wo)


@settings(max_examples=60, deadline=None)
@given(
    M=st.sampled_from([1, 2, 7, 32]), C=st.integers(1, 4), H=st.integers(3, 10),
    W=st.integers(3, 10), kh=st.integers(1, 3), kw=st.integers(1, 3),
    stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), kind=st.sampled_from(KINDS),
    layout=st.sampled_from(["C", "channels first", "slice"]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_strided_windows_are_the_offset_loops(M, C, H, W, kh, kw, stride, kind, layout, seed):
    X = values(np.random.default_rng(seed), (M, C, H, W + 1), kind)
    # Not only C-contiguous arrays: a conv's output lies filter by filter, a batch may be a view.
    if layout == "channels first":
        X = X.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)
    X = X[..., 1:] if layout == "slice" else X[..., :W]
    Ho, Wo = ops.output_size(H, kh, stride[0]), ops.output_size(W, kw, stride[1])
    windows = ops._windows(X, kh, kw, Ho, Wo, stride)
    assert_same_bits(windows, offset_by_offset(X, kh, kw, Ho, Wo, stride), "windows")
    assert windows.flags.c_contiguous and windows.flags.writeable


def test_a_cache_without_windows_for_a_batch_that_fits_keeps_the_offset_loop(monkeypatch):
    # As the conv layer's ∂L/∂pad(X) makes it: its dL/dX must be the pass's, bit for bit.
    rng = np.random.default_rng(5)
    X, W1 = rng.normal(size=(2, 1, 4, 5)), rng.normal(size=(2, 1, 3, 3))
    Z1, cache = ops.conv2d_forward(X, W1, np.zeros(2), (1, 1), (1, 1))
    dL_dZ1 = rng.normal(size=Z1.shape)
    made = copies_of_windows(monkeypatch)
    without = ops.conv2d_backward(dL_dZ1, cache._replace(windows=None))
    assert made == []
    assert_same_bits(without[0], ops.conv2d_backward(dL_dZ1, cache)[0], "dL/dX")
