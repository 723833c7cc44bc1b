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

A layer reads the previous layer's output unless the input names an earlier matrix
("input": "X"); an add or a concat also reads those its "from" names. The list is still the
order the layers run, so the same two loops serve: forward, each layer finds its operands by
name; backward, last first, each layer sends a gradient to each operand, and where a matrix
feeds several layers (a fork) the paths' parts are kept under their names (dL_dA2_via_Z3)
and summed, in list order, when the pass reaches the layer that made it:

    dL/dA2 = dL/dA2 via Z3 + dL/dA2 via S4
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from cnntrace.errors import InputError, NumericError
from cnntrace.layers.base import (
    Context,
    Explained,
    Layer,
    Mistake,
    Place,
    Recipe,
    Rule,
    Stage,
    Terms,
)
from cnntrace.losses import Loss
from cnntrace.naming import MATRIX, grad, numbered, via
from cnntrace.terms import Term
from cnntrace.text import partial, symbol

SECTIONS = ("forward", "backward", "update")


def place(layers: list[Layer], keys: list[str], inputs: list[str | None] | None = None) -> tuple[Layer, ...]:
    """Name what each layer reads and writes (X → Z1 → A1 → P1 → F → Z2 …) and check the
    order: at most one merge, one activation, one pooling and one dropout after a weighted
    layer, one flatten, a last-only kind (softmax) last. ``keys`` name each layer in errors.

    A layer reads the previous layer's output, or the earlier matrix ``inputs`` names for
    it ("X", "A2"); a merge also reads those its ``reads`` names. Each must be made before
    the layer (the list is the order the layers run: no cycle), and each matrix but the last
    must feed a later layer."""
    inputs = inputs or [None] * len(layers)
    outputs = _outputs(layers, keys)
    made = {"X": "the input"}  # what the layers so far have made, and by whom
    placed = []
    current = "X"
    for layer, key, wanted, (number, output) in zip(layers, keys, inputs, outputs):
        reading = current if wanted is None else _earlier(wanted, made, outputs, keys, f"{key}.input")
        for source in layer.reads:
            _earlier(source, made, outputs, keys, f"{key}.from")
            if source == reading:
                raise InputError(f"{source} is already this {layer.type}'s input; it reads each matrix once",
                                 key=f"{key}.from")  # fmt: skip
        placed.append(replace(layer, place=Place(number, reading, output, where=key, first=reading == "X")))
        made[output] = key
        current = output
    read = {name for layer in placed for name in (layer.input, *layer.reads)}
    for layer in placed[:-1]:
        if layer.output not in read:
            raise InputError(f"no later layer reads {layer.output}: every matrix but the network's output "
                             "feeds a later layer", key=layer.place.where)  # fmt: skip
    return tuple(placed)


def _outputs(layers: list[Layer], keys: list[str]) -> list[tuple[int, str]]:
    """(weighted layer's number, output's name) of each layer, its order checked, the first
    wrong layer in the list named."""
    out = []
    number = 0
    taken: set[str] = set()  # what the current weighted layer already has after it
    flattened = False
    for layer, key in zip(layers, keys):
        if layer.weighted:
            number += 1
            taken = set()
        elif layer.letter == "F":
            if flattened:
                raise InputError("a network flattens once", key=key)
            flattened = True
        else:
            role = ("an activation" if layer.activation else "a dropout" if layer.dropout
                    else "a merge" if layer.merge else "a pooling")  # fmt: skip
            if role in taken:
                after = f"W{number}'s layer" if number else "the input"
                raise InputError(
                    f"{after} already has {role} after it; a weighted layer takes at most one merge, "
                    "one activation, one pooling and one dropout, in any order",
                    key=key,
                )
            taken.add(role)
        if layer.last_only and len(out) != len(layers) - 1:
            raise InputError(f"{layer.type} can only be the last layer", key=key)
        out.append((number, numbered(layer.letter, number)))
    return out


def output_names(layers: list[Layer], keys: list[str]) -> list[str]:
    """The names ``place`` gives the layers' outputs (Z1, A1, S4 …), in order, the order's
    rules checked but not what reads what: the names of a list being built, layer by layer."""
    return [name for _, name in _outputs(layers, keys)]


def _earlier(name, made: dict, outputs: list, keys: list[str], key: str) -> str:
    """``name`` checked to be a matrix made before the layer at ``key``."""
    if not isinstance(name, str) or not MATRIX.fullmatch(name):
        raise InputError(f"expected the name of an earlier matrix (\"X\", \"A2\"), got {name!r}"[:200], key=key)
    if name in made:
        return name
    later = next((k for (_, output), k in zip(outputs, keys) if output == name), None)
    if later is not None:
        raise InputError(f"{name} is made by {later}, not before this layer: a layer reads only what the "
                         "layers before it make (the list is the order they run, so no cycle)", key=key)  # fmt: skip
    raise InputError(f"no matrix {name} before this layer; there are {', '.join(made)}", key=key)


@dataclass(frozen=True)
class Fork:
    """A matrix that feeds several layers (A2 → Z3 and A2 → S4): its gradient is the sum of
    what each of them sends back, dL/dA2 = dL/dA2 via Z3 + dL/dA2 via S4, in list order.
    The owner of that sum's stage: its explanation is the paths' terms."""

    name: str
    consumers: tuple[str, ...]  # the outputs of the layers that read it, in list order

    @property
    def paths(self) -> tuple[str, ...]:
        """The names of the paths' parts: dL_dA2_via_Z3, dL_dA2_via_S4."""
        return tuple(via(self.name, consumer) for consumer in self.consumers)

    def summed(self, sent: dict):
        """dL/dQ from the parts ``sent`` by each consumer ({output: part}): their sum in list
        order where several came, the one part as it is, None where none did."""
        paths = [sent[c] for c in self.consumers if c in sent]
        return self.total(paths) if len(paths) > 1 else paths[0] if paths else None

    def total(self, parts: list) -> np.ndarray:
        """The parts' sum, in list order: a new array."""
        total = parts[0] + parts[1]
        for part in parts[2:]:
            total += part
        return total

    def stage(self) -> Stage:
        q, terms = self.name, " + ".join(symbol(p) for p in self.paths)
        rule = Rule(f"{partial(grad(q))} = " + " + ".join(partial(p) for p in self.paths), terms, self.paths,
                    f"{q} feeds {' and '.join(self.consumers)}: its gradient is the sum of what each path sends back")
        return Stage(grad(q), "backward", symbol(grad(q)), terms, None, rule, owner=self, of=q)

    def terms(self, layouts, weights, name: str, images: int) -> Terms:
        """One term per path (see Layer.terms)."""
        return Terms(len(self.paths))

    def explain(self, t, name: str, index: tuple[int, ...]) -> Explained:
        terms = [Term((t.factor(p, index),)) for p in self.paths]
        return Explained(" + ".join(symbol(p) for p in self.paths), terms, None,
                         [f"{self.name} feeds {' and '.join(self.consumers)}: one term per path"])  # fmt: skip

    def recipe(self, t, name: str) -> Recipe:
        """explain's, in the page's JavaScript (layers.base.Recipe): one term per path."""
        p = {"paths": list(self.paths), "formula": " + ".join(symbol(p) for p in self.paths),
             "notes": [f"{self.name} feeds {' and '.join(self.consumers)}: one term per path"]}  # fmt: skip
        return Recipe(FORK_RECIPE, p, self.paths)

    def has_recipe(self, name: str) -> bool:
        return True


#: Fork.explain in the page's JavaScript.
FORK_RECIPE = """function (t, p, name, i) {
  return { formula: p.formula, terms: p.paths.map(function (path) { return t.term([t.factor(path, i)]); }), notes: p.notes };
}"""


class _Forward(NamedTuple):
    """What the training pass does at one layer on the way forward (see Network._walk)."""

    layer: Layer
    output: str
    overwrite: bool  # it may write its output over its input (see Network.overwritable)
    source: str | None  # the earlier matrix it reads, where that is not the layer before's output
    others: tuple[str, ...]  # what a merge reads besides
    keep: bool  # its output is read again further on: kept by name
    updates: bool  # it keeps running statistics (batch norm's)


class _Backward(NamedTuple):
    """What the training pass does at one layer on the way back, last first."""

    layer: Layer
    output: str
    fork: Fork | None  # where its output feeds several layers: their parts are summed
    need_input: bool  # it sends dL/d(input) back (not to X)
    gradients: tuple[str, ...]  # its weights' gradients: dL_dW1, dL_dB1
    sends: tuple[tuple[str, str], ...]  # (a matrix it reads, that matrix's gradient's name)


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
    def forks(self) -> dict[str, Fork]:
        """The matrices that feed more than one layer, by name (see Fork)."""
        consumers: dict[str, list[str]] = {}
        for layer in self.layers:
            for name in (layer.input, *layer.reads):
                consumers.setdefault(name, []).append(layer.output)
        return {name: Fork(name, tuple(c)) for name, c in consumers.items() if len(c) > 1}

    @cached_property
    def straight(self) -> bool:
        """Whether each layer reads the one before it, and nothing else: no skip, no fork."""
        previous = ("X", *(layer.output for layer in self.layers))
        return all(layer.input == before and not layer.reads for layer, before in zip(self.layers, previous))

    @cached_property
    def _kept(self) -> frozenset[str]:
        """The matrices a layer reads that the one before it did not make: the forward pass
        keeps them by name until then."""
        previous = ("X", *(layer.output for layer in self.layers))
        return frozenset({layer.input for layer, before in zip(self.layers, previous) if layer.input != before}
                         | {name for layer in self.layers for name in layer.reads})  # fmt: skip

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """The graph's forward arrows, (from, to) in list order, the output's to L."""
        return (*((q, layer.output) for layer in self.layers for q in self.operands(layer)), (self.output, "L"))

    @cached_property
    def readings(self) -> dict[str, str]:
        """A note on each output whose layer does not read the one before it: "Z5 reads X,
        not Z4"."""
        previous = ("X", *(layer.output for layer in self.layers))
        return {layer.output: f"{layer.output} is made from {layer.input}, not from {before} (the layer before it)"
                for layer, before in zip(self.layers, previous) if layer.input != before}  # fmt: skip

    def operands(self, layer: Layer) -> tuple[str, ...]:
        """What ``layer`` reads: its input and what it ``reads`` besides."""
        return (layer.input, *layer.reads)

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

        ``tracing=False`` is for training (see ``training_pass``): only L, the output and
        the weights' gradients, with exactly the values a trace gives.

        ``computed``, when given, receives each stage as computed from what comes before it,
        before ``given`` replaces it: with every stage given, each one as the stages it
        reads directly make it (verify's rounding, propagated one stage at a time).
        """
        if not tracing:
            if given or computed is not None:
                raise ValueError("a pass that resumes from given stages, or keeps what it computed, is a trace")
            return self.training_pass(X, target, weights)
        traced: dict[str, np.ndarray] = {}
        caches = []
        given = given or {}
        running = {}  # the running statistics after this pass (batch norm's)
        kept = {"X": X}  # the matrices read again further on (a skip connection's), by name
        x, previous = X, "X"
        for layer in self.layers:
            x_in = x if layer.input == previous else kept[layer.input]
            operands = {"others": tuple(kept[name] for name in layer.reads)} if layer.reads else {}
            if given:
                x, cache = layer.forward_from(x_in, weights, given, **operands)
            else:
                x, cache = layer.forward(x_in, weights, True, **operands)
            if computed is not None:
                computed[layer.output] = x
            x = given.get(layer.output, x)
            caches.append(cache)
            running.update(layer.update_running(cache, weights))
            traced.update(layer.shown(cache))
            traced[layer.output] = x
            if layer.output in self._kept:
                kept[layer.output] = x
            previous = layer.output
        output, loss, layers = x, self.loss, self.layers
        logits = caches[-1].z if self.fused else None
        L = loss.value(output, target, logits)
        if L is not None:
            traced["L"] = L
        if computed is not None and L is not None:
            computed["L"] = loss.value_by_hand(output, target)

        # The gradients sent back so far: by name, or by path where a matrix feeds several
        # layers (summed, in list order, when the pass reaches the layer that made it).
        arrived: dict[str, np.ndarray] = {}
        parts: dict[str, dict[str, np.ndarray]] = {}

        def arrive(name: str, consumer: str, value) -> None:
            if name not in self.forks:
                arrived[name] = value
                traced[grad(name)] = value
                return
            path = via(name, consumer)
            parts.setdefault(name, {})[consumer] = given.get(path, value)
            traced[path] = parts[name][consumer]

        def gradient(name: str):
            if name not in self.forks:
                return arrived.pop(name, None)
            summed = self.forks[name].summed(parts.pop(name, {}))
            if computed is not None:  # the paths' sum, before ``given`` replaces it
                computed[grad(name)] = summed
            total = given.get(grad(name), summed)
            traced[grad(name)] = total
            return total

        if self.fused:
            # The loss cancels against the last activation: the backward pass starts one
            # layer down, at dL/dZ = (A − Y)/N, exact where the activation saturates.
            last, layers = layers[-1], layers[:-1]
            local = last.derivative(*caches[-1])
            traced[grad(last.output)] = given.get(grad(last.output), loss.gradient(output, target, logits))
            traced[last.local] = given.get(last.local, local)
            if computed is not None:
                computed[grad(last.output)] = loss.gradient_by_hand(output, target)
                computed[last.local] = local
            fused = loss.fused_backward(output, target)
            if computed is not None:
                computed[last.input_gradient] = fused
            arrive(last.input, last.output, given.get(last.input_gradient, fused))
            caches.pop()
        else:
            arrive(self.output, "L", given.get(grad(self.output), loss.gradient(output, target, logits)))
            if computed is not None:
                computed[grad(self.output)] = loss.gradient_by_hand(output, target)
        for layer in reversed(layers):
            d = gradient(layer.output)
            forked = [q for q in self.operands(layer) if q in self.forks]
            cache = caches.pop()
            if computed is not None:  # each stage as computed, before ``given`` replaces it
                own_stages = layer.backward(d, cache, weights, need_input=True, tracing=True)
                computed.update({self.path_name(layer, name): value for name, value in own_stages.items()})
            if given:
                own = given
                if forked:  # a path's part given stands where the layer sends its gradient back
                    own = {k: v for k, v in given.items() if k not in {grad(q) for q in forked}}
                    own.update({grad(q): given[via(q, layer.output)] for q in forked if via(q, layer.output) in given})
                stages = layer.backward_from(d, cache, weights, own, need_input=True)
            else:
                stages = layer.backward(d, cache, weights, need_input=True, tracing=True)
            sent = {q: stages.pop(grad(q)) for q in self.operands(layer) if grad(q) in stages}
            traced.update(stages)
            for q, value in sent.items():
                arrive(q, layer.output, value)
        if "X" in self.forks:
            gradient("X")
        traced.update(running)
        return traced

    def training_pass(self, X, target, weights: dict) -> dict:
        """The pass as training takes it: {L, the output, each weight's gradient, the
        running statistics after it}, with exactly the values a trace gives.

        It skips dL/dX and the display-only stages (dL/dA2 and dA2/dZ2 where the loss
        cancels against the activation), keeps a ReLU's mask as booleans, and lets each
        matrix go as soon as the pass is done with it: each layer's cache holds only what
        its backward needs, and a layer may write its output over an input no one else
        holds (``overwritable``). X and the weights are never written to. The walk through
        the layers is worked out once (``_walk``), not at every step."""
        forward, backward = self._walk
        caches = []
        running = {}  # the running statistics after this pass (batch norm's)
        kept = {"X": X}  # the matrices read again further on (a skip connection's), by name
        x = X
        for layer, output, overwrite, source, others, keep, updates in forward:
            if source is not None:  # not the layer before's output
                x = kept[source]
            if others:
                x, cache = layer.forward(x, weights, False, overwrite, others=tuple(kept[name] for name in others))
            else:
                x, cache = layer.forward(x, weights, False, overwrite)
            caches.append(cache)
            if updates:
                running.update(layer.update_running(cache, weights))
            if keep:
                kept[output] = x
        output, loss = x, self.loss
        logits = caches[-1].z if self.fused else None
        L = loss.value(output, target, logits)
        # The gradients sent back so far, by the matrix they are of and by the layer that
        # sent them (several where a matrix feeds several layers).
        sent: dict[str, dict[str, np.ndarray]] = {}
        if self.fused:  # the backward pass starts one layer down, at dL/dZ = (A − Y)/N
            last = self.layers[-1]
            caches.pop()
            sent[last.input] = {last.output: loss.fused_backward(output, target)}
        else:
            sent[self.output] = {"L": loss.gradient(output, target, logits)}
        grads = {}
        for layer, made, fork, need_input, gradients, sends in backward:
            parts = sent.pop(made, None)
            d = fork.summed(parts) if fork is not None else next(iter(parts.values())) if parts else None
            stages = layer.backward(d, caches.pop(), weights, need_input=need_input, tracing=False)
            for name in gradients:
                grads[name] = stages[name]
            for q, name in sends:
                if name in stages:
                    sent.setdefault(q, {})[made] = stages[name]
        return {"L": L, self.output: output, **grads, **running}

    @cached_property
    def _walk(self) -> tuple[tuple[_Forward, ...], tuple[_Backward, ...]]:
        """(forward, backward): what training_pass does at each layer, worked out once."""
        forward, previous = [], "X"
        for layer, overwrite in zip(self.layers, self.overwritable):
            source = layer.input if layer.input != previous else None
            forward.append(_Forward(layer, layer.output, overwrite, source, layer.reads, layer.output in self._kept,
                                    bool(layer.running)))  # fmt: skip
            previous = layer.output
        layers = self.layers[:-1] if self.fused else self.layers
        backward = tuple(_Backward(layer, layer.output, self.forks.get(layer.output), layer.input != "X",
                                   layer.gradients, tuple((q, grad(q)) for q in self.operands(layer)))
                         for layer in reversed(layers))  # fmt: skip
        return tuple(forward), backward

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
        # A layer names the gradient it sends back dL/dQ; at a fork that is its path's part.
        out = [mistake._replace(given={self.path_name(layer, name): value for name, value in mistake.given.items()})
               for layer in self.layers for mistake in layer.mistakes(values, weights)]  # fmt: skip
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
        for fork in self.forks.values():
            for consumer in fork.consumers:
                rest = [values[via(fork.name, c)] for c in fork.consumers if c != consumer]
                out.append(Mistake("fork_path_missing", f"dL/d{fork.name} without its path via {consumer}: "
                                   f"{fork.name} feeds {' and '.join(fork.consumers)}, and its gradient is the sum "
                                   "of what each sends back", {grad(fork.name): rest[0] if len(rest) == 1 else
                                                                fork.total(rest)}))  # fmt: skip
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
        # ∂-factors from L down to each layer's output, for the chain rules; a matrix that
        # feeds several layers starts its own chain, ∂L/∂A2, the sum of its paths'.
        chains = {self.output: (partial(grad(self.output)),)}
        for layer in reversed(self.layers):
            for q in self.operands(layer):
                factor = layer.local_factor() if q == layer.input else f"∂{layer.output}/∂{q}"
                chains[q] = (partial(grad(q)),) if q in self.forks else (*chains[layer.output], factor)
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
            layer_backward = [self._path(stage, layer) for stage in layer_backward]
            if layer.output in self.forks:  # its gradient, the paths' sum, comes first
                layer_backward.insert(0, self.forks[layer.output].stage())
            backward_by_layer.append(layer_backward)
        for layer_backward in reversed(backward_by_layer):
            backward += layer_backward
        if "X" in self.forks:
            backward.append(self.forks["X"].stage())
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


    def path_name(self, layer: Layer, name: str) -> str:
        """The name of ``layer``'s stage ``name`` in this network: where it is the gradient
        the layer sends back to a matrix that feeds several layers, that path's part
        (dL_dA2 -> dL_dA2_via_Z3); ``name`` otherwise."""
        for q in self.operands(layer):
            if name == grad(q) and q in self.forks:
                return via(q, layer.output)
        return name

    def _path(self, stage: Stage, layer: Layer) -> Stage:
        """A stage of ``layer`` that sends its gradient back to a matrix feeding several
        layers, as one path's part: dL/dA2 via Z3."""
        if stage.section != "backward" or self.path_name(layer, stage.name) == stage.name:
            return stage
        path = self.path_name(layer, stage.name)
        rule = stage.rule
        if rule is not None and rule.chain.startswith(partial(stage.name)):
            rule = rule._replace(chain=partial(path) + rule.chain[len(partial(stage.name)):])
        return stage._replace(name=path, symbol=symbol(path), rule=rule)


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
