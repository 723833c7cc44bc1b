"""The trace as rich tables: the input, the forward pass, the backward pass and the update.

Each matrix is titled with its symbol, the equation that made it and its shape, e.g.
``dL/dW1 = conv(X, dL/dZ1)   3×3``. A batch or several filters give one labelled table per
image or filter, side by side where the width allows.
"""

from __future__ import annotations

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnntrace.network import STAGE
from cnntrace.render import View, selected
from cnntrace.render.format import number, shape

SECTION_TITLES = {
    "forward": "Forward pass",
    "backward": "Backward pass",
    "update": "Update: one step of gradient descent, lr = {lr}",
}


def matrix_table(values: np.ndarray, precision: int, title: str | None = None) -> Table:
    """A 1-D or 2-D array as a table with its row and column indices; zeros dimmed."""
    rows = values.reshape(1, -1) if values.ndim == 1 else values
    table = Table(
        title=title, title_justify="left", title_style="italic", box=box.SIMPLE_HEAD,
        header_style="dim", pad_edge=False, show_edge=False,
    )  # fmt: skip
    if values.ndim == 2:
        table.add_column("", style="dim", justify="right")
    for col in range(rows.shape[1]):
        table.add_column(str(col), justify="right")
    for index, row in enumerate(rows):
        cells = [Text(number(v, precision), style="dim" if v == 0 else "") for v in row]
        table.add_row(*([str(index)] if values.ndim == 2 else []), *cells)
    return table


def _label(axes: tuple[str, ...], index: tuple[int, ...]) -> str:
    return ", ".join(f"{axis} {i}" for axis, i in zip(axes, index))


def matrix_block(
    symbol: str, equation: str | None, values: np.ndarray, axes: tuple[str, ...], precision: int
) -> RenderableType:
    """A titled matrix, or one labelled table per image / filter along ``axes``."""
    title = Text.assemble((symbol, "bold cyan"))
    if equation:
        title.append(f" = {equation}")
    if values.ndim == 0:
        title.append(" = ")
        title.append(number(float(values), precision), style="bold")
        return title
    title.append(f"   {shape(values.shape)}", style="dim")
    if not axes:
        return Group(title, matrix_table(values, precision))
    tables = [
        matrix_table(values[index], precision, title=_label(axes, index))
        for index in np.ndindex(values.shape[: len(axes)])
    ]
    return Group(title, Columns(tables, padding=(0, 4)))


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
    for section, matrices in selected(trace, view).items():
        heading = SECTION_TITLES[section].format(lr=f"{problem.lr:g}")
        parts.append(Text(("\n" if parts else "") + heading, style="bold underline"))
        for name, values in matrices.items():
            stage = STAGE[name]
            parts.append(
                matrix_block(
                    stage.symbol, stage.formula(problem.batched), values,
                    trace.leading_axes(name), view.precision,
                )  # fmt: skip
            )
    return Group(*parts)
