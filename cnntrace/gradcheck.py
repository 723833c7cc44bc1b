"""Gradient check: the analytic gradients of a trace against central finite differences.

For every entry p of X, W1, B1, W2 and B2 the loss is evaluated at p ± eps and

    numeric = (L(p + eps) − L(p − eps)) / (2·eps)

is compared with the analytic dL/dp. An entry passes when |analytic − numeric| ≤ atol +
rtol·max(|analytic|, |numeric|).

Where the loss has a kink near p (a Z1 entry at 0, or a pool window whose maxima tie), the
central difference straddles two different slopes and cannot agree with any one gradient;
the analytic gradient takes one side there by convention (ReLU'(0) = 0, the first maximum
wins). Such an entry is recognised by its activation pattern, the ReLU mask and each pool
window's winner: if moving p by ±eps changes the pattern, p sits on a kink and is counted as
one, not checked. While the pattern holds, the loss is a smooth function of p, so every
other entry must pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnntrace import ops
from cnntrace.network import check_finite, forward_backward
from cnntrace.problem import Problem

TENSORS = ("X", "W1", "B1", "W2", "B2")
GRADIENT = {name: f"dL_d{name}" for name in TENSORS}


@dataclass(frozen=True)
class TensorCheck:
    """The result of checking every (or a sample of the) entries of one tensor."""

    name: str  # X, W1, B1, W2 or B2
    entries: int  # how many entries the tensor has
    checked: int  # how many of them were checked
    max_abs_error: float  # central differences, over the entries that are not kinks
    max_rel_error: float
    kinks: int  # entries on a kink of the loss, not checked
    failures: int  # checked entries outside the tolerance
    worst_index: tuple[int, ...]  # where the relative error is largest; () if none compared

    @property
    def compared(self) -> int:
        """How many entries were compared: the checked ones that are not kinks."""
        return self.checked - self.kinks

    @property
    def ok(self) -> bool:
        return self.failures == 0


def _loss_and_pattern(problem: Problem, g: dict):
    """L at the inputs ``g`` (general shapes), and the activation pattern that produced it."""
    with np.errstate(all="ignore"):
        Z1, _ = ops.conv2d_forward(g["X"], g["W1"], g["B1"], problem.stride, problem.padding)
        P1, pool = ops.maxpool_forward(ops.relu_forward(Z1), problem.pool, problem.pool_stride)
        Z2 = ops.dense_forward(ops.flatten_forward(P1), g["W2"], g["B2"])
        return float(ops.bce_loss(Z2, g["Y"])), (Z1 > 0, pool.winner)


def _same(pattern, other) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(pattern, other))


def _close(analytic, numeric, rtol, atol) -> bool:
    return abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric))


def check(
    problem: Problem,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_entries: int | None = None,
    seed: int = 0,
) -> list[TensorCheck]:
    """Check dL/dX, dL/dW1, dL/dB1, dL/dW2 and dL/dB2 of ``problem`` entry by entry.

    A tensor with more than ``max_entries`` entries is checked on a random sample of that
    many (the same sample for the same ``seed``).
    """
    general = dict(zip(("X", "Y", "W1", "B1", "W2", "B2"), problem.general()))
    with np.errstate(all="ignore"):
        values = forward_backward(
            *general.values(), stride=problem.stride, padding=problem.padding,
            pool=problem.pool, pool_stride=problem.pool_stride,
        )  # fmt: skip
    # Every stage must be finite, as for step, except the display-only dL/dA2: it overflows
    # where the sigmoid saturates, and no gradient checked here needs it.
    check_finite({name: value for name, value in values.items() if name != "dL_dA2"})
    gradients = {GRADIENT[name]: values[GRADIENT[name]] for name in TENSORS}
    rng = np.random.default_rng(seed)
    results = []
    for name in TENSORS:
        # Work on the tensor in the user's shape; the pass sees it through the same reshape.
        given_shape = getattr(problem, name).shape
        analytic = gradients[GRADIENT[name]].reshape(given_shape)
        flat = general[name].reshape(-1)  # a view: writing into it moves the pass's input
        count = flat.size
        positions = np.arange(count)
        if max_entries is not None and count > max_entries:
            positions = np.sort(rng.choice(count, size=max_entries, replace=False))
        _, pattern = _loss_and_pattern(problem, general)
        max_abs = max_rel = 0.0
        kinks = failures = 0
        worst = 0
        for position in positions:
            original = flat[position]
            flat[position] = original + eps
            L_plus, pattern_plus = _loss_and_pattern(problem, general)
            flat[position] = original - eps
            L_minus, pattern_minus = _loss_and_pattern(problem, general)
            flat[position] = original
            if not (_same(pattern, pattern_plus) and _same(pattern, pattern_minus)):
                kinks += 1
                continue
            a = float(analytic.reshape(-1)[position])
            numeric = (L_plus - L_minus) / (2 * eps)
            failures += not _close(a, numeric, rtol, atol)
            abs_error = abs(a - numeric)
            scale = max(abs(a), abs(numeric))
            rel_error = abs_error / scale if scale > atol else 0.0
            if rel_error > max_rel:
                max_rel, worst = rel_error, position
            max_abs = max(max_abs, abs_error)
        results.append(
            TensorCheck(
                name, count, len(positions), max_abs, max_rel, kinks, failures,
                # No worst entry where none was compared: every one sat on a kink.
                tuple(int(i) for i in np.unravel_index(worst, given_shape))
                if given_shape and kinks < len(positions) else (),
            )  # fmt: skip
        )
    return results
