"""cnntrace and PyTorch and ONNX (issue 21): the script ``export --to torch`` writes, for every
sample and every row of the kinds table, runs green under PyTorch and goes red when a number
in it changes; ``from_torch``, a state_dict with ``--layers`` and ONNX models read back to
the numbers PyTorch's autograd gives; what cannot be read is named.

torch, onnx and safetensors are optional extras: the tests that need one skip, saying which.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.errors import InputError
from cnntrace.io import load_problem, problem_from_dict
from cnntrace.tracer import run
from tests.kinds import ALL_CASES, make

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_FILES = sorted([*SAMPLES.glob("*.json"), *SAMPLES.glob("*.npz")])


def run_script(path: Path) -> tuple[int, str]:
    """(exit status, stdout) of a script written by export --to torch, run in this process
    (torch is imported once for all of them)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(str(path), run_name="__main__")
            status = 0
        except SystemExit as leaving:
            status = leaving.code or 0
    return status, out.getvalue()


def repro(trace, tmp_path: Path, name: str = "repro.py") -> Path:
    from cnntrace.bridge.repro import repro_script

    path = tmp_path / name
    path.write_text(repro_script(trace, name))
    return path


# -- export --to torch -------------------------------------------------------------------------


#: Samples whose network the script does not write yet, and what the refusal names.
REFUSED_SAMPLES: dict[str, str] = {}


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.name)
def test_every_samples_script_runs_green_and_goes_red_when_a_number_changes(torch, sample, tmp_path):
    output = tmp_path / "repro.py"
    result = CliRunner().invoke(app, ["export", str(sample), "--to", "torch", "-o", str(output)])
    if sample.name in REFUSED_SAMPLES:
        assert result.exit_code == 2 and result.stdout == "" and not output.exists()
        assert REFUSED_SAMPLES[sample.name] in result.stderr
        return
    assert result.exit_code == 0, result.output
    status, out = run_script(output)
    trace = run(load_problem(sample))
    lines = [line for line in out.splitlines() if line.startswith(("ok ", "MISMATCH"))]
    assert status == 0, out
    assert [line.split()[1] for line in lines] == [stage.name for stage in trace.stages]
    assert all(line.startswith("ok ") for line in lines)

    # One number of the trace changed: that matrix is named as the one that differs.
    text = output.read_text()
    start = text.index("EXPECTED = {")
    entry = re.compile(r"'dL_dW1': array\(\[\s*(-?[0-9.e+-]+)")
    found = entry.search(text, start)
    changed = float(found.group(1)) + 0.5
    red = tmp_path / "red.py"
    red.write_text(text[: found.start(1)] + repr(changed) + text[found.end(1):])
    status, out = run_script(red)
    assert status == 1
    assert [line.split()[1] for line in out.splitlines() if line.startswith("MISMATCH")] == ["dL_dW1"]

    # One number of the input changed (the first bias): the pass is no longer the trace's.
    found = re.search(r"^    'B1': array\(\[\s*(-?[0-9.e+-]+)", text, re.M)
    red.write_text(text[: found.start(1)] + repr(float(found.group(1)) + 1.0) + text[found.end(1):])
    status, out = run_script(red)
    assert status == 1 and "MISMATCH  Z1 " in out


#: The rows the script does not write, and the key its refusal names: PyTorch's max-pool has
#: no other tie rule than the first maximum (export refuses them, as it must, instead of
#: writing a script that cannot agree).
NO_TORCH_FORM = {
    "maxpool-ties-all": "ties", "maxpool-ties-split": "ties",
}  # fmt: skip


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.id)
def test_every_kind_and_variant_exports_a_script_that_agrees(torch, case, tmp_path):
    from cnntrace.bridge.repro import repro_script

    trace = run(problem_from_dict(make(case)))
    refused = next((option for prefix, option in NO_TORCH_FORM.items() if case.id.startswith(prefix)), None)
    if refused is not None:
        with pytest.raises(InputError, match=refused):
            repro_script(trace, "case")
        return
    status, out = run_script(repro(trace, tmp_path))
    assert status == 0, out


def test_export_names_the_file_and_writes_nothing_on_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"X": [[1, 2], [3, 4]], "layers": ["dense"], "Y": [1]}')
    output = tmp_path / "repro.py"
    result = CliRunner().invoke(app, ["export", str(bad), "--to", "torch", "-o", str(output)])
    assert result.exit_code == 2
    assert result.stdout == "" and f"{bad}: loss: missing" in result.stderr
    assert not output.exists()


def test_export_refuses_a_missing_directory_before_the_work(tmp_path):
    result = CliRunner().invoke(app, ["export", str(SAMPLES / "reference.json"), "--to", "torch",
                                      "-o", str(tmp_path / "nowhere" / "repro.py")])  # fmt: skip
    assert result.exit_code == 2 and "nowhere" in result.stderr and result.stdout == ""


def test_a_maxpool_with_ties_all_is_named_as_having_no_torch_form(tmp_path):
    data = json.loads((SAMPLES / "rgb-softmax.json").read_text())
    data["conventions"] = {"pool_ties": "all"}
    path = tmp_path / "ties.json"
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["export", str(path), "--to", "torch"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "layers[2].ties" in result.stderr and "first maximum" in result.stderr


# -- from PyTorch: from_torch, a state_dict with --layers, ONNX ----------------------------------

AUTOGRAD = {"rtol": 1e-9, "atol": 1e-12}


def lenet5(nn):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def conv_bn(nn):
    """conv → batch norm → ReLU twice, global average pool, dense: a ResNet block's path
    without its skip (skip connections are not on main yet)."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


NETWORKS = {"lenet5": (lenet5, (2, 1, 28, 28)), "conv-bn": (conv_bn, (3, 2, 6, 6))}


def autograd_numbers(torch, model, X, Y):
    """L, dL/dX and every parameter's gradient (cnntrace's layouts) from PyTorch's autograd,
    in training mode, the loss cross-entropy."""
    X = X.clone().requires_grad_(True)
    L = torch.nn.functional.cross_entropy(model(X), Y)
    L.backward()
    return L, X.grad, [p.grad.T if p.ndim == 2 else p.grad for p in model.parameters()]


def assert_agrees(torch, trace, model, X, Y):
    from numpy.testing import assert_allclose

    L, dL_dX, grads = autograd_numbers(torch, model, X, Y)
    assert_allclose(trace["L"], L.item(), **AUTOGRAD)
    assert_allclose(trace["dL_dX"], dL_dX.numpy(), **AUTOGRAD)
    matched = _matched(model, trace.problem.network.params)
    assert len(matched) == len(grads)
    for name, gradient in zip(matched, grads):
        assert_allclose(trace[f"dL_d{name}"].reshape(gradient.shape), gradient.numpy(), **AUTOGRAD, err_msg=name)


def _matched(model, params) -> list[str]:
    """cnntrace's weights that PyTorch's modules have, in their order: a bias=False conv's
    zero bias (B1) is cnntrace's own."""
    names, out = list(params), []
    for module in model.modules():
        if getattr(module, "weight", None) is None:
            continue
        out.append(names.pop(0))
        if names and names[0].startswith("B"):
            bias = names.pop(0)
            if getattr(module, "bias", None) is not None:
                out.append(bias)
    return out


def model_and_data(torch, network):
    make_model, shape = NETWORKS[network]
    torch.manual_seed(0)
    model = make_model(torch.nn).double()
    with torch.no_grad():  # running statistics that are not PyTorch's 0 and 1
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    X = torch.randn(*shape, dtype=torch.float64)
    Y = torch.randint(0, 10 if network == "lenet5" else 3, (shape[0],))
    return model, X, Y


@pytest.mark.parametrize("network", NETWORKS)
def test_from_torch_traces_to_autograds_numbers(torch, network, tmp_path):
    import cnntrace

    model, X, Y = model_and_data(torch, network)
    data = cnntrace.from_torch(model, X, Y, loss=torch.nn.CrossEntropyLoss())
    json.dumps(data)  # ready for json.dump
    trace = cnntrace.trace_input(data)
    assert_agrees(torch, trace, model, X, Y)
    status, out = run_script(repro(trace, tmp_path))
    assert status == 0, out


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("network", NETWORKS)
def test_a_state_dict_with_layers_traces_to_autograds_numbers(torch, network, suffix, tmp_path):
    import cnntrace

    if suffix == ".safetensors":
        safetensors = pytest.importorskip("safetensors.torch", reason="safetensors is in the torch extra")
    model, X, Y = model_and_data(torch, network)
    net = cnntrace.from_torch(model, X, Y, loss="cross_entropy")
    layers = tmp_path / "net.json"
    layers.write_text(json.dumps({"layers": net["layers"], "loss": "cross_entropy"}))
    state = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), state)
    else:
        safetensors.save_file(dict(model.state_dict()), str(state))
    np.save(tmp_path / "x.npy", X.numpy())
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(state), "--layers", str(layers), "--input", str(tmp_path / "x.npy"),
                                      "--target", json.dumps(Y.tolist()), "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_agrees(torch, run(load_problem(output)), model, X, Y)


def imported_onnx(model: Path, X, target, loss: str, tmp_path: Path) -> Path:
    """The input file `cnntrace import` writes from the ONNX model at ``model`` with X (a
    tensor, saved as .npy), ``target`` and ``loss``; the command must succeed."""
    np.save(tmp_path / "x.npy", X.numpy())
    output = tmp_path / "imported.json"
    result = CliRunner().invoke(app, ["import", str(model), "--input", str(tmp_path / "x.npy"), "--target",
                                      json.dumps(target), "--loss", loss, "-o", str(output)])  # fmt: skip
    assert result.exit_code == 0, result.output
    return output


def to_onnx(torch, model, X, path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (X,), str(path), dynamo=False, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.TRAINING, input_names=["X"])  # fmt: skip


@pytest.mark.parametrize("network", NETWORKS)
def test_an_onnx_model_from_pytorch_imports_and_traces_to_autograds_numbers(torch, network, tmp_path):
    model, X, Y = model_and_data(torch, network)
    to_onnx(torch, model, X, tmp_path / "model.onnx")
    output = imported_onnx(tmp_path / "model.onnx", X, Y.tolist(), "cross_entropy", tmp_path)
    trace = run(load_problem(output))
    assert_agrees(torch, trace, model, X, Y)
    status, out = run_script(repro(trace, tmp_path))
    assert status == 0, out


@pytest.mark.parametrize("sample", ["reference.json", "rgb-softmax.json", "mlp-mazur.json", "resnet-block.json"])
def test_export_to_onnx_and_import_round_trips(sample, tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    model = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(SAMPLES / sample), "--to", "onnx", "-o", str(model)])
    assert result.exit_code == 0, result.output
    back = tmp_path / "back.json"
    original = run(load_problem(SAMPLES / sample)).problem
    data = json.loads((SAMPLES / sample).read_text())
    loss = ["--loss", data["loss"]] if "loss" in data else []
    result = CliRunner().invoke(app, ["import", str(model), "--input", str(SAMPLES / sample),
                                      "--target", json.dumps(data["Y"]), *loss, "-o", str(back)])  # fmt: skip
    assert result.exit_code == 0, result.output
    imported = load_problem(back)
    assert [layer.options() for layer in imported.network.layers] == [layer.options() for layer in original.network.layers]
    for name, value in original.general_weights().items():
        np.testing.assert_array_equal(imported.general_weights()[name], value)


def test_onnxruntime_runs_an_exported_model(tmp_path):
    pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model = tmp_path / "model.onnx"
    CliRunner().invoke(app, ["export", str(SAMPLES / "mlp-mazur.json"), "--to", "onnx", "-o", str(model)])
    trace = run(load_problem(SAMPLES / "mlp-mazur.json"))
    (out,) = ort.InferenceSession(str(model)).run(None, {"X": trace.problem.general_X()})
    np.testing.assert_allclose(out.ravel(), trace["A2"].ravel(), rtol=1e-15)


def refused_model(path, op, attributes, inputs=("X", "W"), extra=()):
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.ones((1, 1, 3, 3)), "W")
    nodes = [*extra, helper.make_node(op, list(inputs), ["Y"], name="/layer1/conv2", **attributes)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [1, 1, 6, 6])],
                              [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None)], [W])  # fmt: skip
    onnx.save(helper.make_model(graph), str(path))


@pytest.mark.parametrize(("op", "attributes", "message"), [
    ("Conv", {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"}, "/layer1/conv2: Conv with auto_pad SAME_LOWER"),
    ("Conv", {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, "/layer1/conv2: Conv with auto_pad SAME_UPPER and strides [2, 2]"),
    ("ConvTranspose", {"kernel_shape": [3, 3], "output_shape": [8, 8]}, "/layer1/conv2: ConvTranspose with output_shape [8, 8] (give pads instead)"),
    ("AveragePool", {"kernel_shape": [2, 2], "ceil_mode": 1}, "/layer1/conv2: AveragePool with ceil_mode 1"),
    ("MaxPool", {"kernel_shape": [2, 2], "storage_order": 1}, "/layer1/conv2: MaxPool with storage_order 1"),
    ("LpPool", {"kernel_shape": [2, 2]}, "/layer1/conv2: LpPool is not an operator cnntrace reads"),
])  # fmt: skip
def test_an_operator_cnntrace_cannot_express_is_named_and_nothing_is_written(op, attributes, message, tmp_path):
    model = tmp_path / "model.onnx"
    refused_model(model, op, attributes, inputs=("X", "W") if op.startswith("Conv") else ("X",))
    output = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["import", str(model), "--grad", "1", "-o", str(output)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == f"cnntrace: {model}: {message}"
    assert not output.exists()


def test_from_torch_names_a_module_it_cannot_read(torch):
    import cnntrace

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding_mode="reflect"), torch.nn.Flatten(), torch.nn.Linear(4, 1))
    with pytest.raises(InputError, match=r"^0: Conv2d with padding_mode 'reflect'"):
        cnntrace.from_torch(model, torch.zeros(1, 1, 7, 7), torch.zeros(1, 1), loss="mse")
    with pytest.raises(InputError, match="1: GRU is not a layer kind"):
        cnntrace.from_torch(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.GRU(2, 2)), torch.zeros(1, 2), [0.0], loss="mse")


def test_without_the_extra_the_command_says_which_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx then raises ImportError
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    result = CliRunner().invoke(app, ["import", str(model), "--grad", "1", "-o", str(tmp_path / "out.json")])
    assert result.exit_code == 2 and "pip install 'cnntrace[onnx]'" in result.stderr


def test_trace_input_reads_torch_tensors(torch):
    import cnntrace

    data = json.loads((SAMPLES / "rgb-softmax.json").read_text())
    tensors = {key: torch.tensor(value, dtype=torch.float64, requires_grad=key.startswith("W")) if key[0] in "XWB" else value
               for key, value in data.items()}  # fmt: skip
    tensors["Y"] = torch.tensor(data["Y"])
    np.testing.assert_array_equal(cnntrace.trace_input(tensors)["dL_dW1"], cnntrace.trace_input(data)["dL_dW1"])


# -- in a notebook, and for engineers -------------------------------------------------------------


def test_a_trace_prints_short_and_shows_itself_in_a_notebook():
    import cnntrace

    trace = cnntrace.trace_input(json.loads((SAMPLES / "rgb-softmax.json").read_text()))
    text = repr(trace)
    assert len(text) < 400 and "2 images" in text and "L = 0.941492" in text and "24 backward" in text
    assert trace._repr_html_().startswith("<iframe srcdoc=") and "dL_dW1" in trace._repr_html_()
    assert "**dL/dW1**" in trace._repr_markdown_() or "dL/dW1" in trace._repr_markdown_()


def test_verify_has_a_float32_preset(tmp_path):
    trace = run(load_problem(SAMPLES / "reference.json"))
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"Z1": (np.asarray(trace["Z1"]) * (1 + 1e-6)).tolist()}))
    reference = str(SAMPLES / "reference.json")
    assert CliRunner().invoke(app, ["verify", reference, str(answers), "--preset", "float32"]).exit_code == 0
    assert CliRunner().invoke(app, ["verify", reference, str(answers), "--preset", "float64"]).exit_code == 1


def test_verify_names_a_conv_weight_gradient_in_tensorflows_hwio_layout(tmp_path):
    from cnntrace.verify import verify

    trace = run(load_problem(SAMPLES / "rgb-softmax.json"))
    hwio = np.transpose(trace["dL_dW1"], (2, 3, 1, 0))  # K×C×kh×kw -> kh×kw×C×K
    (verdict,) = verify(trace, {"dL_dW1": hwio.tolist()}, rtol=1e-9, atol=1e-12)
    assert verdict.status == "shape" and "layout_hwio" in [d.id for d in verdict.diagnosis]


def test_an_onnx_model_with_external_data_is_refused_naming_the_tensor(tmp_path, monkeypatch):
    """import reads the one file it is given: a weight in another file is not followed."""
    onnx = pytest.importorskip("onnx", reason="onnx is an optional extra: pip install '.[onnx]'")
    from onnx import TensorProto, helper, numpy_helper

    weights = [numpy_helper.from_array(np.ones((4, 3)), "W"), numpy_helper.from_array(np.zeros(3), "B")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])], weights)  # fmt: skip
    model = tmp_path / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model,
                    save_as_external_data=True, location="weights.bin", size_threshold=0)  # fmt: skip
    monkeypatch.chdir(tmp_path)  # where the external file lies, were it followed
    output = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["import", str(model), "--loss", "mse", "--target", "[[1, 2, 3]]",
                                      "-o", str(output)])  # fmt: skip
    assert result.exit_code == 2 and result.stdout == "" and not output.exists()
    assert "model.onnx: 'W': its values are in an external data file" in result.stderr
