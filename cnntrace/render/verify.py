"""Verdicts on hand-computed answers as a table or a JSON object."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnntrace.errors import one_line
from cnntrace.render.format import number
from cnntrace.verify import passed
from cnntrace.verify import summary as counted

#: How many wrong entries of one matrix the table lists before it summarises the rest.
SHOWN_WRONG = 12


def as_dict(verdicts, file: str, answers: str, settings: dict) -> dict:
    """settings: rtol, atol and the input's conventions that differ from the default."""
    return {
        "file": file,
        "answers": answers,
        "ok": passed(verdicts),
        **settings,
        "summary": counted(verdicts),
        "results": {
            v.name: {
                "status": v.status, "entries": v.entries, "from_your_answers": v.from_your_answers,
                "wrong": [
                    {"index": list(w.index), "answer": w.answer, "correct": w.correct}
                    for w in v.wrong
                ],
                "message": v.message,
                "diagnosis": [{"id": d.id, "message": d.message} for d in v.diagnosis],
                "max_abs_error": v.max_abs_error, "max_rel_error": v.max_rel_error,
                "worst": None if v.worst is None else list(v.worst),
            }  # fmt: skip
            for v in verdicts
        },
    }


def render_json(verdicts, file: str, answers: str, settings: dict) -> str:
    return json.dumps(as_dict(verdicts, file, answers, settings), allow_nan=False) + "\n"


def _index(index) -> str:
    return "[" + ",".join(map(str, index)) + "]" if index else ""


def _error_text(v) -> str:
    """"max |error| 0.0312 (rel 0.0021) at [0,1]" for the engineers."""
    if v.max_abs_error is None and v.max_rel_error is None:
        return ""
    absolute = "∞" if v.max_abs_error is None else f"{v.max_abs_error:.3g}"
    relative = "∞" if v.max_rel_error is None else f"{v.max_rel_error:.3g}"
    where = f" at {_index(v.worst)}" if v.worst and v.entries > 1 else ""
    return f" (max |error| {absolute}, rel {relative}{where})"


def render_table(verdicts, file: str, answers: str, settings: dict, precision: int = 6) -> RenderableType:
    heading = Text(f"Answers in {one_line(answers)} checked against {one_line(file)}", style="bold")  # as text
    table = Table()
    for column in ("name", "entry", "answer", "correct", "result"):
        table.add_column(column, justify="left" if column in ("name", "result") else "right")
    for v in verdicts:
        if v.status == "right":
            summary = "✓ right" if v.entries == 1 else f"✓ all {v.entries} right"
            if v.from_your_answers:
                summary += " from your rounded answers"
            if v.max_abs_error:
                summary += _error_text(v)
            table.add_row(v.name, "", "", "", Text(summary, style="green"))
        elif v.status == "unanswered":
            table.add_row(v.name, "", "", "", Text("– not answered", style="yellow"))
        elif v.status == "wrong" and v.entries == 1:
            w = v.wrong[0]
            table.add_row(
                v.name, _index(w.index), number(w.answer, precision),
                number(w.correct, precision), Text("✗ wrong", style="bold red"),
            )  # fmt: skip
        elif v.status == "wrong":
            for w in v.wrong[:SHOWN_WRONG]:
                table.add_row(
                    v.name, _index(w.index), number(w.answer, precision),
                    number(w.correct, precision), Text("✗ wrong", style="bold red"),
                )  # fmt: skip
            more = len(v.wrong) - SHOWN_WRONG
            summary = f"✗ {len(v.wrong)} of {v.entries} wrong" + (f" ({more} more not shown)" if more > 0 else "")
            table.add_row(v.name, "", "", "", Text(summary + _error_text(v), style="bold red"))
        else:
            table.add_row(v.name, "", "", "", Text(f"✗ {v.message}", style="bold red"))
    rule = settings.get("rule") or (
        f"An entry is right when |answer − correct| ≤ {settings['atol']:g} + {settings['rtol']:g}·|correct|.")
    tolerance = Text(rule, style="dim")
    counts = counted(verdicts)
    text = f"{counts['right']} of {len(verdicts)} answers right."
    if counts["carried_forward"]:
        text += f" {counts['carried_forward']} wrong only by an error carried forward."
    if counts["unanswered"]:
        text += f" {counts['unanswered']} not answered (not counted wrong)."
    parts = [heading]
    conventions = settings.get("conventions")
    if conventions:
        switches = ", ".join(f"{switch} {value}" for switch, value in conventions.items())
        parts.append(Text(f"Conventions that differ from the default: {switches}.", style="bold yellow"))
    diagnoses = [
        Text(f"{v.name}: {d.message} [{d.id}]", style="yellow" if d.id == "carried_forward" else "magenta")
        for v in verdicts for d in v.diagnosis
    ]  # fmt: skip
    if diagnoses:
        diagnoses.insert(0, Text("Diagnosis", style="bold"))
    return Group(*parts, table, *diagnoses, tolerance, Text(text, style="bold"))
