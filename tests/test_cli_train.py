"""``cnntrace train`` through typer's CliRunner (and one real Ctrl-C in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace import network
from cnntrace.cli import app
from tests.inputs import REFERENCE, SAMPLES, reference, write

runner = CliRunner()
PARAMETERS = ("W1", "B1", "W2", "B2")


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def batch_input(directory, M=6, seed=0, name="batch.json", **changes):
    """The reference parameters with M random 6×6 images, written as JSON."""
    rng = np.random.default_rng(seed)
    data = reference()
    data.update(
        X=rng.uniform(0, 2, size=(M, 6, 6)).tolist(), Y=(rng.random(M) < 0.5).astype(int).tolist(),
        comment="a batch", pool_stride=None,
    )  # fmt: skip
    data.update(changes)
    return write(directory, data, name)


def ok(result):
    assert result.exit_code == 0, result.stderr
    return result


# -- training is step's update, again and again -----------------------------------------------------


def test_full_batch_epochs_equal_repeated_step_updates(tmp_path):
    source = batch_input(tmp_path)
    ok(invoke("train", source, "--epochs", 4, "--save", tmp_path / "trained.json", "-f", "json"))
    data = json.loads(source.read_text())
    for _ in range(4):
        update = json.loads(ok(invoke("step", write(tmp_path, data, "stepped.json"), "-f", "json")).stdout)["update"]
        data.update(update)
    trained = json.loads((tmp_path / "trained.json").read_text())
    for name in PARAMETERS:
        assert np.array_equal(np.array(trained[name]), np.array(data[name])), name


def test_ndjson_writes_one_line_per_epoch(tmp_path):
    result = ok(invoke("train", batch_input(tmp_path), "--epochs", 5, "--batch-size", 4, "-f", "ndjson"))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert all(set(line) == {"epoch", "loss", "accuracy"} for line in lines)
    assert result.stderr == ""


def test_json_holds_the_history_and_the_parameters_in_the_inputs_shapes(tmp_path):
    source = batch_input(tmp_path, W2=[[0.5], [-0.25], [0.75], [0.25]])
    document = json.loads(ok(invoke("train", source, "--epochs", 3, "-f", "json")).stdout)
    assert set(document) == {"history", "parameters", "confusion"}  # a classifier: its confusion matrix too
    assert np.sum(document["confusion"]) == 6 and np.shape(document["confusion"]) == (2, 2)
    assert [row["epoch"] for row in document["history"]] == [1, 2, 3]
    assert np.shape(document["parameters"]["W1"]) == (3, 3)
    assert np.shape(document["parameters"]["W2"]) == (4, 1)
    assert isinstance(document["parameters"]["B2"], float)
    ndjson = ok(invoke("train", source, "--epochs", 3, "-f", "ndjson")).stdout.splitlines()
    assert [json.loads(line) for line in ndjson] == document["history"]


def test_table_shows_epochs_curve_and_parameters(tmp_path):
    out = ok(invoke("train", batch_input(tmp_path), "--epochs", 30)).stdout
    assert "Loss by epoch" in out and "Trained parameters" in out and "epoch 30" in out
    table = out[out.index("epoch     loss") : out.index("Loss by epoch")].splitlines()[2:]
    shown = [int(line.split()[0]) for line in table if line.strip()]
    assert shown[0] == 1 and shown[-1] == 30 and len(shown) == 20
    assert shown == sorted(shown)
    assert "\x1b[" not in out


# -- --save ------------------------------------------------------------------------------------------


def test_save_keeps_the_other_keys_and_training_continues_from_it(tmp_path):
    source = batch_input(tmp_path, W2=[[0.5, -0.25, 0.75, 0.25]], stride=1)
    ok(invoke("train", source, "--epochs", 2, "--save", tmp_path / "two.json", "-f", "json"))
    two = json.loads((tmp_path / "two.json").read_text())
    original = json.loads(source.read_text())
    for key in ("X", "Y", "comment", "lr", "stride", "pool_stride"):
        assert two[key] == original[key]
    assert np.shape(two["W2"]) == (1, 4)
    ok(invoke("step", tmp_path / "two.json", "-f", "json"))
    ok(invoke("train", tmp_path / "two.json", "--epochs", 3, "--save", tmp_path / "five.json", "-f", "json"))
    ok(invoke("train", source, "--epochs", 5, "--save", tmp_path / "direct.json", "-f", "json"))
    five, direct = (json.loads((tmp_path / name).read_text()) for name in ("five.json", "direct.json"))
    assert all(five[name] == direct[name] for name in PARAMETERS)


def test_npz_in_and_out(tmp_path):
    source = batch_input(tmp_path)
    ok(invoke("train", source, "--epochs", 2, "--save", tmp_path / "out.npz", "-f", "json"))
    with np.load(tmp_path / "out.npz", allow_pickle=False) as saved:
        assert str(saved["comment"]) == "a batch" and "pool_stride" not in saved.files
        X = saved["X"]
    assert np.array_equal(X, np.array(json.loads(source.read_text())["X"]))
    from_json = json.loads(ok(invoke("train", source, "--epochs", 3, "-f", "json")).stdout)
    from_npz = json.loads(ok(invoke("train", tmp_path / "out.npz", "--epochs", 1, "-f", "json")).stdout)
    assert from_npz["parameters"] == from_json["parameters"]
    ok(invoke("step", tmp_path / "out.npz", "-f", "json"))


def test_save_over_the_input(tmp_path):
    source = batch_input(tmp_path)
    expected = json.loads(ok(invoke("train", source, "--epochs", 3, "-f", "json")).stdout)["parameters"]
    ok(invoke("train", source, "--epochs", 3, "--save", source, "-f", "json"))
    saved = json.loads(source.read_text())
    assert all(saved[name] == expected[name] for name in PARAMETERS)
    assert [p.name for p in tmp_path.iterdir()] == ["batch.json"]  # no temporary file left


# -- divergence and Ctrl-C -----------------------------------------------------------------------------


def test_divergence_exits_1_names_the_epoch_and_saves_the_last_finite_parameters(tmp_path):
    source = write(tmp_path, {**reference(), "lr": 1e300})
    out = tmp_path / "out.json"
    result = invoke("train", source, "--epochs", 50, "--save", out, "-f", "ndjson")
    assert result.exit_code == 1
    finished = len(result.stdout.splitlines())
    assert finished >= 1 and f"diverged in epoch {finished + 1}" in result.stderr
    assert "Traceback" not in result.stderr and str(out) in result.stderr
    expected = json.loads(ok(invoke("train", source, "--epochs", finished, "-f", "json")).stdout)
    saved = json.loads(out.read_text())  # plain JSON: no NaN or Infinity could be read back
    assert all(saved[name] == expected["parameters"][name] for name in PARAMETERS)
    assert "nan" not in result.stdout.lower() and "infinity" not in result.stdout.lower()


def interrupt_after(monkeypatch, calls: int, how):
    """Make the k-th training pass ``how()`` (raise KeyboardInterrupt, or send SIGINT)."""
    count = []
    forward_backward = network.Network.forward_backward

    def counting(self, *args, **kwargs):
        if kwargs.get("tracing", True) is False:  # a training pass, not a trace
            count.append(1)
            if len(count) == calls:
                how()
        return forward_backward(self, *args, **kwargs)

    monkeypatch.setattr(network.Network, "forward_backward", counting)


def raise_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("how", [raise_interrupt, lambda: os.kill(os.getpid(), signal.SIGINT)],
                         ids=["KeyboardInterrupt", "SIGINT"])  # fmt: skip
def test_ctrl_c_saves_the_last_completed_epoch_and_exits_130(tmp_path, monkeypatch, how):
    source = batch_input(tmp_path)
    expected = json.loads(ok(invoke("train", source, "--epochs", 2, "--batch-size", 2, "-f", "json")).stdout)
    interrupt_after(monkeypatch, 8, how)  # the 2nd of epoch 3's 3 mini-batches
    out = tmp_path / "out.json"
    result = invoke("train", source, "--epochs", 10, "--batch-size", 2, "--save", out, "-f", "ndjson")
    assert result.exit_code == 130
    assert "interrupted after 2 of 10 epochs" in result.stderr and f"saved epoch 2's parameters to {out}" in result.stderr
    assert len(result.stdout.splitlines()) == 2
    saved = json.loads(out.read_text())
    assert all(saved[name] == expected["parameters"][name] for name in PARAMETERS)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_in_a_real_process(tmp_path):
    rng = np.random.default_rng(0)
    data = {"X": rng.random((2000, 12, 12)), "Y": (rng.random(2000) < 0.5) * 1.0,
            "W1": rng.normal(0, 0.3, (3, 3)), "B1": 0.0, "W2": rng.normal(0, 0.1, 25), "B2": 0.0}  # fmt: skip
    np.savez(tmp_path / "big.npz", **data)
    out = tmp_path / "out.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "cnntrace", "train", tmp_path / "big.npz", "--epochs", "100000",
         "--batch-size", "100", "--save", out, "-f", "ndjson"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = json.loads(process.stdout.readline())
        assert first["epoch"] == 1
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    done = 1 + len(rest.splitlines())
    assert f"interrupted after {done} of 100000 epochs" in stderr and "Traceback" not in stderr
    expected = json.loads(ok(invoke("train", tmp_path / "big.npz", "--epochs", done, "--batch-size", 100,
                                    "-f", "json")).stdout)  # fmt: skip
    saved = json.loads(out.read_text())
    assert all(saved[name] == expected["parameters"][name] for name in PARAMETERS)


# -- bad input and options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [["--epochs", "0"], [], ["--epochs", "2", "--batch-size", "0"], ["--epochs", "2", "--lr", "0"],
     ["--epochs", "2", "--lr", "-1"], ["--epochs", "2", "--lr", "nan"], ["--epochs", "2", "--lr", "inf"],
     ["--epochs", "2", "--format", "csv"], ["--epochs", "2", "--save", "no/such/dir/out.json"]],
)  # fmt: skip
def test_bad_options_exit_2_with_nothing_on_stdout(options):
    result = invoke("train", REFERENCE, *options)
    assert result.exit_code == 2
    assert result.stdout == "" and "Traceback" not in result.stderr and result.stderr


def test_npz_with_pickles_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    data = {key: np.asarray(value, dtype=float) for key, value in reference().items() if key in PARAMETERS + ("X", "Y")}
    data["W1"] = np.array([[0.1, "x", None]] * 3, dtype=object)
    np.savez(path, **data)
    result = invoke("train", path, "--epochs", 1)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"cnntrace: {path}: W1: holds Python objects (a pickle), which are not read; store numbers\n"


@pytest.mark.parametrize(
    "content, message",
    [(b"not a zip", "is not a .npz file of arrays that numpy can read"),
     (None, "holds one .npy array; expected a .npz file of named arrays")],
)  # fmt: skip
def test_files_that_are_not_npz_archives_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content is None:
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        path.write_bytes(content)
    result = invoke("train", path, "--epochs", 1)
    assert result.exit_code == 2 and result.stderr == f"cnntrace: {path}: {message}\n"


def test_npz_keys_are_checked_like_json(tmp_path):
    data = {key: np.asarray(value, dtype=float) for key, value in reference().items() if key != "comment"}
    data["W2"] = data["W2"][:3]
    np.savez(tmp_path / "short.npz", **data)
    result = invoke("step", tmp_path / "short.npz")
    assert result.exit_code == 2 and "W2: expected 4 weights" in result.stderr
    data["W2"] = np.array([True, False, True, False])
    np.savez(tmp_path / "bools.npz", **data)
    result = invoke("train", tmp_path / "bools.npz", "--epochs", 1)
    assert result.exit_code == 2 and "W2: expected an array of numbers, found one of type bool" in result.stderr


def test_the_digits_sample_trains_from_the_command_line():
    result = ok(invoke("train", SAMPLES / "digits.npz", "--epochs", 20, "--batch-size", 32, "--shuffle",
                       "--seed", 0, "-f", "ndjson"))  # fmt: skip
    assert json.loads(result.stdout.splitlines()[-1])["accuracy"] >= 0.99


def test_progress_bar_on_a_terminal_leaves_stdout_to_the_data():
    # FORCE_COLOR makes rich treat stderr as a terminal: the bar goes there, the lines here.
    result = subprocess.run(
        [sys.executable, "-m", "cnntrace", "train", SAMPLES / "bars.json", "--epochs", "3", "-f", "ndjson"],
        capture_output=True, text=True, env={**os.environ, "FORCE_COLOR": "1"}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["epoch"] for line in result.stdout.splitlines()] == [1, 2, 3]
    assert "epoch" in result.stderr and "accuracy" in result.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_ndjson_lines_on_the_same_terminal_as_the_bar_start_lines_of_their_own():
    """stdout and stderr one terminal: each line goes above the bar, not after it."""
    import re

    leader, follower = os.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "cnntrace", "train", SAMPLES / "bars.json", "--epochs", "40", "-f", "ndjson"],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    written = b""
    while True:
        try:
            block = os.read(leader, 65536)
        except OSError:  # the process ended and closed the terminal
            break
        if not block:
            break
        written += block
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", written.decode("utf-8", "replace"))
    starts = [match.start() for match in re.finditer(r'\{"epoch"', text)]
    assert len(starts) == 40
    assert all(start == 0 or text[start - 1] in "\r\n" for start in starts), text[:500]


def test_save_records_the_lr_given_on_the_command_line(tmp_path):
    import json

    from tests.inputs import REFERENCE

    out = tmp_path / "trained.json"
    result = runner.invoke(app, ["train", str(REFERENCE), "--epochs", "2", "--lr", "0.25", "--save", str(out), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == f"cnntrace: saved the trained parameters to {out}\n"
    assert json.loads(out.read_text())["lr"] == 0.25
    kept = tmp_path / "kept.json"
    runner.invoke(app, ["train", str(REFERENCE), "--epochs", "1", "--save", str(kept), "-f", "json"])
    assert json.loads(kept.read_text())["lr"] == 0.1
