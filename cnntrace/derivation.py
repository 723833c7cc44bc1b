"""The derivation of each stage as a renderer shows it: its chain rule, the form it
simplifies to and the numbers that go into it (numpy only).

    ∂L/∂W2 = ∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2
           = (A2 − Y)·Fᵀ                       with A2 − Y and F

Each layer kind writes its stages' rules (``layers.Rule``); this module puts the numbers in.
Formulas are written in a small notation that the LaTeX and Markdown renderers translate
(see ``cnntrace.render.latex.math``): symbols such as W1 and Z2, ∂A/∂B, ·, ⊙, ᵀ, −, Σ, σ and
the functions conv, conv_transpose, reshape, ReLU, MaxPool, flatten, log. Prose goes in
``note``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Factor(NamedTuple):
    """One value that goes into a chain rule: F, A2 − Y, lr."""

    symbol: str  # as the derivation writes it: dL/dZ2, W1, A2 − Y
    value: np.ndarray  # in the user's shapes


class Derivation(NamedTuple):
    """One stage's chain rule as a renderer shows it, for this trace's problem and numbers."""

    left: str  # "∂L/∂W2"; "" where there is no chain rule (the update)
    chain: str  # its right side: "∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2"
    simplified: str  # what it comes to
    factors: list[Factor]
    note: str


def derivation(trace, name: str) -> Derivation | None:
    """The chain rule of stage ``name`` with its factors' values; None where it has none."""
    rule = trace.stage(name).rule
    if rule is None:
        return None
    left, _, chain = rule.chain.partition(" = ")
    factors = [Factor(factor_symbol(trace, f), np.asarray(factor_value(trace, f))) for f in rule.factors]
    return Derivation(left, chain, rule.simplified, factors, rule.note)


def factor_symbol(trace, name: str) -> str:
    """A matrix of the trace as its stage writes it (dL_dZ2 -> dL/dZ2); inputs, lr and
    expressions (A2 − Y) as they are."""
    if name in trace.problem.inputs or name not in trace:
        return name
    return trace.stage(name).symbol


def factor_value(trace, name: str) -> np.ndarray:
    """The value of a factor of a rule, in the user's shapes: an input as the pass used
    it (a weight before the update), a matrix of the trace, lr, or an expression."""
    problem = trace.problem
    if name == "lr":
        return np.asarray(problem.lr)
    if name in problem.inputs:
        return problem.inputs[name]
    if name in trace:
        return trace[name]
    return trace.expression(name)
