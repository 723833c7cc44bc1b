"""Random input files for exercises: the same seed always gives the same file.

Numbers are rounded to two decimals so that a student can work through the pass by hand.
Draws that would make a dull or ambiguous exercise are drawn again (see ``instructive``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnntrace.errors import ArgumentError, InputError
from cnntrace.io import problem_from_dict
from cnntrace.naming import grad, is_bias
from cnntrace.ops import output_size
from cnntrace.problem import Problem
from cnntrace.reference import check_pass_size, reference_problem
from cnntrace.text import shape_text

#: How many draws ``random_input`` makes before it settles for the last one.
ATTEMPTS = 200
#: Exercises with at most this many Z1 entries are taken to be worked by hand.
HAND_SIZED = 256
#: The most numbers an exercise holds: at up to 8 bytes a number in JSON, its file stays
#: within the size cnntrace reads (io.MAX_INPUT_BYTES).
MAX_NUMBERS = 2**25


def random_input(
    size: tuple[int, int] = (6, 6),
    kernel: tuple[int, int] = (3, 3),
    filters: int = 1,
    batch: int = 1,
    seed: int = 0,
    X: np.ndarray | None = None,
) -> dict:
    """An input dict for ``size`` images and ``filters`` kernels of ``kernel`` size.

    One image and one filter are written without the batch and filter axes, as in the
    derivation. ``X`` (H×W, from a picture) replaces the random image when given. Pooling is
    2×2 where Z1 allows it, else none.
    """
    check_size(size, kernel, filters, batch)
    rng = np.random.default_rng(seed)
    for _ in range(ATTEMPTS):
        data = _draw(rng, size, kernel, filters, batch, X)
        if instructive(data):
            break
    return data


def check_size(size, kernel, filters: int = 1, batch: int = 1, key: str = "size") -> None:
    """Refuse, before any work, an exercise too large to trace (see check_pass_size) or to
    write as an input file (more than MAX_NUMBERS numbers); InputError naming ``key``."""
    check_pass_size(batch, filters, size, kernel, key=key)
    if (count := numbers_in(size, kernel, filters, batch)) > MAX_NUMBERS:
        (H, W), (kh, kw) = size, kernel
        raise InputError(
            f"too large: {batch} image{'s' * (batch > 1)} of {H}×{W} and {filters} {kh}×{kw} "
            f"filter{'s' * (filters > 1)} make {count} numbers, more than an input file holds "
            f"({MAX_NUMBERS})",
            key=key,
        )


def numbers_in(size: tuple[int, int], kernel: tuple[int, int], filters: int = 1, batch: int = 1) -> int:
    """How many numbers the exercise of ``random_input`` holds: X, Y, W1, B1, W2 and B2."""
    (H, W), (kh, kw) = size, kernel
    return batch * (H * W + 1) + filters * (kh * kw + 1) + _pooling(size, kernel, filters)[1] + 1


def _pooling(size, kernel, filters) -> tuple[int, int]:
    """The pool (2×2 where Z1 allows it, else none) and n, the size of F."""
    (H, W), (kh, kw) = size, kernel
    Ho, Wo = output_size(H, kh, 1), output_size(W, kw, 1)
    pool = 2 if min(Ho, Wo) >= 2 else 1
    return pool, filters * output_size(Ho, pool, pool) * output_size(Wo, pool, pool)


def instructive(data: dict) -> bool:
    """Whether every filter's Z1 has entries on both sides of 0 (so the ReLU shows what it
    does) and, in an exercise small enough to work by hand, none within 0.005 of 0 (where
    rounding would hide their sign)."""
    problem = reference_problem(**data)
    conv = problem.network.layers[0]
    Z1, _ = conv.forward(problem.general_X(), problem.weights, False)  # (M, K, h, w)
    per_filter = np.moveaxis(Z1, 1, 0).reshape(Z1.shape[1], -1)  # (K, M·h·w)
    both_signs = per_filter.shape[1] == 1 or all((z > 0).any() and (z < 0).any() for z in per_filter)
    by_hand = Z1.size <= HAND_SIZED
    return both_signs and not (by_hand and np.any(np.abs(Z1) < 0.005))


def _draw(rng, size, kernel, filters, batch, X) -> dict:
    H, W = size
    kh, kw = kernel
    pool, n = _pooling(size, kernel, filters)

    def rounded(values):
        return np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0

    images = rounded(rng.uniform(0, 1, size=(batch, H, W))) if X is None else X[None]
    labels = rng.integers(0, 2, size=batch)
    W1 = rounded(rng.normal(0, 0.5, size=(filters, kh, kw)))
    return {
        "X": (images[0] if batch == 1 else images).tolist(),
        "Y": int(labels[0]) if batch == 1 else labels.tolist(),
        "W1": (W1[0] if filters == 1 else W1).tolist(),
        "B1": 0.1 if filters == 1 else [0.1] * filters,
        "W2": rounded(rng.normal(0, 0.5, size=n)).tolist(),
        "B2": 0.0,
        "pool": pool,
        "lr": 0.1,
    }


def like_input(problem, seed: int = 0, batch: int | None = None) -> dict:
    """A fresh random exercise for ``problem``'s network: its layers, loss and lr, its
    weights' and images' shapes, its classes; ``batch`` images instead of its own count.

    Images are drawn from [0, 1], weights around 0 (both at two decimals), biases 0.1;
    labels, targets or the given gradient as the problem's loss takes them.
    """
    rng = np.random.default_rng(seed)
    network = problem.network
    M = problem.M if batch is None else batch
    batched = problem.batched or M > 1
    X_layout = problem.layouts["X"]
    out = problem.layouts[network.output]
    image_shape = X_layout.user_shape(False, 1)

    def rounded(values):
        return np.round(values, 2) + 0.0  # + 0.0 turns -0.0 into 0.0

    data = {"X": rounded(rng.uniform(0, 1, size=((M,) if batched else ()) + image_shape)).tolist()}
    # Each layer's random draws made afresh (a dropout's mask from a new seed: a given mask
    # would not fit another batch).
    data["layers"] = [layer.for_step(rng).options() for layer in network.layers]
    target_shape = out.user_shape(batched, M)
    if network.loss.given:
        data["grad"] = rounded(rng.normal(0, 0.5, size=target_shape)).tolist()
    else:
        data["loss"] = network.loss.options()
        if network.loss.targets == "classes":  # a class index per image
            (classes,) = out.shape
            labels = rng.integers(0, classes, size=(M,) if batched else ())
        elif network.loss.targets == "labels":
            labels = rng.integers(0, 2, size=target_shape)
        else:
            labels = rounded(rng.normal(0, 0.5, size=target_shape))
        data["Y"] = labels.tolist()
    for name in network.params:
        shape = problem.inputs[name].shape
        if is_bias(name):
            data[name] = np.full(shape, 0.1).tolist() if shape else 0.1
        else:
            data[name] = rounded(rng.normal(0, 0.5, size=shape)).tolist()
    # The running statistics (batch norm's) where the problem has them, as training starts them.
    for layer in network.layers:
        for name, value in layer.start_running(problem.weights).items():
            if name in problem.inputs:
                data[name] = value.reshape(problem.inputs[name].shape).tolist()
    data["lr"] = problem.lr
    return data


# -- exercises made for solving by hand -------------------------------------------------------

#: What each --level of a hand exercise draws: X's entries, a conv's weights and biases.
#: Dense weights have one decimal at every level, so that the output stays away from the
#: flat ends of a sigmoid.
LEVELS = {
    1: "small integers: X from 0 to 3, conv weights and biases from −2 to 2",
    2: "one decimal: X from 0 to 1, conv weights from −1 to 1, biases from −0.5 to 0.5",
}
#: How many draws ``hand_input`` tries before it gives up.
HAND_ATTEMPTS = 5000
#: The most entries X of a hand exercise may have: one for pencil and paper (32×32 takes
#: about 8 s to make; 200×200 took over 15 minutes of HAND_ATTEMPTS tries).
MAX_HAND_ENTRIES = 1024
#: The longest one try of ``hand_input`` takes, in seconds (measured: 2.3 ms for 6×6, 2.8 ms
#: for 32×32, 4 ms in a whole 32×32 run of HAND_ATTEMPTS tries), for the progress lines.
HAND_TRY_SECONDS = 0.004
#: The input of a hand exercise's output sigmoid (or tanh) stays within ±SMOOTH_RANGE, where its
#: derivative is not yet too small to compute with.
SMOOTH_RANGE = 4.0


#: What ``--hand`` promises, said in each exercise's comment.
HAND_PROMISES = (
    "every filter's ReLU input has both signs, none at 0; the ReLU mask stops a gradient somewhere "
    "(at most one pool window all masked, its tie at 0 going to the first cell); no other tied "
    "pool maximum; forward matrices up to F exact at two decimals; no dense input with all-zero "
    f"weights; no filter with an all-zero dL/dW; sigmoid and softmax inputs within ±{4:g}, "
    "softmax logits at most 4 apart"
)


class HandReport(NamedTuple):
    """What one draw of a hand exercise is like (see ``hand_report``)."""
    zeros: int  # ReLU (or leaky ReLU) inputs exactly 0
    ties: int  # pool windows with tied maxima (not at 0)
    inexact: tuple[str, ...]  # forward matrices up to F with more than two decimals
    one_sided: tuple[str, ...]  # ReLU inputs with entries of one sign only
    saturated: tuple[str, ...]  # the output sigmoid's, tanh's or softmax's input beyond ±SMOOTH_RANGE
    #                             (softmax: or two logits further apart)
    pools: int  # max-pool layers
    zero_ties: int = 0  # pool windows all 0 (masked by a ReLU before): one is allowed
    unmasked: tuple[str, ...] = ()  # ReLU inputs whose mask stops no gradient anywhere
    silent: tuple[str, ...] = ()  # dense weights with a row of zeros (an input that counts for nothing)
    still: tuple[str, ...] = ()  # conv weights with a filter whose whole gradient is 0


def hand_report(problem) -> HandReport:
    """Check the promises of a hand exercise on ``problem``'s forward pass.

    "Up to F" is every matrix made by the layers before the first dense layer or smooth
    activation (conv, ReLU, pools, flatten): what the learner computes entry by entry.
    """
    network = problem.network
    weights = problem.weights
    values = network.forward_backward(problem.general_X(), problem.general_target, weights)
    values["X"] = problem.general_X()
    zeros = ties = pools = zero_ties = 0
    inexact, one_sided, saturated, unmasked, silent, still = [], [], [], [], [], []
    exact_part = True
    for layer in network.layers:
        x = values[layer.input]
        found = layer.ambiguities(x)
        zeros += found.get("zero", 0)
        ties += found.get("tie", 0)
        zero_ties += found.get("tie_at_zero", 0)
        hand = layer.HAND
        pools += hand.ties
        if hand.both_signs and x.size > 1 and not _both_signs(x):
            one_sided.append(layer.input)
        if hand.masks and grad(layer.output) in values and _cells_fed(network, layer, values) > 1:
            stopped = (values[layer.local] == 0) & (np.abs(values[grad(layer.output)]) > 1e-12)
            if not stopped.any():
                unmasked.append(layer.input)
        if hand.live_rows and layer.params:
            W = np.asarray(weights[layer.params[0]])
            if W.ndim == 2 and np.any(np.all(W == 0, axis=1)):
                silent.append(layer.params[0])
        if hand.live_filters and layer.params:
            dW = np.asarray(values[grad(layer.params[0])])
            if np.any(np.all(np.abs(dW.reshape(dW.shape[0], -1)) <= 1e-12, axis=1)):
                still.append(layer.params[0])
        last = layer is network.layers[-1]
        # Each image's logits (the axes after the first) within ±SMOOTH_RANGE, and, where
        # they compete, no two of them further apart than that either.
        gaps = np.ptp(x.reshape(x.shape[0], -1), axis=1) if hand.competes and x.size else np.zeros(1)
        if last and hand.saturates and (np.any(np.abs(x) > SMOOTH_RANGE) or np.any(gaps > SMOOTH_RANGE)):
            saturated.append(layer.input)
        exact_part = exact_part and hand.exact
        if exact_part and not _two_decimals(values[layer.output]):
            inexact.append(layer.output)
    return HandReport(zeros, ties, tuple(inexact), tuple(one_sided), tuple(saturated), pools,
                      zero_ties, tuple(unmasked), tuple(silent), tuple(still))  # fmt: skip


def _cells_fed(network, layer, values) -> int:
    """How many cells of each map of ``layer``'s output a gradient can reach: one a pool
    window when a pooling layer follows. With one, a mask that stops it kills the filter's
    whole dL/dW, so the promise that a mask stops a gradient is not asked there."""
    after = network.layers[network.layers.index(layer) + 1:]
    out = values[after[0].output] if after and after[0].pooling else values[layer.output]
    return int(np.prod(np.shape(out)[2:])) if np.ndim(out) > 2 else int(np.size(out))


def _both_signs(x: np.ndarray) -> bool:
    """Both signs in ``x`` (M, C, …): in each channel (each filter's map) when it has them."""
    channels = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1) if x.ndim > 2 else x.reshape(1, -1)
    return all((c > 0).any() and (c < 0).any() for c in channels)


def _two_decimals(values: np.ndarray) -> bool:
    hundredths = np.asarray(values) * 100
    return bool(np.all(np.abs(hundredths - np.round(hundredths)) < 1e-6))


def hand_ready(report: HandReport, allow_ties: bool = False) -> bool:
    """Whether a draw keeps every promise: no ReLU input at 0, forward matrices up to F
    exact at two decimals, both signs into each ReLU, no saturated output; no tie in a pool
    window, or, with ``allow_ties`` and a max-pool, at least one (a tie on purpose)."""
    return flaws(report, allow_ties) == 0


def flaws(report: HandReport, allow_ties: bool = False) -> int:
    """How far a draw is from keeping the promises (0: it keeps them all)."""
    ties = (report.ties == 0) if allow_ties and report.pools else 0 if allow_ties else report.ties
    return (report.zeros + ties + 100 * len(report.inexact) + len(report.one_sided) + len(report.saturated)
            + max(0, report.zero_ties - 1) + len(report.unmasked) + len(report.silent) + len(report.still))


def hand_input(base: dict, seed: int = 0, level: int = 1, allow_ties: bool = False) -> dict:
    """An exercise for pencil and paper with the network and shapes of ``base`` (an input
    dict, as ``random_input`` or ``like_input`` write it): X, the conv weights and biases
    small integers or one decimal (see LEVELS), dense weights one decimal.

    A local search from ``seed``: one draw, then one entry drawn again at a time, kept when
    the exercise has no more flaws than before, until it has none. Level 1 gives each conv
    bias a half (±0.5, ±1.5), so that no ReLU input after a conv can be 0. The same seed
    gives the same exercise. ArgumentError (key seed) after HAND_ATTEMPTS tries.
    """
    if level not in LEVELS:
        raise ArgumentError(f"must be one of {', '.join(map(str, LEVELS))}, got {level}", key="level")
    template = problem_from_dict(base)
    if (entries := int(np.size(template.X))) > MAX_HAND_ENTRIES:
        raise ArgumentError(
            f"makes an exercise for pencil and paper, with X of at most {MAX_HAND_ENTRIES} entries "
            f"(32×32); this X has {entries} ({shape_text(np.shape(template.X))})",
            key="hand",
        )
    rng = np.random.default_rng(seed)
    samplers = _hand_samplers(rng, base, template, level)
    values = {name: draw(np.shape(template_value)) for name, (draw, template_value) in samplers.items()}

    def score(values) -> tuple[int, dict, HandReport]:
        data = {**base, **{name: _listed(value) for name, value in values.items()}}
        with np.errstate(all="ignore"):
            report = hand_report(problem_from_dict(data))
        return flaws(report, allow_ties), data, report

    current, data, report = score(values)
    names = list(values)
    for _ in range(HAND_ATTEMPTS):
        if current == 0:
            return data
        name = names[rng.integers(len(names))]
        draw, _ = samplers[name]
        trial = dict(values)
        if np.ndim(values[name]):
            changed = np.array(values[name], copy=True)
            index = tuple(int(rng.integers(n)) for n in changed.shape)
            changed[index] = draw(())
            trial[name] = changed
        else:
            trial[name] = draw(())
        flawed, trial_data, trial_report = score(trial)
        if flawed <= current:
            values, current, data, report = trial, flawed, trial_data, trial_report
    wanted = "a tie in a pool window" if allow_ties else "the promises of a hand exercise"
    raise ArgumentError(
        f"no exercise found that keeps {wanted} for this network at level {level} in "
        f"{HAND_ATTEMPTS} tries (the closest has {_flaws_text(report, allow_ties)}); try another "
        f"seed{', {level} 2' if level == 1 else ''} or smaller sizes",
        key="seed",
        mentions=("level",),
    )


def _flaws_text(report: HandReport, allow_ties: bool) -> str:
    """'2 tied pool windows, a saturated Z2': what keeps a draw from the promises."""
    parts = []
    if report.zeros:
        parts.append(f"{report.zeros} ReLU input{'s' * (report.zeros > 1)} at 0")
    if allow_ties and report.pools and not report.ties:
        parts.append("no tie")
    elif report.ties and not allow_ties:
        parts.append(f"{report.ties} tied pool window{'s' * (report.ties > 1)}")
    parts += [f"more than two decimals in {name}" for name in report.inexact]
    parts += [f"one sign only in {name}" for name in report.one_sided]
    parts += [f"a saturated {name} (beyond ±{SMOOTH_RANGE:g}, or logits further apart)" for name in report.saturated]
    if report.zero_ties > 1:
        parts.append(f"{report.zero_ties} pool windows all masked (one is allowed)")
    parts += [f"no cell of {name} where the ReLU mask stops a gradient" for name in report.unmasked]
    parts += [f"a row of zeros in {name}" for name in report.silent]
    parts += [f"a filter of {name} whose whole gradient is 0" for name in report.still]
    return ", ".join(parts)


def _listed(values):
    """As JSON writes it for people: whole numbers without a decimal point."""
    tidy = np.vectorize(lambda v: int(v) if v == int(v) else float(v), otypes=[object])
    return tidy(values).tolist() if np.ndim(values) else tidy(values).item()


def _hand_samplers(rng, base: dict, template, level: int) -> dict:
    """{name: (draw(shape) -> values, the base's value)} for X, every weight and bias, and
    targets or given gradients that are numbers rather than labels."""
    def tenths(low: float, high: float):
        """Multiples of 0.1 from ``low`` to ``high``."""
        return lambda shape: rng.integers(round(low * 10), round(high * 10) + 1, size=shape) / 10 + 0.0

    def whole(low: int, high: int, offset: float = 0.0):
        return lambda shape: rng.integers(low, high + 1, size=shape) + offset

    # The first conv works on the image: its weights are the level's. Every later weight
    # gets one decimal, so the numbers stay small as they go through the layers.
    first_conv = next((layer for layer in template.network.layers if layer.HAND.level_weights), None)
    conv_params = set(first_conv.params) if first_conv else set()
    samplers = {"X": (whole(0, 3) if level == 1 else tenths(0, 1), base["X"])}
    for name in template.network.params:
        bias = is_bias(name)
        if name in conv_params:
            if level == 1:
                draw = whole(-2, 1, 0.5) if bias else whole(-2, 2)
            else:
                draw = tenths(-0.5, 0.5) if bias else tenths(-1, 1)
        else:
            draw = tenths(-0.2, 0.2) if bias else tenths(-0.5, 0.5)
        samplers[name] = (draw, template.inputs[name])
    if "grad" in base:
        samplers["grad"] = (tenths(-1, 1), base["grad"])
    elif template.network.loss.targets == "targets":  # targets, not labels: one decimal too
        samplers["Y"] = (tenths(0, 1), base["Y"])
    return samplers


# -- exercises as `cnntrace init` makes them --------------------------------------------------


class HandOptions(NamedTuple):
    """How ``hand_input`` remakes an exercise for pencil and paper."""

    level: int = 1
    allow_ties: bool = False


def new_exercise(size, kernel, filters: int = 1, batch: int = 1, seed: int = 0, *, X=None,
                 hand: HandOptions | None = None) -> dict:  # fmt: skip
    """A random exercise (see random_input), remade for pencil and paper when ``hand`` says how."""
    return _made_by_hand(random_input(size, kernel, filters, batch, seed, X=X), seed, hand)


def like_exercise(problem: Problem, seed: int = 0, batch: int | None = None, hand: HandOptions | None = None) -> dict:
    """A fresh exercise with ``problem``'s network (see like_input), remade for pencil and
    paper when ``hand`` says how. InputError when the network is too large to trace."""
    problem.check_size(1)
    return _made_by_hand(like_input(problem, seed, batch), seed, hand)


def _made_by_hand(data: dict, seed: int, hand: HandOptions | None) -> dict:
    return data if hand is None else hand_input(data, seed, hand.level, hand.allow_ties)


def exercise_set(make, seed: int, count: int, directory):
    """A class set: yield (path, seed, exercise) for ``count`` different exercises
    ``make(seed)`` from seeds ``seed``, ``seed`` + 1 … (a draw equal to an earlier one is
    skipped), each to be saved in ``directory`` (a Path) as exercise-01.json … so that they sort."""
    width = max(2, len(str(count)))
    made: set[str] = set()
    while len(made) < count:
        data = make(seed)
        if (numbers := repr(data)) not in made:
            made.add(numbers)
            yield directory / f"exercise-{len(made):0{width}d}.json", seed, data
        seed += 1
