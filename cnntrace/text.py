"""How the derivation writes things: symbols, partials, gradient names, shapes and numbers.

Plain functions of strings and tuples, below everything else (no numpy): the layer kinds,
the losses, the checks and the renderers all write names the same way through them.
"""

from __future__ import annotations

import math
from numbers import Integral

#: The letters batch norm's names spell out, as the derivation writes them: mu2 -> μ2.
LETTERS = {"mu": "μ", "sigmasq": "σ²", "xhat": "x̂"}


def symbol(name: str) -> str:
    """The derivation's symbol of a JSON name: dL_dW1 -> dL/dW1, dA1_dZ1 -> dA1/dZ1,
    dL_dxhat2 -> dL/dx̂2, dL_dA2_via_Z3 -> dL/dA2 via Z3."""
    if "_via_" in name:
        name, consumer = name.split("_via_")
        return f"{symbol(name)} via {consumer}"
    head, stem = ("dL_d", name[4:]) if name.startswith("dL_d") else ("", name)
    letters = stem.rstrip("0123456789")
    if letters in LETTERS and letters != stem:
        stem = LETTERS[letters] + stem[len(letters):]
    name = head + stem
    return name.replace("_d", "/d") if name.startswith("d") else name


def partial(name: str) -> str:
    """dL_dW1 -> ∂L/∂W1."""
    return "∂" + symbol(name).replace("/d", "/∂")[1:]


def shape_text(dims, scalar: str = "scalar") -> str:
    """(3, 3) -> '3×3'; no dimensions -> ``scalar``."""
    return "×".join(str(n) for n in dims) if len(dims) else scalar


def pair_text(pair: tuple[int, int], joiner: str = "×") -> str:
    """(2, 2) -> '2'; (2, 3) -> '2×3'."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}{joiner}{pair[1]}"


def number_text(value) -> str:
    """A number from the input as a message quotes it; an integer too long to read (one of
    hundreds of digits) by its order of magnitude."""
    if isinstance(value, Integral) and abs(value) >= 10**18:
        return f"about {'-' if value < 0 else ''}10^{int(abs(int(value)).bit_length() * math.log10(2))}"
    return repr(value)
