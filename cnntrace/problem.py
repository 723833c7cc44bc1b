"""One problem to trace: a network, an image (or a batch), its labels (or the gradient
given at the output), the weights and the learning rate.

Users write shapes the way the derivation does: a 6x6 image, a 3x3 filter, W2 as a list,
B2 as a number. The pass itself always works on the general shapes (a batch of M images
of C channels, K filters, n_in×n_out dense weights). ``Problem`` checks the values, converts
them to the general shapes, and puts each result back into the shape the user gave: a
single image or a single filter adds no axis.

``Problem.from_layers`` builds one from a network written as a list of layers (see
``parse_layers``); reference.py builds the reference form's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from cnntrace import limits
from cnntrace.checks import as_array, positive_number
from cnntrace.errors import InputError, shown
from cnntrace.layers import KINDS, GivenLayout, Layer, Layout, Stage
from cnntrace.losses import LOSSES, GivenGradient, Loss, default_loss
from cnntrace.naming import NAME, grad
from cnntrace.network import Network, output_names, place
from cnntrace.text import number_text, shape_text

__all__ = ["Problem", "parse_layers"]

# -- a network written as a list of layers ---------------------------------------------------


def all_conventions() -> dict:
    """Every switch of the ``conventions`` key, from the layer kinds that honour them."""
    return {switch: c for kind in KINDS.values() for switch, c in kind.CONVENTIONS.items()}


def parse_conventions(value) -> dict:
    """The input's ``conventions`` object, checked: {"pool_ties": "all", …}."""
    known = all_conventions()
    if not isinstance(value, dict):
        raise InputError('expected an object, e.g. {"pool_ties": "all", "relu_grad_at_zero": 1}', key="conventions")
    out = {}
    for switch, choice in value.items():
        if switch not in known:
            guess = difflib.get_close_matches(switch, list(known), n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            raise InputError(f"unknown convention; {hint}the conventions are {', '.join(known)}",
                             key=f"conventions.{switch}")  # fmt: skip
        out[switch] = known[switch].parse(choice, f"conventions.{switch}")
    return out


def parse_layer(description, key: str) -> Layer:
    """One entry of ``layers``: a type's name, or an object with ``type`` and options."""
    if isinstance(description, str):
        description = {"type": description}
    if not isinstance(description, dict):
        raise InputError(f"a layer is a type's name or an object with \"type\"; got {shown(description)}", key=key)
    kind_name = description.get("type")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        # "ReLU" or "MaxPool" is a kind written in other letters: that guess before any other.
        guess = [kind for kind in KINDS if kind == str(kind_name).lower()] or difflib.get_close_matches(
            str(kind_name).lower(), list(KINDS), n=1)  # fmt: skip
        hint = f"did you mean {guess[0]}? " if guess else ""
        what = "no \"type\"" if kind_name is None else f"unknown layer type {shown(kind_name, 30)}"
        raise InputError(f"{what}; {hint}the types are {', '.join(KINDS)}", key=key)
    kind = KINDS[kind_name]
    for option in kind.REQUIRED:
        if option not in description:
            raise InputError(f"{kind_name} needs {option!r}: {kind.OPTIONS[option].schema['description']}", key=key)
    options = {}
    for option, value in description.items():
        if option in ("type", "input"):  # input: where it sits in the network (see parse_layers)
            continue
        if option not in kind.OPTIONS:
            known = ", ".join(kind.OPTIONS)
            allowed = f"{kind_name} takes {known}" if known else f"{kind_name} takes no options"
            raise InputError(f"unknown option {shown(option)}; {allowed}", key=key)
        options[option] = kind.OPTIONS[option].parse(value, f"{key}.{option}")
    return kind.from_options(options)


def parse_layers(descriptions, loss=None, *, given_gradient: bool = False) -> Network:
    """The network a ``layers`` list (and ``loss``) describes; InputError naming
    ``layers[i]`` or ``loss``."""
    if not isinstance(descriptions, list) or not descriptions:
        raise InputError("expected a list of layers, e.g. [\"conv\", \"relu\", \"flatten\", \"dense\"]", key="layers")
    keys = [f"layers[{i}]" for i in range(len(descriptions))]
    parsed = [parse_layer(d, k) for d, k in zip(descriptions, keys)]
    # "input": the earlier matrix a layer reads instead of the previous layer's output.
    inputs = [d.get("input") if isinstance(d, dict) else None for d in descriptions]
    for description, key in zip(descriptions, keys):
        if isinstance(description, dict) and "input" in description and not isinstance(description["input"], str):
            raise InputError(f'expected the name of an earlier matrix ("X", "A2"), got {description["input"]!r}'[:200],
                             key=f"{key}.input")  # fmt: skip
    layers = place(parsed, keys, inputs)
    output = layers[-1].output
    logits = layers[-1].input
    if given_gradient:
        if loss is not None:
            raise InputError("a file with grad has no loss: the gradient stands in for it", key="loss")
        return Network(layers, GivenGradient(output, logits))
    if loss is None:
        loss = default_loss(layers)
        if loss is None:
            raise InputError("missing: the network does not end in a sigmoid, a softmax or a log_softmax, so "
                             "it needs a loss (bce, cross_entropy, mse or nll), or grad", key="loss")  # fmt: skip
    chosen: Loss = parse_loss(loss, output, logits)
    chosen.check(layers, "loss")
    return Network(layers, chosen)


def layer_outputs(descriptions: list) -> list[str]:
    """The names the layers of ``descriptions`` give their outputs (Z1, A1, S4 …), before the
    list is whole (a reader naming what a later layer reads); InputError naming ``layers[i]``."""
    keys = [f"layers[{i}]" for i in range(len(descriptions))]
    return output_names([parse_layer(d, k) for d, k in zip(descriptions, keys)], keys)


def parse_loss(description, output: str, logits: str) -> Loss:
    """The ``loss`` key: a loss's name, or an object with ``type`` and its options
    ({"type": "mse", "reduction": "sum", "half": true})."""
    options = {}
    if isinstance(description, dict):
        options = {name: value for name, value in description.items() if name != "type"}
        description = description.get("type")
        if description is None:
            raise InputError(f"no \"type\"; the losses are {', '.join(LOSSES)}", key="loss")
    if not isinstance(description, str) or description not in LOSSES:
        raise InputError(f"unknown loss {shown(description)}; the losses are {', '.join(LOSSES)}", key="loss")
    kind = LOSSES[description]
    for name, value in options.items():
        if name not in kind.OPTIONS:
            raise InputError(f"unknown option {shown(name)}; {description} takes {', '.join(kind.OPTIONS)}",
                             key=f"loss.{name}")  # fmt: skip
        options[name] = kind.OPTIONS[name].parse(value, f"loss.{name}")
    return kind(output, logits, **options)


# -- the problem -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The inputs of one pass, as the user gave them (float64 arrays) and validated.

    ``inputs`` holds X, then Y (or grad), then every weight W1, B1, W2, B2 …, each as the
    file wrote it. ``layouts`` tells the shape of every named matrix of the pass.
    """

    network: Network
    inputs: dict[str, np.ndarray]
    lr: float
    layouts: dict = field(repr=False)
    weights: dict[str, np.ndarray] = field(repr=False)  # on the general shapes
    general_target: np.ndarray = field(repr=False)  # Y (one-hot for class indices) or grad: (M, …)
    #: The reference form's options (reference.ReferenceOptions): its summary and its
    #: size guard stand in for those of a list of layers.
    reference: object | None = None
    #: {PyTorch's parameter name: the weight it is}, for a network from ``import`` or
    #: ``from_torch`` ("0.weight": "W1"; "7.weight": "W3.T" where nn.Linear keeps it
    #: transposed): verify reads gradients given under PyTorch's names.
    torch_names: dict = field(default_factory=dict, repr=False)

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_layers(cls, X, target, layers, weights: dict, *, loss=None, given_gradient=False, lr=0.1,
                    testing=False):  # fmt: skip
        """A network written as a list of layers; ``target`` is Y, or the gradient given at
        the output when ``given_gradient``; ``testing`` as for ``assemble``. InputError
        naming the key."""
        network = parse_layers(layers, loss, given_gradient=given_gradient)
        lr = positive_number("lr", lr)
        target_key = "grad" if given_gradient else "Y"
        arrays = {"X": as_array("X", X), target_key: as_array(target_key, target)}
        for p in network.params:
            if p not in weights:
                owner = next(layer for layer in network.layers if p in layer.params)
                raise InputError(f"missing: {owner.place.where} ({owner.type}) needs {p}", key=p)
            arrays[p] = as_array(p, weights[p])
        for name in network.running:
            if name in weights:
                arrays[name] = as_array(name, weights[name])
        problem = cls.assemble(network, arrays["X"], arrays[target_key], arrays, lr, testing=testing)
        extra = sorted(set(weights) - set(network.params) - set(network.running))
        if extra:
            known = (*network.params, *network.running)
            raise InputError(
                f"the network has no such weight: its weights are {', '.join(known) or 'none'}",
                key=extra[0],
            )
        return problem

    @classmethod
    def assemble(cls, network, X, target, arrays, lr, reference=None, testing=False):
        """Infer every layer's shape from X, check the weights and the target; and the batch,
        unless ``testing``: a test set's images are evaluated (Network.evaluating), where
        batch norm takes the running statistics, not the batch's (one image is a batch)."""
        layout, image_axes = _input_layout(network, X, arrays)
        layouts = {"X": layout}
        weights = {}
        for layer in network.layers:
            given = {p: arrays[p] for p in (*layer.params, *layer.running) if p in arrays}
            layout, general = layer.infer_from(layouts, given)
            weights.update(general)
            layouts[layer.output] = layout
            for p in given:
                layouts[p] = GivenLayout(arrays[p].shape, layer.weight_leading(p, arrays[p]))
        batched = X.ndim > image_axes
        M = X.shape[0] if batched else 1
        if not testing:
            network = replace(network, layers=tuple(layer.for_batch(layouts[layer.input], batched, M)
                                                    for layer in network.layers))  # fmt: skip
        loss = network.loss
        target_key = "grad" if loss.given else "Y"
        general_target = loss.target(target, layout, M, batched)
        # Y (or grad) is shaped like the output, except a class index per image.
        output_layout = layouts[network.output]
        fits = target.shape == output_layout.user_shape(batched, M)
        layouts[target_key] = output_layout if fits else GivenLayout(target.shape)
        inputs = {"X": X, target_key: target, **{p: arrays[p] for p in network.params},
                  **{p: arrays[p] for p in network.running if p in arrays}}  # fmt: skip
        return cls(network, inputs, float(lr), layouts, weights, general_target, reference)

    # -- what the pass needs ---------------------------------------------------------------

    @property
    def X(self) -> np.ndarray:
        return self.inputs["X"]

    @property
    def target_key(self) -> str:
        return "grad" if self.network.loss.given else "Y"

    @property
    def batched(self) -> bool:
        return self.X.ndim > len(self.layouts["X"].user_shape(False, 1))

    @property
    def M(self) -> int:
        return self.X.shape[0] if self.batched else 1

    def with_torch_names(self, names) -> Problem:
        """The problem with its ``torch_names``, checked: an object of PyTorch's parameter
        names, each to one of the network's weights (with ``.T`` where it is transposed)."""
        if not isinstance(names, dict):
            raise InputError("expected an object of PyTorch's parameter names, {\"0.weight\": \"W1\"}",
                             key="torch_names")  # fmt: skip
        for torch_name, name in names.items():
            if NAME.fullmatch(torch_name):
                raise InputError("is a name of the trace's own; PyTorch's names are its modules' (\"0.weight\")",
                                 key=f"torch_names.{torch_name}")  # fmt: skip
            weight = name.removesuffix(".T") if isinstance(name, str) else None
            if weight not in self.network.params:
                raise InputError(f"expected one of the weights ({', '.join(self.network.params)}), with .T where "
                                 f"it is transposed; got {shown(name)}", key=f"torch_names.{torch_name}")  # fmt: skip
            if name.endswith(".T") and np.ndim(self.weights[weight]) != 2:
                raise InputError(f"{weight} is no matrix: only a dense layer's weight is transposed (.T), as "
                                 "nn.Linear keeps it", key=f"torch_names.{torch_name}")  # fmt: skip
        named: dict[str, str] = {}
        for torch_name, name in names.items():
            first = named.setdefault(name.removesuffix(".T"), torch_name)
            if first != torch_name:
                raise InputError(f"{first} and {torch_name} both name {name.removesuffix('.T')}: each weight has one "
                                 "name", key=f"torch_names.{torch_name}")  # fmt: skip
        return replace(self, torch_names=dict(names))

    def with_conventions(self, conventions: dict) -> Problem:
        """The problem with its layers set to ``conventions`` (see layers.base.Convention)."""
        return replace(self, network=self.network.with_conventions(conventions))

    def general_X(self) -> np.ndarray:
        """X as (M, C, H, W) maps or (M, n) vectors: a view, nothing writes to it."""
        return self.X.reshape(self.M, *self.layouts["X"].shape)

    def general_weights(self) -> dict[str, np.ndarray]:
        """Every weight on the general shapes, as new arrays."""
        return {p: value.copy() for p, value in self.weights.items()}

    @cached_property
    def stages(self) -> tuple[Stage, ...]:
        return self.network.stages(self.layouts, self.batched, self.M)

    @cached_property
    def stage(self) -> dict[str, Stage]:
        return {stage.name: stage for stage in self.stages}

    @property
    def display_only(self) -> dict[str, str]:
        """The stages only ``step`` shows, each with what to say when it alone exceeds
        float64: where the loss cancels against the last activation, dL/dA and dA/dZ, of
        which nothing else is computed (past |Z| ≈ 709 the sigmoid's dL/dA overflows where
        every other stage is finite)."""
        if not self.network.fused:
            return {}
        last = self.network.layers[-1]
        message = self.network.loss.saturation()
        return {grad(last.output): message, last.local: message}

    def present(self, name: str, array) -> np.ndarray:
        """Put a value of the general pass back into the shape the user gave."""
        layout = self.stage[name].layout if name in self.stage else self.layouts[name]
        return np.asarray(array).reshape(layout.user_shape(self.batched, self.M))

    def summary(self) -> str:
        """The input's settings in one line: the layers, the loss and lr."""
        if self.reference is not None:
            # The form's options say all but the conventions, named as the file writes them.
            switches = self.network.conventions()
            conventions = f", conventions {', '.join(f'{k} {v}' for k, v in switches.items())}" if switches else ""
            return f"{self.reference.summary()}{conventions}, lr {self.lr:g}"
        loss = "the given grad" if self.network.loss.given else f"loss {self.network.loss.describe()}"
        return f"{self.network.describe()}; {loss}, lr {self.lr:g}"

    def weight_count(self) -> int:
        """How many numbers the weights hold."""
        return sum(int(np.prod(w.shape, dtype=object)) for w in self.weights.values())

    def check_size(self, images: int | None = None, *, copies: int = limits.WEIGHT_COPIES,
                   doing: str = "the pass") -> None:  # fmt: skip
        """Refuse, before any work, a pass on ``images`` of the images (all by default)
        that is too large: its matrices, and ``copies`` of every weight."""
        images = self.M if images is None else min(images, self.M)
        keep = limits.FLOAT * copies * self.weight_count()
        if self.reference is not None:
            self.reference.check_size(self, images, keep, doing)
            return
        check_network_size(self, images, keep, doing)

    def size(self, images: int | None = None) -> tuple[int, int]:
        """(bytes, multiply-adds) of a pass on ``images`` of the images (all by default),
        the weights not counted."""
        images = self.M if images is None else min(images, self.M)
        if self.reference is not None:
            return self.reference.size(self, images)
        return network_size(self, images)[:2]


def _input_layout(network: Network, X: np.ndarray, arrays: dict):
    """X's layout: maps (C, H, W) for a network whose first layer that fixes its input's form
    takes maps (a conv, a pooling, the flatten), vectors (n,) for one that takes vectors (a
    dense layer), either as X's axes tell for one that takes both (batch norm); and how many
    axes one image has in X."""
    first = next((layer for layer in network.layers if layer.input_form is not None), None)
    vectors = first is not None and (first.input_form == "vector" or (first.input_form == "either" and X.ndim <= 2))
    if vectors:
        if X.ndim not in (1, 2) or 0 in X.shape:
            raise InputError(f"the network starts with {first.type}: X is a vector of n inputs or M×n, "
                             f"got shape {shape_text(X.shape)}", key="X")  # fmt: skip
        return Layout((X.shape[-1],), channel="channel"), 1
    given = {p: arrays[p] for p in first.params} if first is not None else {}
    channels = X.ndim == 4 or (first is not None and first.reads_channels(given))
    if channels:
        if X.ndim not in (3, 4) or 0 in X.shape:
            raise InputError(f"with a K×C×kh×kw W the input has channels: X is C×H×W or "
                             f"M×C×H×W, got shape {shape_text(X.shape)}", key="X")  # fmt: skip
        return Layout(tuple(X.shape[-3:]), shown=True, channel="channel"), 3
    if X.ndim not in (2, 3) or 0 in X.shape:
        raise InputError(f"expected an H×W image or an M×H×W batch, got shape {shape_text(X.shape)}", key="X")
    return Layout((1, *X.shape[-2:]), shown=False, channel="channel"), 2


def check_network_size(problem: Problem, images: int, keep: int = 0, doing: str = "the pass") -> None:
    """Refuse, before any work, a pass too large for memory or a minute (any network): every
    named matrix twice (its value and its gradient) and a working copy, ``keep`` bytes more
    (the weights' copies), and the work of each layer's loop steps (Layer.work)."""
    need, work, what = network_size(problem, images)
    weights = problem.weight_count()
    if keep > need:  # the weights are what is large: say how many
        what += f", {number_text(weights)} weights"
    limits.refuse(need + keep, work, what, "X", doing=doing)


def network_size(problem: Problem, images: int) -> tuple[int, int, str]:
    """(bytes, multiply-adds, what is done) of a pass on ``images`` images, the weights not
    counted (see check_network_size)."""
    per_image = sum(int(np.prod(layout.shape, dtype=object)) for name, layout in problem.layouts.items()
                    if isinstance(layout, Layout))  # fmt: skip
    need = 8 * images * 3 * per_image
    work = 0
    for layer in problem.network.layers:
        steps, per_step = layer.work(problem.layouts, problem.weights)
        work += steps * (limits.OFFSET_COST + images * per_step)
    what = f"{images} image{'s' * (images > 1)} of {shape_text(problem.layouts['X'].shape)}"
    return need, work, what
