"""Training's outputs: the epoch table, the loss curve drawn with plain unicode, the final
parameters as tables, and the JSON forms (one line per epoch, or one object). Each function
returns a value; none prints. rich is imported by the tables alone: the JSON forms start
without it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from cnntrace.render.format import number

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

#: The epoch table shows every epoch up to this many, else this many evenly spaced ones.
SHOWN_EPOCHS = 20
#: Eighths of a character cell, from empty to full: the loss curve's resolution.
BLOCKS = " ▁▂▃▄▅▆▇█"


# -- JSON -----------------------------------------------------------------------------------


def epoch_dict(epoch) -> dict:
    """{"epoch", "loss", "accuracy"} of one Epoch, as plain numbers, and "test_loss",
    "test_accuracy" when there is a test set."""
    out = {"epoch": epoch.epoch, "loss": epoch.loss, "accuracy": epoch.accuracy}
    if epoch.test_loss is not None:
        out["test_loss"], out["test_accuracy"] = epoch.test_loss, epoch.test_accuracy
    return out


def ndjson_line(epoch) -> str:
    """One line of JSON (and its newline) for one epoch, written as the epoch ends."""
    return json.dumps(epoch_dict(epoch), allow_nan=False) + "\n"


def render_json(history, parameters: dict, confusion=None) -> str:
    """One JSON object: {"history": [{"epoch", "loss", "accuracy"}, ...], "parameters":
    {"W1", "B1", "W2", "B2"}}, the parameters in the input's shapes, every digit kept, and
    "confusion" (counts, rows the true class) when the network classifies."""
    document = {
        "history": [epoch_dict(epoch) for epoch in history],
        "parameters": {name: value.tolist() for name, value in parameters.items()},
    }
    if confusion is not None:
        document["confusion"] = confusion.tolist()
    return json.dumps(document, allow_nan=False, separators=(",", ":")) + "\n"


# -- tables and the curve ---------------------------------------------------------------------


def shown_epochs(count: int, limit: int = SHOWN_EPOCHS) -> list[int]:
    """Indices of the epochs the table shows: all of them when there are at most ``limit``,
    else ``limit`` evenly spaced ones, the first and the last among them."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def epoch_table(history, precision: int) -> Table:
    """Epoch, loss and accuracy (and the test set's, when there is one), one row per shown
    epoch."""
    tested = history[0].test_loss is not None
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="dim", pad_edge=False, show_edge=False)
    columns = ["epoch", "loss", "accuracy"] + (["test_loss", "test_accuracy"] if tested else [])
    for column in columns:
        table.add_column(column, justify="right")
    for index in shown_epochs(len(history)):
        epoch = history[index]
        row = [str(epoch.epoch), number(epoch.loss, precision), percent(epoch.accuracy)]
        if tested:
            row += [number(epoch.test_loss, precision), percent(epoch.test_accuracy)]
        table.add_row(*row)
    return table


def progress_text(epoch) -> str:
    """The progress bar's status after an epoch: its loss and accuracy, and the test set's."""
    text = f"loss {epoch.loss:.4f}  accuracy {percent(epoch.accuracy)}"
    if epoch.test_loss is not None:
        text += f"  test_loss {epoch.test_loss:.4f}  test_accuracy {percent(epoch.test_accuracy)}"
    return text


def confusion_table(counts) -> Table:
    """The confusion matrix: a row per true class, a column per predicted one, the
    diagonal (right answers) in bold, and each row's accuracy."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    classes = len(counts)
    table = Table(box=box.SIMPLE_HEAD, header_style="dim", pad_edge=False, show_edge=False)
    table.add_column("true \\ predicted", justify="right")
    for column in range(classes):
        table.add_column(str(column), justify="right")
    table.add_column("right", justify="right")
    for row in range(classes):
        total = int(counts[row].sum())
        cells = [Text(str(int(counts[row, c])), style="bold" if c == row else "") for c in range(classes)]
        table.add_row(str(row), *cells, percent(counts[row, row] / total) if total else "—")
    return table


def loss_curve(losses: list[float], width: int = 60, height: int = 8) -> str:
    """The losses as a column chart of ``height`` text rows and ``width`` columns, each
    column the loss of the epoch at its place along the run; the axis gives the highest
    and the lowest loss, and the first and the last epoch."""
    count = len(losses)
    if count > width:  # evenly spaced epochs, the first and the last among them
        values = [losses[round(c * (count - 1) / (width - 1))] for c in range(width)]
    else:  # each epoch as wide as the chart allows
        values = [losses[c * count // width] for c in range(width)]
    low, high = min(losses), max(losses)
    steps = height * 8
    # In eighths of a cell: the lowest loss gets one eighth, so that every column shows.
    levels = [
        steps if high == low else 1 + round((value - low) / (high - low) * (steps - 1))
        for value in values
    ]
    labels = [f"{high:.4g}", f"{low:.4g}"]
    margin = max(len(label) for label in labels)
    rows = []
    for row in range(height - 1, -1, -1):
        cells = "".join(BLOCKS[min(max(level - row * 8, 0), 8)] for level in levels)
        label = labels[0] if row == height - 1 else labels[1] if row == 0 else ""
        rows.append(f"{label:>{margin}} │{cells}")
    rows.append(" " * margin + " └" + "─" * width)
    last = f"epoch {count}"
    rows.append(" " * (margin + 2) + ("1" + last.rjust(width - 1) if count > 1 else last))
    return "\n".join(rows)


def percent(accuracy: float | None) -> str:
    """91.7%; a dash where nothing is classified (an mse loss)."""
    return "—" if accuracy is None else f"{accuracy:.1%}"


def render(history, problem, trained: dict, precision: int, *, lr: float, batch_size: int,
           full: bool = False, momentum: float = 0.0, confusion=None,
           confusion_of: str = "training set") -> RenderableType:  # fmt: skip
    """The whole training as one renderable: a summary, the epoch table, the loss curve and
    the final parameters (``trained``, in the input's shapes); large ones are summarized
    unless ``full``."""
    # rich and the table view are imported here alone: the JSON forms of a training (ndjson
    # piped to another tool) start without them.
    from rich.console import Group
    from rich.text import Text

    from cnntrace.render.document import input_axes  # lazy: start-up (rich's table view)
    from cnntrace.render.table import matrix_block  # lazy: start-up

    first, last = history[0], history[-1]
    steps = -(-problem.M // batch_size)
    summary = (
        f"{len(history)} epoch{'s' * (len(history) > 1)} of gradient descent on {problem.M} "
        f"image{'s' * (problem.M > 1)}, lr {lr:g}" + (f", momentum {momentum:g}" if momentum else "")
        + f", batch size {batch_size} "
        f"({steps} step{'s' * (steps > 1)} per epoch): loss {number(first.loss, precision)} → "
        f"{number(last.loss, precision)}"
        + ("" if first.accuracy is None else f", accuracy {percent(first.accuracy)} → {percent(last.accuracy)}")
        + ("" if last.test_loss is None else f"; test loss {number(last.test_loss, precision)}"
           + ("" if last.test_accuracy is None else f", test accuracy {percent(last.test_accuracy)}"))
    )
    parts: list[RenderableType] = [
        Text("Training", style="bold underline"),
        Text(summary, style="dim"),
        epoch_table(history, precision),
        Text("\nLoss by epoch", style="bold underline"),
        Text(loss_curve([epoch.loss for epoch in history])),
    ]
    if confusion is not None:
        parts += [
            Text(f"\nConfusion matrix of the {confusion_of} (rows: the true class)", style="bold underline"),
            confusion_table(confusion),
        ]
    parts += [
        Text("\nTrained parameters", style="bold underline"),
    ]
    for name, values in trained.items():
        # A running statistic the input did not give (batch norm's) is a vector: no leading axes.
        axes = input_axes(problem, name) if name in problem.layouts else ()
        parts.append(matrix_block(name, None, values, axes, precision, full=full))
    return Group(*parts)


def render_document(history, problem, trained: dict, precision: int, *, confusion=None, **settings) -> str:
    """render_json, called as ``render`` is (so that either renders a training): the
    problem, the precision and the table's settings make no difference to the JSON."""
    return render_json(history, trained, confusion)
