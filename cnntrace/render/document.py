"""The trace as one document: walked once, in the derivation's order, into typed blocks that
the table, Markdown, LaTeX and HTML views and the worksheets format.

    Heading   Input                 the problem in one line
    Diagram   X → Z1 → … → L        a network that is not a straight list: its graph
    Given     X                     6×6
    Heading   Forward pass
    Entry     A1 = ReLU(Z1)         its matrix with its marks, notes, legend
    …
    Heading   Backward pass
    Entry     dL/dW2 = (A2 − Y)·Fᵀ  its chain rule with its factors' values
    …

What one stage needs beyond its numbers (a pool's marks and what they mean, a ReLU's count,
the matrix a padding sends back to) comes from its layer's annotation (``layers.Annotation``),
never from its name. A renderer only chooses how to draw each block, and a mark: every
format writes the same mark (``mark_text``) in its own way (``\\*2``, ``^{*2}``, a span).
No rich here: the Markdown and LaTeX views stay quick to import.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnntrace.derivation import Derivation, Factor, derivation
from cnntrace.naming import grad
from cnntrace.render import View, selected
from cnntrace.render.format import number, shape

TITLES = {
    "input": "Input",
    "forward": "Forward pass",
    "backward": "Backward pass",
    "update": "Update: one step of gradient descent, lr = {lr}",
}

#: A factor with at most this many entries (a short vector) is written with its numbers.
INLINE_ENTRIES = 4

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


class Matrix(NamedTuple):
    """The numbers of one block, as the user's shapes hold them."""

    values: np.ndarray
    axes: tuple[str, ...]  # the leading axes (image, filter) that split it into tables
    marks: np.ndarray | None = None  # ints of the same shape, 0 = no mark (mark_text)
    border: int | tuple[int, ...] = 0  # outer rows and columns of padding, indexed from −top and −left (format.border_sides)


class Heading(NamedTuple):
    """A section: the input, the forward or the backward pass, the update."""

    section: str  # "input", "forward", "backward" or "update"
    title: str  # "Forward pass"; "Update: one step of gradient descent, lr = 0.1"
    summary: str = ""  # the input's: the problem in one line


class Given(NamedTuple):
    """One input as the pass used it (a weight before the update)."""

    name: str
    matrix: Matrix


class Legend(NamedTuple):
    """What the marks of a stage mean."""

    meaning: str  # the annotation's: "won its pool window: dL/dP1 flows back to this cell"
    counts: tuple[int, ...]  # the marks above one that occur (cells that won several windows)
    many: str = ""  # the annotation's: how a count above one reads, "won {n} windows"


class LegendParts(NamedTuple):
    """A legend as a format writes it: '*', 'won its pool window: …', '*2: won two windows'."""

    mark: str  # the mark, drawn
    meaning: str
    many: str  # how a count above one reads; '' where every mark is one


class Extra(NamedTuple):
    """A further matrix a layer shows after a stage, such as ∂L/∂pad(X)."""

    symbol: str
    note: str
    matrix: Matrix


class Entry(NamedTuple):
    """One matrix of the trace with everything shown around it; without its prose
    (derivation, notes, legend, extra) in a brief view."""

    name: str  # its JSON name, as ``--only``, explain and an answers file write it
    section: str  # "forward", "backward" or "update"
    symbol: str  # as the derivation writes it: dL/dW1
    equation: str
    matrix: Matrix
    derivation: Derivation | None = None  # its chain rule with its factors' values
    before: tuple[str, ...] = ()  # prose before the chain rule
    after: tuple[str, ...] = ()  # and after it
    legend: Legend | None = None
    extra: Extra | None = None


class Node(NamedTuple):
    """A matrix of the network's graph: X, what a layer makes, L."""

    name: str  # Z1; its stage's JSON name ("" for X, which is no stage)
    kind: str  # what makes it: "conv", "add"; "input" for X, the loss for L
    stage: str  # the stage it links to ("" for none)
    merge: bool = False  # made by an add or a concat


class Sum(NamedTuple):
    """The backward sum at a fork: a matrix that feeds several layers."""

    name: str  # A2
    stage: str  # dL_dA2, the sum's stage
    symbol: str  # dL/dA2
    paths: tuple[str, ...]  # the layers' outputs it feeds: Z3, S4


class Diagram(NamedTuple):
    """A network that is not a straight list as a graph: its matrices in the order they are
    made, the forward arrows, and the sums of the backward pass at the forks."""

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]  # (from, to), by name
    sums: tuple[Sum, ...]


class Document(NamedTuple):
    """The blocks of one trace, in the order they are shown."""

    blocks: tuple[Heading | Diagram | Given | Entry, ...]
    lr: float  # the learning rate of the update, for a title that typesets it


def document(trace, view: View = View(), *, givens: bool | None = None, marks: bool = True) -> Document:
    """The trace as blocks: the inputs (unless ``view.only`` picks matrices, or ``givens``
    says otherwise), then each section's selected matrices. ``view.brief`` leaves out the
    prose; without ``marks`` the layers' annotations are not read (a worksheet has none)."""
    problem = trace.problem
    if givens is None:
        givens = view.only is None
    blocks: list[Heading | Diagram | Given | Entry] = []
    if givens:
        blocks.append(Heading("input", TITLES["input"], problem.summary()))
        if not problem.network.straight:
            blocks.append(diagram(trace))
        blocks += [Given(name, Matrix(values, input_axes(problem, name))) for name, values in problem.inputs.items()]
    annotations = trace.annotations if marks else {}
    for section, matrices in selected(trace, view).items():
        blocks.append(Heading(section, TITLES[section].format(lr=f"{problem.lr:g}")))
        for name, values in matrices.items():
            blocks.append(_entry(trace, name, values, annotations.get(name), view.brief))
    return Document(tuple(blocks), problem.lr)


def diagram(trace) -> Diagram:
    """The graph of the trace's network (see Diagram)."""
    network = trace.problem.network
    nodes = [Node("X", "input", ""), *(Node(layer.output, layer.type, layer.output, layer.merge) for layer in network.layers)]
    if "L" in trace:
        nodes.append(Node("L", network.loss.type, "L"))
    edges = tuple(edge for edge in network.edges if edge[1] != "L" or "L" in trace)
    sums = tuple(Sum(fork.name, trace.stage(grad(fork.name)).name, trace.stage(grad(fork.name)).symbol,
                     fork.consumers) for fork in network.forks.values())  # fmt: skip
    return Diagram(tuple(nodes), edges, sums)


def _entry(trace, name: str, values: np.ndarray, annotation, brief: bool) -> Entry:
    stage = trace.stage(name)
    matrix = Matrix(values, trace.leading_axes(name), None if annotation is None else annotation.marks)
    entry = Entry(name, stage.section, stage.symbol, stage.equation, matrix)
    if brief:
        return entry
    entry = entry._replace(derivation=derivation(trace, name))
    if annotation is None:
        return entry
    legend = None
    if annotation.legend:
        counts = tuple(sorted({int(n) for n in np.unique(annotation.marks) if n > 1}))
        legend = Legend(annotation.legend, counts, annotation.many)
    extra = None
    if annotation.extra is not None:
        shown = annotation.extra
        extra = Extra(shown.title, shown.note, Matrix(shown.values, shown.layout.axes(trace.problem.batched)[0],
                                                     border=shown.border))
    return entry._replace(before=annotation.before, after=annotation.after, legend=legend, extra=extra)


def input_axes(problem, name: str) -> tuple[str, ...]:
    """The axes that split an input into one table per image or filter."""
    return problem.layouts[name].axes(problem.batched)[0]


# -- the shared vocabulary ---------------------------------------------------------------------


def mark_text(count: int) -> str:
    """The mark of a cell: '*' once, '*2' for a cell that won two windows; '' for none."""
    return "" if count == 0 else "*" if count == 1 else f"*{count}"


def legend_parts(legend: Legend, draw=mark_text, every_count: bool = False) -> LegendParts:
    """What the marks mean, in three parts: the mark (drawn by ``draw``), its meaning, and
    where some cell won more than one window how a count reads: the notation's example
    '*2: won two windows' (whatever the counts), or with ``every_count`` each count that
    occurs ('*2: won two windows, *4: won four windows'); else ''."""
    if not legend.counts or not legend.many:
        return LegendParts(draw(1), legend.meaning, "")
    shown = legend.counts if every_count else (2,)
    many = ", ".join(f"{draw(n)}: {legend.many.format(n=NUMBER_WORDS.get(n, str(n)))}" for n in shown)
    return LegendParts(draw(1), legend.meaning, many)


def legend_text(legend: Legend, draw=mark_text, every_count: bool = False, words=str) -> str:
    """'* won its pool window: … (*2: won two windows)': the marks drawn by ``draw``, the
    meaning written by ``words`` (LaTeX's prose, say); see legend_parts."""
    first, meaning, many = legend_parts(legend, draw, every_count)
    return f"{first} {words(meaning)}" + (f" ({many})" if many else "")


def factor_text(factor: Factor, precision: int) -> str:
    """``F = [0.8750, 0.8750, 0.6250, 0.3750]`` for a few numbers, ``X (6×6)`` for more."""
    symbol, value = factor
    if value.ndim == 0:
        return f"{symbol} = {number(float(value), precision)}"
    if value.size <= INLINE_ENTRIES and value.ndim == 1:
        return f"{symbol} = [{', '.join(number(float(v), precision) for v in value)}]"
    return f"{symbol} ({shape(value.shape)})"
