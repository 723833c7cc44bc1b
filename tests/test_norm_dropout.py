"""Batch normalization and dropout: the ops against their naive twins, the whole pass
against PyTorch's autograd (float64), a hand-checkable batch norm pinned, the running
statistics, the bad inputs, and the network conv–batchnorm–relu–dropout–dense through
explain, check and verify."""

from __future__ import annotations

import math

import naive
import numpy as np
import pytest

from cnntrace import ops
from cnntrace.api import trace_input
from cnntrace.errors import InputError
from cnntrace.explain import explain_all
from cnntrace.gradcheck import check
from cnntrace.io import problem_from_dict
from cnntrace.verify import verify

# -- the ops against their naive twins -------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 3, 4), (1, 2, 3, 3)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_ops_match_the_naive_loops(shape, train):
    rng = np.random.default_rng(sum(shape))
    X = rng.normal(size=shape)
    C = shape[1]
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    mean, var = (None, None) if train else (rng.normal(size=C), rng.uniform(0.5, 2, size=C))
    dL_dZ = rng.normal(size=shape)
    Z_naive, mu_naive, var_naive = naive.batchnorm_forward(X, gamma, beta, mean, var)
    dX_naive, dgamma_naive, dbeta_naive = naive.batchnorm_backward(dL_dZ, X, gamma, mean, var)

    mu, sigmasq = ops.batchnorm_statistics(X) if train else (mean, var)
    Z, cache = ops.batchnorm_forward(X, gamma, beta, mu, sigmasq, 1e-5)
    dgamma, dbeta = ops.batchnorm_param_backward(dL_dZ, cache)
    dxhat = ops.batchnorm_xhat_backward(dL_dZ, gamma)
    if train:
        dvar = ops.batchnorm_var_backward(dxhat, cache)
        dmu = ops.batchnorm_mean_backward(dxhat, dvar, cache)
    else:
        dvar = dmu = np.zeros(C)
    dX = ops.batchnorm_input_backward(dxhat, dvar, dmu, cache)
    for got, want in [(Z, Z_naive), (mu, mu_naive), (sigmasq, var_naive), (dX, dX_naive),
                      (dgamma, dgamma_naive), (dbeta, dbeta_naive)]:  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if train:  # the three steps come to the compact form
        np.testing.assert_allclose(ops.batchnorm_backward_compact(dL_dZ, gamma, cache), dX, rtol=1e-10, atol=1e-12)


def test_dropout_ops_match_the_naive_loops():
    rng = np.random.default_rng(0)
    X, dL_dD = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    mask = ops.dropout_mask(7, X.shape, 0.3)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(mask, ops.dropout_mask(7, X.shape, 0.3))  # reproducible
    np.testing.assert_allclose(ops.dropout_forward(X, mask, 0.3), naive.dropout_forward(X, mask, 0.3), rtol=1e-15)
    np.testing.assert_allclose(ops.dropout_backward(dL_dD, mask, 0.3), naive.dropout_backward(dL_dD, mask, 0.3),
                               rtol=1e-15)  # fmt: skip


# -- a hand-checkable batch norm, pinned -----------------------------------------------------


def test_a_batch_norm_by_hand():
    """Four values of one unit, 1, 2, 3, 6: μ = 3, σ² = (4 + 1 + 0 + 9)/4 = 3.5; with ε ≈ 0 and
    γ = 2, β = 1: x̂ = (−2, −1, 0, 3)/√3.5, Z = 1 + 2x̂. With dL/dZ = 2Z/4 (mse against 0, the
    mean over 4), dL/dβ = Σ Z/2 = (4 + 2·Σx̂)/2 = 2 (Σ x̂ = 0), dL/dγ = Σ x̂·Z/2 = Σ x̂²
    = N = 4."""
    data = {"X": [[1.0], [2.0], [3.0], [6.0]], "Y": [[0.0]] * 4, "loss": "mse",
            "layers": [{"type": "batchnorm", "eps": 0}], "W1": [2.0], "B1": [1.0],
            "mean1": [0.0], "var1": [1.0]}  # fmt: skip
    with pytest.raises(InputError):  # eps must be positive
        trace_input(data)
    data["layers"] = [{"type": "batchnorm", "eps": 1e-300}]
    t = trace_input(data)
    s = math.sqrt(3.5)
    assert t["mu1"] == pytest.approx(3.0) and t["sigmasq1"] == pytest.approx(3.5)
    np.testing.assert_allclose(t["xhat1"], np.array([[-2], [-1], [0], [3]]) / s, rtol=1e-14)
    np.testing.assert_allclose(t["Z1"], 1 + 2 * np.array([[-2], [-1], [0], [3]]) / s, rtol=1e-14)
    assert t["dL_dB1"] == pytest.approx(2.0, rel=1e-14)
    assert t["dL_dW1"] == pytest.approx(4.0, rel=1e-14)
    # dL/dX = (γ/(N·σ))·(N·dL/dZ − Σ dL/dZ − x̂·Σ dL/dZ·x̂) with dL/dZ = (1 + 2x̂)/2:
    # 2 + 4x̂ − 2 − 4x̂ = 0: this loss cannot move X, whose mean and spread batch norm removes.
    np.testing.assert_allclose(t["dL_dX"], np.zeros((4, 1)), atol=1e-15)
    # running statistics: 0.9·0 + 0.1·3 and 0.9·1 + 0.1·3.5·4/3
    assert t["mean1"] == pytest.approx(0.3) and t["var1"] == pytest.approx(0.9 + 0.1 * 3.5 * 4 / 3)


def test_a_batch_norm_backward_by_hand():
    """The same four values, γ = 1, β = 0, and dL/dZ = (1, 0, 0, 0) given: x̂ = (−2, −1, 0, 3)/σ
    with σ = √3.5, and dL/dX_i = (1/(N·σ))·(N·g_i − Σ g − x̂_i·Σ g·x̂) = (1/(4σ))·(4g_i − 1 −
    x̂_i·x̂_0): x̂_0² = 4/3.5 = 8/7, x̂_1·x̂_0 = 2/3.5 = 4/7, x̂_3·x̂_0 = −6/3.5 = −12/7, so
    dL/dX = (13, −11, −7, 5)/(28σ), and through the three steps dL/dσ² = g_0·(X_0 − μ)·(−½)σ⁻³ = σ⁻³,
    dL/dμ = −g_0/σ + 0 = −1/σ."""
    data = {"X": [[1.0], [2.0], [3.0], [6.0]], "grad": [[1.0], [0.0], [0.0], [0.0]],
            "layers": [{"type": "batchnorm", "eps": 1e-300}], "W1": 1.0, "B1": 0.0}  # fmt: skip
    t = trace_input(data)
    sigma = math.sqrt(3.5)
    np.testing.assert_allclose(np.ravel(t["dL_dX"]), np.array([13, -11, -7, 5]) / (28 * sigma), rtol=1e-13)
    assert float(t["dL_dsigmasq1"]) == pytest.approx(sigma**-3, rel=1e-13)
    assert float(t["dL_dmu1"]) == pytest.approx(-1 / sigma, rel=1e-13)
    assert float(t["dL_dW1"]) == pytest.approx(-2 / sigma, rel=1e-13)  # Σ g·x̂ = x̂_0


def test_cs231n_batchnorm_shapes_and_statistics():
    """cs231n's check of batchnorm_forward: after it, each feature has mean β and std γ."""
    rng = np.random.default_rng(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    X = np.maximum(0, rng.normal(size=(N, D1)) @ rng.normal(size=(D1, D2))) @ rng.normal(size=(D2, D3))
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    mu, var = ops.batchnorm_statistics(X)
    Z, _ = ops.batchnorm_forward(X, gamma, beta, mu, var, 1e-5)
    np.testing.assert_allclose(Z.mean(axis=0), beta, rtol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), gamma, rtol=1e-5)


# -- the network every command must take -----------------------------------------------------


def network(M=3, *, running=True, bn_mode="train", dropout=None, seed=1) -> dict:
    """conv → batchnorm → relu → dropout → maxpool → flatten → dense → batchnorm → softmax."""
    rng = np.random.default_rng(seed)
    drop = {"type": "dropout", "p": 0.25, "seed": 3} if dropout is None else dropout
    data = {
        "X": rng.normal(size=(M, 2, 5, 5)).round(2).tolist(), "Y": [i % 3 for i in range(M)],
        "layers": [{"type": "conv"}, {"type": "batchnorm", "mode": bn_mode}, "relu", drop, "maxpool", "flatten",
                   "dense", {"type": "batchnorm", "mode": bn_mode}, "softmax"],
        "loss": "cross_entropy",
        "W1": rng.normal(size=(3, 2, 2, 2)).round(2).tolist(), "B1": [0.1, 0.2, -0.1],
        "W2": [1.0, 0.5, 2.0], "B2": [0.0, 0.1, -0.2],
        "W3": rng.normal(size=(12, 3)).round(2).tolist(), "B3": [0.0, 0.0, 0.0],
        "W4": [1.5, 1.0, 0.5], "B4": [0.1, 0.0, 0.0],
    }  # fmt: skip
    if running or bn_mode == "eval":
        data.update({"mean2": [0.1, -0.2, 0.3], "var2": [1.0, 2.0, 0.5], "mean4": [0.0, 0.5, -0.5], "var4": [1.5, 1.0, 2.0]})
    return data


def torch_network(torch, data: dict, mask: np.ndarray | None) -> dict:
    """The same pass in torch's autograd, float64: L, its gradients, the running statistics."""
    F = torch.nn.functional
    t = {k: torch.tensor(np.asarray(v, dtype=np.float64), dtype=torch.float64) for k, v in data.items()
         if k[0] in "XWB"}  # fmt: skip
    for _name, value in t.items():
        value.requires_grad_(True)
    training = data["layers"][1]["mode"] == "train"
    running = {k: torch.tensor(np.asarray(data[k], dtype=np.float64)) for k in ("mean2", "var2", "mean4", "var4")
               if k in data}  # fmt: skip
    Z1 = F.conv2d(t["X"], t["W1"], t["B1"])
    Z2 = F.batch_norm(Z1, running.get("mean2"), running.get("var2"), t["W2"], t["B2"], training, 0.1, 1e-5)
    A2 = torch.relu(Z2)
    D2 = A2 * torch.tensor(mask) / 0.75 if mask is not None else A2
    P2 = F.max_pool2d(D2, 2, 2)
    Z3 = P2.reshape(P2.shape[0], -1) @ t["W3"] + t["B3"]
    Z4 = F.batch_norm(Z3, running.get("mean4"), running.get("var4"), t["W4"], t["B4"], training, 0.1, 1e-5)
    L = F.cross_entropy(Z4, torch.tensor(data["Y"]))
    L.backward()
    out = {"L": L.detach().numpy(), **{f"dL_d{k}": v.grad.numpy() for k, v in t.items()}}
    out.update({k: v.numpy() for k, v in running.items()})
    return out


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_network_agrees_with_pytorch(mode):
    torch = pytest.importorskip("torch", reason="PyTorch's autograd is the oracle here")
    torch.set_num_threads(1)
    for seed in range(3):
        data = network(M=4, bn_mode=mode, seed=seed)
        t = trace_input(data)
        mask = np.asarray(t["mask2"]) if mode == "train" else None
        if mode == "eval":
            data["layers"][3] = {"type": "dropout", "mode": "eval"}
            t = trace_input(data)
        want = torch_network(torch, data, mask)
        assert float(t["L"]) == pytest.approx(float(want["L"]), rel=1e-12)
        for name in ("dL_dX", "dL_dW1", "dL_dB1", "dL_dW2", "dL_dB2", "dL_dW3", "dL_dB3", "dL_dW4", "dL_dB4"):
            np.testing.assert_allclose(t[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
        if mode == "train":  # torch updated its running statistics in place
            for name in ("mean2", "var2", "mean4", "var4"):
                np.testing.assert_allclose(t[name], want[name], rtol=1e-12, err_msg=name)
        else:
            assert "mean2" not in t.update


def test_batchnorm_first_reads_vectors_or_maps_by_xs_axes():
    vectors = {"X": [[1.0, 2.0], [3.0, 5.0]], "Y": [[0.0, 1.0], [1.0, 0.0]], "loss": "mse",
               "layers": ["batchnorm"], "W1": [1.0, 1.0], "B1": [0.0, 0.0]}  # fmt: skip
    t = trace_input(vectors)
    assert t.problem.layouts["X"].form == "vector" and np.shape(t["mu1"]) == (2,)
    maps = {"X": np.arange(2 * 2 * 3 * 3, dtype=float).reshape(2, 2, 3, 3).tolist(), "grad": np.ones((2, 2, 3, 3)).tolist(),
            "layers": ["batchnorm"], "W1": [1.0, 2.0], "B1": [0.0, 0.0]}  # fmt: skip
    t = trace_input(maps)
    assert t.problem.layouts["X"].shape == (2, 3, 3)
    one_channel = {"X": np.arange(18.0).reshape(2, 3, 3).tolist(), "grad": np.ones((2, 3, 3)).tolist(),
                   "layers": ["dropout", "batchnorm"], "W1": 1.0, "B1": 0.0}  # fmt: skip
    assert trace_input(one_channel).problem.layouts["X"].shape == (1, 3, 3)


# -- every command on the network ------------------------------------------------------------


def test_explain_covers_every_entry_and_adds_up():
    t = trace_input(network(M=2))
    count = 0
    for e in explain_all(t):
        from cnntrace.terms import FUNCTIONS

        value = FUNCTIONS[e.function]([term.value for term in e.terms], e.parameter)
        assert value == pytest.approx(float(np.asarray(t[e.name])[e.index]), rel=1e-9, abs=1e-12), (e.name, e.index)
        count += 1
    assert count > 500


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_finite_differences_agree(mode):
    data = network(M=3, bn_mode=mode)
    results = check(problem_from_dict(data), max_entries=40)
    assert all(r.ok for r in results), [(r.name, r.max_rel_error) for r in results if not r.ok]
    assert sum(r.compared for r in results) > 100


def test_verify_names_each_kinds_mistakes():
    t = trace_input(network(M=3))
    problem = t.problem
    from cnntrace.verify import Tolerance, _Doctor, _Judge

    doctor = _Doctor(_Judge(t, Tolerance.fixed(1e-9, 1e-12), {}))
    made = {(m.id, name): values for m, values in doctor.mistakes() for name in m.given}
    for mistake, name in [("batchnorm_gamma_forgotten", "dL_dxhat2"), ("batchnorm_mean_variance_dropped", "dL_dZ1"),
                          ("batchnorm_unbiased_variance", "sigmasq2"), ("dropout_unscaled", "D2")]:  # fmt: skip
        answer = problem.present(name, made[mistake, name][name])
        (verdict,) = verify(t, {name: answer.tolist()}, rtol=1e-9, atol=1e-12)
        assert verdict.status == "wrong" and mistake in [d.id for d in verdict.diagnosis], (mistake, verdict)


# -- bad input: one key, one line ------------------------------------------------------------


@pytest.mark.parametrize(
    "change, key",
    [
        ({"layers": [{"type": "conv"}, "batchnorm", "relu", {"type": "dropout", "p": 1.0}, "maxpool", "flatten",
                     "dense", "batchnorm", "softmax"]}, "layers[3].p"),
        ({"layers": [{"type": "conv"}, "batchnorm", "relu", {"type": "dropout", "mask": [[1, 0]]}, "maxpool",
                     "flatten", "dense", "batchnorm", "softmax"]}, "layers[3].mask"),
        ({"layers": [{"type": "conv"}, "batchnorm", "relu", {"type": "dropout", "mask": np.full((3, 3, 4, 4), 0.5).tolist()},
                     "maxpool", "flatten", "dense", "batchnorm", "softmax"]}, "layers[3].mask"),
        ({"var2": [1.0, -1.0, 1.0]}, "var2"),
        ({"W2": [1.0, 2.0]}, "W2"),
        ({"mean9": [1.0]}, "mean9"),
    ],
)  # fmt: skip
def test_bad_inputs_name_their_key(change, key):
    with pytest.raises(InputError) as caught:
        problem_from_dict({**network(), **change})
    assert caught.value.key == key


def test_eval_mode_needs_the_running_statistics():
    data = network(bn_mode="eval")
    del data["var4"]
    with pytest.raises(InputError) as caught:
        problem_from_dict(data)
    assert caught.value.key == "var4"


def test_a_batch_of_one_after_dense_is_refused_in_training():
    data = {"X": [[1.0, 2.0]], "Y": [0.0], "loss": "mse", "layers": ["dense", "batchnorm"],
            "W1": [1.0, 1.0], "B1": 0.0, "W2": 1.0, "B2": 0.0}  # fmt: skip
    with pytest.raises(InputError) as caught:
        problem_from_dict(data)
    assert caught.value.key == "layers[1]"
    data["layers"] = ["dense", {"type": "batchnorm", "mode": "eval"}]
    data.update(mean2=0.0, var2=1.0)
    trace_input(data)


def test_two_dropouts_after_one_weighted_layer_are_refused():
    data = network()
    data["layers"] = data["layers"][:4] + ["dropout"] + data["layers"][4:]
    with pytest.raises(InputError, match="one dropout") as caught:
        problem_from_dict(data)
    assert caught.value.key == "layers[4]"


def test_a_given_mask_is_the_traces_mask():
    data = network(M=2)
    t = trace_input(data)
    mask = np.asarray(t["mask2"])
    mask[0, 0, 0, 0] = 1 - mask[0, 0, 0, 0]
    data["layers"][3] = {"type": "dropout", "p": 0.25, "mask": mask.tolist()}
    t2 = trace_input(data)
    np.testing.assert_array_equal(t2["mask2"], mask)
    np.testing.assert_allclose(t2["D2"], np.asarray(t2["A2"]) * mask / 0.75)


def test_dropped_units_are_counted_on_the_output_and_marked_on_the_gradient():
    t = trace_input(network(M=2))
    notes = t.annotations
    dropped = np.asarray(t["mask2"]) == 0
    assert f"{int(dropped.sum())} of {dropped.size} units dropped (mask2 = 0)" in notes["D2"].before[0]
    np.testing.assert_array_equal(notes["dL_dA2"].marks, dropped.astype(int))
    assert "no gradient flows back" in notes["dL_dA2"].legend
    assert np.all(np.asarray(t["dL_dA2"])[dropped] == 0)


# -- the command line ------------------------------------------------------------------------


def _invoke(*args):
    from typer.testing import CliRunner

    from cnntrace.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "change, key",
    [
        ({"layers": [{"type": "conv"}, "batchnorm", "relu", {"type": "dropout", "p": -0.1}, "maxpool", "flatten",
                     "dense", "batchnorm", "softmax"]}, "layers[3].p"),
        ({"layers": [{"type": "conv"}, "batchnorm", "relu", {"type": "dropout", "mask": [[2, 0]]}, "maxpool",
                     "flatten", "dense", "batchnorm", "softmax"]}, "layers[3].mask"),
        ({"W4": [[1.0, 2.0, 3.0]] * 2}, "W4"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_file_and_the_key(tmp_path, change, key):
    import json

    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**network(), **change}))
    result = _invoke("step", path)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert f"{path}" in line and f"{key}:" in line


def test_every_command_takes_the_network(tmp_path):
    import json

    path = tmp_path / "net.json"
    path.write_text(json.dumps(network(M=4)))
    for args in (["step", path, "--format", "json"], ["step", path, "--html", tmp_path / "page.html"],
                 ["explain", path, "dL_dmu2[1]"], ["explain", path, "D2[0,1,2,3]"], ["check", path],
                 ["sheet", path], ["sheet", path, "--key", "--format", "latex"], ["schema"],
                 ["init", "--like", path, "--seed", "1"], ["train", path, "--epochs", "2", "--seed", "3"]):  # fmt: skip
        result = _invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stdout.strip(), args
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"sigmasq2": [1, 1, 1]}))
    result = _invoke("verify", path, answers)
    assert result.exit_code == 1 and "sigmasq2" in result.stdout


# -- training ------------------------------------------------------------------------------


def test_training_moves_the_running_statistics_each_step_as_step_does():
    from cnntrace.train import train

    data = network(M=4, dropout={"type": "dropout", "mode": "eval"})
    problem = problem_from_dict(data)
    epochs = list(train(problem, 2))
    # the first epoch's step is step's update, running statistics included
    t = trace_input(data)
    for name in ("W1", "W2", "mean2", "var2", "mean4", "var4"):
        np.testing.assert_allclose(problem.present(name, epochs[0].parameters[name]), t[name], rtol=1e-13, err_msg=name)
    # and the second starts from where the first ended
    assert not np.allclose(epochs[1].parameters["mean2"], epochs[0].parameters["mean2"])


def test_training_draws_a_fresh_dropout_mask_each_step_from_its_seed():
    from cnntrace.train import train

    problem = problem_from_dict(network(M=4))
    first = [e.parameters["W1"] for e in train(problem, 3, seed=5)]
    again = [e.parameters["W1"] for e in train(problem, 3, seed=5)]
    other = [e.parameters["W1"] for e in train(problem, 3, seed=6)]
    np.testing.assert_array_equal(first[-1], again[-1])
    assert not np.allclose(first[-1], other[-1])


def test_a_test_set_is_evaluated_with_the_running_statistics_and_no_dropout():
    from cnntrace.train import evaluate, train

    problem = problem_from_dict(network(M=6))
    test = problem_from_dict(network(M=3, seed=9))
    (epoch,) = list(train(problem, 1, test=test))
    data = network(M=3, seed=9, bn_mode="eval", dropout={"type": "dropout", "mode": "eval"})
    for name, value in epoch.parameters.items():
        data[name] = value.tolist()
    assert epoch.test_loss == pytest.approx(float(trace_input(data)["L"]), rel=1e-12)
    assert evaluate(test, epoch.parameters)[0] == pytest.approx(epoch.test_loss, rel=1e-15)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_latex_typesets_batch_norms_names_and_compiles(tmp_path, mode):
    """μ2, σ²2, x̂2, ε, √ and ½ in LaTeX's notation: ASCII, and a document pdflatex takes."""
    import json
    import shutil
    import subprocess

    path = tmp_path / "net.json"
    path.write_text(json.dumps(network(M=2, bn_mode=mode)))
    for args in (["step", path, "--format", "latex"], ["sheet", path, "--key", "--format", "latex"]):
        result = _invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.isascii(), sorted({c for c in result.stdout if not c.isascii()})
    assert r"\hat{x}_{2}" in result.stdout and (r"\sigma^{2}_{2}" in result.stdout) == (mode == "train")
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex on this machine")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
                                      + result.stdout + "\\end{document}\n")  # fmt: skip
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode("latin-1")[-2000:]


def test_init_like_a_given_mask_draws_one_for_its_own_batch(tmp_path):
    import json

    data = network(M=2)
    data["layers"][3] = {"type": "dropout", "p": 0.25, "mask": np.ones((2, 3, 4, 4)).tolist()}
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data))
    result = _invoke("init", "--like", path, "--batch", "3", "--seed", "4")
    assert result.exit_code == 0, result.stderr
    fresh = json.loads(result.stdout)
    assert "seed" in fresh["layers"][3] and "mask" not in fresh["layers"][3]
    assert np.shape(trace_input(fresh)["mask2"]) == (3, 3, 4, 4)


def test_training_with_a_given_mask_in_mini_batches():
    from cnntrace.train import train

    data = network(M=4)
    data["layers"][3] = {"type": "dropout", "p": 0.25, "mask": np.ones((4, 3, 4, 4)).tolist()}
    (epoch,) = list(train(problem_from_dict(data), 1, batch_size=2, seed=1))
    assert np.all(np.isfinite(epoch.parameters["W1"]))


def test_training_table_shows_running_statistics_the_file_did_not_give(tmp_path):
    """A batch norm without mean{l} and var{l} in the file trains them from 0 and 1; the
    table of trained parameters shows them as vectors."""
    import json

    data = {key: value for key, value in network().items() if not key.startswith(("mean", "var"))}
    path = tmp_path / "bn.json"
    path.write_text(json.dumps(data))
    result = _invoke("train", path, "--epochs", 2)
    assert result.exit_code == 0, result.stderr
    assert "mean2" in result.stdout and "var2" in result.stdout
