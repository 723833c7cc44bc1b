"""Every layer kind and every loss through one table (tests/kinds.py): for each variant of
each row, the trace against its three oracles (the naive twins, PyTorch's autograd, central
differences), explain of every entry, every output format, and verify with the kind's own
mistakes. The table must cover the registry: a kind registered in cnntrace.layers.KINDS (or
a loss in LOSSES) without its row, its naive twin or its torch twin fails here.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from cnntrace.explain import explain_all
from cnntrace.gradcheck import check
from cnntrace.io import problem_from_dict
from cnntrace.layers import KINDS
from cnntrace.losses import LOSSES
from cnntrace.tracer import run
from cnntrace.verify import PRESETS, verify
from tests import naive
from tests.kinds import (
    ALL_CASES,
    BATCH,
    CASES,
    LOSS_ROWS,
    ROWS,
    SELF,
    kind_options,
    make,
    naive_pass,
    torch_pass,
    written,
)

ORACLE = {"rtol": 1e-12, "atol": 1e-12}
TORCH = {"rtol": 1e-9, "atol": 1e-12}
#: Central differences: an entry passes when |analytic − numeric| ≤ atol + rtol·max(|a|, |n|),
#: a relative error under 5e-7 for gradients of 1e-2 and more. L carries round-off of about
#: 1e-16·(its terms, some of them 10s here), which (L+ − L−)/2eps divides by 2eps: eps = 1e-5
#: keeps that under 1e-9, while eps²·L‴ stays far smaller (the kinks are left out by the check).
FINITE = {"eps": 1e-5, "rtol": 5e-7, "atol": 5e-9}

by_case = pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
by_kind = pytest.mark.parametrize("kind", sorted(ROWS))


def examples(n: int):
    """Hypothesis settings for ``n`` repeatable examples."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


#: A case's random shape: its images, the cells its X grows by (rows, cols), the seed.
shapes = st.fixed_dictionaries({
    "M": st.integers(1, 3),
    "grow": st.tuples(st.integers(0, 2), st.integers(0, 2)),
    "seed": st.integers(0, 2**32 - 1),
})  # fmt: skip


def problem_of(case, seed: int = 0, M: int = 2, grow=(0, 0)):
    return problem_from_dict(make(case, seed, M, grow))


# -- the table covers the registry -----------------------------------------------------------


def test_every_registered_kind_has_a_row():
    missing, stale = set(KINDS) - set(ROWS), set(ROWS) - set(KINDS)
    assert not missing, f"layer kinds without a row in tests/kinds.py: {sorted(missing)}"
    assert not stale, f"rows in tests/kinds.py for kinds not in KINDS: {sorted(stale)}"


def test_every_loss_has_a_row():
    missing, stale = set(LOSSES) - set(LOSS_ROWS), set(LOSS_ROWS) - set(LOSSES) - {"grad"}
    assert not missing, f"losses without a row in tests/kinds.py: {sorted(missing)}"
    assert not stale, f"rows in tests/kinds.py for losses not in LOSSES: {sorted(stale)}"


def _from_naive(function) -> bool:
    return callable(function) and inspect.getmodule(function) is naive


@by_kind
def test_every_row_has_its_naive_twin(kind):
    twin = ROWS[kind].twin
    assert isinstance(twin, naive.Twin), f"{kind}: no naive twin (a naive.Twin in tests/naive.py)"
    assert _from_naive(twin.forward) and _from_naive(twin.backward), f"{kind}: its twin is not in tests/naive.py"
    # An activation shows its own derivative as a stage: the twin computes it too.
    assert (twin.local is not None) == KINDS[kind].activation, kind
    assert twin.local is None or _from_naive(twin.local), kind


@pytest.mark.parametrize("loss", sorted(LOSS_ROWS))
def test_every_loss_row_has_its_naive_twin(loss):
    twin = LOSS_ROWS[loss].twin
    assert isinstance(twin, naive.LossTwin), f"{loss}: no naive twin (a naive.LossTwin in tests/naive.py)"
    assert _from_naive(twin.gradient), loss
    assert twin.value is None or _from_naive(twin.value), loss
    assert (twin.fused is not None) == (LOSS_ROWS[loss].fuses is not None), loss
    assert LOSS_ROWS[loss].fuses in (None, *KINDS), f"{loss} fuses with an unregistered kind"


@by_kind
def test_every_row_has_its_torch_twin_and_its_weights(kind):
    row = ROWS[kind]
    assert callable(row.torch), f"{kind}: no torch twin"
    assert (row.weights is not None) == KINDS[kind].weighted, f"{kind}: a weighted kind's row sizes its weights"


@by_kind
def test_every_option_and_every_convention_of_a_kind_is_a_variant(kind):
    varied: dict[str, set] = {}
    for variant in ROWS[kind].variants:
        for option, value in variant.options.items():
            varied.setdefault(option, set()).add(json.dumps(value))
    unvaried = kind_options(KINDS[kind]) - set(varied)
    assert not unvaried, f"{kind}: no variant in tests/kinds.py sets {sorted(unvaried)}"
    for convention in KINDS[kind].CONVENTIONS.values():
        # the default is what the other variants run
        untried = {json.dumps(c) for c in convention.choices[1:]} - varied[convention.option]
        assert not untried, f"{kind}: no variant tries {convention.option} = {sorted(untried)}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_layer_takes_the_options_its_variant_gives(case):
    """The twins run with the options the parsed layer holds: each of the variant's must
    be there, or an option the parser dropped would go unseen by every oracle."""
    (position,) = [i for i, layer in enumerate(case.variant.layers or case.row.layers) if layer == SELF]
    taken = written(problem_of(case).network.layers[position])
    for option, value in case.variant.options.items():
        if value == BATCH:  # drawn by make for the batch: the layer holds it as drawn
            assert taken[option] is not None, option
            continue
        if isinstance(taken[option], tuple):  # a (rows, cols) pair: a number is both
            value = tuple(value) if isinstance(value, list) else (value, value)
        assert taken[option] == value, (option, taken[option], value)


# -- oracle 1: the naive twins -------------------------------------------------------------


def assert_matches(trace, problem, expected: dict, tolerance: dict) -> int:
    """Each of ``expected`` (general shapes) against the trace's stage of that name."""
    for name, value in expected.items():
        assert name in trace, f"{name} is not a stage of the trace"
        assert_allclose(trace[name], problem.present(name, value), **tolerance, err_msg=name)
    return len(expected)


@by_case
@examples(8)
@given(shape=shapes)
def test_trace_agrees_with_the_naive_twins(case, shape):
    problem = problem_of(case, **shape)
    trace = run(problem)
    expected = naive_pass(problem)
    names = [stage.name for stage in trace.stages]
    assert set(names) == set(expected), f"only in the trace: {set(names) - set(expected)}; only in the twins' pass: {set(expected) - set(names)}"
    assert_matches(trace, problem, expected, ORACLE)


# -- oracle 2: PyTorch's autograd ----------------------------------------------------------


@by_case
@examples(6)
@given(shape=shapes)
def test_trace_agrees_with_torch_autograd(torch, case, shape):
    problem = problem_of(case, **shape)
    trace = run(problem)
    compared = assert_matches(trace, problem, torch_pass(torch, problem), TORCH)
    # every layer's output, dL/dX and every weight's gradient at least
    assert compared >= len(problem.network.layers) + 1 + len(problem.network.params)


# -- oracle 3: central differences ---------------------------------------------------------


@by_case
@examples(2)
@given(shape=shapes)
def test_every_gradient_agrees_with_central_differences(case, shape):
    problem = problem_of(case, **shape)
    results = check(problem, **FINITE)
    assert [r.name for r in results] == ["X", *problem.network.params]
    for result in results:
        assert result.ok, result
        assert result.checked == result.entries
        # Small whole numbers put ReLU inputs at 0 and tie pool windows: a tensor may then
        # sit on kinks only. Otherwise most of its entries are compared.
        assert result.compared > 0 or case.variant.discrete, result


# -- explain, every format, verify ---------------------------------------------------------


class WrongEntries(AssertionError):
    """Entries whose explanation does not add up to the trace's value."""


class RefusedNames(AssertionError):
    """Stages of the trace that ``cnntrace explain`` refuses to name."""


def _marked(cases, bugs: dict):
    """pytest params of ``cases``; a case that meets a production bug is a strict xfail,
    and only the bug's own exception counts as it: ``bugs`` maps (reason, exception) to
    the test of a case."""
    params = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, raises=raises, reason=reason)
                 for (reason, raises), meets in bugs.items() if meets(case)]  # fmt: skip
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


EXPLAIN_BUGS: dict = {}
CLI_EXPLAIN_BUGS: dict = {}


@pytest.mark.parametrize("case", _marked(ALL_CASES, EXPLAIN_BUGS))
def test_every_entry_of_every_stage_explains_to_its_value(case):
    trace = run(problem_of(case))
    count, seen, wrong = 0, set(), []
    for explanation in explain_all(trace):
        reported = float(np.asarray(trace[explanation.name])[explanation.index])
        scale = max(math.fsum(abs(term.value) for term in explanation.terms), abs(reported))
        if abs(explanation.value - reported) > 1e-12 * scale + 1e-300:
            wrong.append((explanation.label, explanation.value, reported))
        seen.add(explanation.name)
        count += 1
    assert seen == {stage.name for stage in trace.stages}
    assert count == sum(np.size(trace[stage.name]) for stage in trace.stages)
    if wrong:
        raise WrongEntries(f"{len(wrong)} entries: {wrong[:5]}")


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from cnntrace.cli import Format, app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(arg) for arg in args]), Format


@by_case
def test_every_format_renders(cli, case, tmp_path):
    invoke, Format = cli
    path = tmp_path / "in.json"
    path.write_text(json.dumps(make(case)))
    page = tmp_path / "page.html"
    for fmt in Format:
        html = ("--html", page) if fmt == Format.table else ()  # the page once: it is the slowest
        result = invoke("step", path, "--format", fmt.value, *html)
        assert result.exit_code == 0, (fmt.value, result.output)
        assert result.stderr == "" and result.stdout.strip(), fmt.value
    assert page.stat().st_size > 0


@pytest.mark.parametrize("case", _marked(ALL_CASES, CLI_EXPLAIN_BUGS))
def test_explain_on_the_command_line_names_every_stage(cli, case, tmp_path):
    invoke, _ = cli
    path = tmp_path / "in.json"
    path.write_text(json.dumps(make(case)))
    trace = run(problem_of(case))
    refused = []
    for stage in trace.stages:  # the last entry of each: every index in play
        index = ",".join(str(n - 1) for n in np.shape(trace[stage.name]))
        term = f"{stage.name}[{index}]" if index else stage.name
        result = invoke("explain", path, term, "--format", "json")
        if result.exit_code == 2 and "unknown name" in result.stderr:
            refused.append(term)
            continue
        assert result.exit_code == 0, (term, result.output)
        value = float(np.asarray(trace[stage.name]).ravel()[-1])
        assert json.loads(result.stdout)["value"] == pytest.approx(value, rel=1e-12, abs=1e-12), term
    if refused:
        raise RefusedNames(f"explain refuses {refused}")


def _diagnosed(trace, name: str, answer) -> list[str]:
    (verdict,) = verify(trace, {name: answer})
    return [d.id for d in verdict.diagnosis]


def offered_mistakes(case, problem) -> list:
    """The mistakes verify knows at the case's own kind (the loss's: those of the network
    that no layer makes)."""
    values = {"X": problem.general_X(), **problem.network.forward_backward(
        problem.general_X(), problem.general_target, problem.general_weights())}  # fmt: skip
    weights = problem.general_weights()
    if case.kind is not None:
        layers = [layer for layer in problem.network.layers if layer.type == case.kind]
        return [m for layer in layers for m in layer.mistakes(values, weights)]
    made = {m.id for layer in problem.network.layers for m in layer.mistakes(values, weights)}
    return [m for m in problem.network.mistakes(values, weights, problem.lr, problem.M) if m.id not in made]


def named_mistakes(case, seed: int = 0) -> tuple[set, set]:
    """(the ids of the case's mistakes that its numbers tell from the right answer, those
    verify names when each is answered); every one answered must be named."""
    problem = problem_of(case, seed)
    trace = run(problem)
    distinct, named = set(), set()
    for mistake in offered_mistakes(case, problem):
        for name, value in mistake.given.items():
            answer = problem.present(name, value)
            if np.allclose(answer, trace[name], rtol=1e-3, atol=1e-4):
                continue  # these numbers do not tell it apart (no Z at 0, no tied window)
            distinct.add(mistake.id)
            if mistake.id in _diagnosed(trace, name, answer.tolist()):
                named.add(mistake.id)
    return distinct, named


@by_case
def test_verify_passes_the_trace_and_names_each_mistake_of_the_kind(case):
    trace = run(problem_of(case))
    answers = {stage.name: np.asarray(trace[stage.name]).tolist() for stage in trace.stages}
    verdicts = verify(trace, answers, *PRESETS["float64"])
    assert [v.status for v in verdicts] == ["right"] * len(answers), [v for v in verdicts if not v.ok]
    distinct, named = named_mistakes(case)
    assert named == distinct, f"made but not named: {sorted(distinct - named)}"


@by_kind
def test_every_mistake_of_a_kind_is_made_and_named_in_some_variant(kind):
    """Over the row's variants, each mistake the kind offers shows in some numbers (the
    discrete variants put ReLU inputs at 0 and tie pool windows) and is named there."""
    offered, named = set(), set()
    for case in (case for case in CASES if case.kind == kind):
        offered |= {m.id for m in offered_mistakes(case, problem_of(case))}
        named |= named_mistakes(case)[1]
    assert named == offered, f"{kind}: never made and named in its variants: {sorted(offered - named)}"
