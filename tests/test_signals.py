"""Ctrl-C at any point of every command: exit status 130, "interrupted" on stderr, no
traceback, no output file left half-written; for ``train`` the README's guarantee.

"Any point" is made deterministic: each command runs in this process through the console
script's entry point (``cnntrace.__main__.main``, with ``cnntrace.cli`` imported afresh), and
a Ctrl-C arrives at the N-th call of a Python function, for N spread evenly over the whole
run, from the import of the command line through typer's parsing and the command to the
exit. A Ctrl-C is either a KeyboardInterrupt raised right there (what Python's own SIGINT
handler does) or a real SIGINT sent to this process, which whatever handler is installed
then answers (training installs its own). A few real SIGINTs also go to real processes, each
held at a chosen function until the signal arrives.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import io
import json
import os
import select
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import cnntrace
from tests.inputs import REFERENCE, SAMPLES

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")

# Python itself reports a KeyboardInterrupt raised in a finalizer (__del__, a weakref's
# callback such as the one importlib sets on each module lock, or the resumption of a
# generator being closed) as "Exception ignored" and goes on: such calls, and those made from
# __del__ and those callbacks, are not counted (those made from generators are). The garbage
# collector is off while a command runs, so that finalizers run at the same points every time.
GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
#: Finalizers by (module, function name): importlib's module locks go with a weakref callback.
FINALIZERS = {("importlib._bootstrap", "cb")}


def is_finalizer(frame) -> bool:
    code = frame.f_code
    return code.co_name == "__del__" or (frame.f_globals.get("__name__"), code.co_name) in FINALIZERS


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def send_sigint():
    signal.raise_signal(signal.SIGINT)


@dataclass
class Run:
    status: int | None
    stdout: str
    stderr: str
    calls: int  # Python function calls counted
    # Of each function in calls_of: the calls from its first call to its first return.
    spans: dict = field(default_factory=dict)


def run_entry(args, at: int | None = None, ctrl_c=raise_keyboard_interrupt, calls_of=()) -> Run:
    """Run ``cnntrace ARGS`` in this process through the console script's entry point, with
    ``ctrl_c()`` at the ``at``-th call of a Python function (never when ``at`` is None).

    ``calls_of`` names functions ("module.function") whose span is recorded in ``Run.spans``:
    the number of their first call, and of the last call made before it returned (or, a
    generator, first yielded). What the
    run changes (the loaded command line, signal handlers, sys.excepthook) is put back.
    """
    from cnntrace.__main__ import main

    count, spans, finalizing = 0, {}, 0

    def until_return(frame, event, arg):
        if event == "return" and spans[name_of(frame)][1] is None:  # a generator: its first yield
            spans[name_of(frame)][1] = count

    def until_finalized(frame, event, arg):
        nonlocal finalizing
        if event == "return":
            finalizing -= 1
        return until_finalized

    def trace(frame, event, arg):  # called at every call of a Python function
        nonlocal count, finalizing
        if is_finalizer(frame):
            finalizing += 1
            return until_finalized
        if not finalizing and not frame.f_code.co_flags & GENERATOR_FLAGS:
            count += 1
            if count == at:
                ctrl_c()
        if calls_of and name_of(frame) in calls_of and name_of(frame) not in spans:
            spans[name_of(frame)] = [count, None]
            return until_return
        return None

    saved_cli = sys.modules.pop("cnntrace.cli", None), cnntrace.__dict__.pop("cli", None)
    saved_handlers = {
        number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGPIPE)
    }
    saved = sys.argv, sys.excepthook, sys.gettrace()
    stdout, stderr = io.StringIO(), io.StringIO()
    sys.argv = ["cnntrace", *map(str, args)]
    status, collecting = None, gc.isenabled()
    gc.disable()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            sys.settrace(trace)
            try:
                main()
                status = 0
            except SystemExit as exit:
                status = 0 if exit.code is None else exit.code
            except BaseException:  # noqa: BLE001 - what a real process prints as a traceback
                sys.settrace(None)
                stderr.write(traceback.format_exc())
            finally:
                sys.settrace(saved[2])
    finally:
        if collecting:
            gc.enable()
        sys.argv, sys.excepthook = saved[:2]
        for number, handler in saved_handlers.items():
            signal.signal(number, handler)
        if saved_cli[0] is not None:
            sys.modules["cnntrace.cli"], cnntrace.cli = saved_cli
    return Run(status, stdout.getvalue(), stderr.getvalue(), count, spans)


def name_of(frame) -> str:
    return f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}"


def spread(total: int, points: int) -> list[int]:
    """The calls to interrupt at: the first few after the entry point's own, and ``points``
    more spread evenly up to the last call of the run (``total``)."""
    first = range(2, min(6, total + 1))
    return sorted({*first, *(2 + (total - 2) * index // points for index in range(1, points + 1))})


def warm_run(args, output: Path | None, **kwargs) -> Run:
    """An uninterrupted run, once what the command loads and caches is in place (its
    number of calls is then the same from run to run)."""
    for _ in range(2):
        run_entry(args)
    return fresh_run(args, output, **kwargs)


def fresh_run(args, output: Path | None, at: int | None = None, **kwargs) -> Run:
    """A run that writes ``output`` (if any) anew."""
    if output:
        output.unlink(missing_ok=True)
    return run_entry(args, at, **kwargs)


def assert_interrupted(run: Run, where):
    assert run.status == 130, (where, run.status, run.stderr[-2000:])
    assert "interrupted" in run.stderr, (where, run.stderr[-2000:])
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, (
        where,
        run.stderr,
    )


def stray_temporaries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".tmp"))


# -- every command, interrupted all along its run --------------------------------------------------


def commands(tmp_path: Path) -> dict[str, tuple[list, Path | None]]:
    """Each command to interrupt, and the file it writes (None: stdout only)."""
    answers, out = tmp_path / "answers.json", tmp_path / "out"
    return {
        "step table": (["step", REFERENCE, "--only", "A1,dL_dW1"], None),
        "step json": (["step", REFERENCE, "-f", "json"], None),
        "step ndjson, two files": (["step", REFERENCE, REFERENCE, "-f", "ndjson"], None),
        "step csv": (["step", REFERENCE, "-f", "csv", "--only", "Z1,dL_dW1"], None),
        "step markdown": (["step", REFERENCE, "-f", "markdown"], None),
        "step latex": (["step", REFERENCE, "-f", "latex", "--brief"], None),
        "step --html": (
            ["step", REFERENCE, "-f", "json", "--only", "A1,dL_dW1", "--html", out / "trace.html"],
            out / "trace.html",
        ),
        "step --svg": (
            ["step", REFERENCE, "--only", "P1", "--svg", out / "trace.svg"],
            out / "trace.svg",
        ),
        "check": (["check", REFERENCE], None),
        "check json": (["check", REFERENCE, "-f", "json"], None),
        "verify": (["verify", REFERENCE, answers], None),
        "explain": (["explain", REFERENCE, "dL_dW1[0,1]"], None),
        "explain json": (["explain", REFERENCE, "dL_dX[2,3]", "-f", "json"], None),
        "init": (["init", "--seed", "4"], None),
        "init -o": (["init", "--seed", "4", "-o", out / "exercise.json"], out / "exercise.json"),
        "schema": (["schema"], None),
        "train": (["train", SAMPLES / "bars.json", "-n", "3", "-b", "8"], None),
        "--help": (["--help"], None),
        "step --help": (["step", "--help"], None),
        "--version": (["--version"], None),
        "no arguments": ([], None),
        "a usage error": (["step", REFERENCE, "--precision", "99"], None),
        "a bad input file": (["step", SAMPLES / "README.md"], None),
    }


COMMANDS = list(commands(Path()))


def prepare(tmp_path: Path, command: str):
    """The command's arguments and output file, with what it reads in place."""
    (tmp_path / "out").mkdir()
    (tmp_path / "answers.json").write_text(run_entry(["step", REFERENCE, "-f", "json"]).stdout)
    return commands(tmp_path)[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_ctrl_c_anywhere_exits_130_without_a_traceback(tmp_path, command):
    args, output = prepare(tmp_path, command)
    complete = warm_run(args, output)
    expected = output.read_bytes() if output else None
    assert complete.status in (0, 1, 2) and "Traceback" not in complete.stderr
    for at in spread(complete.calls, 16):
        run = fresh_run(args, output, at)
        assert_interrupted(run, at)
        if output:
            # The file is not there, or it is whole: never half-written, no temporary left.
            assert not output.exists() or output.read_bytes() == expected, at
            assert stray_temporaries(output.parent) == [], at


@pytest.mark.parametrize(
    "args",
    [
        ["init", "--seed", "4", "-o", "{out}.json"],
        ["train", REFERENCE, "-n", "1", "--save", "{out}.npz"],
    ],
    ids=["init -o", "train --save npz"],
)
def test_ctrl_c_at_every_call_while_a_file_is_written(tmp_path, args):
    output = tmp_path / Path(str(args[-1]).format(out="written")).name
    args = [*args[:-1], output]
    complete = warm_run(args, output, calls_of=("cnntrace.io.write_atomic",))
    expected = output.read_bytes()
    start, end = complete.spans["cnntrace.io.write_atomic"]
    assert end - start > 20
    for at in range(start, end + 1):
        run = fresh_run(args, output, at)
        assert_interrupted(run, at)
        assert not output.exists() or output.read_bytes() == expected, at
        assert stray_temporaries(tmp_path) == [], at


# -- train: the README's promise -------------------------------------------------------------------


EPOCHS = 3


def trained_parameters(problem, epochs: int, batch_size: int) -> list[dict]:
    """The parameters after 0, 1, … ``epochs`` epochs, in the input's shapes."""
    from cnntrace import train

    history = [train.starting_parameters(problem)]
    history += [epoch.parameters for epoch in train.train(problem, epochs, batch_size=batch_size)]
    return [train.presented(problem, parameters) for parameters in history]


def saved_epoch(path: Path, history: list[dict], source: Path) -> int:
    """Which epoch's parameters the saved input ``path`` holds; its other keys must be the
    source's, and it must be an input that cnntrace reads."""
    from cnntrace.io import load_problem, read_input

    load_problem(path)
    saved, original = read_input(path), read_input(source)
    assert saved.keys() == original.keys()
    for key in original.keys() - set(PARAMETERS):
        assert np.array_equal(saved[key], original[key]), key
    matches = [
        epoch for epoch, parameters in enumerate(history)
        if all(np.array_equal(np.asarray(saved[name]), parameters[name]) for name in PARAMETERS)
    ]  # fmt: skip
    assert matches, "the saved parameters are those of no completed epoch"
    return matches[0]


def whole_ndjson_lines(stdout: str) -> int:
    """The number of NDJSON lines, each whole and numbered from epoch 1."""
    lines = stdout.splitlines(keepends=True)
    for number, line in enumerate(lines, 1):
        assert line.endswith("\n") and json.loads(line)["epoch"] == number
    return len(lines)


PARAMETERS = ("W1", "B1", "W2", "B2")


def test_train_saves_the_last_completed_epoch_wherever_ctrl_c_lands(tmp_path):
    """A Ctrl-C (SIGINT, as the keyboard sends it) at any point once training has begun: the
    mini-batch under way finishes, the last completed epoch is saved, status 130. Before
    training begins there is nothing to save and nothing is written."""
    from cnntrace.io import load_problem

    source = SAMPLES / "bars.json"
    out = tmp_path / "trained.json"
    args = ["train", source, "-n", EPOCHS, "-b", "8", "-f", "ndjson", "--save", out]
    history = trained_parameters(load_problem(source), EPOCHS, batch_size=8)
    complete = warm_run(args, out, calls_of=("cnntrace.cli._stop_on_ctrl_c", "cnntrace.network.forward_backward"))
    assert saved_epoch(out, history, source) == EPOCHS
    # Training begins when its Ctrl-C handler is in place: the last call before
    # _stop_on_ctrl_c yields comes after signal.signal set it (the first pass follows).
    training_begins = complete.spans["cnntrace.cli._stop_on_ctrl_c"][1]
    assert training_begins < complete.spans["cnntrace.network.forward_backward"][0]
    for at in spread(complete.calls, 24):
        run = fresh_run(args, out, at, ctrl_c=send_sigint)
        assert_interrupted(run, at)
        epochs = whole_ndjson_lines(run.stdout)
        assert stray_temporaries(tmp_path) == [], at
        if at < training_begins:
            assert not out.exists() and epochs == 0, at
            continue
        assert out.exists(), (at, run.stderr)
        assert saved_epoch(out, history, source) == epochs, at
        assert f"parameters to {out}" in run.stderr, at


def test_train_stopped_at_once_saves_a_completed_epoch_or_nothing(tmp_path):
    """A KeyboardInterrupt at any point (a second Ctrl-C, which stops at once): whatever is
    saved is a valid input holding a completed epoch, and stdout has whole NDJSON lines of
    the epochs that ended."""
    from cnntrace.io import load_problem

    source = SAMPLES / "bars.json"
    out = tmp_path / "trained.npz"
    args = ["train", source, "-n", EPOCHS, "-b", "8", "-f", "ndjson", "--save", out]
    history = trained_parameters(load_problem(source), EPOCHS, batch_size=8)
    complete = warm_run(args, out)
    for at in spread(complete.calls, 24):
        run = fresh_run(args, out, at)
        assert_interrupted(run, at)
        epochs = whole_ndjson_lines(run.stdout)
        assert stray_temporaries(tmp_path) == [], at
        if out.exists():
            # The epoch whose line was about to be written when the interrupt came is saved.
            assert saved_epoch(out, history, source) in (epochs, epochs + 1), at


# -- real SIGINTs to real processes ----------------------------------------------------------------

# Runs cnntrace's entry point and, at the first call of the function named in argv[1], says
# "ready" on the file descriptor in argv[2] and waits on stdin: a SIGINT that Python's own
# handler turns into a KeyboardInterrupt ends the wait there; one that training's handler
# notes lets it go on once the test writes a line.
HELD_AT = r"""
import os, sys
where, ready = sys.argv[1], int(sys.argv[2])
sys.argv = ["cnntrace", *sys.argv[3:]]

def hold(frame, event, arg):
    if f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}" == where:
        sys.settrace(None)
        os.write(ready, b"ready")
        sys.stdin.readline()

sys.settrace(hold)
from cnntrace.__main__ import main
main()
"""


def sigint_while_held(where: str, args, presses: int = 1) -> subprocess.CompletedProcess:
    """Run cnntrace ARGS in a process held at the first call of ``where``; send it
    ``presses`` SIGINTs."""
    ready_read, ready_write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", HELD_AT, where, str(ready_write), *map(str, args)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        pass_fds=[ready_write],
    )  # fmt: skip
    os.close(ready_write)
    try:
        assert select.select([ready_read], [], [], 120)[0], f"{where} was not reached in 2 minutes"
        assert os.read(ready_read, 5) == b"ready", f"{where} was never called"
        for _ in range(presses):
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate("go\n", timeout=120)
    finally:
        os.close(ready_read)
        process.kill()
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    ("where", "args"),
    [
        ("cnntrace.cli.<module>", ["step", REFERENCE]),
        ("typer.main.get_command", ["--help"]),
        ("cnntrace.io.load_problem", ["step", REFERENCE, "-f", "json"]),
        ("cnntrace.render.table.render", ["step", REFERENCE]),
        ("cnntrace.gradcheck.check", ["check", REFERENCE]),
    ],
    ids=["loading the command line", "typer building the commands", "reading the input",
         "rendering tables", "checking gradients"],
)  # fmt: skip
def test_a_real_sigint_exits_130_without_a_traceback(where, args):
    result = sigint_while_held(where, args)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "cnntrace: interrupted\n" and result.stdout == ""


def test_a_real_sigint_while_init_writes_leaves_no_file(tmp_path):
    out = tmp_path / "exercise.json"
    result = sigint_while_held("cnntrace.io.write_atomic", ["init", "-o", out])
    assert result.returncode == 130 and result.stderr == "cnntrace: interrupted\n"
    assert list(tmp_path.iterdir()) == []


# -- SIGPIPE ---------------------------------------------------------------------------------------


def test_train_ndjson_into_a_reader_that_goes_away_ends_quietly(tmp_path):
    # The reader takes one line and goes; the next epoch's line ends cnntrace, without a
    # word, as it ends `cat`. Nothing is saved then: the previous file stays as it was.
    out = tmp_path / "trained.json"
    out.write_text("previous")
    result = subprocess.run(
        f"{sys.executable} -m cnntrace train {SAMPLES / 'bars.json'} --epochs 1000000 -f ndjson "
        f"--save {out} | head -1",
        shell=True, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert json.loads(result.stdout)["epoch"] == 1
    assert result.stderr == ""
    assert out.read_text() == "previous" and sorted(tmp_path.iterdir()) == [out]


def test_ctrl_c_while_train_saves_waits_for_the_file(tmp_path):
    # Ctrl-C, even twice, while the trained parameters are being written: the file is
    # written whole, and the status says training was interrupted.
    from cnntrace.io import load_problem

    source, out = SAMPLES / "bars.json", tmp_path / "trained.json"
    args = ["train", source, "-n", EPOCHS, "-b", "8", "-f", "ndjson", "--save", out]
    result = sigint_while_held("cnntrace.io.write_atomic", args, presses=2)
    assert result.returncode == 130, result.stderr
    assert result.stderr == (
        f"cnntrace: {source}: interrupted after {EPOCHS} of {EPOCHS} epochs; "
        f"saved the trained parameters to {out}\n"
    )
    assert whole_ndjson_lines(result.stdout) == EPOCHS
    history = trained_parameters(load_problem(source), EPOCHS, batch_size=8)
    assert saved_epoch(out, history, source) == EPOCHS
    assert stray_temporaries(tmp_path) == []
