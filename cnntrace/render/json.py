"""The trace as one JSON object: {"forward": {...}, "backward": {...}, "update": {...}}.

Matrices are nested lists in row-major order, scalars plain numbers, floats written with
Python's repr so they read back to the same float64.
"""

from __future__ import annotations

import json


def trace_dict(trace) -> dict:
    """Every matrix of the trace as plain Python lists and floats, section by section."""
    return {
        section: {name: value.tolist() for name, value in matrices.items()}
        for section, matrices in trace.sections().items()
    }


def render(trace) -> str:
    """One line of JSON (and its newline) holding the whole trace."""
    return json.dumps(trace_dict(trace), allow_nan=False, separators=(",", ":")) + "\n"
