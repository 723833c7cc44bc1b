"""The trace in long form: one CSV row per matrix entry, ready for awk, sort and spreadsheets.

    name,row,col,value
    Z1,0,0,-0.125
    ...

Columns ``image``, ``filter`` and ``channel`` come before ``row`` when the input is a batch,
has several filters or channels; a cell is empty where a matrix has no such axis (W2 has no
image, L no row). Values are written at full precision. When several files are traced, every
row starts with ``file`` and the index columns image, filter, row and col are present, with
channel too when a matrix of some file has a channel axis, so that one header serves them
all (``shared_columns``).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from functools import partial

import numpy as np

from cnntrace.render import View, parallel, selected

INDEX_COLUMNS = ("image", "filter", "channel", "row", "col")
HEADER_MANY = ("file", "name", *INDEX_COLUMNS, "value")


def has_channels(problem, only: tuple[str, ...] | None = None) -> bool:
    """Whether a matrix of the problem's trace (of those ``only`` names) has a channel axis."""
    return any(
        "channel" in (axes := stage.layout.axes(problem.batched))[0] + axes[1]
        for stage in problem.stages if only is None or stage.name in only
    )  # fmt: skip


def shared_columns(channels: bool) -> tuple[str, ...]:
    """The header several files share: every index column, channel only when ``channels``
    (a matrix of some file has a channel axis)."""
    return tuple(c for c in HEADER_MANY if c != "channel" or channels)


def columns(trace, view: View) -> tuple[str, ...]:
    """The header for one file: only the index columns its matrices can use."""
    if view.file is not None:
        return view.columns or shared_columns(has_channels(trace.problem))
    used = {"row", "col"}
    for stage in trace.stages:
        used |= set(trace.axis_names(stage.name))
    return ("name", *(c for c in INDEX_COLUMNS if c in used), "value")


def _cell(text: str) -> str:
    """One CSV cell, quoted as the csv module quotes it (a file name may hold a comma)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([text])
    return out.getvalue()


def lines(trace, view: View) -> Iterator[str]:
    """Yield the CSV text of every selected matrix, one line per entry in row-major order,
    a matrix at a time (a long trace's matrices on several processors at once: see
    render.parallel)."""
    header = columns(trace, view)
    matrices = [(name, value) for section in selected(trace, view).values() for name, value in section.items()]
    parts = parallel.split([np.size(value) for _, value in matrices],
                           parallel.how_many(sum(np.size(value) for _, value in matrices)))  # fmt: skip
    yield from parallel.in_order([partial(_lines, trace, view, header, matrices[part]) for part in parts])


def _lines(trace, view: View, header: tuple[str, ...], matrices) -> Iterator[str]:
    """The CSV text of ``matrices`` ((name, value) pairs). Each line is pieced together from
    the strings of its indices, made once per matrix: formatting a 600×600 trace entry by
    entry through csv.writer takes several times longer."""
    prefix = ("" if view.file is None else _cell(view.file) + ",")
    for name, value in matrices:
        axes = trace.axis_names(name)
        # pieces[k]: the text of each index along the k-th axis, with the empty cells
        # of the header's columns this matrix has no axis for.
        pieces, pending = [[f"{prefix}{name},"]], ""
        for column in header[1 + (view.file is not None) : -1]:
            if column in axes:
                n = value.shape[axes.index(column)]
                pieces.append([f"{pending}{i}," for i in range(n)])
                pending = ""
            else:
                pending += ","
        values = np.asarray(value, dtype=float).ravel().tolist()
        yield "".join(
            f"{''.join(index)}{pending}{v!r}\n" for index, v in zip(itertools.product(*pieces), values)
        )


def render(trace, view: View = View()) -> Iterator[str]:
    """The selected matrices as CSV text, in pieces; the header line is left out for
    ``view.file`` (several files share the header the caller writes once)."""
    if view.file is None:
        yield ",".join(columns(trace, view)) + "\n"
    yield from lines(trace, view)


def header_many(columns: tuple[str, ...] = HEADER_MANY) -> str:
    return ",".join(columns) + "\n"
