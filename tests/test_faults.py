"""Faults while a file is written: every writer (``train --save`` as JSON and .npz,
``init -o``, ``step --html``, ``step --svg``) either writes the whole file or leaves the
previous one byte for byte as it was, with no temporary file behind, one line on stderr
naming the file, and exit status 2. A process killed mid-write leaves the previous file
too, and its temporary file, which nothing reads.

Each fault is produced for real where this machine allows it and injected where it does not:
a read-only directory (chmod; root writes there anyway, so a refusal injected at the
creation of the file, and a read-only mount, which refuses root too), a full disk (a tiny
tmpfs, which needs root to mount, and ENOSPC injected at the write, the fsync, the chmod and
the rename), a directory in the way, a missing directory, a process killed mid-write; and
train saving over its own input.
"""

from __future__ import annotations

import errno
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from tests.inputs import REFERENCE, reference

runner = CliRunner()


def trains(source, out):
    return ["train", source, "-n", "2", "--save", out, "-f", "json"]


#: Each writer: the name of the file it writes, and its arguments given the input and that file.
WRITERS = {
    "train --save json": ("out.json", trains),
    "train --save npz": ("out.npz", trains),
    "init -o": ("out.json", lambda source, out: ["init", "--seed", "7", "-o", out]),
    "step --html": ("out.html", lambda source, out: ["step", source, "-f", "json", "--html", out]),
    "step --svg": ("out.svg", lambda source, out: ["step", source, "-f", "json", "--svg", out]),
}


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


# -- a read-only directory -------------------------------------------------------------------------


def test_read_only_directory(tmp_path, writer):
    arguments, name = writer
    directory = tmp_path / "read-only"
    directory.mkdir()
    target, previous = with_previous(directory, name)
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip(
                "permissions do not bind this user (root): see the injected and mounted variants"
            )
        result = invoke(arguments(target))
    finally:
        directory.chmod(0o755)
    assert_refused(result, target, "Permission denied")
    assert target.read_bytes() == previous and temporaries(directory) == []


def test_read_only_directory_injected(tmp_path, writer, monkeypatch):
    # What a read-only directory does to everyone but root: creating a file in it is refused.
    arguments, name = writer
    directory = tmp_path / "read-only"
    directory.mkdir()
    target, previous = with_previous(directory, name)
    open_file = os.open

    def refuse_new_files_there(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(directory):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return open_file(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_new_files_there)
    result = invoke(arguments(target))
    monkeypatch.undo()
    assert_refused(result, target, "Permission denied")
    assert target.read_bytes() == previous and temporaries(directory) == []


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 64 KiB tmpfs, mounted for the test; skipped where mounting is not allowed
    (it needs root, and a container may refuse it even so)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command")
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mountpoint)]
    mounted = subprocess.run(mount, capture_output=True, text=True, check=False, timeout=60)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False, timeout=60).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=60)


def test_read_only_mount(tmpfs, writer):
    # A read-only file system refuses root too.
    arguments, name = writer
    target, previous = with_previous(tmpfs, name)
    remount = ["mount", "-o", "remount,ro", str(tmpfs)]
    subprocess.run(remount, check=True, capture_output=True, timeout=60)
    result = invoke(arguments(target))
    assert_refused(result, target, "Read-only file system")
    assert target.read_bytes() == previous and temporaries(tmpfs) == []


# -- a full disk -----------------------------------------------------------------------------------


def test_full_disk(tmpfs, writer):
    arguments, name = writer
    target, previous = with_previous(tmpfs, name)
    with open(tmpfs / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    result = invoke(arguments(target))
    assert_refused(result, target, "No space left on device")
    assert target.read_bytes() == previous and temporaries(tmpfs) == []


class FullDiskWhileWriting:
    """A file whose write puts half of the data down and then finds the disk full."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def inject(monkeypatch, fault: str):
    """Make one step of writing a file fail as it does on a full disk (chmod: as on a file
    system without permissions)."""

    def failing(number):
        def fail(*args, **kwargs):
            raise OSError(number, os.strerror(number))

        return fail

    if fault == "write":
        fdopen = os.fdopen
        monkeypatch.setattr(
            os,
            "fdopen",
            lambda fd, *args, **kwargs: FullDiskWhileWriting(fdopen(fd, *args, **kwargs)),
        )
    elif fault == "chmod":
        monkeypatch.setattr(os, "chmod", failing(errno.EPERM))
    else:
        monkeypatch.setattr(os, fault, failing(errno.ENOSPC))


@pytest.mark.parametrize("fault", ["write", "fsync", "chmod", "replace"])
def test_injected_fault_while_writing(tmp_path, writer, monkeypatch, fault):
    arguments, name = writer
    directory = tmp_path / "out"
    directory.mkdir()
    target, previous = with_previous(directory, name)
    inject(monkeypatch, fault)
    result = invoke(arguments(target))
    monkeypatch.undo()
    reason = "Operation not permitted" if fault == "chmod" else "No space left on device"
    assert_refused(result, target, reason)
    assert target.read_bytes() == previous and temporaries(directory) == []


def test_a_new_file_is_not_left_half_written(tmp_path, writer, monkeypatch):
    arguments, name = writer
    inject(monkeypatch, "write")
    result = invoke(arguments(tmp_path / name))
    monkeypatch.undo()
    assert_refused(result, tmp_path / name, "No space left on device")
    assert not (tmp_path / name).exists() and temporaries(tmp_path) == []


# -- in the way, or nowhere to go ------------------------------------------------------------------


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
    result = invoke(
        ["train", str(tmp_path / "in.json"), "-n", "5", "-f", "ndjson", "--save", str(target)]
    )
    reason = {
        "absent/out.json": "No such file",
        "in.json/out.json": "Not a directory",
        ".": "Is a directory",
    }
    assert_refused(result, target, reason[where])
    assert result.stdout == ""  # no epoch was trained


# -- killed mid-write ------------------------------------------------------------------------------

# Runs cnntrace's entry point with the write of the file paused: half of the data written
# and flushed ("mid-write"), or all of it written and synced but not yet renamed into place
# ("before the rename"). There it says "ready" on the file descriptor in argv[2] and waits
# to be killed.
PAUSED_WRITE = r"""
import os, sys, time
where, ready = sys.argv[1], int(sys.argv[2])
sys.argv = ["cnntrace", *sys.argv[3:]]

def pause():
    os.write(ready, b"ready")
    time.sleep(600)

class HalfWritten:
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        pause()
    def __getattr__(self, name):
        return getattr(self.handle, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.handle.close()

if where == "mid-write":
    fdopen = os.fdopen
    os.fdopen = lambda fd, *args, **kwargs: HalfWritten(fdopen(fd, *args, **kwargs))
else:
    replace = os.replace
    os.replace = lambda *args: (pause(), replace(*args))

from cnntrace.__main__ import main
main()
"""


def killed_while_writing(where: str, args) -> None:
    """Run cnntrace ARGS with its file write paused at ``where``; SIGKILL it there."""
    ready_read, ready_write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WRITE, where, str(ready_write), *map(str, args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=[ready_write],
    )  # fmt: skip
    os.close(ready_write)
    try:
        assert select.select([ready_read], [], [], 120)[0], "the write was not reached in 2 minutes"
        assert os.read(ready_read, 5) == b"ready", process.communicate(timeout=60)[1]
        process.kill()
        process.wait(timeout=60)
    finally:
        os.close(ready_read)
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("where", ["mid-write", "before the rename"])
def test_killed_while_writing_leaves_the_previous_file(tmp_path, writer, where):
    arguments, name = writer
    directory = tmp_path / "out"
    directory.mkdir()
    target, previous = with_previous(directory, name)
    killed_while_writing(where, arguments(target))
    assert target.read_bytes() == previous
    if name.endswith((".json", ".npz")):
        assert invoke(["step", str(target), "-f", "json"]).exit_code == 0
    # SIGKILL leaves no chance to clean up: the temporary file stays behind, beside the
    # target under a name no command reads (.NAME.XXXXXXXX.tmp), holding half of the data
    # or all of it.
    (stray,) = temporaries(directory)
    assert stray.startswith(f".{name}.")
    assert sorted(path.name for path in directory.iterdir()) == sorted([name, stray])


# -- saving over the input -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_train_saves_over_its_own_input(tmp_path, suffix):
    source = tmp_path / f"in{suffix}"
    data = {**reference(), "comment": "mine", "pool_stride": 2, "lr": 0.5}
    if suffix == ".npz":
        np.savez(source, **{key: np.asarray(value) for key, value in data.items()})
    else:
        source.write_text(json.dumps(data))
    expected = json.loads(invoke(["train", str(source), "-n", "3", "-f", "json"]).stdout)[
        "parameters"
    ]
    result = invoke(["train", str(source), "-n", "3", "--save", str(source), "-f", "json"])
    assert result.exit_code == 0 and f"saved the trained parameters to {source}" in result.stderr
    from cnntrace.io import read_input

    saved = read_input(source)
    assert saved.keys() == data.keys()
    for key, value in {**data, **expected}.items():
        assert np.array_equal(np.asarray(saved[key]), np.asarray(value)), key
    stepped = invoke(["step", str(source), "-f", "json"])
    assert stepped.exit_code == 0 and json.loads(stepped.stdout)["forward"]["Z1"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name]


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_a_failed_save_over_the_input_leaves_it_intact(tmp_path, monkeypatch, suffix):
    source = tmp_path / f"in{suffix}"
    source.write_bytes(previous_content(source.name))
    inject(monkeypatch, "write")
    result = invoke(["train", str(source), "-n", "3", "--save", str(source), "-f", "json"])
    monkeypatch.undo()
    assert_refused(result, source, "No space left on device")
    assert source.read_bytes() == previous_content(source.name)
    assert sorted(path.name for path in tmp_path.iterdir()) == [source.name]


def test_killed_while_saving_over_the_input_leaves_it_intact(tmp_path):
    source = tmp_path / "in.json"
    source.write_bytes(REFERENCE.read_bytes())
    killed_while_writing("mid-write", ["train", source, "-n", "3", "--save", source])
    assert source.read_bytes() == REFERENCE.read_bytes()
    assert invoke(["step", str(source), "-f", "json"]).exit_code == 0
