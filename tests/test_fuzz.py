"""The command line on inputs that once made it fail (tests/corpus/).

Every outcome must be either a correct result or a clean error: exit status 2, nothing on
stdout and one short line on stderr, ``cnntrace: FILE: …``, naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from tests.inputs import REFERENCE

runner = CliRunner()

#: The longest message expected on stderr, not counting the file's name in it.
MAX_MESSAGE = 300
CORPUS = Path(__file__).resolve().parent / "corpus"


# -- the outcomes allowed ----------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of cnntrace did, in process (CliRunner) or as a real process."""

    status: int
    stdout: str
    stderr: str


def invoke(*args) -> Outcome:
    result = runner.invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the test fails with it
    return Outcome(result.exit_code, result.stdout, result.stderr)


def assert_clean_error(outcome: Outcome, file=None, status: int = 2) -> None:
    """Exit ``status``, nothing on stdout, one short line on stderr naming ``file``."""
    assert outcome.status == status, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and outcome.stderr.endswith("\n"), outcome.stderr
    assert lines[0].startswith("cnntrace: "), outcome.stderr
    named = "" if file is None else str(file)
    assert named in lines[0], outcome.stderr
    assert len(lines[0]) <= MAX_MESSAGE + len(named), outcome.stderr


def assert_usage_error(outcome: Outcome) -> None:
    """Exit 2 for a bad argument: typer's usage text or cnntrace's own line, nothing on stdout."""
    assert outcome.status == 2, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr
    if outcome.stderr.startswith("cnntrace: "):
        assert_clean_error(outcome)
    else:
        assert outcome.stderr.startswith("Usage: ") and "Error: " in outcome.stderr, outcome.stderr


# -- the corpus of inputs that once failed ---------------------------------------------


def corpus_cases() -> list:
    """(file, case) for every case of tests/corpus/cases.json."""
    cases = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
    return [pytest.param(CORPUS / name, case, id=name) for name, case in sorted(cases.items())]


@pytest.mark.filterwarnings("error")  # a warning would be a second line on stderr
@pytest.mark.parametrize("file, case", corpus_cases())
def test_corpus(tmp_path, file, case):
    """Each input that once failed now gives its expected outcome, cleanly."""
    text = file.read_text(encoding="utf-8", errors="replace").removesuffix("\n")
    places = {"{file}": str(file), "{text}": text, "{reference}": str(REFERENCE), "{tmp}": str(tmp_path)}
    args = [places.get(arg, arg) for arg in case["args"]]
    outcome = invoke(*args)
    assert outcome.status == case["exit"], outcome
    assert case.get("stderr", "") in outcome.stderr, outcome
    if outcome.status == 2 and case.get("usage"):
        assert_usage_error(outcome)
    elif outcome.status == 2:
        assert_clean_error(outcome, places.get(case.get("names"), case.get("names")))
