"""Make samples/digits10.npz and samples/digits10-test.npz: all ten classes of the UCI
optical digits (8×8) as scikit-learn ships them, split once into a training set and a test
set, each with a small softmax convolutional network and its starting weights:

    conv 3×3, 8 filters, padding 1 → ReLU → max-pool 2×2 → flatten (8·4·4 = 128) → dense 10 → softmax

    pip install scikit-learn                   # for this script only; cnntrace doesn't need it
    python samples/digits10/make_digits10.py   # rewrites both files, the same every time

scikit-learn carries the data inside its package (``sklearn.datasets.load_digits``), so
nothing is downloaded. Its 1797 images (whole numbers 0 to 16) are divided by 16; a fixed
random permutation (seed 10) puts a fifth of each class (rounded) in the test set and the
rest, in the permuted order, in the training set. Y holds class indices 0 to 9. The test file
carries the same network and weights, so it is a complete input too (``cnntrace step``
reads it). See samples/README.md for the source and the licence.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

SPLIT_SEED = 10
WEIGHT_SEED = 3
FILTERS = 8
TEST_FRACTION = 0.2
LR = 0.3
HERE = Path(__file__).resolve().parent.parent
LAYERS = [{"type": "conv", "padding": 1}, "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "softmax"]


def main() -> None:
    digits = load_digits()
    X = digits.images / 16.0
    Y = digits.target.astype(np.float64)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(Y))
    is_test = np.zeros(len(Y), dtype=bool)
    for digit in range(10):  # a fifth of every class, so the test set is balanced like the whole
        of_digit = order[Y[order] == digit]
        is_test[of_digit[: round(TEST_FRACTION * len(of_digit))]] = True
    train, test = order[~is_test[order]], order[is_test[order]]
    weights = np.random.default_rng(WEIGHT_SEED)
    fan_in_conv, fan_in_dense = 9, FILTERS * 4 * 4
    network = {
        "layers": np.str_(json.dumps(LAYERS)),
        "loss": np.str_("cross_entropy"),
        "W1": np.round(weights.normal(0.0, np.sqrt(2 / fan_in_conv), size=(FILTERS, 3, 3)), 4),
        "B1": np.zeros(FILTERS),
        "W2": np.round(weights.normal(0.0, np.sqrt(1 / fan_in_dense), size=(fan_in_dense, 10)), 4),
        "B2": np.zeros(10),
        "lr": np.float64(LR),
    }
    for name, images, what in (("digits10.npz", train, "training"), ("digits10-test.npz", test, "test")):
        np.savez_compressed(
            HERE / name,
            allow_pickle=False,
            comment=np.str_(
                f"The {what} part of the ten handwritten digits 0-9, 8x8, from the UCI optical digits set as "
                "shipped with scikit-learn; Y is the class index; made by samples/digits10/make_digits10.py."
            ),
            X=X[images],
            Y=Y[images],
            **network,
        )
        print(f"wrote {HERE / name}: {len(images)} images, per class {np.bincount(Y[images].astype(int)).tolist()}")


if __name__ == "__main__":
    main()
