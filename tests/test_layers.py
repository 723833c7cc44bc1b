"""Every layer kind, option and loss, through one table of networks (tests/networks.py): each
network's trace against PyTorch's autograd (when torch is installed), against central
differences, and entry by entry against its own explanation; the names and shapes the
layers issue pins; and the reference written as layers against the reference form.
"""

from __future__ import annotations

import numpy as np
import pytest
from networks import IDS, make

from cnntrace.api import trace_input
from cnntrace.gradcheck import check
from cnntrace.io import problem_from_dict
from cnntrace.tracer import run

SEEDS = (0, 1, 2)


def _trace(network_id: str, seed: int):
    return trace_input(make(network_id, seed))


# -- PyTorch autograd, the independent oracle ------------------------------------------------


def torch_trace(torch, data: dict) -> dict:
    """Every forward matrix, L and every gradient of ``data``'s network, by torch autograd
    in float64, under cnntrace's names and on the user's shapes."""
    functional = torch.nn.functional
    problem = problem_from_dict(data)
    network = problem.network

    def leaf(array):
        return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)

    X = leaf(problem.general_X())
    weights = {name: leaf(value) for name, value in problem.weights.items()}
    values, x = {}, X
    for layer in network.layers:
        kind = layer.type
        if kind == "conv":
            W = weights[layer.W].flip(-1, -2) if layer.flip else weights[layer.W]
            top, bottom, left, right = layer.sides(problem.weights)
            x = functional.conv2d(functional.pad(x, (left, right, top, bottom)), W,
                                  weights[layer.B] if layer.bias else None, stride=layer.stride,
                                  dilation=layer.dilation, groups=layer.groups)  # fmt: skip
        elif kind == "conv_transpose":
            x = functional.conv_transpose2d(x, weights[layer.W], weights[layer.B] if layer.bias else None,
                                            stride=layer.stride, padding=layer.padding,
                                            output_padding=layer.output_padding, groups=layer.groups,
                                            dilation=layer.dilation)  # fmt: skip
        elif kind == "dense":
            x = x @ weights[layer.W] + weights[layer.B]
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "maxpool":
            x = torch_maxpool(torch, x, layer)
        elif kind == "avgpool":
            x = torch_avgpool(torch, x, layer)
        elif kind == "adaptive_avgpool":
            x = functional.adaptive_avg_pool2d(x, layer.output_size)
        elif kind == "elu":
            x = functional.elu(x, layer.alpha)
        elif kind == "gelu":
            x = functional.gelu(x)
        elif kind == "silu":
            x = functional.silu(x)
        elif kind == "softplus":
            x = functional.softplus(x, layer.beta, layer.threshold)
        elif kind == "log_softmax":
            x = torch.log_softmax(x, dim=1)
        elif kind == "relu":
            x = torch.relu(x)
        elif kind == "leaky_relu":
            x = functional.leaky_relu(x, layer.alpha)
        elif kind == "tanh":
            x = torch.tanh(x)
        elif kind == "sigmoid":
            logits = x
            x = torch.sigmoid(x)
        elif kind == "softmax":
            logits = x
            x = torch.softmax(x, dim=1)
        x.retain_grad()
        values[layer.output] = x
    target = torch.tensor(problem.general_target)
    loss = network.loss.type
    reduction = network.loss.reduction
    if loss == "grad":
        L = (x * target).sum()
    elif loss == "bce":
        L = functional.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    elif loss == "cross_entropy":
        L = functional.cross_entropy(logits, target, reduction=reduction)
    elif loss == "nll":
        L = functional.nll_loss(x, target.argmax(dim=1), reduction=reduction)
    else:
        L = functional.mse_loss(x, target, reduction=reduction) * (0.5 if network.loss.half else 1.0)
    L.backward()
    out = {"dL_dX": X.grad}
    if loss != "grad":
        out["L"] = L
    for name, value in values.items():
        out[name] = value
        out[f"dL_d{name}"] = value.grad
    for name, value in weights.items():
        out[f"dL_d{name}"] = value.grad
    # The fused output (A2 of bce from Z2) has no gradient of its own in torch: left out.
    return {name: problem.present(name, value.detach().numpy()) for name, value in out.items() if value is not None}


def torch_maxpool(torch, x, layer):
    """PyTorch's max_pool2d; padding it cannot take (four sides, "same") as −∞ added first,
    and the windows past ours (its ceil rule then sees the padding as input) cut off."""
    functional = torch.nn.functional
    top, bottom, left, right = layer.sides(*x.shape[2:])
    options = {"dilation": layer.dilation, "ceil_mode": layer.ceil_mode}
    if (top, left) == (bottom, right):
        return functional.max_pool2d(x, layer.size, layer.stride, (top, left), **options)
    padded = functional.pad(x, (left, right, top, bottom), value=-float("inf"))
    Ho, Wo = layer.infer(_map_layout(x), {})[0].shape[1:]
    return functional.max_pool2d(padded, layer.size, layer.stride, 0, **options)[:, :, :Ho, :Wo]


def torch_avgpool(torch, x, layer):
    """PyTorch's avg_pool2d; padding it cannot take as zeros added first, each window's sum
    divided by its count of a mask (ones on the input, and on the padding where it counts)."""
    functional = torch.nn.functional
    top, bottom, left, right = layer.sides(*x.shape[2:])
    if (top, left) == (bottom, right):
        return functional.avg_pool2d(x, layer.size, layer.stride, (top, left), ceil_mode=layer.ceil_mode,
                                     count_include_pad=layer.count_include_pad)  # fmt: skip
    Ho, Wo = layer.infer(_map_layout(x), {})[0].shape[1:]

    def sums(maps):
        return functional.avg_pool2d(maps, layer.size, layer.stride, 0, ceil_mode=layer.ceil_mode,
                                     divisor_override=1)[:, :, :Ho, :Wo]  # fmt: skip

    sides = (left, right, top, bottom)
    ones = torch.ones_like(x[:1, :1])
    mask = functional.pad(ones, sides, value=1.0 if layer.count_include_pad else 0.0)
    return sums(functional.pad(x, sides)) / sums(mask)


def _map_layout(x):
    from cnntrace.layers import Layout

    return Layout(tuple(x.shape[1:]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("network_id", IDS)
def test_every_network_agrees_with_torch_autograd(network_id, seed):
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    data = make(network_id, seed)
    trace = trace_input(data)
    expected = torch_trace(torch, data)
    compared = 0
    for name, value in expected.items():
        if name not in trace:  # torch's dL/d(output) of a fused softmax is not a stage
            continue
        np.testing.assert_allclose(trace[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
        compared += 1
    weights = trace.problem.network.params
    assert compared >= len(weights) + 3


# -- central differences, the numerical oracle -------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("network_id", IDS)
def test_every_gradient_agrees_with_central_differences(network_id, seed):
    problem = problem_from_dict(make(network_id, seed))
    results = check(problem, eps=1e-6, rtol=1e-5, atol=1e-8)
    assert [r.name for r in results] == ["X", *problem.network.params]
    for result in results:
        assert result.ok, result
        assert result.compared > 0 or result.kinks == result.checked


# -- explain: every entry computed a second time, by the loops of its layer kind ---------------


@pytest.mark.parametrize("network_id", IDS)
def test_every_entry_explains_to_its_value(network_id):
    from cnntrace.explain import explain_all

    trace = _trace(network_id, 0)
    count = 0
    for explanation in explain_all(trace):
        value = np.asarray(trace[explanation.name])[explanation.index]
        assert explanation.value == pytest.approx(float(value), rel=1e-9, abs=1e-12), explanation.label
        count += 1
    assert count == sum(np.size(trace[stage.name]) for stage in trace.stages)


# -- names and shapes (pinned by the issue) -----------------------------------------------------


def test_names_follow_the_weighted_layers():
    trace = _trace("rgb-softmax", 0)
    assert list(trace.forward) == ["Z1", "A1", "P1", "Z2", "A2", "P2", "F", "Z3", "A3", "Z4", "A4", "L"]
    assert list(trace.backward)[:3] == ["dL_dA4", "dA4_dZ4", "dL_dZ4"]
    assert list(trace.backward)[-1] == "dL_dX"
    assert list(trace.update) == ["W1", "B1", "W2", "B2", "W3", "B3", "W4", "B4"]
    # softmax's local derivative is one Jacobian per image: diag(A) − A·Aᵀ
    A = trace["A4"]
    J = trace["dA4_dZ4"]
    assert J.shape == (2, 3, 3)
    np.testing.assert_allclose(J[1], np.diag(A[1]) - np.outer(A[1], A[1]), rtol=1e-12)


def test_an_activation_after_the_pooling_is_named_from_it():
    data = make("pool-first-then-tanh", 0)
    data["layers"] = ["conv", "maxpool", "relu", "flatten", "dense"]
    data["W1"], data["W2"] = np.ones((2, 2, 2, 2)).tolist(), np.ones((18, 1)).tolist()
    trace = trace_input(data)
    assert list(trace.forward)[:3] == ["Z1", "P1", "A1"]
    assert "dA1_dP1" in trace.backward


def test_layers_before_the_first_weighted_layer_are_numbered_0():
    trace = _trace("pool-first-then-tanh", 0)
    assert list(trace.forward)[:2] == ["P0", "Z1"]


def test_gradients_take_the_shapes_the_file_gave():
    trace = _trace("given-grad-one-conv", 0)  # one image: no image axis
    assert trace["dL_dX"].shape == (2, 4, 5) and trace["dL_dW1"].shape == (3, 2, 2, 3)
    assert "L" not in trace and list(trace.backward)[0] == "dL_dZ1"
    trace = _trace("reference-as-layers", 0)
    assert trace["Z2"].shape == () and trace["dL_dW2"].shape == (4,)


def test_the_given_gradient_starts_the_backward_pass():
    data = make("given-grad-one-conv", 0)
    trace = trace_input(data)
    np.testing.assert_array_equal(trace["dL_dZ1"], data["grad"])
    # dL/dB1 is the sum of the given gradient over each filter's positions
    np.testing.assert_allclose(trace["dL_dB1"], np.asarray(data["grad"]).sum(axis=(1, 2)))


def test_the_reference_written_as_layers_gives_the_reference_form_numbers():
    from inputs import reference

    reference_form = reference()
    as_layers = {key: reference_form[key] for key in ("X", "Y", "W1", "B1", "W2", "B2", "lr")}
    as_layers["layers"] = ["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"]
    a, b = run(problem_from_dict(reference_form)), trace_input(as_layers)
    assert [s.name for s in a.stages] == [s.name for s in b.stages]
    for stage in a.stages:
        np.testing.assert_array_equal(a[stage.name], b[stage.name], err_msg=stage.name)
        assert a.stage(stage.name).equation == b.stage(stage.name).equation


def test_a_flipped_kernel_is_a_true_convolution():
    """flip: Z = conv with the kernel rotated 180°, the distinction seed 001 points out."""
    X = [[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]]
    W = [[1.0, 0.0], [0.0, 2.0]]
    base = {"X": X, "grad": [[1.0, 0.0], [0.0, 0.0]], "W1": W, "B1": 0.0}
    plain = trace_input({**base, "layers": ["conv"]})
    flipped = trace_input({**base, "layers": [{"type": "conv", "flip": True}]})
    assert plain["Z1"][0, 0] == 1 * 1 + 1 * 2  # X[0,0]·W[0,0] + X[1,1]·W[1,1]
    assert flipped["Z1"][0, 0] == 1 * 2 + 1 * 1  # X[0,0]·W[1,1] + X[1,1]·W[0,0]
    assert flipped["Z1"][0, 1] == 2 * 2 + 3 * 1  # X[0,1]·W[1,1] + X[1,2]·W[0,0]
    # With dL/dZ1 = 1 at [0,0] only, dL/dW1[a,b] is the X cell that W1[a,b] met there.
    np.testing.assert_array_equal(plain["dL_dW1"], [[1.0, 2.0], [0.0, 1.0]])
    np.testing.assert_array_equal(flipped["dL_dW1"], [[1.0, 0.0], [2.0, 1.0]])


@pytest.mark.parametrize("fmt", ["table", "json", "ndjson", "csv", "markdown", "latex"])
@pytest.mark.parametrize("network_id", IDS)
def test_every_network_steps_in_every_format(tmp_path, network_id, fmt):
    import json

    from typer.testing import CliRunner

    from cnntrace.cli import app

    path = tmp_path / "in.json"
    path.write_text(json.dumps(make(network_id, 0)))
    result = CliRunner().invoke(app, ["step", str(path), "--format", fmt, "--html", str(tmp_path / "p.html")])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and result.stdout
    assert (tmp_path / "p.html").stat().st_size > 0
