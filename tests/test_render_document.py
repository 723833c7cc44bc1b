"""The document every human-readable renderer formats: one walk over the trace, in the
derivation's order, with what each stage needs taken from its layer's annotation; and the
one mark every format draws in its own way."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from cnntrace import trace_input
from cnntrace.io import load_problem
from cnntrace.render import View, latex, markdown
from cnntrace.render.document import (
    Entry,
    Given,
    Heading,
    Legend,
    document,
    legend_parts,
    legend_text,
    mark_text,
)
from cnntrace.tracer import run
from tests.inputs import REFERENCE
from tests.networks import make

RENDER = Path(__file__).parent.parent / "cnntrace" / "render"


def test_the_document_walks_the_inputs_then_every_stage_in_order():
    trace = run(load_problem(REFERENCE))
    blocks = document(trace).blocks
    headings = [b.section for b in blocks if isinstance(b, Heading)]
    assert headings == ["input", "forward", "backward", "update"]
    assert [b.name for b in blocks if isinstance(b, Given)] == list(trace.problem.inputs)
    entries = [b for b in blocks if isinstance(b, Entry)]
    assert [e.name for e in entries] == [stage.name for stage in trace.stages]
    for entry in entries:
        stage = trace.stage(entry.name)
        assert (entry.symbol, entry.equation, entry.section) == (stage.symbol, stage.equation, stage.section)
        assert entry.matrix.values is trace[entry.name]
    by_name = {e.name: e for e in entries}
    assert by_name["dL_dW2"].derivation.left == "∂L/∂W2"
    assert by_name["Z1"].derivation is None  # a forward stage has no chain rule
    assert by_name["A1"].legend.meaning == trace.annotations["A1"].legend
    assert by_name["A1"].before == trace.annotations["A1"].before


def test_brief_keeps_the_marks_and_drops_the_prose():
    trace = run(load_problem(REFERENCE))
    full = {b.name: b for b in document(trace).blocks if isinstance(b, Entry)}
    brief = {b.name: b for b in document(trace, View(brief=True)).blocks if isinstance(b, Entry)}
    assert np.array_equal(brief["A1"].matrix.marks, full["A1"].matrix.marks)
    for entry in brief.values():
        assert (entry.derivation, entry.before, entry.after, entry.legend, entry.extra) == (None, (), (), None, None)


def test_only_leaves_out_the_inputs_unless_asked():
    trace = run(load_problem(REFERENCE))
    view = View(only=("P1", "dL_dW1"))
    assert [b.name for b in document(trace, view).blocks if isinstance(b, Entry)] == ["P1", "dL_dW1"]
    assert not any(isinstance(b, Given) for b in document(trace, view).blocks)
    assert any(isinstance(b, Given) for b in document(trace, view, givens=True).blocks)


def test_a_window_count_reads_the_same_in_every_format():
    trace = trace_input(make("overlapping-padded-pools"))
    marked = [b for b in document(trace).blocks if isinstance(b, Entry) and b.legend]
    assert marked
    legend = marked[0].legend  # overlapping 3×3 windows: a cell can win up to nine
    assert legend.counts == (2, 3, 4, 6, 9) == tuple(np.unique(marked[0].matrix.marks[marked[0].matrix.marks > 1]))
    assert legend_parts(legend, every_count=True)[2].endswith("*9: won nine windows")
    assert [mark_text(n) for n in (0, 1, 2)] == ["", "*", "*2"]
    assert [markdown.mark(n) for n in (0, 1, 2)] == ["", "\\*", "\\*2"]
    assert [latex.mark(n) for n in (0, 1, 2)] == ["", "^{*}", "^{*2}"]
    several = Legend("won its pool window", (2, 4), "won {n} windows")
    assert legend_text(several) == "* won its pool window (*2: won two windows)"
    assert legend_parts(several, markdown.mark, every_count=True)[2] == "\\*2: won two windows, \\*4: won four windows"


def test_no_renderer_imports_another_ones_private_helpers():
    for path in RENDER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnntrace.render"):
                private = [alias.name for alias in node.names if alias.name.startswith("_") and alias.name != "__future__"]
                assert not private, f"{path.name} imports {private} from {node.module}"
