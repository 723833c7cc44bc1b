"""verify names the mistake: each diagnosis id made on purpose, errors carried forward,
answers as exams ask them, the engineers' error sizes and layouts, the conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.api import trace_input
from cnntrace.cli import app
from cnntrace.verify import PRESETS, summary, verify
from tests.networks import IDS, make

REFERENCE = json.loads((Path(__file__).parent.parent / "samples" / "reference.json").read_text())
runner = CliRunner()


def ids(trace, answers: dict, name: str | None = None, **tolerance) -> list[str]:
    verdicts = {v.name: v for v in verify(trace, answers, **tolerance)}
    verdict = verdicts[name or next(iter(answers))]
    return [d.id for d in verdict.diagnosis]


def messages(trace, answers: dict, name: str) -> str:
    return " ".join(d.message for v in verify(trace, answers) if v.name == name for d in v.diagnosis)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def reference():
    return trace_input(REFERENCE)


# -- the engine resumes from a given stage --------------------------------------------------------


def test_the_pass_resumes_from_a_given_forward_stage_and_recomputes_what_follows(reference):
    problem = reference.problem
    network, weights = problem.network, problem.general_weights()
    X, Y = problem.general_X(), problem.general_target
    P1 = network.forward_backward(X, Y, weights)["P1"] + 1.0
    resumed = network.forward_backward(X, Y, weights, given={"P1": P1})
    assert np.array_equal(resumed["P1"], P1)
    assert np.array_equal(resumed["F"], P1.reshape(1, -1))
    W2, B2 = weights["W2"], weights["B2"]
    assert np.allclose(resumed["Z2"], P1.reshape(1, -1) @ W2 + B2)
    assert np.allclose(resumed["dL_dZ2"], sigmoid(resumed["Z2"]) - 1.0)
    # before the given stage nothing changes
    assert np.array_equal(resumed["Z1"], network.forward_backward(X, Y, weights)["Z1"])


def test_the_pass_resumes_from_a_given_backward_stage(reference):
    problem = reference.problem
    network, weights = problem.network, problem.general_weights()
    X, Y = problem.general_X(), problem.general_target
    right = network.forward_backward(X, Y, weights)
    d = np.full_like(right["dL_dA1"], 2.0)
    resumed = network.forward_backward(X, Y, weights, given={"dL_dA1": d})
    assert np.array_equal(resumed["dL_dZ1"], 2.0 * (right["Z1"] > 0))
    assert np.array_equal(resumed["dL_dW2"], right["dL_dW2"])  # above the given stage: as before
    # a given local derivative: dL/dZ follows from it
    resumed = network.forward_backward(X, Y, weights, given={"dA1_dZ1": np.ones_like(d)})
    assert np.array_equal(resumed["dL_dZ1"], right["dL_dA1"])


@pytest.mark.parametrize("network_id, loss", [("mlp-soft-labels", "mse"), ("mlp", None), ("mlp-soft-labels", None)])
def test_a_given_local_derivative_gives_dL_dZ_through_it(network_id, loss):
    data = make(network_id, 9)
    if loss:
        data["loss"] = loss  # softmax with mse: the Jacobian is not cancelled by the loss
    t = trace_input(data)
    problem = t.problem
    network, weights = problem.network, problem.general_weights()
    X, Y = problem.general_X(), problem.general_target
    right = network.forward_backward(X, Y, weights)
    last = network.layers[-1]
    local = right[last.local]
    same = network.forward_backward(X, Y, weights, given={last.local: local})
    assert np.allclose(same[last.input_gradient], right[last.input_gradient])
    doubled = network.forward_backward(X, Y, weights, given={last.local: 2 * local})
    if network.fused:  # the loss's closed form does not go through dA/dZ
        assert np.array_equal(doubled[last.input_gradient], right[last.input_gradient])
    else:
        assert np.allclose(doubled[last.input_gradient], 2 * right[last.input_gradient])
        assert not np.allclose(doubled[last.input_gradient], right[last.input_gradient])


def test_resume_takes_a_given_update_and_derives_it_from_a_given_gradient(reference):
    problem = reference.problem
    network, weights = problem.network, problem.general_weights()
    X, Y = problem.general_X(), problem.general_target
    values = network.resume(X, Y, weights, 0.1, {"dL_dW2": np.ones((4, 1))})
    assert np.allclose(values["W2"], weights["W2"] - 0.1)


# -- every diagnosis id, made on purpose ----------------------------------------------------------


def test_sign(reference):
    assert "sign" in ids(reference, {"dL_dW2": (-reference["dL_dW2"]).tolist()})


def test_sigmoid_derivative_twice(reference):
    A2 = reference["A2"]
    twice = (A2 - 1.0) * A2 * (1 - A2)  # (A2 − Y)·A2·(1 − A2), Y = 1
    assert ids(reference, {"dL_dZ2": float(twice)}) == ["sigmoid_derivative_twice"]
    text = messages(reference, {"dL_dZ2": float(twice)}, "dL_dZ2")
    assert "applied twice" in text and "BCE" in text
    # and what follows from it, one layer down
    F = reference["F"]
    assert "sigmoid_derivative_twice" in ids(reference, {"dL_dW2": (F * twice).tolist()})


def test_batch_mean_missing():
    data = {**REFERENCE, "X": [REFERENCE["X"], np.flipud(REFERENCE["X"]).tolist()], "Y": [1, 0]}
    t = trace_input(data)
    assert "batch_mean_missing" in ids(t, {"dL_dW2": (2 * t["dL_dW2"]).tolist()})
    assert "batch_mean_missing" in ids(t, {"dL_dZ2": (2 * t["dL_dZ2"]).tolist()})


_TIED = {"X": [[1, 1, 0, 2], [0, 0, 0, 0]], "layers": ["maxpool", "flatten", "dense", "sigmoid"],
         "W1": [0.5, -1.0], "B1": 0.0, "Y": 1}  # fmt: skip


def tied_pool():
    """X's first 2×2 window [[1, 1], [0, 0]] ties at 1; then dense and a sigmoid."""
    return trace_input(_TIED)


def test_pool_all_ties_and_pool_split_ties_name_the_switch():
    t = tied_pool()
    d = np.asarray(t["dL_dP0"]).ravel()
    assert t["P0"].tolist() == [[1.0, 2.0]]
    # window 0 ties between (0,0) and (0,1); window 1's max is (0,3)
    assert t["dL_dX"].tolist() == [[d[0], 0, 0, d[1]], [0, 0, 0, 0]]
    all_ties = [[d[0], d[0], 0, d[1]], [0, 0, 0, 0]]
    split = [[d[0] / 2, d[0] / 2, 0, d[1]], [0, 0, 0, 0]]
    assert ids(t, {"dL_dX": all_ties}) == ["pool_all_ties"]
    assert '"pool_ties": "all"' in messages(t, {"dL_dX": all_ties}, "dL_dX")
    assert ids(t, {"dL_dX": split}) == ["pool_split_ties"]
    # under the convention all, the default's answer is the mistake
    under_all = trace_input({**_TIED, "conventions": {"pool_ties": "all"}})
    assert under_all["dL_dX"].tolist() == all_ties
    assert ids(under_all, {"dL_dX": [[d[0], 0, 0, d[1]], [0, 0, 0, 0]]}) == ["pool_first_tie"]


def test_pool_spread():
    t = tied_pool()
    d = np.asarray(t["dL_dP0"]).ravel()
    spread = [[d[0] / 4, d[0] / 4, d[1] / 4, d[1] / 4]] * 2
    assert ids(t, {"dL_dX": spread}) == ["pool_spread"]


def test_pool_copy_all_and_avgpool_for_max(reference):
    d = np.asarray(reference["dL_dP1"])
    copied = np.kron(d, np.ones((2, 2)))  # undivided, to every cell of each 2×2 window
    assert ids(reference, {"dL_dA1": copied.tolist()}) == ["pool_copy_all"]
    A1 = np.asarray(reference["A1"])
    averaged = A1.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    assert ids(reference, {"P1": averaged.tolist()}) == ["avgpool_for_max"]


def test_maxpool_for_avg():
    t = trace_input(make("pool-first-then-tanh", 6))
    X = np.asarray(make("pool-first-then-tanh", 6)["X"])
    maxima = X.reshape(2, 2, 4, 2, 4, 2).max(axis=(3, 5))
    assert "maxpool_for_avg" in ids(t, {"P0": maxima.tolist()})


def relu_at_zero(conventions=None):
    """Z1 = X·W1 + B1 = 1 − 1 + 0 = 0: exactly on ReLU's kink."""
    data = {"X": [[1, -1]], "layers": ["dense", "relu", "dense", "sigmoid"], "W1": [[1, 2], [1, 1]],
            "B1": [0, 0.5], "W2": [[1], [1]], "B2": [0], "Y": [1]}  # fmt: skip
    if conventions:
        data["conventions"] = conventions
    return trace_input(data)


def test_relu_grad_at_zero():
    t = relu_at_zero()
    dA = t["dL_dA1"]
    answer = (dA * np.array([1.0, 1.0])).tolist()  # ReLU′(0) = 1 on the first unit, Z1 = 0
    assert float(t["Z1"].ravel()[0]) == 0.0
    assert "relu_grad_at_zero" in ids(t, {"dL_dZ1": answer})
    assert '"relu_grad_at_zero": 1' in messages(t, {"dL_dZ1": answer}, "dL_dZ1")


def test_relu_mask_missing():
    t = trace_input({"X": [[1, -1]], "layers": ["dense", "relu", "dense", "sigmoid"], "W1": [[1, 2], [1, -1]],
                     "B1": [-1, 0.5], "W2": [[1], [1]], "B2": [0], "Y": [1]})  # Z1 = [-1, 3.5]
    assert t["Z1"].tolist() == [[-1.0, 3.5]]
    assert ids(t, {"dL_dZ1": t["dL_dA1"].tolist()}) == ["relu_mask_missing"]


def test_kernel_flipped(reference):
    X, W1 = np.asarray(REFERENCE["X"], float), np.asarray(REFERENCE["W1"])[::-1, ::-1]
    Z = [[float((X[i:i + 3, j:j + 3] * W1).sum() + 0.125) for j in range(4)] for i in range(4)]
    assert ids(reference, {"Z1": Z}) == ["kernel_flipped"]
    flipped = reference["dL_dW1"][::-1, ::-1].tolist()
    assert "kernel_flipped" in ids(reference, {"dL_dW1": flipped})


def test_transposed_square_and_transposed_shape():
    t = trace_input(make("mlp", 1))
    assert "transposed" in ids(t, {"dL_dW2": t["dL_dW2"].T.tolist()})
    verdict = verify(t, {"dL_dW1": t["dL_dW1"].T.tolist()})[0]
    assert verdict.status == "shape" and [d.id for d in verdict.diagnosis] == ["transposed"]
    assert "every entry is right" in verdict.diagnosis[0].message


def test_a_pytorch_named_answer_of_the_wrong_shape_is_told_in_pytorchs_layout():
    data = make("mlp", 1)
    t = trace_input(data)
    W1 = data["W1"]
    named = trace_input(data | {"torch_names": {"fc1.weight": "W1.T"}})
    n_in, n_out = np.shape(t["dL_dW1"])
    assert n_in != n_out
    # nn.Linear's out×in is right; cnntrace's own in×out is the layout mistake, told as such.
    assert verify(named, {"fc1.weight": t["dL_dW1"].T.tolist()})[0].status == "right"
    verdict = verify(named, {"fc1.weight": t["dL_dW1"].tolist()})[0]
    assert verdict.status == "shape"
    assert verdict.message == f"expected {n_out}×{n_in} (PyTorch's n_out×n_in), got {n_in}×{n_out}"
    (diagnosis,) = verdict.diagnosis
    assert diagnosis.id == "transposed" and diagnosis.message.startswith("your fc1.weight is in cnntrace's layout")
    assert diagnosis.message.endswith("every entry is right there")
    verdict = verify(named, {"fc1.weight": np.zeros((2, 7)).tolist()})[0]
    assert verdict.message == f"expected {n_out}×{n_in} (PyTorch's n_out×n_in), got 2×7" and not verdict.diagnosis
    assert np.shape(W1) == (n_in, n_out)


def test_pytorch_named_entries_and_mistakes_are_told_as_the_answer_wrote_them():
    from cnntrace.errors import InputError

    data = make("mlp", 1) | {"torch_names": {"fc1.weight": "W1.T", "fc1.bias": "B1"}}
    t = trace_input(data)
    g = t["dL_dW1"]  # cnntrace's n_in×n_out; PyTorch's fc1.weight.grad is its transpose
    (right,) = verify(t, {"fc1.weight[1,0]": float(g[0, 1])})
    (wrong,) = verify(t, {"fc1.weight[1,0]": float(g[0, 1]) + 1.0})
    assert right.status == "right" and wrong.status == "wrong" and [w.index for w in wrong.wrong] == [(1, 0)]
    with pytest.raises(InputError, match=r"fc1.weight's gradient is 2×3 \(PyTorch's n_out×n_in\): indices 0..1, 0..2; got \[2,1\]"):
        verify(t, {"fc1.weight[2,1]": 0.0})
    (negated,) = verify(t, {"fc1.weight": (-g).T.tolist()})
    assert [w.index for w in negated.wrong] == sorted(w.index for w in negated.wrong)  # row by row, PyTorch's rows
    assert [d.message for d in negated.diagnosis] == ["your fc1.weight has the right size and the wrong sign"]
    (misspelled,) = verify(t, {"fc1.wieght": 0.0})
    assert misspelled.status == "unknown" and "did you mean fc1.weight?" in misspelled.message
    (unmapped,) = verify(trace_input(make("mlp", 1)), {"fc9.weight": 0.0})
    assert "known where the input's torch_names maps it" in unmapped.message


@pytest.mark.parametrize(("names", "message"), [
    ({"conv.weight": "W1.T"}, "W1 is no matrix: only a dense layer's weight is transposed"),
    ({"fc.bias": "B3.T"}, "B3 is no matrix"),
    ({"a.weight": "W3.T", "b.weight": "W3"}, "a.weight and b.weight both name W3"),
])  # fmt: skip
def test_torch_names_that_cannot_be_pytorchs_are_refused(names, message):
    from cnntrace.errors import InputError

    with pytest.raises(InputError, match=message):
        trace_input(make("rgb-softmax", 0) | {"torch_names": names})


@pytest.mark.parametrize(("answers", "message"), [
    ({"Z1[0,1]": 0.375, "Z1[0][1]": 0.5}, "Z1[0][1]: answers the same entry as Z1[0,1]"),
    ({"dL/dW1": [[0.0]], "dL_dW1": None}, "dL_dW1: answers the same matrix as dL/dW1"),
])  # fmt: skip
def test_an_answer_given_twice_in_two_spellings_is_refused(reference, answers, message):
    from cnntrace.errors import InputError

    with pytest.raises(InputError) as error:
        verify(reference, answers)
    assert str(error.value) == f"{message}; give it once"
    assert [v.status for v in verify(reference, {"Z1[0,1]": 0.375, "Z1": None})] == ["right", "unanswered"]


def test_flatten_order_names_the_switch():
    t = trace_input(make("one-image-multi-sigmoid", 2))
    A1 = np.asarray(t["A1"])  # (2, 3, 3): the filters' maps
    channels_last = A1.transpose(1, 2, 0).ravel().tolist()
    assert "flatten_order" in ids(t, {"F": channels_last})
    assert '"flatten": "hwc"' in messages(t, {"F": channels_last}, "F")
    column_major = A1.ravel(order="F").tolist()
    assert "flatten_order" in ids(t, {"F": column_major})


def test_update_sign(reference):
    W1 = np.asarray(REFERENCE["W1"]) + 0.1 * reference["dL_dW1"]
    assert ids(reference, {"W1": W1.tolist()}) == ["update_sign"]


def test_softmax_cross_entropy_mistakes():
    t = trace_input(make("mlp-soft-labels", 3))
    A, dA = t["A2"], t["dL_dA2"]
    M = A.shape[0]
    Y = np.asarray(make("mlp-soft-labels", 3)["Y"])
    right = (A - Y) / M
    assert np.allclose(t["dL_dZ2"], right)
    twice = np.stack([(np.diag(a) - np.outer(a, a)).T @ r for a, r in zip(A, right)])
    assert "softmax_derivative_twice" in ids(t, {"dL_dZ2": twice.tolist()})
    assert "softmax_diagonal_only" in ids(t, {"dL_dZ2": (dA * A * (1 - A)).tolist()})
    assert "softmax_target_missing" in ids(t, {"dL_dZ2": (A / M).tolist()})


def test_tanh_mistakes():
    t = trace_input(make("mlp-soft-labels", 4))
    dA, Z, A = t["dL_dA1"], t["Z1"], t["A1"]
    assert "tanh_grad_from_input" in ids(t, {"dL_dZ1": (dA * (1 - Z**2)).tolist()})
    assert "tanh_grad_unsquared" in ids(t, {"dL_dZ1": (dA * (1 - A)).tolist()})
    assert "tanh_grad_from_input" in ids(t, {"dA1_dZ1": (1 - Z**2).tolist()})


def test_sigmoid_grad_from_input():
    t = trace_input(make("mlp", 5))
    dA, Z = t["dL_dA1"], t["Z1"]
    assert "sigmoid_grad_from_input" in ids(t, {"dL_dZ1": (dA * Z * (1 - Z)).tolist()})


def test_avgpool_mistakes():
    t = trace_input(make("pool-first-then-tanh", 6))
    d = np.asarray(t["dL_dP0"])  # (2, 2, 4, 4): avgpool 2×2 on X (2, 2, 8, 8)
    undivided = np.kron(d, np.ones((2, 2)))
    assert "avgpool_undivided" in ids(t, {"dL_dX": undivided.tolist()})
    X = np.asarray(make("pool-first-then-tanh", 6)["X"])
    windows = X.reshape(2, 2, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 2, 4, 4, 4)
    first = windows.argmax(axis=-1)
    to_max = np.zeros_like(X)
    for m, c, h, w in np.ndindex(d.shape):
        i, j = divmod(int(first[m, c, h, w]), 2)
        to_max[m, c, 2 * h + i, 2 * w + j] = d[m, c, h, w]
    assert "avgpool_as_max" in ids(t, {"dL_dX": to_max.tolist()})


def test_no_diagnosis_for_an_unrelated_wrong_answer(reference):
    assert ids(reference, {"dL_dW2": (reference["dL_dW2"] + 0.37).tolist()}) == []


# -- error carried forward ----------------------------------------------------------------------


def test_an_error_carried_over_four_stages_is_recognised(reference):
    P1 = np.asarray(reference["P1"]) + np.array([[0.5, 0.0], [0.0, 0.0]])  # the learner's slip
    F = P1.ravel()
    W2 = np.asarray(REFERENCE["W2"])
    Z2 = float(F @ W2 + REFERENCE["B2"])
    A2 = float(sigmoid(Z2))
    dZ2 = A2 - 1.0
    answers = {"P1": P1.tolist(), "F": F.tolist(), "Z2": Z2, "A2": A2, "dL_dZ2": dZ2}
    verdicts = {v.name: v for v in verify(reference, answers)}
    assert verdicts["P1"].status == "wrong" and verdicts["P1"].diagnosis == []
    follows = {"F": "P1", "Z2": "F", "A2": "Z2", "dL_dZ2": "A2"}
    for name, earlier in follows.items():
        (d,) = verdicts[name].diagnosis
        assert d.id == "carried_forward", name
        assert d.message.endswith(f"answer {earlier}"), d.message
    assert summary(verdicts.values()) == {"right": 0, "wrong": 1, "carried_forward": 4, "unanswered": 0,
                                          "not_judged": 0}  # fmt: skip


def test_a_wrong_answer_that_does_not_follow_from_earlier_ones_is_not_carried_forward(reference):
    P1 = np.asarray(reference["P1"]) + 0.5
    answers = {"P1": P1.tolist(), "F": (np.asarray(reference["F"]) + 0.25).tolist()}
    assert ids(reference, answers, "F") == []


def test_carried_forward_from_a_single_entry(reference):
    P1 = np.asarray(reference["P1"])
    F = P1.ravel().copy()
    F[0] += 1.0
    answers = {"P1[0,0]": float(P1[0, 0] + 1.0), "F[0]": float(F[0])}
    assert ids(reference, answers, "F[0]") == ["carried_forward"]


# -- answers as exams ask them --------------------------------------------------------------------


def test_single_entries_in_the_spellings_explain_takes(reference):
    Z1, dW1 = reference["Z1"], reference["dL_dW1"]
    answers = {"Z1[0,1]": float(Z1[0, 1]), "dL/dW1[0][1]": float(dW1[0, 1]), "∂L/∂W1[1, 2]": float(dW1[1, 2])}
    verdicts = verify(reference, answers)
    assert [v.status for v in verdicts] == ["right"] * 3
    wrong = verify(reference, {"Z1[0,1]": 39})[0]
    assert wrong.status == "wrong" and wrong.wrong[0].index == (0, 1) and wrong.worst == (0, 1)
    assert wrong.max_abs_error == pytest.approx(39 - float(Z1[0, 1]))


def test_null_is_not_answered_and_not_counted_wrong(tmp_path):
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"P1": None, "B2": REFERENCE["B2"] - 0.1 * float(trace_input(REFERENCE)["dL_dB2"])}))
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(REFERENCE))
    result = runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["results"]["P1"]["status"] == "unanswered"
    assert out["summary"]["unanswered"] == 1 and out["summary"]["right"] == 1 and out["ok"]
    table = runner.invoke(app, ["verify", str(problem), str(answers)])
    assert "not answered" in table.stdout


def test_a_whole_step_json_and_npz_answers(tmp_path, reference):
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(REFERENCE))
    step = runner.invoke(app, ["step", str(problem), "-f", "json"])
    answers = tmp_path / "step.json"
    answers.write_text(step.stdout)
    assert runner.invoke(app, ["verify", str(problem), str(answers)]).exit_code == 0
    npz = tmp_path / "answers.npz"
    np.savez(npz, Z1=reference["Z1"], dL_dW1=reference["dL_dW1"] * -1)
    result = runner.invoke(app, ["verify", str(problem), str(npz), "-f", "json"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)["results"]
    assert out["Z1"]["status"] == "right"
    assert [d["id"] for d in out["dL_dW1"]["diagnosis"]] == ["sign"]


def test_pickled_npz_answers_are_refused(tmp_path):
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(REFERENCE))
    npz = tmp_path / "answers.npz"
    np.savez(npz, Z1=np.array([{"a": 1}], dtype=object))
    result = runner.invoke(app, ["verify", str(problem), str(npz)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(npz) in lines[0] and "Z1" in lines[0] and "pickle" in lines[0]


@pytest.mark.parametrize("content, key", [
    ('{"Z1[0,a]": 1}', "Z1[0,a]"),
    ('{"Z1[9,9]": 1}', "Z1[9,9]"),
    ('{"Z1": 1, "Z1": 2}', "Z1"),
])  # fmt: skip
def test_bad_answers_files_give_one_line_naming_file_and_key(tmp_path, content, key):
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(REFERENCE))
    answers = tmp_path / "bad.json"
    answers.write_text(content)
    result = runner.invoke(app, ["verify", str(problem), str(answers)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(answers) in lines[0] and key in lines[0], result.stderr
    assert result.stdout == ""


# -- for engineers ----------------------------------------------------------------------------------


def test_errors_sizes_and_the_float64_preset(tmp_path, reference):
    off = np.asarray(reference["dL_dW1"]).copy()
    off[1, 2] += 3e-7
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(REFERENCE))
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"dL_dW1": off.tolist()}))
    hand = json.loads(runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json", "--decimals", "4"]).stdout)
    assert hand["ok"] and (hand["tolerance"], hand["decimals"]) == ("rounding", 4)
    # Written at full precision, the answers ask for full precision: 3e-7 off is wrong.
    read = json.loads(runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json"]).stdout)
    assert not read["ok"] and read["decimals"] == 15
    result = runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json", "--preset", "float64"])
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert (out["rtol"], out["atol"]) == PRESETS["float64"] == (1e-7, 1e-7)  # torch.testing's
    assert PRESETS["float32"] == (1.3e-6, 1e-5)
    r = out["results"]["dL_dW1"]
    assert r["worst"] == [1, 2]
    assert r["max_abs_error"] == pytest.approx(3e-7, rel=1e-6)
    assert r["max_rel_error"] == pytest.approx(3e-7 / abs(reference["dL_dW1"][1, 2]), rel=1e-6)
    table = runner.invoke(app, ["verify", str(problem), str(answers), "--preset", "float64"]).stdout
    assert "max |error| 3e-07" in table and "at [1,2]" in table
    explicit = runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json", "--preset", "float64",
                                   "--rtol", "1e-3"])  # fmt: skip
    assert json.loads(explicit.stdout)["rtol"] == 1e-3


def test_an_nhwc_answer_is_named_as_such():
    t = trace_input(make("rgb-softmax", 7))
    Z1 = np.asarray(t["Z1"])  # (M, C, H, W)
    verdict = verify(t, {"Z1": Z1.transpose(0, 2, 3, 1).tolist()})[0]
    assert verdict.status == "shape"
    assert [d.id for d in verdict.diagnosis] == ["layout_nhwc"]
    assert "NHWC" in verdict.diagnosis[0].message and "every entry is right" in verdict.diagnosis[0].message


# -- conventions as switches, each by hand ------------------------------------------------------------


@pytest.mark.parametrize("ties, expected", [
    ("first", [[3, 0], [0, 0]]), ("all", [[3, 3], [0, 0]]), ("split", [[1.5, 1.5], [0, 0]]),
])  # fmt: skip
def test_pool_ties_by_hand(ties, expected):
    data = {"X": [[1, 1], [0, 0]], "layers": ["maxpool"], "grad": [[3]]}
    if ties != "first":
        data["conventions"] = {"pool_ties": ties}
    assert trace_input(data)["dL_dX"].tolist() == expected


def test_relu_grad_at_zero_by_hand():
    data = {"X": [[1, -1]], "layers": ["dense", "relu"], "W1": [[1], [1]], "B1": [0], "grad": [[2]]}
    default = trace_input(data)
    assert default["dL_dZ1"].tolist() == [0.0] and default["dA1_dZ1"].tolist() == [0.0]
    one = trace_input({**data, "conventions": {"relu_grad_at_zero": 1}})
    assert one["dL_dZ1"].tolist() == [2.0] and one["dL_dW1"].tolist() == [[2.0], [-2.0]]


def test_flatten_hwc_by_hand():
    data = {"X": [[[[1, 2]], [[3, 4]]]], "layers": ["flatten", "dense"], "W1": [[1], [2], [3], [4]],
            "B1": [0], "grad": [[2]]}  # fmt: skip
    assert trace_input(data)["F"].tolist() == [[1, 2, 3, 4]]
    hwc = trace_input({**data, "conventions": {"flatten": "hwc"}})
    assert hwc["F"].tolist() == [[1, 3, 2, 4]]
    assert np.asarray(hwc["Z1"]).item() == 1 + 6 + 6 + 16
    assert hwc["dL_dX"].tolist() == [[[[2, 6]], [[4, 8]]]]


def test_defaults_are_bit_identical_when_written_out(reference):
    same = trace_input({**REFERENCE, "conventions": {"pool_ties": "first", "relu_grad_at_zero": 0, "flatten": "chw"}})
    for stage in reference.stages:
        assert np.array_equal(same[stage.name], reference[stage.name]), stage.name


def test_bad_conventions_name_the_key(tmp_path):
    problem = tmp_path / "p.json"
    for conventions, key in (({"pool_ties": "most"}, "conventions.pool_ties"), ({"relu_grad": 1}, "conventions.relu_grad"),
                             ("hwc", "conventions"), ({"relu_grad_at_zero": True}, "conventions.relu_grad_at_zero")):
        problem.write_text(json.dumps({**REFERENCE, "conventions": conventions}))
        result = runner.invoke(app, ["step", str(problem)])
        assert result.exit_code == 2, conventions
        assert key in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_command_honours_the_conventions(tmp_path):
    data = make("one-image-multi-sigmoid", 8)
    data["conventions"] = {"flatten": "hwc", "relu_grad_at_zero": 1}
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(data))
    step = runner.invoke(app, ["step", str(problem), "-f", "json"])
    assert step.exit_code == 0
    F = np.asarray(json.loads(step.stdout)["forward"]["F"])
    A1 = np.asarray(trace_input(data)["A1"])
    assert np.array_equal(F, A1.transpose(1, 2, 0).ravel())
    table = runner.invoke(app, ["step", str(problem)]).stdout
    assert "channels last" in table and "ReLU′(0) = 1" in table
    assert runner.invoke(app, ["check", str(problem)]).exit_code == 0
    explain = runner.invoke(app, ["explain", str(problem), "F[1]"])
    assert explain.exit_code == 0 and "A1[1,0,0]" in explain.stdout, explain.stdout
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"F": F.tolist()}))
    verify_table = runner.invoke(app, ["verify", str(problem), str(answers)])
    assert verify_table.exit_code == 0
    assert "Conventions that differ from the default: relu_grad_at_zero 1, flatten hwc" in verify_table.stdout
    out = tmp_path / "trained.json"
    assert runner.invoke(app, ["train", str(problem), "--epochs", "2", "--save", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["conventions"] == data["conventions"]


def test_the_reference_forms_summary_line_names_its_conventions():
    data = {**REFERENCE, "conventions": {"pool_ties": "all", "relu_grad_at_zero": 1}}
    summary = trace_input(data).problem.summary()
    assert summary == "stride 1, padding 0, pool 2×2 with stride 2, conventions relu_grad_at_zero 1, pool_ties all, lr 0.1"
    assert "conventions" not in trace_input(REFERENCE).problem.summary()


def test_a_training_pass_keeps_the_convention_of_relu_at_zero():
    t = relu_at_zero({"relu_grad_at_zero": 1})
    problem = t.problem
    values = problem.network.forward_backward(problem.general_X(), problem.general_target,
                                              problem.general_weights(), tracing=False)  # fmt: skip
    for name in problem.network.params:
        assert np.array_equal(values[f"dL_d{name}"], t.general_pass().value(f"dL_d{name}")), name


# -- every network of the table: each mistake it offers, answered, is named --------------------------


@pytest.mark.parametrize("network_id", IDS)
def test_every_mistake_of_every_network_is_named_when_made(network_id):
    t = trace_input(make(network_id, 11))
    problem = t.problem
    values = {"X": problem.general_X(), **problem.network.forward_backward(
        problem.general_X(), problem.general_target, problem.general_weights())}  # fmt: skip
    mistakes = problem.network.mistakes(values, problem.general_weights(), problem.lr, problem.M)
    assert mistakes
    named = 0
    for mistake in mistakes:
        for name, value in mistake.given.items():
            answer = problem.present(name, value)
            if np.allclose(answer, t[name], rtol=1e-3, atol=1e-4):
                continue  # this input does not tell the mistake from the right answer (no tie, no Z = 0)
            assert mistake.id in ids(t, {name: answer.tolist()}), (mistake.id, name)
            named += 1
    assert named


def test_explain_and_marks_follow_the_tie_rule(tmp_path):
    problem = tmp_path / "tie.json"
    problem.write_text(json.dumps({**_TIED, "conventions": {"pool_ties": "split"}}))
    result = runner.invoke(app, ["explain", str(problem), "dL_dX[0,1]"])
    assert result.exit_code == 0 and "1/2·dL/dP0[0,0]" in result.stdout and "shared by 2" in result.stdout
    step = runner.invoke(app, ["step", str(problem)])  # a max-pool straight on X: marks on X's gradient
    assert step.exit_code == 0 and "ties split" in step.stdout, step.output
    default = tmp_path / "first.json"
    default.write_text(json.dumps(_TIED))
    result = runner.invoke(app, ["explain", str(default), "dL_dX[0,1]"])
    assert result.exit_code == 0 and "won none" in result.stdout
