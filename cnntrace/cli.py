"""The command line: parse options, load → run → render, write data to stdout.

This is the only layer that prints, exits or knows about the terminal and its flags. Its
parts, in order: FLAGS (the flag of each parameter the core's errors name), each command's
format enum and renderer table, the options several commands share (Annotated aliases),
``reported_errors`` (the one place where errors become messages and exit codes),
``load_trace``, then the commands. numpy, rich and the renderers are imported inside the
functions that use them (each such import says so), so that ``--help`` and ``--version``
start fast.

Exit status: 0 success, 1 a check that failed, 2 bad input or usage, 130 interrupted.
"""

import importlib
import math
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from cnntrace import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: The flag that gives each parameter the core names in its errors (an ArgumentError's key).
FLAGS = {
    "force": "--force",
    "fraction": "--holdout",
    "hand": "--hand",
    "image": "--image",
    "input": "--input",
    "layers": "--layers",
    "loss": "--loss",
    "grad": "--grad",
    "Y": "--target",
    "level": "--level",
    "dtype": "--dtype",
    "max_entries": "--max-entries",
    "momentum": "--momentum",
    "only": "--only",
    "preset": "--preset",
    "decimals": "--decimals",
    "marks": "--marks",
    "seed": "--seed",
    "size": "--size",
}

#: click's classes, as typer raises them (its own copy of click or click itself).
_USAGE_ERROR, _CLICK_EXCEPTION = (next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)
                                  for name in ("UsageError", "ClickException"))  # fmt: skip


class _UsageLine(_CLICK_EXCEPTION):
    """A usage error (a bad, missing or unknown option or argument) told as every other error
    is: one line on stderr, ``cnntrace: train: Invalid value for '--epochs' …``, exit 2."""

    exit_code = 2

    def __init__(self, error):
        context, names = error.ctx, []
        command = context.command_path if context is not None else "cnntrace"
        while context is not None and context.parent is not None:  # the subcommand's name, not the program's
            names.append(context.info_name)
            context = context.parent
        where = " ".join(reversed(names))
        message = " ".join(error.format_message().split()).rstrip(".")
        super().__init__(f"{where + ': ' if where else ''}{message} (see {command} --help)")

    def show(self, file=None) -> None:
        from cnntrace.errors import one_line  # lazy: start-up

        typer.echo(f"cnntrace: {one_line(self.message)}", err=True)


@contextmanager
def _told_in_one_line():
    """Turn a usage error into _UsageLine; the help that a bare ``cnntrace`` shows stays."""
    try:
        yield
    except _USAGE_ERROR as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            raise
        raise _UsageLine(error) from None


class _Commands(typer.core.TyperGroup):
    """cnntrace's commands, their usage errors in one line (see _UsageLine): the command
    line's own, and those of each command's options and arguments (raised as a command is
    made or run)."""

    def make_context(self, *args, **kwargs):
        with _told_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _told_in_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Commands,
    name="cnntrace",
    help="Backpropagation through a small CNN, step by step, with every number shown.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# -- formats and their renderers ---------------------------------------------------------------
# Each command picks its renderer from its table by the format asked for. A renderer is
# (module, function), imported when used; it returns a string, a rich renderable (shown as
# _text shows it) or, for a dataset's JSON and CSV, the text in pieces.


class Format(str, Enum):
    """Output formats of ``step``."""

    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"
    markdown = "markdown"
    latex = "latex"


class CheckFormat(str, Enum):
    """Output formats of ``check`` and ``verify``."""

    table = "table"
    json = "json"


class ExplainFormat(str, Enum):
    """Output formats of ``explain``."""

    table = "table"
    json = "json"


class SheetFormat(str, Enum):
    """Output formats of ``sheet``."""

    markdown = "markdown"
    latex = "latex"


class GradeFormat(str, Enum):
    """Output formats of ``grade``."""

    csv = "csv"
    json = "json"


class Paper(str, Enum):
    """Paper sizes of a standalone LaTeX sheet."""

    a4 = "a4"
    letter = "letter"


class TrainFormat(str, Enum):
    """Output formats of ``train``."""

    table = "table"
    json = "json"
    ndjson = "ndjson"


class Dtype(str, Enum):
    """The floating type training computes in (the trace and step are always float64)."""

    float64 = "float64"
    float32 = "float32"


class VerifyPreset(str, Enum):
    """verify's tolerances (cnntrace.verify.PRESETS)."""

    hand = "hand"
    float64 = "float64"
    float32 = "float32"


#: The renderer of each format of ``step``.
STEP_RENDERERS = {
    Format.table: ("cnntrace.render.table", "render"),
    Format.json: ("cnntrace.render.json", "render"),
    Format.ndjson: ("cnntrace.render.json", "render_ndjson"),
    Format.csv: ("cnntrace.render.csv", "render"),
    Format.markdown: ("cnntrace.render.markdown", "render"),
    Format.latex: ("cnntrace.render.latex", "render"),
}


def file_banner(file: str) -> str:
    """The table view's heading of one file's trace when several are traced, as tail's; a
    name's unprintable characters (an escape sequence) written as their escapes."""
    from cnntrace.errors import one_line  # lazy: start-up

    return f"==> {one_line(file)} <==\n"


#: How each format of ``step`` heads one file's trace when several are traced.
FILE_HEADINGS = {
    Format.table: file_banner,
    Format.markdown: ("cnntrace.render.markdown", "file_heading"),
    Format.latex: ("cnntrace.render.latex", "file_heading"),
}

#: What a format of ``step`` writes between two files' traces, whichever of them failed.
FILE_SEPARATORS = {Format.table: "\n"}

#: How a format of ``step`` makes one document of several files' traces: what it writes
#: first, between two traces, and last (one JSON array of objects, each carrying its file).
MANY_FILES = {Format.json: ("[", ",", "]\n")}

#: The formats of ``step`` whose every record names its file, even when there is one file.
NAMED_RECORDS = {Format.ndjson}

CHECK_RENDERERS = {
    CheckFormat.table: ("cnntrace.render.check", "render_table"),
    CheckFormat.json: ("cnntrace.render.check", "render_json"),
}

VERIFY_RENDERERS = {
    CheckFormat.table: ("cnntrace.render.verify", "render_table"),
    CheckFormat.json: ("cnntrace.render.verify", "render_json"),
}

EXPLAIN_RENDERERS = {
    ExplainFormat.table: ("cnntrace.render.explanation", "render_text"),
    ExplainFormat.json: ("cnntrace.render.explanation", "render_json"),
}

SHEET_RENDERERS = {
    SheetFormat.markdown: ("cnntrace.render.sheet", "render_markdown"),
    SheetFormat.latex: ("cnntrace.render.sheet", "render_latex"),
}

GRADE_RENDERERS = {
    GradeFormat.csv: ("cnntrace.render.gradebook", "render_csv"),
    GradeFormat.json: ("cnntrace.render.gradebook", "render_json"),
}

#: The renderer of the whole training, once it is over (NDJSON has none: its lines are all).
TRAIN_RENDERERS = {
    TrainFormat.table: ("cnntrace.render.train", "render"),
    TrainFormat.json: ("cnntrace.render.train", "render_document"),
}

class ExportTarget(str, Enum):
    """What ``export`` writes."""

    torch = "torch"
    onnx = "onnx"


#: The writer of each target of ``export``: (trace, the input's name) -> text or bytes.
EXPORTERS = {
    ExportTarget.torch: ("cnntrace.bridge.repro", "repro_script"),
    ExportTarget.onnx: ("cnntrace.bridge.onnx_io", "onnx_bytes"),
}

#: The renderer of each epoch as it ends, written at once (the others wait for the end).
EPOCH_RENDERERS = {TrainFormat.ndjson: ("cnntrace.render.train", "ndjson_line")}


def _renderer(table: dict, output_format: Enum):
    """The renderer ``table`` has for ``output_format``: a function, or (module, function)
    imported now."""
    entry = table[output_format]
    if callable(entry):
        return entry
    module, function = entry
    return getattr(importlib.import_module(module), function)


# -- options shared by the commands ------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """A float option must be a finite number: typer's min= lets NaN through."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


# Each option several commands share is declared once, as an Annotated type; where the
# commands word its help differently, a factory makes each wording's alias.


def _format(enum: type[Enum]):
    """--format/-f, choosing among ``enum``'s formats."""
    return Annotated[enum, typer.Option("--format", "-f", help="Output format.")]


def _precision(help: str):
    """--precision/-p: decimals shown, 0 to 17."""
    return Annotated[int, typer.Option("--precision", "-p", min=0, max=17, help=help)]


def _only(help: str):
    """--only NAME[,NAME…]: the matrices asked for (parsed by _only_names)."""
    return Annotated[str | None, typer.Option("--only", metavar="NAME[,NAME…]", show_default=False, help=help)]


def _full(help: str):
    """--full: large matrices shown whole."""
    return Annotated[bool, typer.Option("--full", help=help)]


InputFile = Annotated[Path, typer.Argument(readable=False, metavar="FILE", show_default=False, help="Input JSON file.")]
Output = Annotated[Path | None, typer.Option("-o", "--output", readable=False, help="Write here instead of stdout.", show_default=False)]
Precision = _precision("Decimals shown in the table view.")
StepPrecision = Annotated[int | None, typer.Option(
    "--precision", "-p", min=0, max=17, show_default=False,
    help="Decimals shown in the table view (default 4, and more for a matrix whose entries are all below 0.01).")]
KeyPrecision = _precision("Decimals of the key's values.")
FeedbackPrecision = _precision("Decimals shown in feedback.")
StepOnly = _only("Show only these matrices (e.g. dL_dW1,P1).")
SheetOnly = _only("Ask only for these matrices (e.g. P1,dL_dW1).")
QuizOnly = _only("Ask only for these matrices (e.g. P1,dL_dW1), in the derivation's order.")
StepFull = _full("Table, Markdown, LaTeX: every entry of matrices over 40 on a side and of batches over 8.")
TrainFull = _full("Table view: every entry of parameters over 40 on a side.")
Force = Annotated[bool, typer.Option("--force", help="Replace a write-protected file (mode 0444) all the same.")]
VerifyPresetOption = Annotated[VerifyPreset, typer.Option("--preset", help=(
    "Tolerances: hand (the learner's rounding, carried through each stage), float64 or "
    "float32 (torch.testing's rtol and atol, the atol scaled by the matrix's largest entry)."))]
Decimals = Annotated[int | None, typer.Option("--decimals", min=0, max=15, show_default=False, help=(
    "The hand preset's rounding: the decimals asked for (default: those the answers were written with)."))]
FormatOption = _format(Format)
CheckFormatOption = _format(CheckFormat)
ExplainFormatOption = _format(ExplainFormat)
SheetFormatOption = _format(SheetFormat)
TrainFormatOption = _format(TrainFormat)
GradeFormatOption = _format(GradeFormat)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnntrace {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Backpropagation through a small CNN, step by step, with every number shown.

    Exit status: 0 success, 1 a check that failed, 2 bad input or usage, 130 interrupted.
    """


# -- errors, exit status and the terminal ------------------------------------------------------


def _flag(name: str) -> str:
    """The flag that gives the parameter ``name`` (the name itself when no flag does)."""
    return FLAGS.get(name, name)


def _exit_status(error) -> int:
    """A training that diverged failed (1), one stopped by Ctrl-C was interrupted (130);
    every other error is bad input (2)."""
    from cnntrace.errors import TrainingDiverged, TrainingInterrupted  # lazy: start-up

    if isinstance(error, TrainingInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(error, TrainingDiverged):
        return EXIT_FAILED
    return EXIT_BAD_INPUT


@contextmanager
def reported_errors(file: Path | None = None):
    """Turn cnntrace's own errors into one line on stderr and an exit status.

    The one place where domain errors become exit codes, and parameters the flags that give
    them. ``file`` is the input being worked on, named in errors that arise after it was
    read (an overflow, say).
    """
    from cnntrace.errors import CnntraceError  # lazy: start-up

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


def _interrupted() -> typer.Exit:
    """Say on stderr that Ctrl-C stopped cnntrace; the Exit to raise (status 130)."""
    typer.echo("cnntrace: interrupted", err=True)
    return typer.Exit(EXIT_INTERRUPTED)


def _full_width(renderable) -> int:
    """The width that shows ``renderable`` without cutting or wrapping (at least 80), or
    ``COLUMNS`` where that is set and narrower: wide matrices are then split into blocks of
    columns."""
    from rich.console import Console  # lazy: start-up
    from rich.measure import Measurement

    wide = Console(file=sys.stdout, width=100_000)
    width = max(80, Measurement.get(wide, wide.options, renderable).maximum)
    columns = os.environ.get("COLUMNS", "")
    return min(width, int(columns)) if columns.isdigit() and int(columns) > 0 else width


def _table_text(renderable) -> str:
    """The renderable as text for stdout, all at once.

    On a terminal: its width and colours. Into a pipe or a file: plain text, as wide as the
    widest table so that nothing is cut or wrapped (or as ``COLUMNS`` says), and no line
    longer than its content: the spaces that pad a table shorter than its neighbour are left
    out.
    """
    from rich.console import Console  # lazy: start-up

    console = Console(file=sys.stdout)
    terminal = console.is_terminal
    if not terminal:
        console = Console(file=sys.stdout, width=_full_width(renderable))
    with console.capture() as capture:
        console.print(renderable, crop=terminal)  # into a pipe nothing is wider than the width: no need to measure
    text = capture.get()
    return text if terminal else "\n".join(line.rstrip() for line in text.split("\n"))


def _text(rendered) -> str:
    """A renderer's value as text: a string as it is, a rich renderable as _table_text shows it."""
    return rendered if isinstance(rendered, str) else _table_text(rendered)


def _pieces(rendered) -> Iterable[str]:
    """A renderer's value as pieces of text to write: JSON and CSV come as an iterator of
    pieces, written as they are made (a dataset's trace is never held as one string)."""
    return rendered if isinstance(rendered, Iterator) else [_text(rendered)]


def _write_text(text: str, output: Path | None, force: bool = False) -> None:
    """Text on stdout, or atomically to ``output`` (saying so on stderr)."""
    with reported_errors(output):
        if output is None:
            sys.stdout.write(text)
        else:
            from cnntrace.io import write_atomic  # lazy: start-up

            write_atomic(output, text, force=force)
            from cnntrace.errors import one_line

            typer.echo(f"wrote {one_line(str(output))}", err=True)


def _check_writable(path: Path | None, force: bool = False) -> None:
    """Refuse now, before any work and any output, a file that could not be written."""
    if path is not None:
        with reported_errors():
            from cnntrace.io import check_writable  # lazy: start-up

            check_writable(path, force=force)


# -- load → run --------------------------------------------------------------------------------


def _only_names(value: str | None) -> tuple[str, ...] | None:
    """Parse --only: JSON names (dL_dW1) or the derivation's (dL/dW1), comma-separated.
    Each file's trace checks them against its own names (see load_trace)."""
    if value is None:
        return None
    names = tuple(name.strip().replace("/", "_") for name in value.split(",") if name.strip())
    if not names:
        raise typer.BadParameter(f"no name in {value!r}; e.g. --only dL_dW1,P1", param_hint="--only")
    from cnntrace.naming import NAME  # lazy: start-up

    impossible = [name for name in names if not NAME.fullmatch(name)]
    if impossible:  # no network has it: said before any file is read
        from cnntrace.reference import reference_stages  # lazy: start-up

        known = ", ".join(stage.name for stage in reference_stages())
        raise typer.BadParameter(
            f"unknown name {', '.join(impossible)}; the names are the trace's, e.g. the reference's {known}",
            param_hint="--only",
        )
    return names


def load_trace(file: Path, only: tuple[str, ...] | None = None, check=None):
    """The trace of FILE's forward and backward pass, its errors reported naming FILE; with
    ``only`` (names from --only), refused when it lacks one of them. ``check(problem)``
    refuses, before the pass, what the command will do with it (see budget.py)."""
    with reported_errors(file):
        from cnntrace import limits  # lazy: start-up (numpy)
        from cnntrace.errors import ArgumentError
        from cnntrace.io import load_problem
        from cnntrace.tracer import run

        problem = load_problem(file)
        if check is not None:
            check(problem)
        with _working("the pass", problem.size()[1] / limits.MAX_WORK * limits.MAX_WORK_SECONDS):
            trace = run(problem)
        unknown = [name for name in only or () if name not in trace]
        if unknown:
            known = ", ".join(stage.name for stage in trace.stages)
            raise ArgumentError(f"unknown name {', '.join(unknown)}; the names are {known}", key="only")
    return trace


# -- the commands ------------------------------------------------------------------------------


@app.command()
def step(
    files: Annotated[list[Path], typer.Argument(
        readable=False, metavar="FILE", show_default=False, help="Input JSON files (see `cnntrace schema` and the README).")],
    output_format: FormatOption = Format.table,
    precision: StepPrecision = None,
    only: StepOnly = None,
    brief: Annotated[bool, typer.Option("--brief", help="Matrices only: leave out the chain rules and their factors.")] = False,
    full: StepFull = False,
    html: Annotated[Path | None, typer.Option("--html", readable=False, metavar="FILE", show_default=False, help=(
        "Also save an interactive page of the whole pass: click an entry to see its arithmetic."))] = None,
    svg: Annotated[Path | None, typer.Option(
        "--svg", readable=False, metavar="FILE", show_default=False, help="Also save the table view as an SVG picture.")] = None,
    force: Force = False,
) -> None:
    """Run one forward and backward pass on each FILE and show every matrix.

    Example: cnntrace step samples/reference.json --format json | jq .backward.dL_dW1
    """
    from cnntrace.render import View  # lazy: start-up

    names = _only_names(only)
    _check_writable(html, force)  # before the trace is written to stdout
    _check_writable(svg, force)
    render = _renderer(STEP_RENDERERS, output_format)
    several = len(files) > 1
    first, between, last = MANY_FILES.get(output_format, ("", "", "")) if several else ("", "", "")
    columns = _shared_csv_columns(files, names) if several and output_format is Format.csv else None
    failed = False
    recorded = []  # the table view of each file, for --svg
    explored = []  # (file, trace) of each file, for --html
    budget = _page_budget(names, full) if html else None  # the page's cost, checked file by file
    separator = first
    for index, file in enumerate(files):
        view = View(
            precision=4 if precision is None else precision, scaled=precision is None, only=names, brief=brief, full=full,
            file=str(file) if several or output_format in NAMED_RECORDS else None, columns=columns,
        )  # fmt: skip
        try:
            trace = load_trace(file, names, check=budget.add if budget else None)
            with reported_errors(file):
                rendered = render(trace, view)
                if svg:
                    render_table = _renderer(STEP_RENDERERS, Format.table)
                    table = rendered if render is render_table else render_table(trace, view)
                    recorded += [file_banner(str(file)).strip("\n"), table] if several else [table]
                if html:
                    explored.append((str(file) if several else None, trace))
                heading = ""
                if several and output_format in FILE_HEADINGS:
                    heading = FILE_SEPARATORS.get(output_format, "") * (index > 0)
                    heading += _renderer(FILE_HEADINGS, output_format)(str(file))
                pieces = _pieces(rendered)
                sys.stdout.write(separator + heading)
                separator = between
                with _working("the output", _output_seconds(trace, output_format, names, full)):
                    for piece in pieces:
                        sys.stdout.write(piece)
                sys.stdout.flush()
        except typer.Exit as stop:
            if stop.exit_code != EXIT_BAD_INPUT:
                raise
            failed = True  # reported on stderr; the other files still run
    if several and last:
        sys.stdout.write(first * (separator == first) + last)
    from cnntrace.errors import one_line  # lazy: start-up

    title = one_line(f"cnntrace step {', '.join(map(str, files))}")
    if recorded:
        _save_svg(recorded, svg, title, force)
    if explored:
        with _working("the page", budget.seconds):
            _save_html(explored, html, View(precision=4 if precision is None else precision, only=names,
                                               brief=brief, full=full), title, force)  # fmt: skip
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def _output_seconds(trace, output_format, names, full: bool) -> float:
    """How long writing step's output takes, about: every number for JSON, NDJSON and CSV
    (and any format --full); a summarized view is quick."""
    if output_format not in (Format.json, Format.ndjson, Format.csv) and not full:
        return 0.0
    from cnntrace.budget import output_seconds  # lazy: start-up

    return output_seconds(trace.problem, names)


def _page_budget(names, full: bool):
    """The --html page's cost (budget.PageBudget), added as each file is read."""
    from cnntrace.budget import PageBudget  # lazy: start-up

    return PageBudget(names, full)


def _shared_csv_columns(files: list[Path], names) -> tuple[str, ...]:
    """Write the CSV header that several files share; its columns. It has a channel axis
    when a matrix of a file's trace (of those --only names) has one; a file that cannot be
    read has none (the pass that follows reports it)."""
    from cnntrace.errors import CnntraceError  # lazy: start-up
    from cnntrace.io import load_problem
    from cnntrace.render import csv as render_csv

    def has_channels(file: Path) -> bool:
        with reported_errors():  # Ctrl-C: exit 130
            try:
                return render_csv.has_channels(load_problem(file), names)
            except (CnntraceError, MemoryError):
                return False

    columns = render_csv.shared_columns(any(has_channels(file) for file in files))
    sys.stdout.write(render_csv.header_many(columns))
    return columns


def _save_svg(renderables: list, svg: Path, title: str, force: bool = False) -> None:
    """Save the recorded table view as an SVG picture, atomically."""
    from rich.console import Group  # lazy: start-up

    from cnntrace.io import write_atomic
    from cnntrace.render.table import export

    view = Group(*renderables)
    width = _full_width(view)
    with reported_errors():
        write_atomic(svg, export(view, "svg", width, title=title), force=force)


def _save_html(traces: list, html: Path, view, title: str, force: bool = False) -> None:
    """Save the explorer page of the traces (see render.html), atomically."""
    from cnntrace.io import write_atomic  # lazy: start-up
    from cnntrace.render.html import page

    with reported_errors():
        write_atomic(html, page(traces, view, title=title), force=force)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(readable=False, help="Input JSON file.")],  # usage shows {file}, as it always has
    output_format: CheckFormatOption = CheckFormat.table,
    eps: Annotated[float, typer.Option(min=1e-12, max=1e-1, callback=_finite, help="Finite-difference step.")] = 1e-6,
    rtol: Annotated[float, typer.Option(min=0, callback=_finite, help="Relative tolerance.")] = 1e-6,
    atol: Annotated[float, typer.Option(min=0, callback=_finite, help="Absolute tolerance.")] = 1e-8,
    max_entries: Annotated[int, typer.Option(
        "--max-entries", min=1, help="Check at most this many entries of each tensor (a random sample).")] = 2000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of that sample.")] = 0,
) -> None:
    """Check every gradient of FILE against central finite differences.

    Exit status 0 when all agree within tolerance, 1 otherwise.
    """
    render = _renderer(CHECK_RENDERERS, output_format)
    with reported_errors(file):
        from cnntrace.gradcheck import check as gradient_check  # lazy: start-up
        from cnntrace.io import load_problem

        problem = load_problem(file)
        with _progress(None, "entry") as advance:
            results = gradient_check(
                problem, eps=eps, rtol=rtol, atol=atol, max_entries=max_entries, seed=seed,
                progress=lambda done, total: advance(done, total=total),
            )  # fmt: skip
        text = _text(render(results, str(file), {"eps": eps, "rtol": rtol, "atol": atol}))
    sys.stdout.write(text)
    if not all(result.ok for result in results):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(readable=False, help="Input JSON file.")],  # usage shows {file}, as it always has
    answers: Annotated[Path, typer.Argument(
        readable=False, help='Answers: JSON (e.g. {"P1": [[…]], "Z1[0,1]": 39, "dL_dW1": null}) or a .npz of arrays.')],
    output_format: CheckFormatOption = CheckFormat.table,
    preset: VerifyPresetOption = VerifyPreset.hand,
    decimals: Decimals = None,
    rtol: Annotated[float | None, typer.Option(min=0, callback=_finite, help="Relative tolerance (overrides the preset).")] = None,
    atol: Annotated[float | None, typer.Option(min=0, callback=_finite, help="Absolute tolerance (overrides the preset).")] = None,
) -> None:
    """Check hand-computed ANSWERS against FILE's trace, entry by entry, and name the mistakes.

    ANSWERS holds any of step's JSON names (or step's own output), single entries as
    explain spells them, null for not answered. Under the hand preset an answer is right
    within the rounding the learner used, carried through each stage, judged against the
    true value or against the pass from the learner's own earlier right answers. Each wrong
    answer gets a diagnosis: an error carried forward from the learner's own earlier
    answers, or a known mistake. Exit status 0 when every answer given is right, 1 otherwise.
    """
    render = _renderer(VERIFY_RENDERERS, output_format)
    trace = load_trace(file)
    with reported_errors(answers):
        from cnntrace.io import read_answers  # lazy: start-up
        from cnntrace.verify import passed, tolerance
        from cnntrace.verify import verify as judge_answers

        given = read_answers(answers)
        cost = _answers_cost(trace.problem, given)
        rule = tolerance(preset.value, rtol, atol, decimals, given)
        with _working("the judging", cost.seconds):
            verdicts = judge_answers(trace, given, tolerance=rule)
        settings = {**rule.settings(), "rule": rule.text(), "conventions": trace.problem.network.conventions()}
        text = _text(render(verdicts, str(file), str(answers), settings))
    sys.stdout.write(text)
    if not passed(verdicts):
        raise typer.Exit(EXIT_FAILED)


def _answers_cost(problem, given: dict):
    """verify: answers too many to judge refused (budget.check_answers); their cost."""
    from cnntrace.budget import check_answers  # lazy: start-up

    return check_answers(problem, given)


@app.command()
def grade(
    exercises: Annotated[Path, typer.Argument(
        readable=False, metavar="EXERCISES", show_default=False, help="An exercise file, or a directory of them (*.json).")],
    answers: Annotated[Path | None, typer.Argument(readable=False, metavar="ANSWERS", show_default=False, help=(
        "The directory of answer files: exercise-07.json's are exercise-07.json or 07-*.json."))] = None,
    roster: Annotated[Path | None, typer.Option("--roster", readable=False, metavar="CSV", show_default=False, help=(
        "Who answered what instead: a CSV with id,exercise,answers (paths beside the roster)."))] = None,
    marks: Annotated[Path | None, typer.Option("--marks", readable=False, metavar="FILE", show_default=False, help=(
        'The marks of each matrix as JSON ({"P1": 2, "dL_dW1": 4}); only those are asked. Default: 1 each.'))] = None,
    feedback: Annotated[Path | None, typer.Option("--feedback", readable=False, metavar="DIR", show_default=False, help=(
        "Write each learner's verify report into this directory (ID.txt)."))] = None,
    output_format: GradeFormatOption = GradeFormat.csv,
    preset: VerifyPresetOption = VerifyPreset.hand,
    decimals: Decimals = None,
    force: Force = False,
) -> None:
    """Grade a class: a gradebook row for every learner, on stdout; a class summary on stderr.

    Each row: id, exercise, score, total, the status of every matrix (right, right_rounded,
    wrong, carried_forward, unanswered, not_judged), the diagnoses, and the reason when
    there is no grade (no answer file, answers that cannot be read).

    Example: cnntrace grade class/ answers/ --marks marks.json --feedback notes/ > grades.csv
    """
    if (answers is None) == (roster is None):
        raise typer.BadParameter("give ANSWERS (a directory) or --roster CSV, one of them", param_hint="ANSWERS")
    render = _renderer(GRADE_RENDERERS, output_format)
    with reported_errors(exercises):
        from cnntrace.errors import InputError  # lazy: start-up
        from cnntrace.grade import class_summary, match, read_marks, read_roster
        from cnntrace.grade import grade as grade_class
        from cnntrace.verify import tolerance

        if not exercises.exists():
            raise InputError("does not exist", file=str(exercises))
        listed = sorted(exercises.glob("*.json")) if exercises.is_dir() else [exercises]
        if not listed:
            raise InputError("holds no exercise (*.json)", file=str(exercises))
    weights = None
    if marks is not None:
        with reported_errors(marks):
            weights = read_marks(marks)
    if roster is not None:
        with reported_errors(roster):
            submissions = read_roster(roster, exercises if exercises.is_dir() else exercises.parent)
    else:
        with reported_errors(answers):
            if not answers.is_dir():
                raise InputError("is not a directory of answer files", file=str(answers))
            submissions = match(listed, answers)
    if feedback is not None:
        with reported_errors(feedback):
            feedback.mkdir(parents=True, exist_ok=True)
        for submission in submissions:  # before the grading: a report that cannot be written
            _check_writable(_feedback_file(feedback, submission.id), force)
    with reported_errors(marks):
        rows = grade_class(submissions, lambda given: tolerance(preset.value, None, None, decimals, given), weights)
    summary = class_summary(rows)
    text = render(rows, summary)
    if feedback is not None:
        _write_feedback(rows, feedback, force)
    sys.stdout.write(text)
    for line in summary:
        typer.echo(line, err=True)


def _feedback_file(directory: Path, id: str) -> Path:
    """Where grade --feedback writes a learner's report: DIR/ID.txt."""
    return directory / f"{Path(id).name}.txt"


def _write_feedback(rows, directory: Path, force: bool = False) -> None:
    """Each graded learner's verify report, as the table view writes it, to DIR/ID.txt."""
    import io  # lazy: start-up

    from rich.console import Console

    from cnntrace.io import write_atomic
    from cnntrace.render.verify import render_table

    for row in rows:
        if not row.verdicts:
            continue
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(render_table(row.verdicts, row.exercise, row.answers, row.settings))
        with reported_errors(directory):
            write_atomic(_feedback_file(directory, row.id), console.export_text(), force=force)


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
    size: Annotated[str | None, typer.Option("--size", help="Image size: N or HxW (default 6).", show_default=False)] = None,
    kernel: Annotated[str | None, typer.Option("--kernel", help="Kernel size: N or HxW (default 3).", show_default=False)] = None,
    filters: Annotated[int | None, typer.Option(
        "--filters", min=1, max=64, help="Number of filters (default 1).", show_default=False)] = None,
    batch: Annotated[int | None, typer.Option(
        "--batch", min=1, max=10_000, show_default=False, help="Number of images (default 1, or --like FILE's number).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Random seed (default: a new one, noted in the file).", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option(
        "--image", readable=False, help="Take X from this picture (PNG, JPEG; needs Pillow).", show_default=False)] = None,
    invert: Annotated[bool, typer.Option(
        "--invert", help="With --image: dark ink on light paper becomes bright on dark.")] = False,
    output: Output = None,
    like: Annotated[Path | None, typer.Option("--like", readable=False, metavar="FILE", show_default=False, help=(
        "A fresh exercise with FILE's network: its layers, loss, shapes and classes."))] = None,
    hand: Annotated[bool, typer.Option("--hand", help=(
        "Made for pencil and paper: small numbers, forward matrices up to F exact at two "
        "decimals, no ReLU input at 0, no tied pool maxima."))] = False,
    level: Annotated[int, typer.Option("--level", min=1, max=2, help="With --hand: 1 small integers, 2 one decimal.")] = 1,
    allow_ties: Annotated[bool, typer.Option(
        "--allow-ties", help="With --hand: a tie in a pool window on purpose (at least one).")] = False,
    count: Annotated[int | None, typer.Option("--count", min=1, max=10_000, show_default=False, help=(
        "Write this many different exercises (seeds --seed, --seed + 1 …) into the directory -o DIR."))] = None,
    force: Force = False,
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
    by_hand = f" --hand --level {level}" + " --allow-ties" * allow_ties if hand else ""
    if count is None:
        _check_writable(output, force)
    if hand:
        from cnntrace.exercise import HAND_PROMISES  # lazy: start-up

        by_hand += f". --hand promises: {HAND_PROMISES}"
    if like is not None:
        given = [option for option, value in (("--size", size), ("--kernel", kernel), ("--filters", filters),
                                              ("--image", image)) if value is not None]  # fmt: skip
        if given:
            raise typer.BadParameter(f"the shapes come from {like}; leave out {', '.join(given)}", param_hint="--like")
        make = _like_exercises(like, batch, (level, allow_ties) if hand else None)

        def comment(exercise_seed: int) -> str:  # the command that makes the exercise again
            return f"cnntrace init --like {like.name} --seed {exercise_seed}" + (f" --batch {batch}" if batch else "") + by_hand

        _write_exercises(make, comment, seed, count, output, source=like, force=force, hand=hand)
        return
    (H, W), (kh, kw) = _dims(size or "6", "--size"), _dims(kernel or "3", "--kernel")
    filters, batch = filters or 1, batch or 1
    if kh > H or kw > W:
        raise typer.BadParameter(f"the {kh}x{kw} kernel is larger than the {H}x{W} image", param_hint="--kernel")
    if image is not None and batch > 1:
        raise typer.BadParameter("--image makes one image; leave out --batch", param_hint="--image")
    make = _new_exercises((H, W), (kh, kw), filters, batch, image, invert, (level, allow_ties) if hand else None, output)

    def comment(exercise_seed: int) -> str:  # the command that makes the exercise again
        return (
            f"cnntrace init --size {H}x{W} --kernel {kh}x{kw} --seed {exercise_seed}"
            + (f", X from {image.name}" if image is not None else "")
            + (f" --filters {filters}" if filters > 1 else "") + (f" --batch {batch}" if batch > 1 else "") + by_hand
        )  # fmt: skip

    _write_exercises(make, comment, seed, count, output, source=output, force=force, hand=hand)


def _like_exercises(like: Path, batch: int | None, hand_options: tuple[int, bool] | None):
    """init --like: make(seed), an exercise with the network of the file ``like``;
    ``hand_options`` (level, allow_ties) when --hand asks for one by hand."""
    with reported_errors(like):
        from cnntrace.exercise import HandOptions, like_exercise  # lazy: start-up (numpy)
        from cnntrace.io import load_problem

        problem = load_problem(like)
    hand = HandOptions(*hand_options) if hand_options else None
    return partial(like_exercise, problem, batch=batch, hand=hand)


def _new_exercises(size, kernel, filters: int, batch: int, image: Path | None, invert: bool,
                   hand_options: tuple[int, bool] | None, output: Path | None):  # fmt: skip
    """init: make(seed), an exercise of these shapes, refused at once when too large; X from
    the picture ``image`` when given; ``hand_options`` as for _like_exercises."""
    with reported_errors():
        from cnntrace.exercise import (  # lazy: start-up (numpy)
            HandOptions,
            check_size,
            new_exercise,
        )

        check_size(size, kernel, filters, batch, key=_flag("size"))  # before any work
    with reported_errors(output):
        from cnntrace.io import image_to_X

        X = None if image is None else image_to_X(image, size, invert=invert)
    hand = HandOptions(*hand_options) if hand_options else None
    return partial(new_exercise, size, kernel, filters, batch, X=X, hand=hand)


def _write_exercises(make, comment, seed: int | None, count: int | None, output: Path | None, source: Path | None,
                     force: bool = False, hand: bool = False) -> None:  # fmt: skip
    """One exercise ``make(seed)`` headed by its ``comment(seed)`` to ``output`` (or stdout);
    with ``count``, that many different ones into the directory ``output`` (see
    exercise.exercise_set). ``source`` is the file named in errors of the making. An
    exercise ``hand`` made may take many tries: it says how far it is while it runs."""
    import secrets  # lazy: start-up

    seconds = 0.0
    if hand:
        from cnntrace.exercise import HAND_ATTEMPTS, HAND_TRY_SECONDS  # lazy: start-up

        seconds = HAND_ATTEMPTS * HAND_TRY_SECONDS * (count or 1)
    seed = secrets.randbelow(2**31) if seed is None else seed
    if count is None:
        with reported_errors(source), _working("the hand exercise", seconds):
            data = make(seed)
        _write_exercise({"comment": comment(seed), **data}, output, force)
        return
    with reported_errors(output):
        from cnntrace.errors import OutputError  # lazy: start-up
        from cnntrace.exercise import exercise_set

        if output.exists() and not output.is_dir():
            raise OutputError("is a file; --count writes a directory of exercises", file=str(output))
        output.mkdir(parents=True, exist_ok=True)
    with reported_errors(source), _working("the hand exercises", seconds):  # each file's errors name it
        for path, exercise_seed, data in exercise_set(make, seed, count, output):
            _write_exercise({"comment": comment(exercise_seed), **data}, path, force)


def _write_exercise(data: dict, output: Path | None, force: bool = False) -> None:
    """An exercise as JSON for people, on stdout or atomically to ``output``."""
    with reported_errors(output):
        from cnntrace.io import format_input  # lazy: start-up

        text = format_input(data)
    _write_text(text, output, force)


@app.command()
def sheet(
    file: InputFile,
    output_format: SheetFormatOption = SheetFormat.markdown,
    key: Annotated[bool, typer.Option("--key", help="The answer key: the values and each step's chain rule.")] = False,
    only: SheetOnly = None,
    precision: KeyPrecision = 4,
    standalone: Annotated[bool, typer.Option("--standalone", help="LaTeX: a whole document, not a fragment.")] = False,
    paper: Annotated[Paper, typer.Option("--paper", help="LaTeX --standalone: the paper size.")] = Paper.letter,
    title: Annotated[str | None, typer.Option("--title", show_default=False, help=(
        'A title above the sheet ("Week 3: backpropagation").'))] = None,
    output: Output = None,
    force: Force = False,
) -> None:
    """A worksheet for FILE: the given numbers, then a blank grid for every matrix to compute.

    Example: cnntrace sheet ex.json -f latex --standalone -o ex.tex; cnntrace sheet ex.json --key
    """
    if standalone and output_format is not SheetFormat.latex:
        raise typer.BadParameter("a whole document is LaTeX; add --format latex", param_hint="--standalone")
    names = _only_names(only)
    _check_writable(output, force)
    render = _renderer(SHEET_RENDERERS, output_format)
    cost = []

    def check_size(problem) -> None:  # before the pass: the worked entries too large are refused
        from cnntrace.budget import check_sheet  # lazy: start-up

        cost.append(check_sheet(problem, names))

    trace = load_trace(file, names, check=check_size)
    with reported_errors(file), _working("the sheet", cost[0].seconds):
        from cnntrace.render.sheet import Sheet  # lazy: start-up

        text = render(trace, Sheet(only=names, key=key, precision=precision, standalone=standalone, file=file.name,
                                   paper=paper.value, title=title))  # fmt: skip
    _write_text(text, output, force)


@app.command()
def quiz(
    file: InputFile,
    only: QuizOnly = None,
    tries: Annotated[int, typer.Option("--tries", min=1, max=100, help="Tries per matrix before the answer is shown.")] = 3,
    record: Annotated[Path | None, typer.Option("--record", readable=False, metavar="FILE", show_default=False, help=(
        'Write the session as JSON: {"file", "score", "total", "answers": […]}.'))] = None,
    precision: FeedbackPrecision = 4,
    rtol: Annotated[float, typer.Option(min=0, callback=_finite, help="Relative tolerance, as verify's.")] = 1e-3,
    atol: Annotated[float, typer.Option(min=0, callback=_finite, help="Absolute tolerance, as verify's.")] = 1e-4,
    force: Force = False,
    show_givens: Annotated[bool, typer.Option("--show-givens", help=(
        "Show the given numbers first (type 'givens' to see them again)."))] = False,
) -> None:
    """Be asked for each matrix of FILE's pass in order; hear at once whether it is right.

    Answers are numbers in row-major order (spaces or commas) or a JSON value; '?' gives a
    hint (first which cells, then the terms, never the value); 'givens' shows the given numbers. Prompts and feedback go to stderr when stdout is not a terminal, the score to
    stdout. Exit status 0 when every answer was right, 1 otherwise.

    Example: cnntrace quiz ex.json --only P1,dL_dZ2,dL_dW1 --record me.json
    """
    names = _only_names(only)
    _check_writable(record, force)
    trace = load_trace(file, names)
    from cnntrace.quiz import MAX_ANSWER_CHARS, Session, run_quiz  # lazy: start-up

    questions = [stage.name for stage in trace.stages if names is None or stage.name in names]
    talk = sys.stdout if sys.stdout.isatty() else sys.stderr
    interactive = sys.stdin.isatty()

    def say(text: str) -> None:
        talk.write(text)
        talk.flush()

    def ask(prompt: str) -> str | None:
        say(prompt)
        try:  # bounded: a line longer than any answer ends the quiz (see run_quiz)
            line = sys.stdin.readline(MAX_ANSWER_CHARS + 1)
        except (OSError, ValueError):  # stdin closed under us
            return None
        if not line:
            return None
        if not interactive:  # piped answers: the transcript shows them after their prompts
            from cnntrace.errors import one_line, shortened  # lazy: start-up

            say(one_line(shortened(line.rstrip("\r\n"), 200)) + "\n")
        return line.rstrip("\r\n")

    session = Session(str(file), len(questions))
    interrupted = False
    try:
        run_quiz(trace, questions, ask, say, file=str(file), tries=tries, precision=precision,
                 rtol=rtol, atol=atol, session=session, show_givens=show_givens)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
    if record is not None:
        with reported_errors(record):
            import json  # lazy: start-up

            from cnntrace.io import write_atomic

            write_atomic(record, json.dumps(session.record(), indent=2, ensure_ascii=False) + "\n", force=force)
    if interrupted:
        raise _interrupted()
    sys.stdout.write(f"{chr(10) if talk is sys.stdout else ''}score {session.score}/{session.total}\n")
    if session.score < session.total:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the input format."""
    import json  # lazy: start-up

    from cnntrace.schema import INPUT_SCHEMA

    sys.stdout.write(json.dumps(INPUT_SCHEMA, indent=2, ensure_ascii=False) + "\n")


@app.command()
def explain(
    file: InputFile,
    term: Annotated[str, typer.Argument(
        metavar="TERM", show_default=False, help="One entry of the trace, e.g. dL_dW1[0,1], Z1[2,3], dL/dX[0,0], L.")],
    output_format: ExplainFormatOption = ExplainFormat.table,
    precision: Precision = 4,
    nonzero: Annotated[bool, typer.Option(
        "--nonzero", help="Leave out the terms of a sum that are zero (and say how many).")] = False,
    every: Annotated[bool, typer.Option(
        "--all", help="Every term of a sum of more than 64 (by default its 64 largest in size).")] = False,
) -> None:
    """Show the arithmetic of one entry of the trace, with the actual numbers.

    The last line is the value, as `cnntrace step` shows it. With a batch or several
    filters the image and filter indices come first, as in the JSON: dL_dW1[1,0,2]. A sum
    of more than 64 terms shows its 64 largest and says how many it left out.

    Example: cnntrace explain samples/reference.json 'dL_dW1[0,1]'
    """
    render = _renderer(EXPLAIN_RENDERERS, output_format)
    with reported_errors():
        from cnntrace.explain import check_possible, parse_term  # lazy: start-up
        from cnntrace.explain import explain as explain_term

        # A TERM that no network could have is reported before the file is read.
        name = parse_term(term)[0]
        check_possible(name, term)
    cost = []

    def check_size(problem) -> None:  # before the pass: the explanation too large is refused
        from cnntrace.budget import check_explanation  # lazy: start-up

        if name in problem.stage:  # an unknown name is reported against the trace's names
            cost.append(check_explanation(problem, name, term))

    trace = load_trace(file, check=check_size)
    with reported_errors(), _working("the explanation", cost[0].seconds if cost else 0.0):
        text = render(explain_term(trace, term), precision, nonzero=nonzero, every=every)
    sys.stdout.write(text)
    sys.stdout.flush()


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
    import signal  # lazy: start-up

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


#: Where stderr is no terminal (a log, CI), a long command says how far it is on a line of
#: its own this often, in seconds: the first after as long.
PROGRESS_EVERY = 10.0


def _progress_lines(total: int | None, unit: str):
    """``advance(done, status, total)`` that writes ``cnntrace: unit 12 of 40 (status), 30 s``
    on stderr at most every PROGRESS_EVERY seconds."""
    import time  # lazy: start-up

    start = time.monotonic()
    state = {"total": total, "next": start + PROGRESS_EVERY}

    def advance(done: int, status: str = "", total: int | None = None) -> None:
        if total is not None:
            state["total"] = total
        now = time.monotonic()
        if now < state["next"]:
            return
        state["next"] = now + PROGRESS_EVERY
        of = f" of {state['total']}" if state["total"] else ""
        sys.stderr.write(f"cnntrace: {unit} {done}{of}{f' ({status})' if status else ''}, {now - start:.0f} s\n")
        sys.stderr.flush()

    return advance


#: Work estimated to take longer than this, in seconds, says how far it is while it runs.
PROGRESS_AFTER = 5.0


@contextmanager
def _working(what: str, seconds: float):
    """Say on stderr, every PROGRESS_EVERY seconds while the block runs, how long ``what``
    has taken of the ``seconds`` estimated (see budget.py), where that is more than
    PROGRESS_AFTER: ``cnntrace: the page: 20 s of about 45 s (estimated)``. A line of its
    own whether stderr is a terminal or a log; nothing for work that is quick."""
    if seconds <= PROGRESS_AFTER:
        yield
        return
    import threading  # lazy: start-up
    import time

    from cnntrace.limits import duration_text

    start, done = time.monotonic(), threading.Event()

    def say() -> None:
        while not done.wait(PROGRESS_EVERY):
            sys.stderr.write(f"cnntrace: {what}: {time.monotonic() - start:.0f} s of {duration_text(seconds)} "
                             "(estimated)\n")  # fmt: skip
            sys.stderr.flush()

    speaker = threading.Thread(target=say, daemon=True)
    speaker.start()
    try:
        yield
    finally:
        done.set()
        speaker.join()


@contextmanager
def _progress(total: int | None, unit: str):
    """Yield ``advance(done, status, total)``: a progress bar on stderr when stderr is a
    terminal, counting ``unit``s with a status text; a line every PROGRESS_EVERY seconds
    otherwise (see _progress_lines).
    ``total`` may be given (or corrected) by the first call."""
    import os  # lazy: start-up

    # Decided without rich where stderr is plainly no terminal (rich, too, lets TTY_COMPATIBLE
    # and FORCE_COLOR say otherwise): a pipe's run starts a hundredth of a second sooner.
    if not sys.stderr.isatty() and not {"TTY_COMPATIBLE", "FORCE_COLOR"} & set(os.environ):
        yield _progress_lines(total, unit)
        return
    from rich.console import Console  # lazy: start-up

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _progress_lines(total, unit)
        return
    from rich.progress import (  # lazy: start-up
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
    # stdout carries the data (NDJSON): rich must not redirect it into the live display,
    # unless it is the terminal too, where its lines then go above the bar, not through it.
    live = dict(console=console, transient=True, redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
    with Progress(*columns, **live) as progress:
        task = progress.add_task(unit, total=total, status="")

        def advance(done: int, status: str = "", total: int | None = None) -> None:
            progress.update(task, completed=done, status=status, total=total)

        yield advance


@app.command()
def train(
    file: Annotated[Path, typer.Argument(readable=False, help="Input file: JSON as for `step`, or .npz with the same keys.")],
    epochs: Annotated[int, typer.Option("--epochs", "-n", min=1, help="Passes over the whole input.")],
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate, > 0 (default: the file's lr).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", "-b", min=1, help="Images per step (default: all of them).")] = None,
    shuffle: Annotated[bool, typer.Option("--shuffle/--no-shuffle", help="Shuffle the images before every epoch.")] = False,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Seed for --shuffle and --holdout, for the same run again.")] = None,
    momentum: Annotated[float, typer.Option(
        "--momentum", help="Momentum β, 0 ≤ β < 1, as PyTorch's SGD: v ← β·v + g, P ← P − lr·v.")] = 0.0,
    test: Annotated[Path | None, typer.Option(
        "--test", readable=False, help="A test set: the same network on other images (missing weights: FILE's).")] = None,
    holdout: Annotated[float | None, typer.Option(
        "--holdout", help="Set this fraction of FILE's images aside as the test set (split from --seed).")] = None,
    save: Annotated[Path | None, typer.Option(
        "--save", readable=False, help="Write the input with the trained W1, B1, W2, B2 (.json or .npz).")] = None,
    save_partial: Annotated[bool, typer.Option("--save-partial", help=(
        "Let --save replace an existing file even with a model that is no better than the "
        "starting one (interrupted, diverged, or a higher loss); otherwise it goes to "
        "NAME.partial.json beside it."))] = False,
    force: Force = False,
    output_format: TrainFormatOption = TrainFormat.table,
    precision: Precision = 4,
    full: TrainFull = False,
    dtype: Annotated[Dtype, typer.Option(
        "--dtype", help="Train in float32 end to end (as people train; faster) or float64 (as step computes).")
    ] = Dtype.float64,
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
    _check_writable(save, force)  # now, not after the training
    with reported_errors(file):
        from dataclasses import replace  # lazy: start-up

        from cnntrace import train as training  # lazy: start-up (numpy)
        from cnntrace.errors import TrainingDiverged, TrainingInterrupted
        from cnntrace.io import read_input, with_parameters, write_input
        from cnntrace.render.train import progress_text

        render_epoch = _renderer(EPOCH_RENDERERS, output_format) if output_format in EPOCH_RENDERERS else None

        data = read_input(file)
        problem, test_set = _test_set(file, data, test, holdout, seed)

        def saved(parameters, which: str, finished: bool = False) -> str:
            """Save ``parameters`` when --save was given; say what was saved where. An
            existing file is replaced only by a model that ``finished`` every epoch with a
            lower loss than the starting one, or with --save-partial; else the model goes to
            NAME.partial.SUFFIX beside it."""
            if save is None:
                return ""
            target = save
            if save.exists() and not save_partial and not (finished and _improved(problem, parameters)):
                target = save.with_name(f"{save.stem}.partial{save.suffix}")
            trained = training.presented(problem, parameters)
            if lr is not None:
                trained["lr"] = lr  # the rate these weights were trained at, to go on with
            write_input(target, with_parameters(data, trained), force=force)
            if target != save:
                why = "no better than the starting model" if finished else "training did not finish"
                return f"; saved {which} parameters to {target}, not over {save} ({why}; --save-partial replaces it)"
            return f"; saved {which} parameters to {save}"

        history, interrupted = [], False
        last = None  # the last completed epoch, set in one step so Ctrl-C can't split it
        training.reuse_freed_memory()  # this process trains: its steps reuse what they free
        with _stop_on_ctrl_c() as ctrl_c, _progress(epochs, "epoch") as advance:
            try:
                for epoch in training.train(
                    problem, epochs, lr=lr, batch_size=batch_size, shuffle=shuffle, seed=seed,
                    momentum=momentum, test=test_set, stop=ctrl_c.pressed, dtype=dtype.value,
                ):  # fmt: skip
                    last = epoch
                    # Only the last epoch's parameters are reported: the others are not kept.
                    history.append(replace(epoch, parameters=None, confusion=None))
                    if render_epoch:
                        sys.stdout.write(render_epoch(epoch))
                        sys.stdout.flush()
                    advance(epoch.epoch, progress_text(epoch))
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
            note = saved(parameters, which, finished=done == epochs)
        if interrupted or ctrl_c.pressed() or done < epochs:  # only a Ctrl-C ends training early
            raise TrainingInterrupted(f"interrupted after {done} of {epochs} epochs{note}")
        if note:
            typer.echo(f"cnntrace: {note.removeprefix('; ')}", err=True)
        if output_format not in TRAIN_RENDERERS:
            return
        # The training set's confusion is the last epoch's, as its accuracy: no pass more over it.
        counts = training.confusion(test_set, parameters) if test_set is not None else last.confusion
        rendered = _renderer(TRAIN_RENDERERS, output_format)(
            history, problem, training.presented(problem, parameters), precision,
            lr=problem.lr if lr is None else lr, batch_size=min(batch_size or problem.M, problem.M),
            full=full, momentum=momentum, confusion=counts,
            confusion_of="test set" if test_set is not None else "training set, as the last epoch classified it",
        )  # fmt: skip
        sys.stdout.write(_text(rendered))


def _improved(problem, parameters: dict) -> bool:
    """Whether ``parameters`` give a lower loss on ``problem``'s images than its own weights."""
    from cnntrace import train as training  # lazy: start-up (numpy)

    before, _ = training.evaluate(problem, training.starting_parameters(problem))
    after, _ = training.evaluate(problem, parameters)
    return math.isfinite(after) and after < before


def _test_set(file: Path, data: dict, test: Path | None, holdout: float | None, seed: int | None):
    """(training set, test set or None) of train: FILE's ``data`` whole and the file
    ``test``, or split by ``holdout``; errors name the file they come from."""
    from cnntrace import train as training  # lazy: start-up (numpy)
    from cnntrace.io import problem_from_dict, read_input

    problem, test_set = problem_from_dict(data), None
    if test is not None:
        with reported_errors(test):
            test_set = training.problem_for_testing(read_input(test), data)
    elif holdout is not None:
        problem, test_set = training.holdout(problem, holdout, seed)
    if test_set is not None:
        with reported_errors(test if test is not None else file):
            training.check_same_network(problem, test_set)
    return problem, test_set


@app.command()
def export(
    file: InputFile,
    to: Annotated[ExportTarget, typer.Option("--to", help=(
        "torch: a standalone script (torch and numpy only) that rebuilds the network with its weights, "
        "runs forward, backward() and one SGD step, and checks every matrix of the trace; "
        "onnx: the network as an ONNX model with its weights (needs the onnx extra)."))],
    output: Annotated[Path | None, typer.Option("-o", "--output", readable=False, show_default=False, help=(
        "Write here (an ONNX model must go to a file); a script goes to stdout without it."))] = None,
    force: Force = False,
) -> None:
    """Write FILE's network for PyTorch or ONNX.

    Example: cnntrace export samples/reference.json --to torch -o repro.py && python repro.py
    """
    if to is ExportTarget.onnx and output is None:
        raise typer.BadParameter("an ONNX model is binary; give the file with -o model.onnx", param_hint="-o")
    _check_writable(output, force)
    trace = load_trace(file)
    with reported_errors(file):
        written = _renderer(EXPORTERS, to)(trace, file.name)
    if isinstance(written, str):
        _write_text(written, output, force)
        return
    with reported_errors(output):
        from cnntrace.io import write_atomic  # lazy: start-up

        write_atomic(output, written, force=force)
    typer.echo(f"wrote {output}", err=True)


@app.command("import")
def import_model(
    model: Annotated[Path, typer.Argument(readable=False, metavar="MODEL", show_default=False, help=(
        "An ONNX model (.onnx), or a PyTorch state_dict (.pt, .pth, .safetensors) with --layers."))],
    output: Annotated[Path, typer.Option("-o", "--output", readable=False, show_default=False, help="The input file to write (.json or .npz).")],
    layers: Annotated[Path | None, typer.Option("--layers", readable=False, metavar="NET.json", show_default=False, help=(
        "With a state_dict: the file whose layers its tensors fill, in order (and its X, Y, loss where MODEL has none)."))] = None,
    input_file: Annotated[Path | None, typer.Option("--input", readable=False, metavar="FILE", show_default=False, help=(
        "X: .npy, .npz, JSON or an image (default: drawn from --seed in the model's input shape)."))] = None,
    target: Annotated[str | None, typer.Option("--target", show_default=False, help=(
        "Y: a file, or JSON (3 for class 3, [0, 1])."))] = None,
    grad: Annotated[str | None, typer.Option("--grad", show_default=False, help=(
        "Instead of a target and a loss, the given gradient of the output: a file, or JSON."))] = None,
    loss: Annotated[str | None, typer.Option("--loss", show_default=False, help="bce, cross_entropy or mse.")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the random X.")] = 0,
    lr: Annotated[float | None, typer.Option("--lr", callback=_finite, show_default=False, help="Learning rate (default 0.1).")] = None,
    force: Force = False,
) -> None:
    """Write a cnntrace input file from an ONNX model or a PyTorch state_dict.

    Example: cnntrace import lenet.onnx --target 3 --loss cross_entropy -o lenet.json
    """
    _check_writable(output, force)
    with reported_errors(model):
        from cnntrace.bridge.importer import import_input  # lazy: start-up (numpy)
        from cnntrace.io import write_input

        data = import_input(model, layers_file=layers, input_file=input_file, target=target, given=grad,
                            loss=loss, seed=seed, lr=lr)  # fmt: skip
    with reported_errors(output):
        write_input(output, data, force=force)
    typer.echo(f"wrote {output}", err=True)


def main() -> None:
    """Console-script entry point.

    A reader that goes away (``cnntrace … | head -1``) ends the process quietly, as it does
    ``cat``. Ctrl-C anywhere exits 130 with "interrupted" on stderr: the commands report it
    in ``reported_errors``; elsewhere typer either lets the KeyboardInterrupt through (while
    it builds the commands) or exits 130 without a word (the SystemExit then comes from an
    Exit caused by the KeyboardInterrupt), and it is reported here.
    """
    import signal  # lazy: start-up

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        app()
    except KeyboardInterrupt:
        pass
    except SystemExit as leaving:
        if not isinstance(getattr(leaving.__context__, "__cause__", None), KeyboardInterrupt):
            raise
    sys.exit(_interrupted().exit_code)


if __name__ == "__main__":
    main()
