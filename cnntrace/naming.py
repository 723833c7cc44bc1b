"""The naming scheme of a trace, in one place.

The l-th weighted layer (conv, dense or batchnorm) has weights W{l} and B{l} and makes Z{l};
what follows it is named after it: an activation A{l}, a pooling P{l}, a dropout D{l} (and
its mask{l}), an add S{l}, a concat C{l}; the flatten makes F. A batch norm in training shows its batch's mean mu{l} (μ),
variance sigmasq{l} (σ²) and normalized input xhat{l} (x̂); its running statistics mean{l}
and var{l} are inputs, and the update's. The loss's gradient with respect to a matrix Q is
dL_dQ, an activation's local derivative dA{l}_dZ{l} (dA{l}_dP{l} after a pooling, dA{l}_dS{l}
after an add). Where Q feeds several layers, what the one making R sends back to it is
dL_dQ_via_R, and dL_dQ is their sum. ``Network.place`` puts these names on the layers;
input files, the CLI's --only and explain's TERM are read through the patterns below.
"""

from __future__ import annotations

import re

#: A weight of the input file: W1, B1, W2 …
WEIGHT = re.compile(r"[WB][1-9][0-9]*")
#: Every name a trace can hold, in any network: X, F, what the layers make (Z1, A1, P0 …),
#: the weights, L, their gradients dL_d…, each activation's dA{l}_dZ{l} (or _dP{l}, _dD{l}, or
#: dA0_dX for an activation that comes first), a batch norm's mu{l}, sigmasq{l}, xhat{l} and
#: running mean{l}, var{l}, a dropout's mask{l}.
NAME = re.compile(
    r"(?:dL_d)?(?:X|F|[ZAPDSC]\d+|[WB][1-9]\d*|(?:mu|sigmasq|xhat)[1-9]\d*)|L|dA\d+_d(?:X|[ZPDSC]\d+)"
    r"|(?:mean|var)[1-9]\d*|mask\d+|dL_d(?:X|F|[ZAPDSC]\d+)_via_(?:F|[ZAPDSC]\d+)"
)
#: What a layer's output can be called, and so what a layer's ``input`` or ``from`` can name.
MATRIX = re.compile(r"X|F|[ZAPDSC]\d+")
#: A running statistic of the input file (a batch norm's): mean1, var1 …
RUNNING = re.compile(r"(?:mean|var)[1-9][0-9]*")
#: What a layer's output is called when it has no number: the flatten's F.
UNNUMBERED = ("F",)


def grad(name: str) -> str:
    """The JSON name of the loss's gradient with respect to ``name``: W1 -> dL_dW1."""
    return f"dL_d{name}"


def via(name: str, consumer: str) -> str:
    """What the layer making ``consumer`` sends back to ``name``, one path of its
    gradient where ``name`` feeds several layers: (A2, Z3) -> dL_dA2_via_Z3."""
    return f"dL_d{name}_via_{consumer}"


def plain(name: str) -> str:
    """The gradient a path's part is of: dL_dA2_via_Z3 -> dL_dA2; any other name as is."""
    return name.split("_via_")[0]


def numbered(letter: str, number: int) -> str:
    """The name of the l-th weighted layer's matrix: ("W", 2) -> W2, ("A", 1) -> A1; F alone."""
    return letter if letter in UNNUMBERED else f"{letter}{number}"


def local(output: str, input: str) -> str:
    """An activation's local derivative: (A1, Z1) -> dA1_dZ1."""
    return f"d{output}_d{input}"


def is_bias(name: str) -> bool:
    """Whether the weight ``name`` is a bias: B1, B2 …"""
    return name.startswith("B")
