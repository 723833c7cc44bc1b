"""Make samples/digits.npz: handwritten "0" (Y = 0) against "1" (Y = 1), 8×8 images from
the UCI optical digits set as scikit-learn ships it, with starting weights for the reference
network (one 3×3 filter, 2×2 pooling, so F has 3·3 = 9 entries).

    pip install scikit-learn                 # for this script only; cnntrace doesn't need it
    python samples/digits/make_digits.py     # rewrites samples/digits.npz, the same every time

scikit-learn carries the data inside its package (``sklearn.datasets.load_digits``), so
nothing is downloaded. Its 1797 images are the UCI set's test part; the 360 of them that
show a 0 or a 1 are kept, in their order, with pixels (whole numbers 0 to 16) divided by 16.
See samples/README.md for the source and the licence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

SEED = 7
OUT = Path(__file__).resolve().parent.parent / "digits.npz"


def main() -> None:
    digits = load_digits()
    keep = (digits.target == 0) | (digits.target == 1)
    X = digits.images[keep] / 16.0
    Y = (digits.target[keep] == 1).astype(np.float64)
    rng = np.random.default_rng(SEED)
    np.savez_compressed(
        OUT,
        allow_pickle=False,
        comment=np.str_(
            'Handwritten "0" (Y = 0) against "1" (Y = 1), 8x8, from the UCI optical digits set as '
            "shipped with scikit-learn; made by samples/digits/make_digits.py."
        ),
        X=X,
        Y=Y,
        W1=np.round(rng.normal(0.0, 0.3, size=(3, 3)), 3),
        B1=np.float64(0.0),
        W2=np.round(rng.normal(0.0, 0.3, size=9), 3),
        B2=np.float64(0.0),
        lr=np.float64(0.5),
    )
    print(f"wrote {OUT}: {len(Y)} images, {int(Y.sum())} ones and {int(len(Y) - Y.sum())} zeros")


if __name__ == "__main__":
    main()
