"""The arithmetic of one entry of the trace: ``explain(trace, "dL_dW1[0,1]")``.

Each entry is written as the derivation writes it for that one cell, with the actual numbers:

    dL/dW1[0,1] = Σ_h,w X[h+0, w+1]·dL/dZ1[h,w]
                = X[0,1]·dL/dZ1[0,0] + X[0,2]·dL/dZ1[0,1] + …

The layer kind that made the entry writes its terms (``Layer.explain``), by naive loops over
the same window positions as ops.py, from the trace's named matrices and the problem's
inputs (never from the result being explained), so ``Explanation.value`` is an independent
second computation of the entry: the tests compare it with the trace for every entry of
every matrix.

Indices are the user's, as in the JSON output: a batch's image and a stack's filter come
first. The computation runs on the general shapes of ops.py and maps indices both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from cnntrace.errors import InputError
from cnntrace.layers.base import Explained, Recipe
from cnntrace.naming import NAME, grad, plain
from cnntrace.terms import FUNCTIONS, MINUS, Factor, Term, constant
from cnntrace.text import shape_text, symbol
from cnntrace.tracer import GeneralPass, Trace

__all__ = ["Explanation", "Factor", "Term", "explain", "explain_all", "explain_entry", "parse_term", "update_recipe"]


@dataclass(frozen=True)
class Explanation:
    """The arithmetic of one entry.

    ``formula`` is the entry's equation in symbols; ``terms`` the products it adds up (in
    the order the loops meet them); ``function`` what is applied to their sum (None: the sum
    itself), with its ``parameter`` where it has one. ``value`` is computed from the terms.
    """

    name: str  # JSON name, e.g. "dL_dW1"
    index: tuple[int, ...]  # the user's index
    formula: str
    terms: tuple[Term, ...]
    function: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    parameter: float | None = None

    @property
    def label(self) -> str:
        return symbol(self.name) + (f"[{','.join(map(str, self.index))}]" if self.index else "")

    @property
    def value(self) -> float:
        return FUNCTIONS[self.function]([term.value for term in self.terms], self.parameter)


# -- parsing a TERM ------------------------------------------------------------------------

_TERM = re.compile(r"^\s*(?P<name>[^\[\]\s]+)\s*(?P<index>(?:\[[^\[\]]*\]\s*)*)$")
#: The longest TERM read: a name with the indices of any matrix fits in far fewer characters
#: (and an index of thousands of digits is more than Python turns into an int).
MAX_TERM = 100


def parse_term(text: str) -> tuple[str, tuple[int, ...]]:
    """``"dL_dW1[0,1]"``, ``"dL/dW1[0][1]"`` or ``"∂L/∂W1[0, 1]"`` -> ("dL_dW1", (0, 1)).

    Checks the syntax; the name and the index are checked against a trace by ``explain``.
    """
    if len(text) > MAX_TERM:
        raise InputError(
            f"is {len(text)} characters long; a TERM is a name with an index, e.g. dL_dW1[0,1]", key=text
        )
    match = _TERM.match(text)
    if not match or not re.fullmatch(r"[A-Za-z_/∂][A-Za-z0-9_/∂]*", match["name"]):
        raise InputError("expected a name with an index, e.g. dL_dW1[0,1] or Z1[2,3]", key=text)
    name = match["name"].replace("∂", "d").replace("/", "_")
    index = []
    for part in re.findall(r"\[([^\[\]]*)\]", match["index"]):
        for number in part.split(","):
            if not re.fullmatch(r"\s*\d+\s*", number):
                raise InputError(
                    f"indices are whole numbers from 0, as in {name}[0,1]; got [{part}]", key=text
                )
            index.append(int(number))
    return name, tuple(index)


def check_possible(name: str, term: str) -> None:
    """Refuse, before any file is read, a name that no network has (Q7, W0)."""
    if not NAME.fullmatch(name):
        raise InputError(
            f"unknown name {name!r}; names are those of the trace: Z1, A1, P1, F, L, W1, dL_dW1, "
            "dA1_dZ1 … (cnntrace step FILE lists them)",
            key=term,
        )


def check_name(trace, name: str, term: str) -> None:
    if name not in trace:
        names = ", ".join(stage.name for stage in trace.stages)
        raise InputError(f"unknown name {name!r}; the names are {names}", key=term)


def _ranges(name: str, shape: tuple[int, ...], axes: tuple[str, ...]) -> str:
    if not shape:
        return f"{name} is a number: write it without an index"
    ranges = ", ".join(f"0..{n - 1}" for n in shape)
    return f"{name} is {shape_text(shape)} ({', '.join(axes)}): indices {ranges}"


def check_index(trace, name: str, index: tuple[int, ...], term: str) -> None:
    """Raise InputError (key = term) unless ``index`` picks one entry of ``trace[name]``."""
    shape = np.shape(trace[name])
    if len(index) != len(shape) or any(i >= n for i, n in zip(index, shape)):
        got = f"; got [{','.join(map(str, index))}]" if index else "; got no index"
        raise InputError(_ranges(name, shape, trace.axis_names(name)) + got, key=term)


def _explain_update(t: GeneralPass, name: str, index) -> Explained:
    lr = constant("lr", t.lr)
    gradient = grad(name)
    terms = [
        Term((t.factor(name, index),), "before the step, as the input gives it"),
        Term((MINUS, lr, t.factor(gradient, index))),
    ]
    return Explained(f"{name} − lr·{symbol(gradient)}", terms)


def update_recipe(t: GeneralPass, name: str) -> Recipe:
    """_explain_update in the page's JavaScript (layers.base.Recipe)."""
    gradient = grad(name)
    data = {"w": name, "g": gradient, "lr": t.lr, "formula": f"{name} − lr·{symbol(gradient)}"}
    return Recipe(UPDATE, data, (name, gradient))


UPDATE = """function (t, p, name, i) {
  return { formula: p.formula, terms: [t.term([t.factor(p.w, i)], "before the step, as the input gives it"),
                                       t.term([t.constant("−1", -1), t.constant("lr", p.lr), t.factor(p.g, i)])],
           notes: [] };
}"""


def explain_entry(trace: Trace, name: str, index: tuple[int, ...]) -> Explanation:
    """The arithmetic of ``trace[name][index]`` (the user's index, already checked)."""
    t = trace.general_pass()
    general = t.general_index(name, index)
    owner = trace.stage(name).owner  # the layer or loss that made the stage; None: the update
    # One path's part of a forked gradient (dL_dA2_via_Z3) is what its layer sends back to
    # the matrix (dL_dA2): the layer explains it under that name.
    explained = _explain_update(t, name, general) if owner is None else owner.explain(t, plain(name), general)
    return Explanation(name, tuple(index), explained.formula, tuple(explained.terms), explained.function,
                       tuple(explained.notes), explained.parameter)  # fmt: skip


def explain(trace, term: str) -> Explanation:
    """Parse ``term`` (e.g. ``"dL_dW1[0,1]"``), check it against the trace, explain it.

    Raises InputError with key=term for an unknown name or an index out of range.
    """
    name, index = parse_term(term)
    check_name(trace, name, term)
    check_index(trace, name, index, term)
    return explain_entry(trace, name, index)


def explain_all(trace):
    """Yield the explanation of every entry of every matrix, in the derivation's order."""
    for stage in trace.stages:
        for index in np.ndindex(np.shape(trace[stage.name])):
            yield explain_entry(trace, stage.name, tuple(int(i) for i in index))
