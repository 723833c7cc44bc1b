"""A network is a list of layers and a loss; one generic pass runs it forward and back and
keeps every intermediate under its name.

    x = X;  for each layer: x, cache = layer.forward(x)          Z1, A1, P1, F, Z2, A2
    L = loss(x, Y)
    d = dL/dA2;  for each layer, last first: d = layer.backward(d, cache)
                                                  dL/dZ2, dL/dW2 … dL/dW1, dL/dX

then one step of gradient descent. ``forward_backward`` is the pass on the general shapes
of ops.py; ``run`` takes a validated Problem and returns a ``Trace`` whose matrices have
the user's shapes. The reference network is one such list (see reference.py).

>>> t = trace(X, Y, W1, B1, W2, B2)          # doctest: +SKIP
>>> t["dL_dW1"]                               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cnntrace.errors import NumericError
from cnntrace.layers import Context, Layer, Mistake, Rule, Stage, partial
from cnntrace.losses import Loss

SECTIONS = ("forward", "backward", "update")


def _grad(name: str) -> str:
    return f"dL_d{name}"


@dataclass(frozen=True)
class Network:
    """The layers in order, each at its place, and the loss on the last one's output."""

    layers: tuple[Layer, ...]
    loss: Loss
    summary: str | None = None  # the input's one-line description; the layers' by default

    @cached_property
    def params(self) -> tuple[str, ...]:
        """Every weight's name, in the order of the update: W1, B1, W2, B2 …"""
        return tuple(p for layer in self.layers for p in layer.params)

    @property
    def output(self) -> str:
        return self.layers[-1].output if self.layers else "X"

    @cached_property
    def fused(self) -> bool:
        """Whether the loss cancels against the last activation (sigmoid+bce, softmax+ce)."""
        return bool(self.layers) and self.loss.fuses(self.layers[-1])

    @cached_property
    def overwritable(self) -> tuple[bool, ...]:
        """For each layer, whether a training pass may write over the input it receives: an
        array the pass made that no cache holds (never X, nor a view of it)."""
        out, owned = [], False
        for layer in self.layers:
            out.append(owned)
            owned = owned if layer.views_input else not layer.keeps_output
        return tuple(out)

    def describe(self) -> str:
        return self.summary or " → ".join(layer.describe() for layer in self.layers)

    # -- the pass ------------------------------------------------------------------------

    def forward_backward(self, X, target, weights: dict, *, trace: bool = True, given: dict | None = None) -> dict:
        """One pass on the general shapes; {name: array} for every forward and backward
        stage, in the derivation's order.

        ``given`` ({stage name: array on the general shapes}) resumes the pass from any
        stages: each forward or backward stage named there is taken as given, and all that
        comes after it is computed from it (a learner's wrong P1 → their F → their Z2 …).

        ``trace=False`` is for training: it returns only L, the output and the weights'
        gradients, with exactly the values a trace gives. It skips dL/dX and the
        display-only stages (dL/dA2 and dA2/dZ2 where the loss cancels against the
        activation), keeps a ReLU's mask as booleans, and lets each matrix go as soon as
        the pass is done with it: each layer's cache holds only what its backward needs,
        and a layer may write its output over an input no one else holds (``overwritable``).
        X and the weights are never written to.
        """
        if given and not trace:
            raise ValueError("a pass that resumes from given stages is a trace")
        traced: dict[str, np.ndarray] = {}
        caches = []
        given = given or {}
        overwritable = self.overwritable if not trace else (False,) * len(self.layers)
        x = X
        for layer, overwrite in zip(self.layers, overwritable):
            x, cache = layer.forward(x, weights, trace, overwrite)
            x = given.get(layer.output, x)
            caches.append(cache)
            if trace:
                traced[layer.output] = x
        output, loss, layers = x, self.loss, self.layers
        logits = caches[-1][0] if self.fused else None
        L = loss.value(output, target, logits)
        if L is not None:
            traced["L"] = L

        if self.fused:
            # The loss cancels against the last activation: the backward pass starts one
            # layer down, at dL/dZ = (A − Y)/N, exact where the activation saturates.
            last, layers = layers[-1], layers[:-1]
            if trace:
                traced[_grad(last.output)] = given.get(_grad(last.output), loss.gradient(output, target, logits))
                traced[last.local] = given.get(last.local, last.derivative(*caches[-1]))
            d = traced[last.input_gradient] = given.get(last.input_gradient, loss.fused_backward(output, target))
            caches.pop()
        else:
            d = traced[_grad(self.output)] = given.get(_grad(self.output), loss.gradient(output, target, logits))
        grads = {}
        for position in reversed(range(len(layers))):
            layer = layers[position]
            stages = layer.backward(d, caches.pop(), weights, need_input=trace or position > 0, trace=trace)
            if given:
                stages = layer.resume(d, stages, given)
            if trace:
                traced.update(stages)
            for name in layer.gradients:
                grads[name] = stages[name]
            d = stages.get(layer.input_gradient)
        if not trace:
            return {"L": L, self.output: output, **grads}
        return traced

    def resume(self, X, target, weights: dict, lr: float, given: dict) -> dict:
        """Every stage of the pass and the update, from the stages in ``given`` on (see
        forward_backward); an update stage in ``given`` (W1 after the step) is taken as is."""
        values = self.forward_backward(X, target, weights, given=given)
        update = self.gradient_step(weights, values, lr)
        values.update({p: given.get(p, value) for p, value in update.items()})
        return values

    def mistakes(self, values: dict, weights: dict, lr: float, M: int) -> list[Mistake]:
        """The known mistakes of this network from the correct pass's ``values`` (general
        shapes, X included): each layer kind's, the loss's mean left out, the update's sign."""
        out = [mistake for layer in self.layers for mistake in layer.mistakes(values, weights)]
        first = self.layers[-1].input_gradient if self.fused else _grad(self.output)
        output = values[self.output]
        # The mean is over the images (bce, cross-entropy) or over every output (mse): try both.
        means = {M: f"the {M} images", output.size: f"all {output.size} outputs"}
        for N, what in means.items():
            if N > 1:
                out.append(Mistake("batch_mean_missing", f"dL/d{first[4:]} without the 1/N of the mean over "
                                   f"{what}: N = {N} times too large", {first: values[first] * N}))  # fmt: skip
        for p, gradient in self._updates:
            out.append(Mistake("update_sign", f"{p} + lr·dL/d{p}: the step went uphill, the sign of the update "
                               "reversed", {p: weights[p] + lr * values[gradient]}))  # fmt: skip
        return out

    def conventions(self) -> dict:
        """The switches of ``conventions`` where a layer differs from the default."""
        out = {}
        for layer in self.layers:
            out.update(layer.conventions())
        return out

    def with_conventions(self, conventions: dict) -> Network:
        from dataclasses import replace

        return replace(self, layers=tuple(layer.with_conventions(conventions) for layer in self.layers))

    def gradient_step(self, weights: dict, grads: dict, lr: float) -> dict:
        """The weights after one step of gradient descent: P − lr·dL/dP for each of them."""
        return {p: weights[p] - lr * grads[gradient] for p, gradient in self._updates}

    @cached_property
    def _updates(self) -> tuple[tuple[str, str], ...]:
        return tuple((p, _grad(p)) for p in self.params)

    # -- the stages ----------------------------------------------------------------------

    def stages(self, layouts: dict, batched: bool, M: int) -> tuple[Stage, ...]:
        """Every stage of the trace in the derivation's order, with its layout: forward,
        then backward from the loss to dL/dX, then the update."""
        units = int(np.prod(layouts[self.output].shape, dtype=np.int64))
        N = self.loss.entries(layouts[self.output], M)
        mean, divisor = N > 1, self.loss.divisor(units)
        loss_forward, loss_backward = self.loss.stages(mean, divisor)
        forward, backward = [], list(loss_backward)
        # ∂-factors from L down to each layer's output, for the chain rules.
        chains = {}
        chain = (partial(_grad(self.output)),)
        for layer in reversed(self.layers):
            chains[layer.output] = chain
            chain = (*chain, layer.local_factor())
        closed = self.loss.closed_form(mean, divisor) if self.fused else None
        last = len(self.layers) - 1
        backward_by_layer = []
        for position, layer in enumerate(self.layers):
            ctx = Context(batched, chains[layer.output], closed if self.fused and position == last - 1 else None, layouts)
            layer_forward, layer_backward = layer.stages(ctx)
            forward += layer_forward
            if self.fused and position == last:  # its dL/dZ is the loss's, straight from A − Y
                layer_backward = [layer_backward[0], self.loss.fused_stage(mean, divisor)]
            backward_by_layer.append(layer_backward)
        for layer_backward in reversed(backward_by_layer):
            backward += layer_backward
        forward += loss_forward
        update = [
            Stage(p, "update", p, f"{p} − lr·dL/d{p}", layouts[p],
                  Rule("", "", (p, "lr", _grad(p)), f"{p} on the right is the input's, before the step"))
            for p in self.params
        ]  # fmt: skip
        return tuple(_with_layout(stage, layouts) for stage in (*forward, *backward, *update))


def _with_layout(stage: Stage, layouts: dict) -> Stage:
    """The stage with the layout of what it holds, where its layer left it to the network:
    a matrix's own, a dL/dQ that of Q, a local derivative dA/dZ that of Z (element-wise)."""
    if stage.layout is not None:
        return stage
    name = stage.name
    if name in layouts:
        return stage._replace(layout=layouts[name])
    if name.startswith("dL_d") and name[4:] in layouts:
        return stage._replace(layout=layouts[name[4:]])
    _, _, wrt = name.partition("_d")  # dA1_dZ1: Z1
    return stage._replace(layout=layouts[wrt])


# -- float64's limits ----------------------------------------------------------------------------


def check_finite(values: dict, stages: dict, display_only: dict | None = None) -> None:
    """Raise NumericError naming the first stage, in the pass's order, that overflowed.

    ``display_only`` maps the stages only ``step`` shows to what to say when one of them
    alone exceeds float64 (see Problem.display_only)."""
    for name, value in values.items():
        if np.all(np.isfinite(value)):
            continue
        if display_only and name in display_only:
            raise NumericError(display_only[name], key=name)
        stage = stages[name]
        raise NumericError(
            f"overflows float64 in {stage.symbol} = {stage.equation}; "
            "the numbers that feed it are too large",
            key=name,
        )


# -- the trace -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """Every named matrix of one pass, in the shapes of the user's input.

    ``trace[name]`` gives any of them by its JSON name (``"Z1"``, ``"dL_dW1"``, ``"W1"``
    for the updated W1 …); ``forward``, ``backward`` and ``update`` hold them section by
    section, in the derivation's order; ``stage(name)`` tells how each was made.
    """

    problem: object  # a Problem
    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]
    update: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return getattr(self, self.stage(name).section)[name]

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
        """Every layer's marks on the stages, by stage name (see layers.Annotation)."""
        out = {}
        for layer in self.problem.network.layers:
            for name, annotation in layer.annotate(self).items():
                out[name] = annotation if name not in out else _merged(out[name], annotation)
        return out

    @cached_property
    def _general_pass(self):
        from cnntrace.explain import GeneralPass

        return GeneralPass(self)

    def general_pass(self):
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


def _merged(first, second):
    """Two layers' annotations of one stage (a ReLU's count and a pool's wins on A1)."""
    return first._replace(
        marks=second.marks if second.marks is not None else first.marks,
        legend=second.legend or first.legend,
        before=first.before + second.before,
        after=first.after + second.after,
        extra=second.extra if second.extra is not None else first.extra,
    )


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


def trace(X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1) -> Trace:
    """Run the reference network on these inputs and return every matrix of the pass.

    X: an H×W image or an M×H×W batch; Y: its label(s) in [0, 1]; W1: a kh×kw filter or
    K×kh×kw filters; B1: one bias per filter; W2: one weight per entry of F; B2: a number.
    Lists and numpy arrays both work. Raises InputError for values that don't fit and
    NumericError when a stage overflows float64. For any other network, see ``trace_input``.
    """
    from cnntrace.problem import Problem

    problem = Problem.build(
        X, Y, W1, B1, W2, B2,
        stride=stride, padding=padding, pool=pool, pool_stride=pool_stride, lr=lr,
    )  # fmt: skip
    return run(problem)


def trace_input(data: dict) -> Trace:
    """Trace a whole input as a dict, the way an input file writes it: ``{"X": …, "Y": …,
    "layers": [...], "W1": …}`` (or the reference form without ``layers``)."""
    from cnntrace.io import problem_from_dict

    return run(problem_from_dict(data))
