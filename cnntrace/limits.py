"""How large a pass may be: the memory it keeps and the work it does, estimated before any
work starts and refused past the limits, with the numbers."""

from __future__ import annotations

import os

from cnntrace.errors import InputError
from cnntrace.text import number_text

#: The memory a pass may need for the matrices it keeps at most: MOST_PASS_BYTES, or half of
#: what the machine gives this process where that is less (see pass_memory).
MOST_PASS_BYTES = 4 * 2**30
#: Where Linux tells a process in a container (a cgroup v2) how much memory it may use.
CGROUP_MEMORY = "/sys/fs/cgroup/memory.max"


def pass_memory() -> int:
    """MOST_PASS_BYTES, or half of the machine's memory, or of its container's limit, where
    that is less: a pass on a small machine is refused with the numbers rather than swapped
    or killed. Half leaves room for Python, numpy and the rest of the machine."""
    most = MOST_PASS_BYTES
    try:
        most = min(most, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2)
    except (AttributeError, ValueError, OSError):  # no such query on this system
        pass
    try:
        with open(CGROUP_MEMORY) as limit:
            text = limit.read(64).strip()  # a number of bytes, or "max"
    except OSError:
        return most
    return min(most, int(text) // 2) if text.isdigit() else most


#: A pass keeps every matrix it makes; it may need at most this much memory for them.
MAX_PASS_BYTES = pass_memory()
#: The most work one pass may take, counted in multiply-adds: about a minute. The pass loops
#: in Python over the kernel's offsets and the pool window's, each loop step costing about
#: OFFSET_COST multiply-adds on top of the cells it covers (see check_pass_size).
MAX_WORK = 10**11
OFFSET_COST = 100_000
#: The most work one command may take over all its passes (check makes two per entry it
#: checks): about ten minutes.
MAX_COMMAND_WORK = 10**12
#: A float64 number's bytes, and how many copies of every weight a pass keeps: as read, as
#: float64 in the input's shape and on the general one, its gradient, the trace's copy
#: (measured: step on a dense layer of 10⁸ weights peaks at 3.9 GB, five copies of 0.8 GB).
#: Training keeps TRAIN_COPIES more: the velocity, the epoch's starting parameters and the
#: last epoch's, which it reports.
FLOAT = 8
WEIGHT_COPIES = 5
TRAIN_COPIES = 3
#: MAX_WORK in seconds, as the messages say it: the time of 10¹¹ multiply-adds.
MAX_WORK_SECONDS = 60
#: An explanation (cnntrace explain, the --html page) holds a Python object per term and
#: writes a line for the largest: measured on `explain 'dL_dW1[0,0]'` of a 600×600 image
#: (357,604 terms: 7.6 s to make them, 3.2 s to write, 1.1 KB a term at the peak; the page
#: of that image, 1.4 KB), each term it keeps costs TERM_BYTES of memory and the time of
#: TERM_COST multiply-adds (30 µs); each cell its loops visit to find them VISIT_COST (1 µs);
#: each entry ENTRY_COST more (its notes, its sources on the page: 0.5 ms), and the page
#: keeps PAGE_ENTRY_BYTES of text and cells for each entry it shows (see budget.py).
TERM_BYTES = 1500
TERM_COST = 50_000
VISIT_COST = 2_000
ENTRY_COST = 800_000
PAGE_ENTRY_BYTES = 16_384
#: verify judges each answered entry as a Python object of its own: measured on step's whole
#: output for a 500×500 image, all wrong (1,800,042 entries, 14 MB of JSON: 26 s at an 839 MB
#: peak), about ANSWER_BYTES and the time of ANSWER_COST multiply-adds (15 µs) an entry.
ANSWER_BYTES = 500
ANSWER_COST = 25_000
#: Writing one number at full precision (step's JSON or CSV; a table with --full) takes the
#: time of NUMBER_TEXT_COST multiply-adds: measured, about 0.8 µs (20,000 28×28 images:
#: 765 MiB of JSON in 80 s), for the progress lines of a long output.
NUMBER_TEXT_COST = 1_500


def binary(n: int) -> str:
    """1.5e9 bytes -> '1.4 GiB'; an absurd number of bytes by its order of magnitude."""
    if n >= 2**40 * 10**18:
        return f"{number_text(n // 2**40).removeprefix('about ')} TiB"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


def dims_text(*dims: int) -> str:
    return "×".join(number_text(n) for n in dims)


def work_text(work: int) -> str:
    return number_text(work) if work >= 10**18 else f"{work:.2g}"


def duration_text(seconds: float) -> str:
    """5 -> 'about 5 s'; 96 -> 'about 1.6 minutes'; 7200 -> 'about 2 hours'."""
    if seconds >= 2 * 3600:
        return f"about {number_text(round(seconds / 3600)).removeprefix('about ')} hours"
    if seconds >= 90:
        return f"about {seconds / 60:.{2 if seconds < 600 else 3}g} minutes"
    return f"about {seconds:.2g} s"


def refuse(need: int, work: int, what: str, key: str, pool_window: str | None = None, *,
           doing: str = "the pass", max_work: int = MAX_WORK, in_time: bool = False) -> None:  # fmt: skip
    """InputError naming ``key`` when ``need`` (bytes) or ``work`` (multiply-adds) is past the
    limits (``max_work`` of work), with the numbers; ``what`` says what is being done,
    ``doing`` who needs it. ``in_time``: the work is said as the time it stands for (an
    explanation's is Python's time per term, not arithmetic)."""
    if need > MAX_PASS_BYTES:
        raise InputError(
            f"too large: {what}, and {doing} would need about {binary(need)} of memory; "
            f"cnntrace allows {binary(MAX_PASS_BYTES)}",
            key=key,
        )
    if in_time:
        if work > max_work:
            allowed = duration_text(max_work / MAX_WORK * MAX_WORK_SECONDS)
            raise InputError(
                f"too large: {what}, and {doing} would take {duration_text(work / MAX_WORK * MAX_WORK_SECONDS)}; "
                f"cnntrace allows {allowed}",
                key=key,
            )
        return
    if work > MAX_WORK:
        raise InputError(
            f"too large: {what}{f', a {pool_window} pool window' if pool_window else ''}, "
            f"and {doing} would take about {work_text(work)} multiply-adds; cnntrace allows "
            f"{MAX_WORK:.0e}, about a minute",
            key=key,
        )
