"""cnntrace and PyTorch and ONNX (issue 21): the script ``export --to torch`` writes, for every
sample and every row of the kinds table, runs green under PyTorch and goes red when a number
in it changes; ``from_torch``, a state_dict with ``--layers`` and ONNX models read back to
the numbers PyTorch's autograd gives; what cannot be read is named.

torch, onnx and safetensors are optional extras: the tests that need one skip, saying which.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.errors import InputError
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.tracer import run
from tests.kinds import ALL_CASES, make

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_FILES = sorted([*SAMPLES.glob("*.json"), *SAMPLES.glob("*.npz")])


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)  # the scripts set float64


def run_script(path: Path) -> tuple[int, str]:
    """(exit status, stdout) of a script written by export --to torch, run in this process
    (torch is imported once for all of them)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(path), run_name="__main__")
            status = 0
        except SystemExit as leaving:
            status = leaving.code or 0
    return status, out.getvalue()


def repro(trace, tmp_path: Path, name: str = "repro.py") -> Path:
    from cnntrace.bridge.repro import repro_script

    path = tmp_path / name
    path.write_text(repro_script(trace, name))
    return path


# -- export --to torch -------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_samples_script_runs_green_and_goes_red_when_a_number_changes(torch, sample, tmp_path):
    output = tmp_path / "repro.py"
    result = CliRunner().invoke(app, ["export", str(sample), "--to", "torch", "-o", str(output)])
    assert result.exit_code == 0, result.output
    status, out = run_script(output)
    trace = run(load_problem(sample))
    lines = [line for line in out.splitlines() if line.startswith(("ok ", "MISMATCH"))]
    assert status == 0, out
    assert [line.split()[1] for line in lines] == [stage.name for stage in trace.stages]
    assert all(line.startswith("ok ") for line in lines)

    # One number of the trace changed: that matrix is named as the one that differs.
    text = output.read_text()
    start = text.index("EXPECTED = {")
    entry = re.compile(r"'dL_dW1': array\(\[\s*(-?[0-9.e+-]+)")
    found = entry.search(text, start)
    changed = float(found.group(1)) + 0.5
    red = tmp_path / "red.py"
    red.write_text(text[: found.start(1)] + repr(changed) + text[found.end(1):])
    status, out = run_script(red)
    assert status == 1
    assert [line.split()[1] for line in out.splitlines() if line.startswith("MISMATCH")] == ["dL_dW1"]

    # One number of the input changed (the first bias): the pass is no longer the trace's.
    found = re.search(r"^    'B1': array\(\[\s*(-?[0-9.e+-]+)", text, re.M)
    red.write_text(text[: found.start(1)] + repr(float(found.group(1)) + 1.0) + text[found.end(1):])
    status, out = run_script(red)
    assert status == 1 and "MISMATCH  Z1 " in out


#: The rows PyTorch has no module for, and the option that says so.
NO_TORCH_FORM = {"maxpool-ties-all": "ties", "maxpool-ties-split": "ties"}


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_every_kind_and_variant_exports_a_script_that_agrees(torch, case, tmp_path):
    from cnntrace.bridge.repro import repro_script

    trace = run(problem_from_dict(make(case)))
    refused = next((option for prefix, option in NO_TORCH_FORM.items() if case.id.startswith(prefix)), None)
    if refused is not None:
        with pytest.raises(InputError, match=refused):
            repro_script(trace, "case")
        return
    status, out = run_script(repro(trace, tmp_path))
    assert status == 0, out


def test_export_names_the_file_and_writes_nothing_on_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"X": [[1, 2], [3, 4]], "layers": ["dense"], "Y": [1]}')
    output = tmp_path / "repro.py"
    result = CliRunner().invoke(app, ["export", str(bad), "--to", "torch", "-o", str(output)])
    assert result.exit_code == 2
    assert result.stdout == "" and f"{bad}: loss: missing" in result.stderr
    assert not output.exists()


def test_export_refuses_a_missing_directory_before_the_work(tmp_path):
    result = CliRunner().invoke(app, ["export", str(SAMPLES / "reference.json"), "--to", "torch",
                                      "-o", str(tmp_path / "nowhere" / "repro.py")])  # fmt: skip
    assert result.exit_code == 2 and "nowhere" in result.stderr and result.stdout == ""


def test_a_maxpool_with_ties_all_is_named_as_having_no_torch_form(tmp_path):
    data = json.loads((SAMPLES / "rgb-softmax.json").read_text())
    data["conventions"] = {"pool_ties": "all"}
    path = tmp_path / "ties.json"
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["export", str(path), "--to", "torch"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "layers[2].ties" in result.stderr and "first maximum" in result.stderr
