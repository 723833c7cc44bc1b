"""A long JSON trace written on several processors: the same bytes as one process writes,
whatever its children do."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import cnntrace
from cnntrace.render import View, parallel
from cnntrace.render import csv as render_csv
from cnntrace.render import json as render_json

forks = pytest.mark.skipif(not hasattr(os, "fork"), reason="the system does not fork")


def batch_trace(images=6, side=20):
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, (images, side, side))
    n = ((side - 2) // 2) ** 2
    return cnntrace.trace(X, [1.0, 0.0] * (images // 2), rng.normal(size=(4, 3, 3)), rng.normal(size=4) * 0.1,
                          rng.normal(size=4 * n) * 0.1, 0.0)  # fmt: skip


def one_process(trace, view=View(), with_file=False) -> str:
    data = render_json.trace_dict(trace, view)
    with_file = with_file or view.file is not None
    return json.dumps({"file": view.file, **data} if with_file else data, separators=(",", ":")) + "\n"


@pytest.fixture
def processes(monkeypatch):
    """Every trace is long enough for ``count`` processes."""

    def use(count: int) -> None:
        monkeypatch.setattr(parallel, "PARALLEL_FROM", 1)
        monkeypatch.setattr(parallel, "processors", lambda: count)

    return use


@forks
@pytest.mark.parametrize("count", [2, 3, 8])
@pytest.mark.parametrize("view", [View(), View(file="in.json"), View(only=("dL_dX", "L"))])
def test_several_processes_write_the_bytes_one_writes(processes, count, view):
    trace = batch_trace()
    processes(count)
    assert parallel.how_many(10**6) == count
    assert "".join(render_json.render(trace, view)) == one_process(trace, view)
    assert "".join(render_json.render_ndjson(trace, view)) == one_process(trace, view, with_file=True)


@forks
@pytest.mark.parametrize("view", [View(), View(file="in, out.json", columns=render_csv.HEADER_MANY),
                                  View(file="données → ∂L.json", columns=render_csv.HEADER_MANY)])
def test_csv_from_several_processes_is_the_csv_of_one(processes, monkeypatch, view):
    trace = batch_trace()
    monkeypatch.setattr(parallel, "processors", lambda: 1)
    one = "".join(render_csv.render(trace, view))
    processes(3)
    assert "".join(render_csv.render(trace, view)) == one
    assert one.count("\n") > 1000


@forks
def test_children_really_make_their_parts(processes, monkeypatch):
    """The parts after the first come from other processes (each child's pid in its text)."""
    processes(3)
    parent = os.getpid()
    made = [lambda: ["a", str(os.getpid())], lambda: ["b", str(os.getpid())], lambda: [str(os.getpid())]]
    pieces = list(parallel.in_order(made))
    assert pieces[:2] == ["a", str(parent)]
    children = "".join(pieces[2:])
    assert children.startswith("b") and str(parent) not in children


@forks
def test_text_that_is_not_ascii_comes_back_whole_across_blocks(processes, monkeypatch):
    """A child's text is read back in blocks; a character split between two is whole."""
    processes(2)
    monkeypatch.setattr(parallel, "BLOCK", 3)
    text = "∂L/∂W1 = 0.25, données, ∑ " * 50
    made = "".join(parallel.in_order([lambda: ["a"], lambda: [text, f"|{os.getpid()}"]]))
    assert made.startswith("a" + text + "|") and made != f"a{text}|{os.getpid()}"  # made by the child


@forks
def test_a_failing_child_part_is_made_here_instead(processes):
    parent = os.getpid()

    def fails_in_a_child():
        if os.getpid() != parent:
            raise MemoryError
        return ["made", "here"]

    def killed_in_a_child():
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return ["also"]

    assert list(parallel.in_order([lambda: ["first"], fails_in_a_child, killed_in_a_child])) == [
        "first", "made", "here", "also"]  # fmt: skip


def test_without_fork_or_a_temporary_file_one_process_writes(monkeypatch):
    trace = batch_trace()
    monkeypatch.setattr(parallel, "PARALLEL_FROM", 1)
    monkeypatch.delattr(os, "fork", raising=False)
    assert parallel.how_many(10**9) == 1
    assert "".join(render_json.render(trace)) == one_process(trace)

    import tempfile

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_room)
    assert list(parallel.in_order([lambda: ["a"], lambda: ["b"]])) == ["a", "b"]


@forks
def test_a_reader_that_stops_early_leaves_no_child_behind(processes):
    processes(2)
    started = []
    real = parallel._started

    def recorded(part):
        pid, file = real(part)
        started.append(pid)
        return pid, file

    parallel._started = recorded
    try:
        pieces = parallel.in_order([lambda: ["first", "second"], lambda: iter(lambda: "x" * 1000, None)])
        assert next(pieces) == "first"
        pieces.close()  # as when stdout's reader goes away
    finally:
        parallel._started = real
    (pid,) = started
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie, no child still writing


LINUX_PROC = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc to see a process")


def ended(pid: int) -> bool:
    """Whether process ``pid`` is gone or a zombie (ended, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


#: A process that starts one child on a part without end, says the child's pid, then waits.
PARENT = """
import sys, time
from cnntrace.render import parallel
parallel.PARALLEL_FROM = 1
real = parallel._started
def told(part):
    pid, file = real(part)
    print(pid, flush=True)
    return pid, file
parallel._started = told
def waiting():
    time.sleep(120)
    yield "x"
next(parallel.in_order([waiting, lambda: iter(lambda: "x" * 1000, None)]))
"""


@forks
@LINUX_PROC
def test_a_child_ends_with_a_parent_killed_outright(tmp_path):
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.2)
        assert not ended(child)  # writing its part without end
    finally:
        parent.kill()  # SIGKILL: the parent's own cleanup never runs
        parent.wait()
    deadline = time.monotonic() + 10
    while not ended(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = not ended(child)
    if survived:
        os.kill(child, signal.SIGKILL)  # not left writing without end
    assert not survived


def test_parts_split_by_cost_in_order():
    assert parallel.split([5, 5, 5, 5], 2) == [slice(0, 2), slice(2, 4)]
    assert parallel.split([1, 1, 10], 2) == [slice(0, 2), slice(2, 3)]
    assert parallel.split([10], 4) == [slice(0, 1)]
    assert parallel.split([0, 0, 0], 3) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    for costs in ([3, 1, 4, 1, 5, 9, 2, 6], [100, 1, 1, 1], [1] * 50):
        for count in range(1, 6):
            parts = parallel.split(costs, count)
            assert 1 <= len(parts) <= count
            assert [i for part in parts for i in range(len(costs))[part]] == list(range(len(costs)))


def test_short_work_stays_in_one_process():
    assert parallel.how_many(parallel.PARALLEL_FROM - 1) == 1
