"""The command line: parse options, load → run → render, write data to stdout.

This is the only layer that prints, exits or knows about the terminal. numpy and the
renderers are imported inside the commands, so ``--help`` and ``--version`` start fast.

Exit status: 0 success, 1 a check that failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from cnntrace import __version__

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="cnntrace",
    help="Backpropagation through a small CNN, step by step, with every number shown.",
    no_args_is_help=True,
    add_completion=False,
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


#: The renderer of each format of ``step``: (module, function), imported when used.
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
    """Parse --only: JSON names (dL_dW1) or the derivation's (dL/dW1), comma-separated."""
    if value is None:
        return None
    from cnntrace.network import STAGE

    names = tuple(name.strip().replace("/", "_") for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in STAGE]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown name {', '.join(unknown) or repr(value)}; the names are {', '.join(STAGE)}",
            param_hint="--only",
        )
    return names


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

    The one place where domain errors become exit codes. ``file`` is the input being
    worked on, named in errors that arise after it was read (an overflow, say).
    """
    from cnntrace.errors import CnntraceError

    try:
        yield
    except CnntraceError as error:
        if error.file is None and file is not None:
            error.in_file(str(file))
        typer.echo(f"cnntrace: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        typer.echo("cnntrace: interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _full_width(renderable) -> int:
    """The width that shows ``renderable`` without cutting or wrapping (at least 80)."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(file=sys.stdout, width=100_000)
    return max(80, Measurement.get(wide, wide.options, renderable).maximum)


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
    html: Path = typer.Option(
        None, "--html", metavar="FILE", show_default=False,
        help="Also save the table view as an HTML page.",
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
    if several and format is Format.csv:
        from cnntrace.render import csv as render_csv

        sys.stdout.write(render_csv.header_many())
    failed = False
    recorded = []  # the table view of each file, for --html and --svg
    for index, file in enumerate(files):
        view = View(
            precision=precision, only=names, brief=brief,
            file=str(file) if several or format is Format.ndjson else None,
        )  # fmt: skip
        heading = f"{chr(10) * (index > 0)}==> {file} <==\n" if several else ""
        try:
            with reported_errors(file):
                from cnntrace.io import load_problem
                from cnntrace.network import run

                trace = run(load_problem(file))
                output = render(trace, view)
                if html or svg:
                    table = output if format is Format.table else _renderer(STEP_RENDERERS, Format.table)(trace, view)
                    recorded += [heading.strip("\n"), table] if heading else [table]
                if format is Format.table:
                    output = heading + _table_text(output)
        except typer.Exit:
            failed = True
            continue
        sys.stdout.write(output)
        sys.stdout.flush()
    if recorded:
        _save_exports(recorded, html, svg, title=", ".join(map(str, files)))
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def _save_exports(renderables: list, html: Path | None, svg: Path | None, title: str) -> None:
    """Save the recorded table view as an HTML page and/or an SVG picture, atomically."""
    from rich.console import Group

    from cnntrace.io import write_atomic
    from cnntrace.render.table import export

    view = Group(*renderables)
    width = _full_width(view)
    with reported_errors():
        for path, kind in ((html, "html"), (svg, "svg")):
            if path is not None:
                write_atomic(path, export(view, kind, width, title=f"cnntrace step {title}"))


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
        from cnntrace.explain import explain as explain_term, parse_term

        parse_term(term)  # a bad TERM is reported before the file is read
    with reported_errors(file):
        from cnntrace.io import load_problem
        from cnntrace.network import run

        trace = run(load_problem(file))
    with reported_errors():
        output = render(explain_term(trace, term), precision)
    sys.stdout.write(output)
    sys.stdout.flush()


def main() -> None:
    """Console-script entry point.

    A reader that goes away (``cnntrace … | head -1``) ends the process quietly, as it does
    ``cat``. Ctrl-C outside a command's own handling exits 130 (typer does that).
    """
    import signal

    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


if __name__ == "__main__":
    main()
