"""cnntrace.problem: which inputs the reference form (reference_problem) accepts, and the InputError (with the key
the user must fix) for each it refuses."""

import math

import numpy as np
import pytest

from cnntrace.errors import CnntraceError, InputError
from cnntrace.reference import reference_problem


def inputs(**changed):
    """The seeds' reference problem (6×6 X, 3×3 W1, pool 2 → W2 of 4), with some values changed."""
    values = {
        "X": np.arange(36.0).reshape(6, 6) / 36, "Y": 1.0, "W1": np.ones((3, 3)) / 9, "B1": 0.0,
        "W2": [0.1, 0.2, 0.3, 0.4], "B2": 0.0,
    }  # fmt: skip
    return {**values, **changed}


def filters(problem) -> int:
    """K, the number of filters of W1 as the user wrote it."""
    W1 = problem.inputs["W1"]
    return W1.shape[0] if W1.ndim == 3 else 1


def refused(**changed) -> InputError:
    with pytest.raises(InputError) as raised:
        reference_problem(**inputs(**changed))
    assert isinstance(raised.value, CnntraceError)
    return raised.value


def test_the_reference_problem_is_accepted_with_the_default_options():
    problem = reference_problem(**inputs())
    r = problem.reference
    options = (r.stride, r.padding, r.pool, r.pool_stride, problem.lr)
    assert options == (1, 0, 2, 2, 0.1)
    multi_filter = problem.inputs["W1"].ndim == 3
    assert (problem.M, filters(problem), problem.batched, multi_filter) == (1, 1, False, False)
    assert problem.X.dtype == np.float64 and problem.inputs["W2"].shape == (4,)


# -- the arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X",
    [[1.0, 2.0, 3.0], np.zeros((1, 1, 6, 6)), 5.0, [], [[]], np.zeros((2, 0, 6))],
    ids=["a list", "4 axes", "a number", "empty", "empty rows", "empty batch rows"],
)
def test_X_must_be_a_nonempty_image_or_batch(X):
    assert refused(X=X).key == "X"


@pytest.mark.parametrize(
    "X", [[[1.0, 2.0], [3.0]], [["a", "b"]], {"rows": 2}], ids=["ragged", "text", "a dict"]
)
def test_X_must_be_a_rectangular_array_of_numbers(X):
    assert refused(X=X).key == "X"


@pytest.mark.parametrize(
    "W1",
    [[1.0, 2.0], np.ones((1, 1, 3, 3)), [], np.zeros((2, 0, 3))],
    ids=["a list", "4 axes", "empty", "empty filters"],
)
def test_W1_must_be_a_nonempty_filter_or_stack_of_filters(W1):
    assert refused(W1=W1).key == "W1"


@pytest.mark.parametrize(
    ("X_shape", "W1_shape"),
    [((2, 2), (3, 3)), ((3, 2), (1, 3)), ((2, 5), (3, 1))],
    ids=["both", "wide", "tall"],
)
def test_a_kernel_larger_than_the_image_is_refused(X_shape, W1_shape):
    error = refused(X=np.ones(X_shape), W1=np.ones(W1_shape), pool=1, W2=[1.0])
    assert error.key == "W1"


def test_padding_that_makes_the_kernel_fit_is_accepted():
    # 2×2 framed by 1 zero is 4×4: the 3×3 kernel fits, Z1 is 2×2, pool 2 leaves a single P1.
    problem = reference_problem(**inputs(X=np.ones((2, 2)), W2=[1.0]), padding=1)
    assert problem.reference.padding == 1


@pytest.mark.parametrize(("W1_shape", "pool"), [((5, 5), 3), ((5, 4), 3)], ids=["Z1 2×2", "Z1 2×3"])
def test_a_pool_window_larger_than_Z1_is_refused(W1_shape, pool):
    error = refused(W1=np.ones(W1_shape), W2=[1.0], pool=pool)
    assert error.key == "pool"


def test_a_pool_window_as_large_as_Z1_is_accepted():
    assert reference_problem(**inputs(W1=np.ones((5, 4)), W2=[1.0]), pool=2).reference.pool == 2


@pytest.mark.parametrize(
    "W2",
    [[0.1, 0.2, 0.3], [0.1] * 5, np.ones((2, 2)), np.ones((4, 2)), 0.5],
    ids=["3", "5", "2×2", "4×2", "number"],
)
def test_W2_of_the_wrong_size_is_refused_and_the_message_gives_the_right_length(W2):
    error = refused(W2=W2)
    assert error.key == "W2"
    assert "expected 4 " in error.message


def test_W2_length_follows_the_number_of_filters():
    # Two filters double F: 2 × 2×2 = 8.
    error = refused(W1=np.ones((2, 3, 3)), B1=[0.0, 0.0])
    assert error.key == "W2" and "expected 8 " in error.message
    assert filters(reference_problem(**inputs(W1=np.ones((2, 3, 3)), B1=[0.0, 0.0], W2=np.ones(8)))) == 2


@pytest.mark.parametrize(
    ("W1", "B1"),
    [
        (np.ones((2, 3, 3)), 0.0),  # one number for two filters
        (np.ones((2, 3, 3)), [0.0, 0.0, 0.0]),
        (np.ones((3, 3)), [0.0, 0.0]),
        (np.ones((2, 3, 3)), [[0.0, 0.0], [0.0, 0.0]]),
    ],
    ids=["number for 2", "3 for 2", "2 for 1", "2×2 for 2"],
)
def test_B1_must_hold_one_bias_per_filter(W1, B1):
    error = refused(W1=W1, B1=B1, W2=np.ones(4 * (W1.shape[0] if W1.ndim == 3 else 1)))
    assert error.key == "B1"


@pytest.mark.parametrize("B2", [[0.0, 1.0], [[0.0], [1.0]], [], np.zeros((1, 1, 1, 2))])
def test_B2_must_be_a_single_number(B2):
    assert refused(B2=B2).key == "B2"


@pytest.mark.parametrize(
    ("X_shape", "Y"),
    [((3, 6, 6), [1.0, 0.0]), ((2, 6, 6), 1.0), ((2, 6, 6), [[1.0, 0.0]]), ((6, 6), [1.0, 0.0])],
    ids=["2 labels for 3 images", "a number for 2 images", "a 1×2 matrix", "2 labels for 1 image"],
)
def test_Y_must_hold_one_label_per_image(X_shape, Y):
    assert refused(X=np.ones(X_shape), Y=Y).key == "Y"


@pytest.mark.parametrize(
    "Y", [1.5, -0.1, [0.0, 1.0, 1.0001]], ids=["above", "below", "one of a batch"]
)
def test_labels_must_lie_in_0_to_1(Y):
    X = np.ones((3, 6, 6)) if isinstance(Y, list) else np.ones((6, 6))
    assert refused(X=X, Y=Y).key == "Y"


@pytest.mark.parametrize("Y", [0.0, 1.0, 0.25, [1.0], [0.0, 1.0, 0.5]])
def test_labels_at_and_between_0_and_1_are_accepted(Y):
    X = np.ones((3, 6, 6)) if np.size(Y) == 3 else np.ones((6, 6))
    assert reference_problem(**inputs(X=X, Y=Y)).inputs["Y"].size == np.size(Y)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", ["X", "Y", "W1", "B1", "W2", "B2"])
def test_NaN_or_infinity_anywhere_is_refused_under_its_key(key, bad):
    value = np.array(inputs()[key], dtype=float)
    value.flat[-1] = bad
    error = refused(**{key: value})
    assert error.key == key


# -- the options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("stride", 0), ("stride", -1), ("pool", 0), ("pool_stride", 0), ("padding", -1),
        ("stride", 1.5), ("padding", 0.5), ("pool", 1.5), ("pool_stride", 2.5),
        ("stride", True), ("padding", False), ("pool", True), ("pool_stride", True),
        ("stride", "2"), ("pool", None), ("stride", math.nan), ("padding", math.inf),
    ],
)  # fmt: skip
def test_sizes_must_be_whole_numbers_in_range(option, value):
    with pytest.raises(InputError) as raised:
        reference_problem(**inputs(), **{option: value})
    assert raised.value.key == option


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, math.nan, math.inf, True, False, "0.1", None])
def test_lr_must_be_a_positive_finite_number(lr):
    with pytest.raises(InputError) as raised:
        reference_problem(**inputs(), lr=lr)
    assert raised.value.key == "lr"


def test_integral_floats_and_numpy_integers_are_accepted_as_sizes():
    # 8×8 framed by 1 is 10×10; the 3×3 kernel at stride 2 gives Z1 4×4 and pool 2 P1 2×2.
    sizes = {"stride": 2.0, "padding": np.int64(1), "pool": 2.0, "pool_stride": np.float64(2.0)}
    problem = reference_problem(**inputs(X=np.ones((8, 8))), **sizes)
    r = problem.reference
    built = (r.stride, r.padding, r.pool, r.pool_stride)
    assert built == (2, 1, 2, 2)
    assert all(type(size) is int for size in built)


def test_pool_stride_defaults_to_pool():
    assert reference_problem(**inputs(W2=[1.0]), pool=3).reference.pool_stride == 3
    assert reference_problem(**inputs(W2=np.ones(9)), pool=2, pool_stride=1).reference.pool_stride == 1


def test_lr_is_stored_as_a_float():
    problem = reference_problem(**inputs(), lr=1)
    assert problem.lr == 1.0 and type(problem.lr) is float


# -- general shapes and back --------------------------------------------------------------


def test_general_shapes_add_the_image_and_filter_axes():
    problem = reference_problem(**inputs(W2=np.ones((4, 1)), B2=[[0.5]]))
    weights = problem.general_weights()
    shapes = [problem.general_X().shape, problem.general_target.shape,
              *(weights[p].shape for p in ("W1", "B1", "W2", "B2"))]  # fmt: skip
    # X (M, C, H, W), Y (M, 1), W1 (K, C, kh, kw), B1 (K,), W2 (n_in, n_out), B2 (n_out,)
    assert shapes == [(1, 1, 6, 6), (1, 1), (1, 1, 3, 3), (1,), (4, 1), (1,)]


def test_general_returns_copies_that_leave_the_problem_untouched():
    problem = reference_problem(**inputs())
    weights = problem.general_weights()
    for value in weights.values():
        value.flat[0] = 99.0
    assert problem.inputs["W1"][0, 0] == 1 / 9 and problem.inputs["W2"][0] == 0.1
    assert problem.inputs["B1"] == 0.0 and problem.inputs["B2"] == 0.0
    assert all(value.flat[0] != 99.0 for value in problem.general_weights().values())


def test_present_drops_the_axes_the_user_did_not_write():
    from cnntrace.tracer import run

    single = reference_problem(**inputs())
    assert single.present("Z1", np.zeros((1, 1, 4, 4))).shape == (4, 4)
    assert single.present("F", np.zeros((1, 4))).shape == (4,)
    assert single.present("Z2", np.zeros((1, 1))).shape == ()
    three_filters = {"W1": np.ones((3, 3, 3)), "B1": [0.0] * 3, "W2": np.ones(12)}
    batch = reference_problem(**inputs(X=np.ones((2, 6, 6)), Y=[0.0, 1.0], **three_filters))
    assert batch.present("Z1", np.zeros((2, 3, 4, 4))).shape == (2, 3, 4, 4)
    assert batch.present("F", np.zeros((2, 12))).shape == (2, 12)
    assert batch.present("Z2", np.zeros((2, 1))).shape == (2,)
    assert run(batch).leading_axes("Z1") == ("image", "filter")


@pytest.mark.parametrize(
    "key, value",
    [("X", [["1", "2"], ["3", "4"]]), ("W1", [[True]]), ("B1", "0"), ("Y", "1"), ("W2", [None] * 4)],
)
def test_strings_booleans_and_none_inside_arrays_are_refused(key, value):
    inputs = {
        "X": [[0.1, 0.2], [0.3, 0.4]], "Y": 1, "W1": [[0.5]], "B1": 0.0,
        "W2": [0.1] * 4, "B2": 0.0, "pool": 1,
    }  # fmt: skip
    inputs[key] = value
    with pytest.raises(InputError) as caught:
        reference_problem(**inputs)
    assert caught.value.key == key


def test_a_single_weight_is_named_in_the_singular():
    with pytest.raises(InputError, match="expected 1 weight, one per entry"):
        reference_problem([[0.1, 0.2], [0.3, 0.4]], 1, [[0.5, 0.5], [0.5, 0.5]], 0.0, [0.1, 0.2], 0.0, pool=1)


# -- sizes refused before any work ---------------------------------------------------------


def test_huge_padding_is_refused_naming_padding_before_any_work():
    with pytest.raises(InputError) as caught:
        reference_problem(np.ones((6, 6)), 1, np.ones((3, 3)), 0, [1.0] * 4, 0, padding=100_000)
    error = caught.value
    assert error.key == "padding"
    assert "Z1 is 200004×200004" in error.message and "TiB of memory" in error.message and "allows 4 GiB" in error.message


def test_a_kernel_that_would_take_hours_is_refused_by_its_multiply_adds():
    from cnntrace.reference import check_pass_size

    with pytest.raises(InputError) as caught:
        check_pass_size(1, 1, (3000, 3000), (1500, 1500))
    assert caught.value.key == "X" and "multiply-adds" in caught.value.message


def test_a_pool_window_that_would_take_minutes_is_refused_naming_pool():
    """The pooling loops over the window's offsets: a tiny file with a huge window is work."""
    with pytest.raises(InputError) as caught:
        reference_problem(np.ones((6, 6)), 1, np.ones((3, 3)), 0, [1.0], 0, padding=1000, pool=2000)
    assert caught.value.key == "pool" and "2000×2000 pool window" in caught.value.message


def test_a_batch_is_checked_by_the_pass_that_holds_it(monkeypatch):
    """Each image must fit when the file is read; the whole batch only where a pass holds it
    all at once (step), while training holds one mini-batch."""
    import cnntrace.limits
    from cnntrace.tracer import run
    from cnntrace.train import train

    problem = reference_problem(np.ones((50, 6, 6)), [1.0] * 50, np.ones((3, 3)), 0, [0.1] * 4, 0)
    per_image = 8 * (2 * 36 + 2 * 36 + 7 * 16 + 4 * 4)
    weights = 8 * (cnntrace.limits.WEIGHT_COPIES + cnntrace.limits.TRAIN_COPIES) * (9 + 1 + 4 + 1)  # training's copies
    monkeypatch.setattr(cnntrace.limits, "MAX_PASS_BYTES", 10 * per_image + weights)
    with pytest.raises(InputError, match="50 images of 6×6"):
        run(problem)
    assert len(list(train(problem, 1, batch_size=10))) == 1
    with pytest.raises(InputError, match="11 images"):
        next(train(problem, 1, batch_size=11))


def test_sizes_of_a_large_but_sane_input_pass():
    from cnntrace.reference import check_pass_size

    check_pass_size(20_000, 1, (28, 28), (3, 3))  # the benchmark's dataset
    check_pass_size(1, 1, (600, 600), (3, 3))
