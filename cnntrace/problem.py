"""One problem to trace: a network, an image (or a batch), its labels (or the gradient
given at the output), the weights and the learning rate.

Users write shapes the way the derivation does: a 6x6 image, a 3x3 filter, W2 as a list,
B2 as a number. The pass itself always works on the general shapes (a batch of M images
of C channels, K filters, n_in×n_out dense weights). ``Problem`` checks the values, converts
them to the general shapes, and puts each result back into the shape the user gave: a
single image or a single filter adds no axis.

Two forms build one: ``Problem.build`` the reference network's, with its top-level stride,
padding, pool and pool_stride; ``Problem.from_layers`` any network written as a list of
layers (see ``parse_layers``).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral, Real

import numpy as np

from cnntrace.errors import InputError
from cnntrace.layers import KINDS, Given, Layer, Layout, Place, Stage, shape_text
from cnntrace.losses import LOSSES, Loss, default_loss
from cnntrace.losses import Given as GivenGradient
from cnntrace.network import Network
from cnntrace.ops import output_size

__all__ = ["Problem", "shape_text", "check_pass_size", "parse_layers"]

#: A pass keeps every matrix it makes; it may need at most this much memory for them.
MAX_PASS_BYTES = 4 * 2**30
#: The most work one pass may take, counted in multiply-adds: about a minute. The pass loops
#: in Python over the kernel's offsets and the pool window's, each loop step costing about
#: OFFSET_COST multiply-adds on top of the cells it covers (see check_pass_size).
MAX_WORK = 10**11
OFFSET_COST = 100_000


def as_array(key: str, value) -> np.ndarray:
    """``value`` as a float64 array of finite numbers; InputError naming ``key``."""
    try:
        given = np.asarray(value)
        # Strings and booleans would convert ("1" -> 1.0, True -> 1.0); numbers only.
        if given.dtype.kind not in "iuf":
            raise TypeError
        with np.errstate(over="ignore"):  # a longdouble past float64 becomes inf, refused below
            array = np.asarray(given, dtype=np.float64)  # no second copy of a float64 dataset
    except (TypeError, ValueError):
        raise InputError("expected numbers in a rectangular array", key=key) from None
    if not np.all(np.isfinite(array)):
        raise InputError("expected finite numbers, found NaN or infinity", key=key)
    return array


def number_text(value) -> str:
    """A number from the input as a message quotes it; an integer too long to read (one of
    hundreds of digits) by its order of magnitude."""
    if isinstance(value, Integral) and abs(value) >= 10**18:
        return f"about {'-' if value < 0 else ''}10^{int(abs(int(value)).bit_length() * math.log10(2))}"
    return repr(value)


def is_finite(value: Real) -> bool:
    """Whether ``value`` is a finite float64 (an integer too large for one is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def whole_number(key: str, value, minimum: int) -> int:
    """A whole number >= minimum (an integral float such as 2.0 counts as 2)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"expected a whole number, got {value!r}", key=key)
    if not isinstance(value, Integral) and not (math.isfinite(value) and float(value).is_integer()):
        raise InputError(f"expected a whole number, got {value!r}", key=key)
    if value < minimum:
        raise InputError(f"must be at least {minimum}, got {number_text(int(value))}", key=key)
    return int(value)


def positive_number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not is_finite(value) or value <= 0:
        raise InputError(f"expected a positive number, got {number_text(value)}", key=key)
    return float(value)


def vector(key: str, array: np.ndarray, length: int, what: str) -> np.ndarray:
    """Accept a number (when length is 1), a list of ``length``, or a ``length``×1 / 1×``length``
    matrix, and return it as a flat vector."""
    fits = (
        (array.ndim == 0 and length == 1)
        or (array.ndim == 1 and array.shape[0] == length)
        or (array.ndim == 2 and array.shape in ((length, 1), (1, length)))
    )
    if not fits:
        found = f"{array.size} entries" if array.ndim else "a number"
        raise InputError(f"expected {length} {what}, found {found} (shape {shape_text(array.shape)})", key=key)
    return array.reshape(length)


def _binary(n: int) -> str:
    """1.5e9 bytes -> '1.4 GiB'; an absurd number of bytes by its order of magnitude."""
    if n >= 2**40 * 10**18:
        return f"{number_text(n // 2**40).removeprefix('about ')} TiB"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


def _dims_text(*dims: int) -> str:
    return "×".join(number_text(n) for n in dims)


def check_pass_size(
    images: int, filters: int, image: tuple[int, int], kernel: tuple[int, int],
    stride: int = 1, padding: int = 0, pool: int = 2, pool_stride: int | None = None,
    key: str = "X",
) -> None:
    """Refuse, before any work, a pass of the reference network on ``images`` images that
    would need more memory than MAX_PASS_BYTES or more work than MAX_WORK; InputError naming
    ``key`` (or padding, or pool, when that is what makes it so large).

    The estimate counts what a traced pass keeps per image: the image and its gradient,
    padded and not (4), five maps of Z1's size (Z1, A1, dA1/dZ1, dL/dA1, dL/dZ1) and two
    more of working copies, and four of P1's size (P1, F, dL/dP1, dL/dF). Sizes are
    Python ints, so an absurd input cannot overflow the arithmetic.
    """
    (H, W), (kh, kw) = image, kernel
    Hpad, Wpad = H + 2 * padding, W + 2 * padding
    Ho, Wo = output_size(Hpad, kh, stride), output_size(Wpad, kw, stride)
    pool_stride = pool if pool_stride is None else pool_stride
    Hp, Wp = max(output_size(Ho, pool, pool_stride), 0), max(output_size(Wo, pool, pool_stride), 0)
    per_image = 2 * Hpad * Wpad + 2 * H * W + 7 * filters * Ho * Wo + 4 * filters * Hp * Wp
    need = 8 * images * per_image
    convolution = kh * kw * (OFFSET_COST + images * filters * Ho * Wo)
    pooling = pool * pool * (OFFSET_COST + images * filters * Hp * Wp)
    work = convolution + pooling
    if need <= MAX_PASS_BYTES and work > MAX_WORK and pooling > convolution:
        key = "pool"
    elif padding and Hpad * Wpad > 4 * H * W and (need > MAX_PASS_BYTES or work > MAX_WORK):
        key = "padding"
    what = (
        f"{images} image{'s' * (images > 1)} of {_dims_text(H, W)}"
        + (f" padded by {number_text(padding)}" if padding else "")
        + f", {number_text(filters)} {_dims_text(kh, kw)} filter{'s' * (filters > 1)}: "
        + f"Z1 is {_dims_text(Ho, Wo)}"
        + (" per image and filter" if images * filters > 1 else "")
    )
    _refuse(need, work, what, key, pool_window=_dims_text(pool, pool) if key == "pool" else None)


def _refuse(need: int, work: int, what: str, key: str, pool_window: str | None = None) -> None:
    if need > MAX_PASS_BYTES:
        raise InputError(
            f"too large: {what}, and the pass would need about {_binary(need)} of memory; "
            f"cnntrace allows {_binary(MAX_PASS_BYTES)}",
            key=key,
        )
    if work > MAX_WORK:
        amount = number_text(work) if work >= 10**18 else f"{work:.2g}"
        raise InputError(
            f"too large: {what}{f', a {pool_window} pool window' if pool_window else ''}, "
            f"and the pass would take about {amount} multiply-adds; cnntrace allows "
            f"{MAX_WORK:.0e}, about a minute",
            key=key,
        )


# -- a network written as a list of layers ---------------------------------------------------


def _option_keys(kind: type[Layer]) -> tuple[str, ...]:
    from dataclasses import fields

    return tuple(f.name for f in fields(kind) if f.name != "place" and not f.name.startswith("_"))


def _parse_option(kind, option: str, value, key: str):
    """One option of a layer, checked: sizes and strides as (rows, cols) pairs."""
    from cnntrace.layers import _size_option

    if option in ("stride", "size"):
        return _size_option(value, key, 1, option)
    if option == "padding":
        return _size_option(value, key, 0, option)
    if option == "flip":
        if not isinstance(value, bool):
            raise InputError(f"flip is true or false, got {value!r}", key=key)
        return value
    if option == "alpha":
        if isinstance(value, bool) or not isinstance(value, Real) or not is_finite(value):
            raise InputError(f"alpha is a finite number, got {value!r}", key=key)
        return float(value)
    raise AssertionError(option)  # pragma: no cover - every field is handled above


def parse_layer(description, key: str) -> Layer:
    """One entry of ``layers``: a type's name, or an object with ``type`` and options."""
    if isinstance(description, str):
        description = {"type": description}
    if not isinstance(description, dict):
        raise InputError(f"a layer is a type's name or an object with \"type\"; got {description!r}"[:200], key=key)
    kind_name = description.get("type")
    if not isinstance(kind_name, str) or kind_name not in KINDS:
        guess = difflib.get_close_matches(str(kind_name), list(KINDS), n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        what = "no \"type\"" if kind_name is None else f"unknown layer type {kind_name!r}"
        raise InputError(f"{what}; {hint}the types are {', '.join(KINDS)}", key=key)
    kind = KINDS[kind_name]
    known = _option_keys(kind)
    options = {}
    for option, value in description.items():
        if option == "type":
            continue
        if option not in known:
            allowed = f"{kind_name} takes {', '.join(known)}" if known else f"{kind_name} takes no options"
            raise InputError(f"unknown option {option!r}; {allowed}", key=key)
        options[option] = _parse_option(kind, option, value, f"{key}.{option}")
    if kind.pooling and "stride" not in options and "size" in options:
        options["stride"] = options["size"]  # the stride is the window's size by default
    return kind(**options)


#: Every name a trace can hold, in any network: what place_layers gives (Z1, A1, P0, F …),
#: the weights, L, their gradients dL_d…, and each activation's dA{l}_dZ{l} (or _dP{l}).
NAME = re.compile(r"(?:dL_d)?(?:X|F|[ZAP]\d+|[WB][1-9]\d*)|L|dA\d+_d[ZP]\d+")


def place_layers(layers: list[Layer], keys: list[str]) -> tuple[Layer, ...]:
    """Name what each layer reads and writes (X → Z1 → A1 → P1 → F → Z2 …) and check the
    order: at most one activation and one pooling after a weighted layer, one flatten,
    softmax only last."""
    from dataclasses import replace

    placed = []
    number, current = 0, "X"
    taken: set[str] = set()  # what the current weighted layer already has after it
    flattened = False
    for position, (layer, key) in enumerate(zip(layers, keys)):
        if layer.weighted:
            number += 1
            taken = set()
            output = f"Z{number}"
        elif layer.letter == "F":
            if flattened:
                raise InputError("a network flattens once", key=key)
            flattened = True
            output = "F"
        else:
            role = "an activation" if layer.activation else "a pooling"
            if role in taken:
                after = f"W{number}'s layer" if number else "the input"
                raise InputError(
                    f"{after} already has {role} after it; a weighted layer takes at most one "
                    "activation and one pooling, in either order",
                    key=key,
                )
            taken.add(role)
            output = f"{layer.letter}{number}"
        if layer.type == "softmax" and position != len(layers) - 1:
            raise InputError("softmax can only be the last layer", key=key)
        place = Place(number, current, output, where=key, first=current == "X")
        placed.append(replace(layer, place=place))
        current = output
    return tuple(placed)


def parse_layers(descriptions, loss=None, *, given_gradient: bool = False) -> Network:
    """The network a ``layers`` list (and ``loss``) describes; InputError naming
    ``layers[i]`` or ``loss``."""
    if not isinstance(descriptions, list) or not descriptions:
        raise InputError("expected a list of layers, e.g. [\"conv\", \"relu\", \"flatten\", \"dense\"]", key="layers")
    keys = [f"layers[{i}]" for i in range(len(descriptions))]
    layers = place_layers([parse_layer(d, k) for d, k in zip(descriptions, keys)], keys)
    output = layers[-1].output
    logits = layers[-1].input
    if given_gradient:
        if loss is not None:
            raise InputError("a file with grad has no loss: the gradient stands in for it", key="loss")
        return Network(layers, GivenGradient(output, logits))
    if loss is None:
        loss = default_loss(layers)
        if loss is None:
            raise InputError("missing: the network does not end in a sigmoid or a softmax, so "
                             "it needs a loss (bce, cross_entropy or mse), or grad", key="loss")  # fmt: skip
    if not isinstance(loss, str) or loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; the losses are {', '.join(LOSSES)}", key="loss")
    chosen: Loss = LOSSES[loss](output, logits)
    chosen.check(layers, "loss")
    return Network(layers, chosen)


# -- the problem -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceOptions:
    """The reference form's top-level options."""

    stride: int = 1
    padding: int = 0
    pool: int = 2
    pool_stride: int = 2


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
    reference: ReferenceOptions | None = None

    # -- building --------------------------------------------------------------------------

    @classmethod
    def build(cls, X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1):
        """The reference network's problem: check every value and return it; InputError
        naming the key."""
        from cnntrace.reference import reference_network

        stride = whole_number("stride", stride, 1)
        padding = whole_number("padding", padding, 0)
        pool = whole_number("pool", pool, 1)
        pool_stride = pool if pool_stride is None else whole_number("pool_stride", pool_stride, 1)
        lr = positive_number("lr", lr)
        arrays = dict(zip(("X", "Y", "W1", "B1", "W2", "B2"), (X, Y, W1, B1, W2, B2)))
        arrays = {key: as_array(key, value) for key, value in arrays.items()}
        X, W1 = arrays["X"], arrays["W1"]
        if X.ndim not in (2, 3) or 0 in X.shape:
            raise InputError(
                f"expected an H×W image or an M×H×W batch, got shape {shape_text(X.shape)}", key="X"
            )
        if W1.ndim not in (2, 3) or 0 in W1.shape:
            raise InputError(
                f"expected a kh×kw filter or K×kh×kw filters, got shape {shape_text(W1.shape)}", key="W1"
            )
        options = ReferenceOptions(stride, padding, pool, pool_stride)
        K = W1.shape[0] if W1.ndim == 3 else 1
        # One image must fit; a whole batch is checked by the pass that holds it at once.
        H, W = X.shape[-2] + 2 * padding, X.shape[-1] + 2 * padding
        kh, kw = W1.shape[-2:]
        if kh <= H and kw <= W:  # else the conv layer says the kernel is too large
            Z1 = (output_size(H, kh, stride), output_size(W, kw, stride))
            if pool > min(Z1):  # the derivation's words: the window slides over Z1's cells
                side = number_text(pool)
                raise InputError(f"the {side}×{side} pool window is larger than Z1 ({shape_text(Z1)})", key="pool")
            check_pass_size(1, K, X.shape[-2:], (kh, kw), stride, padding, pool, pool_stride,
                            key="W1" if K > 1 else "X")  # fmt: skip
            # The reference form's order: the biases, then W2 (which the layers check first).
            vector("B1", arrays["B1"], K, "bias" if K == 1 else "biases, one per filter")
            vector("B2", arrays["B2"], 1, "number")
        network = reference_network(options)
        problem = cls.assemble(network, arrays["X"], arrays["Y"], arrays, lr, reference=options)
        return problem

    @classmethod
    def from_layers(cls, X, target, layers, weights: dict, *, loss=None, given_gradient=False, lr=0.1):
        """A network written as a list of layers; ``target`` is Y, or the gradient given at
        the output when ``given_gradient``. InputError naming the key."""
        network = parse_layers(layers, loss, given_gradient=given_gradient)
        lr = positive_number("lr", lr)
        target_key = "grad" if given_gradient else "Y"
        arrays = {"X": as_array("X", X), target_key: as_array(target_key, target)}
        for p in network.params:
            if p not in weights:
                owner = next(layer for layer in network.layers if p in layer.params)
                raise InputError(f"missing: {owner.place.where} ({owner.type}) needs {p}", key=p)
            arrays[p] = as_array(p, weights[p])
        problem = cls.assemble(network, arrays["X"], arrays[target_key], arrays, lr)
        extra = sorted(set(weights) - set(network.params))
        if extra:
            raise InputError(
                f"the network has no such weight: its weights are {', '.join(network.params) or 'none'}",
                key=extra[0],
            )
        return problem

    @classmethod
    def assemble(cls, network, X, target, arrays, lr, reference=None):
        """Infer every layer's shape from X, check the weights and the target."""
        layout, image_axes = _input_layout(network, X, arrays)
        layouts = {"X": layout}
        weights = {}
        for layer in network.layers:
            given = {p: arrays[p] for p in layer.params}
            layout, general = layer.infer(layout, given)
            weights.update(general)
            layouts[layer.output] = layout
            for p in layer.params:
                leading = ()
                if p.startswith("W") and general[p].ndim == 4:
                    leading = ("filter", "channel")[: arrays[p].ndim - 2]
                layouts[p] = Given(arrays[p].shape, leading)
        batched = X.ndim > image_axes
        M = X.shape[0] if batched else 1
        loss = network.loss
        target_key = "grad" if loss.given else "Y"
        general_target = loss.target(target, layout, M, batched)
        # A given gradient is split as the output it belongs to is (per image, per filter).
        layouts[target_key] = Given(target.shape, layout.axes(batched)[0] if loss.given else ())
        inputs = {"X": X, target_key: target, **{p: arrays[p] for p in network.params}}
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
        return {f"dL_d{last.output}": message, last.local: message}

    def present(self, name: str, array) -> np.ndarray:
        """Put a value of the general pass back into the shape the user gave."""
        layout = self.stage[name].layout if name in self.stage else self.layouts[name]
        return np.asarray(array).reshape(layout.user_shape(self.batched, self.M))

    def summary(self) -> str:
        """The input's settings in one line: the layers, the loss and lr."""
        if self.reference is not None:
            r = self.reference
            return (f"stride {r.stride}, padding {r.padding}, pool {r.pool}×{r.pool} with stride "
                    f"{r.pool_stride}, lr {self.lr:g}")  # fmt: skip
        loss = "the given grad" if self.network.loss.given else f"loss {self.network.loss.type}"
        return f"{self.network.describe()}; {loss}, lr {self.lr:g}"

    def check_size(self, images: int | None = None) -> None:
        """Refuse, before any work, a pass on ``images`` of the images (all by default)
        that is too large."""
        images = self.M if images is None else min(images, self.M)
        if self.reference is not None:
            r, W1 = self.reference, self.inputs["W1"]
            K = W1.shape[0] if W1.ndim == 3 else 1
            check_pass_size(images, K, self.X.shape[-2:], W1.shape[-2:], r.stride, r.padding, r.pool, r.pool_stride)
            return
        check_network_size(self, images)


def _input_layout(network: Network, X: np.ndarray, arrays: dict):
    """X's layout: maps (C, H, W) for a network that starts with a conv or a pooling,
    vectors (n,) for one that starts with dense; and how many axes one image has in X."""
    first = next((layer for layer in network.layers if layer.weighted or layer.pooling or layer.letter == "F"), None)
    if first is not None and first.type == "dense":
        if X.ndim not in (1, 2) or 0 in X.shape:
            raise InputError(f"the network starts with dense: X is a vector of n inputs or M×n, "
                             f"got shape {shape_text(X.shape)}", key="X")  # fmt: skip
        return Layout((X.shape[-1],), channel="channel"), 1
    W = arrays[first.params[0]] if first is not None and first.type == "conv" else None
    channels = X.ndim == 4 or (W is not None and W.ndim == 4)
    if channels:
        if X.ndim not in (3, 4) or 0 in X.shape:
            raise InputError(f"with a K×C×kh×kw W the input has channels: X is C×H×W or "
                             f"M×C×H×W, got shape {shape_text(X.shape)}", key="X")  # fmt: skip
        return Layout(tuple(X.shape[-3:]), shown=True, channel="channel"), 3
    if X.ndim not in (2, 3) or 0 in X.shape:
        raise InputError(f"expected an H×W image or an M×H×W batch, got shape {shape_text(X.shape)}", key="X")
    return Layout((1, *X.shape[-2:]), shown=False, channel="channel"), 2


def check_network_size(problem: Problem, images: int) -> None:
    """Refuse, before any work, a pass too large for memory or a minute (any network): every
    named matrix twice (its value and its gradient) and a working copy, and the work of each
    window offset's loop step."""
    per_image = sum(int(np.prod(layout.shape, dtype=object)) for name, layout in problem.layouts.items()
                    if isinstance(layout, Layout))  # fmt: skip
    need = 8 * images * 3 * per_image
    work = 0
    for layer in problem.network.layers:
        if layer.weighted or layer.pooling:
            out = problem.layouts[layer.output].shape
            window = (problem.weights[layer.params[0]].shape[-2:] if layer.type == "conv"
                      else layer.size if layer.pooling else (1, 1))  # fmt: skip
            cells = images * int(np.prod(out, dtype=object))
            fan_in = problem.weights[layer.params[0]].shape[1] if layer.weighted else 1
            work += window[0] * window[1] * (OFFSET_COST + cells * fan_in)
    what = f"{images} image{'s' * (images > 1)} of {shape_text(problem.layouts['X'].shape)}"
    _refuse(need, work, what, "X")
