"""A network is a list of layers and a loss; one generic pass runs it forward and back and
keeps every intermediate under its name.

    x = X;  for each layer: x, cache = layer.forward(x)          Z1, A1, P1, F, Z2, A2
    L = loss(x, Y)
    d = dL/dA2;  for each layer, last first: d = layer.backward(d, cache)
                                                  dL/dZ2, dL/dW2 … dL/dW1, dL/dX

then one step of gradient descent. ``forward_backward`` is the pass on the general shapes
of ops.py (trace.run puts it into the user's shapes); ``place`` names what each layer reads
and writes by the scheme of naming.py. The reference network is one such list (see
reference.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from cnntrace.errors import InputError, NumericError
from cnntrace.layers.base import Context, Layer, Mistake, Place, Rule, Stage
from cnntrace.losses import Loss
from cnntrace.naming import grad, numbered
from cnntrace.text import partial

SECTIONS = ("forward", "backward", "update")


def place(layers: list[Layer], keys: list[str]) -> tuple[Layer, ...]:
    """Name what each layer reads and writes (X → Z1 → A1 → P1 → F → Z2 …) and check the
    order: at most one activation, one pooling and one dropout after a weighted layer, one flatten, a
    last-only kind (softmax) last. ``keys`` name each layer in errors."""
    placed = []
    number, current = 0, "X"
    taken: set[str] = set()  # what the current weighted layer already has after it
    flattened = False
    for position, (layer, key) in enumerate(zip(layers, keys)):
        if layer.weighted:
            number += 1
            taken = set()
        elif layer.letter == "F":
            if flattened:
                raise InputError("a network flattens once", key=key)
            flattened = True
        else:
            role = "an activation" if layer.activation else "a dropout" if layer.dropout else "a pooling"
            if role in taken:
                after = f"W{number}'s layer" if number else "the input"
                raise InputError(
                    f"{after} already has {role} after it; a weighted layer takes at most one "
                    "activation, one pooling and one dropout, in any order",
                    key=key,
                )
            taken.add(role)
        output = numbered(layer.letter, number)
        if layer.last_only and position != len(layers) - 1:
            raise InputError(f"{layer.type} can only be the last layer", key=key)
        placed.append(replace(layer, place=Place(number, current, output, where=key, first=current == "X")))
        current = output
    return tuple(placed)


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

    @cached_property
    def running(self) -> tuple[str, ...]:
        """The running statistics the layers keep (batch norm's mean{l}, var{l}): inputs no
        gradient moves, updated by each training pass (see Layer.running)."""
        return tuple(name for layer in self.layers for name in layer.running)

    @cached_property
    def draws(self) -> bool:
        """Whether a training step draws at random (a dropout's mask)."""
        return any(layer.draws for layer in self.layers)

    def for_step(self, rng) -> Network:
        """The network for one training step, each layer's random draws made from ``rng``."""
        return replace(self, layers=tuple(layer.for_step(rng) for layer in self.layers))

    def evaluating(self) -> Network:
        """The network as it evaluates a test set once trained (see Layer.evaluating)."""
        return replace(self, layers=tuple(layer.evaluating() for layer in self.layers))

    def start_running(self, weights: dict) -> dict:
        """``weights`` with the running statistics the input left out where training starts them."""
        out = dict(weights)
        for layer in self.layers:
            out.update({k: v for k, v in layer.start_running(weights).items() if k not in weights})
        return out

    def describe(self) -> str:
        return self.summary or " → ".join(layer.describe() for layer in self.layers)

    # -- the pass ------------------------------------------------------------------------

    def forward_backward(self, X, target, weights: dict, *, tracing: bool = True, given: dict | None = None,
                         computed: dict | None = None) -> dict:
        """One pass on the general shapes; {name: array} for every forward and backward
        stage, in the derivation's order.

        ``given`` ({stage name: array on the general shapes}) resumes the pass from any
        stages: each forward or backward stage named there is taken as given, and all that
        comes after it is computed from it (a learner's wrong P1 → their F → their Z2 …).

        ``tracing=False`` is for training: it returns only L, the output and the weights'
        gradients, with exactly the values a trace gives. It skips dL/dX and the
        display-only stages (dL/dA2 and dA2/dZ2 where the loss cancels against the
        activation), keeps a ReLU's mask as booleans, and lets each matrix go as soon as
        the pass is done with it: each layer's cache holds only what its backward needs,
        and a layer may write its output over an input no one else holds (``overwritable``).
        X and the weights are never written to.

        ``computed``, when given, receives each stage as computed from what comes before it,
        before ``given`` replaces it: with every stage given, each one as the stages it
        reads directly make it (verify's rounding, propagated one stage at a time).
        """
        if given and not tracing:
            raise ValueError("a pass that resumes from given stages is a trace")
        traced: dict[str, np.ndarray] = {}
        caches = []
        given = given or {}
        overwritable = self.overwritable if not tracing else (False,) * len(self.layers)
        running = {}  # the running statistics after this pass (batch norm's), in training
        x = X
        for layer, overwrite in zip(self.layers, overwritable):
            if given:
                x, cache = layer.forward_from(x, weights, given)
            else:
                x, cache = layer.forward(x, weights, tracing, overwrite)
            if computed is not None:
                computed[layer.output] = x
            x = given.get(layer.output, x)
            caches.append(cache)
            running.update(layer.update_running(cache, weights))
            if tracing:
                traced.update(layer.shown(cache))
                traced[layer.output] = x
        output, loss, layers = x, self.loss, self.layers
        logits = caches[-1].z if self.fused else None
        L = loss.value(output, target, logits)
        if L is not None:
            traced["L"] = L
        if computed is not None and L is not None:
            computed["L"] = loss.value_by_hand(output, target)

        if self.fused:
            # The loss cancels against the last activation: the backward pass starts one
            # layer down, at dL/dZ = (A − Y)/N, exact where the activation saturates.
            last, layers = layers[-1], layers[:-1]
            if tracing:
                local = last.derivative(*caches[-1])
                traced[grad(last.output)] = given.get(grad(last.output), loss.gradient(output, target, logits))
                traced[last.local] = given.get(last.local, local)
                if computed is not None:
                    computed[grad(last.output)] = loss.gradient_by_hand(output, target)
                    computed[last.local] = local
            fused = loss.fused_backward(output, target)
            if computed is not None:
                computed[last.input_gradient] = fused
            d = traced[last.input_gradient] = given.get(last.input_gradient, fused)
            caches.pop()
        else:
            d = traced[grad(self.output)] = given.get(grad(self.output), loss.gradient(output, target, logits))
            if computed is not None:
                computed[grad(self.output)] = loss.gradient_by_hand(output, target)
        grads = {}
        for position in reversed(range(len(layers))):
            layer = layers[position]
            need_input = tracing or position > 0
            cache = caches.pop()
            if computed is not None:  # each stage as computed, before ``given`` replaces it
                computed.update(layer.backward(d, cache, weights, need_input=need_input, tracing=True))
            if given:
                stages = layer.backward_from(d, cache, weights, given, need_input=need_input)
            else:
                stages = layer.backward(d, cache, weights, need_input=need_input, tracing=tracing)
            if tracing:
                traced.update(stages)
            for name in layer.gradients:
                grads[name] = stages[name]
            d = stages.get(layer.input_gradient)
        if not tracing:
            return {"L": L, self.output: output, **grads, **running}
        traced.update(running)
        return traced

    def resume(self, X, target, weights: dict, lr: float, given: dict, computed: dict | None = None) -> dict:
        """Every stage of the pass and the update, from the stages in ``given`` on (see
        forward_backward); an update stage in ``given`` (W1 after the step) is taken as is."""
        values = self.forward_backward(X, target, weights, given=given, computed=computed)
        update = self.gradient_step(weights, values, lr)
        if computed is not None:
            computed.update(update)
        values.update({p: given.get(p, value) for p, value in update.items()})
        return values

    def mistakes(self, values: dict, weights: dict, lr: float, M: int) -> list[Mistake]:
        """The known mistakes of this network from the correct pass's ``values`` (general
        shapes, X included): each layer kind's, the loss's mean left out, the update's sign."""
        out = [mistake for layer in self.layers for mistake in layer.mistakes(values, weights)]
        start = self.layers[-1].input if self.fused else self.output  # where the backward pass starts
        first = grad(start)
        output = values[self.output]
        out += self.loss.mistakes(values, start)
        # The mean is over the images (bce, cross-entropy) or over every output (mse): try both.
        means = {M: f"the {M} images", output.size: f"all {output.size} outputs"}
        for N, what in means.items():
            if N > 1 and self.loss.averages:
                out.append(Mistake("batch_mean_missing", f"dL/d{start} without the 1/N of the mean over "
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
        return replace(self, layers=tuple(layer.with_conventions(conventions) for layer in self.layers))

    def gradient_step(self, weights: dict, grads: dict, lr: float) -> dict:
        """The weights after one step of gradient descent: P − lr·dL/dP for each of them."""
        return {p: weights[p] - lr * grads[gradient] for p, gradient in self._updates}

    @cached_property
    def _updates(self) -> tuple[tuple[str, str], ...]:
        return tuple((p, grad(p)) for p in self.params)

    # -- the stages ----------------------------------------------------------------------

    def stages(self, layouts: dict, batched: bool, M: int) -> tuple[Stage, ...]:
        """Every stage of the trace in the derivation's order, with its layout: forward,
        then backward from the loss to dL/dX, then the update."""
        units = int(np.prod(layouts[self.output].shape, dtype=np.int64))
        N = self.loss.entries(layouts[self.output], M)
        mean, divisor = N > 1, self.loss.divisor(units)
        loss_forward, loss_backward = self.loss.stages(mean, divisor)
        loss_forward = [stage._replace(owner=self.loss) for stage in loss_forward]
        forward, backward = [], [stage._replace(owner=self.loss) for stage in loss_backward]
        # ∂-factors from L down to each layer's output, for the chain rules.
        chains = {}
        chain = (partial(grad(self.output)),)
        for layer in reversed(self.layers):
            chains[layer.output] = chain
            chain = (*chain, layer.local_factor())
        closed = self.loss.closed_form(mean, divisor) if self.fused else None
        last = len(self.layers) - 1
        backward_by_layer, running_updates = [], []
        for position, layer in enumerate(self.layers):
            ctx = Context(batched, chains[layer.output], closed if self.fused and position == last - 1 else None, layouts)
            layer_forward, layer_backward = (
                [stage._replace(owner=layer) for stage in stages] for stages in layer.stages(ctx)
            )
            updated = [stage for stage in layer_forward if stage.section == "update"]
            forward += [stage for stage in layer_forward if stage.section != "update"]
            running_updates += updated
            if self.fused and position == last:  # its dL/dZ is the loss's, straight from A − Y
                layer_backward = [layer_backward[0], self.loss.fused_stage(mean, divisor)._replace(owner=self.loss)]
            backward_by_layer.append(layer_backward)
        for layer_backward in reversed(backward_by_layer):
            backward += layer_backward
        forward += loss_forward
        update = [
            Stage(p, "update", p, f"{p} − lr·dL/d{p}", layouts[p],
                  Rule("", "", (p, "lr", grad(p)), f"{p} on the right is the input's, before the step"), of=p)
            for p in self.params
        ] + running_updates  # fmt: skip
        # A stage its layer left without a layout has that of what it is ``of``: a dL/dQ
        # that of Q, a local derivative dA/dZ that of Z (element-wise).
        return tuple(
            stage if stage.layout is not None else stage._replace(layout=layouts[stage.of])
            for stage in (*forward, *backward, *update)
        )


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
