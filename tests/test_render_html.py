"""The --html explorer page, read from Python: every entry with its TERM and value, the
explanations its script makes (explain's text, its last line the value step shows; run by
tests/page_script.py), the cells each one reads, the marks, the summaries of large matrices,
and that nothing is fetched."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.api import trace_input
from cnntrace.cli import app
from cnntrace.explain import explain_entry
from cnntrace.io import load_problem
from cnntrace.render import View
from cnntrace.render import html as render_html
from cnntrace.render.explanation import render_text
from cnntrace.render.format import number
from cnntrace.tracer import run
from tests.inputs import REFERENCE, SAMPLES, reference, write
from tests.networks import IDS, make
from tests.page_script import drawn, explanations

SOFTMAX = SAMPLES / "rgb-softmax.json"
runner = CliRunner()


class Page(HTMLParser):
    """The cells of a page (data-term / data-input: text and classes) and its JSON data."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.terms: dict[str, tuple[str, str]] = {}
        self.inputs: dict[str, tuple[str, str]] = {}
        self.duplicates: list[str] = []
        self.data: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self._cell = None
        self._text: list[str] = []
        self._json = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "data-term" in attrs or "data-input" in attrs:
            self._cell = (attrs, [])
        if tag == "script" and "page-data" in (attrs.get("class") or ""):
            self._json, self._text = True, []

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("td", "span"):
            attrs, text = self._cell
            kind, table = ("data-term", self.terms) if "data-term" in attrs else ("data-input", self.inputs)
            if attrs[kind] in table:
                self.duplicates.append(attrs[kind])
            table[attrs[kind]] = ("".join(text), attrs.get("class") or "")
            self._cell = None
        if tag == "script" and self._json:
            self.data.append(json.loads("".join(self._text)))
            self._json = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)
        if self._json:
            self._text.append(data)


def _inner_marks(text: str) -> str:
    # The mark span sits inside a cell: close it without closing the cell.
    return text.replace('<span class="mark">', '<b class="mark">').replace("</span></td>", "</b></td>")


def parse(text: str) -> Page:
    return Page(_inner_marks(text))


def key(name, index) -> str:
    return name + (f"[{','.join(map(str, index))}]" if len(index) else "")


def page_of(trace, **view) -> str:
    return render_html.render(trace, View(**view))


@pytest.fixture(scope="module", params=["reference", "rgb-softmax"])
def sample(request):
    trace = run(load_problem(REFERENCE if request.param == "reference" else SOFTMAX))
    return trace, parse(page_of(trace, precision=4))


def test_every_entry_of_every_stage_is_on_the_page_with_its_term_and_value(sample):
    trace, page = sample
    expected = {}
    for stage in trace.stages:
        values = np.asarray(trace[stage.name])
        for index in np.ndindex(values.shape):
            expected[key(stage.name, index)] = number(float(values[index]), 4)
    assert page.duplicates == []
    assert set(page.terms) == set(expected)
    for term, value in expected.items():
        assert page.terms[term][0].split("*")[0] == value, term


def test_every_input_entry_has_data_input(sample):
    trace, page = sample
    expected = {key(name, index): number(float(np.asarray(v)[index]), 4)
                for name, v in trace.problem.inputs.items() for index in np.ndindex(np.shape(v))}
    assert {k: t for k, (t, _) in page.inputs.items()} == expected


def test_each_embedded_explanation_is_explains_text_ending_in_the_value(sample):
    trace, page = sample
    (data,) = explanations(page.text)
    assert set(data) == set(page.terms)
    for term, entry in data.items():
        name, _, rest = term.partition("[")
        index = tuple(int(i) for i in rest.rstrip("]").split(",")) if rest else ()
        explanation = explain_entry(trace, name, index)
        assert entry["text"] == render_text(explanation, 4), term
        value = number(float(np.asarray(trace[name])[index]), 4)
        assert entry["text"].splitlines()[-1] == f"{explanation.label} = {value}", term
        assert value == page.terms[term][0].split("*")[0]


def test_sources_are_the_cells_an_entrys_factors_read(sample):
    trace, page = sample
    (data,) = explanations(page.text)
    cells = {"t:" + k for k in page.terms} | {"i:" + k for k in page.inputs}
    for term, entry in data.items():
        assert set(entry["sources"]) <= cells, term
        assert "t:" + term not in entry["sources"]


def test_sources_of_a_weight_gradient_and_a_convolution():
    trace = run(load_problem(REFERENCE))
    (data,) = explanations(page_of(trace))
    # dL/dW1[0,1] = Σ X[h, w+1]·dL/dZ1[h, w] over the 4×4 positions of Z1
    expected = {f"i:X[{h},{w + 1}]" for h in range(4) for w in range(4)}
    expected |= {f"t:dL_dZ1[{h},{w}]" for h in range(4) for w in range(4)}
    assert set(data["dL_dW1[0,1]"]["sources"]) == expected
    # Z1[1,2] = Σ X[1+i, 2+j]·W1[i,j] + B1: the starting weights, never the updated ones
    expected = {f"i:X[{1 + i},{2 + j}]" for i in range(3) for j in range(3)}
    expected |= {f"i:W1[{i},{j}]" for i in range(3) for j in range(3)} | {"i:B1"}
    assert set(data["Z1[1,2]"]["sources"]) == expected
    assert set(data["W1[0,0]"]["sources"]) == {"i:W1[0,0]", "t:dL_dW1[0,0]"}


def test_a_softmax_output_and_the_loss_light_the_cells_they_are_computed_from():
    """A4[1,2] = exp(Z4[1,2] − max)/Σ exp(Z4[1,j] − max): every Z4 cell of image 1;
    L reads log(A4) of the labelled classes."""
    trace = run(load_problem(SAMPLES / "rgb-softmax.json"))
    (data,) = explanations(page_of(trace))
    assert set(data["A4[1,2]"]["sources"]) == {f"t:Z4[1,{j}]" for j in range(3)}
    assert {s for s in data["L"]["sources"] if s.startswith("t:")} == {"t:A4[0,0]", "t:A4[1,1]"}


def test_marks_come_from_the_traces_annotations(sample):
    trace, page = sample
    marked = 0
    for name, annotation in trace.annotations.items():
        if annotation.marks is None:
            continue
        for index in np.ndindex(annotation.marks.shape):
            text, classes = page.terms[key(name, index)]
            wins = int(annotation.marks[index])
            assert ("won" in classes.split()) == (wins > 0), (name, index)
            assert text.endswith("" if wins == 0 else "*" if wins == 1 else f"*{wins}")
            marked += wins > 0
    assert marked > 0


def test_the_layers_notes_are_on_the_page(sample):
    trace, _ = sample
    text = page_of(trace)
    for annotation in trace.annotations.values():
        for line in (*annotation.before, *annotation.after):
            assert line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text


def test_a_diverging_colour_scale_with_a_legend_for_every_matrix():
    trace = run(load_problem(REFERENCE))
    text = page_of(trace)
    cell = re.search(r'data-term="dL_dW1\[0,1\]"[^>]*style="background:hsl\((\d+) ', text)
    assert cell and cell[1] == "214"  # negative: blue
    cell = re.search(r'data-term="Z1\[1,0\]"[^>]*style="background:hsl\((\d+) ', text)
    assert cell and cell[1] == "4"  # positive: red
    matrices = sum(np.ndim(trace[s.name]) > 0 for s in trace.stages)
    matrices += sum(np.ndim(v) > 0 for v in trace.problem.inputs.values())
    assert text.count('class="legend"') == matrices


NETWORK_CASES = IDS


@pytest.mark.parametrize("network_id", NETWORK_CASES)
def test_every_network_gives_a_page_of_every_entry(network_id):
    trace = trace_input(make(network_id))
    text = page_of(trace, precision=6)
    page = parse(text)
    (data,) = explanations(text)
    for stage in trace.stages:
        values = np.asarray(trace[stage.name])
        for index in np.ndindex(values.shape):
            term = key(stage.name, index)
            assert page.terms[term][0].split("*")[0] == number(float(values[index]), 6)
            assert data[term]["text"].splitlines()[-1].endswith(" = " + number(float(values[index]), 6))


def test_self_contained_nothing_fetched():
    text = page_of(run(load_problem(SOFTMAX)))
    # The numbers' base64 (letters, digits, + and /) is data, not markup: a "//u" in it fetches nothing.
    text = re.sub(r'(<script type="application/octet-stream" class="numbers">)[A-Za-z0-9+/=]*(</script>)', r"\1\2", text)
    assert not re.search(r"https?:|//[a-z]|<link|<img|<iframe|\bsrc=|@import|url\(", text)
    assert "<style>" in text and "<script>" in text and "@media print" in text


def test_the_stepper_walks_the_stages_in_the_derivations_order():
    trace = run(load_problem(SOFTMAX))
    page = parse(page_of(trace))
    steps = [(int(a["data-step"]), a["data-name"]) for tag, a in page.tags if tag == "article" and "data-step" in a]
    assert steps == list(enumerate(stage.name for stage in trace.stages))


def big_input(tmp_path, side=50):
    data = reference()
    rng = np.random.default_rng(0)
    data["X"] = rng.integers(0, 3, size=(side, side)).tolist()
    side_out = (side - 2) // 2
    data["W2"] = (rng.normal(size=side_out * side_out) * 0.01).tolist()
    return write(tmp_path, data)


def test_large_matrices_are_summarized_as_the_table_view_does(tmp_path):
    trace = run(load_problem(big_input(tmp_path)))
    text = page_of(trace)
    page = parse(text)
    shown = [k for k in page.inputs if k.startswith("X[")]
    assert len(shown) == 16 * 16 and "X[0,0]" in page.inputs and "X[49,49]" in page.inputs
    assert "X[20,20]" not in page.inputs
    assert "first and last 8 rows and columns; --full shows all" in text
    (data,) = explanations(text)
    assert set(data) == set(page.terms)
    # dL/dW1[0,0] sums 48×48 products: its largest terms, as explain writes them, and the value
    lines = data["dL_dW1[0,0]"]["text"].splitlines()
    assert any("smaller terms left out" in line for line in lines) and len(lines) < 80
    assert data["dL_dW1[0,0]"]["text"] == render_text(explain_entry(trace, "dL_dW1", (0, 0)), 4)
    value = number(float(trace["dL_dW1"][0, 0]), 4)
    assert lines[-1] == f"dL/dW1[0,0] = {value}"
    assert len(text) < 1_500_000
    full = parse(page_of(trace, full=True))
    # 2,500 cells: more than the page writes out (html.DEFERRED); its script draws them
    (data,) = full.data
    cells = [*(f"i:{k}" for k in full.inputs), *drawn(data)]
    assert len([k for k in cells if k.startswith("i:X[")]) == 50 * 50


def test_cli_html_writes_the_page_and_leaves_stdout_as_it_was(tmp_path):
    out = tmp_path / "trace.html"
    plain = runner.invoke(app, ["step", str(SOFTMAX), "-f", "json"])
    result = runner.invoke(app, ["step", str(SOFTMAX), "-f", "json", "--html", str(out), "-p", "6"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == plain.stdout
    page = parse(out.read_text())
    assert page.terms["dL_dW1[1,2,0,1]"][0] == number(float(run(load_problem(SOFTMAX))["dL_dW1"][1, 2, 0, 1]), 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.html"]


def test_cli_html_of_several_files_gives_one_section_each(tmp_path):
    out = tmp_path / "trace.html"
    result = runner.invoke(app, ["step", str(REFERENCE), str(SOFTMAX), "--html", str(out)])
    assert result.exit_code == 0
    text = out.read_text()
    assert text.count('<section class="trace"') == 2 and str(SOFTMAX) in text
    assert len(parse(text).data) == 2
    # each section explained from its own numbers, with the recipes the page holds once
    for source, made in zip((REFERENCE, SOFTMAX), explanations(text)):
        trace = run(load_problem(source))
        for term in ("dL_dW1[0,0]" if source == REFERENCE else "dL_dW1[0,0,0,0]", "Z1[0,0]" if source == REFERENCE
                     else "Z1[1,0,2,3]", "L"):  # fmt: skip
            name, _, rest = term.partition("[")
            index = tuple(int(i) for i in rest.rstrip("]").split(",")) if rest else ()
            assert made[term]["text"] == render_text(explain_entry(trace, name, index), 4), term


def test_step_without_html_does_not_load_the_page_renderer():
    import subprocess
    import sys

    code = (
        "import sys; sys.argv = ['cnntrace', 'step', sys.argv[1], '-f', 'json']\n"
        "from cnntrace.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('cnntrace.render.html' in sys.modules, 'cnntrace.explain' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(REFERENCE)], capture_output=True, text=True, check=False)
    assert result.stderr.strip().splitlines()[-1] == "False False"
