"""Training by gradient descent, epoch by epoch (numpy only; nothing here prints).

Each epoch walks through the mini-batches in order (after shuffling the images, when asked)
and takes one step P ← P − lr·dL/dP per mini-batch on the mini-batch's mean loss. The
gradients are ``network.forward_backward``'s and the step is ``network.gradient_step``, the
very ones ``step`` reports, so full-batch training for N epochs is step's update applied N
times, to the last bit. With momentum β > 0 the step is PyTorch's ``SGD(momentum=β)``:
v ← β·v + dL/dP (v = dL/dP at the first step), P ← P − lr·v.

A test set (``test=``, another Problem of the same network, or one split off with
``holdout``) is measured after every epoch's last step: its mean loss and accuracy, on the
parameters the epoch ended with. ``confusion`` counts how each of its true classes was
classified with the trained parameters; without a test set, the last Epoch carries the
training set's, counted as its accuracy is (below), with no pass more over the images.

An epoch's loss and accuracy are measured on the way, at no extra cost: each mini-batch's
loss and output are taken before its step; the losses are averaged over the epoch's images,
the outputs counted against their targets at the epoch's end. With one mini-batch, epoch 1's
loss is the L that ``step`` shows for the starting parameters.
An image counts as right when the prediction A2 >= 0.5 (class 1) agrees with Y >= 0.5.

Batch norm's running statistics (mean{l}, var{l}) start as the input gives them, or at
PyTorch's 0 and 1, and each training pass moves them as ``step``'s update does; a dropout
draws a fresh mask every step from ``seed``. A test set is measured as a trained network
evaluates (Network.evaluating): batch norm with the running statistics, no dropout.

    for epoch in train(problem, epochs=30, batch_size=32, shuffle=True, seed=0):
        print(epoch.epoch, epoch.loss, epoch.accuracy)   # epoch.parameters: W1, B1, W2, B2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from cnntrace import limits
from cnntrace.errors import ArgumentError, InputError, NumericError, TrainingDiverged
from cnntrace.io import problem_from_dict
from cnntrace.layers import GivenLayout
from cnntrace.naming import RUNNING, WEIGHT
from cnntrace.network import check_finite
from cnntrace.problem import Problem
from cnntrace.text import shape_text


@dataclass(frozen=True)
class Epoch:
    """What one epoch of training did.

    epoch: 1, 2, ...   loss: the mean loss over the epoch's images, each taken before the
    step of its mini-batch.   accuracy: the fraction of those images classified right (None
    for a network that classifies nothing: an mse loss).
    parameters: every weight, on the general shapes, after the epoch's last step.
    test_loss, test_accuracy: the same of the test set, measured with those parameters
    (None without a test set; test_accuracy None too where nothing is classified).
    """
    epoch: int
    loss: float
    accuracy: float | None
    parameters: dict[str, np.ndarray]
    test_loss: float | None = None  # on the test set, after the epoch's last step
    test_accuracy: float | None = None
    #: counts[true, predicted] of the epoch's own images as its accuracy counts them (each
    #: before its mini-batch's step): the last epoch's, when there is no test set
    confusion: np.ndarray | None = None


#: The floating types training computes in, by name.
DTYPES = {"float64": np.float64, "float32": np.float32}


def starting_parameters(problem: Problem) -> dict[str, np.ndarray]:
    """The problem's weights on the general shapes (see Problem.general_weights)."""
    return problem.general_weights()


def presented(problem: Problem, parameters: dict) -> dict[str, np.ndarray]:
    """The parameters in the shapes the problem's input gave them."""
    out = {name: parameters[name].reshape(problem.inputs[name].shape) for name in problem.network.params}
    # The running statistics (batch norm's) as the input gave them, or as training made them.
    for name in problem.network.running:
        if name in parameters:
            out[name] = parameters[name].reshape(problem.inputs[name].shape) if name in problem.inputs else parameters[name]
    return out


def _argmax_right(output: np.ndarray, target: np.ndarray) -> int:
    return int(np.count_nonzero(output.argmax(axis=1) == target.argmax(axis=1)))


def _threshold_right(output: np.ndarray, target: np.ndarray) -> int:
    return int(np.count_nonzero((output >= 0.5) == (target >= 0.5)))


def classifier(network):
    """(count, per_image): how to count the right answers of a mini-batch, and how many
    answers each image gives. By argmax after a softmax (one per image), by ≥ 0.5 after a
    sigmoid (one per output unit); (None, 0) for a network that classifies nothing."""
    last = network.layers[-1] if network.layers else None
    if last is not None and last.classifies == "argmax":
        return _argmax_right, 1
    if last is not None and last.classifies == "threshold" and not network.loss.given:
        return _threshold_right, None  # per_image: the output's size, known from the data
    return None, 0


# -- a test set ---------------------------------------------------------------------------------


def subset(problem: Problem, indices: np.ndarray) -> Problem:
    """The problem on the images ``indices`` (in that order) of a batch, everything else
    as it was."""
    from dataclasses import replace

    key = problem.target_key
    target = problem.inputs[key][indices]
    return replace(
        problem,
        inputs={**problem.inputs, "X": problem.X[indices], key: target},
        layouts={**problem.layouts, key: GivenLayout(target.shape)},
        general_target=problem.general_target[indices],
    )


def holdout(problem: Problem, fraction: float, seed: int | None = None) -> tuple[Problem, Problem]:
    """(training, test): ``fraction`` of the images, picked at random from ``seed`` (0 when
    None, so that the same file always splits the same way), set aside as the test set.
    Both keep the images' order in the input. InputError (key "X") when either part would
    be empty."""
    if not 0 < fraction < 1:
        raise ArgumentError(f"must be a fraction between 0 and 1 (exclusive), got {fraction:g}", key="fraction")
    M = problem.M if problem.batched else 1
    test_count = round(fraction * M)
    if not problem.batched or test_count < 1 or test_count >= M:
        raise InputError(
            f"holding out {fraction:g} of {M} image{'s' * (M != 1)} leaves "
            f"{'no test image' if test_count < 1 else 'no image to train on'}; give a larger "
            f"input or another fraction",
            key="X",
        )
    chosen = np.random.default_rng(0 if seed is None else seed).permutation(M)[:test_count]
    is_test = np.zeros(M, dtype=bool)
    is_test[chosen] = True
    return subset(problem, np.flatnonzero(~is_test)), subset(problem, np.flatnonzero(is_test))


def check_same_network(problem: Problem, test: Problem) -> None:
    """InputError naming the key where the test set's network is not the training one's: its
    layers and loss, the shape of one image and of each weight."""
    if test.network.layers != problem.network.layers:
        raise InputError(
            f"the test set's network is not the one trained: {test.network.describe()} "
            f"against {problem.network.describe()}",
            key="layers",
        )
    if type(test.network.loss) is not type(problem.network.loss):
        raise InputError(
            f"the test set's loss is {test.network.loss.type}; training uses {problem.network.loss.type}",
            key="loss",
        )
    if test.layouts["X"].shape != problem.layouts["X"].shape:
        raise InputError(
            f"the test images are {shape_text(test.layouts['X'].shape)}; the training images are "
            f"{shape_text(problem.layouts['X'].shape)}",
            key="X",
        )
    for name in problem.network.params:
        if test.weights[name].shape != problem.weights[name].shape:
            raise InputError(
                f"has shape {shape_text(test.inputs[name].shape)} in the test set, "
                f"{shape_text(problem.inputs[name].shape)} in training",
                key=name,
            )


#: The keys a test file may leave out, taken from the training file: the network and its weights.
NETWORK_KEYS = ("layers", "loss", "stride", "padding", "pool", "pool_stride")


def problem_for_testing(test_data: dict, training_data: dict) -> Problem:
    """The test set's Problem from its file's keys: X and Y (or grad) of its own, and the
    network (layers, loss, options, weights) the training file's where the test file leaves
    it out. Call check_same_network on it before training."""
    filled = dict(test_data)
    for key, value in training_data.items():
        if key not in filled and (key in NETWORK_KEYS or WEIGHT.fullmatch(key) or RUNNING.fullmatch(key)):
            filled[key] = value
    return problem_from_dict(filled, testing=True)


def forward(network, X, target, parameters, loss: bool = True) -> tuple[float | None, np.ndarray]:
    """(L, output) of a forward pass alone, as a trained network evaluates (see
    Network.evaluating): the mean loss of these images (None unless ``loss``) and the last
    layer's output, (M, …)."""
    x, cache = X, None
    network = network.evaluating()  # batch norm's running statistics, no dropout
    for layer, overwrite in zip(network.layers, network.overwritable):
        x, cache = layer.forward(x, parameters, False, overwrite)
    if not loss:
        return None, x
    logits = cache.z if network.fused else None
    return network.loss.value(x, target, logits), x


#: Images per forward pass when measuring a test set: enough to amortize numpy's calls,
#: few enough to keep the memory at a mini-batch's and the matrices in cache (measured
#: fastest from 128 to 256 on 28×28 and 3×12×12 images).
EVALUATION_BATCH = 256


def evaluate(problem: Problem, parameters: dict, batch_size: int = EVALUATION_BATCH):
    """(loss, accuracy) of every image of ``problem`` with these parameters (general
    shapes); accuracy None where nothing is classified."""
    network = problem.network
    X, target = problem.general_X(), problem.general_target
    M = problem.M
    count_right, per_image = classifier(network)
    if per_image is None:
        per_image = target[0].size
    loss, correct = 0.0, 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for start in range(0, M, batch_size):
            batch = slice(start, start + batch_size)
            L, output = forward(network, X[batch], target[batch], parameters)
            loss += float(L) * (len(target[batch]) / M)
            if count_right is not None:
                correct += count_right(output, target[batch])
    return loss, (correct / (M * per_image) if count_right is not None else None)


def classes(network, target) -> int | None:
    """How many classes the network tells apart, one per image: the softmax's units, or 2
    for one sigmoid unit. None where it gives no single class per image (mse, several
    sigmoid units)."""
    count_right, per_image = classifier(network)
    if count_right is None or (per_image is None and target[0].size != 1):
        return None
    return target.shape[1] if per_image == 1 else 2


def add_to_confusion(counts: np.ndarray, output: np.ndarray, target: np.ndarray) -> None:
    """Count the images of a mini-batch (or an epoch) into counts[true, predicted]: by argmax of a
    softmax's output, by ≥ 0.5 of one sigmoid unit's (class 0 and 1)."""
    if target.shape[1] == 1 and len(counts) == 2:  # one sigmoid unit
        true = (target.reshape(-1) >= 0.5).astype(np.int64)
        predicted = (output.reshape(-1) >= 0.5).astype(np.int64)
    else:
        true, predicted = target.argmax(axis=1), output.argmax(axis=1)
    np.add.at(counts, (true, predicted), 1)


def confusion(problem: Problem, parameters: dict, batch_size: int = EVALUATION_BATCH) -> np.ndarray | None:
    """counts[true, predicted]: how many images of each true class (rows) the network gives
    each class (columns) with these parameters, by argmax after a softmax, by ≥ 0.5 after
    one sigmoid unit (class 0 and 1). None for a network that gives no single class per
    image (mse, several sigmoid units)."""
    network = problem.network
    X, target = problem.general_X(), problem.general_target
    count = classes(network, target)
    if count is None:
        return None
    counts = np.zeros((count, count), dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for start in range(0, problem.M, batch_size):
            batch = slice(start, start + batch_size)
            _, output = forward(network, X[batch], target[batch], parameters, loss=False)
            add_to_confusion(counts, output, target[batch])
    return counts


# -- the loop -----------------------------------------------------------------------------------


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


def reuse_freed_memory() -> None:
    """Have the C library keep the memory a step frees for the next step's arrays.

    By default glibc maps each block above 128 KiB afresh (the threshold grows with what is
    freed, to 32 MiB at most) and hands the top of its heap back to the system: every step
    of training then pays again for the first touch of its large arrays' pages, page by page
    (LeNet-5's first convolution at batch 64 keeps 10 MB of windows: 600,000 page faults in
    an epoch, a third of its time). Blocks up to 32 MiB now come from the heap, which is
    never trimmed; the peak memory is the same, only not given back before the process
    ends. Elsewhere than glibc, nothing changes. It sets the whole process's allocator, so
    the command that trains calls it (``cnntrace train``), not ``train``."""
    import ctypes  # lazy: start-up

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest
    mallopt(M_TRIM_THRESHOLD, 2**30)


def train(
    problem: Problem,
    epochs: int,
    *,
    lr: float | None = None,
    batch_size: int | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    momentum: float = 0.0,
    test: Problem | None = None,
    stop: Callable[[], bool] = lambda: False,
    dtype: str = "float64",
) -> Iterator[Epoch]:
    """Yield one Epoch as each of ``epochs`` epochs ends.

    lr: the learning rate (default: the problem's). batch_size: images per step (default,
    or anything larger than M: all of them). shuffle: a fresh random order of the images
    every epoch, from ``seed``; a single mini-batch is never shuffled, as its mean gradient
    does not depend on the order. ``stop`` is asked once after every mini-batch; when it
    says True the generator ends there: after yielding the epoch if that was its last
    mini-batch, else without yielding the unfinished epoch. momentum: β of PyTorch's
    SGD(momentum=β), 0 for plain gradient descent. test: a Problem of the same network
    (see check_same_network) whose images are measured after every epoch. dtype:
    "float32" trains in float32 end to end (the images, the targets and the parameters, as
    people train; each pass as fast as half the bytes allow), "float64" (the default) as
    ``step`` computes.

    Raises TrainingDiverged naming the epoch when a loss or a parameter stops being finite;
    nothing non-finite is ever yielded.
    """
    network = problem.network
    if network.loss.given:
        raise InputError("training needs a loss: give Y (and a loss) instead of grad", key="grad")
    lr = problem.lr if lr is None else lr
    if not (0 <= momentum < 1):
        raise ArgumentError(f"must be at least 0 and below 1, got {momentum:g}", key="momentum")
    if test is not None:
        check_same_network(problem, test)
    # The images as a view (no copy of what may be a large dataset); nothing writes to them.
    X, target = problem.general_X(), problem.general_target
    if dtype not in DTYPES:
        raise ArgumentError(f"must be one of {', '.join(DTYPES)}, got {dtype!r}", key="dtype")
    # In a narrower type each mini-batch is copied into it as it is taken: the same numbers
    # as a copy of the whole dataset made once, without its time and memory.
    narrower = DTYPES[dtype] if dtype != "float64" else None
    M = problem.M
    batch_size = M if batch_size is None else min(batch_size, M)
    # One mini-batch's pass, and the copies of the weights training keeps besides the pass's.
    problem.check_size(batch_size, copies=limits.WEIGHT_COPIES + limits.TRAIN_COPIES, doing="training")
    # numpy.random is imported only to shuffle (a hundredth of a second of start-up).
    rng = np.random.default_rng(seed) if shuffle and batch_size < M else None
    # Batch norm's running statistics start where PyTorch starts them, where the input
    # leaves them out; each training pass updates them.
    parameters = network.start_running({name: value.astype(DTYPES[dtype], copy=False)
                                        for name, value in starting_parameters(problem).items()})  # fmt: skip
    # Every mini-batch must go through every layer as a step runs it (batch norm in training
    # refuses a mini-batch of one value per channel).
    for size in {batch_size, M % batch_size} - {0}:
        for layer in (network.for_step(np.random.default_rng(0)) if network.draws else network).layers:
            layer.for_batch(problem.layouts[layer.input], True, size)
    # A fresh dropout mask every step, drawn from seed.
    draws = np.random.default_rng(seed) if network.draws else None
    output = network.output
    count_right, per_image = classifier(network)
    if per_image is None:  # a sigmoid output with several units counts each of them
        per_image = target[0].size

    velocity = None  # momentum's v for each parameter, from the first step on
    count = classes(network, target) if test is None else None  # the last epoch's confusion

    for epoch in range(1, epochs + 1):
        order = rng.permutation(M) if rng is not None else np.arange(M)
        epoch_start = parameters
        loss = 0.0
        batches = minibatches(order, batch_size)
        diverged = False
        # Each mini-batch's output, in its images' rows: counted against the targets once, at
        # the epoch's end (a few calls for the epoch, not for every step).
        answers = np.empty(target.shape, DTYPES[dtype]) if count_right is not None else None
        done = 0  # the images the epoch has stepped through
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for index, batch in enumerate(batches, 1):
                X_batch, target_batch = X[batch], target[batch]
                if narrower is not None:
                    X_batch, target_batch = X_batch.astype(narrower), target_batch.astype(narrower)
                step_network = network.for_step(draws) if draws is not None else network
                grads = step_network.forward_backward(X_batch, target_batch, parameters, tracing=False)
                if momentum:
                    velocity = _velocity(network, velocity, grads, momentum)
                    stepped = network.gradient_step(parameters, velocity, lr)
                else:
                    stepped = network.gradient_step(parameters, grads, lr)
                if epoch == 1 and index == 1 and not all(np.isfinite(g).all() for g in grads.values()):
                    # No step has been taken: the pass overflows at the input's own parameters,
                    # whatever the lr. Named as step names it (dL/dX, which training skips,
                    # comes last in the pass and cannot be the first to overflow here).
                    _name_the_overflow(problem, X_batch, target_batch, parameters)
                parameters = {**parameters, **stepped, **{name: grads[name] for name in network.running if name in grads}}
                L = float(grads["L"])
                # A loss that stops being finite ends the epoch; a parameter that does is
                # found at the epoch's end (before anything is yielded), whatever the loss.
                if not math.isfinite(L):
                    diverged = True
                    break
                # The mini-batch's share of the epoch's mean (a weight of exactly 1 when it is alone).
                loss += L * (len(target_batch) / M)
                if answers is not None:
                    answers[done : done + len(target_batch)] = grads[output]
                done += len(target_batch)
                if index < len(batches) and stop():
                    return  # in the middle of an epoch: the unfinished epoch is dropped
        if diverged or not all(np.isfinite(p).all() for p in parameters.values()):
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}: the loss or a parameter became NaN "
                f"or infinite; try a smaller lr (it is {lr:g})",
                epoch=epoch, parameters=epoch_start,
            )  # fmt: skip
        accuracy = counts = None
        if answers is not None:
            truth = target[order] if rng is not None else target  # the images in the order stepped
            if narrower is not None:
                truth = truth.astype(narrower)  # as each mini-batch's was
            accuracy = count_right(answers, truth) / (M * per_image)
            if count and epoch == epochs:
                counts = np.zeros((count, count), dtype=np.int64)
                add_to_confusion(counts, answers, truth)
        test_loss = test_accuracy = None
        if test is not None:
            test_loss, test_accuracy = evaluate(test, parameters)
        yield Epoch(epoch, loss, accuracy, parameters, test_loss, test_accuracy, counts)
        if stop():
            return


def _velocity(network, velocity, grads: dict, momentum: float) -> dict:
    """v ← β·v + dL/dP for every parameter, keyed by its gradient's name as ``grads`` is
    (so that ``gradient_step`` takes it in place of the gradients); v = dL/dP at first, as
    PyTorch starts its buffer."""
    names = [f"dL_d{p}" for p in network.params]
    if velocity is None:
        return {name: grads[name] for name in names}
    return {name: momentum * velocity[name] + grads[name] for name in names}
