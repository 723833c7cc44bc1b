"""The layers of issue 19 that pool, activate and score: numbers checked by hand (a ceil-mode
pool, PyTorch's rule for its last window, an adaptive average pool), Matt Mazur's ½·squared
error pinned as he writes it, each bad description's one line, and the commands on them.
The table of kinds (tests/kinds.py) runs them against the three oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnntrace.api import trace_input
from cnntrace.cli import app
from cnntrace.explain import explain_entry

runner = CliRunner()

#: 1..25 row by row: every window's numbers can be read off.
COUNTING = np.arange(1.0, 26.0).reshape(5, 5)


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def write(tmp_path, data, name="net.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# -- by hand -----------------------------------------------------------------------------------


def test_ceil_mode_keeps_the_last_partial_windows():
    """2×2 windows, stride 2, on 5×5: floor mode takes 2×2 windows, ceil mode a third row
    and column of windows that hold what is left (rows 4, columns 4)."""
    floor = trace_input({"X": COUNTING.tolist(), "layers": [{"type": "maxpool", "size": 2}], "grad": np.ones((2, 2)).tolist()})
    np.testing.assert_array_equal(floor["P0"], [[7, 9], [17, 19]])
    ceil = trace_input({"X": COUNTING.tolist(), "layers": [{"type": "maxpool", "size": 2, "ceil_mode": True}],
                        "grad": np.ones((3, 3)).tolist()})  # fmt: skip
    np.testing.assert_array_equal(ceil["P0"], [[7, 9, 10], [17, 19, 20], [22, 24, 25]])
    # every window's gradient goes to its maximum: the last column and row get theirs too
    np.testing.assert_array_equal(ceil["dL_dX"][4], [0, 1, 0, 1, 1])
    avg = trace_input({"X": COUNTING.tolist(), "layers": [{"type": "avgpool", "size": 2, "ceil_mode": True}],
                       "grad": np.ones((3, 3)).tolist()})  # fmt: skip
    # A window past the input's end divides by the cells it has: (5 + 10)/2, 25/1.
    np.testing.assert_array_equal(avg["P0"], [[4, 6, 7.5], [14, 16, 17.5], [21.5, 23.5, 25]])
    np.testing.assert_array_equal(avg["dL_dX"][4], [0.5, 0.5, 0.5, 0.5, 1.0])


def test_a_ceil_mode_window_that_would_start_in_the_padding_is_left_out():
    """5 rows padded by 1: windows start at rows −1, 1, 3; one at 5 would start in the
    padding after the input, which PyTorch's rule leaves out (3 rows of windows, not 4)."""
    X = COUNTING[:, :4]
    data = {"X": X.tolist(), "grad": np.ones((3, 3)).tolist(),
            "layers": [{"type": "avgpool", "size": 2, "padding": 1, "ceil_mode": True}]}  # fmt: skip
    counted = trace_input(data)
    assert counted["P0"].shape == (3, 3)
    assert counted["P0"][0, 0] == X[0, 0] / 4  # three padding zeros counted in the mean
    assert counted["P0"][2, 2] == (X[3, 3] + X[4, 3]) / 4  # its right column is padding
    data["layers"][0]["count_include_pad"] = False
    uncounted = trace_input(data)
    assert uncounted["P0"][0, 0] == X[0, 0]  # the padding not counted: one cell
    assert uncounted["P0"][2, 2] == (X[3, 3] + X[4, 3]) / 2
    explained = explain_entry(uncounted, "P0", (0, 0))
    assert explained.value == X[0, 0] and "not counted" in " ".join(explained.notes)


def test_adaptive_average_pooling_by_hand():
    """3×5 to 2×3: rows 0..1 and 1..2 (floor(i·3/2) to ceil((i+1)·3/2) − 1), columns 0..1,
    1..3 and 3..4; the windows overlap on row 1 and columns 1 and 3."""
    X = COUNTING[:3]
    trace = trace_input({"X": X.tolist(), "layers": [{"type": "adaptive_avgpool", "output_size": [2, 3]}],
                         "grad": np.ones((2, 3)).tolist()})  # fmt: skip
    np.testing.assert_allclose(trace["P0"], [[4, 5.5, 7], [9, 10.5, 12]], rtol=1e-15)
    # each cell gets 1/(its windows' counts), summed over the windows that hold it
    np.testing.assert_allclose(trace["dL_dX"], [[1 / 4, 1 / 4 + 1 / 6, 1 / 6, 1 / 6 + 1 / 4, 1 / 4],
                                                [1 / 2, 5 / 6, 1 / 3, 5 / 6, 1 / 2],
                                                [1 / 4, 5 / 12, 1 / 6, 5 / 12, 1 / 4]], rtol=1e-15)  # fmt: skip
    explained = explain_entry(trace, "P0", (1, 1))
    assert len(explained.terms) == 6 and "rows floor(1·3/2) = 1 to ceil(2·3/2) − 1 = 2" in explained.notes[0]


def test_dilated_and_same_padded_max_pools_by_hand():
    dilated = trace_input({"X": COUNTING.tolist(), "layers": [{"type": "maxpool", "size": 2, "stride": 1, "dilation": 2}],
                           "grad": np.ones((3, 3)).tolist()})  # fmt: skip
    # window (0, 0) takes X[0,0], X[0,2], X[2,0], X[2,2]: its max is 13
    np.testing.assert_array_equal(dilated["P0"], [[13, 14, 15], [18, 19, 20], [23, 24, 25]])
    same = trace_input({"X": COUNTING.tolist(), "layers": [{"type": "maxpool", "size": 2, "stride": 2, "padding": "same"}],
                        "grad": np.ones((3, 3)).tolist()})  # fmt: skip
    # ceil(5/2) = 3 windows a side: one cell of −∞ padding after the input (the odd cell after)
    np.testing.assert_array_equal(same["P0"], [[7, 9, 10], [17, 19, 20], [22, 24, 25]])


# -- published values ----------------------------------------------------------------------------


MAZUR = {
    "X": [0.05, 0.10], "Y": [0.01, 0.99], "layers": ["dense", "sigmoid", "dense", "sigmoid"],
    "W1": [[0.15, 0.25], [0.20, 0.30]], "B1": [0.35, 0.35],
    "W2": [[0.40, 0.50], [0.45, 0.55]], "B2": [0.60, 0.60], "lr": 0.5,
}  # fmt: skip


def test_matt_mazur_with_his_half_squared_error():
    """"A Step by Step Backpropagation Example": E_total = Σ ½(target − out)², written as he
    writes it (the half sum); every number he gives, one step at lr 0.5. Mazur's w1 (i1 → h1)
    is W1[0,0], w2 (i2 → h1) W1[1,0], w5 (h1 → o1) W2[0,0], w6 (h2 → o1) W2[1,0] …"""
    trace = trace_input({**MAZUR, "loss": {"type": "mse", "reduction": "sum", "half": True}})
    np.testing.assert_allclose(trace["A1"], [0.593269992, 0.596884378], atol=1e-9)
    np.testing.assert_allclose(trace["A2"], [0.75136507, 0.772928465], atol=1e-8)
    assert float(trace["L"]) == pytest.approx(0.298371109, abs=1e-9)  # E_total
    np.testing.assert_allclose(trace["dL_dA2"], [0.74136507, -0.217071535], atol=1e-8)  # ∂E/∂out_o
    np.testing.assert_allclose(trace["dA2_dZ2"], [0.186815602, 0.175510053], atol=1e-9)  # ∂out_o/∂net_o
    assert trace["dL_dW2"][0, 0] == pytest.approx(0.082167041, abs=1e-9)  # ∂E/∂w5
    assert trace["dL_dA1"][0] == pytest.approx(0.036350306, abs=1e-9)  # ∂E_total/∂out_h1
    assert trace["dA1_dZ1"][0] == pytest.approx(0.241300709, abs=1e-9)  # ∂out_h1/∂net_h1
    assert trace["dL_dW1"][0, 0] == pytest.approx(0.000438568, abs=1e-9)  # ∂E/∂w1
    np.testing.assert_allclose(trace["W2"], [[0.35891648, 0.511301270], [0.408666186, 0.561370121]], atol=1e-8)
    np.testing.assert_allclose(trace["W1"], [[0.149780716, 0.24975114], [0.19956143, 0.29950229]], atol=1e-8)
    # The mean of (A − Y)² over his two outputs is the same function (mlp-mazur.json)
    mean = trace_input({**MAZUR, "loss": "mse"})
    for name in ("L", "dL_dA2", "W1", "W2"):
        np.testing.assert_allclose(mean[name], trace[name], rtol=1e-15, err_msg=name)
    stage = trace.problem.stage
    assert stage["L"].equation == "Σ ½·(A2 − Y)²" and stage["dL_dA2"].equation == "A2 − Y"


def test_half_and_sum_scale_the_loss_and_its_gradient():
    base = trace_input({**MAZUR, "loss": "mse"})
    for loss, scale in (({"type": "mse", "half": True}, 0.5), ({"type": "mse", "reduction": "sum"}, 2.0),
                        ({"type": "mse", "reduction": "sum", "half": True}, 1.0)):  # fmt: skip
        trace = trace_input({**MAZUR, "loss": loss})
        assert float(trace["L"]) == pytest.approx(scale * float(base["L"]), rel=1e-15)
        np.testing.assert_allclose(trace["dL_dW1"], scale * base["dL_dW1"], rtol=1e-14)


def test_log_softmax_with_nll_is_cross_entropy():
    """log_softmax + nll and softmax + cross_entropy: the same L and gradients; dL/dZ
    = (softmax(Z) − Y)/M, read as (exp(A) − Y)/M."""
    data = {"X": [[1.0, 0.5], [-0.5, 2.0]], "Y": [1, 0], "W1": [[1.0, -1.0, 0.5], [0.2, 0.3, -0.4]],
            "B1": [0.1, 0.0, -0.1]}  # fmt: skip
    nll = trace_input({**data, "layers": ["dense", "log_softmax"]})  # the loss left out: nll
    ce = trace_input({**data, "layers": ["dense", "softmax"]})
    assert nll.problem.network.loss.type == "nll"
    np.testing.assert_allclose(np.exp(nll["A1"]), ce["A1"], rtol=1e-15)
    for name in ("L", "dL_dZ1", "dL_dW1", "dL_dX"):
        np.testing.assert_allclose(nll[name], ce[name], rtol=1e-14, err_msg=name)
    assert nll.problem.stage["dL_dZ1"].equation == "(dA1/dZ1)ᵀ·dL/dA1 = (exp(A1) − Y) / M"
    np.testing.assert_allclose(nll["dL_dA1"], [[0, -0.5, 0], [-0.5, 0, 0]])


# -- bad descriptions ----------------------------------------------------------------------------


def _net(**changes):
    data = {"X": np.ones((4, 4)).tolist(), "layers": [{"type": "maxpool", "size": 2}, "flatten", "dense", "log_softmax"],
            "W1": np.ones((4, 3)).tolist(), "B1": [0, 0, 0], "Y": 1}  # fmt: skip
    data.update(changes)
    return data


BAD = [
    ("log_softmax not last", {"layers": ["flatten", "dense", "log_softmax", "relu"]},
     "layers[2]: log_softmax can only be the last layer"),
    ("nll without log_softmax", {"layers": [{"type": "maxpool", "size": 2}, "flatten", "dense", "softmax"], "loss": "nll"},
     "loss: nll needs a log_softmax as the last layer"),
    ("a reduction that is neither", {"loss": {"type": "nll", "reduction": "avg"}}, "loss.reduction: expected mean | sum"),
    ("half on a loss other than mse", {"loss": {"type": "nll", "half": True}}, "loss.half: unknown option 'half'; nll takes reduction"),
    ("half not a boolean", {"loss": {"type": "mse", "half": "yes"}, "Y": [0, 0, 0]}, "loss.half: half is true or false"),
    ("a loss object without its type", {"loss": {"reduction": "sum"}}, 'loss: no "type"'),
    ("an unknown loss in an object", {"loss": {"type": "hinge"}}, "loss: unknown loss 'hinge'"),
    ("nll with probabilities", {"Y": [0.2, 0.3, 0.5]}, "Y: nll takes one class index"),
    ("padding that is a word", {"layers": [{"type": "maxpool", "padding": "full"}, "flatten", "dense", "log_softmax"]},
     'layers[0].padding: padding is a number, [rows, cols], [top, bottom, left, right], "valid" or "same"'),
    ("padding of three numbers", {"layers": [{"type": "avgpool", "padding": [1, 1, 1]}, "flatten", "dense", "log_softmax"]},
     "layers[0].padding: padding is a number, [rows, cols] or [top, bottom, left, right], got 3 numbers"),
    ("a side past half the window", {"layers": [{"type": "maxpool", "size": 2, "padding": [0, 2, 0, 0]}, "flatten", "dense", "log_softmax"]},
     "layers[0].padding: padding 2 is more than half the window (2 rows)"),
    ("a dilated window larger than the map", {"layers": [{"type": "maxpool", "size": 3, "dilation": 2}, "flatten", "dense", "log_softmax"]},
     "layers[0].size: the 3×3 pool window (spanning 5×5 with its dilation) is larger than X (4×4)"),
    ("dilation on an average pool", {"layers": [{"type": "avgpool", "dilation": 2}, "flatten", "dense", "log_softmax"]},
     "layers[0]: unknown option 'dilation'; avgpool takes size, stride, padding, ceil_mode, count_include_pad"),
    ("ceil_mode not a boolean", {"layers": [{"type": "maxpool", "ceil_mode": 1}, "flatten", "dense", "log_softmax"]},
     "layers[0].ceil_mode: ceil_mode is true or false"),
    ("an adaptive output of 0", {"layers": [{"type": "adaptive_avgpool", "output_size": 0}, "flatten", "dense", "log_softmax"]},
     "layers[0].output_size: must be at least 1"),
    ("an elu alpha that is text", {"layers": ["flatten", "dense", {"type": "elu", "alpha": "one"}]}, "layers[2].alpha: alpha is a finite number"),
]  # fmt: skip


@pytest.mark.parametrize("changes, fragment", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_each_bad_description_is_one_line_naming_the_file_and_the_key(tmp_path, changes, fragment):
    path = write(tmp_path, _net(**changes))
    result = invoke("step", path, "--format", "json")
    assert result.exit_code == 2, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"cnntrace: {path}: ")
    assert fragment in lines[0], lines[0]


def test_the_good_description_of_the_bad_ones_runs(tmp_path):
    result = invoke("step", write(tmp_path, _net()), "--format", "json")
    assert result.exit_code == 0, result.stderr


# -- every command ---------------------------------------------------------------------------


NETWORK = {
    "X": np.linspace(-1, 1, 2 * 1 * 7 * 6).reshape(2, 1, 7, 6).round(2).tolist(),
    "layers": ["conv", {"type": "elu", "alpha": 0.5},
               {"type": "maxpool", "size": 3, "stride": 2, "padding": [1, 0, 0, 1], "ceil_mode": True},
               "conv", "gelu", {"type": "adaptive_avgpool", "output_size": 2}, "flatten", "dense", "silu",
               "dense", {"type": "softplus", "beta": 2}, "dense", "log_softmax"],
    "W1": (np.arange(8).reshape(2, 1, 2, 2) / 10 - 0.3).tolist(), "B1": [0.1, -0.1],
    "W2": (np.arange(16).reshape(2, 2, 2, 2) / 20 - 0.4).tolist(), "B2": [0.0, 0.1],
    "W3": (np.arange(24).reshape(8, 3) / 20 - 0.5).tolist(), "B3": [0.0, 0.1, 0.0],
    "W4": (np.arange(9).reshape(3, 3) / 10 - 0.4).tolist(), "B4": [0.0, 0.0, 0.1],
    "W5": (np.arange(9).reshape(3, 3) / 10 - 0.3).tolist(), "B5": [0.1, 0.0, 0.0],
    "Y": [2, 0], "loss": {"type": "nll", "reduction": "sum"}, "lr": 0.1,
}  # fmt: skip


def test_every_command_works_on_the_new_kinds(tmp_path):
    path = write(tmp_path, NETWORK)
    step = invoke("step", path, "--format", "json")
    assert step.exit_code == 0, step.stderr
    values = json.loads(step.stdout)
    assert "dA5_dZ5" in values["backward"] and "P1" in values["forward"] and "P2" in values["forward"]
    table = invoke("step", path)
    assert "−Σ Y·A5" in table.stdout and "exp(A5) − Y" in table.stdout
    check = invoke("check", path, "--format", "json")
    assert check.exit_code == 0, check.stdout + check.stderr
    explained = json.loads(invoke("explain", path, "P1[1,0,1,1]", "--format", "json").stdout)
    assert explained["value"] == pytest.approx(values["forward"]["P1"][1][0][1][1], abs=1e-15)
    answers = write(tmp_path, {"dL_dZ5": (np.asarray(values["backward"]["dL_dZ5"]) / 2).tolist()}, "answers.json")
    verified = invoke("verify", path, answers, "--format", "json")
    assert verified.exit_code == 1 and "sum_divided" in verified.stdout
    like = invoke("init", "--like", path)
    assert like.exit_code == 0, like.stderr
    made = json.loads(like.stdout)
    assert made["loss"] == {"type": "nll", "reduction": "sum"} and made["layers"][2]["padding"] == [1, 0, 0, 1]
    assert invoke("step", write(tmp_path, made, "like.json")).exit_code == 0
    sheet = invoke("sheet", path)
    assert sheet.exit_code == 0, sheet.stderr
    trained = invoke("train", path, "--epochs", 2, "--format", "json")
    assert trained.exit_code == 0, trained.stderr
    schema = json.loads(invoke("schema").stdout)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(NETWORK, schema)


def test_the_schema_takes_each_loss_object_and_refuses_half_elsewhere():
    jsonschema = pytest.importorskip("jsonschema")
    from cnntrace.schema import INPUT_SCHEMA

    good = {**MAZUR, "loss": {"type": "mse", "reduction": "sum", "half": True}}
    jsonschema.validate(good, INPUT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**MAZUR, "loss": {"type": "bce", "half": True}}, INPUT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**MAZUR, "loss": {"type": "mse", "reduction": "max"}}, INPUT_SCHEMA)


# -- the ops over random options: PyTorch (when installed) and the naive twins ----------------


def _random_pools(count: int, seed: int = 0):
    """(A, size, stride, padding (symmetric), dilation, ceil_mode, count_include_pad) that
    PyTorch takes: padding at most half the window, the window inside the padded map."""
    rng = np.random.default_rng(seed)
    made = []
    while len(made) < count:
        H, W = (int(n) for n in rng.integers(2, 9, 2))
        size = tuple(int(n) for n in rng.integers(1, 4, 2))
        stride = tuple(int(n) for n in rng.integers(1, 4, 2))
        dilation = tuple(int(n) for n in rng.integers(1, 3, 2))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in size)
        spans = [d * (k - 1) + 1 for d, k in zip(dilation, size)]
        if spans[0] > H + 2 * padding[0] or spans[1] > W + 2 * padding[1]:
            continue
        made.append((rng.normal(size=(2, 2, H, W)), size, stride, padding, dilation, bool(rng.integers(2)),
                     bool(rng.integers(2))))  # fmt: skip
    return made


def test_the_pools_agree_with_pytorch_over_random_options():
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    from cnntrace import ops

    functional = torch.nn.functional
    worst = 0.0
    for A, size, stride, padding, dilation, ceil_mode, count_include_pad in _random_pools(200):
        rng = np.random.default_rng(A.size)
        x = torch.tensor(A, requires_grad=True)
        P, cache = ops.maxpool_forward(A, size, stride, padding, dilation, ceil_mode)
        expected = functional.max_pool2d(x, size, stride, padding, dilation, ceil_mode)
        dL_dP = rng.normal(size=P.shape)
        expected.backward(torch.tensor(dL_dP))
        worst = max(worst, np.abs(P - expected.detach().numpy()).max(),
                    np.abs(ops.maxpool_backward(dL_dP, cache) - x.grad.numpy()).max())  # fmt: skip
        x = torch.tensor(A, requires_grad=True)
        P, cache = ops.avgpool_forward(A, size, stride, padding, ceil_mode, count_include_pad)
        expected = functional.avg_pool2d(x, size, stride, padding, ceil_mode, count_include_pad)
        dL_dP = rng.normal(size=P.shape)
        expected.backward(torch.tensor(dL_dP))
        worst = max(worst, np.abs(P - expected.detach().numpy()).max(),
                    np.abs(ops.avgpool_backward(dL_dP, cache) - x.grad.numpy()).max())  # fmt: skip
    assert worst < 1e-12


def test_the_pools_agree_with_the_naive_twins_over_random_options():
    from cnntrace import ops
    from tests import naive

    for A, size, stride, padding, dilation, ceil_mode, count_include_pad in _random_pools(60, seed=1):
        rng = np.random.default_rng(A.size)
        P, cache = ops.maxpool_forward(A, size, stride, padding, dilation, ceil_mode)
        dL_dP = rng.normal(size=P.shape)
        np.testing.assert_array_equal(P, naive.general_maxpool(A, size, stride, padding, dilation, ceil_mode))
        np.testing.assert_allclose(ops.maxpool_backward(dL_dP, cache),
                                   naive.general_maxpool(A, size, stride, padding, dilation, ceil_mode, dL_dP), rtol=1e-14)
        P, cache = ops.avgpool_forward(A, size, stride, padding, ceil_mode, count_include_pad)
        dL_dP = rng.normal(size=P.shape)
        np.testing.assert_allclose(P, naive.general_avgpool(A, size, stride, padding, ceil_mode, count_include_pad),
                                   rtol=1e-13, atol=1e-15)  # fmt: skip
        np.testing.assert_allclose(ops.avgpool_backward(dL_dP, cache),
                                   naive.general_avgpool(A, size, stride, padding, ceil_mode, count_include_pad, dL_dP),
                                   rtol=1e-13, atol=1e-15)  # fmt: skip


@pytest.mark.parametrize("out", [(1, 1), (2, 3), (3, 3), (5, 4), (7, 9)])
def test_adaptive_average_pooling_agrees_with_pytorch(out):
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    from cnntrace import ops

    A = np.random.default_rng(sum(out)).normal(size=(2, 3, 5, 7))
    x = torch.tensor(A, requires_grad=True)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, out)
    dL_dP = np.random.default_rng(1).normal(size=expected.shape)
    expected.backward(torch.tensor(dL_dP))
    np.testing.assert_allclose(ops.adaptive_avgpool_forward(A, out), expected.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ops.adaptive_avgpool_backward(dL_dP, A.shape), x.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_the_activations_agree_with_pytorch_far_out():
    """Large and small Z: elu's exp, gelu's erf tails, softplus past its threshold."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    from cnntrace import ops

    functional = torch.nn.functional
    Z = np.concatenate([np.linspace(-40, 40, 161), np.random.default_rng(0).normal(size=50) * 3])[None]
    for ours, derivative, theirs in (
        (lambda z: ops.elu_forward(z, 0.7), lambda z: ops.elu_grad(z, 0.7), lambda x: functional.elu(x, 0.7)),
        (ops.gelu_forward, ops.gelu_grad, functional.gelu),
        (ops.silu_forward, ops.silu_grad, functional.silu),
        (lambda z: ops.softplus_forward(z, 2.0, 5.0), lambda z: ops.softplus_grad(z, 2.0, 5.0),
         lambda x: functional.softplus(x, 2.0, 5.0)),
        (ops.log_softmax, None, lambda x: torch.log_softmax(x, dim=1)),
    ):  # fmt: skip
        x = torch.tensor(Z, requires_grad=True)
        expected = theirs(x)
        np.testing.assert_allclose(ours(Z), expected.detach().numpy(), rtol=1e-12, atol=1e-14)
        if derivative is not None:
            expected.sum().backward()
            np.testing.assert_allclose(derivative(Z), x.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_window_of_padding_only_is_refused(tmp_path):
    """Two taps 3 apart over one cell padded "same" (1 before, 2 after): both land in the
    padding, where a max-pool would give −∞."""
    data = {"X": [[5.0]], "grad": [[1.0]], "layers": [{"type": "maxpool", "size": 2, "stride": 1, "dilation": 3, "padding": "same"}]}
    result = invoke("step", write(tmp_path, data))
    assert result.exit_code == 2 and result.stdout == ""
    assert "layers[0].padding: pool window row 0 holds padding only (taps at [-1, 2], X has 1 row)" in result.stderr
