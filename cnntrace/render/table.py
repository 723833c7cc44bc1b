"""The trace as rich tables: the input, the forward pass, the backward pass and the update.

Each matrix is titled with its symbol, the equation that made it and its shape, e.g.
``dL/dW1 = conv(X, dL/dZ1)   3×3``. Each backward stage also shows its chain rule, the form
it simplifies to and the values that go into it (``view.brief`` leaves them out). The cells
of A1 that won a pool window, the ones dL/dP1 is routed to, are marked ``*`` in A1 and
dL/dA1. A batch or several filters give one labelled table per image or filter, side by side
where the width allows; a matrix wider than the console is split into blocks of columns.
"""

from __future__ import annotations

import numpy as np
from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

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

SECTION_TITLES = {
    "forward": "Forward pass",
    "backward": "Backward pass",
    "update": "Update: one step of gradient descent, lr = {lr}",
}

#: Factors with at most this many entries are shown with their numbers.
INLINE_ENTRIES = 4


TITLE, HEADER, DIM = Style(italic=True), Style(dim=True), Style(dim=True)
PADDING, WON, MARK = Style(dim=True, italic=True), Style(bold=True, underline=True), Style(bold=True, color="yellow")


def _mark(wins: int) -> str:
    return "" if wins == 0 else "*" if wins == 1 else f"*{wins}"


GAP = "…"
#: Columns are separated as rich's simple tables separate them.
SEPARATOR = "   "
RULE = "─"


class MatrixBlocks:
    """A 1-D or 2-D array as a table with its row and column indices; zeros dimmed.

    ``marks`` (same shape, ints) adds ``*`` to the cells that won a pool window. A
    ``border`` of p marks the outer p rows and columns as padding: they are indexed from
    −p, and shown dim and italic. A matrix larger than SUMMARY_SIDE on a side shows its
    corners (unless ``full``; see render.format).

    When it is wider than the space it gets, it is split into blocks of columns, each
    titled with its column indices, the way numpy and pandas wrap wide arrays. Measured at
    its full width, so that into a pipe (an unbounded width) it stays one table. The cells
    are laid out here, as text, rather than by rich's Table: a 600×600 matrix takes a
    fraction of a second instead of minutes.
    """

    def __init__(self, values, precision, title=None, marks=None, border=0, full=False):
        self.title = title
        self.indexed = values.ndim == 2
        rows = values.reshape(1, -1) if values.ndim == 1 else values
        wins = None if marks is None else marks.reshape(rows.shape)
        n_rows, n_cols = rows.shape
        row_ids, self.col_ids = shown_indices(n_rows, full), shown_indices(n_cols, full)
        bh, bw = (border, border) if isinstance(border, int) else border
        inside = (bh, n_rows - bh, bw, n_cols - bw)

        def cell(r, c):
            if r is None or c is None:
                return [(GAP, DIM)]
            v = rows[r, c]
            text = number(v, precision)
            if wins is not None and wins[r, c]:
                return [(text, WON), (_mark(wins[r, c]), MARK)]
            padding = (bh or bw) and not (inside[0] <= r < inside[1] and inside[2] <= c < inside[3])
            return [(text, PADDING if padding else DIM if v == 0 else None)]

        self.header = [GAP if c is None else str(c - bw) for c in self.col_ids]
        self.labels = [GAP if r is None else str(r - bh) for r in row_ids] if self.indexed else []
        self.cells = [[cell(r, c) for c in self.col_ids] for r in row_ids]
        self.widths = [
            max(len(self.header[j]), *(sum(len(t) for t, _ in row[j]) for row in self.cells))
            for j in range(len(self.col_ids))
        ]
        self.label_width = max(map(len, self.labels), default=0)

    def _block_width(self, columns: range) -> int:
        lead = self.label_width if self.indexed else -len(SEPARATOR)
        return lead + sum(len(SEPARATOR) + self.widths[j] for j in columns)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        full = self._block_width(range(len(self.widths)))
        narrowest = max(self._block_width(range(j, j + 1)) for j in range(len(self.widths)))
        return Measurement(min(narrowest, full), max(full, len(self.title or ""))).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        n = len(self.widths)
        if self._block_width(range(n)) <= width:
            yield from self._lines(range(n), self.title)
            return
        start = 0
        while start < n:
            end = start + 1
            while end < n and self._block_width(range(start, end + 1)) <= width:
                end += 1
            first, last = (self.header[j] for j in (start, end - 1))
            label = f"columns {first}–{last}" if end - start > 1 else f"column {first}"
            yield from self._lines(range(start, end), f"{self.title}, {label}" if self.title else label)
            start = end

    def _lines(self, columns: range, title: str | None):
        """The segments of one block: title, header, rule and rows."""
        if title:
            yield Segment(title, TITLE)
            yield Segment.line()
        lead = [(" " * self.label_width, None)] if self.indexed else []
        header = [[(self.header[j].rjust(self.widths[j]), HEADER)] for j in columns]
        yield from self._row(lead, header)
        yield Segment(RULE * self._block_width(columns))
        yield Segment.line()
        for index, row in enumerate(self.cells):
            lead = [(self.labels[index].rjust(self.label_width), DIM)] if self.indexed else []
            cells = []
            for j in columns:
                pieces = row[j]
                pad = self.widths[j] - sum(len(text) for text, _ in pieces)
                cells.append([(" " * pad, None), *pieces])
            yield from self._row(lead, cells)

    @staticmethod
    def _row(lead, cells):
        """One line: the index column, then each cell after the separator."""
        first = True
        for text, style in lead:
            yield Segment(text, style)
            first = False
        for pieces in cells:
            if not first:
                yield Segment(SEPARATOR)
            first = False
            for text, style in pieces:
                yield Segment(text, style)
        yield Segment.line()


def matrix_block(
    symbol: str, equation: str | None, values: np.ndarray, axes: tuple[str, ...], precision: int,
    derivation: list[RenderableType] = (), marks: np.ndarray | None = None, border: int = 0,
    full: bool = False,
) -> RenderableType:
    """A titled matrix, or one labelled table per image / filter along ``axes``, with the
    ``derivation`` lines between the title and the numbers (see MatrixBlocks for ``border``
    and ``full``). Of more than SUMMARY_TABLES images (or filters) the first and last
    EDGE_TABLES are shown, unless ``full`` (see render.format)."""
    title = Text.assemble((symbol, "bold cyan"))
    if equation:
        title.append(f" = {equation}")
    if values.ndim == 0:
        title.append(" = ")
        title.append(number(float(values), precision), style="bold")
        return Group(title, *derivation)
    title.append(f"   {shape(values.shape)}", style="dim")
    if note := summary_note(values.shape, axes, full):
        title.append(f"   {note}", style="dim")
    if not axes:
        return Group(title, *derivation, MatrixBlocks(values, precision, marks=marks, border=border, full=full))
    tables: list[RenderableType] = []
    for index in shown_tables(values.shape[: len(axes)], full):
        if index is None:
            tables.append(Text(GAP, style="dim"))
            continue
        tables.append(MatrixBlocks(
            values[index], precision, axes_label(axes, index),
            None if marks is None else marks[index], border, full,
        ))  # fmt: skip
    return Group(title, *derivation, Columns(tables, padding=(0, 4)))


def _factor_text(symbol: str, value: np.ndarray, precision: int) -> str:
    """``F = [0.8750, 0.8750, 0.6250, 0.3750]`` for a few numbers, ``X (6×6)`` for more."""
    if value.ndim == 0:
        return f"{symbol} = {number(float(value), precision)}"
    if value.size <= INLINE_ENTRIES and value.ndim == 1:
        return f"{symbol} = [{', '.join(number(float(v), precision) for v in value)}]"
    return f"{symbol} ({shape(value.shape)})"


def derivation_lines(trace, name: str, precision: int) -> list[RenderableType]:
    """The chain rule of ``name``, its simplified form, the values that go into it and a
    note, as indented dim lines; nothing for a stage without a chain rule."""
    d = derivation(trace, name)
    if d is None:
        return []
    lines = []
    if d.left:
        lines += [
            Text.assemble((d.left, "italic"), " = ", d.chain),
            Text(f"{' ' * len(d.left)} = {d.simplified}"),
        ]
    factors = ",  ".join(_factor_text(symbol, value, precision) for symbol, value in d.factors)
    lines.append(Text(f"with {factors}", style="dim"))
    if d.note:
        lines.append(Text(d.note, style="dim"))
    return [_indented(line) for line in lines]


def _indented(line: Text) -> Padding:
    """A derivation line, indented under its title; it wraps with the same indent."""
    return Padding(line, (0, 0, 0, 2), expand=False)


def input_axes(problem, name: str) -> tuple[str, ...]:
    """The axes that split an input into one table per image or filter."""
    return problem.layouts[name].axes(problem.batched)[0]


def _input_blocks(problem, precision: int, full: bool = False) -> list[RenderableType]:
    blocks: list[RenderableType] = [Text(problem.summary(), style="dim")]
    for name, values in problem.inputs.items():
        blocks.append(matrix_block(name, None, values, input_axes(problem, name), precision, full=full))
    return blocks


NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def legend_parts(annotation, mark_text=_mark, every_count: bool = False) -> tuple[str, str, str]:
    """What the marks mean, in three parts: the mark '*', its meaning, and where some cell
    won more than one window how a count reads: the notation's example '*2: won two
    windows' (the table view's, whatever the counts), or with ``every_count`` each count
    that occurs ('*2: won two windows, *4: won four windows'); else ''."""
    counts = sorted({int(n) for n in np.unique(annotation.marks) if n > 1})
    if not counts:
        return mark_text(1), annotation.legend, ""
    shown = counts if every_count else [2]
    many = ", ".join(f"{mark_text(n)}: won {NUMBER_WORDS.get(n, str(n))} windows" for n in shown)
    return mark_text(1), annotation.legend, many


def legend(annotation, mark_text=_mark) -> str:
    """What the marks mean: '* won its pool window: … (*2: won two windows)'."""
    first, meaning, many = legend_parts(annotation, mark_text)
    return f"{first} {meaning}" + (f" ({many})" if many else "")


def render(trace, view: View = View()) -> RenderableType:
    """The whole trace as one renderable, section by section in the derivation's order.

    The input comes first unless ``view.only`` picks some matrices.
    """
    problem = trace.problem
    parts: list[RenderableType] = []
    if view.only is None:
        parts += [Text("Input", style="bold underline"), *_input_blocks(problem, view.precision, view.full)]
    annotations = trace.annotations
    for section, matrices in selected(trace, view).items():
        heading = SECTION_TITLES[section].format(lr=f"{problem.lr:g}")
        parts.append(Text(("\n" if parts else "") + heading, style="bold underline"))
        for name, values in matrices.items():
            stage = trace.stage(name)
            note = annotations.get(name)
            derivation = [] if view.brief else derivation_lines(trace, name, view.precision)
            marks = None if note is None else note.marks
            if note is not None and not view.brief:
                derivation = [_indented(Text(line, style="dim")) for line in note.before] + derivation
                derivation += [_indented(Text(line, style="dim")) for line in note.after]
                if note.legend:
                    derivation.append(_indented(Text(legend(note), style="dim")))
            parts.append(
                matrix_block(
                    stage.symbol, stage.equation, values, trace.leading_axes(name),
                    view.precision, derivation, marks, full=view.full,
                )  # fmt: skip
            )
            if note is not None and note.extra is not None and not view.brief:
                parts.append(_indented(extra_block(note.extra, problem.batched, view.precision, view.full)))
    return Group(*parts)


def extra_block(extra, batched: bool, precision: int, full: bool = False) -> RenderableType:
    """A layer's further matrix, such as ∂L/∂pad(X), its padding border indexed from −p and
    shown in italics: what the windows sent to the padding, which dL/dX leaves out."""
    title, values, layout, border, note = extra
    return matrix_block(
        title, None, values, layout.axes(batched)[0], precision,
        [_indented(Text(note, style="dim"))], border=border, full=full,
    )  # fmt: skip


def export(renderable: RenderableType, kind: str, width: int, title: str = "cnntrace") -> str:
    """The renderable recorded at ``width`` columns as an HTML page (kind "html") or an SVG
    picture ("svg"), with its colours."""
    import io

    console = Console(record=True, file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor")
    console.print(renderable)
    if kind == "html":
        return console.export_html(inline_styles=True)
    return console.export_svg(title=title)
