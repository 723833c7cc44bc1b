"""The trace in long form: one CSV row per matrix entry, ready for awk, sort and spreadsheets.

    name,row,col,value
    Z1,0,0,-0.125
    ...

Columns ``image`` and ``filter`` come before ``row`` when the input is a batch or has several
filters; a cell is empty where a matrix has no such axis (W2 has no image, L no row). Values
are written at full precision. When several files are traced, every row starts with ``file``
and all index columns are present, so that one header serves them all (``HEADER_MANY``).
"""

from __future__ import annotations

import csv
import io

import numpy as np

from cnntrace.render import View, selected

INDEX_COLUMNS = ("image", "filter", "row", "col")
HEADER_MANY = ("file", "name", *INDEX_COLUMNS, "value")


def columns(trace, view: View) -> tuple[str, ...]:
    """The header for one file: only the index columns its matrices can use."""
    if view.file is not None:
        return HEADER_MANY
    used = {"row", "col"}
    used |= {"image"} if trace.problem.batched else set()
    used |= {"filter"} if trace.problem.multi_filter else set()
    return ("name", *(c for c in INDEX_COLUMNS if c in used), "value")


def rows(trace, view: View):
    """Yield one dict per entry of every selected matrix, in row-major order."""
    for matrices in selected(trace, view).values():
        for name, value in matrices.items():
            axes = trace.axis_names(name)
            for index in np.ndindex(value.shape):
                row = {"file": view.file, "name": name, **dict(zip(axes, index))}
                row["value"] = repr(float(value[index]))
                yield row


def render(trace, view: View = View()) -> str:
    """The selected matrices as CSV text; the header line is left out for ``view.file``
    (several files share the header the caller writes once)."""
    out = io.StringIO()
    names = columns(trace, view)
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    if view.file is None:
        writer.writeheader()
    writer.writerows(rows(trace, view))
    return out.getvalue()


def header_many() -> str:
    return ",".join(HEADER_MANY) + "\n"
