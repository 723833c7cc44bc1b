"""A simulated class working exercises by hand: each learner rounds every stage to the
decimals the sheet asks for and computes the next stage from their own rounded answers,
as a pencil-and-paper learner does (see test_grading.py)."""

from __future__ import annotations

import numpy as np

from cnntrace.exercise import HandOptions, like_exercise
from cnntrace.problem import Problem
from cnntrace.tracer import run

#: The two-filter softmax network of the teacher's week: conv (2 filters) → ReLU → max-pool
#: → flatten → dense → softmax, cross-entropy on a class index.
SOFTMAX_TWO_FILTERS = {
    "X": [[1, 0, 2, 1, 0, 1], [0, 1, 1, 2, 1, 0], [2, 1, 0, 1, 0, 2], [1, 2, 1, 0, 1, 1],
          [0, 1, 2, 1, 1, 0], [1, 0, 1, 2, 0, 1]],
    "layers": ["conv", "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "softmax"],
    "W1": [[[1, 0, -1], [0, 1, 0], [-1, 0, 1]], [[0, 1, 0], [1, -1, 1], [0, 1, 0]]],
    "B1": [0, -1],
    "W2": [[0.1 * ((3 * i + j) % 5 - 2) for j in range(3)] for i in range(8)],
    "B2": [0, 0, 0],
    "loss": "cross_entropy",
    "Y": 1,
}


def hand_trace(template: Problem, seed: int, level: int = 1):
    """The trace of a --hand exercise like ``template`` (made with ``seed``), and its data."""
    from cnntrace.io import problem_from_dict

    data = like_exercise(template, seed, hand=HandOptions(level, False))
    return run(problem_from_dict(data)), data


def worked_by_hand(trace, decimals: int, mistake=None, names=None) -> dict:
    """The answers of a learner who rounds every stage to ``decimals`` and carries their own
    rounded values forward. ``mistake`` (a Mistake) is made on the way: its stages take its
    values computed from the learner's own earlier answers: ``mistake(values, weights)``
    gives {stage: value} (general shapes) from the learner's pass. {name: nested lists}."""
    problem = trace.problem
    network = problem.network
    X, target, weights = problem.general_X(), problem.general_target, problem.general_weights()
    names = names or [stage.name for stage in problem.stages]
    mine: dict = {}
    for stage in problem.stages:
        with np.errstate(all="ignore"):
            values = network.resume(X, target, weights, problem.lr, mine)
            wrong = mistake({"X": X, **values}, weights) if mistake is not None else {}
            if stage.name in wrong:
                values = network.resume(X, target, weights, problem.lr, {**mine, **wrong})
        mine[stage.name] = np.round(values[stage.name], decimals)
    return {name: np.asarray(problem.present(name, mine[name])).tolist() for name in names}
