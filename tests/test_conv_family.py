"""The convolution family of issue 19: dilation, groups, no bias, four-sided and "same"
padding, and the transposed convolution. Each option's op pair against its naive twin on
every path (the window matrix, chunks of images, the offset loop) and against PyTorch; the
published and hand-checkable values; the mistakes verify names; each bad description's
one-line error."""

from __future__ import annotations

import json
import warnings

import naive
import numpy as np
import pytest
from networks import make
from typer.testing import CliRunner

from cnntrace import ops
from cnntrace.api import trace_input
from cnntrace.cli import app
from cnntrace.io import problem_from_dict
from cnntrace.problem import parse_layer
from cnntrace.verify import verify

runner = CliRunner()

# stride, padding (rows, cols or four sides), dilation, groups, (M, C, K), kernel
CONV_CASES = [
    ((1, 1), (0, 0), (1, 1), 1, (2, 2, 3), (3, 3)),
    ((1, 1), (1, 0, 2, 1), (2, 1), 2, (2, 4, 2), (3, 2)),
    ((2, 1), (1, 2), (1, 3), 4, (2, 4, 8), (2, 2)),
    ((1, 2), (0, 2, 1, 0), (2, 2), 1, (3, 1, 3), (2, 3)),
    ((2, 2), (2, 2), (3, 2), 3, (2, 6, 3), (2, 2)),
]
# stride, padding, output_padding, dilation, groups, (M, C, K), kernel
TRANSPOSE_CASES = [
    ((1, 1), (0, 0), (0, 0), (1, 1), 1, (1, 1, 1), (2, 2)),
    ((2, 2), (1, 0), (1, 0), (1, 1), 2, (2, 2, 4), (3, 2)),
    ((2, 3), (1, 2), (0, 2), (2, 1), 2, (2, 2, 4), (3, 3)),
    ((1, 1), (0, 0), (1, 1), (2, 2), 1, (1, 2, 3), (2, 3)),
    ((3, 2), (2, 1), (2, 1), (1, 3), 3, (2, 3, 6), (2, 2)),
]


def conv_case(case, seed=0):
    stride, padding, dilation, groups, (M, C, K), (kh, kw) = case
    rng = np.random.default_rng(seed)
    X, W, B = rng.normal(size=(M, C, 7, 8)), rng.normal(size=(K, C // groups, kh, kw)), rng.normal(size=K)
    return X, W, B


def transpose_case(case, seed=0):
    stride, padding, output_padding, dilation, groups, (M, C, K), (kh, kw) = case
    rng = np.random.default_rng(seed)
    X, W, B = rng.normal(size=(M, C, 3, 4)), rng.normal(size=(C, K // groups, kh, kw)), rng.normal(size=K)
    return X, W, B


# -- the op pairs against their naive twins, on every path -------------------------------------


def on_path(monkeypatch, path, windows_per_image):
    """Set the convolution's limits so that a batch of several images, each with
    ``windows_per_image`` (C·kh·kw·Ho·Wo) numbers to copy, goes through ``path``: "chunks"
    keeps their windows for the backward pass, "chunks copied again" does not."""
    if path.startswith("chunks"):
        per_image = windows_per_image * 8  # one image a chunk
        monkeypatch.setattr(ops, "IM2COL_BYTES", per_image)
        monkeypatch.setattr(ops, "CHUNK_BYTES", per_image)
        if path == "chunks copied again":
            monkeypatch.setattr(ops, "KEPT_BYTES", 0)
    elif path == "loop":
        monkeypatch.setattr(ops, "IM2COL_BYTES", 1)


@pytest.mark.parametrize("path", ["windows", "chunks", "chunks copied again", "loop"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_options_agree_with_the_naive_twin_on_every_path(monkeypatch, case, path):
    stride, padding, dilation, groups = case[:4]
    X, W, B = conv_case(case)
    Z, _ = ops.conv2d_forward(X, W, B, stride, padding, dilation, groups)
    on_path(monkeypatch, path, X.shape[1] * W[0, 0].size * Z[0, 0].size)
    Z, cache = ops.conv2d_forward(X, W, B, stride, padding, dilation, groups)
    assert (cache.windows is not None) == (path in ("windows", "chunks"))
    np.testing.assert_allclose(Z, naive.conv_forward(X, W, B, stride, padding, dilation, groups), atol=1e-12)
    dL_dZ = np.random.default_rng(1).normal(size=Z.shape)
    for ours, twin in zip(ops.conv2d_backward(dL_dZ, cache),
                          naive.conv_backward(dL_dZ, X, W, stride, padding, dilation, groups)):  # fmt: skip
        np.testing.assert_allclose(ours, twin, atol=1e-12)


@pytest.mark.parametrize("path", ["windows", "loop"])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_agrees_with_its_naive_twin(monkeypatch, case, path):
    stride, padding, output_padding, dilation, groups = case[:5]
    X, W, B = transpose_case(case)
    on_path(monkeypatch, path, 1)
    Z, cache = ops.conv_transpose2d_forward(X, W, B, stride, padding, output_padding, dilation, groups)
    twin = naive.conv_transpose_forward(X, W, B, stride, padding, output_padding, dilation, groups)
    np.testing.assert_allclose(Z, twin, atol=1e-12)
    dL_dZ = np.random.default_rng(1).normal(size=Z.shape)
    for ours, expected in zip(ops.conv_transpose2d_backward(dL_dZ, cache),
                              naive.conv_transpose_backward(dL_dZ, X, W, stride, padding, output_padding,
                                                            dilation, groups)):  # fmt: skip
        np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_no_bias_adds_nothing_and_the_inputs_stay_as_they_were():
    X, W, B = conv_case(CONV_CASES[1])
    X0, W0 = X.copy(), W.copy()
    with_zero, _ = ops.conv2d_forward(X, W, np.zeros(len(W)), (1, 1), (1, 0, 2, 1), (2, 1), 2)
    without, _ = ops.conv2d_forward(X, W, None, (1, 1), (1, 0, 2, 1), (2, 1), 2)
    assert np.array_equal(with_zero, without)
    transposed, _ = ops.conv_transpose2d_forward(X[:, :2], W, None, (2, 2), (1, 1), (1, 1))
    assert transposed.shape == (2, 2, 6 * 2 - 2 + 2 + 1 + 1, 7 * 2 - 2 + 1 + 1 + 1)
    np.testing.assert_allclose(transposed, naive.conv_transpose_forward(X[:, :2], W, None, 2, 1, 1), atol=1e-12)
    assert np.array_equal(X, X0) and np.array_equal(W, W0)


def test_the_conv_transpose_is_the_convs_input_gradient():
    """conv_transpose(X, W) = dL/dX of conv(·, W) with X as dL/dZ: the scatter's definition."""
    rng = np.random.default_rng(3)
    X_big, W = rng.normal(size=(2, 4, 9, 8)), rng.normal(size=(6, 2, 3, 2))
    Z, cache = ops.conv2d_forward(X_big, W, None, (2, 1), (1, 1), (1, 2), 2)
    dL_dZ = rng.normal(size=Z.shape)
    dL_dX = ops.conv2d_backward(dL_dZ, cache)[0]
    scattered, _ = ops.conv_transpose2d_forward(dL_dZ, W, None, (2, 1), (1, 1), (0, 0), (1, 2), 2)
    np.testing.assert_allclose(scattered, dL_dX, atol=1e-13)


# -- PyTorch, float64 --------------------------------------------------------------------------


def torch_conv(torch, X, W, B, stride, padding, dilation, groups):
    functional = torch.nn.functional
    top, bottom, left, right = ops.sides(padding)
    leaves = [torch.tensor(a, requires_grad=True) for a in (X, W, B)]
    Z = functional.conv2d(functional.pad(leaves[0], (left, right, top, bottom)), leaves[1], leaves[2],
                          stride=stride, dilation=dilation, groups=groups)  # fmt: skip
    return Z, leaves


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_options_agree_with_torch(case):
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    stride, padding, dilation, groups = case[:4]
    for seed in range(3):
        X, W, B = conv_case(case, seed)
        Z, cache = ops.conv2d_forward(X, W, B, stride, padding, dilation, groups)
        Zt, leaves = torch_conv(torch, X, W, B, stride, padding, dilation, groups)
        dL_dZ = np.random.default_rng(seed + 10).normal(size=Z.shape)
        Zt.backward(torch.tensor(dL_dZ))
        np.testing.assert_allclose(Z, Zt.detach().numpy(), rtol=1e-9, atol=1e-12)
        for ours, leaf in zip(ops.conv2d_backward(dL_dZ, cache), leaves):
            np.testing.assert_allclose(ours, leaf.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_agrees_with_torch(case):
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    stride, padding, output_padding, dilation, groups = case[:5]
    for seed in range(3):
        X, W, B = transpose_case(case, seed)
        Z, cache = ops.conv_transpose2d_forward(X, W, B, stride, padding, output_padding, dilation, groups)
        leaves = [torch.tensor(a, requires_grad=True) for a in (X, W, B)]
        Zt = torch.nn.functional.conv_transpose2d(*leaves, stride=stride, padding=padding,
                                                  output_padding=output_padding, groups=groups, dilation=dilation)
        dL_dZ = np.random.default_rng(seed + 10).normal(size=Z.shape)
        Zt.backward(torch.tensor(dL_dZ))
        np.testing.assert_allclose(Z, Zt.detach().numpy(), rtol=1e-9, atol=1e-12)
        for ours, leaf in zip(ops.conv_transpose2d_backward(dL_dZ, cache), leaves):
            np.testing.assert_allclose(ours, leaf.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_same_padding_splits_as_torch_does():
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    rng = np.random.default_rng(4)
    for kernel, dilation in (((2, 3), (1, 1)), ((4, 2), (1, 3)), ((3, 3), (2, 2))):
        X, W = rng.normal(size=(1, 2, 6, 7)), rng.normal(size=(3, 2, *kernel))
        layer = parse_layer({"type": "conv", "padding": "same", "dilation": list(dilation)}, "layers[0]")
        Z, _ = ops.conv2d_forward(X, W, None, (1, 1), layer.pad(kernel), dilation)
        with warnings.catch_warnings():  # torch's note that it copies the input to pad it
            warnings.simplefilter("ignore", UserWarning)
            expected = torch.nn.functional.conv2d(torch.tensor(X), torch.tensor(W), padding="same", dilation=dilation)
        assert Z.shape == (1, 3, 6, 7)
        np.testing.assert_allclose(Z, expected.numpy(), rtol=1e-9, atol=1e-12)


# -- published and hand-checkable values ---------------------------------------------------------


def step(data: dict):
    return trace_input(data)


def test_d2l_transposed_convolution():
    """d2l.ai, "Transposed Convolution": X = K = [[0, 1], [2, 3]]; with stride 1 a 3×3 output,
    with stride 2 a 4×4 one, and with padding 1 the stride-1 output without its border."""
    X = K = [[0.0, 1.0], [2.0, 3.0]]

    def output(**options):
        data = {"X": X, "W1": K, "layers": [{"type": "conv_transpose", "bias": False, **options}],
                "grad": np.zeros((3 + options.get("stride", 1) - 1,) * 2).tolist()}  # fmt: skip
        if "padding" in options:
            data["grad"] = [[0.0]]
        return step(data)["Z1"].tolist()

    assert output() == [[0, 0, 1], [0, 4, 6], [4, 12, 9]]
    assert output(stride=2) == [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]
    assert output(padding=1) == [[4]]


def test_a_dilated_convolution_by_hand():
    """X = 0…24 in a 5×5 map, W = [[1, 0], [0, 1]] dilated by 2: each Z is X[h,w] + X[h+2,w+2]
    = (5h + w) + (5h + w + 12)."""
    data = {"X": np.arange(25.0).reshape(5, 5).tolist(), "W1": [[1.0, 0.0], [0.0, 1.0]], "B1": 0.0,
            "layers": [{"type": "conv", "dilation": 2}], "grad": np.ones((3, 3)).tolist()}  # fmt: skip
    t = step(data)
    assert t["Z1"].tolist() == [[12, 14, 16], [22, 24, 26], [32, 34, 36]]
    # With dL/dZ all ones, dL/dW sums the cells each tap met: W[0,0] met X[0..2, 0..2],
    # W[0,1] X[0..2, 2..4], W[1,0] X[2..4, 0..2], W[1,1] X[2..4, 2..4].
    cells = np.arange(25.0).reshape(5, 5)
    assert t["dL_dW1"].tolist() == [[cells[0:3, 0:3].sum(), cells[0:3, 2:5].sum()],
                                    [cells[2:5, 0:3].sum(), cells[2:5, 2:5].sum()]]  # fmt: skip
    assert t["dL_dW1"].tolist() == [[54, 72], [144, 162]]


def test_a_grouped_convolution_by_hand():
    """Two channels in two groups: filter 0 sums channel 0's 2×2 map (1+2+3+4 = 10), filter 1
    takes channel 1's corners, 5 − 8 = −3; neither sees the other's channel."""
    data = {"X": [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]],
            "W1": [[[[1.0, 1.0], [1.0, 1.0]]], [[[1.0, 0.0], [0.0, -1.0]]]], "B1": [0.0, 0.5],
            "layers": [{"type": "conv", "groups": 2}], "grad": [[[1.0]], [[2.0]]]}  # fmt: skip
    t = step(data)
    assert t["Z1"].tolist() == [[[10.0]], [[-2.5]]]
    assert t["dL_dX"].tolist() == [[[1, 1], [1, 1]], [[2, 0], [0, -2]]]
    assert t["dL_dW1"].tolist() == [[[[1, 2], [3, 4]]], [[[10, 12], [14, 16]]]]
    assert t["dL_dB1"].tolist() == [1, 2]


def test_a_depthwise_conv_without_bias_has_no_B():
    data = make("dilated-grouped-conv", 0)
    t = step(data)
    assert "W2" in t.problem.network.params and "B2" not in t.problem.network.params
    assert "dL_dB2" not in t and "dL_dW2" in t and "B2" not in t.update and "W2" in t.update
    assert np.shape(t["Z2"]) == np.shape(t["A1"])  # "same": the size kept


def test_each_layer_writes_its_options_back():
    for description in ({"type": "conv", "padding": [1, 0, 2, 1], "dilation": [2, 1], "groups": 2, "bias": False},
                        {"type": "conv", "padding": "same", "dilation": 3}, {"type": "conv", "padding": "valid"},
                        {"type": "conv_transpose", "stride": 2, "padding": 1, "output_padding": [1, 0],
                         "dilation": 2, "groups": 3, "bias": False}):  # fmt: skip
        layer = parse_layer(description, "layers[0]")
        again = parse_layer(layer.options(), "layers[0]")
        assert again == layer
    assert parse_layer({"type": "conv", "padding": [1, 1, 2, 2]}, "k").padding == (1, 2)
    assert parse_layer({"type": "conv", "padding": "valid"}, "k").pad((3, 3)) == (0, 0)


# -- verify names each kind's mistakes ---------------------------------------------------------------


def mistaken(t, layer, mistake_id, stage):
    """The learner's answer for ``stage`` made with ``mistake_id`` at ``layer``."""
    problem = t.problem
    values = problem.network.forward_backward(problem.general_X(), problem.general_target, problem.weights)
    values["X"] = problem.general_X()
    (mistake,) = [m for m in layer.mistakes(values, problem.weights) if m.id == mistake_id and stage in m.given]
    return problem.present(stage, mistake.given[stage]).tolist()


@pytest.mark.parametrize("network_id, position, mistake_id, stages", [
    ("conv-transpose-net", 0, "kernel_not_flipped", ("Z1", "dL_dW1")),
    ("conv-transpose-net", 2, "kernel_not_flipped", ("dL_dA1",)),
    ("dilated-grouped-conv", 0, "dilation_ignored", ("Z1", "dL_dW1", "dL_dX")),
    ("dilated-grouped-conv", 2, "dilation_ignored", ("Z2", "dL_dW2")),
    ("dilated-grouped-conv", 0, "groups_ignored", ("Z1", "dL_dW1")),
])  # fmt: skip
def test_verify_names_the_mistake(network_id, position, mistake_id, stages):
    t = step(make(network_id, 0))
    layer = t.problem.network.layers[position]
    for stage in stages:
        answer = mistaken(t, layer, mistake_id, stage)
        (verdict,) = verify(t, {stage: answer})
        assert verdict.status == "wrong", stage
        assert mistake_id in [d.id for d in verdict.diagnosis], (stage, verdict.diagnosis)


# -- each bad description: one line naming the file and the key ---------------------------------------


def transpose_net(**layer) -> dict:
    data = make("conv-transpose-net", 0)
    data["layers"] = [{**data["layers"][0], **layer}, *data["layers"][1:]]
    return data


def grouped_net(**layer) -> dict:
    data = make("dilated-grouped-conv", 0)
    data["layers"] = [{**data["layers"][0], **layer}, *data["layers"][1:]]
    return data


BAD = [
    ("groups not dividing the channels", grouped_net(groups=3), "layers[0].groups: 3 groups must divide the channels, and X has 4"),
    ("groups not dividing the filters", {**grouped_net(groups=4), "W1": np.ones((6, 1, 3, 2)).tolist(), "B1": [0.0] * 6},
     "layers[0].groups: 4 groups must divide the filters, and W has 6"),
    ("W of the wrong group shape", {**grouped_net(), "W1": np.ones((4, 4, 3, 2)).tolist()},
     "W1: W is K×(C/groups)×kh×kw, and X has 4 channels in 2 groups: K×2×kh×kw, got shape 4×4×3×2"),
    ("a dilation of 0", grouped_net(dilation=0), "layers[0].dilation: must be at least 1"),
    ("\"same\" with a stride", grouped_net(padding="same", stride=2),
     "layers[0].padding: \"same\" padding needs stride 1 (PyTorch refuses it for a strided convolution)"),
    ("a padding of three numbers", grouped_net(padding=[1, 1, 1]), "layers[0].padding: padding is a number, [rows, cols] or [top, bottom, left, right], got 3 numbers"),
    ("a padding that is other text", grouped_net(padding="full"), "layers[0].padding: padding is a number"),
    ("a dilated kernel too large", grouped_net(dilation=4), "W1: the 3×2 kernel, dilated 4 to 9×5, is larger than the 5×6 padded image"),
    ("a bias left in", {**grouped_net(bias=False)}, "B1: the network has no such weight"),
    ("output_padding not below the stride", transpose_net(output_padding=2),
     "layers[0].output_padding: output_padding must be smaller than the stride or the dilation (as PyTorch)"),
    ("transpose groups", transpose_net(groups=4), "layers[0].groups: 4 groups must divide the channels, and X has 2"),
    ("transpose W's channels", {**transpose_net(groups=1), "W1": np.ones((3, 1, 3, 3)).tolist()},
     "W1: W is C×(K/groups)×kh×kw (PyTorch's order) with C = 3 channels, but X has 2"),
    ("transpose padding cropping all", transpose_net(padding=3, output_padding=0), "layers[0].padding: the padding 3 crops the whole output"),
    ("transpose \"same\"", transpose_net(padding="same"), "layers[0].padding: expected a whole number"),
]  # fmt: skip


@pytest.mark.parametrize("data, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_each_bad_description_is_one_line_naming_the_file_and_the_key(tmp_path, data, fragment):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["step", str(path), "--format", "json"])
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"cnntrace: {path}: ")
    assert fragment in lines[0], lines[0]


# -- every command --------------------------------------------------------------------------------


@pytest.mark.parametrize("network_id", ["dilated-grouped-conv", "conv-transpose-net"])
def test_every_command_runs_on_the_new_options(tmp_path, network_id):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(make(network_id, 0)))
    for args in (["step", path, "--format", "markdown"], ["step", path, "--format", "latex"],
                 ["step", path, "--format", "csv"], ["step", path, "--html", tmp_path / "page.html"],
                 ["check", path], ["sheet", path], ["train", path, "--epochs", "2"]):  # fmt: skip
        result = runner.invoke(app, [str(arg) for arg in args])
        assert result.exit_code == 0, (args, result.stderr)
    for flags in (["--like", path], ["--hand", "--like", path]):
        fresh = runner.invoke(app, ["init", *map(str, flags), "--seed", "2"])
        assert fresh.exit_code == 0, fresh.stderr
        again = tmp_path / "fresh.json"
        again.write_text(fresh.stdout)
        assert problem_from_dict(json.loads(fresh.stdout)).network.describe() == \
            problem_from_dict(make(network_id, 0)).network.describe()  # fmt: skip
        assert runner.invoke(app, ["step", str(again), "--format", "json"]).exit_code == 0
    schema = json.loads(runner.invoke(app, ["schema"]).stdout)
    text = json.dumps(schema)
    assert "output_padding" in text and "dilation" in text and "groups" in text and "conv_transpose" in text


def test_the_quiz_names_the_transposed_kernel_not_flipped(tmp_path):
    data = make("conv-transpose-net", 0)
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data))
    t = step(data)
    wrong = mistaken(t, t.problem.network.layers[0], "kernel_not_flipped", "Z1")
    typed = [" ".join(repr(float(v)) for v in np.ravel(values)) for values in (wrong, t["A1"], t["Z2"])]
    result = runner.invoke(app, ["quiz", str(path), "--only", "Z1,A1,Z2", "--tries", "1"], input="\n".join(typed) + "\n")
    assert result.exit_code == 1, result.stderr  # not every answer right
    assert result.stdout == "score 2/3\n"
    assert "[kernel_not_flipped]" in result.stderr, result.stderr


def test_a_padded_conv_transpose_shows_its_scatter_before_the_crop():
    t = step(make("conv-transpose-net", 0))
    extra = t.annotations["Z1"].extra
    ph, pw = extra.border
    assert (ph, pw) == (1, 1) and "crops off" in extra.note
    np.testing.assert_array_equal(np.asarray(extra.values)[:, :, ph:-ph, pw:-pw], t["Z1"])
