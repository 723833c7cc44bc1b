"""Input values -> typed numbers and arrays: whole numbers, (rows, cols) pairs, finite
arrays, vectors of a given length. Each raises InputError naming the key it checks."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from cnntrace.errors import InputError, shown
from cnntrace.text import number_text, shape_text

#: A (rows, cols) pair: a window's size, a stride, a padding.
Pair = tuple[int, int]


def as_array(key: str, value) -> np.ndarray:
    """``value`` as a float64 array of finite numbers; InputError naming ``key``."""
    try:
        given = np.asarray(value)
        # Strings and booleans would convert ("1" -> 1.0, True -> 1.0); numbers only.
        if given.dtype.kind not in "iuf":
            raise TypeError
        with np.errstate(over="ignore"):  # a longdouble past float64 becomes inf, refused below
            array = np.asarray(given, dtype=np.float64)  # no second copy of a float64 dataset
    except (TypeError, ValueError):
        raise InputError("expected numbers in a rectangular array", key=key) from None
    if not np.all(np.isfinite(array)):
        raise InputError("expected finite numbers, found NaN or infinity", key=key)
    return array


def is_finite(value: Real) -> bool:
    """Whether ``value`` is a finite float64 (an integer too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def whole_number(key: str, value, minimum: int) -> int:
    """A whole number >= minimum (an integral float such as 2.0 counts as 2)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"expected a whole number, got {shown(value)}", key=key)
    if not isinstance(value, Integral) and not (math.isfinite(value) and float(value).is_integer()):
        raise InputError(f"expected a whole number, got {shown(value)}", key=key)
    if value < minimum:
        raise InputError(f"must be at least {minimum}, got {number_text(int(value))}", key=key)
    return int(value)


def positive_number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not is_finite(value) or value <= 0:
        raise InputError(f"expected a positive number, got {number_text(value)}", key=key)
    return float(value)


def finite_number(key: str, value, what: str) -> float:
    """A finite number (not a boolean); ``what`` names it in the message: 'alpha'."""
    if isinstance(value, bool) or not isinstance(value, Real) or not is_finite(value):
        raise InputError(f"{what} is a finite number, got {shown(value)}", key=key)
    return float(value)


def pair(key: str, value, minimum: int, what: str) -> Pair:
    """A whole number or [rows, cols] of whole numbers ≥ minimum, as a pair."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise InputError(f"{what} is a number or [rows, cols], got {len(value)} numbers", key=key)
        return (whole_number(key, value[0], minimum), whole_number(key, value[1], minimum))
    n = whole_number(key, value, minimum)
    return (n, n)


def choice(key: str, value, choices: tuple):
    """One of ``choices`` (the default first)."""
    if value not in choices or isinstance(value, bool):
        listed = " | ".join(map(str, choices))
        raise InputError(f"expected {listed} (the default is {choices[0]}), got {shown(value)}", key=key)
    return value


def vector(key: str, array: np.ndarray, length: int, what: str, sized_by: str | None = None) -> np.ndarray:
    """Accept a number (when length is 1), a list of ``length``, or a ``length``×1 / 1×``length``
    matrix, and return it as a flat vector. ``sized_by`` says which other key set ``length``
    ("W2 (8×3) has 3 outputs"): a mismatch between two keys names both."""
    fits = (
        (array.ndim == 0 and length == 1)
        or (array.ndim == 1 and array.shape[0] == length)
        or (array.ndim == 2 and array.shape in ((length, 1), (1, length)))
    )
    if not fits:
        found = f"{array.size} entries" if array.ndim else "a number"
        other = f"; {sized_by}: one of the two is wrong" if sized_by else ""
        raise InputError(f"expected {length} {what}, found {found} (shape {shape_text(array.shape)}){other}", key=key)
    return array.reshape(length)
