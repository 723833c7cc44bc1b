"""init --hand: the promises of an exercise for pencil and paper, over many seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.exercise import hand_input, hand_ready, hand_report, random_input
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.layers.activation import LeakyReLU, ReLU
from cnntrace.tracer import run

runner = CliRunner()

LIKE = ["samples/reference.json", "samples/rgb-softmax.json", "samples/mlp-mazur.json",
        "samples/conv-given-grad.json"]  # fmt: skip


def decimals(value) -> int:
    text = repr(float(value))
    return 0 if text.endswith(".0") else len(text.partition(".")[2])


def init(*args) -> dict:
    result = runner.invoke(app, ["init", "--hand", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def check_promises(data: dict, allow_ties: bool = False, level: int = 1) -> None:
    """Every promise, checked on the trace itself rather than through hand_report."""
    trace = run(problem_from_dict(data))
    problem = trace.problem
    for name in ["X", *problem.network.params]:
        entries = np.ravel(problem.inputs[name])
        assert max(map(decimals, entries)) <= (0 if level == 1 and name in ("X",) else 1), name
        assert np.all(np.abs(entries) <= 3)
    exact = True
    ties = 0
    for layer in problem.network.layers:
        x = np.asarray(trace[layer.input]) if layer.input != "X" else problem.inputs["X"]
        if isinstance(layer, (ReLU, LeakyReLU)):
            assert np.all(x != 0), f"a ReLU input at 0 in {layer.input}"
            assert np.all(np.abs(x) > 1e-9)
        if layer.type == "maxpool":
            ties += _ties(problem, layer)
            # One window all masked is allowed: there the ReLU mask stops a gradient.
            assert _ties(problem, layer, at_zero=True) <= 1
        exact = exact and layer.type in ("conv", "relu", "leaky_relu", "maxpool", "avgpool", "flatten")
        if exact:
            hundredths = np.asarray(trace[layer.output]) * 100
            assert np.allclose(hundredths, np.round(hundredths), atol=1e-6), layer.output
    if allow_ties:
        assert ties > 0
    else:
        assert ties == 0


def _ties(problem, layer, at_zero: bool = False) -> int:
    """Tied maxima counted window by window with plain loops, from the trace's A1: those not
    at 0, or (``at_zero``) the windows all 0, masked by the ReLU before."""
    values = problem.network.forward_backward(problem.general_X(), problem.general_target, problem.weights)
    a = values[layer.input] if layer.input != "X" else problem.general_X()
    M, C, H, W = a.shape
    ties = 0
    Hp, Wp = values[layer.output].shape[2:]
    for m in range(M):
        for c in range(C):
            for h in range(Hp):
                for w in range(Wp):
                    cells = [a[m, c, i, j] for i, j in layer.window_cells(h, w) if 0 <= i < H and 0 <= j < W]
                    top = max(cells)
                    if (abs(top) < 1e-9) == at_zero:
                        ties += sum(abs(v - top) < 1e-9 for v in cells) > 1
    return ties


@pytest.mark.parametrize("seed", range(40))
def test_reference_hand_keeps_its_promises(seed):
    check_promises(init("--seed", seed))


@pytest.mark.parametrize("seed", range(0, 40, 3))
@pytest.mark.parametrize("size, kernel, filters, batch", [(5, 2, 1, 1), (7, 3, 2, 1), (6, 3, 1, 2), ("8x6", "3x2", 2, 2)])
def test_sizes_keep_the_promises(seed, size, kernel, filters, batch):
    data = init("--seed", seed, "--size", size, "--kernel", kernel, "--filters", filters, "--batch", batch)
    check_promises(data)


@pytest.mark.parametrize("seed", range(15))
def test_level_two_has_one_decimal(seed):
    data = init("--seed", seed, "--level", 2)
    assert max(decimals(v) for v in np.ravel(data["X"])) == 1
    check_promises(data, level=2)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("like", LIKE)
def test_like_keeps_the_promises(like, seed):
    data = init("--like", like, "--seed", seed)
    assert data["layers"] == json.loads(open(like).read()).get("layers", data.get("layers"))
    check_promises(data)


@pytest.mark.parametrize("seed", range(10))
def test_allow_ties_makes_a_tie(seed):
    check_promises(init("--seed", seed, "--allow-ties"), allow_ties=True)


def test_the_same_seed_gives_the_same_file():
    first = runner.invoke(app, ["init", "--hand", "--seed", "5"]).stdout
    assert first == runner.invoke(app, ["init", "--hand", "--seed", "5"]).stdout
    assert first != runner.invoke(app, ["init", "--hand", "--seed", "6"]).stdout
    assert "--hand" in json.loads(first)["comment"]


def test_a_drawn_zero_is_refused():
    """hand_report sees what the search must avoid: a ReLU input set to 0 on purpose."""
    data = hand_input(random_input(seed=1), seed=1)
    report = hand_report(problem_from_dict(data))
    assert hand_ready(report)
    data["W1"] = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
    data["B1"] = 0
    assert not hand_ready(hand_report(problem_from_dict(data)))


def test_count_writes_different_variants_that_sort(tmp_path):
    out = tmp_path / "class"
    result = runner.invoke(app, ["init", "--hand", "--seed", "3", "--count", "12", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"exercise-{i:02d}.json" for i in range(1, 13)]
    contents = [json.loads((out / n).read_text()) for n in names]
    numbers = {json.dumps({k: v for k, v in c.items() if k != "comment"}) for c in contents}
    assert len(numbers) == 12
    for content in contents:
        check_promises(content)
        load_problem(out / names[0])
    again = tmp_path / "again"
    runner.invoke(app, ["init", "--hand", "--seed", "3", "--count", "12", "-o", str(again)])
    assert [p.read_text() for p in sorted(again.iterdir())] == [(out / n).read_text() for n in names]


@pytest.mark.parametrize("args, message", [
    (["--count", "3"], "-o DIR"),
    (["--level", "2"], "--hand"),
    (["--allow-ties"], "--hand"),
])  # fmt: skip
def test_bad_combinations_are_one_line(args, message):
    result = runner.invoke(app, ["init", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_count_into_a_file_is_refused(tmp_path):
    target = tmp_path / "file.json"
    target.write_text("{}")
    result = runner.invoke(app, ["init", "--hand", "--count", "2", "-o", str(target)])
    assert result.exit_code == 2
    assert str(target) in result.stderr and len(result.stderr.strip().splitlines()) == 1


#: A network with a leaky ReLU and an avg-pool after the max-pool's block, written here.
LEAKY = {
    "X": [[1, 2, 0, 1, 2, 1], [0, 1, 3, 1, 0, 2], [2, 0, 1, 2, 1, 0], [1, 1, 0, 1, 2, 3],
          [0, 2, 1, 0, 1, 1], [1, 0, 2, 1, 0, 2]],
    "layers": ["conv", {"type": "leaky_relu", "alpha": 0.1}, {"type": "maxpool", "size": 2}, "flatten",
               "dense", "sigmoid"],
    "loss": "bce", "Y": 1, "W1": [[1, 0, -1], [1, 0, -1], [1, 0, -1]], "B1": 0.5,
    "W2": [[0.1], [0.2], [-0.1], [0.3]], "B2": [0], "lr": 0.1,
}  # fmt: skip


@pytest.mark.parametrize("seed", range(10))
def test_a_leaky_relu_network_keeps_the_promises(tmp_path, seed):
    like = tmp_path / "leaky.json"
    like.write_text(json.dumps(LEAKY))
    data = init("--like", like, "--seed", seed)
    assert data["layers"] == LEAKY["layers"]
    check_promises(data)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(4, 7), kernel=st.integers(2, 3),
       filters=st.integers(1, 2), level=st.sampled_from([1, 2]))  # fmt: skip
def test_any_seed_and_size_keeps_the_promises(seed, size, kernel, filters, level):
    data = hand_input(random_input((size, size), (kernel, kernel), filters, 1, seed), seed, level)
    check_promises(data, level=level)
    assert hand_input(random_input((size, size), (kernel, kernel), filters, 1, seed), seed, level) == data


def test_count_works_without_hand_too(tmp_path):
    result = runner.invoke(app, ["init", "--seed", "1", "--count", "3", "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["exercise-01.json", "exercise-02.json",
                                                                 "exercise-03.json"]  # fmt: skip


def test_an_exercise_too_large_for_the_promises_says_what_is_left(monkeypatch):
    """A search that cannot finish is one line naming --seed and the flaws that remain."""
    import cnntrace.exercise as exercise

    monkeypatch.setattr(exercise, "HAND_ATTEMPTS", 3)
    result = runner.invoke(app, ["init", "--hand", "--size", "16", "--filters", "4", "--batch", "4", "--seed", "0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("cnntrace: --seed: no exercise found")
    assert "the closest has" in result.stderr and "--level 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
