"""`cnntrace explain`, `step --brief`, the markdown and latex formats and the --html/--svg
exports, through typer's CliRunner: exit status, stdout and stderr checked apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.api import trace_input
from cnntrace.cli import app
from cnntrace.explain import explain_all
from cnntrace.io import load_problem
from cnntrace.render.explanation import render_text
from cnntrace.render.format import number
from cnntrace.tracer import run
from tests.inputs import REFERENCE, write
from tests.networks import IDS, make

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def test_explain_prints_the_arithmetic_and_ends_with_steps_value():
    result = invoke("explain", REFERENCE, "dL_dW1[0,1]")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dL/dW1[0,1] = Σ")
    assert "X[0,1]·dL/dZ1[0,0]" in lines[1] and "+ X[0,2]·dL/dZ1[0,1]" in lines[2]
    assert lines[-1] == "dL/dW1[0,1] = -0.3998"
    step = invoke("step", REFERENCE, "--only", "dL_dW1").stdout
    assert "-0.3998" in step


@pytest.mark.parametrize("term", ["dL/dW1[0,1]", "dL/dW1[0][1]", "dL_dW1[0, 1]"])
def test_explain_accepts_the_derivations_spelling(term):
    result = invoke("explain", REFERENCE, term)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "dL/dW1[0,1] = -0.3998"


def test_the_last_line_of_every_explanation_is_what_step_shows():
    trace = run(load_problem(REFERENCE))
    for e in explain_all(trace):
        term = e.name + "".join(f"[{i}]" for i in e.index)
        result = invoke("explain", REFERENCE, term, "-p", "6")
        assert result.exit_code == 0, result.stderr
        value = number(float(np.asarray(trace[e.name])[e.index]), 6)
        assert result.stdout.splitlines()[-1] == f"{e.label} = {value}"


def test_explain_json_for_scripts():
    result = invoke("explain", REFERENCE, "P1[0,0]", "--format", "json")
    assert result.exit_code == 0 and result.stderr == ""
    data = json.loads(result.stdout)
    assert data["term"] == "P1[0,0]" and data["function"] == "max" and data["value"] == 0.875
    assert [t["factors"][0]["index"] for t in data["terms"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize(
    "term, fragment",
    [
        ("W3[0,0]", "unknown name 'W3'; the names are Z1, A1, P1"),
        ("dL_dW1[3,0]", "dL_dW1 is 3×3 (row, col): indices 0..2, 0..2; got [3,0]"),
        ("dL_dW2[4]", "dL_dW2 is 4 (col): indices 0..3; got [4]"),
        ("L[0]", "L is a number: write it without an index"),
        ("Z1[x]", "whole numbers"),
    ],
)
def test_explain_errors_are_one_line_exit_2(term, fragment):
    result = invoke("explain", REFERENCE, term)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and fragment in result.stderr
    assert result.stderr.startswith(f"cnntrace: {term}: ")
    assert "Traceback" not in result.stderr


def test_explain_bad_file_names_the_file(tmp_path):
    result = invoke("explain", tmp_path / "missing.json", "L")
    assert result.exit_code == 2 and result.stdout == ""
    assert "missing.json: no such file" in result.stderr


def test_explain_batch_indices_come_first(tmp_path):
    data = json.loads(REFERENCE.read_text())
    data["X"] = [data["X"], np.flipud(data["X"]).tolist()]
    data["Y"] = [1, 0]
    path = write(tmp_path, data)
    result = invoke("explain", path, "dL_dX[1,2,3]")
    assert result.exit_code == 0, result.stderr
    expected = json.loads(invoke("step", path, "-f", "json").stdout)["backward"]["dL_dX"][1][2][3]
    assert result.stdout.splitlines()[-1] == f"dL/dX[1,2,3] = {number(expected, 4)}"
    assert "image, row, col" in invoke("explain", path, "dL_dX[2,0,0]").stderr


def test_step_brief_hides_the_formulas():
    full, brief = invoke("step", REFERENCE).stdout, invoke("step", REFERENCE, "--brief").stdout
    assert "∂L/∂W1" in full and "∂" not in brief
    assert "dL/dW1 = conv(X, dL/dZ1)   3×3" in brief


@pytest.mark.parametrize("fmt, marker", [("markdown", "| 0 | 1 |"), ("latex", "\\begin{bmatrix}")])
def test_step_markdown_and_latex(fmt, marker):
    result = invoke("step", REFERENCE, "--format", fmt)
    assert result.exit_code == 0 and result.stderr == ""
    assert marker in result.stdout and "-0.8996" in result.stdout


def test_html_and_svg_exports_carry_the_numbers(tmp_path):
    html, svg = tmp_path / "trace.html", tmp_path / "trace.svg"
    result = invoke("step", REFERENCE, "--html", html, "--svg", svg, "-p", "6")
    assert result.exit_code == 0 and result.stderr == ""
    assert "-0.899576" in result.stdout  # stdout keeps its normal output
    page, picture = html.read_text(), svg.read_text()
    assert page.startswith("<!DOCTYPE html>") and "-0.899576" in page and "∂L/∂W1" in page
    assert picture.startswith("<svg") and "-0.899576" in picture
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.html", "trace.svg"]  # no temp files


def test_html_with_json_on_stdout(tmp_path):
    html = tmp_path / "trace.html"
    result = invoke("step", REFERENCE, "--format", "json", "--html", html)
    assert result.exit_code == 0
    json.loads(result.stdout)
    assert "0.8750" in html.read_text()


def test_html_into_a_missing_directory_is_exit_2(tmp_path):
    result = invoke("step", REFERENCE, "--html", tmp_path / "no" / "trace.html")
    assert result.exit_code == 2
    assert "trace.html: cannot be written" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("network_id", IDS)
def test_every_entry_of_every_network_renders_as_text_ending_in_its_value(network_id):
    """tanh, leaky ReLU and softmax entries once raised KeyError in render_text."""
    trace = trace_input(make(network_id))
    for e in explain_all(trace):
        text = render_text(e, 4)
        value = number(float(np.asarray(trace[e.name])[e.index]), 4)
        assert text.splitlines()[-1] == f"{e.label} = {value}"


def test_render_text_can_leave_out_the_middle_of_a_long_sum_but_not_its_value():
    trace = run(load_problem(REFERENCE))
    explanation = next(e for e in explain_all(trace) if e.name == "dL_dW1" and e.index == (0, 1))
    full = render_text(explanation, 4).splitlines()
    short = render_text(explanation, 4, most=8).splitlines()
    assert full[-1] == short[-1] == "dL/dW1[0,1] = -0.3998"
    assert "    … 8 more terms …" in short and len(short) == len(full) - 8 + 1
    assert short[1:7] == full[1:7]
    assert short[8:10] == full[15:17]  # the last two terms
    assert render_text(explanation, 4, most=16) == render_text(explanation, 4)


def _long_sum(tmp_path):
    """A 20×20 image through the reference network: dL/dW1[0,0] sums 18×18 = 324 products,
    the ones where the pool sent nothing back zero."""
    from tests.inputs import reference

    data = reference()
    rng = np.random.default_rng(1)
    data["X"] = rng.random((20, 20)).tolist()
    data["W2"] = rng.normal(size=81).tolist()
    return write(tmp_path, data)


def test_explain_of_a_long_sum_shows_its_largest_terms_and_the_value(tmp_path):
    path = _long_sum(tmp_path)
    trace = run(load_problem(path))
    value = number(float(trace["dL_dW1"][0, 0]), 4)
    short = invoke("explain", path, "dL_dW1[0,0]")
    assert short.exit_code == 0, short.stderr
    lines = short.stdout.splitlines()
    assert lines[-1] == f"dL/dW1[0,0] = {value}"
    assert "    … 260 smaller terms left out (--all shows every term)" in lines
    assert "  324 terms" in lines
    every = invoke("explain", path, "dL_dW1[0,0]", "--all").stdout.splitlines()
    assert len([line for line in every if "·" in line]) == 324 + 1  # and the formula's line
    written = [line for line in lines if "  =  " in line]
    assert len(written) == 64
    # the 64 written are the largest in size: none left out is larger than the smallest of them
    sizes = sorted((abs(float(line.split("=")[-1])) for line in every if "  =  " in line), reverse=True)
    assert min(abs(float(line.split("=")[-1])) for line in written) >= sizes[64] - 1e-4


def test_explain_nonzero_leaves_out_the_zero_terms_and_counts_them(tmp_path):
    path = _long_sum(tmp_path)
    trace = run(load_problem(path))
    zeros = int(np.sum(np.asarray(trace["dL_dZ1"]) == 0))
    assert zeros > 0
    result = invoke("explain", path, "dL_dW1[0,0]", "--nonzero", "--all")
    lines = result.stdout.splitlines()
    assert f"    … {zeros:,} zero terms left out" in lines
    assert not [line for line in lines if line.endswith("=  0.0000")]
    assert lines[-1] == f"dL/dW1[0,0] = {number(float(trace['dL_dW1'][0, 0]), 4)}"
    data = json.loads(invoke("explain", path, "dL_dW1[0,0]", "--nonzero", "-f", "json").stdout)
    assert data["zero_terms_left_out"] == zeros and len(data["terms"]) == 324 - zeros
