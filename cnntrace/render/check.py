"""The gradient check as a table or a JSON object."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnntrace.errors import one_line


def as_dict(results, file: str, settings: dict) -> dict:
    return {
        "file": file,
        "ok": all(r.ok for r in results),
        **settings,
        "tensors": {
            r.name: {
                "gradient": f"dL_d{r.name}", "entries": r.entries, "checked": r.checked,
                "max_abs_error": r.max_abs_error, "max_rel_error": r.max_rel_error,
                "worst_index": list(r.worst_index), "kinks": r.kinks, "compared": r.compared,
                "failures": r.failures,
                "ok": r.ok,
            }  # fmt: skip
            for r in results
        },
    }


def render_json(results, file: str, settings: dict) -> str:
    return json.dumps(as_dict(results, file, settings), allow_nan=False) + "\n"


def render_table(results, file: str, settings: dict) -> RenderableType:
    heading = Text(f"Gradient check of {one_line(file)}", style="bold")  # a name's escapes as text
    table = Table()
    for column in ("gradient", "entries", "max abs error", "max rel error", "worst at", "at kinks", "result"):
        table.add_column(column, justify="left" if column == "gradient" else "right")
    for r in results:
        checked = f"{r.checked}" if r.checked == r.entries else f"{r.checked} of {r.entries}"
        table.add_row(
            f"dL/d{r.name}", checked, f"{r.max_abs_error:.1e}", f"{r.max_rel_error:.1e}",
            ",".join(map(str, r.worst_index)) or "-", str(r.kinks),
            Text("ok", style="green") if r.ok else Text(f"FAIL ({r.failures})", style="bold red"),
        )  # fmt: skip
    notes = [
        Text(
            f"Central differences with eps = {settings['eps']:g}; an entry passes when "
            f"|analytic − numeric| ≤ {settings['atol']:g} + {settings['rtol']:g}·max(|analytic|, |numeric|).",
            style="dim",
        )
    ]
    if any(r.kinks for r in results):
        notes.append(
            Text(
                "Kinks: entries within eps of a point where the loss is not differentiable (a Z1 "
                "entry at 0 or a tied pool window); finite differences cannot check them.",
                style="dim",
            )
        )
    unchecked = [f"dL/d{r.name}" for r in results if r.compared == 0]
    if unchecked:
        notes.append(Text(f"Every entry of {', '.join(unchecked)} sat on a kink: none could be compared.", style="bold"))
    verdict = "All gradients agree." if all(r.ok for r in results) else "Some gradients disagree."
    if unchecked:
        verdict = verdict.replace("All gradients agree.", "The gradients that could be compared agree.")
    return Group(heading, table, *notes, Text(verdict, style="bold"))
