"""The pieces of one entry's arithmetic: factors, their products, and what makes the entry of
them (a sum, a max, an activation of the sum). The layer kinds build them; explain.py and
the renderers read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Factor:
    """One number that enters a product: ``X[0,1]`` = 2.0, or a constant such as ``lr``."""

    symbol: str  # "X", "dL/dZ1", "lr", "1/M", "pad" …
    index: tuple[int, ...]  # the user's index into ``symbol``; () for scalars and constants
    value: float
    #: The matrix the factor is read from, where its symbol is a function of one: "Z4" for
    #: exp(Z4 − max), "A2" for log(A2); "" where the symbol names it (or it is a constant).
    source: str = ""

    @property
    def label(self) -> str:
        return self.symbol + (f"[{','.join(map(str, self.index))}]" if self.index else "")


def constant(symbol: str, value: float) -> Factor:
    return Factor(symbol, (), value)


MINUS = constant("−1", -1.0)


@dataclass(frozen=True)
class Term:
    """A product of factors; ``note`` says why it is there when that is not obvious."""

    factors: tuple[Factor, ...]
    note: str = ""

    @property
    def value(self) -> float:
        return math.prod(factor.value for factor in self.factors)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


#: How the terms make the entry: None sums them; the others apply a function to the sum
#: (or, for "max", pick the largest term, the first one on a tie; for "share", divide the
#: term at ``parameter`` by the sum). ``parameter`` is the function's own number (alpha).
FUNCTIONS = {
    None: lambda values, parameter: math.fsum(values),
    "ReLU": lambda values, parameter: max(math.fsum(values), 0.0),
    "LeakyReLU": lambda values, parameter: (s if (s := math.fsum(values)) > 0 else parameter * s),
    "step": lambda values, parameter: 1.0 if math.fsum(values) > 0 else 0.0,
    "step at 0": lambda values, parameter: 1.0 if math.fsum(values) >= 0 else 0.0,
    "leaky step": lambda values, parameter: 1.0 if math.fsum(values) > 0 else parameter,
    "σ": lambda values, parameter: sigmoid(math.fsum(values)),
    "tanh": lambda values, parameter: math.tanh(math.fsum(values)),
    "max": lambda values, parameter: max(values),
    "share": lambda values, parameter: values[int(parameter)] / math.fsum(values),
}

#: The functions applied to the sum of the terms: their terms can be left out of a long
#: explanation without changing what it shows ("max" and "share" read each term).
OF_THE_SUM = frozenset(FUNCTIONS) - {"max", "share"}
