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
        raise typer.Exit(_exit_status(error)) from None
    except KeyboardInterrupt:
        typer.echo("cnntrace: interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


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


class TrainFormat(str, Enum):
    table = "table"
    json = "json"
    ndjson = "ndjson"


@contextmanager
def _stop_on_ctrl_c():
    """Yield ``stop()``, which turns True once Ctrl-C was pressed; training asks it after
    every mini-batch, so the one under way finishes. A second Ctrl-C interrupts at once."""
    import signal

    pressed = []

    def press(signum, frame):
        pressed.append(signum)
        signal.signal(signal.SIGINT, previous)

    try:
        previous = signal.signal(signal.SIGINT, press)
    except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
        yield lambda: False
        return
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _progress(epochs: int):
    """Yield ``advance(epoch)``: a progress bar on stderr when stderr is a terminal, with
    the epoch, its loss and its accuracy; a function that does nothing otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda epoch: None
        return
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
        TimeRemainingColumn,
    )  # fmt: skip

    columns = (
        TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    # stdout carries the data (NDJSON): rich must not redirect it into the live display.
    live = dict(console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
    with Progress(*columns, **live) as progress:
        task = progress.add_task("training", total=epochs, status="")

        def advance(epoch) -> None:
            status = f"loss {epoch.loss:.4f}  accuracy {epoch.accuracy:.1%}"
            progress.update(task, completed=epoch.epoch, status=status)

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
    seed: int = typer.Option(None, "--seed", help="Seed for --shuffle, for the same order again."),
    save: Path = typer.Option(
        None, "--save", help="Write the input with the trained W1, B1, W2, B2 (.json or .npz)."
    ),
    format: TrainFormat = typer.Option(TrainFormat.table, "--format", "-f", help="Output format."),
    precision: int = typer.Option(
        4, "--precision", "-p", min=0, max=17, help="Decimals shown in the table view."
    ),
) -> None:
    """Train the network on FILE by gradient descent, one step per mini-batch.

    Example: cnntrace train samples/bars.json --epochs 30 --format ndjson | jq .loss
    """
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise typer.BadParameter(f"must be a positive number, got {lr}", param_hint="'--lr'")
    if save is not None and not save.parent.is_dir():
        raise typer.BadParameter(f"{save.parent} is not a directory", param_hint="'--save'")
    with reported_errors(file):
        from cnntrace import train as training
        from cnntrace.errors import TrainingDiverged, TrainingInterrupted
        from cnntrace.io import problem_from_dict, read_input, with_parameters, write_input
        from cnntrace.render import train as render_train

        data = read_input(file)
        problem = problem_from_dict(data)

        def saved(parameters, which: str) -> str:
            """Save ``parameters`` when --save was given; say what was saved where."""
            if save is None:
                return ""
            write_input(save, with_parameters(data, training.presented(problem, parameters)))
            return f"; saved {which} parameters to {save}"

        history, interrupted = [], False
        last = None  # the last completed epoch, set in one step so Ctrl-C can't split it
        with _stop_on_ctrl_c() as stop, _progress(epochs) as advance:
            try:
                for epoch in training.train(
                    problem, epochs, lr=lr, batch_size=batch_size, shuffle=shuffle, seed=seed,
                    stop=stop,
                ):  # fmt: skip
                    last = epoch
                    history.append(epoch)
                    if format is TrainFormat.ndjson:
                        sys.stdout.write(render_train.ndjson_line(epoch))
                        sys.stdout.flush()
                    advance(epoch)
            except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
                interrupted = True
            except TrainingDiverged as error:
                which = f"epoch {error.epoch - 1}'s" if error.epoch > 1 else "the starting"
                error.message += saved(error.parameters, which)
                raise
        done = last.epoch if last else 0
        parameters = last.parameters if last else training.starting_parameters(problem)
        if interrupted or done < epochs:  # only a Ctrl-C ends training early
            which = f"epoch {done}'s" if done else "the starting"
            raise TrainingInterrupted(
                f"interrupted after {done} of {epochs} epochs{saved(parameters, which)}"
            )
        saved(parameters, "the trained")

        trained = training.presented(problem, parameters)
        if format is TrainFormat.json:
            sys.stdout.write(render_train.render_json(history, trained))
        elif format is TrainFormat.table:
            import dataclasses

            view = render_train.render(
                history, dataclasses.replace(problem, **trained), precision,
                lr=problem.lr if lr is None else lr, batch_size=min(batch_size or problem.M, problem.M),
            )  # fmt: skip
            sys.stdout.write(_table_text(view))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
