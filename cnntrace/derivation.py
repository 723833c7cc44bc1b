"""The derivation as data: each backward stage's chain rule, its simplified form and the
numbers that go into it, for the renderers to show next to the matrix (numpy only).

    ∂L/∂W2 = ∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2
           = (A2 − Y)·Fᵀ                       with A2 − Y and F

Formulas are written in a small notation that the LaTeX and Markdown renderers translate
(see ``cnntrace.render.latex.math``): symbols such as W1 and Z2, ∂A/∂B, ·, ⊙, ᵀ, −, Σ, σ and
the functions conv, conv_transpose, reshape, ReLU, MaxPool, flatten, log. Prose goes in
``note``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnntrace import ops
from cnntrace.network import STAGE

#: The inputs; in a trace these names mean the parameters after the update, so the
#: factors read them from the problem: the values the pass used.
INPUTS = ("X", "Y", "W1", "B1", "W2", "B2")


class ChainRule(NamedTuple):
    """How one stage follows from the ones before it."""

    name: str  # the stage's JSON name
    chain: str  # the chain rule in ∂ symbols, from L; "" for the update
    simplified: str  # what it comes to, in terms of matrices already computed
    factors: tuple[str, ...]  # the values that go into it: stage names, inputs, "A2 − Y", "lr"
    note: str = ""  # prose: why it simplifies, where the gradient flows
    batch_simplified: str | None = None  # where a batch of M changes the simplified form
    padded_simplified: str | None = None  # where padding changes it
    padded_note: str = ""  # added to the note when X is padded

    def simplified_form(self, problem) -> str:
        if problem.padding and self.padded_simplified:
            return self.padded_simplified
        return self.batch_simplified if problem.batched and self.batch_simplified else self.simplified

    def note_for(self, problem) -> str:
        if problem.padding and self.padded_note:
            return f"{self.note}; {self.padded_note.format(p=problem.padding)}"
        return self.note


CHAIN = "∂L/∂A2 · ∂A2/∂Z2"
CONV_CHAIN = CHAIN + " · ∂Z2/∂F · ∂F/∂P1 · ∂P1/∂A1 · ∂A1/∂Z1"

CHAIN_RULES: tuple[ChainRule, ...] = (
    ChainRule("dL_dA2", "∂L/∂A2 = ∂/∂A2 (−Y·log(A2) − (1 − Y)·log(1 − A2))",
              "−Y/A2 + (1 − Y)/(1 − A2) = (A2 − Y)/(A2·(1 − A2))", ("Y", "A2"),
              batch_simplified="(1/M)·(−Y/A2 + (1 − Y)/(1 − A2))"),
    ChainRule("dA2_dZ2", "∂A2/∂Z2 = σ′(Z2)", "σ(Z2)·(1 − σ(Z2)) = A2·(1 − A2)", ("A2",)),
    ChainRule("dL_dZ2", "∂L/∂Z2 = " + CHAIN, "(A2 − Y)/(A2·(1 − A2)) · A2·(1 − A2) = A2 − Y",
              ("dL_dA2", "dA2_dZ2", "A2 − Y"), "the sigmoid's derivative cancels",
              "(A2 − Y)/M"),
    ChainRule("dL_dW2", "∂L/∂W2 = " + CHAIN + " · ∂Z2/∂W2", "(A2 − Y)·Fᵀ", ("A2 − Y", "F"),
              "∂Z2/∂W2 = F", "Fᵀ·(A2 − Y)/M"),
    ChainRule("dL_dB2", "∂L/∂B2 = " + CHAIN + " · ∂Z2/∂B2", "(A2 − Y)·1", ("A2 − Y",),
              "∂Z2/∂B2 = 1", "Σ (A2 − Y)/M"),
    ChainRule("dL_dF", "∂L/∂F = " + CHAIN + " · ∂Z2/∂F", "∂L/∂Z2·W2ᵀ", ("dL_dZ2", "W2"),
              "∂Z2/∂F = W2ᵀ"),
    ChainRule("dL_dP1", "∂L/∂P1 = ∂L/∂F · ∂F/∂P1", "reshape(∂L/∂F)", ("dL_dF",),
              "flatten only moves entries: each goes back to its place in P1"),
    ChainRule("dL_dA1", "∂L/∂A1 = ∂L/∂P1 · ∂P1/∂A1", "∂L/∂P1 at the max of each window, 0 elsewhere",
              ("dL_dP1",),
              "dL/dP1 goes to the cell of A1 that won each window (marked * in A1), 0 to the others"),
    ChainRule("dA1_dZ1", "∂A1/∂Z1 = ReLU′(Z1)", "1 where Z1 > 0, 0 where Z1 ≤ 0", ("Z1",),
              "the ReLU mask, read from Z1"),
    ChainRule("dL_dZ1", "∂L/∂Z1 = ∂L/∂A1 · ∂A1/∂Z1", "∂L/∂A1 ⊙ ReLU′(Z1)", ("dL_dA1", "dA1_dZ1"),
              "the gradient passes where Z1 > 0 and stops where Z1 ≤ 0"),
    ChainRule("dL_dB1", "∂L/∂B1 = " + CONV_CHAIN + " · ∂Z1/∂B1", "Σ ∂L/∂Z1", ("dL_dZ1",),
              "∂Z1/∂B1 = 1 at every position of Z1"),
    ChainRule("dL_dW1", "∂L/∂W1 = " + CONV_CHAIN + " · ∂Z1/∂W1", "conv(X, ∂L/∂Z1)", ("X", "dL_dZ1"),
              "each entry of dL/dW1 is a sum of products of X and dL/dZ1 (see `cnntrace explain`)",
              padded_simplified="conv(pad(X), ∂L/∂Z1)",
              padded_note="pad(X) is X inside a border of zeros {p} wide, which add nothing"),
    ChainRule("dL_dX", "∂L/∂X = " + CONV_CHAIN + " · ∂Z1/∂X", "conv_transpose(∂L/∂Z1, W1)",
              ("dL_dZ1", "W1"),
              "each dL/dZ1 entry is sent back to the cells of X its window covered, times W1",
              padded_simplified="conv_transpose(∂L/∂Z1, W1) without its border",
              padded_note=("the windows also covered the padding, a border {p} wide: "
                           "its share, the border of ∂L/∂pad(X) below, is dropped")),
    *(
        ChainRule(p, "", "", (p, "lr", f"dL_d{p}"), f"{p} on the right is the input's, before the step")
        for p in ("W1", "B1", "W2", "B2")
    ),
)  # fmt: skip

CHAIN_RULE = {rule.name: rule for rule in CHAIN_RULES}


class Derivation(NamedTuple):
    """One stage's chain rule as a renderer shows it, for this trace's problem and numbers."""

    left: str  # "∂L/∂W2"; "" where there is no chain rule (the update)
    chain: str  # its right side: "∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2"
    simplified: str  # what it comes to, for a batch or padding where they change it
    factors: list[tuple[str, np.ndarray]]  # (symbol, value in the user's shapes)
    note: str


def derivation(trace, name: str) -> Derivation | None:
    """The chain rule of stage ``name`` with its factors' values; None where it has none."""
    rule = CHAIN_RULE.get(name)
    if rule is None:
        return None
    left, _, chain = rule.chain.partition(" = ")
    factors = [(factor_symbol(f), np.asarray(factor_value(trace, f))) for f in rule.factors]
    return Derivation(left, chain, rule.simplified_form(trace.problem), factors, rule.note_for(trace.problem))

def factor_symbol(name: str) -> str:
    """dL_dZ2 -> dL/dZ2; inputs and expressions as they are."""
    return STAGE[name].symbol if name in STAGE and name not in INPUTS else name


def factor_value(trace, name: str) -> np.ndarray:
    """The value of a factor named in CHAIN_RULES, in the user's shapes."""
    problem = trace.problem
    if name == "lr":
        return np.asarray(problem.lr)
    if name == "A2 − Y":
        return np.asarray(trace["A2"]) - problem.Y
    if name in INPUTS:
        return getattr(problem, name)
    return trace[name]


def padded_gradient(trace) -> np.ndarray:
    """∂L/∂pad(X): what conv_transpose sends back to every cell of the padded image, its
    padding border included, in X's shape grown by the padding on every side."""
    problem = trace.problem
    X, _, W1, *_ = problem.general()
    X_padded = np.pad(X, ((0, 0), *[(problem.padding, problem.padding)] * 2))
    dL_dZ1 = np.asarray(trace["dL_dZ1"])
    dL_dZ1 = dL_dZ1.reshape(problem.M, problem.K, *dL_dZ1.shape[-2:])
    # The backward pass of a convolution over the padded image with no padding of its own.
    dL_dXp, _, _ = ops.conv2d_backward(dL_dZ1, ops.ConvCache(X_padded, W1, problem.stride, 0))
    return dL_dXp.reshape(*problem.X.shape[:-2], *X_padded.shape[-2:])


def pool_wins(trace) -> np.ndarray:
    """How many pool windows each cell of A1 won (0 for the others), in A1's shape.

    These are the cells that dL/dP1 is routed to; ties go to the first maximum in
    row-major order, as in the pass.
    """
    problem = trace.problem
    A1 = np.asarray(trace["A1"])
    general = A1.reshape(problem.M, problem.K, *A1.shape[-2:])
    _, cache = ops.maxpool_forward(general, problem.pool, problem.pool_stride)
    return ops.pool_mask(cache).astype(int).reshape(A1.shape)
