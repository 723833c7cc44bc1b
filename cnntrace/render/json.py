"""The trace as JSON: {"forward": {...}, "backward": {...}, "update": {...}}.

Matrices are nested lists in row-major order, scalars plain numbers, floats written with
Python's repr so they read back to the same float64.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial

import numpy as np

from cnntrace.render import View, parallel, selected


def trace_dict(trace, view: View = View()) -> dict:
    """The selected matrices as plain Python lists and floats, section by section."""
    return {
        section: {name: value.tolist() for name, value in matrices.items()}
        for section, matrices in selected(trace, view).items()
    }


def _dumps(value) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _array_chunks(value) -> Iterator[str]:
    """One array as JSON, an image (or filter) at a time when it has such axes, so that a
    dataset's trace is never held as Python lists all at once."""
    if value.ndim < 3:
        yield _dumps(value.tolist())
        return
    yield "["
    for index, part in enumerate(value):
        if index:
            yield ","
        yield from _array_chunks(part)
    yield "]"


def chunks(trace, view: View = View(), with_file: bool = False) -> Iterator[str]:
    """The trace as one line of JSON, in pieces; ``with_file`` puts ``view.file`` first.
    The pieces joined are exactly ``json.dumps`` of ``trace_dict`` (with the file). A long
    trace's matrices are written on several processors at once (see render.parallel)."""
    yield "{" + (f'"file":{_dumps(view.file)},' if with_file else "")
    members = []  # (the text before a matrix, the matrix)
    for s_index, (section, matrices) in enumerate(selected(trace, view).items()):
        opened = ("}," if s_index else "") + f"{_dumps(section)}:{{"
        for m_index, (name, value) in enumerate(matrices.items()):
            members.append(((opened if m_index == 0 else ",") + f"{_dumps(name)}:", value))
    costs = [int(np.count_nonzero(value)) for _, value in members]  # a zero's repr is quick
    parts = parallel.split(costs, parallel.how_many(sum(costs))) if members else []
    yield from parallel.in_order([partial(_members_text, members[part]) for part in parts])
    yield "}" * bool(members) + "}\n"


def _members_text(members) -> Iterator[str]:
    for before, value in members:
        yield before
        yield from _array_chunks(value)


def render(trace, view: View = View()) -> Iterator[str]:
    """One line of JSON holding the trace, in pieces; with ``view.file`` (one of several
    files traced, written as a JSON array by the caller) the file's name comes first."""
    return chunks(trace, view, with_file=view.file is not None)


def render_ndjson(trace, view: View = View()) -> Iterator[str]:
    """One line of JSON holding the trace and, first, the file it came from."""
    return chunks(trace, view, with_file=True)
