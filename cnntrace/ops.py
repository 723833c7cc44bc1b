"""The operations of a small CNN as forward/backward pairs (numpy only).

Every function is pure: it returns new arrays and never writes into its arguments. Shapes
use M images, C input channels, K filters and n units:

    maps     (M, C, H, W)          conv W (K, C, kh, kw)   conv B (K,)
    vectors  (M, n)                dense W (n_in, n_out)   dense B (n_out,)

Sizes, strides and paddings of windows are (rows, cols) pairs; a pooling's padding may also
be four sides (top, bottom, left, right), its taps ``dilation`` apart, and in ``ceil_mode`` a
last partial window is kept as PyTorch keeps it. The convolution and the pooling loop over
the offsets of their window (kh*kw or ph*pw steps), each step working on a whole strided
slice of the batch at once; the backward pass of each loops over the same offsets as its
forward pass, so one reads against the other.

For a small batch the convolution takes a shortcut that gives the same values up to
float64 rounding: it copies the slice of X each kernel weight meets ("im2col", one strided
copy) and does the sum over the kernel as one matrix product, forward and back. That saves
most of the per-offset calls that dominate small arrays. Above ``IM2COL_BYTES`` it does the
same a chunk of images at a time (``CHUNK_BYTES`` of windows each), each chunk's copy in
cache as its product reads it; the chunks' windows are kept for the backward pass up to
``KEPT_BYTES`` and copied again beyond, which keeps the memory bounded instead of kh*kw
times that of X. The offset loop is left for an image whose windows alone are larger than
``IM2COL_BYTES``, and for the backward pass of a large batch through one filter, where it
measured faster than copying the windows a second time. dL/dX goes back through
dL/dwindows laid out with the images last (see _send_back). Training in float32, whose last
bits no trace shows, copies the windows of short output rows with the images last as well,
forward and back (see _conv_batch_last), and takes other windows in chunks of
``FLOAT32_CHUNK_BYTES``, small enough to stay in a core's cache.

A max-pool whose windows tile the map (stride = size, no padding, no dilation, no partial
window: the common 2×2, stride 2) visits the same offsets in the same order on a
window-major copy of A, a chunk of images at a time (a small map takes each window's first
maximum from one argmax), and routes dL/dP back with one scatter; the results are the offset
loop's, bit for bit.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: The largest copy of X's windows (C*kh*kw × M × Ho × Wo, float64) the convolution makes.
IM2COL_BYTES = 8 * 2**20
#: Up to this much, the windows a larger batch copies chunk by chunk are kept for the
#: backward pass, which then reads them instead of copying them again (LeNet-5's first
#: convolution at batch 64: 10 MB); above it, the backward pass copies each chunk again.
KEPT_BYTES = 32 * 2**20
#: A larger batch goes a chunk of images at a time, each chunk's copy at most this large:
#: the convolution's windows (never more than IM2COL_BYTES), a tiling max-pool's A. 2 MiB
#: stays in cache and measured fastest.
CHUNK_BYTES = 2 * 2**20
#: Training's float32 convolution (whose last bits no trace shows) goes a chunk of images at
#: a time once the batch's windows pass this much (float32 bytes), each chunk at most this
#: large: a copy and its product that stay in a core's cache (1 MiB of L2 on the development
#: machine). LeNet-5's first convolution at batch 64 (5 MB of float32 windows): chunks of 6
#: images, forward and dL/dW about a third faster than chunks of 13 or the whole batch.
#: float64 keeps CHUNK_BYTES: its dL/dW sums the chunks' products, and step's bits with them.
FLOAT32_CHUNK_BYTES = 2**19
#: Up to this many cells a max-pool on tiling windows takes each window's winner from one
#: argmax; on larger maps the offset loop is faster (an argmax over a short axis is slow).
SMALL_POOL_CELLS = 1024

Pair = tuple[int, int]


def output_size(size: int, window: int, stride: int, dilation: int = 1) -> int:
    """How many positions a window of ``window`` cells (``dilation`` apart) takes along
    ``size`` cells."""
    return (size - dilation * (window - 1) - 1) // stride + 1


@lru_cache(maxsize=64)
def _offsets(window: Pair, out: Pair, stride: Pair, dilation: Pair = (1, 1)):
    """(i, j, rows, cols) for each window offset: the slices pick, for every output
    position (h, w), the input cell (h*stride + i*dilation, w*stride + j*dilation). Kept
    once made: training asks for the same offsets at every step."""
    (rows, cols), (out_rows, out_cols), (sh, sw), (dh, dw) = window, out, stride, dilation
    return tuple(
        (i, j, slice(i * dh, i * dh + sh * (out_rows - 1) + 1, sh),
         slice(j * dw, j * dw + sw * (out_cols - 1) + 1, sw))
        for i in range(rows)
        for j in range(cols)
    )  # fmt: skip


def sides(padding) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a padding given as (rows, cols) or as those four."""
    if len(padding) == 4:
        return tuple(padding)
    ph, pw = padding
    return (ph, ph, pw, pw)


def _pad(maps: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    """``maps`` (M, C, H, W) inside a border of ``value``, ``padding`` (rows, cols) on every
    side or (top, bottom, left, right); the array itself when none."""
    top, bottom, left, right = sides(padding)
    if not (top or bottom or left or right):
        return maps  # no copy of what may be a whole dataset
    M, C, H, W = maps.shape
    # As np.pad(maps, …, constant_values=value) makes it, in a quarter of the time.
    padded = np.full((M, C, H + top + bottom, W + left + right), value, dtype=maps.dtype)
    padded[:, :, top : top + H, left : left + W] = maps
    return padded


def _unpad(maps: np.ndarray, padding) -> np.ndarray:
    top, bottom, left, right = sides(padding)
    return maps[:, :, top : maps.shape[2] - bottom, left : maps.shape[3] - right]


# -- convolution: Z = conv(X, W) + B -------------------------------------------------------
#
# Dilation spaces a kernel's taps ``dilation`` cells apart; ``groups`` G splits the C input
# channels and the K filters into G groups, each filter reading only its group's C/G
# channels: W (K, C/G, kh, kw), as PyTorch stores it. Both go through the same paths as the
# plain convolution: dilation only changes which cells each offset's slice takes, and a
# grouped product is one batched matrix product (G × (K/G) × (C/G·kh·kw)), never a loop
# over the groups.


class ConvCache(NamedTuple):
    X_padded: np.ndarray  # (M, C, H + top + bottom, W + left + right)
    W: np.ndarray  # (K, C/G, kh, kw)
    stride: Pair
    padding: Pair | tuple[int, int, int, int]  # (rows, cols) or (top, bottom, left, right)
    #: (C*kh*kw, M, Ho, Wo) (see _windows), or a batch in chunks: one such for each chunk's
    #: images, in order; up to KEPT_BYTES
    windows: np.ndarray | tuple[np.ndarray, ...] | None = None
    dilation: Pair = (1, 1)
    groups: int = 1
    batch_last: bool = False  # windows (C*kh*kw, Ho, Wo, M): float32 training (_conv_batch_last)


def float_type(*arrays) -> np.dtype:
    """The floating type a result of ``arrays`` is computed in: float32 where every one of
    them is float32 (training with ``dtype=float32``), float64 otherwise (an int array would
    truncate a gradient)."""
    return _float_type(*[a.dtype for a in arrays])


@lru_cache(maxsize=64)
def _float_type(*dtypes) -> np.dtype:
    # Kept once found: np.result_type takes longer than many of the steps that ask it.
    return np.result_type(*dtypes, np.float32)


def _strided(array, shape, strides):
    """A read-only view of ``array`` with these shape and byte steps, as
    np.lib.stride_tricks.as_strided makes it, in a third of its time where ``array`` is one
    block of memory (a training step makes two)."""
    if not array.flags.c_contiguous:
        return np.lib.stride_tricks.as_strided(array, shape, strides, writeable=False)
    view = np.ndarray(shape, array.dtype, buffer=array, strides=strides)
    view.flags.writeable = False
    return view


def _windows(X_padded, kh, kw, Ho, Wo, stride, dilation=(1, 1)):
    """windows[(c*kh + i)*kw + j, m, h, w] = Xp[m, c, h*sh + i*dh, w*sw + j*dw], as a new
    array: for each kernel weight, the slice of X it meets. (C*kh*kw, M, Ho, Wo), float64."""
    M, C = X_padded.shape[:2]
    step_m, step_c, step_h, step_w = X_padded.strides
    # A read-only view (C, kh, kw, M, Ho, Wo) of X_padded, then one copy of it.
    # A stride along an axis of one window is never taken: 0 there, so that a stride larger
    # than any array (a fuzzed 1e308) cannot overflow the view's byte steps.
    view = _strided(
        X_padded, (C, kh, kw, M, Ho, Wo),
        (step_c, step_h * dilation[0], step_w * dilation[1], step_m, step_h * stride[0] if Ho > 1 else 0,
         step_w * stride[1] if Wo > 1 else 0),
    )  # fmt: skip
    windows = np.empty(view.shape, float_type(X_padded))  # float64 for an int X, as the product needs
    windows[...] = view
    return windows.reshape(C * kh * kw, M, Ho, Wo)


def _chunk(M, C, kh, kw, Ho, Wo, dtype=np.float64) -> int:
    """How many images the convolution takes at a time: M when all their windows fit in
    IM2COL_BYTES (the whole batch at once), else as many as fit in CHUNK_BYTES (at least
    1), or 0 when one image's windows alone are too large (the offset loop). The windows
    counted as float64, whatever ``dtype``, but for float32's: M within
    FLOAT32_CHUNK_BYTES, else as many as fit there."""
    per_image = C * kh * kw * Ho * Wo * 8
    if per_image > IM2COL_BYTES:
        return 0
    if dtype == np.float32:
        per_image //= 2
        return M if M * per_image <= FLOAT32_CHUNK_BYTES else max(1, FLOAT32_CHUNK_BYTES // per_image)
    if M * per_image <= IM2COL_BYTES:
        return M
    return max(1, min(CHUNK_BYTES, IM2COL_BYTES) // per_image)


@lru_cache(maxsize=64)
def _image_slices(M: int, step: int) -> tuple[slice, ...]:
    """Consecutive slices of the M images, ``step`` images each (the last may have fewer).
    Kept once made, as _offsets."""
    return tuple(slice(start, min(start + step, M)) for start in range(0, M, step))


def _by_group(W, groups):
    """W (K, C/G, kh, kw) as G matrices, one per group: (G, K/G, C/G·kh·kw)."""
    return W.reshape(groups, W.shape[0] // groups, -1)


def _filters_times_windows(W, windows, groups):
    """W·windows: (K, M·Ho·Wo) from windows (C*kh*kw, …); a group's filters meet only its
    channels' rows."""
    K = W.shape[0]
    if groups == 1:
        return W.reshape(K, -1) @ windows.reshape(windows.shape[0], -1)
    return (_by_group(W, groups) @ windows.reshape(groups, windows.shape[0] // groups, -1)).reshape(K, -1)


def _weight_gradient(dL_dZ_by_filter, windows, W, groups):
    """dL/dW = dL/dZ·windowsᵀ, group by group. dL/dZ by filter (K, N), windows (C*kh*kw, …)
    -> (K, C/G·kh·kw)."""
    if groups == 1:
        rows = windows.reshape(windows.shape[0], -1)
        if rows.dtype == np.float32:
            # The same product turned over: the same numbers in float32, up to twice as fast
            # (a float64 one can differ in its last bits, and step's must not).
            return (rows @ dL_dZ_by_filter.T).T
        return dL_dZ_by_filter @ rows.T
    K = W.shape[0]
    rows = windows.reshape(groups, windows.shape[0] // groups, -1)
    return (dL_dZ_by_filter.reshape(groups, K // groups, -1) @ rows.transpose(0, 2, 1)).reshape(K, -1)


def _conv_windows(X_padded, W, B, Ho, Wo, stride, dilation=(1, 1), groups=1, Z=None):
    """Z = W·windows + B as one matrix product: -> Z (M, K, Ho, Wo) (written into ``Z``, a
    slice of a larger batch's, when given), windows."""
    M = X_padded.shape[0]
    K, _, kh, kw = W.shape
    windows = _windows(X_padded, kh, kw, Ho, Wo, stride, dilation)
    by_filter = _filters_times_windows(W, windows, groups).reshape(K, M, Ho, Wo).transpose(1, 0, 2, 3)
    if Z is None:
        return (by_filter + B[:, None, None] if B is not None else by_filter.copy()), windows
    if B is not None:
        np.add(by_filter, B[:, None, None], out=Z)
    else:
        Z[...] = by_filter
    return Z, windows


def conv2d_forward(X, W, B, stride: Pair = (1, 1), padding=(0, 0), dilation: Pair = (1, 1), groups: int = 1):
    """Z[m,k,h,w] = B[k] + Σ_c,i,j W[k,c,i,j] · Xp[m, g·C/G + c, h*sh + i*dh, w*sw + j*dw],
    g = k // (K/G) the group of filter k.

    Cross-correlation (no kernel flip), as in PyTorch; Xp is X inside ``padding`` zeros,
    (rows, cols) on every side or (top, bottom, left, right). B None: no bias.
    X (M, C, H, W), W (K, C/G, kh, kw), B (K,) -> Z (M, K, Ho, Wo), ConvCache.
    """
    X_padded = _pad(X, padding)
    M, C = X.shape[:2]
    K, _, kh, kw = W.shape
    Ho = output_size(X_padded.shape[2], kh, stride[0], dilation[0])
    Wo = output_size(X_padded.shape[3], kw, stride[1], dilation[1])
    if _batch_last(X_padded, W, groups, C * kh * kw * Ho * Wo, Wo):
        return _conv_batch_last(X_padded, W, B, Ho, Wo, stride, padding, dilation)
    chunk = _chunk(M, C, kh, kw, Ho, Wo, float_type(X_padded, W))
    if chunk == M:
        Z, windows = _conv_windows(X_padded, W, B, Ho, Wo, stride, dilation, groups)
        return Z, ConvCache(X_padded, W, stride, padding, windows, dilation, groups)
    Z = np.empty((M, K, Ho, Wo), float_type(X_padded, W))
    if chunk:
        # Chunk by chunk, each chunk's windows in cache as its product reads them; kept for
        # the backward pass up to KEPT_BYTES, else dropped once used (it copies them again).
        # One filter's backward pass takes the offset loop (see conv2d_backward): none kept.
        # Each chunk's windows are one array of their own: its dL/dW product reads them a
        # fifth faster than rows of a whole batch's copy, a batch apart (the same numbers).
        keep = K > 1 and M * C * kh * kw * Ho * Wo * float_type(X_padded).itemsize <= KEPT_BYTES
        kept = []
        for images in _image_slices(M, chunk):
            windows = _conv_windows(X_padded[images], W, B, Ho, Wo, stride, dilation, groups, Z[images])[1]
            if keep:
                kept.append(windows)
        return Z, ConvCache(X_padded, W, stride, padding, tuple(kept) if keep else None, dilation, groups)
    Z[...] = B[:, None, None] if B is not None else 0.0
    weighted = np.empty_like(Z)  # one buffer for every offset's products, not one each
    per_group, filters = C // groups, K // groups
    for i, j, rows, cols in _offsets((kh, kw), (Ho, Wo), stride, dilation):
        for c in range(C):
            # Each kernel weight W[k,c,i,j] meets the same shifted slice of every image;
            # channel c feeds its group's filters only.
            ks = slice(c // per_group * filters, (c // per_group + 1) * filters)
            np.multiply(W[None, ks, c % per_group, i, j, None, None], X_padded[:, c, None, rows, cols],
                        out=weighted[:, ks])  # fmt: skip
            Z[:, ks] += weighted[:, ks]
    return Z, ConvCache(X_padded, W, stride, padding, None, dilation, groups)


def _batch_last(X_padded, W, groups, per_image, Wo) -> bool:
    """Whether the convolution takes the batch-last path: float32 (training's, whose last bits
    no trace shows), one group, the whole batch's windows within IM2COL_BYTES, and output
    rows shorter than 16 numbers, the runs of _windows' copy (LeNet-5's second convolution,
    Wo = 10: its forward pass a quarter faster; its first, Wo = 28, a third slower, the
    copy back into the images' order costing more than the copy saves)."""
    return (float_type(X_padded, W) == np.float32 and groups == 1 and Wo < 16
            and X_padded.shape[0] * per_image * 4 <= IM2COL_BYTES)  # fmt: skip


def _conv_batch_last(X_padded, W, B, Ho, Wo, stride, padding, dilation):
    """conv2d_forward in float32 with the images last: X (C, Hp, Wp, M), so that each window
    row is one run of Wo·M numbers (the copy goes at the speed of memory, where runs of Wo
    went at that of its loop), and windows (C*kh*kw, Ho, Wo, M) kept for the backward
    pass, which reads dL/dZ in the same order for dL/dW and for dL/dX (one copy for both).
    The sums run over the positions in another order than float64's: other last bits."""
    M, C = X_padded.shape[:2]
    K, _, kh, kw = W.shape
    X_last = np.ascontiguousarray(X_padded.transpose(1, 2, 3, 0), dtype=np.float32)
    step_c, step_h, step_w, step_m = X_last.strides
    view = _strided(
        X_last, (C, kh, kw, Ho, Wo, M),
        (step_c, step_h * dilation[0], step_w * dilation[1], step_h * stride[0] if Ho > 1 else 0,
         step_w * stride[1] if Wo > 1 else 0, step_m),
    )  # fmt: skip
    windows = np.empty(view.shape, np.float32)
    windows[...] = view
    windows = windows.reshape(C * kh * kw, Ho, Wo, M)
    Z_last = W.reshape(K, -1) @ windows.reshape(C * kh * kw, -1)  # (K, Ho·Wo·M)
    Z = np.empty((M, K, Ho, Wo), np.float32)
    np.add(Z_last.reshape(K, Ho, Wo, M).transpose(3, 0, 1, 2), B[:, None, None] if B is not None else 0.0, out=Z)
    return Z, ConvCache(X_padded, W, stride, padding, windows, dilation, 1, True)


def conv2d_backward(dL_dZ, cache: ConvCache, need_dL_dX=True):
    """dL/dX, dL/dW, dL/dB from dL/dZ (M, K, Ho, Wo).

    dL/dW[k,c,i,j] = Σ_m,h,w Xp[m, g·C/G + c, h*sh + i*dh, w*sw + j*dw] · dL/dZ[m,k,h,w]
                     (= conv(X, dL/dZ))
    dL/dB[k]       = Σ_m,h,w dL/dZ[m,k,h,w]
    dL/dX          = every dL/dZ entry sent back to the cells its window covered, times the
                     weight that met them; the padding's share is cut off at the end.
    Returns dL_dX (M, C, H, W), dL_dW (K, C/G, kh, kw), dL_dB (K,). With ``need_dL_dX=False``
    (the first layer, in training) dL/dX is skipped and None returned in its place.
    """
    X_padded, W, stride, padding, windows, dilation, groups, batch_last = cache
    M, C = X_padded.shape[:2]
    K, _, kh, kw = W.shape
    _, _, Ho, Wo = dL_dZ.shape
    offsets = _offsets((kh, kw), (Ho, Wo), stride, dilation)
    dL_dB = dL_dZ.sum(axis=(0, 2, 3))
    if batch_last:  # float32: dL/dZ batch last once, for dL/dW and for dL/dX
        dL_dZ_last = dL_dZ.transpose(1, 2, 3, 0).reshape(K, -1)
        dL_dW = (windows.reshape(windows.shape[0], -1) @ dL_dZ_last.T).T.reshape(W.shape)
        if not need_dL_dX:
            return None, dL_dW, dL_dB
        dL_dXp = np.zeros((C, *X_padded.shape[2:], M), np.float32)
        _send_back(dL_dXp, W, dL_dZ, offsets, dL_dZ_last=dL_dZ_last)
        return _unpad(dL_dXp.transpose(3, 0, 1, 2), padding), dL_dW, dL_dB
    chunk = _chunk(M, C, kh, kw, Ho, Wo, float_type(X_padded, W))
    # dL/dX goes back in chunks by float64's rule, float32's too: its adds run over the
    # images (see _send_back), and a small chunk would cut their runs short.
    send_chunk = _chunk(M, C, kh, kw, Ho, Wo)
    send_chunk = send_chunk if 0 < send_chunk < M else None
    if isinstance(windows, np.ndarray):  # the small-batch shortcut: one product over every position
        dL_dZ_by_filter = dL_dZ.transpose(1, 0, 2, 3).reshape(K, -1)
        dL_dW = _weight_gradient(dL_dZ_by_filter, windows, W, groups).reshape(W.shape)
    elif windows is not None:
        # The forward pass's windows, kept chunk by chunk: the chunks' products summed as
        # when each chunk is copied again, in the same order (the same numbers).
        dL_dW = np.zeros((K, W[0].size), float_type(W, dL_dZ))
        for images, chunk_windows in zip(_image_slices(M, chunk), windows, strict=True):
            dL_dZ_by_filter = dL_dZ[images].transpose(1, 0, 2, 3).reshape(K, -1)
            dL_dW += _weight_gradient(dL_dZ_by_filter, chunk_windows, W, groups)
        dL_dW = dL_dW.reshape(W.shape)
    elif K > 1 and 0 < chunk < M:
        # A batch too large for its windows. (A cache made without windows for a batch that
        # fits keeps the offset loop and its bits; one filter's dL/dW is a plain dot product
        # per weight, faster than copying the windows again.)
        return _conv_backward_chunks(dL_dZ, cache, chunk, need_dL_dX, send_chunk) + (dL_dB,)
    else:
        dL_dW = np.empty(W.shape, float_type(W, dL_dZ))  # float64 for an int W: it would truncate
        for i, j, rows, cols in offsets:
            if groups == 1:
                dL_dW[:, :, i, j] = np.einsum("mkhw,mchw->kc", dL_dZ, X_padded[:, :, rows, cols])
            else:
                dL_dW[:, :, i, j] = np.einsum(
                    "mgkhw,mgchw->gkc", dL_dZ.reshape(M, groups, K // groups, Ho, Wo),
                    X_padded[:, :, rows, cols].reshape(M, groups, C // groups, Ho, Wo),
                ).reshape(K, C // groups)  # fmt: skip
    if not need_dL_dX:
        return None, dL_dW, dL_dB
    dL_dXp = _padded_gradient(dL_dZ, W, X_padded.shape, offsets, groups, send_chunk)
    return _unpad(dL_dXp, padding), dL_dW, dL_dB


def _padded_gradient(dL_dZ, W, padded_shape, offsets, groups, chunk=None):
    """dL/dXp (M, C, Hp, Wp): every dL/dZ (M, K, Ho, Wo) entry sent back to the cells of the
    padded input its window covered, times the weight that met them (``offsets`` as the
    forward pass visited them); ``chunk`` images at a time when given."""
    M, C, Hp, Wp = padded_shape
    dtype = float_type(W, dL_dZ)  # as dL_dW
    if C == 1:
        # One input channel (the reference network's X): the offset loop's sums over the
        # filters, whose every digit the reference's outputs have always shown.
        dL_dXp = np.zeros(padded_shape, dtype)
        for i, j, rows, cols in offsets:
            dL_dXp[:, :, rows, cols] += np.einsum("mkhw,kc->mchw", dL_dZ, W[:, :, i, j])
        return dL_dXp
    dL_dXp = np.zeros((C, Hp, Wp, M), dtype)
    for images in _image_slices(M, chunk or M):
        _send_back(dL_dXp[..., images], W, dL_dZ[images], offsets, groups)
    # Back in the images' order (one copy, small beside the windows): a sum over a gradient
    # further down adds its numbers in the order they lie in memory, and a trace and a
    # training pass must add them alike, as before.
    return np.ascontiguousarray(dL_dXp.transpose(3, 0, 1, 2))


def _send_back(dL_dXp, W, dL_dZ, offsets, groups=1, dL_dZ_last=None) -> None:
    """dL_dXp (C, Hp, Wp, M), batch last, += the gradient of the windows, dL/dwindows =
    Wᵀ·dL/dZ as one product (dL/dZ (M, K, Ho, Wo) by filter, batch last: K × Ho·Wo·M), sent
    back offset by offset. With the images last, each offset's slice of dL/dXp and of
    dL/dwindows is made of runs of Wo·M numbers, not of Wo: the adds go at the speed of
    memory, where rows of a few numbers went at that of the calls. ``dL_dZ_last``: that
    batch-last dL/dZ, when the caller has it already."""
    K, _, kh, kw = W.shape
    M, _, Ho, Wo = dL_dZ.shape
    C = dL_dXp.shape[0]
    dL_dZ_by_filter = dL_dZ.transpose(1, 2, 3, 0).reshape(K, -1) if dL_dZ_last is None else dL_dZ_last
    if groups == 1:
        dL_dwindows = W.reshape(K, -1).T @ dL_dZ_by_filter
    else:
        dL_dwindows = _by_group(W, groups).transpose(0, 2, 1) @ dL_dZ_by_filter.reshape(groups, K // groups, -1)
    dL_dwindows = dL_dwindows.reshape(C, kh, kw, Ho, Wo, M)
    for i, j, rows, cols in offsets:
        dL_dXp[:, rows, cols] += dL_dwindows[:, i, j]


def _conv_backward_chunks(dL_dZ, cache: ConvCache, chunk, need_dL_dX, send_chunk):
    """dL/dX (or None) and dL/dW of a large batch, ``chunk`` images at a time: each chunk's
    windows copied again, dL/dW the sum of the chunks' products, dL/dX each chunk's
    dL/dwindows = Wᵀ·dL/dZ sent back offset by offset, ``send_chunk`` images at a time (all
    at once when None)."""
    X_padded, W, stride, padding, _, dilation, groups, _ = cache
    M = X_padded.shape[0]
    K, _, kh, kw = W.shape
    _, _, Ho, Wo = dL_dZ.shape
    offsets = _offsets((kh, kw), (Ho, Wo), stride, dilation)
    dL_dW = np.zeros((K, W[0].size), float_type(W, dL_dZ))
    for images in _image_slices(M, chunk):
        windows = _windows(X_padded[images], kh, kw, Ho, Wo, stride, dilation)
        dL_dZ_by_filter = dL_dZ[images].transpose(1, 0, 2, 3).reshape(K, -1)
        dL_dW += _weight_gradient(dL_dZ_by_filter, windows, W, groups)
    dL_dXp = _padded_gradient(dL_dZ, W, X_padded.shape, offsets, groups, send_chunk) if need_dL_dX else None
    dL_dX = _unpad(dL_dXp, padding) if need_dL_dX else None
    return dL_dX, dL_dW.reshape(W.shape)


def padded_input_gradient(dL_dZ, cache: ConvCache) -> np.ndarray:
    """∂L/∂pad(X): what the backward pass sends to every cell of the padded input, its
    border included (the part dL/dX drops). (M, C, H + top + bottom, W + left + right)."""
    no_padding = cache._replace(padding=(0, 0))
    return conv2d_backward(dL_dZ, no_padding)[0]


# -- transposed convolution: Z = conv_transpose(X, W) + B -----------------------------------
#
# PyTorch's ConvTranspose2d: each input cell scatters its value times the whole kernel onto
# the output, ``stride`` cells apart, the taps ``dilation`` apart; ``padding`` then crops
# that many rows and columns off every side, and ``output_padding`` gives back rows and
# columns at the bottom and right. It is the convolution's dL/dX with X in the place of
# dL/dZ, so it goes through the same send-back; its backward pass is a convolution.


class ConvTransposeCache(NamedTuple):
    X: np.ndarray  # (M, C, H, W)
    W: np.ndarray  # (C, K/G, kh, kw)
    stride: Pair
    padding: Pair
    output_padding: Pair
    dilation: Pair
    groups: int


def conv_transpose_size(size: int, window: int, stride: int, padding: int, output_padding: int, dilation: int) -> int:
    """The output's length along one axis: (size − 1)·stride − 2·padding + dilation·(window − 1)
    + output_padding + 1, as PyTorch's ConvTranspose2d."""
    return (size - 1) * stride - 2 * padding + dilation * (window - 1) + output_padding + 1


def conv_transpose2d_forward(X, W, B, stride: Pair = (1, 1), padding: Pair = (0, 0), output_padding: Pair = (0, 0),
                             dilation: Pair = (1, 1), groups: int = 1):  # fmt: skip
    """Zfull[m, g·K/G + k, h*sh + i*dh, w*sw + j*dw] += X[m,c,h,w] · W[c,k,i,j] for every c of
    group g, then Z = Zfull without ``padding`` rows and columns on each side (and with
    ``output_padding`` rows and columns more at the bottom and right), + B[k].

    X (M, C, H, W), W (C, K/G, kh, kw), B (K,) or None -> Z (M, K, Ho, Wo), ConvTransposeCache;
    Ho = (H − 1)·sh − 2·ph + dh·(kh − 1) + oh + 1.
    """
    M, C, H, Wd = X.shape
    _, K_per_group, kh, kw = W.shape
    full = _full_size((H, Wd), (kh, kw), stride, output_padding, dilation)
    offsets = _offsets((kh, kw), (H, Wd), stride, dilation)
    chunk = _chunk(M, K_per_group * groups, kh, kw, H, Wd)  # dL/dwindows' size, as the conv's windows
    Z_full = _padded_gradient(X, W, (M, K_per_group * groups, *full), offsets, groups, chunk)
    Z = _unpad(Z_full, padding)
    if B is not None:
        Z += B[:, None, None]
    return Z, ConvTransposeCache(X, W, stride, padding, output_padding, dilation, groups)


def _full_size(size: Pair, window: Pair, stride: Pair, output_padding: Pair, dilation: Pair) -> Pair:
    """The scattered output before the padding is cropped: (rows, cols)."""
    return tuple(conv_transpose_size(n, k, s, 0, o, d)
                 for n, k, s, o, d in zip(size, window, stride, output_padding, dilation))  # fmt: skip


def conv_transpose2d_backward(dL_dZ, cache: ConvTransposeCache, need_dL_dX=True):
    """dL/dX, dL/dW, dL/dB from dL/dZ (M, K, Ho, Wo): the scatter's adjoint is a convolution.

    dL/dX[m,c,h,w] = Σ_k,i,j W[c,k,i,j] · dL/dZfull[m, g·K/G + k, h*sh + i*dh, w*sw + j*dw]
                     (= conv(dL/dZ, W) on dL/dZ inside the cropped padding's zeros)
    dL/dW[c,k,i,j] = Σ_m,h,w X[m,c,h,w] · dL/dZfull[m, g·K/G + k, h*sh + i*dh, w*sw + j*dw]
    dL/dB[k]       = Σ_m,h,w dL/dZ[m,k,h,w]
    Returns dL_dX (M, C, H, W) (None unless ``need_dL_dX``), dL_dW (C, K/G, kh, kw), dL_dB (K,).
    """
    X, W, stride, padding, output_padding, dilation, groups = cache
    M, C, H, Wd = X.shape
    kh, kw = W.shape[2:]
    # dL/dZfull: dL/dZ with the cropped rows and columns back as zeros (they reached no
    # output), and only the rows and columns some window reaches.
    reach = _full_size((H, Wd), (kh, kw), stride, (0, 0), dilation)
    dL_dZ_full = _pad(dL_dZ, padding)[:, :, : reach[0], : reach[1]]
    if dL_dZ_full.shape[2:] != reach:  # output_padding past the padding: zeros below and right
        grown = np.zeros((*dL_dZ_full.shape[:2], *reach))
        grown[:, :, : dL_dZ_full.shape[2], : dL_dZ_full.shape[3]] = dL_dZ_full
        dL_dZ_full = grown
    # As a convolution of dL/dZfull by the C "filters" W: its windows meet X's cells.
    dL_dX, conv_cache = conv2d_forward(dL_dZ_full, W, None, stride, (0, 0), dilation, groups)
    dL_dW = conv2d_backward(X, conv_cache, need_dL_dX=False)[1]
    return (dL_dX if need_dL_dX else None), dL_dW, dL_dZ.sum(axis=(0, 2, 3))


# -- activations: A = f(Z), element-wise (softmax: over each image's units) -------------------


def relu_forward(Z, out=None):
    """A = max(Z, 0); written into ``out`` when given (Z itself, where the caller may)."""
    return np.maximum(Z, 0.0, out=out)


def relu_mask(Z):
    """Where ReLU passes its gradient: Z > 0, as booleans (an eighth of dA/dZ's memory)."""
    return Z > 0


def relu_grad(Z):
    """dA/dZ: 1 where Z > 0, else 0 (ReLU'(0) = 0, as in PyTorch)."""
    return relu_mask(Z).astype(float_type(Z))


def leaky_relu_forward(Z, alpha):
    """A = Z where Z > 0, alpha·Z elsewhere."""
    return np.where(Z > 0, Z, alpha * Z)


def leaky_relu_grad(Z, alpha):
    """dA/dZ: 1 where Z > 0, else alpha (at 0 too, as in PyTorch)."""
    return np.where(Z > 0, 1.0, alpha)


def tanh_forward(Z):
    return np.tanh(Z)


def tanh_grad(A):
    """dA/dZ = 1 − A², from A = tanh(Z)."""
    return 1.0 - A * A


def sigmoid(Z):
    """A = 1 / (1 + exp(−Z)), computed without overflow for any finite Z."""
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(Z):
    """dA/dZ = A·(1 − A) = σ(Z)·σ(−Z)."""
    return sigmoid(Z) * sigmoid(-Z)


def softmax(Z):
    """A[m,i] = exp(Z[m,i]) / Σ_j exp(Z[m,j]) over each image's units; Z (M, n), shifted by
    its largest entry so that exp never overflows."""
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_jacobian(A):
    """dA/dZ per image: diag(A) − A·Aᵀ, (M, n) -> (M, n, n); entry [m,i,j] = dA_i/dZ_j."""
    return A[:, :, None] * (np.eye(A.shape[1], dtype=float_type(A)) - A[:, None, :])


def softmax_backward(dL_dA, A):
    """dL/dZ = Jacobianᵀ·dL/dA = A ⊙ (dL/dA − Σ_j dL/dA_j·A_j), per image."""
    return A * (dL_dA - np.sum(dL_dA * A, axis=1, keepdims=True))


def elu_forward(Z, alpha):
    """A = Z where Z > 0, alpha·(exp(Z) − 1) elsewhere."""
    return np.where(Z > 0, Z, alpha * np.expm1(np.minimum(Z, 0.0)))


def elu_grad(Z, alpha):
    """dA/dZ: 1 where Z > 0, alpha·exp(Z) elsewhere (at 0 too, as PyTorch)."""
    return np.where(Z > 0, 1.0, alpha * np.exp(np.minimum(Z, 0.0)))


#: erf element by element: numpy has none, and math.erf is exact to the last digit.
_erf = np.frompyfunc(math.erf, 1, 1)


def normal_cdf(Z):
    """Φ(Z) = (1 + erf(Z/√2))/2, the standard normal's distribution function."""
    erf = np.asarray(_erf(np.asarray(Z, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64)
    return 0.5 * (1.0 + erf)


def normal_pdf(Z):
    """φ(Z) = exp(−Z²/2)/√(2π)."""
    return np.exp(-0.5 * Z * Z) / math.sqrt(2.0 * math.pi)


def gelu_forward(Z):
    """A = Z·Φ(Z), the erf form (PyTorch's default approximate='none')."""
    return Z * normal_cdf(Z)


def gelu_grad(Z):
    """dA/dZ = Φ(Z) + Z·φ(Z)."""
    return normal_cdf(Z) + Z * normal_pdf(Z)


def gelu_tanh_forward(Z):
    """The tanh approximation: A = Z/2·(1 + tanh(√(2/π)·(Z + 0.044715·Z³)))."""
    return 0.5 * Z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (Z + 0.044715 * Z**3)))


def gelu_tanh_grad(Z):
    """dA/dZ of the tanh approximation."""
    k = math.sqrt(2.0 / math.pi)
    t = np.tanh(k * (Z + 0.044715 * Z**3))
    return 0.5 * (1.0 + t) + 0.5 * Z * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * Z * Z)


def silu_forward(Z):
    """A = Z·σ(Z)."""
    return Z * sigmoid(Z)


def silu_grad(Z):
    """dA/dZ = σ(Z)·(1 + Z·(1 − σ(Z)))."""
    s = sigmoid(Z)
    return s * (1.0 + Z * sigmoid(-Z))


def softplus_forward(Z, beta=1.0, threshold=20.0):
    """A = log(1 + exp(beta·Z))/beta, and Z itself where beta·Z > threshold (as PyTorch)."""
    bz = beta * Z
    return np.where(bz > threshold, Z, np.logaddexp(0.0, bz) / beta)


def softplus_grad(Z, beta=1.0, threshold=20.0):
    """dA/dZ = σ(beta·Z), and 1 where beta·Z > threshold."""
    bz = beta * Z
    return np.where(bz > threshold, 1.0, sigmoid(bz))


def log_softmax_jacobian(A):
    """dA/dZ of A = log softmax(Z), per image: δij − softmax(Z)[j] = δij − exp(A[j]).
    (M, n) -> (M, n, n); entry [m,i,j] = dA_i/dZ_j."""
    return np.eye(A.shape[1]) - np.exp(A)[:, None, :]


def log_softmax_backward(dL_dA, A):
    """dL/dZ = Jacobianᵀ·dL/dA = dL/dA − exp(A)·Σ_i dL/dA_i, per image."""
    return dL_dA - np.exp(A) * np.sum(dL_dA, axis=1, keepdims=True)


# -- pooling: P = MaxPool(A) or AvgPool(A) ---------------------------------------------------

#: The padding of a window's four sides: (top, bottom, left, right), as ``sides`` gives them.
Sides = tuple[int, int, int, int]


def pool_output_size(size: int, window: int, stride: int, before: int = 0, after: int = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """How many windows a pooling takes along ``size`` cells padded by ``before`` and
    ``after``, as PyTorch counts them: a window spans dilation·(window − 1) + 1 cells; in
    ceil mode a last, partial window is taken too when it starts inside the input or the
    padding before it."""  # fmt: skip
    room = size + before + after - dilation * (window - 1) - 1
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1  # it would start in the padding after the input
    return out


def pool_output_shape(shape, size: Pair, stride: Pair, padding=(0, 0), dilation: Pair = (1, 1),
                      ceil_mode: bool = False) -> tuple[int, ...]:
    M, C, H, W = shape
    top, bottom, left, right = sides(padding)
    return (M, C, pool_output_size(H, size[0], stride[0], top, bottom, dilation[0], ceil_mode),
            pool_output_size(W, size[1], stride[1], left, right, dilation[1], ceil_mode))  # fmt: skip


def _frame(shape, out, size: Pair, stride: Pair, padding, dilation: Pair) -> Sides:
    """The sides of the frame every window lies in: the padding, with the bottom and the right
    grown where a ceil-mode window runs past it (its cells there are never counted)."""
    H, W = shape[2:]
    top, bottom, left, right = sides(padding)
    rows = (out[0] - 1) * stride[0] + dilation[0] * (size[0] - 1) + 1
    cols = (out[1] - 1) * stride[1] + dilation[1] * (size[1] - 1) + 1
    return (top, max(bottom, rows - top - H), left, max(right, cols - left - W))


class PoolCache(NamedTuple):
    input_shape: tuple  # (M, C, H, W), before padding
    winner: np.ndarray | None  # max-pool: (M, C, Hp, Wp) the offset i*pw + j that won
    size: Pair
    stride: Pair
    padding: Sides  # the frame: (top, bottom, left, right), see _frame
    dilation: Pair = (1, 1)
    divisor: np.ndarray | float | None = None  # avg-pool: what each window's sum is divided by


def maxpool_forward(A, size: Pair = (2, 2), stride: Pair = (2, 2), padding=(0, 0), dilation: Pair = (1, 1),
                    ceil_mode: bool = False):
    """P[m,c,h,w] = max_i,j Ap[m, c, h*sh + i*dh, w*sw + j*dw] over a size[0]×size[1] window
    (its taps ``dilation`` apart), Ap being A inside a border of −∞ (PyTorch's padding for
    max-pooling); ``padding`` a (rows, cols) pair or (top, bottom, left, right).

    A tie goes to the first maximum in row-major order: offsets are visited in that order
    and only a strictly larger value takes a window over. A (M, C, H, W) -> P (M, C, Hp, Wp),
    PoolCache with the winning offset of each window.
    """
    out = pool_output_shape(A.shape, size, stride, padding, dilation, ceil_mode)
    if _tiles(size, stride, sides(padding), dilation) and out[2:] == (A.shape[2] // size[0], A.shape[3] // size[1]):
        return _maxpool_forward_tiles(A, size)
    frame = _frame(A.shape, out[2:], size, stride, padding, dilation)
    A_padded = _pad(A, frame, -np.inf)
    P = np.full(out, -np.inf, float_type(A))
    # The smallest integer type that holds every offset (one byte for pools up to 16×16).
    winner = np.zeros(out, dtype=np.min_scalar_type(size[0] * size[1] - 1))
    for i, j, rows, cols in _offsets(size, out[2:], stride, dilation):
        candidate = A_padded[:, :, rows, cols]
        larger = candidate > P
        P = np.where(larger, candidate, P)
        winner = np.where(larger, winner.dtype.type(i * size[1] + j), winner)
    return P, PoolCache(A.shape, winner, size, stride, frame, dilation)


def _tiles(size: Pair, stride: Pair, frame: Sides, dilation: Pair = (1, 1)) -> bool:
    """Whether the pool's windows tile the map: stride = size, no padding, no dilation."""
    return tuple(stride) == tuple(size) and not any(frame) and tuple(dilation) == (1, 1)


def _pool_chunks(shape) -> tuple[slice, ...]:
    """The images of A (M, C, H, W) in chunks of at most CHUNK_BYTES (one image at least):
    a large batch is pooled a chunk at a time, in cache and in little memory."""
    M, C, H, W = shape
    return _image_slices(M, max(1, CHUNK_BYTES // max(C * H * W * 8, 1)))


def _maxpool_forward_tiles(A, size: Pair):
    """maxpool_forward for windows that tile A, step for step the same: the offsets are
    visited in the same order, on a copy of A in which each offset's cells lie together
    (a chunk of images at a time)."""
    M, C, H, W = A.shape
    ph, pw = size
    Hp, Wp = H // ph, W // pw
    tiles = A[:, :, : Hp * ph, : Wp * pw].reshape(M, C, Hp, ph, Wp, pw)  # a view
    dtype = np.min_scalar_type(ph * pw - 1)
    chunks = _pool_chunks(A.shape)
    if len(chunks) == 1:
        P, winner = _max_of_tiles(tiles, dtype)
    else:
        P, winner = np.empty((M, C, Hp, Wp), float_type(A)), np.empty((M, C, Hp, Wp), dtype=dtype)
        for images in chunks:
            P[images], winner[images] = _max_of_tiles(tiles[images], dtype)
    return P, PoolCache(A.shape, winner, size, size, (0, 0, 0, 0))


def _max_of_tiles(tiles, dtype):
    """(P, winner) of tiles (M, C, Hp, ph, Wp, pw): the offset loop on a window-major copy;
    for a small map, the first maximum of each window by one argmax (fewer calls, the same
    values: NaN, which the loop never lets win, taken as −∞)."""
    M, C, Hp, ph, Wp, pw = tiles.shape
    if tiles.size <= SMALL_POOL_CELLS:
        cells = np.empty((M, C, Hp, Wp, ph, pw), float_type(tiles))
        cells[...] = tiles.transpose(0, 1, 2, 4, 3, 5)
        cells = cells.reshape(-1, ph * pw)
        np.copyto(cells, -np.inf, where=cells != cells)
        winner = cells.argmax(axis=1)
        P = cells[np.arange(len(winner)), winner]  # the winner itself: its sign of zero too
        return P.reshape(M, C, Hp, Wp), winner.astype(dtype).reshape(M, C, Hp, Wp)
    candidates = np.empty((ph, pw, M, C, Hp, Wp), float_type(tiles))  # float64 for ints, as the loop compares them
    candidates[...] = tiles.transpose(3, 5, 0, 1, 2, 4)
    candidates = candidates.reshape(ph * pw, M, C, Hp, Wp)
    # The loop's first step: the first cell takes its window from −∞ unless it is NaN.
    P = np.fmax(candidates[0], -np.inf)
    winner = np.zeros(P.shape, dtype=dtype)
    for offset in range(1, ph * pw):
        larger = candidates[offset] > P
        P = np.where(larger, candidates[offset], P)
        # The last offset that was larger is the largest one, offsets coming in order.
        np.maximum(winner, larger * winner.dtype.type(offset), out=winner)
    return P, winner


@lru_cache(maxsize=64)
def _tile_cells(M: int, C: int, H: int, W: int, size: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(corner, within): the flat index in (M, C, H, W) of each tiling window's top-left
    cell, (M, C, Hp, Wp), and how far past it each offset i*pw + j lies (i*W + j). Kept once
    made, read-only: training asks for the same ones at every step."""
    ph, pw = size
    Hp, Wp = H // ph, W // pw
    corner = (np.arange(M * C)[:, None, None] * (H * W) + (np.arange(Hp) * (ph * W))[:, None]
              + np.arange(Wp) * pw).reshape(M, C, Hp, Wp)  # fmt: skip
    within = (np.arange(ph)[:, None] * W + np.arange(pw)).ravel()
    corner.flags.writeable = within.flags.writeable = False
    return corner, within


def maxpool_backward(dL_dP, cache: PoolCache):
    """dL/dA: each dL/dP entry goes to the cell that won its window, 0 elsewhere.

    Where windows overlap, a cell that wins several of them receives the sum.
    dL_dP (M, C, Hp, Wp) -> dL_dA (M, C, H, W).
    """
    shape, winner, size, stride, frame, dilation, _ = cache
    M, C, H, W = shape
    if _tiles(size, stride, frame, dilation):
        # Each cell is in one window at most: one scatter of dL/dP to the winners, a chunk
        # of images at a time. The loop adds every entry to a 0.0, which turns −0.0 into
        # +0.0; so does the `+ 0.0`.
        dL_dA = np.zeros(shape, float_type(dL_dP))
        for images in _pool_chunks(shape):
            corner, within = _tile_cells(images.stop - images.start, C, H, W, size)
            cells = within.take(winner[images])  # twice as fast as within[winner[images]]
            cells += corner
            dL_dA[images].reshape(-1)[cells] = dL_dP[images] + 0.0
        return dL_dA
    top, bottom, left, right = frame
    dL_dAp = np.zeros((M, C, H + top + bottom, W + left + right), float_type(dL_dP))
    for i, j, rows, cols in _offsets(size, dL_dP.shape[2:], stride, dilation):
        dL_dAp[:, :, rows, cols] += np.where(winner == i * size[1] + j, dL_dP, 0.0)
    return _unpad(dL_dAp, frame)


def pool_wins(cache: PoolCache):
    """How many windows each input cell won (0 for the cells that won none), A's shape."""
    return maxpool_backward(np.ones(cache.winner.shape), cache)


def avgpool_divisor(shape, out, size: Pair, stride: Pair, padding, count_include_pad: bool = True):
    """What each window's sum is divided by, as PyTorch's avg_pool2d divides it: its cells
    inside the input and the padding (``count_include_pad``) or inside the input only; never
    the cells a ceil-mode window has past the padding. The number size[0]·size[1] where every
    window has it, else an (Hp, Wp) array."""
    H, W = shape[2:]
    top, bottom, left, right = sides(padding)

    def counts(n_out, k, s, before, after, n):
        start = np.arange(n_out) * s - before
        end = np.minimum(start + k, n + after)
        return (end - start) if count_include_pad else (np.minimum(end, n) - np.maximum(start, 0))

    rows = counts(out[0], size[0], stride[0], top, bottom, H)
    cols = counts(out[1], size[1], stride[1], left, right, W)
    n = size[0] * size[1]
    if np.all(rows == size[0]) and np.all(cols == size[1]):
        return n
    return (rows[:, None] * cols[None, :]).astype(np.float64)


def avgpool_forward(A, size: Pair = (2, 2), stride: Pair = (2, 2), padding=(0, 0), ceil_mode: bool = False,
                    count_include_pad: bool = True):
    """P[m,c,h,w] = Σ_i,j Ap[m, c, h*sh + i, w*sw + j] / divisor[h,w], Ap being A inside a
    border of zeros; the divisor is the window's size where the padding counts in the mean
    (PyTorch's count_include_pad), else its cells inside A (see avgpool_divisor).
    A (M, C, H, W) -> P (M, C, Hp, Wp), PoolCache."""
    out = pool_output_shape(A.shape, size, stride, padding, (1, 1), ceil_mode)
    frame = _frame(A.shape, out[2:], size, stride, padding, (1, 1))
    A_padded = _pad(A, frame)
    P = np.zeros(out, float_type(A))
    for _, _, rows, cols in _offsets(size, out[2:], stride):
        P += A_padded[:, :, rows, cols]
    divisor = avgpool_divisor(A.shape, out[2:], size, stride, padding, count_include_pad)
    return P / divisor, PoolCache(A.shape, None, size, stride, frame, (1, 1), divisor)


def avgpool_backward(dL_dP, cache: PoolCache):
    """dL/dA: each dL/dP entry spread evenly, 1/divisor of it to every cell of its window
    (1/(ph·pw) where the padding counts); the padding's shares are dropped."""
    shape, _, size, stride, frame, dilation, divisor = cache
    M, C, H, W = shape
    share = dL_dP / (size[0] * size[1] if divisor is None else divisor)
    top, bottom, left, right = frame
    dL_dAp = np.zeros((M, C, H + top + bottom, W + left + right), float_type(dL_dP))
    for _, _, rows, cols in _offsets(size, dL_dP.shape[2:], stride, dilation):
        dL_dAp[:, :, rows, cols] += share
    return _unpad(dL_dAp, frame)


def global_avgpool_forward(A):
    """P[m,c,0,0] = mean_h,w A[m,c,h,w]: each map's mean. (M, C, H, W) -> (M, C, 1, 1)."""
    return A.mean(axis=(2, 3), keepdims=True)


def global_avgpool_backward(dL_dP, shape):
    """dL/dA: each map's dL/dP spread evenly, 1/(H·W) of it to every cell. -> ``shape``."""
    H, W = shape[2:]
    return np.broadcast_to(dL_dP / (H * W), shape).copy()


def adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each of ``out`` adaptive windows along ``size`` cells, as PyTorch's
    AdaptiveAvgPool2d takes them: start = floor(i·size/out), end = ceil((i + 1)·size/out)."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i holds 1/(its window's length) over window i, 0 elsewhere."""
    start, end = adaptive_windows(size, out)
    cells = np.arange(size)
    inside = (cells >= start[:, None]) & (cells < end[:, None])
    return inside / (end - start)[:, None]


def adaptive_avgpool_forward(A, out: Pair):
    """P[m,c,i,j] = mean of A[m, c, rows_i, cols_j] over adaptive windows (see
    adaptive_windows): rows·A·colsᵀ with each window's 1/length. (M, C, H, W) -> (M, C, *out)."""
    H, W = A.shape[2:]
    return _adaptive_matrix(H, out[0]) @ A @ _adaptive_matrix(W, out[1]).T


def adaptive_avgpool_backward(dL_dP, shape):
    """dL/dA: each dL/dP entry spread evenly over its window, windows that overlap adding up.
    (M, C, oh, ow) -> ``shape`` (M, C, H, W)."""
    H, W = shape[2:]
    oh, ow = dL_dP.shape[2:]
    return _adaptive_matrix(H, oh).T @ dL_dP @ _adaptive_matrix(W, ow)


# -- flatten: F = flatten(P) ---------------------------------------------------------------


def flatten_forward(P):
    """F[m] = P[m] in row-major order: channel, then row, then column. (M, C, H, W) -> (M, n)."""
    return P.reshape(P.shape[0], -1)


def flatten_backward(dL_dF, shape):
    """dL/dP = dL/dF put back in P's shape. (M, n) -> (M, C, H, W)."""
    return dL_dF.reshape(shape)


# -- fully connected: Z = F·W + B ------------------------------------------------------------


def dense_forward(F, W, B):
    """Z = F·W + B. F (M, n_in), W (n_in, n_out), B (n_out,) -> Z (M, n_out).

    One output is a dot product per image (a matrix-vector product), as the seeds write
    Z2 = F·W2 + B2."""
    if W.shape[1] == 1:
        return (F @ W[:, 0] + B[0])[:, None]
    return F @ W + B


def dense_backward(dL_dZ, F, W, need_dL_dF=True):
    """dL/dF = dL/dZ·Wᵀ, dL/dW = Fᵀ·dL/dZ, dL/dB = Σ_m dL/dZ.

    dL_dZ (M, n_out), F (M, n_in), W (n_in, n_out) -> dL_dF (M, n_in) (None unless
    ``need_dL_dF``), dL_dW (n_in, n_out), dL_dB (n_out,).
    """
    if W.shape[1] == 1:
        dL_dW = (F.T @ dL_dZ[:, 0])[:, None]
        # One product per entry, as the reference's outer product: 0·(−w) stays −0.0 (a
        # matrix product with one term would add it to +0.0).
        dL_dF = np.outer(dL_dZ[:, 0], W[:, 0]) if need_dL_dF else None
    else:
        dL_dW = F.T @ dL_dZ
        dL_dF = dL_dZ @ W.T if need_dL_dF else None
    return dL_dF, dL_dW, dL_dZ.sum(axis=0)


# -- losses: the mean, as PyTorch's reduction="mean" computes it, or the sum ("sum") ---------


def bce_loss(Z, Y, reduction: str = "mean"):
    """L = mean over every entry of −Y·log(A) − (1 − Y)·log(1 − A), A = σ(Z), written from Z:

        max(Z, 0) − Z·Y + log(1 + exp(−|Z|))

    which never takes the log of 0, so a saturated sigmoid still gives a finite loss.
    Each entry's share is divided by the count before the sum, which cannot overflow where
    the mean itself fits in float64. ``reduction`` "sum": their sum."""
    losses = np.maximum(Z, 0.0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))
    return np.sum(losses / Z.size) if reduction == "mean" else np.sum(losses)


def bce_grad_A(Z, Y, reduction: str = "mean"):
    """dL/dA = (−Y/A + (1 − Y)/(1 − A)) / N over N entries, with 1 − A taken as σ(−Z) so it
    keeps its digits when A rounds to 1; a term whose label weight is 0 is 0."""
    A, one_minus_A = sigmoid(Z), sigmoid(-Z)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.where(Y != 0, -Y / A, 0.0)
        negative = np.where(Y != 1, (1.0 - Y) / one_minus_A, 0.0)
    return (positive + negative) / Z.size if reduction == "mean" else positive + negative


def bce_sigmoid_backward(A, Y, reduction: str = "mean"):
    """dL/dZ = dL/dA · dA/dZ = (A − Y) / N: the two factors' A·(1 − A) cancel."""
    return (A - Y) / A.size if reduction == "mean" else A - Y


def log_softmax(Z):
    """log A = Z − log Σ exp(Z), per image, never the log of 0."""
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy_loss(Z, Y, reduction: str = "mean"):
    """L = mean over the M images of −Σ_i Y[m,i]·log A[m,i], A = softmax(Z), from Z (M, n)
    and Y (M, n) probability rows (one-hot for a class index). A class of weight 0 adds
    nothing, even where its log A is very negative."""
    terms = np.where(Y != 0, -Y * log_softmax(Z), 0.0)
    return np.sum(terms / Z.shape[0]) if reduction == "mean" else np.sum(terms)


def cross_entropy_grad_A(A, Y, reduction: str = "mean"):
    """dL/dA = −Y / (M·A) (−Y/A for "sum"); a class of weight 0 gets 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(Y != 0, -Y / A, 0.0)
    return terms / A.shape[0] if reduction == "mean" else terms


def cross_entropy_softmax_backward(A, Y, reduction: str = "mean"):
    """dL/dZ = Jacobianᵀ·dL/dA = (A − Y) / M: the softmax's Jacobian and −Y/A cancel to it,
    for any Y whose rows sum to 1."""
    return (A - Y) / A.shape[0] if reduction == "mean" else A - Y


def mse_loss(A, Y, reduction: str = "mean", half: bool = False):
    """L = mean over every entry of (A − Y)² (``reduction`` "sum": their sum; ``half``:
    of ½·(A − Y)², as hand derivations write it)."""
    difference = A - Y
    squares = difference * difference
    if half:
        squares = 0.5 * squares
    return np.sum(squares / A.size) if reduction == "mean" else np.sum(squares)


def mse_grad(A, Y, reduction: str = "mean", half: bool = False):
    """dL/dA = 2·(A − Y) / N over N entries (without the /N for "sum", the 2 for ``half``)."""
    difference = A - Y if half else 2.0 * (A - Y)
    return difference / A.size if reduction == "mean" else difference


def nll_loss(A, Y, reduction: str = "mean"):
    """L = mean over the M images of −Σ_i Y[m,i]·A[m,i], A the log-probabilities (M, n), Y
    one-hot rows of the class indices (a class of weight 0 adds nothing)."""
    terms = np.where(Y != 0, -Y * A, 0.0)
    return np.sum(terms / A.shape[0]) if reduction == "mean" else np.sum(terms)


def nll_grad_A(A, Y, reduction: str = "mean"):
    """dL/dA = −Y / M (−Y for "sum")."""
    return -Y / A.shape[0] if reduction == "mean" else -Y + 0.0


def nll_log_softmax_backward(A, Y, reduction: str = "mean"):
    """dL/dZ = Jacobianᵀ·dL/dA = (exp(A) − Y)/M = (softmax(Z) − Y)/M, A = log softmax(Z)."""
    difference = np.exp(A) - Y
    return difference / A.shape[0] if reduction == "mean" else difference


# -- other conventions and the mistakes verify tries: new functions beside the defaults ---------


def relu_grad_inclusive(Z):
    """ReLU′ with ReLU′(0) taken as 1: 1 where Z ≥ 0, else 0. Same shape as Z."""
    return (Z >= 0).astype(np.float64)


def relu_mask_inclusive(Z):
    """Where ReLU′ is 1 when ReLU′(0) = 1: Z ≥ 0, as booleans (training's mask)."""
    return Z >= 0


def maxpool_backward_tied(dL_dP, A, cache: PoolCache, rule: str):
    """dL/dA where a window's maximum is tied: ``"all"`` gives each tied cell the whole
    dL/dP entry (as several course solutions do), ``"split"`` shares it equally among them.
    Untied windows give the same as maxpool_backward. A (M, C, H, W) is the pool's input.
    """
    _, _, size, stride, frame, dilation, _ = cache
    A_padded = _pad(A, frame, -np.inf)
    out = dL_dP.shape
    offsets = _offsets(size, out[2:], stride, dilation)
    P = np.full(out, -np.inf)
    for _, _, rows, cols in offsets:
        P = np.maximum(P, A_padded[:, :, rows, cols])
    ties = np.zeros(out)
    for _, _, rows, cols in offsets:
        ties += A_padded[:, :, rows, cols] == P
    share = dL_dP if rule == "all" else dL_dP / ties
    dL_dAp = np.zeros(A_padded.shape)
    for _, _, rows, cols in offsets:
        dL_dAp[:, :, rows, cols] += np.where(A_padded[:, :, rows, cols] == P, share, 0.0)
    return _unpad(dL_dAp, frame)


def flatten_channels_last_forward(P):
    """F[m] = P[m] channels last (as NHWC code flattens): row, then column, then channel.
    (M, C, H, W) -> (M, n)."""
    return P.transpose(0, 2, 3, 1).reshape(P.shape[0], -1)


def flatten_channels_last_backward(dL_dF, shape):
    """dL/dP from dL/dF flattened channels last. (M, n) -> (M, C, H, W)."""
    M, C, H, W = shape
    return dL_dF.reshape(M, H, W, C).transpose(0, 3, 1, 2)


def flatten_column_major_forward(P):
    """F[m] = P[m] in column-major (Fortran) order: the last axis changes slowest."""
    return np.stack([image.ravel(order="F") for image in P]) if len(P) else P.reshape(0, -1)


def flatten_column_major_backward(dL_dF, shape):
    """dL/dP from dL/dF flattened in column-major order."""
    return np.stack([row.reshape(shape[1:], order="F") for row in dL_dF])


# -- batch normalization: Z = γ·x̂ + β, x̂ = (X − μ)/√(σ² + ε) ----------------------------------
#
# Statistics per channel of maps (over the images, rows and columns) or per unit of vectors
# (over the images), as PyTorch's BatchNorm2d and BatchNorm1d. γ, β, μ, σ² are (C,).


def batchnorm_axes(X) -> tuple[int, ...]:
    """The axes a channel's statistics run over: (0,) for vectors (M, n), (0, 2, 3) for maps."""
    return (0,) if X.ndim == 2 else (0, 2, 3)


def per_channel(v, X):
    """A (C,) vector shaped to broadcast against X: (C,) for vectors, (1, C, 1, 1) for maps."""
    return v if X.ndim == 2 else v.reshape(1, -1, 1, 1)


def batch_count(X) -> int:
    """N, how many values each channel's statistics are taken over: M, or M·H·W."""
    return X.shape[0] if X.ndim == 2 else X.shape[0] * X.shape[2] * X.shape[3]


def batchnorm_statistics(X):
    """(μ, σ²) of the batch, per channel, σ² biased (divided by N): X (M, C, H, W) or (M, C) -> (C,), (C,)."""
    axes = batchnorm_axes(X)
    mu = X.mean(axis=axes)
    centred = X - per_channel(mu, X)
    return mu, (centred * centred).mean(axis=axes)


class BatchNormCache(NamedTuple):
    """What batch norm's backward pass reads: x̂, X − μ, 1/√(σ² + ε) (C,), and N."""

    xhat: np.ndarray
    centred: np.ndarray
    inv_std: np.ndarray
    N: int


def batchnorm_forward(X, gamma, beta, mean, var, eps):
    """Z = γ·x̂ + β with x̂ = (X − mean)/√(var + ε): the batch's μ and σ² in training, the
    running statistics in evaluation. X (M, C, H, W) or (M, C); gamma, beta, mean, var (C,)
    -> Z like X, BatchNormCache."""
    inv_std = 1.0 / np.sqrt(var + eps)
    centred = X - per_channel(mean, X)
    xhat = centred * per_channel(inv_std, X)
    Z = xhat * per_channel(gamma, X) + per_channel(beta, X)
    return Z, BatchNormCache(xhat, centred, inv_std, batch_count(X))


def batchnorm_param_backward(dL_dZ, cache: BatchNormCache):
    """dL/dγ = Σ dL/dZ·x̂, dL/dβ = Σ dL/dZ over a channel's N values: -> (C,), (C,)."""
    axes = batchnorm_axes(dL_dZ)
    return (dL_dZ * cache.xhat).sum(axis=axes), dL_dZ.sum(axis=axes)


def batchnorm_xhat_backward(dL_dZ, gamma):
    """dL/dx̂ = dL/dZ·γ: like dL_dZ."""
    return dL_dZ * per_channel(gamma, dL_dZ)


def batchnorm_var_backward(dL_dxhat, cache: BatchNormCache):
    """dL/dσ² = Σ dL/dx̂·(X − μ)·(−½)(σ² + ε)^(−3/2) over a channel: -> (C,)."""
    axes = batchnorm_axes(dL_dxhat)
    return (dL_dxhat * cache.centred).sum(axis=axes) * (-0.5 * cache.inv_std**3)


def batchnorm_mean_backward(dL_dxhat, dL_dvar, cache: BatchNormCache):
    """dL/dμ = Σ dL/dx̂·(−1/√(σ² + ε)) + dL/dσ²·Σ −2(X − μ)/N: -> (C,). (The second sum is
    0 up to rounding: the derivation writes it, and so does the trace.)"""
    axes = batchnorm_axes(dL_dxhat)
    return -dL_dxhat.sum(axis=axes) * cache.inv_std + dL_dvar * (-2.0 * cache.centred).sum(axis=axes) / cache.N


def batchnorm_input_backward(dL_dxhat, dL_dvar, dL_dmean, cache: BatchNormCache):
    """dL/dX = dL/dx̂/√(σ² + ε) + dL/dσ²·2(X − μ)/N + dL/dμ/N: like X. With dL/dσ² and
    dL/dμ zero it is evaluation's dL/dx̂/√(var + ε)."""
    X = dL_dxhat
    return (dL_dxhat * per_channel(cache.inv_std, X) + per_channel(dL_dvar, X) * 2.0 * cache.centred / cache.N
            + per_channel(dL_dmean, X) / cache.N)  # fmt: skip


def batchnorm_backward_compact(dL_dZ, gamma, cache: BatchNormCache):
    """What the three steps come to in training: dL/dX = (γ/(N·√(σ² + ε)))·(N·dL/dZ −
    Σ dL/dZ − x̂·Σ dL/dZ·x̂). Like dL_dZ."""
    dL_dgamma, dL_dbeta = batchnorm_param_backward(dL_dZ, cache)
    X = dL_dZ
    scale = per_channel(gamma * cache.inv_std / cache.N, X)
    return scale * (cache.N * dL_dZ - per_channel(dL_dbeta, X) - cache.xhat * per_channel(dL_dgamma, X))


def running_statistics(mean, var, mu, sigmasq, N, momentum):
    """PyTorch's running statistics after a training pass: (1 − m)·mean + m·μ and
    (1 − m)·var + m·σ²·N/(N − 1) (the unbiased variance). -> (C,), (C,)."""
    return (1 - momentum) * mean + momentum * mu, (1 - momentum) * var + momentum * sigmasq * (N / (N - 1))


# -- dropout: D = X·mask/(1 − p) ----------------------------------------------------------------


def dropout_mask(seed: int, shape, p: float) -> np.ndarray:
    """A 0/1 mask drawn reproducibly from ``seed``: each unit kept (1) with probability 1 − p."""
    return (np.random.default_rng(seed).random(shape) >= p).astype(np.float64)


def dropout_forward(X, mask, p: float):
    """D = X·mask/(1 − p): the kept units scaled up, as PyTorch. X, mask like X -> D like X."""
    return X * (mask / (1.0 - p))


def dropout_backward(dL_dD, mask, p: float):
    """dL/dX = dL/dD·mask/(1 − p): like dL_dD."""
    return dL_dD * (mask / (1.0 - p))


# -- merges: S = X + Y (an add), C = [X, Y] (a concat along the channels) --------------------


def add_forward(x, others):
    """S = x + Σ others, elementwise: all of one shape, (M, C, H, W) or (M, n) -> the same."""
    total = x + others[0]
    for other in others[1:]:
        total += other
    return total


def add_backward(dL_dS, count: int):
    """dL/d(each operand) = dL/dS, unchanged: one array for the input and each of ``count``
    others, each like dL_dS (the same array: nothing writes to it)."""
    return (dL_dS,) * (1 + count)


def concat_forward(x, others):
    """C = [x, others…] along axis 1 (the channels of maps, the units of vectors), x first:
    (M, C1, H, W), (M, C2, H, W) … -> (M, C1 + C2 + …, H, W)."""
    return np.concatenate((x, *others), axis=1)


def concat_backward(dL_dC, sizes: tuple[int, ...]):
    """dL/d(each operand): dL_dC split along axis 1 into pieces of ``sizes`` channels (or
    units), in the operands' order; each a new array."""
    bounds = np.cumsum(sizes)[:-1]
    return tuple(piece.copy() for piece in np.split(dL_dC, bounds, axis=1))
