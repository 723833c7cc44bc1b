"""The trace as JSON: {"forward": {...}, "backward": {...}, "update": {...}}.

Matrices are nested lists in row-major order, scalars plain numbers, floats written with
Python's repr so they read back to the same float64.
"""

from __future__ import annotations

import json

from cnntrace.render import View, selected


def trace_dict(trace, view: View = View()) -> dict:
    """The selected matrices as plain Python lists and floats, section by section."""
    return {
        section: {name: value.tolist() for name, value in matrices.items()}
        for section, matrices in selected(trace, view).items()
    }


def _line(data: dict) -> str:
    return json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n"


def render(trace, view: View = View()) -> str:
    """One line of JSON holding the trace; with ``view.file`` (one of several files traced,
    written as a JSON array by the caller) the file's name comes first."""
    data = trace_dict(trace, view)
    return _line(data if view.file is None else {"file": view.file, **data})


def render_ndjson(trace, view: View = View()) -> str:
    """One line of JSON holding the trace and, first, the file it came from."""
    return _line({"file": view.file, **trace_dict(trace, view)})
