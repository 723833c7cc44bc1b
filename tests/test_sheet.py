"""cnntrace sheet: golden worksheets and keys at a fixed seed, a worksheet that holds no
answer, --only, and the LaTeX compiled by pdflatex (as a fragment and as a document).

Regenerate the golden files after an intended change with

    CNNTRACE_UPDATE_GOLDEN=1 python -m pytest tests/test_sheet.py

and read the diff before committing it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.render.format import number
from cnntrace.render.sheet import Sheet, render_latex, render_markdown
from cnntrace.tracer import run

runner = CliRunner()
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CNNTRACE_UPDATE_GOLDEN") == "1"
#: The hand exercise of `cnntrace init --hand --seed 12`, kept as it was made.
HAND = GOLDEN / "hand-12.json"
SAMPLES = ["samples/reference.json", "samples/rgb-softmax.json", "samples/mlp-mazur.json",
           "samples/conv-given-grad.json", str(HAND)]  # fmt: skip


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run with CNNTRACE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def sheet(*args) -> str:
    result = runner.invoke(app, ["sheet", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_the_golden_exercise_is_what_init_makes():
    result = runner.invoke(app, ["init", "--hand", "--seed", "12"])
    if UPDATE:
        HAND.write_text(result.stdout, encoding="utf-8")
    assert result.stdout == HAND.read_text(encoding="utf-8")


@pytest.mark.parametrize("golden, args", [
    ("hand-12-sheet.md", []),
    ("hand-12-key.md", ["--key"]),
    ("hand-12-sheet.tex", ["--format", "latex"]),
    ("hand-12-key.tex", ["--format", "latex", "--key", "--precision", "3"]),
])  # fmt: skip
def test_golden_sheets(golden, args):
    check_golden(golden, sheet(HAND, *args))


def answers_in(trace, precision: int = 4) -> dict[str, set[str]]:
    """Every entry the pass computes, as the key writes it, except those equal to a given
    number (an input the worksheet must show, such as a ReLU passing X through)."""
    given = {number(float(v), precision) for values in trace.problem.inputs.values() for v in np.ravel(values)}
    out = {}
    for stage in trace.stages:
        texts = {number(float(v), precision) for v in np.ravel(trace[stage.name])}
        out[stage.name] = texts - given - {number(0.0, precision)}
    return out


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"-?\d+\.\d+", text))


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("format", ["markdown", "latex"])
def test_a_worksheet_holds_no_answer_and_the_key_holds_them_all(sample, format):
    trace = run(load_problem(sample))
    answers = answers_in(trace)
    worksheet = numbers_in(sheet(sample, "--format", format))
    key = numbers_in(sheet(sample, "--format", format, "--key"))
    for name, texts in answers.items():
        assert not texts & worksheet, f"{name} gives away {sorted(texts & worksheet)}"
        assert texts <= key, f"the key lacks {name}'s {sorted(texts - key)}"


def test_every_question_in_order_with_its_name_equation_and_shape():
    trace = run(load_problem(HAND))
    text = render_markdown(trace, Sheet())
    headings = re.findall(r"^### (\d+)\. (\S+)  \((.*), answer as `(\w+)`\) \[1 mark\]$", text, re.M)
    assert [h[3] for h in headings] == [stage.name for stage in trace.stages]
    assert [int(h[0]) for h in headings] == list(range(1, len(trace.stages) + 1))
    z1 = text.split("### 1. Z1")[1].split("###")[0]
    assert "4×4" in z1 and "conv" in z1
    assert len(re.findall(r"^\| \d \|(\s+\|){4}$", z1, re.M)) == 4  # a blank 4×4 grid


def test_only_picks_the_questions():
    text = sheet(HAND, "--only", "dL_dW1,P1")
    assert re.findall(r"^### \d+\. (\S+)", text, re.M) == ["P1", "dL/dW1"]  # the derivation's order
    assert "## Given" in text


def test_batches_and_filters_get_one_grid_each():
    text = sheet("samples/rgb-softmax.json", "--only", "Z1")
    assert "*image 0, filter 0*" in text and "*image 1, filter 1*" in text


@pytest.mark.parametrize("args, message", [
    (["--only", "Q9"], "--only"),
    (["--standalone"], "--format latex"),
])  # fmt: skip
def test_bad_options_are_one_line(args, message):
    result = runner.invoke(app, ["sheet", str(HAND), *args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_file_is_named():
    result = runner.invoke(app, ["sheet", "no-such.json"])
    assert result.exit_code == 2 and "no-such.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_output_file_is_written(tmp_path):
    target = tmp_path / "sheet.md"
    result = runner.invoke(app, ["sheet", str(HAND), "-o", str(target)])
    assert result.exit_code == 0 and result.stdout == ""
    assert target.read_text().startswith("# Worksheet")


def pdflatex(tmp_path: Path, document: str) -> None:
    assert document.isascii(), sorted({c for c in document if not c.isascii()})
    (tmp_path / "doc.tex").write_text(document, encoding="utf-8")
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    log = done.stdout.decode("latin-1")
    assert done.returncode == 0, log[-2000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text("latin-1")
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


NO_PDFLATEX = "no pdflatex on this machine (apt-get install texlive-latex-base texlive-latex-recommended)"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason=NO_PDFLATEX)
@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("key", [False, True])
def test_the_fragment_compiles_in_a_standard_article(tmp_path, sample, key):
    fragment = render_latex(run(load_problem(sample)), Sheet(key=key))
    pdflatex(tmp_path, "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
                       + fragment + "\\end{document}\n")  # fmt: skip


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason=NO_PDFLATEX)
@pytest.mark.parametrize("paper", ["a4", "letter"])
@pytest.mark.parametrize("key", [False, True])
def test_standalone_is_a_whole_document(tmp_path, key, paper):
    document = sheet(HAND, "--format", "latex", "--standalone", "--paper", paper, "--title", "Week 3",
                     *(["--key"] if key else []))  # fmt: skip
    assert document.count("\\documentclass") == 1 and document.rstrip().endswith("\\end{document}")
    assert f"[{paper}paper, margin=2cm]{{geometry}}" in document and "Week" in document
    pdflatex(tmp_path, document)
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", "doc.pdf"], cwd=tmp_path, capture_output=True, text=True).stdout
        assert ("(A4)" if paper == "a4" else "(letter)") in info


@pytest.mark.parametrize("format", ["markdown", "latex"])
def test_a_class_can_use_the_sheet(format):
    """Name, ID and marks; the conventions that matter; room to work after each sum of
    products; in the key one entry of each worked out and the pool's marks it speaks of."""
    worksheet = sheet(HAND, "--format", format)
    key = sheet(HAND, "--format", format, "--key")
    assert "Name:" in worksheet and "ID:" in worksheet and "/ 24" in worksheet
    for text in (worksheet, key):
        assert "cross-correlation" in text and ("ReLU′(0) = 0" in text or "ReLU}'(0) = 0" in text)
        assert "first maximum in row-major order" in text and "channel, then row, then column" in text
    assert worksheet.count("Working") == 4  # Z1, Z2, dL/dW1, dL/dX
    assert key.count("One entry worked out") == 4 and "Working" not in key
    assert "marked ${*}$ in" in key and re.search(r"\d\.\d+\\?\*", key)  # the mark the note names, printed
    assert "Name:" not in key


def test_a_flipped_kernel_and_a_class_index_are_stated():
    data = json.loads(Path("samples/rgb-softmax.json").read_text())
    assert "class's index" in render_markdown(run(problem_from_dict(data)), Sheet())
    flipped = {k: v for k, v in json.loads(HAND.read_text()).items() if k not in ("pool", "stride", "padding")}
    flipped["layers"] = [{"type": "conv", "flip": True}, "relu", {"type": "maxpool", "size": 2}, "flatten",
                         "dense", "sigmoid"]  # fmt: skip
    assert "true convolution" in render_markdown(run(problem_from_dict(flipped)), Sheet())


@pytest.mark.parametrize("sample", SAMPLES)
def test_step_s_markdown_and_latex_work_on_every_sample(sample):
    """A given gradient has the layout of its output (step -f markdown once crashed on
    conv-given-grad.json), and the LaTeX notation covers every formula (², δ, ∂, →)."""
    for format in ("markdown", "latex"):
        result = runner.invoke(app, ["step", sample, "--format", format])
        assert result.exit_code == 0, result.stderr
    assert result.stdout.isascii(), sorted({c for c in result.stdout if not c.isascii()})
