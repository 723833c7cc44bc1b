"""Reading input files into a validated Problem, and writing them back.

An input file is a JSON object (see ``cnntrace schema`` and the README) in one of two forms:

- the reference network's: X, Y, W1, B1, W2, B2 and the optional stride, padding, pool,
  pool_stride and lr;
- any network's: X, ``layers``, Y and ``loss`` (or ``grad``), W1, B1 … for each weighted
  layer, and lr.

A ``.npz`` file holds the same keys as arrays (for datasets too large for JSON; pickles
refused), ``layers`` and ``loss`` as JSON text in 0-d string arrays. Every error names the
file, the key (down to the offending entry, e.g. ``X[2][5]``) and what is wrong.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

from cnntrace.errors import ArgumentError, InputError, OutputError, shown
from cnntrace.naming import RUNNING, WEIGHT
from cnntrace.text import number_text

REQUIRED_KEYS = ("X", "Y", "W1", "B1", "W2", "B2")
OPTIONAL_KEYS = ("stride", "padding", "pool", "pool_stride", "lr")
#: The reference form's options, which a network of layers writes in its layers instead.
REFERENCE_OPTIONS = {
    "stride": "the conv layer's \"stride\"",
    "padding": "the conv layer's \"padding\"",
    "pool": "the pooling layer's \"size\"",
    "pool_stride": "the pooling layer's \"stride\"",
}
#: Keys that carry notes for people and are otherwise ignored.
FREE_KEYS = ("comment", "$schema")
KNOWN_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS + ("conventions",) + FREE_KEYS
#: The keys of a network of layers, besides its weights W1, B1, W2 ….
LAYERS_KEYS = ("X", "Y", "grad", "layers", "loss", "lr", "conventions", "torch_names") + FREE_KEYS

#: Files larger than this, and .npz files whose arrays unpack to more, are refused before
#: they are read (a 20,000-image dataset of 28×28 images takes 126 MB as .npz).
MAX_INPUT_BYTES = 256 * 1024 * 1024
#: What a read asks for at a time past a regular file's size (a pipe, a device).
READ_BLOCK = 2**20
#: An answer file is smaller: verify holds about twenty times its size while it judges and
#: diagnoses (measured: 9.6 MB of wrong answers to a 300×300 image, 217 MB), and hand answers
#: are small. 32 MiB holds the whole of step's output for a 500×500 image.
MAX_ANSWERS_BYTES = 32 * 2**20
#: X of a batch is M×H×W; nothing in the input is nested deeper. An answer to check can be
#: one level deeper: Z1 of a batch with several filters is M×K×h×w.
MAX_DEPTH = 3
MAX_ANSWER_DEPTH = 4


def _describe(value) -> str:
    """A JSON value named the way the file spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {json.dumps(value)[:40]}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if hasattr(value, "dtype"):
        return f"an array of shape {'×'.join(map(str, value.shape)) or 'scalar'}"
    return repr(value)


class _Constant(float):
    """NaN or Infinity where the JSON file wrote it: kept to be refused under its key."""

    def __new__(cls, name: str):
        value = super().__new__(cls, {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[name])
        value.token = name
        return value


def _unique_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {json.dumps(key)} appears twice")
        seen[key] = value
    return seen


def _limit_text(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit} bytes"


@contextmanager
def opened(path: str | Path, what: str = "an input file"):
    """``path`` open for reading in binary, whatever it is (a regular file, a device, a FIFO,
    stdin as /dev/stdin or as ``-``); InputError naming the file when it cannot be opened."""
    file = str(path)
    if file == "-":  # stdin, as Unix tools read it (`… | cnntrace step -`); left open
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such file", file=file) from None
    except IsADirectoryError:
        raise InputError(f"is a directory, not {what}", file=file) from None
    except PermissionError:
        raise InputError("permission denied", file=file) from None
    except OSError as error:
        raise InputError(f"cannot be read ({error.strerror or error})", file=file) from None
    with handle:
        yield handle


def read_bounded(handle, file: str, limit: int | None = None, what: str = "input files") -> bytes:
    """At most ``limit`` bytes of the open file ``handle``: it reads up to ``limit`` + 1 and
    refuses the file (InputError naming it and the limit) when that many came. A regular
    file larger than the limit is refused by its size before reading; the others (a device,
    a FIFO, a pipe, a file that grew) are judged by what they give. ``limit`` is
    MAX_INPUT_BYTES unless given."""
    import os
    import stat

    limit = MAX_INPUT_BYTES if limit is None else limit
    try:
        status = os.fstat(handle.fileno())
        if stat.S_ISDIR(status.st_mode):
            raise InputError("is a directory, not an input file", file=file)
        if stat.S_ISREG(status.st_mode) and status.st_size > limit:
            raise InputError(
                f"is {status.st_size / 2**20:.0f} MiB; {what} are limited to {_limit_text(limit)}", file=file
            )
        # A regular file is asked for its size and one byte more, the rest a MiB at a time up
        # to the limit (a pipe, a device, a file that grew while read). One read of limit + 1
        # would allocate that much first: a 14 MB .npz took 9 ms to read, not 2.
        asked = min(status.st_size, limit) + 1 if stat.S_ISREG(status.st_mode) else READ_BLOCK
        parts, total = [], 0
        while total <= limit:
            part = handle.read(min(asked, limit + 1 - total))
            if not part:  # the end of the file
                break
            parts.append(part)
            total += len(part)
            asked = READ_BLOCK
    except OSError as error:
        raise InputError(f"cannot be read ({error.strerror or error})", file=file) from None
    if total > limit:  # refused before its pieces are joined: no second copy of what passed the limit
        raise InputError(f"gives more than {_limit_text(limit)}; {what} are limited to {_limit_text(limit)}", file=file)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_file(path: str | Path, limit: int | None = None, what: str = "input files") -> bytes:
    """The bytes of ``path``, read bounded (see read_bounded): the one way cnntrace reads a
    file whole."""
    with opened(path) as handle:
        return read_bounded(handle, str(path), limit, what)


def read_json(path: str | Path, limit: int | None = None, what: str = "input files") -> dict:
    """The JSON object in ``path``; InputError (naming the file) for anything else."""
    return json_from_bytes(read_file(path, limit, what), str(path), what)


def json_from_bytes(content: bytes, file: str, what: str = "input files") -> dict:
    """The JSON object in ``content``, the bytes of ``file``: UTF-8, with or without the
    byte-order mark some editors write first."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text, so not a JSON file", file=file) from None
    if not text.strip():
        raise InputError("is empty; expected a JSON object (or a .npz file)", file=file)
    try:
        data = json.loads(text, parse_constant=_Constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise InputError(
            f"is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})", file=file
        ) from None
    except ValueError as error:  # a key twice, an integer of more digits than Python reads
        raise InputError(f"is not valid input JSON: {error}", file=file) from None
    except RecursionError:
        raise InputError("is nested too deeply to be an input file", file=file) from None
    if not isinstance(data, dict):
        expected = f"with keys {', '.join(REQUIRED_KEYS)}" if what == "input files" else "of names and values"
        raise InputError(f"expected a JSON object {expected}; found {_describe(data)}", file=file)
    return data


def check_keys(data: dict) -> None:
    """Missing and unknown keys, each with the key it most likely meant."""
    unknown = [key for key in data if key not in KNOWN_KEYS]
    for key in REQUIRED_KEYS:
        if key not in data:
            guess = difflib.get_close_matches(key, unknown, n=1, cutoff=0.5) or [
                other for other in unknown if other.lower() == key.lower()
            ]
            hint = f" (found {json.dumps(guess[0])}: did you mean {key}?)" if guess else ""
            raise InputError(f"missing{hint}; an input needs {', '.join(REQUIRED_KEYS)}", key=key)
    for key in unknown:
        guess = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.5) or [
            known for known in KNOWN_KEYS if known.lower() == key.lower()
        ]
        hint = f"did you mean {guess[0]}?" if guess else f"known keys are {', '.join(KNOWN_KEYS)}"
        raise InputError(f"unknown key; {hint}", key=key)


def _number(value, where: str) -> float:
    if isinstance(value, _Constant):
        raise InputError(f"{value.token} is not a number JSON allows; write a finite number", key=where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {_describe(value)}", key=where)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InputError("is too large for float64 (it overflows to infinity)", key=where)
    return number


def _rectangular(value: list, shape: list[int]):
    """The nested lists as a float64 array when they are rectangular, of ``shape``, and
    hold only finite ints and floats; else None, and the caller looks for the entry at
    fault. This is the fast path for large, valid inputs."""
    import numpy as np

    try:
        array = np.array(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.shape != tuple(shape) or not np.isfinite(array).all():
        return None
    rows = [value]
    for _ in shape[:-1]:
        rows = [item for row in rows for item in row]
    # numpy reads True, "1.5" and None as numbers; a JSON input must not (nor NaN tokens).
    if not all(set(map(type, row)) <= {int, float} for row in rows):
        return None
    return array


def numbers(value, key: str, max_depth: int = MAX_DEPTH):
    """A number or a rectangular nested list of numbers, checked entry by entry.

    Returns the value with every entry a Python float; raises InputError naming the first
    entry that is not a finite number or the first row whose length differs. An array read
    from a .npz file is returned as it is once its type is known to be numbers; a torch tensor,
    a tuple or another array-like (the Python API's) is read as numpy reads it.
    """
    if not isinstance(value, (list, int, float, str)) and value is not None:
        from cnntrace.checks import plain  # lazy: numpy stays out of start-up

        value = plain(value)
    if hasattr(value, "dtype"):
        if value.dtype.kind not in "iuf":
            raise InputError(f"expected an array of numbers, found one of type {value.dtype}", key=key)
        return value
    if not isinstance(value, list):
        return _number(value, key)
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            raise InputError("is an empty list; expected numbers", key=key + "[0]" * (len(shape) - 1))
        probe = probe[0]
    if len(shape) > max_depth:
        raise InputError(f"is nested {len(shape)} lists deep; at most {max_depth} are used", key=key)
    if (array := _rectangular(value, shape)) is not None:
        return array

    def walk(node, depth: int, where: str):
        if depth == len(shape):
            if isinstance(node, list):
                raise InputError(f"expected a number like {key}{'[0]' * depth}, got a list", key=where)
            return _number(node, where)
        if not isinstance(node, list):
            raise InputError(
                f"expected a list of {shape[depth]} like {key}{'[0]' * depth}, got {_describe(node)}",
                key=where,
            )
        if len(node) != shape[depth]:
            raise InputError(
                f"has {len(node)} entries; expected {shape[depth]} like {key}{'[0]' * depth} "
                "(every row must have the same length)",
                key=where,
            )
        return [walk(item, depth + 1, f"{where}[{index}]") for index, item in enumerate(node)]

    return walk(value, 0, key)


def _text_value(value, key: str = "layers"):
    """A .npz file's JSON text (layers, loss) as the value it spells; others as they are.
    Text nested deeper than JSON input ever is, is refused naming ``key``."""
    if isinstance(value, str) and value[:1] in "[{\"":
        try:
            return json.loads(value, parse_constant=_Constant)
        except RecursionError:
            raise InputError("is JSON text nested too deeply to be read", key=key) from None
        except ValueError:
            return value
    return value


def check_layers_keys(data: dict) -> None:
    """A network of layers: no reference-form option beside it, Y or grad (not both)."""
    for key in data:
        if key in REFERENCE_OPTIONS:
            raise InputError(
                f"belongs to the reference form; with layers, write {REFERENCE_OPTIONS[key]} "
                f"in the layer, e.g. {{\"type\": \"conv\", \"stride\": 2}}",
                key=key,
            )
        if key not in LAYERS_KEYS and not WEIGHT.fullmatch(key) and not RUNNING.fullmatch(key):
            guess = difflib.get_close_matches(key, LAYERS_KEYS, n=1, cutoff=0.5)
            hint = f"did you mean {guess[0]}?" if guess else "known keys are X, Y, grad, layers, loss, lr and W1, B1, W2, B2 …"
            raise InputError(f"unknown key; {hint}", key=key)
    if "X" not in data:
        raise InputError("missing; an input needs X", key="X")
    if "Y" in data and "grad" in data:
        raise InputError("give Y (with a loss) or grad, not both", key="grad")
    if "Y" not in data and "grad" not in data:
        raise InputError("missing: give Y (the labels or targets), or grad (dL/d of the output)", key="Y")


def problem_from_dict(data: dict, *, testing: bool = False):
    """Validate a parsed input object and return its Problem (InputError names the key).

    ``conventions`` (pool_ties, relu_grad_at_zero, flatten) set the layers' options.
    ``testing``: the images of a test set, which the network evaluates (see
    Problem.assemble)."""
    from cnntrace.problem import parse_conventions  # imported on use: numpy stays out of start-up

    problem = _problem(data, testing)
    if "torch_names" in data:
        problem = problem.with_torch_names(_text_value(data["torch_names"], "torch_names"))
    if "conventions" in data:
        problem = problem.with_conventions(parse_conventions(_text_value(data["conventions"], "conventions")))
    return problem


def _problem(data: dict, testing: bool = False):
    # Imported on use: numpy and the layers stay out of start-up (and the reference network
    # out of a file that gives its own layers).
    from cnntrace.problem import Problem  # lazy: start-up (numpy, the layers)

    if "layers" in data:
        data = {key: value if key in FREE_KEYS else _text_value(value, key) for key, value in data.items()}
        check_layers_keys(data)
        given = "grad" in data
        target = "grad" if given else "Y"
        weights = {key: numbers(value, key, MAX_DEPTH + 1) for key, value in data.items()
                   if WEIGHT.fullmatch(key) or RUNNING.fullmatch(key)}  # fmt: skip
        lr = data.get("lr", 0.1)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise InputError(f"expected a number, got {_describe(lr)}", key="lr")
        return Problem.from_layers(
            numbers(data["X"], "X", MAX_DEPTH + 1), numbers(data[target], target, MAX_DEPTH + 1),
            data["layers"], weights, loss=data.get("loss"), given_gradient=given, lr=lr, testing=testing,
        )  # fmt: skip
    check_keys(data)
    arrays = {key: numbers(data[key], key) for key in REQUIRED_KEYS}
    options = {key: data[key] for key in OPTIONAL_KEYS if key in data}
    for key, value in options.items():
        if key == "pool_stride" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"expected a number, got {_describe(value)}", key=key)
    from cnntrace.reference import reference_problem  # lazy: only the reference form needs it

    return reference_problem(**arrays, **options)


def is_npz(path: str | Path) -> bool:
    """Whether ``path`` names a .npz file (by its suffix); anything else is read as JSON."""
    return Path(path).suffix.lower() == ".npz"


def read_npz(path: str | Path, limit: int | None = None, what: str = "input files") -> dict:
    """The arrays of a .npz file by key, read with pickles refused.

    A 0-d array of numbers becomes a number and a 0-d string a str, as JSON would give them
    (stride, lr, comment ...). InputError (naming the file) for anything else.
    """
    # Read bounded whatever the file is: numpy would read a FIFO or a device without end.
    return npz_from_bytes(read_file(path, limit, what), str(path), limit, what)


def npz_from_bytes(data: bytes, file: str, limit: int | None = None, what: str = "input files") -> dict:
    """read_npz of ``data``, the bytes of ``file``."""
    import io
    import zipfile

    import numpy as np

    content = io.BytesIO(data)
    try:
        archive = np.load(content, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise InputError("is not a .npz file of arrays that numpy can read", file=file) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError("holds one .npy array; expected a .npz file of named arrays", file=file)
    # A compressed archive can hold far more than its size on disk: count what it unpacks to.
    unpacked = sum(info.file_size for info in archive.zip.infolist())
    bound = MAX_INPUT_BYTES if limit is None else limit
    if unpacked > bound:
        archive.close()
        raise InputError(
            f"holds {unpacked / 2**20:.0f} MiB of arrays; {what} are limited to {_limit_text(bound)}", file=file
        )
    for key in archive.files:
        try:
            _check_header(archive, key)
        except InputError as error:
            archive.close()
            raise error.in_file(file) from None
    data = {}
    with archive:
        for key in archive.files:
            try:
                array = archive[key]
            except ValueError as error:
                if "pickle" not in str(error):
                    raise InputError("cannot be read: the .npz file is damaged", key=key, file=file) from None
                raise InputError(
                    "holds Python objects (a pickle), which are not read; store numbers", key=key, file=file
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile):
                raise InputError("cannot be read: the .npz file is damaged", key=key, file=file) from None
            if not isinstance(array, np.ndarray):  # numpy gives a member that is not .npy as bytes
                raise InputError(
                    "is not a numpy array (.npy); an input .npz file holds only arrays", key=key, file=file
                )
            if array.ndim == 0 and array.dtype.kind == "S":
                # Bytes (numpy's "S" strings) are text here, as a JSON file would hold it.
                data[key] = array.item().decode("utf-8", errors="replace")
            elif array.ndim == 0 and array.dtype.kind in "iufU":
                data[key] = array.item()  # layers and loss: JSON text, read as the file's own
            else:
                data[key] = array
    return data


def _check_header(archive, key: str) -> None:
    """Refuse, before numpy allocates it, an array whose .npy header claims more entries than
    the archive holds bytes for (a damaged or forged file: 2 KB claiming 10¹² entries)."""

    import numpy as np


    name = key + ".npy" if key + ".npy" in archive.zip.namelist() else key
    info = archive.zip.getinfo(name)
    try:
        with archive.zip.open(name) as member:
            if member.read(6) != b"\x93NUMPY":
                return  # not a .npy member: read_npz refuses it by its own words
            member.seek(0)
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
            start = member.tell()
    except Exception:  # noqa: BLE001 - numpy's parser of untrusted header text raises many kinds (a TokenError too)
        raise InputError("cannot be read: the .npz file is damaged (its array header)", key=key) from None
    if dtype.hasobject:
        return  # a pickle: refused when read
    entries = math.prod(shape)
    if entries * dtype.itemsize > info.file_size - start:
        raise InputError(
            f"the .npz file is damaged: the array's header claims {number_text(entries)} entries "
            f"({'×'.join(map(str, shape)) or 'scalar'}) but the file holds {info.file_size - start} bytes for them",
            key=key,
        )


#: The first bytes of a zip file, as a .npz is: known by them where the name says nothing
#: (/dev/stdin, a FIFO).
ZIP_MAGIC = b"PK\x03\x04"


def read_input(path: str | Path) -> dict:
    """The input file's keys and values: a .npz file's arrays, or a JSON file's object. A
    name without .npz is read as JSON unless its bytes are a zip's (`cat data.npz | cnntrace
    train /dev/stdin`)."""
    if is_npz(path):
        return read_npz(path)
    content = read_file(path)
    return npz_from_bytes(content, str(path)) if content.startswith(ZIP_MAGIC) else json_from_bytes(content, str(path))


def load_problem(path: str | Path):
    """Read and validate one input file (JSON or .npz); every InputError names the file."""
    try:
        return problem_from_dict(read_input(path))
    except InputError as error:
        raise error.in_file(str(path)) from None


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def with_parameters(data: dict, parameters: dict) -> dict:
    """The input ``data`` with W1, B1, W2, B2 replaced; every other key kept as it was."""
    return {**data, **parameters}


def write_input(path: str | Path, data: dict, *, force: bool = False) -> None:
    """Write an input file atomically: a .npz file when ``path`` ends so, else JSON.

    Values may be numbers, strings, nested lists or numpy arrays; JSON floats are written
    at full precision, so they read back to the same float64. ``force``: as write_atomic's.
    """
    import numpy as np

    if is_npz(path):
        from io import BytesIO

        buffer = BytesIO()
        # A null (pool_stride: the default) has no array form: leaving it out means the same.
        # Layers (a list of strings and objects) are JSON text in a 0-d string array.
        arrays = {
            key: np.array(json.dumps(value)) if key == "layers" and not isinstance(value, str) else np.asarray(value)
            for key, value in data.items() if value is not None
        }  # fmt: skip
        np.savez(buffer, allow_pickle=False, **arrays)
        write_atomic(path, buffer.getbuffer(), force=force)  # a view of the buffer: no second copy of it
    else:
        plain = {key: value.tolist() if hasattr(value, "tolist") else value for key, value in data.items()}
        write_atomic(path, format_input(plain), force=force)


def write_atomic(path: str | Path, data: str | bytes | memoryview, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The data goes to a temporary file in the same directory, is flushed to disk, and then
    renamed over ``path``. On any failure the temporary file is removed and the previous
    file at ``path`` is left as it was. A write-protected file is refused, as the shell's
    ``>`` refuses it, unless ``force``. Raises OutputError naming the file.
    """
    import os
    import tempfile

    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = path.parent if str(path.parent) else Path(".")
    _refuse_protected(path, force)
    if _is_special(path):
        _write_into(path, payload)
        return
    try:
        # A new file gets the usual permissions (0666 less the umask), not mkstemp's 0600;
        # a file that is replaced keeps its own.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise OutputError(f"cannot be written ({error.strerror or error})", file=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise OutputError(f"cannot be written ({error.strerror or error})", file=str(path)) from None
        raise


def _is_special(path: Path) -> bool:
    """Whether ``path`` is a device, a FIFO or a socket (/dev/null, /dev/stdout, a pipe): a
    file that is written into, never renamed over (that would replace /dev/null)."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _write_into(path: Path, payload) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(payload)
    except OSError as error:
        raise OutputError(f"cannot be written ({error.strerror or error})", file=str(path)) from None


def _refuse_protected(path: Path, force: bool) -> None:
    """A file nobody may write (mode 0444) is not replaced unless ``force``: the shell's
    ``>`` would refuse it, and the rename of an atomic write would not."""
    import os

    if force:
        return
    try:
        status = path.stat()
    except OSError:
        return
    mode = status.st_mode
    # Not os.access: it says no for a read-only file system too, which write_atomic reports.
    mine = os.geteuid() == status.st_uid and os.geteuid() != 0
    if path.is_file() and not mode & (0o200 if mine else 0o222):
        raise OutputError(
            f"is write-protected (mode {mode & 0o777:04o}); {{force}} replaces it", file=str(path), mentions=("force",)
        )


def check_writable(path: str | Path, *, force: bool = False) -> None:
    """Raise the OutputError write_atomic would when ``path`` is a directory, its directory
    is missing or cannot take a new file (read-only, no permission), or it is write-protected:
    for callers that find out before the work, not after. The directory is tried by making
    and removing an empty temporary file in it."""
    import errno
    import os
    import tempfile

    path = Path(path)
    if _is_special(path):
        if os.access(path, os.W_OK):
            return
        problem = errno.EACCES
    elif path.is_dir():
        problem = errno.EISDIR
    elif not path.parent.is_dir():
        problem = errno.ENOTDIR if path.parent.exists() else errno.ENOENT
    else:
        _refuse_protected(path, force)
        directory = path.parent if str(path.parent) else Path(".")
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=directory)
        except OSError as error:
            raise OutputError(f"cannot be written ({error.strerror or error})", file=str(path)) from None
        os.close(fd)
        os.unlink(temporary)
        return
    raise OutputError(f"cannot be written ({os.strerror(problem)})", file=str(path))


def read_answers(path: str | Path) -> dict:
    """The answers in ``path``: {name: numbers, None (not answered), or a message saying why
    they are not numbers}.

    A JSON file holds step's names at the top level ({"P1": …, "dL_dW1": …}), single
    entries as explain spells them ({"Z1[0,1]": 39, "dL/dW1[0][1]": 0.5}), or step's own
    sections ({"forward": {…}, "backward": {…}}), so step's output can be used as is. A .npz
    file holds arrays under step's names (pickles are refused). An answer that is not
    numbers is kept as its message, for the caller to report.
    """
    if is_npz(path):
        data = read_npz(path, MAX_ANSWERS_BYTES, "answer files")
    else:
        data = read_json(path, MAX_ANSWERS_BYTES, "answer files")
    flat = {}
    for key, value in data.items():
        if key in ("forward", "backward", "update") and isinstance(value, dict):
            flat.update(value)
        elif key not in FREE_KEYS:
            flat[key] = value
    answers = {}
    for name, value in flat.items():
        if value is None:
            answers[name] = None
            continue
        try:
            answers[name] = numbers(value, name, MAX_ANSWER_DEPTH)
        except InputError as error:
            answers[name] = str(error)
    if not answers:
        raise InputError("holds no answers; write step's names, e.g. {\"P1\": [[…]]}", file=str(path))
    return answers


def format_input(data: dict) -> str:
    """An input dict as JSON for people: one key a line, each matrix row on a line of its own."""

    def encode(value, indent: str) -> str:
        if isinstance(value, list) and value and isinstance(value[0], list):
            inner = indent + "  "
            rows = ",\n".join(inner + encode(item, inner) for item in value)
            return "[\n" + rows + "\n" + indent + "]"
        return json.dumps(value, allow_nan=False, ensure_ascii=False)

    lines = [f"  {json.dumps(key)}: {encode(value, '  ')}" for key, value in data.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def image_to_X(path: str | Path, size: tuple[int, int], invert: bool = False):
    """A picture (PNG, JPEG …) as an H×W image in [0, 1]: grayscale, resized to ``size``.

    ``invert`` makes dark ink on light paper bright on dark, as in MNIST. Needs Pillow
    (without it, ArgumentError naming ``image``).
    """
    import numpy as np

    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ArgumentError(
            "needs Pillow to read pictures: pip install 'cnntrace[image]'", key="image"
        ) from None
    import io
    import warnings

    content = io.BytesIO(read_file(path))  # bounded, whatever the file is
    try:
        with warnings.catch_warnings():
            # Pillow warns of a picture of over 89 million pixels, and refuses twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(content) as picture:
                gray = picture.convert("L").resize((size[1], size[0]), Image.Resampling.LANCZOS)
    except UnidentifiedImageError:
        raise InputError("is not a picture Pillow can read", file=str(path)) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(f"is a picture too large to read (over {Image.MAX_IMAGE_PIXELS} pixels)", file=str(path)) from None
    except (OSError, ValueError, SyntaxError) as error:  # a damaged picture
        text = getattr(error, "strerror", None) or shown(str(error))
        raise InputError(f"cannot be read ({text})", file=str(path)) from None
    X = np.asarray(gray, dtype=np.float64) / 255.0
    return np.round(1.0 - X if invert else X, 3) + 0.0
