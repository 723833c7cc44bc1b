"""The derivation view and the exports: golden table and Markdown views of the reference
sample, Markdown pipe tables, the LaTeX fragment compiled when a TeX engine is present.

Regenerate the golden files after an intended change of the output with

    CNNTRACE_UPDATE_GOLDEN=1 python -m pytest tests/test_render_exports.py

and read the diff before committing it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import cnntrace
from cnntrace.io import load_problem
from cnntrace.reference import reference_stages
from cnntrace.render import View, latex, markdown, table
from cnntrace.tracer import run
from tests.inputs import REFERENCE

STAGES = reference_stages()

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CNNTRACE_UPDATE_GOLDEN") == "1"


def reference_trace():
    return run(load_problem(REFERENCE))


def batch_trace():
    rng = np.random.default_rng(3)
    return cnntrace.trace(
        rng.integers(0, 3, size=(2, 6, 6)), [1, 0], rng.normal(size=(2, 3, 3)).round(2), [0.1, -0.1],
        rng.normal(size=2 * 4).round(2), 0.2, pool=2, pool_stride=1, padding=1, stride=2,
    )  # fmt: skip


def text_at(renderable, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with CNNTRACE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


# -- the table view ------------------------------------------------------------------------


def test_golden_table_view_at_100_columns():
    check_golden("reference_table_100.txt", text_at(table.render(reference_trace()), 100))


def test_golden_markdown():
    check_golden("reference.md", markdown.render(reference_trace()))


def test_chain_rules_and_factors_are_shown_and_brief_hides_them():
    full = text_at(table.render(reference_trace()), 100)
    assert "∂L/∂W2 = ∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2" in full
    assert "= (A2 − Y)·Fᵀ" in full
    assert "with dL/dA2 = -1.6661,  dA2/dZ2 = 0.2400,  A2 − Y = -0.3998" in full
    assert "with A2 − Y = -0.3998,  F = [0.8750, 0.3750, 0.6250, 0.3750]" in full
    brief = text_at(table.render(reference_trace(), View(brief=True)), 100)
    assert "∂" not in brief and "\n  with " not in brief
    assert "dL/dW1 = conv(X, dL/dZ1)   3×3" in brief and "-0.8996" in brief


def test_pool_winners_are_marked_in_plain_text():
    out = text_at(table.render(reference_trace(), View(only=("A1", "dL_dA1"))), 100)
    # the reference sample's winners: A1[1,0], A1[1,3], A1[2,2], A1[3,1]
    assert out.count("0.8750*") == 1 and out.count("0.3750*") == 2 and "0.6250*" in out
    assert "-0.1999*" in out and "-0.2999*" in out


def test_overlapping_windows_count_their_wins():
    peak = np.zeros((3, 3))
    peak[1, 1] = 1.0
    trace = cnntrace.trace(peak, 1, [[1.0]], 0.0, [0.5] * 4, 0.0, pool=2, pool_stride=1)
    out = text_at(table.render(trace, View(only=("A1",))), 100)
    assert "1.0000*4" in out and "*2: won two windows" in out


def test_markdown_and_latex_mark_each_count_and_name_the_counts_that_occur():
    """The peak wins all four 2×2 windows at stride 1 of a 3×3 A1."""
    peak = np.zeros((3, 3))
    peak[1, 1] = 1.0
    trace = cnntrace.trace(peak, 1, [[1.0]], 0.0, [0.5] * 4, 0.0, pool=2, pool_stride=1)
    md = markdown.render(trace, View(only=("A1", "dL_dA1")))
    assert "| 1 | 0.0000 | 1.0000\\*4 | 0.0000 |" in md
    assert "(\\*4: won four windows)." in md and "two windows" not in md
    tex = latex.render(trace, View(only=("A1",)))
    assert "1.0000^{*4}" in tex and "($^{*4}$: won four windows)" in tex


def test_batch_gets_one_labelled_table_per_image_and_filter():
    out = text_at(table.render(batch_trace()), 200)
    for label in ("image 0, filter 0", "image 0, filter 1", "image 1, filter 0", "image 1, filter 1"):
        assert label in out


def test_a_wide_matrix_is_split_into_column_blocks():
    values = np.arange(30.0).reshape(2, 15) - 7
    block = table.MatrixBlocks(values, 4)
    narrow = text_at(block, 60)
    assert "columns 0–" in narrow and all(len(line) <= 60 for line in narrow.splitlines())
    for n in range(-7, 23):  # every number still there, none cut
        assert f"{n:.4f}" in narrow
    assert "columns" not in text_at(block, 200)


# -- Markdown ------------------------------------------------------------------------------


def pipe_tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.mark.parametrize("make", [reference_trace, batch_trace])
def test_markdown_has_valid_pipe_tables(make):
    text = markdown.render(make())
    tables = pipe_tables(text)
    assert len(tables) >= 15
    for rows in tables:
        assert len(rows) >= 3
        assert re.fullmatch(r"\|(--:\|)+", rows[1])
        counts = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(counts) == 1, rows


def test_markdown_carries_the_table_views_numbers_and_math():
    trace = reference_trace()
    text = markdown.render(trace, View(precision=6))
    assert "-0.899576" in text  # dL/dW1[0,2] at 6 decimals
    assert "$$\\frac{\\partial L}{\\partial W_{2}}" in text
    assert text.count("$") % 2 == 0


# -- LaTeX ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("∂L/∂W2", r"\frac{\partial L}{\partial W_{2}}"),
        ("dL/dZ1 ⊙ dA1/dZ1", r"\frac{\partial L}{\partial Z_{1}} \odot  \frac{\partial A_{1}}{\partial Z_{1}}"),
        ("(A2 − Y)·Fᵀ", r"(A_{2} - Y)\cdot F^{\top}"),
        ("conv_transpose(∂L/∂Z1, W1)", r"\operatorname{conv\_transpose}(\frac{\partial L}{\partial Z_{1}}, W_{1})"),
        ("1 where Z1 > 0", r"1\text{ where }Z_{1} > 0"),
    ],
)
def test_latex_math(formula, expected):
    assert latex.math(formula) == expected


def test_latex_fragment_is_ascii_with_bmatrices():
    text = latex.render(reference_trace())
    assert text.isascii()
    assert text.count("\\begin{bmatrix}") == text.count("\\end{bmatrix}") >= 15
    assert "-0.8996" in text


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on this machine")
@pytest.mark.parametrize("make", [reference_trace, batch_trace])
def test_latex_fragment_compiles(tmp_path, make):
    (tmp_path / "trace.tex").write_text(latex.render(make()))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
        "\\input{trace.tex}\n\\end{document}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_every_stage_has_a_title_in_every_export():
    trace = reference_trace()
    md, tex = markdown.render(trace), latex.render(trace)
    for stage in STAGES:
        assert f"**{markdown.escape(stage.symbol)}**" in md
        assert latex.math(stage.symbol) in tex


def test_padding_is_shown_where_it_matters_for_dL_dX(tmp_path):
    from cnntrace.api import trace as run_trace

    rng = np.random.default_rng(5)
    t = run_trace(rng.normal(size=(2, 4, 5)), [1, 0], rng.normal(size=(2, 3, 3)), [0.1, -0.1],
                  rng.normal(size=2 * 2 * 2), 0.0, padding=1)  # fmt: skip
    title, padded, _, border, _ = t.annotations["dL_dX"].extra  # the conv's ∂L/∂pad(X)
    assert title == "∂L/∂pad(X)" and border == (1, 1, 1, 1)
    assert padded.shape == (2, 6, 7)
    # Inside the border it is dL/dX; the border is what the windows sent to the padding.
    np.testing.assert_array_equal(padded[:, 1:-1, 1:-1], t["dL_dX"])
    assert np.abs(padded[:, 0, :]).sum() > 0
    out = text_at(table.render(t, View(only=("dL_dX", "dL_dW1"))), 140)
    assert "= conv(pad(X), ∂L/∂Z1)" in out
    assert "= conv_transpose(∂L/∂Z1, W1) without its border" in out
    assert "∂L/∂pad(X)   2×6×7" in out
    assert "rows −1…−1 and 4…4, columns −1…−1 and 5…5" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("-1 "))
    assert header.split() == ["-1", "0", "1", "2", "3", "4", "5"]
    brief = text_at(table.render(t, View(only=("dL_dX",), brief=True)), 140)
    assert "pad(X)" not in brief


def test_padding_of_unequal_sides_is_shown_with_its_own_border(tmp_path):
    """Padding top 1, bottom 0, left 2, right 1: ∂L/∂pad(X) is dL/dX of the same net on the
    image padded by hand (no padding left to the conv), its rows and columns numbered from
    −1 and −2, and only the padded sides named."""
    rng = np.random.default_rng(6)
    X, W1, W2 = rng.normal(size=(4, 4)), rng.normal(size=(2, 2)), rng.normal(size=4 * 6)
    layers = ["relu", "flatten", "dense", "sigmoid"]
    data = {"X": X.tolist(), "Y": 1.0, "W1": W1.tolist(), "B1": 0.1, "W2": W2.tolist(), "B2": 0.0}
    t = cnntrace.trace_input({**data, "layers": [{"type": "conv", "padding": [1, 0, 2, 1]}, *layers]})
    by_hand = np.pad(X, ((1, 0), (2, 1)))
    u = cnntrace.trace_input({**data, "X": by_hand.tolist(), "layers": ["conv", *layers]})
    title, padded, _, border, note = t.annotations["dL_dX"].extra
    assert border == (1, 0, 2, 1) and padded.shape == (5, 7)
    np.testing.assert_allclose(padded, u["dL_dX"], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(padded[1:, 2:-1], t["dL_dX"])
    assert note == "in italics, the padding: rows −1…−1, columns −2…−1 and 4…4"
    out = text_at(table.render(t, View(only=("dL_dX",))), 140)
    assert "∂L/∂pad(X)   5×7" in out and note in out
    header = next(line for line in out.splitlines() if line.strip().startswith("-2 "))
    assert header.split() == ["-2", "-1", "0", "1", "2", "3", "4"]
    labels = [line.split()[0] for line in out.split(note)[1].splitlines()[3:] if line.strip()]
    assert labels == ["-1", "0", "1", "2", "3"]


# -- JSON and CSV in pieces, large inputs summarized ---------------------------------------


@pytest.mark.parametrize("make", [reference_trace, batch_trace])
@pytest.mark.parametrize("view", [View(), View(file="in.json"), View(only=("dL_dX", "L"))])
def test_json_pieces_are_exactly_one_json_dumps(make, view):
    """The JSON comes an image at a time; joined, it is json.dumps of the whole trace."""
    import json

    from cnntrace.render import json as render_json

    trace = make()
    data = render_json.trace_dict(trace, view)
    expected = json.dumps(data if view.file is None else {"file": view.file, **data}, separators=(",", ":"))
    pieces = list(render_json.render(trace, view))
    assert "".join(pieces) == expected + "\n"
    assert len(pieces) > 3  # really in pieces
    ndjson = "".join(render_json.render_ndjson(trace, view))
    assert json.loads(ndjson) == {"file": view.file, **data}


def big_trace(side=45, images=1):
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (images, side, side)) if images > 1 else rng.uniform(-1, 1, (side, side))
    n = ((side - 2) // 2) ** 2
    return cnntrace.trace(X, [1.0] * images if images > 1 else 1.0, rng.normal(size=(3, 3)), 0.1,
                          rng.normal(size=n) * 0.1, 0.0)  # fmt: skip


def test_a_matrix_over_40_on_a_side_shows_its_corners_unless_full():
    trace = big_trace(45)
    X = trace.problem.X
    out = text_at(table.render(trace, View(only=("dL_dX",))), 400)
    assert "showing the first and last 8 rows and columns; --full shows all" in out
    body = out.split("─\n", 1)[1]  # below the header's rule
    rows = [line.split() for line in body.splitlines() if line.strip()]
    labels = [row[0] for row in rows]
    assert labels == [*map(str, range(8)), "…", *map(str, range(37, 45))]
    assert rows[0][1:] == [*(f"{v:.4f}" for v in trace["dL_dX"][0, :8]), "…", *(f"{v:.4f}" for v in trace["dL_dX"][0, -8:])]
    full = text_at(table.render(trace, View(only=("dL_dX",), full=True)), 1000)
    assert "--full" not in full and "\n44 " in full
    assert X.shape == (45, 45)


def test_a_large_batch_shows_its_first_and_last_images():
    trace = big_trace(6, images=20)
    out = text_at(table.render(trace, View(only=("Z1",))), 400)
    shown = re.findall(r"image (\d+)", out)
    assert shown == ["0", "1", "2", "17", "18", "19"]
    assert "showing the first and last 3 images" in out
    md = markdown.render(trace, View(only=("Z1",)))
    assert re.findall(r"\*image (\d+)\*", md) == ["0", "1", "2", "17", "18", "19"]
    tex = latex.render(trace, View(only=("Z1",)))
    assert re.findall(r"image (\d+)", tex) == ["0", "1", "2", "17", "18", "19"] and "\\vdots" in tex


def test_markdown_and_latex_summarize_like_the_table():
    trace = big_trace(45)
    md = markdown.render(trace, View(only=("dL_dX",)))
    assert "showing the first and last 8 rows and columns" in md
    tex = latex.render(trace, View(only=("dL_dX",)))
    assert "\\cdots" in tex and "\\vdots" in tex and "\\ddots" in tex
    assert "\\setcounter{MaxMatrixCols}{17}" in tex
