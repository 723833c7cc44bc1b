"""Gradient check: the analytic gradients of a trace against central finite differences.

For every entry p of X and of every weight (W1, B1, W2, B2 …) the loss is evaluated at p ± eps and

    numeric = (L(p + eps) − L(p − eps)) / (2·eps)

is compared with the analytic dL/dp. An entry passes when |analytic − numeric| ≤ atol +
rtol·max(|analytic|, |numeric|).

Where the loss has a kink near p (a ReLU input at 0, or a pool window whose maxima tie), the
central difference straddles two different slopes and cannot agree with any one gradient;
the analytic gradient takes one side there by convention (ReLU'(0) = 0, the first maximum
wins). Such an entry is recognised by its activation pattern, each layer's kinks (the ReLU
mask, each pool window's winner): if moving p by ±eps changes the pattern, p sits on a kink and is counted as
one, not checked. While the pattern holds, the loss is a smooth function of p, so every
other entry must pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnntrace import limits
from cnntrace.errors import ArgumentError, NumericError
from cnntrace.network import check_finite
from cnntrace.problem import Problem


@dataclass(frozen=True)
class TensorCheck:
    """The result of checking every (or a sample of the) entries of one tensor."""

    name: str  # X or a weight: W1, B1, W2, B2 …
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


class _Pass:
    """One pass's outputs and each layer's kinks, kept so that a pass with one weight moved
    starts from the first layer that reads it: the layers before compute the same."""

    def __init__(self, outputs: dict, kinks: list):
        self.outputs = outputs  # every layer's output, by name
        self.kinks = kinks  # each layer's kinks (a ReLU's mask, a max-pool's winners), in order


def _loss_and_pattern(problem: Problem, X, weights: dict, start: int = 0, before: _Pass | None = None):
    """L at the inputs X and ``weights`` (general shapes), and the activation pattern that
    produced it: every layer's kinks (a ReLU's mask, a max-pool's winners). Where the
    gradient is given instead of a loss, L = Σ grad ⊙ output, whose gradient it is. From
    layer ``start`` on, the earlier layers' outputs and kinks taken from ``before``; with
    the pass itself (a _Pass) third.

    Raises NumericError naming the first stage that overflows (L is finite wherever the
    stages are).
    """
    network = problem.network
    layers = network.layers
    outputs = {layer.output: before.outputs[layer.output] for layer in layers[:start]} if start else {}
    kinks = list(before.kinks[:start]) if start else []
    with np.errstate(all="ignore"):
        x, cache = X, None
        for layer in layers[start:]:  # each reads its input by name (and a merge its others)
            operands = {"others": tuple(X if name == "X" else outputs[name] for name in layer.reads)} if layer.reads else {}
            x, cache = layer.forward(X if layer.input == "X" else outputs[layer.input], weights, True, **operands)
            outputs[layer.output] = x
            kinks.append(layer.kinks(cache))
        if network.loss.given:
            L = np.sum(problem.general_target * x)
        else:
            L = network.loss.value(x, problem.general_target, cache.z if network.fused else None)
    check_finite({name: outputs[name] for name in outputs if name not in (before.outputs if start else ())},
                 problem.stage)  # fmt: skip
    return float(L), [kink for layer_kinks in kinks for kink in layer_kinks], _Pass(outputs, kinks)


def _first_reader(problem: Problem, name: str) -> int:
    """The index of the first layer a change of ``name`` (X or a weight) reaches."""
    return next((i for i, layer in enumerate(problem.network.layers) if name in layer.params), 0)


def _same(pattern, other) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(pattern, other))


def _agree(analytic, numeric, rtol, atol) -> bool:
    return abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric))


def _check_work(problem: Problem, max_entries: int | None) -> None:
    """Refuse, before any work, a check whose two passes per entry would take more than
    limits.MAX_COMMAND_WORK: ArgumentError naming ``max_entries``, which makes it smaller."""
    sizes = [int(np.prod(problem.inputs[name].shape, dtype=object)) for name in ("X", *problem.general_weights())]
    entries = sum(size if max_entries is None else min(size, max_entries) for size in sizes)
    _, work = problem.size()
    total = 2 * entries * work
    if total > limits.MAX_COMMAND_WORK:
        fits = max(1, limits.MAX_COMMAND_WORK // (2 * work * len(sizes)))
        raise ArgumentError(
            f"checking {entries} entries takes two passes each, about {limits.work_text(total)} "
            f"multiply-adds in all; cnntrace allows {limits.MAX_COMMAND_WORK:.0e}, about ten minutes: "
            f"try {{max_entries}} {fits}",
            key="max_entries", mentions=("max_entries",),
        )  # fmt: skip


def check(
    problem: Problem,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_entries: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[TensorCheck]:
    """Check dL/dX and the gradient of every weight of ``problem``, entry by entry.

    A tensor with more than ``max_entries`` entries is checked on a random sample of that
    many (the same sample for the same ``seed``). Each entry takes two passes, so a large
    input takes a while: ``progress(done, total)`` is called after every entry.
    """
    problem.check_size()
    _check_work(problem, max_entries)
    general = {"X": problem.general_X().copy(), **problem.general_weights()}
    # X and the weights; a running statistic (batch norm's mean{l}) is read by the pass, and
    # no gradient moves it.
    tensors = ("X", *problem.network.params)
    with np.errstate(all="ignore"):
        values = problem.network.forward_backward(general["X"], problem.general_target, general)
    # An overflow anywhere in the pass is named where it first happened, as step names it;
    # the display-only dL/dA2, which overflows where the sigmoid saturates, is not needed.
    check_finite({name: value for name, value in values.items() if name not in problem.display_only}, problem.stage)
    gradients = {f"dL_d{name}": values[f"dL_d{name}"] for name in tensors}
    rng = np.random.default_rng(seed)
    sizes = [general[name].size for name in tensors]
    total = sum(size if max_entries is None else min(size, max_entries) for size in sizes)
    done = 0
    results = []
    weights = {name: value for name, value in general.items() if name != "X"}
    for name in tensors:
        # Work on the tensor in the user's shape; the pass sees it through the same reshape.
        given_shape = problem.inputs[name].shape
        analytic = gradients[f"dL_d{name}"].reshape(given_shape)
        flat = general[name].reshape(-1)  # a view: writing into it moves the pass's input
        count = flat.size
        positions = np.arange(count)
        if max_entries is not None and count > max_entries:
            positions = np.sort(rng.choice(count, size=max_entries, replace=False))
        _, pattern, unmoved = _loss_and_pattern(problem, general["X"], weights)
        start = 0 if name == "X" else _first_reader(problem, name)
        max_abs = max_rel = 0.0
        kinks = failures = 0
        worst = 0
        for position in positions:
            original = flat[position]
            try:
                flat[position] = original + eps
                L_plus, pattern_plus, _ = _loss_and_pattern(problem, general["X"], weights, start, unmoved)
                flat[position] = original - eps
                L_minus, pattern_minus, _ = _loss_and_pattern(problem, general["X"], weights, start, unmoved)
            except NumericError as error:
                # The pass is finite, but one of its neighbours p ± eps is not (at float64's edge).
                index = ",".join(str(i) for i in np.unravel_index(position, given_shape))
                moved = "+" if flat[position] > original else "−"
                entry = f"{name}[{index}]" if index else name
                error.message += f" (at {entry} {moved} eps, where the central difference takes L)"
                raise
            finally:
                flat[position] = original
            done += 1
            progress(done, total)
            if not (_same(pattern, pattern_plus) and _same(pattern, pattern_minus)):
                kinks += 1
                continue
            a = float(analytic.reshape(-1)[position])
            numeric = (L_plus - L_minus) / (2 * eps)
            failures += not _agree(a, numeric, rtol, atol)
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
