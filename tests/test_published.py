"""Published values, pinned: the deeplearning.ai "Convolution model, step by step" tests of
conv_backward and pool_backward, Matt Mazur's step-by-step backpropagation example, and a
two-class softmax exercise worked by hand.

The notebook's arrays are channels-last (m, n_H, n_W, n_C), its filters (f, f, n_C_prev,
n_C); cnntrace's are PyTorch's (m, C, H, W) and (K, C, kh, kw): the tests transpose them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnntrace.api import trace_input


def _conv_case():
    """The notebook's conv_backward test: seed 1, pad 2, stride 2, dZ = Z."""
    rng = np.random.RandomState(1)
    A_prev, W, b = rng.randn(10, 4, 4, 3), rng.randn(2, 2, 3, 8), rng.randn(1, 1, 1, 8)
    return {
        "X": A_prev.transpose(0, 3, 1, 2).tolist(), "W1": W.transpose(3, 2, 0, 1).tolist(),
        "B1": b.reshape(8).tolist(), "layers": [{"type": "conv", "stride": 2, "padding": 2}],
    }  # fmt: skip


def test_deeplearning_ai_conv_forward_and_backward():
    data = _conv_case()
    Z = trace_input({**data, "grad": np.zeros((10, 8, 4, 4)).tolist()})["Z1"]
    assert Z.mean() == pytest.approx(0.0489952035289, abs=1e-12)
    np.testing.assert_allclose(
        Z.transpose(0, 2, 3, 1)[3, 2, 1],
        [-0.61490741, -6.7439236, -2.55153897, 1.75698377, 3.56208902, 0.53036437, 5.18531798, 8.75898442],
        atol=1e-8,
    )
    trace = trace_input({**data, "grad": Z.tolist()})
    assert trace["dL_dX"].mean() == pytest.approx(1.45243777754, abs=1e-11)
    assert trace["dL_dW1"].mean() == pytest.approx(1.72699145831, abs=1e-11)
    assert trace["dL_dB1"].mean() == pytest.approx(7.83923256462, abs=1e-11)


@pytest.mark.parametrize(
    "mode, row",
    [
        ("maxpool", [[0.0, 0.0], [5.05844394, -1.68282702], [0.0, 0.0]]),
        ("avgpool", [[0.08485462, 0.2787552], [1.26461098, -0.25749373], [1.17975636, -0.53624893]]),
    ],
)
def test_deeplearning_ai_pool_backward(mode, row):
    rng = np.random.RandomState(1)
    A_prev, dA = rng.randn(5, 5, 3, 2), rng.randn(5, 4, 2, 2)
    trace = trace_input({
        "X": A_prev.transpose(0, 3, 1, 2).tolist(), "grad": dA.transpose(0, 3, 1, 2).tolist(),
        "layers": [{"type": mode, "size": 2, "stride": 1}],
    })  # fmt: skip
    assert dA.mean() == pytest.approx(0.145713902729, abs=1e-12)
    np.testing.assert_allclose(trace["dL_dX"].transpose(0, 2, 3, 1)[1, 1], row, atol=1e-8)


def test_matt_mazur_step_by_step_mlp():
    """Two inputs, two sigmoid hidden units, two sigmoid outputs, E = Σ ½(target − out)²,
    which is mse's mean over the two outputs; one step at lr 0.5. W is n_in×n_out (F·W):
    Mazur's w1 (i1 → h1) is W1[0,0], w2 (i2 → h1) W1[1,0], w3 (i1 → h2) W1[0,1] …"""
    trace = trace_input({
        "X": [0.05, 0.10], "Y": [0.01, 0.99],
        "layers": ["dense", "sigmoid", "dense", "sigmoid"], "loss": "mse",
        "W1": [[0.15, 0.25], [0.20, 0.30]], "B1": [0.35, 0.35],
        "W2": [[0.40, 0.50], [0.45, 0.55]], "B2": [0.60, 0.60], "lr": 0.5,
    })  # fmt: skip
    np.testing.assert_allclose(trace["A1"], [0.593269992, 0.596884378], atol=1e-9)
    np.testing.assert_allclose(trace["A2"], [0.75136507, 0.772928465], atol=1e-8)
    assert float(trace["L"]) == pytest.approx(0.298371109, abs=1e-9)
    assert trace["dL_dW2"][0, 0] == pytest.approx(0.082167041, abs=1e-9)  # ∂E/∂w5
    np.testing.assert_allclose(trace["W2"], [[0.35891648, 0.511301270], [0.408666186, 0.561370121]], atol=1e-8)
    np.testing.assert_allclose(trace["W1"], [[0.149780716, 0.24975114], [0.19956143, 0.29950229]], atol=1e-8)


def test_a_two_class_softmax_by_hand():
    """Z = [1, 2], class 1: A = [1, e]/(1 + e), L = log(1 + e^−1), dL/dZ = A − Y."""
    trace = trace_input({
        "X": [1.0, 0.0], "Y": 1, "layers": ["dense", "softmax"],
        "W1": [[1.0, 2.0], [0.0, 0.0]], "B1": [0.0, 0.0],
    })  # fmt: skip
    a = 1 / (1 + math.e)
    np.testing.assert_allclose(trace["Z1"], [1.0, 2.0])
    np.testing.assert_allclose(trace["A1"], [a, 1 - a], rtol=1e-15)
    assert float(trace["L"]) == pytest.approx(math.log1p(math.exp(-1)), rel=1e-15)
    np.testing.assert_allclose(trace["dL_dZ1"], [a, -a], rtol=1e-15)
    np.testing.assert_allclose(trace["dL_dW1"], [[a, -a], [0.0, 0.0]], rtol=1e-15)
