"""explain: the arithmetic of every entry adds up to the value the trace reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnntrace
from cnntrace.errors import InputError
from cnntrace.explain import explain, explain_all, parse_term
from cnntrace.io import load_problem
from cnntrace.reference import reference_stages
from cnntrace.tracer import run
from tests.inputs import REFERENCE

STAGES = reference_stages()


def reference_trace():
    return run(load_problem(REFERENCE))


def assert_every_entry_adds_up(trace) -> int:
    """Compare explain's value with the trace for ALL entries of ALL matrices."""
    count = 0
    seen = set()
    for explanation in explain_all(trace):
        reported = float(np.asarray(trace[explanation.name])[explanation.index])
        scale = max(math.fsum(abs(term.value) for term in explanation.terms), abs(reported))
        assert abs(explanation.value - reported) <= 1e-12 * scale + 1e-300, (
            explanation.label, explanation.value, reported,
        )  # fmt: skip
        seen.add(explanation.name)
        count += 1
    assert seen == {stage.name for stage in STAGES}
    assert count == sum(np.size(trace[stage.name]) for stage in STAGES)
    return count


def test_reference_every_entry():
    assert assert_every_entry_adds_up(reference_trace()) == 168


# Values on a coarse grid, so that zeros, ReLU'(0) and pool ties come up often.
grid = st.integers(-4, 4).map(lambda n: n / 4)


@st.composite
def problems(draw):
    M = draw(st.integers(1, 2))
    K = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    H = draw(st.integers(max(kh - 2 * padding, 1), 7))
    W = draw(st.integers(max(kw - 2 * padding, 1), 7))
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    pool = draw(st.integers(1, min(3, Ho, Wo)))
    pool_stride = draw(st.integers(1, 3))
    n = K * ((Ho - pool) // pool_stride + 1) * ((Wo - pool) // pool_stride + 1)

    def array(*shape):
        return np.array(draw(st.lists(grid, min_size=math.prod(shape), max_size=math.prod(shape)))).reshape(shape)

    X = array(M, H, W) if M > 1 else array(H, W)
    W1 = array(K, kh, kw) if K > 1 else array(kh, kw)
    Y = draw(st.lists(st.sampled_from([0.0, 1.0, 0.25]), min_size=M, max_size=M))
    return cnntrace.trace(
        X, Y if M > 1 else Y[0], W1, array(K) if K > 1 else 0.125, array(n), 0.25,
        stride=stride, padding=padding, pool=pool, pool_stride=pool_stride, lr=0.5,
    )  # fmt: skip


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_every_entry_of_random_problems_adds_up(trace):
    assert_every_entry_adds_up(trace)


def test_random_real_values_with_batch_filters_stride_padding_and_overlap():
    rng = np.random.default_rng(7)
    trace = cnntrace.trace(
        rng.normal(size=(3, 7, 8)), [1, 0, 0.5], rng.normal(size=(2, 3, 2)), rng.normal(size=2),
        rng.normal(size=2 * 3 * 4), 0.3, stride=2, padding=1, pool=2, pool_stride=1,
    )  # fmt: skip
    assert assert_every_entry_adds_up(trace) > 500


# -- what the explanations say --------------------------------------------------------------


def labels(explanation):
    return ["·".join(factor.label for factor in term.factors) for term in explanation.terms]


def test_dW1_is_a_sum_of_products_of_X_and_dZ1():
    e = explain(reference_trace(), "dL_dW1[0,1]")
    assert e.label == "dL/dW1[0,1]"
    assert labels(e)[:2] == ["X[0,1]·dL/dZ1[0,0]", "X[0,2]·dL/dZ1[0,1]"]
    assert len(e.terms) == 16 and e.function is None
    assert e.value == pytest.approx(-0.399811640739795, rel=1e-12)


def test_pool_names_the_window_and_its_winner():
    e = explain(reference_trace(), "P1[0,0]")
    assert e.function == "max" and e.value == 0.875
    assert labels(e) == ["A1[0,0]", "A1[0,1]", "A1[1,0]", "A1[1,1]"]
    assert any("A1[1,0]" in note for note in e.notes)


def test_pool_tie_goes_to_the_first_max():
    trace = cnntrace.trace(np.ones((3, 3)), 1, [[1.0]], 0.0, [0.5, 0.5, 0.5, 0.5], 0.0, pool=2, pool_stride=1)
    e = explain(trace, "P1[0,0]")
    assert any("tie" in note and "A1[0,0]" in note for note in e.notes)
    # the centre is the largest cell of all four overlapping windows and gets all four
    peak = np.zeros((3, 3))
    peak[1, 1] = 1.0
    trace = cnntrace.trace(peak, 1, [[1.0]], 0.0, [0.5, 0.5, 0.5, 0.5], 0.0, pool=2, pool_stride=1)
    centre = explain(trace, "dL_dA1[1,1]")
    assert len(centre.terms) == 4
    assert centre.value == pytest.approx(float(trace["dL_dA1"][1, 1]))
    corner = explain(trace, "dL_dA1[2,2]")
    assert corner.terms == () and corner.value == 0 and "won none" in corner.notes[-1]


def test_a_cell_in_no_window_says_so():
    trace = cnntrace.trace(np.ones((5, 5)), 1, [[1.0]], 0.0, [0.5, 0.5, 0.5, 0.5], 0.0, pool=2, pool_stride=3)
    e = explain(trace, "dL_dA1[2,2]")
    assert e.value == 0 and "no pool window" in e.notes[-1]


def test_relu_mask_explains_the_comparison():
    trace = reference_trace()
    assert "≤ 0" in explain(trace, "dA1_dZ1[0,0]").notes[0]
    assert "> 0" in explain(trace, "dA1_dZ1[0,1]").notes[0]


def test_dX_with_padding_names_the_padded_cell():
    trace = cnntrace.trace(np.arange(16.0).reshape(4, 4) / 16, 1, np.ones((3, 3)) / 4, 0.0,
                           np.ones(4) / 4, 0.0, padding=1)  # fmt: skip
    e = explain(trace, "dL_dX[0,0]")
    assert any("padded by 1" in note for note in e.notes)
    assert len(e.terms) == 4  # the corner is met by the four windows that reach it
    w = explain(trace, "dL_dW1[0,0]")
    assert any(term.note == "padding" for term in w.terms)


def test_update_uses_the_weights_before_the_step():
    trace = reference_trace()
    e = explain(trace, "W1[0,1]")
    assert labels(e) == ["W1[0,1]", "−1·lr·dL/dW1[0,1]"]
    assert e.terms[0].value == 0.0  # W1[0,1] as the file gives it, not the updated one
    assert e.value == pytest.approx(float(trace["W1"][0, 1]), rel=1e-12)


def test_batch_and_filter_indices_come_first_as_in_the_json():
    rng = np.random.default_rng(1)
    trace = cnntrace.trace(rng.normal(size=(2, 6, 6)), [1, 0], rng.normal(size=(2, 3, 3)), [0.1, 0.2],
                           rng.normal(size=8), 0.0)  # fmt: skip
    e = explain(trace, "dL_dW1[1,0,2]")
    assert e.value == pytest.approx(float(trace["dL_dW1"][1, 0, 2]), rel=1e-12)
    assert labels(e)[0] == "X[0,0,2]·dL/dZ1[0,1,0,0]"
    assert len(explain(trace, "Z2[1]").terms) == 9


def test_a_batch_gradient_of_a_filter_sums_over_the_images_too():
    rng = np.random.default_rng(1)
    batch = cnntrace.trace(rng.normal(size=(2, 6, 6)), [1, 0], rng.normal(size=(2, 3, 3)), [0.1, 0.2],
                           rng.normal(size=8), 0.0)  # fmt: skip
    assert explain(batch, "dL_dW1[1,0,2]").formula.startswith("Σ_m,h,w X[m, h·s + i − p, w·s + j − p]·dL/dZ1[m,h,w]")
    assert explain(batch, "dL_dB1[1]").formula == "Σ_m,h,w dL/dZ1[m,h,w]"
    assert len(explain(batch, "dL_dB1[1]").terms) == 2 * 4 * 4
    one = explain(reference_trace(), "dL_dW1[0,1]")
    assert one.formula.startswith("Σ_h,w X[h·s + i − p, w·s + j − p]·dL/dZ1[h,w]")


# -- parsing and errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dL_dW1[0,1]", ("dL_dW1", (0, 1))),
        ("dL/dW1[0,1]", ("dL_dW1", (0, 1))),
        ("dL/dW1[0][1]", ("dL_dW1", (0, 1))),
        ("∂L/∂W1[0, 1]", ("dL_dW1", (0, 1))),
        (" Z1[2,3] ", ("Z1", (2, 3))),
        ("L", ("L", ())),
        ("dL_dB2", ("dL_dB2", ())),
        ("dL_dW2[2]", ("dL_dW2", (2,))),
    ],
)
def test_parse_term(text, expected):
    assert parse_term(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("W3[0,0]", "unknown name 'W3'; the names are Z1, A1"),
        ("dL_dW1[0,-1]", "whole numbers"),
        ("dL_dW1[a]", "whole numbers"),
        ("dL_dW1[0,1", "expected a name"),
        ("dL_dW1[3,0]", "dL_dW1 is 3×3 (row, col): indices 0..2, 0..2; got [3,0]"),
        ("dL_dW1[0]", "indices 0..2, 0..2; got [0]"),
        ("dL_dW1", "got no index"),
        ("L[0]", "L is a number: write it without an index"),
    ],
)
def test_errors_name_the_valid_names_or_ranges(text, fragment):
    with pytest.raises(InputError) as error:
        explain(reference_trace(), text)
    assert fragment in str(error.value)
    assert error.value.key == text
