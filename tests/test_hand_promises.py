"""`init --hand` keeps its promises on the reference and a two-filter softmax network, checked
on the trace itself rather than by the exercise's own report. 12 seeds of each by default;
CNNTRACE_SLOW=1 checks 300 (about ten minutes)."""

import os

import numpy as np
import pytest

from cnntrace.exercise import HAND_PROMISES
from cnntrace.io import load_problem, problem_from_dict
from tests.classroom import SOFTMAX_TWO_FILTERS, hand_trace

SEEDS = 300 if os.environ.get("CNNTRACE_SLOW") else 12
NETWORKS = {"reference": load_problem("samples/reference.json"), "softmax": problem_from_dict(SOFTMAX_TWO_FILTERS)}


def broken_promises(t) -> list[str]:
    """The promises the trace ``t`` of a reference-like network breaks."""
    out = []
    Z1 = np.asarray(t["Z1"]).reshape(-1, *np.shape(t["Z1"])[-2:])  # (filters, h, w)
    if np.asarray(t["W1"]).ndim == 2:
        Z1 = Z1[:1]
    for k, z in enumerate(Z1):
        if not ((z > 0).any() and (z < 0).any()) or np.any(z == 0):
            out.append(f"filter {k}: Z1 of one sign or at 0")
    dA1 = np.asarray(t["dL_dA1"])
    if not np.any((np.asarray(t["Z1"]) < 0) & (dA1 != 0)):
        out.append("the ReLU mask stops no gradient")
    W2 = np.asarray(t.problem.inputs["W2"]).reshape(-1, *np.shape(t.problem.inputs["W2"])[1:] or (1,))
    if np.any(np.all(W2.reshape(W2.shape[0], -1) == 0, axis=1)):
        out.append("a row of zeros in W2")
    Z2 = np.atleast_1d(np.asarray(t["Z2"]))
    if np.any(np.abs(Z2) > 4) or np.ptp(Z2) > 4 and Z2.size > 1:
        out.append("Z2 beyond ±4 or its logits more than 4 apart")
    dW1 = np.asarray(t["dL_dW1"])
    filters = dW1.reshape(-1, *dW1.shape[-2:]) if dW1.ndim > 2 else dW1[None]
    if any(np.all(f == 0) for f in filters):
        out.append("a filter with an all-zero dL/dW1")
    return out


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_hand_exercise_keeps_every_promise(network, level):
    for seed in range(SEEDS):
        trace, data = hand_trace(NETWORKS[network], seed, level)
        assert broken_promises(trace) == [], (network, level, seed)


def test_the_promises_are_stated_in_the_file(tmp_path):
    from typer.testing import CliRunner

    from cnntrace.cli import app

    out = tmp_path / "ex.json"
    result = CliRunner().invoke(app, ["init", "--hand", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    import json

    assert HAND_PROMISES in json.loads(out.read_text())["comment"]
