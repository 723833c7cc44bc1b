"""Compare hand-computed answers with the trace, entry by entry, and name the mistakes.

How far an answer may be from a value is a ``Tolerance``:

- **rounding** (the ``hand`` preset): the learner rounds every stage to d decimals (given,
  or read from the answers: ``written_decimals``). An entry of a stage is right when it is
  within h·(1 + a) of the value, h = ½·10^−d being the learner's own rounding and a·h that
  of the stages it is computed from, propagated through this stage: a = Σ |∂out/∂in| over
  the entries it reads directly (``amplification``). An answer is judged against the true
  value and, when that fails, against what the pass gives from the learner's own earlier
  answers that were judged right: "right from your rounded answers".
- **scaled** (the ``float64`` and ``float32`` presets, torch.testing's rtol and atol):
  |answer − value| ≤ rtol·|value| + atol·s, s the largest |entry| of the right matrix, so
  that a matrix of small gradients with its sign flipped never passes.
- **fixed** (``--rtol``/``--atol``): |answer − value| ≤ atol + rtol·|value|.

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

from cnntrace.errors import ArgumentError, InputError
from cnntrace.explain import check_index, parse_term
from cnntrace.naming import grad
from cnntrace.text import shape_text, symbol

RTOL, ATOL = 1e-3, 1e-4
#: Named tolerances: ``hand`` for answers worked out by hand (rounding; RTOL and ATOL are
#: what --rtol or --atol alone leaves the other at), ``float64`` and ``float32`` for code,
#: with torch.testing.assert_close's rtol and atol for those dtypes (atol scaled).
PRESETS = {"hand": (RTOL, ATOL), "float64": (1e-7, 1e-7), "float32": (1.3e-6, 1e-5)}
#: The decimals assumed when the answers show none (every answer a whole number): the
#: sheets' "four decimals are enough".
DEFAULT_DECIMALS = 4
#: The most decimals a learner is taken to have rounded to (float64 has about 16).
MAX_DECIMALS = 15
#: Float64's own noise in a value computed in another order: relative, and never below this.
NOISE = 1e-9
#: The most entries (of all the stages) whose rounding ``amplification`` propagates: it
#: resumes the pass twice an entry. Beyond, no answer worked by hand, and none propagated.
MAX_AMPLIFIED = 3000


@dataclass(frozen=True)
class Tolerance:
    """How far an answer may be from a value (see the module's docstring).

    mode is "rounding" (``decimals`` the learner rounded to), "scaled" or "fixed" (``rtol``,
    ``atol``)."""

    mode: str
    rtol: float = 0.0
    atol: float = 0.0
    decimals: int | None = None

    @classmethod
    def rounding(cls, decimals: int) -> Tolerance:
        return cls("rounding", decimals=decimals)

    @classmethod
    def fixed(cls, rtol: float = RTOL, atol: float = ATOL) -> Tolerance:
        return cls("fixed", rtol=rtol, atol=atol)

    @property
    def half_unit(self) -> float:
        return 0.5 * 10.0 ** -self.decimals

    def bound(self, value, amplification=None) -> np.ndarray:
        """The largest |answer − value| accepted for each entry of the matrix ``value``;
        ``amplification`` (rounding only): Σ|∂out/∂in| of each entry, 0 where None."""
        value = np.abs(np.asarray(value, dtype=np.float64))
        with np.errstate(over="ignore", invalid="ignore"):
            if self.mode == "fixed":
                return self.atol + self.rtol * value
            if self.mode == "scaled":
                scale = float(np.max(value)) if value.size else 0.0
                return self.rtol * value + self.atol * (scale if scale > 0 and math.isfinite(scale) else 1.0)
            spread = 1.0 if amplification is None else 1.0 + np.asarray(amplification)
            return self.half_unit * spread + NOISE * np.maximum(value, 1.0)

    def settings(self) -> dict:
        """How the verdicts' JSON and table state it."""
        if self.mode == "rounding":
            return {"tolerance": "rounding", "decimals": self.decimals, "rtol": None, "atol": None}
        return {"tolerance": self.mode, "rtol": self.rtol, "atol": self.atol}

    def text(self) -> str:
        """One sentence for the table's foot."""
        if self.mode == "rounding":
            return (f"An entry is right when it is within the rounding to {self.decimals} decimals "
                    f"(±{self.half_unit:g}) of the value, plus that rounding of the stages it is "
                    "computed from, propagated through this one; judged against the true value, "
                    "then against the value from your own earlier answers that were right.")  # fmt: skip
        if self.mode == "scaled":
            return (f"An entry is right when |answer − correct| ≤ {self.rtol:g}·|correct| + "
                    f"{self.atol:g}·(the largest |entry| of the matrix).")  # fmt: skip
        return f"An entry is right when |answer − correct| ≤ {self.atol:g} + {self.rtol:g}·|correct|."


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

    status is "right" (``from_your_answers`` when only from the learner's own earlier rounded
    answers), "wrong" (some entries off), "shape" (the answer's shape differs),
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
    #: Right only against the pass from the learner's own earlier (rounded) answers.
    from_your_answers: bool = False

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


def _within(answer, correct, bound) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an answer beyond float64 is just wrong
        return np.abs(answer - correct) <= bound


def _errors(answer, correct, bound) -> tuple[float, float | None, tuple[int, ...]]:
    """(max |a − c|, max |a − c|/|c| or None where it is infinite, the worst entry's index)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        diff = np.abs(answer - correct)
        rel = np.where(diff == 0, 0.0, diff / np.abs(correct))
        outside = np.where(diff == 0, 0.0, diff / bound)
    outside = np.where(np.isnan(outside), np.inf, outside)
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(outside)), correct.shape)) if correct.ndim else ()
    abs_error, rel_error = float(np.max(diff)), float(np.max(rel))
    return (abs_error if math.isfinite(abs_error) else None), (rel_error if math.isfinite(rel_error) else None), worst


#: (id, message) for the layouts an answer's shape may be in: the axes to put it in cnntrace's.
def _layouts(answer_shape, correct_shape):
    n = len(correct_shape)
    if n == 4:
        yield (0, 3, 1, 2), "layout_nhwc", "in NHWC layout (channels last); cnntrace's is NCHW"
        yield (3, 2, 0, 1), "layout_hwio", "in TensorFlow's HWIO layout (kh×kw×C×K); cnntrace's is PyTorch's K×C×kh×kw"
    if n == 3:
        yield (2, 0, 1), "layout_nhwc", "in HWC layout (channels last); cnntrace's is CHW"
    if n == 2:
        yield (1, 0), "transposed", "transposed (n_out×n_in where cnntrace has n_in×n_out)"


def judge(name: str, answer, correct: np.ndarray, rtol: float, atol: float, index=None) -> Verdict:
    """One answer (an array, a number for entry ``index``, None for not answered, or a
    message saying why it is not numbers) against the value, |a − c| ≤ atol + rtol·|c|."""
    return judge_within(name, answer, correct, Tolerance.fixed(rtol, atol).bound(correct), index)


def judge_within(name: str, answer, correct: np.ndarray, bound: np.ndarray, index=None,
                 also=None) -> Verdict:  # fmt: skip
    """``judge`` with the bound of each entry of ``correct`` given; ``also``: a second value
    (the pass from the learner's own earlier answers) an entry may be within instead, which
    makes a right verdict ``from_your_answers``."""
    correct, bound = np.asarray(correct), np.broadcast_to(np.asarray(bound, dtype=np.float64), np.shape(correct))
    if answer is None:
        return Verdict(name, "unanswered")
    if isinstance(answer, str):
        return Verdict(name, "invalid", message=answer)
    answer = np.asarray(answer, dtype=np.float64)
    if index is not None:
        if answer.size != 1:
            return Verdict(name, "shape", message=f"expected a number (one entry), got {shape_text(answer.shape)}")
        answer, correct, bound = answer.reshape(()), correct[index], bound[index]
        also = None if also is None else np.asarray(also)[index]
    if answer.shape != correct.shape:
        # A number written as [x], or a vector as a column: the same entries, so accept it.
        if answer.size == correct.size and answer.squeeze().shape == correct.squeeze().shape:
            answer = answer.reshape(correct.shape)
        else:
            return _shape_verdict(name, answer, correct, bound)
    off = ~_within(answer, correct, bound)
    from_yours = False
    if also is not None and np.any(off):
        mine = _within(answer, also, bound)
        from_yours = bool(np.any(off & mine)) and not np.any(off & ~mine)
        off = off & ~mine
    if index is not None:
        wrong = [Wrong(index, float(answer), float(correct))] if off else []
    else:
        wrong = [Wrong(i, float(answer[i]), float(correct[i])) for i in np.ndindex(correct.shape) if off[i]]
    abs_error, rel_error, worst = _errors(answer, correct, bound)
    return Verdict(name, "wrong" if wrong else "right", entries=correct.size, wrong=wrong,
                   max_abs_error=abs_error, max_rel_error=rel_error,
                   worst=index if index is not None else worst, from_your_answers=from_yours)  # fmt: skip


def _shape_verdict(name, answer, correct, bound) -> Verdict:
    expected, got = (shape_text(a.shape, "a number") for a in (correct, answer))
    message = f"expected {expected}, got {got}"
    diagnosis = []
    for axes, id_, words in _layouts(answer.shape, correct.shape):
        if answer.ndim == len(axes) and np.transpose(answer, axes).shape == correct.shape:
            off = int(np.sum(~_within(np.transpose(answer, axes), correct, bound)))
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
    transposed: bool = False  # given as PyTorch keeps it (nn.Linear's out×in): reported so


def parse_answers(trace, answers: dict) -> list[Answer]:
    """Each answer's stage and entry; InputError naming the key for a malformed entry. A
    key that is one of PyTorch's parameter names the input file maps (``torch_names``:
    "0.weight" to W1) is that weight's gradient, dL_dW1, transposed back where nn.Linear
    keeps it out×in."""
    out = []
    torch_names = trace.problem.torch_names
    for key, value in answers.items():
        torch_name, bracket, rest = key.partition("[")
        if torch_name in torch_names:
            weight, transposed = torch_names[torch_name].removesuffix(".T"), torch_names[torch_name].endswith(".T")
            index = None
            if bracket:  # one entry, at PyTorch's index: cnntrace's turned where the weight is
                written = parse_term(f"{grad(weight)}[{rest}")[1]
                shape = np.shape(trace[grad(weight)])[:: -1 if transposed else 1]
                if len(written) != len(shape) or any(i >= n for i, n in zip(written, shape)):
                    layout = " (PyTorch's n_out×n_in)" if transposed else ""
                    raise InputError(f"{torch_name}'s gradient is {shape_text(shape)}{layout}: indices "
                                     f"{', '.join(f'0..{n - 1}' for n in shape)}; got [{rest}", key=key)  # fmt: skip
                index = written[:: -1 if transposed else 1]
            elif transposed and value is not None and not isinstance(value, str):
                value = np.asarray(value).T
            out.append(Answer(key, grad(weight), index, value, transposed))
            continue
        if "[" in key:
            name, index = parse_term(key)
            if name in trace:
                check_index(trace, name, index, key)
        else:
            name, index = key.replace("∂", "d").replace("/", "_"), None
        out.append(Answer(key, name, index, value))
    seen: dict[tuple, str] = {}
    for answer in out:  # Z1[0,1] and Z1[0][1], dL_dW1 and fc1.weight: one answer each
        first = seen.setdefault((answer.name, answer.index), answer.key)
        if first != answer.key:
            raise InputError(f"answers the same {'entry' if answer.index else 'matrix'} as {first}; give it once",
                             key=answer.key)  # fmt: skip
    return out


def _unknown(trace, answer: Answer) -> Verdict:
    names = [stage.name for stage in trace.stages]
    torch_names = list(trace.problem.torch_names)
    guess = difflib.get_close_matches(answer.name, names + torch_names, n=1)
    hint = f"did you mean {guess[0]}?" if guess else f"the names are {', '.join(names)}"
    if not guess and torch_names:
        hint += f", and PyTorch's {', '.join(torch_names)} (its gradients)"
    elif not guess and "." in answer.name:  # fc.weight: PyTorch's name, which the file does not map
        hint += "; a PyTorch parameter's name is known where the input's torch_names maps it"
    return Verdict(answer.key, "unknown", message=f"no matrix is called {answer.name}; {hint}")


def written_decimals(value: float) -> int:
    """The decimals ``value`` was written with, as its shortest repr shows them (0.0730 was
    written 0.073: a trailing zero is lost)."""
    if not math.isfinite(value) or value == int(value):
        return 0
    text = repr(float(value)).lstrip("-")
    mantissa, _, exponent = text.partition("e")
    digits = len(mantissa.partition(".")[2].rstrip("0"))
    return max(0, digits - int(exponent or 0))


def decimals_of(answers: dict) -> int:
    """The decimals the learner rounded to, read from the answers' entries that are not
    whole numbers: the most that at least a tenth of them show (values exact at fewer
    decimals, and trailing zeros, show fewer; a stray long number is not a habit).
    DEFAULT_DECIMALS when every entry is whole; at most MAX_DECIMALS."""
    counts: dict[int, int] = {}
    for value in answers.values():
        if value is None or isinstance(value, str):
            continue
        for entry in np.asarray(value, dtype=np.float64).ravel():
            if math.isfinite(entry) and entry != int(entry):
                d = min(written_decimals(float(entry)), MAX_DECIMALS)
                counts[d] = counts.get(d, 0) + 1
    if not counts:
        return DEFAULT_DECIMALS
    enough = max(1, sum(counts.values()) // 10)
    return max(d for d, n in counts.items() if n >= enough)


def amplification(trace) -> dict[str, np.ndarray]:
    """{stage: Σ|∂stage/∂in| over the entries of the stages it reads directly} in the
    user's shapes: how much the rounding of what a stage is computed from moves it.

    Every stage is given at its true value and the pass resumed with one entry moved a
    little each way (Network.resume's ``computed``); the smaller of the two moves counts,
    so a tie in a pool window (a kink) is not taken for a jump. X and the weights are
    exact and move nothing. A pass of more than MAX_AMPLIFIED entries gets {}: each answer
    is then held to its own rounding alone."""
    problem = trace.problem
    network = problem.network
    X, target, weights = problem.general_X(), problem.general_target, problem.general_weights()
    names = [stage.name for stage in problem.stages]

    def computed(given: dict) -> dict:
        out: dict = {}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            network.resume(X, target, weights, problem.lr, given, computed=out)
        return out

    true = {}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        true = network.resume(X, target, weights, problem.lr, {})
    given = {name: np.array(true[name], dtype=np.float64) for name in names if name in true}
    if sum(np.size(value) for value in given.values()) > MAX_AMPLIFIED:
        return {}
    base = computed(given)
    total = {name: np.zeros(np.shape(true[name])) for name in given}
    rng = np.random.default_rng(0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # inf − inf: no slope
        _slopes(given, base, total, computed, rng)
    return {name: np.asarray(problem.present(name, value)) for name, value in total.items()}


def _slopes(given: dict, base: dict, total: dict, computed, rng) -> None:
    """Add to ``total`` each stage's Σ|∂stage/∂in| over the entries of every stage it reads
    (see amplification)."""
    for moved, value in given.items():
        # First the whole stage at once: a stage nothing reads (dL/dX) costs one pass.
        step = 1e-6 * np.maximum(1.0, np.abs(value))
        shaken = computed({**given, moved: value + step * rng.uniform(0.5, 1.0, np.shape(value))})
        readers = [n for n in given if n != moved and n in base and not np.array_equal(shaken[n], base[n])]
        if not readers:
            continue
        for index in np.ndindex(np.shape(value)):
            slopes = []
            for sign in (1.0, -1.0):
                nudged = value.copy()
                nudged[index] += sign * step[index]
                after = computed({**given, moved: nudged})
                slopes.append({n: np.abs(after[n] - base[n]) / step[index] for n in readers})
            for n in readers:
                total[n] = total[n] + np.nan_to_num(np.minimum(slopes[0][n], slopes[1][n]), nan=np.inf)


def verify(trace, answers: dict, rtol: float = RTOL, atol: float = ATOL, *,
           tolerance: Tolerance | None = None, amplified: dict | None = None) -> list[Verdict]:  # fmt: skip
    """A verdict for every answer, in the order of the answers, each wrong one with its
    diagnosis. ``answers`` maps step's names (or single entries, "Z1[0,1]") to numbers,
    None (not answered) or a message saying why they are not numbers.

    ``tolerance`` (default: fixed, ``rtol`` and ``atol``); under rounding, ``amplified`` is
    the trace's ``amplification`` when already made (a class on one exercise)."""
    tolerance = tolerance or Tolerance.fixed(rtol, atol)
    if tolerance.mode == "rounding" and amplified is None:
        amplified = amplification(trace)
    judge_ = _Judge(trace, tolerance, amplified or {})
    parsed = parse_answers(trace, answers)
    verdicts: list = [None] * len(parsed)
    order = judge_.order
    accepted: list[Answer] = []
    # In the pass's order, so that an answer can be judged from the earlier ones found right.
    for position in sorted(range(len(parsed)), key=lambda i: order.get(parsed[i].name, -1)):
        answer = parsed[position]
        if answer.name not in trace:
            verdicts[position] = _unknown(trace, answer)
            continue
        verdict = judge_.judge(answer, accepted)
        verdicts[position] = verdict
        if verdict.status == "right":
            accepted.append(answer)
    if any(v.status == "wrong" for v in verdicts):
        # A legal input (B2 = 1e200) or answer overflows in a mistake's pass: that pass then
        # reproduces nothing, which is its answer; numpy's warnings would only be noise.
        with np.errstate(all="ignore"):
            doctor = _Doctor(judge_, accepted)
            wrong = [(a, v) for a, v in zip(parsed, verdicts) if v.status == "wrong"]
            verdicts = [
                v if v.status != "wrong" else _with(v, doctor.diagnose(a, wrong, accepted))
                for a, v in zip(parsed, verdicts)
            ]  # fmt: skip
    return [_as_given(v, a, trace[a.name]) if a.transposed else v for a, v in zip(parsed, verdicts)]


def _with(verdict: Verdict, diagnosis: list[Diagnosis]) -> Verdict:
    from dataclasses import replace

    return replace(verdict, diagnosis=diagnosis)


def _as_given(verdict: Verdict, answer: Answer, correct) -> Verdict:
    """A verdict on a matrix given transposed (PyTorch's out×in): its entries' indices, and a
    wrong shape's message, as the answer wrote them (``correct``: the value, cnntrace's
    n_in×n_out)."""
    from dataclasses import replace

    # Its indices, in its order, and its name where a diagnosis says "your dL/dW2".
    turned = sorted((Wrong(wrong.index[::-1], wrong.answer, wrong.correct) for wrong in verdict.wrong),
                    key=lambda wrong: wrong.index)  # fmt: skip
    worst = verdict.worst[::-1] if verdict.worst is not None else None
    if verdict.status != "shape":
        named = [Diagnosis(d.id, d.message.replace(f"your {symbol(answer.name)}", f"your {answer.key}"))
                 for d in verdict.diagnosis]  # fmt: skip
        return replace(verdict, wrong=turned, worst=worst, diagnosis=named)
    expected, written = (shape_text(np.shape(m)[::-1], "a number") for m in (correct, answer.value))
    # The one layout a transposed answer's shape can be in: cnntrace's own, n_in×n_out.
    diagnosis = [Diagnosis(d.id, f"your {answer.key} is in cnntrace's layout (n_in×n_out, as {symbol(answer.name)} is "
                                 f"shown) where PyTorch keeps nn.Linear's weight n_out×n_in: transposed, "
                                 f"{d.message.rsplit(', ', 1)[1]}")
                 for d in verdict.diagnosis if d.id == "transposed"]  # fmt: skip
    return replace(verdict, message=f"expected {expected} (PyTorch's n_out×n_in), got {written}", diagnosis=diagnosis)


class _Judge:
    """The pass, its tolerance, and the passes from a learner's own answers."""

    def __init__(self, trace, tolerance: Tolerance, amplified: dict):
        problem = trace.problem
        self.trace, self.problem, self.tolerance, self.amplified = trace, problem, tolerance, amplified
        self.network = problem.network
        self.order = {stage.name: i for i, stage in enumerate(problem.stages)}
        self.X, self.target, self.weights = problem.general_X(), problem.general_target, problem.general_weights()
        self.values = {"X": self.X, **self.pass_({})}

    def pass_(self, given: dict) -> dict:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return self.network.resume(self.X, self.target, self.weights, self.problem.lr, given)

    def bound(self, name: str, value, tolerance: Tolerance | None = None, evenly: bool = False) -> np.ndarray:
        """Each entry's bound around ``value``, a matrix of stage ``name`` (user's shape).
        ``evenly``: every entry amplified as the most amplified one is, for a mistake's pass
        whose entries read other inputs than the right pass's (a gradient sent to every
        cell of a pool window where the right one goes to its maximum alone)."""
        amplified = self.amplified.get(name)
        if evenly and amplified is not None and np.size(amplified):
            amplified = np.full(np.shape(amplified), np.max(amplified))
        return (tolerance or self.tolerance).bound(value, amplified)

    def general(self, answers: list[Answer]) -> dict:
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

    def user(self, name, value) -> np.ndarray:
        return np.asarray(self.problem.present(name, value))

    def judge(self, answer: Answer, accepted: list[Answer]) -> Verdict:
        correct = np.asarray(self.trace[answer.name])
        bound = self.bound(answer.name, correct)
        verdict = judge_within(answer.key, answer.value, correct, bound, answer.index)
        if verdict.status != "wrong" or self.tolerance.mode != "rounding":
            return verdict
        earlier = [a for a in accepted if self.order[a.name] < self.order[answer.name]]
        if not earlier:
            return verdict
        yours = self.user(answer.name, self.pass_(self.general(earlier))[answer.name])
        return judge_within(answer.key, answer.value, correct, bound, answer.index, also=yours)


class _Doctor:
    """The passes of every known mistake, made once, and the learner's own earlier answers."""

    def __init__(self, judge_: _Judge, accepted: list | None = None):
        self.j = judge_
        self.trace, self.problem, self.order = judge_.trace, judge_.problem, judge_.order
        self.accepted = accepted or []
        self._mistakes = None

    def mistakes(self):
        """[(Mistake, its whole pass)], made on first use: each made from the learner's own
        answers judged right (the true values where they gave none), and resumed from those
        that come before it, as the learner went on."""
        if self._mistakes is None:
            j = self.j
            given = j.general(self.accepted)
            values = {"X": j.X, **j.pass_(given)} if given else j.values
            made = j.network.mistakes(values, j.weights, self.problem.lr, self.problem.M)
            self._mistakes = []
            for m in made:
                first = min(self.order.get(name, 0) for name in m.given)
                before = j.general([a for a in self.accepted if self.order[a.name] < first])
                self._mistakes.append((m, j.pass_({**before, **m.given})))
        return self._mistakes

    def _pick(self, answer: Answer, *matrices):
        """The answer and ``matrices`` (user's shape) at the answer's entry, or whole."""
        given = np.asarray(answer.value, dtype=np.float64)
        if answer.index is not None:
            return (given.reshape(()), *(np.asarray(m)[answer.index] for m in matrices))
        return (given.reshape(np.shape(matrices[0])), *matrices)

    def _reproduces(self, answer: Answer, values: dict) -> bool:
        """Whether ``values`` (a whole pass) gives the answer, and differs from the right one."""
        if answer.name not in values:
            return False
        correct = np.asarray(self.trace[answer.name])
        made = self.j.user(answer.name, values[answer.name])
        bound = self.j.bound(answer.name, correct, evenly=True)
        given, made, correct, bound = self._pick(answer, made, correct, bound)
        return bool(np.all(_within(given, made, bound)) and not np.all(_within(made, correct, bound)))

    def diagnose(self, answer: Answer, wrong: list, accepted: list) -> list[Diagnosis]:
        carried = self._carried_forward(answer, wrong, accepted)
        if carried:
            return [carried]
        precision = self._precision(answer)
        if precision:
            return [precision]
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

    def _precision(self, answer: Answer) -> Diagnosis | None:
        """Under rounding: the answer, written with fewer decimals than asked, is the right
        value rounded to those."""
        tolerance = self.j.tolerance
        if tolerance.mode != "rounding":
            return None
        entries = np.asarray(answer.value, dtype=np.float64).ravel()
        fewer = max((written_decimals(float(e)) for e in entries if math.isfinite(e)), default=0)
        if fewer >= tolerance.decimals:
            return None
        correct = np.asarray(self.trace[answer.name])
        bound = self.j.bound(answer.name, correct, Tolerance.rounding(fewer))
        given, right, bound = self._pick(answer, correct, bound)
        if not np.all(_within(given, right, bound)):
            return None
        return Diagnosis("precision", f"your {symbol(answer.name)} is right to {fewer} decimal"
                         f"{'s' * (fewer != 1)} only; {tolerance.decimals} were asked")  # fmt: skip

    def _carried_forward(self, answer: Answer, wrong: list, accepted: list) -> Diagnosis | None:
        """The learner's earlier wrong answers from which the pass gives this one (with
        their earlier answers judged right): the fewest of them, found by leaving out each
        that is not needed, earliest first."""
        here = self.order[answer.name]
        earlier = [a for a, _ in wrong if self.order[a.name] < here]
        if not earlier:
            return None
        right = [a for a in accepted if self.order[a.name] < here]
        if not self._reproduces(answer, self.j.pass_(self.j.general(right + earlier))):
            return None
        needed = sorted(earlier, key=lambda a: self.order[a.name])
        for a in list(needed):
            fewer = [b for b in needed if b is not a]
            if fewer and self._reproduces(answer, self.j.pass_(self.j.general(right + fewer))):
                needed = fewer
        names = ", ".join(a.key for a in needed)
        return Diagnosis("carried_forward", f"error carried forward: your {symbol(answer.name)} follows correctly "
                         f"from your own earlier answer{'s' * (len(needed) > 1)} {names}")  # fmt: skip

    def _form(self, answer: Answer) -> list[Diagnosis]:
        """The mistakes of the answer's own form: its sign, a transposed matrix."""
        correct = np.asarray(self.trace[answer.name])
        given, correct, bound = self._pick(answer, correct, self.j.bound(answer.name, correct))
        out = []
        here = symbol(answer.name)
        if np.any(correct != 0) and np.all(_within(given, -correct, bound)):
            out.append(Diagnosis("sign", f"your {here} has the right size and the wrong sign"))
        if given.ndim == 2 and given.shape[0] == given.shape[1] and np.all(_within(given.T, correct, bound)):
            out.append(Diagnosis("transposed", f"your {here} is the right matrix transposed"))
        return out


def _json(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def tolerances(preset: str | None, rtol: float | None, atol: float | None) -> tuple[float, float]:
    """The rtol and atol of a preset (``hand`` by default), each overridden where given."""
    if preset is not None and preset not in PRESETS:
        raise ArgumentError(f"unknown preset {preset!r}; the presets are {', '.join(PRESETS)}", key="preset")
    base_rtol, base_atol = PRESETS[preset or "hand"]
    return (base_rtol if rtol is None else rtol), (base_atol if atol is None else atol)


def tolerance(preset: str | None, rtol: float | None = None, atol: float | None = None,
              decimals: int | None = None, answers: dict | None = None) -> Tolerance:  # fmt: skip
    """The Tolerance asked for: ``hand`` (the default) rounds to ``decimals``, or to those
    the ``answers`` were written with; float64 and float32 are scaled; an rtol or atol given
    makes it fixed, the preset's value standing for the other."""
    if decimals is not None and (preset not in (None, "hand") or rtol is not None or atol is not None):
        raise ArgumentError("decimals are the hand preset's; leave out rtol and atol", key="decimals")
    if decimals is not None and not 0 <= decimals <= MAX_DECIMALS:
        raise ArgumentError(f"must be a whole number from 0 to {MAX_DECIMALS}, got {decimals}", key="decimals")
    base_rtol, base_atol = tolerances(preset, None, None)
    if rtol is not None or atol is not None:
        return Tolerance.fixed(base_rtol if rtol is None else rtol, base_atol if atol is None else atol)
    if preset in (None, "hand"):
        return Tolerance.rounding(decimals if decimals is not None else decimals_of(answers or {}))
    return Tolerance("scaled", rtol=base_rtol, atol=base_atol)
