"""The one family of errors the math core and the input layer raise.

The CLI turns each into a one-line message and an exit status; nothing below it exits.
"""

from __future__ import annotations


class CnntraceError(Exception):
    """Base of every error cnntrace reports to its user instead of a traceback."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.file = file

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.key) if part)
        return f"{where}: {self.message}" if where else self.message

    def in_file(self, file: str) -> CnntraceError:
        """The same error, now naming the file it came from."""
        self.file = file
        return self


class InputError(CnntraceError):
    """An input value (a key of the input file, or an argument) is missing or wrong."""


class OutputError(CnntraceError):
    """A file could not be written; the previous file, if any, is left as it was."""


class NumericError(CnntraceError):
    """A value of the pass overflows float64; ``key`` names the stage where it first did."""


class TrainingDiverged(NumericError):
    """Training met a loss or a parameter that is NaN or infinite (lr too large, usually).

    ``epoch`` is the epoch it happened in; ``parameters`` holds W1, B1, W2, B2 (general
    shapes, all finite) as the last epoch that completed left them, the starting ones
    when that was none.
    """

    def __init__(self, message: str, *, epoch: int, parameters: dict, key: str | None = None):
        super().__init__(message, key=key)
        self.epoch = epoch
        self.parameters = parameters


class TrainingInterrupted(CnntraceError):
    """Training was stopped by Ctrl-C; the message says what was kept."""
