"""Four networks of the sizes people use, as input files, for the speed benchmarks.

    python benchmarks/networks.py DIR [--batch 4]

writes ``lenet5.npz``, ``threelayer.npz``, ``tinyvgg.npz`` and ``stride2.npz`` into DIR:
random images and weights from seed 0, the batch's classes at random.

- LeNet-5: 1×32×32; conv 6 5×5 → relu → maxpool 2 → conv 16 5×5 → relu → maxpool 2 →
  flatten → dense 120 → relu → dense 84 → relu → dense 10 → softmax.
- cs231n's ThreeLayerConvNet: 3×32×32; conv 32 7×7 (padding 3) → relu → maxpool 2 →
  flatten → dense 100 → relu → dense 10 → softmax.
- Tiny VGG (CNN Explainer): 3×64×64; (conv 10 3×3 → relu → conv 10 3×3 → relu →
  maxpool 2) × 2 → flatten → dense 10 → softmax.
- A stride-2 MNIST net: 1×28×28; conv 8 3×3 (stride 2, padding 1) → relu → conv 16 3×3
  (stride 2, padding 1) → relu → flatten → dense 10 → softmax.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CONV = "conv"
POOL = {"type": "maxpool", "size": 2}
#: name -> (one image's shape, layers, weight shapes in order W1, B1, W2, B2, …)
NETWORKS = {
    "lenet5": ((1, 32, 32),
               [CONV, "relu", POOL, CONV, "relu", POOL, "flatten", "dense", "relu", "dense", "relu",
                "dense", "softmax"],
               [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (400, 120), (120,), (120, 84), (84,),
                (84, 10), (10,)]),
    "threelayer": ((3, 32, 32),
                   [{"type": "conv", "padding": 3}, "relu", POOL, "flatten", "dense", "relu", "dense",
                    "softmax"],
                   [(32, 3, 7, 7), (32,), (8192, 100), (100,), (100, 10), (10,)]),
    "tinyvgg": ((3, 64, 64),
                [CONV, "relu", CONV, "relu", POOL, CONV, "relu", CONV, "relu", POOL, "flatten",
                 "dense", "softmax"],
                [(10, 3, 3, 3), (10,), (10, 10, 3, 3), (10,), (10, 10, 3, 3), (10,), (10, 10, 3, 3),
                 (10,), (1690, 10), (10,)]),
    "stride2": ((1, 28, 28),
                [{"type": "conv", "stride": 2, "padding": 1}, "relu",
                 {"type": "conv", "stride": 2, "padding": 1}, "relu", "flatten", "dense", "softmax"],
                [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (784, 10), (10,)]),
}  # fmt: skip


def arrays(name: str, batch: int = 4, seed: int = 0, lr: float = 0.01) -> dict:
    """The input file's keys of network ``name``: X (batch × its image shape), Y, W1, B1, …"""
    image, layers, weights = NETWORKS[name]
    rng = np.random.default_rng(seed)
    data = {"X": rng.random((batch, *image)), "Y": rng.integers(0, 10, size=batch).astype(np.float64)}
    for number, shape in enumerate(weights):
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        key = f"{'W' if number % 2 == 0 else 'B'}{number // 2 + 1}"
        data[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in) if key[0] == "W" else 0.01, size=shape)
    return {"layers": np.array(json.dumps(layers)), "loss": np.array("cross_entropy"), "lr": np.array(lr),
            **data}


def write(directory: Path, batch: int = 4) -> dict[str, Path]:
    """Write every network into ``directory``; name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in NETWORKS:
        paths[name] = directory / f"{name}.npz"
        np.savez(paths[name], **arrays(name, batch))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--batch", type=int, default=4)
    options = parser.parse_args()
    for name, path in write(options.directory, options.batch).items():
        print(name, path)
