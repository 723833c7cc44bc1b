"""Training by plain gradient descent, epoch by epoch (numpy only; nothing here prints).

Each epoch walks through the mini-batches in order (after shuffling the images, when asked)
and takes one step P ← P − lr·dL/dP per mini-batch on the mini-batch's mean loss. The
gradients are ``network.forward_backward``'s and the step is ``network.gradient_step``, the
very ones ``step`` reports, so full-batch training for N epochs is step's update applied N
times, to the last bit.

An epoch's loss and accuracy are measured on the way, at no extra cost: each mini-batch's
loss and predictions are taken before its step, and averaged over the epoch's images. With
one mini-batch, epoch 1's loss is the L that ``step`` shows for the starting parameters.
An image counts as right when the prediction A2 >= 0.5 (class 1) agrees with Y >= 0.5.

    for epoch in train(problem, epochs=30, batch_size=32, shuffle=True, seed=0):
        print(epoch.epoch, epoch.loss, epoch.accuracy)   # epoch.parameters: W1, B1, W2, B2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from cnntrace.errors import InputError, NumericError, TrainingDiverged
from cnntrace.layers import Sigmoid, Softmax
from cnntrace.network import check_finite
from cnntrace.problem import Problem


@dataclass(frozen=True)
class Epoch:
    """What one epoch of training did.

    epoch: 1, 2, ...   loss: the mean loss over the epoch's images, each taken before the
    step of its mini-batch.   accuracy: the fraction of those images classified right (None
    for a network that classifies nothing: an mse loss).
    parameters: every weight, on the general shapes, after the epoch's last step.
    """

    epoch: int
    loss: float
    accuracy: float | None
    parameters: dict[str, np.ndarray]


def starting_parameters(problem: Problem) -> dict[str, np.ndarray]:
    """The problem's weights on the general shapes (see Problem.general_weights)."""
    return problem.general_weights()


def presented(problem: Problem, parameters: dict) -> dict[str, np.ndarray]:
    """The parameters in the shapes the problem's input gave them."""
    return {name: parameters[name].reshape(problem.inputs[name].shape) for name in problem.network.params}


def _argmax_right(output: np.ndarray, target: np.ndarray) -> int:
    return int(np.count_nonzero(output.argmax(axis=1) == target.argmax(axis=1)))


def _threshold_right(output: np.ndarray, target: np.ndarray) -> int:
    return int(np.count_nonzero((output >= 0.5) == (target >= 0.5)))


def classifier(network):
    """(count, per_image): how to count the right answers of a mini-batch, and how many
    answers each image gives. By argmax after a softmax (one per image), by ≥ 0.5 after a
    sigmoid (one per output unit); (None, 0) for a network that classifies nothing."""
    last = network.layers[-1] if network.layers else None
    if isinstance(last, Softmax):
        return _argmax_right, 1
    if isinstance(last, Sigmoid) and not network.loss.given:
        return _threshold_right, None  # per_image: the output's size, known from the data
    return None, 0


def minibatches(order: np.ndarray, batch_size: int) -> list:
    """The consecutive mini-batches of ``order``; the last one may be smaller.

    Each is a slice when ``order`` runs 0, 1, 2, ... (a view of the images, no copy), else
    an index array.
    """
    M = len(order)
    in_order = np.array_equal(order, np.arange(M))
    return [
        slice(start, min(start + batch_size, M)) if in_order else order[start : start + batch_size]
        for start in range(0, M, batch_size)
    ]


def _finite(L, parameters) -> bool:
    return bool(np.isfinite(L)) and all(np.isfinite(p).all() for p in parameters.values())


def _name_the_overflow(problem: Problem, X, target, weights) -> None:
    """Raise the NumericError that step would for this pass: naming the first stage, in the
    pass's order, that overflows float64."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        values = problem.network.forward_backward(X, target, weights)
    try:
        check_finite({name: value for name, value in values.items() if name not in problem.display_only},
                     problem.stage)  # fmt: skip
    except NumericError as error:
        error.message += " (before any step of training, with the input's own parameters)"
        raise


def train(
    problem: Problem,
    epochs: int,
    *,
    lr: float | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[Epoch]:
    """Yield one Epoch as each of ``epochs`` epochs ends.

    lr: the learning rate (default: the problem's). batch_size: images per step (default,
    or anything larger than M: all of them). shuffle: a fresh random order of the images
    every epoch, from ``seed``; a single mini-batch is never shuffled, as its mean gradient
    does not depend on the order. ``stop`` is asked once after every mini-batch; when it
    says True the generator ends there: after yielding the epoch if that was its last
    mini-batch, else without yielding the unfinished epoch.

    Raises TrainingDiverged naming the epoch when a loss or a parameter stops being finite;
    nothing non-finite is ever yielded.
    """
    network = problem.network
    if network.loss.given:
        raise InputError("training needs a loss: give Y (and a loss) instead of grad", key="grad")
    lr = problem.lr if lr is None else lr
    # The images as a view (no copy of what may be a large dataset); nothing writes to them.
    X, target = problem.general_X(), problem.general_target
    M = problem.M
    batch_size = M if batch_size is None else min(batch_size, M)
    problem.check_size(batch_size)
    rng = np.random.default_rng(seed)
    parameters = starting_parameters(problem)
    output = network.output
    count_right, per_image = classifier(network)
    if per_image is None:  # a sigmoid output with several units counts each of them
        per_image = target[0].size

    for epoch in range(1, epochs + 1):
        order = rng.permutation(M) if shuffle and batch_size < M else np.arange(M)
        epoch_start = parameters
        loss, correct = 0.0, 0
        batches = minibatches(order, batch_size)
        for index, batch in enumerate(batches, 1):
            X_batch, target_batch = X[batch], target[batch]
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                grads = network.forward_backward(X_batch, target_batch, parameters, trace=False)
                stepped = network.gradient_step(parameters, grads, lr)
            if epoch == 1 and index == 1 and not all(np.isfinite(g).all() for g in grads.values()):
                # No step has been taken: the pass overflows at the input's own parameters,
                # whatever the lr. Named as step names it (dL/dX, which training skips,
                # comes last in the pass and cannot be the first to overflow here).
                _name_the_overflow(problem, X_batch, target_batch, parameters)
            parameters = stepped
            if not _finite(grads["L"], parameters):
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch}: the loss or a parameter became NaN "
                    f"or infinite; try a smaller lr (it is {lr:g})",
                    epoch=epoch, parameters=epoch_start,
                )  # fmt: skip
            # The mini-batch's share of the epoch's mean (a weight of exactly 1 when it is alone).
            loss += float(grads["L"]) * (len(target_batch) / M)
            if count_right is not None:
                correct += count_right(grads[output], target_batch)
            if index < len(batches) and stop():
                return  # in the middle of an epoch: the unfinished epoch is dropped
        yield Epoch(epoch, loss, correct / (M * per_image) if count_right else None, parameters)
        if stop():
            return
