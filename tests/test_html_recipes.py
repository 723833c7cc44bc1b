"""The --html page's explanations, made by its script from each stage's recipe
(layers.base.Recipe) or carried as explain's text, equal ``cnntrace explain``'s text for every
entry of every variant of every row of the per-kind table (tests/kinds.py), on one image and
on a batch. Run by tests/page_script.py: node, else headless chromium, else skipped."""

from __future__ import annotations

import numpy as np
import pytest

from cnntrace.explain import explain_entry, parse_term
from cnntrace.render import View
from cnntrace.render import html as render_html
from cnntrace.render.explanation import render_text
from cnntrace.tracer import run
from tests.kinds import ALL_CASES
from tests.page_script import explanations
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
