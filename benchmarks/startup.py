"""Start-up time of cnntrace against the imports it cannot avoid. Run by hand, never in CI:

    python benchmarks/startup.py [--runs 20]

Each command runs --runs times, interleaved so that the machine's state affects all alike;
the table gives the minimum and the median wall time of each, and the ratio of the minima to
the baseline's. The targets: `step --format json` at most 1.2x the baseline that imports
numpy, typer and rich's console and table; `--version` at most 1.3x importing typer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The console script, as users run it; `python -m cnntrace` where it is not installed.
SCRIPT = Path(PYTHON).with_name("cnntrace")
CNNTRACE = [str(SCRIPT)] if SCRIPT.exists() else [PYTHON, "-m", "cnntrace"]

PAIRS = [
    (
        "step samples/reference.json --format json",
        [*CNNTRACE, "step", str(ROOT / "samples" / "reference.json"), "--format", "json"],
        "import numpy, typer, rich.console, rich.table",
        [PYTHON, "-c", "import numpy, typer, rich.console, rich.table"],
        1.2,
    ),
    (
        "--version",
        [*CNNTRACE, "--version"],
        "import typer",
        [PYTHON, "-c", "import typer"],
        1.3,
    ),
    (
        "--help",
        [*CNNTRACE, "--help"],
        "import typer",
        [PYTHON, "-c", "import typer"],
        None,
    ),
]


#: As an installed copy runs: from byte-compiled modules (pip compiles them on install), even
#: where the shell sets PYTHONDONTWRITEBYTECODE, which would make every run compile the source.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENVIRONMENT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs

    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "cnntrace")], check=True, env=ENVIRONMENT)
    print(f"python {sys.version.split()[0]}, {runs} runs each, interleaved\n")
    print(f"{'command':50} {'min ms':>8} {'median':>8}   {'baseline':45} {'min ms':>8} {'median':>8} {'ratio':>6} {'target':>7}")
    for name, command, base_name, baseline, target in PAIRS:
        wall_time(command), wall_time(baseline)  # warm the file cache
        ours, theirs = [], []
        for _ in range(runs):
            ours.append(wall_time(command))
            theirs.append(wall_time(baseline))
        ratio = min(ours) / min(theirs)
        verdict = "" if target is None else (f"≤{target}" + (" ok" if ratio <= target else " MISSED"))
        print(
            f"cnntrace {name:41} {1000 * min(ours):8.1f} {1000 * statistics.median(ours):8.1f}   "
            f"{base_name:45} {1000 * min(theirs):8.1f} {1000 * statistics.median(theirs):8.1f} "
            f"{ratio:6.2f} {verdict:>7}"
        )


if __name__ == "__main__":
    main()
