"""Tracing one problem: ``run(problem) -> Trace``, every named matrix of the pass in the
user's shapes, and ``GeneralPass``, the same pass on ops.py's general shapes as the layer
kinds' explanations and marks read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cnntrace.layers.base import Annotation, GivenLayout, Stage
from cnntrace.network import SECTIONS, check_finite
from cnntrace.problem import Problem
from cnntrace.terms import Factor, constant
from cnntrace.text import symbol

#: How a notebook shows a trace, by format: filled by cnntrace.notebook (loaded with the API).
DISPLAY: dict = {}


@dataclass(frozen=True)
class Trace:
    """Every named matrix of one pass, in the shapes of the user's input.

    ``trace[name]`` gives any of them by its JSON name (``"Z1"``, ``"dL_dW1"``, ``"W1"``
    for the updated W1 …); ``forward``, ``backward`` and ``update`` hold them section by
    section, in the derivation's order; ``stage(name)`` tells how each was made.
    """

    problem: Problem
    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]
    update: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, self.stage(name).section)[name]

    def __repr__(self) -> str:
        """A short summary: the network, the batch, L, and how many matrices (printing a
        trace must not dump every number)."""
        problem = self.problem
        images = f"{problem.M} images" if problem.batched else "1 image"
        loss = f", L = {float(self.forward['L']):.6g}" if "L" in self.forward else ""
        counts = ", ".join(f"{len(values)} {section}" for section, values in self.sections().items())
        return f"<Trace: {problem.summary()}; {images}{loss}; matrices: {counts}>"

    # What a notebook shows. The display protocol asks the object itself; the views come from
    # above the renderers (cnntrace.notebook fills DISPLAY), so this module imports none.

    def _repr_html_(self) -> str | None:
        """The interactive page, compact, in an iframe (None where no view is registered)."""
        return DISPLAY["html"](self) if "html" in DISPLAY else None

    def _repr_markdown_(self) -> str | None:
        """The Markdown view, matrices without their derivations."""
        return DISPLAY["markdown"](self) if "markdown" in DISPLAY else None

    def __contains__(self, name: str) -> bool:
        return name in self.problem.stage

    def stage(self, name: str) -> Stage:
        return self.problem.stage[name]

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self.problem.stages

    def sections(self) -> dict[str, dict[str, np.ndarray]]:
        return {"forward": self.forward, "backward": self.backward, "update": self.update}

    def leading_axes(self, name: str) -> tuple[str, ...]:
        """Labels of the image / filter axes that lead the shape of ``name``."""
        return self.stage(name).layout.axes(self.problem.batched)[0]

    def axis_names(self, name: str) -> tuple[str, ...]:
        """A name for every axis of ``name``: image, filter, channel, row, col."""
        leading, trailing = self.stage(name).layout.axes(self.problem.batched)
        return leading + trailing

    @cached_property
    def annotations(self) -> dict:
        """Every layer's marks on the stages, by stage name (see layers.base.Annotation)."""
        out = {}
        view = self.general_pass()
        for layer in self.problem.network.layers:
            for name, annotation in layer.annotate(view).items():
                name = self.problem.network.path_name(layer, name)  # its path's part, at a fork
                out[name] = annotation if name not in out else out[name].merged(annotation)
        # Where a layer reads an earlier matrix than the one before it, its output says so.
        for name, note in self.problem.network.readings.items():
            noted = Annotation(before=(note,))
            out[name] = noted.merged(out[name]) if name in out else noted
        return out

    @cached_property
    def _general_pass(self) -> GeneralPass:
        return GeneralPass(self)

    def general_pass(self) -> GeneralPass:
        """The trace on the general shapes, and the inputs before the update (for explain
        and the layers' marks); made once."""
        return self._general_pass

    def expression(self, name: str) -> np.ndarray:
        """A factor of the chain rules that is not a matrix of the trace: "A2 − Y"."""
        problem = self.problem
        general = problem.network.loss.expressions(self.general_pass().value(problem.network.output),
                                                   problem.general_target)[name]  # fmt: skip
        layout = problem.layouts[problem.network.output]
        return general.reshape(layout.user_shape(problem.batched, problem.M))



class GeneralPass:
    """The trace's matrices on ops.py's general shapes, and the inputs before the update:
    what the layer kinds' explanations and marks read (layers.base.View)."""

    def __init__(self, trace: Trace):
        self.trace = trace
        problem = trace.problem
        self.problem = problem
        self.M = problem.M
        self.batched = problem.batched
        self.weights = problem.general_weights()  # before the update
        self.lr = problem.lr
        self._cache: dict[str, np.ndarray] = {}
        self._shape_cache: dict[str, tuple] = {}

    def _shape(self, name: str) -> tuple[int, ...]:
        """The general shape of ``name``."""
        problem = self.problem
        if name in self.weights:
            return self.weights[name].shape
        if name in ("Y", "grad"):
            return problem.general_target.shape
        stage = problem.stage.get(name)
        layout = stage.layout if stage is not None else problem.layouts[name]
        if isinstance(layout, GivenLayout):  # a weight's gradient, or a weight after the update
            return self.weights[stage.of].shape
        return (self.M, *layout.shape) if layout.form != "scalar" else ()

    def value(self, name: str) -> np.ndarray:
        """``name`` on the general shapes; an input (X, Y, a weight) as the pass used it."""
        if name not in self._cache:
            problem = self.problem
            if name == "X":
                value = problem.general_X()
            elif name in self.weights:
                value = self.weights[name]
            elif name in ("Y", "grad"):
                value = problem.general_target
            else:
                value = np.asarray(self.trace[name]).reshape(self._shape(name))
            self._cache[name] = value
        return self._cache[name]

    def user_shape(self, name: str) -> tuple[int, ...]:
        """The shape of ``name`` as the user sees it (an input's as the file gave it)."""
        if name == "X" or name in self.weights or name in ("Y", "grad"):
            return self.problem.inputs[name].shape
        return np.shape(self.trace[name])

    def layout(self, name: str):
        """The layout of ``name``: a stage's, or an input's."""
        stage = self.problem.stage.get(name)
        return stage.layout if stage is not None else self.problem.layouts[name]

    def _shapes(self, name: str):
        """(general, user) shapes of ``name``, whether they hold as many entries, and where
        the user's index starts in a general one (None: computed); found once, as an
        explanation of a large matrix asks for them for each of its factors."""
        if name not in self._shape_cache:
            general, user = tuple(self._shape(name)), tuple(self.user_shape(name))
            same_size = math.prod(general) == math.prod(user)
            # Where the user's shape is the general one without leading 1s (one image, one
            # channel), an index is the general one's tail: no arithmetic needed.
            lead = len(general) - len(user)
            tail = lead if lead >= 0 and general[lead:] == user and all(n == 1 for n in general[:lead]) else None
            self._shape_cache[name] = (general, user, same_size, tail)
        return self._shape_cache[name]

    def user_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        """The user's index of the entry at general ``index`` of ``name``."""
        general, user, same_size, tail = self._shapes(name)
        if not general or not user:
            return ()
        if tail is not None:
            return tuple(int(i) for i in index[tail:])
        if not same_size:  # a class index for a one-hot Y
            return tuple(index[1:] if not self.problem.batched else index)
        flat = 0
        for i, n in zip(index, general):  # row-major, as np.ravel_multi_index
            flat = flat * n + int(i)
        out = []
        for n in reversed(user):
            flat, i = divmod(flat, n)
            out.append(i)
        return tuple(reversed(out))

    def general_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]:
        general, user = self._shape(name), self.user_shape(name)
        if not general:
            return ()
        flat = int(np.ravel_multi_index(index, user)) if user else 0
        return tuple(int(i) for i in np.unravel_index(flat, general))

    def factor(self, name: str, index: tuple[int, ...], label: str | None = None) -> Factor:
        """Entry ``index`` (general) of ``name`` as a Factor labelled with the user's index."""
        value = float(self.value(name)[index])
        return Factor(label or symbol(name), self.user_index(name, index), value)

    def padded(self, name: str, m: int, c: int, row: int, col: int, padding=(0, 0)) -> Factor:
        """Cell (row, col) of map ``name`` framed by ``padding`` zeros (row, col in the
        map's own coordinates): its entry, or a padding zero."""
        H, W = self.value(name).shape[2:]
        if 0 <= row < H and 0 <= col < W:
            return self.factor(name, (m, c, row, col))
        return Factor(f"pad({name})[{row},{col}]", (), 0.0)

    def mean(self) -> tuple[Factor, ...]:
        """The 1/M of a batch's mean, as a factor; nothing for a single image."""
        return (constant("1/M", 1.0 / self.M),) if self.problem.batched else ()


def run(problem) -> Trace:
    """Trace one validated problem: forward, backward and update, in the user's shapes."""
    problem.check_size()
    network = problem.network
    weights = problem.general_weights()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        values = network.forward_backward(problem.general_X(), problem.general_target, weights)
        values.update(network.gradient_step(weights, values, problem.lr))
    check_finite(values, problem.stage, problem.display_only)
    presented = {name: problem.present(name, value) for name, value in values.items()}
    return Trace(
        problem,
        *({stage.name: presented[stage.name] for stage in problem.stages if stage.section == section}
          for section in SECTIONS),
    )  # fmt: skip
