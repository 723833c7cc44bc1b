"""Renderers: each turns a Trace into a value (a rich renderable or a string); none prints.

Every renderer of ``cnntrace step`` has the signature ``render(trace, view) -> str |
renderable``; the CLI picks one from a table keyed by the output format. The table, Markdown,
LaTeX and HTML views and the worksheets format the blocks of one document, the trace walked
once (``render.document``); JSON and CSV write the selected matrices as they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    """What the user asked to see, shared by every renderer."""

    precision: int = 4  # decimals shown by the human-readable formats
    scaled: bool = False  # the table view: more decimals for a matrix of small entries (format.decimals)
    only: tuple[str, ...] | None = None  # JSON names of the matrices to show; None: all
    brief: bool = False  # matrices without their derivation
    explain: bool = True  # the page: each shown entry's explanation embedded, shown on a click
    file: str | None = None  # the input file's name, for formats that carry it
    full: bool = False  # every entry of large matrices and batches, not their corners
    columns: tuple[str, ...] | None = None  # CSV of several files: the header they share


def selected(trace, view: View) -> dict[str, dict]:
    """The trace's sections, each limited to the matrices ``view.only`` names (in the
    derivation's order); sections left empty are dropped."""
    sections = {}
    for section, matrices in trace.sections().items():
        kept = {name: value for name, value in matrices.items() if view.only is None or name in view.only}
        if kept:
            sections[section] = kept
    return sections
