"""The one family of errors the math core and the input layer raise.

The CLI turns each into a one-line message and an exit status; nothing below it exits.
"""

from __future__ import annotations

import json

#: A key longer than this (a stray key of the file, a long TERM) is cut short in messages.
MAX_KEY_SHOWN = 60
#: A value a message echoes (an unknown layer type, a garbage answer) is cut to this many
#: characters, and a whole message to MAX_MESSAGE: a 1 MB value never makes a 1 MB message.
MAX_VALUE_SHOWN = 60
MAX_MESSAGE = 500
#: A file name longer than this is shown by its end, where its name is.
MAX_FILE_SHOWN = 120


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value, limit: int = MAX_VALUE_SHOWN) -> str:
    """A value as a message echoes it: its repr, on one line and cut to ``limit`` characters;
    true, false and null as the JSON file wrote them."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    try:
        text = repr(value[: limit * 8] if isinstance(value, str) else value)
    except (ValueError, RecursionError):  # an int of more digits than Python prints, deep lists
        text = f"<{type(value).__name__}>"
    return shortened(one_line(text[: limit * 8]), limit)


def one_line(text: str) -> str:
    """``text`` with each unprintable character (a newline, an escape) written as its JSON
    escape, so that a message stays one line and cannot drive the terminal."""
    return "".join(char if char.isprintable() else json.dumps(char)[1:-1] for char in text)


def _shown_key(key: str) -> str:
    """A key as a message names it: as it is when it reads plainly, else quoted (an empty
    key, spaces at its ends, unprintable characters), and cut short when long."""
    if key and key.strip() == key and key.isprintable() and len(key) <= MAX_KEY_SHOWN:
        return key
    quoted = json.dumps(key, ensure_ascii=False)
    return quoted if len(quoted) <= MAX_KEY_SHOWN else quoted[: MAX_KEY_SHOWN - 1] + "…"


def _one_line_message(file: str | None, key: str | None, message: str) -> str:
    """``file: key: message``, leaving out what is None, on one line."""
    key = None if key is None else _shown_key(key)
    if file is not None and len(file) > MAX_FILE_SHOWN:
        file = "…" + file[-(MAX_FILE_SHOWN - 1):]
    where = ": ".join(one_line(part) for part in (file, key) if part)
    message = shortened(one_line(message[: MAX_MESSAGE * 8]), MAX_MESSAGE)
    return f"{where}: {message}" if where else message


class CnntraceError(Exception):
    """Base of every error cnntrace reports to its user instead of a traceback."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None,
                 mentions: tuple[str, ...] = ()):  # fmt: skip
        super().__init__(message)
        self.message = message
        self.key = key
        self.file = file
        self.mentions = tuple(mentions)

    def __str__(self) -> str:
        return self.spelled()

    def spelled(self, spell=None) -> str:
        """The one-line message, ``file: key: message``. ``spell`` (a parameter's name -> how
        the caller names it) spells each parameter the message names as ``{name}`` for a name
        in ``mentions`` (an ArgumentError's key, too)."""
        return _one_line_message(self.file, self.key, self._mentioned(spell or str))

    def _mentioned(self, spell) -> str:
        message = self.message
        for name in self.mentions:
            message = message.replace(f"{{{name}}}", spell(name))
        return message

    def in_file(self, file: str) -> CnntraceError:
        """The same error, now naming the file it came from."""
        self.file = file
        return self


class InputError(CnntraceError):
    """An input value (a key of the input file, or an argument) is missing or wrong."""


class ArgumentError(InputError):
    """An argument of a function is wrong: ``key`` names its parameter (``momentum``), the
    name a caller knows it by (the CLI spells it as its flag). ``message`` names other
    parameters as ``{name}`` for each name in ``mentions``, e.g. "try {level} 2"."""

    def __init__(self, message: str, *, key: str, file: str | None = None, mentions: tuple[str, ...] = ()):
        super().__init__(message, key=key, file=file, mentions=mentions)

    def spelled(self, spell=None) -> str:
        spell = spell or str
        return _one_line_message(self.file, spell(self.key), self._mentioned(spell))


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
