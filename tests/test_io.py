"""Reading input files: every bad file gets an InputError naming the file, the key and the fault."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnntrace.errors import InputError, OutputError
from cnntrace.io import MAX_INPUT_BYTES, load_problem, numbers
from tests.inputs import REFERENCE, reference, variant, write


def error_of(path) -> InputError:
    with pytest.raises(InputError) as caught:
        load_problem(path)
    assert caught.value.file == str(path)
    return caught.value


def test_reference_sample_loads_in_the_seeds_shapes():
    problem = load_problem(REFERENCE)
    assert problem.X.shape == (6, 6) and problem.inputs["W1"].shape == (3, 3)
    assert problem.inputs["W2"].shape == (4,) and problem.inputs["B2"].shape == ()
    r = problem.reference
    assert (r.stride, r.padding, r.pool, r.pool_stride) == (1, 0, 2, 2)
    assert problem.lr == 0.1


def test_options_are_read(tmp_path):
    problem = load_problem(variant(tmp_path, stride=2, padding=1, pool=1, pool_stride=1, lr=0.5, W2=[0.1] * 9))
    r = problem.reference
    assert (r.stride, r.padding, r.pool, r.pool_stride, problem.lr) == (2, 1, 1, 1, 0.5)


def test_pool_stride_defaults_to_pool(tmp_path):
    problem = load_problem(variant(tmp_path, pool=4, W2=[1.0]))
    assert problem.reference.pool_stride == 4


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "is empty; expected a JSON object"),
        ("{\"X\": [1, 2,]}", "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ("\"X\"", "expected a JSON object"),
        ('{"X": 1, "X": 2}', 'the key "X" appears twice'),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_files_that_are_not_input_json(tmp_path, text, fragment):
    assert fragment in str(error_of(write(tmp_path, text)))


@pytest.mark.parametrize(
    "value, key, token",
    [("NaN", "X", "NaN"), ("Infinity", "X", "Infinity"), ("[[1, -Infinity]]", "W1[0][1]", "-Infinity")],
)
def test_NaN_and_Infinity_tokens_are_refused_under_their_key(tmp_path, value, key, token):
    """JSON has no NaN or Infinity: Python's json reads them, and the file is refused
    naming the key (the entry) that holds one."""
    data = reference()
    data[key[:2]] = "@"
    text = json.dumps(data).replace('"@"', value)
    error = error_of(write(tmp_path, text))
    assert error.key == key
    assert f"{token} is not a number JSON allows; write a finite number" in error.message


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in str(error_of(tmp_path / "absent.json"))
    assert "is a directory" in str(error_of(tmp_path))


def test_binary_file(tmp_path):
    path = tmp_path / "in.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in str(error_of(path))


def test_an_empty_file_is_called_empty_and_a_byte_order_mark_is_read_past(tmp_path):
    for empty in (b"", b" \n\t"):
        path = tmp_path / "empty.json"
        path.write_bytes(empty)
        assert "is empty; expected a JSON object" in str(error_of(path))
    path = tmp_path / "notepad.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(reference()).encode())
    assert load_problem(path).network is not None


def test_a_npz_under_another_name_is_known_by_its_bytes(tmp_path):
    from cnntrace.io import read_input

    np.savez(tmp_path / "data.npz", **{k: np.asarray(v) for k, v in reference().items() if k != "comment"})
    renamed = tmp_path / "data"  # as /dev/stdin or a FIFO gives it: no .npz in the name
    renamed.write_bytes((tmp_path / "data.npz").read_bytes())
    assert np.array_equal(read_input(renamed)["X"], reference()["X"])


def test_an_answers_file_that_is_not_an_object_says_what_it_should_be(tmp_path):
    from cnntrace.io import read_answers

    path = write(tmp_path, [1, 2], "answers.json")
    with pytest.raises(InputError, match="expected a JSON object of names and values; found a list"):
        read_answers(path)


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    assert "limited to" in str(error_of(path))


def test_missing_key_names_it(tmp_path):
    error = error_of(variant(tmp_path, drop=["W2"]))
    assert error.key == "W2" and "missing" in error.message


def test_misspelled_key_suggests_the_right_one(tmp_path):
    data = reference()
    data["w1"] = data.pop("W1")
    error = error_of(write(tmp_path, data))
    assert error.key == "W1" and 'did you mean W1' in error.message


def test_misspelled_optional_key_suggests_the_right_one(tmp_path):
    error = error_of(variant(tmp_path, strdie=2))
    assert error.key == "strdie" and "did you mean stride" in error.message


@pytest.mark.parametrize(
    "key, value, where, fragment",
    [
        ("X", [[1, 2], [3]], "X[1]", "has 1 entries; expected 2"),
        ("X", [[1, "a"], [3, 4]], "X[0][1]", 'expected a number, got the string "a"'),
        ("X", [[1, None], [3, 4]], "X[0][1]", "got null"),
        ("X", [[1, True], [3, 4]], "X[0][1]", "got true"),
        ("X", [[1, 2], 3], "X[1]", "expected a list of 2"),
        ("X", [[1, 2], [3, [4]]], "X[1][1]", "got a list"),
        ("X", [], "X", "empty list"),
        ("X", [[]], "X[0]", "empty list"),
        ("X", [[[[1]]]], "X", "nested 4 lists deep"),
        ("X", {"a": 1}, "X", "got an object"),
        ("W1", [[10**400]], "W1[0][0]", "too large for float64"),
        ("B2", None, "B2", "got null"),
        ("Y", False, "Y", "got false"),
    ],
)
def test_bad_numbers_name_the_entry(tmp_path, key, value, where, fragment):
    error = error_of(variant(tmp_path, **{key: value}))
    assert error.key == where
    assert fragment in error.message


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("stride", 0, "at least 1"),
        ("stride", 1.5, "whole number"),
        ("stride", True, "expected a number"),
        ("stride", "2", "expected a number"),
        ("pool_stride", 0, "at least 1"),
        ("padding", -1, "at least 0"),
        ("pool", 0.5, "whole number"),
        ("lr", 0, "positive number"),
        ("lr", -0.1, "positive number"),
        ("lr", "fast", "expected a number"),
        ("lr", None, "expected a number"),
    ],
)
def test_bad_options(tmp_path, key, value, fragment):
    error = error_of(variant(tmp_path, **{key: value}))
    assert error.key == key and fragment in error.message


@pytest.mark.parametrize(
    "changes, key, fragment",
    [
        ({"W1": [[1.0] * 7] * 7}, "W1", "7×7 kernel is larger than the 6×6 padded image"),
        ({"pool": 5}, "pool", "5×5 pool window is larger than Z1 (4×4)"),
        ({"W2": [1, 2, 3]}, "W2", "expected 4 weights"),
        ({"W2": [[1, 2], [3, 4]]}, "W2", "expected 4 weights"),
        ({"B1": [0.1, 0.2]}, "B1", "expected 1 bias"),
        ({"B2": [0.1, 0.2]}, "B2", "expected 1 number"),
        ({"Y": 1.5}, "Y", "labels must lie in [0, 1]"),
        ({"Y": -0.5}, "Y", "labels must lie in [0, 1]"),
        ({"X": [[[0.0] * 6] * 6] * 3, "Y": [1, 0]}, "Y", "expected a list of 3 labels"),
        ({"W1": [[[0.1] * 3] * 3] * 2, "B1": 0.1}, "B1", "expected 2 biases"),
    ],
)
def test_shapes_that_do_not_fit(tmp_path, changes, key, fragment):
    error = error_of(variant(tmp_path, **changes))
    assert error.key == key and fragment in error.message


def test_number_too_large_for_float64(tmp_path):
    text = json.dumps(reference()).replace('"B2": -0.5', '"B2": -1e400')
    error = error_of(write(tmp_path, text))
    assert error.key == "B2" and "too large for float64" in error.message


def test_padding_can_make_a_large_kernel_fit(tmp_path):
    problem = load_problem(variant(tmp_path, W1=[[0.1] * 7] * 7, padding=1, pool=1, W2=[0.1] * 4))
    assert problem.reference.padding == 1


def test_error_message_names_file_key_and_fault(tmp_path):
    error = error_of(variant(tmp_path, W2=[1, 2, 3]))
    assert str(error).startswith(f"{tmp_path / 'in.json'}: W2: expected 4 weights")


def test_comment_key_is_allowed(tmp_path):
    assert load_problem(variant(tmp_path, comment="exercise 3")).X.shape == (6, 6)


def test_numbers_keeps_nesting_and_values():
    assert np.array_equal(numbers([[1, 2.5], [3, -4]], "X"), [[1.0, 2.5], [3.0, -4.0]])
    assert numbers(7, "B2") == 7.0
    assert np.array(numbers([[[1]], [[2]]], "X")).shape == (2, 1, 1)


@pytest.mark.parametrize(
    "value, key",
    [
        ([[1, 2], [3, True]], "X[1][1]"),
        ([[1, 2], [3, "4"]], "X[1][1]"),
        ([[1, 2], [None, 4]], "X[1][0]"),
        ([[1, 2], [3, 1e400]], "X[1][1]"),
        ([[1, 2], [3, 10**400]], "X[1][1]"),
        ([[1, 2], [3]], "X[1]"),
        ([[1, 2], 3], "X[1]"),
    ],
)
def test_numbers_names_the_entry_at_fault_past_the_fast_path(value, key):
    """Large valid inputs take a fast path through numpy, which would read True, "4" and
    None as numbers: the entry at fault is still found and named."""
    with pytest.raises(InputError) as caught:
        numbers(value, "X")
    assert caught.value.key == key


def test_json_floats_are_read_exactly(tmp_path):
    value = 0.1 + 0.2  # 0.30000000000000004
    problem = load_problem(variant(tmp_path, B2=value))
    assert float(problem.inputs["B2"]) == value
    assert json.loads(json.dumps(value)) == value


# -- atomic writes ---------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    from cnntrace.io import write_atomic

    target = tmp_path / "out.json"
    target.write_text("old")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    import os

    from cnntrace.io import write_atomic

    target = tmp_path / "out.json"
    target.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left on device") as caught:
        write_atomic(target, "new")
    assert caught.value.file == str(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_write_atomic_into_a_missing_directory_names_the_file(tmp_path):
    from cnntrace.io import write_atomic

    with pytest.raises(OutputError, match="cannot be written"):
        write_atomic(tmp_path / "absent" / "out.json", "x")


def test_write_atomic_gives_a_new_file_the_usual_permissions(tmp_path):
    import os
    import stat

    from cnntrace.io import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "new.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644
    existing = tmp_path / "private.json"
    existing.write_text("old")
    existing.chmod(0o600)
    write_atomic(existing, "new")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600


def test_npz_text_stored_as_bytes_is_read_as_text(tmp_path):
    from cnntrace.io import read_input

    data = {key: np.asarray(value) for key, value in reference().items() if key != "comment"}
    np.savez(tmp_path / "in.npz", comment=np.bytes_(b"exercise 3"), **data)
    assert read_input(tmp_path / "in.npz")["comment"] == "exercise 3"


def test_npz_that_unpacks_past_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    """A compressed archive is judged by what it unpacks to, not by its size on disk."""
    import cnntrace.io

    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, X=np.zeros((64, 64, 64)), Y=np.zeros(64), W1=np.zeros((3, 3)), B1=0.0, W2=np.zeros(1), B2=0.0)
    assert path.stat().st_size < 2**20 // 4  # 2 MiB of zeros packs small
    monkeypatch.setattr(cnntrace.io, "MAX_INPUT_BYTES", 2**20)
    error = error_of(path)
    assert "MiB of arrays" in error.message and "limited to 1 MiB" in error.message and error.file == str(path)
