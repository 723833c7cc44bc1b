"""A network written as layers, read from a file: each bad description is one line on stderr
naming the file and the key (layers[3], W2, Y, grad …), exit status 2, nothing on stdout;
and every command works on a multi-channel softmax network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from networks import make
from typer.testing import CliRunner

from cnntrace.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def write(tmp_path, data, name="net.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def softmax_net(**changes) -> dict:
    data = make("rgb-softmax", 0)
    data.update(changes)
    return data


def changed_layers(position, layer):
    layers = list(softmax_net()["layers"])
    layers[position] = layer
    return layers


BAD = [
    ("unknown type", {"layers": changed_layers(1, "relux")}, "layers[1]: unknown layer type 'relux'; did you mean relu?"),
    ("a type in capitals", {"layers": changed_layers(1, "ReLU")}, "layers[1]: unknown layer type 'ReLU'; did you mean relu?"),
    ("a type capitalized", {"layers": changed_layers(1, "Relu")}, "layers[1]: unknown layer type 'Relu'; did you mean relu?"),
    ("a flag in Python's spelling", {"conventions": {"relu_grad_at_zero": True}}, "relu_grad_at_zero: expected 0 | 1 (the default is 0), got true"),
    ("softmax not last", {"layers": changed_layers(1, "softmax")}, "layers[1]: softmax can only be the last layer"),
    ("bce without a sigmoid", {"loss": "bce"}, "loss: bce needs a sigmoid as the last layer"),
    ("unknown loss", {"loss": "hinge"}, "loss: unknown loss 'hinge'"),
    ("dense without flatten", {"layers": [{"type": "conv", "padding": 1}, "relu", "maxpool", "dense", "softmax"]},
     "layers[3]: a dense layer needs vectors, but it gets maps of 2×3×3; put a flatten before it"),
    ("two activations", {"layers": changed_layers(2, "tanh")}, "layers[2]: W1's layer already has an activation"),
    ("W of the wrong shape", {"W3": np.ones((3, 4)).tolist()}, "W3: expected n_in×n_out with n_in = 2"),
    ("a missing W3", {"W3": None}, "W3: missing: layers[7] (dense) needs W3"),
    ("an extra weight", {"W9": [1.0]}, "W9: the network has no such weight"),
    ("X's channels", {"X": np.ones((2, 2, 6, 6)).tolist()}, "W1: W is K×C×kh×kw with C = 3 channels, but X has 2"),
    ("a class out of range", {"Y": [0, 3]}, "Y: a class index is a whole number from 0 to 2"),
    ("soft labels", {"Y": [[0.5, 0.4, 0.0], [1.0, 0.0, 0.0]]}, "Y: the probabilities of an image sum to 1"),
    ("both Y and grad", {"grad": [[0.0] * 3] * 2}, "grad: give Y (with a loss) or grad, not both"),
    ("a stride of 0", {"layers": changed_layers(0, {"type": "conv", "stride": 0})}, "layers[0].stride: must be at least 1"),
    ("a stride that is text", {"layers": changed_layers(0, {"type": "conv", "stride": "1"})}, "layers[0].stride: expected a whole number"),
    ("an unknown option", {"layers": changed_layers(2, {"type": "maxpool", "pool": 2})}, "layers[2]: unknown option 'pool'; maxpool takes size, stride, padding"),
    ("pool padding past half", {"layers": changed_layers(2, {"type": "maxpool", "size": 2, "padding": 2})}, "layers[2].padding: padding 2 is more than half the window"),
    ("a reference option", {"stride": 2}, "stride: belongs to the reference form; with layers, write the conv layer's \"stride\""),
    ("layers not a list", {"layers": "conv"}, "layers: expected a list of layers"),
    ("a leaky alpha that is text", {"layers": changed_layers(1, {"type": "leaky_relu", "alpha": "a"})}, "layers[1].alpha: alpha is a finite number"),
]


@pytest.mark.parametrize("changes, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_each_bad_description_is_one_line_naming_the_file_and_the_key(tmp_path, changes, fragment):
    data = softmax_net()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path = write(tmp_path, data)
    result = invoke("step", path, "--format", "json")
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"cnntrace: {path}: ")
    assert fragment in lines[0], lines[0]


def test_grad_of_the_wrong_shape_names_the_output_shape(tmp_path):
    data = make("given-grad-one-conv", 0)
    data["grad"] = np.zeros((3, 3)).tolist()
    result = invoke("step", write(tmp_path, data))
    assert result.exit_code == 2 and result.stdout == ""
    assert "grad: the gradient has the output's shape (Z1: 3×3×3); found 3×3" in result.stderr


def test_a_nan_token_names_the_key_it_sits_under(tmp_path):
    path = write(tmp_path, '{"X": [[1, 2], [3, NaN]], "Y": 1, "W1": [[1]], "B1": 0, "W2": [1, 1, 1, 1], "B2": 0, "pool": 1}')
    result = invoke("step", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert "X[1][1]: NaN is not a number JSON allows" in result.stderr


# -- every command on a multi-channel softmax network -----------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "ndjson", "csv", "markdown", "latex"])
def test_step_in_every_format(tmp_path, fmt):
    result = invoke("step", write(tmp_path, softmax_net()), "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    if fmt == "json":
        data = json.loads(result.stdout)
        assert set(data) == {"forward", "backward", "update"}
        assert np.shape(data["backward"]["dL_dW1"]) == (2, 3, 3, 3)
        assert np.shape(data["backward"]["dA4_dZ4"]) == (2, 3, 3)
    if fmt == "csv":
        header = result.stdout.splitlines()[0]
        assert header == "name,image,filter,channel,row,col,value"
        assert "dL_dW1,,0,2,1,1," in result.stdout  # filter 0, channel 2, row 1, col 1
    if fmt == "table":
        assert "exp(Z4) / Σexp(Z4)" in result.stdout and "dL/dZ4 = (dA4/dZ4)ᵀ·dL/dA4 = (A4 − Y) / M" in result.stdout


def test_check_explain_verify_and_train_work_on_it(tmp_path):
    path = write(tmp_path, softmax_net())
    check = invoke("check", path, "--format", "json")
    assert check.exit_code == 0, check.stdout + check.stderr
    assert list(json.loads(check.stdout)["tensors"]) == ["X", "W1", "B1", "W2", "B2", "W3", "B3", "W4", "B4"]
    step = json.loads(invoke("step", path, "--format", "json").stdout)
    for term, value in (("dL_dW1[1,2,0,1]", step["backward"]["dL_dW1"][1][2][0][1]),
                        ("A4[1,2]", step["forward"]["A4"][1][2]),
                        ("dA4_dZ4[0,1,2]", step["backward"]["dA4_dZ4"][0][1][2]),
                        ("P2[1,0,0,0]", step["forward"]["P2"][1][0][0][0])):  # fmt: skip
        explained = json.loads(invoke("explain", path, term, "--format", "json").stdout)
        assert explained["value"] == pytest.approx(value, rel=1e-12, abs=1e-15), term
    answers = write(tmp_path, {"dL_dZ4": step["backward"]["dL_dZ4"], "P1": step["forward"]["P1"]}, "answers.json")
    assert invoke("verify", path, answers).exit_code == 0
    trained = tmp_path / "trained.json"
    result = invoke("train", path, "--epochs", "3", "--format", "json", "--save", trained)
    assert result.exit_code == 0, result.stderr
    history = json.loads(result.stdout)["history"]
    assert len(history) == 3 and 0 <= history[-1]["accuracy"] <= 1
    saved = json.loads(trained.read_text())
    assert saved["layers"] == softmax_net()["layers"] and saved["loss"] == "cross_entropy"
    assert np.shape(saved["W1"]) == (2, 3, 3, 3)


def test_npz_with_layers_as_json_text(tmp_path):
    data = softmax_net()
    arrays = {key: np.asarray(value) for key, value in data.items() if key not in ("layers", "loss")}
    path = tmp_path / "net.npz"
    np.savez(path, layers=np.array(json.dumps(data["layers"])), loss=np.array("cross_entropy"), **arrays)
    from_npz = json.loads(invoke("step", path, "--format", "json").stdout)
    from_json = json.loads(invoke("step", write(tmp_path, data), "--format", "json").stdout)
    assert from_npz == from_json
    saved = tmp_path / "saved.npz"
    assert invoke("train", path, "--epochs", "1", "--save", saved).exit_code == 0
    result = invoke("step", saved, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["update"].keys() == from_json["update"].keys()


# -- init --like --------------------------------------------------------------------------------


def test_init_like_makes_a_fresh_exercise_of_the_same_network(tmp_path):
    source = write(tmp_path, softmax_net())
    first = invoke("init", "--like", source, "--seed", "5")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == invoke("init", "--like", source, "--seed", "5").stdout
    assert first.stdout != invoke("init", "--like", source, "--seed", "6").stdout
    fresh = json.loads(first.stdout)
    original = softmax_net()
    from cnntrace.io import problem_from_dict

    described = problem_from_dict(fresh).network.describe()
    assert described == problem_from_dict(original).network.describe() and fresh["loss"] == "cross_entropy"
    for key in ("X", "W1", "B1", "W2", "B2", "W3", "B3", "W4", "B4"):
        assert np.shape(fresh[key]) == np.shape(original[key]), key
        assert fresh[key] != original[key], key
    assert set(fresh["Y"]) <= {0, 1, 2} and len(fresh["Y"]) == 2
    path = write(tmp_path, first.stdout, "fresh.json")
    assert invoke("step", path, "--format", "json").exit_code == 0


@pytest.mark.parametrize("network_id", ["given-grad-one-conv", "mlp", "one-image-multi-sigmoid", "reference-as-layers"])
def test_init_like_keeps_the_target_form(tmp_path, network_id):
    source = write(tmp_path, make(network_id, 0))
    fresh = json.loads(invoke("init", "--like", source, "--seed", "1", "--batch", "4").stdout)
    trace = json.loads(invoke("step", write(tmp_path, fresh, "fresh.json"), "--format", "json").stdout)
    assert len(fresh["X"]) == 4 and ("grad" in fresh) == (network_id == "given-grad-one-conv")
    assert len(trace["backward"]["dL_dX"]) == 4


def test_init_like_refuses_shapes_of_its_own(tmp_path):
    result = invoke("init", "--like", write(tmp_path, softmax_net()), "--kernel", "2")
    assert result.exit_code == 2 and result.stdout == "" and "leave out --kernel" in result.stderr


def test_a_network_too_large_is_refused_before_any_work(tmp_path, monkeypatch):
    import cnntrace.limits

    data = {"X": np.zeros((2, 3, 40, 40)).tolist(), "Y": [0, 1],
            "layers": ["conv", "relu", "flatten", "dense", "softmax"],
            "W1": np.zeros((8, 3, 3, 3)).tolist(), "B1": [0.0] * 8,
            "W2": np.zeros((8 * 38 * 38, 2)).tolist(), "B2": [0.0, 0.0]}  # fmt: skip
    path = write(tmp_path, data)
    assert invoke("step", path, "--format", "json").exit_code == 0
    monkeypatch.setattr(cnntrace.limits, "MAX_PASS_BYTES", 10**5)
    result = invoke("step", path, "--format", "json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "X: too large: 2 images of 3×40×40" in result.stderr and "of memory" in result.stderr


def test_a_name_no_network_has_is_refused_before_the_file_is_read(tmp_path):
    for args in (("explain", tmp_path / "missing.json", "Q7[0]"), ("step", tmp_path / "missing.json", "--only", "Q7")):
        result = invoke(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert "Q7" in result.stderr and "no such file" not in result.stderr
