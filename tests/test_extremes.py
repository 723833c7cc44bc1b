"""Numeric extremes: saturated sigmoids, inputs near float64's limits, subnormal values,
all-zero ReLU windows, exact ties, and the extreme shapes (1×1 kernel, a kernel as large as
the image or the padded image, stride or padding larger than the kernel, pool 1).

Each result is compared with the loop-based oracle (tests/naive.py) and, where the loss is
smooth and not flat to float64, with central differences; anything that would overflow
must be a NumericError naming the first stage that did, never inf or NaN in an output.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from typer.testing import CliRunner

from cnntrace import ops
from cnntrace.api import trace
from cnntrace.cli import app
from cnntrace.errors import NumericError, TrainingDiverged
from cnntrace.gradcheck import check
from cnntrace.reference import reference_network, reference_problem, reference_stages
from cnntrace.train import train
from tests import naive
from tests.inputs import reference_pass
from tests.torch_reference import torch_pass

STAGES = reference_stages()

ORACLE = {"rtol": 1e-12, "atol": 0}
PARAMS = ("X", "W1", "B1", "W2", "B2")
#: The largest x with e^x finite in float64: past it 1/σ(−x) = 1 + e^x overflows.
LOG_MAX = math.log(np.finfo(np.float64).max)  # 709.78...

runner = CliRunner()
#: The reference network's stages in the pass's order.


def pool_wins(t) -> np.ndarray:
    """How many pool windows each cell of A1 won, in A1's shape, as the trace marks them."""
    (pool,) = (layer for layer in t.problem.network.layers if layer.type == "maxpool")
    return pool.wins(t.general_pass())


def gradient_step(W1, B1, W2, B2, grads, lr):
    """The reference network's update of these weights, in the shapes they are given in."""
    weights = {"W1": W1, "B1": B1, "W2": W2, "B2": B2}
    return reference_network().gradient_step(weights, grads, lr)


# -- a problem in the pass's general shapes ---------------------------------------------


@dataclass
class Net:
    """X (M, H, W), Y (M,), W1 (K, kh, kw), B1 (K,), W2 (n,), B2 (), all float64."""

    X: np.ndarray
    Y: np.ndarray
    W1: np.ndarray
    B1: np.ndarray
    W2: np.ndarray
    B2: np.ndarray
    options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, X, Y, W1, B1, W2, B2, **options):
        """From the single-image, single-filter forms: X (H, W), W1 (kh, kw), numbers."""
        X, W1 = np.asarray(X, dtype=float), np.asarray(W1, dtype=float)
        return cls(
            X.reshape(-1, *X.shape[-2:]), np.asarray(Y, dtype=float).reshape(-1),
            W1.reshape(-1, *W1.shape[-2:]), np.asarray(B1, dtype=float).reshape(-1),
            np.asarray(W2, dtype=float).reshape(-1), np.asarray(B2, dtype=float).reshape(()),
            {"pool_stride": options.get("pool", 2), **options},
        )  # fmt: skip

    def arrays(self, **replaced):
        return tuple(replaced.get(name, getattr(self, name)) for name in ("X", "Y", *PARAMS[1:]))

    def values(self, **replaced):
        """Every stage of the pass (the display-only dL/dA2 too), overflow or not."""
        with np.errstate(all="ignore"):
            return reference_pass(*self.arrays(**replaced), **self.options)

    def oracle(self):
        with np.errstate(all="ignore"):
            return reference_pass(*self.arrays(), oracle=True, **self.options)

    def trace(self, lr=0.1):
        return trace(*self.arrays(), **self.options, lr=lr)

    def problem(self, lr=0.1):
        return reference_problem(*self.arrays(), **self.options, lr=lr)

    def file(self, directory, name="in.json", lr=0.1):
        """The problem as an input file (repr keeps every float's digits, -0.0 included)."""
        data = {name: getattr(self, name).tolist() for name in ("X", "Y", *PARAMS[1:])}
        path = directory / name
        path.write_text(json.dumps({**data, **self.options, "lr": lr}))
        return path


def assert_matches_the_oracle(net: Net, exact=False, skip=()):
    """Every stage equal to the loop-based oracle's: bit for bit with ``exact``, else to
    1e-12 relative (no absolute slack, so subnormal results are held to their digits)."""
    values, expected = net.values(), net.oracle()
    for name, value in values.items():
        if name in skip:
            continue
        if exact:
            assert_array_equal(value, expected[name], err_msg=name)
        else:
            assert_allclose(value, expected[name], **ORACLE, err_msg=name)


# -- central differences, in float64, with a step relative to each tensor's size --------


def activation_pattern(values, options):
    """The ReLU mask and each pool window's winner: while they hold, L is smooth."""
    pool, pool_stride = (options["pool"],) * 2, (options["pool_stride"],) * 2
    _, cache = ops.maxpool_forward(values["A1"], pool, pool_stride)
    return values["Z1"] > 0, cache.winner


def central_differences(net: Net, name: str, relative_step=1e-6):
    """(numeric, analytic, rounding) for every entry of ``name`` off the kinks.

    numeric is (L(p + h) − L(p − h)) / ((p + h) − (p − h)), with h = relative_step times
    the tensor's largest entry and the step as float64 actually took it. An entry whose
    step changes the activation pattern sits on a kink and is left out. ``rounding``
    bounds what float64's rounding of L (and of Z2, which L follows) can do to numeric;
    where it is not far below the gradient, the loss is flat to float64 at this step.
    """
    values = net.values()
    analytic = values[f"dL_d{name}"]
    value = getattr(net, name)
    h = relative_step * (float(np.max(np.abs(value))) or 1.0)
    pattern = activation_pattern(values, net.options)
    # L's rounding, and Z2's (an ulp of Z2 times dL/dZ2, taken as (1 − Y)·σ(Z2) − Y·σ(−Z2)
    # so that it keeps its digits where A2 − Y rounds to 0).
    Z2, Y = values["Z2"], net.Y
    dL_dZ2 = [(1 - y) * naive.sigmoid(z) - y * naive.sigmoid(-z) for z, y in zip(Z2, Y)]
    scale = abs(float(values["L"])) + float(np.mean(np.abs(Z2) * np.abs(dL_dZ2)))
    numeric, kept, rounding = [], [], []
    for index in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[index] += h
        minus[index] -= h
        at_plus, at_minus = net.values(**{name: plus}), net.values(**{name: minus})
        if not all(
            np.array_equal(a, b)
            for other in (at_plus, at_minus)
            for a, b in zip(pattern, activation_pattern(other, net.options))
        ):
            continue  # a kink: the ReLU mask or a window's winner changes within the step
        step = plus[index] - minus[index]
        numeric.append((float(at_plus["L"]) - float(at_minus["L"])) / step)
        kept.append(float(analytic[index]))
        # A few ulps of that, and the absolute resolution of subnormal losses.
        rounding.append((8 * np.finfo(float).eps * scale + 4 * 2.0**-1074) / step)
    return np.array(numeric), np.array(kept), np.array(rounding)


#: The float64 resolution of dL/dZ2 = A2 − Y near A2 = 1 (half an ulp of 1), times the
#: O(1) weights and pixels of these tests: an analytic gradient may be off by this much
#: where the exact one is below it (Y = 1 and Z2 ≥ 37, say, where A2 − Y rounds to 0).
A2_RESOLUTION = 1e-15


def worst_relative_error(net: Net, names=PARAMS, relative_step=1e-6, require=True) -> float:
    """Check every entry off the kinks against central differences and return the largest
    |numeric − analytic| / max(|numeric|, |analytic|) over the entries the loss resolves:
    rounding at most 1e-8 of the gradient, and the gradient above 1e-12, far from the
    resolution of A2 − Y. With ``require``, asserts that there was at least one."""
    worst, resolved = 0.0, 0
    for name in names:
        numeric, analytic, rounding = central_differences(net, name, relative_step)
        size = np.maximum(np.abs(numeric), np.abs(analytic))
        error = np.abs(numeric - analytic)
        assert np.all(error <= 1e-7 * size + 10 * rounding + A2_RESOLUTION), name
        resolves = (rounding <= 1e-8 * size) & (size >= 1e-12)
        resolved += np.count_nonzero(resolves)
        if resolves.any():
            worst = max(worst, float(np.max(error[resolves] / size[resolves])))
    assert resolved > 0 or not require
    return worst


def first_overflow(net: Net, lr=0.1):
    """The first stage, in the pass's order, whose value is not finite; None if none."""
    values = net.values()
    with np.errstate(all="ignore"):
        values.update(gradient_step(*net.arrays()[2:], values, lr))
    return next(
        (stage.name for stage in STAGES if not np.all(np.isfinite(values[stage.name]))), None
    )


# -- saturated sigmoid --------------------------------------------------------------------


def with_Z2(Z2: float, Y: float) -> Net:
    """A 5×5 image, a 2×2 filter and pool 2 whose Z2 lands at ``Z2`` (to rounding): B2
    makes up the difference, so the gradients flow through every stage."""
    X = np.array([[0.5, -1.0, 2.0, 0.25, 0.7], [1.5, 0.3, -0.7, 1.0, -0.2],
                  [0.2, 0.9, 1.1, -0.4, 0.8], [0.6, -0.8, 0.3, 1.2, 0.1],
                  [-0.3, 0.4, 1.3, 0.5, -0.6]])  # fmt: skip
    net = Net.of(X, Y, [[0.4, -0.3], [0.8, 0.6]], 0.1, [0.7, -0.2, 0.5, 0.9], 0.0, pool=2)
    net.B2 = np.array(Z2 - float(net.values()["Z2"][0]))
    return net


def stable_loss(Z2: float, Y: float) -> float:
    """max(Z2, 0) − Z2·Y + log(1 + e^−|Z2|), the README's formula, in Python floats."""
    return max(Z2, 0.0) - Z2 * Y + math.log1p(math.exp(-abs(Z2)))


def dL_dA2_overflows(Z2: float, Y: float) -> bool:
    """Whether |dL/dA2| exceeds float64: on the saturated side it is (1 − Y)/(1 − A2) ≈
    (1 − Y)·e^Z2 or Y/A2 ≈ Y·e^−Z2, the other term being at most 1."""
    weight = 1 - Y if Z2 > 0 else Y
    return weight > 0 and math.log(weight) + abs(Z2) > LOG_MAX


# 709.7 and 709.9 sit on either side of LOG_MAX: dL/dA2 ≈ 1.65e308 is still a float64.
SATURATED = [z * sign for z in (40.0, 500.0, 700.0, 709.7, 709.9, 720.0, 1e5) for sign in (1, -1)]


@pytest.mark.parametrize("Y", [0.0, 1.0, 0.25])
@pytest.mark.parametrize("Z2", SATURATED)
def test_saturated_sigmoid_gives_the_stable_loss_and_dL_dZ2_exactly_A2_minus_Y(Z2, Y):
    net = with_Z2(Z2, Y)
    values = net.values()
    z = float(values["Z2"][0])
    assert z == pytest.approx(Z2, rel=1e-12)
    assert float(values["L"]) == stable_loss(z, Y)
    assert float(values["L"]) == pytest.approx(float(naive.bce_loss([z], [Y])), rel=1e-15)
    assert values["A2"][0] == naive.sigmoid(z)
    assert values["dL_dZ2"][0] == values["A2"][0] - Y  # bit for bit, never dL/dA2·dA2/dZ2
    # dA2/dZ2 = σ(Z2)·σ(−Z2) = e^−|Z2|/(1 + e^−|Z2|)²: it underflows to 0 past |Z2| ≈ 745.
    assert values["dA2_dZ2"][0] == pytest.approx(
        math.exp(-abs(z)) / (1 + math.exp(-abs(z))) ** 2, rel=1e-13, abs=0
    )
    # Every stage agrees with the oracle; the display-only dL/dA2 does where it is finite.
    assert_matches_the_oracle(net, skip=("dL_dA2",))
    if dL_dA2_overflows(z, Y):
        assert not np.isfinite(values["dL_dA2"][0])
    else:
        assert values["dL_dA2"][0] == pytest.approx(naive.bce_grad_A([z], [Y])[0], rel=1e-13)


@pytest.mark.parametrize("Y", [0.0, 1.0, 0.25])
@pytest.mark.parametrize("Z2", SATURATED)
def test_step_reports_dL_dA2_past_709_and_check_and_train_go_on(Z2, Y):
    net = with_Z2(Z2, Y)
    if dL_dA2_overflows(Z2, Y):
        with pytest.raises(NumericError) as raised:
            net.trace()
        assert raised.value.key == "dL_dA2" and "709" in str(raised.value)
    else:
        t = net.trace()
        assert np.isfinite(t["dL_dA2"]).all()
        if Z2 in (700.0, 709.7) and Y == 0.0:  # 1/(1 − σ(Z2)) = 1 + e^Z2, up to 1.65e308
            z = float(t["Z2"][0])
            assert t["dL_dA2"][0] == pytest.approx(1 + math.exp(z), rel=1e-13)
    # check and train never need dL/dA2. At L ≈ 1e5 the default eps of 1e-6 cannot move L
    # by more than its rounding (an ulp of 1e5 is 1.5e-11): a larger eps, L being linear there.
    results = check(net.problem(), eps=1e-2 if abs(Z2) > 1e3 else 1e-6)
    assert all(r.ok for r in results), results
    (epoch,) = train(net.problem(), 1)
    assert epoch.loss == float(net.values()["L"])
    assert all(np.isfinite(p).all() for p in epoch.parameters.values())


@pytest.mark.parametrize("Y", [0.0, 1.0, 0.25])
@pytest.mark.parametrize("Z2", SATURATED)
def test_saturated_gradients_agree_with_central_differences(Z2, Y):
    net = with_Z2(Z2, Y)
    z = float(net.values()["Z2"][0])
    # Up to Z2 the pass is piecewise linear and past saturation so is L(Z2): a step of
    # 1e-3 of each tensor's size costs no truncation error and lifts the difference of L
    # (up to 1e5) far above its rounding.
    if abs((1 - Y) * naive.sigmoid(z) - Y * naive.sigmoid(-z)) < 1e-12:
        # The label agrees with the saturated side: the exact dL/dZ2 = −σ(−|Z2|) is below
        # what A2 − Y resolves, so the gradients are 0, within A2_RESOLUTION of the central
        # differences (which, where L is not flat to float64, do see e^−|Z2|).
        worst_relative_error(net, relative_step=1e-3, require=False)
        for name in PARAMS:
            assert np.all(np.abs(net.values()[f"dL_d{name}"]) <= A2_RESOLUTION)
        return
    assert worst_relative_error(net, relative_step=1e-3) < 1e-7


def test_saturated_dL_dZ2_keeps_float64s_resolution_of_A2_minus_Y():
    # At Z2 = 40 and Y = 1 the true gradient −σ(−40) ≈ −4.2e-18 is below the spacing of
    # floats near A2 ≈ 1, so A2 − Y is 0: the documented convention (as in PyTorch's
    # binary_cross_entropy_with_logits). The loss itself keeps it: L = log1p(e^−40).
    net = with_Z2(40.0, 1.0)
    values = net.values()
    assert values["A2"][0] == 1.0 and values["dL_dZ2"][0] == 0.0
    assert float(values["L"]) == pytest.approx(math.exp(-float(values["Z2"][0])), rel=1e-15)
    assert np.all(values["dL_dW1"] == 0.0) and np.all(values["dL_dX"] == 0.0)


# -- inputs near float64's limits ---------------------------------------------------------


def at_scales(x_scale: float, w1_scale: float, w2_scale: float, seed=0, **options) -> Net:
    """A random 6×6 image, 3×3 filter and W2, scaled: Z1 is of order x_scale·w1_scale and
    Z2 of order x_scale·w1_scale·w2_scale. B1 keeps a few Z1 entries below 0."""
    rng = np.random.default_rng(seed)
    X, W1, W2 = rng.normal(size=(6, 6)), rng.normal(size=(3, 3)), rng.normal(size=4)
    B1 = 0.3 * x_scale * w1_scale
    return Net.of(X * x_scale, 0.25, W1 * w1_scale, B1, W2 * w2_scale, 0.1, pool=2, **options)


FINITE_SCALES = [
    (1e150, 1e150, 1e-300),  # Z1 ~ 1e300, dL/dW2 ~ 1e300, dL/dZ1 ~ 1e-300
    (1e300, 1e-300, 1.0),  # X at 1e300, Z1 ~ 1, dL/dW1 ~ 1e300
    (1e-300, 1e300, 1.0),  # W1 at 1e300, dL/dX ~ 1e300
    (1.0, 1e-150, 1e150),  # dL/dF ~ 1e150, dL/dX ~ 1
    (1e307, 1.0, 1e-307),  # the 9-term sums of Z1 reach ~1e308
]


@pytest.mark.parametrize(("x", "w1", "w2"), FINITE_SCALES)
def test_inputs_near_the_limits_give_the_exact_finite_result(x, w1, w2):
    net = at_scales(x, w1, w2)
    assert first_overflow(net) is None
    t = net.trace()  # no NumericError
    values, expected = net.values(), net.oracle()
    for name, value in values.items():
        # 1e-12 of each stage's own size: the scale carries through, the digits must too.
        atol = 1e-12 * float(np.max(np.abs(expected[name])))
        assert_allclose(value, expected[name], rtol=1e-12, atol=atol, err_msg=name)
        assert_allclose(np.ravel(t[name]), np.ravel(value), rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize(("x", "w1", "w2"), FINITE_SCALES)
def test_inputs_near_the_limits_agree_with_central_differences(x, w1, w2):
    # The step is relative (1e-6 of each tensor's largest entry): an absolute eps would be
    # lost below the last digit of an entry of 1e300.
    assert worst_relative_error(at_scales(x, w1, w2)) < 1e-6


def overflowing_nets():
    """(id, Net, the first stage that overflows). Each is built so that only that stage
    and those after it overflow: the stages before it are finite, the true value is not."""
    centre = np.zeros((3, 3))
    centre[1, 1] = 1e-310  # wins all four overlapping windows
    return [
        ("Z1 products", Net.of(np.full((4, 4), 1e200), 1, [[1e200]], 0, [1.0] * 4, 0), "Z1"),
        # 1e308 + 1e308: each product fits, the sum does not; nor does −2e308, though
        # the ReLU would turn it into a harmless 0.
        ("Z1 sum", Net.of([[1e308, 1e308]], 1, [[1.0, 1.0]], 0, [1.0], 0, pool=1), "Z1"),
        ("Z1 negative", Net.of([[1e308, 1e308]], 1, [[-1.0, -1.0]], 0, [1.0], 0, pool=1), "Z1"),
        ("Z2", Net.of([[1e300]], 1, [[1.0]], 0, [1e10], 0, pool=1), "Z2"),
        ("Z2 from B2", Net.of([[1e308]], 0, [[1.0]], 0, [1.0], 1e308, pool=1), "Z2"),
        # Four windows route 0.5·1.5e308 each to the centre: the sum is 3e308.
        ("dL_dA1", Net.of(centre, 0, [[1.0]], 0, [1.5e308] * 4, 0, pool=2, pool_stride=1),
         "dL_dA1"),
        # Four Z1 entries of 1e-310 each pass dL/dZ1 ≈ 7.7e307 to the one bias.
        ("dL_dB1", Net.of(np.full((2, 2), 1e-310), 0, [[1.0]], 0, [1.5e308] * 4, 0, pool=1),
         "dL_dB1"),
        # Z1 = 1e300·1e-310 = 1e-10 and Z2 = 0.1, but dL/dW1 = X·dL/dZ1 ≈ 1e300·5e8.
        ("dL_dW1", Net.of([[1e300]], 0, [[1e-310]], 0, [1e9], 0, pool=1), "dL_dW1"),
        # Z2 = 1e-320·1e160·1e160 = 1e0, but dL/dX = dL/dZ2·W2·W1 ≈ 1e320.
        ("dL_dX", Net.of([[1e-320]], 0.5, [[1e160]], 0, [1e160], 0, pool=1), "dL_dX"),
    ]  # fmt: skip


OVERFLOWING = overflowing_nets()


@pytest.mark.parametrize(("net", "key"), [case[1:] for case in OVERFLOWING],
                         ids=[case[0] for case in OVERFLOWING])  # fmt: skip
def test_an_overflow_is_a_NumericError_naming_the_first_stage(net, key):
    assert first_overflow(net) == key
    with pytest.raises(NumericError) as raised:
        net.trace()
    assert raised.value.key == key
    assert str(raised.value).startswith(f"{key}: overflows float64")


def test_an_overflowing_update_names_the_first_parameter_in_order():
    # dL/dW1 = X·dL/dZ1 reaches ~100 and lr·100 = 1e309; W1 is the first update.
    net = Net.of([[100.0, 50.0], [25.0, 80.0]], 0, [[0.01]], 0, [1.0], 0, pool=2)
    assert first_overflow(net, lr=1e307) == "W1"
    with pytest.raises(NumericError) as raised:
        net.trace(lr=1e307)
    assert raised.value.key == "W1"


def test_products_that_overflow_are_reported_even_where_their_sum_would_fit():
    # The exact Z1 is 1e200·1e200 − 1e200·1e200 = 0, but each product is 1e400: float64
    # cannot form them, and the pass reports Z1 rather than rescale its sums. Inputs of
    # this size are far outside what a trace is for; the error says which stage to look at.
    net = Net.of([[1e200, 1e200]], 1, [[1e200, -1e200]], 0, [1.0], 0, pool=1)
    with pytest.raises(NumericError) as raised:
        net.trace()
    assert raised.value.key == "Z1"


STEP_FORMATS = ["table", "json", "ndjson", "csv", "markdown", "latex"]


@pytest.mark.parametrize("fmt", STEP_FORMATS)
@pytest.mark.parametrize(("net", "key"), [case[1:] for case in OVERFLOWING],
                         ids=[case[0] for case in OVERFLOWING])  # fmt: skip
def test_step_reports_an_overflow_as_one_line_naming_the_stage(tmp_path, net, key, fmt):
    path = net.file(tmp_path)
    result = runner.invoke(app, ["step", str(path), "--format", fmt])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"cnntrace: {path}: {key}: overflows float64")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("net", "key"), [case[1:] for case in OVERFLOWING],
                         ids=[case[0] for case in OVERFLOWING])  # fmt: skip
def test_check_names_the_same_first_stage_as_step(tmp_path, net, key):
    # check needs only the gradients of the parameters, but an overflow before them (Z1,
    # Z2, dL/dA1 ...) is still the one to name, not the gradient it made infinite.
    with pytest.raises(NumericError) as raised:
        check(net.problem())
    assert raised.value.key == key
    path = net.file(tmp_path)
    for fmt in ("table", "json"):
        result = runner.invoke(app, ["check", str(path), "--format", fmt])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.startswith(f"cnntrace: {path}: {key}: overflows float64")
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("case", "net", "key"), OVERFLOWING, ids=[c[0] for c in OVERFLOWING])
def test_train_names_an_overflow_of_its_first_pass_instead_of_blaming_lr(tmp_path, case, net, key):
    if case in ("dL_dX", "Z1 negative"):
        # Training never computes dL/dX; and a Z1 of −inf is, after the ReLU, a 0 like any
        # other Z1 below 0: nothing the training computes or shows is infinite.
        (epoch,) = train(net.problem(), 1)
        assert np.isfinite(epoch.loss)
        assert all(np.isfinite(p).all() for p in epoch.parameters.values())
        return
    # Before the first step the parameters are the input's own: no lr can be to blame.
    with pytest.raises(NumericError) as raised:
        list(train(net.problem(), 3))
    assert not isinstance(raised.value, TrainingDiverged)
    assert raised.value.key == key
    result = runner.invoke(app, ["train", str(net.file(tmp_path)), "-n", "3", "-f", "ndjson"])
    assert result.exit_code == 2 and result.stdout == ""
    assert f": {key}: overflows float64" in result.stderr and "lr" not in result.stderr
    assert result.stderr.count("\n") == 1


def test_train_still_calls_an_overflowing_step_a_divergence():
    # The pass is finite; lr·dL/dW1 is not: that is the lr's doing.
    net = Net.of([[100.0, 50.0], [25.0, 80.0]], 0, [[0.01]], 0, [1.0], 0, pool=2)
    with pytest.raises(TrainingDiverged) as raised:
        list(train(net.problem(lr=1e307), 1))
    assert raised.value.epoch == 1 and "smaller lr" in str(raised.value)


EDGE = np.finfo(float).max * (1 - 1e-15)  # a few ulps below float64's largest number


@pytest.mark.parametrize(
    ("net", "key", "where"),
    [
        # Z2 = 1e300·W2 is just below the largest float64; W1 + eps moves it by 1e294.
        (Net.of([[1e300]], 1, [[1.0]], 0, [EDGE / 1e300], 0, pool=1), "Z2", "W1[0,0,0] + eps"),
        # Z1 = X·W1 is there itself (X + eps is lost below X's last digit; W1's is not).
        (Net.of([[EDGE]], 1, [[1.0]], 0, [1e-300], 0, pool=1), "Z1", "W1[0,0,0] + eps"),
        (Net.of([[-EDGE]], 1, [[1.0]], 0, [1e-300], 0, pool=1), "Z1", "W1[0,0,0] + eps"),
    ],
)
def test_check_names_an_overflow_at_a_point_of_a_central_difference(tmp_path, net, key, where):
    # The pass itself is finite (step shows it), but L(p ± eps) is not a number: the check
    # cannot compute that difference and says why, instead of counting a failure of NaN.
    assert first_overflow(net) is None
    net.trace()
    with pytest.raises(NumericError) as raised:
        check(net.problem())
    assert raised.value.key == key and where in str(raised.value)
    path = net.file(tmp_path)
    result = runner.invoke(app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"cnntrace: {path}: {key}: overflows float64")
    assert where in result.stderr and result.stderr.count("\n") == 1


NO_INF_OR_NAN = re.compile(r"\b(inf|infinity|nan)\b|∞", re.IGNORECASE)


def finite_extremes():
    """(id, Net): inputs at float64's edges whose every stage is finite."""
    return [
        ("1e300", at_scales(1e150, 1e150, 1e-300)),
        ("max", Net.of([[np.finfo(float).max]], 1, [[1.0]], 0, [1e-308], 0, pool=1)),
        ("subnormal", Net.of([[5e-324, 1e-310], [-1e-310, 0.0]], 1, [[1.0]], 5e-324, [1e-310],
                             -0.0)),
        ("negative zero", Net.of([[-0.0, 0.0], [0.0, -0.0]], 0, [[-1.0]], -0.0, [-0.0], -0.0)),
        ("saturated", with_Z2(700.0, 0.0)),
    ]  # fmt: skip


FINITE_EXTREMES = finite_extremes()


@pytest.mark.parametrize("fmt", STEP_FORMATS)
@pytest.mark.parametrize("net", [case[1] for case in FINITE_EXTREMES],
                         ids=[case[0] for case in FINITE_EXTREMES])  # fmt: skip
def test_no_format_ever_shows_inf_or_nan(tmp_path, net, fmt):
    result = runner.invoke(app, ["step", str(net.file(tmp_path)), "--format", fmt])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert not NO_INF_OR_NAN.search(result.stdout)


@pytest.mark.parametrize("net", [case[1] for case in FINITE_EXTREMES],
                         ids=[case[0] for case in FINITE_EXTREMES])  # fmt: skip
def test_json_and_csv_carry_every_digit_of_the_extremes(tmp_path, net):
    path = net.file(tmp_path)
    t = net.trace()
    data = json.loads(runner.invoke(app, ["step", str(path), "-f", "json"]).stdout)
    for stage in STAGES:
        assert_array_equal(np.array(data[stage.section][stage.name]), t[stage.name], stage.name)
    rows = runner.invoke(app, ["step", str(path), "-f", "csv"]).stdout.splitlines()[1:]
    csv_values = {}
    for row in rows:
        name, *_, value = row.split(",")
        csv_values.setdefault(name, []).append(float(value))
    for stage in STAGES:
        assert_array_equal(csv_values[stage.name], np.ravel(t[stage.name]), stage.name)


# -- subnormal values ---------------------------------------------------------------------

TINY = 5e-324  # 2**-1074, the smallest subnormal float64


def with_subnormals(where: tuple[str, ...], unit=TINY) -> Net:
    """Small integers, with the tensors named in ``where`` multiplied by ``unit``.

    Sums and integer multiples of subnormals are exact in float64 (they are multiples of
    2**-1074 far below the normal range), W2 is even so that dL/dF = −W2/2 is whole, and
    B1 = B2 = 0 unless they are among ``where``: every stage is exact, whatever the order
    of its sums, and both implementations must give the same bits.
    """
    rng = np.random.default_rng(7)
    tensors = {
        "X": rng.integers(-3, 4, size=(5, 5)).astype(float),
        "W1": rng.integers(-2, 3, size=(2, 2)).astype(float),
        "B1": np.array(3.0 if "B1" in where else 0.0),
        "W2": 2.0 * rng.integers(-3, 4, size=4),
        "B2": np.array(-5.0 if "B2" in where else 0.0),
    }
    tensors["W1"][0, 0] = 2.0  # a filter that lets some Z1 through
    for name in where:
        tensors[name] = tensors[name] * unit
    return Net.of(Y=1.0, pool=2, **tensors)


SUBNORMAL_CASES = [("X",), ("W1",), ("W2",), ("X", "B1"), ("W2", "B2"), ("X", "W2", "B1", "B2")]


@pytest.mark.parametrize("path", ["windows", "offset loop"])
@pytest.mark.parametrize("unit", [TINY, 1e-310], ids=["5e-324", "1e-310"])
@pytest.mark.parametrize("where", SUBNORMAL_CASES, ids="+".join)
def test_subnormals_give_exactly_the_oracles_numbers(monkeypatch, where, unit, path):
    if path == "offset loop":
        monkeypatch.setattr(ops, "IM2COL_BYTES", 0)
    net = with_subnormals(where, unit)
    values = net.values()
    # The subnormals reach the pass: not flushed to zero.
    reached = {"X": "Z1", "W1": "Z1", "B1": "Z1", "W2": "Z2", "B2": "Z2"}
    for name in where:
        stage = values[reached[name]]
        assert np.any((stage != 0) & (np.abs(stage) < np.finfo(float).tiny)), name
    assert_matches_the_oracle(net, exact=True)
    t = net.trace(lr=0.5)
    expected = naive.gradient_step(dict(zip(PARAMS[1:], net.arrays()[2:])), net.oracle(), lr=0.5)
    for name in ("W1", "B1", "W2", "B2"):
        assert_array_equal(t[name], expected[name], name)


@pytest.mark.parametrize("where", SUBNORMAL_CASES, ids="+".join)
def test_subnormals_raise_no_underflow_error_anywhere(where):
    # Underflow is no error: a pass of subnormals is exact. Every entry point sets numpy's
    # error state itself, whatever the caller's.
    net = with_subnormals(where)
    with np.errstate(all="raise"):
        net.trace()
        assert all(r.ok for r in check(net.problem()))
        list(train(net.problem(), 2))


def test_relu_of_negative_zero_is_positive_zero_with_slope_zero():
    Z1 = np.array([-0.0, 0.0, -TINY, TINY, -1e-310, 1e-310])
    A1 = ops.relu_forward(Z1)
    assert_array_equal(A1, [0.0, 0.0, 0.0, TINY, 0.0, 1e-310])
    assert not np.any(np.signbit(A1))  # ReLU(−0.0) is 0.0, as max(Z1, 0) reads
    assert_array_equal(ops.relu_grad(Z1), [0, 0, 0, 1, 0, 1])


@pytest.mark.parametrize(
    "window",
    [[[-0.0, 0.0], [0.0, 0.0]], [[0.0, -0.0], [-0.0, -0.0]], [[-0.0, -0.0], [0.0, -0.0]]],
)
def test_zero_and_negative_zero_tie_and_the_first_cell_wins(window):
    P1, cache = ops.maxpool_forward(np.array(window)[None, None], (2, 2), (2, 2))
    assert cache.winner[0, 0, 0, 0] == 0
    assert np.signbit(P1[0, 0, 0, 0]) == np.signbit(window[0][0])  # the first cell's value
    assert naive.window_argmax(np.array(window)[None, None], 0, 0, 0, 0, (2, 2), (2, 2)) == (0, 0)
    dL_dA1 = ops.maxpool_backward(np.array([[[[3.0]]]]), cache)
    assert_array_equal(dL_dA1[0, 0], [[3.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("path", ["windows", "offset loop"])
def test_negative_zeros_through_the_pass(monkeypatch, path, tmp_path):
    if path == "offset loop":
        monkeypatch.setattr(ops, "IM2COL_BYTES", 0)
    # Every Z1 is ±0.0: no cell passes the ReLU, each window's first cell wins a tie of zeros.
    X = [[-0.0, 0.0, -0.0, 0.0], [0.0, -0.0, -0.0, 0.0],
         [-0.0, -0.0, 0.0, 0.0], [0.0, 0.0, -0.0, -0.0]]  # fmt: skip
    net = Net.of(X, 1.0, [[-1.0]], -0.0, [0.5, -0.25, 0.75, 0.25], -0.0, pool=2)
    values = net.values()
    assert np.all(values["Z1"] == 0.0)
    assert not np.any(np.signbit(values["A1"])) and not np.any(values["dA1_dZ1"])
    expected_dL_dA1 = np.zeros((4, 4))
    expected_dL_dA1[::2, ::2] = values["dL_dP1"][0, 0]
    assert_array_equal(values["dL_dA1"][0, 0], expected_dL_dA1)
    for name in ("dL_dZ1", "dL_dB1", "dL_dW1", "dL_dX"):
        assert np.all(values[name] == 0.0), name
    assert_matches_the_oracle(net, exact=True)
    A1 = json.loads(runner.invoke(app, ["step", str(net.file(tmp_path)), "-f", "json"]).stdout)
    assert "-" not in json.dumps(A1["forward"]["A1"])


# -- all-zero ReLU windows ----------------------------------------------------------------


def table_marks(text: str, title: str) -> np.ndarray:
    """The pool marks of the matrix titled ``title`` in plain table output: for each cell,
    how many windows it won (``*`` one, ``*4`` four, nothing none)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rule = next(i for i in range(start, len(lines)) if lines[i].startswith("─"))
    marks = []
    for line in lines[rule + 1 :]:
        cells = line.split()
        if not cells or not cells[0].isdigit():
            break
        marks.append([int(m.group(1) or 1) if (m := re.search(r"\*(\d*)$", c)) else 0
                      for c in cells[1:]])  # fmt: skip
    return np.array(marks)


def first_cells(Z1_shape, pool, pool_stride) -> np.ndarray:
    """How many windows each cell is the first (top-left) cell of."""
    counts = np.zeros(Z1_shape, dtype=int)
    Hp, Wp = (ops.output_size(n, pool, pool_stride) for n in Z1_shape)
    for h in range(Hp):
        for w in range(Wp):
            counts[h * pool_stride, w * pool_stride] += 1
    return counts


@pytest.mark.parametrize(("pool", "pool_stride"), [(2, 2), (2, 1), (3, 1), (3, 2)])
def test_every_Z1_below_zero_blocks_every_gradient_before_the_relu(tmp_path, pool, pool_stride):
    rng = np.random.default_rng(1)
    X, W1 = rng.normal(size=(7, 7)), rng.normal(size=(2, 2))
    Hp = ops.output_size(6, pool, pool_stride)
    net = Net.of(X, 1.0, W1, -100.0, rng.normal(size=Hp * Hp), 0.3, pool=pool,
                 pool_stride=pool_stride)  # fmt: skip
    values = net.values()
    assert np.all(values["Z1"] < -90) and not np.any(values["A1"])
    for name in ("dA1_dZ1", "dL_dZ1", "dL_dB1", "dL_dW1", "dL_dX", "F", "dL_dW2"):
        assert_array_equal(values[name], np.zeros_like(values[name]), name)
    assert float(values["L"]) == stable_loss(0.3, 1.0)
    assert values["dL_dB2"] == values["A2"][0] - 1.0
    # Every window is a tie of zeros: its first cell wins and receives its dL/dP1.
    winners = first_cells((6, 6), pool, pool_stride)
    assert_array_equal(pool_wins(net.trace())[0, 0], winners)
    assert_array_equal(values["dL_dA1"][0, 0] != 0, winners > 0)
    assert_allclose(values["dL_dA1"].sum(), values["dL_dP1"].sum(), rtol=1e-14)
    assert_matches_the_oracle(net)
    table = runner.invoke(app, ["step", str(net.file(tmp_path)), "--brief"]).stdout
    assert_array_equal(table_marks(table, "A1 = ReLU(Z1)"), winners)
    assert_array_equal(table_marks(table, "dL/dA1 = "), winners)
    # Moving X, W1 or B1 by eps changes nothing: the check sees exactly 0 and no kink.
    for result in check(net.problem()):
        assert result.ok and result.kinks == 0
        if result.name in ("X", "W1", "B1"):
            assert result.max_abs_error == 0.0


def test_one_pool_window_of_zeros_among_live_ones(tmp_path):
    # W1 = [[1]]: Z1 = X − 0.5. The top-left window holds only values ≤ 0.5, the others
    # one clear maximum each.
    X = np.array([[0.1, 0.5, 2.0, 1.0], [-3.0, 0.2, 0.7, 1.5],
                  [4.0, 0.9, 1.2, 3.0], [1.0, 2.5, 0.6, 0.8]])  # fmt: skip
    net = Net.of(X, 0.0, [[1.0]], -0.5, [0.4, -0.3, 0.2, 0.5], 0.1, pool=2)
    values = net.values()
    dL_dP1 = values["dL_dP1"][0, 0]
    expected = np.zeros((4, 4))
    expected[0, 0] = dL_dP1[0, 0]  # the tie of zeros: the first cell, though ReLU blocks it
    expected[0, 2], expected[2, 0], expected[2, 3] = dL_dP1[0, 1], dL_dP1[1, 0], dL_dP1[1, 1]
    assert_array_equal(values["dL_dA1"][0, 0], expected)
    assert values["dL_dZ1"][0, 0, 0, 0] == 0.0
    assert_array_equal(values["dL_dX"][0, :2, :2], np.zeros((2, 2)))
    assert_matches_the_oracle(net, exact=True)
    table = runner.invoke(app, ["step", str(net.file(tmp_path)), "--brief"]).stdout
    assert_array_equal(table_marks(table, "A1 = ReLU(Z1)"), expected != 0)
    assert worst_relative_error(net) < 1e-6
    assert all(r.ok for r in check(net.problem()))


# -- exact ties everywhere ----------------------------------------------------------------

BINOMIAL = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16  # symmetric, sums to 1


def tied(pool: int, pool_stride: int) -> Net:
    """X = 1 everywhere and a symmetric filter: every Z1 is sum(W1) + B1 = 1.25, to the bit."""
    Hp = ops.output_size(4, pool, pool_stride)
    W2 = np.linspace(-1.0, 1.0, Hp * Hp) + 0.25
    return Net.of(np.ones((6, 6)), 1.0, BINOMIAL, 0.25, W2, -0.5, pool=pool,
                  pool_stride=pool_stride)  # fmt: skip


@pytest.mark.parametrize(("pool", "pool_stride"), [(2, 2), (2, 1), (3, 1), (4, 1)])
def test_constant_image_and_symmetric_filter_tie_every_window(pool, pool_stride):
    net = tied(pool, pool_stride)
    Hp = ops.output_size(4, pool, pool_stride)
    values = net.values()
    assert np.all(values["Z1"] == 1.25)
    winners = first_cells((4, 4), pool, pool_stride)
    assert_array_equal(pool_wins(net.trace())[0, 0], winners)
    expected = np.zeros((4, 4))
    for h in range(Hp):
        for w in range(Hp):
            expected[h * pool_stride, w * pool_stride] += values["dL_dP1"][0, 0, h, w]
    assert_array_equal(values["dL_dA1"][0, 0], expected)
    assert_matches_the_oracle(net)

    # Moving one pixel breaks the ties (a kink); moving a weight or a bias shifts every
    # Z1 alike and keeps them: those gradients are checked, and agree.
    results = {r.name: r for r in check(net.problem())}
    assert results["X"].kinks > 0 and results["X"].ok
    for name in ("W1", "B1", "W2", "B2"):
        assert results[name].kinks == 0 and results[name].compared == results[name].entries
        assert results[name].ok and results[name].max_rel_error < 1e-6
    assert worst_relative_error(net, names=("W1", "B1", "W2", "B2")) < 1e-6


def test_tied_maxima_in_overlapping_windows_accumulate_in_the_first(tmp_path):
    # 9 at (1,1), (1,2), (2,1), (2,2): (1,1) comes first in all four windows.
    X = [[1.0, 2.0, 1.0], [2.0, 9.0, 9.0], [1.0, 9.0, 9.0]]
    W2 = [0.1, 0.2, 0.3, 0.4]
    net = Net.of(X, 0.0, [[1.0]], 0.0, W2, -4.0, pool=2, pool_stride=1)
    values = net.values()
    dL_dA1 = values["dL_dA1"][0, 0]
    assert np.count_nonzero(dL_dA1) == 1
    assert dL_dA1[1, 1] == pytest.approx(values["dL_dP1"].sum(), rel=1e-15)
    assert dL_dA1[1, 1] == pytest.approx(values["dL_dZ2"][0] * sum(W2), rel=1e-15)
    assert_matches_the_oracle(net)  # the four shares are added in another order: to rounding
    wins = np.zeros((3, 3), dtype=int)
    wins[1, 1] = 4
    assert_array_equal(pool_wins(net.trace())[0, 0], wins)
    table = runner.invoke(app, ["step", str(net.file(tmp_path)), "--brief"]).stdout
    assert_array_equal(table_marks(table, "A1 = ReLU(Z1)"), wins)
    results = {r.name: r for r in check(net.problem())}
    # The tied pixels are kinks; the lone 1s and 2s and every parameter are not.
    assert results["X"].kinks == 4 and results["X"].compared == 5
    assert all(r.ok for r in results.values())


# -- extreme shapes -----------------------------------------------------------------------


def random_net(image, kernel, seed=3, **options) -> Net:
    """Random X and W1 of these shapes, B1 = 0.1, W2 sized to fit."""
    rng = np.random.default_rng(seed)
    options = {"pool": 1, **options}
    options.setdefault("pool_stride", options["pool"])
    stride, padding = options.get("stride", 1), options.get("padding", 0)
    Ho, Wo = (ops.output_size(n + 2 * padding, k, stride) for n, k in zip(image, kernel))
    Hp, Wp = (ops.output_size(n, options["pool"], options["pool_stride"]) for n in (Ho, Wo))
    return Net.of(rng.normal(size=image), 0.0, rng.normal(size=kernel), 0.1,
                  rng.normal(size=Hp * Wp), 0.2, **options)  # fmt: skip


def assert_agrees_everywhere(net: Net):
    assert_matches_the_oracle(net)
    assert worst_relative_error(net) < 1e-6
    assert all(r.ok for r in check(net.problem()))


def test_1x1_kernel_scales_every_pixel():
    net = random_net((4, 5), (1, 1), pool=2)
    values = net.values()
    w, b = net.W1[0, 0, 0], net.B1[0]
    assert_array_equal(values["Z1"][0, 0], w * net.X[0] + b)
    assert_array_equal(values["dL_dX"][0], w * values["dL_dZ1"][0, 0])
    assert values["dL_dW1"][0, 0, 0] == pytest.approx(
        float(np.sum(net.X[0] * values["dL_dZ1"][0, 0])), rel=1e-14
    )
    assert_agrees_everywhere(net)


def test_kernel_as_large_as_the_image():
    net = random_net((4, 3), (4, 3))
    net.B1 = np.array([10.0])  # Z1 > 0, so the one gradient flows
    values = net.values()
    assert values["Z1"].shape == (1, 1, 1, 1) and values["Z1"][0, 0, 0, 0] > 0
    dL_dZ1 = values["dL_dZ1"][0, 0, 0, 0]
    assert dL_dZ1 == values["dL_dZ2"][0] * net.W2[0]
    assert_array_equal(values["dL_dW1"][0], dL_dZ1 * net.X[0])
    assert_array_equal(values["dL_dX"][0], dL_dZ1 * net.W1[0])
    assert_agrees_everywhere(net)


def test_kernel_as_large_as_the_padded_image():
    net = random_net((2, 3), (4, 5), padding=1)
    net.B1 = np.array([10.0])
    values = net.values()
    assert values["Z1"].shape == (1, 1, 1, 1)
    dL_dZ1 = values["dL_dZ1"][0, 0, 0, 0]
    assert_array_equal(values["dL_dW1"][0], dL_dZ1 * np.pad(net.X[0], 1))
    assert_array_equal(values["dL_dX"][0], dL_dZ1 * net.W1[0, 1:-1, 1:-1])
    assert_agrees_everywhere(net)


def test_stride_larger_than_the_kernel_skips_pixels():
    # Windows at rows and columns 0-1 and 3-4: rows and columns 2, 5 and 6 are never read.
    net = random_net((7, 7), (2, 2), stride=3)
    net.B1 = np.array([10.0])
    values = net.values()
    assert values["Z1"].shape == (1, 1, 2, 2)
    unseen = np.ones((7, 7), dtype=bool)
    unseen[np.ix_([0, 1, 3, 4], [0, 1, 3, 4])] = False
    assert np.all(values["dL_dX"][0][unseen] == 0.0)
    assert np.all(values["dL_dX"][0][~unseen] != 0.0)
    numeric, _, _ = central_differences(net, "X")
    assert np.all(numeric.reshape(7, 7)[unseen] == 0.0)  # L does not even move
    assert_agrees_everywhere(net)


def test_padding_larger_than_the_kernel_leaves_a_frame_of_bias():
    # X sits at rows and columns 3-5 of the 9×9 padded image; a 2×2 window at row 0, 1,
    # 6 or 7 (or column) sees only zeros: Z1 = B1 there, exactly.
    net = random_net((3, 3), (2, 2), padding=3, pool=2)
    values = net.values()
    assert values["Z1"].shape == (1, 1, 8, 8)
    frame = np.ones((8, 8), dtype=bool)
    frame[2:6, 2:6] = False
    assert np.all(values["Z1"][0, 0][frame] == net.B1[0])
    assert_agrees_everywhere(net)


def test_pool_1_passes_every_cell_through():
    net = random_net((5, 5), (2, 2), pool=1)
    values = net.values()
    assert_array_equal(values["P1"], values["A1"])
    assert_array_equal(values["dL_dA1"], values["dL_dP1"])
    assert_array_equal(pool_wins(net.trace())[0, 0], np.ones((4, 4)))
    assert_agrees_everywhere(net)


@st.composite
def extreme_shapes(draw):
    """A batch and several filters, each kernel dimension 1 or as large as the padded
    image, stride and padding up to 4 (often larger than the kernel), any pool that fits."""
    M, K = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    padding, stride = draw(st.integers(0, 4)), draw(st.integers(1, 4))
    kh = draw(st.sampled_from([1, H + 2 * padding]))
    kw = draw(st.sampled_from([1, W + 2 * padding]))
    Ho = ops.output_size(H + 2 * padding, kh, stride)
    Wo = ops.output_size(W + 2 * padding, kw, stride)
    pool = draw(st.integers(1, min(Ho, Wo)))
    pool_stride = draw(st.integers(1, 3))
    n = K * ops.output_size(Ho, pool, pool_stride) * ops.output_size(Wo, pool, pool_stride)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Net(
        rng.normal(size=(M, H, W)), rng.uniform(size=M), rng.normal(size=(K, kh, kw)),
        rng.normal(size=K), rng.normal(size=n), np.array(rng.normal()),
        {"stride": stride, "padding": padding, "pool": pool, "pool_stride": pool_stride},
    )  # fmt: skip


@settings(max_examples=40, deadline=None, derandomize=True)
@given(extreme_shapes())
def test_extreme_shapes_match_the_oracle(net):
    values, expected = net.values(), net.oracle()
    for name, value in values.items():
        assert_allclose(value, expected[name], rtol=1e-12, atol=1e-12, err_msg=name)
    net.trace()  # and the user-facing pass accepts them


# -- verify at float64's limits -----------------------------------------------------------


def test_verify_judges_answers_at_the_limits_without_a_warning(tmp_path):
    # |answer − correct| = 3.4e308 overflows: still simply wrong, and nothing but the
    # verdict is written (numpy's overflow warning would land on stderr).
    problem = tmp_path / "in.json"
    problem.write_text(json.dumps({"X": [[1.7e308]], "Y": 1, "W1": [[1.0]], "B1": 0,
                                   "W2": [1e-308], "B2": 0, "pool": 1}))  # fmt: skip
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"Z1": [[-1.7e308]], "A1": [[1.7e308]]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["verify", str(problem), str(answers), "-f", "json"])
    assert not caught, [str(w.message) for w in caught]
    assert result.exit_code == 1 and result.stderr == ""
    verdicts = json.loads(result.stdout)["results"]
    assert verdicts["Z1"]["status"] == "wrong" and verdicts["A1"]["status"] == "right"


# -- PyTorch, when installed --------------------------------------------------------------


def torch_cases():
    """Every kind of extreme above whose pass is finite, as (id, Net)."""
    cases = [(f"Z2={z:g},Y={y:g}", with_Z2(z, y)) for z in SATURATED for y in (0.0, 1.0, 0.25)]
    cases += [(f"scales {s}", at_scales(*s)) for s in FINITE_SCALES]
    cases += [(f"subnormal {'+'.join(w)}", with_subnormals(w)) for w in SUBNORMAL_CASES]
    cases += [(f"ties pool {p}/{s}", tied(p, s)) for p, s in [(2, 2), (2, 1), (3, 1)]]
    cases += [
        ("1x1", random_net((4, 5), (1, 1), pool=2)),
        ("kernel = image", random_net((4, 3), (4, 3))),
        ("kernel = padded image", random_net((2, 3), (4, 5), padding=1)),
        ("stride > kernel", random_net((7, 7), (2, 2), stride=3)),
        ("padding > kernel", random_net((3, 3), (2, 2), padding=3, pool=2)),
    ]
    return cases


def test_extremes_agree_with_torch_autograd():
    torch = pytest.importorskip("torch")
    for case, net in torch_cases():
        theirs = torch_pass(torch, *net.arrays(), **net.options)
        values = net.values()
        for name, value in theirs.items():
            expected = value.ravel()
            atol = 1e-9 * float(np.max(np.abs(expected), initial=0.0))
            if case.startswith("Z2="):
                # torch's σ(Z2) = 1/(1 + e^−Z2) is 0 once e^−Z2 overflows (Z2 < −709.78);
                # cnntrace's e^Z2/(1 + e^Z2) keeps the subnormal 4.9e−309 at Z2 = −709.9.
                atol = max(atol, 1e-300)
            if name == "L":
                # torch takes log(e^−m + e^(−Z2−m)) where cnntrace takes log1p(e^−|Z2|): at
                # Z2 = −40, Y = 0 its L is 0.0 and ours log1p(e^−40) = 4.2e−18. Both are
                # within rounding of a computation of size |Z2|.
                atol = 1e-15 * max(1.0, float(np.max(np.abs(values["Z2"]))))
            assert_allclose(np.ravel(values[name]), expected, rtol=1e-9, atol=atol,
                            err_msg=f"{case}: {name}")  # fmt: skip
