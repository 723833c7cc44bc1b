"""The --html page's explanations, made by its script from each stage's recipe
(layers.base.Recipe) or carried as explain's text, equal ``cnntrace explain``'s text for every
entry of every variant of every row of the per-kind table (tests/kinds.py), on one image and
on a batch. Run by tests/page_script.py: node, else headless chromium, else skipped."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cnntrace.explain import explain_entry, parse_term
from cnntrace.render import View
from cnntrace.render import html as render_html
from cnntrace.render.explanation import render_text
from cnntrace.render.format import number
from cnntrace.tracer import run
from tests.kinds import ALL_CASES
from tests.page_script import call, explanations
from tests.test_kinds import problem_of


@pytest.mark.parametrize("M", [1, 2], ids=["one image", "batch"])
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_the_page_explains_every_entry_as_explain_does(case, M):
    trace = run(problem_of(case, seed=1, M=M))
    for precision in (4, 7):
        (made,) = explanations(render_html.render(trace, View(full=True, precision=precision)))
        shown = {name: np.shape(trace[name]) for name in (stage.name for stage in trace.stages)}
        assert len(made) == sum(int(np.prod(s)) for s in shown.values())
        for term, entry in made.items():
            name, index = parse_term(term)
            assert entry is not None, term
            assert entry["text"] == render_text(explain_entry(trace, name, index), precision), term


def test_the_pages_numbers_are_written_as_step_writes_them():
    # Ties to even on the exact binary value (0.03125 at 4 decimals is 0.0312), scientific
    # notation below half the last decimal and from 10⁷, no negative zero.
    rng = random.Random(0)
    values = [0.03125, -0.03125, 2.5, 3.5, 0.125, 1e-5, -1e-5, 5e-5, 1e7, -1e7, 9999999.99995, -0.0, 0.0, 1e-300,
              5e-324, 1e300, 0.99995, 0.999949999]  # fmt: skip
    for _ in range(500):
        values += [rng.uniform(-1, 1) * 10 ** rng.randint(-12, 9), rng.randint(-10**6, 10**6) / 2 ** rng.randint(0, 20)]
    cases = [[v, p] for v in values for p in (0, 1, 4, 7, 10)]
    assert call("cnntraceNumber", cases) == [number(v, p) for v, p in cases]


def test_the_pages_sum_is_math_fsum():
    rng = random.Random(1)
    cases = []
    for _ in range(500):
        n = rng.randint(0, 200)
        base = [rng.uniform(-1, 1) * 10 ** rng.randint(-20, 16) for _ in range(n)]
        cancelling = base + [-x for x in base] + [rng.uniform(-1e-3, 1e-3)]
        rng.shuffle(cancelling)
        awkward = [rng.choice([1e16, 1.0, -1e16, 2**-52, 0.5, -0.5, 3.0, 1e-300, 2**-1074]) for _ in range(n)]
        cases += [[base], [cancelling], [awkward]]
    assert [float(s) for s in call("cnntraceFsum", cases)] == [math.fsum(c[0]) for c in cases]


def test_the_pages_general_format_is_pythons():
    # f"{x:g}" (the notes' β·Z1[0] = 23.5, α = 0.01): six significant digits, ties to even on
    # the exact binary value, scientific notation below 1e-4 and from 1e6.
    rng = random.Random(2)
    values = [0.01, 1.0, 20.0, 23.45675, 1234565.0, 1234575.0, 999999.5, 9999995.0, 1e-4, 9.999995e-5, 1e6, 0.5, -2.5,
              -0.0, 0.0, 1e300, 5e-324, 123456.5, 0.000123456789]  # fmt: skip
    for _ in range(2000):
        values += [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 9), rng.randint(-10**8, 10**8) / 2 ** rng.randint(0, 8)]
    assert call("cnntraceGeneral", [[v] for v in values]) == [f"{v:g}" for v in values]


def test_the_pages_repr_is_pythons():
    # repr(x) (softmax's "max = 0.1"): the shortest digits that read back, fixed from 1e-4 up
    # to 1e16, with ".0" on a whole number.
    rng = random.Random(3)
    values = [0.0, -0.0, 1.0, -2.5, 0.1, 1e-4, 9.99e-5, 1e-5, 1e15, 1e16, 1234567890123456.0, 12345678901234567.0,
              5e-324, 1.7976931348623157e308, 123.456, 0.30000000000000004]  # fmt: skip
    for _ in range(2000):
        values += [rng.uniform(-1, 1) * 10 ** rng.randint(-20, 20), float(rng.randint(-10**18, 10**18))]
    assert call("cnntraceRepr", [[v] for v in values]) == [repr(v) for v in values]
