"""cnntrace quiz: sessions driven through stdin, the record, the diagnosis seam, and one
run under a real pseudo-terminal."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.explain import explain_entry
from cnntrace.io import load_problem
from cnntrace.quiz import diagnose, parse_answer, run_quiz
from cnntrace.render.explanation import render_text
from cnntrace.tracer import run

runner = CliRunner()
HAND = Path(__file__).parent / "golden" / "hand-12.json"
TRACE = run(load_problem(HAND))


def typed(name: str) -> str:
    """The right answer to ``name``, as numbers in row-major order."""
    return " ".join(repr(float(v)) for v in np.ravel(TRACE[name]))


def quiz(lines: list[str], *args, input_end: str = "\n"):
    text = "\n".join(lines) + (input_end if lines else "")
    return runner.invoke(app, ["quiz", str(HAND), *map(str, args)], input=text)


def test_all_right_scores_full_marks(tmp_path):
    names = [stage.name for stage in TRACE.stages]
    record = tmp_path / "me.json"
    result = quiz([typed(name) for name in names], "--record", record)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"score {len(names)}/{len(names)}\n"  # data on stdout, talk on stderr
    assert result.stderr.count("  right") == len(names)
    saved = json.loads(record.read_text())
    assert saved["score"] == saved["total"] == len(names)
    assert saved["file"] == str(HAND)
    assert [a["name"] for a in saved["answers"]] == names
    assert all(a["status"] == "right" and a["diagnosis"] == [] for a in saved["answers"])
    np.testing.assert_allclose(saved["answers"][0]["answer"], TRACE["Z1"])


def test_json_commas_and_a_json_value_over_several_lines():
    z1 = np.asarray(TRACE["Z1"])
    lines = [json.dumps(z1.tolist())[:-1], "]", ", ".join(map(str, np.ravel(TRACE["A1"])))]
    result = quiz(lines, "--only", "Z1,A1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "score 2/2\n"


def test_a_wrong_answer_shows_the_wrong_entries_but_not_their_values():
    z1 = np.array(TRACE["Z1"], dtype=float)
    z1[0, 1] += 1
    result = quiz([" ".join(repr(float(v)) for v in z1.ravel()), typed("Z1")], "--only", "Z1")
    assert result.exit_code == 0
    assert "wrong: 1 of 16 entries (Z1[0,1] = " in result.stderr
    assert "right on try 2" in result.stderr
    correct = f"{TRACE['Z1'][0, 1]:.4f}"
    assert correct not in result.stderr.split("right on try 2")[0].split("wrong:")[1]


def test_after_the_last_try_the_answer_is_shown_and_the_quiz_goes_on(tmp_path):
    record = tmp_path / "r.json"
    result = quiz(["1 2 3 4", "0 0 0 0", typed("P1")], "--only", "P1,F", "--tries", 2, "--record", record)
    assert result.exit_code == 1
    assert "the answer: P1 =" in result.stderr
    assert result.stdout == "score 1/2\n"
    answers = json.loads(record.read_text())["answers"]
    assert [(a["name"], a["status"]) for a in answers] == [("P1", "wrong"), ("F", "right")]
    assert answers[0]["answer"] == [[0.0, 0.0], [0.0, 0.0]]


def test_a_hint_is_the_arithmetic_of_the_first_wrong_entry():
    z1 = np.array(TRACE["Z1"], dtype=float)
    z1[1, 2] = 99
    z1[3, 0] = 99
    result = quiz([" ".join(repr(float(v)) for v in z1.ravel()), "?", "?"], "--only", "Z1")
    first, second = result.stderr.split("Z1> ")[2:4]
    expected = render_text(explain_entry(TRACE, "Z1", (1, 2))).strip().splitlines()
    assert "look again at Z1[1,2], Z1[3,0]" in first and expected[2].strip() not in first  # no terms yet
    for line in expected[:-1]:
        assert line.strip() in second
    assert expected[-1] not in second  # the value is not given away


def test_a_hint_before_any_answer_explains_the_first_entry():
    result = quiz(["?", "?"], "--only", "Z1")
    lines = render_text(explain_entry(TRACE, "Z1", (0, 0))).strip().splitlines()
    assert "start with Z1[0,0]" in result.stderr and lines[1].strip() in result.stderr
    assert lines[-1] not in result.stderr.split("the answer")[0]


def test_givens_the_record_of_every_try_and_the_recap(tmp_path):
    record = tmp_path / "r.json"
    p1 = np.asarray(TRACE["P1"])
    result = quiz(["givens", "?", " ".join(map(str, (-p1).ravel())), typed("P1")], "--only", "P1",
                  "--record", record, "--show-givens")  # fmt: skip
    assert result.stderr.count("Given:") == 2 and "W1 =" in result.stderr
    saved = json.loads(record.read_text())
    answer = saved["answers"][0]
    assert (answer["status"], answer["tries"], answer["hints"]) == ("right", 2, 1)
    assert [(h["status"], h["hints"]) for h in answer["history"]] == [("wrong", 1), ("right", 0)]
    assert [d["id"] for d in answer["history"][0]["diagnosis"]] == ["sign"]
    assert saved["recap"] == ["P1: right on try 2, 1 hint", "mistake sign in P1"]
    assert "Recap:" in result.stderr and "mistake sign in P1" in result.stderr


def test_what_is_not_numbers_is_said_and_costs_no_try():
    result = quiz(["abc", "[1, 2", "]x", typed("B2")], "--only", "B2", "--tries", 1)
    assert result.exit_code == 0, result.stderr
    assert "not a number: 'abc'" in result.stderr
    assert "not a JSON value" in result.stderr


@pytest.mark.parametrize("lines", [[], ["1 2"], [typed("Z1")]])
def test_a_closed_stdin_ends_it_and_records_what_it_has(tmp_path, lines):
    record = tmp_path / "r.json"
    result = quiz(lines, "--record", record, input_end="")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    saved = json.loads(record.read_text())
    assert saved["total"] == len(TRACE.stages)
    assert len(saved["answers"]) == len(lines)
    assert saved["score"] == (1 if lines and lines[0] == typed("Z1") else 0)


def test_skip_and_quit():
    result = quiz(["skip", "quit"], "--only", "Z1,A1")
    assert "the answer: Z1 =" in result.stderr
    assert result.stdout == "score 0/2\n"


def test_bad_options_are_one_line():
    result = runner.invoke(app, ["quiz", str(HAND), "--only", "Nope1"])
    assert result.exit_code == 2 and "--only" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(app, ["quiz", "missing.json"])
    assert result.exit_code == 2 and "missing.json" in result.stderr


def test_parse_answer():
    assert parse_answer("1, 2 3;4", (2, 2)).tolist() == [[1, 2], [3, 4]]
    assert parse_answer("[[1,2],[3,4]]", (2, 2)).shape == (2, 2)
    assert parse_answer("1 2 3", (2, 2)).shape == (3,)  # judged as the wrong shape
    assert "not a number" in parse_answer("1 two", (2,))
    assert "NaN" in parse_answer("nan 1", (2,))


# -- the diagnosis seam ---------------------------------------------------------------------


def test_a_wrong_sign_is_diagnosed_shown_and_recorded(tmp_path):
    record = tmp_path / "r.json"
    negated = " ".join(repr(-float(v)) for v in np.ravel(TRACE["Z1"]))
    result = quiz([negated], "--only", "Z1", "--tries", 1, "--record", record)
    assert "[sign]" in result.stderr
    assert [d["id"] for d in json.loads(record.read_text())["answers"][0]["diagnosis"]] == ["sign"]
    assert diagnose(TRACE, "Z1", -np.asarray(TRACE["Z1"]))[0]["id"] == "sign"


def test_an_answer_that_follows_from_an_earlier_wrong_one_is_carried_forward(tmp_path):
    """P1 wrong (doubled), then F flattened from that wrong P1: F's error is carried forward."""
    record = tmp_path / "r.json"
    wrong_P1 = 2 * np.asarray(TRACE["P1"])
    answers = [" ".join(map(repr, wrong_P1.ravel().tolist())), " ".join(map(repr, wrong_P1.ravel().tolist()))]
    quiz(answers, "--only", "P1,F", "--tries", 1, "--record", record)
    saved = json.loads(record.read_text())["answers"]
    assert saved[0]["status"] == "wrong" and saved[1]["status"] == "wrong"
    assert [d["id"] for d in saved[1]["diagnosis"]] == ["carried_forward"]


def test_run_quiz_talks_only_through_its_functions():
    lines = iter([typed("Z1")])
    said = []
    session = run_quiz(TRACE, ["Z1"], lambda prompt: next(lines, None), said.append)
    assert session.score == 1 and any("right" in text for text in said)


# -- a real terminal ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("cnntrace") is None, reason="cnntrace is not installed as a command")
def test_under_a_pseudo_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect", reason="pexpect is not installed (pip install pexpect)")
    record = tmp_path / "r.json"
    child = pexpect.spawn(
        sys.executable, ["-m", "cnntrace", "quiz", str(HAND), "--only", "P1,F", "--record", str(record)],
        encoding="utf-8", timeout=30, dimensions=(40, 120),
    )  # fmt: skip
    child.expect(r"P1 = MaxPool\(A1\)")
    child.expect(r"P1> ")
    child.sendline("1 2 3 4")
    child.expect("wrong: ")
    child.expect("P1> ")
    child.sendline("?")
    child.expect("P1\\[0,0\\] = ")
    child.expect("P1> ")
    child.sendline(typed("P1"))
    child.expect("right on try 2")
    child.expect("F> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "score 1/2" in child.before
    saved = json.loads(record.read_text())
    assert [a["status"] for a in saved["answers"]] == ["right"]
