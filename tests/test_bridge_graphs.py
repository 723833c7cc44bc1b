"""Skip connections through PyTorch and ONNX (issue 21): a ResNet basic block with batch norm
(torchvision's BasicBlock, with and without its 1×1 downsample projection) read through
``from_torch`` (its torch.fx trace), through a state_dict with ``--layers`` and through
``torch.onnx.export`` and ``import``, each tracing to PyTorch autograd's numbers in float64:
the loss, dL/dX and every weight's gradient from the model itself, and every matrix of the
trace (each layer's output and gradient, each path's part at a fork) from the script
``export --to torch`` writes, run at float64's tight tolerances."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.errors import InputError
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.naming import grad
from cnntrace.tracer import run
from tests.kinds import ALL_CASES, make
from tests.test_bridge import SAMPLES, assert_agrees, imported_onnx, repro, run_script, to_onnx


def basic_block_net(nn, downsample: bool):
    """torchvision's BasicBlock as its source writes it (``out += identity``), then a global
    average pool and a dense layer of 3 classes."""

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            if downsample:
                projection = nn.Sequential(nn.Conv2d(2, 4, 1, 2, bias=False), nn.BatchNorm2d(4))
                self.block = BasicBlock(2, 4, stride=2, downsample=projection)
            else:
                self.block = BasicBlock(2, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4 if downsample else 2, 3)

        def forward(self, x):
            return self.fc(self.pool(self.block(x)).flatten(1))

    return Net()


#: The layers a user writes for the blocks' state_dicts (``--layers``): the projection reads
#: X, and the add the main path's Z4 with the projection's Z6.
LAYERS = {
    "plain": [{"type": "conv", "padding": [1, 1], "bias": False}, "batchnorm", "relu",
              {"type": "conv", "padding": [1, 1], "bias": False}, "batchnorm", {"type": "add", "from": "X"}, "relu",
              "global_avgpool", "flatten", "dense"],
    "downsample": [{"type": "conv", "stride": [2, 2], "padding": [1, 1], "bias": False}, "batchnorm", "relu",
                   {"type": "conv", "padding": [1, 1], "bias": False}, "batchnorm",
                   {"type": "conv", "stride": [2, 2], "bias": False, "input": "X"}, "batchnorm",
                   {"type": "add", "input": "Z4", "from": "Z6"}, "relu", "global_avgpool", "flatten", "dense"],
}  # fmt: skip


def block_and_data(torch, block: str):
    torch.manual_seed(1)
    model = basic_block_net(torch.nn, block == "downsample").double()
    with torch.no_grad():  # batch norms that are not PyTorch's fresh 1, 0, 0, 1
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    X = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    return model, X, torch.tensor([0, 2, 1])


def assert_every_matrix_agrees(trace, tmp_path):
    """The script export --to torch writes, run at float64's tight tolerances: every matrix of
    the trace against PyTorch's (and it goes red when a path's part at the fork changes)."""
    path = repro(trace, tmp_path)
    text = path.read_text().replace("RTOL, ATOL = 1e-07, 1e-07", "RTOL, ATOL = 1e-09, 1e-12")
    path.write_text(text)
    status, out = run_script(path)
    assert status == 0, out
    assert f"{len(trace.stages)} of {len(trace.stages)} matrices agree" in out
    fork = next(stage.name for stage in trace.stages if "_via_" in stage.name)
    start = text.index(f"    {fork!r}: array([", text.index("EXPECTED = {")) + len(f"    {fork!r}: array([")
    end = text.index(",", start)
    path.write_text(text[:start] + repr(float(text[start:end]) + 1e-6) + text[end:])
    status, out = run_script(path)
    assert status == 1 and [line.split()[1] for line in out.splitlines() if line.startswith("MISMATCH")] == [fork]


BLOCKS = ["plain", "downsample"]


@pytest.mark.parametrize("block", BLOCKS)
def test_from_torch_reads_a_basic_block_to_autograds_numbers(torch, block, tmp_path):
    import cnntrace

    model, X, Y = block_and_data(torch, block)
    data = cnntrace.from_torch(model, X, Y, loss=torch.nn.CrossEntropyLoss())
    assert data["layers"] == [*LAYERS[block], "softmax"]
    trace = cnntrace.trace_input(json.loads(json.dumps(data)))
    assert_agrees(torch, trace, model, X, Y)
    assert_every_matrix_agrees(trace, tmp_path)


@pytest.mark.parametrize("block", BLOCKS)
def test_a_basic_blocks_state_dict_with_layers_traces_to_autograds_numbers(torch, block, tmp_path):
    model, X, Y = block_and_data(torch, block)
    layers = tmp_path / "net.json"
    layers.write_text(json.dumps({"layers": LAYERS[block], "loss": "cross_entropy"}))
    state = tmp_path / "block.pt"
    torch.save(model.state_dict(), state)
    np.save(tmp_path / "x.npy", X.numpy())
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(state), "--layers", str(layers), "--input", str(tmp_path / "x.npy"),
                                      "--target", json.dumps(Y.tolist()), "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    trace = run(load_problem(output))
    assert_agrees(torch, trace, model, X, Y)
    assert_every_matrix_agrees(trace, tmp_path)


@pytest.mark.parametrize("block", BLOCKS)
def test_a_basic_block_exported_to_onnx_imports_and_traces_to_autograds_numbers(torch, block, tmp_path):
    model, X, Y = block_and_data(torch, block)
    to_onnx(torch, model, X, tmp_path / "block.onnx")
    output = imported_onnx(tmp_path / "block.onnx", X, Y.tolist(), "cross_entropy", tmp_path)
    assert json.loads(output.read_text())["layers"] == [*LAYERS[block], "softmax"]
    trace = run(load_problem(output))
    assert_agrees(torch, trace, model, X, Y)
    assert_every_matrix_agrees(trace, tmp_path)


def test_a_concat_skip_reads_from_torch_and_onnx_alike(torch, tmp_path):
    import cnntrace

    nn = torch.nn

    class Dense(nn.Module):  # DenseNet's join: the block's input beside what it made
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.head = nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Linear(5 * 16, 2)

        def forward(self, x):
            return self.head(torch.flatten(torch.cat([self.relu(self.conv(x)), x], dim=1), 1))

    torch.manual_seed(2)
    model, X, Y = Dense().double(), torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.tensor([1, 0])
    data = cnntrace.from_torch(model, X, Y, loss="cross_entropy")
    assert data["layers"][:3] == [{"type": "conv", "padding": [1, 1]}, "relu", {"type": "concat", "from": "X"}]
    trace = cnntrace.trace_input(data)
    assert_agrees(torch, trace, model, X, Y)
    to_onnx(torch, model, X, tmp_path / "dense.onnx")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "dense.onnx"), "--grad", "[[1, 0], [0, 1]]",
                                      "-o", str(tmp_path / "imported.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "imported.json").read_text())["layers"] == data["layers"][:-1]


def test_export_to_onnx_round_trips_a_projection_block(tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    import cnntrace

    rng = np.random.default_rng(3)
    shapes = {"W1": (4, 2, 3, 3), "W2": (4,), "B2": (4,), "W3": (4, 4, 3, 3), "W4": (4,), "B4": (4,),
              "W5": (4, 2, 1, 1), "W6": (4,), "B6": (4,), "W7": (4, 3), "B7": (3,)}
    data = {"X": rng.normal(size=(2, 2, 4, 4)).round(3).tolist(), "layers": [*LAYERS["downsample"], "softmax"],
            "Y": [1, 0], "loss": "cross_entropy", **{name: rng.normal(size=shape).round(3).tolist()
                                                     for name, shape in shapes.items()}}  # fmt: skip
    path = tmp_path / "block.json"
    path.write_text(json.dumps(data))
    trace = cnntrace.trace_input(data)
    model = tmp_path / "block.onnx"
    assert CliRunner().invoke(app, ["export", str(path), "--to", "onnx", "-o", str(model)]).exit_code == 0
    back = tmp_path / "back.json"
    result = CliRunner().invoke(app, ["import", str(model), "--input", str(path), "--target", "[1, 0]",
                                      "--loss", "cross_entropy", "-o", str(back)])  # fmt: skip
    assert result.exit_code == 0, result.output
    imported = json.loads(back.read_text())
    assert imported["layers"] == data["layers"]
    for name, value in trace.problem.general_weights().items():
        np.testing.assert_array_equal(imported[name], value)


def test_a_module_fx_cannot_read_is_named(torch):
    import cnntrace

    nn = torch.nn

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return (self.conv(x) + 1.0).flatten(1)

    with pytest.raises(InputError, match=r"^add: add of anything but matrices the network made"):
        cnntrace.from_torch(Scaled(), torch.zeros(1, 1, 5, 5), torch.zeros(1, 9), loss="mse")

    class Gated(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    with pytest.raises(InputError, match=r"^mul: mul is not a function cnntrace reads"):
        cnntrace.from_torch(Gated(), torch.zeros(1, 3), torch.zeros(1, 3), loss="mse")


@pytest.mark.parametrize(("op", "attributes", "inputs", "message"), [
    ("Add", {}, ("R", "W"), "/layer1/conv2: Add of a constant (cnntrace merges earlier matrices only)"),
    ("Concat", {"axis": 0}, ("R", "X"), "/layer1/conv2: Concat along axis 0 (cnntrace joins along the channels, axis 1)"),
    ("Mul", {}, ("R", "X"), "/layer1/conv2: Mul is not an operator cnntrace reads"),
    ("Conv", {"kernel_shape": [3, 3]}, ("R", "X"), "/layer1/conv2: Conv of 2 matrices (A0, X): cnntrace's layer reads one"),
])  # fmt: skip
def test_a_merge_cnntrace_cannot_express_is_named(op, attributes, inputs, message, tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    from onnx import helper

    from tests.test_bridge import refused_model

    model = tmp_path / "model.onnx"
    refused_model(model, op, attributes, inputs=inputs, extra=[helper.make_node("Relu", ["X"], ["R"], name="/relu")])
    output = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["import", str(model), "--grad", "1", "-o", str(output)])
    assert result.exit_code == 2 and result.stdout == ""
    assert message in result.stderr and not output.exists()


def test_a_safetensors_file_of_named_modules_is_refused_for_its_lost_order(torch, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is in the torch extra")
    model, X, Y = block_and_data(torch, "plain")
    state = tmp_path / "block.safetensors"
    safetensors.save_file(dict(model.state_dict()), str(state))
    layers = tmp_path / "net.json"
    layers.write_text(json.dumps({"layers": LAYERS["plain"], "loss": "cross_entropy"}))
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(state), "--layers", str(layers), "--input", "[[[0]]]",
                                      "--target", "0", "-o", str(output)])  # fmt: skip
    assert result.exit_code == 2 and result.stdout == "" and not output.exists()
    assert "block.bn1 and block.bn2 cannot be put in order" in result.stderr


# -- a transposed convolution ------------------------------------------------------------------


def upsampling_net(nn):
    """conv → ReLU → a stride-2 transposed conv (padding 1, output padding 1, as a decoder
    upsamples) → ReLU → a transposed conv of 2 groups without bias → flatten → dense."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
        nn.ConvTranspose2d(4, 2, (2, 3), groups=2, bias=False, dilation=(1, 2)),
        nn.Flatten(), nn.Linear(2 * 9 * 12, 3),
    )  # fmt: skip


UPSAMPLING_LAYERS = [
    "conv", "relu", {"type": "conv_transpose", "stride": [2, 2], "padding": [1, 1], "output_padding": [1, 1]}, "relu",
    {"type": "conv_transpose", "dilation": [1, 2], "groups": 2, "bias": False}, "flatten", "dense",
]  # fmt: skip


def upsampling_and_data(torch):
    torch.manual_seed(4)
    return upsampling_net(torch.nn).double(), torch.randn(2, 2, 6, 6, dtype=torch.float64), torch.tensor([2, 0])


def test_from_torch_reads_a_transposed_convolution_to_autograds_numbers(torch, tmp_path):
    import cnntrace

    model, X, Y = upsampling_and_data(torch)
    data = cnntrace.from_torch(model, X, Y, loss=torch.nn.CrossEntropyLoss())
    assert data["layers"] == [*UPSAMPLING_LAYERS, "softmax"]
    trace = cnntrace.trace_input(data)
    assert_agrees(torch, trace, model, X, Y)
    path = repro(trace, tmp_path)
    path.write_text(path.read_text().replace("RTOL, ATOL = 1e-07, 1e-07", "RTOL, ATOL = 1e-09, 1e-12"))
    status, out = run_script(path)
    assert status == 0, out


def test_a_transposed_convolutions_state_dict_with_layers_traces_to_autograds_numbers(torch, tmp_path):
    model, X, Y = upsampling_and_data(torch)
    layers = tmp_path / "net.json"
    layers.write_text(json.dumps({"layers": UPSAMPLING_LAYERS, "loss": "cross_entropy"}))
    torch.save(model.state_dict(), tmp_path / "net.pt")
    np.save(tmp_path / "x.npy", X.numpy())
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(tmp_path / "net.pt"), "--layers", str(layers), "--input",
                                      str(tmp_path / "x.npy"), "--target", json.dumps(Y.tolist()), "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_agrees(torch, run(load_problem(output)), model, X, Y)


def test_a_transposed_convolution_exported_to_onnx_imports_and_round_trips(torch, tmp_path):
    model, X, Y = upsampling_and_data(torch)
    to_onnx(torch, model, X, tmp_path / "net.onnx")
    output = imported_onnx(tmp_path / "net.onnx", X, Y.tolist(), "cross_entropy", tmp_path)
    assert json.loads(output.read_text())["layers"] == [*UPSAMPLING_LAYERS, "softmax"]
    trace = run(load_problem(output))
    assert_agrees(torch, trace, model, X, Y)
    # cnntrace's own export of it reads back to the same layers and weights.
    again = tmp_path / "again.onnx"
    assert CliRunner().invoke(app, ["export", str(output), "--to", "onnx", "-o", str(again)]).exit_code == 0
    back = tmp_path / "back.json"
    result = CliRunner().invoke(app, ["import", str(again), "--input", str(tmp_path / "x.npy"), "--target",
                                      json.dumps(Y.tolist()), "--loss", "cross_entropy", "-o", str(back)])  # fmt: skip
    assert result.exit_code == 0, result.output
    first, second = json.loads(output.read_text()), json.loads(back.read_text())
    assert first["layers"] == second["layers"]
    for name in trace.problem.network.params:
        np.testing.assert_array_equal(second[name], first[name])


# -- every kind through ONNX and back ---------------------------------------------------------

#: The rows export --to onnx refuses (their ids, or a prefix ending in "-"), and the key its
#: refusal names.
NO_ONNX_FORM = {
    "maxpool-ties-all": "ties", "maxpool-ties-all-dilated": "ties", "maxpool-ties-split": "ties",
    "conv-flip": "flip", "conv-valid-strided-grouped-flip": "flip", "flatten-channels-last": "order",
    "softplus-beta-2-threshold-1": "beta", "softplus-on-maps": "beta", "relu-grad-at-zero-1": "grad_at_zero",
    "avgpool-four-sides-ceil-not-counted": "ceil_mode", "adaptive_avgpool-": "output_size",
    "dropout": "mode", "dropout-p-0.3-seed-5": "mode", "dropout-given-mask": "mode", "dropout-after-dense-relu": "mode",
}  # fmt: skip


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_every_kind_exports_to_onnx_and_reads_back_to_the_same_numbers(case, tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    from cnntrace.bridge.importer import import_input
    from cnntrace.bridge.onnx_io import onnx_bytes

    trace = run(problem_from_dict(make(case)))
    refused = next((key for row, key in NO_ONNX_FORM.items()
                    if case.id == row or (row.endswith("-") and case.id.startswith(row))), None)  # fmt: skip
    if refused is not None:
        with pytest.raises(InputError) as error:
            onnx_bytes(trace, case.id)
        assert error.value.key.endswith(refused), f"{case.id}: {error.value}"
        return
    model = onnx_bytes(trace, case.id)
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    np.save(tmp_path / "x.npy", trace.problem.general_X())
    output = trace.problem.network.output
    given = tmp_path / "grad.npy"
    np.save(given, np.asarray(trace[grad(output)]))
    data = import_input(path, input_file=tmp_path / "x.npy", given=str(given))
    back = run(problem_from_dict(data))
    np.testing.assert_allclose(back.general_pass().value(back.problem.network.output),
                               trace.general_pass().value(output), rtol=1e-12, atol=1e-14)  # fmt: skip
    np.testing.assert_allclose(back["dL_dX"], trace["dL_dX"], rtol=1e-9, atol=1e-12)


# -- the newer kinds from PyTorch ---------------------------------------------------------------


def newer_kinds_net(nn):
    """A conv with 'same' padding, dilation and groups, ELU and a dilated ceil-mode max-pool;
    a conv, GELU and an average pool that does not count its padding; a conv, SiLU and an
    adaptive average pool; a dense layer and softplus of beta 2; log_softmax (for NLLLoss)."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", dilation=2, groups=2), nn.ELU(0.7),
        nn.MaxPool2d(3, 2, padding=1, dilation=(1, 2), ceil_mode=True),
        nn.Conv2d(4, 4, 1), nn.GELU(), nn.AvgPool2d(3, 1, padding=1, count_include_pad=False),
        nn.Conv2d(4, 4, 1), nn.SiLU(), nn.AdaptiveAvgPool2d((3, 2)),
        nn.Flatten(), nn.Linear(4 * 3 * 2, 5), nn.Softplus(beta=2.0), nn.Linear(5, 3), nn.LogSoftmax(dim=1),
    )  # fmt: skip


def test_from_torch_reads_the_newer_kinds_and_a_sum_to_autograds_numbers(torch, tmp_path):
    import cnntrace

    torch.manual_seed(5)
    model = newer_kinds_net(torch.nn).double()
    X, Y = torch.randn(2, 2, 9, 8, dtype=torch.float64), torch.tensor([2, 0])
    loss = torch.nn.NLLLoss(reduction="sum")
    data = cnntrace.from_torch(model, X, Y, loss=loss)
    assert data["loss"] == {"type": "nll", "reduction": "sum"}
    trace = cnntrace.trace_input(data)
    leaf = X.clone().requires_grad_(True)
    L = loss(model(leaf), Y)
    L.backward()
    np.testing.assert_allclose(trace["L"], L.item(), rtol=1e-12)
    np.testing.assert_allclose(trace["dL_dX"], leaf.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, gradient in zip(trace.problem.network.params, (p.grad for p in model.parameters())):
        gradient = gradient.T if gradient.ndim == 2 else gradient
        np.testing.assert_allclose(trace[f"dL_d{name}"], gradient.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    path = repro(trace, tmp_path)
    path.write_text(path.read_text().replace("RTOL, ATOL = 1e-07, 1e-07", "RTOL, ATOL = 1e-09, 1e-12"))
    status, out = run_script(path)
    assert status == 0, out


@pytest.mark.parametrize("opset", [17, 18])
def test_a_gelu_written_with_erf_before_opset_20_imports_as_one_gelu(torch, tmp_path, opset):
    """PyTorch exports GELU below opset 20 as x/√2 → Erf → +1 → ·x → ·0.5, its constants in
    nodes between: read back as one gelu layer, autograd's numbers."""
    import warnings

    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    import onnx

    nn = torch.nn
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3), nn.GELU(),
                          nn.Linear(3, 2)).double()  # fmt: skip
    X = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), str(tmp_path / "model.onnx"), dynamo=False, opset_version=opset,
                          input_names=["X"])  # fmt: skip
    assert "Erf" in [node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node]
    output = imported_onnx(tmp_path / "model.onnx", X, [1, 0], "cross_entropy", tmp_path)
    layers = json.loads(output.read_text())["layers"]
    assert [layer if isinstance(layer, str) else layer["type"] for layer in layers] == [
        "conv", "gelu", "flatten", "dense", "gelu", "dense", "softmax"]  # fmt: skip
    trace = run(load_problem(output))
    leaf = X.clone().requires_grad_(True)
    L = torch.nn.functional.cross_entropy(model(leaf), torch.tensor([1, 0]))
    L.backward()
    np.testing.assert_allclose(trace["L"], L.item(), rtol=1e-12)
    np.testing.assert_allclose(trace["dL_dX"], leaf.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_an_erf_chain_that_is_no_gelu_is_refused_by_its_node(torch, tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    from onnx import TensorProto, helper, numpy_helper

    half = numpy_helper.from_array(np.array(0.4, np.float32), "c")  # not 0.5: no GELU
    nodes = [helper.make_node("Div", ["X", "s"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["X", "a"], ["m"]),
             helper.make_node("Mul", ["m", "c"], ["Y"], name="scale")]  # fmt: skip
    weights = [numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "s"),
               numpy_helper.from_array(np.array(1.0, np.float32), "one"), half]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [1, 4])], weights)  # fmt: skip
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    result = CliRunner().invoke(app, ["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out.json")])
    assert result.exit_code == 2 and not result.stdout
    assert result.stderr.endswith("m.onnx: node 0 (Div): Div is not an operator cnntrace reads\n"), result.stderr


def test_an_onnx_model_of_the_newer_kinds_imports_to_autograds_numbers(torch, tmp_path):
    nn = torch.nn
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, dilation=2, padding=1), nn.ELU(0.5), nn.MaxPool2d(2, 2, dilation=2),
                          nn.Flatten(), nn.Linear(3 * 2 * 2, 4), nn.Softplus(), nn.Linear(4, 4), nn.SiLU(),
                          nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4), nn.LogSoftmax(dim=1)).double()  # fmt: skip
    X, Y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 1])
    to_onnx(torch, model, X, tmp_path / "model.onnx")
    output = imported_onnx(tmp_path / "model.onnx", X, [3, 1], "nll", tmp_path)
    layers = json.loads(output.read_text())["layers"]
    assert [layer if isinstance(layer, str) else layer["type"] for layer in layers][5:] == [
        "softplus", "dense", "silu", "dense", "gelu", "dense", "log_softmax"]  # SiLU: ONNX's Sigmoid and Mul
    trace = run(load_problem(output))
    leaf = X.clone().requires_grad_(True)
    L = torch.nn.functional.nll_loss(model(leaf), Y)
    L.backward()
    np.testing.assert_allclose(trace["L"], L.item(), rtol=1e-12)
    np.testing.assert_allclose(trace["dL_dX"], leaf.grad.numpy(), rtol=1e-9, atol=1e-12)


# -- verify under PyTorch's parameter names -------------------------------------------------------


def test_verify_reads_gradients_under_pytorchs_parameter_names(torch, tmp_path):
    import cnntrace

    model, X, Y = block_and_data(torch, "downsample")
    data = cnntrace.from_torch(model, X, Y, loss="cross_entropy")
    assert data["torch_names"]["block.downsample.0.weight"] == "W5" and data["torch_names"]["fc.weight"] == "W7.T"
    assert "block.conv1.bias" not in data["torch_names"]  # bias=False: no B1
    path = tmp_path / "block.json"
    path.write_text(json.dumps(data))
    leaf = X.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(leaf), Y).backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    np.savez(tmp_path / "grads.npz", **grads)
    result = CliRunner().invoke(app, ["verify", str(path), str(tmp_path / "grads.npz"), "--preset", "float64"])
    assert result.exit_code == 0, result.output
    assert f"{len(grads)} of {len(grads)} answers right" in result.stdout
    grads["fc.weight"] = grads["fc.weight"].copy()
    grads["fc.weight"][0, 1] += 1e-3  # nn.Linear's out×in: cnntrace's W7[1, 0]
    np.savez(tmp_path / "grads.npz", **grads)
    result = CliRunner().invoke(app, ["verify", str(path), str(tmp_path / "grads.npz"), "--preset", "float64"])
    assert result.exit_code == 1 and f"{len(grads) - 1} of {len(grads)} answers right" in result.stdout
    assert re.search(r"fc\.weight\s+│\s+\[0,1\]", result.stdout)  # the entry as the answer wrote it
    result = CliRunner().invoke(app, ["verify", str(path), str(tmp_path / "grads.npz"), "--preset", "float64",
                                      "--format", "json"])  # fmt: skip
    fc = json.loads(result.stdout)["results"]["fc.weight"]
    assert [w["index"] for w in fc["wrong"]] == [[0, 1]] and fc["worst"] == [0, 1]


def test_import_of_a_state_dict_names_its_tensors_and_a_wrong_name_is_refused(torch, tmp_path):
    import cnntrace

    model, X, Y = block_and_data(torch, "plain")
    layers = tmp_path / "net.json"
    layers.write_text(json.dumps({"layers": LAYERS["plain"], "loss": "cross_entropy", "X": X.tolist(), "Y": Y.tolist()}))
    torch.save(model.state_dict(), tmp_path / "block.pt")
    output = tmp_path / "imported.json"
    assert CliRunner().invoke(app, ["import", str(tmp_path / "block.pt"), "--layers", str(layers), "-o", str(output)]).exit_code == 0
    data = json.loads(output.read_text())
    assert data["torch_names"] == cnntrace.from_torch(model, X, Y, loss="cross_entropy")["torch_names"]
    data["torch_names"]["fc.weight"] = "W9"
    with pytest.raises(InputError, match=r"expected one of the weights \(W1, W2, B2, .*\), with .T where it is transposed; got 'W9'") as error:
        cnntrace.trace_input(data)
    assert error.value.key == "torch_names.fc.weight"


def test_a_traces_notebook_page_is_compact_and_capped(monkeypatch):
    import cnntrace
    from cnntrace import notebook

    trace = cnntrace.trace_input(json.loads((SAMPLES / "resnet-block.json").read_text()))
    page = trace._repr_html_()
    assert page.startswith("<iframe srcdoc=") and "dL_dW1" in page
    assert len(page.encode()) <= notebook.MAX_PAGE_BYTES
    assert "&quot;stages&quot;:{}" in page and "&quot;texts&quot;:{}" in page  # nothing to explain a click with
    monkeypatch.setattr(notebook, "MAX_PAGE_BYTES", 10_000)
    page = trace._repr_html_()
    assert not page.startswith("<iframe") and "<code>cnntrace step</code> and its html option" in page and len(page) < 1000


def test_an_onnx_model_from_pytorch_keeps_its_parameter_names_for_verify(torch, tmp_path):
    import cnntrace

    model, X, Y = block_and_data(torch, "downsample")
    expected = cnntrace.from_torch(model, X, Y, loss="cross_entropy")["torch_names"]
    to_onnx(torch, model, X, tmp_path / "block.onnx")
    output = imported_onnx(tmp_path / "block.onnx", X, Y.tolist(), "cross_entropy", tmp_path)
    assert json.loads(output.read_text())["torch_names"] == expected
    # An ONNX model cnntrace wrote names its weights W1, B1 …: no PyTorch names to keep.
    model_file = tmp_path / "again.onnx"
    assert CliRunner().invoke(app, ["export", str(output), "--to", "onnx", "-o", str(model_file)]).exit_code == 0
    result = CliRunner().invoke(app, ["import", str(model_file), "--input", str(tmp_path / "x.npy"),
                                      "--target", json.dumps(Y.tolist()), "--loss", "cross_entropy", "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0 and "torch_names" not in json.loads(output.read_text())


def test_onnx_same_upper_padding_reads_as_same_and_agrees_with_onnxruntime(tmp_path):
    """auto_pad SAME_UPPER (TensorFlow's "SAME", what converters write) is cnntrace's "same":
    a conv with an even kernel (its odd padding cell after), a stride-2 max-pool and, after a
    1×1 conv, an average pool that does not count its padding, on odd sizes; onnxruntime (float32, its
    CPU build has no float64 Conv) computes the same output."""
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    W = rng.normal(size=(2, 1, 4, 4)).astype(np.float32)
    B = rng.normal(size=2).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["Z"], auto_pad="SAME_UPPER", kernel_shape=[4, 4]),
        helper.make_node("Relu", ["Z"], ["A"]),
        helper.make_node("MaxPool", ["A"], ["P"], auto_pad="SAME_UPPER", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["P", "V"], ["Z2"], kernel_shape=[1, 1]),
        helper.make_node("AveragePool", ["Z2"], ["Q"], auto_pad="SAME_UPPER", kernel_shape=[2, 3], strides=[1, 2]),
    ]  # fmt: skip
    graph = helper.make_graph(nodes, "same", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 1, 7, 9])],
                              [helper.make_tensor_value_info("Q", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
                               numpy_helper.from_array(rng.normal(size=(2, 2, 1, 1)).astype(np.float32), "V")])  # fmt: skip
    model = tmp_path / "same.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    X = rng.normal(size=(2, 1, 7, 9)).astype(np.float32)
    (expected,) = ort.InferenceSession(str(model)).run(None, {"X": X})
    np.save(tmp_path / "x.npy", X.astype(np.float64))
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(model), "--input", str(tmp_path / "x.npy"), "--grad",
                                      json.dumps(np.ones(expected.shape).tolist()), "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    layers = json.loads(output.read_text())["layers"]
    assert layers[0]["padding"] == "same" and layers[2]["padding"] == "same" and layers[4]["count_include_pad"] is False
    trace = run(load_problem(output))
    np.testing.assert_allclose(trace[trace.problem.network.output].reshape(expected.shape), expected, rtol=2e-5, atol=2e-6)


def tiny_resnet(nn, torch):
    """ResNet-18's shape in small: a stem (conv, batch norm, ReLU, a padded max-pool), two
    stages of two basic blocks, the second stage's first with a stride-2 projection, an
    adaptive average pool to 1×1, torch.flatten and a dense layer."""

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):  # torchvision's order: the projection after the main path
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            out += x if self.downsample is None else self.downsample(x)
            return self.relu(out)

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.relu = nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(Block(4, 4), Block(4, 4))
            self.layer2 = nn.Sequential(Block(4, 8, 2), Block(8, 8))
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(8, 5)

        def forward(self, x):
            x = self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x))))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return TinyResNet()


def test_a_small_resnet_reads_through_from_torch_and_onnx_to_autograds_numbers(torch, tmp_path):
    import cnntrace

    torch.manual_seed(8)
    model = tiny_resnet(torch.nn, torch).double()
    X, Y = torch.randn(2, 3, 10, 10, dtype=torch.float64), torch.tensor([1, 4])
    data = cnntrace.from_torch(model, X, Y, loss="cross_entropy")
    assert sum(isinstance(layer, dict) and layer["type"] == "add" for layer in data["layers"]) == 4
    assert_agrees(torch, cnntrace.trace_input(data), model, X, Y)
    to_onnx(torch, model, X, tmp_path / "resnet.onnx")
    torch.manual_seed(8)  # the export ran the model in training: its running statistics moved
    model = tiny_resnet(torch.nn, torch).double()
    output = imported_onnx(tmp_path / "resnet.onnx", X, [1, 4], "cross_entropy", tmp_path)
    assert json.loads(output.read_text())["layers"] == data["layers"]
    assert_agrees(torch, run(load_problem(output)), model, X, Y)
