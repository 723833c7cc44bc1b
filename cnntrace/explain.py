"""The arithmetic of one entry of the trace: ``explain(trace, "dL_dW1[0,1]")``.

Each entry is written as the derivation writes it for that one cell, with the actual numbers:

    dL/dW1[0,1] = Σ_h,w X[h+0, w+1]·dL/dZ1[h,w]
                = X[0,1]·dL/dZ1[0,0] + X[0,2]·dL/dZ1[0,1] + …

The terms are found by naive loops over the same window positions as ops.py, from the trace's
named matrices and the problem's inputs (never from the result being explained), so
``Explanation.value`` is an independent second computation of the entry: the tests compare
it with the trace for every entry of every matrix.

Indices are the user's, as in the JSON output: a batch's image and a stack's filter come first.
The computation runs on the general shapes of ops.py (M, K, …) and maps indices both ways.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from cnntrace.errors import InputError
from cnntrace.network import STAGE, STAGES
from cnntrace.render.format import shape as shape_text

#: The inputs, as the pass saw them (before the update): their names in the trace mean
#: the updated values, so they are read from the problem instead.
INPUTS = ("X", "Y", "W1", "B1", "W2", "B2")


@dataclass(frozen=True)
class Factor:
    """One number that enters a product: ``X[0,1]`` = 2.0, or a constant such as ``lr``."""

    symbol: str  # "X", "dL/dZ1", "lr", "1/M", "pad" …
    index: tuple[int, ...]  # the user's index into ``symbol``; () for scalars and constants
    value: float

    @property
    def label(self) -> str:
        return self.symbol + (f"[{','.join(map(str, self.index))}]" if self.index else "")


@dataclass(frozen=True)
class Term:
    """A product of factors; ``note`` says why it is there when that is not obvious."""

    factors: tuple[Factor, ...]
    note: str = ""

    @property
    def value(self) -> float:
        return math.prod(factor.value for factor in self.factors)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


#: How the terms make the entry: None sums them; the others apply a function to the sum
#: (or, for "max", pick the largest term, the first one on a tie).
FUNCTIONS = {
    None: lambda values: math.fsum(values),
    "ReLU": lambda values: max(math.fsum(values), 0.0),
    "step": lambda values: 1.0 if math.fsum(values) > 0 else 0.0,
    "σ": lambda values: _sigmoid(math.fsum(values)),
    "max": lambda values: max(values),
}


@dataclass(frozen=True)
class Explanation:
    """The arithmetic of one entry.

    ``formula`` is the entry's equation in symbols; ``terms`` the products it adds up (in
    the order the loops meet them); ``function`` what is applied to their sum (None: the sum
    itself). ``value`` is computed from the terms alone.
    """

    name: str  # JSON name, e.g. "dL_dW1"
    index: tuple[int, ...]  # the user's index
    formula: str
    terms: tuple[Term, ...]
    function: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        symbol = STAGE[self.name].symbol
        return symbol + (f"[{','.join(map(str, self.index))}]" if self.index else "")

    @property
    def value(self) -> float:
        return FUNCTIONS[self.function]([term.value for term in self.terms])


# -- parsing a TERM ------------------------------------------------------------------------

_TERM = re.compile(r"^\s*(?P<name>[^\[\]\s]+)\s*(?P<index>(?:\[[^\[\]]*\]\s*)*)$")
#: The longest TERM read: a name with the indices of any matrix fits in far fewer characters
#: (and an index of thousands of digits is more than Python turns into an int).
MAX_TERM = 100


def parse_term(text: str) -> tuple[str, tuple[int, ...]]:
    """``"dL_dW1[0,1]"``, ``"dL/dW1[0][1]"`` or ``"∂L/∂W1[0, 1]"`` -> ("dL_dW1", (0, 1)).

    Checks the syntax and the name; the index is checked against a trace by ``explain``.
    """
    if len(text) > MAX_TERM:
        raise InputError(
            f"is {len(text)} characters long; a TERM is a name with an index, e.g. dL_dW1[0,1]", key=text
        )
    match = _TERM.match(text)
    if not match:
        raise InputError("expected a name with an index, e.g. dL_dW1[0,1] or Z1[2,3]", key=text)
    name = match["name"].replace("∂", "d").replace("/", "_")
    if name not in STAGE:
        raise InputError(
            f"unknown name {match['name']!r}; the names are {', '.join(STAGE)}", key=text
        )
    index = []
    for part in re.findall(r"\[([^\[\]]*)\]", match["index"]):
        for number in part.split(","):
            if not re.fullmatch(r"\s*\d+\s*", number):
                raise InputError(
                    f"indices are whole numbers from 0, as in {name}[0,1]; got [{part}]", key=text
                )
            index.append(int(number))
    return name, tuple(index)


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


class _Pass:
    """The trace's matrices in ops.py's general shapes, and the inputs before the update."""

    def __init__(self, trace):
        self.trace = trace
        p = trace.problem
        self.problem = p
        self.M, self.K = p.M, p.K
        X, Y, W1, B1, W2, B2 = p.general()
        self.inputs = {"X": X, "Y": Y, "W1": W1, "B1": B1, "W2": W2, "B2": B2}
        self.s, self.pad, self.pool, self.ps = p.stride, p.padding, p.pool, p.pool_stride
        self.H, self.W = X.shape[1:]
        self.kh, self.kw = W1.shape[1:]
        Z1 = self.general("Z1")
        self.Ho, self.Wo = Z1.shape[2:]
        self.Hp, self.Wp = self.general("P1").shape[2:]

    def general(self, name: str) -> np.ndarray:
        """``name`` in the general shapes: before the update for the inputs."""
        if name in INPUTS and name in self.inputs:
            return self.inputs[name]
        value = np.asarray(self.trace[name])
        kind = STAGE[name].kind
        M, K = self.M, self.K
        shapes = {
            "map": (M, K, *value.shape[-2:]) if value.ndim >= 2 else None,
            "flat": (M, -1), "batch": (M,), "scalar": (),
            "X": (M, *value.shape[-2:]), "W1": (K, *value.shape[-2:]),
            "B1": (K,), "W2": (-1,), "B2": (),
        }  # fmt: skip
        return value.reshape(shapes[kind])

    def user_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """The user's index of the entry at general ``index`` of ``name``."""
        general = self.general(name).shape
        user = self.problem.X.shape if name == "X" else (
            getattr(self.problem, name).shape if name in INPUTS else np.shape(self.trace[name])
        )
        if not general:
            return ()
        flat = int(np.ravel_multi_index(index, general))
        return tuple(int(i) for i in np.unravel_index(flat, user)) if user else ()

    def general_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        user = np.shape(self.trace[name])
        general = self.general(name).shape
        if not general:
            return ()
        flat = int(np.ravel_multi_index(index, user)) if user else 0
        return tuple(int(i) for i in np.unravel_index(flat, general))

    def factor(self, name: str, index: tuple[int, ...], symbol: str | None = None) -> Factor:
        """The entry ``index`` (general) of ``name`` as a Factor labelled with the user's index."""
        value = float(self.general(name)[index])
        return Factor(symbol or _symbol(name), self.user_index(name, index), value)

    def x_factor(self, m: int, row: int, col: int) -> Factor:
        """Xp[m, row, col] of the padded image: X's entry, or a padding zero."""
        r, c = row - self.pad, col - self.pad
        if 0 <= r < self.H and 0 <= c < self.W:
            return self.factor("X", (m, r, c))
        return Factor(f"pad(X)[{r},{c}]", (), 0.0)


def _symbol(name: str) -> str:
    return STAGE[name].symbol if name in STAGE else name


# -- one function per stage, in the derivation's order -------------------------------------


def _Z1(t: _Pass, m, k, h, w):
    terms = [Term((t.factor("B1", (k,)),))]
    for i in range(t.kh):
        for j in range(t.kw):
            row, col = h * t.s + i, w * t.s + j
            x = t.x_factor(m, row, col)
            terms.append(Term((t.factor("W1", (k, i, j)), x), "padding" if x.symbol != "X" else ""))
    rows = f"{h * t.s - t.pad}..{h * t.s - t.pad + t.kh - 1}"
    cols = f"{w * t.s - t.pad}..{w * t.s - t.pad + t.kw - 1}"
    notes = [
        f"h = {h}, w = {w}, stride s = {t.s}, padding p = {t.pad}: "
        f"the window over X rows {rows}, columns {cols}"
    ]
    if t.pad and any(term.note == "padding" for term in terms):
        notes.append("cells outside X are the zero padding")
    formula = "B1 + Σ_i,j W1[i,j]·X[h·s + i − p, w·s + j − p]"
    return formula, terms, None, notes


def _A1(t: _Pass, m, k, h, w):
    z = t.factor("Z1", (m, k, h, w))
    note = f"{z.label} {'> 0, so A1 = Z1' if z.value > 0 else '≤ 0, so A1 = 0'}"
    return "ReLU(Z1[h,w]) = max(Z1[h,w], 0)", [Term((z,))], "ReLU", [note]


def _window(t: _Pass, h, w):
    """The A1 cells of pool window (h, w), in row-major order."""
    return [(h * t.ps + a, w * t.ps + b) for a in range(t.pool) for b in range(t.pool)]


def _winner(t: _Pass, m, k, h, w):
    """The first maximum of window (h, w) in row-major order, as ops.maxpool_forward picks it."""
    A1 = t.general("A1")
    best = None
    for r, c in _window(t, h, w):
        if best is None or A1[m, k, r, c] > A1[m, k, best[0], best[1]]:
            best = (r, c)
    return best


def _P1(t: _Pass, m, k, h, w):
    cells = _window(t, h, w)
    terms = [Term((t.factor("A1", (m, k, r, c)),)) for r, c in cells]
    r, c = _winner(t, m, k, h, w)
    won = t.factor("A1", (m, k, r, c))
    ties = sum(1 for term in terms if term.value == won.value)
    notes = [
        f"window rows {cells[0][0]}..{cells[-1][0]}, columns {cells[0][1]}..{cells[-1][1]} "
        f"(pool {t.pool}, stride {t.ps})",
        f"the max is {won.label}" + (f"; {ties} cells tie, the first in row-major order wins" if ties > 1 else ""),
    ]
    return "max over the pool window of A1", terms, "max", notes


def _F(t: _Pass, m, n):
    k, rest = divmod(n, t.Hp * t.Wp)
    h, w = divmod(rest, t.Wp)
    p1 = t.factor("P1", (m, k, h, w))
    return "P1 in row-major order (filter, row, column)", [Term((p1,))], None, [f"F entry {n} is {p1.label}"]


def _Z2(t: _Pass, m):
    n = t.general("F").shape[1]
    terms = [Term((t.factor("F", (m, c)), t.factor("W2", (c,)))) for c in range(n)]
    terms.append(Term((t.factor("B2", ()),)))
    return "Σ_c F[c]·W2[c] + B2", terms, None, []


def _A2(t: _Pass, m):
    z = t.factor("Z2", (m,))
    return "σ(Z2) = 1 / (1 + e^(−Z2))", [Term((z,))], "σ", []


def _log_A2(t: _Pass, m, one_minus: bool = False) -> Factor:
    """log(A2) or log(1 − A2), computed from Z2 so that a saturated sigmoid stays finite."""
    z = float(t.general("Z2")[m])
    value = -np.logaddexp(0.0, z) if one_minus else -np.logaddexp(0.0, -z)
    symbol = "log(1 − A2)" if one_minus else "log(A2)"
    return Factor(symbol, t.user_index("Z2", (m,)), float(value))


def _mean(t: _Pass) -> tuple[Factor, ...]:
    """The 1/M of a batch's mean, as a factor; nothing for a single image."""
    return (Factor("1/M", (), 1.0 / t.M),) if t.problem.batched else ()


def _L(t: _Pass):
    terms, notes = [], []
    for m in range(t.M):
        y = t.factor("Y", (m,))
        if y.value != 0:
            terms.append(Term((Factor("−1", (), -1.0), *_mean(t), y, _log_A2(t, m))))
        if y.value != 1:
            one_minus_y = Factor("(1 − Y)", y.index, 1.0 - y.value)
            terms.append(Term((Factor("−1", (), -1.0), *_mean(t), one_minus_y, _log_A2(t, m, True))))
    notes.append("a term whose label weight (Y or 1 − Y) is 0 is left out")
    formula = "−Y·log(A2) − (1 − Y)·log(1 − A2)"
    if t.problem.batched:
        formula = f"(1/M)·Σ_m ({formula})"
    return formula, terms, None, notes


def _dL_dA2(t: _Pass, m):
    y = t.factor("Y", (m,))
    z = float(t.general("Z2")[m])
    mean = _mean(t)
    terms = []
    if y.value != 0:
        terms.append(Term((Factor("−1", (), -1.0), *mean, y, Factor("1/A2", y.index, 1.0 / _sigmoid(z)))))
    if y.value != 1:
        terms.append(Term((*mean, Factor("(1 − Y)", y.index, 1.0 - y.value),
                           Factor("1/(1 − A2)", y.index, 1.0 / _sigmoid(-z)))))  # fmt: skip
    formula = "(1/M)·(−Y/A2 + (1 − Y)/(1 − A2))" if mean else "−Y/A2 + (1 − Y)/(1 − A2)"
    return formula, terms, None, ["a term whose label weight is 0 is left out"]


def _dA2_dZ2(t: _Pass, m):
    a2 = t.factor("A2", (m,))
    z = float(t.general("Z2")[m])
    return "A2·(1 − A2)", [Term((a2, Factor("(1 − A2)", a2.index, _sigmoid(-z))))], None, []


def _dL_dZ2(t: _Pass, m):
    mean = _mean(t)
    a2, y = t.factor("A2", (m,)), t.factor("Y", (m,))
    terms = [Term((*mean, a2)), Term((Factor("−1", (), -1.0), *mean, y))]
    notes = ["the chain rule dL/dA2·dA2/dZ2 gives the same: A2·(1 − A2) cancels"]
    return "(A2 − Y)/M" if mean else "A2 − Y", terms, None, notes


def _dL_dW2(t: _Pass, c):
    terms = [Term((t.factor("F", (m, c)), t.factor("dL_dZ2", (m,)))) for m in range(t.M)]
    return "Σ_m F[m,c]·dL/dZ2[m]  (Fᵀ·dL/dZ2)", terms, None, []


def _dL_dB2(t: _Pass):
    terms = [Term((t.factor("dL_dZ2", (m,)),)) for m in range(t.M)]
    return "Σ_m dL/dZ2[m]", terms, None, []


def _dL_dF(t: _Pass, m, c):
    return "dL/dZ2·W2[c]", [Term((t.factor("dL_dZ2", (m,)), t.factor("W2", (c,))))], None, []


def _dL_dP1(t: _Pass, m, k, h, w):
    n = (k * t.Hp + h) * t.Wp + w
    return "dL/dF at the same place in row-major order", [Term((t.factor("dL_dF", (m, n)),))], None, []


def _dL_dA1(t: _Pass, m, k, r, c):
    """Every pool window that contains A1[r,c]; those it won route their dL/dP1 here."""
    terms, notes = [], []
    windows = 0
    for a in reversed(range(t.pool)):  # windows in row-major order
        for b in reversed(range(t.pool)):
            h, rem_h = divmod(r - a, t.ps)
            w, rem_w = divmod(c - b, t.ps)
            if rem_h or rem_w or not (0 <= h < t.Hp and 0 <= w < t.Wp):
                continue
            windows += 1
            won = _winner(t, m, k, h, w) == (r, c)
            d = t.factor("dL_dP1", (m, k, h, w))
            if won:
                terms.append(Term((d,), f"won window {d.label}"))
            else:
                winner = t.factor("A1", (m, k, *_winner(t, m, k, h, w)))
                notes.append(f"window {d.label[len('dL/dP1'):]}: won by {winner.label}, not this cell")
    here = t.factor("A1", (m, k, r, c)).label
    if not windows:
        notes.append(f"{here} lies in no pool window (pool {t.pool}, stride {t.ps}): 0")
    elif not terms:
        notes.append(f"{here} won none of the {windows} window(s) that contain it: 0")
    return "Σ over the pool windows this cell won of dL/dP1[window]", terms, None, notes


def _dA1_dZ1(t: _Pass, m, k, h, w):
    z = t.factor("Z1", (m, k, h, w))
    note = f"{z.label} {'> 0, so 1' if z.value > 0 else '≤ 0, so 0 (ReLU′(0) = 0)'}"
    return "1 if Z1[h,w] > 0 else 0", [Term((z,))], "step", [note]


def _dL_dZ1(t: _Pass, m, k, h, w):
    terms = [Term((t.factor("dL_dA1", (m, k, h, w)), t.factor("dA1_dZ1", (m, k, h, w))))]
    return "dL/dA1[h,w]·dA1/dZ1[h,w]", terms, None, []


def _dL_dB1(t: _Pass, k):
    terms = [
        Term((t.factor("dL_dZ1", (m, k, h, w)),))
        for m in range(t.M) for h in range(t.Ho) for w in range(t.Wo)
    ]  # fmt: skip
    return "Σ_h,w dL/dZ1[h,w]", terms, None, []


def _dL_dW1(t: _Pass, k, i, j):
    terms = []
    for m in range(t.M):
        for h in range(t.Ho):
            for w in range(t.Wo):
                x = t.x_factor(m, h * t.s + i, w * t.s + j)
                terms.append(Term((x, t.factor("dL_dZ1", (m, k, h, w))), "padding" if x.symbol != "X" else ""))
    notes = [f"i = {i}, j = {j}, stride s = {t.s}, padding p = {t.pad}"]
    if any(term.note for term in terms):
        notes.append("cells outside X are the zero padding")
    return "Σ_h,w X[h·s + i − p, w·s + j − p]·dL/dZ1[h,w]  (conv(X, dL/dZ1))", terms, None, notes


def _dL_dX(t: _Pass, m, r, c):
    """Every (filter, output position, kernel offset) whose window put W1 on X[r,c]."""
    terms = []
    row, col = r + t.pad, c + t.pad  # in the padded image
    for k in range(t.K):
        for h in range(t.Ho):
            for w in range(t.Wo):
                i, j = row - h * t.s, col - w * t.s
                if 0 <= i < t.kh and 0 <= j < t.kw:
                    terms.append(Term((t.factor("dL_dZ1", (m, k, h, w)), t.factor("W1", (k, i, j)))))
    notes = [f"r = {r}, c = {c}, stride s = {t.s}, padding p = {t.pad}"]
    if t.pad:
        notes.append(f"X[{r},{c}] is cell [{row},{col}] of the image padded by {t.pad}")
    if not terms:
        notes.append(f"no window of the convolution covers X[{r},{c}] (stride {t.s}): 0")
    formula = "Σ_k,h,w dL/dZ1[h,w]·W1[r + p − h·s, c + p − w·s]  (conv_transpose(dL/dZ1, W1))"
    return formula, terms, None, notes


def _update(gradient: str):
    parameter = gradient[len("dL_d"):]

    def explain_update(t: _Pass, *index):
        lr = Factor("lr", (), t.problem.lr)
        terms = [
            Term((t.factor(parameter, index),), "before the step, as the input gives it"),
            Term((Factor("−1", (), -1.0), lr, t.factor(gradient, index))),
        ]
        return f"{parameter} − lr·{_symbol(gradient)}", terms, None, []

    return explain_update


EXPLAINERS = {
    "Z1": _Z1, "A1": _A1, "P1": _P1, "F": _F, "Z2": _Z2, "A2": _A2, "L": _L,
    "dL_dA2": _dL_dA2, "dA2_dZ2": _dA2_dZ2, "dL_dZ2": _dL_dZ2, "dL_dW2": _dL_dW2,
    "dL_dB2": _dL_dB2, "dL_dF": _dL_dF, "dL_dP1": _dL_dP1, "dL_dA1": _dL_dA1,
    "dA1_dZ1": _dA1_dZ1, "dL_dZ1": _dL_dZ1, "dL_dB1": _dL_dB1, "dL_dW1": _dL_dW1,
    "dL_dX": _dL_dX,
    "W1": _update("dL_dW1"), "B1": _update("dL_dB1"), "W2": _update("dL_dW2"),
    "B2": _update("dL_dB2"),
}  # fmt: skip
assert set(EXPLAINERS) == {stage.name for stage in STAGES}


def explain_entry(trace, name: str, index: tuple[int, ...], *, _pass: _Pass | None = None) -> Explanation:
    """The arithmetic of ``trace[name][index]`` (the user's index, already checked)."""
    t = _pass or _Pass(trace)
    formula, terms, function, notes = EXPLAINERS[name](t, *t.general_index(name, index))
    return Explanation(name, tuple(index), formula, tuple(terms), function, tuple(notes))


def explain(trace, term: str) -> Explanation:
    """Parse ``term`` (e.g. ``"dL_dW1[0,1]"``), check it against the trace, explain it.

    Raises InputError with key=term for an unknown name or an index out of range.
    """
    name, index = parse_term(term)
    check_index(trace, name, index, term)
    return explain_entry(trace, name, index)


def explain_all(trace):
    """Yield the explanation of every entry of every matrix, in the derivation's order."""
    t = _Pass(trace)
    for stage in STAGES:
        for index in np.ndindex(np.shape(trace[stage.name])):
            yield explain_entry(trace, stage.name, tuple(int(i) for i in index), _pass=t)
