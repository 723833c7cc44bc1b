"""How wide the table view is where no terminal sets the width: into a pipe, into an SVG.

A batch with several filters lays its tables side by side; the width is that of the tables,
not the largest width rich could be given (it once padded every line to 100,000 columns)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.render.format import decimals, number, numbers

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
RGB = SAMPLES / "rgb-softmax.json"  # a padded conv meets a batch of two: tables side by side
runner = CliRunner()


def piped(*args, columns: str | None = None) -> list[str]:
    env = {"COLUMNS": columns} if columns is not None else {"COLUMNS": ""}
    result = runner.invoke(app, ["step", *map(str, args)], env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


def test_piped_lines_end_with_their_content_and_fit_the_tables_side_by_side():
    lines = piped(RGB)
    assert not [line for line in lines if line != line.rstrip()]
    widest = max(map(len, lines))
    # Two images' tables side by side and the longest chain rule: a few hundred columns.
    assert 100 < widest < 600
    # The widest line is a row of tables, every one of them shown in full.
    assert any(line.count("image 1") for line in lines)


def test_piped_lines_keep_within_COLUMNS():
    lines = piped(RGB, columns="100")
    assert max(map(len, lines)) <= 100
    assert "0.9000" in "\n".join(lines)  # X's first entry, still there once split into blocks


def test_the_svg_is_as_wide_as_the_table_it_draws(tmp_path):
    svg = tmp_path / "trace.svg"
    result = runner.invoke(app, ["step", str(RGB), "--svg", str(svg), "--brief"], env={"COLUMNS": ""})
    assert result.exit_code == 0, result.stderr
    width = float(re.search(r'viewBox="0 0 ([\d.]+)', svg.read_text()).group(1))
    columns = max(map(len, piped(RGB, "--brief")))
    # rich draws a column about 12 px wide, with a frame around the terminal's text.
    assert columns * 10 < width < columns * 14 + 200


def test_numbers_writes_what_number_writes():
    values = np.array([0.0, -0.0, 1.5, -2.25, 3e-9, -3e-9, 4e-5, -4e-5, 5e-5, 1e7, -1e8, 0.03125,
                       np.inf, -np.inf, np.nan, 123.456789])
    for precision in (0, 2, 4, 6):
        assert numbers(values, precision) == [number(float(v), precision) for v in values]


def test_the_decimals_follow_a_matrix_of_small_entries():
    assert decimals(np.array([0.5, -0.02]), 4) == 4
    assert decimals(np.array([0.002, -0.0001]), 4) == 5  # 0.00200: three significant digits
    assert decimals(np.array([3e-7, 0.0]), 4) == 9
    assert decimals(np.zeros(3), 4) == 4
    assert decimals(np.array([1e-30]), 4) == 17


def test_piped_step_shows_small_gradients_with_their_digits_unless_p_is_given(tmp_path):
    text = "\n".join(piped(SAMPLES / "mlp-mazur.json"))
    assert "at 5 decimals" in text or "at 6 decimals" in text
    fixed = "\n".join(piped(SAMPLES / "mlp-mazur.json", "-p", "4"))
    assert "decimals" not in fixed
