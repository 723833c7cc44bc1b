"""Fuzzing the command line with malformed and unusual input files and arguments.

Every outcome must be either a correct result or a clean error: exit status 2, nothing on
stdout and one short line on stderr, ``cnntrace: FILE: …``, naming the file. A result is
correct when it agrees with the library on the same file: ``step`` prints exactly the
matrices of ``network.run``, every number finite.

The inputs start from valid ones (the reference sample and random valid problems) and are
mutated: wrong types at every key, nesting too deep or too shallow, ragged rows, huge and
tiny numbers, empty arrays, odd keys (unicode, empty, duplicated, extra), odd option
values, documents that are not objects, and bytes that are not UTF-8 or not whole. The
same is done for .npz files and for the arguments of every command.

Hypothesis derives every example from a fixed seed (``derandomize=True``) and keeps no
database, so each run tries the same examples. Inputs that once failed are kept in
tests/corpus/ and run by ``test_corpus``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.errors import CnntraceError
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.reference import reference_stages
from cnntrace.tracer import run
from tests.inputs import REFERENCE, reference

STAGE = {stage.name: stage for stage in reference_stages()}

# A warning would reach stderr as a second line (and may hide a bug): each one fails the test.
# Except one: np.load leaves a damaged .npz file open, which Python reports (as a
# ResourceWarning) only in development mode.
pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning"),
]

runner = CliRunner()

#: The longest message expected on stderr, not counting the file's name in it.
MAX_MESSAGE = 300
CORPUS = Path(__file__).resolve().parent / "corpus"


def fuzz(examples: int):
    """Hypothesis settings for a bounded, repeatable run of ``examples`` examples."""
    return settings(
        max_examples=examples, derandomize=True, database=None, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One directory for a test's examples: each example overwrites the files it writes."""
    return tmp_path_factory.mktemp("fuzz")


# -- the outcomes allowed ----------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of cnntrace did, in process (CliRunner) or as a real process."""

    status: int
    stdout: str
    stderr: str


def invoke(*args) -> Outcome:
    result = runner.invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the test fails with it
    return Outcome(result.exit_code, result.stdout, result.stderr)


def process(*args) -> Outcome:
    """cnntrace as the shell runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "cnntrace", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_clean_error(outcome: Outcome, file=None, status: int = 2) -> None:
    """Exit ``status``, nothing on stdout, one short line on stderr naming ``file``."""
    assert outcome.status == status, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and outcome.stderr.endswith("\n"), outcome.stderr
    assert lines[0].startswith("cnntrace: "), outcome.stderr
    named = "" if file is None else str(file)
    assert named in lines[0], outcome.stderr
    assert len(lines[0]) <= MAX_MESSAGE + len(named), outcome.stderr


def assert_usage_error(outcome: Outcome) -> None:
    """Exit 2 for a bad argument, told in one line as a bad file is, nothing on stdout."""
    assert outcome.status == 2, outcome
    assert outcome.stdout == "", outcome
    assert "Traceback" not in outcome.stderr
    assert_clean_error(outcome)


def assert_finite_json(text: str):
    """Parse JSON that holds no NaN or infinity (the parser would take them otherwise)."""

    def refuse(constant):
        raise AssertionError(f"{constant} in the output")

    return json.loads(text, parse_constant=refuse)


NON_FINITE = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def expected(path: Path):
    """What the library makes of ``path``: (trace, None), or (None, the CLI's message)."""
    try:
        return run(load_problem(path)), None
    except CnntraceError as error:
        if error.file is None:
            error.in_file(str(path))
        return None, f"cnntrace: {error}\n"


def assert_same_trace(data: dict, trace) -> None:
    """The JSON sections of step's output hold exactly the trace's matrices."""
    assert set(data) == {"forward", "backward", "update"}
    for section, matrices in trace.sections().items():
        assert list(data[section]) == list(matrices)
        for name, value in matrices.items():
            got = np.asarray(data[section][name], dtype=np.float64)
            assert got.shape == value.shape, name
            assert np.array_equal(got, value), name  # repr round-trips every float64


# -- building input files --------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A number written into the JSON text as it is: 1e400, a 400-digit integer, NaN."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written as these (key, value) pairs, so a key may appear twice."""

    items: tuple


def to_json(value) -> str:
    """JSON text for a document that may hold Raw numbers and Pairs objects."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_json(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return to_json(Pairs(tuple(value.items())))
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


@st.composite
def valid_problems(draw) -> dict:
    """A random valid input: a batch or one image, one or several filters, options written
    or left to their defaults, and every shape the README allows (W2 as a list, n×1 or 1×n;
    B1 and Y as numbers or lists)."""
    M = draw(st.sampled_from([None, 1, 2, 3]))
    K = draw(st.sampled_from([None, 1, 2]))
    options = {}  # the options written into the file; the others take their defaults
    if draw(st.booleans()):
        options["padding"] = draw(st.integers(0, 2))
    if draw(st.booleans()):
        options["stride"] = draw(st.integers(1, 3))
    padding, stride = options.get("padding", 0), options.get("stride", 1)
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh = draw(st.integers(1, min(4, H + 2 * padding)))
    kw = draw(st.integers(1, min(4, W + 2 * padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    if min(Ho, Wo) < 2 or draw(st.booleans()):  # the default pool of 2 needs room
        options["pool"] = draw(st.integers(1, min(3, Ho, Wo)))
    pool = options.get("pool", 2)
    if draw(st.booleans()):
        options["pool_stride"] = draw(st.sampled_from([None, 1, 2, 3]))  # null: the pool
    pool_stride = options.get("pool_stride") or pool
    if draw(st.booleans()):
        options["lr"] = draw(st.sampled_from([0.1, 0.5, 1, 1e-3]))
    n = (K or 1) * ((Ho - pool) // pool_stride + 1) * ((Wo - pool) // pool_stride + 1)

    values = st.one_of(
        st.integers(-3, 3),
        st.floats(-4, 4, allow_nan=False, allow_subnormal=False).map(lambda x: round(x, 3)),
    )

    def array(*shape):
        entries = draw(st.lists(values, min_size=math.prod(shape), max_size=math.prod(shape)))
        return np.asarray(entries, dtype=object).reshape(shape).tolist()

    label = st.sampled_from([0, 1, 0.0, 1.0, 0.5, 0.25])
    data = {
        "X": array(H, W) if M is None else array(M, H, W),
        "Y": draw(label) if M is None else draw(st.lists(label, min_size=M, max_size=M)),
        "W1": array(kh, kw) if K is None else array(K, kh, kw),
        "B1": draw(values) if K is None else array(K),
        "W2": array(*draw(st.sampled_from([(n,), (n, 1), (1, n)]))),
        "B2": draw(values),
        **options,
    }
    if draw(st.booleans()):
        data["comment"] = draw(st.text(max_size=20))
    return data


def starting_inputs():
    return st.one_of(st.just(None).map(lambda _: reference()), valid_problems())


REQUIRED = ("X", "Y", "W1", "B1", "W2", "B2")
OPTIONS = ("stride", "padding", "pool", "pool_stride", "lr")

#: Values of the wrong type for any key, or for any entry of an array.
WRONG = [
    None, True, False, "", "0.5", "X", " ", "ünïcode", {}, {"X": 1}, [], [[]], [[[]]],
    [None], [[None]], ["1"], [[1, "a"]], [[[[[0.5]]]]], [1, [2]], [[1], 2], [{}],
]  # fmt: skip

#: Numbers at the edges of float64, and literals JSON allows but float64 cannot hold.
EXTREME = [
    1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, -0.0, 0.0, 1e-300, 1e154,
    -1e154, 1e200, 2**53 + 1, 10**30, -(10**30), 1e16, 710.0, -710.0, 1e-8,
    Raw("1e400"), Raw("-1e400"), Raw("1E+309"), Raw("1" + "0" * 400), Raw("-1" + "0" * 400),
    Raw("1.0e-400"), Raw("-0"), Raw("0e0"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
]  # fmt: skip

#: Values for stride, padding, pool, pool_stride and lr.
OPTION_VALUES = [
    0, -1, 1, 2, 3, 2.0, 2.5, 0.5, 1e-300, 5e-324, -0.0, 1e300, 1e308, 10**20, -(10**20),
    2**63, 2**64 + 1, Raw("1" + "0" * 400), Raw("-1" + "0" * 400), Raw("1e400"), Raw("NaN"),
    True, None, "2", [2], [[2]], {},
]  # fmt: skip

#: Keys a file might carry by mistake.
ODD_KEYS = st.one_of(
    st.sampled_from(["", " ", "x", "w1", "X ", " X", "Х", "ＸＸ", "strdie", "\n", "\t", "$schema ",
                     "\x1b[31m", "a\nb", "k" * 500, "\u200b", "\ud7ff", "🙂"]),
    st.text(max_size=12),
)  # fmt: skip


def leaf_paths(value, path=()):
    """The index paths of every number (or other non-list) inside nested lists."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaf_paths(item, (*path, index))
    else:
        yield path


def list_paths(value, path=()):
    """The index paths of every list, the outermost first."""
    if isinstance(value, list):
        yield path
        for index, item in enumerate(value):
            yield from list_paths(item, (*path, index))


def set_at(value, path, new):
    if not path:
        return new
    value = list(value)
    value[path[0]] = set_at(value[path[0]], path[1:], new)
    return value


def get_at(value, path):
    for index in path:
        value = value[index]
    return value


def mutate(draw, doc: dict) -> dict:
    """One mutation of an input document (a dict; values may hold Raw numbers)."""
    keys = list(doc) or ["X"]
    key = draw(st.sampled_from(keys))
    kind = draw(st.sampled_from([
        "wrong type", "wrong entry", "deeper", "shallower", "ragged", "empty", "extreme entry",
        "extreme entry", "extreme everywhere", "extreme everywhere", "option", "option",
        "extra key", "rename key", "drop key",
    ]))  # fmt: skip
    doc = dict(doc)
    value = doc.get(key)
    leaves = list(leaf_paths(value)) if isinstance(value, list) else []
    if kind == "wrong type":
        doc[key] = draw(st.sampled_from(WRONG))
    elif kind == "wrong entry" and leaves:
        path = draw(st.sampled_from(leaves))
        doc[key] = set_at(value, path, draw(st.sampled_from(WRONG)))
    elif kind == "deeper":
        doc[key] = [value] * draw(st.integers(1, 2)) if draw(st.booleans()) else [[value]]
    elif kind == "shallower" and isinstance(value, list) and value:
        if draw(st.booleans()) or not isinstance(value[0], list):
            doc[key] = value[0]
        else:
            doc[key] = [item for row in value for item in (row if isinstance(row, list) else [row])]
    elif kind == "ragged" and isinstance(value, list):
        path = draw(st.sampled_from(list(list_paths(value))))
        row = get_at(value, path)
        if row and draw(st.booleans()):
            row = row[:-1]
        else:
            row = [*row, row[0] if row else 0.5]
        doc[key] = set_at(value, path, row)
    elif kind == "empty":
        if isinstance(value, list):
            path = draw(st.sampled_from(list(list_paths(value))))
            doc[key] = set_at(value, path, [])
        else:
            doc[key] = []
    elif kind == "extreme entry" and leaves:
        path = draw(st.sampled_from(leaves))
        doc[key] = set_at(value, path, draw(st.sampled_from(EXTREME)))
    elif kind == "extreme everywhere":
        number = draw(st.sampled_from(EXTREME))
        doc[key] = number
        if leaves:
            doc[key] = value
            for path in leaves:
                doc[key] = set_at(doc[key], path, number)
    elif kind == "option":
        doc[draw(st.sampled_from(OPTIONS))] = draw(st.sampled_from(OPTION_VALUES))
    elif kind == "extra key":
        doc[draw(ODD_KEYS)] = draw(st.sampled_from([1, "note", None, [[1]], {}]))
    elif kind == "rename key":
        new = draw(st.one_of(ODD_KEYS, st.sampled_from([key.lower(), key + " ", " " + key, key * 2])))
        doc = {(new if k == key else k): v for k, v in doc.items()}
    elif kind == "drop key":
        doc.pop(key, None)
    return doc


def as_text(draw, doc: dict) -> str:
    """The document as JSON text, sometimes with a key written twice or not as an object."""
    shape = draw(st.sampled_from(["object"] * 10 + ["duplicate", "not an object"]))
    if shape == "duplicate" and doc:
        items = list(doc.items())
        key, value = draw(st.sampled_from(items))
        again = draw(st.sampled_from([value, 0.5, None]))
        items.insert(draw(st.integers(0, len(items))), (key, again))
        return to_json(Pairs(tuple(items)))
    if shape == "not an object":
        return to_json(draw(st.sampled_from([list(doc.values()), [doc], "X", 1, None, True, []])))
    return to_json(doc)


def as_bytes(draw, text: str) -> bytes:
    """The JSON text as bytes, sometimes damaged: cut short, not UTF-8, with a BOM, empty."""
    data = text.encode("utf-8")
    damage = draw(st.sampled_from(["none"] * 20 + ["cut", "bad utf-8", "bom", "empty", "blank", "garbage"]))
    at = draw(st.integers(0, len(data)))
    if damage == "cut":
        return data[:at]
    if damage == "bad utf-8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"])) + data[at:]
    if damage == "bom":
        return b"\xef\xbb\xbf" + data
    if damage == "empty":
        return b""
    if damage == "blank":
        return b" \n\t "
    if damage == "garbage":
        return data[:at] + draw(st.sampled_from([b"}", b"]", b",", b"\x00", b"//", b"'"])) + data[at:]
    return data


@st.composite
def input_files(draw) -> bytes:
    """The bytes of a JSON input file: a valid one, mutated up to three times."""
    doc = draw(starting_inputs())
    for _ in range(draw(st.integers(0, 3))):
        doc = mutate(draw, doc)
    return as_bytes(draw, as_text(draw, doc))


# -- input files through every command -------------------------------------------------


def check_step(path: Path, fmt: str, outcome: Outcome) -> None:
    """step's outcome on ``path`` is the library's: the same matrices, or the same error."""
    trace, message = expected(path)
    if trace is None:
        assert_clean_error(outcome, path)
        assert outcome.stderr == message
        return
    assert outcome.status == 0 and outcome.stderr == "", outcome
    if fmt == "json":
        assert_same_trace(assert_finite_json(outcome.stdout), trace)
    elif fmt == "ndjson":
        data = assert_finite_json(outcome.stdout)
        assert data.pop("file") == str(path)
        assert_same_trace(data, trace)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(outcome.stdout)))
        assert len(rows) == sum(value.size for m in trace.sections().values() for value in m.values())
        for row in rows:
            value = float(row["value"])
            assert math.isfinite(value)
            index = tuple(int(row[axis]) for axis in ("image", "filter", "row", "col") if row.get(axis))
            assert value == trace[row["name"]][index]
    else:
        assert outcome.stdout and not NON_FINITE.search(outcome.stdout)


@fuzz(150)
@given(content=input_files(), fmt=st.sampled_from(["json", "json", "csv", "ndjson", "table"]))
def test_step_on_mutated_files_traces_or_fails_cleanly(workdir, content, fmt):
    path = workdir / "in.json"
    path.write_bytes(content)
    check_step(path, fmt, invoke("step", path, "--format", fmt))


@fuzz(120)
@given(content=input_files(), command=st.sampled_from(["check", "explain", "verify", "answers", "train"]))
def test_every_command_on_mutated_files_succeeds_or_fails_cleanly(workdir, content, command):
    path = workdir / "in.json"
    path.write_bytes(content)
    trace, message = expected(path)
    if command == "check":
        assert_check_outcome(path, invoke("check", path, "--format", "json", "--max-entries", "50"))
    elif command == "explain":
        term = "L" if trace is None else first_entry(trace)
        outcome = invoke("explain", path, term, "--format", "json")
        if trace is None:
            assert_clean_error(outcome, path)
            assert outcome.stderr == message
        else:
            assert outcome.status == 0 and outcome.stderr == ""
            assert math.isfinite(assert_finite_json(outcome.stdout)["value"])
    elif command == "verify":
        answers = workdir / "answers.json"
        answers.write_text('{"L": 0.5, "P1": [[1, 2], [3, 4]]}')
        outcome = invoke("verify", path, answers, "--format", "json")
        if trace is None:
            assert_clean_error(outcome, path)
            assert outcome.stderr == message
        else:
            assert outcome.status in (0, 1) and outcome.stderr == "", outcome
            assert_finite_json(outcome.stdout)
    elif command == "answers":  # the mutated file as the answers to the reference sample
        outcome = invoke("verify", REFERENCE, path, "--format", "json")
        if outcome.status == 2:
            assert_clean_error(outcome, path)
        else:
            assert outcome.status in (0, 1) and outcome.stderr == "", outcome
            assert_finite_json(outcome.stdout)
    else:
        saved = workdir / "saved.json"
        saved.unlink(missing_ok=True)
        outcome = invoke("train", path, "--epochs", "2", "--format", "json", "--save", saved)
        assert_training_outcome(outcome, path, saved)


def first_entry(trace) -> str:
    """A TERM for explain that names an entry of the trace."""
    return "dL_dW1[" + ",".join(["0"] * trace["dL_dW1"].ndim) + "]"


def assert_check_outcome(path: Path, outcome: Outcome) -> None:
    """check reports on every gradient (exit 0 or 1) or refuses the input as step does; it
    may go on where step cannot show dL/dA2, and stop where a stage overflows."""
    _, message = expected(path)
    if outcome.status in (0, 1):
        assert outcome.stderr == ""
        assert assert_finite_json(outcome.stdout)["ok"] is (outcome.status == 0)
        assert message is None or "dL_dA2" in message
    else:
        assert_clean_error(outcome, path)
        if message is not None and "dL_dA2" not in message:
            assert outcome.stderr == message


def assert_training_outcome(outcome: Outcome, path: Path, saved: Path) -> None:
    """train ends with its JSON and a saved file that reads back, diverges (exit 1, one
    line naming the file), or refuses the input (exit 2)."""
    if outcome.status == 0:
        assert "Traceback" not in outcome.stderr and len(outcome.stderr.splitlines()) == 1
        data = assert_finite_json(outcome.stdout)
        assert len(data["history"]) == 2
        problem = load_problem(saved)  # the saved input is valid
        for name, value in data["parameters"].items():
            assert np.array_equal(np.asarray(value, dtype=np.float64), problem.inputs[name])
    elif outcome.status == 1:
        assert "diverged" in outcome.stderr
        assert_clean_error(outcome, path, status=1)
    else:
        assert_clean_error(outcome, path)


def assert_step_as_library(workdir: Path, doc, fmt: str = "json") -> None:
    """Write ``doc`` (a dict, or JSON text) and check step's outcome on it."""
    path = workdir / "in.json"
    path.write_text(doc if isinstance(doc, str) else to_json(doc))
    check_step(path, fmt, invoke("step", path, "--format", fmt))


@pytest.mark.parametrize("key", [*REQUIRED, *OPTIONS, "comment"])
def test_every_wrong_type_at_every_key(workdir, key):
    for value in WRONG:
        assert_step_as_library(workdir, {**reference(), key: value})
        assert_step_as_library(workdir, {**reference(), key: [value]})


@pytest.mark.parametrize("key", [*REQUIRED, *OPTIONS])
def test_every_extreme_number_at_every_key(workdir, key):
    """Each key filled with each number at the edges of float64, every entry or the first:
    a trace whose numbers are all finite, or an error naming the key or the stage."""
    for number in EXTREME:
        value = reference()[key] if key in REQUIRED else 1
        leaves = list(leaf_paths(value)) if isinstance(value, list) else []
        everywhere = value if leaves else number
        for path in leaves:
            everywhere = set_at(everywhere, path, number)
        assert_step_as_library(workdir, {**reference(), key: everywhere})
        if leaves:
            assert_step_as_library(workdir, {**reference(), key: set_at(value, leaves[0], number)})


@pytest.mark.parametrize("key", OPTIONS)
def test_every_option_value(workdir, key):
    for value in OPTION_VALUES:
        for fmt in ("json", "csv"):
            assert_step_as_library(workdir, {**reference(), key: value}, fmt)


@fuzz(30)
@given(contents=st.lists(input_files(), min_size=2, max_size=4))
def test_several_files_each_traced_or_reported(workdir, contents):
    """Several files in one run: a line of NDJSON for each good one, a line on stderr for
    each bad one, and exit status 2 when any was bad."""
    paths = []
    for index, content in enumerate(contents):
        paths.append(workdir / f"in{index}.json")
        paths[-1].write_bytes(content)
    outcomes = [expected(path) for path in paths]
    outcome = invoke("step", *paths, "--format", "ndjson")
    good = [path for path, (trace, _) in zip(paths, outcomes) if trace is not None]
    assert outcome.status == (0 if len(good) == len(paths) else 2)
    lines = [assert_finite_json(line) for line in outcome.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(path) for path in good]
    assert outcome.stderr == "".join(message for _, message in outcomes if message is not None)


@fuzz(60)
@given(doc=valid_problems(), data=st.data())
def test_explain_any_entry_in_or_out_of_range(workdir, doc, data):
    """explain on an entry of a random problem gives its value; an index out of range, or
    one index too many or too few, is one line naming the TERM."""
    path = workdir / "in.json"
    path.write_text(to_json(doc))
    trace = run(load_problem(path))
    name = data.draw(st.sampled_from(list(STAGE)))
    shape = np.shape(trace[name])
    index = [data.draw(st.integers(0, n - 1)) for n in shape]
    fits = data.draw(st.booleans())
    if not fits:
        index = data.draw(st.sampled_from([
            [*index, 0], index[:-1], [n + data.draw(st.integers(0, 10**20)) for n in shape] or [0],
        ]))  # fmt: skip
    term = name + (f"[{','.join(map(str, index))}]" if index else "")
    outcome = invoke("explain", path, term, "--format", "json")
    if len(index) == len(shape) and all(i < n for i, n in zip(index, shape)):
        assert outcome.status == 0 and outcome.stderr == "", outcome
        value = assert_finite_json(outcome.stdout)["value"]
        assert value == pytest.approx(float(trace[name][tuple(index)]), rel=1e-9, abs=1e-9)
    else:
        assert_clean_error(outcome, term)


# -- .npz files ------------------------------------------------------------------------


#: dtypes an array of a .npz file might have; only integers and floats are numbers.
NPZ_DTYPES = [
    "float64", "float32", "float16", "longdouble", "int8", "int64", "uint64", "bool",
    "complex128", "datetime64[D]", "timedelta64[s]", "U3", "S3", "object", "V8",
]  # fmt: skip
#: Numbers at the edges of each float type, as arrays can hold them.
NPZ_EXTREME = [
    np.inf, -np.inf, np.nan, 1e308, -1e308, 5e-324, -0.0, np.float16(65504), np.longdouble("1e4000"),
    np.iinfo(np.int64).max, np.iinfo(np.int64).min, np.iinfo(np.uint64).max,
]  # fmt: skip
NPZ_ODD_KEYS = ["", " ", "é", "w1", "X ", "🙂", "k" * 200, "a\nb", "a/b", "X.npy"]


def as_arrays(doc: dict) -> dict:
    """An input document as the arrays of a .npz file (numbers as 0-d arrays)."""
    return {key: np.asarray(value) for key, value in doc.items() if value is not None}


def npz_mutation(draw, arrays: dict) -> dict:
    """One mutation of the arrays of a .npz file."""
    arrays = dict(arrays)
    key = draw(st.sampled_from(list(arrays)))
    array = np.asarray(arrays[key])
    kind = draw(st.sampled_from(
        ["dtype", "0-d", "deeper", "shallower", "empty", "extreme", "option", "extra key", "drop key"]
    ))  # fmt: skip
    if kind == "dtype":
        dtype = draw(st.sampled_from(NPZ_DTYPES))
        if dtype == "object":
            arrays[key] = np.asarray(array.tolist() if array.ndim else [array.item()], dtype=object)
        elif dtype == "V8":
            arrays[key] = np.zeros(array.shape, dtype="V8")
        else:
            try:
                arrays[key] = array.astype(dtype)
            except (TypeError, ValueError):  # text that is no number, say
                arrays[key] = np.zeros(array.shape, dtype=dtype)
    elif kind == "0-d":
        arrays[key] = np.asarray(array.flat[0] if array.size else 0.5)
    elif kind == "deeper":
        arrays[key] = array[None]
    elif kind == "shallower":
        arrays[key] = array.ravel() if array.ndim > 1 or not array.size or draw(st.booleans()) else array.flat[0]
    elif kind == "empty":
        arrays[key] = np.zeros((0, *array.shape[1:]))
    elif kind == "extreme":
        number = draw(st.sampled_from(NPZ_EXTREME))
        try:
            filled = np.array(array, dtype=np.asarray(number).dtype)  # a copy, even of a scalar
        except (TypeError, ValueError):
            filled = np.zeros(array.shape, dtype=np.asarray(number).dtype)
        if filled.size and filled.ndim and draw(st.booleans()):
            filled.flat[0] = number
        else:
            filled[...] = number
        arrays[key] = filled
    elif kind == "option":
        option = draw(st.sampled_from(OPTIONS))
        arrays[option] = draw(st.sampled_from([
            np.int64(0), np.int64(2), np.float64(2.0), np.float64(2.5), np.bool_(True), np.str_("2"),
            np.bytes_(b"2"), np.array([2]), np.int64(2**62), np.uint64(2**64 - 1), np.float64(np.nan),
            np.float64(1e-300), np.float16(0.1), np.longdouble(0.1), np.complex128(2),
        ]))  # fmt: skip
    elif kind == "extra key":
        arrays[draw(st.sampled_from(NPZ_ODD_KEYS))] = np.float64(1)
    elif kind == "drop key":
        del arrays[key]
    return arrays


@st.composite
def npz_files(draw) -> bytes:
    """The bytes of a .npz input file: a valid one with mutated arrays, or damaged."""
    arrays = as_arrays(draw(starting_inputs()))
    for _ in range(draw(st.integers(0, 3))):
        with warnings.catch_warnings():  # casts such as inf to int64 are meant to be odd
            warnings.simplefilter("ignore")
            arrays = npz_mutation(draw, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=True, **arrays)  # pickles are written, to be refused
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none"] * 12 + ["cut", "empty", "not an array", "one .npy", "json"]))
    if damage == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if damage == "empty":
        return b""
    if damage == "not an array":
        with zipfile.ZipFile(buffer, "a") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # X.npy twice: zipfile warns of the duplicate
            archive.writestr(draw(st.sampled_from(["notes.txt", "X.npy", "Y.npy"])), b"not an array")
        return buffer.getvalue()
    if damage == "one .npy":
        single = io.BytesIO()
        np.save(single, np.ones(3))
        return single.getvalue()
    if damage == "json":
        return to_json(reference()).encode()
    return data


@fuzz(120)
@given(content=npz_files(), command=st.sampled_from(["step", "step", "train", "check"]))
def test_npz_files_trace_or_fail_cleanly(workdir, content, command):
    path = workdir / "in.npz"
    path.write_bytes(content)
    if command == "step":
        check_step(path, "json", invoke("step", path, "--format", "json"))
    elif command == "train":
        saved = workdir / "saved.npz"
        saved.unlink(missing_ok=True)
        outcome = invoke("train", path, "--epochs", "2", "--format", "json", "--save", saved)
        assert_training_outcome(outcome, path, saved)
    else:
        assert_check_outcome(path, invoke("check", path, "--format", "json", "--max-entries", "50"))


#: JSON values of every kind, as the text a .npz string or a typed answer may hold.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.integers() | st.integers(-(10**500), 10**500),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def hostile_texts(draw) -> str:
    """Text of JSON values, a layer's type or option, broken JSON, deep nesting, huge numbers."""
    kind = draw(st.sampled_from(["json", "layers", "text", "deep", "digits", "cut"]))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    if kind == "layers":
        layer = draw(st.sampled_from(["conv", "relu", "maxpool", "flatten", "dense", "sigmoid", "softmax"]))
        option = draw(st.sampled_from(["stride", "padding", "size", "alpha", "type", "x" * 1000]))
        value = draw(JSON_VALUES | st.sampled_from([nested(50), "x" * 10_000]))
        layers = ["conv", "relu", "maxpool", "flatten", {"type": layer, option: value}, "sigmoid"]
        return json.dumps(layers)
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "deep":
        return nested(draw(st.sampled_from([900, 5000, 100_000])), draw(st.sampled_from(["", "1", "{}"])))
    if kind == "digits":
        return f"[{'9' * draw(st.sampled_from([309, 400, 4300, 4301, 10_000]))}]"
    text = json.dumps(draw(JSON_VALUES))
    return text[: draw(st.integers(0, len(text)))]


@fuzz(120)
@given(key=st.sampled_from(["layers", "loss", "conventions", "comment"]), text=hostile_texts())
def test_npz_strings_trace_or_fail_cleanly(workdir, key, text):
    """A .npz file's strings (JSON text: layers, loss, conventions; or a comment)."""
    arrays = as_arrays(reference())
    if key != "layers":
        arrays["layers"] = np.array('["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]')
    arrays[key] = np.array(text)
    path = workdir / "strings.npz"
    np.savez(path, **arrays)
    check_step(path, "json", invoke("step", path, "--format", "json"))


@fuzz(150)
@given(text=hostile_texts() | st.text(max_size=200))
def test_any_typed_answer_is_an_array_or_a_short_message(text):
    from cnntrace.quiz import parse_answer

    answer = parse_answer(text, (4, 4))
    if isinstance(answer, str):
        assert len(answer) <= MAX_MESSAGE and "\n" not in answer
    else:
        assert answer.dtype == np.float64 and np.isfinite(answer).all()


@fuzz(40)
@given(lines=st.lists(hostile_texts() | st.sampled_from(["?", "skip", "quit", "", "1 2 3"]), max_size=6))
def test_a_quiz_on_any_answers_ends_cleanly_and_keeps_its_record(workdir, lines):
    record = workdir / "record.json"
    record.unlink(missing_ok=True)
    result = runner.invoke(app, ["quiz", str(REFERENCE), "--only", "P1,B2", "--record", str(record)],
                           input="".join(line + "\n" for line in lines))  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1), result.stderr[-500:]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert max(map(len, result.stderr.splitlines()), default=0) <= 2000  # no answer echoed whole
    saved = json.loads(record.read_text())
    assert saved["total"] == 2 and len(saved["answers"]) <= 2


# -- the arguments of every command ----------------------------------------------------


INTEGERS = ["-1", "0", "1", "2", "17", "18", "99999999999999999999", "-99999999999999999999",
            "x", "", "1.5", "1e3", " 3", "0x10", "inf", "nan", "٣"]  # fmt: skip
FLOATS = ["0", "-1", "nan", "-nan", "inf", "-inf", "1e400", "-1e400", "1e-400", "1e-12", "1e-13",
          "0.1", "0.2", "1e300", "5e-324", "x", "", "1,5", "0x1p-3"]  # fmt: skip
FORMATS = ["table", "json", "ndjson", "csv", "markdown", "latex", "xml", "", "JSON", "json "]
NAMES = [*STAGE, "dL/dW1", "∂L/∂W1", "X", "Y", "lr", "Q7", "", " ", ",", "é", "L,L", "P1,,Z1"]
SIZES = ["1", "2", "3", "6", "8", "3x5", "5x3", "3X3", "3×3", "0", "-1", "x", "3x", "x3",
         "3x3x3", "1e3", "", "６", "1_0", "99999999999999999999", "100000x100000", "2x99999999999999999999"]  # fmt: skip


def maybe(option: str, values) -> st.SearchStrategy:
    """[] or [option, value]."""
    return st.one_of(st.just([]), st.sampled_from(values).map(lambda value: [option, value]))


def terms() -> st.SearchStrategy:
    """TERMs for explain: entries in and out of range, odd spellings, and any text."""
    index = st.one_of(
        st.integers(0, 5).map(str), st.sampled_from(["-1", "99999999999999999999", "", " 1 ", "a", "1.0", "+1", "٣"]),
    )  # fmt: skip
    indexed = st.tuples(st.sampled_from(NAMES), st.lists(index, max_size=4)).map(
        lambda pair: pair[0] + (f"[{','.join(pair[1])}]" if pair[1] else "")
    )
    return st.one_of(
        indexed,
        st.sampled_from(["L", "L[0]", "dL_dW1[0][1]", "dL/dW1[0, 1]", "Z1[0,0", "Z1[[0]]", "Z1]0[",
                         "Z1[0,0]]", "\n", "Z1[\n]", "Z1[0]\x00", "dL_dW1[0,1] extra"]),
        st.text(max_size=30),
        st.text(alphabet="Z1[]0,-9 ", min_size=90, max_size=120),
    )  # fmt: skip


@st.composite
def command_lines(draw, workdir: Path):
    """(command, argv) for any command, with arguments at and around their bounds."""
    files = [REFERENCE, REFERENCE, workdir / "absent.json", workdir, workdir / "not json.json", ""]
    file = draw(st.sampled_from(files))
    command = draw(st.sampled_from(["step", "check", "verify", "explain", "train", "init", "schema", "none"]))
    if command == "step":
        args = [file, *draw(maybe("--format", FORMATS)), *draw(maybe("--precision", INTEGERS)),
                *draw(maybe("--only", [*NAMES, "P1,dL_dW1", "dL/dW1"])), *draw(st.sampled_from([[], ["--brief"]]))]  # fmt: skip
    elif command == "check":
        args = [file, *draw(maybe("--format", FORMATS)), *draw(maybe("--eps", FLOATS)),
                *draw(maybe("--rtol", FLOATS)), *draw(maybe("--atol", FLOATS)),
                *draw(maybe("--max-entries", INTEGERS)), *draw(maybe("--seed", INTEGERS))]  # fmt: skip
    elif command == "verify":
        answers = draw(st.sampled_from([*files, workdir / "answers.json"]))
        args = [file, answers, *draw(maybe("--format", FORMATS)), *draw(maybe("--rtol", FLOATS)),
                *draw(maybe("--atol", FLOATS))]  # fmt: skip
    elif command == "explain":
        args = [file, draw(terms()), *draw(maybe("--format", FORMATS)), *draw(maybe("--precision", INTEGERS))]
    elif command == "train":
        saves = [workdir / "out.json", workdir / "out.npz", workdir, workdir / "absent" / "out.json", ""]
        args = [file, *draw(maybe("--epochs", ["-1", "0", "1", "2", "x", "", "1.5"])),
                *draw(maybe("--lr", FLOATS)), *draw(maybe("--batch-size", INTEGERS)),
                *draw(st.sampled_from([[], ["--shuffle"], ["--no-shuffle"]])), *draw(maybe("--seed", INTEGERS)),
                *draw(maybe("--save", saves)), *draw(maybe("--format", FORMATS)),
                *draw(maybe("--precision", INTEGERS))]  # fmt: skip
    elif command == "init":
        images = [workdir / "absent.png", workdir, workdir / "not json.json"]
        args = [*draw(maybe("--size", SIZES)), *draw(maybe("--kernel", SIZES)),
                *draw(maybe("--filters", [*INTEGERS, "64", "65"])),
                *draw(maybe("--batch", [*INTEGERS, "10000", "10001"])), *draw(maybe("--seed", INTEGERS)),
                *draw(maybe("--image", images)), *draw(st.sampled_from([[], ["--invert"]])),
                *draw(maybe("-o", [workdir / "init.json", workdir, workdir / "absent" / "init.json"]))]  # fmt: skip
    elif command == "schema":
        args = draw(st.sampled_from([[], ["extra"], ["--format", "json"]]))
    else:  # no command, or a word that is none
        command = draw(st.sampled_from([None, "stpe", "--help-me", "-x", ""]))
        return None, [] if command is None else [command]
    return command, [command, *args]


#: The exit statuses each command may give: 1 is a check that failed or a training that diverged.
STATUSES = {"check": {0, 1, 2}, "verify": {0, 1, 2}, "train": {0, 1, 2}}


@fuzz(200)
@given(data=st.data())
def test_command_line_arguments_succeed_or_fail_cleanly(workdir, data):
    (workdir / "not json.json").write_text("not json")
    (workdir / "answers.json").write_text('{"L": 0.5105, "P1": [[0.875, 0.375], [0.625, 0.375]]}')
    for stale in ("init.json", "out.json", "out.npz"):
        (workdir / stale).unlink(missing_ok=True)
    command, argv = data.draw(command_lines(workdir))
    outcome = invoke(*argv)
    assert "Traceback" not in outcome.stderr
    assert outcome.status in STATUSES.get(command, {0, 2}), outcome
    if outcome.status == 2:
        if command is None and argv == []:
            return  # no arguments: the help, on stdout, as --help gives it
        assert_usage_error(outcome)
    elif outcome.status == 1:
        if command == "train":
            assert_clean_error(outcome, status=1)
        else:
            assert outcome.stderr == "" and outcome.stdout
    elif command == "init":
        written = workdir / "init.json"
        text = written.read_text() if written.exists() else outcome.stdout
        problem_from_dict(json.loads(text))  # a valid input
    elif command == "train" and (workdir / "out.json").exists():
        load_problem(workdir / "out.json")
    elif command is not None:
        assert outcome.stdout and not NON_FINITE.search(outcome.stdout), outcome


def test_no_arguments_shows_the_help():
    outcome = invoke()
    assert "Usage: " in outcome.stdout + outcome.stderr and "Traceback" not in outcome.stderr


# -- as a real process -----------------------------------------------------------------


@fuzz(6)
@given(content=input_files(), fmt=st.sampled_from(["json", "csv", "table"]))
def test_a_real_process_gives_what_the_command_line_gives_in_process(workdir, content, fmt):
    """A sample through ``python -m cnntrace``: real pipes, real exit status, and the same
    outcome as in process."""
    path = workdir / "in.json"
    path.write_bytes(content)
    real = process("step", path, "--format", fmt)
    check_step(path, fmt, real)
    assert real == invoke("step", path, "--format", fmt)


@pytest.mark.parametrize(
    "args",
    [
        ["explain", REFERENCE, "Z1[" + "9" * 5000 + ",0]"],
        ["init", "--size", "99999999999999999999"],
        ["train", REFERENCE, "--epochs", "0"],
        ["step", "absent.json", "--format", "csv"],
    ],
    ids=["explain-5000-digits", "init-huge-size", "train-no-epochs", "step-missing-file"],
)
def test_bad_arguments_in_a_real_process(args):
    assert_usage_error(process(*args))


# -- the corpus of inputs that once failed ---------------------------------------------


def corpus_cases() -> list:
    """(file, case) for every case of tests/corpus/cases.json."""
    cases = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
    return [pytest.param(CORPUS / name, case, id=name) for name, case in sorted(cases.items())]


@pytest.mark.parametrize("file, case", corpus_cases())
def test_corpus(tmp_path, file, case):
    """Each input that once failed now gives its expected outcome, cleanly."""
    text = file.read_text(encoding="utf-8", errors="replace").removesuffix("\n")
    places = {"{file}": str(file), "{text}": text, "{reference}": str(REFERENCE), "{tmp}": str(tmp_path)}
    args = [places.get(arg, arg) for arg in case["args"]]
    outcome = invoke(*args)
    assert outcome.status == case["exit"], outcome
    assert case.get("stderr", "") in outcome.stderr, outcome
    if outcome.status == 2 and case.get("usage"):
        assert_usage_error(outcome)
    elif outcome.status == 2:
        assert_clean_error(outcome, places.get(case.get("names"), case.get("names")))


#: The names an answer file may hold: the reference's matrices, single entries as explain
#: spells them, and names no trace has.
ANSWER_NAMES = st.sampled_from(["Z1", "P1", "F", "L", "B2", "dL_dW1", "dL_dX", "Z1[0,1]", "dL/dW1[2,2]", "Z1[9,9]",
                                "W1", "Q7", "", "x" * 500, "Z1[0,1,2]", "\x1b[31m"])  # fmt: skip


@st.composite
def answer_files(draw) -> str:
    """An ANSWERS file: an object of names to any JSON value (hostile text parsed where it is
    JSON), or hostile text whole."""
    if draw(st.booleans()):
        return draw(hostile_texts())
    answers = {}
    for name in draw(st.lists(ANSWER_NAMES, max_size=5)):
        text = draw(hostile_texts())
        try:
            answers[name] = json.loads(text)
        except (ValueError, RecursionError):
            answers[name] = text
    try:
        return json.dumps(answers)
    except (ValueError, RecursionError):
        return "{}"


@fuzz(60)
@given(text=answer_files())
def test_verify_on_any_answers_judges_or_fails_cleanly(workdir, text):
    answers = workdir / "answers.json"
    answers.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = invoke("verify", REFERENCE, answers, "--format", "json")
    if outcome.status == 2:
        assert_clean_error(outcome, answers)
    else:
        assert outcome.status in (0, 1) and outcome.stderr == "", outcome
        assert_finite_json(outcome.stdout)
