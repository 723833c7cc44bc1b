"""Training speed and memory of cnntrace against PyTorch on the CPU. Run by hand, not in CI:

    pip install -e '.[bench]'            # PyTorch (optional: without it only cnntrace runs)
    python benchmarks/train_speed.py     # about two minutes

The reference architecture on synthetic 28×28 images (seed 0): one 3×3 filter, ReLU, 2×2
max-pooling (F has 13·13 = 169 entries), one sigmoid output, mean binary cross-entropy and
plain gradient descent (lr 0.1), trained at batch size 1, at 32 and on the full set of
20,000 images at once. Both sides use float64 and one thread: OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set to 1 before numpy or torch is imported, and
PyTorch gets torch.set_num_threads(1). Each side starts from the same weights, and the
script first checks that a few steps of each give the same parameters. The two sides' runs
alternate, and each side's timing is its best run, so that other work on the machine weighs
on both alike. Peak memory is measured in a fresh process training on the full set:
the dataset's arrays plus the most that numpy held at once during training (tracemalloc),
and the process's peak resident size (which also counts Python and the libraries). Linux
only, for /proc/self/status.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from cnntrace.problem import Problem  # noqa: E402
from cnntrace.train import train  # noqa: E402

IMAGES, SIZE, LR = 20_000, 28, 0.1
#: (label, batch size, images per timed run, epochs per timed run, runs)
SETTINGS = [
    ("batch 1", 1, 3_000, 1, 5),
    ("batch 32", 32, 20_000, 1, 5),
    ("full batch (20,000)", IMAGES, IMAGES, 2, 3),
]
TARGETS = {"batch 1": 2.0, "batch 32": 1.0, "full batch (20,000)": 2.0}


def dataset(images: int = IMAGES):
    """X (images, 28, 28) uniform in [0, 1), Y of 0s and 1s, starting W1, B1, W2, B2."""
    rng = np.random.default_rng(0)
    X = rng.random((images, SIZE, SIZE))
    Y = (rng.random(images) < 0.5).astype(np.float64)
    W1 = rng.normal(0.0, 0.3, size=(3, 3))
    W2 = rng.normal(0.0, 0.1, size=13 * 13)
    return X, Y, W1, 0.0, W2, 0.0


def problem_of(images: int) -> Problem:
    X, Y, W1, B1, W2, B2 = dataset()
    return Problem.build(X[:images], Y[:images], W1, B1, W2, B2, lr=LR)


def cnntrace_rate(problem: Problem, batch_size: int, epochs: int) -> float:
    start = time.perf_counter()
    for _ in train(problem, epochs, batch_size=batch_size):
        pass
    return problem.M * epochs / (time.perf_counter() - start)


# -- PyTorch ----------------------------------------------------------------------------------------


def torch_model(torch, W1, B1, W2, B2):
    conv = torch.nn.Conv2d(1, 1, 3).double()
    dense = torch.nn.Linear(W2.size, 1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.asarray(W1, dtype=np.float64).reshape(1, 1, 3, 3)))
        conv.bias.fill_(float(B1))
        dense.weight.copy_(torch.from_numpy(np.asarray(W2, dtype=np.float64).reshape(1, -1)))
        dense.bias.fill_(float(B2))
    return conv, dense


def torch_train(torch, X, Y, model, batch_size: int, epochs: int) -> None:
    """The same training in PyTorch: mini-batches in order, mean BCE from logits, plain SGD."""
    conv, dense = model
    optimizer = torch.optim.SGD([*conv.parameters(), *dense.parameters()], lr=LR)
    loss_of = torch.nn.BCEWithLogitsLoss()
    functional = torch.nn.functional
    for _ in range(epochs):
        for start in range(0, len(Y), batch_size):
            X_batch, Y_batch = X[start : start + batch_size], Y[start : start + batch_size]
            optimizer.zero_grad()
            P1 = functional.max_pool2d(torch.relu(conv(X_batch)), 2)
            Z2 = dense(torch.flatten(P1, 1)).squeeze(1)
            loss_of(Z2, Y_batch).backward()
            optimizer.step()


def torch_rate(torch, images: int, batch_size: int, epochs: int) -> float:
    X, Y, *parameters = dataset()
    X_t = torch.from_numpy(X[:images]).unsqueeze(1)
    Y_t = torch.from_numpy(Y[:images])
    model = torch_model(torch, *parameters)
    start = time.perf_counter()
    torch_train(torch, X_t, Y_t, model, batch_size, epochs)
    return images * epochs / (time.perf_counter() - start)


def same_training(torch) -> float:
    """Largest difference between the two sides' parameters after 2 epochs on 256 images
    in mini-batches of 32."""
    problem = problem_of(256)
    *_, last = train(problem, 2, batch_size=32)
    X, Y, *parameters = dataset()
    model = torch_model(torch, *parameters)
    torch_train(torch, torch.from_numpy(X[:256]).unsqueeze(1), torch.from_numpy(Y[:256]), model, 32, 2)
    conv, dense = model
    theirs = [conv.weight, conv.bias, dense.weight, dense.bias]
    ours = [last.parameters[name] for name in ("W1", "B1", "W2", "B2")]
    return max(
        float(np.max(np.abs(mine.ravel() - their.detach().numpy().ravel())))
        for mine, their in zip(ours, theirs)
    )


# -- memory, in a fresh process ---------------------------------------------------------------------------


def peak_resident_bytes() -> int:
    """The process's peak resident size (VmHWM; unlike getrusage's ru_maxrss it does not
    carry over the parent's peak through fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory_child() -> None:
    import tracemalloc

    problem = problem_of(IMAGES)
    dataset_bytes = problem.X.nbytes + problem.Y.nbytes
    tracemalloc.start()
    for _ in train(problem, 2):
        pass
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"dataset": dataset_bytes, "training": peak, "rss": peak_resident_bytes()}))


def memory() -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--memory-child"], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-torch", action="store_true", help="measure cnntrace only")
    arguments = parser.parse_args()
    if arguments.memory_child:
        memory_child()
        return
    try:
        if arguments.no_torch:
            raise ImportError
        import torch

        torch.set_num_threads(1)
        print(f"PyTorch {torch.__version__}, float64, 1 thread; numpy {np.__version__}, 1 thread")
        difference = same_training(torch)
        print(f"largest parameter difference after the same training: {difference:.1e}")
        if difference > 1e-9:
            raise SystemExit("the two sides do not train alike: the timings would compare nothing")
    except ImportError:
        torch = None
        print("PyTorch is not installed (pip install -e '.[bench]'): cnntrace only")

    print()
    print("| training | cnntrace samples/s | PyTorch samples/s | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    for label, batch_size, images, epochs, runs in SETTINGS:
        problem = problem_of(images)
        ours = theirs = 0.0
        for _ in range(runs):
            ours = max(ours, cnntrace_rate(problem, batch_size, epochs))
            if torch is not None:
                theirs = max(theirs, torch_rate(torch, images, batch_size, epochs))
        del problem
        if torch is None:
            print(f"| {label} | {ours:,.0f} | | | |")
            continue
        target = TARGETS[label]
        verdict = "met" if ours / theirs >= target else "missed"
        print(f"| {label} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}× | ≥ {target:g}× ({verdict}) |")

    used = memory()
    MB = 1e6
    print()
    print(
        f"full-batch peak memory: dataset arrays {used['dataset'] / MB:.0f} MB; "
        f"dataset + training peak {(used['dataset'] + used['training']) / MB:.0f} MB "
        f"= {(used['dataset'] + used['training']) / used['dataset']:.2f}× the dataset (target ≤ 3×); "
        f"process peak resident size {used['rss'] / MB:.0f} MB = {used['rss'] / used['dataset']:.2f}×"
    )


if __name__ == "__main__":
    main()
