"""Number and shape formatting shared by the human-readable renderers."""

from __future__ import annotations

import itertools
import math

import numpy as np

from cnntrace.text import shape_text

#: The human-readable views summarize what no one reads entry by entry: a matrix with more
#: rows or columns than SUMMARY_SIDE shows its first and last EDGE rows and columns, and of
#: more than SUMMARY_TABLES images (or filters) the first and last EDGE_TABLES are shown.
#: ``View.full`` shows everything; JSON and CSV always hold every entry.
SUMMARY_SIDE, EDGE = 40, 8
SUMMARY_TABLES, EDGE_TABLES = 8, 3


def border_sides(border) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): how many outer rows and columns of a matrix are padding,
    from one number for all four, (rows, cols) or the four."""
    if isinstance(border, int):
        return (border,) * 4
    if len(border) == 2:
        return (border[0], border[0], border[1], border[1])
    return tuple(border)


def shown_indices(n: int, full: bool = False, side: int = SUMMARY_SIDE, edge: int = EDGE) -> list[int | None]:
    """The indices of ``n`` rows (or columns) a view shows; None stands for the ones left out."""
    if full or n <= side:
        return list(range(n))
    return [*range(edge), None, *range(n - edge, n)]


def shown_tables(shape: tuple[int, ...], full: bool = False):
    """The (image, filter …) indices of the tables a view shows, in order; None for a run
    of tables left out."""
    previous = ()
    for index in itertools.product(*(shown_indices(n, full, SUMMARY_TABLES, EDGE_TABLES) for n in shape)):
        if None not in index:
            yield index
        elif None not in previous:
            yield None
        previous = index


def summary_note(shape: tuple[int, ...], axes: tuple[str, ...], full: bool = False) -> str:
    """'showing the first and last 3 images; --full shows all', or '' when nothing is left out."""
    if full or not shape:
        return ""
    parts = [f"first and last {EDGE_TABLES} {axis}s" for axis, n in zip(axes, shape) if n > SUMMARY_TABLES]
    if max(shape[len(axes):], default=0) > SUMMARY_SIDE:
        parts.append(f"first and last {EDGE} {'entries' if len(shape) - len(axes) == 1 else 'rows and columns'}")
    return f"showing the {', '.join(parts)}; --full shows all" if parts else ""


def number(value: float, precision: int) -> str:
    """``value`` rounded for the eye to ``precision`` decimals.

    Fixed-point, except that a non-zero value too small to show at this precision, or one
    of 10⁷ and more, is written in scientific notation instead of as 0.0000 or a long row
    of digits. Negative zero is shown as zero.
    """
    magnitude = abs(value)
    if value != 0 and (magnitude < 0.5 * 10.0**-precision or magnitude >= 1e7):
        return f"{value:.{precision}e}"
    text = f"{value:.{precision}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def numbers(values, precision: int) -> list[str]:
    """``number`` of every entry of ``values`` (flattened), the same texts, made in one pass:
    a table of hundreds of thousands of cells formats them in a fraction of a second."""
    flat = np.asarray(values, dtype=float).ravel()
    texts = list(map(f"%.{precision}f".__mod__, flat.tolist()))  # the f-string's text, made faster
    magnitude = np.abs(flat)
    with np.errstate(invalid="ignore"):
        other = (~np.isfinite(flat) | (magnitude >= 1e7) | (np.signbit(flat) & (magnitude < 10.0**-precision))
                 | ((flat != 0) & (magnitude < 0.5 * 10.0**-precision)))  # fmt: skip
    for i in np.flatnonzero(other).tolist():
        texts[i] = number(float(flat[i]), precision)
    return texts


def decimals(values, precision: int) -> int:
    """The decimals that show a matrix's largest entry to three significant digits, and
    never fewer than ``precision``: a matrix of gradients all below 0.01 is not a wall of
    0.0000 (at most 17)."""
    magnitude = np.abs(np.asarray(values, dtype=float))
    magnitude = magnitude[np.isfinite(magnitude)]
    largest = float(magnitude.max()) if magnitude.size else 0.0
    if largest == 0:
        return precision
    return min(17, max(precision, 2 - math.floor(math.log10(largest))))


def shape(dims) -> str:
    """(3, 3) -> '3×3'; a scalar -> 'scalar' (as the core's messages write it)."""
    return shape_text(dims)


def axes_label(axes, index) -> str:
    """("image", "filter"), (1, 0) -> 'image 1, filter 0': which table of a batch this is."""
    return ", ".join(f"{axis} {i}" for axis, i in zip(axes, index))
