"""A class's answers graded against their exercises: one gradebook row per learner.

Who answered which exercise comes from the names of the files (``match``: the answers to
exercise-07.json are exercise-07.json or 07-*.json in the answers' directory) or from a
roster (``read_roster``: a CSV of id,exercise,answers). Each learner's answers are judged as
``verify`` judges them; a learner with no answer file, or one that cannot be read, still has
a row that says why. ``marks`` weighs each matrix (every matrix of the pass counts 1 by
default), and the total is what the exercise asks, whatever the learner answered.

    rows = grade(match(exercises, answers_dir), tolerance_of)
    for line in class_summary(rows): ...      # "31% (12 of 39) in dL/dW1: kernel_flipped"
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from cnntrace.errors import CnntraceError, InputError
from cnntrace.explain import parse_term
from cnntrace.io import load_problem, read_answers, read_json
from cnntrace.text import symbol
from cnntrace.tracer import run
from cnntrace.verify import amplification, verify

#: Each matrix's status in the gradebook.
RIGHT, ROUNDED, WRONG, CARRIED, UNANSWERED, NOT_JUDGED, MISSING = (
    "right", "right_rounded", "wrong", "carried_forward", "unanswered", "not_judged", "missing")  # fmt: skip


@dataclass(frozen=True)
class Submission:
    """One learner's answers to one exercise; ``answers`` None when there is no file."""

    id: str
    exercise: Path
    answers: Path | None


@dataclass
class Row:
    """One line of the gradebook. ``reason`` says why there is no grade (no file, broken
    JSON); ``status`` maps each matrix asked to its status; ``diagnoses`` lists
    (matrix, diagnosis id) in the pass's order; ``verdicts`` are verify's, for feedback."""

    id: str
    exercise: str
    answers: str | None
    score: float = 0.0
    total: float = 0.0
    status: dict[str, str] = field(default_factory=dict)
    diagnoses: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None
    verdicts: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def _number(path: Path) -> str | None:
    """The exercise's number as its name writes it: exercise-07.json -> "07"."""
    digits = re.findall(r"\d+", path.stem)
    return digits[-1] if digits else None


def match(exercises: list[Path], answers_dir: Path) -> list[Submission]:
    """Each exercise's answer files in ``answers_dir``: the same name, or NN-*.json where NN is
    the exercise's number (several learners may share an exercise). An exercise with none
    gets one submission without answers; the id is the answer file's stem."""
    found = sorted(answers_dir.iterdir()) if answers_dir.is_dir() else []
    out = []
    for exercise in exercises:
        number = _number(exercise)
        mine = [
            f for f in found
            if f.name == exercise.name
            or (number is not None and f.suffix in (".json", ".npz") and re.match(rf"0*{int(number)}-", f.name))
        ]  # fmt: skip
        if not mine:
            out.append(Submission(exercise.stem, exercise, None))
        out += [Submission(f.stem, exercise, f) for f in mine]
    return out


def read_roster(path: Path, exercises_dir: Path) -> list[Submission]:
    """A roster CSV with the columns id, exercise, answers (a header row first). The exercise
    is found in ``exercises_dir``, the answers beside the roster (or where a full path says);
    an empty answers cell is a learner with no answers. InputError naming the file and row."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot be read ({getattr(error, 'strerror', None) or error})", file=str(path)) from None
    rows = list(csv.DictReader(text.splitlines()))
    out = []
    for line, row in enumerate(rows, start=2):
        missing = [c for c in ("id", "exercise", "answers") if row.get(c) is None]
        if missing:
            raise InputError(f"needs the columns id, exercise, answers; line {line} has no {missing[0]}",
                             key=missing[0], file=str(path))  # fmt: skip
        if not row["id"].strip() or not row["exercise"].strip():
            raise InputError(f"line {line}: an empty id or exercise", key="id", file=str(path))
        answers = row["answers"].strip()
        out.append(Submission(row["id"].strip(), exercises_dir / row["exercise"].strip(),
                              (path.parent / answers) if answers else None))  # fmt: skip
    return out


def read_marks(path: Path) -> dict[str, float]:
    """{matrix: weight} from a JSON object; InputError naming the file and the key."""
    import math


    data = read_json(path)
    marks = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise InputError(f"a mark is a number ≥ 0, got {value!r}", key=key, file=str(path))
        marks[key.replace("/", "_")] = float(value)
    if not marks:
        raise InputError("holds no marks; e.g. {\"P1\": 2, \"dL_dW1\": 4}", file=str(path))
    return marks


def _status(verdict) -> str:
    if verdict.status == "right":
        return ROUNDED if verdict.from_your_answers else RIGHT
    if verdict.status == "wrong":
        return CARRIED if verdict.carried_forward else WRONG
    if verdict.status == "unanswered":
        return UNANSWERED
    return NOT_JUDGED


def grade(submissions: list[Submission], tolerance_of, marks: dict[str, float] | None = None) -> list[Row]:
    """A row for every submission, in order. ``tolerance_of(answers)`` gives the Tolerance
    for one learner's answers (their decimals); ``marks`` the weight of each matrix."""

    traces: dict[Path, object] = {}
    amplified: dict[Path, dict] = {}
    rows = []
    for submission in submissions:
        row = Row(submission.id, str(submission.exercise), None if submission.answers is None else str(submission.answers))
        rows.append(row)
        if submission.exercise not in traces:
            traces[submission.exercise] = run(load_problem(submission.exercise))  # a bad exercise stops it all
        trace = traces[submission.exercise]
        asked = [s.name for s in trace.stages if marks is None or s.name in marks]
        unknown = [name for name in marks or {} if name not in trace]
        if unknown:
            raise InputError(f"no matrix is called {unknown[0]} in {submission.exercise}", key=unknown[0])
        weight = {name: (marks or {}).get(name, 1.0) for name in asked}
        row.total = sum(weight.values())
        row.status = {name: UNANSWERED for name in asked}
        if submission.answers is None:
            row.reason, row.status = "no answer file", dict.fromkeys(asked, MISSING)
            continue
        try:
            answers = read_answers(submission.answers)
            tolerance = tolerance_of(answers)
            if tolerance.mode == "rounding" and submission.exercise not in amplified:
                amplified[submission.exercise] = amplification(trace)
            row.verdicts = verify(trace, answers, tolerance=tolerance, amplified=amplified.get(submission.exercise))
            row.settings = {**tolerance.settings(), "rule": tolerance.text()}
        except CnntraceError as error:
            row.reason = str(error.in_file(str(submission.answers)) if error.file is None else error)
            row.status = dict.fromkeys(asked, MISSING)
            continue
        _score(row, weight)
    return rows


def _score(row: Row, weight: dict[str, float]) -> None:
    """Fill the row's status, score and diagnoses from its verdicts. A matrix answered entry
    by entry ("Z1[0,1]") is right when every entry answered is right."""

    per_matrix: dict[str, list] = {}
    for v in row.verdicts:
        name = parse_term(v.name)[0] if "[" in v.name else v.name.replace("∂", "d").replace("/", "_")
        per_matrix.setdefault(name, []).append(v)
    for name, verdicts in per_matrix.items():
        if name not in row.status:
            continue
        statuses = [_status(v) for v in verdicts]
        for bad in (NOT_JUDGED, WRONG, CARRIED, UNANSWERED, ROUNDED, RIGHT):
            if bad in statuses:
                row.status[name] = bad
                break
        if row.status[name] in (RIGHT, ROUNDED):
            row.score += weight[name]
        for v in verdicts:
            row.diagnoses += [(name, d.id) for d in v.diagnosis if (name, d.id) not in row.diagnoses]


def class_summary(rows: list[Row]) -> list[str]:
    """How many learners made each mistake, most often first: "31% (12 of 39) in dL/dW1:
    kernel_flipped"; then how many had no answers or answers that could not be read."""
    graded = [row for row in rows if row.reason is None]
    counts: dict[tuple[str, str], int] = {}
    for row in graded:
        for key in set(row.diagnoses):
            counts[key] = counts.get(key, 0) + 1
    lines = []
    for (name, id_), n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"{round(100 * n / len(graded))}% ({n} of {len(graded)}) in {symbol(name)}: {id_}")
    missing = sum(row.reason == "no answer file" for row in rows)
    broken = len(rows) - len(graded) - missing
    if missing:
        lines.append(f"{missing} without an answer file")
    if broken:
        lines.append(f"{broken} with answers that could not be read")
    return lines
