"""The views of four networks of the sizes people use, at batch 4: time, peak memory, size.
Run by hand, never in CI:

    python benchmarks/views.py [--runs 3] [--html]

Writes LeNet-5, cs231n's ThreeLayerConvNet, Tiny VGG and a stride-2 MNIST net (see
networks.py) and runs, as the shell runs them, ``cnntrace step FILE --format json`` and
``cnntrace step FILE`` into a pipe (the table view), interleaved, ``--runs`` times each; the
table gives each command's best wall time, its peak resident size (forked from a small
launcher, Linux only) and its output's size and widest line. ``--html`` adds ``step FILE
--format json --html PAGE`` once each (the JSON to stdout included, as in the rows above). ``--before DIR`` runs
the same commands from another checkout of cnntrace (``git archive main | tar -x -C DIR``),
interleaved with this one's, for a before-and-after in one run. ``--browser`` (with
``--html``) opens each page in headless Chromium (selenium, ``/usr/bin/chromium`` and
``chromedriver``) and gives the seconds from the request to the load event, to the page's
numbers read (``<html data-ready>``) and to the explanation of a click on dL/dW1's first entry.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import networks  # noqa: E402

SCRIPT = Path(sys.executable).with_name("cnntrace")
CNNTRACE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "cnntrace"]
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
ENVIRONMENT = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "COLUMNS")},
               **ONE_THREAD}  # fmt: skip
LAUNCHER = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def timed(command: list[str], out: Path, environment=ENVIRONMENT) -> float:
    with open(out, "wb") as stdout:
        start = time.perf_counter()
        subprocess.run(command, stdout=stdout, stderr=subprocess.DEVNULL, check=True, env=environment)
        return time.perf_counter() - start


def peak(command: list[str], environment=ENVIRONMENT) -> int:
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True,
                            check=True, env=environment)  # fmt: skip
    return int(result.stdout.strip()) * 1024


def widest(path: Path) -> int:
    with open(path, "rb") as lines:
        return max((len(line.rstrip(b"\n").decode()) for line in lines), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--html", action="store_true", help="also time the --html page, once each")
    parser.add_argument("--before", type=Path, metavar="DIR", help="another checkout to run alongside")
    parser.add_argument("--browser", action="store_true", help="with --html: open each page in headless Chromium")
    options = parser.parse_args()
    browser = chromium() if options.browser and options.html else None
    sides = {"": (CNNTRACE, ENVIRONMENT)}
    if options.before:
        # -P: the working directory (this checkout, when run from its top) is not put first
        # on the path, where it would shadow PYTHONPATH's checkout.
        module = [sys.executable, "-P", "-m", "cnntrace"]
        sides = {"before: ": (module, {**ENVIRONMENT, "PYTHONPATH": str(options.before)}),
                 "after: ": (module,
                             {**ENVIRONMENT, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})}  # fmt: skip
    print("| network (batch 4) | view | best s | of runs | peak RSS MiB | output MiB | widest line |")
    print("|---|---|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for name, path in networks.write(folder).items():
            views = {}
            for side, (program, environment) in sides.items():
                views[f"{side}json"] = ([*program, "step", str(path), "--format", "json"], environment)
                views[f"{side}table, piped"] = ([*program, "step", str(path)], environment)
            times: dict[str, list[float]] = {view: [] for view in views}
            out = folder / "out"
            for _ in range(options.runs):
                for view, (command, environment) in views.items():
                    times[view].append(timed(command, out, environment))
            for view, (command, environment) in views.items():
                timed(command, out, environment)
                runs = ", ".join(f"{t:.2f}" for t in sorted(times[view]))
                print(f"| {name} | {view} | {min(times[view]):.2f} | {runs} | {peak(command, environment) / 2**20:.0f} "
                      f"| {out.stat().st_size / 2**20:.1f} | {widest(out)} |", flush=True)  # fmt: skip
            if options.html:
                page = folder / "page.html"
                command = [*CNNTRACE, "step", str(path), "--format", "json", "--html", str(page)]
                seconds = timed(command, out)
                print(f"| {name} | --html | {seconds:.1f} | 1 | {peak(command) / 2**20:.0f} "
                      f"| {page.stat().st_size / 2**20:.1f} | |", flush=True)  # fmt: skip
                if browser is not None:
                    print(f"| {name} | Chromium: {opened(browser, page)} | | | | | |", flush=True)
    if browser is not None:
        browser.quit()


def chromium():
    """Headless Chromium through selenium, offline, at a laptop's window size."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1366,768",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='cnntrace-bench-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def opened(browser, page: Path) -> str:
    """'load 0.52 s, numbers read 0.61 s, a click on dL/dW1 explained 0.19 s'."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    browser.get(page.as_uri())  # returns at the load event
    loaded = time.perf_counter() - start
    WebDriverWait(browser, 60, poll_frequency=0.01).until(
        lambda b: b.execute_script("return document.documentElement.dataset.ready"))
    ready = time.perf_counter() - start
    # Its stage brought into view: the page draws a large matrix's table as it comes near.
    stage = browser.find_element(By.CSS_SELECTOR, 'article.stage[data-name="dL_dW1"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", stage)
    cell = WebDriverWait(browser, 60, poll_frequency=0.01).until(
        lambda b: b.find_element(By.CSS_SELECTOR, '[data-term="dL_dW1[0,0,0,0]"]'))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    start = time.perf_counter()
    cell.click()
    WebDriverWait(browser, 60, poll_frequency=0.01).until(
        lambda b: b.execute_script("return document.getElementById('explanation').textContent.includes('dL/dW1')"))
    return f"load {loaded:.2f} s, numbers read {ready:.2f} s, a click on dL/dW1 explained {time.perf_counter() - start:.2f} s"


if __name__ == "__main__":
    main()
