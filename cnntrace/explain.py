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

import math
import re
from dataclasses import dataclass, field

import numpy as np

from cnntrace.errors import InputError
from cnntrace.layers import Given, symbol
from cnntrace.render.format import shape as shape_text
from cnntrace.terms import FUNCTIONS, MINUS, Factor, Term, constant

__all__ = ["Explanation", "Factor", "Term", "explain", "explain_all", "explain_entry", "parse_term"]


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
    from cnntrace.problem import NAME

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


# -- the general shapes, and the user's indices ---------------------------------------------


class GeneralPass:
    """The trace's matrices on ops.py's general shapes, and the inputs before the update:
    what the layer kinds' explanations read."""

    def __init__(self, trace):
        self.trace = trace
        problem = trace.problem
        self.problem = problem
        self.M = problem.M
        self.weights = problem.general_weights()  # before the update
        self.lr = problem.lr
        self._cache: dict[str, np.ndarray] = {}
        self._shape_cache: dict[str, tuple] = {}

    def _shape(self, name: str) -> tuple[int, ...]:
        """The general shape of ``name``."""
        problem = self.problem
        if name in self.weights:
            return self.weights[name].shape
        if name in ("Y", "grad"):
            return problem.general_target.shape
        stage = problem.stage.get(name)
        layout = stage.layout if stage is not None else problem.layouts[name]
        if isinstance(layout, Given):  # a weight's gradient, or a weight after the update
            return self.weights[name.removeprefix("dL_d")].shape
        return (self.M, *layout.shape) if layout.form != "scalar" else ()

    def value(self, name: str) -> np.ndarray:
        """``name`` on the general shapes; an input (X, Y, a weight) as the pass used it."""
        if name not in self._cache:
            problem = self.problem
            if name == "X":
                value = problem.general_X()
            elif name in self.weights:
                value = self.weights[name]
            elif name in ("Y", "grad"):
                value = problem.general_target
            else:
                value = np.asarray(self.trace[name]).reshape(self._shape(name))
            self._cache[name] = value
        return self._cache[name]

    def _user_shape(self, name: str) -> tuple[int, ...]:
        if name == "X" or name in self.weights or name in ("Y", "grad"):
            return self.problem.inputs[name].shape
        return np.shape(self.trace[name])

    def _shapes(self, name: str):
        """(general, user) shapes of ``name``, whether they hold as many entries, and where
        the user's index starts in a general one (None: computed); found once, as an
        explanation of a large matrix asks for them for each of its factors."""
        if name not in self._shape_cache:
            general, user = tuple(self._shape(name)), tuple(self._user_shape(name))
            same_size = math.prod(general) == math.prod(user)
            # Where the user's shape is the general one without leading 1s (one image, one
            # channel), an index is the general one's tail: no arithmetic needed.
            lead = len(general) - len(user)
            tail = lead if lead >= 0 and general[lead:] == user and all(n == 1 for n in general[:lead]) else None
            self._shape_cache[name] = (general, user, same_size, tail)
        return self._shape_cache[name]

    def user_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """The user's index of the entry at general ``index`` of ``name``."""
        general, user, same_size, tail = self._shapes(name)
        if not general or not user:
            return ()
        if tail is not None:
            return tuple(int(i) for i in index[tail:])
        if not same_size:  # a class index for a one-hot Y
            return tuple(index[1:] if not self.problem.batched else index)
        flat = 0
        for i, n in zip(index, general):  # row-major, as np.ravel_multi_index
            flat = flat * n + int(i)
        out = []
        for n in reversed(user):
            flat, i = divmod(flat, n)
            out.append(i)
        return tuple(reversed(out))

    def general_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        general, user = self._shape(name), self._user_shape(name)
        if not general:
            return ()
        flat = int(np.ravel_multi_index(index, user)) if user else 0
        return tuple(int(i) for i in np.unravel_index(flat, general))

    def factor(self, name: str, index: tuple[int, ...], label: str | None = None) -> Factor:
        """Entry ``index`` (general) of ``name`` as a Factor labelled with the user's index."""
        value = float(self.value(name)[index])
        return Factor(label or symbol(name), self.user_index(name, index), value)

    def padded(self, name: str, m: int, c: int, row: int, col: int, padding=(0, 0)) -> Factor:
        """Cell (row, col) of map ``name`` framed by ``padding`` zeros (row, col in the
        map's own coordinates): its entry, or a padding zero."""
        H, W = self.value(name).shape[2:]
        if 0 <= row < H and 0 <= col < W:
            return self.factor(name, (m, c, row, col))
        return Factor(f"pad({name})[{row},{col}]", (), 0.0)

    def mean(self) -> tuple[Factor, ...]:
        """The 1/M of a batch's mean, as a factor; nothing for a single image."""
        return (constant("1/M", 1.0 / self.M),) if self.problem.batched else ()


def _explain_update(t: GeneralPass, name: str, index):
    lr = constant("lr", t.lr)
    gradient = f"dL_d{name}"
    terms = [
        Term((t.factor(name, index),), "before the step, as the input gives it"),
        Term((MINUS, lr, t.factor(gradient, index))),
    ]
    return f"{name} − lr·{symbol(gradient)}", terms, None, []


def _owner(trace, name: str):
    """The layer (or the loss) whose explain covers stage ``name``."""
    network = trace.problem.network
    if name == "L" or (trace.stage(name).section == "backward" and name == f"dL_d{network.output}"):
        return network.loss
    if network.fused and name == f"dL_d{network.layers[-1].input}":
        return network.loss
    for layer in network.layers:
        if name == layer.output or name in (getattr(layer, "local", None),) or name in {
            f"dL_d{p}" for p in layer.params
        } or name == f"dL_d{layer.input}":
            return layer
    raise KeyError(name)


def explain_entry(trace, name: str, index: tuple[int, ...]) -> Explanation:
    """The arithmetic of ``trace[name][index]`` (the user's index, already checked)."""
    t = trace.general_pass()
    general = t.general_index(name, index)
    if trace.stage(name).section == "update":
        formula, terms, function, notes = _explain_update(t, name, general)
        parameter = None
    else:
        explained = _owner(trace, name).explain(t, name, general)
        formula, terms, function, notes, *rest = explained
        parameter = rest[0] if rest else None
    return Explanation(name, tuple(index), formula, tuple(terms), function, tuple(notes), parameter)


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
