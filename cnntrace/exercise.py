"""Random input files for exercises: the same seed always gives the same file.

Numbers are rounded to two decimals so that a student can work through the pass by hand.
Draws that would make a dull or ambiguous exercise are drawn again (see ``instructive``).
"""

from __future__ import annotations

import numpy as np

from cnntrace.errors import InputError
from cnntrace.ops import output_size
from cnntrace.problem import Problem, check_pass_size

#: How many draws ``random_input`` makes before it settles for the last one.
ATTEMPTS = 200
#: Exercises with at most this many Z1 entries are taken to be worked by hand.
HAND_SIZED = 256
#: The most numbers an exercise holds: at up to 8 bytes a number in JSON, its file stays
#: within the size cnntrace reads (io.MAX_INPUT_BYTES).
MAX_NUMBERS = 2**25


def random_input(
    size: tuple[int, int] = (6, 6),
    kernel: tuple[int, int] = (3, 3),
    filters: int = 1,
    batch: int = 1,
    seed: int = 0,
    X: np.ndarray | None = None,
) -> dict:
    """An input dict for ``size`` images and ``filters`` kernels of ``kernel`` size.

    One image and one filter are written without the batch and filter axes, as in the
    derivation. ``X`` (H×W, from a picture) replaces the random image when given. Pooling is
    2×2 where Z1 allows it, else none.
    """
    check_size(size, kernel, filters, batch)
    rng = np.random.default_rng(seed)
    for _ in range(ATTEMPTS):
        data = _draw(rng, size, kernel, filters, batch, X)
        if instructive(data):
            break
    return data


def check_size(size, kernel, filters: int = 1, batch: int = 1, key: str = "size") -> None:
    """Refuse, before any work, an exercise too large to trace (see check_pass_size) or to
    write as an input file (more than MAX_NUMBERS numbers); InputError naming ``key``."""
    check_pass_size(batch, filters, size, kernel, key=key)
    if (count := numbers_in(size, kernel, filters, batch)) > MAX_NUMBERS:
        (H, W), (kh, kw) = size, kernel
        raise InputError(
            f"too large: {batch} image{'s' * (batch > 1)} of {H}×{W} and {filters} {kh}×{kw} "
            f"filter{'s' * (filters > 1)} make {count} numbers, more than an input file holds "
            f"({MAX_NUMBERS})",
            key=key,
        )


def numbers_in(size: tuple[int, int], kernel: tuple[int, int], filters: int = 1, batch: int = 1) -> int:
    """How many numbers the exercise of ``random_input`` holds: X, Y, W1, B1, W2 and B2."""
    (H, W), (kh, kw) = size, kernel
    return batch * (H * W + 1) + filters * (kh * kw + 1) + _pooling(size, kernel, filters)[1] + 1


def _pooling(size, kernel, filters) -> tuple[int, int]:
    """The pool (2×2 where Z1 allows it, else none) and n, the size of F."""
    (H, W), (kh, kw) = size, kernel
    Ho, Wo = output_size(H, kh, 1), output_size(W, kw, 1)
    pool = 2 if min(Ho, Wo) >= 2 else 1
    return pool, filters * output_size(Ho, pool, pool) * output_size(Wo, pool, pool)


def instructive(data: dict) -> bool:
    """Whether every filter's Z1 has entries on both sides of 0 (so the ReLU shows what it
    does) and, in an exercise small enough to work by hand, none within 0.005 of 0 (where
    rounding would hide their sign)."""
    problem = Problem.build(**data)
    conv = problem.network.layers[0]
    Z1, _ = conv.forward(problem.general_X(), problem.weights, False)  # (M, K, h, w)
    per_filter = np.moveaxis(Z1, 1, 0).reshape(Z1.shape[1], -1)  # (K, M·h·w)
    both_signs = per_filter.shape[1] == 1 or all((z > 0).any() and (z < 0).any() for z in per_filter)
    by_hand = Z1.size <= HAND_SIZED
    return both_signs and not (by_hand and np.any(np.abs(Z1) < 0.005))


def _draw(rng, size, kernel, filters, batch, X) -> dict:
    H, W = size
    kh, kw = kernel
    pool, n = _pooling(size, kernel, filters)

    def rounded(values):
        return np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0

    images = rounded(rng.uniform(0, 1, size=(batch, H, W))) if X is None else X[None]
    labels = rng.integers(0, 2, size=batch)
    W1 = rounded(rng.normal(0, 0.5, size=(filters, kh, kw)))
    return {
        "X": (images[0] if batch == 1 else images).tolist(),
        "Y": int(labels[0]) if batch == 1 else labels.tolist(),
        "W1": (W1[0] if filters == 1 else W1).tolist(),
        "B1": 0.1 if filters == 1 else [0.1] * filters,
        "W2": rounded(rng.normal(0, 0.5, size=n)).tolist(),
        "B2": 0.0,
        "pool": pool,
        "lr": 0.1,
    }


def like_input(problem, seed: int = 0, batch: int | None = None) -> dict:
    """A fresh random exercise for ``problem``'s network: its layers, loss and lr, its
    weights' and images' shapes, its classes; ``batch`` images instead of its own count.

    Images are drawn from [0, 1], weights around 0 (both at two decimals), biases 0.1;
    labels, targets or the given gradient as the problem's loss takes them.
    """
    from cnntrace.layers import Softmax

    rng = np.random.default_rng(seed)
    network = problem.network
    M = problem.M if batch is None else batch
    batched = problem.batched or M > 1
    X_layout = problem.layouts["X"]
    out = problem.layouts[network.output]
    image_shape = X_layout.user_shape(False, 1)

    def rounded(values):
        return np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0

    data = {"X": rounded(rng.uniform(0, 1, size=((M,) if batched else ()) + image_shape)).tolist()}
    data["layers"] = [layer.options() for layer in network.layers]
    target_shape = out.user_shape(batched, M)
    if network.loss.given:
        data["grad"] = rounded(rng.normal(0, 0.5, size=target_shape)).tolist()
    else:
        data["loss"] = network.loss.type
        last = network.layers[-1]
        if isinstance(last, Softmax):
            (classes,) = out.shape
            labels = rng.integers(0, classes, size=(M,) if batched else ())
        elif network.loss.type == "bce":
            labels = rng.integers(0, 2, size=target_shape)
        else:
            labels = rounded(rng.normal(0, 0.5, size=target_shape))
        data["Y"] = labels.tolist()
    for name in network.params:
        shape = problem.inputs[name].shape
        if name.startswith("B"):
            data[name] = np.full(shape, 0.1).tolist() if shape else 0.1
        else:
            data[name] = rounded(rng.normal(0, 0.5, size=shape)).tolist()
    data["lr"] = problem.lr
    return data
