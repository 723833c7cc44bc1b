"""The trace as Markdown: pipe tables for the matrices and $…$ math for the equations, which
GitHub and Jupyter render. Same sections, numbers and chain rules as the table view.

    **dL/dW2** $\\frac{\\partial L}{\\partial W_{2}} = \\ldots$ (4)

    $$\\frac{\\partial L}{\\partial W_{2}} = \\ldots$$

    |   | 0       | 1       | …
    |--:|--------:|--------:|
    | 0 | -0.3764 | -0.3764 | …
"""

from __future__ import annotations

import re

import numpy as np

from cnntrace.errors import one_line
from cnntrace.render import View
from cnntrace.render.document import (
    Diagram,
    Entry,
    Given,
    Heading,
    document,
    legend_text,
    mark_text,
)
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


def escape(text: str) -> str:
    """Text with Markdown's special characters escaped, safe in a paragraph or a cell: on
    one line, its unprintable characters (a newline, a terminal's escape) written as escapes."""
    text = one_line(text)
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


def mark(count: int) -> str:
    """A cell's mark (document.mark_text), escaped: \\*, \\*2 …; none for 0."""
    return escape(mark_text(count)) if count else ""


def _block(symbol, equation, matrix, precision, prose, full=False) -> list[str]:
    values, axes, marks = matrix.values, matrix.axes, matrix.marks
    head = f"**{escape(symbol)}**" + (f" ${math(symbol)} = {math(equation)}$" if equation else "")
    if values.ndim == 0:
        return [f"{head} = **{number(float(values), precision)}**", "", *prose]
    note = summary_note(values.shape, axes, full)
    lines = [f"{head} ({shape(values.shape)}{'; ' + note if note else ''})", "", *prose]
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


def derivation_lines(d, precision: int) -> list[str]:
    """A stage's chain rule (document.Entry.derivation) as display math, then the values that go
    into it and its note; nothing for a stage without one."""
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


def mermaid(graph: Diagram) -> list[str]:
    """The network's graph as a Mermaid flowchart (GitHub and most Markdown viewers draw
    it): the forward arrows, and at each fork a note of its gradient's sum."""
    lines = ["```mermaid", "flowchart LR"]
    lines += [f'  {node.name}["{node.name}: {node.kind}"]' for node in graph.nodes]
    lines += [f"  {source} --> {target}" for source, target in graph.edges]
    for fork in graph.sums:
        paths = " + ".join(f"{fork.symbol} via {path}" for path in fork.paths)
        lines += [f'  sum_{fork.name}{{{{"{fork.symbol} = {paths}"}}}}', f"  sum_{fork.name} -.-> {fork.name}"]
    return [*lines, "```", ""]


def code(text: str) -> str:
    """Any text (a file name, say) as a CommonMark code span, where nothing is markup: fenced
    by one backtick more than its longest run of them, a space inside the fence when it
    starts or ends with one, on one line (a line break written as its escape)."""
    text = one_line(text)
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == text[-1:] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def file_heading(file: str) -> str:
    """The heading of one file's trace when several are traced at once."""
    return f"\n## {code(file)}\n\n"  # a blank line first: the trace before ends without one


def render(trace, view: View = View()) -> str:
    """The selected matrices as Markdown (see the module's docstring), block by block of
    the trace's document (render.document)."""
    out = []
    for block in document(trace, view).blocks:
        match block:
            case Heading(title=title, summary=summary):
                out += [f"### {title}", ""] + ([summary, ""] if summary else [])
            case Diagram():
                out += mermaid(block)
            case Given(name=name, matrix=matrix):
                out += _block(name, None, matrix, view.precision, [], view.full)
            case Entry():
                lines = derivation_lines(block.derivation, view.precision)
                if block.legend:
                    lines += [legend_text(block.legend, mark, every_count=True, words=prose) + ".", ""]
                out += _block(block.symbol, block.equation, block.matrix, view.precision, lines, view.full)
    return "\n".join(out).rstrip("\n") + "\n"
