"""Hostile input, by root cause (issue 24), through every command that reads a file and every
writer: reads bounded whatever the file is, no traceback and no warning, short messages
that name the key, destinations checked before the work, no data lost, and what the user
controls escaped for each format.

Each command fails with exit status 2, nothing on stdout and one short line on stderr; the
limits are made small here (1 MiB) so that a device or a FIFO past them is quick to read.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.errors import InputError
from tests.inputs import REFERENCE, reference, write

runner = CliRunner()

#: The longest message a refusal may print (a line of a few hundred characters: the message's
#: own words at most 500, the file's name at most 120, the key's 60).
SHORT = 700


def invoke(*args, input=None):
    """Run cnntrace with numpy's and Python's warnings turned into errors: a warning fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return runner.invoke(app, [str(arg) for arg in args], input=input)


def assert_refused(result, *fragments: str, status: int = 2):
    """Exit ``status``, nothing on stdout, one short line on stderr holding every fragment."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == status, (result.exit_code, result.stderr[:SHORT])
    assert result.stdout == "", result.stdout[:SHORT]
    assert result.stderr.count("\n") == 1 and len(result.stderr) <= SHORT, result.stderr[:2 * SHORT]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture
def small_limit(monkeypatch):
    """Input and answer files limited to 1 MiB, so that reading past the limit is quick."""
    import cnntrace.io

    monkeypatch.setattr(cnntrace.io, "MAX_INPUT_BYTES", 2**20)
    monkeypatch.setattr(cnntrace.io, "MAX_ANSWERS_BYTES", 2**20)


# -- 4. every read bounded, whatever the file is ---------------------------------------------------

#: Every command that reads an input file, given the hostile file ``bad`` and a good input.
READERS = {
    "step": lambda bad, good: ["step", bad],
    "step, the second file": lambda bad, good: ["step", good, bad, "-f", "json"],
    "check": lambda bad, good: ["check", bad],
    "explain": lambda bad, good: ["explain", bad, "Z1[0,0]"],
    "train": lambda bad, good: ["train", bad, "-n", "1"],
    "train --test": lambda bad, good: ["train", good, "-n", "1", "--test", bad],
    "sheet": lambda bad, good: ["sheet", bad],
    "quiz": lambda bad, good: ["quiz", bad],
    "verify FILE": lambda bad, good: ["verify", bad, good],
    "verify ANSWERS": lambda bad, good: ["verify", good, bad],
    "init --like": lambda bad, good: ["init", "--like", bad, "--seed", "1"],
}


def endless_fifo(directory: Path, name: str) -> Path:
    """A FIFO whose writer writes without end until its reader goes away."""
    path = directory / name
    os.mkfifo(path)

    def write_forever():
        try:
            with open(path, "wb") as fifo:
                while True:
                    fifo.write(b"[" * 65536)
        except OSError:  # the reader closed it: BrokenPipe
            pass

    threading.Thread(target=write_forever, daemon=True).start()
    return path


@pytest.mark.parametrize("command", list(READERS))
@pytest.mark.parametrize("source", ["/dev/zero", "fifo.json", "zero.npz"])
def test_every_read_is_bounded(tmp_path, small_limit, command, source):
    if source == "fifo.json":
        bad = endless_fifo(tmp_path, source)
    elif source == "zero.npz":
        bad = tmp_path / source
        bad.symlink_to("/dev/zero")
    else:
        bad = Path(source)
    good = write(tmp_path, reference())
    result = invoke(*READERS[command](bad, good))
    if command == "step, the second file":  # the first file's trace stands; the second is refused
        assert result.exit_code == 2 and "limited to 1 MiB" in result.stderr
        return
    assert_refused(result, str(bad), "gives more than 1 MiB", "files are limited to 1 MiB")


def test_a_regular_file_past_the_limit_is_refused_by_its_size(tmp_path, small_limit):
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (2**20 + 1))
    assert_refused(invoke("step", path), "is 1 MiB; input files are limited to 1 MiB")


class Grown(io.BytesIO):
    """A handle on a small regular file that gives more bytes than its size said: a file
    written to while it is read."""

    def __init__(self, data: bytes, real):
        super().__init__(data)
        self.real = real

    def fileno(self):
        return self.real.fileno()


@pytest.mark.parametrize("grown_to", [5_000, 2**20, 2**20 + 1, 3 * 2**20])
def test_a_file_that_grows_while_read_is_read_on_and_bounded(tmp_path, grown_to):
    from cnntrace.io import read_bounded

    path = tmp_path / "growing.json"
    path.write_bytes(b"{}")  # fstat says 2 bytes
    data = bytes(range(256)) * (grown_to // 256) + b"x" * (grown_to % 256)
    with open(path, "rb") as real:
        if grown_to <= 2**20:
            assert read_bounded(Grown(data, real), str(path), limit=2**20) == data
        else:
            with pytest.raises(InputError, match="gives more than 1 MiB"):
                read_bounded(Grown(data, real), str(path), limit=2**20)


def test_a_pipe_is_read_whole_in_pieces(tmp_path):
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    text = json.dumps(reference() | {"comment": "é" * 1_500_000}, ensure_ascii=False).encode()  # 3 MB: pieces of a MiB

    def write_all():
        with open(path, "wb") as fifo:
            fifo.write(text)

    threading.Thread(target=write_all, daemon=True).start()
    from cnntrace.io import read_bounded

    with open(path, "rb") as handle:
        assert read_bounded(handle, str(path)) == text


def test_an_unreadable_input_is_told_by_cnntrace_in_one_line(tmp_path, monkeypatch):
    """The command line does not test a file's permissions itself (click's 4-line usage error,
    which stopped the other files too): the read does, and says so in one line."""
    good = write(tmp_path, reference())
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as a user without read rights sees it
    assert invoke("step", good, "-f", "json").exit_code == 0  # no check but the read's own
    monkeypatch.undo()

    def denied(path, *args, **kwargs):
        if str(path) == str(bad):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    bad = tmp_path / "noread.json"
    bad.write_text("{}")
    real_open = open
    monkeypatch.setattr("builtins.open", denied)
    assert_refused(invoke("train", bad, "-n", "1"), "noread.json: permission denied")
    result = invoke("step", good, bad, "-f", "json")  # the good file is still traced
    assert result.exit_code == 2 and result.stdout.startswith("[{") and "noread.json: permission denied" in result.stderr


def test_a_picture_is_read_bounded(tmp_path, small_limit):
    pytest.importorskip("PIL")
    assert_refused(invoke("init", "--image", "/dev/zero", "--seed", "1"), "/dev/zero", "limited to 1 MiB")


def test_an_endless_answer_line_ends_the_quiz_and_the_record_is_written(tmp_path, monkeypatch):
    import cnntrace.quiz

    monkeypatch.setattr(cnntrace.quiz, "MAX_ANSWER_CHARS", 1000)
    record = tmp_path / "me.json"
    result = invoke("quiz", REFERENCE, "--only", "Z1", "--record", record, input="1 " * 5000 + "\n")
    assert result.exit_code == 1
    assert "the input is not read further" in result.stderr
    assert max(map(len, result.stderr.splitlines())) < SHORT  # the answer is not echoed whole
    assert json.loads(record.read_text())["score"] == 0


# -- 1. no traceback, 7. no warning ----------------------------------------------------------------


def reference_npz(path: Path, **strings: str) -> Path:
    arrays = {key: np.asarray(value) for key, value in reference().items() if key != "comment"}
    np.savez(path, **arrays, **{key: np.array(text) for key, text in strings.items()})
    return path


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("key", ["layers", "conventions", "loss"])
def test_deep_json_text_in_a_npz_string_is_refused_naming_the_key(tmp_path, key):
    strings = {"layers": '["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]', key: DEEP}
    path = reference_npz(tmp_path / "in.npz", **strings)
    assert_refused(invoke("step", path), f"in.npz: {key}: ", "nested too deeply")


def test_deep_json_text_in_a_comment_is_only_a_comment(tmp_path):
    path = reference_npz(tmp_path / "in.npz", comment=DEEP)
    result = invoke("step", path, "-f", "json", "--only", "Z1")
    assert result.exit_code == 0 and json.loads(result.stdout)["forward"]["Z1"]


@pytest.mark.parametrize("answer, answered", [
    ("[" + "9" * 400 + "]", ["skipped"]),  # beyond float64: OverflowError
    ("[" + "9" * 5000 + "]", ["skipped"]),  # beyond the digits Python reads: ValueError
    ("[" * 50_000 + "]" * 50_000, ["skipped"]),  # deeper than json reads: RecursionError
    ("[" * 100_000, []),  # never closed: "skip" is read as its next line, then the input ends
    ("x" * 100_000, ["skipped"]),  # garbage: echoed shortened
])
def test_hostile_answers_cost_no_try_and_the_record_is_written(tmp_path, answer, answered):
    record = tmp_path / "me.json"
    result = invoke("quiz", REFERENCE, "--only", "B2", "--record", record, input=answer + "\nskip\n")
    assert result.exit_code == 1, result.stderr[-SHORT:]
    assert "Traceback" not in result.stderr
    assert max(map(len, result.stderr.splitlines())) < SHORT
    assert [a["status"] for a in json.loads(record.read_text())["answers"]] == answered


@pytest.fixture
def overflowing(tmp_path) -> Path:
    """A legal input whose pass overflows float64 in the mistakes verify tries: B2 = 1e200."""
    return write(tmp_path, {**reference(), "B2": 1e200}, "big.json")


def test_verify_diagnoses_without_warnings(tmp_path, overflowing):
    step = json.loads(invoke("step", overflowing, "-f", "json").stdout)
    answers = {name: (np.asarray(value) * 1.5 + 0.3).tolist()
               for section in ("forward", "backward") for name, value in step[section].items()}  # fmt: skip
    result = invoke("verify", overflowing, write(tmp_path, answers, "answers.json"))
    assert result.exit_code == 1 and "Warning" not in result.stderr


def test_the_quiz_diagnoses_without_warnings(tmp_path, overflowing):
    result = invoke("quiz", overflowing, "--only", "Z2,dL_dZ2,dL_dW2", input="1e300\n" * 9)
    assert result.exit_code == 1 and "Warning" not in result.stderr and "wrong" in result.stderr


# -- 2. short messages, 3. a damaged file named damaged, 9. both keys of a mismatch ----------------

HUGE = "x" * 1_000_000


@pytest.mark.parametrize("data, key", [
    ({"layers": [HUGE]}, "layers[0]"),
    ({"layers": [{"type": HUGE}]}, "layers[0]"),
    ({"layers": [{"type": "conv", HUGE: 1}]}, "layers[0]"),
    ({"layers": [{"type": "conv", "stride": HUGE}]}, "layers[0].stride"),
    ({"layers": [{"type": "leaky_relu", "alpha": HUGE}]}, "layers[0].alpha"),
    ({"layers": ["flatten", "dense"], "loss": HUGE}, "loss"),
    ({**reference(), "conventions": {"relu_grad_at_zero": HUGE}}, "conventions.relu_grad_at_zero"),
    ({**reference(), "conventions": {HUGE: 1}}, "conventions."),
])
def test_a_huge_value_is_echoed_shortened(tmp_path, data, key):
    path = write(tmp_path, {"X": [[1.0, 2.0], [3.0, 4.0]], "Y": 1, **data})
    assert len(path.read_text()) > 1_000_000
    assert_refused(invoke("step", path), key, "…")


def test_a_npz_whose_header_claims_more_than_it_holds_is_called_damaged(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in reference().items():
            if key != "comment":
                member = io.BytesIO()
                np.save(member, np.asarray(value))
                archive.writestr(f"{key}.npy", header.getvalue() + b"\0" * 16 if key == "X" else member.getvalue())
    assert path.stat().st_size < 4096
    for args in (["step", path], ["verify", REFERENCE, path], ["train", path, "-n", "1"]):
        assert_refused(invoke(*args), "forged.npz: X: ", "damaged", "1000000000000 entries")


@pytest.mark.parametrize("shape", [b"(9999999999, ", b"(1,2,3)]]]] ", b"(1e400,)     ", b"(-1, 28, 28) ", b"(None,)      "])
def test_a_npz_whose_header_text_is_broken_is_called_damaged(tmp_path, shape):
    """numpy's parser of a header's text raises more than ValueError (an unclosed bracket: a
    tokenize.TokenError); each is the file's fault, told in one line."""
    X = _npy(np.zeros((200, 28, 28)))
    assert b"(200, 28, 28)" in X
    path = tmp_path / "broken.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", X.replace(b"(200, 28, 28)", shape))  # the same length
        archive.writestr("layers.npy", _npy(np.array('["flatten", "dense", "softmax"]')))
    for args in (["step", path], ["train", path, "-n", "1"]):
        assert_refused(invoke(*args), "broken.npz: X: ", "damaged")


def _npy(array) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_a_mismatch_between_two_keys_names_both(tmp_path):
    data = {"X": [[1.0] * 4] * 4, "layers": ["flatten", "dense", "softmax"], "Y": 2,
            "W1": [[0.1] * 3] * 16, "B1": [0.0, 0.0]}  # fmt: skip
    assert_refused(invoke("step", write(tmp_path, data)), "B1: expected 3 biases", "W1 (16×3) has 3 outputs")
    data = {**reference(), "W1": [[[0.0] * 3] * 3] * 2, "B1": [0.0] * 3}
    assert_refused(invoke("step", write(tmp_path, data)), "B1: expected 2 biases", "W1 (2×3×3) has 2 filters")


CONV_3 = {"X": [[[0.1] * 6] * 6] * 2, "Y": 1, "W1": [[[[0.1] * 3] * 3] * 2] * 3, "B1": [0.0] * 3}  # 3 filters


@pytest.mark.parametrize("layers, weights, fragments", [
    (["conv", "batchnorm", "relu", "flatten", "dense", "sigmoid"],  # γ, β: one per channel of W1's
     {"W2": [1.0] * 2, "B2": [0.0] * 3, "W3": [0.1] * 48, "B3": 0}, ["W2: expected 3 numbers for γ"]),
    (["conv", "batchnorm", "relu", "flatten", "dense", "sigmoid"],
     {"W2": [1.0] * 3, "B2": [0.0] * 2, "W3": [0.1] * 48, "B3": 0}, ["B2: expected 3 numbers for β"]),
    (["conv", "batchnorm", "relu", "flatten", "dense", "sigmoid"],  # the running statistics
     {"W2": [1.0] * 3, "B2": [0.0] * 3, "mean2": [0.0] * 2, "var2": [1.0] * 3, "W3": [0.1] * 48, "B3": 0},
     ["mean2: expected 3 numbers, the running mean"]),
    (["conv", "relu", "maxpool", "conv", "flatten", "dense", "sigmoid"],  # the next conv's channels
     {"W2": [[[[0.1]]] * 2], "B2": [0.0], "W3": [0.1] * 4, "B3": 0}, ["W2: ", "but P1 has 3"]),
    (["conv", {"type": "conv", "groups": 2}, "relu", "flatten", "dense", "sigmoid"],  # grouped
     {"W2": [[[[0.1]]]] * 2, "B2": [0.0] * 2, "W3": [0.1] * 32, "B3": 0}, ["groups: 2 groups must divide", "Z1 has 3"]),
    (["conv", "relu", "conv_transpose", "flatten", "dense", "sigmoid"],  # conv_transpose: C first
     {"W2": [[[[0.1]]]] * 2, "B2": [0.0], "W3": [0.1] * 16, "B3": 0}, ["W2: W is C×(K/groups)", "A1 has 3"]),
    (["conv", "relu", "flatten", "dense", "sigmoid"],  # the dense weights against the maps flattened
     {"W2": [0.1] * 47, "B2": 0}, ["W2: expected 48 weights"]),
])
def test_a_mismatch_with_the_layer_before_names_the_key_that_fixed_the_channels(tmp_path, layers, weights, fragments):
    data = {**CONV_3, "layers": layers, **weights}
    assert_refused(invoke("step", write(tmp_path, data)), *fragments, "W1 (3×2×3×3) has 3 filters")


def test_batch_norm_after_a_dense_layer_names_its_outputs(tmp_path):
    data = {"X": [[0.1, 0.2, 0.3]] * 2, "Y": [1, 0], "layers": ["dense", "batchnorm", "relu", "dense", "sigmoid"],
            "W1": [[0.1] * 2] * 3, "B1": [0, 0], "W2": [1, 1, 1], "B2": [0, 0], "W3": [0.1] * 2, "B3": 0}  # fmt: skip
    assert_refused(invoke("step", write(tmp_path, data)), "W2: expected 2 numbers for γ, one per unit",
                   "W1 (3×2) has 2 outputs: one of the two is wrong")  # fmt: skip
    data = {**data, "layers": ["batchnorm", "dense", "sigmoid"], "W1": [1.0] * 2, "B1": [0.0] * 3,
            "W2": [0.1] * 3, "B2": 0}  # fmt: skip
    assert_refused(invoke("step", write(tmp_path, data)), "W1: expected 3 numbers for γ", "X has 3 units")


# -- 5. destinations checked before the work, 6. no data lost --------------------------------------

#: Every writer: its arguments, given the input and its destination.
WRITERS = {
    "step --html": lambda source, out: ["step", source, "--html", out],
    "step --svg": lambda source, out: ["step", source, "--svg", out],
    "sheet -o": lambda source, out: ["sheet", source, "-o", out],
    "init -o": lambda source, out: ["init", "--seed", "1", "-o", out],
    "train --save": lambda source, out: ["train", source, "-n", "1", "--save", out],
    "quiz --record": lambda source, out: ["quiz", source, "--record", out],
    "export -o": lambda source, out: ["export", source, "--to", "torch", "-o", out],
}


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("where", ["absent/out.json", "in.json/out.json", "."])
def test_a_destination_that_cannot_be_written_is_refused_before_anything_is_printed(tmp_path, writer, where):
    source = write(tmp_path, reference())
    target = tmp_path / where
    assert_refused(invoke(*WRITERS[writer](source, target)), "cannot be written")


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_write_protected_file_is_refused_unless_forced(tmp_path, writer):
    source = write(tmp_path, reference())
    target = tmp_path / "protected.json"
    target.write_text("mine\n")
    target.chmod(0o444)
    assert_refused(invoke(*WRITERS[writer](source, target)), "protected.json: is write-protected (mode 0444)", "--force")
    assert target.read_text() == "mine\n"
    result = invoke(*WRITERS[writer](source, target), "--force", input="quit\n")
    assert result.exit_code in (0, 1) and target.read_text() != "mine\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o444  # the file keeps its own mode


def test_a_diverged_training_does_not_replace_a_saved_model(tmp_path):
    source = write(tmp_path, reference())
    saved = tmp_path / "model.json"
    saved.write_text("the model of yesterday\n")
    result = invoke("train", source, "-n", "3", "--lr", "1e200", "--save", saved)
    partial = tmp_path / "model.partial.json"
    assert_refused(result, "diverged", f"parameters to {partial}, not over {saved}", "--save-partial", status=1)
    assert saved.read_text() == "the model of yesterday\n" and json.loads(partial.read_text())["W1"]
    result = invoke("train", source, "-n", "3", "--lr", "1e200", "--save", saved, "--save-partial")
    assert result.exit_code == 1 and json.loads(saved.read_text())["W1"]


def test_a_training_that_ends_worse_does_not_replace_a_saved_model(tmp_path):
    source = write(tmp_path, reference())
    saved = tmp_path / "model.json"
    saved.write_text("the model of yesterday\n")
    result = invoke("train", source, "-n", "1", "--lr", "1e-30", "--save", saved)  # no better: the same loss
    assert result.exit_code == 0 and "not over" in result.stderr and "no better" in result.stderr
    assert saved.read_text() == "the model of yesterday\n"
    result = invoke("train", source, "-n", "5", "--save", saved)  # better: replaced
    assert result.exit_code == 0 and json.loads(saved.read_text())["W1"]


def test_train_keeps_only_the_last_parameters(tmp_path, monkeypatch):
    import dataclasses

    kept = []
    original = dataclasses.replace

    def counting(record, **changes):
        if "parameters" in changes:  # an epoch's record, as the history keeps it
            kept.append(changes)
        return original(record, **changes)

    monkeypatch.setattr(dataclasses, "replace", counting)
    result = invoke("train", write(tmp_path, reference()), "-n", "4", "-f", "json")
    assert result.exit_code == 0 and len(json.loads(result.stdout)["history"]) == 4
    assert len(kept) == 4 and all(changes["parameters"] is None for changes in kept)


# -- 10. escaping for each format -------------------------------------------------------------------

INJECTED = 'x"><img src=x onerror=alert(1)>`<b>`\x1b[31m.json'


@pytest.fixture
def hostile_name(tmp_path) -> Path:
    return write(tmp_path, reference(), INJECTED)


def test_html_escapes_file_names(tmp_path, hostile_name):
    page = tmp_path / "page.html"
    result = invoke("step", hostile_name, REFERENCE, "-f", "json", "--html", page)
    assert result.exit_code == 0
    text = page.read_text()
    assert "<img" not in text and "<b>" not in text and "\x1b" not in text
    assert 'data-file="' in text and "&quot;&gt;&lt;img" in text


def test_markdown_headings_fence_backticks(tmp_path, hostile_name):
    from cnntrace.render.markdown import code

    result = invoke("step", hostile_name, REFERENCE, "-f", "markdown", "--only", "Z1")
    heading = next(line for line in result.stdout.splitlines() if INJECTED[:5] in line)
    assert heading.startswith("## ``/") and heading.endswith(".json``") and "\x1b" not in heading
    assert code("a`b") == "``a`b``" and code("`a") == "`` `a ``" and code("a\nb") == "`a\\nb`"
    sheet = invoke("sheet", hostile_name).stdout.splitlines()[0]
    assert sheet.startswith("# Worksheet: ``x") and "\x1b" not in sheet


def test_latex_escapes_file_names(tmp_path):
    name = "a%b\n\\input{x}.json"
    path = write(tmp_path, reference(), name)
    result = invoke("sheet", path, "-f", "latex")
    line = next(line for line in result.stdout.splitlines() if "texttt" in line)
    assert r"a\%b\textbackslash{}n\textbackslash{}input\{x\}.json" in line
    several = invoke("step", path, REFERENCE, "-f", "latex", "--only", "Z1").stdout
    assert "\\input{x}" not in several


def test_svg_and_the_terminal_escape_file_names(tmp_path, hostile_name):
    picture = tmp_path / "table.svg"
    result = invoke("step", hostile_name, REFERENCE, "--svg", picture, "--only", "Z1")
    assert result.exit_code == 0 and "\x1b" not in result.stdout and "==> " in result.stdout
    text = picture.read_text()
    assert "<img" not in text and "\x1b" not in text


# -- 8. one resource model: memory and work estimated up front, progress where it is long ----------


def dense_network(tmp_path: Path, n_in: int, n_out: int) -> Path:
    data = {"X": [0.5] * n_in, "layers": ["dense", "softmax"], "Y": 0,
            "W1": [[0.01] * n_out] * n_in, "B1": [0.0] * n_out}  # fmt: skip
    return write(tmp_path, data, "dense.json")


def test_the_weights_and_the_copies_training_keeps_are_counted(tmp_path, monkeypatch):
    import cnntrace.limits

    path = dense_network(tmp_path, 1000, 20)  # 20,020 weights: 160 KB a copy
    monkeypatch.setattr(cnntrace.limits, "MAX_PASS_BYTES", 1_000_000)
    assert invoke("step", path, "-f", "json").exit_code == 0  # five copies: 0.8 MB
    assert_refused(invoke("train", path, "-n", "1"), "dense.json: X: too large", "20020 weights",
                   "training would need about")  # eight copies: 1.28 MB


@pytest.mark.parametrize(("physical", "container", "limit"), [
    (64 * 2**30, None, 4 * 2**30),  # a large machine: 4 GiB
    (6 * 2**30, None, 3 * 2**30),  # a small one: half its memory
    (64 * 2**30, "max\n", 4 * 2**30),  # a container without a limit
    (64 * 2**30, "2147483648\n", 2**30),  # a container's 2 GiB: half of it
    (64 * 2**30, "garbage", 4 * 2**30),
])  # fmt: skip
def test_a_pass_may_use_half_of_a_small_machines_memory(tmp_path, monkeypatch, physical, container, limit):
    import cnntrace.limits

    pages = {"SC_PHYS_PAGES": physical // 4096, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(cnntrace.limits.os, "sysconf", pages.__getitem__)
    cgroup = tmp_path / "memory.max"
    if container is not None:
        cgroup.write_text(container)
    monkeypatch.setattr(cnntrace.limits, "CGROUP_MEMORY", str(cgroup))
    assert cnntrace.limits.pass_memory() == limit


def test_a_dense_layer_works_n_in_times_n_out_per_image(tmp_path):
    from cnntrace.io import load_problem

    small, wide = (load_problem(dense_network(tmp_path, 1000, n)).size()[1] for n in (5, 10))
    assert wide - small == 1000 * 5  # the softmax's work does not grow by n_in


def test_a_check_too_long_is_refused_naming_max_entries(tmp_path, monkeypatch):
    import cnntrace.limits

    monkeypatch.setattr(cnntrace.limits, "MAX_COMMAND_WORK", 10**8)
    result = invoke("check", REFERENCE)
    assert_refused(result, "--max-entries: checking 51 entries takes two passes each", "try --max-entries ")
    fits = result.stderr.rsplit(" ", 1)[1].strip()
    assert invoke("check", REFERENCE, "--max-entries", fits).exit_code == 0


@pytest.mark.parametrize("args, unit", [(["train", "-n", "3"], "epoch"), (["check"], "entry")])
def test_progress_is_written_as_lines_where_stderr_is_no_terminal(tmp_path, monkeypatch, args, unit):
    import cnntrace.cli

    monkeypatch.setattr(cnntrace.cli, "PROGRESS_EVERY", 0.0)
    command, *options = args
    result = invoke(command, REFERENCE, *options)
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"cnntrace: {unit} ")]
    assert result.exit_code == 0 and len(lines) >= 3 and " of " in lines[0] and lines[-1].endswith(" s")


def test_a_fifo_or_a_device_is_written_into_never_renamed_over(tmp_path):
    """``-o /dev/null`` or a pipe: an atomic write's rename would put a regular file there."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []

    def read():
        with open(fifo, "rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    result = invoke("init", "--seed", "1", "-o", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0 and stat.S_ISFIFO(fifo.stat().st_mode)
    assert json.loads(received[0])["X"]


@pytest.mark.parametrize("args", [["--size", "200"], ["--size", "33x32"], ["--size", "16", "--batch", "5"]])
def test_a_hand_exercise_too_large_for_paper_is_refused_at_once(args):
    assert_refused(invoke("init", "--hand", "--seed", "1", *args), "--hand: makes an exercise for pencil and paper")


def test_a_hand_exercise_like_a_large_file_is_refused_at_once(tmp_path):
    data = {**reference(), "X": [[0.0] * 40] * 40, "W2": [0.0] * 361}
    assert_refused(invoke("init", "--hand", "--like", write(tmp_path, data), "--seed", "1"), "this X has 1600 (40×40)")


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_an_answer_file_is_limited_to_32_mib(tmp_path, suffix):
    from cnntrace.io import MAX_ANSWERS_BYTES

    answers = tmp_path / f"answers{suffix}"
    with open(answers, "wb") as handle:
        handle.truncate(MAX_ANSWERS_BYTES + 1)
    assert_refused(invoke("verify", REFERENCE, answers), "is 32 MiB; answer files are limited to 32 MiB")
    assert_refused(invoke("verify", REFERENCE, "/dev/zero"), "gives more than 32 MiB; answer files are limited to 32 MiB")


@pytest.mark.parametrize("args", [[], ["-f", "latex", "--key"]])
def test_a_worksheet_too_large_for_paper_is_refused_before_it_is_made(tmp_path, monkeypatch, args):
    import cnntrace.render.sheet

    monkeypatch.setattr(cnntrace.render.sheet, "MAX_SHEET_BYTES", 1000)  # the reference has more than 62 entries
    target = tmp_path / "sheet.md"
    assert_refused(invoke("sheet", REFERENCE, *args, "-o", target), "X: too large for a worksheet: its ", "entries")
    assert not target.exists()
    monkeypatch.setattr(cnntrace.render.sheet, "MAX_SHEET_BYTES", 10**5)
    assert invoke("sheet", REFERENCE, *args, "-o", target).exit_code == 0 and target.exists()


def test_a_test_set_of_one_image_is_evaluated_after_batch_norm(tmp_path):
    """Batch norm in training after a dense layer refuses a batch of one image; a test set is
    evaluated with the running statistics, so one test image is a test set."""
    data = {"X": [[0.1, 0.2, 0.3], [0.3, 0.1, 0.0], [0.5, 0.5, 0.1]], "Y": [0, 1, 0],
            "layers": ["dense", "batchnorm", "relu", "dense", "softmax"],
            "W1": [[0.1, 0.2], [0.3, -0.1], [0.2, 0.2]], "B1": [0, 0], "W2": [0.5, 0.5], "B2": [0, 0],
            "W3": [[0.1, 0.2], [0.3, 0.4]], "B3": [0, 0]}  # fmt: skip
    source = write(tmp_path, data, "bn.json")
    for test in ({"X": [0.1, 0.2, 0.3], "Y": 1}, {"X": [[0.1, 0.2, 0.3]], "Y": [1]}):
        result = invoke("train", source, "-n", "2", "--test", write(tmp_path, test, "test.json"), "-f", "json")
        assert result.exit_code == 0, result.stderr
        assert np.isfinite(json.loads(result.stdout)["history"][-1]["test_loss"])
    one = write(tmp_path, {**data, "X": data["X"][:1], "Y": data["Y"][:1]}, "one.json")
    assert_refused(invoke("train", one, "-n", "1"), "one.json: layers[1]: batch norm in training")


# -- 8. explanations and the page: their size estimated from each kind's terms, before the pass --


def _some_entries(shape):
    """The first, a middle and the last entry of a matrix of ``shape``."""
    if not shape:
        return [()]
    picks = {tuple(0 for _ in shape), tuple(n // 2 for n in shape), tuple(n - 1 for n in shape)}
    return sorted(picks)


@pytest.mark.parametrize("case", __import__("tests.kinds", fromlist=["ALL_CASES"]).ALL_CASES, ids=lambda case: case.id)
def test_each_kind_counts_the_terms_of_its_explanations(case):
    """Layer.terms (Loss.terms) bounds the terms of every explanation of its stages, the
    estimate explain and the page are refused by; and it is not far above it."""
    from cnntrace.budget import entry_terms
    from cnntrace.explain import explain_entry
    from cnntrace.io import problem_from_dict
    from cnntrace.tracer import run
    from tests.kinds import make

    problem = problem_from_dict(make(case, 0, 2, (1, 1)))
    trace = run(problem)
    for stage in trace.stages:
        bound = entry_terms(problem, stage.name)
        counts = [len(explain_entry(trace, stage.name, index).terms) for index in _some_entries(np.shape(trace[stage.name]))]
        assert max(counts) <= bound.kept <= bound.steps, (stage.name, counts, bound)
        assert bound.kept <= 4 * max(max(counts), 4), (stage.name, counts, bound)  # an estimate, not a guess


def test_an_explanation_too_large_is_refused_before_the_pass(tmp_path, monkeypatch):
    import cnntrace.limits
    import cnntrace.tracer

    monkeypatch.setattr(cnntrace.limits, "TERM_BYTES", 2**30)  # the reference's dL/dW1 entries have 16 terms
    ran = []
    monkeypatch.setattr(cnntrace.tracer, "run", lambda problem: ran.append(problem))
    assert_refused(invoke("explain", REFERENCE, "dL_dW1[0,1]"), "reference.json: dL_dW1[0,1]: too large: its "
                   "explanation has up to 16 terms, and explaining it would need about 16 GiB of memory")  # fmt: skip
    assert not ran
    monkeypatch.setattr(cnntrace.limits, "TERM_BYTES", 1500)
    monkeypatch.setattr(cnntrace.limits, "TERM_COST", 10**10)  # 16 terms: about 1.6 minutes
    assert_refused(invoke("explain", REFERENCE, "dL_dW1[0,1]"), "explaining it would take about 1.6 minutes; "
                   "cnntrace allows about 60 s")  # fmt: skip


def _without_a_recipe(tmp_path, monkeypatch) -> Path:
    """The reference written as layers, its convolution's recipe taken away: a kind without a
    recipe for the page's script, whose every shown entry the page explains in Python."""
    from cnntrace.layers.conv import Conv

    monkeypatch.setattr(Conv, "has_recipe", lambda self, name: False)
    monkeypatch.setattr(Conv, "recipe", lambda self, t, name: None)
    data = reference() | {"layers": ["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]}
    return write(tmp_path, data, "plain.json")


def test_a_page_too_large_is_refused_before_anything_is_printed(tmp_path, monkeypatch):
    import cnntrace.limits

    page = tmp_path / "page.html"
    plain = _without_a_recipe(tmp_path, monkeypatch)
    monkeypatch.setattr(cnntrace.limits, "MAX_COMMAND_WORK", 5 * 10**7)  # the whole page's: 10⁸; Z1's: 2·10⁷
    result = invoke("step", plain, "--html", page, "-f", "json")
    assert_refused(result, "plain.json: X: too large: the page explains every entry it shows, and making "
                   "the page would take about")  # fmt: skip
    assert not page.exists()
    assert invoke("step", plain, "--html", page, "--only", "Z1", "-f", "json").exit_code == 0  # fewer entries
    monkeypatch.setattr(cnntrace.limits, "MAX_COMMAND_WORK", 10**12)
    monkeypatch.setattr(cnntrace.limits, "PAGE_ENTRY_BYTES", 2**28)  # 62 entries shown: 16 GiB
    assert_refused(invoke("step", plain, "--html", page), "the page would need about")


def test_the_page_counts_only_the_explanations_it_makes_in_python(tmp_path, monkeypatch):
    """Stages whose kind has a recipe are explained by the page's script, on a click: they
    cost the page their cells, not their explanations."""
    from cnntrace.budget import page_cost
    from cnntrace.io import load_problem

    with_recipes = page_cost(load_problem(write(tmp_path, reference() | {"layers": [
        "conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]}, "layers.json")))  # fmt: skip
    without = page_cost(load_problem(_without_a_recipe(tmp_path, monkeypatch)))
    assert with_recipes.work * 2 < without.work


@pytest.mark.parametrize("args, what", [
    (["step", REFERENCE, "-f", "json", "--html", "PAGE"], "the page"),
    (["explain", REFERENCE, "dL_dW1[0,1]"], "the explanation"),
    (["step", REFERENCE, "-f", "json"], "the pass"),
    (["step", REFERENCE, "-f", "csv"], "the output"),
    (["verify", REFERENCE, "ANSWERS"], "the judging"),
    (["sheet", REFERENCE, "--key"], "the sheet"),
])
def test_long_work_says_how_far_it_is_where_stderr_is_no_terminal(tmp_path, monkeypatch, args, what):
    import time

    import cnntrace.cli
    import cnntrace.limits

    monkeypatch.setattr(cnntrace.cli, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(cnntrace.cli, "PROGRESS_EVERY", 0.02)
    monkeypatch.setattr(cnntrace.limits, "MAX_WORK_SECONDS", 10**6)  # every estimate long
    if what == "the output":  # each piece written slowly
        original_pieces = cnntrace.cli._pieces
        monkeypatch.setattr(cnntrace.cli, "_pieces", lambda rendered: (time.sleep(0.05) or piece
                                                                       for piece in original_pieces(rendered)))  # fmt: skip
    else:  # slow the work down so that it lasts several of those lines
        import cnntrace.render.explanation
        import cnntrace.render.html
        import cnntrace.render.sheet
        import cnntrace.tracer
        import cnntrace.verify

        module, function = {"the pass": (cnntrace.tracer, "run"), "the judging": (cnntrace.verify, "judge"),
                            "the sheet": (cnntrace.render.sheet, "content"),
                            "the page": (cnntrace.render.html, "_page_data"),
                            "the explanation": (cnntrace.render.explanation, "render_text")}[what]  # fmt: skip
        original = getattr(module, function)
        monkeypatch.setattr(module, function, lambda *a, **k: (time.sleep(0.2), original(*a, **k))[1])
    answers = write(tmp_path, {"Z1": [[0.0] * 4] * 4, "B2": 1.0}, "answers.json")
    args = [tmp_path / "page.html" if arg == "PAGE" else answers if arg == "ANSWERS" else arg for arg in args]
    result = invoke(*args)
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"cnntrace: {what}: ")]
    assert result.exit_code == (1 if what == "the judging" else 0), result.stderr[-SHORT:]  # wrong answers: 1
    assert lines and lines[0].endswith("(estimated)"), result.stderr[-SHORT:]


def test_explaining_a_sum_over_a_2000_square_image_is_refused_before_the_pass(tmp_path, monkeypatch):
    """4 million terms, 4.8 GiB: refused before the pass, having only read the file."""
    import cnntrace.tracer

    ran = []
    monkeypatch.setattr(cnntrace.tracer, "run", lambda problem: ran.append(problem))
    rng = np.random.default_rng(0)
    path = tmp_path / "big.npz"
    np.savez(path, X=rng.random((2000, 2000)), Y=1.0, W1=rng.random((3, 3)), B1=0.1, W2=rng.random(999 * 999), B2=0.0)
    assert_refused(invoke("explain", path, "dL_dW1[0,0]"), "big.npz: dL_dW1[0,0]: too large: its explanation has "
                   "up to 3992004 terms", "cnntrace allows 4 GiB")  # fmt: skip
    assert not ran


def test_a_sheet_whose_worked_entries_are_too_large_is_refused_before_the_pass(tmp_path, monkeypatch):
    import cnntrace.limits
    import cnntrace.tracer

    monkeypatch.setattr(cnntrace.limits, "TERM_BYTES", 2**27)  # the reference's questions: about 70 terms
    ran = []
    monkeypatch.setattr(cnntrace.tracer, "run", lambda problem: ran.append(problem))
    target = tmp_path / "sheet.md"
    assert_refused(invoke("sheet", REFERENCE, "--key", "-o", target), "reference.json: X: too large: its worked "
                   "entries have up to", "making the sheet would need about")  # fmt: skip
    assert not ran and not target.exists()


def test_answers_too_many_to_judge_are_refused_before_the_judging(tmp_path, monkeypatch):
    import cnntrace.limits

    monkeypatch.setattr(cnntrace.limits, "ANSWER_BYTES", 2**28)  # 36 entries of the reference's X
    answers = write(tmp_path, {"X": reference()["X"], "B2": -0.5}, "answers.json")
    assert_refused(invoke("verify", REFERENCE, answers), "answers.json: X: too large: 37 entries answered, and "
                   "judging them would need about 9.25 GiB of memory")  # fmt: skip
    monkeypatch.setattr(cnntrace.limits, "ANSWER_BYTES", 500)
    monkeypatch.setattr(cnntrace.limits, "ANSWER_COST", 10**11)
    assert_refused(invoke("verify", REFERENCE, answers), "judging them would take about 37 minutes; cnntrace allows about 10 minutes")


def test_a_hand_exercise_says_how_far_it_is_where_stderr_is_no_terminal(monkeypatch):
    import time

    import cnntrace.cli
    import cnntrace.exercise

    monkeypatch.setattr(cnntrace.cli, "PROGRESS_EVERY", 0.02)
    original = cnntrace.exercise.hand_report
    monkeypatch.setattr(cnntrace.exercise, "hand_report", lambda problem: (time.sleep(0.01), original(problem))[1])
    result = invoke("init", "--hand", "--seed", "1", "--size", "5")
    lines = [line for line in result.stderr.splitlines() if line.startswith("cnntrace: the hand exercise: ")]
    assert result.exit_code == 0 and lines and lines[0].endswith("of about 20 s (estimated)"), result.stderr[-SHORT:]
    assert json.loads(result.stdout)["X"]


@pytest.mark.parametrize("suffix, package, extra", [
    (".onnx", "onnx", []),
    (".pt", "torch", ["--layers", "LAYERS"]),
    (".safetensors", "safetensors", ["--layers", "LAYERS"]),
    (".npy", "torch", ["--layers", "LAYERS", "--input", "ZERO"]),  # a real state_dict, X the endless one
])
def test_import_reads_a_model_bounded(tmp_path, small_limit, suffix, package, extra):
    pytest.importorskip(package)
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    layers = write(tmp_path, {**reference(), "layers": ["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]},
                   "layers.json")  # fmt: skip
    model = zero
    if suffix == ".npy":
        import torch

        model = tmp_path / "model.pt"
        torch.save({"0.weight": torch.zeros(1, 1, 3, 3), "0.bias": torch.zeros(1), "4.weight": torch.zeros(1, 4),
                    "4.bias": torch.zeros(1)}, model)  # fmt: skip
    args = [layers if arg == "LAYERS" else zero if arg == "ZERO" else arg for arg in extra]
    assert_refused(invoke("import", model, *args, "-o", tmp_path / "out.json"), f"zero{suffix}: gives more than 1 MiB")


TITLE = "50% off \\input{x} a\\\\b x & y # z a_b^c ~d {oops $x$ `<b>` \x1b[31m"


def test_a_sheet_title_is_escaped_for_latex_and_markdown(tmp_path):
    latex = invoke("sheet", REFERENCE, "-f", "latex", "--standalone", "--title", TITLE)
    heading = next(line for line in latex.stdout.splitlines() if line.startswith("\\section*"))
    assert heading.startswith(r"\section*{50\% off \textbackslash{}input\{x\} a\textbackslash{}\textbackslash{}b "
                              r"x \& y \# z a\_b\^{}c \~{}d \{oops \$x\$ `<b>` \textbackslash{}u001b[31m: worksheet: ")  # fmt: skip
    markdown = invoke("sheet", REFERENCE, "--title", TITLE).stdout.splitlines()[0]
    assert "<b>" not in markdown and "\x1b" not in markdown and "\\`" in markdown
    lines = invoke("sheet", REFERENCE, "--title", "x\n# injected\n<script>").stdout.splitlines()
    assert lines[0].startswith(r"# x\\n# injected\\n\<script\>: worksheet") and "<script>" not in "".join(lines)
    if shutil.which("pdflatex"):
        (tmp_path / "sheet.tex").write_text(latex.stdout)
        compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "sheet.tex"],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert compiled.returncode == 0, compiled.stdout[-2000:]


@pytest.mark.parametrize("args", [
    ["check", "NAME"], ["verify", "NAME", "NAME"], ["quiz", "NAME", "--only", "Z1"], ["train", "NAME", "-n", "1"],
    ["explain", "NAME", "Z1[0,0]"], ["sheet", "NAME"], ["step", "NAME", REFERENCE],
])
def test_no_command_lets_a_file_name_drive_the_terminal(tmp_path, hostile_name, args):
    result = invoke(*[hostile_name if arg == "NAME" else arg for arg in args], input="skip\n")
    assert result.exit_code in (0, 1), result.stderr[-SHORT:]
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr


def test_grade_and_import_refuse_a_write_protected_file_unless_forced(tmp_path):
    exercises, answers, feedback = tmp_path / "class", tmp_path / "answers", tmp_path / "notes"
    for directory in (exercises, answers, feedback):
        directory.mkdir()
    write(exercises, reference(), "exercise-01.json")
    write(answers, {"B2": -0.5}, "exercise-01.json")
    report = feedback / "exercise-01.txt"
    report.write_text("mine\n")
    report.chmod(0o444)
    args = ["grade", exercises, answers, "--feedback", feedback]
    assert_refused(invoke(*args), "exercise-01.txt: is write-protected (mode 0444)", "--force")
    assert report.read_text() == "mine\n"
    assert invoke(*args, "--force").exit_code == 0 and "B2" in report.read_text()
    pytest.importorskip("onnx")
    model = tmp_path / "model.onnx"
    assert invoke("export", REFERENCE, "--to", "onnx", "-o", model).exit_code == 0
    target = tmp_path / "imported.json"
    target.write_text("mine\n")
    target.chmod(0o444)
    args = ["import", model, "--target", "1", "--loss", "bce", "-o", target]
    assert_refused(invoke(*args), "imported.json: is write-protected (mode 0444)", "--force")
    assert invoke(*args, "--force").exit_code == 0 and json.loads(target.read_text())["X"]


def test_the_gradebook_writes_a_learners_file_name_escaped(tmp_path):
    exercises, answers = tmp_path / "class", tmp_path / "answers"
    exercises.mkdir()
    answers.mkdir()
    write(exercises, reference(), "exercise-01.json")
    write(answers, {"B2": -0.5}, "01-\x1b[31mbob.json")
    result = invoke("grade", exercises, answers)
    assert result.exit_code == 0 and "\x1b" not in result.stdout + result.stderr
    assert "01-\\u001b[31mbob," in result.stdout
