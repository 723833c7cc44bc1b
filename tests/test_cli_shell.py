"""The shell conventions: formats, selection, many files, pipes, colour, and the commands
check, verify, init and schema."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.io import load_problem
from cnntrace.reference import reference_stages
from cnntrace.schema import INPUT_SCHEMA
from cnntrace.tracer import run
from tests.inputs import REFERENCE, reference, variant, write

STAGE = {stage.name: stage for stage in reference_stages()}

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(arg) for arg in args], env=env)


def cnntrace_process(*args, **kwargs):
    """cnntrace as the shell runs it: a real process with real pipes."""
    return subprocess.run(
        [sys.executable, "-m", "cnntrace", *map(str, args)],
        capture_output=True, text=True, check=False, **kwargs,
    )  # fmt: skip


def batch_of_filters(tmp_path):
    data = reference()
    data.update(
        X=[data["X"], np.flipud(data["X"]).tolist()], Y=[1, 0],
        W1=[data["W1"], np.transpose(data["W1"]).tolist()], B1=[0.125, -0.125],
        W2=[0.5, -0.25, 0.75, 0.25, 0.1, 0.2, 0.3, 0.4],
    )  # fmt: skip
    return write(tmp_path, data, "batch.json")


# -- csv -----------------------------------------------------------------------------------


def parse_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_one_row_per_entry_at_full_precision():
    result = invoke("step", REFERENCE, "--format", "csv")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.splitlines()[0] == "name,row,col,value"
    rows = parse_csv(result.stdout)
    trace = run(load_problem(REFERENCE))
    assert len(rows) == sum(np.size(value) for m in trace.sections().values() for value in m.values())
    for row in rows:
        value = np.asarray(trace[row["name"]])
        index = tuple(int(row[axis]) for axis in ("row", "col") if row[axis] != "")
        assert float(row["value"]) == value[index]  # exact: repr round-trips


def test_csv_of_a_batch_of_filters_carries_image_and_filter(tmp_path):
    rows = parse_csv(invoke("step", batch_of_filters(tmp_path), "-f", "csv").stdout)
    assert list(rows[0]) == ["name", "image", "filter", "row", "col", "value"]
    z1 = [r for r in rows if r["name"] == "Z1"]
    assert len(z1) == 2 * 2 * 4 * 4
    assert {(r["image"], r["filter"]) for r in z1} == {("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")}
    a2 = [r for r in rows if r["name"] == "A2"]
    assert [(r["image"], r["filter"], r["row"], r["col"]) for r in a2] == [("0", "", "", ""), ("1", "", "", "")]
    dw1 = [r for r in rows if r["name"] == "dL_dW1"]
    assert all(r["image"] == "" and r["filter"] in ("0", "1") for r in dw1)


# -- --only --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv", "table"])
def test_only_limits_every_format(fmt):
    result = invoke("step", REFERENCE, "--format", fmt, "--only", "P1,dL/dW1")
    assert result.exit_code == 0
    out = result.stdout
    if fmt == "json":
        assert json.loads(out) == {
            "forward": {"P1": json.loads(invoke("step", REFERENCE, "-f", "json").stdout)["forward"]["P1"]},
            "backward": {"dL_dW1": json.loads(invoke("step", REFERENCE, "-f", "json").stdout)["backward"]["dL_dW1"]},
        }
    elif fmt == "ndjson":
        assert set(json.loads(out)) == {"file", "forward", "backward"}
    elif fmt == "csv":
        assert {row["name"] for row in parse_csv(out)} == {"P1", "dL_dW1"}
    else:
        assert "P1 = MaxPool(A1)" in out and "dL/dW1 = conv(X, dL/dZ1)" in out
        assert "Z1 = " not in out and "Input" not in out


def test_only_with_an_unknown_name_lists_the_names():
    result = invoke("step", REFERENCE, "--only", "P1,Q7")
    assert result.exit_code == 2 and result.stdout == ""
    assert "Q7" in result.stderr and "dL_dW1" in result.stderr


@pytest.mark.parametrize(("args", "line"), [
    (["train", REFERENCE, "--epochs", "0"],
     "cnntrace: train: Invalid value for '--epochs' / '-n': 0 is not in the range x>=1 (see cnntrace train --help)\n"),
    (["train", REFERENCE], "cnntrace: train: Missing option '--epochs' / '-n' (see cnntrace train --help)\n"),
    (["stpe"], "cnntrace: No such command 'stpe'. Did you mean 'step'? (see cnntrace --help)\n"),
    (["step", REFERENCE, "--bogus"], "cnntrace: step: No such option: --bogus (see cnntrace step --help)\n"),
])  # fmt: skip
def test_a_bad_option_is_told_in_one_line_as_the_shell_runs_it(args, line):
    done = subprocess.run([sys.executable, "-m", "cnntrace", *map(str, args)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line.replace("see cnntrace", "see python -m cnntrace"))


def test_a_dash_reads_stdin_json_or_npz(tmp_path):
    text = REFERENCE.read_text()
    done = subprocess.run([sys.executable, "-m", "cnntrace", "step", "-", "-f", "json"], input=text.encode(),
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["forward"]["Z1"]
    np.savez(tmp_path / "in.npz", **{k: np.asarray(v) for k, v in reference().items() if k != "comment"})
    done = subprocess.run([sys.executable, "-m", "cnntrace", "step", "-", "-f", "json"],
                          input=(tmp_path / "in.npz").read_bytes(), capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["forward"]["Z1"]
    done = subprocess.run([sys.executable, "-m", "cnntrace", "step", "-"], input=b"", capture_output=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, b"", b"cnntrace: -: is empty; expected a JSON object (or a .npz file)\n")


def test_no_command_still_shows_the_help():
    done = subprocess.run([sys.executable, "-m", "cnntrace"], capture_output=True, text=True, timeout=60)
    assert "[OPTIONS] COMMAND [ARGS]" in done.stdout + done.stderr and "Commands:" in done.stdout + done.stderr


# -- many files ----------------------------------------------------------------------------


def test_ndjson_writes_one_line_per_file_with_its_name(tmp_path):
    other = variant(tmp_path, "other.json", Y=0)
    result = invoke("step", REFERENCE, other, "--format", "ndjson")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(REFERENCE), str(other)]
    assert lines[0]["forward"]["L"] != lines[1]["forward"]["L"]


def test_a_bad_file_among_many_is_reported_and_the_others_run(tmp_path):
    bad = variant(tmp_path, "bad.json", W2=[1, 2])
    result = invoke("step", REFERENCE, bad, REFERENCE, "--format", "ndjson")
    assert result.exit_code == 2
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr.strip() == f"cnntrace: {bad}: W2: expected 4 weights, one per entry of F (1 filter × 2×2), found 2 entries (shape 2)"


def test_csv_of_many_files_shares_one_header(tmp_path):
    other = variant(tmp_path, "other.json", Y=0)
    out = invoke("step", REFERENCE, other, "-f", "csv", "--only", "L").stdout
    assert out.splitlines() == [
        "file,name,image,filter,row,col,value",
        f"{REFERENCE},L,,,,,{float(run(load_problem(REFERENCE))['L'])!r}",
        f"{other},L,,,,,{float(run(load_problem(other))['L'])!r}",
    ]


def test_table_of_many_files_heads_each_with_its_name(tmp_path):
    other = variant(tmp_path, "other.json", Y=0)
    out = invoke("step", REFERENCE, other, "--only", "L").stdout
    assert f"==> {REFERENCE} <==" in out and f"==> {other} <==" in out


# -- terminal or pipe ----------------------------------------------------------------------


def test_pipe_gets_plain_text_at_full_width(tmp_path):
    wide = variant(tmp_path, X=[[0.5] * 40] * 6, W2=[0.1] * 38)
    environment = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    result = cnntrace_process("step", wide, env=environment)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout and "…" not in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("0 ") and "0.5000" in line)
    assert line.split()[-1] == "0.5000" and len(line.split()) == 41


def test_pipe_keeps_within_COLUMNS_where_it_is_set(tmp_path):
    wide = variant(tmp_path, X=[[0.5] * 40] * 6, W2=[0.1] * 38)
    result = cnntrace_process("step", wide, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout and "…" not in result.stdout
    assert max(map(len, result.stdout.splitlines())) <= 80
    assert "\ncolumns 0–" in result.stdout  # the 40 columns of X split into blocks


def test_force_color_colours_a_pipe_and_no_color_wins():
    import re

    colour = re.compile(r"\x1b\[(?:[0-9]+;)*3[0-8](?:;[0-9]+)*m")  # a foreground colour
    forced = cnntrace_process("step", REFERENCE, env={**os.environ, "FORCE_COLOR": "1"})
    assert colour.search(forced.stdout)
    env = {**os.environ, "FORCE_COLOR": "1", "NO_COLOR": "1"}
    assert not colour.search(cnntrace_process("step", REFERENCE, env=env).stdout)


def test_a_reader_that_goes_away_gets_no_traceback():
    result = subprocess.run(
        f"{sys.executable} -m cnntrace step {REFERENCE} {REFERENCE} {REFERENCE} | head -1",
        shell=True, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout == "==> " + str(REFERENCE) + " <==\n"
    assert result.stderr == ""


def test_ctrl_c_exits_130_without_traceback():
    import signal
    import time

    script = (
        "import sys, time; sys.argv = ['cnntrace', 'step', sys.argv[1]];"
        "import cnntrace.cli as cli, cnntrace.io as io;"
        "load = io.load_problem;"
        "io.load_problem = lambda path: (print('ready', flush=True), time.sleep(30), load(path))[2];"
        "cli.main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(REFERENCE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "Traceback" not in err and out == ""


# -- check ---------------------------------------------------------------------------------


def test_check_passes_on_the_reference_sample():
    result = invoke("check", REFERENCE)
    assert result.exit_code == 0, result.stdout
    assert "All gradients agree." in result.stdout
    for name in ("dL/dX", "dL/dW1", "dL/dB1", "dL/dW2", "dL/dB2"):
        assert name in result.stdout


def test_check_json_reports_every_tensor(tmp_path):
    data = json.loads(invoke("check", batch_of_filters(tmp_path), "-f", "json").stdout)
    assert data["ok"] is True
    assert set(data["tensors"]) == {"X", "W1", "B1", "W2", "B2"}
    assert data["tensors"]["X"]["checked"] == 2 * 6 * 6
    assert all(t["max_rel_error"] < 1e-6 for t in data["tensors"].values())


def test_check_fails_with_exit_1_when_a_gradient_is_wrong(monkeypatch):
    import cnntrace.ops as ops

    real = ops.relu_grad
    monkeypatch.setattr(ops, "relu_grad", lambda Z1: real(Z1) * 1.01)
    result = invoke("check", REFERENCE, "-f", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["tensors"]["W1"]["failures"] > 0
    assert data["tensors"]["W2"]["ok"] is True


def test_check_counts_a_tied_pool_window_as_a_kink(tmp_path):
    # A1's bottom-right window holds 0.375 twice when X[2][5] is 0.
    data = reference()
    data["X"][2][5] = 0
    data = json.loads(invoke("check", write(tmp_path, data), "-f", "json").stdout)
    assert data["ok"] is True
    assert data["tensors"]["W1"]["kinks"] > 0 and data["tensors"]["W1"]["failures"] == 0


def test_check_samples_large_tensors(tmp_path):
    path = variant(tmp_path, X=np.linspace(0, 1, 30 * 30).reshape(30, 30).tolist(), W2=[0.01] * 196)
    data = json.loads(invoke("check", path, "-f", "json", "--max-entries", "50").stdout)
    assert data["tensors"]["X"]["checked"] == 50 and data["tensors"]["X"]["entries"] == 900


# -- verify --------------------------------------------------------------------------------


def test_verify_accepts_steps_own_output_and_4_decimal_answers(tmp_path):
    full = json.loads(invoke("step", REFERENCE, "-f", "json").stdout)
    assert invoke("verify", REFERENCE, write(tmp_path, full, "a.json")).exit_code == 0
    rounded = {name: np.round(np.asarray(value), 4).tolist() for section in full.values() for name, value in section.items()}
    result = invoke("verify", REFERENCE, write(tmp_path, rounded, "b.json"))
    assert result.exit_code == 0, result.stdout
    assert f"{len(rounded)} of {len(rounded)} answers right." in result.stdout


def test_verify_accepts_steps_own_output_for_a_batch_of_several_filters(tmp_path):
    """Z1 of a batch with several filters is M×K×h×w: four levels, one more than an input."""
    path = batch_of_filters(tmp_path)
    full = json.loads(invoke("step", path, "-f", "json").stdout)
    assert np.ndim(full["forward"]["Z1"]) == 4
    result = invoke("verify", path, write(tmp_path, full, "a.json"))
    assert result.exit_code == 0, result.stdout + result.stderr


def test_verify_marks_each_wrong_entry_with_the_correct_value(tmp_path):
    trace = run(load_problem(REFERENCE))
    answer = np.round(trace["dL_dW1"], 4)
    answer[1, 2] += 0.01
    answers = write(tmp_path, {"dL_dW1": answer.tolist(), "P1": trace["P1"].tolist()}, "a.json")
    result = invoke("verify", REFERENCE, answers, "-f", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["results"]["P1"]["status"] == "right"
    wrong = data["results"]["dL_dW1"]["wrong"]
    assert [w["index"] for w in wrong] == [[1, 2]]
    assert wrong[0]["correct"] == trace["dL_dW1"][1, 2]
    table = invoke("verify", REFERENCE, answers).stdout
    assert "[1,2]" in table and "1 of 9 wrong" in table


def test_verify_reports_wrong_shapes_unknown_names_and_non_numbers(tmp_path):
    answers = write(tmp_path, {"P1": [1, 2, 3], "dL_dZ9": 1, "A2": "0.6", "L": [0.5104]}, "a.json")
    result = invoke("verify", REFERENCE, answers, "-f", "json")
    assert result.exit_code == 1 and result.stderr == ""
    results = json.loads(result.stdout)["results"]
    assert results["P1"]["status"] == "shape" and "expected 2×2" in results["P1"]["message"]
    assert results["dL_dZ9"]["status"] == "unknown" and "dL_dZ2" in results["dL_dZ9"]["message"]
    assert results["A2"]["status"] == "invalid"
    assert results["L"]["status"] == "right"  # [x] for a number is accepted


def test_verify_with_an_unreadable_answers_file_is_exit_2(tmp_path):
    result = invoke("verify", REFERENCE, write(tmp_path, "{oops", "a.json"))
    assert result.exit_code == 2 and result.stdout == "" and "a.json: is not valid JSON" in result.stderr


def test_verify_tolerances_are_options(tmp_path):
    trace = run(load_problem(REFERENCE))
    answers = write(tmp_path, {"L": round(float(trace["L"]), 1)}, "a.json")  # 0.5 for 0.5105
    # Written with one decimal, the answer is right to one decimal; asked for four it is not.
    assert invoke("verify", REFERENCE, answers).exit_code == 0
    asked = invoke("verify", REFERENCE, answers, "--decimals", "4", "-f", "json")
    assert asked.exit_code == 1
    assert [d["id"] for d in json.loads(asked.stdout)["results"]["L"]["diagnosis"]] == ["precision"]
    assert invoke("verify", REFERENCE, answers, "--decimals", "4", "--atol", "0.02").exit_code == 2
    assert invoke("verify", REFERENCE, answers, "--atol", "0.02").exit_code == 0
    assert invoke("verify", REFERENCE, answers, "--atol", "0.002").exit_code == 1


# -- init ----------------------------------------------------------------------------------


def test_init_is_reproducible_and_valid(tmp_path):
    first = invoke("init", "--seed", "3").stdout
    assert first == invoke("init", "--seed", "3").stdout
    assert first != invoke("init", "--seed", "4").stdout
    path = write(tmp_path, first)
    assert invoke("step", path, "-f", "json").exit_code == 0


@pytest.mark.parametrize(
    "args, X_shape, W1_shape",
    [
        (["--size", "8", "--kernel", "3"], (8, 8), (3, 3)),
        (["--size", "5x7", "--kernel", "2x3", "--filters", "3", "--batch", "4"], (4, 5, 7), (3, 2, 3)),
        (["--size", "3", "--kernel", "3"], (3, 3), (3, 3)),
    ],
)
def test_init_shapes(tmp_path, args, X_shape, W1_shape):
    output = tmp_path / "ex.json"
    result = invoke("init", *args, "--seed", "1", "-o", output)
    assert result.exit_code == 0 and result.stdout == "" and "wrote" in result.stderr
    problem = load_problem(output)
    assert problem.X.shape == X_shape and problem.inputs["W1"].shape == W1_shape


def test_init_notes_a_new_seed_in_the_file():
    data = json.loads(invoke("init").stdout)
    assert "--seed" in data["comment"]


@pytest.mark.parametrize("args", [["--size", "0"], ["--size", "abc"], ["--kernel", "9"], ["--filters", "0"], ["--batch", "-1"]])
def test_init_bad_options_are_usage_errors(args):
    result = invoke("init", *args)
    assert result.exit_code == 2 and result.stdout == ""


def test_init_from_a_picture(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    picture = np.zeros((40, 40), dtype=np.uint8)
    picture[:, 15:25] = 255  # a white vertical bar on black, columns 3 to 4 of 8
    Image.fromarray(picture).save(tmp_path / "bar.png")
    result = invoke("init", "--image", tmp_path / "bar.png", "--size", "8", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    X = np.array(json.loads(result.stdout)["X"])
    assert X.shape == (8, 8) and X.min() >= 0 and X.max() <= 1
    assert X[:, 3:5].mean() > 0.5 > X[:, :2].mean()
    inverted = np.array(json.loads(invoke("init", "--image", tmp_path / "bar.png", "--size", "8", "--invert").stdout)["X"])
    assert np.allclose(inverted, 1 - X, atol=1e-3)


def test_init_image_without_pillow_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    result = invoke("init", "--image", tmp_path / "x.png")
    assert result.exit_code == 2 and result.stdout == ""
    assert "pip install 'cnntrace[image]'" in result.stderr


def test_init_image_that_is_not_a_picture(tmp_path):
    pytest.importorskip("PIL")
    result = invoke("init", "--image", write(tmp_path, "not a picture", "x.png"))
    assert result.exit_code == 2 and "is not a picture" in result.stderr


# -- schema --------------------------------------------------------------------------------


def test_schema_names_every_key_the_reader_knows():
    from cnntrace.io import KNOWN_KEYS, LAYERS_KEYS, REQUIRED_KEYS

    data = json.loads(invoke("schema").stdout)
    assert data == json.loads(json.dumps(INPUT_SCHEMA))
    reference_form, layers_form = data["oneOf"]  # the file without layers, and with them
    assert set(reference_form["properties"]) == set(KNOWN_KEYS)
    assert reference_form["required"] == list(REQUIRED_KEYS)
    assert set(layers_form["properties"]) == set(LAYERS_KEYS) and "layers" in layers_form["required"]


def test_schema_accepts_the_samples_and_rejects_a_bad_file(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(reference(), INPUT_SCHEMA)
    jsonschema.validate(json.loads(invoke("init", "--batch", "3", "--filters", "2").stdout), INPUT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**reference(), "stride": 0}, INPUT_SCHEMA)


# -- conventions ---------------------------------------------------------------------------


def test_help_and_version_do_not_load_numpy_or_rich():
    # Through the console script's entry point; --version does not even need typer.
    for args, unwanted in (
        (["--version"], ("numpy", "rich.table", "rich.console", "typer")),
        (["--help"], ("numpy", "rich.table", "rich.console")),
        (["step", "--help"], ("numpy", "rich.table", "rich.console")),
    ):
        code = (
            "import sys; sys.argv = ['cnntrace', *sys.argv[1:]]\n"
            "from cnntrace.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {unwanted!r} if m in sys.modules), file=sys.stderr)"
        )
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
        assert result.stderr.strip().splitlines()[-1] == "[]", (args, result.stderr)


def test_names_in_json_are_the_stage_names():
    data = json.loads(invoke("step", REFERENCE, "-f", "json").stdout)
    assert [name for section in data.values() for name in section] == list(STAGE)


def test_init_draws_exercises_where_the_relu_does_something():
    from cnntrace.exercise import instructive

    for seed in range(20):
        data = json.loads(invoke("init", "--seed", str(seed)).stdout)
        del data["comment"]
        assert instructive(data), seed
        Z1 = np.array(run(load_problem_from(data))["Z1"])
        assert (Z1 > 0).any() and (Z1 < 0).any()


def load_problem_from(data):
    from cnntrace.io import problem_from_dict

    return problem_from_dict(data)


def test_version_from_the_console_script_path():
    from cnntrace import __version__

    result = cnntrace_process("--version")
    assert result.returncode == 0 and result.stdout == f"cnntrace {__version__}\n" and result.stderr == ""


def test_json_of_many_files_is_one_array_each_with_its_file(tmp_path):
    other = variant(tmp_path, "other.json", Y=0)
    bad = variant(tmp_path, "bad.json", W2=[1])
    result = invoke("step", REFERENCE, bad, other, "-f", "json", "--only", "L")
    assert result.exit_code == 2 and "bad.json" in result.stderr
    data = json.loads(result.stdout)
    assert [item["file"] for item in data] == [str(REFERENCE), str(other)]
    assert json.loads(invoke("step", bad, bad, "-f", "json").stdout) == []


@pytest.mark.parametrize("fmt, heading", [("markdown", "## `{}`"), ("latex", "\\section*{{\\texttt{{{}}}}}")])
def test_markdown_and_latex_of_many_files_head_each_file(tmp_path, fmt, heading):
    other = variant(tmp_path, "other_one.json", Y=0)
    out = invoke("step", REFERENCE, other, "-f", fmt, "--only", "L").stdout
    name = str(other).replace("_", "\\_") if fmt == "latex" else str(other)
    assert heading.format(REFERENCE) in out and heading.format(name) in out


def test_check_and_verify_refuse_nan_tolerances_and_negative_seeds():
    for args in (
        ["check", REFERENCE, "--rtol", "nan"], ["check", REFERENCE, "--eps", "inf"],
        ["check", REFERENCE, "--seed", "-5"], ["verify", REFERENCE, REFERENCE, "--atol", "nan"],
        ["train", REFERENCE, "--epochs", "1", "--shuffle", "--seed", "-1"],
    ):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 2 and result.stdout == "" and "Traceback" not in result.stderr, args


def test_check_works_where_the_sigmoid_saturates_past_float64(tmp_path):
    # Z2 = 800 and Y = 0: dL/dA2 = 1/(1 − A2) exceeds float64, the gradients do not.
    path = variant(tmp_path, W2=[0.0] * 4, B2=800.0, Y=0)
    step = invoke("step", path, "-f", "json")
    assert step.exit_code == 2 and "dL_dA2: exceeds float64: |Z2| is past about 709" in step.stderr
    check = invoke("check", path, "-f", "json")
    assert check.exit_code == 0 and json.loads(check.stdout)["ok"] is True


def test_an_input_too_large_for_memory_is_one_line(tmp_path, monkeypatch):
    import cnntrace.tracer as network

    def out_of_memory(problem):
        raise MemoryError

    monkeypatch.setattr(network, "run", out_of_memory)
    result = invoke("step", REFERENCE)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"cnntrace: {REFERENCE}: needs more memory than this machine has to give\n"


def test_check_says_when_no_entry_could_be_compared(tmp_path):
    # Every Z1 entry is exactly 0: any change of X or B1 flips the ReLU mask (a change of
    # W1 does not, as it multiplies zeros).
    path = variant(tmp_path, X=[[0.0] * 6] * 6, B1=0.0)
    data = json.loads(invoke("check", path, "-f", "json").stdout)
    assert data["tensors"]["X"]["compared"] == 0 and data["tensors"]["X"]["worst_index"] == []
    assert data["tensors"]["W1"]["compared"] == 9
    table = invoke("check", path).stdout
    assert "none could be compared" in table and "The gradients that could be compared agree." in table


@pytest.mark.parametrize(
    "args, key",
    [
        (["--size", "100000"], "--size"),
        (["--size", "600", "--batch", "10000"], "--size"),
        (["--size", "3000", "--kernel", "1500"], "--size"),
        (["--size", "58", "--batch", "10000"], "--size"),  # fits in memory, not in a file
    ],
)
def test_init_refuses_absurd_sizes_before_any_work(tmp_path, args, key):
    out = tmp_path / "out.json"
    result = invoke("init", *args, "-o", out)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"cnntrace: {key}: too large: ") and result.stderr.count("\n") == 1
    assert not out.exists()


def test_step_summarizes_a_large_matrix_and_full_shows_it(tmp_path):
    rng = np.random.default_rng(0)
    data = reference()
    data.update(X=rng.uniform(0, 1, (50, 50)).round(2).tolist(), W2=[0.01] * 24 * 24)
    path = write(tmp_path, data, "big.json")
    summarized = invoke("step", path, "--only", "dL_dX")
    assert summarized.exit_code == 0 and "--full shows all" in summarized.stdout
    assert "\n49 " in summarized.stdout and "\n20 " not in summarized.stdout
    full = invoke("step", path, "--only", "dL_dX", "--full")
    assert full.exit_code == 0 and "\n20 " in full.stdout and "--full shows all" not in full.stdout
    trained = invoke("train", path, "--epochs", "1")
    assert trained.exit_code == 0 and "W2   576   showing the first and last 8 entries" in trained.stdout
