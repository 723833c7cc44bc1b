"""The training loop: the same gradients and update as ``step``, mini-batches in order or
shuffled from a seed, divergence and stopping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnntrace import ops
from cnntrace.errors import TrainingDiverged
from cnntrace.io import load_problem
from cnntrace.problem import Problem
from cnntrace.reference import reference_problem
from cnntrace.tracer import run
from cnntrace.train import minibatches, presented, starting_parameters, train
from tests.inputs import REFERENCE, SAMPLES

PARAMETERS = ("W1", "B1", "W2", "B2")  # the reference network's, in the update's order


def batch_problem(M=6, seed=0, **options) -> Problem:
    """M random 6×6 images with labels 0/1 and the reference's parameters."""
    rng = np.random.default_rng(seed)
    reference = load_problem(REFERENCE)
    return reference_problem(
        rng.uniform(0, 2, size=(M, 6, 6)), (rng.random(M) < 0.5).astype(float),
        *(reference.inputs[name] for name in PARAMETERS), **options,
    )  # fmt: skip


def with_parameters(problem: Problem, parameters: dict) -> Problem:
    """The reference problem with these parameters (in the input's shapes) instead of its own."""
    r = problem.reference
    values = {**problem.inputs, **parameters}
    return reference_problem(
        *(values[name] for name in ("X", "Y", *PARAMETERS)),
        stride=r.stride, padding=r.padding, pool=r.pool, pool_stride=r.pool_stride, lr=problem.lr,
    )  # fmt: skip


def general_pass(problem: Problem, X, Y, weights, trace=True) -> dict:
    """The problem's network on these images and labels (general shapes) and weights."""
    return problem.network.forward_backward(X, Y, weights, tracing=trace)


def epochs_of(problem, epochs, **options):
    return list(train(problem, epochs, **options))


# -- the training pass is the traced pass -----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    M=st.integers(1, 4), K=st.integers(1, 3), kernel=st.integers(1, 3), stride=st.integers(1, 2),
    padding=st.integers(0, 1), pool=st.integers(1, 2), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_training_pass_gives_exactly_the_traced_values(M, K, kernel, stride, padding, pool, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, 7, 6))
    Ho = (7 + 2 * padding - kernel) // stride + 1
    Wo = (6 + 2 * padding - kernel) // stride + 1
    n = K * ops.output_size(Ho, pool, pool) * ops.output_size(Wo, pool, pool)
    args = (X, rng.random(M), rng.normal(size=(K, kernel, kernel)), rng.normal(size=K),
            rng.normal(size=n), np.array(rng.normal()))  # fmt: skip
    problem = reference_problem(*args, stride=stride, padding=padding, pool=pool, pool_stride=pool)
    assert problem.network.params == PARAMETERS
    inputs = (problem, problem.general_X(), problem.general_target, problem.general_weights())
    traced = general_pass(*inputs)
    lean = general_pass(*inputs, trace=False)
    assert set(lean) == {"L", "A2", "dL_dW1", "dL_dB1", "dL_dW2", "dL_dB2"}
    for name, value in lean.items():
        assert np.array_equal(value, traced[name]), name


#: Networks where a training pass must not write over what it reads: a ReLU on X, on a view
#: of X (after flatten), after a pooling, and the layers after an activation whose cache
#: holds its output.
OVERWRITE_CASES = [
    (["relu", "flatten", "dense", "sigmoid"], [False, True, True, True]),
    (["flatten", "relu", "dense", "sigmoid"], [False, False, True, True]),
    (["conv", "maxpool", "relu", "flatten", "dense", "sigmoid"], [False, True, True, True, True, True]),
    (["conv", "tanh", "maxpool", "flatten", "dense", "sigmoid"], [False, True, False, True, True, True]),
]  # fmt: skip


@pytest.mark.parametrize(("layers", "overwritable"), OVERWRITE_CASES)
def test_training_pass_writes_over_nothing_it_does_not_own(layers, overwritable):
    from cnntrace.io import problem_from_dict

    rng = np.random.default_rng(1)
    data = {"layers": layers, "X": rng.normal(size=(3, 6, 6)), "Y": [0.0, 1.0, 1.0]}
    if layers[0] == "conv":  # 6×6 → 4×4 → pooled 2×2: F has 4 entries
        data |= {"W1": rng.normal(size=(3, 3)), "B1": 0.1, "W2": rng.normal(size=4), "B2": -0.2}
    else:
        data |= {"W1": rng.normal(size=36), "B1": -0.2}
    problem = problem_from_dict(data)
    assert list(problem.network.overwritable) == overwritable
    X, Y, weights = problem.general_X(), problem.general_target, problem.general_weights()
    before = X.copy(), {name: value.copy() for name, value in weights.items()}
    lean = general_pass(problem, X, Y, weights, trace=False)
    assert np.array_equal(X, before[0])
    assert all(np.array_equal(weights[name], value) for name, value in before[1].items())
    traced = general_pass(problem, X, Y, weights)
    for name, value in lean.items():
        assert np.array_equal(value, traced[name]), name


def test_full_batch_epochs_are_steps_applied_again_and_again():
    problem = batch_problem(M=5)
    history = epochs_of(problem, 4)
    stepped = problem
    for epoch in history:
        trace = run(stepped)
        assert epoch.loss == pytest.approx(float(trace["L"]), rel=1e-15)
        stepped = with_parameters(stepped, {name: trace.update[name] for name in PARAMETERS})
        for name in PARAMETERS:
            assert np.array_equal(presented(problem, epoch.parameters)[name], stepped.inputs[name])


def test_one_image_first_epoch_loss_is_steps_loss():
    problem = load_problem(REFERENCE)
    (epoch,) = epochs_of(problem, 1)
    assert epoch.loss == float(run(problem)["L"])
    assert epoch.accuracy == 1.0  # A2 = 0.57 >= 0.5 and Y = 1


def test_lr_overrides_the_files():
    problem = batch_problem()
    faster = epochs_of(problem, 1, lr=0.3)[0]
    assert np.array_equal(faster.parameters["W2"], epochs_of(dataclasses.replace(problem, lr=0.3), 1)[0].parameters["W2"])
    assert not np.array_equal(faster.parameters["W2"], epochs_of(problem, 1)[0].parameters["W2"])


# -- mini-batches ----------------------------------------------------------------------------------


def test_minibatches_cover_the_order_in_turn():
    assert minibatches(np.arange(7), 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    batches = minibatches(np.array([4, 0, 2, 1, 3]), 2)
    assert [b.tolist() for b in batches] == [[4, 0], [2, 1], [3]]


def manual_training(problem, epochs, batch_size, orders):
    """Steps on the mini-batches of the given orders, one epoch per order, by hand."""
    X, Y, weights = problem.general_X(), problem.general_target, problem.general_weights()
    for order in orders[:epochs]:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            grads = general_pass(problem, X[batch], Y[batch], weights)
            weights = problem.network.gradient_step(weights, grads, problem.lr)
    return {name: weights[name] for name in PARAMETERS}


def test_minibatches_are_taken_in_order_one_step_each():
    problem = batch_problem(M=7)
    trained = epochs_of(problem, 3, batch_size=3)[-1].parameters
    expected = manual_training(problem, 3, 3, [np.arange(7)] * 3)
    for name in PARAMETERS:
        assert np.array_equal(trained[name], expected[name]), name


def test_shuffle_draws_a_fresh_order_each_epoch_from_the_seed():
    problem = batch_problem(M=7)
    trained = epochs_of(problem, 3, batch_size=2, shuffle=True, seed=11)[-1].parameters
    rng = np.random.default_rng(11)
    expected = manual_training(problem, 3, 2, [rng.permutation(7) for _ in range(3)])
    for name in PARAMETERS:
        assert np.array_equal(trained[name], expected[name]), name
    again = epochs_of(problem, 3, batch_size=2, shuffle=True, seed=11)[-1].parameters
    other = epochs_of(problem, 3, batch_size=2, shuffle=True, seed=12)[-1].parameters
    assert np.array_equal(again["W1"], trained["W1"])
    assert not np.array_equal(other["W1"], trained["W1"])


def test_a_single_minibatch_is_not_shuffled():
    problem = batch_problem(M=5)
    shuffled = epochs_of(problem, 2, shuffle=True, seed=3)[-1].parameters
    plain = epochs_of(problem, 2)[-1].parameters
    assert all(np.array_equal(shuffled[name], plain[name]) for name in PARAMETERS)


def test_epoch_loss_and_accuracy_average_the_minibatches_before_their_steps():
    problem = batch_problem(M=5)
    epoch = epochs_of(problem, 1, batch_size=2)[0]
    X, Y, weights = problem.general_X(), problem.general_target, problem.general_weights()
    loss, correct = 0.0, 0
    for batch in (slice(0, 2), slice(2, 4), slice(4, 5)):
        grads = general_pass(problem, X[batch], Y[batch], weights)
        loss += float(grads["L"]) * len(Y[batch]) / 5
        correct += int(np.sum((grads["A2"] >= 0.5) == (Y[batch] >= 0.5)))
        weights = problem.network.gradient_step(weights, grads, problem.lr)
    assert epoch.loss == pytest.approx(loss, rel=1e-14)
    assert epoch.accuracy == correct / 5


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_shuffled_epochs_accuracy_and_confusion_count_each_image_against_its_own_target(dtype):
    # The outputs are counted once, at the epoch's end: each must meet its own image's target,
    # in the shuffled order, as cast for its mini-batch (0.4999999999 is 0.5 in float32).
    reference, kind = load_problem(REFERENCE), np.dtype(dtype).type
    problem = reference_problem(np.random.default_rng(2).uniform(0, 2, size=(7, 6, 6)),
                                np.array([0.4999999999, 1, 0, 1, 0.4999999999, 0, 1]),
                                *(reference.inputs[name] for name in PARAMETERS))  # fmt: skip
    network = problem.network
    epochs = epochs_of(problem, 2, batch_size=3, shuffle=True, seed=5, dtype=dtype)
    X, Y = problem.general_X(), problem.general_target
    weights = {name: value.astype(kind) for name, value in problem.general_weights().items()}
    rng = np.random.default_rng(5)
    for epoch in epochs:
        correct, counts = 0, np.zeros((2, 2), dtype=np.int64)
        order = rng.permutation(7)
        for start in range(0, 7, 3):
            batch = order[start : start + 3]
            Y_batch = Y[batch].astype(kind)
            grads = network.forward_backward(X[batch].astype(kind), Y_batch, weights, tracing=False)
            correct += int(np.sum((grads["A2"] >= 0.5) == (Y_batch >= 0.5)))
            for true, predicted in zip(Y_batch.ravel() >= 0.5, grads["A2"].ravel() >= 0.5):
                counts[int(true), int(predicted)] += 1
            weights = network.gradient_step(weights, grads, problem.lr)
        assert epoch.accuracy == correct / 7
    assert epochs[0].confusion is None
    np.testing.assert_array_equal(epochs[-1].confusion, counts)


# -- divergence and stopping ---------------------------------------------------------------------


def test_divergence_names_the_epoch_and_keeps_the_last_finite_parameters():
    problem = batch_problem(M=4, lr=1e308)
    finished = []
    with pytest.raises(TrainingDiverged) as caught:
        for epoch in train(problem, 50):
            finished.append(epoch)
    error = caught.value
    assert error.epoch == len(finished) + 1
    assert f"epoch {error.epoch}" in str(error)
    last = finished[-1].parameters if finished else starting_parameters(problem)
    for name in PARAMETERS:
        assert np.array_equal(error.parameters[name], last[name])
        assert np.all(np.isfinite(error.parameters[name]))
    assert all(np.isfinite(epoch.loss) for epoch in finished)


def test_stop_ends_training_after_the_minibatch_and_drops_the_unfinished_epoch():
    problem = batch_problem(M=6)
    asked = []

    def stop():
        asked.append(1)
        return len(asked) >= 5  # during epoch 2 of 3 mini-batches each

    history = epochs_of(problem, 10, batch_size=2, stop=stop)
    assert [epoch.epoch for epoch in history] == [1]
    assert len(asked) == 5


def test_stop_at_an_epochs_last_minibatch_keeps_that_epoch():
    problem = batch_problem(M=6)
    asked = []
    history = epochs_of(problem, 10, batch_size=2, stop=lambda: asked.append(1) or len(asked) >= 6)
    assert [epoch.epoch for epoch in history] == [1, 2]


def test_training_never_writes_to_the_problem():
    problem = batch_problem(M=4)
    before = {name: problem.inputs[name].copy() for name in ("X", "Y", *PARAMETERS)}
    general = problem.general_weights()
    epochs_of(problem, 3, batch_size=3, shuffle=True, seed=0)
    for name, value in before.items():
        assert np.array_equal(problem.inputs[name], value)
    for name, value in general.items():
        assert np.array_equal(problem.general_weights()[name], value)


# -- the samples train as documented ----------------------------------------------------------------


def accuracy(problem, parameters) -> float:
    trained = with_parameters(problem, presented(problem, parameters))
    A2 = run(trained)["A2"]
    return float(np.mean((A2 >= 0.5) == (problem.inputs["Y"] >= 0.5)))


def test_bars_sample_reaches_full_accuracy_as_documented():
    problem = load_problem(SAMPLES / "bars.json")
    history = epochs_of(problem, 80)
    assert all(epoch.accuracy == 1.0 for epoch in history[68:])  # from epoch 69 on
    assert accuracy(problem, history[-1].parameters) == 1.0


def test_digits_sample_reaches_99_percent_as_documented():
    problem = load_problem(SAMPLES / "digits.npz")
    assert problem.X.shape == (360, 8, 8) and problem.inputs["W2"].shape == (9,)
    history = epochs_of(problem, 20, batch_size=32, shuffle=True, seed=0)
    assert history[5].accuracy >= 0.99  # epoch 6
    assert all(epoch.accuracy >= 0.99 for epoch in history[9:])  # from epoch 10 on
    assert accuracy(problem, history[-1].parameters) >= 0.99


@pytest.mark.parametrize("sample", ["rgb-softmax.json", "digits10.npz", "bars.json"])
def test_float32_training_stays_float32_and_follows_float64(sample):
    problem = load_problem(SAMPLES / sample)
    wide = list(train(problem, 3, batch_size=16))[-1]
    narrow = list(train(problem, 3, batch_size=16, dtype="float32"))[-1]
    assert {p.dtype for p in narrow.parameters.values()} == {np.dtype(np.float32)}
    assert {p.dtype for p in wide.parameters.values()} == {np.dtype(np.float64)}
    for name, value in wide.parameters.items():
        np.testing.assert_allclose(narrow.parameters[name], value, rtol=1e-3, atol=1e-4)
    assert abs(narrow.loss - wide.loss) < 1e-4 * max(1.0, abs(wide.loss))


def test_every_matrix_of_a_float32_pass_is_float32():
    problem = load_problem(SAMPLES / "rgb-softmax.json")
    X = problem.general_X().astype(np.float32)
    target = problem.general_target.astype(np.float32)
    weights = {name: value.astype(np.float32) for name, value in starting_parameters(problem).items()}
    values = problem.network.forward_backward(X, target, weights, tracing=False)
    wider = {name: value.dtype for name, value in values.items() if np.asarray(value).dtype != np.float32}
    assert not wider


def test_an_unknown_dtype_is_refused_by_name():
    from cnntrace.errors import ArgumentError

    with pytest.raises(ArgumentError) as error:
        next(train(load_problem(REFERENCE), 1, dtype="float16"))
    assert error.value.key == "dtype"
