"""Random input files for exercises: the same seed always gives the same file.

Numbers are rounded to two decimals so that a student can work through the pass by hand.
"""

from __future__ import annotations

import numpy as np

from cnntrace.ops import output_size


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
    rng = np.random.default_rng(seed)
    H, W = size
    kh, kw = kernel
    Ho, Wo = output_size(H, kh, 1), output_size(W, kw, 1)
    pool = 2 if min(Ho, Wo) >= 2 else 1
    n = filters * output_size(Ho, pool, pool) * output_size(Wo, pool, pool)

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
