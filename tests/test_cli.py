"""The command line through typer's CliRunner: exit status, stdout and stderr checked apart."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace import __version__
from cnntrace.cli import app
from cnntrace.io import load_problem
from cnntrace.reference import reference_stages
from cnntrace.tracer import run
from tests.inputs import REFERENCE, reference, variant, write

STAGES = reference_stages()

runner = CliRunner()

FORWARD = ["Z1", "A1", "P1", "F", "Z2", "A2", "L"]
BACKWARD = [
    "dL_dA2", "dA2_dZ2", "dL_dZ2", "dL_dW2", "dL_dB2", "dL_dF", "dL_dP1",
    "dL_dA1", "dA1_dZ1", "dL_dZ1", "dL_dB1", "dL_dW1", "dL_dX",
]  # fmt: skip
UPDATE = ["W1", "B1", "W2", "B2"]


def invoke(*args, env=None):
    return runner.invoke(app, [str(arg) for arg in args], env=env)


def step_json(path) -> dict:
    result = invoke("step", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


# -- the table view ------------------------------------------------------------------------


def test_table_shows_every_matrix_with_equation_and_shape():
    result = invoke("step", REFERENCE)
    assert result.exit_code == 0 and result.stderr == ""
    out = result.stdout
    for title in [
        "Z1 = conv(X, W1) + B1   4×4",
        "P1 = MaxPool(A1)   2×2",
        "F = flatten(P1)   4",
        "dL/dZ2 = dL/dA2·dA2/dZ2 = A2 − Y = ",
        "dL/dW2 = Fᵀ·dL/dZ2   4",
        "dL/dA1 = dL/dP1 routed to each window's max   4×4",
        "dL/dW1 = conv(X, dL/dZ1)   3×3",
        "dL/dX = conv_transpose(dL/dZ1, W1)   6×6",
        "W1 = W1 − lr·dL/dW1   3×3",
    ]:
        assert title in out
    assert out.index("Forward pass") < out.index("Backward pass") < out.index("Update")
    for stage in STAGES:
        assert f"{stage.symbol} = " in out


def test_table_numbers_are_rounded_to_precision():
    # P1[0,0] is 0.875 exactly in the reference sample.
    assert "0.8750" in invoke("step", REFERENCE).stdout
    six = invoke("step", REFERENCE, "--precision", "6").stdout
    assert "0.875000" in six and "0.8750 " not in six


def test_table_into_a_pipe_is_plain_text():
    out = invoke("step", REFERENCE).stdout
    assert "\x1b[" not in out


def test_batch_and_filters_get_one_labelled_table_each(tmp_path):
    data = reference()
    data["X"] = [data["X"], np.flipud(data["X"]).tolist()]
    data["Y"] = [1, 0]
    data["W1"] = [data["W1"], np.transpose(data["W1"]).tolist()]
    data["B1"] = [0.125, -0.125]
    data["W2"] = [0.5, -0.25, 0.75, 0.25, 0.1, 0.2, 0.3, 0.4]
    out = invoke("step", write(tmp_path, data)).stdout
    assert "Z1 = conv(X, W1) + B1   2×2×4×4" in out
    for label in ["image 0, filter 0", "image 0, filter 1", "image 1, filter 0", "image 1, filter 1"]:
        assert label in out
    assert "dL/dZ2 = dL/dA2·dA2/dZ2 = (A2 − Y) / M" in out


# -- the JSON output -----------------------------------------------------------------------


def test_json_has_exactly_the_documented_keys():
    data = step_json(REFERENCE)
    assert list(data) == ["forward", "backward", "update"]
    assert list(data["forward"]) == FORWARD
    assert list(data["backward"]) == BACKWARD
    assert list(data["update"]) == UPDATE


def test_json_floats_round_trip_exactly_to_the_trace():
    data = step_json(REFERENCE)
    trace = run(load_problem(REFERENCE))
    for section, matrices in trace.sections().items():
        for name, value in matrices.items():
            assert np.array_equal(np.array(data[section][name]), value), name


def test_json_shapes_follow_the_input_for_one_image():
    data = step_json(REFERENCE)
    shapes = {name: np.shape(value) for section in data.values() for name, value in section.items()}
    assert shapes["Z1"] == shapes["dL_dZ1"] == shapes["dA1_dZ1"] == (4, 4)
    assert shapes["P1"] == shapes["dL_dP1"] == (2, 2)
    assert shapes["F"] == shapes["dL_dF"] == (4,)
    assert shapes["Z2"] == shapes["A2"] == shapes["L"] == shapes["dL_dZ2"] == ()
    assert shapes["dL_dW1"] == (3, 3) and shapes["dL_dX"] == (6, 6)
    assert shapes["dL_dW2"] == (4,) and shapes["dL_dB1"] == shapes["dL_dB2"] == ()
    assert isinstance(data["forward"]["L"], float)


def test_json_shapes_follow_the_input_for_a_batch_of_filters(tmp_path):
    path = variant(
        tmp_path,
        X=[[[0.5] * 6] * 6] * 3, Y=[1, 0, 1],
        W1=[[[0.25] * 3] * 3] * 2, B1=[0.1, 0.2],
        W2=[[0.1]] * 8, B2=[[0.0]],
    )  # fmt: skip
    data = step_json(path)
    assert np.shape(data["forward"]["Z1"]) == (3, 2, 4, 4)
    assert np.shape(data["forward"]["F"]) == (3, 8)
    assert np.shape(data["forward"]["A2"]) == (3,)
    assert np.shape(data["backward"]["dL_dX"]) == (3, 6, 6)
    assert np.shape(data["backward"]["dL_dW1"]) == (2, 3, 3)
    assert np.shape(data["backward"]["dL_dW2"]) == np.shape(data["update"]["W2"]) == (8, 1)
    assert np.shape(data["backward"]["dL_dB2"]) == (1, 1)


def test_saturated_sigmoid_gives_finite_json(tmp_path):
    # Z2 = 300 with label 0: the loss is 300, dL/dZ2 = A2 − Y = 1 exactly.
    path = variant(tmp_path, W2=[0.0] * 4, B2=300.0, Y=0)
    result = invoke("step", path, "--format", "json")
    assert result.exit_code == 0
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout
    data = json.loads(result.stdout)
    assert data["forward"]["L"] == pytest.approx(300.0, rel=1e-12)
    assert data["backward"]["dL_dZ2"] == 1.0


# -- errors --------------------------------------------------------------------------------


def assert_clean_error(result, *fragments, status=2):
    assert result.exit_code == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cnntrace: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"W2": [1, 2, 3]}, ["W2: expected 4 weights"]),
        ({"X": [[1, 2], [3]]}, ["X[1]: has 1 entries; expected 2"]),
        ({"Y": 2}, ["Y: labels must lie in [0, 1]"]),
        ({"lr": -1}, ["lr: expected a positive number"]),
        ({"stride": 0}, ["stride: must be at least 1"]),
        ({"X": [[1e200] * 6] * 6, "W1": [[1e200] * 3] * 3}, ["Z1: overflows float64 in Z1 = conv(X, W1) + B1"]),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, fmt, changes, fragments):
    path = variant(tmp_path, **changes)
    assert_clean_error(invoke("step", path, "--format", fmt), str(path), *fragments)


def test_missing_file(tmp_path):
    assert_clean_error(invoke("step", tmp_path / "nope.json"), "nope.json: no such file")


def test_not_json(tmp_path):
    assert_clean_error(invoke("step", write(tmp_path, "X = 1")), "is not valid JSON")


def test_misspelled_key(tmp_path):
    data = reference()
    data["b2"] = data.pop("B2")
    assert_clean_error(invoke("step", write(tmp_path, data)), "B2: missing", "did you mean B2")


def test_bad_option_values_are_usage_errors():
    for args in (["--format", "yaml"], ["--precision", "-1"]):
        result = invoke("step", REFERENCE, *args)
        assert result.exit_code == 2 and result.stdout == ""


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"cnntrace {__version__}"
    result = invoke("step", "--help")
    assert result.exit_code == 0 and "--format" in result.stdout


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "cnntrace", "step", str(REFERENCE), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["forward"]["P1"] == [[0.875, 0.375], [0.625, 0.375]]
