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
from rich import box
from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cnntrace.derivation import derivation, padded_gradient, pool_wins
from cnntrace.network import STAGE
from cnntrace.render import View, selected
from cnntrace.render.format import axes_label, number, shape

SECTION_TITLES = {
    "forward": "Forward pass",
    "backward": "Backward pass",
    "update": "Update: one step of gradient descent, lr = {lr}",
}

#: The stages whose cells are marked where A1 won a pool window.
MARKED = ("A1", "dL_dA1")
WIN_LEGEND = "* won its pool window: dL/dP1 flows back to this cell"
WIN_LEGEND_MANY = " (*2: won two windows)"
#: Factors with at most this many entries are shown with their numbers.
INLINE_ENTRIES = 4


def _mark(wins: int) -> str:
    return "" if wins == 0 else "*" if wins == 1 else f"*{wins}"


def matrix_table(
    values: np.ndarray, precision: int, title: str | None = None,
    marks: np.ndarray | None = None, columns: range | None = None, border: int = 0,
) -> Table:
    """A 1-D or 2-D array as a table with its row and column indices; zeros dimmed.

    ``marks`` (same shape, ints) adds ``*`` to the cells that won a pool window;
    ``columns`` limits the table to those column indices. A ``border`` of p marks the outer
    p rows and columns as padding: they are indexed from −p, and shown dim and italic.
    """
    rows = values.reshape(1, -1) if values.ndim == 1 else values
    wins = np.zeros(rows.shape, dtype=int) if marks is None else marks.reshape(rows.shape)
    columns = range(rows.shape[1]) if columns is None else columns
    table = Table(
        title=title, title_justify="left", title_style="italic", box=box.SIMPLE_HEAD,
        header_style="dim", pad_edge=False, show_edge=False,
    )  # fmt: skip
    if values.ndim == 2:
        table.add_column("", style="dim", justify="right")
    for col in columns:
        table.add_column(str(col - border), justify="right")
    n_rows, n_cols = rows.shape
    for index, row in enumerate(rows):
        cells = []
        for col in columns:
            v = row[col]
            padding = border and not (border <= index < n_rows - border and border <= col < n_cols - border)
            cell = Text(number(v, precision), style="dim italic" if padding else "dim" if v == 0 else "")
            if wins[index, col]:
                cell = Text.assemble((cell.plain, "bold underline"), (_mark(wins[index, col]), "bold yellow"))
            cells.append(cell)
        table.add_row(*([str(index - border)] if values.ndim == 2 else []), *cells)
    return table


class MatrixBlocks:
    """A matrix as one table, or as blocks of columns (with their indices) when it is wider
    than the space it gets, the way numpy and pandas wrap wide arrays. Measured at its full
    width, so that into a pipe (an unbounded width) it stays one table."""

    def __init__(self, values, precision, title=None, marks=None, border=0):
        self.values, self.precision, self.title, self.marks = values, precision, title, marks
        self.border = border
        self.n_cols = values.shape[-1]

    def _table(self, columns: range | None = None, title: str | None = None) -> Table:
        return matrix_table(self.values, self.precision, title, self.marks, columns, self.border)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._table())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        unbounded = options.update(width=100_000)

        def fits(columns: range) -> bool:
            return Measurement.get(console, unbounded, self._table(columns)).maximum <= width

        if fits(range(self.n_cols)):
            yield self._table(title=self.title)
            return
        start = 0
        while start < self.n_cols:
            end = start + 1
            while end < self.n_cols and fits(range(start, end + 1)):
                end += 1
            label = f"columns {start - self.border}–{end - 1 - self.border}"
            yield self._table(range(start, end), f"{self.title}, {label}" if self.title else label)
            start = end


def matrix_block(
    symbol: str, equation: str | None, values: np.ndarray, axes: tuple[str, ...], precision: int,
    derivation: list[RenderableType] = (), marks: np.ndarray | None = None, border: int = 0,
) -> RenderableType:
    """A titled matrix, or one labelled table per image / filter along ``axes``, with the
    ``derivation`` lines between the title and the numbers (see matrix_table for ``border``)."""
    title = Text.assemble((symbol, "bold cyan"))
    if equation:
        title.append(f" = {equation}")
    if values.ndim == 0:
        title.append(" = ")
        title.append(number(float(values), precision), style="bold")
        return Group(title, *derivation)
    title.append(f"   {shape(values.shape)}", style="dim")
    if not axes:
        return Group(title, *derivation, MatrixBlocks(values, precision, marks=marks, border=border))
    tables = [
        MatrixBlocks(
            values[index], precision, axes_label(axes, index),
            None if marks is None else marks[index], border,
        )  # fmt: skip
        for index in np.ndindex(values.shape[: len(axes)])
    ]
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
    if name == "dA1_dZ1":
        mask = np.asarray(trace["dA1_dZ1"])
        lines.append(Text(f"{int(mask.sum())} of {mask.size} cells of Z1 are > 0 and pass the gradient", style="dim"))
    return [_indented(line) for line in lines]


def _indented(line: Text) -> Padding:
    """A derivation line, indented under its title; it wraps with the same indent."""
    return Padding(line, (0, 0, 0, 2), expand=False)


def _input_blocks(problem, precision: int) -> list[RenderableType]:
    options = (
        f"stride {problem.stride}, padding {problem.padding}, "
        f"pool {problem.pool}×{problem.pool} with stride {problem.pool_stride}, lr {problem.lr:g}"
    )
    blocks: list[RenderableType] = [Text(options, style="dim")]
    for name in ("X", "Y", "W1", "B1", "W2", "B2"):
        values = getattr(problem, name)
        blocks.append(matrix_block(name, None, values, problem.leading_axes(name), precision))
    return blocks


def render(trace, view: View = View()) -> RenderableType:
    """The whole trace as one renderable, section by section in the derivation's order.

    The input comes first unless ``view.only`` picks some matrices.
    """
    problem = trace.problem
    parts: list[RenderableType] = []
    if view.only is None:
        parts += [Text("Input", style="bold underline"), *_input_blocks(problem, view.precision)]
    wins = None
    for section, matrices in selected(trace, view).items():
        heading = SECTION_TITLES[section].format(lr=f"{problem.lr:g}")
        parts.append(Text(("\n" if parts else "") + heading, style="bold underline"))
        for name, values in matrices.items():
            stage = STAGE[name]
            derivation = [] if view.brief else derivation_lines(trace, name, view.precision)
            marks = None
            if name in MARKED:
                wins = pool_wins(trace) if wins is None else wins  # once, for A1 and dL/dA1
                marks = wins if wins.any() else None
                if marks is not None and name == "A1" and not view.brief:
                    legend = WIN_LEGEND + (WIN_LEGEND_MANY if marks.max() > 1 else "")
                    derivation.append(_indented(Text(legend, style="dim")))
            if name == "A1" and not view.brief:
                mask = np.asarray(trace["dA1_dZ1"])
                derivation.insert(0, _indented(Text(
                    f"Z1 > 0 in {int(mask.sum())} of {mask.size} cells: A1 = Z1 there, 0 elsewhere "
                    "(the ReLU mask dA1/dZ1)", style="dim",
                )))  # fmt: skip
            parts.append(
                matrix_block(
                    stage.symbol, stage.formula(problem.batched), values,
                    trace.leading_axes(name), view.precision, derivation, marks,
                )  # fmt: skip
            )
            if name == "dL_dX" and problem.padding and not view.brief:
                parts.append(_indented(padded_block(trace, view.precision)))
    return Group(*parts)


def padded_block(trace, precision: int) -> RenderableType:
    """∂L/∂pad(X), its padding border indexed from −p and shown in italics: what the
    windows sent to the padding, which dL/dX leaves out."""
    problem = trace.problem
    p, (H, W) = problem.padding, problem.X.shape[-2:]
    outside = (
        f"in italics, the padding: rows −{p}…−1 and {H}…{H + p - 1}, "
        f"columns −{p}…−1 and {W}…{W + p - 1}"
    )
    return matrix_block(
        "∂L/∂pad(X)", None, padded_gradient(trace), problem.leading_axes("X"), precision,
        [_indented(Text(outside, style="dim"))], border=p,
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
