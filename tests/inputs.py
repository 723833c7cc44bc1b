"""Input files for the I/O and CLI tests: the bundled reference sample and variations of it."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
REFERENCE = SAMPLES / "reference.json"


def reference() -> dict:
    """A fresh copy of samples/reference.json as a dict."""
    return json.loads(REFERENCE.read_text())


def write(directory: Path, data, name: str = "in.json") -> Path:
    """Write ``data`` (a dict, or text written as it is) to directory/name and return the path."""
    path = directory / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def variant(directory: Path, name: str = "in.json", drop=(), **changes) -> Path:
    """The reference input with some keys changed or dropped, written to a file."""
    data = reference()
    for key in drop:
        del data[key]
    data.update(changes)
    return write(directory, data, name)
