"""Grading by the learner's rounding: a simulated class works the exercises by hand, and
the gradebook of `cnntrace grade`."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.tracer import run
from cnntrace.verify import Tolerance, amplification, decimals_of, tolerance, verify
from tests.classroom import SOFTMAX_TWO_FILTERS, hand_trace, worked_by_hand

runner = CliRunner()
REFERENCE = load_problem("samples/reference.json")
SOFTMAX = problem_from_dict(SOFTMAX_TWO_FILTERS)
CLASS = 40


def _made(mistake_id: str, keys):
    """A learner's mistake: the network's mistake of that id at those stages, made from the
    learner's own values."""
    def given(values, weights, network, problem):
        for m in network.mistakes(values, weights, problem.lr, problem.M):
            if m.id == mistake_id and tuple(m.given) == keys:
                return m.given
        return {}
    return given


@pytest.mark.parametrize("template", [REFERENCE, SOFTMAX], ids=["reference", "softmax-two-filters"])
def test_a_class_that_rounds_every_stage_is_all_right(template):
    for seed in range(CLASS):
        trace, _ = hand_trace(template, seed, level=1 + seed % 2)
        amplified = amplification(trace)
        for decimals in (4, 3):
            answers = worked_by_hand(trace, decimals)
            rule = tolerance("hand", answers=answers)
            assert rule.decimals <= decimals
            verdicts = verify(trace, answers, tolerance=rule, amplified=amplified)
            assert [v.name for v in verdicts if v.status != "right"] == [], (seed, decimals)


def test_the_same_class_making_each_mistake_has_it_named_and_carried_forward():
    named: dict[str, int] = {}
    for seed in range(10):
        trace, _ = hand_trace(REFERENCE, seed, level=1 + seed % 2)
        amplified = amplification(trace)
        problem = trace.problem
        values = {"X": problem.general_X(), **problem.network.resume(
            problem.general_X(), problem.general_target, problem.general_weights(), problem.lr, {})}
        for mistake in problem.network.mistakes(values, problem.general_weights(), problem.lr, problem.M):
            if mistake.convention:
                continue
            made = _made(mistake.id, tuple(mistake.given))
            answers = worked_by_hand(trace, 4, mistake=lambda v, w, made=made, p=problem: made(v, w, p.network, p))
            rule = Tolerance.rounding(4)
            verdicts = {v.name: v for v in verify(trace, answers, tolerance=rule, amplified=amplified)}
            at = [name for name in mistake.given if name in verdicts]
            if all(verdicts[name].status == "right" for name in at):
                continue  # the mistake changes nothing here (a mask over positive inputs only)
            first = next(name for name in at if verdicts[name].status == "wrong")
            assert mistake.id in [d.id for d in verdicts[first].diagnosis], (seed, mistake.id, first)
            later = [v for v in verdicts.values()
                     if v.status == "wrong" and problem.stages and v.name not in mistake.given]
            assert all(v.carried_forward for v in later), (seed, mistake.id, [v.name for v in later])
            named[mistake.id] = named.get(mistake.id, 0) + 1
    for expected in ("kernel_flipped", "pool_spread", "pool_copy_all", "avgpool_for_max", "update_sign", "relu_mask_missing",
                     "sigmoid_derivative_twice"):
        assert named.get(expected, 0) >= 10, (expected, named)


def test_a_sum_of_products_from_rounded_inputs_is_right_and_a_wrong_one_is_not():
    trace, _ = hand_trace(REFERENCE, 3)
    answers = worked_by_hand(trace, 4)
    rule = Tolerance.rounding(4)
    verdicts = {v.name: v for v in verify(trace, answers, tolerance=rule)}
    assert verdicts["dL_dW1"].status == "right"
    off = np.asarray(answers["dL_dW1"])
    off[0, 0] += 0.01 + 0.05 * abs(off[0, 0])  # the right sign and size, off beyond rounding
    wrong = {v.name: v for v in verify(trace, {**answers, "dL_dW1": off.tolist()}, tolerance=rule)}
    assert wrong["dL_dW1"].status == "wrong"


def test_fewer_decimals_than_asked_is_named_precision():
    trace, _ = hand_trace(REFERENCE, 5)
    answers = worked_by_hand(trace, 4)
    short = {**answers, "dL_dW2": np.round(np.asarray(trace["dL_dW2"]), 2).tolist()}
    assert decimals_of(short) == 4
    verdict = {v.name: v for v in verify(trace, short, tolerance=tolerance("hand", answers=short))}["dL_dW2"]
    if verdict.status == "wrong":
        assert [d.id for d in verdict.diagnosis] == ["precision"]
    forced = {v.name: v for v in verify(trace, short, tolerance=Tolerance.rounding(6))}["dL_dW2"]
    assert forced.status == "wrong" and [d.id for d in forced.diagnosis] == ["precision"]


def test_a_sign_flip_of_small_gradients_never_passes_a_machine_preset():
    trace = run(REFERENCE)
    small = np.asarray(trace["dL_dX"]) * 1e-4  # scaled down, as in a deep network
    for preset in ("float64", "float32"):
        rule = tolerance(preset)
        bound = rule.bound(small)
        assert not np.all(np.abs(-small - small) <= bound)
        assert np.all(np.abs(small * (1 + 1e-8) - small) <= bound)


def _class(tmp_path, count=3):
    exercises = tmp_path / "class"
    result = runner.invoke(app, ["init", "--hand", "--seed", "1", "--count", str(count), "-o", str(exercises)])
    assert result.exit_code == 0, result.output
    answers = tmp_path / "answers"
    answers.mkdir()
    first = run(load_problem(exercises / "exercise-01.json"))
    (answers / "exercise-01.json").write_text(json.dumps(worked_by_hand(first, 4)))
    second = run(load_problem(exercises / "exercise-02.json"))
    flipped = worked_by_hand(second, 4)
    flipped["dL_dW1"] = np.flip(np.asarray(flipped["dL_dW1"])).tolist()
    (answers / "02-bob.json").write_text(json.dumps(flipped))
    (answers / "03-carol.json").write_text('{"P1": [[1, 2],')
    return exercises, answers


def test_the_gradebook_has_a_row_for_every_learner(tmp_path):
    exercises, answers = _class(tmp_path, count=4)
    feedback = tmp_path / "notes"
    result = runner.invoke(app, ["grade", str(exercises), str(answers), "--feedback", str(feedback)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["id", "exercise", "score", "total"] and header[-2:] == ["diagnoses", "reason"]
    rows = {line.split(",")[0]: line for line in lines[1:]}
    assert set(rows) == {"exercise-01", "02-bob", "03-carol", "exercise-04"}
    assert rows["exercise-01"].split(",")[2:4] == ["24", "24"]
    assert rows["02-bob"].split(",")[2:4] == ["23", "24"] and "dL_dW1:kernel_flipped" in rows["02-bob"]
    assert "not valid JSON" in rows["03-carol"] and rows["03-carol"].split(",")[2:4] == ["0", "24"]
    assert rows["exercise-04"].endswith("no answer file")
    assert "50% (1 of 2) in dL/dW1: kernel_flipped" in result.stderr
    assert sorted(p.name for p in feedback.iterdir()) == ["02-bob.txt", "exercise-01.txt"]
    assert "kernel_flipped" in (feedback / "02-bob.txt").read_text()


def test_marks_roster_and_json(tmp_path):
    exercises, answers = _class(tmp_path)
    marks = tmp_path / "marks.json"
    marks.write_text(json.dumps({"P1": 2, "dL/dW1": 4}))
    roster = answers / "roster.csv"
    roster.write_text("id,exercise,answers\nann,exercise-01.json,exercise-01.json\n"
                      "bob,exercise-02.json,02-bob.json\ncid,exercise-03.json,\n")
    result = runner.invoke(app, ["grade", str(exercises), "--roster", str(roster), "--marks", str(marks), "-f", "json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)["rows"]}
    assert (rows["ann"]["score"], rows["ann"]["total"]) == (6, 6)
    assert (rows["bob"]["score"], rows["bob"]["total"]) == (2, 6)
    assert set(rows["bob"]["status"]) == {"P1", "dL_dW1"}
    assert rows["cid"]["reason"] == "no answer file"


@pytest.mark.parametrize("marks, key", [('{"P1": -1}', "P1"), ('{"Q9": 1}', "Q9"), ("[1]", None)])
def test_bad_marks_give_one_line_and_exit_2(tmp_path, marks, key):
    exercises, answers = _class(tmp_path)
    path = tmp_path / "marks.json"
    path.write_text(marks)
    result = runner.invoke(app, ["grade", str(exercises), str(answers), "--marks", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    if key:
        assert key in result.stderr


def test_a_pass_too_large_to_work_by_hand_holds_each_answer_to_its_own_rounding(monkeypatch):
    import cnntrace.verify as verify_module

    trace = run(REFERENCE)
    assert amplification(trace)["dL_dW1"].max() > 1
    monkeypatch.setattr(verify_module, "MAX_AMPLIFIED", 10)
    assert amplification(trace) == {}
    answers = {"P1": np.round(np.asarray(trace["P1"]), 4).tolist()}
    assert verify(trace, answers, tolerance=Tolerance.rounding(4))[0].status == "right"
