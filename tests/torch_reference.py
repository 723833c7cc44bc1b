"""The pass in PyTorch's autograd, the third oracle: used only when torch is installed."""

from __future__ import annotations

import numpy as np


def as_pair(value) -> tuple[int, int]:
    """(rows, cols) from a pair or from one int for both."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def torch_pass(
    torch, X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None
) -> dict:
    """L, Z1, P1 and the gradients of the reference network's pass, computed by torch in
    float64, as numpy arrays under the trace's names.

    X (M, H, W) or (M, C, H, W), W1 (K, kh, kw) or (K, C, kh, kw), B1 (K,), W2 (n,) with
    Y (M,) and B2 (), or W2 (n, 1) with Y (M, 1) and B2 (1,); stride, padding, pool and
    pool_stride an int or a (rows, cols) pair. Each gradient has its parameter's shape."""
    functional = torch.nn.functional
    X, Y, W1, B1, W2, B2 = (torch.tensor(a, dtype=torch.float64) for a in (X, Y, W1, B1, W2, B2))
    for leaf in (X, W1, B1, W2, B2):
        leaf.requires_grad_(True)
    channels = X.ndim == 4  # else torch wants a channel axis: (M, 1, H, W), (K, 1, kh, kw)
    x, w1 = (X, W1) if channels else (X[:, None], W1[:, None])
    pool_stride = pool if pool_stride is None else pool_stride
    Z1 = functional.conv2d(x, w1, B1, stride=as_pair(stride), padding=as_pair(padding))
    P1 = functional.max_pool2d(torch.relu(Z1), as_pair(pool), as_pair(pool_stride))
    Z2 = P1.reshape(P1.shape[0], -1) @ W2 + B2
    L = functional.binary_cross_entropy_with_logits(Z2, Y)
    Z1.retain_grad()
    Z2.retain_grad()
    L.backward()
    values = {
        "L": L, "Z1": Z1, "P1": P1, "dL_dZ2": Z2.grad, "dL_dZ1": Z1.grad, "dL_dX": X.grad,
        "dL_dW1": W1.grad, "dL_dB1": B1.grad, "dL_dW2": W2.grad, "dL_dB2": B2.grad,
    }  # fmt: skip
    return {name: np.asarray(value.detach().numpy()) for name, value in values.items()}
