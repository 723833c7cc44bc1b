"""The command line: parse options, load → run → render, write data to stdout.

This is the only layer that prints, exits or knows about the terminal. numpy and the
renderers are imported inside the commands, so ``--help`` and ``--version`` start fast.

Exit status: 0 success, 1 a check that failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from cnntrace import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: The flag that gives each parameter the core names in its errors (an ArgumentError's key).
FLAGS = {
    "fraction": "--holdout",
    "image": "--image",
    "level": "--level",
    "momentum": "--momentum",
    "preset": "--preset",
    "seed": "--seed",
    "size": "--size",
}

app = typer.Typer(
    name="cnntrace",
    help="Backpropagation through a small CNN, step by step, with every number shown.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    """Output formats; each command offers the ones that make sense for it."""

    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"
    markdown = "markdown"
    latex = "latex"


class ExplainFormat(str, Enum):
    """Output formats of ``explain``."""

    table = "table"
    json = "json"


#: How each format heads one file's trace when several are traced: (module, function).
FILE_HEADINGS = {
    Format.markdown: ("cnntrace.render.markdown", "file_heading"),
    Format.latex: ("cnntrace.render.latex", "file_heading"),
}

#: The renderer of each format of ``step``: (module, function), imported when used. Each
#: returns a rich renderable, a string, or (JSON and CSV) the text in pieces.
STEP_RENDERERS = {
    Format.table: ("cnntrace.render.table", "render"),
    Format.json: ("cnntrace.render.json", "render"),
    Format.ndjson: ("cnntrace.render.json", "render_ndjson"),
    Format.csv: ("cnntrace.render.csv", "render"),
    Format.markdown: ("cnntrace.render.markdown", "render"),
    Format.latex: ("cnntrace.render.latex", "render"),
}

#: The renderer of each format of ``explain``.
EXPLAIN_RENDERERS = {
    ExplainFormat.table: ("cnntrace.render.explanation", "render_text"),
    ExplainFormat.json: ("cnntrace.render.explanation", "render_json"),
}


def _renderer(table: dict, format: Format):
    import importlib

    module, function = table[format]
    return getattr(importlib.import_module(module), function)


def _only_names(value: str | None) -> tuple[str, ...] | None:
    """Parse --only: JSON names (dL_dW1) or the derivation's (dL/dW1), comma-separated.
    Each file's trace checks them against its own names (see _check_only)."""
    if value is None:
        return None
    names = tuple(name.strip().replace("/", "_") for name in value.split(",") if name.strip())
    if not names:
        raise typer.BadParameter(f"no name in {value!r}; e.g. --only dL_dW1,P1", param_hint="--only")
    from cnntrace.problem import NAME

    impossible = [name for name in names if not NAME.fullmatch(name)]
    if impossible:  # no network has it: said before any file is read
        from cnntrace.reference import reference_stages

        known = ", ".join(stage.name for stage in reference_stages())
        raise typer.BadParameter(
            f"unknown name {', '.join(impossible)}; the names are the trace's, e.g. the reference's {known}",
            param_hint="--only",
        )
    return names


def _check_only(trace, names: tuple[str, ...] | None) -> None:
    """Refuse --only names this trace does not have (InputError naming --only)."""
    from cnntrace.errors import InputError

    unknown = [name for name in names or () if name not in trace]
    if unknown:
        known = ", ".join(stage.name for stage in trace.stages)
        raise InputError(f"unknown name {', '.join(unknown)}; the names are {known}", key="--only")


def _finite(value: float | None) -> float | None:
    """A float option must be a finite number: typer's min= lets NaN through."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnntrace {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Backpropagation through a small CNN, step by step, with every number shown.

    Exit status: 0 success, 1 a check that failed, 2 bad input or usage, 130 interrupted.
    """


@contextmanager
def reported_errors(file: Path | None = None):
    """Turn cnntrace's own errors into one line on stderr and an exit status.

    The one place where domain errors become exit codes, and parameters the flags that give
    them. ``file`` is the input being worked on, named in errors that arise after it was
    read (an overflow, say).
    """
    from cnntrace.errors import CnntraceError

    try:
        yield
    except CnntraceError as error:
        if error.file is None and file is not None:
            error.in_file(str(file))
        typer.echo(f"cnntrace: {error.spelled(_flag)}", err=True)
        raise typer.Exit(_exit_status(error)) from None
    except KeyboardInterrupt:
        raise _interrupted() from None
    except MemoryError:
        where = f"{file}: " if file is not None else ""
        typer.echo(f"cnntrace: {where}needs more memory than this machine has to give", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _flag(name: str) -> str:
    """The flag that gives the parameter ``name`` (the name itself when no flag does)."""
    return FLAGS.get(name, name)


def _interrupted() -> typer.Exit:
    """Say on stderr that Ctrl-C stopped cnntrace; the Exit to raise (status 130)."""
    typer.echo("cnntrace: interrupted", err=True)
    return typer.Exit(EXIT_INTERRUPTED)


def _full_width(renderable) -> int:
    """The width that shows ``renderable`` without cutting or wrapping (at least 80)."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(file=sys.stdout, width=100_000)
    return max(80, Measurement.get(wide, wide.options, renderable).maximum)


def _exit_status(error) -> int:
    """A training that diverged failed (1), one stopped by Ctrl-C was interrupted (130);
    every other error is bad input (2)."""
    from cnntrace.errors import TrainingDiverged, TrainingInterrupted

    if isinstance(error, TrainingInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(error, TrainingDiverged):
        return EXIT_FAILED
    return EXIT_BAD_INPUT


def _table_text(renderable) -> str:
    """The renderable as text for stdout, all at once.

    On a terminal: its width and colours. Into a pipe or a file: plain text, as wide as the
    widest table so that nothing is cut or wrapped.
    """
    from rich.console import Console

    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=_full_width(renderable))
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


@app.command()
def step(
    files: list[Path] = typer.Argument(
        ..., metavar="FILE", show_default=False,
        help="Input JSON files (see `cnntrace schema` and the README).",
    ),
    format: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    precision: int = typer.Option(
        4, "--precision", "-p", min=0, max=17, help="Decimals shown in the table view."
    ),
    only: str = typer.Option(
        None, "--only", metavar="NAME[,NAME…]", show_default=False,
        help="Show only these matrices (e.g. dL_dW1,P1).",
    ),
    brief: bool = typer.Option(
        False, "--brief", help="Matrices only: leave out the chain rules and their factors."
    ),
    full: bool = typer.Option(
        False, "--full", help="Table, Markdown, LaTeX: every entry of matrices over 40 on a side and of batches over 8.",
    ),
    html: Path = typer.Option(
        None, "--html", metavar="FILE", show_default=False,
        help="Also save an interactive page of the whole pass: click an entry to see its arithmetic.",
    ),
    svg: Path = typer.Option(
        None, "--svg", metavar="FILE", show_default=False,
        help="Also save the table view as an SVG picture.",
    ),
) -> None:
    """Run one forward and backward pass on each FILE and show every matrix.

    Example: cnntrace step samples/reference.json --format json | jq .backward.dL_dW1
    """
    from cnntrace.render import View

    names = _only_names(only)
    render = _renderer(STEP_RENDERERS, format)
    several = len(files) > 1
    csv_columns = None
    if several and format is Format.csv:
        from cnntrace.render import csv as render_csv

        csv_columns = render_csv.shared_columns(any(_has_channels(file, names) for file in files))
        sys.stdout.write(render_csv.header_many(csv_columns))
    # Several files in JSON make one array of objects, each carrying its file.
    separator = "[" if several and format is Format.json else ""
    failed = False
    recorded = []  # the table view of each file, for --svg
    explored = []  # (file, trace) of each file, for --html
    for index, file in enumerate(files):
        view = View(
            precision=precision, only=names, brief=brief, full=full,
            file=str(file) if several or format is Format.ndjson else None, columns=csv_columns,
        )  # fmt: skip
        heading = f"{chr(10) * (index > 0)}==> {file} <==\n" if several else ""
        try:
            with reported_errors(file):
                from cnntrace.io import load_problem
                from cnntrace.network import run

                trace = run(load_problem(file))
                _check_only(trace, names)
                output = render(trace, view)
                if svg:
                    table = output if format is Format.table else _renderer(STEP_RENDERERS, Format.table)(trace, view)
                    recorded += [heading.strip("\n"), table] if heading else [table]
                if html:
                    explored.append((str(file) if several else None, trace))
                if format is Format.table:
                    output = heading + _table_text(output)
                elif several and format in FILE_HEADINGS:
                    output = _renderer(FILE_HEADINGS, format)(str(file)) + output
                # JSON and CSV come in pieces, written as they are made: a dataset's trace
                # is never held as one string.
                pieces = [output] if isinstance(output, str) else output
                if separator:
                    sys.stdout.write(separator)
                    separator = ","
                for piece in pieces:
                    sys.stdout.write(piece)
                sys.stdout.flush()
        except typer.Exit as exit:
            if exit.exit_code != EXIT_BAD_INPUT:
                raise
            failed = True  # reported on stderr; the other files still run
            continue
    if several and format is Format.json:
        sys.stdout.write("[]\n" if separator == "[" else "]\n")
    title = f"cnntrace step {', '.join(map(str, files))}"
    if recorded:
        _save_svg(recorded, svg, title)
    if explored:
        _save_html(explored, html, View(precision=precision, only=names, brief=brief, full=full), title)
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def _has_channels(file: Path, names) -> bool:
    """Whether a matrix of FILE's trace (of those --only names) has a channel axis, for the
    header several CSV files share; a file that cannot be read has none (the pass that
    follows reports it)."""
    from cnntrace.errors import CnntraceError
    from cnntrace.io import load_problem
    from cnntrace.render.csv import has_channels

    with reported_errors():  # Ctrl-C: exit 130
        try:
            return has_channels(load_problem(file), names)
        except (CnntraceError, MemoryError):
            return False


class CheckFormat(str, Enum):
    table = "table"
    json = "json"


class VerifyPreset(str, Enum):
    """verify's tolerances (cnntrace.verify.PRESETS)."""

    hand = "hand"
    float64 = "float64"


@app.command()
def check(
    file: Path = typer.Argument(..., help="Input JSON file."),
    format: CheckFormat = typer.Option(CheckFormat.table, "--format", "-f", help="Output format."),
    eps: float = typer.Option(1e-6, min=1e-12, max=1e-1, callback=_finite, help="Finite-difference step."),
    rtol: float = typer.Option(1e-6, min=0, callback=_finite, help="Relative tolerance."),
    atol: float = typer.Option(1e-8, min=0, callback=_finite, help="Absolute tolerance."),
    max_entries: int = typer.Option(
        2000, "--max-entries", min=1, help="Check at most this many entries of each tensor (a random sample)."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of that sample."),
) -> None:
    """Check every gradient of FILE against central finite differences.

    Exit status 0 when all agree within tolerance, 1 otherwise.
    """
    with reported_errors(file):
        from cnntrace.gradcheck import check as gradient_check
        from cnntrace.io import load_problem

        problem = load_problem(file)
        with _progress(None, "entry") as advance:
            results = gradient_check(
                problem, eps=eps, rtol=rtol, atol=atol, max_entries=max_entries, seed=seed,
                progress=lambda done, total: advance(done, total=total),
            )  # fmt: skip
        from cnntrace.render import check as render_check

        settings = {"eps": eps, "rtol": rtol, "atol": atol}
        if format is CheckFormat.json:
            output = render_check.render_json(results, str(file), settings)
        else:
            output = _table_text(render_check.render_table(results, str(file), settings))
    sys.stdout.write(output)
    if not all(result.ok for result in results):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def verify(
    file: Path = typer.Argument(..., help="Input JSON file."),
    answers: Path = typer.Argument(
        ..., help='Answers: JSON (e.g. {"P1": [[…]], "Z1[0,1]": 39, "dL_dW1": null}) or a .npz of arrays.'
    ),
    format: CheckFormat = typer.Option(CheckFormat.table, "--format", "-f", help="Output format."),
    preset: VerifyPreset = typer.Option(
        VerifyPreset.hand, "--preset",
        help="Tolerances: hand (rtol 1e-3, atol 1e-4, answers rounded to 4 decimals) or float64 "
             "(rtol 1e-9, atol 1e-12, code in double precision).",
    ),  # fmt: skip
    rtol: float | None = typer.Option(None, min=0, callback=_finite, help="Relative tolerance (overrides the preset)."),
    atol: float | None = typer.Option(None, min=0, callback=_finite, help="Absolute tolerance (overrides the preset)."),
) -> None:
    """Check hand-computed ANSWERS against FILE's trace, entry by entry, and name the mistakes.

    ANSWERS holds any of step's JSON names (or step's own output), single entries as
    explain spells them, null for not answered. Each wrong answer gets a diagnosis: an error
    carried forward from the learner's own earlier answers, or a known mistake. Exit status
    0 when every answer given is right, 1 otherwise.
    """
    with reported_errors(file):
        from cnntrace.io import load_problem, read_answers
        from cnntrace.network import run
        from cnntrace.verify import passed, tolerances
        from cnntrace.verify import verify as judge_answers

        trace = run(load_problem(file))
    rtol, atol = tolerances(preset.value, rtol, atol)
    with reported_errors(answers):
        verdicts = judge_answers(trace, read_answers(answers), rtol=rtol, atol=atol)
        from cnntrace.render import verify as render_verify

        settings = {"rtol": rtol, "atol": atol, "conventions": trace.problem.network.conventions()}
        if format is CheckFormat.json:
            output = render_verify.render_json(verdicts, str(file), str(answers), settings)
        else:
            output = _table_text(render_verify.render_table(verdicts, str(file), str(answers), settings))
    sys.stdout.write(output)
    if not passed(verdicts):
        raise typer.Exit(EXIT_FAILED)


def _dims(text: str, option: str) -> tuple[int, int]:
    """'6' -> (6, 6); '6x8' -> (6, 8)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(part) for part in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 1:
        raise typer.BadParameter(f"expected N or HxW with whole numbers ≥ 1, got {text!r}", param_hint=option)
    return dims


@app.command()
def init(
    size: str = typer.Option(None, "--size", help="Image size: N or HxW (default 6).", show_default=False),
    kernel: str = typer.Option(None, "--kernel", help="Kernel size: N or HxW (default 3).", show_default=False),
    filters: int = typer.Option(None, "--filters", min=1, max=64, help="Number of filters (default 1).", show_default=False),
    batch: int = typer.Option(
        None, "--batch", min=1, max=10_000, show_default=False,
        help="Number of images (default 1, or --like FILE's number).",
    ),
    seed: int = typer.Option(None, "--seed", min=0, help="Random seed (default: a new one, noted in the file).", show_default=False),
    image: Path = typer.Option(None, "--image", help="Take X from this picture (PNG, JPEG; needs Pillow).", show_default=False),
    invert: bool = typer.Option(False, "--invert", help="With --image: dark ink on light paper becomes bright on dark."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout.", show_default=False),
    like: Path = typer.Option(
        None, "--like", metavar="FILE", show_default=False,
        help="A fresh exercise with FILE's network: its layers, loss, shapes and classes.",
    ),
    hand: bool = typer.Option(
        False, "--hand",
        help="Made for pencil and paper: small numbers, forward matrices up to F exact at two "
             "decimals, no ReLU input at 0, no tied pool maxima.",
    ),
    level: int = typer.Option(
        1, "--level", min=1, max=2,
        help="With --hand: 1 small integers, 2 one decimal.",
    ),
    allow_ties: bool = typer.Option(
        False, "--allow-ties", help="With --hand: a tie in a pool window on purpose (at least one)."
    ),
    count: int = typer.Option(
        None, "--count", min=1, max=10_000, show_default=False,
        help="Write this many different exercises (seeds --seed, --seed + 1 …) into the directory -o DIR.",
    ),
) -> None:
    """Write a valid random input file: the same file for the same --seed.

    Example: cnntrace init --size 6 --kernel 3 --seed 7 -o exercise7.json

    A class set for pencil and paper: cnntrace init --hand --seed 1 --count 30 -o class/
    """
    if count is not None and output is None:
        raise typer.BadParameter("--count writes a directory of files; give it with -o DIR", param_hint="--count")
    if (level != 1 or allow_ties) and not hand:
        given = "--level" if level != 1 else "--allow-ties"
        raise typer.BadParameter(f"{given} goes with --hand", param_hint=given)
    if hand and image is not None:
        raise typer.BadParameter("--hand draws X itself; leave out --image", param_hint="--image")
    hand_options = (level, allow_ties) if hand else None
    if like is not None:
        given = [option for option, value in (("--size", size), ("--kernel", kernel), ("--filters", filters),
                                              ("--image", image)) if value is not None]  # fmt: skip
        if given:
            raise typer.BadParameter(f"the shapes come from {like}; leave out {', '.join(given)}", param_hint="--like")
        with reported_errors(like):
            from cnntrace.io import load_problem

            problem = load_problem(like)
        _write_exercises(lambda seed: like_exercise(problem, seed, batch, like, hand_options), seed, count, output)
        return
    size, kernel = size or "6", kernel or "3"
    filters, batch = filters or 1, batch or 1
    H, W = _dims(size, "--size")
    kh, kw = _dims(kernel, "--kernel")
    if kh > H or kw > W:
        raise typer.BadParameter(f"the {kh}x{kw} kernel is larger than the {H}x{W} image", param_hint="--kernel")
    if image is not None and batch > 1:
        raise typer.BadParameter("--image makes one image; leave out --batch", param_hint="--image")
    with reported_errors():
        from cnntrace.exercise import check_size

        check_size((H, W), (kh, kw), filters, batch, key=_flag("size"))  # before any work
    with reported_errors(output):
        from cnntrace import io

        X = None if image is None else io.image_to_X(image, (H, W), invert=invert)

    def exercise(seed: int) -> dict:
        from cnntrace.exercise import random_input

        with reported_errors(output):
            data = {"comment": f"cnntrace init --size {H}x{W} --kernel {kh}x{kw} --seed {seed}"}
            if image is not None:
                data["comment"] += f", X from {image.name}"
            data.update(random_input((H, W), (kh, kw), filters, batch, seed, X=X))
            if filters > 1:
                data["comment"] += f" --filters {filters}"
            if batch > 1:
                data["comment"] += f" --batch {batch}"
            return _by_hand(data, seed, hand_options)

    _write_exercises(exercise, seed, count, output)


def _by_hand(data: dict, seed: int, hand_options) -> dict:
    """``data`` remade for pencil and paper (see exercise.hand_input), when --hand asks."""
    if hand_options is None:
        return data
    from cnntrace.exercise import hand_input

    level, allow_ties = hand_options
    comment = data.pop("comment") + f" --hand --level {level}" + " --allow-ties" * allow_ties
    return {"comment": comment, **hand_input(data, seed, level, allow_ties)}


def like_exercise(problem, seed: int, batch: int | None, like: Path, hand_options=None) -> dict:
    """init --like: a fresh random input with the problem's network (see exercise.like_input)."""
    from cnntrace.exercise import like_input

    with reported_errors(like):
        problem.check_size(1)
        data = {"comment": f"cnntrace init --like {like.name} --seed {seed}" + (f" --batch {batch}" if batch else "")}
        data.update(like_input(problem, seed, batch))
        return _by_hand(data, seed, hand_options)


def _write_exercises(make, seed: int | None, count: int | None, output: Path | None) -> None:
    """One exercise ``make(seed)`` to ``output`` (or stdout); with ``count``, that many
    different ones into the directory ``output``, named exercise-01.json … so they sort,
    from seeds ``seed``, ``seed`` + 1 … (a draw equal to an earlier one is skipped)."""
    import secrets

    seed = secrets.randbelow(2**31) if seed is None else seed
    if count is None:
        _write_exercise(make(seed), output)
        return
    with reported_errors(output):
        from cnntrace.errors import OutputError

        if output.exists() and not output.is_dir():
            raise OutputError("is a file; --count writes a directory of exercises", file=str(output))
        output.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(count)))
    made: set[str] = set()
    while len(made) < count:
        data = make(seed)
        seed += 1
        numbers = {key: value for key, value in data.items() if key != "comment"}
        key = repr(numbers)
        if key in made:
            continue
        made.add(key)
        _write_exercise(data, output / f"exercise-{len(made):0{width}d}.json")


def _write_exercise(data: dict, output: Path | None) -> None:
    """An exercise as JSON for people, on stdout or atomically to ``output``."""
    with reported_errors(output):
        from cnntrace import io

        text = io.format_input(data)
    _write_text(text, output)


class SheetFormat(str, Enum):
    markdown = "markdown"
    latex = "latex"


#: The renderer of each format of ``sheet``.
SHEET_RENDERERS = {
    SheetFormat.markdown: ("cnntrace.render.sheet", "render_markdown"),
    SheetFormat.latex: ("cnntrace.render.sheet", "render_latex"),
}


@app.command()
def sheet(
    file: Path = typer.Argument(..., metavar="FILE", show_default=False, help="Input JSON file."),
    format: SheetFormat = typer.Option(SheetFormat.markdown, "--format", "-f", help="Output format."),
    key: bool = typer.Option(False, "--key", help="The answer key: the values and each step's chain rule."),
    only: str = typer.Option(
        None, "--only", metavar="NAME[,NAME…]", show_default=False,
        help="Ask only for these matrices (e.g. P1,dL_dW1).",
    ),
    precision: int = typer.Option(4, "--precision", "-p", min=0, max=17, help="Decimals of the key's values."),
    standalone: bool = typer.Option(False, "--standalone", help="LaTeX: a whole document, not a fragment."),
    output: Path = typer.Option(None, "-o", "--output", help="Write here instead of stdout.", show_default=False),
) -> None:
    """A worksheet for FILE: the given numbers, then a blank grid for every matrix to compute.

    Example: cnntrace sheet ex.json -f latex --standalone -o ex.tex; cnntrace sheet ex.json --key
    """
    if standalone and format is not SheetFormat.latex:
        raise typer.BadParameter("a whole document is LaTeX; add --format latex", param_hint="--standalone")
    names = _only_names(only)
    render = _renderer(SHEET_RENDERERS, format)
    with reported_errors(file):
        from cnntrace.io import load_problem
        from cnntrace.network import run
        from cnntrace.render.sheet import Sheet

        trace = run(load_problem(file))
        _check_only(trace, names)
        text = render(trace, Sheet(only=names, key=key, precision=precision, standalone=standalone, file=file.name))
    _write_text(text, output)


def _write_text(text: str, output: Path | None) -> None:
    """Text on stdout, or atomically to ``output`` (saying so on stderr)."""
    with reported_errors(output):
        from cnntrace import io

        if output is None:
            sys.stdout.write(text)
        else:
            io.write_atomic(output, text)
            typer.echo(f"wrote {output}", err=True)


@app.command()
def quiz(
    file: Path = typer.Argument(..., metavar="FILE", show_default=False, help="Input JSON file."),
    only: str = typer.Option(
        None, "--only", metavar="NAME[,NAME…]", show_default=False,
        help="Ask only for these matrices (e.g. P1,dL_dW1), in the derivation's order.",
    ),
    tries: int = typer.Option(3, "--tries", min=1, max=100, help="Tries per matrix before the answer is shown."),
    record: Path = typer.Option(
        None, "--record", metavar="FILE", show_default=False,
        help='Write the session as JSON: {"file", "score", "total", "answers": […]}.',
    ),
    precision: int = typer.Option(4, "--precision", "-p", min=0, max=17, help="Decimals shown in feedback."),
    rtol: float = typer.Option(1e-3, min=0, callback=_finite, help="Relative tolerance, as verify's."),
    atol: float = typer.Option(1e-4, min=0, callback=_finite, help="Absolute tolerance, as verify's."),
) -> None:
    """Be asked for each matrix of FILE's pass in order; hear at once whether it is right.

    Answers are numbers in row-major order (spaces or commas) or a JSON value; '?' gives a
    hint. Prompts and feedback go to stderr when stdout is not a terminal, the score to
    stdout. Exit status 0 when every answer was right, 1 otherwise.

    Example: cnntrace quiz ex.json --only P1,dL_dZ2,dL_dW1 --record me.json
    """
    names = _only_names(only)
    if record is not None:
        with reported_errors():
            from cnntrace.io import check_writable

            check_writable(record)
    with reported_errors(file):
        from cnntrace.io import load_problem
        from cnntrace.network import run
        from cnntrace.quiz import Session, run_quiz

        trace = run(load_problem(file))
        _check_only(trace, names)
    questions = [stage.name for stage in trace.stages if names is None or stage.name in names]
    talk = sys.stdout if sys.stdout.isatty() else sys.stderr
    interactive = sys.stdin.isatty()

    def say(text: str) -> None:
        talk.write(text)
        talk.flush()

    def ask(prompt: str) -> str | None:
        say(prompt)
        try:
            line = sys.stdin.readline()
        except (OSError, ValueError):  # stdin closed under us
            return None
        if not line:
            return None
        if not interactive:  # piped answers: the transcript shows them after their prompts
            say(line if line.endswith("\n") else line + "\n")
        return line.rstrip("\r\n")

    session = Session(str(file), len(questions))
    interrupted = False
    try:
        run_quiz(trace, questions, ask, say, file=str(file), tries=tries, precision=precision,
                 rtol=rtol, atol=atol, session=session)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
    if record is not None:
        with reported_errors(record):
            import json

            from cnntrace.io import write_atomic

            write_atomic(record, json.dumps(session.record(), indent=2, ensure_ascii=False) + "\n")
    if interrupted:
        raise _interrupted()
    sys.stdout.write(f"{chr(10) if talk is sys.stdout else ''}score {session.score}/{session.total}\n")
    if session.score < session.total:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the input format."""
    import json

    from cnntrace.schema import INPUT_SCHEMA

    sys.stdout.write(json.dumps(INPUT_SCHEMA, indent=2, ensure_ascii=False) + "\n")


def _save_svg(renderables: list, svg: Path, title: str) -> None:
    """Save the recorded table view as an SVG picture, atomically."""
    from rich.console import Group

    from cnntrace.io import write_atomic
    from cnntrace.render.table import export

    view = Group(*renderables)
    width = _full_width(view)
    with reported_errors():
        write_atomic(svg, export(view, "svg", width, title=title))


def _save_html(traces: list, html: Path, view, title: str) -> None:
    """Save the explorer page of the traces (see render.html), atomically."""
    from cnntrace.io import write_atomic
    from cnntrace.render import html as render_html

    with reported_errors():
        write_atomic(html, render_html.page(traces, view, title=title))


@app.command()
def explain(
    file: Path = typer.Argument(..., metavar="FILE", show_default=False, help="Input JSON file."),
    term: str = typer.Argument(
        ..., metavar="TERM", show_default=False,
        help="One entry of the trace, e.g. dL_dW1[0,1], Z1[2,3], dL/dX[0,0], L.",
    ),
    format: ExplainFormat = typer.Option(ExplainFormat.table, "--format", "-f", help="Output format."),
    precision: int = typer.Option(
        4, "--precision", "-p", min=0, max=17, help="Decimals shown in the table view."
    ),
) -> None:
    """Show the arithmetic of one entry of the trace, with the actual numbers.

    The last line is the value, as `cnntrace step` shows it. With a batch or several
    filters the image and filter indices come first, as in the JSON: dL_dW1[1,0,2].

    Example: cnntrace explain samples/reference.json 'dL_dW1[0,1]'
    """
    render = _renderer(EXPLAIN_RENDERERS, format)
    with reported_errors():
        from cnntrace.explain import check_possible, parse_term
        from cnntrace.explain import explain as explain_term

        # A TERM that no network could have is reported before the file is read.
        check_possible(parse_term(term)[0], term)
    with reported_errors(file):
        from cnntrace.io import load_problem
        from cnntrace.network import run

        trace = run(load_problem(file))
    with reported_errors():
        output = render(explain_term(trace, term), precision)
    sys.stdout.write(output)
    sys.stdout.flush()


class TrainFormat(str, Enum):
    table = "table"
    json = "json"
    ndjson = "ndjson"


class _CtrlC:
    """Ctrl-C while training. ``pressed()`` turns True at the first press; training asks it
    after every mini-batch, so the one under way finishes. A second press interrupts at once
    (a KeyboardInterrupt), unless ``saving`` is set: then every press waits until the
    parameters are saved."""

    def __init__(self) -> None:
        self.presses = 0
        self.saving = False

    def pressed(self) -> bool:
        return self.presses > 0

    def press(self, signum, frame) -> None:
        self.presses += 1
        if self.presses > 1 and not self.saving:
            raise KeyboardInterrupt


@contextmanager
def _stop_on_ctrl_c():
    """Yield a _CtrlC that answers Ctrl-C (SIGINT) while the block runs; outside the main
    thread, where no handler can be set, Ctrl-C stays a KeyboardInterrupt."""
    import signal

    ctrl_c = _CtrlC()
    try:
        previous = signal.signal(signal.SIGINT, ctrl_c.press)
    except ValueError:  # not the main thread
        yield ctrl_c
        return
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _progress(total: int | None, unit: str):
    """Yield ``advance(done, status, total)``: a progress bar on stderr when stderr is a
    terminal, counting ``unit``s with a status text; a function that does nothing otherwise.
    ``total`` may be given (or corrected) by the first call."""
    import os

    def nothing(done, status="", total=None):
        return None

    # Decided without rich where stderr is plainly no terminal (rich, too, lets TTY_COMPATIBLE
    # and FORCE_COLOR say otherwise): a pipe's run starts a hundredth of a second sooner.
    if not sys.stderr.isatty() and not {"TTY_COMPATIBLE", "FORCE_COLOR"} & set(os.environ):
        yield nothing
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield nothing
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )  # fmt: skip

    columns = (
        TextColumn(unit), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    # stdout carries the data (NDJSON): rich must not redirect it into the live display.
    live = dict(console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
    with Progress(*columns, **live) as progress:
        task = progress.add_task(unit, total=total, status="")

        def advance(done: int, status: str = "", total: int | None = None) -> None:
            progress.update(task, completed=done, status=status, total=total)

        yield advance


@app.command()
def train(
    file: Path = typer.Argument(..., help="Input file: JSON as for `step`, or .npz with the same keys."),
    epochs: int = typer.Option(..., "--epochs", "-n", min=1, help="Passes over the whole input."),
    lr: float = typer.Option(None, "--lr", help="Learning rate, > 0 (default: the file's lr)."),
    batch_size: int = typer.Option(
        None, "--batch-size", "-b", min=1, help="Images per step (default: all of them)."
    ),
    shuffle: bool = typer.Option(
        False, "--shuffle/--no-shuffle", help="Shuffle the images before every epoch."
    ),
    seed: int = typer.Option(
        None, "--seed", min=0, help="Seed for --shuffle and --holdout, for the same run again."
    ),
    momentum: float = typer.Option(
        0.0, "--momentum", help="Momentum β, 0 ≤ β < 1, as PyTorch's SGD: v ← β·v + g, P ← P − lr·v."
    ),
    test: Path = typer.Option(
        None, "--test", help="A test set: the same network on other images (missing weights: FILE's)."
    ),
    holdout: float = typer.Option(
        None, "--holdout", help="Set this fraction of FILE's images aside as the test set (split from --seed)."
    ),
    save: Path = typer.Option(
        None, "--save", help="Write the input with the trained W1, B1, W2, B2 (.json or .npz)."
    ),
    format: TrainFormat = typer.Option(TrainFormat.table, "--format", "-f", help="Output format."),
    precision: int = typer.Option(
        4, "--precision", "-p", min=0, max=17, help="Decimals shown in the table view."
    ),
    full: bool = typer.Option(False, "--full", help="Table view: every entry of parameters over 40 on a side."),
) -> None:
    """Train the network on FILE by gradient descent, one step per mini-batch.

    Example: cnntrace train samples/bars.json --epochs 30 --format ndjson | jq .loss
    """
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise typer.BadParameter(f"must be a positive number, got {lr}", param_hint="'--lr'")
    if not (math.isfinite(momentum) and 0 <= momentum < 1):
        raise typer.BadParameter(f"must be at least 0 and below 1, got {momentum}", param_hint="'--momentum'")
    if holdout is not None and not (math.isfinite(holdout) and 0 < holdout < 1):
        raise typer.BadParameter(f"must be a fraction between 0 and 1, got {holdout}", param_hint="'--holdout'")
    if holdout is not None and test is not None:
        raise typer.BadParameter("give --test or --holdout, not both", param_hint="'--holdout'")
    if save is not None:
        with reported_errors():
            from cnntrace.io import check_writable

            check_writable(save)  # now, not after the training
    with reported_errors(file):
        from cnntrace import train as training
        from cnntrace.errors import TrainingDiverged, TrainingInterrupted
        from cnntrace.io import problem_from_dict, read_input, with_parameters, write_input
        from cnntrace.render import train as render_train

        data = read_input(file)
        problem = problem_from_dict(data)
        test_set = None
        if test is not None:
            with reported_errors(test):
                test_set = training.problem_for_testing(read_input(test), data)
        elif holdout is not None:
            problem, test_set = training.holdout(problem, holdout, seed)
        if test_set is not None:
            with reported_errors(test if test is not None else file):
                training.check_same_network(problem, test_set)

        def saved(parameters, which: str) -> str:
            """Save ``parameters`` when --save was given; say what was saved where."""
            if save is None:
                return ""
            trained = training.presented(problem, parameters)
            if lr is not None:
                trained["lr"] = lr  # the rate these weights were trained at, to go on with
            write_input(save, with_parameters(data, trained))
            return f"; saved {which} parameters to {save}"

        history, interrupted = [], False
        last = None  # the last completed epoch, set in one step so Ctrl-C can't split it
        with _stop_on_ctrl_c() as ctrl_c, _progress(epochs, "epoch") as advance:
            try:
                for epoch in training.train(
                    problem, epochs, lr=lr, batch_size=batch_size, shuffle=shuffle, seed=seed,
                    momentum=momentum, test=test_set, stop=ctrl_c.pressed,
                ):  # fmt: skip
                    last = epoch
                    history.append(epoch)
                    if format is TrainFormat.ndjson:
                        sys.stdout.write(render_train.ndjson_line(epoch))
                        sys.stdout.flush()
                    advance(epoch.epoch, render_train.progress_text(epoch))
            except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
                interrupted = True
            except TrainingDiverged as error:
                ctrl_c.saving = True
                which = f"epoch {error.epoch - 1}'s" if error.epoch > 1 else "the starting"
                error.message += saved(error.parameters, which)
                raise
            ctrl_c.saving = True  # from here on Ctrl-C waits until the parameters are saved
            done = last.epoch if last else 0
            parameters = last.parameters if last else training.starting_parameters(problem)
            which = "the trained" if done == epochs else f"epoch {done}'s" if done else "the starting"
            note = saved(parameters, which)
        if interrupted or ctrl_c.pressed() or done < epochs:  # only a Ctrl-C ends training early
            raise TrainingInterrupted(f"interrupted after {done} of {epochs} epochs{note}")
        if note:
            typer.echo(f"cnntrace: {note.removeprefix('; ')}", err=True)

        trained = training.presented(problem, parameters)
        counts = None
        if format is not TrainFormat.ndjson:
            # The training set's is the last epoch's, as its accuracy: no pass more over it.
            counts = training.confusion(test_set, parameters) if test_set is not None else last.confusion
        if format is TrainFormat.json:
            sys.stdout.write(render_train.render_json(history, trained, counts))
        elif format is TrainFormat.table:
            view = render_train.render(
                history, problem, trained, precision,
                lr=problem.lr if lr is None else lr, batch_size=min(batch_size or problem.M, problem.M),
                full=full, momentum=momentum, confusion=counts,
                confusion_of="test set" if test_set is not None else "training set, as the last epoch classified it",
            )  # fmt: skip
            sys.stdout.write(_table_text(view))


def main() -> None:
    """Console-script entry point.

    A reader that goes away (``cnntrace … | head -1``) ends the process quietly, as it does
    ``cat``. Ctrl-C anywhere exits 130 with "interrupted" on stderr: the commands report it
    in ``reported_errors``; elsewhere typer either lets the KeyboardInterrupt through (while
    it builds the commands) or exits 130 without a word (the SystemExit then comes from an
    Exit caused by the KeyboardInterrupt), and it is reported here.
    """
    import signal

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app()
    except KeyboardInterrupt:
        pass
    except SystemExit as exit:
        if not isinstance(getattr(exit.__context__, "__cause__", None), KeyboardInterrupt):
            raise
    sys.exit(_interrupted().exit_code)


if __name__ == "__main__":
    main()
