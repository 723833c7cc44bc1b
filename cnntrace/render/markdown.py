"""The trace as Markdown: pipe tables for the matrices and $…$ math for the equations, which
GitHub and Jupyter render. Same sections, numbers and chain rules as the table view.

    **dL/dW2** $\\frac{\\partial L}{\\partial W_{2}} = \\ldots$ (4)

    $$\\frac{\\partial L}{\\partial W_{2}} = \\ldots$$

    |   | 0       | 1       | …
    |--:|--------:|--------:|
    | 0 | -0.3764 | -0.3764 | …
"""

from __future__ import annotations

import numpy as np

from cnntrace.derivation import derivation
from cnntrace.render import View, selected
from cnntrace.render.format import (
    axes_label,
    number,
    shape,
    shown_indices,
    shown_tables,
    summary_note,
)
from cnntrace.render.latex import math, prose

GAP = "…"

SECTION_TITLES = {
    "forward": "Forward pass",
    "backward": "Backward pass",
    "update": "Update: one step of gradient descent, lr = {lr}",
}


def escape(text: str) -> str:
    """Text with Markdown's special characters escaped, safe in a paragraph or a cell."""
    for char in "\\`*_[]|<>":
        text = text.replace(char, "\\" + char)
    return text


def pipe_table(values: np.ndarray, precision: int, marks: np.ndarray | None = None, full: bool = False) -> list[str]:
    """A 1-D or 2-D array as a pipe table with its row and column indices; a large one
    summarized unless ``full`` (see render.format)."""
    rows = values.reshape(1, -1) if values.ndim == 1 else values
    wins = np.zeros(rows.shape, dtype=int) if marks is None else marks.reshape(rows.shape)
    row_ids, col_ids = shown_indices(rows.shape[0], full), shown_indices(rows.shape[1], full)
    header = ([""] if values.ndim == 2 else []) + [GAP if col is None else str(col) for col in col_ids]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("--:" for _ in header) + "|"]
    for r in row_ids:
        cells = [
            GAP if r is None or c is None
            else number(float(rows[r, c]), precision) + mark(int(wins[r, c]))
            for c in col_ids
        ]  # fmt: skip
        label = [GAP if r is None else str(r)] if values.ndim == 2 else []
        lines.append("| " + " | ".join(label + cells) + " |")
    return lines


def mark(wins: int) -> str:
    """The mark of a cell that won ``wins`` pool windows: \\*, \\*2 …; none for 0."""
    return "" if wins == 0 else "\\*" if wins == 1 else f"\\*{wins}"


def _block(symbol, equation, values, axes, precision, derivation, marks, full=False) -> list[str]:
    head = f"**{escape(symbol)}**" + (f" ${math(symbol)} = {math(equation)}$" if equation else "")
    if values.ndim == 0:
        return [f"{head} = **{number(float(values), precision)}**", "", *derivation]
    note = summary_note(values.shape, axes, full)
    lines = [f"{head} ({shape(values.shape)}{'; ' + note if note else ''})", "", *derivation]
    if not axes:
        return lines + pipe_table(values, precision, marks, full) + [""]
    for index in shown_tables(values.shape[: len(axes)], full):
        if index is None:
            lines += [GAP, ""]
            continue
        label = axes_label(axes, index)
        entry_marks = None if marks is None else marks[index]
        lines += [f"*{label}*", "", *pipe_table(values[index], precision, entry_marks, full), ""]
    return lines


def _derivation(trace, name: str, precision: int) -> list[str]:
    d = derivation(trace, name)
    if d is None:
        return []
    lines = [f"$${math(d.left)} = {math(d.chain)} = {math(d.simplified)}$$", ""] if d.left else []
    factors = [
        f"${math(symbol)}$ = {number(float(value), precision)}" if value.ndim == 0
        else f"${math(symbol)}$ ({shape(value.shape)})"
        for symbol, value in d.factors
    ]  # fmt: skip
    note = f"; {prose(d.note)}" if d.note else ""
    return lines + [f"with {', '.join(factors)}{note}.", ""]


def file_heading(file: str) -> str:
    """The heading of one file's trace when several are traced at once."""
    return f"\n## `{file}`\n\n"  # a blank line first: the trace before ends without one


def render(trace, view: View = View()) -> str:
    """The selected matrices as Markdown (see the module's docstring)."""
    from cnntrace.render.table import input_axes, legend_parts

    problem = trace.problem
    out = []
    if view.only is None:
        out += ["### Input", "", problem.summary(), ""]
        for name, values in problem.inputs.items():
            out += _block(name, None, values, input_axes(problem, name), view.precision, [], None, view.full)
    annotations = trace.annotations
    for section, matrices in selected(trace, view).items():
        out += [f"### {SECTION_TITLES[section].format(lr=f'{problem.lr:g}')}", ""]
        for name, values in matrices.items():
            stage = trace.stage(name)
            note = annotations.get(name)
            derivation = [] if view.brief else _derivation(trace, name, view.precision)
            marks = None if note is None else note.marks
            if note is not None and note.legend and not view.brief:
                first, meaning, many = legend_parts(note, mark, every_count=True)
                derivation += [f"{first} {prose(meaning)}" + (f" ({many})" if many else "") + ".", ""]
            out += _block(
                stage.symbol, stage.equation, values,
                trace.leading_axes(name), view.precision, derivation, marks, view.full,
            )  # fmt: skip
    return "\n".join(out).rstrip("\n") + "\n"
