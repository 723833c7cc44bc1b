"""The network's operations as forward/backward pairs (numpy only).

Every function is pure: it returns new arrays and never writes into its arguments.
Shapes use M images, K filters, and the symbols of the derivation:

    X   (M, H, W)          W1 (K, kh, kw)   B1 (K,)
    Z1  (M, K, Ho, Wo)     A1 like Z1
    P1  (M, K, Hp, Wp)     F  (M, n) with n = K*Hp*Wp
    W2  (n,)               B2 ()            Z2, A2, Y  (M,)

The convolution and the pooling loop over the offsets of their window (kh*kw or pool*pool
steps), each step working on a whole strided slice of the batch at once. The backward pass
of each loops over the same offsets as its forward pass, so one reads against the other.

For a small batch the convolution takes a shortcut that gives the same values up to
float64 rounding: it copies, offset by offset, the slice of X each kernel weight meets
("im2col") and does the sum over the kernel as one matrix product, forward and back. That
saves most of the per-offset calls that dominate small arrays; above ``IM2COL_BYTES`` the
offset loop keeps the memory at the size of Z1 instead of kh*kw times the size of X.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: The largest copy of X's windows (kh*kw × M × Ho × Wo, float64) the convolution makes.
IM2COL_BYTES = 8 * 2**20


def output_size(size: int, window: int, stride: int) -> int:
    """How many positions a window of ``window`` cells takes along ``size`` cells."""
    return (size - window) // stride + 1


@lru_cache(maxsize=64)
def _offsets(rows: int, cols: int, out_rows: int, out_cols: int, stride: int):
    """(i, j, slice) for each window offset: the slice picks, for every output position
    (h, w), the input cell (h*stride + i, w*stride + j). Kept once made: training asks for
    the same offsets at every step."""
    return tuple(
        (i, j, (slice(i, i + stride * (out_rows - 1) + 1, stride),
                slice(j, j + stride * (out_cols - 1) + 1, stride)))
        for i in range(rows)
        for j in range(cols)
    )  # fmt: skip


# -- convolution: Z1 = conv(X, W1) + B1 --------------------------------------------------


class ConvCache(NamedTuple):
    X_padded: np.ndarray  # (M, H + 2p, W + 2p)
    W1: np.ndarray  # (K, kh, kw)
    stride: int
    padding: int
    windows: np.ndarray | None = None  # (kh*kw, M, Ho, Wo): see _windows; small batches only


def _windows(X_padded, kh, kw, Ho, Wo, stride):
    """windows[i*kw + j, m, h, w] = Xp[m, h*stride + i, w*stride + j], as a new
    (kh*kw, M, Ho, Wo) array: for each kernel offset, the slice of X it meets."""
    windows = np.empty((kh * kw, X_padded.shape[0], Ho, Wo))
    for i, j, window in _offsets(kh, kw, Ho, Wo, stride):
        windows[i * kw + j] = X_padded[:, window[0], window[1]]
    return windows


def conv2d_forward(X, W1, B1, stride=1, padding=0):
    """Z1[m,k,h,w] = B1[k] + sum_ij W1[k,i,j] * Xp[m, h*stride + i, w*stride + j].

    Cross-correlation (no kernel flip), as in PyTorch; Xp is X with ``padding`` zeros on
    every side. X (M, H, W), W1 (K, kh, kw), B1 (K,) -> Z1 (M, K, Ho, Wo), ConvCache.
    """
    # Without padding Xp is X itself: no copy of what may be a whole dataset.
    X_padded = np.pad(X, ((0, 0), (padding, padding), (padding, padding))) if padding else X
    M = X.shape[0]
    K, kh, kw = W1.shape
    Ho = output_size(X_padded.shape[1], kh, stride)
    Wo = output_size(X_padded.shape[2], kw, stride)
    if M * Ho * Wo * kh * kw * 8 <= IM2COL_BYTES:
        windows = _windows(X_padded, kh, kw, Ho, Wo, stride)
        Z1_by_filter = (W1.reshape(K, kh * kw) @ windows.reshape(kh * kw, -1)).reshape(K, M, Ho, Wo)
        Z1 = Z1_by_filter.transpose(1, 0, 2, 3) + B1[:, None, None]
        return Z1, ConvCache(X_padded, W1, stride, padding, windows)
    Z1 = np.empty((M, K, Ho, Wo))
    Z1[...] = B1[:, None, None]
    weighted = np.empty_like(Z1)  # one buffer for every offset's products, not one each
    for i, j, window in _offsets(kh, kw, Ho, Wo, stride):
        # Each kernel weight W1[k,i,j] meets the same shifted slice of every image.
        X_slice = X_padded[:, None, window[0], window[1]]
        np.multiply(W1[None, :, i, j, None, None], X_slice, out=weighted)
        Z1 += weighted
    return Z1, ConvCache(X_padded, W1, stride, padding)


def conv2d_backward(dL_dZ1, cache: ConvCache, need_dL_dX=True):
    """dL/dX, dL/dW1, dL/dB1 from dL/dZ1 (M, K, Ho, Wo).

    dL/dW1[k,i,j] = sum_mhw Xp[m, h*s + i, w*s + j] * dL/dZ1[m,k,h,w]   (= conv(X, dL/dZ1))
    dL/dB1[k]     = sum_mhw dL/dZ1[m,k,h,w]
    dL/dX         = every dL/dZ1 entry sent back to the cells its window covered, times the
                    weight that met them; the padding's share is cut off at the end.
    Returns dL_dX (M, H, W), dL_dW1 (K, kh, kw), dL_dB1 (K,). Training needs no dL/dX:
    with ``need_dL_dX=False`` it is skipped and None is returned in its place.
    """
    X_padded, W1, stride, padding, windows = cache
    K, kh, kw = W1.shape
    _, _, Ho, Wo = dL_dZ1.shape
    if windows is not None:  # the small-batch shortcut: one product over every position
        dL_dZ1_by_filter = dL_dZ1.transpose(1, 0, 2, 3).reshape(K, -1)
        dL_dW1 = (dL_dZ1_by_filter @ windows.reshape(kh * kw, -1).T).reshape(K, kh, kw)
    else:
        dL_dW1 = np.empty(W1.shape)  # float64 whatever W1's dtype: int would truncate it
        for i, j, window in _offsets(kh, kw, Ho, Wo, stride):
            X_slice = X_padded[:, window[0], window[1]]
            dL_dW1[:, i, j] = np.einsum("mkhw,mhw->k", dL_dZ1, X_slice)
    dL_dB1 = dL_dZ1.sum(axis=(0, 2, 3))
    if not need_dL_dX:
        return None, dL_dW1, dL_dB1

    dL_dXp = np.zeros(X_padded.shape)  # float64, as dL_dW1
    for i, j, window in _offsets(kh, kw, Ho, Wo, stride):
        dL_dXp[:, window[0], window[1]] += np.einsum("mkhw,k->mhw", dL_dZ1, W1[:, i, j])
    H, W = X_padded.shape[1] - 2 * padding, X_padded.shape[2] - 2 * padding
    dL_dX = dL_dXp[:, padding : padding + H, padding : padding + W]
    return dL_dX, dL_dW1, dL_dB1


# -- ReLU: A1 = max(Z1, 0) ---------------------------------------------------------------


def relu_forward(Z1):
    """A1 = max(Z1, 0), element-wise."""
    return np.maximum(Z1, 0.0)


def relu_mask(Z1):
    """Where ReLU passes its gradient: Z1 > 0, as booleans (an eighth of dA1/dZ1's memory)."""
    return Z1 > 0


def relu_grad(Z1):
    """dA1/dZ1: 1 where Z1 > 0, else 0 (ReLU'(0) = 0, as in PyTorch)."""
    return relu_mask(Z1).astype(np.float64)


# -- max pooling: P1 = MaxPool(A1) -------------------------------------------------------


class PoolCache(NamedTuple):
    A1_shape: tuple
    winner: np.ndarray  # (M, K, Hp, Wp) small ints: the offset i*pool + j that won each window
    pool: int
    stride: int


def maxpool_forward(A1, pool=2, stride=2):
    """P1[m,k,h,w] = max_ij A1[m,k, h*stride + i, w*stride + j] over a pool x pool window.

    A tie goes to the first maximum in row-major order: offsets are visited in that order
    and only a strictly larger value takes a window over. A1 (M, K, H1, W1) -> P1
    (M, K, Hp, Wp), PoolCache with the winning offset of each window.
    """
    M, K, H1, W1 = A1.shape
    Hp, Wp = output_size(H1, pool, stride), output_size(W1, pool, stride)
    P1 = np.full((M, K, Hp, Wp), -np.inf)
    # The smallest integer type that holds every offset (one byte for pools up to 16×16).
    winner = np.zeros((M, K, Hp, Wp), dtype=np.min_scalar_type(pool * pool - 1))
    for i, j, window in _offsets(pool, pool, Hp, Wp, stride):
        candidate = A1[:, :, window[0], window[1]]
        larger = candidate > P1
        P1 = np.where(larger, candidate, P1)
        winner = np.where(larger, winner.dtype.type(i * pool + j), winner)
    return P1, PoolCache(A1.shape, winner, pool, stride)


def maxpool_backward(dL_dP1, cache: PoolCache):
    """dL/dA1: each dL/dP1 entry goes to the cell that won its window, 0 elsewhere.

    Where windows overlap, a cell that wins several of them receives the sum.
    dL_dP1 (M, K, Hp, Wp) -> dL_dA1 (M, K, H1, W1).
    """
    A1_shape, winner, pool, stride = cache
    _, _, Hp, Wp = dL_dP1.shape
    dL_dA1 = np.zeros(A1_shape)
    for i, j, window in _offsets(pool, pool, Hp, Wp, stride):
        routed = np.where(winner == i * pool + j, dL_dP1, 0.0)
        dL_dA1[:, :, window[0], window[1]] += routed
    return dL_dA1


def pool_mask(cache: PoolCache):
    """How many windows each A1 cell won (0 for the cells that won none), shape of A1."""
    return maxpool_backward(np.ones(cache.winner.shape), cache)


# -- flatten: F = flatten(P1) ------------------------------------------------------------


def flatten_forward(P1):
    """F[m] = P1[m] in row-major order: filter, then row, then column. (M, K, Hp, Wp) -> (M, n)."""
    return P1.reshape(P1.shape[0], -1)


def flatten_backward(dL_dF, P1_shape):
    """dL/dP1 = dL/dF put back in P1's shape. (M, n) -> (M, K, Hp, Wp)."""
    return dL_dF.reshape(P1_shape)


# -- fully connected: Z2 = F·W2 + B2 -----------------------------------------------------


def dense_forward(F, W2, B2):
    """Z2 = F·W2 + B2. F (M, n), W2 (n,), B2 () -> Z2 (M,)."""
    return F @ W2 + B2


def dense_backward(dL_dZ2, F, W2):
    """dL/dF = dL/dZ2 · W2ᵀ, dL/dW2 = Fᵀ · dL/dZ2, dL/dB2 = sum dL/dZ2.

    dL_dZ2 (M,), F (M, n), W2 (n,) -> dL_dF (M, n), dL_dW2 (n,), dL_dB2 ().
    """
    return np.outer(dL_dZ2, W2), F.T @ dL_dZ2, dL_dZ2.sum()


# -- sigmoid and binary cross-entropy: A2 = σ(Z2), L = BCE(Y, A2) -------------------------


def sigmoid(Z2):
    """A2 = 1 / (1 + exp(-Z2)), computed without overflow for any finite Z2."""
    e = np.exp(-np.abs(Z2))
    return np.where(Z2 >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_loss(Z2, Y):
    """L = mean over the batch of -Y·log(A2) - (1 - Y)·log(1 - A2), written from Z2:

        max(Z2, 0) - Z2·Y + log(1 + exp(-|Z2|))

    which never takes the log of 0, so a saturated sigmoid still gives a finite loss.
    Each image's share is divided by M before the sum, which cannot overflow where the
    mean itself fits in float64.
    """
    losses = np.maximum(Z2, 0.0) - Z2 * Y + np.log1p(np.exp(-np.abs(Z2)))
    return np.sum(losses / Z2.shape[0])


def bce_grad_A2(Z2, Y):
    """dL/dA2 = (-Y/A2 + (1 - Y)/(1 - A2)) / M, with 1 - A2 taken as σ(-Z2) so it keeps
    its digits when A2 rounds to 1; a term whose label weight is 0 is 0."""
    M = Z2.shape[0]
    A2, one_minus_A2 = sigmoid(Z2), sigmoid(-Z2)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = np.where(Y != 0, -Y / A2, 0.0)
        negative = np.where(Y != 1, (1.0 - Y) / one_minus_A2, 0.0)
    return (positive + negative) / M


def sigmoid_grad(Z2):
    """dA2/dZ2 = A2·(1 - A2) = σ(Z2)·σ(-Z2)."""
    return sigmoid(Z2) * sigmoid(-Z2)


def bce_sigmoid_backward(A2, Y):
    """dL/dZ2 = dL/dA2 · dA2/dZ2 = (A2 - Y) / M: the two factors' A2·(1 - A2) cancel."""
    return (A2 - Y) / A2.shape[0]
