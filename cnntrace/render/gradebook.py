"""The gradebook (cnntrace.grade's rows) as CSV or a JSON object."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cnntrace.errors import one_line


def columns(rows) -> list[str]:
    """The matrices of the gradebook's status columns, in the order of the first row's pass."""
    names: list[str] = []
    for row in rows:
        names += [name for name in row.status if name not in names]
    return names


def gradebook_csv(rows) -> str:
    """The gradebook as CSV: id, exercise, score, total, a status column per matrix,
    diagnoses ("dL_dW1:kernel_flipped;…") and the reason where there is no grade."""
    import io

    names = columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "exercise", "score", "total", *names, "diagnoses", "reason"])
    for row in rows:
        # A file's name is the learner's: its unprintable characters written as escapes, so
        # that the gradebook on a terminal cannot drive it (JSON escapes them by itself).
        writer.writerow([
            one_line(row.id), one_line(Path(row.exercise).name), f"{row.score:g}", f"{row.total:g}",
            *(row.status.get(name, "") for name in names),
            ";".join(f"{name}:{id_}" for name, id_ in row.diagnoses), one_line(row.reason or ""),
        ])  # fmt: skip
    return buffer.getvalue()


def render_csv(rows, summary) -> str:
    return gradebook_csv(rows)


def render_json(rows, summary) -> str:
    return json.dumps(gradebook_json(rows, summary), indent=2, ensure_ascii=False) + "\n"


def gradebook_json(rows, summary: list[str]) -> dict:
    return {
        "rows": [
            {"id": row.id, "exercise": row.exercise, "answers": row.answers, "score": row.score,
             "total": row.total, "status": row.status,
             "diagnoses": [{"matrix": name, "id": id_} for name, id_ in row.diagnoses], "reason": row.reason}
            for row in rows
        ],
        "summary": summary,
    }  # fmt: skip
