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


class StepFormat(str, Enum):
    table = "table"
    json = "json"


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


def _table_text(renderable) -> str:
    """The renderable as text for stdout, all at once.

    On a terminal: its width and colours. Into a pipe or a file: plain text, as wide as the
    widest table so that nothing is cut or wrapped.
    """
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=sys.stdout)
    if not console.is_terminal:
        wide = Console(file=sys.stdout, width=100_000)
        needed = Measurement.get(wide, wide.options, renderable).maximum
        console = Console(file=sys.stdout, width=max(80, needed))
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


@app.command()
def step(
    file: Path = typer.Argument(..., help="Input JSON file (see `cnntrace schema`, README)."),
    format: StepFormat = typer.Option(StepFormat.table, "--format", "-f", help="Output format."),
    precision: int = typer.Option(
        4, "--precision", "-p", min=0, max=17, help="Decimals shown in the table view."
    ),
) -> None:
    """Run one forward and backward pass on FILE and show every matrix.

    Example: cnntrace step samples/reference.json --format json | jq .backward.dL_dW1
    """
    with reported_errors(file):
        from cnntrace.io import load_problem
        from cnntrace.network import run

        trace = run(load_problem(file))
        if format is StepFormat.json:
            from cnntrace.render import json as render_json

            output = render_json.render(trace)
        else:
            from cnntrace.render import table as render_table

            output = _table_text(render_table.render(trace, precision))
    sys.stdout.write(output)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
