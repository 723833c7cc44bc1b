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

from cnntrace.errors import CnntraceError, InputError
from cnntrace.explain import explain_entry
from cnntrace.limits import binary
from cnntrace.render import View, latex, markdown
from cnntrace.render.document import Entry, Given, document, mark_text
from cnntrace.render.explanation import render_text
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
    paper: str = "letter"  # LaTeX: "a4" or "letter"
    title: str | None = None  # heads the sheet above "Worksheet" / "Answer key"


#: How a worked entry's arithmetic (verbatim in LaTeX) writes the characters pdflatex lacks.
ASCII = {"Σ": "sum", "−": "-", "·": "*", "′": "'", "σ": "sigma", "⊙": "(.)", "≥": ">=", "≤": "<=",
         "…": "...", "×": "x", "∂": "d", "ε": "eps", "α": "alpha", "√": "sqrt", "²": "^2"}  # fmt: skip


def _ascii(text: str) -> str:
    """``text`` for a verbatim block: ASCII stand-ins, "?" for any other character."""
    return "".join(ASCII.get(ch, ch if ch.isascii() else "?") for ch in text)


#: The geometry package's name of each paper size.
PAPERS = {"a4": "a4paper", "letter": "letterpaper"}


class Content(NamedTuple):
    """What a sheet asks, from the trace's document: the key's entries with their chain
    rules and marks; the conventions that matter for this network; for each question that
    is a sum of products, one entry's arithmetic (explain's)."""

    summary: str  # the problem in one line
    givens: list[Given]
    questions: list[tuple[int, Entry]]  # numbered from 1, in the derivation's order
    rules: list[str]
    worked: dict  # {name: Explanation of its largest entry}, sums of products only


def content(trace, sheet: Sheet) -> Content:
    """The givens and the questions of a sheet (``sheet.only``'s, if given); a sheet too
    large refused first (see check_size)."""
    check_size(trace, sheet)

    blocks = document(trace, View(only=sheet.only, brief=not sheet.key), givens=True, marks=sheet.key).blocks
    questions = list(enumerate((block for block in blocks if isinstance(block, Entry)), 1))
    network = trace.problem.network
    rules = [rule for layer in network.layers for rule in layer.rules()] + list(network.loss.rules())
    worked = {}
    for _, q in questions:
        values = np.asarray(q.matrix.values)
        if q.section == "update":
            continue
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(values))), values.shape))
        try:
            explained = explain_entry(trace, q.name, index)
        except CnntraceError:  # an entry explain does not take (the update's, say)
            continue
        # A sum of products: several products added up (a conv's window, a dense row).
        if explained.function is None and sum(len(t.factors) > 1 for t in explained.terms) > 1:
            worked[q.name] = explained
    return Content(
        blocks[0].summary,  # the input's heading comes first
        [block for block in blocks if isinstance(block, Given)],
        questions, rules, worked,
    )  # fmt: skip


def _with_marks(text, marks, cols: int, draw=mark_text):
    """text(row, col, value): ``text(value)`` followed by the cell's mark (``*``: won a pool
    window), as the key's notes name it; ``marks`` in the grid's shape, or None."""
    flat = None if marks is None else np.asarray(marks).reshape(-1)

    def cell(r: int, c: int, value) -> str:
        return text(value) + ("" if flat is None else draw(int(flat[r * cols + c])))

    return cell


def given(value: float) -> str:
    """A given number as the input file writes it: 2, 0.5, -0.25."""
    return f"{float(value) + 0.0:.15g}"  # + 0.0 turns -0.0 into 0


def _tables(values_shape: tuple[int, ...], axes: tuple[str, ...]):
    """(label, index) of each grid of a matrix: one per image / filter of its leading axes."""
    if not axes:
        return [("", ())]
    return [(axes_label(axes, index), index) for index in np.ndindex(values_shape[: len(axes)])]


def _heading(sheet: Sheet, escape=lambda title: title) -> str:
    """The sheet's heading: the user's title, ``escape``d for the format, before what it is."""
    what = "Answer key" if sheet.key else "Worksheet"
    return f"{escape(sheet.title)}: {what.lower()}" if sheet.title else what


def _total(questions) -> int:
    """The marks of a sheet: one a question."""
    return len(questions)


def _instructions(sheet: Sheet) -> str:
    if sheet.key:
        return f"Values rounded to {sheet.precision} decimals; each step's chain rule above its values."
    return ("Fill in every grid, in order: each matrix follows from the given numbers and the ones before it. "
            "Four decimals are enough; `cnntrace verify` takes the answers under the names given.")  # fmt: skip


# -- Markdown ----------------------------------------------------------------------------------


def _pipe_grid(values: np.ndarray | None, grid_shape: tuple[int, ...], text, marks=None) -> list[str]:
    """A pipe table of ``grid_shape`` (1-D as one row), filled by ``text(value)`` (with its
    mark from ``marks``) or blank."""
    rows, cols = (1, grid_shape[0]) if len(grid_shape) == 1 else grid_shape
    table = None if values is None else np.asarray(values).reshape(rows, cols)
    text = _with_marks(text, marks, cols, lambda count: escape(mark_text(count)))  # no emphasis
    labelled = len(grid_shape) == 2
    header = ([""] if labelled else []) + [str(c) for c in range(cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["--:"] * labelled + [":-:"] * cols) + "|"]
    for r in range(rows):
        cells = ["    " if table is None else text(r, c, table[r, c]) for c in range(cols)]
        lines.append("| " + " | ".join(([str(r)] if labelled else []) + cells) + " |")
    return lines


def render_markdown(trace, sheet: Sheet = Sheet()) -> str:
    """The worksheet (or with ``sheet.key`` the answer key) as Markdown."""
    summary, givens, questions, rules, worked = content(trace, sheet)
    out = [f"# {escape(_heading(sheet))}" + (f": {code(sheet.file)}" if sheet.file else ""), ""]
    if not sheet.key:
        out += [f"Name: ______________________  ID: ____________  Marks: ____ / {_total(questions)}", ""]
    out += [escape(summary), "", _instructions(sheet), ""]
    if rules:
        out += ["> **Conventions**", ">"] + [f"> - {escape(rule)}" for rule in rules] + [""]
    out += ["## Given", ""]
    for block in givens:
        out += _given_markdown(block)
    out += [f"lr = {given(trace.problem.lr)}", "", "## To compute", ""]
    for position, q in questions:
        dims, axes = np.shape(q.matrix.values), q.matrix.axes
        head = f"### {position}. {escape(q.symbol)}  ({shape(dims)}, answer as `{q.name}`) [1 mark]"
        out += [head, "", f"${math(q.symbol)} = {math(q.equation)}$", ""]
        values = q.matrix.values if sheet.key else None
        marks = q.matrix.marks if sheet.key else None
        out += markdown.derivation_lines(q.derivation, sheet.precision)
        if sheet.key and q.name in worked:
            out += ["One entry worked out:", "", "```", render_text(worked[q.name], sheet.precision).rstrip(), "```", ""]
        if not dims or len(dims) == len(axes):
            blank = "________"
            cell = blank if values is None else f"**{number(float(values), sheet.precision)}**"
            out += [f"{escape(q.symbol)} = {cell}", ""]
        else:
            for label, index in _tables(dims, axes):
                if label:
                    out += [f"*{label}*", ""]
                part = None if values is None else values[index]
                part_marks = None if marks is None else np.asarray(marks)[index]
                out += _pipe_grid(part, dims[len(axes):], lambda v: number(float(v), sheet.precision), part_marks) + [""]
        if not sheet.key and q.name in worked:
            out += ["Working:", "", *([">"] * 4), ""]
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


def _tabular(values: np.ndarray | None, grid_shape: tuple[int, ...], text, marks=None) -> str:
    """A ruled grid of ``grid_shape`` with row and column indices, blank or filled (each
    number in an \\mbox, so that it never breaks inside its cell)."""
    rows, cols = (1, grid_shape[0]) if len(grid_shape) == 1 else grid_shape
    table = None if values is None else np.asarray(values).reshape(rows, cols)
    text = _with_marks(text, marks, cols)
    rule = f"\\cline{{2-{cols + 1}}}"
    lines = [
        f"\\begin{{tabular}}{{r|*{{{cols}}}{{p{{{CELL_WIDTH}}}|}}}}",
        "\\multicolumn{1}{r}{} & " + " & ".join(f"\\multicolumn{{1}}{{c}}{{\\scriptsize {c}}}" for c in range(cols))
        + " \\\\ " + rule,
    ]  # fmt: skip
    for r in range(rows):
        label = f"\\scriptsize {r}" if len(grid_shape) == 2 else ""
        cells = ["" if table is None else "\\hfill\\mbox{" + text(r, c, table[r, c]) + "}" for c in range(cols)]
        lines.append(f"{label}\\rule{{0pt}}{{{ROW_HEIGHT}}} & " + " & ".join(cells) + " \\\\ " + rule)
    lines.append("\\end{tabular}")
    return "\n".join(lines)


def render_latex(trace, sheet: Sheet = Sheet()) -> str:
    """The worksheet (or the key) as a LaTeX fragment for an article that loads amsmath,
    or with ``sheet.standalone`` a whole document on ``sheet.paper``."""
    summary, givens, questions, rules, worked = content(trace, sheet)
    title = "Answer key" if sheet.key else "Worksheet"
    out = [
        f"% cnntrace sheet: the {title.lower()}; "
        + ("a whole document" if sheet.standalone else "a fragment for the body of an article that loads amsmath"),
    ]
    if sheet.standalone:
        out += ["\\documentclass{article}", "\\usepackage{amsmath}",
                f"\\usepackage[{PAPERS[sheet.paper]}, margin=2cm]{{geometry}}",
                "\\begin{document}"]  # fmt: skip
    out += [f"\\section*{{{_heading(sheet, plain)}" + (f": \\texttt{{{plain(sheet.file)}}}" if sheet.file else "") + "}"]
    if not sheet.key:
        out += ["\\noindent Name: \\rule{6cm}{0.4pt}\\quad ID: \\rule{3cm}{0.4pt}\\quad "
                f"Marks: \\rule{{1cm}}{{0.4pt}} / {_total(questions)}\\par\\medskip", ""]  # fmt: skip
    out += [prose(summary.replace("lr ", "learning rate ")) + ".", "",
            prose(_instructions(sheet).replace("`cnntrace verify`", "cnntrace verify")), ""]  # fmt: skip
    if rules:
        out += ["\\medskip\\noindent\\fbox{\\parbox{\\dimexpr\\linewidth-2\\fboxsep-2\\fboxrule}{",
                "\\textbf{Conventions}\\begin{itemize}\\setlength{\\itemsep}{0pt}",
                *(f"\\item {prose(rule)}" for rule in rules), "\\end{itemize}}}", ""]  # fmt: skip
    out += ["\\subsection*{Given}"]
    for block in givens:
        out += _given_latex(block)
    out += [f"\\noindent $\\mathrm{{lr}} = {given(trace.problem.lr)}$", "", "\\subsection*{To compute}"]
    for position, q in questions:
        dims, axes = np.shape(q.matrix.values), q.matrix.axes
        out += [
            "\\medskip\\noindent\\begin{minipage}{\\linewidth}",
            f"\\textbf{{{position}.}} ${math(q.symbol)} = {math(q.equation)}$ \\hfill "
            f"(${math(shape(dims))}$, answer as \\texttt{{{plain(q.name)}}}; 1 mark)",
            "",
        ]  # fmt: skip
        values = q.matrix.values if sheet.key else None
        marks = q.matrix.marks if sheet.key else None
        out += latex.derivation_lines(q.derivation, sheet.precision)
        if sheet.key and q.name in worked:
            out += ["\\smallskip\\noindent One entry worked out:", "\\begin{verbatim}",
                    _ascii(render_text(worked[q.name], sheet.precision).rstrip()), "\\end{verbatim}"]  # fmt: skip
        if not dims or len(dims) == len(axes):
            cell = "\\rule{3cm}{0.4pt}" if values is None else number(float(values), sheet.precision)
            out += [f"\\smallskip ${math(q.symbol)} = {cell}$" if values is not None else
                    f"\\smallskip ${math(q.symbol)} = $ {cell}", ""]
        else:
            for label, index in _tables(dims, axes):
                part = None if values is None else values[index]
                part_marks = None if marks is None else np.asarray(marks)[index]
                grid = _tabular(part, dims[len(axes):], lambda v: number(float(v), sheet.precision), part_marks)
                out += [f"\\smallskip\\textit{{{label}}}\\\\" if label else "\\smallskip", grid, ""]
        if not sheet.key and q.name in worked:
            out += ["\\smallskip\\noindent\\fbox{\\parbox[t][3.5cm]{\\dimexpr\\linewidth-2\\fboxsep-2\\fboxrule}"
                    "{\\scriptsize Working}}", ""]  # fmt: skip
        out += ["\\end{minipage}", ""]
    if sheet.standalone:
        out.append("\\end{document}")
    return "\n".join(out).rstrip("\n") + "\n"


def _given_latex(block: Given) -> list[str]:
    name, values, axes = block.name, block.matrix.values, block.matrix.axes
    if values.ndim == 0 or values.ndim == len(axes):
        text = given(values) if values.ndim == 0 else ", ".join(map(given, values))
        return [f"\\noindent ${math(name)} = {text}$\\par\\medskip", ""]
    # One minipage: the label never stays behind on a page its grid left.
    out = ["\\noindent\\begin{minipage}{\\linewidth}", f"${math(name)}$ (${math(shape(values.shape))}$)", ""]
    for label, index in _tables(values.shape, axes):
        out += [f"\\textit{{{label}}}\\\\" if label else "", _tabular(values[index], values.shape[len(axes):], given), ""]
    return out + ["\\end{minipage}", "\\medskip", ""]
