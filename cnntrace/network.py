"""The reference network, forward and back, with every intermediate kept under its name.

    X → Z1 = conv(X, W1) + B1 → A1 = ReLU(Z1) → P1 = MaxPool(A1) → F = flatten(P1)
      → Z2 = F·W2 + B2 → A2 = σ(Z2) → L = BCE(Y, A2)

then back from dL/dZ2 = (A2 − Y)/M to dL/dW1 = conv(X, dL/dZ1) and dL/dX, and one step of
gradient descent. ``forward_backward`` is the pass on the general shapes (see ops.py);
``trace`` is the entry point: it takes the inputs as the user writes them and returns a
``Trace`` whose matrices have the user's shapes.

>>> t = trace(X, Y, W1, B1, W2, B2)          # doctest: +SKIP
>>> t["dL_dW1"]                               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cnntrace import ops
from cnntrace.errors import NumericError
from cnntrace.problem import Problem


class Stage(NamedTuple):
    """One named matrix of the trace: where it belongs and how it was made."""

    name: str  # the key in the JSON output, a valid identifier
    section: str  # "forward", "backward" or "update"
    symbol: str  # as the derivation writes it
    equation: str  # for one image; batch_equation where a batch changes it
    kind: str  # how its shape follows the input's (see Problem.present)
    batch_equation: str | None = None

    def formula(self, batched: bool) -> str:
        return (self.batch_equation if batched and self.batch_equation else self.equation)


STAGES: tuple[Stage, ...] = (
    Stage("Z1", "forward", "Z1", "conv(X, W1) + B1", "map"),
    Stage("A1", "forward", "A1", "ReLU(Z1)", "map"),
    Stage("P1", "forward", "P1", "MaxPool(A1)", "map"),
    Stage("F", "forward", "F", "flatten(P1)", "flat"),
    Stage("Z2", "forward", "Z2", "F·W2 + B2", "batch"),
    Stage("A2", "forward", "A2", "σ(Z2)", "batch"),
    Stage("L", "forward", "L", "−Y·log(A2) − (1 − Y)·log(1 − A2)", "scalar",
          "mean(−Y·log(A2) − (1 − Y)·log(1 − A2))"),
    Stage("dL_dA2", "backward", "dL/dA2", "−Y/A2 + (1 − Y)/(1 − A2)", "batch",
          "(−Y/A2 + (1 − Y)/(1 − A2)) / M"),
    Stage("dA2_dZ2", "backward", "dA2/dZ2", "A2·(1 − A2)", "batch"),
    Stage("dL_dZ2", "backward", "dL/dZ2", "dL/dA2·dA2/dZ2 = A2 − Y", "batch",
          "dL/dA2·dA2/dZ2 = (A2 − Y) / M"),
    Stage("dL_dW2", "backward", "dL/dW2", "Fᵀ·dL/dZ2", "W2"),
    Stage("dL_dB2", "backward", "dL/dB2", "ΣdL/dZ2", "B2"),
    Stage("dL_dF", "backward", "dL/dF", "dL/dZ2·W2ᵀ", "flat"),
    Stage("dL_dP1", "backward", "dL/dP1", "reshape(dL/dF)", "map"),
    Stage("dL_dA1", "backward", "dL/dA1", "dL/dP1 routed to each window's max", "map"),
    Stage("dA1_dZ1", "backward", "dA1/dZ1", "1 where Z1 > 0, else 0", "map"),
    Stage("dL_dZ1", "backward", "dL/dZ1", "dL/dA1 ⊙ dA1/dZ1", "map"),
    Stage("dL_dB1", "backward", "dL/dB1", "ΣdL/dZ1", "B1"),
    Stage("dL_dW1", "backward", "dL/dW1", "conv(X, dL/dZ1)", "W1"),
    Stage("dL_dX", "backward", "dL/dX", "conv_transpose(dL/dZ1, W1)", "X"),
    Stage("W1", "update", "W1", "W1 − lr·dL/dW1", "W1"),
    Stage("B1", "update", "B1", "B1 − lr·dL/dB1", "B1"),
    Stage("W2", "update", "W2", "W2 − lr·dL/dW2", "W2"),
    Stage("B2", "update", "B2", "B2 − lr·dL/dB2", "B2"),
)

SECTIONS = ("forward", "backward", "update")
STAGE = {stage.name: stage for stage in STAGES}


def forward_backward(
    X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=2, trace=True
):
    """One pass on the general shapes; returns {name: array} for every forward and backward
    stage, in the derivation's order.

    X (M, H, W), Y (M,), W1 (K, kh, kw), B1 (K,), W2 (n,), B2 ().

    ``trace=False`` is for training: it returns only L, A2 and the parameters' gradients
    dL_dW1, dL_dB1, dL_dW2, dL_dB2, with exactly the values a trace gives. It skips dL/dX
    and the display-only dL/dA2 and dA2/dZ2, keeps dA1/dZ1 as booleans (the product
    dL/dA1 ⊙ dA1/dZ1 is the same), and lets each large matrix go as soon as the pass is
    done with it (the ``del`` lines), so a whole dataset's pass needs little more memory
    than the dataset. When tracing, ``traced`` keeps every matrix instead.
    """
    traced = {}

    def keep(**matrices):
        if trace:
            traced.update(matrices)

    # Forward
    Z1, conv_cache = ops.conv2d_forward(X, W1, B1, stride, padding)
    A1 = ops.relu_forward(Z1)
    # dA1/dZ1 needs Z1 alone: taken now, so that Z1 can go before the pooling.
    dA1_dZ1 = ops.relu_grad(Z1) if trace else ops.relu_mask(Z1)
    keep(Z1=Z1, A1=A1)
    del Z1
    P1, pool_cache = ops.maxpool_forward(A1, pool, pool_stride)
    del A1
    F = ops.flatten_forward(P1)
    Z2 = ops.dense_forward(F, W2, B2)
    A2 = ops.sigmoid(Z2)
    L = ops.bce_loss(Z2, Y)
    keep(P1=P1, F=F, Z2=Z2, A2=A2, L=L)

    # Backward
    if trace:
        keep(dL_dA2=ops.bce_grad_A2(Z2, Y), dA2_dZ2=ops.sigmoid_grad(Z2))
    dL_dZ2 = ops.bce_sigmoid_backward(A2, Y)
    dL_dF, dL_dW2, dL_dB2 = ops.dense_backward(dL_dZ2, F, W2)
    dL_dP1 = ops.flatten_backward(dL_dF, P1.shape)
    keep(dL_dZ2=dL_dZ2, dL_dW2=dL_dW2, dL_dB2=dL_dB2, dL_dF=dL_dF, dL_dP1=dL_dP1)
    del P1, F, dL_dF
    dL_dA1 = ops.maxpool_backward(dL_dP1, pool_cache)
    del dL_dP1, pool_cache
    dL_dZ1 = dL_dA1 * dA1_dZ1
    keep(dL_dA1=dL_dA1, dA1_dZ1=dA1_dZ1, dL_dZ1=dL_dZ1)
    del dL_dA1, dA1_dZ1
    dL_dX, dL_dW1, dL_dB1 = ops.conv2d_backward(dL_dZ1, conv_cache, need_dL_dX=trace)
    keep(dL_dB1=dL_dB1, dL_dW1=dL_dW1, dL_dX=dL_dX)

    if not trace:
        return {"L": L, "A2": A2, "dL_dW1": dL_dW1, "dL_dB1": dL_dB1, "dL_dW2": dL_dW2,
                "dL_dB2": dL_dB2}  # fmt: skip
    return {stage.name: traced[stage.name] for stage in STAGES if stage.section != "update"}


def gradient_step(W1, B1, W2, B2, grads, lr):
    """Parameters after one step of gradient descent: P − lr·dL/dP for each of them."""
    return {
        "W1": W1 - lr * grads["dL_dW1"],
        "B1": B1 - lr * grads["dL_dB1"],
        "W2": W2 - lr * grads["dL_dW2"],
        "B2": B2 - lr * grads["dL_dB2"],
    }


#: The stages only ``step`` shows: nothing else is computed from them, and past |Z2| ≈ 709
#: dL/dA2 overflows where every other stage is finite.
DISPLAY_ONLY = ("dL_dA2", "dA2_dZ2")


def check_finite(values: dict) -> None:
    """Raise NumericError naming the first stage, in the pass's order, that overflowed."""
    for name, value in values.items():
        if np.all(np.isfinite(value)):
            continue
        if name == "dL_dA2":
            # Not an input too large: 1/(1 − A2) or 1/A2 itself exceeds float64.
            raise NumericError(
                "exceeds float64: |Z2| is past about 709, where the sigmoid saturates and "
                "1/(1 − A2) or 1/A2 overflows; L and dL/dZ2 = A2 − Y are still finite "
                "(cnntrace check and train do not need dL/dA2)",
                key=name,
            )
        stage = STAGE[name]
        raise NumericError(
            f"overflows float64 in {stage.symbol} = {stage.equation}; "
            "the numbers that feed it are too large",
            key=name,
        )


@dataclass(frozen=True)
class Trace:
    """Every named matrix of one pass, in the shapes of the user's input.

    ``trace[name]`` gives any of them by its JSON name (``"Z1"``, ``"dL_dW1"``,
    ``"W1"`` for the updated W1 ...); ``forward``, ``backward`` and ``update`` hold them
    section by section, in the derivation's order.
    """

    problem: Problem
    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]
    update: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        section = getattr(self, STAGE[name].section)
        return section[name]

    def sections(self) -> dict[str, dict[str, np.ndarray]]:
        return {"forward": self.forward, "backward": self.backward, "update": self.update}

    def leading_axes(self, name: str) -> tuple[str, ...]:
        """Labels of the image / filter axes that lead the shape of ``name``."""
        return self.problem.leading_axes(STAGE[name].kind)

    def axis_names(self, name: str) -> tuple[str, ...]:
        """A name for every axis of ``name``: image, filter, row, col (see Problem.axis_names)."""
        return self.problem.axis_names(STAGE[name].kind, np.ndim(self[name]))


def run(problem: Problem) -> Trace:
    """Trace one validated problem: forward, backward and update, in the user's shapes."""
    problem.check_size()
    X, Y, W1, B1, W2, B2 = problem.general()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        values = forward_backward(
            X, Y, W1, B1, W2, B2,
            stride=problem.stride, padding=problem.padding,
            pool=problem.pool, pool_stride=problem.pool_stride,
        )  # fmt: skip
        values.update(gradient_step(W1, B1, W2, B2, values, problem.lr))
    check_finite(values)

    presented = {name: problem.present(STAGE[name].kind, value) for name, value in values.items()}
    return Trace(
        problem,
        *({stage.name: presented[stage.name] for stage in STAGES if stage.section == section}
          for section in SECTIONS),
    )  # fmt: skip


def trace(X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1) -> Trace:
    """Run the reference network on these inputs and return every matrix of the pass.

    X: an H×W image or an M×H×W batch; Y: its label(s) in [0, 1]; W1: a kh×kw filter or
    K×kh×kw filters; B1: one bias per filter; W2: one weight per entry of F; B2: a number.
    Lists and numpy arrays both work. Raises InputError for values that don't fit and
    NumericError when a stage overflows float64.
    """
    problem = Problem.build(
        X, Y, W1, B1, W2, B2,
        stride=stride, padding=padding, pool=pool, pool_stride=pool_stride, lr=lr,
    )  # fmt: skip
    return run(problem)
