"""Number and shape formatting shared by the human-readable renderers."""

from __future__ import annotations

from cnntrace.problem import shape_text


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


def shape(dims) -> str:
    """(3, 3) -> '3×3'; a scalar -> 'scalar' (as the core's messages write it)."""
    return shape_text(dims)


def axes_label(axes, index) -> str:
    """("image", "filter"), (1, 0) -> 'image 1, filter 0': which table of a batch this is."""
    return ", ".join(f"{axis} {i}" for axis, i in zip(axes, index))
