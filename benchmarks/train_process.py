"""Training speed and memory through the command line, as a user runs it, against the
leanest PyTorch loop. Run by hand, never in CI:

    pip install -e '.[bench]'
    python benchmarks/train_process.py [--runs 3] [--only NAME] [--profile NAME]

Each setting writes one dataset (.npz, synthetic, seed 0) with its network and starting
weights, then times, alternately and ``--runs`` times each:

- cnntrace: the whole process ``cnntrace train DATA --epochs E --batch-size B --format
  json``, start-up, reading and validating the file, the confusion matrix at the end and
  the JSON of the trained parameters included;
- PyTorch: the training loop alone, in a process of its own that has already imported torch
  and loaded the arrays: functional ops (conv2d, max_pool2d, linear algebra), the loss
  from the logits, ``torch.autograd.grad`` and the update in place under ``no_grad``; no
  nn.Module, no optimizer.

Both sides use float64 and one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1 and
torch.set_num_threads(1)); each side's time is its best run; and before any timing both
train the same way once and must end on the same parameters (to 1e-9), or the script stops.
The ratio is PyTorch's time over cnntrace's: above 1, cnntrace is faster. On a machine that
other work shares, the wall times say as much about the others as about the two sides: the
CPU columns give each side's processor time (user and system) over the same runs, cnntrace's
of the whole process, PyTorch's of its loop, and their ratio. The last column is
the cnntrace process's peak resident size (Python, the libraries and all; measured in one
more run, forked from a small launcher, Linux only) over the size of the dataset's X and Y.

``--profile NAME`` runs the setting's cnntrace command once under cProfile instead and
prints where its time went.

Where PYTHONDONTWRITEBYTECODE is set, write the modules' bytecode once first (``python -m
compileall cnntrace``), as an installed package has it: otherwise every cnntrace process
compiles its modules again, a quarter of a second that no user pays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
SCRIPT = Path(sys.executable).with_name("cnntrace")
CNNTRACE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "cnntrace"]

REFERENCE = ["conv", "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "sigmoid"]
TWO_CONV = [{"type": "conv", "padding": 1}, "relu", {"type": "maxpool", "size": 2},
            "conv", "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "softmax"]  # fmt: skip

#: name, layers, loss, images, one image's shape, weight shapes, batch size, epochs, target,
#: dtype. A short setting's target is met by the process's time less its start-up.
#: Each targeted training takes PyTorch's loop a second or more, so that it is the loop that
#: is compared; the two short ones after them (no target) are what the fixed costs of a
#: process weigh on a run of a few tenths of a second.
ONE_CONV_6 = {"W1": (3, 3), "B1": (), "W2": (4,), "B2": ()}
ONE_CONV_28 = {"W1": (3, 3), "B1": (), "W2": (169,), "B2": ()}
TWO_CONV_WEIGHTS = {"W1": (4, 3, 3, 3), "B1": (4,), "W2": (8, 4, 3, 3), "B2": (8,), "W3": (32, 10), "B3": (10,)}
LENET5 = [{"type": "conv", "padding": 2}, "relu", {"type": "maxpool", "size": 2}, "conv", "relu",
          {"type": "maxpool", "size": 2}, "flatten", "dense", "relu", "dense", "relu", "dense", "softmax"]
LENET5_WEIGHTS = {"W1": (6, 1, 5, 5), "B1": (6,), "W2": (16, 6, 5, 5), "B2": (16,), "W3": (400, 120), "B3": (120,),
                  "W4": (120, 84), "B4": (84,), "W5": (84, 10), "B5": (10,)}
SETTINGS = [
    ("LeNet-5 1×28×28, batch 64", LENET5, "cross_entropy", 12_800, (1, 28, 28), LENET5_WEIGHTS, 64, 1, 1.5, "float64"),
    ("LeNet-5 1×28×28, batch 64, float32", LENET5, "cross_entropy", 12_800, (1, 28, 28), LENET5_WEIGHTS, 64, 1, 1.0,
     "float32"),
    ("reference 6×6, batch 1", REFERENCE, "bce", 20_000, (6, 6), ONE_CONV_6, 1, 1, 2.0, "float64"),
    ("reference 28×28, batch 32", REFERENCE, "bce", 20_000, (28, 28), ONE_CONV_28, 32, 3, 1.2, "float64"),
    ("reference 28×28, full batch", REFERENCE, "bce", 20_000, (28, 28), ONE_CONV_28, 20_000, 5, 2.0, "float64"),
    ("two-conv softmax 3×12×12, batch 32", TWO_CONV, "cross_entropy", 20_000, (3, 12, 12), TWO_CONV_WEIGHTS, 32, 2, 1.0, "float64"),
    ("short: reference 28×28, batch 32, 4,000 images", REFERENCE, "bce", 4_000, (28, 28), ONE_CONV_28, 32, 3, None, "float64"),
    ("short: two-conv softmax, batch 32, 4,000 images", TWO_CONV, "cross_entropy", 4_000, (3, 12, 12), TWO_CONV_WEIGHTS, 32, 2, 1.2, "float64"),
]  # fmt: skip
LR = 0.05
#: The start-up subtracted is its best of at least this many runs: from the best of 3, one
#: run measured it a third too long, and the short rows' ratios with it.
START_UP_RUNS = 10


def write_dataset(setting, path: Path) -> None:
    name, layers, loss, images, shape, weights, *_ = setting
    rng = np.random.default_rng(0)
    arrays = {"X": rng.random((images, *shape))}
    if loss == "bce":
        arrays["Y"] = (rng.random(images) < 0.5).astype(np.float64)
    else:
        arrays["Y"] = rng.integers(0, 10, size=images).astype(np.float64)
    for key, weight_shape in weights.items():
        arrays[key] = rng.normal(0.0, 0.05 if key.startswith("B") else 0.3, size=weight_shape)
    np.savez(path, layers=np.array(json.dumps(layers)), loss=np.array(loss), lr=np.array(LR), **arrays)


# -- PyTorch, in a process of its own ---------------------------------------------------------


def torch_child(data: Path, batch_size: int, epochs: int, out: Path, dtype: str = "float64") -> None:
    """Train as cnntrace does, time the loop, save the parameters; print the seconds."""
    import torch

    torch.set_num_threads(1)
    functional = torch.nn.functional
    archive = np.load(data)
    layers = json.loads(str(archive["layers"]))
    loss = str(archive["loss"])
    X = torch.from_numpy(archive["X"].astype(dtype))
    if X.ndim == 3:
        X = X.unsqueeze(1)
    Y = torch.from_numpy(archive["Y"])
    if loss == "cross_entropy":
        Y = Y.long()
    params = {key: torch.from_numpy(archive[key].astype(dtype)) for key in archive.files if key[0] in "WB"}
    # The reference form's shapes as the pass uses them: K×C×kh×kw filters, n_in×n_out.
    weights = []
    for key in sorted(params, key=lambda k: (int(k[1:]), k[0] == "B")):
        value = params[key]
        if key == "W1" and value.ndim == 2:
            value = value.reshape(1, 1, *value.shape)
        if key.startswith("B") and value.ndim == 0:
            value = value.reshape(1)
        if key.startswith("W") and value.ndim == 1:
            value = value.reshape(-1, 1)
        weights.append(value.clone().requires_grad_(True))

    def forward(x):
        w = iter(weights)
        for layer in layers:
            kind = layer if isinstance(layer, str) else layer["type"]
            if kind == "conv":
                x = functional.conv2d(x, next(w), next(w), padding=layer.get("padding", 0) if isinstance(layer, dict) else 0)
            elif kind == "relu":
                x = torch.relu(x)
            elif kind == "maxpool":
                x = functional.max_pool2d(x, layer["size"])
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif kind == "dense":
                x = x @ next(w) + next(w)
        return x  # the logits: the loss takes them, as cnntrace does

    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for first in range(0, len(Y), batch_size):
            logits = forward(X[first : first + batch_size])
            batch = Y[first : first + batch_size]
            if loss == "bce":
                L = functional.binary_cross_entropy_with_logits(logits.squeeze(1), batch)
            else:
                L = functional.cross_entropy(logits, batch)
            grads = torch.autograd.grad(L, weights)
            with torch.no_grad():
                for weight, grad in zip(weights, grads):
                    weight.sub_(LR * grad)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.savez(out, *[w.detach().numpy() for w in weights])
    print(seconds, cpu)


def run_torch(data: Path, batch_size: int, epochs: int, out: Path, dtype: str = "float64") -> tuple[float, float]:
    """(wall, CPU) seconds of PyTorch's loop."""
    command = [sys.executable, __file__, "--torch-child", str(data), str(batch_size), str(epochs), str(out), dtype]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **ONE_THREAD})
    wall, cpu = result.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def children_cpu() -> float:
    """The processor time (user and system) of this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cnntrace_command(data: Path, batch_size: int, epochs: int, dtype: str = "float64") -> list[str]:
    return [*CNNTRACE, "train", str(data), "--epochs", str(epochs), "--batch-size", str(batch_size),
            "--format", "json", "--dtype", dtype]  # fmt: skip


def start_up(runs: int) -> tuple[float, float, float]:
    """The best (wall, CPU) times of a cnntrace process that starts the train command and
    stops before its first step: ``train`` on a file that does not exist, which imports
    everything the command needs (numpy and the training modules) and then stops at the
    file, exit status 2. And the wall time of ``train --help`` (no numpy: less than a run
    pays), which earlier tables subtracted."""
    best, best_cpu, best_help = float("inf"), float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as directory:
        missing = [*CNNTRACE, "train", str(Path(directory) / "missing.npz"), "--epochs", "1"]
        for _ in range(max(runs, START_UP_RUNS)):
            start, cpu = time.perf_counter(), children_cpu()
            done = subprocess.run(missing, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **ONE_THREAD})  # fmt: skip
            best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, children_cpu() - cpu)
            if done.returncode != 2 or "no such file" not in done.stderr:
                raise SystemExit(f"train on a missing file: exit {done.returncode}, {done.stderr.strip()!r}")
            start = time.perf_counter()
            subprocess.run([*CNNTRACE, "train", "--help"], stdout=subprocess.DEVNULL, check=True,
                           env={**os.environ, **ONE_THREAD})  # fmt: skip
            best_help = min(best_help, time.perf_counter() - start)
    return best, best_cpu, best_help


def run_cnntrace(data: Path, batch_size: int, epochs: int, out: Path, dtype: str = "float64") -> tuple[float, float]:
    """(wall, CPU) seconds of the whole process; its JSON goes to ``out``."""
    with open(out, "wb") as stdout:
        start, cpu = time.perf_counter(), children_cpu()
        subprocess.run(cnntrace_command(data, batch_size, epochs, dtype), stdout=stdout, stderr=subprocess.DEVNULL,
                       check=True, env={**os.environ, **ONE_THREAD})  # fmt: skip
        return time.perf_counter() - start, children_cpu() - cpu


#: Runs a command and prints its peak resident size (KiB). A child's ru_maxrss starts from
#: the size of the process that forked it, so the command is forked from this small one,
#: not from the benchmark, which holds a dataset.
LAUNCHER = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_memory(data: Path, batch_size: int, epochs: int, dtype: str = "float64") -> int:
    """The cnntrace process's peak resident size in bytes: Python, the libraries and all."""
    command = [sys.executable, "-c", LAUNCHER, *cnntrace_command(data, batch_size, epochs, dtype)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **ONE_THREAD})
    return int(result.stdout.strip()) * 1024  # Linux gives kibibytes


def largest_difference(ours: Path, theirs: Path) -> float:
    """The largest difference between cnntrace's trained parameters (its JSON) and PyTorch's."""
    mine = json.loads(ours.read_text())["parameters"]
    other = np.load(theirs)
    keys = sorted(mine, key=lambda k: (int(k[1:]), k[0] == "B"))
    return max(float(np.max(np.abs(np.ravel(mine[k]) - other[f"arr_{i}"].ravel()))) for i, k in enumerate(keys))


def profile(data: Path, batch_size: int, epochs: int, dtype: str = "float64") -> None:
    """Run the cnntrace command once under cProfile; print the head of its report, the
    largest own times first."""
    command = cnntrace_command(data, batch_size, epochs, dtype)
    program = [sys.executable, "-m", "cProfile", "-s", "tottime", "-m", "cnntrace", *command[len(CNNTRACE):]]
    result = subprocess.run(program, capture_output=True, text=True, check=True, env={**os.environ, **ONE_THREAD})
    report = result.stdout[result.stdout.index("function calls"):].splitlines()
    print("\n".join(report[:40]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="run the settings whose name contains this")
    parser.add_argument("--profile", metavar="NAME", help="profile the cnntrace command of the settings so named")
    parser.add_argument("--torch-child", nargs=5, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.torch_child:
        data, batch, epochs, out, dtype = arguments.torch_child
        torch_child(Path(data), int(batch), int(epochs), Path(out), dtype)
        return
    if not arguments.profile:
        startup, startup_cpu, help_only = start_up(arguments.runs)
        print(f"cnntrace's start-up (train's imports, stopped at a missing file; best of {max(arguments.runs, START_UP_RUNS)}): "
              f"{startup:.3f} s, CPU {startup_cpu:.3f} s (train --help: {help_only:.3f} s); "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
        print("| training | cnntrace s (process) | PyTorch s (loop) | PyTorch / cnntrace | target "
              "| CPU s: cnntrace, PyTorch, ratio | peak memory |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for setting in SETTINGS:
            name, *_, batch_size, epochs, target, dtype = setting
            chosen = arguments.profile or arguments.only
            if chosen and chosen not in name:
                continue
            data, ours, theirs = folder / "data.npz", folder / "ours.json", folder / "theirs.npz"
            write_dataset(setting, data)
            if arguments.profile:
                print(f"## {name}")
                profile(data, batch_size, epochs, dtype)
                continue
            run_cnntrace(data, batch_size, epochs, ours, dtype)
            run_torch(data, batch_size, epochs, theirs, dtype)
            difference = largest_difference(ours, theirs)
            if difference > (1e-9 if dtype == "float64" else 1e-3):
                raise SystemExit(f"{name}: the two sides end {difference:.1e} apart: nothing to compare")
            archive = np.load(data)
            dataset_bytes = archive["X"].nbytes + archive["Y"].nbytes
            cnntrace_best = torch_best = cnntrace_cpu = torch_cpu = float("inf")
            for _ in range(arguments.runs):
                wall, cpu = run_cnntrace(data, batch_size, epochs, ours, dtype)
                cnntrace_best, cnntrace_cpu = min(cnntrace_best, wall), min(cnntrace_cpu, cpu)
                wall, cpu = run_torch(data, batch_size, epochs, theirs, dtype)
                torch_best, torch_cpu = min(torch_best, wall), min(torch_cpu, cpu)
            peak = peak_memory(data, batch_size, epochs, dtype)
            short = name.startswith("short")
            ratio = torch_best / (cnntrace_best - startup if short else cnntrace_best)
            cpu_ratio = torch_cpu / (cnntrace_cpu - startup_cpu if short else cnntrace_cpu)
            verdict = "" if target is None else f"≥ {target:g}× ({'met' if ratio >= target else 'missed'})"
            less = (f" ({cnntrace_best - startup:.3f} less start-up; {torch_best / (cnntrace_best - help_only):.2f}× "
                    "less train --help only)") if short else ""  # fmt: skip
            print(f"| {name} | {cnntrace_best:.3f}{less} | {torch_best:.3f} | {ratio:.2f}× | {verdict} "
                  f"| {cnntrace_cpu:.3f}, {torch_cpu:.3f}, {cpu_ratio:.2f}× "
                  f"| {peak / 2**20:.0f} MiB = {peak / dataset_bytes:.2f}× the data |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
