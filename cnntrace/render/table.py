"""The trace as rich tables: the input, the forward pass, the backward pass and the update.

Each matrix is titled with its symbol, the equation that made it and its shape, e.g.
``dL/dW1 = conv(X, dL/dZ1)   3×3``. Each backward stage also shows its chain rule, the form
it simplifies to and the values that go into it (``view.brief`` leaves them out). The cells
a layer marks carry its mark in bold yellow: in the reference, the cells of A1 that won a pool
window, the ones dL/dP1 is routed to, are marked ``*`` in A1 and dL/dA1. A batch or several
filters give one labelled table per image or filter, side by side where the width allows; a
matrix wider than the console is split into blocks of columns. What is shown comes from the
trace's document (render.document), block by block.
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

from cnntrace.render import View
from cnntrace.render.document import (
    Entry,
    Given,
    Heading,
    document,
    factor_text,
    legend_text,
    mark_text,
)
from cnntrace.render.format import (
    axes_label,
    border_sides,
    decimals,
    number,
    numbers,
    shape,
    shown_indices,
    shown_tables,
    summary_note,
)

TITLE, HEADER, DIM = Style(italic=True), Style(dim=True), Style(dim=True)
PADDING, WON, MARK = Style(dim=True, italic=True), Style(bold=True, underline=True), Style(bold=True, color="yellow")


GAP = "…"
#: Columns are separated as rich's simple tables separate them.
SEPARATOR = "   "
RULE = "─"


class MatrixBlocks:
    """A 1-D or 2-D array as a table with its row and column indices; zeros dimmed.

    ``marks`` (same shape, ints) adds its mark (``*``, ``*2``) to a cell. A
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
        self.wins = None if marks is None else marks.reshape(rows.shape)
        n_rows, n_cols = rows.shape
        row_ids, self.col_ids = shown_indices(n_rows, full), shown_indices(n_cols, full)
        self.row_ids = row_ids
        top, bottom, left, right = border_sides(border)
        self.inside = (top, n_rows - bottom, left, n_cols - right)
        self.border = any((top, bottom, left, right))
        self.rows = rows
        shown_rows = [r for r in row_ids if r is not None]
        shown_cols = [c for c in self.col_ids if c is not None]
        formatted = numbers(rows[np.ix_(shown_rows, shown_cols)], precision)
        gaps = [j for j, c in enumerate(self.col_ids) if c is None]
        n = len(shown_cols)
        self.texts = []
        for i, r in enumerate(shown_rows):  # each shown row's numbers, with their marks (``*``) and the gap
            texts = formatted[i * n : (i + 1) * n]
            if self.wins is not None:
                texts = [text + mark_text(self.wins[r, c]) for text, c in zip(texts, shown_cols)]
            for j in gaps:
                texts.insert(j, GAP)
            self.texts.append(texts)
        for i, r in enumerate(row_ids):
            if r is None:
                self.texts.insert(i, [GAP] * len(self.col_ids))
        self.header = [GAP if c is None else str(c - left) for c in self.col_ids]
        self.labels = [GAP if r is None else str(r - top) for r in row_ids] if self.indexed else []
        longest = map(max, zip(*(map(len, texts) for texts in self.texts)))
        self.widths = [max(len(h), m) for h, m in zip(self.header, longest)]
        self.label_width = max(map(len, self.labels), default=0)

    def _pieces(self, i: int, j: int) -> list[tuple[str, Style | None]]:
        """The styled pieces of the shown cell (i, j): a won cell and its mark, padding dim
        and italic, zeros dim."""
        r, c = self.row_ids[i], self.col_ids[j]
        text = self.texts[i][j]
        if r is None or c is None:
            return [(text, DIM)]
        if self.wins is not None and self.wins[r, c]:
            mark = mark_text(self.wins[r, c])
            return [(text[: len(text) - len(mark)], WON), (mark, MARK)]
        inside = self.inside
        padding = self.border and not (inside[0] <= r < inside[1] and inside[2] <= c < inside[3])
        return [(text, PADDING if padding else DIM if self.rows[r, c] == 0 else None)]

    def _block_width(self, columns: range) -> int:
        lead = self.label_width if self.indexed else -len(SEPARATOR)
        return lead + sum(len(SEPARATOR) + self.widths[j] for j in columns)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        full = self._block_width(range(len(self.widths)))
        narrowest = max(self._block_width(range(j, j + 1)) for j in range(len(self.widths)))
        return Measurement(min(narrowest, full), max(full, len(self.title or ""))).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not console.color_system:
            for line in self.plain(options.max_width):
                yield Segment(line)
                yield Segment.line()
            return
        for columns, title in self._blocks(options.max_width):
            yield from self._lines(columns, title)

    def plain(self, width: int) -> list[str]:
        """The lines of the table at ``width`` as plain text, for a console without colours
        (a pipe): the same text as the styled lines, without rich measuring each cell."""
        return [line for columns, title in self._blocks(width) for line in self._plain_lines(columns, title)]

    def _blocks(self, width: int):
        """(columns, title) of each block of columns that fits in ``width``: one block when
        the whole table fits."""
        n = len(self.widths)
        if self._block_width(range(n)) <= width:
            yield range(n), self.title
            return
        start = 0
        while start < n:
            end = start + 1
            while end < n and self._block_width(range(start, end + 1)) <= width:
                end += 1
            first, last = (self.header[j] for j in (start, end - 1))
            label = f"columns {first}–{last}" if end - start > 1 else f"column {first}"
            yield range(start, end), f"{self.title}, {label}" if self.title else label
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
        for i in range(len(self.texts)):
            lead = [(self.labels[i].rjust(self.label_width), DIM)] if self.indexed else []
            cells = []
            for j in columns:
                pieces = self._pieces(i, j)
                cells.append([(" " * (self.widths[j] - len(self.texts[i][j])), None), *pieces])
            yield from self._row(lead, cells)

    def _plain_lines(self, columns: range, title: str | None) -> list[str]:
        """The lines of _lines as plain text."""
        widths = [self.widths[j] for j in columns]
        lead = self.label_width if self.indexed else None

        def join(label, texts):
            cells = SEPARATOR.join(map(str.rjust, texts, widths))
            return cells if lead is None else label.rjust(lead) + SEPARATOR + cells

        lines = [title] if title else []
        lines += [join("", [self.header[j] for j in columns]), RULE * self._block_width(columns)]
        lines += [join(self.labels[i] if self.indexed else "", [texts[j] for j in columns])
                  for i, texts in enumerate(self.texts)]  # fmt: skip
        return lines

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


class SideBySide(Columns):
    """Tables side by side, as rich's Columns lays them out, measured at the width that puts
    them all in one row: Columns itself does not say how wide it is, and a console that asks
    (a pipe, an SVG) took it for as wide as the console could be."""

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        _top, right, _bottom, left = Padding.unpack(self.padding)
        measured = [Measurement.get(console, options, table) for table in self.renderables]
        if not measured:
            return Measurement(0, 0)
        widest = sum(m.maximum for m in measured) + max(left, right) * (len(measured) - 1)
        return Measurement(max(m.minimum for m in measured), widest).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Into a pipe, tables that fit in one row are joined line by line here (as Columns
        lays them out: each as wide as it measures, top-aligned, ``padding`` apart); rich's
        grid measures every segment of every cell, seconds for a large network."""
        _top, right, _bottom, left = Padding.unpack(self.padding)
        gap = max(left, right)
        tables = self.renderables
        widths = [Measurement.get(console, options, table).maximum for table in tables]
        plain = not console.color_system and all(isinstance(t, MatrixBlocks | Text) for t in tables)
        if not plain or sum(widths) + gap * (len(tables) - 1) > options.max_width:
            yield from super().__rich_console__(console, options)
            return
        columns = [t.plain(w) if isinstance(t, MatrixBlocks) else t.plain.split("\n") for t, w in zip(tables, widths)]
        for i in range(max(map(len, columns))):
            cells = [(column[i] if i < len(column) else "").ljust(w) for column, w in zip(columns, widths)]
            yield Segment((" " * gap).join(cells))
            yield Segment.line()


def matrix_block(
    symbol: str, equation: str | None, values: np.ndarray, axes: tuple[str, ...], precision: int,
    derivation: list[RenderableType] = (), marks: np.ndarray | None = None, border: int = 0,
    full: bool = False, shown_at: int | None = None,
) -> RenderableType:
    """A titled matrix, or one labelled table per image / filter along ``axes``, with the
    ``derivation`` lines between the title and the numbers (see MatrixBlocks for ``border``
    and ``full``). A ``precision`` other than ``shown_at`` (the view's) is said in the
    title. Of more than SUMMARY_TABLES images (or filters) the first and last
    EDGE_TABLES are shown, unless ``full`` (see render.format)."""
    title = Text.assemble((symbol, "bold cyan"))
    if equation:
        title.append(f" = {equation}")
    if values.ndim == 0:
        title.append(" = ")
        title.append(number(float(values), precision), style="bold")
        return Group(title, *derivation)
    title.append(f"   {shape(values.shape)}", style="dim")
    if shown_at is not None and precision != shown_at:
        title.append(f"   at {precision} decimals", style="dim")
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
    return Group(title, *derivation, SideBySide(tables, padding=(0, 4)))


def derivation_lines(d, precision: int) -> list[RenderableType]:
    """A stage's chain rule (document.Entry.derivation), its simplified form, the values that go
    into it and a note, as indented dim lines; nothing for a stage without one."""
    if d is None:
        return []
    lines = []
    if d.left:
        lines += [
            Text.assemble((d.left, "italic"), " = ", d.chain),
            Text(f"{' ' * len(d.left)} = {d.simplified}"),
        ]
    factors = ",  ".join(factor_text(factor, precision) for factor in d.factors)
    lines.append(Text(f"with {factors}", style="dim"))
    if d.note:
        lines.append(Text(d.note, style="dim"))
    return [_indented(line) for line in lines]


def _indented(line: Text) -> Padding:
    """A derivation line, indented under its title; it wraps with the same indent."""
    return Padding(line, (0, 0, 0, 2), expand=False)


def _prose(lines) -> list[RenderableType]:
    return [_indented(Text(line, style="dim")) for line in lines]


def render(trace, view: View = View()) -> RenderableType:
    """The whole trace as one renderable, block by block of its document (render.document):
    the input unless ``view.only`` picks some matrices, then each section in the
    derivation's order."""
    precision, full = view.precision, view.full

    def shown(values) -> int:
        """The decimals of one matrix: the view's, or more for small entries (``view.scaled``)."""
        return decimals(values, precision) if view.scaled else precision

    parts: list[RenderableType] = []
    for block in document(trace, view).blocks:
        match block:
            case Heading(title=title, summary=summary):
                parts.append(Text(("\n" if parts else "") + title, style="bold underline"))
                if summary:
                    parts.append(Text(summary, style="dim"))
            case Given(name=name, matrix=matrix):
                parts.append(matrix_block(name, None, matrix.values, matrix.axes, shown(matrix.values), full=full,
                                          shown_at=precision))
            case Entry(matrix=matrix):
                prose = [
                    *_prose(block.before), *derivation_lines(block.derivation, precision), *_prose(block.after),
                    *_prose([legend_text(block.legend)] if block.legend else []),
                ]  # fmt: skip
                parts.append(matrix_block(
                    block.symbol, block.equation, matrix.values, matrix.axes, shown(matrix.values), prose,
                    matrix.marks, full=full, shown_at=precision,
                ))  # fmt: skip
                if block.extra is not None:
                    parts.append(_indented(extra_block(block.extra, precision, full)))
    return Group(*parts)


def extra_block(extra, precision: int, full: bool = False) -> RenderableType:
    """A layer's further matrix (document.Extra), such as ∂L/∂pad(X), its padding border
    indexed from −p and shown in italics: what the windows sent to the padding, which dL/dX
    leaves out."""
    matrix = extra.matrix
    return matrix_block(
        extra.symbol, None, matrix.values, matrix.axes, precision,
        _prose([extra.note]), border=matrix.border, full=full,
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
