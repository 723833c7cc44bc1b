"""A naive, loop-based twin of cnntrace's math core: the test oracle.

Every op is written the slow, obvious way, one entry at a time, straight from its formula,
so that it can be read against the derivation line by line. It is written independently of
cnntrace.ops and does not import cnntrace: when the two agree to 1e-12, each vouches for the
other. Each backward pass loops over the same positions as its forward pass.

Shapes are the general ones of the pass (M images, K filters):

    X   (M, H, W)        W1 (K, kh, kw)     B1 (K,)
    Z1  (M, K, Ho, Wo)   A1 like Z1         P1 (M, K, Hp, Wp)
    F   (M, n)           W2 (n,)            B2 ()          Z2, A2, Y (M,)
"""

from __future__ import annotations

import math

import numpy as np


def positions(size: int, window: int, stride: int) -> int:
    """How many times a window fits along ``size`` cells, stepping by ``stride``."""
    count = 0
    while count * stride + window <= size:
        count += 1
    return count


# -- convolution: Z1 = conv(X, W1) + B1 ---------------------------------------------------


def padded_pixel(X, m: int, row: int, col: int, padding: int) -> float:
    """Xp[m, row, col], where Xp is X framed by ``padding`` zeros on every side."""
    r, c = row - padding, col - padding
    if 0 <= r < X.shape[1] and 0 <= c < X.shape[2]:
        return X[m, r, c]
    return 0.0


def conv_forward(X, W1, B1, stride: int, padding: int):
    """Z1[m,k,h,w] = B1[k] + sum_ij W1[k,i,j] * Xp[m, h*stride + i, w*stride + j].

    Cross-correlation: the kernel is laid on the image as written, never flipped.
    """
    M, H, W = X.shape
    K, kh, kw = W1.shape
    Ho = positions(H + 2 * padding, kh, stride)
    Wo = positions(W + 2 * padding, kw, stride)
    Z1 = np.zeros((M, K, Ho, Wo))
    for m in range(M):
        for k in range(K):
            for h in range(Ho):
                for w in range(Wo):
                    total = B1[k]
                    for i in range(kh):
                        for j in range(kw):
                            pixel = padded_pixel(X, m, h * stride + i, w * stride + j, padding)
                            total += W1[k, i, j] * pixel
                    Z1[m, k, h, w] = total
    return Z1


def conv_backward(dL_dZ1, X, W1, stride: int, padding: int):
    """dL/dX, dL/dW1, dL/dB1: each Z1 entry hands its gradient back to its bias, to each
    weight (times the pixel the weight met) and to each real pixel (times that weight);
    the pixels of the zero frame are not inputs and keep nothing."""
    M, K, Ho, Wo = dL_dZ1.shape
    _, kh, kw = W1.shape
    dL_dX = np.zeros(X.shape)
    dL_dW1 = np.zeros(W1.shape)
    dL_dB1 = np.zeros(K)
    for m in range(M):
        for k in range(K):
            for h in range(Ho):
                for w in range(Wo):
                    g = dL_dZ1[m, k, h, w]
                    dL_dB1[k] += g
                    for i in range(kh):
                        for j in range(kw):
                            row, col = h * stride + i, w * stride + j
                            dL_dW1[k, i, j] += g * padded_pixel(X, m, row, col, padding)
                            r, c = row - padding, col - padding
                            if 0 <= r < X.shape[1] and 0 <= c < X.shape[2]:
                                dL_dX[m, r, c] += g * W1[k, i, j]
    return dL_dX, dL_dW1, dL_dB1


# -- ReLU: A1 = max(Z1, 0) ----------------------------------------------------------------


def relu_forward(Z1):
    A1 = np.zeros(Z1.shape)
    for index in np.ndindex(Z1.shape):
        A1[index] = Z1[index] if Z1[index] > 0 else 0.0
    return A1


def relu_grad(Z1):
    """dA1/dZ1 = 1 where Z1 > 0, else 0: at Z1 = 0 exactly the slope is taken as 0."""
    dA1_dZ1 = np.zeros(Z1.shape)
    for index in np.ndindex(Z1.shape):
        dA1_dZ1[index] = 1.0 if Z1[index] > 0 else 0.0
    return dA1_dZ1


# -- max pooling: P1 = MaxPool(A1) --------------------------------------------------------


def window_argmax(A1, m: int, k: int, h: int, w: int, pool: int, stride: int):
    """(row, col) in A1 of the maximum of window (h, w); a tie goes to the first maximum
    met in row-major order, because only a strictly larger value replaces it."""
    best = None
    for i in range(pool):
        for j in range(pool):
            row, col = h * stride + i, w * stride + j
            if best is None or A1[m, k, row, col] > A1[m, k, best[0], best[1]]:
                best = (row, col)
    return best


def maxpool_forward(A1, pool: int, stride: int):
    """P1[m,k,h,w] = the largest A1 entry in the pool x pool window at (h*stride, w*stride)."""
    M, K, H1, W1 = A1.shape
    Hp, Wp = positions(H1, pool, stride), positions(W1, pool, stride)
    P1 = np.zeros((M, K, Hp, Wp))
    for m in range(M):
        for k in range(K):
            for h in range(Hp):
                for w in range(Wp):
                    row, col = window_argmax(A1, m, k, h, w, pool, stride)
                    P1[m, k, h, w] = A1[m, k, row, col]
    return P1


def maxpool_backward(dL_dP1, A1, pool: int, stride: int):
    """dL/dA1: each window sends its gradient to the cell that won it. Where windows
    overlap, one cell can win several and receives the sum."""
    M, K, Hp, Wp = dL_dP1.shape
    dL_dA1 = np.zeros(A1.shape)
    for m in range(M):
        for k in range(K):
            for h in range(Hp):
                for w in range(Wp):
                    row, col = window_argmax(A1, m, k, h, w, pool, stride)
                    dL_dA1[m, k, row, col] += dL_dP1[m, k, h, w]
    return dL_dA1


# -- flatten: F = flatten(P1) -------------------------------------------------------------


def flatten_forward(P1):
    """F[m] lists P1[m] filter by filter, each filter row by row, each row left to right."""
    M, K, Hp, Wp = P1.shape
    F = np.zeros((M, K * Hp * Wp))
    for m in range(M):
        position = 0
        for k in range(K):
            for r in range(Hp):
                for c in range(Wp):
                    F[m, position] = P1[m, k, r, c]
                    position += 1
    return F


def flatten_backward(dL_dF, P1_shape):
    """dL/dP1: each entry of dL/dF goes back to the P1 cell it was read from."""
    M, K, Hp, Wp = P1_shape
    dL_dP1 = np.zeros(P1_shape)
    for m in range(M):
        position = 0
        for k in range(K):
            for r in range(Hp):
                for c in range(Wp):
                    dL_dP1[m, k, r, c] = dL_dF[m, position]
                    position += 1
    return dL_dP1


# -- fully connected: Z2 = F·W2 + B2 ------------------------------------------------------


def dense_forward(F, W2, B2):
    M, n = F.shape
    Z2 = np.zeros(M)
    for m in range(M):
        total = float(B2)
        for i in range(n):
            total += F[m, i] * W2[i]
        Z2[m] = total
    return Z2


def dense_backward(dL_dZ2, F, W2):
    """dL/dF[m,i] = dL/dZ2[m]·W2[i];  dL/dW2[i] = sum_m F[m,i]·dL/dZ2[m];  dL/dB2 = sum dL/dZ2."""
    M, n = F.shape
    dL_dF = np.zeros((M, n))
    dL_dW2 = np.zeros(n)
    dL_dB2 = 0.0
    for m in range(M):
        dL_dB2 += dL_dZ2[m]
        for i in range(n):
            dL_dF[m, i] = dL_dZ2[m] * W2[i]
            dL_dW2[i] += F[m, i] * dL_dZ2[m]
    return dL_dF, dL_dW2, np.float64(dL_dB2)


# -- sigmoid and binary cross-entropy: A2 = σ(Z2), L = BCE(Y, A2) ---------------------------


def sigmoid(z: float) -> float:
    """σ(z) = 1 / (1 + e^-z), written so that e^x is only taken for x <= 0."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


def log_sigmoid(z: float) -> float:
    """log σ(z) = -log(1 + e^-z), which stays finite where σ(z) rounds to 0 or 1."""
    if z >= 0:
        return -math.log1p(math.exp(-z))
    return z - math.log1p(math.exp(z))


def bce_loss(Z2, Y) -> float:
    """L = mean_m [ -Y·log A2 - (1 - Y)·log(1 - A2) ], with log(1 - σ(z)) = log σ(-z)."""
    M = len(Z2)
    total = 0.0
    for m in range(M):
        total += -Y[m] * log_sigmoid(Z2[m]) - (1.0 - Y[m]) * log_sigmoid(-Z2[m])
    return np.float64(total / M)


def bce_grad_A2(Z2, Y):
    """dL/dA2[m] = (-Y/A2 + (1 - Y)/(1 - A2)) / M; a term whose label weight is 0 is 0."""
    M = len(Z2)
    dL_dA2 = np.zeros(M)
    for m in range(M):
        a2, one_minus_a2 = sigmoid(Z2[m]), sigmoid(-Z2[m])
        term = 0.0
        if Y[m] != 0:
            term -= Y[m] / a2
        if Y[m] != 1:
            term += (1.0 - Y[m]) / one_minus_a2
        dL_dA2[m] = term / M
    return dL_dA2


def sigmoid_grad(Z2):
    """dA2/dZ2 = σ(z)·(1 - σ(z)) = σ(z)·σ(-z)."""
    return np.array([sigmoid(z) * sigmoid(-z) for z in Z2])


# -- the whole pass ----------------------------------------------------------------------


def forward_backward(X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=2):
    """The same {name: array} as cnntrace.network.forward_backward, the slow way."""
    M = X.shape[0]
    Z1 = conv_forward(X, W1, B1, stride, padding)
    A1 = relu_forward(Z1)
    P1 = maxpool_forward(A1, pool, pool_stride)
    F = flatten_forward(P1)
    Z2 = dense_forward(F, W2, B2)
    A2 = np.array([sigmoid(z) for z in Z2])
    L = bce_loss(Z2, Y)

    dL_dA2 = bce_grad_A2(Z2, Y)
    dA2_dZ2 = sigmoid_grad(Z2)
    # The product dL/dA2·dA2/dZ2 simplifies to (A2 - Y)/M; the simplified form keeps its
    # digits where A2 saturates and the two factors would be 0 and huge.
    dL_dZ2 = np.array([(A2[m] - Y[m]) / M for m in range(M)])
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


def gradient_step(W1, B1, W2, B2, grads, lr):
    """One step of gradient descent, P - lr·dL/dP, entry by entry."""
    updated = {}
    for name, value in (("W1", W1), ("B1", B1), ("W2", W2), ("B2", B2)):
        value = np.asarray(value, dtype=np.float64)
        gradient = np.asarray(grads["dL_d" + name])
        step = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            step[index] = value[index] - lr * gradient[index]
        updated[name] = step
    return updated
