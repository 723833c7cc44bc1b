"""A quiz on one trace: ask for each matrix in the derivation's order, judge each answer as
``verify`` does, and keep a record of the session.

The session talks through two functions it is given, ``ask(prompt) -> line | None`` (None:
the input is closed) and ``say(text)``, so the command line decides where prompts go and
tests drive it with a list of lines. A wrong answer shows which entries are off (the values
the learner wrote, not the right ones, so that the next try is still a try) and verify's
diagnosis; ``?`` gives graded hints: first which cells are off (or which entry to start
from) and its formula, then the arithmetic of the first wrong entry without its value (as
``explain`` gives it, the last lines left out); the value comes only with the answer, after
the last try. ``givens`` shows the given numbers. Every try is recorded with its verdict,
its diagnosis and the hints taken before it; the session ends with a recap.

    1/20  Z1 = conv(X, W1) + B1   (4×4)
    > 1 2 3 …
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from cnntrace.errors import one_line, shown
from cnntrace.explain import explain_entry
from cnntrace.render.explanation import render_text
from cnntrace.render.format import number, shape
from cnntrace.verify import ATOL, RTOL, judge, verify

#: The most lines one JSON answer may span, and the most characters one answer may hold (a
#: 1000×1000 matrix typed in full takes about 10 MB): a longer one ends the input.
MAX_ANSWER_LINES = 200
MAX_ANSWER_CHARS = 32 * 2**20
#: What the learner types instead of an answer.
HINT, SKIP, QUIT, GIVENS = "?", {"skip", "!"}, {"quit", "exit", "q"}, {"givens", "given"}
#: How many wrong entries a feedback lists before it says "and N more".
SHOWN_WRONG = 6


def diagnose(trace, name: str, answer, earlier: dict | None = None, *, rtol: float = RTOL,
             atol: float = ATOL) -> list[dict]:  # fmt: skip
    """verify's diagnosis of a wrong ``answer`` to ``name``: [{"id", "message"}, …], empty
    when none fits. ``earlier`` holds the learner's earlier wrong answers ({name: array}),
    so that an answer that follows from them is named ``carried_forward``."""
    verdicts = verify(trace, {**(earlier or {}), name: answer}, rtol=rtol, atol=atol)
    verdict = next(v for v in verdicts if v.name == name)
    return [{"id": d.id, "message": d.message} for d in verdict.diagnosis]


def parse_answer(text: str, shape: tuple[int, ...]):
    """An answer as typed: a JSON value, or numbers separated by spaces or commas in
    row-major order (reshaped to ``shape`` when there are as many). An array, or a message
    saying why the text is not one (echoing at most MAX_SHOWN characters of it)."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            return f"not a JSON value ({error.msg} at character {error.pos + 1})"
        except RecursionError:
            return "not a list of numbers: nested too deeply"
        except ValueError:  # an integer of more digits than Python reads (4300)
            return "not a list of numbers: a number too long to read"
        try:
            array = np.asarray(value, dtype=np.float64)
        except OverflowError:  # an integer beyond float64
            return "numbers only: one is too large for float64"
        except (TypeError, ValueError, RecursionError):
            return "not a rectangular list of numbers"
    else:
        words = [word for word in re.split(r"[\s,;]+", text) if word]
        try:
            array = np.array([float(word) for word in words], dtype=np.float64)
        except ValueError:
            bad = next(word for word in words if not _is_float(word))
            return f"not a number: {shown(bad)}"
        if array.size == int(np.prod(shape, dtype=np.int64)):
            array = array.reshape(shape)
    if not np.all(np.isfinite(array)):
        return "numbers only: no NaN or infinity"
    return array


def _is_float(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def entry_label(symbol: str, index: tuple[int, ...]) -> str:
    return symbol + (f"[{','.join(map(str, index))}]" if index else "")


@dataclass
class Answer:
    """One question's outcome, as the record keeps it."""
    name: str
    answer: list | float | None = None  # the last answer given, in the matrix's shape
    status: str = "unanswered"  # right, wrong (every try used), skipped, unanswered
    diagnosis: list[dict] = field(default_factory=list)
    tries: int = 0
    hints: int = 0  # hints taken on this question
    history: list[dict] = field(default_factory=list)  # every try: answer, status, diagnosis, hints before it

    def record(self) -> dict:
        return {"name": self.name, "answer": self.answer, "status": self.status,
                "diagnosis": self.diagnosis, "tries": self.tries, "hints": self.hints,
                "history": self.history}  # fmt: skip


@dataclass
class Session:
    file: str
    total: int
    answers: list[Answer] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(answer.status == "right" for answer in self.answers)

    def record(self) -> dict:
        return {"file": self.file, "score": self.score, "total": self.total,
                "answers": [answer.record() for answer in self.answers], "recap": recap(self)}  # fmt: skip


def recap(session: Session) -> list[str]:
    """What the session shows a learner at the end: the questions that took several tries or
    hints, and the mistakes that came up (with the matrix where)."""
    lines = []
    for a in session.answers:
        if a.tries > 1 or a.hints or a.status in ("wrong", "skipped"):
            how = {"right": f"right on try {a.tries}", "wrong": f"not right in {a.tries} tries",
                   "skipped": "skipped"}.get(a.status, a.status)  # fmt: skip
            lines.append(f"{a.name}: {how}" + (f", {a.hints} hint{'s' * (a.hints > 1)}" if a.hints else ""))
    seen: dict[str, list[str]] = {}
    for a in session.answers:
        for try_ in a.history:
            for d in try_["diagnosis"]:
                if a.name not in seen.setdefault(d["id"], []):
                    seen[d["id"]].append(a.name)
    lines += [f"mistake {id_} in {', '.join(names)}" for id_, names in seen.items()]
    return lines


def run_quiz(trace, names, ask, say, *, file: str = "", tries: int = 3, precision: int = 4,
             rtol: float = RTOL, atol: float = ATOL, session: Session | None = None,
             show_givens: bool = False) -> Session:  # fmt: skip
    """Ask for each of ``names`` in turn (see the module's docstring); the session so far
    when the input closes or the learner quits. ``session`` is filled as it goes, so a
    caller that is interrupted still has what was answered. The recap ends it."""
    session = session if session is not None else Session(file, len(names))
    say(f"{len(names)} matri{'ces' if len(names) != 1 else 'x'} to compute from {one_line(file) if file else 'the input'}. Type each as numbers in row-major "
        f"order or as JSON; '?' for a hint, 'givens' for the given numbers, 'skip' to see the answer, "
        f"'quit' to stop. {tries} tr{'ies' if tries > 1 else 'y'} each.\n")  # fmt: skip
    if show_givens:
        say(givens_text(trace, precision))
    _ask_all(trace, names, ask, say, session, tries, precision, rtol, atol)
    lines = recap(session)
    if lines:
        say("\nRecap:\n" + "".join(f"  {line}\n" for line in lines))
    return session


def givens_text(trace, precision: int) -> str:
    """The given numbers (X, the target, the weights before the step, lr), as typed back."""
    problem = trace.problem
    out = ["Given:\n"]
    for name, value in problem.inputs.items():
        out.append(f"  {name} =\n{_matrix_text(np.asarray(value, dtype=np.float64), precision)}")
    out.append(f"  lr = {number(problem.lr, precision)}\n")
    return "".join(out)


def _ask_all(trace, names, ask, say, session, tries, precision, rtol, atol) -> None:
    for position, name in enumerate(names, 1):
        stage = trace.stage(name)
        correct = np.asarray(trace[name])
        outcome = Answer(name)
        session.answers.append(outcome)
        say(f"\n{position}/{len(names)}  {stage.symbol} = {stage.equation}   ({shape(correct.shape)})\n")
        last_wrong: tuple[int, ...] | None = None
        wrong_cells: list = []
        hints_now = 0  # hints taken since the last try
        while outcome.tries < tries:
            text = _read_answer(ask, f"{stage.symbol}> ")
            if text is None:
                say("\n(input closed)\n")
                _ended(session, outcome)
                return
            if len(text) > MAX_ANSWER_CHARS:
                say(f"\n(an answer of over {MAX_ANSWER_CHARS // 2**20} MiB, the most one may be: "
                    "the input is not read further)\n")  # fmt: skip
                _ended(session, outcome)
                return
            word = text.strip().lower()
            if not word:
                continue
            if word == HINT:
                index = last_wrong if last_wrong is not None else (0,) * correct.ndim
                outcome.hints += 1
                hints_now += 1
                say(_hint(trace, name, index, precision, hints_now, wrong_cells, stage.symbol))
                continue
            if word in GIVENS:
                say(givens_text(trace, precision))
                continue
            if word in QUIT:
                _ended(session, outcome)
                return
            if word in SKIP:
                outcome.status = "skipped"
                break
            answer = parse_answer(text, correct.shape)
            verdict = judge(name, answer, correct, rtol, atol)
            if verdict.status == "invalid":
                say(f"  {verdict.message}; try again (this does not count as a try)\n")
                continue
            outcome.tries += 1
            if verdict.status == "shape":
                outcome.answer = np.asarray(answer).tolist()
                outcome.history.append({"answer": outcome.answer, "status": "shape", "diagnosis": [],
                                        "hints": hints_now})  # fmt: skip
                hints_now = 0
                say(f"  wrong shape: {verdict.message}\n")
                continue
            given = np.asarray(answer, dtype=np.float64).reshape(correct.shape)
            outcome.answer = given.tolist()
            if verdict.ok:
                outcome.status, outcome.diagnosis = "right", []
                outcome.history.append({"answer": outcome.answer, "status": "right", "diagnosis": [], "hints": hints_now})
                say(f"  right{' on try ' + str(outcome.tries) if outcome.tries > 1 else ''}\n")
                break
            outcome.status = "wrong"
            last_wrong = verdict.wrong[0].index
            wrong_cells = [w.index for w in verdict.wrong]
            earlier = {a.name: np.asarray(a.answer) for a in session.answers[:-1] if a.status == "wrong"}
            outcome.diagnosis = diagnose(trace, name, given, earlier, rtol=rtol, atol=atol)
            outcome.history.append({"answer": outcome.answer, "status": "wrong", "diagnosis": outcome.diagnosis,
                                    "hints": hints_now})  # fmt: skip
            hints_now = 0
            say(_feedback(stage.symbol, verdict, outcome, tries, precision))
        if outcome.status != "right":
            say(f"  the answer: {stage.symbol} =\n{_matrix_text(correct, precision)}")


def _ended(session: Session, outcome: Answer) -> Session:
    """Input closed or the learner quit during ``outcome``: keep it only if it was tried."""
    if outcome.tries == 0 and outcome.status == "unanswered":
        session.answers.pop()
    return session


def _read_answer(ask, prompt: str) -> str | None:
    """One answer: a line, or the lines a JSON value spans until its brackets close."""
    text = ask(prompt)
    if text is None or not text.lstrip().startswith("["):
        return text
    for _ in range(MAX_ANSWER_LINES):
        if text.count("[") <= text.count("]") or len(text) > MAX_ANSWER_CHARS:
            break
        more = ask("... ")
        if more is None:
            break
        text += "\n" + more
    return text


def _feedback(symbol: str, verdict, outcome: Answer, tries: int, precision: int) -> str:

    lines = [f"  wrong: {len(verdict.wrong)} of {verdict.entries} entries"]
    shown = ", ".join(f"{entry_label(symbol, w.index)} = {number(w.answer, precision)}"
                      for w in verdict.wrong[:SHOWN_WRONG])  # fmt: skip
    more = len(verdict.wrong) - SHOWN_WRONG
    lines[0] += f" ({shown}{f', and {more} more' if more > 0 else ''})"
    lines += [f"  it looks like: {d['message']} [{d['id']}]" for d in outcome.diagnosis]
    left = tries - outcome.tries
    if left:
        lines.append(f"  {left} tr{'ies' if left > 1 else 'y'} left; '?' for a hint")
    return "\n".join(lines) + "\n"


def _hint(trace, name: str, index: tuple[int, ...], precision: int, level: int = 2,
          wrong_cells=(), symbol: str = "") -> str:  # fmt: skip
    """A graded hint on entry ``index``: at level 1 which cells are off (``wrong_cells``; or
    which entry to start from) and its formula; from level 2 its arithmetic as ``cnntrace
    explain`` shows it, without the lines that give its value."""
    explained = explain_entry(trace, name, index)
    label = entry_label(symbol or name, index)
    if level <= 1:
        if wrong_cells:
            cells = ", ".join(entry_label(symbol or name, i) for i in wrong_cells[:SHOWN_WRONG])
            more = len(wrong_cells) - SHOWN_WRONG
            head = f"  look again at {cells}{f' and {more} more' if more > 0 else ''}\n"
        else:
            head = f"  start with {label}\n"
        return head + f"  {label} = {explained.formula}\n  ('?' again for its terms)\n"
    lines = render_text(explained, precision).rstrip("\n").splitlines()
    value_lines = [line for line in lines[1:] if line.startswith(f"{explained.label} = ")]
    shown = [line for line in lines if line not in value_lines]
    return "".join(f"  {line}\n" for line in shown) + "  (the value is yours to add up)\n"


def _matrix_text(values: np.ndarray, precision: int) -> str:
    """A matrix as rows of numbers, the way one types it back (leading axes as blocks)."""
    if values.ndim == 0:
        return f"    {number(float(values), precision)}\n"
    rows = values.reshape(-1, values.shape[-1])
    width = max(len(number(float(v), precision)) for v in rows.ravel())
    return "".join("    " + "  ".join(f"{number(float(v), precision):>{width}}" for v in row) + "\n" for row in rows)
