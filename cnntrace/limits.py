"""How large a pass may be: the memory it keeps and the work it does, estimated before any
work starts and refused past the limits, with the numbers."""

from __future__ import annotations

from cnntrace.errors import InputError
from cnntrace.text import number_text

#: A pass keeps every matrix it makes; it may need at most this much memory for them.
MAX_PASS_BYTES = 4 * 2**30
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


def refuse(need: int, work: int, what: str, key: str, pool_window: str | None = None, *,
           doing: str = "the pass") -> None:  # fmt: skip
    """InputError naming ``key`` when ``need`` (bytes) or ``work`` (multiply-adds) is past the
    limits, with the numbers; ``what`` says what is being done, ``doing`` who needs it."""
    if need > MAX_PASS_BYTES:
        raise InputError(
            f"too large: {what}, and {doing} would need about {binary(need)} of memory; "
            f"cnntrace allows {binary(MAX_PASS_BYTES)}",
            key=key,
        )
    if work > MAX_WORK:
        raise InputError(
            f"too large: {what}{f', a {pool_window} pool window' if pool_window else ''}, "
            f"and {doing} would take about {work_text(work)} multiply-adds; cnntrace allows "
            f"{MAX_WORK:.0e}, about a minute",
            key=key,
        )
