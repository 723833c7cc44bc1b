"""Verdicts on hand-computed answers as a table or a JSON object."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnntrace.render.format import number

#: How many wrong entries of one matrix the table lists before it summarises the rest.
SHOWN_WRONG = 12


def as_dict(verdicts, file: str, answers: str, settings: dict) -> dict:
    return {
        "file": file,
        "answers": answers,
        "ok": all(v.ok for v in verdicts),
        **settings,
        "results": {
            v.name: {
                "status": v.status, "entries": v.entries,
                "wrong": [
                    {"index": list(w.index), "answer": w.answer, "correct": w.correct}
                    for w in v.wrong
                ],
                "message": v.message,
            }  # fmt: skip
            for v in verdicts
        },
    }


def render_json(verdicts, file: str, answers: str, settings: dict) -> str:
    return json.dumps(as_dict(verdicts, file, answers, settings), allow_nan=False) + "\n"


def _index(index) -> str:
    return "[" + ",".join(map(str, index)) + "]" if index else ""


def render_table(verdicts, file: str, answers: str, settings: dict, precision: int = 6) -> RenderableType:
    heading = Text(f"Answers in {answers} checked against {file}", style="bold")
    table = Table()
    for column in ("name", "entry", "answer", "correct", "result"):
        table.add_column(column, justify="left" if column in ("name", "result") else "right")
    for v in verdicts:
        if v.status == "right":
            summary = "✓ right" if v.entries == 1 else f"✓ all {v.entries} right"
            table.add_row(v.name, "", "", "", Text(summary, style="green"))
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
            table.add_row(v.name, "", "", "", Text(summary, style="bold red"))
        else:
            table.add_row(v.name, "", "", "", Text(f"✗ {v.message}", style="bold red"))
    tolerance = Text(
        f"An entry is right when |answer − correct| ≤ {settings['atol']:g} + "
        f"{settings['rtol']:g}·|correct|.",
        style="dim",
    )
    right = sum(v.ok for v in verdicts)
    verdict = Text(f"{right} of {len(verdicts)} answers right.", style="bold")
    return Group(heading, table, tolerance, verdict)
