"""Worksheets: the given numbers, then every matrix to compute in the derivation's order,
each with its name, equation, shape and a blank grid; and the answer key, the same sheet
with the values and each step's chain rule. In Markdown or in LaTeX.

    ## 3. P1  (2×2, answer as "P1")
    $P_{1} = \\operatorname{MaxPool}(A_{1})$

    |   | 0 | 1 |
    |--:|:-:|:-:|
    | 0 |   |   |
    | 1 |   |   |

A worksheet holds the inputs and nothing the pass computes: the blanks are the shapes alone.
Both are made from the trace's document (render.document): its givens, then its entries,
numbered, as questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cnntrace.errors import InputError
from cnntrace.limits import binary
from cnntrace.render import View, latex, markdown
from cnntrace.render.document import Entry, Given, document
from cnntrace.render.format import axes_label, number, shape
from cnntrace.render.latex import math, plain, prose
from cnntrace.render.markdown import code, escape

#: Width of a blank cell in the LaTeX grid, and the height of its row.
CELL_WIDTH, ROW_HEIGHT = "1.3cm", "0.75cm"


#: A worksheet is for paper: one whose text would pass MAX_SHEET_BYTES is refused before it is
#: made, estimated at SHEET_BYTES_PER_ENTRY a matrix entry (measured: the key of a 300×300
#: image, 10.5 MB for 667,254 entries; a 5000×5000 image's would be about 3 GB).
MAX_SHEET_BYTES = 256 * 2**20
SHEET_BYTES_PER_ENTRY = 16


def check_size(trace, sheet: Sheet) -> None:
    """Refuse (InputError naming X) a sheet whose text would pass MAX_SHEET_BYTES."""
    asked = [stage.name for stage in trace.stages if sheet.only is None or stage.name in sheet.only]
    entries = sum(int(np.size(trace[name])) for name in asked)
    entries += sum(int(np.size(value)) for value in trace.problem.inputs.values())
    need = SHEET_BYTES_PER_ENTRY * entries
    if need > MAX_SHEET_BYTES:
        raise InputError(
            f"too large for a worksheet: its {entries} entries would make about {binary(need)} of text; "
            f"cnntrace writes sheets of at most {binary(MAX_SHEET_BYTES)}",
            key="X",
        )


@dataclass(frozen=True)
class Sheet:
    """What a sheet shows: ``only`` the questions named (None: all), the ``key`` or the
    worksheet, the key's ``precision``, and for LaTeX a ``standalone`` document."""

    only: tuple[str, ...] | None = None
    key: bool = False
    precision: int = 4
    standalone: bool = False
    file: str | None = None


class Content(NamedTuple):
    """What a sheet asks, from the trace's document: the key's entries with their chain
    rules, no marks."""

    summary: str  # the problem in one line
    givens: list[Given]
    questions: list[tuple[int, Entry]]  # numbered from 1, in the derivation's order


def content(trace, sheet: Sheet) -> Content:
    """The givens and the questions of a sheet (``sheet.only``'s, if given); a sheet too
    large refused first (see check_size)."""
    check_size(trace, sheet)
    blocks = document(trace, View(only=sheet.only, brief=not sheet.key), givens=True, marks=False).blocks
    return Content(
        blocks[0].summary,  # the input's heading comes first
        [block for block in blocks if isinstance(block, Given)],
        list(enumerate((block for block in blocks if isinstance(block, Entry)), 1)),
    )


def given(value: float) -> str:
    """A given number as the input file writes it: 2, 0.5, -0.25."""
    return f"{float(value) + 0.0:.15g}"  # + 0.0 turns -0.0 into 0


def _tables(values_shape: tuple[int, ...], axes: tuple[str, ...]):
    """(label, index) of each grid of a matrix: one per image / filter of its leading axes."""
    if not axes:
        return [("", ())]
    return [(axes_label(axes, index), index) for index in np.ndindex(values_shape[: len(axes)])]


def _instructions(sheet: Sheet) -> str:
    if sheet.key:
        return f"Values rounded to {sheet.precision} decimals; each step's chain rule above its values."
    return ("Fill in every grid, in order: each matrix follows from the given numbers and the ones before it. "
            "Four decimals are enough; `cnntrace verify` takes the answers under the names given.")  # fmt: skip


# -- Markdown ----------------------------------------------------------------------------------


def _pipe_grid(values: np.ndarray | None, grid_shape: tuple[int, ...], text) -> list[str]:
    """A pipe table of ``grid_shape`` (1-D as one row), filled by ``text(value)`` or blank."""
    rows, cols = (1, grid_shape[0]) if len(grid_shape) == 1 else grid_shape
    table = None if values is None else np.asarray(values).reshape(rows, cols)
    labelled = len(grid_shape) == 2
    header = ([""] if labelled else []) + [str(c) for c in range(cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["--:"] * labelled + [":-:"] * cols) + "|"]
    for r in range(rows):
        cells = ["    " if table is None else text(table[r, c]) for c in range(cols)]
        lines.append("| " + " | ".join(([str(r)] if labelled else []) + cells) + " |")
    return lines


def render_markdown(trace, sheet: Sheet = Sheet()) -> str:
    """The worksheet (or with ``sheet.key`` the answer key) as Markdown."""
    summary, givens, questions = content(trace, sheet)
    title = "Answer key" if sheet.key else "Worksheet"
    out = [f"# {title}" + (f": {code(sheet.file)}" if sheet.file else ""), "", escape(summary), "",
           _instructions(sheet), "", "## Given", ""]  # fmt: skip
    for block in givens:
        out += _given_markdown(block)
    out += [f"lr = {given(trace.problem.lr)}", "", "## To compute", ""]
    for position, q in questions:
        dims, axes = np.shape(q.matrix.values), q.matrix.axes
        head = f"### {position}. {escape(q.symbol)}  ({shape(dims)}, answer as `{q.name}`)"
        out += [head, "", f"${math(q.symbol)} = {math(q.equation)}$", ""]
        values = q.matrix.values if sheet.key else None
        out += markdown.derivation_lines(q.derivation, sheet.precision)
        if not dims or len(dims) == len(axes):
            blank = "________"
            cell = blank if values is None else f"**{number(float(values), sheet.precision)}**"
            out += [f"{escape(q.symbol)} = {cell}", ""]
            continue
        for label, index in _tables(dims, axes):
            if label:
                out += [f"*{label}*", ""]
            part = None if values is None else values[index]
            out += _pipe_grid(part, dims[len(axes):], lambda v: number(float(v), sheet.precision)) + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def _given_markdown(block: Given) -> list[str]:
    name, values, axes = block.name, block.matrix.values, block.matrix.axes
    if values.ndim == 0 or values.ndim == len(axes):
        return [f"**{escape(name)}** = {given(values) if values.ndim == 0 else ', '.join(map(given, values))}", ""]
    out = [f"**{escape(name)}** ({shape(values.shape)})", ""]
    for label, index in _tables(values.shape, axes):
        if label:
            out += [f"*{label}*", ""]
        out += _pipe_grid(values[index], values.shape[len(axes):], given) + [""]
    return out


# -- LaTeX -------------------------------------------------------------------------------------


def _tabular(values: np.ndarray | None, grid_shape: tuple[int, ...], text) -> str:
    """A ruled grid of ``grid_shape`` with row and column indices, blank or filled."""
    rows, cols = (1, grid_shape[0]) if len(grid_shape) == 1 else grid_shape
    table = None if values is None else np.asarray(values).reshape(rows, cols)
    rule = f"\\cline{{2-{cols + 1}}}"
    lines = [
        f"\\begin{{tabular}}{{r|*{{{cols}}}{{p{{{CELL_WIDTH}}}|}}}}",
        "\\multicolumn{1}{r}{} & " + " & ".join(f"\\multicolumn{{1}}{{c}}{{\\scriptsize {c}}}" for c in range(cols))
        + " \\\\ " + rule,
    ]  # fmt: skip
    for r in range(rows):
        label = f"\\scriptsize {r}" if len(grid_shape) == 2 else ""
        cells = ["" if table is None else "\\hfill " + text(table[r, c]) for c in range(cols)]
        lines.append(f"{label}\\rule{{0pt}}{{{ROW_HEIGHT}}} & " + " & ".join(cells) + " \\\\ " + rule)
    lines.append("\\end{tabular}")
    return "\n".join(lines)


def render_latex(trace, sheet: Sheet = Sheet()) -> str:
    """The worksheet (or the key) as a LaTeX fragment for an article that loads amsmath,
    or with ``sheet.standalone`` a whole document."""
    summary, givens, questions = content(trace, sheet)
    title = "Answer key" if sheet.key else "Worksheet"
    out = [
        f"% cnntrace sheet: the {title.lower()}; "
        + ("a whole document" if sheet.standalone else "a fragment for the body of an article that loads amsmath"),
    ]
    if sheet.standalone:
        out += ["\\documentclass{article}", "\\usepackage{amsmath}", "\\usepackage[margin=2cm]{geometry}",
                "\\begin{document}"]  # fmt: skip
    out += [f"\\section*{{{title}" + (f": \\texttt{{{plain(sheet.file)}}}" if sheet.file else "") + "}",
            prose(summary.replace("lr ", "learning rate ")) + ".", "",
            prose(_instructions(sheet).replace("`cnntrace verify`", "cnntrace verify")), "",
            "\\subsection*{Given}"]  # fmt: skip
    for block in givens:
        out += _given_latex(block)
    out += [f"\\noindent $\\mathrm{{lr}} = {given(trace.problem.lr)}$", "", "\\subsection*{To compute}"]
    for position, q in questions:
        dims, axes = np.shape(q.matrix.values), q.matrix.axes
        out += [
            "\\medskip\\noindent\\begin{minipage}{\\linewidth}",
            f"\\textbf{{{position}.}} ${math(q.symbol)} = {math(q.equation)}$ \\hfill "
            f"(${math(shape(dims))}$, answer as \\texttt{{{plain(q.name)}}})",
            "",
        ]  # fmt: skip
        values = q.matrix.values if sheet.key else None
        out += latex.derivation_lines(q.derivation, sheet.precision)
        if not dims or len(dims) == len(axes):
            cell = "\\rule{3cm}{0.4pt}" if values is None else number(float(values), sheet.precision)
            out += [f"\\smallskip ${math(q.symbol)} = {cell}$" if values is not None else
                    f"\\smallskip ${math(q.symbol)} = $ {cell}", "\\end{minipage}", ""]
            continue
        for label, index in _tables(dims, axes):
            part = None if values is None else values[index]
            grid = _tabular(part, dims[len(axes):], lambda v: number(float(v), sheet.precision))
            out += [f"\\smallskip\\textit{{{label}}}\\\\" if label else "\\smallskip", grid, ""]
        out += ["\\end{minipage}", ""]
    if sheet.standalone:
        out.append("\\end{document}")
    return "\n".join(out).rstrip("\n") + "\n"


def _given_latex(block: Given) -> list[str]:
    name, values, axes = block.name, block.matrix.values, block.matrix.axes
    if values.ndim == 0 or values.ndim == len(axes):
        text = given(values) if values.ndim == 0 else ", ".join(map(given, values))
        return [f"\\noindent ${math(name)} = {text}$\\par\\medskip", ""]
    out = [f"\\noindent ${math(name)}$ (${math(shape(values.shape))}$)", ""]
    for label, index in _tables(values.shape, axes):
        out += [f"\\textit{{{label}}}\\\\" if label else "", _tabular(values[index], values.shape[len(axes):], given), ""]
    return out + ["\\medskip", ""]
