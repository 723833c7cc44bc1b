"""Make samples/bars.json: noisy 6×6 images of a vertical bar (label 1) or a horizontal bar
(label 0), with starting weights for the reference network (one 3×3 filter, 2×2 pooling).

    python samples/bars/make_bars.py        # rewrites samples/bars.json, the same every time

Each image is a bar one pixel wide at a random inner row or column (not on the border, so
that a 3×3 window can centre on it), of brightness 0.7 to 1, on a background of uniform
noise in [0, 0.3). The classes alternate, 16 of each. The starting filter and weights are
small random numbers; every number is rounded to 3 decimals so that the file stays readable.

With the file's lr of 1, full-batch training classifies every image right from epoch 69 on:

    cnntrace train samples/bars.json --epochs 80
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE, IMAGES, SEED = 6, 32, 2024
OUT = Path(__file__).resolve().parent.parent / "bars.json"


def bar_image(rng: np.random.Generator, vertical: bool) -> np.ndarray:
    image = rng.uniform(0.0, 0.3, size=(SIZE, SIZE))
    line = rng.integers(1, SIZE - 1)
    brightness = rng.uniform(0.7, 1.0)
    if vertical:
        image[:, line] = brightness
    else:
        image[line, :] = brightness
    return image


def main() -> None:
    rng = np.random.default_rng(SEED)
    labels = [1 - index % 2 for index in range(IMAGES)]
    X = np.array([bar_image(rng, vertical=bool(label)) for label in labels])
    sample = {
        "comment": "Noisy 6x6 bars: vertical (Y = 1) against horizontal (Y = 0); made by "
        "samples/bars/make_bars.py. Train: cnntrace train samples/bars.json --epochs 80",
        "X": np.round(X, 3).tolist(),
        "Y": labels,
        "W1": np.round(rng.normal(0.0, 0.3, size=(3, 3)), 3).tolist(),
        "B1": 0.0,
        "W2": np.round(rng.normal(0.0, 0.3, size=4), 3).tolist(),
        "B2": 0.0,
        "lr": 1.0,
    }
    text = json.dumps(sample, indent=1)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({IMAGES} images)")


if __name__ == "__main__":
    main()
