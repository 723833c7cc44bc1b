"""Compare hand-computed answers with the trace, entry by entry.

An answer passes when |answer − value| ≤ atol + rtol·|value|. The defaults accept answers
rounded to 4 decimals, including those computed by hand from earlier rounded results.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from cnntrace.layers import shape_text

RTOL, ATOL = 1e-3, 1e-4


@dataclass(frozen=True)
class Wrong:
    index: tuple[int, ...]
    answer: float
    correct: float


@dataclass(frozen=True)
class Verdict:
    """The verdict on one answered name.

    status is "right", "wrong" (some entries off), "shape" (the answer's shape differs),
    "unknown" (no such name) or "invalid" (not numbers); ``message`` says why for the last three.
    """

    name: str
    status: str
    entries: int = 0
    wrong: list[Wrong] = field(default_factory=list)
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "right"


def judge(name: str, answer, correct: np.ndarray, rtol: float, atol: float) -> Verdict:
    """One answer (an array, or a message saying why it is not one) against the value."""
    if isinstance(answer, str):
        return Verdict(name, "invalid", message=answer)
    answer = np.asarray(answer, dtype=np.float64)
    if answer.shape != correct.shape:
        # A number written as [x], or a vector as a column: the same entries, so accept it.
        if answer.size == correct.size and answer.squeeze().shape == correct.squeeze().shape:
            answer = answer.reshape(correct.shape)
        else:
            expected, got = (shape_text(a.shape, "a number") for a in (correct, answer))
            return Verdict(name, "shape", message=f"expected {expected}, got {got}")
    with np.errstate(over="ignore"):  # an answer off by more than float64 holds is just wrong
        off = np.abs(answer - correct) > atol + rtol * np.abs(correct)
    wrong = [
        Wrong(index, float(answer[index]), float(correct[index]))
        for index in np.ndindex(correct.shape)
        if off[index]
    ]
    return Verdict(name, "wrong" if wrong else "right", entries=correct.size, wrong=wrong)


def verify(trace, answers: dict, rtol: float = RTOL, atol: float = ATOL) -> list[Verdict]:
    """A verdict for every answered name, in the order of the answers."""
    verdicts = []
    for name, answer in answers.items():
        key = name.replace("/", "_")
        if key not in trace:
            names = [stage.name for stage in trace.stages]
            guess = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {guess[0]}?" if guess else f"the names are {', '.join(names)}"
            verdicts.append(Verdict(name, "unknown", message=f"no matrix is called {name}; {hint}"))
            continue
        verdicts.append(judge(name, answer, np.asarray(trace[key]), rtol, atol))
    return verdicts
