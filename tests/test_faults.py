"""Faults while a file is written: every writer (``train --save`` as JSON and .npz,
``init -o``, ``step --html``, ``step --svg``) either writes the whole file or leaves the
previous one byte for byte as it was, with no temporary file behind, one line on stderr
naming the file, and exit status 2.

Each fault is produced for real where this machine allows it and injected where it does not:
a read-only directory (chmod; root writes there anyway, so a refusal injected at the
creation of the file, and a read-only mount, which refuses root too), a full disk (a tiny
tmpfs, which needs root to mount, and ENOSPC injected at the write, the fsync, the chmod and
the rename), a directory in the way, a missing directory, and a process killed mid-write.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from tests.inputs import REFERENCE, reference

runner = CliRunner()

#: Each writer: the name of the file it writes, and its arguments given the input and that file.
WRITERS = {
    "train --save json": ("out.json", lambda source, out: ["train", source, "-n", "2", "--save", out, "-f", "json"]),
    "train --save npz": ("out.npz", lambda source, out: ["train", source, "-n", "2", "--save", out, "-f", "json"]),
    "init -o": ("out.json", lambda source, out: ["init", "--seed", "7", "-o", out]),
    "step --html": ("out.html", lambda source, out: ["step", source, "-f", "json", "--html", out]),
    "step --svg": ("out.svg", lambda source, out: ["step", source, "-f", "json", "--svg", out]),
}  # fmt: skip


@pytest.fixture(params=list(WRITERS))
def writer(request, tmp_path):
    """``(arguments(target), file name)`` of one writer, reading tmp_path/in.json."""
    name, arguments = WRITERS[request.param]
    source = tmp_path / "in.json"
    source.write_text(REFERENCE.read_text())
    return (lambda target: [str(arg) for arg in arguments(source, target)]), name


def previous_content(name: str) -> bytes:
    """What the target held before: an input cnntrace reads for .json and .npz, else text."""
    if name.endswith(".npz"):
        buffer = io.BytesIO()
        np.savez(buffer, **{key: np.asarray(value) for key, value in reference().items()})
        return buffer.getvalue()
    if name.endswith(".json"):
        return REFERENCE.read_bytes()
    return b"<p>the previous export</p>\n"


def invoke(args):
    return runner.invoke(app, args)


def temporaries(directory: Path) -> list[str]:
    """Temporary files of write_atomic (``.NAME.XXXXXXXX.tmp``) in ``directory``."""
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".tmp"))


def assert_refused(result, target: Path, reason: str):
    """Exit status 2 and one line on stderr, naming the file and the reason."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"cnntrace: {target}: cannot be written ("), result.stderr
    assert reason in result.stderr, result.stderr


def with_previous(directory: Path, name: str) -> tuple[Path, bytes]:
    target = directory / name
    previous = previous_content(name)
    target.write_bytes(previous)
    return target, previous


# -- in the way, or nowhere to go -------------------------------------------------------------------


def test_a_directory_in_the_way(tmp_path, writer):
    arguments, name = writer
    target = tmp_path / name
    target.mkdir()
    (target / "kept").write_text("kept")
    result = invoke(arguments(target))
    assert_refused(result, target, "Is a directory")
    assert [path.name for path in target.iterdir()] == ["kept"] and temporaries(tmp_path) == []


def test_a_missing_directory(tmp_path, writer):
    arguments, name = writer
    target = tmp_path / "absent" / name
    result = invoke(arguments(target))
    assert_refused(result, target, "No such file or directory")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.json"]


@pytest.mark.parametrize("where", ["absent/out.json", "in.json/out.json", "."])
def test_train_finds_out_before_training_that_it_cannot_save(tmp_path, where):
    (tmp_path / "in.json").write_text(REFERENCE.read_text())
    target = tmp_path / where
    result = invoke(["train", str(tmp_path / "in.json"), "-n", "5", "-f", "ndjson", "--save", str(target)])
    reason = {"absent/out.json": "No such file", "in.json/out.json": "Not a directory", ".": "Is a directory"}
    assert_refused(result, target, reason[where])
    assert result.stdout == ""  # no epoch was trained
