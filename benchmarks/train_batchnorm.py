"""Training LeNet-5 with batch norm: cnntrace's training loop against the same lean loop in
PyTorch. Run by hand, never in CI:

    python benchmarks/train_batchnorm.py [--images 2048] [--batch-size 64] [--epochs 1] [--runs 3]

The network: conv 6@5×5 (padding 2) → batchnorm → relu → maxpool 2 → conv 16@5×5 → batchnorm
→ relu → maxpool 2 → flatten → dense 120 → batchnorm → relu → dense 84 → batchnorm → relu
→ dense 10 → softmax, cross-entropy, on synthetic 28×28 images (seed 0), plain SGD.

Both sides run in this process, float64, one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1 and
torch.set_num_threads(1)), and are timed on the loop alone (the problem built, torch
imported and the arrays loaded beforehand):

- cnntrace: ``cnntrace.train.train`` (the loop ``cnntrace train`` runs; batch norm's running
  statistics updated every step);
- PyTorch: functional ops (conv2d, batch_norm in training with its running statistics,
  max_pool2d, matrix products), cross-entropy from the logits, ``torch.autograd.grad`` and
  the update in place under ``no_grad``; no nn.Module, no optimizer.

Before timing, both train once and must end on the same parameters and running statistics
(to 1e-9), or the script stops. Each side's time is its best of ``--runs``; the ratio is
PyTorch's time over cnntrace's (above 1, cnntrace is faster).
"""

from __future__ import annotations

import argparse
import os
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import numpy as np  # noqa: E402  (after the thread settings, which numpy reads when loaded)

LAYERS = [
    {"type": "conv", "padding": 2}, "batchnorm", "relu", {"type": "maxpool", "size": 2},
    "conv", "batchnorm", "relu", {"type": "maxpool", "size": 2}, "flatten",
    "dense", "batchnorm", "relu", "dense", "batchnorm", "relu", "dense", "softmax",
]  # fmt: skip
SHAPES = {
    "W1": (6, 1, 5, 5), "B1": (6,), "W2": (6,), "B2": (6,),
    "W3": (16, 6, 5, 5), "B3": (16,), "W4": (16,), "B4": (16,),
    "W5": (400, 120), "B5": (120,), "W6": (120,), "B6": (120,),
    "W7": (120, 84), "B7": (84,), "W8": (84,), "B8": (84,),
    "W9": (84, 10), "B9": (10,),
}  # fmt: skip
NORMS = (2, 4, 6, 8)  # the batch norms' numbers


def dataset(images: int, seed: int = 0) -> dict:
    """Synthetic 28×28 images of 10 classes (a bright bar at a class's position, in noise),
    weights drawn as PyTorch initializes them (γ = 1, β = 0), running statistics 0 and 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=images)
    X = rng.normal(0, 0.3, size=(images, 1, 28, 28))
    for m, label in enumerate(labels):
        X[m, 0, 2 + 2 * label : 4 + 2 * label, 4:24] += 1.0
    data = {"X": X, "Y": labels, "layers": LAYERS, "loss": "cross_entropy", "lr": 0.05}
    for name, shape in SHAPES.items():
        number = int(name[1:])
        if number in NORMS:
            data[name] = np.ones(shape) if name[0] == "W" else np.zeros(shape)
        elif name[0] == "W":
            fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
            data[name] = rng.uniform(-1, 1, size=shape) / np.sqrt(fan_in)
        else:
            data[name] = np.zeros(shape)
    for number in NORMS:
        data[f"mean{number}"] = np.zeros(SHAPES[f"W{number}"])
        data[f"var{number}"] = np.ones(SHAPES[f"W{number}"])
    return data


def train_cnntrace(problem, batch_size: int, epochs: int) -> dict:
    from cnntrace.train import train

    for epoch in train(problem, epochs, batch_size=batch_size):
        last = epoch
    return last.parameters


def train_torch(torch, data: dict, batch_size: int, epochs: int) -> dict:
    F = torch.nn.functional
    X, Y = torch.from_numpy(data["X"]), torch.from_numpy(data["Y"])
    params = {name: torch.tensor(data[name], requires_grad=True) for name in SHAPES}
    running = {f"{s}{n}": torch.tensor(data[f"{s}{n}"]) for n in NORMS for s in ("mean", "var")}
    weights = list(params.values())
    p, r = params, running

    def norm(x, n):
        return F.batch_norm(x, r[f"mean{n}"], r[f"var{n}"], p[f"W{n}"], p[f"B{n}"], True, 0.1, 1e-5)

    def forward(x):
        x = F.max_pool2d(torch.relu(norm(F.conv2d(x, p["W1"], p["B1"], padding=2), 2)), 2)
        x = F.max_pool2d(torch.relu(norm(F.conv2d(x, p["W3"], p["B3"]), 4)), 2)
        x = torch.relu(norm(x.reshape(x.shape[0], -1) @ p["W5"] + p["B5"], 6))
        x = torch.relu(norm(x @ p["W7"] + p["B7"], 8))
        return x @ p["W9"] + p["B9"]

    lr = data["lr"]
    M = X.shape[0]
    for _ in range(epochs):
        for start in range(0, M, batch_size):
            L = F.cross_entropy(forward(X[start : start + batch_size]), Y[start : start + batch_size])
            grads = torch.autograd.grad(L, weights)
            with torch.no_grad():
                for weight, gradient in zip(weights, grads):
                    weight -= lr * gradient
    return {**{k: v.detach().numpy() for k, v in params.items()}, **{k: v.numpy() for k, v in running.items()}}


def best(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()

    import torch

    from cnntrace.problem import Problem

    torch.set_num_threads(1)
    data = dataset(arguments.images)
    weights = {k: v for k, v in data.items() if k[0] in "WB" or k.startswith(("mean", "var"))}
    problem = Problem.from_layers(data["X"], data["Y"], LAYERS, weights, loss="cross_entropy", lr=data["lr"])
    b, e = arguments.batch_size, arguments.epochs

    ours = train_cnntrace(problem, b, e)
    theirs = train_torch(torch, data, b, e)
    difference = max(float(np.max(np.abs(ours[k].reshape(theirs[k].shape) - theirs[k]))) for k in theirs)
    print(f"largest difference of the trained parameters and running statistics: {difference:.1e}")
    if difference > 1e-9:
        raise SystemExit("the two trainings disagree: no timing")

    cnntrace_time = best(lambda: train_cnntrace(problem, b, e), arguments.runs)
    torch_time = best(lambda: train_torch(torch, data, b, e), arguments.runs)
    print(f"LeNet-5 with batch norm, {arguments.images} images 28×28, batch {b}, {e} epoch(s), float64, one thread")
    print(f"cnntrace {cnntrace_time:.3f} s   PyTorch {torch_time:.3f} s   ratio (PyTorch/cnntrace) {torch_time / cnntrace_time:.2f}×")


if __name__ == "__main__":
    main()
