"""Text made on several processors at once, written in order.

Writing a trace as JSON is mostly Python's float repr (about half a microsecond a number,
the shortest text that reads back to the same float64): a batch of cs231n's
ThreeLayerConvNet is 2.4 million numbers. The parts of a long output are made at the same
time, each after the first in a forked process writing into an unnamed temporary file, and
read back in order; the text is the same, byte for byte, as one process makes it. A part
whose process fails (no fork, no temporary file, a signal) is made here instead.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import accumulate

#: Fewer units of work than this (numbers to write, about) are made in one process: a fork
#: and a temporary file cost a few milliseconds.
PARALLEL_FROM = 200_000
#: At most this many processes, the caller's included.
MOST_PROCESSES = 8
#: Each child's text is read back in blocks of this many bytes.
BLOCK = 1 << 20

Part = Callable[[], Iterable[str]]


def processors() -> int:
    """The processors this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def split(costs: list[int], parts: int) -> list[slice]:
    """At most ``parts`` consecutive slices of the items, none empty, each cut where the
    running sum of ``costs`` comes nearest its share of the total."""
    total, running = sum(costs), list(accumulate(costs))
    cuts = []
    for share in range(1, parts):
        goal = total * share / parts
        # Cutting before item i leaves running[i - 1] before the cut; cuts only go forward.
        cut = min(range(cuts[-1] + 1 if cuts else 1, len(costs)), key=lambda i: abs(running[i - 1] - goal), default=None)
        if cut is None:
            break
        cuts.append(cut)
    bounds = [0, *cuts, len(costs)]
    return [slice(start, end) for start, end in zip(bounds, bounds[1:])]


def how_many(cost: int) -> int:
    """How many processes ``cost`` units of work are worth."""
    if cost < PARALLEL_FROM or not hasattr(os, "fork"):
        return 1
    return max(1, min(processors(), MOST_PROCESSES, cost * 2 // PARALLEL_FROM))


def in_order(parts: list[Part]) -> Iterator[str]:
    """The pieces of text of every part, in order: the first made here as they are
    read, the others made meanwhile in forked processes."""
    children, running = [], set()
    try:
        for part in parts[1:]:
            pid, file = _started(part)
            children.append((part, pid, file))
            if pid is not None:
                running.add(pid)
        yield from parts[0]() if parts else ()
        for part, pid, file in children:
            made = pid is not None and _succeeded(pid)
            running.discard(pid)
            if made:
                file.seek(0)
                text = codecs.getincrementaldecoder("utf-8")()  # a block may end inside a character
                while block := file.read(BLOCK):
                    yield text.decode(block)
                yield text.decode(b"", final=True)
            else:
                yield from part()
    finally:
        for _, pid, file in children:
            if pid in running:
                _stop(pid)
            if file is not None:
                file.close()


def _started(part: Part):
    """(pid, file): ``part`` being written into an unnamed temporary file by a forked
    process; (None, None) where either cannot be had."""
    import tempfile
    import warnings

    try:
        file = tempfile.TemporaryFile()
    except OSError:
        return None, None
    parent, end_with_parent = os.getpid(), _death_signal()
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns of forking beside threads (BLAS's, a progress line's): the
            # child touches no lock they may hold, only its own text and file.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        file.close()
        return None, None
    if pid == 0:
        if end_with_parent is not None:
            end_with_parent()
            if os.getppid() != parent:  # the parent ended before the call
                os._exit(1)
        _child(part, file.fileno())
    return pid, file


@lru_cache(maxsize=1)
def _death_signal() -> Callable[[], object] | None:
    """What a child calls to be killed when its parent ends, however the parent ends (Linux's
    prctl(PR_SET_PDEATHSIG, SIGKILL)): a parent killed outright (SIGKILL, a closed
    terminal's SIGHUP) leaves no child writing a part that no one will read. None where the
    system has no such call. Looked up in the parent, once: the child only calls it."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError, TypeError):
        return None
    PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _child(part: Part, descriptor: int) -> None:
    """Write ``part`` into ``descriptor`` and leave, at once: 0 when all was written, 1
    otherwise (the parent makes the part itself then). Never returns."""
    status = 1
    try:
        with open(descriptor, "w", encoding="utf-8", buffering=BLOCK, closefd=False) as out:
            for piece in part():
                out.write(piece)
        status = 0
    except BaseException:  # noqa: BLE001 - any failure, a signal's included: the parent redoes it
        pass
    finally:
        os._exit(status)


def _succeeded(pid: int) -> bool:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return False
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _stop(pid: int) -> None:
    """End a child that is still running (the reader stopped early) and reap it."""
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
