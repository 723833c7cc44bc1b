"""Time and peak memory of cnntrace on large inputs: a 600×600 image and a 20,000-image dataset.

    python benchmarks/scale.py            # about two minutes
    python benchmarks/scale.py --all      # also the 600×600 page and the whole 20,000-image
                                          # trace as JSON (minutes)
    python benchmarks/scale.py --growth   # how each command grows with image size, batch and filters

``--growth`` runs one small network (conv K 3×3 filters with padding 1 → ReLU → 2×2
max-pool → flatten → dense 10 → softmax, cross-entropy) while one of image side, batch or
filters K grows and the others stay at 28, 4 and 8, through ``step --format json``, the
piped table, ``explain`` of one dL/dW1 entry (a sum over every image and position), ``check``
of 200 entries of each tensor and one epoch of ``train``, and then the smallest image side the size guard refuses.

Each command runs as the shell runs it (the console script, stdout into a pipe that is read
and counted), and its wall time and peak resident memory (from the kernel, per process)
are printed as a Markdown table. The inputs are made in a temporary directory from fixed
seeds: the 600×600 image with one 3×3 filter and 2×2 pooling (F has 89,401 entries), and
20,000 random 28×28 images with one 3×3 filter (F has 169), the shapes of the reference
settings of benchmarks/train_process.py. The resource model's refusals are timed on a
2000×2000 image (explain) and a 1000×1000 one (the page), as .npz files; verify on a
500×500 image, whose whole trace as answers fits verify's 32 MiB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_inputs(directory: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    image = directory / "image600.json"
    image.write_text(json.dumps({
        "X": rng.uniform(0, 1, (600, 600)).round(3).tolist(), "Y": 1,
        "W1": rng.normal(0, 0.5, (3, 3)).round(2).tolist(), "B1": 0.1,
        "W2": (rng.normal(0, 0.01, 299 * 299)).round(4).tolist(), "B2": 0.0,
    }))  # fmt: skip
    dataset = directory / "images20000.npz"
    M = 20_000
    np.savez(
        dataset, X=rng.uniform(0, 1, (M, 28, 28)), Y=(rng.uniform(size=M) > 0.5).astype(float),
        W1=rng.normal(0, 0.3, (3, 3)), B1=0.0, W2=rng.normal(0, 0.05, 13 * 13), B2=0.0, lr=0.1,
    )  # fmt: skip
    answered = directory / "image500.json"  # step's whole output for it fits verify's 32 MiB
    answered.write_text(json.dumps({
        "X": rng.uniform(0, 1, (500, 500)).round(3).tolist(), "Y": 1,
        "W1": rng.normal(0, 0.5, (3, 3)).round(2).tolist(), "B1": 0.1,
        "W2": (rng.normal(0, 0.01, 249 * 249)).round(4).tolist(), "B2": 0.0,
    }))  # fmt: skip
    large = {}
    for n in (1000, 2000):
        large[n] = directory / f"image{n}.npz"
        np.savez(large[n], X=rng.uniform(0, 1, (n, n)), Y=1.0, W1=rng.normal(0, 0.5, (3, 3)), B1=0.1,
                 W2=rng.normal(0, 0.01, ((n - 2) // 2) ** 2), B2=0.0)  # fmt: skip
    return {"image": image, "dataset": dataset, "image500": answered, "image1000": large[1000],
            "image2000": large[2000]}  # fmt: skip


def answers(cnntrace: str, image: str, directory: Path) -> tuple[str, str]:
    """(right, wrong) answers for ``image``: step's whole output, and every entry of it
    changed (×1.5 + 0.3), which verify diagnoses."""
    step = json.loads(subprocess.run([cnntrace, "step", image, "-f", "json"], capture_output=True, check=True).stdout)
    matrices = {name: value for section in ("forward", "backward") for name, value in step[section].items()}
    right, wrong = directory / "right.json", directory / "wrong.json"
    right.write_text(json.dumps(matrices))
    wrong.write_text(json.dumps({name: (np.asarray(value) * 1.5 + 0.3).tolist() for name, value in matrices.items()}))
    return str(right), str(wrong)


#: Runs a command and prints its wall seconds, peak resident KiB, bytes written to stdout and
#: exit status. A child's ru_maxrss starts from the size of the process that forked it, so
#: the command is forked from this small one, not from this script, which made the inputs.
LAUNCHER = """
import resource, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
written = 0
while chunk := process.stdout.read(1 << 20):
    written += len(chunk)
status = process.wait()
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, written, status)
"""


def measure(command: list[str]) -> tuple[float, float, int, int]:
    """Wall seconds, peak resident MiB, bytes written to stdout, exit status."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, check=True)
    seconds, peak, written, status = result.stdout.split()
    return float(seconds), int(peak) / 1024, int(written), int(status)


def growth_input(directory: Path, side: int, batch: int, filters: int) -> Path:
    """The growth network at one size, as an .npz (seeded, He-scaled weights)."""
    rng = np.random.default_rng(0)
    flat = filters * (side // 2) ** 2
    path = directory / f"growth-{side}-{batch}-{filters}.npz"
    layers = [{"type": "conv", "padding": 1}, "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "softmax"]
    np.savez(
        path, layers=np.array(json.dumps(layers)), loss=np.array("cross_entropy"), lr=np.array(0.01),
        X=rng.random((batch, 1, side, side)), Y=rng.integers(0, 10, size=batch).astype(np.float64),
        W1=rng.normal(0, np.sqrt(2 / 9), (filters, 1, 3, 3)), B1=np.zeros(filters),
        W2=rng.normal(0, np.sqrt(2 / flat), (flat, 10)), B2=np.zeros(10),
    )  # fmt: skip
    return path


GROWTH_COMMANDS = {
    "step --format json": lambda path: ["step", path, "--format", "json"],
    "step (table, piped)": lambda path: ["step", path],
    "explain dL_dW1[0,0,1,1]": lambda path: ["explain", path, "dL_dW1[0,0,1,1]"],
    "check --max-entries 200": lambda path: ["check", path, "--max-entries", "200"],
    "train --epochs 1": lambda path: ["train", path, "--epochs", "1", "-f", "json"],
}
GROWTH = {  # what grows: its values, the other two held at side 28, batch 4, filters 8
    "side": (28, 56, 112, 224, 448),
    "batch": (1, 16, 64, 256, 1024),
    "filters": (2, 8, 32, 128),
}


def growth(cnntrace: str, directory: Path) -> None:
    print("| grows | value | " + " | ".join(f"{name} s / MiB" for name in GROWTH_COMMANDS) + " |")
    print("|---|---:|" + "---:|" * len(GROWTH_COMMANDS))
    for what, values in GROWTH.items():
        for value in values:
            size = {"side": 28, "batch": 4, "filters": 8, what: value}
            path = str(growth_input(directory, **size))
            cells = []
            for command in GROWTH_COMMANDS.values():
                seconds, peak, _written, status = measure([cnntrace, *command(path)])
                cells.append(f"{seconds:.2f} / {peak:.0f}" + ("" if status == 0 else f" (exit {status})"))
            print(f"| {what} | {value:,} | " + " | ".join(cells) + " |", flush=True)
    side = 512
    while True:  # the smallest side (doubling, then halving the step) that step refuses
        _seconds, _peak, _written, status = measure([cnntrace, "step", str(growth_input(directory, side, 4, 8)),
                                                     "--only", "L"])  # fmt: skip
        if status != 0:
            break
        side *= 2
    low, high = side // 2, side
    while high - low > 64:
        middle = (low + high) // 2
        _seconds, _peak, _written, status = measure([cnntrace, "step", str(growth_input(directory, middle, 4, 8)),
                                                     "--only", "L"])  # fmt: skip
        low, high = (low, middle) if status != 0 else (middle, high)
    refused = subprocess.run([cnntrace, "step", str(growth_input(directory, high, 4, 8)), "--only", "L"],
                             capture_output=True, text=True)  # fmt: skip
    print(f"\n`step` is refused from a side of about {high} (batch 4, 8 filters; accepted at {low}): "
          f"{refused.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also trace the whole dataset as JSON")
    parser.add_argument("--growth", action="store_true", help="how time and memory grow with side, batch, filters")
    args = parser.parse_args()
    cnntrace = shutil.which("cnntrace") or sys.exit("install cnntrace first: pip install -e .")
    if args.growth:
        with tempfile.TemporaryDirectory() as tmp:
            growth(cnntrace, Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        image, dataset = str(inputs["image"]), str(inputs["dataset"])
        answered = str(inputs["image500"])
        right, wrong = answers(cnntrace, answered, Path(tmp))
        runs = [
            ("600×600: step --format json", ["step", image, "--format", "json"]),
            ("600×600: step (table, summarized)", ["step", image]),
            ("600×600: step --format csv", ["step", image, "--format", "csv"]),
            ("600×600: train --epochs 10", ["train", image, "--epochs", "10", "-f", "json"]),
            ("600×600: explain dL_dW1[0,0] (357,604 terms)", ["explain", image, "dL_dW1[0,0]"]),
            ("600×600: sheet --key", ["sheet", image, "--key"]),
            ("500×500: verify step's whole output", ["verify", answered, right]),
            ("500×500: verify it all wrong (diagnosed)", ["verify", answered, wrong]),
            ("2000×2000: explain dL_dW1[0,0] (refused)", ["explain", str(inputs["image2000"]), "dL_dW1[0,0]"]),
            ("1000×1000: step --html", ["step", str(inputs["image1000"]), "--html", f"{tmp}/page.html"]),
            ("20,000 images: step --only L (the whole trace held)", ["step", dataset, "--only", "L"]),
            ("20,000 images: step (table, summarized)", ["step", dataset]),
            ("20,000 images: train --epochs 5, full batch", ["train", dataset, "--epochs", "5", "-f", "json"]),
            ("20,000 images: train --epochs 5 --batch-size 32", ["train", dataset, "--epochs", "5", "-b", "32", "-f", "json"]),
        ]  # fmt: skip
        if args.all:
            runs.append(("600×600: step --html (the page)", ["step", image, "-f", "json", "--html", f"{tmp}/page.html"]))
            runs.append(("20,000 images: step --format json", ["step", dataset, "--format", "json"]))
        print(f"dataset file: {Path(dataset).stat().st_size / 2**20:.0f} MiB")
        print("| command | seconds | peak RSS (MiB) | stdout (MiB) |")
        print("|---|---:|---:|---:|")
        for label, command in runs:
            seconds, peak, written, status = measure([cnntrace, *command])
            flag = "" if status == 0 else f" (exit {status})"
            print(f"| {label}{flag} | {seconds:.2f} | {peak:.0f} | {written / 2**20:.2f} |", flush=True)


if __name__ == "__main__":
    main()
