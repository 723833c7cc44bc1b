"""A naive, loop-based twin of cnntrace's math core: the test oracle.

Every op is written the slow, obvious way, one entry at a time, straight from its formula,
so that it can be read against the derivation line by line. It is written independently of
cnntrace.ops and does not import cnntrace: when the two agree to 1e-12, each vouches for the
other. Each backward pass loops over the same positions as its forward pass.

Shapes are the general ones of the pass (M images, C channels, K filters, n units):

    maps     (M, C, H, W)        conv W (K, C, kh, kw)     conv B (K,)
    vectors  (M, n)              dense W (n_in, n_out)     dense B (n_out,)

Window sizes, strides and paddings are (rows, cols) pairs; a plain int means the same
number for both. The reference network's pass (``forward_backward``) takes X (M, C, H, W),
Y (M, 1), W1 (K, C, kh, kw), B1 (K,), W2 (n, 1), B2 (1,), as cnntrace's network does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np


def pair(value) -> tuple[int, int]:
    """(rows, cols) from a pair or from one int for both."""
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    rows, cols = value
    return (int(rows), int(cols))


def positions(size: int, window: int, stride: int) -> int:
    """How many times a window fits along ``size`` cells, stepping by ``stride``."""
    count = 0
    while count * stride + window <= size:
        count += 1
    return count


def padded_value(A, m: int, c: int, row: int, col: int, padding, fill: float = 0.0) -> float:
    """Ap[m, c, row, col], where Ap is A framed by ``padding`` (rows, cols) cells of
    ``fill`` on every side."""
    r, s = row - padding[0], col - padding[1]
    if 0 <= r < A.shape[2] and 0 <= s < A.shape[3]:
        return A[m, c, r, s]
    return fill


def inside(shape, row: int, col: int, padding) -> tuple[int, int] | None:
    """(r, c) in the unpadded map of the padded cell (row, col); None for a padding cell."""
    r, c = row - padding[0], col - padding[1]
    if 0 <= r < shape[2] and 0 <= c < shape[3]:
        return r, c
    return None


# -- convolution: Z = conv(X, W) + B -------------------------------------------------------


def four_sides(padding) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from one int, a (rows, cols) pair or those four."""
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    if len(padding) == 2:
        return (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
    return tuple(int(p) for p in padding)


def conv_forward(X, W, B, stride=1, padding=0, dilation=1, groups=1):
    """Z[m,k,h,w] = B[k] + sum_cij W[k,c,i,j] * Xp[m, g*C/G + c, h*sh + i*dh, w*sw + j*dw],
    g the group of filter k (filters and channels split into ``groups`` equal runs).

    Cross-correlation: the kernel is laid on the image as written, never flipped. ``padding``
    is one int, (rows, cols) or (top, bottom, left, right); B None is no bias.
    """
    stride, dilation = pair(stride), pair(dilation)
    top, bottom, left, right = four_sides(padding)
    M, C, H, Wd = X.shape
    K, C_group, kh, kw = W.shape
    K_group = K // groups
    Ho = positions(H + top + bottom, dilation[0] * (kh - 1) + 1, stride[0])
    Wo = positions(Wd + left + right, dilation[1] * (kw - 1) + 1, stride[1])
    Z = np.zeros((M, K, Ho, Wo))
    for m in range(M):
        for k in range(K):
            g = k // K_group
            for h in range(Ho):
                for w in range(Wo):
                    total = 0.0 if B is None else B[k]
                    for c in range(C_group):
                        for i in range(kh):
                            for j in range(kw):
                                row, col = h * stride[0] + i * dilation[0], w * stride[1] + j * dilation[1]
                                x = padded_value(X, m, g * C_group + c, row, col, (top, left))
                                total += W[k, c, i, j] * x
                    Z[m, k, h, w] = total
    return Z


def conv_backward(dL_dZ, X, W, stride=1, padding=0, dilation=1, groups=1):
    """dL/dX, dL/dW, dL/dB: each Z entry hands its gradient back to its bias, to each
    weight (times the pixel the weight met) and to each real pixel (times that weight);
    the pixels of the zero frame are not inputs and keep nothing."""
    stride, dilation = pair(stride), pair(dilation)
    top, _, left, _ = four_sides(padding)
    M, K, Ho, Wo = dL_dZ.shape
    _, C_group, kh, kw = W.shape
    K_group = K // groups
    dL_dX = np.zeros(X.shape)
    dL_dW = np.zeros(W.shape)
    dL_dB = np.zeros(K)
    for m in range(M):
        for k in range(K):
            g = k // K_group
            for h in range(Ho):
                for w in range(Wo):
                    grad = dL_dZ[m, k, h, w]
                    dL_dB[k] += grad
                    for c in range(C_group):
                        for i in range(kh):
                            for j in range(kw):
                                row, col = h * stride[0] + i * dilation[0], w * stride[1] + j * dilation[1]
                                channel = g * C_group + c
                                dL_dW[k, c, i, j] += grad * padded_value(X, m, channel, row, col, (top, left))
                                cell = inside(X.shape, row, col, (top, left))
                                if cell is not None:
                                    dL_dX[m, channel, cell[0], cell[1]] += grad * W[k, c, i, j]
    return dL_dX, dL_dW, dL_dB


# -- transposed convolution: Z = conv_transpose(X, W) + B -------------------------------------


def _scattered(X_shape, W_shape, out_shape, stride, padding, dilation, groups):
    """Each (m, c, h, w, k, i, j, (filter, row, col)) of a transposed convolution's scatter:
    input cell (m, c, h, w) times tap W[c, k, i, j] lands on output (filter, row, col)."""
    M, C, H, Wd = X_shape
    _, K_group, kh, kw = W_shape
    C_group = C // groups
    Ho, Wo = out_shape
    for m in range(M):
        for c in range(C):
            g = c // C_group
            for h in range(H):
                for w in range(Wd):
                    for k in range(K_group):
                        for i in range(kh):
                            for j in range(kw):
                                row = h * stride[0] + i * dilation[0] - padding[0]
                                col = w * stride[1] + j * dilation[1] - padding[1]
                                if 0 <= row < Ho and 0 <= col < Wo:
                                    yield m, c, h, w, k, i, j, (g * K_group + k, row, col)


def conv_transpose_forward(X, W, B, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Each X[m,c,h,w] scatters X·W[c,k,i,j] to output cell (h*sh + i*dh − ph, w*sw + j*dw − pw)
    of channel g*K/G + k (g the group of channel c); cells outside the output are dropped.
    W (C, K/G, kh, kw), as PyTorch's ConvTranspose2d stores it."""
    stride, padding, output_padding, dilation = (pair(v) for v in (stride, padding, output_padding, dilation))
    M, C, H, Wd = X.shape
    _, K_group, kh, kw = W.shape
    K = K_group * groups
    Ho = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    Wo = (Wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    Z = np.zeros((M, K, Ho, Wo))
    for m, c, h, w, k, i, j, out in _scattered(X.shape, W.shape, (Ho, Wo), stride, padding, dilation, groups):
        Z[(m, *out)] += X[m, c, h, w] * W[c, k, i, j]
    if B is not None:
        for k in range(K):
            Z[:, k] += B[k]
    return Z


def conv_transpose_backward(dL_dZ, X, W, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """dL/dX, dL/dW, dL/dB over the same scatter: each pair (input cell, tap) that reached an
    output cell takes that cell's gradient back."""
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    Ho, Wo = dL_dZ.shape[2:]
    dL_dX, dL_dW = np.zeros(X.shape), np.zeros(W.shape)
    for m, c, h, w, k, i, j, out in _scattered(X.shape, W.shape, (Ho, Wo), stride, padding, dilation, groups):
        grad = dL_dZ[(m, *out)]
        dL_dX[m, c, h, w] += grad * W[c, k, i, j]
        dL_dW[c, k, i, j] += grad * X[m, c, h, w]
    return dL_dX, dL_dW, dL_dZ.sum(axis=(0, 2, 3))


# -- element-wise activations: A = f(Z) ------------------------------------------------------


def elementwise(Z, f):
    """f applied to each entry of Z, one at a time."""
    Z = np.asarray(Z, dtype=np.float64)
    out = np.zeros(Z.shape)
    for index in np.ndindex(Z.shape):
        out[index] = f(float(Z[index]))
    return out


def relu_forward(Z):
    return elementwise(Z, lambda z: z if z > 0 else 0.0)


def relu_grad(Z):
    """dA/dZ = 1 where Z > 0, else 0: at Z = 0 exactly the slope is taken as 0."""
    return elementwise(Z, lambda z: 1.0 if z > 0 else 0.0)


def leaky_relu_forward(Z, alpha: float):
    """A = Z where Z > 0, alpha·Z elsewhere."""
    return elementwise(Z, lambda z: z if z > 0 else alpha * z)


def leaky_relu_grad(Z, alpha: float):
    """dA/dZ = 1 where Z > 0, alpha elsewhere (at 0 too, as in PyTorch)."""
    return elementwise(Z, lambda z: 1.0 if z > 0 else alpha)


def tanh_forward(Z):
    return elementwise(Z, math.tanh)


def tanh_grad(Z):
    """dA/dZ = 1 - tanh(z)², from Z (cnntrace.ops takes it from A)."""
    return elementwise(Z, lambda z: 1.0 - math.tanh(z) ** 2)


def sigmoid(z: float) -> float:
    """σ(z) = 1 / (1 + e^-z), written so that e^x is only taken for x <= 0."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


def sigmoid_forward(Z):
    return elementwise(Z, sigmoid)


def log_sigmoid(z: float) -> float:
    """log σ(z) = -log(1 + e^-z), which stays finite where σ(z) rounds to 0 or 1."""
    if z >= 0:
        return -math.log1p(math.exp(-z))
    return z - math.log1p(math.exp(z))


def sigmoid_grad(Z):
    """dA/dZ = σ(z)·(1 - σ(z)) = σ(z)·σ(-z)."""
    return elementwise(Z, lambda z: sigmoid(z) * sigmoid(-z))


# -- softmax: A[m] = softmax(Z[m]), over each image's units ---------------------------------


def log_softmax_row(row) -> list[float]:
    """log A_i = z_i - max - log Σ_j e^(z_j - max): every exponent <= 0, never the log of 0."""
    largest = max(row)
    total = sum(math.exp(z - largest) for z in row)
    return [z - largest - math.log(total) for z in row]


def softmax(Z):
    """A[m,i] = e^Z[m,i] / Σ_j e^Z[m,j], image by image; Z (M, n)."""
    M, n = Z.shape
    A = np.zeros((M, n))
    for m in range(M):
        largest = max(Z[m])
        exps = [math.exp(z - largest) for z in Z[m]]
        total = sum(exps)
        for i in range(n):
            A[m, i] = exps[i] / total
    return A


def softmax_backward(dL_dA, Z):
    """dL/dZ[m,j] = Σ_i dL/dA[m,i] · dA_i/dZ_j with dA_i/dZ_j = A_i·(δij - A_j): the whole
    Jacobian, entry by entry."""
    A = softmax(Z)
    M, n = A.shape
    dL_dZ = np.zeros((M, n))
    for m in range(M):
        for j in range(n):
            total = 0.0
            for i in range(n):
                delta = 1.0 if i == j else 0.0
                total += dL_dA[m, i] * A[m, i] * (delta - A[m, j])
            dL_dZ[m, j] = total
    return dL_dZ


# -- pooling: P = MaxPool(A) or AvgPool(A) --------------------------------------------------


def pool_shape(shape, size, stride, padding):
    M, C, H, W = shape
    return (M, C, positions(H + 2 * padding[0], size[0], stride[0]),
            positions(W + 2 * padding[1], size[1], stride[1]))  # fmt: skip


def window_argmax(A, m: int, c: int, h: int, w: int, size, stride, padding=(0, 0)):
    """(row, col) in A of the maximum of window (h, w), padding cells being −∞; a tie goes
    to the first maximum met in row-major order, because only a strictly larger value
    replaces it. None if no cell of A beats the padding (a window of padding only)."""
    size, stride, padding = pair(size), pair(stride), pair(padding)
    best, best_value = None, -math.inf
    for i in range(size[0]):
        for j in range(size[1]):
            cell = inside(A.shape, h * stride[0] + i, w * stride[1] + j, padding)
            if cell is None:
                continue  # −∞ never beats anything, not even another −∞
            if best is None or A[m, c, cell[0], cell[1]] > best_value:
                best, best_value = cell, A[m, c, cell[0], cell[1]]
    return best


def maxpool_forward(A, size=2, stride=2, padding=0):
    """P[m,c,h,w] = the largest entry of the size[0]×size[1] window at (h*sh, w*sw) of A
    framed by −∞."""
    size, stride, padding = pair(size), pair(stride), pair(padding)
    P = np.full(pool_shape(A.shape, size, stride, padding), -math.inf)
    M, C, Hp, Wp = P.shape
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    best = window_argmax(A, m, c, h, w, size, stride, padding)
                    if best is not None:
                        P[m, c, h, w] = A[m, c, best[0], best[1]]
    return P


def maxpool_backward(dL_dP, A, size=2, stride=2, padding=0):
    """dL/dA: each window sends its gradient to the cell that won it. Where windows
    overlap, one cell can win several and receives the sum."""
    M, C, Hp, Wp = dL_dP.shape
    dL_dA = np.zeros(A.shape)
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    best = window_argmax(A, m, c, h, w, size, stride, padding)
                    if best is not None:
                        dL_dA[m, c, best[0], best[1]] += dL_dP[m, c, h, w]
    return dL_dA


def avgpool_forward(A, size=2, stride=2, padding=0):
    """P[m,c,h,w] = the mean of the size[0]×size[1] window at (h*sh, w*sw) of A framed by
    zeros; the zeros count in the mean (PyTorch's count_include_pad)."""
    size, stride, padding = pair(size), pair(stride), pair(padding)
    P = np.zeros(pool_shape(A.shape, size, stride, padding))
    M, C, Hp, Wp = P.shape
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    total = 0.0
                    for i in range(size[0]):
                        for j in range(size[1]):
                            row, col = h * stride[0] + i, w * stride[1] + j
                            total += padded_value(A, m, c, row, col, padding)
                    P[m, c, h, w] = total / (size[0] * size[1])
    return P


def avgpool_backward(dL_dP, A_shape, size=2, stride=2, padding=0):
    """dL/dA: each window's gradient shared equally among its size[0]·size[1] cells; the
    padding's shares are dropped."""
    size, stride, padding = pair(size), pair(stride), pair(padding)
    M, C, Hp, Wp = dL_dP.shape
    dL_dA = np.zeros(A_shape)
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    share = dL_dP[m, c, h, w] / (size[0] * size[1])
                    for i in range(size[0]):
                        for j in range(size[1]):
                            cell = inside(A_shape, h * stride[0] + i, w * stride[1] + j, padding)
                            if cell is not None:
                                dL_dA[m, c, cell[0], cell[1]] += share
    return dL_dA


# -- flatten: F = flatten(P) ---------------------------------------------------------------


def global_avgpool_forward(A):
    """P[m][c][0][0] = the mean of map A[m][c], by loops."""
    M, C, H, W = np.shape(A)
    P = np.zeros((M, C, 1, 1))
    for m in range(M):
        for c in range(C):
            total = 0.0
            for h in range(H):
                for w in range(W):
                    total += A[m][c][h][w]
            P[m, c, 0, 0] = total / (H * W)
    return P


def global_avgpool_backward(dL_dP, A_shape):
    """dL/dA[m][c][h][w] = dL/dP[m][c][0][0] / (H·W), by loops."""
    M, C, H, W = A_shape
    dL_dA = np.zeros(A_shape)
    for m in range(M):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    dL_dA[m, c, h, w] = dL_dP[m][c][0][0] / (H * W)
    return dL_dA


def _read_order(P_shape, channels_last=False):
    """(m, position, c, r, s): flatten's reading of each image, channel by channel and row by
    row (or, channels last, row by row with each cell's channels in turn)."""
    M, C, Hp, Wp = P_shape
    for m in range(M):
        position = 0
        for first in range(Hp if channels_last else C):
            for second in range(Wp if channels_last else Hp):
                for third in range(C if channels_last else Wp):
                    c, r, s = (third, first, second) if channels_last else (first, second, third)
                    yield m, position, c, r, s
                    position += 1


def flatten_forward(P, channels_last=False):
    """F[m] lists P[m] channel by channel, each channel row by row, each row left to right."""
    M, C, Hp, Wp = P.shape
    F = np.zeros((M, C * Hp * Wp))
    for m, position, c, r, s in _read_order(P.shape, channels_last):
        F[m, position] = P[m, c, r, s]
    return F


def flatten_backward(dL_dF, P_shape, channels_last=False):
    """dL/dP: each entry of dL/dF goes back to the P cell it was read from."""
    dL_dP = np.zeros(P_shape)
    for m, position, c, r, s in _read_order(P_shape, channels_last):
        dL_dP[m, c, r, s] = dL_dF[m, position]
    return dL_dP


# -- fully connected: Z = F·W + B ----------------------------------------------------------


def dense_forward(F, W, B):
    """Z[m,o] = B[o] + sum_i F[m,i]·W[i,o]."""
    M, n_in = F.shape
    n_out = W.shape[1]
    Z = np.zeros((M, n_out))
    for m in range(M):
        for o in range(n_out):
            total = float(B[o])
            for i in range(n_in):
                total += F[m, i] * W[i, o]
            Z[m, o] = total
    return Z


def dense_backward(dL_dZ, F, W):
    """dL/dF[m,i] = sum_o dL/dZ[m,o]·W[i,o];  dL/dW[i,o] = sum_m F[m,i]·dL/dZ[m,o];
    dL/dB[o] = sum_m dL/dZ[m,o]."""
    M, n_in = F.shape
    n_out = W.shape[1]
    dL_dF = np.zeros((M, n_in))
    dL_dW = np.zeros((n_in, n_out))
    dL_dB = np.zeros(n_out)
    for m in range(M):
        for o in range(n_out):
            g = dL_dZ[m, o]
            dL_dB[o] += g
            for i in range(n_in):
                dL_dF[m, i] += g * W[i, o]
                dL_dW[i, o] += F[m, i] * g
    return dL_dF, dL_dW, dL_dB


# -- losses: the mean, as PyTorch's reduction="mean" computes it ----------------------------


def bce_loss(Z, Y) -> float:
    """L = mean over every entry of -Y·log A - (1 - Y)·log(1 - A), A = σ(Z), with
    log(1 - σ(z)) = log σ(-z)."""
    Z, Y = np.asarray(Z, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    total = 0.0
    for index in np.ndindex(Z.shape):
        z, y = float(Z[index]), float(Y[index])
        total += -y * log_sigmoid(z) - (1.0 - y) * log_sigmoid(-z)
    return np.float64(total / Z.size)


def bce_grad_A(Z, Y):
    """dL/dA = (-Y/A + (1 - Y)/(1 - A)) / N over N entries; a term whose label weight is 0
    is 0."""
    Z, Y = np.asarray(Z, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    dL_dA = np.zeros(Z.shape)
    for index in np.ndindex(Z.shape):
        z, y = float(Z[index]), float(Y[index])
        a, one_minus_a = sigmoid(z), sigmoid(-z)
        term = 0.0
        if y != 0:
            term -= y / a if a != 0 else math.copysign(math.inf, y)
        if y != 1:
            term += (
                (1.0 - y) / one_minus_a if one_minus_a != 0 else math.copysign(math.inf, 1.0 - y)
            )
        dL_dA[index] = term / Z.size
    return dL_dA


def cross_entropy_loss(Z, Y) -> float:
    """L = mean over the M images of -Σ_i Y[m,i]·log softmax(Z[m])_i; a class of weight 0
    adds nothing."""
    M, n = Z.shape
    total = 0.0
    for m in range(M):
        logs = log_softmax_row(list(Z[m]))
        for i in range(n):
            if Y[m, i] != 0:
                total -= Y[m, i] * logs[i]
    return np.float64(total / M)


def cross_entropy_grad_A(A, Y):
    """dL/dA[m,i] = -Y[m,i] / (M·A[m,i]); a class of weight 0 gets 0."""
    M, n = A.shape
    dL_dA = np.zeros((M, n))
    for m in range(M):
        for i in range(n):
            if Y[m, i] != 0:
                dL_dA[m, i] = -Y[m, i] / A[m, i] / M
    return dL_dA


def mse_loss(A, Y) -> float:
    """L = mean over every entry of (A - Y)²."""
    A, Y = np.asarray(A, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    total = 0.0
    for index in np.ndindex(A.shape):
        total += (float(A[index]) - float(Y[index])) ** 2
    return np.float64(total / A.size)


def mse_grad(A, Y):
    """dL/dA = 2·(A - Y) / N over N entries."""
    A, Y = np.asarray(A, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    dL_dA = np.zeros(A.shape)
    for index in np.ndindex(A.shape):
        dL_dA[index] = 2.0 * (float(A[index]) - float(Y[index])) / A.size
    return dL_dA


# -- the reference network's whole pass ------------------------------------------------------


def forward_backward(X, Y, weights, *, stride=1, padding=0, pool=2, pool_stride=2):
    """The same {name: array} as the reference network's Network.forward_backward, the
    slow way: conv → relu → maxpool → flatten → dense → sigmoid, loss bce.

    X (M, C, H, W), Y (M, 1); weights W1 (K, C, kh, kw), B1 (K,), W2 (n, 1), B2 (1,).
    """
    W1, B1, W2, B2 = (np.asarray(weights[p], dtype=np.float64) for p in ("W1", "B1", "W2", "B2"))
    Z1 = conv_forward(X, W1, B1, stride, padding)
    A1 = relu_forward(Z1)
    P1 = maxpool_forward(A1, pool, pool_stride)
    F = flatten_forward(P1)
    Z2 = dense_forward(F, W2, B2)
    A2 = sigmoid_forward(Z2)
    L = bce_loss(Z2, Y)

    dL_dA2 = bce_grad_A(Z2, Y)
    dA2_dZ2 = sigmoid_grad(Z2)
    # The product dL/dA2·dA2/dZ2 simplifies to (A2 - Y)/N; the simplified form keeps its
    # digits where A2 saturates and the two factors would be 0 and huge.
    dL_dZ2 = np.zeros(Z2.shape)
    for index in np.ndindex(Z2.shape):
        dL_dZ2[index] = (A2[index] - Y[index]) / Z2.size
    dL_dF, dL_dW2, dL_dB2 = dense_backward(dL_dZ2, F, W2)
    dL_dP1 = flatten_backward(dL_dF, P1.shape)
    dL_dA1 = maxpool_backward(dL_dP1, A1, pool, pool_stride)
    dA1_dZ1 = relu_grad(Z1)
    dL_dZ1 = np.zeros(Z1.shape)
    for index in np.ndindex(Z1.shape):
        dL_dZ1[index] = dL_dA1[index] * dA1_dZ1[index]
    dL_dX, dL_dW1, dL_dB1 = conv_backward(dL_dZ1, X, W1, stride, padding)

    return {
        "Z1": Z1, "A1": A1, "P1": P1, "F": F, "Z2": Z2, "A2": A2, "L": L,
        "dL_dA2": dL_dA2, "dA2_dZ2": dA2_dZ2, "dL_dZ2": dL_dZ2, "dL_dW2": dL_dW2,
        "dL_dB2": dL_dB2, "dL_dF": dL_dF, "dL_dP1": dL_dP1, "dL_dA1": dL_dA1,
        "dA1_dZ1": dA1_dZ1, "dL_dZ1": dL_dZ1, "dL_dB1": dL_dB1, "dL_dW1": dL_dW1,
        "dL_dX": dL_dX,
    }  # fmt: skip


def gradient_step(weights: dict, grads: dict, lr):
    """One step of gradient descent, P - lr·dL/dP, entry by entry, for each weight P."""
    updated = {}
    for name, value in weights.items():
        value = np.asarray(value, dtype=np.float64)
        gradient = np.asarray(grads["dL_d" + name])
        step = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            step[index] = value[index] - lr * gradient[index]
        updated[name] = step
    return updated


# -- the options the plain twins above leave out ---------------------------------------------


def rot180(W):
    """W[k, c] rotated 180°, entry by entry: R[k,c,i,j] = W[k,c,kh-1-i,kw-1-j]."""
    K, C, kh, kw = W.shape
    R = np.zeros(W.shape)
    for k in range(K):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    R[k, c, i, j] = W[k, c, kh - 1 - i, kw - 1 - j]
    return R


def window_maxima(A, m: int, c: int, h: int, w: int, size, stride, padding=(0, 0)) -> list:
    """Every (row, col) of A holding the maximum of window (h, w), in row-major order;
    padding cells (−∞) never hold it."""
    size, stride, padding = pair(size), pair(stride), pair(padding)
    cells = []
    for i in range(size[0]):
        for j in range(size[1]):
            cell = inside(A.shape, h * stride[0] + i, w * stride[1] + j, padding)
            if cell is not None:
                cells.append(cell)
    if not cells:
        return []
    top = max(A[m, c, r, s] for r, s in cells)
    return [(r, s) for r, s in cells if A[m, c, r, s] == top]


def maxpool_backward_ties(dL_dP, A, size=2, stride=2, padding=0, ties="first"):
    """dL/dA under a tie rule: "first" sends each window's gradient to its first maximum
    (row-major), "all" to every tied maximum whole, "split" shares it equally among them."""
    if ties == "first":
        return maxpool_backward(dL_dP, A, size, stride, padding)
    M, C, Hp, Wp = dL_dP.shape
    dL_dA = np.zeros(A.shape)
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    tied = window_maxima(A, m, c, h, w, size, stride, padding)
                    for r, s in tied:
                        share = dL_dP[m, c, h, w] if ties == "all" else dL_dP[m, c, h, w] / len(tied)
                        dL_dA[m, c, r, s] += share
    return dL_dA


def relu_grad_at_zero_one(Z):
    """dA/dZ with ReLU′(0) taken as 1: 1 where Z >= 0, else 0."""
    return elementwise(Z, lambda z: 1.0 if z >= 0 else 0.0)


def softmax_jacobian(Z):
    """J[m,i,j] = dA_i/dZ_j = A_i·(δij − A_j) for each image: (M, n) -> (M, n, n)."""
    A = softmax(Z)
    M, n = A.shape
    J = np.zeros((M, n, n))
    for m in range(M):
        for i in range(n):
            for j in range(n):
                J[m, i, j] = A[m, i] * ((1.0 if i == j else 0.0) - A[m, j])
    return J


def times(dL_dA, local):
    """dL/dZ = dL/dA ⊙ dA/dZ, entry by entry."""
    dL_dZ = np.zeros(np.shape(dL_dA))
    for index in np.ndindex(dL_dZ.shape):
        dL_dZ[index] = dL_dA[index] * local[index]
    return dL_dZ


def mean_delta(A, Y, N: int):
    """(A − Y)/N entry by entry: dL/dZ where the loss cancels against the last activation
    (bce after a sigmoid over N entries, cross-entropy after a softmax over N images)."""
    dL_dZ = np.zeros(np.shape(A))
    for index in np.ndindex(dL_dZ.shape):
        dL_dZ[index] = (A[index] - Y[index]) / N
    return dL_dZ


# -- issue 19: the pools' new options, adaptive pooling, the smooth activations, log-softmax,
# nll and the losses' reductions ---------------------------------------------------------------


def pool_sides(shape, size, stride, padding, dilation=(1, 1)) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): a (rows, cols) pair on both sides, four sides as given,
    "same" the padding that keeps ceil(H/stride) windows, the odd cell after."""
    if padding == "same":
        sides = []
        for n, k, s, d in zip(shape[2:], pair(size), pair(stride), pair(dilation)):
            windows = math.ceil(n / s)
            total = max((windows - 1) * s + d * (k - 1) + 1 - n, 0)
            sides += [total // 2, total - total // 2]
        return tuple(sides)
    if padding == "valid":
        return (0, 0, 0, 0)
    if not isinstance(padding, (int, np.integer)) and len(padding) == 4:
        return tuple(padding)
    rows, cols = pair(padding)
    return (rows, rows, cols, cols)


def pool_count(n: int, window: int, stride: int, before: int, after: int, dilation: int, ceil_mode: bool) -> int:
    """How many windows PyTorch takes along n cells: every start whose window ends inside
    the padded cells; in ceil mode one more that starts inside the input or the padding
    before it, if a window would stick out past the end."""
    span = dilation * (window - 1) + 1
    count = 0
    while count * stride + span <= n + before + after:
        count += 1
    if ceil_mode and (count - 1) * stride + span < n + before + after and count * stride < n + before:
        count += 1
    return count


def pool_taps(shape, h: int, w: int, size, stride, sides, dilation=(1, 1)) -> list[tuple[int, int]]:
    """The cells (row, col) of window (h, w), in the input's coordinates (outside it for
    padding), in row-major order."""
    size, stride, dilation = pair(size), pair(stride), pair(dilation)
    top, _, left, _ = sides
    return [(h * stride[0] + i * dilation[0] - top, w * stride[1] + j * dilation[1] - left)
            for i in range(size[0]) for j in range(size[1])]  # fmt: skip


def pool_out(shape, size, stride, sides, dilation=(1, 1), ceil_mode=False) -> tuple[int, int]:
    size, stride, dilation = pair(size), pair(stride), pair(dilation)
    top, bottom, left, right = sides
    return (pool_count(shape[2], size[0], stride[0], top, bottom, dilation[0], ceil_mode),
            pool_count(shape[3], size[1], stride[1], left, right, dilation[1], ceil_mode))  # fmt: skip


def _in_map(shape, r: int, c: int) -> bool:
    return 0 <= r < shape[2] and 0 <= c < shape[3]


def general_maxpool(A, size, stride, padding, dilation=(1, 1), ceil_mode=False, dL_dP=None, ties="first"):
    """P (or, given dL_dP, dL/dA under ``ties``): each window's largest cell of A, the first
    in row-major order on a tie; padding never wins."""
    sides = pool_sides(A.shape, size, stride, padding, dilation)
    Ho, Wo = pool_out(A.shape, size, stride, sides, dilation, ceil_mode)
    M, C = A.shape[:2]
    P, dL_dA = np.zeros((M, C, Ho, Wo)), np.zeros(A.shape)
    for m in range(M):
        for c in range(C):
            for h in range(Ho):
                for w in range(Wo):
                    cells = [(r, s) for r, s in pool_taps(A.shape, h, w, size, stride, sides, dilation) if _in_map(A.shape, r, s)]
                    top = max(A[m, c, r, s] for r, s in cells)
                    tied = [(r, s) for r, s in cells if A[m, c, r, s] == top]
                    P[m, c, h, w] = top
                    if dL_dP is not None:
                        chosen = tied[:1] if ties == "first" else tied
                        for r, s in chosen:
                            dL_dA[m, c, r, s] += dL_dP[m, c, h, w] / (len(tied) if ties == "split" else 1)
    return P if dL_dP is None else dL_dA


def avgpool_divisor_of(shape, h: int, w: int, size, stride, sides, count_include_pad: bool) -> int:
    """The cells window (h, w)'s mean counts: inside the input, and inside the padding
    where count_include_pad; never past the padding."""
    top, bottom, left, right = sides
    count = 0
    for r, s in pool_taps(shape, h, w, size, stride, sides):
        if count_include_pad:
            count += -top <= r < shape[2] + bottom and -left <= s < shape[3] + right
        else:
            count += _in_map(shape, r, s)
    return count


def general_avgpool(A, size, stride, padding, ceil_mode=False, count_include_pad=True, dL_dP=None):
    """P (or, given dL_dP, dL/dA): each window's cells of A summed (padding adds 0) and
    divided by its count (avgpool_divisor_of)."""
    sides = pool_sides(A.shape, size, stride, padding)
    Ho, Wo = pool_out(A.shape, size, stride, sides, (1, 1), ceil_mode)
    M, C = A.shape[:2]
    P, dL_dA = np.zeros((M, C, Ho, Wo)), np.zeros(A.shape)
    for m in range(M):
        for c in range(C):
            for h in range(Ho):
                for w in range(Wo):
                    count = avgpool_divisor_of(A.shape, h, w, size, stride, sides, count_include_pad)
                    total = 0.0
                    for r, s in pool_taps(A.shape, h, w, size, stride, sides):
                        if _in_map(A.shape, r, s):
                            total += A[m, c, r, s]
                            if dL_dP is not None:
                                dL_dA[m, c, r, s] += dL_dP[m, c, h, w] / count
                    P[m, c, h, w] = total / count
    return P if dL_dP is None else dL_dA


def adaptive_avgpool(A, output_size, dL_dP=None):
    """P[m,c,i,j] = the mean of rows floor(i·H/oh) .. ceil((i+1)·H/oh) − 1 and the columns
    alike (or, given dL_dP, dL/dA: each window's gradient shared among its cells)."""
    oh, ow = pair(output_size)
    M, C, H, W = A.shape
    P, dL_dA = np.zeros((M, C, oh, ow)), np.zeros(A.shape)
    for m in range(M):
        for c in range(C):
            for i in range(oh):
                r0, r1 = (i * H) // oh, math.ceil((i + 1) * H / oh)
                for j in range(ow):
                    c0, c1 = (j * W) // ow, math.ceil((j + 1) * W / ow)
                    count = (r1 - r0) * (c1 - c0)
                    total = 0.0
                    for r in range(r0, r1):
                        for s in range(c0, c1):
                            total += A[m, c, r, s]
                            if dL_dP is not None:
                                dL_dA[m, c, r, s] += dL_dP[m, c, i, j] / count
                    P[m, c, i, j] = total / count
    return P if dL_dP is None else dL_dA


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def elu_local(Z, *, alpha=1.0):
    return elementwise(Z, lambda z: 1.0 if z > 0 else alpha * math.exp(z))


def gelu_local(Z):
    return elementwise(Z, lambda z: normal_cdf(z) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi))


def silu_local(Z):
    return elementwise(Z, lambda z: sigmoid(z) * (1.0 + z * (1.0 - sigmoid(z))))


def softplus_forward(Z, *, beta=1.0, threshold=20.0):
    def f(z):
        if beta * z > threshold:
            return z
        return (max(beta * z, 0.0) + math.log1p(math.exp(-abs(beta * z)))) / beta

    return elementwise(Z, f)


def softplus_local(Z, *, beta=1.0, threshold=20.0):
    return elementwise(Z, lambda z: 1.0 if beta * z > threshold else sigmoid(beta * z))


def log_softmax(Z):
    """A[m] = log softmax(Z[m]), row by row."""
    return np.array([log_softmax_row(list(row)) for row in Z])


def log_softmax_jacobian(Z):
    """J[m,i,j] = dA_i/dZ_j = δij − softmax(Z[m])_j."""
    A = softmax(Z)
    M, n = A.shape
    J = np.zeros((M, n, n))
    for m in range(M):
        for i in range(n):
            for j in range(n):
                J[m, i, j] = (1.0 if i == j else 0.0) - A[m, j]
    return J


def jacobian_backward(dL_dA, J):
    """dL/dZ[m,j] = Σ_i dL/dA[m,i]·J[m,i,j]."""
    M, n = dL_dA.shape
    dL_dZ = np.zeros((M, n))
    for m in range(M):
        for j in range(n):
            dL_dZ[m, j] = sum(dL_dA[m, i] * J[m, i, j] for i in range(n))
    return dL_dZ


def reduced(total: float, count: int, reduction: str) -> np.float64:
    """A loss's sum of terms as its reduction takes it: over ``count`` (the mean) or whole."""
    return np.float64(total / count if reduction == "mean" else total)


def nll_loss(A, Y, reduction="mean") -> float:
    """L = −Σ_m Σ_i Y[m,i]·A[m,i], over the M images for the mean."""
    M, n = A.shape
    total = -sum(Y[m, i] * A[m, i] for m in range(M) for i in range(n) if Y[m, i] != 0)
    return reduced(total, M, reduction)


# -- one twin per layer kind and per loss, as the table of kinds (tests/kinds.py) calls them --
#
# A layer's twin takes its input on the general shapes, its weights in the order of the
# layer's ``params`` (W, then B) and the layer's options as keywords, named as the layer
# names them: an option the twin does not know is a TypeError, never silently ignored.


class Twin(NamedTuple):
    """A layer kind's naive forward and backward.

    forward(x, *weights, **options) -> y
    backward(dL_dy, x, *weights, **options) -> (dL_dx, (dL_dW, dL_dB, ...))
    local(x, **options) -> dy/dx, the stage an activation shows of its own derivative
    stages(x, dL_dy, *weights, **options) -> its other stages (see below)

    A kind that keeps running statistics (batch norm) gets them as options: mean=, var=.
    """

    forward: Callable
    backward: Callable
    local: Callable | None = None
    #: stages(x, dL_dy, *weights, **options) -> {name without the layer's number: value}: the
    #: stages a kind shows besides its output, its weights' gradients and dL/dx (batch norm's
    #: mu, sigmasq, xhat, dL_dxhat …, a dropout's mask, the running mean and var after the step)
    stages: Callable | None = None


def _conv_kernel(W, flip):
    return rot180(W) if flip else W


def same_padding(W, dilation) -> tuple[int, int, int, int]:
    """"same" padding for kernel W (…, kh, kw): dilation·(k − 1) zeros along each axis, the
    odd one after (below, to the right), as PyTorch and TensorFlow pad."""
    dilation = pair(dilation)
    rows, cols = (d * (k - 1) for d, k in zip(dilation, W.shape[-2:]))
    return (rows // 2, rows - rows // 2, cols // 2, cols - cols // 2)


def named_padding(padding, W, dilation):
    """A padding as the input writes it, "valid" and "same" as numbers."""
    return {"valid": 0, "same": same_padding(W, dilation)}[padding] if isinstance(padding, str) else padding


def conv_layer(X, W, B=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=True, flip=False):
    padding = named_padding(padding, W, dilation)
    return conv_forward(X, _conv_kernel(W, flip), B, stride, padding, dilation, groups)


def conv_layer_backward(dL_dZ, X, W, B=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                        bias=True, flip=False):  # fmt: skip
    padding = named_padding(padding, W, dilation)
    dL_dX, dL_dK, dL_dB = conv_backward(dL_dZ, X, _conv_kernel(W, flip), stride, padding, dilation, groups)
    # The pass used rot180(W): each kernel entry's gradient goes back to the W entry it is.
    dL_dW = rot180(dL_dK) if flip else dL_dK
    return dL_dX, ((dL_dW, dL_dB) if bias else (dL_dW,))


def conv_transpose_layer(X, W, B=None, *, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), dilation=(1, 1),
                         groups=1, bias=True):  # fmt: skip
    return conv_transpose_forward(X, W, B, stride, padding, output_padding, dilation, groups)


def conv_transpose_layer_backward(dL_dZ, X, W, B=None, *, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                                  dilation=(1, 1), groups=1, bias=True):  # fmt: skip
    dL_dX, dL_dW, dL_dB = conv_transpose_backward(dL_dZ, X, W, stride, padding, output_padding, dilation, groups)
    return dL_dX, ((dL_dW, dL_dB) if bias else (dL_dW,))


def dense_layer_backward(dL_dZ, F, W, B):
    dL_dF, dL_dW, dL_dB = dense_backward(dL_dZ, F, W)
    return dL_dF, (dL_dW, dL_dB)


def flatten_layer(P, *, order="chw"):
    return flatten_forward(P, channels_last=order == "hwc")


def flatten_layer_backward(dL_dF, P, *, order="chw"):
    return flatten_backward(dL_dF, P.shape, channels_last=order == "hwc"), ()


def maxpool_layer(A, *, size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False, dilation=(1, 1), ties="first"):
    return general_maxpool(A, size, stride, padding, dilation, ceil_mode)


def maxpool_layer_backward(dL_dP, A, *, size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False,
                           dilation=(1, 1), ties="first"):  # fmt: skip
    return general_maxpool(A, size, stride, padding, dilation, ceil_mode, dL_dP, ties), ()


def avgpool_layer(A, *, size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False, count_include_pad=True):
    return general_avgpool(A, size, stride, padding, ceil_mode, count_include_pad)


def avgpool_layer_backward(dL_dP, A, *, size=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False,
                           count_include_pad=True):  # fmt: skip
    return general_avgpool(A, size, stride, padding, ceil_mode, count_include_pad, dL_dP), ()


# -- merges: S = x + others (an add), C = [x, others…] (a concat) ---------------------------------


def add_forward(x, *others):
    """S[i] = x[i] + Σ other[i], one entry at a time, operands of one shape."""
    S = np.zeros(np.shape(x))
    for index in np.ndindex(*np.shape(x)):
        total = x[index]
        for other in others:
            total += other[index]
        S[index] = total
    return S


def add_backward(dL_dS, x, *others):
    """Every operand gets dL/dS as it is: ∂S/∂operand is 1 entry by entry."""
    return np.array(dL_dS, dtype=np.float64), tuple(np.array(dL_dS, dtype=np.float64) for _ in others)


def concat_forward(x, *others):
    """C[m, c, …]: the c-th channel (unit) counting x's first, then each other's, by loops."""
    operands = (x, *others)
    M = np.shape(x)[0]
    total = sum(np.shape(a)[1] for a in operands)
    C = np.zeros((M, total, *np.shape(x)[2:]))
    for m in range(M):
        c = 0
        for a in operands:
            for k in range(np.shape(a)[1]):
                C[m, c] = a[m][k]
                c += 1
    return C


def concat_backward(dL_dC, x, *others):
    """Each operand's channels (units) of dL/dC, in the order they were joined."""
    pieces, c = [], 0
    for a in (x, *others):
        piece = np.zeros(np.shape(a))
        for m in range(np.shape(a)[0]):
            for k in range(np.shape(a)[1]):
                piece[m, k] = dL_dC[m][c + k]
        c += np.shape(a)[1]
        pieces.append(piece)
    return pieces[0], tuple(pieces[1:])


def activation_twin(forward: Callable, local: Callable) -> Twin:
    """An element-wise activation's twin: dL/dZ = dL/dA ⊙ dA/dZ."""
    return Twin(forward, lambda dL_dA, Z, **options: (times(dL_dA, local(Z, **options)), ()), local)


def relu_local(Z, *, grad_at_zero=0):
    return relu_grad_at_zero_one(Z) if grad_at_zero else relu_grad(Z)


CONV = Twin(conv_layer, conv_layer_backward)
CONV_TRANSPOSE = Twin(conv_transpose_layer, conv_transpose_layer_backward)
DENSE = Twin(dense_forward, dense_layer_backward)
FLATTEN = Twin(flatten_layer, flatten_layer_backward)
MAXPOOL = Twin(maxpool_layer, maxpool_layer_backward)
AVGPOOL = Twin(avgpool_layer, avgpool_layer_backward)
GLOBAL_AVGPOOL = Twin(global_avgpool_forward, lambda dL_dP, A: (global_avgpool_backward(dL_dP, A.shape), ()))
RELU = activation_twin(lambda Z, *, grad_at_zero=0: relu_forward(Z), relu_local)
LEAKY_RELU = activation_twin(lambda Z, *, alpha=0.01: leaky_relu_forward(Z, alpha),
                             lambda Z, *, alpha=0.01: leaky_relu_grad(Z, alpha))  # fmt: skip
TANH = activation_twin(tanh_forward, tanh_grad)
SIGMOID = activation_twin(sigmoid_forward, sigmoid_grad)
ADD = Twin(add_forward, add_backward)
CONCAT = Twin(concat_forward, concat_backward)
SOFTMAX = Twin(softmax, lambda dL_dA, Z: (softmax_backward(dL_dA, Z), ()), softmax_jacobian)
ADAPTIVE_AVGPOOL = Twin(lambda A, *, output_size=1: adaptive_avgpool(A, output_size),
                        lambda dL_dP, A, *, output_size=1: (adaptive_avgpool(A, output_size, dL_dP), ()))  # fmt: skip
ELU = activation_twin(lambda Z, *, alpha=1.0: elementwise(Z, lambda z: z if z > 0 else alpha * math.expm1(z)), elu_local)
GELU = activation_twin(lambda Z: elementwise(Z, lambda z: z * normal_cdf(z)), gelu_local)
SILU = activation_twin(lambda Z: elementwise(Z, lambda z: z * sigmoid(z)), silu_local)
SOFTPLUS = activation_twin(softplus_forward, softplus_local)
LOG_SOFTMAX = Twin(log_softmax, lambda dL_dA, Z: (jacobian_backward(dL_dA, log_softmax_jacobian(Z)), ()),
                   log_softmax_jacobian)  # fmt: skip


class LossTwin(NamedTuple):
    """A loss's naive value and gradient; Y on the output's general shape (one-hot rows
    for class indices).

    value(A, Z, Y) -> L;  gradient(A, Z, Y) -> dL/dA
    fused(A, Y) -> dL/dZ straight from A, where the loss cancels against the last activation
    """

    value: Callable
    gradient: Callable
    fused: Callable | None = None


def _summed(N, reduction: str):
    """What a mean divides by: N, or 1 for a sum."""
    return N if reduction == "mean" else 1


# Each takes the loss's options as keywords (reduction, half); the sum is the mean times N.
BCE = LossTwin(lambda A, Z, Y, reduction="mean": bce_loss(Z, Y) * (1 if reduction == "mean" else np.size(Z)),
               lambda A, Z, Y, reduction="mean": bce_grad_A(Z, Y) * (1 if reduction == "mean" else np.size(Z)),
               lambda A, Y, reduction="mean": mean_delta(A, Y, _summed(np.size(A), reduction)))  # fmt: skip
CROSS_ENTROPY = LossTwin(lambda A, Z, Y, reduction="mean": cross_entropy_loss(Z, Y) * (1 if reduction == "mean" else len(Z)),
                         lambda A, Z, Y, reduction="mean": cross_entropy_grad_A(A, Y) * (1 if reduction == "mean" else len(A)),
                         lambda A, Y, reduction="mean": mean_delta(A, Y, _summed(len(A), reduction)))  # fmt: skip
MSE = LossTwin(lambda A, Z, Y, reduction="mean", half=False: mse_loss(A, Y) * (0.5 if half else 1.0) * (1 if reduction == "mean" else np.size(A)),
               lambda A, Z, Y, reduction="mean", half=False: mse_grad(A, Y) * (0.5 if half else 1.0) * (1 if reduction == "mean" else np.size(A)))  # fmt: skip
NLL = LossTwin(lambda A, Z, Y, reduction="mean": nll_loss(A, Y, reduction),
               lambda A, Z, Y, reduction="mean": -np.asarray(Y, dtype=np.float64) / _summed(len(A), reduction),
               lambda A, Y, reduction="mean": mean_delta(np.exp(A), Y, _summed(len(A), reduction)))  # fmt: skip
#: No loss: the gradient at the output is given (Y stands for it) and the pass starts there.
GIVEN = LossTwin(None, lambda A, Z, Y: np.array(Y, dtype=np.float64))


def _channel_values(X, c):
    """Every value of channel (or unit) c of a batch, in order: X[m][c] or X[m][c][h][w]."""
    X = np.asarray(X)
    if X.ndim == 2:
        return [(m,) for m in range(X.shape[0])]
    M, _, H, W = X.shape
    return [(m, h, w) for m in range(M) for h in range(H) for w in range(W)]


def _at(X, place, c):
    return (place[0], c, *place[1:])


def batchnorm_forward(X, gamma, beta, mean=None, var=None, eps=1e-5):
    """Z[..c..] = γ[c]·(X − μ[c])/√(σ²[c] + ε) + β[c], by loops; μ, σ² the batch's (biased)
    unless ``mean`` and ``var`` are given. Returns Z, μ, σ²."""
    X = np.asarray(X, dtype=float)
    C = X.shape[1]
    Z = np.zeros_like(X)
    mus, variances = np.zeros(C), np.zeros(C)
    for c in range(C):
        places = _channel_values(X, c)
        N = len(places)
        if mean is None:
            mu = sum(X[_at(X, q, c)] for q in places) / N
            sigmasq = sum((X[_at(X, q, c)] - mu) ** 2 for q in places) / N
        else:
            mu, sigmasq = mean[c], var[c]
        mus[c], variances[c] = mu, sigmasq
        for q in places:
            Z[_at(X, q, c)] = gamma[c] * (X[_at(X, q, c)] - mu) / math.sqrt(sigmasq + eps) + beta[c]
    return Z, mus, variances


def batchnorm_pass(dL_dZ, X, gamma, mean=None, var=None, eps=1e-5) -> dict:
    """Every stage of batch norm's backward pass by loops, straight from the derivation:
    x̂, dL/dγ, dL/dβ, dL/dx̂, and in training (no ``mean``, ``var``) dL/dσ², dL/dμ, then dL/dX
    through x̂, σ² and μ (through x̂ alone with given statistics)."""
    X = np.asarray(X, dtype=float)
    C = X.shape[1]
    _, mus, variances = batchnorm_forward(X, gamma, np.zeros(C), mean, var, eps)
    out = {name: np.zeros_like(X) for name in ("xhat", "dL_dxhat", "dL_dX")}
    out.update({name: np.zeros(C) for name in ("dL_dW", "dL_dB", "dL_dsigmasq", "dL_dmu")})
    out["mu"], out["sigmasq"] = mus, variances
    for c in range(C):
        places = _channel_values(X, c)
        N = len(places)
        mu, sigmasq = mus[c], variances[c]
        std = math.sqrt(sigmasq + eps)
        for q in places:
            i = _at(X, q, c)
            out["xhat"][i] = (X[i] - mu) / std
            out["dL_dW"][c] += dL_dZ[i] * out["xhat"][i]
            out["dL_dB"][c] += dL_dZ[i]
            out["dL_dxhat"][i] = dL_dZ[i] * gamma[c]
        if mean is not None:
            for q in places:
                out["dL_dX"][_at(X, q, c)] = out["dL_dxhat"][_at(X, q, c)] / std
            continue
        dvar = sum(out["dL_dxhat"][_at(X, q, c)] * (X[_at(X, q, c)] - mu) * -0.5 * (sigmasq + eps) ** -1.5
                   for q in places)  # fmt: skip
        dmu = (sum(-out["dL_dxhat"][_at(X, q, c)] / std for q in places)
               + dvar * sum(-2 * (X[_at(X, q, c)] - mu) for q in places) / N)  # fmt: skip
        out["dL_dsigmasq"][c], out["dL_dmu"][c] = dvar, dmu
        for q in places:
            i = _at(X, q, c)
            out["dL_dX"][i] = out["dL_dxhat"][i] / std + dvar * 2 * (X[i] - mu) / N + dmu / N
    return out


def batchnorm_backward(dL_dZ, X, gamma, mean=None, var=None, eps=1e-5):
    """dL/dX, dL/dγ, dL/dβ by loops (see batchnorm_pass)."""
    out = batchnorm_pass(dL_dZ, X, gamma, mean, var, eps)
    return out["dL_dX"], out["dL_dW"], out["dL_dB"]


def dropout_forward(X, mask, p):
    """D = X·mask/(1 − p), entry by entry."""
    X = np.asarray(X, dtype=float)
    D = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        D[i] = X[i] * mask[i] / (1 - p)
    return D


def dropout_backward(dL_dD, mask, p):
    """dL/dX = dL/dD·mask/(1 − p), entry by entry."""
    dL_dX = np.zeros(np.shape(dL_dD))
    for i in np.ndindex(dL_dX.shape):
        dL_dX[i] = dL_dD[i] * mask[i] / (1 - p)
    return dL_dX


# -- batch norm and dropout as layer twins -------------------------------------------------------


def _given_statistics(mode, mean, var):
    """The statistics batch norm normalizes with: the batch's in training (None), else the running ones."""
    return (None, None) if mode == "train" else (mean, var)


def batchnorm_layer(X, W, B, *, eps=1e-5, momentum=0.1, mode="train", mean=None, var=None):
    return batchnorm_forward(X, W, B, *_given_statistics(mode, mean, var), eps)[0]


def batchnorm_layer_backward(dL_dZ, X, W, B, *, eps=1e-5, momentum=0.1, mode="train", mean=None, var=None):
    dL_dX, dL_dW, dL_dB = batchnorm_backward(dL_dZ, X, W, *_given_statistics(mode, mean, var), eps)
    return dL_dX, (dL_dW, dL_dB)


def batchnorm_layer_stages(X, dL_dZ, W, B, *, eps=1e-5, momentum=0.1, mode="train", mean=None, var=None):
    """Its stages besides its output and its weights' gradients, named without the layer's
    number: x̂ and dL/dx̂, in training μ, σ², dL/dσ², dL/dμ and (with running statistics
    given) the running statistics after the step, PyTorch's: σ² unbiased."""
    out = batchnorm_pass(dL_dZ, X, W, *_given_statistics(mode, mean, var), eps)
    stages = {"xhat": out["xhat"], "dL_dxhat": out["dL_dxhat"]}
    if mode != "train":
        return stages
    stages.update(mu=out["mu"], sigmasq=out["sigmasq"], dL_dsigmasq=out["dL_dsigmasq"], dL_dmu=out["dL_dmu"])
    if mean is not None:
        N = len(_channel_values(X, 0))
        stages["mean"] = [(1 - momentum) * mean[c] + momentum * out["mu"][c] for c in range(len(mean))]
        stages["var"] = [(1 - momentum) * var[c] + momentum * out["sigmasq"][c] * N / (N - 1) for c in range(len(var))]
    return stages


def dropout_mask_of(shape, p, mask=None, seed=0):
    """The layer's mask: the given one, or drawn from ``seed`` (kept where a uniform draw is ≥ p)."""
    if mask is not None:
        return np.asarray(mask, dtype=float).reshape(shape)
    draws = np.random.default_rng(seed).random(shape)
    kept = np.zeros(shape)
    for i in np.ndindex(shape):
        kept[i] = 1.0 if draws[i] >= p else 0.0
    return kept


def dropout_layer(X, *, p=0.5, mask=None, seed=0, mode="train"):
    if mode != "train":
        return np.array(X, dtype=float)
    return dropout_forward(X, dropout_mask_of(np.shape(X), p, mask, seed), p)


def dropout_layer_backward(dL_dD, X, *, p=0.5, mask=None, seed=0, mode="train"):
    if mode != "train":
        return np.array(dL_dD, dtype=float), ()
    return dropout_backward(dL_dD, dropout_mask_of(np.shape(X), p, mask, seed), p), ()


def dropout_layer_stages(X, dL_dD, *, p=0.5, mask=None, seed=0, mode="train"):
    return {"mask": dropout_mask_of(np.shape(X), p, mask, seed)} if mode == "train" else {}


BATCHNORM = Twin(batchnorm_layer, batchnorm_layer_backward, stages=batchnorm_layer_stages)
DROPOUT = Twin(dropout_layer, dropout_layer_backward, stages=dropout_layer_stages)
