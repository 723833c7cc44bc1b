"""Compare hand-computed answers with the trace, entry by entry, and name the mistakes.

An answer passes when |answer − value| ≤ atol + rtol·|value|. The defaults (the ``hand``
preset) accept answers rounded to 4 decimals, including those computed by hand from earlier
rounded results; the ``float64`` preset (rtol 1e-9, atol 1e-12) is for implementations in
double precision diffed against cnntrace.

For each wrong answer ``verify`` tries, in this order:

1. **error carried forward**: the pass resumed from the learner's own earlier wrong answers
   (their P1 → their F → their Z2 …) gives this answer; it names the answers it follows from;
2. **the known mistakes** of each layer kind (``Layer.mistakes``), of the loss (the 1/N left
   out) and of the update (its sign), each made at the stage where it happens with the rest
   of the pass correct (``Network.resume``);
3. **the answer's own form**: the right size with the wrong sign, the matrix transposed.

Every one that reproduces the answer within the tolerance is reported as a ``Diagnosis``.

>>> verdicts = verify(trace, {"Z1[0,1]": 39, "dL_dW1": [[...]], "P1": None})  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np

from cnntrace.errors import ArgumentError
from cnntrace.explain import check_index, parse_term
from cnntrace.text import shape_text, symbol

RTOL, ATOL = 1e-3, 1e-4
#: Named tolerances: ``hand`` for answers worked out by hand, ``float64`` for code.
PRESETS = {"hand": (RTOL, ATOL), "float64": (1e-9, 1e-12)}


@dataclass(frozen=True)
class Wrong:
    index: tuple[int, ...]
    answer: float
    correct: float


@dataclass(frozen=True)
class Diagnosis:
    """Why an answer is wrong: ``id`` is part of the JSON interface ("relu_mask_missing")."""
    id: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """The verdict on one answered name (or one entry of it: ``"Z1[0,1]"``).

    status is "right", "wrong" (some entries off), "shape" (the answer's shape differs),
    "unknown" (no such name), "invalid" (not numbers) or "unanswered" (null); ``message``
    says why for shape, unknown and invalid. ``max_abs_error``, ``max_rel_error`` and
    ``worst`` (the index of the entry farthest out of tolerance) size the difference.
    """
    name: str
    status: str
    entries: int = 0
    wrong: list[Wrong] = field(default_factory=list)
    message: str | None = None
    diagnosis: list[Diagnosis] = field(default_factory=list)
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    worst: tuple[int, ...] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "right"

    @property
    def carried_forward(self) -> bool:
        return any(d.id == "carried_forward" for d in self.diagnosis)


def summary(verdicts) -> dict[str, int]:
    """How many answers are right, wrong, wrong only by an error carried forward, not
    answered, and not judged (shape, unknown, invalid)."""
    counts = {"right": 0, "wrong": 0, "carried_forward": 0, "unanswered": 0, "not_judged": 0}
    for v in verdicts:
        if v.status in ("right", "unanswered"):
            counts[v.status] += 1
        elif v.status == "wrong":
            counts["carried_forward" if v.carried_forward else "wrong"] += 1
        else:
            counts["not_judged"] += 1
    return counts


def passed(verdicts) -> bool:
    """No answer is wrong (one not answered is not counted wrong)."""
    return all(v.status in ("right", "unanswered") for v in verdicts)


# -- one answer ----------------------------------------------------------------------------------


def _within(answer, correct, rtol, atol) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an answer beyond float64 is just wrong
        return np.abs(answer - correct) <= atol + rtol * np.abs(correct)


def _errors(answer, correct, rtol, atol) -> tuple[float, float | None, tuple[int, ...]]:
    """(max |a − c|, max |a − c|/|c| or None where it is infinite, the worst entry's index)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        diff = np.abs(answer - correct)
        rel = np.where(diff == 0, 0.0, diff / np.abs(correct))
        outside = diff / (atol + rtol * np.abs(correct))
    outside = np.where(np.isnan(outside), np.inf, outside)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(outside)), correct.shape)) if correct.ndim else ()
    abs_error, rel_error = float(np.max(diff)), float(np.max(rel))
    return (abs_error if math.isfinite(abs_error) else None), (rel_error if math.isfinite(rel_error) else None), worst


#: (id, message) for the layouts an answer's shape may be in: the axes to put it in cnntrace's.
def _layouts(answer_shape, correct_shape):
    n = len(correct_shape)
    if n == 4:
        yield (0, 3, 1, 2), "layout_nhwc", "in NHWC layout (channels last); cnntrace's is NCHW"
    if n == 3:
        yield (2, 0, 1), "layout_nhwc", "in HWC layout (channels last); cnntrace's is CHW"
    if n == 2:
        yield (1, 0), "transposed", "transposed (n_out×n_in where cnntrace has n_in×n_out)"


def judge(name: str, answer, correct: np.ndarray, rtol: float, atol: float, index=None) -> Verdict:
    """One answer (an array, a number for entry ``index``, None for not answered, or a
    message saying why it is not numbers) against the value."""
    if answer is None:
        return Verdict(name, "unanswered")
    if isinstance(answer, str):
        return Verdict(name, "invalid", message=answer)
    answer = np.asarray(answer, dtype=np.float64)
    if index is not None:
        if answer.size != 1:
            return Verdict(name, "shape", message=f"expected a number (one entry), got {shape_text(answer.shape)}")
        answer, correct = answer.reshape(()), correct[index]
    if answer.shape != correct.shape:
        # A number written as [x], or a vector as a column: the same entries, so accept it.
        if answer.size == correct.size and answer.squeeze().shape == correct.squeeze().shape:
            answer = answer.reshape(correct.shape)
        else:
            return _shape_verdict(name, answer, correct, rtol, atol)
    off = ~_within(answer, correct, rtol, atol)
    if index is not None:
        wrong = [Wrong(index, float(answer), float(correct))] if off else []
    else:
        wrong = [Wrong(i, float(answer[i]), float(correct[i])) for i in np.ndindex(correct.shape) if off[i]]
    abs_error, rel_error, worst = _errors(answer, correct, rtol, atol)
    return Verdict(name, "wrong" if wrong else "right", entries=correct.size, wrong=wrong,
                   max_abs_error=abs_error, max_rel_error=rel_error,
                   worst=index if index is not None else worst)  # fmt: skip


def _shape_verdict(name, answer, correct, rtol, atol) -> Verdict:
    expected, got = (shape_text(a.shape, "a number") for a in (correct, answer))
    message = f"expected {expected}, got {got}"
    diagnosis = []
    for axes, id_, words in _layouts(answer.shape, correct.shape):
        if answer.ndim == len(axes) and np.transpose(answer, axes).shape == correct.shape:
            off = int(np.sum(~_within(np.transpose(answer, axes), correct, rtol, atol)))
            verdict = "every entry is right there" if not off else f"{off} of {correct.size} entries are still wrong there"
            diagnosis.append(Diagnosis(id_, f"your {symbol(name)} is {words}: put in cnntrace's layout, {verdict}"))
    return Verdict(name, "shape", message=message, diagnosis=diagnosis)


# -- all the answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    key: str  # as the file writes it: "dL/dW1[0][1]"
    name: str  # the stage: "dL_dW1"
    index: tuple[int, ...] | None  # one entry, or None for the whole matrix
    value: object  # numbers, None (not answered) or a message


def parse_answers(trace, answers: dict) -> list[Answer]:
    """Each answer's stage and entry; InputError naming the key for a malformed entry."""
    out = []
    for key, value in answers.items():
        if "[" in key:
            name, index = parse_term(key)
            if name in trace:
                check_index(trace, name, index, key)
        else:
            name, index = key.replace("∂", "d").replace("/", "_"), None
        out.append(Answer(key, name, index, value))
    return out


def _unknown(trace, answer: Answer) -> Verdict:
    names = [stage.name for stage in trace.stages]
    guess = difflib.get_close_matches(answer.name, names, n=1)
    hint = f"did you mean {guess[0]}?" if guess else f"the names are {', '.join(names)}"
    return Verdict(answer.key, "unknown", message=f"no matrix is called {answer.name}; {hint}")


def verify(trace, answers: dict, rtol: float = RTOL, atol: float = ATOL) -> list[Verdict]:
    """A verdict for every answer, in the order of the answers, each wrong one with its
    diagnosis. ``answers`` maps step's names (or single entries, "Z1[0,1]") to numbers,
    None (not answered) or a message saying why they are not numbers."""
    parsed = parse_answers(trace, answers)
    verdicts = []
    for answer in parsed:
        if answer.name not in trace:
            verdicts.append(_unknown(trace, answer))
            continue
        verdicts.append(judge(answer.key, answer.value, np.asarray(trace[answer.name]), rtol, atol, answer.index))
    if any(v.status == "wrong" for v in verdicts):
        # A legal input (B2 = 1e200) or answer overflows in a mistake's pass: that pass then
        # reproduces nothing, which is its answer; numpy's warnings would only be noise.
        with np.errstate(all="ignore"):
            doctor = _Doctor(trace, rtol, atol)
            wrong = [(a, v) for a, v in zip(parsed, verdicts) if v.status == "wrong"]
            verdicts = [
                v if v.status != "wrong" else _with(v, doctor.diagnose(a, wrong))
                for a, v in zip(parsed, verdicts)
            ]  # fmt: skip
    return verdicts


def _with(verdict: Verdict, diagnosis: list[Diagnosis]) -> Verdict:
    from dataclasses import replace

    return replace(verdict, diagnosis=diagnosis)


class _Doctor:
    """The passes of every known mistake, made once, and the learner's own earlier answers."""
    def __init__(self, trace, rtol, atol):
        problem = trace.problem
        self.trace, self.problem, self.rtol, self.atol = trace, problem, rtol, atol
        self.network = problem.network
        self.order = {stage.name: i for i, stage in enumerate(problem.stages)}
        self.X, self.target, self.weights = problem.general_X(), problem.general_target, problem.general_weights()
        self.values = {"X": self.X, **self._pass({})}
        self._mistakes = None

    def _pass(self, given: dict) -> dict:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self.network.resume(self.X, self.target, self.weights, self.problem.lr, given)

    def mistakes(self):
        """[(Mistake, its whole pass)], made on first use."""
        if self._mistakes is None:
            made = self.network.mistakes(self.values, self.weights, self.problem.lr, self.problem.M)
            self._mistakes = [(m, self._pass(m.given)) for m in made]
        return self._mistakes

    def _user(self, name, value) -> np.ndarray:
        return self.problem.present(name, value)

    def _reproduces(self, answer: Answer, values: dict) -> bool:
        """Whether ``values`` (a whole pass) gives the answer, and differs from the right one."""
        if answer.name not in values:
            return False
        made, correct = self._user(answer.name, values[answer.name]), np.asarray(self.trace[answer.name])
        given = np.asarray(answer.value, dtype=np.float64)
        if answer.index is not None:
            made, correct, given = made[answer.index], correct[answer.index], given.reshape(())
        else:
            given = given.reshape(correct.shape)
        return bool(np.all(_within(given, made, self.rtol, self.atol)) and
                    not np.all(_within(made, correct, self.rtol, self.atol)))  # fmt: skip

    def _general(self, answers: list[Answer]) -> dict:
        """The learner's answers as stages on the general shapes: single entries put into
        the right matrix."""
        given = {}
        for a in answers:
            right = np.asarray(self.trace[a.name], dtype=np.float64)
            user = given.get(a.name, right.copy())
            value = np.asarray(a.value, dtype=np.float64)
            if a.index is not None:
                user[a.index] = value.reshape(())
            else:
                user = value.reshape(right.shape)
            given[a.name] = user
        return {name: value.reshape(np.shape(self.values[name])) for name, value in given.items()}

    def diagnose(self, answer: Answer, wrong: list) -> list[Diagnosis]:
        carried = self._carried_forward(answer, wrong)
        if carried:
            return [carried]
        here = symbol(answer.name)
        out = []
        for mistake, values in self.mistakes():
            if self._reproduces(answer, values):
                made_at = ", ".join(symbol(n) for n in mistake.given)
                lead = f"your {here} equals " if answer.name in mistake.given else f"your {here} follows from a mistake at {made_at}: "
                text = lead + mistake.message
                if mistake.convention:
                    switch, choice = mistake.convention
                    text += f"; the convention \"{switch}\": {_json(choice)} (input key conventions) gives it"
                if all(d.message != text for d in out):
                    out.append(Diagnosis(mistake.id, text))
        out += self._form(answer)
        return out

    def _carried_forward(self, answer: Answer, wrong: list) -> Diagnosis | None:
        """The learner's earlier wrong answers from which the pass gives this one: the
        fewest of them, found by leaving out each that is not needed, earliest first."""
        here = self.order[answer.name]
        earlier = [a for a, _ in wrong if self.order[a.name] < here]
        if not earlier:
            return None
        if not self._reproduces(answer, self._pass(self._general(earlier))):
            return None
        needed = sorted(earlier, key=lambda a: self.order[a.name])
        for a in list(needed):
            fewer = [b for b in needed if b is not a]
            if fewer and self._reproduces(answer, self._pass(self._general(fewer))):
                needed = fewer
        names = ", ".join(a.key for a in needed)
        return Diagnosis("carried_forward", f"error carried forward: your {symbol(answer.name)} follows correctly "
                         f"from your own earlier answer{'s' * (len(needed) > 1)} {names}")  # fmt: skip

    def _form(self, answer: Answer) -> list[Diagnosis]:
        """The mistakes of the answer's own form: its sign, a transposed matrix."""
        correct = np.asarray(self.trace[answer.name])
        given = np.asarray(answer.value, dtype=np.float64)
        if answer.index is not None:
            correct, given = correct[answer.index], given.reshape(())
        else:
            given = given.reshape(correct.shape)
        out = []
        here = symbol(answer.name)
        if np.all(_within(given, -correct, self.rtol, self.atol)):
            out.append(Diagnosis("sign", f"your {here} has the right size and the wrong sign"))
        if given.ndim == 2 and given.shape[0] == given.shape[1] and np.all(_within(given.T, correct, self.rtol, self.atol)):
            out.append(Diagnosis("transposed", f"your {here} is the right matrix transposed"))
        return out


def _json(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def tolerances(preset: str | None, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """The tolerances of a preset (``hand`` by default), each overridden where given."""
    if preset is not None and preset not in PRESETS:
        raise ArgumentError(f"unknown preset {preset!r}; the presets are {', '.join(PRESETS)}", key="preset")
    base_rtol, base_atol = PRESETS[preset or "hand"]
    return (base_rtol if rtol is None else rtol), (base_atol if atol is None else atol)
