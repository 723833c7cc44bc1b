"""Held-out evaluation (--test, --holdout, the confusion matrix) and momentum: in the core
and through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.io import load_problem, read_input
from cnntrace.train import confusion, evaluate, holdout, problem_for_testing, train
from tests.inputs import SAMPLES, reference, write

runner = CliRunner()
DIGITS10, DIGITS10_TEST = SAMPLES / "digits10.npz", SAMPLES / "digits10-test.npz"


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def batch(directory, M=8, seed=0, name="batch.json", **changes):
    rng = np.random.default_rng(seed)
    data = reference()
    data.update(X=rng.uniform(0, 2, size=(M, 6, 6)).tolist(), Y=(rng.random(M) < 0.5).astype(int).tolist())
    data.update(changes)
    return write(directory, data, name)


# -- momentum ---------------------------------------------------------------------------------


def test_momentum_by_hand_two_steps():
    """v1 = g(P0), P1 = P0 − lr·v1; v2 = β·v1 + g(P1), P2 = P1 − lr·v2; with the gradients
    of the pass itself at P0 and P1."""
    problem = load_problem(SAMPLES / "reference.json")
    network, lr, beta = problem.network, problem.lr, 0.5
    X, Y = problem.general_X(), problem.general_target
    P0 = problem.general_weights()
    g0 = network.forward_backward(X, Y, P0, tracing=False)
    P1 = {p: P0[p] - lr * g0[f"dL_d{p}"] for p in network.params}
    g1 = network.forward_backward(X, Y, P1, tracing=False)
    P2 = {p: P1[p] - lr * (beta * g0[f"dL_d{p}"] + g1[f"dL_d{p}"]) for p in network.params}
    epochs = list(train(problem, 2, momentum=beta))
    for p in network.params:
        np.testing.assert_array_equal(epochs[0].parameters[p], P1[p])
        np.testing.assert_array_equal(epochs[1].parameters[p], P2[p])
    # and momentum 0 is plain gradient descent, to the last bit
    plain = list(train(problem, 2))
    zero = list(train(problem, 2, momentum=0.0))
    for p in network.params:
        np.testing.assert_array_equal(plain[1].parameters[p], zero[1].parameters[p])


def test_momentum_ends_on_pytorchs_sgd_parameters():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    problem = load_problem(DIGITS10)
    lr, beta, batch_size, epochs = problem.lr, 0.9, 64, 2
    ours = list(train(problem, epochs, batch_size=batch_size, momentum=beta))[-1].parameters
    X = torch.from_numpy(problem.general_X()[:, :, :, :].copy())
    Y = torch.from_numpy(problem.inputs["Y"]).long()
    weights = [torch.from_numpy(problem.general_weights()[p]).requires_grad_(True) for p in ("W1", "B1", "W2", "B2")]
    optimizer = torch.optim.SGD(weights, lr=lr, momentum=beta)
    W1, B1, W2, B2 = weights
    for _ in range(epochs):
        for start in range(0, len(Y), batch_size):
            x = functional.conv2d(X[start : start + batch_size], W1, B1, padding=1)
            x = functional.max_pool2d(torch.relu(x), 2).reshape(x.shape[0], -1)
            loss = functional.cross_entropy(x @ W2 + B2, Y[start : start + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p, theirs in zip(("W1", "B1", "W2", "B2"), weights):
        np.testing.assert_allclose(ours[p], theirs.detach().numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("value", ["-0.1", "1", "nan"])
def test_bad_momentum_is_a_usage_error(tmp_path, value):
    result = invoke("train", batch(tmp_path), "--epochs", 1, "--momentum", value)
    assert result.exit_code == 2 and result.stdout == "" and "--momentum" in result.stderr


# -- held-out evaluation ---------------------------------------------------------------------


def test_holdout_is_reproducible_disjoint_and_complete():
    problem = load_problem(DIGITS10)
    first, test = holdout(problem, 0.25, seed=3)
    again, test_again = holdout(problem, 0.25, seed=3)
    np.testing.assert_array_equal(test.X, test_again.X)
    assert test.M == round(0.25 * problem.M) and first.M + test.M == problem.M
    rows = {row.tobytes() for row in problem.X}
    assert {row.tobytes() for row in first.X} | {row.tobytes() for row in test.X} == rows
    other = holdout(problem, 0.25, seed=4)[1]
    assert not np.array_equal(other.X, test.X)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.01])
def test_holdout_that_leaves_a_part_empty_is_refused(fraction):
    from cnntrace.errors import InputError

    problem = load_problem(SAMPLES / "bars.json")  # 32 images: 0.01 of them rounds to none
    with pytest.raises(InputError):
        holdout(problem, fraction)


def test_test_loss_and_accuracy_are_the_trained_networks_on_the_test_set():
    problem = load_problem(DIGITS10)
    test = problem_for_testing(read_input(DIGITS10_TEST), read_input(DIGITS10))
    epochs = list(train(problem, 2, batch_size=100, test=test))
    loss, accuracy = evaluate(test, epochs[-1].parameters, batch_size=7)  # any chunking: the same
    assert epochs[-1].test_loss == pytest.approx(loss, rel=1e-12)
    assert epochs[-1].test_accuracy == accuracy
    # the loss of the pass itself on all the test images at once
    whole = test.network.forward_backward(test.general_X(), test.general_target, epochs[-1].parameters, tracing=False)
    assert loss == pytest.approx(float(whole["L"]), rel=1e-12)
    counts = confusion(test, epochs[-1].parameters)
    assert counts.shape == (10, 10) and counts.sum() == test.M
    assert np.trace(counts) == round(accuracy * test.M)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(test.inputs["Y"].astype(int), minlength=10))


def test_confusion_of_a_sigmoid_by_hand(tmp_path):
    """Two 6×6 images, one of each class, and the reference network: the counts are where
    A2 ≥ 0.5 put each image."""
    problem = load_problem(batch(tmp_path, M=4, seed=1))
    parameters = problem.general_weights()
    A2 = problem.network.forward_backward(problem.general_X(), problem.general_target, parameters)["A2"]
    counts = confusion(problem, parameters)
    expected = np.zeros((2, 2), dtype=int)
    for a, y in zip(A2.ravel(), problem.inputs["Y"]):
        expected[int(y), int(a >= 0.5)] += 1
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_without_a_test_set_the_confusion_is_the_last_epochs_accuracy(tmp_path, batch_size):
    """The training set's counts are its last epoch's predictions, each before its
    mini-batch's step: the diagonal is that epoch's accuracy, image for image."""
    problem = load_problem(batch(tmp_path, M=7, seed=3))
    epochs = list(train(problem, 3, batch_size=batch_size))
    assert all(epoch.confusion is None for epoch in epochs[:-1])
    counts = epochs[-1].confusion
    assert counts.sum() == 7 and np.trace(counts) == round(epochs[-1].accuracy * 7)
    if batch_size is None:  # one step an epoch: the predictions of the parameters before the last
        np.testing.assert_array_equal(counts, confusion(problem, epochs[-2].parameters))
    options = ["--epochs", 3, "-f", "json"] + (["--batch-size", batch_size] if batch_size else [])
    document = json.loads(invoke("train", batch(tmp_path, M=7, seed=3), *options).stdout)
    assert document["confusion"] == counts.tolist()


def test_the_softmax_confusion_of_the_last_epoch_counts_by_argmax():
    problem = load_problem(DIGITS10)
    *_, last = train(problem, 1, batch_size=64)
    assert last.confusion.shape == (10, 10) and last.confusion.sum() == problem.M
    assert np.trace(last.confusion) == round(last.accuracy * problem.M)


def test_cli_test_file_in_every_format(tmp_path):
    train_file = batch(tmp_path, M=8, seed=0)
    test_file = batch(tmp_path, M=5, seed=1, name="test.json")
    lines = [json.loads(line) for line in invoke("train", train_file, "--epochs", 3, "--test", test_file, "-f", "ndjson").stdout.splitlines()]
    assert [set(line) for line in lines] == [{"epoch", "loss", "accuracy", "test_loss", "test_accuracy"}] * 3
    result = invoke("train", train_file, "--epochs", 3, "--test", test_file, "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["history"] == lines
    assert np.sum(document["confusion"]) == 5
    table = invoke("train", train_file, "--epochs", 3, "--test", test_file).stdout
    assert "test_accuracy" in table and "Confusion matrix of the test set" in table


def test_cli_test_file_may_leave_out_the_weights(tmp_path):
    test_data = json.loads(batch(tmp_path, M=5, seed=1, name="t.json").read_text())
    for key in ("W1", "B1", "W2", "B2"):
        del test_data[key]
    test_file = write(tmp_path, test_data, "test.json")
    result = invoke("train", batch(tmp_path), "--epochs", 2, "--test", test_file, "-f", "ndjson")
    assert result.exit_code == 0, result.stderr


def test_cli_test_file_of_another_network_is_one_line_naming_it(tmp_path):
    result = invoke("train", DIGITS10, "--epochs", 1, "--test", SAMPLES / "digits.npz")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"cnntrace: {SAMPLES / 'digits.npz'}: ")
    other = batch(tmp_path, name="other.json", W1=[[0.1, 0.2], [0.3, 0.4]], W2=[0.1] * 4)
    result = invoke("train", batch(tmp_path), "--epochs", 1, "--test", other)
    assert result.exit_code == 2 and f"{other}: W1: " in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("options", [["--holdout", "0"], ["--holdout", "1.2"], ["--holdout", "0.5", "--test", "x.json"]])
def test_bad_holdout_options(tmp_path, options):
    result = invoke("train", batch(tmp_path), "--epochs", 1, *options)
    assert result.exit_code == 2 and result.stdout == "" and "--holdout" in result.stderr


def test_holdout_from_the_command_line_splits_by_the_seed(tmp_path):
    source = batch(tmp_path, M=10)
    runs = [invoke("train", source, "--epochs", 2, "--holdout", "0.3", "--seed", 5, "-f", "json").stdout for _ in range(2)]
    assert runs[0] == runs[1]
    assert np.sum(json.loads(runs[0])["confusion"]) == 3


def test_mse_reports_the_test_loss_only(tmp_path):
    data = {"X": np.random.default_rng(0).random((6, 3)).tolist(), "Y": [0.5] * 6, "layers": ["dense"],
            "loss": "mse", "W1": [[0.1], [0.2], [0.3]], "B1": [0.0]}  # fmt: skip
    source = write(tmp_path, data)
    result = invoke("train", source, "--epochs", 2, "--holdout", "0.5", "-f", "json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert "confusion" not in document
    assert document["history"][-1]["test_accuracy"] is None and document["history"][-1]["test_loss"] > 0


def test_the_digits10_command_reaches_97_percent_on_its_test_set():
    result = invoke("train", DIGITS10, "--test", DIGITS10_TEST, "--epochs", 30, "--batch-size", 32,
                    "--shuffle", "--seed", 0, "-f", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["history"][-1]["test_accuracy"] >= 0.97
    assert np.shape(document["confusion"]) == (10, 10)
