"""The interface every layer kind has, and the records it speaks in.

Each kind (one module of this package) has the same small interface (see ``Layer``):

- ``OPTIONS``: its options as an input file writes them, each with its parser and its part of
  the JSON Schema; ``CONVENTIONS``: the switches of the input's ``conventions`` key it
  honours, each one of its options (a max-pool's ``ties``, a ReLU's ``grad_at_zero``);
- ``infer``: check its weights and the shape it receives, and give the shape it makes;
- ``forward`` and ``backward`` on the general shapes of ops.py, pure, with a cache between;
- ``stages``: the names, symbols and equations of what it adds to the trace, each backward
  stage with its chain-rule step;
- ``explain``: the arithmetic of one entry of one of its stages; ``terms``, how many terms
  that arithmetic holds at most, for the size guard of explanations (see budget.py);
  ``recipe``, where it has one, the same in JavaScript for the ``--html`` page (see ``Recipe``);
- ``kinks``: what of its pattern (a ReLU mask, a pool window's winner) the gradient check
  must see unchanged;
- ``annotate``: its marks on the trace (pool winners, the ReLU count) and their legend;
- ``mistakes``: the wrong turns a learner commonly takes at this layer, each as the values
  of the stages where it is made (``verify`` resumes the pass from them to name a mistake);
- ``work``: what one pass through it costs, for the size guard;
- ``HAND`` and ``ambiguities``: what a hand exercise must avoid in it;
- where a kind needs more of the pass around it (batch norm, dropout): ``shown``, the stages
  it shows besides its output, with ``forward_from`` and ``backward_from`` taking any of them
  as given; ``running``, the statistics it keeps besides its weights (``start_running``,
  ``update_running``); ``for_batch``, its check of (or draw for) the batch; ``draws`` and
  ``for_step``, its random draws in training; ``evaluating``, the layer as a trained
  network evaluates;
- where a kind reads more than its input (an add, a concat: ``merge``): ``reads``, the
  earlier matrices it reads besides, which the network hands its ``forward`` as ``others``
  and to which its ``backward`` sends gradients under their names (dL/dX beside dL/dA4);
  ``infer_from``, its layout from all of theirs.

A layer sits at a ``Place`` in a network: the number of its weighted layer and the names of
what it reads and writes (X → Z1, Z1 → A1 …), which is all it needs to name its stages.
Its input is the previous layer's output unless the file names another (``"input": "X"``);
where a matrix feeds several layers, the network sums their gradients (see network.py).
Explanations and marks read the pass through a ``View`` (the trace on the general shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np

from cnntrace import checks
from cnntrace.errors import InputError, shown
from cnntrace.naming import grad, numbered
from cnntrace.terms import Factor, Term
from cnntrace.text import symbol

#: Two numbers of a hand exercise this close are one number on paper (a ReLU input at 0,
#: a tie in a pool window): its entries have at most two decimals.
AMBIGUITY = 1e-9


# -- shapes as the user writes them ---------------------------------------------------------


class Terms(NamedTuple):
    """How large one entry's explanation is, at most: the ``kept`` terms it holds (its
    memory, and the time to make and write each) and the cells its loops ``visit`` to find
    them (their time), at least as many. The size guard sums them before any explaining."""

    kept: int
    visits: int = 0

    @property
    def steps(self) -> int:
        return max(self.kept, self.visits)


def size_of(shape) -> int:
    """How many entries a shape holds."""
    n = 1
    for d in shape:
        n *= int(d)
    return n


@dataclass(frozen=True)
class Layout:
    """How one named matrix of the pass is shaped: ``shape`` for one image on the general
    shapes (C, H, W) for a map, (n,) for a vector, (n, n) for a Jacobian, () for L; and
    how the user sees it: without the image axis for a single image, without the channel
    axis of a map (or the unit axis of a vector) where ``shown`` is False."""

    shape: tuple[int, ...]
    shown: bool = True
    channel: str = "filter"  # what a map's channel axis is called
    kind: str = ""  # "map", "vector", "jacobian", "scalar"; from the shape when empty
    origin: tuple[int, ...] = ()  # a flattened vector's maps (C, H, W), for messages
    #: The key whose shape fixed the channels (or units), for messages: a mismatch between
    #: two keys names both ("W1 (3×2×3×3) has 3 filters"); "" where X fixed them.
    sized_by: str = field(default="", compare=False)

    def fixed_by(self) -> str:
        """' (W1 (3×2×3×3) has 3 filters)', what a message adds after a count of channels."""
        return f" ({self.sized_by})" if self.sized_by else ""

    @property
    def form(self) -> str:
        return self.kind or {3: "map", 1: "vector", 0: "scalar"}[len(self.shape)]

    def user_shape(self, batched: bool, M: int) -> tuple[int, ...]:
        images = (M,) if batched else ()
        if self.form == "map":
            C, H, W = self.shape
            return images + ((C,) if self.shown else ()) + (H, W)
        if self.form == "vector":
            return images + (self.shape if self.shown else ())
        if self.form == "jacobian":
            return images + self.shape
        return ()

    def axes(self, batched: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(leading, trailing): the axes that split a matrix into one table per image or
        filter, and the table's own axes."""
        images = ("image",) if batched else ()
        if self.form == "map":
            return images + ((self.channel,) if self.shown else ()), ("row", "col")
        if self.form == "vector":
            return (images, ("col",)) if self.shown else ((), images)
        if self.form == "jacobian":
            return images, ("row", "col")
        return (), ()


@dataclass(frozen=True)
class GivenLayout:
    """The layout of an input as the file gave it (a W, a B, Y): its own shape, its axes."""

    shape: tuple[int, ...]
    leading: tuple[str, ...] = ()

    def user_shape(self, batched: bool, M: int) -> tuple[int, ...]:
        return self.shape

    def axes(self, batched: bool):
        trailing = {0: (), 1: ("col",), 2: ("row", "col")}[len(self.shape) - len(self.leading)]
        return self.leading, trailing


# -- the derivation's pieces -------------------------------------------------------------------


class Rule(NamedTuple):
    """How one backward stage follows from the ones before it."""

    chain: str  # "∂L/∂W2 = ∂L/∂A2 · ∂A2/∂Z2 · ∂Z2/∂W2"; "" for the update
    simplified: str  # what it comes to, in matrices already computed
    factors: tuple[str, ...]  # what goes into it: names in the trace, inputs, "lr", "A2 − Y"
    note: str = ""  # prose: why it simplifies, where the gradient flows


class Stage(NamedTuple):
    """One named matrix of the trace: where it belongs, how it was made and by whom."""

    name: str  # the key in the JSON output, a valid identifier
    section: str  # "forward", "backward" or "update"
    symbol: str  # as the derivation writes it
    equation: str
    layout: Any  # Layout or GivenLayout; None: that of ``of``, set by the network
    rule: Rule | None = None
    owner: Any = None  # the Layer or Loss that made it (whose explain covers it); None: the update
    of: str = ""  # the matrix whose layout it has: Q for dL/dQ, Z for dA/dZ, itself otherwise


def stage(name: str, section: str, equation: str, layout=None, rule: Rule | None = None, *, of: str = "") -> Stage:
    """A stage named as the derivation names it; ``of`` the matrix whose layout it has."""
    return Stage(name, section, symbol(name), equation, layout, rule, of=of or name)


def grad_stage(of: str, equation: str, layout=None, rule: Rule | None = None) -> Stage:
    """dL/d``of``, a backward stage with the layout of ``of``."""
    return stage(grad(of), "backward", equation, layout, rule, of=of)


class Context(NamedTuple):
    """What a layer's stages need to know of the rest of the network."""

    batched: bool
    chain: tuple[str, ...]  # ∂-factors from L down to this layer's output: ("∂L/∂A2", "∂A2/∂Z2")
    closed: ClosedForm | None = None  # the loss's closed form of dL/d(this output), where it has one
    layouts: dict | None = None  # every matrix's layout, by name

    def full_chain(self, *tail: str) -> str:
        """The chain rule's factors from L down to this layer, and ``tail``."""
        return " · ".join((*self.chain, *tail))


class ClosedForm(NamedTuple):
    """What a loss that cancels against the last activation makes of dL/d(logits)."""

    text: str  # "(A2 − Y)/M"
    factor: str  # the named expression it is read from: "A2 − Y"
    divided: bool  # whether it divides by the batch


class Extra(NamedTuple):
    """A further matrix shown after a stage (a conv's ∂L/∂pad(X))."""

    title: str
    values: np.ndarray  # in the user's shape
    layout: Layout
    border: tuple[int, int, int, int]  # how many of its rows and columns are padding: top, bottom, left, right
    note: str


class Annotation(NamedTuple):
    """A layer's marks on one of the stages: counts to mark cells with (pool wins), what a
    mark means, and lines of prose to show before and after the derivation."""

    marks: np.ndarray | None = None  # ints in the stage's user shape; 0 = no mark
    legend: str = ""  # "won its pool window: dL/dP1 flows back to this cell"
    many: str = ""  # how a mark counting more than one reads: "won {n} windows" (n in words)
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    extra: Extra | None = None

    def merged(self, other: Annotation) -> Annotation:
        """Two layers' annotations of one stage (a ReLU's count and a pool's wins on A1)."""
        return self._replace(
            marks=other.marks if other.marks is not None else self.marks,
            legend=other.legend or self.legend,
            many=other.many or self.many,
            before=self.before + other.before,
            after=self.after + other.after,
            extra=other.extra if other.extra is not None else self.extra,
        )


class Explained(NamedTuple):
    """The arithmetic of one entry as its layer writes it: ``formula`` in symbols, the
    ``terms`` it adds up, the ``function`` applied to their sum (None: the sum itself) with
    its ``parameter``, and notes."""

    formula: str
    terms: list[Term]
    function: str | None = None
    notes: list[str] | tuple[str, ...] = ()
    parameter: float | None = None


class Recipe(NamedTuple):
    """How the ``--html`` page explains the entries of one stage itself, when one is
    clicked, instead of carrying the text of each: ``code``, a JavaScript function
    ``(t, p, name, i)`` that does what ``explain`` does for the entry at general index ``i``
    and returns ``{formula, terms, fn, notes, parameter}`` (an Explained), reading the
    matrices named in ``reads`` through ``t`` (``t.factor``, ``t.padded``, ``t.value``,
    ``t.shape``, ``t.term``, ``t.constant``: the View's, on the same general shapes); ``p``,
    the stage's constants (JSON: names, sizes, the texts that do not depend on the entry).
    The page's text equals explain's (tests/test_html_recipes.py runs every kind's).

    ``made``: matrices the trace does not hold that the code reads as it reads the others
    (σ(−Z1), exp(Z1)), each ``(key, the matrix whose entries they are of, a function giving
    their general values)``, made with explain's own functions so that the page's numbers
    are explain's to the last bit (JavaScript's Math.exp is not numpy's, nor Python's)."""

    code: str
    p: dict
    reads: tuple[str, ...]
    made: tuple[tuple[str, str, Callable[[], np.ndarray]], ...] = ()


@dataclass(frozen=True)
class Place:
    """Where a layer sits: its weighted layer's number and what it reads and writes.

    ``where`` is the key of the input that describes the layer (``layers[2]``), named in
    errors; ``option_keys`` names options written elsewhere (the reference form's ``pool``).
    """

    number: int = 1
    input: str = "X"
    output: str = "Z1"
    where: str = "layers"
    option_keys: tuple[tuple[str, str], ...] = ()
    first: bool = True  # reads X

    def key(self, option: str | None = None) -> str:
        """The key an error about ``option`` (or the layer itself) names: layers[2].size."""
        if option in dict(self.option_keys):
            return dict(self.option_keys)[option]
        return f"{self.where}.{option}" if option else self.where


class Mistake(NamedTuple):
    """A known mistake made at one layer: the values (general shapes) it gives to the stages
    where it is made; the rest of the pass follows from them correctly."""

    id: str  # part of verify's JSON interface: "relu_mask_missing"
    message: str  # what was done: "dL/dZ1 = dL/dA1: the ReLU mask was left out"
    given: dict  # {stage name: general array}
    convention: tuple[str, Any] | None = None  # the conventions switch that gives it


# -- options ----------------------------------------------------------------------------------


class Option(NamedTuple):
    """One option of a layer kind as an input file writes it: how a value is checked (raising
    InputError naming ``key``) and its part of the JSON Schema."""

    parse: Callable[[Any, str], Any]  # (value, key) -> the layer's field
    schema: dict


class Convention(NamedTuple):
    """One switch of the input's ``conventions`` key: the layer option it sets."""

    option: str  # the layer's field
    choices: tuple  # the default first
    description: str  # for the JSON Schema

    def parse(self, value, key: str):
        return checks.choice(key, value, self.choices)

    def schema(self) -> dict:
        return {"enum": list(self.choices), "default": self.choices[0], "description": self.description}


def pair_option(minimum: int, default: int | None, description: str, what: str) -> Option:
    """A whole number, or [rows, cols], each at least ``minimum``."""
    pair = {"type": "array", "items": {"type": "integer", "minimum": minimum}, "minItems": 2, "maxItems": 2}
    schema = {"description": description, "oneOf": [{"type": "integer", "minimum": minimum}, pair]}
    if default is not None:
        schema["default"] = default
    return Option(lambda value, key: checks.pair(key, value, minimum, what), schema)


def padding_option(description: str) -> Option:
    """A padding as PyTorch and TensorFlow write it: a whole number or [rows, cols] on every
    side, [top, bottom, left, right], "valid" (none) or "same" (resolved by the layer, which
    knows its window). -> (rows, cols), (top, bottom, left, right) when the sides differ,
    "valid" or "same"."""
    number = {"type": "integer", "minimum": 0}
    schema = {"description": description, "default": 0, "oneOf": [
        number, {"type": "array", "items": number, "minItems": 2, "maxItems": 2},
        {"type": "array", "items": number, "minItems": 4, "maxItems": 4}, {"enum": ["valid", "same"]},
    ]}  # fmt: skip

    def parse(value, key):
        if value in ("valid", "same"):
            return value
        if isinstance(value, str):
            raise InputError(f'padding is a number, [rows, cols], [top, bottom, left, right], "valid" '
                             f'or "same", got {shown(value)}', key=key)  # fmt: skip
        if isinstance(value, (list, tuple)) and len(value) == 4:
            top, bottom, left, right = (checks.whole_number(key, side, 0) for side in value)
            return (top, left) if (top, left) == (bottom, right) else (top, bottom, left, right)
        if isinstance(value, (list, tuple)) and len(value) != 2:
            raise InputError(f"padding is a number, [rows, cols] or [top, bottom, left, right], "
                             f"got {len(value)} numbers", key=key)  # fmt: skip
        return checks.pair(key, value, 0, "padding")

    return Option(parse, schema)


def padding_value(padding) -> int | str | list:
    """A parsed padding as an input file writes it (see padding_option)."""
    if isinstance(padding, str) or padding[0] != padding[-1] or len(padding) == 4:
        return padding if isinstance(padding, str) else list(padding)
    return padding[0]


def flag_option(default: bool, description: str, what: str) -> Option:
    def parse(value, key):
        if not isinstance(value, bool):
            raise InputError(f"{what} is true or false, got {shown(value)}", key=key)
        return value

    return Option(parse, {"type": "boolean", "default": default, "description": description})


def number_option(default: float, description: str, what: str) -> Option:
    return Option(lambda value, key: checks.finite_number(key, value, what),
                  {"type": "number", "default": default, "description": description})  # fmt: skip


def choice_option(choices: tuple, description: str) -> Option:
    """One of ``choices``, the default first."""
    return Option(lambda value, key: checks.choice(key, value, choices),
                  {"enum": list(choices), "default": choices[0], "description": description})  # fmt: skip


def convention_option(convention: Convention, description: str) -> Option:
    """An option that a switch of ``conventions`` can also set."""
    return Option(convention.parse, {"enum": list(convention.choices), "default": convention.choices[0],
                                     "description": description})  # fmt: skip


# -- what explanations and marks read ------------------------------------------------------------


class View(Protocol):
    """The pass on ops.py's general shapes, as explanations and marks read it (see
    trace.GeneralPass): values by name, and factors labelled with the user's indices."""

    M: int
    batched: bool
    weights: dict[str, np.ndarray]  # before the update

    def value(self, name: str) -> np.ndarray: ...
    def factor(self, name: str, index: tuple[int, ...], label: str | None = None) -> Factor: ...
    def padded(self, name: str, m: int, c: int, row: int, col: int) -> Factor: ...
    def user_index(self, name: str, index: tuple[int, ...]) -> tuple[int, ...]: ...
    def user_shape(self, name: str) -> tuple[int, ...]: ...
    def layout(self, name: str): ...
    def mean(self) -> tuple[Factor, ...]: ...


class Hand(NamedTuple):
    """What a hand exercise asks of a layer kind (see exercise.hand_report)."""

    exact: bool = False  # its output stays exact at two decimals when worked by hand
    both_signs: bool = False  # its input should hold both signs (a ReLU's kink at 0)
    saturates: bool = False  # as the last layer, its input must stay where a calculator copes
    competes: bool = False  # its inputs compete (softmax's logits): their gaps stay small too
    masks: bool = False  # somewhere its local derivative 0 must stop a gradient that is not 0
    live_rows: bool = False  # no input of it whose weights are all 0 (dense: a row of W)
    live_filters: bool = False  # no filter of it whose whole weight gradient is 0 (conv)
    ties: bool = False  # its input can tie on purpose (a max-pool window)
    level_weights: bool = False  # the first such layer's weights are drawn at the exercise's level


# -- PyTorch and ONNX ----------------------------------------------------------------------------


class TorchForm(NamedTuple):
    """A layer as PyTorch writes it, for the script ``export --to torch`` writes (see
    cnntrace.bridge.repro): ``module``, the source of the nn.Module (``nn.Conv2d(3, 2, (3, 3),
    stride=(1, 1), padding=(0, 0))``; the script's own helpers ``Apply(fn)`` and
    ``FlippedConv2d`` too); ``params``, where each weight goes: (W1, "weight", transposed);
    ``buffers``, its running statistics after the step: (mean2, "running_mean"); ``shown``,
    its other stages as expressions of the trace's input ``x`` to it, the trace's gradient
    ``dy`` of its output and its ``module`` (batch norm's μ, dL/dμ); ``helpers``, the source
    of functions those expressions call; ``constants``, arrays the module's source reads as
    CONSTANTS[name] (a dropout's mask); ``training``, whether the module runs in training mode."""

    module: str
    params: tuple[tuple[str, str, bool], ...] = ()
    buffers: tuple[tuple[str, str], ...] = ()
    shown: tuple[tuple[str, str], ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()
    training: bool = True
    helpers: str = ""


class Imported(NamedTuple):
    """A layer read from PyTorch or ONNX: its description as an input file writes it (its
    type, or an object with its options), and its arrays in the order of its ``params`` and
    then its ``running`` statistics (float64, cnntrace's layouts: a dense W n_in×n_out);
    ``transposed``, which of its weights are PyTorch's transposed (nn.Linear's out×in);
    ``torch_names``, PyTorch's name of each weight ("0.weight", "" for a zero bias PyTorch
    does not have), set by the reader."""

    description: str | dict
    weights: tuple = ()
    running: tuple = ()
    transposed: tuple[bool, ...] = ()
    torch_names: tuple[str, ...] = ()


class Refused(Exception):
    """What of a PyTorch module or an ONNX node no layer kind expresses: the message names
    the operator and the attribute (``Conv with auto_pad SAME_LOWER``); the reader adds the
    node's name."""


class OnnxNode(NamedTuple):
    """An ONNX node as a layer kind reads it: its op type, its attributes as Python values
    (ints, floats, lists, strings), and its inputs after the first (the weights) as float64
    arrays (None where an input is not a constant)."""

    name: str
    op: str
    attributes: dict
    inputs: tuple
    #: A merge's operands after the first, as cnntrace names them ("X", "Z4").
    sources: tuple[str, ...] = ()


class TorchCall(NamedTuple):
    """A function a traced module calls (torch.fx), as a layer kind reads it: its name
    (``add``, ``cat``, ``relu``), the cnntrace names of the matrices it reads after the
    first (``sources``), its other positional arguments (``constants``: numbers, a dim) and
    its keyword arguments (``options``)."""

    function: str
    sources: tuple[str, ...] = ()
    constants: tuple = ()
    options: dict = {}


def onnx_float(value) -> float:
    """An ONNX float attribute (stored as float32: 1e-5 reads 9.99999974e-06) as the shortest
    decimal that is that float32 (1e-05): the number the model's author wrote."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-")) if value else float(value)


def torch_pair(value) -> tuple[int, int]:
    """A torch module's int-or-pair option (kernel_size, stride, padding) as a pair."""
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def onnx_window(node: OnnxNode, refuse_other: tuple[str, ...] = (), allow: tuple[str, ...] = ()) -> dict:
    """The kernel, stride, padding, dilation and ceil mode of an ONNX Conv or pool node:
    {"kernel", "stride", "padding", "dilation", "ceil_mode"}, the padding (rows, cols),
    (top, bottom, left, right) where the sides differ, or "same". Refused for an auto_pad other than
    NOTSET or VALID, for what ``allow`` leaves out of "dilations", "ceil_mode" and "sides"
    (padding that differs between the sides) and "same" (auto_pad SAME_UPPER, read as the
    padding "same"), and for any attribute of ``refuse_other``
    given another value than its default."""
    attributes = node.attributes
    auto_pad = attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID") and not (auto_pad == "SAME_UPPER" and "same" in allow):
        raise Refused(f"{node.op} with auto_pad {auto_pad}")
    dilation = tuple(attributes.get("dilations", (1, 1)))
    if "dilations" not in allow and any(d != 1 for d in dilation):
        raise Refused(f"{node.op} with dilations {list(dilation)}")
    if "ceil_mode" not in allow and attributes.get("ceil_mode", 0):
        raise Refused(f"{node.op} with ceil_mode 1")
    for name in refuse_other:
        if name in attributes and attributes[name]:
            raise Refused(f"{node.op} with {name} {attributes[name]}")
    kernel = tuple(attributes.get("kernel_shape", ()))
    if len(kernel) != 2:
        raise Refused(f"{node.op} over {len(kernel) or 'unknown'} dimensions (cnntrace's maps have 2)")
    top, left, bottom, right = tuple(attributes.get("pads", (0, 0, 0, 0)))
    if (top, left) != (bottom, right) and "sides" not in allow:
        raise Refused(f"{node.op} with pads {[top, left, bottom, right]} (cnntrace pads each side alike)")
    padding = (top, left) if (top, left) == (bottom, right) else (top, bottom, left, right)
    if auto_pad == "SAME_UPPER":  # the output keeps ceil(size/stride), the odd cell after: "same"
        padding = "same"
    return {"kernel": kernel, "stride": tuple(attributes.get("strides", (1, 1))), "padding": padding,
            "dilation": dilation, "ceil_mode": bool(attributes.get("ceil_mode", 0))}  # fmt: skip


def onnx_window_attributes(kernel, stride, padding) -> dict:
    """The attributes of an ONNX Conv or pool node from (rows, cols) pairs."""
    return {"kernel_shape": list(kernel), "strides": list(stride), "pads": [*padding, *padding]}


# -- the interface -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer kind with its options; ``place`` is set when the network is built.

    A kind with options of its own is a frozen dataclass, its options its fields; a kind
    that adds none (tanh, softmax) is a plain subclass: @dataclass would only make its
    parent's __init__, __eq__ and __repr__ again, half a millisecond at every start-up."""

    type: ClassVar[str]
    letter: ClassVar[str]  # what its output is called: Z, A, P, D or F
    DESCRIPTION: ClassVar[str]  # one line for the JSON Schema
    weighted: ClassVar[bool] = False
    activation: ClassVar[bool] = False
    pooling: ClassVar[bool] = False
    dropout: ClassVar[bool] = False
    #: An add or a concat: it merges its input with the earlier matrices it ``reads``.
    merge: ClassVar[bool] = False
    #: Only as the network's last layer (a softmax).
    last_only: ClassVar[bool] = False
    #: What the input must be ("map", "vector"), where the kind fixes it; the first such
    #: layer tells how X is read. "either": X's own axes tell (1 or 2: vectors, 3 or 4:
    #: maps, with channels where ``reads_channels`` says so), as batch norm reads it.
    input_form: ClassVar[str | None] = None
    #: The loss that goes with it as the last layer, and cancels against it (sigmoid: bce).
    pairs_with: ClassVar[str | None] = None
    #: How a classifier that ends in it counts a right answer: "argmax", "threshold".
    classifies: ClassVar[str | None] = None
    #: Whether its cache holds its output in training: then nothing may write over it.
    keeps_output: ClassVar[bool] = False
    #: Whether its output is a view of its input (flatten): a write to one is a write to both.
    views_input: ClassVar[bool] = False
    HAND: ClassVar[Hand] = Hand()
    #: The functions its equations write by name (conv, ReLU, MaxPool): typeset as operators.
    FUNCTIONS: ClassVar[tuple[str, ...]] = ()

    #: {option: Option} as an input file writes the kind
    OPTIONS: ClassVar[dict[str, Option]] = {}
    #: The options a file must give (a merge's ``from``); the others have defaults.
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    #: {switch of the ``conventions`` key: Convention} this kind honours
    CONVENTIONS: ClassVar[dict[str, Convention]] = {}

    place: Place = field(default=Place(), compare=False, repr=False)

    @classmethod
    def from_options(cls, options: dict) -> Layer:
        """The layer with the checked ``options`` of its description."""
        return cls(**options)

    @property
    def input(self) -> str:
        return self.place.input

    @property
    def output(self) -> str:
        return self.place.output

    @property
    def reads(self) -> tuple[str, ...]:
        """The earlier matrices it reads besides its input (an add's, a concat's ``from``):
        ``forward`` gets them as ``others``, in this order, and ``backward`` gives each its
        gradient under its name (dL_dX), before dL/d(input)."""
        return ()

    @property
    def params(self) -> tuple[str, ...]:
        """The names of its weights, in the order of the update."""
        return ()

    @cached_property
    def gradients(self) -> tuple[str, ...]:
        """The names of its weights' gradients: dL_dW1, dL_dB1."""
        return tuple(grad(p) for p in self.params)

    @cached_property
    def input_gradient(self) -> str:
        """The name of the gradient it sends back: dL_dX, dL_dP1 …"""
        return grad(self.input)

    def options(self) -> str | dict:
        """The layer as an input file writes it: its type, or an object with its options."""
        return self.type

    def describe(self) -> str:
        """One line for the input summary: 'conv (stride 1, padding 1)'."""
        return self.type

    def infer(self, layout: Layout, given: dict[str, np.ndarray]) -> tuple[Layout, dict]:
        """Check the weights ``given`` (as the file wrote them) against the layout this layer
        receives; return the layout it makes and its weights on the general shapes."""
        return layout, {}

    def infer_from(self, layouts: dict, given: dict[str, np.ndarray]) -> tuple[Layout, dict]:
        """``infer`` from the layouts of every matrix made so far, by name: that of its input
        for most kinds; a merge checks those it ``reads`` against it."""
        return self.infer(layouts[self.input], given)

    def weight_leading(self, name: str, given: np.ndarray) -> tuple[str, ...]:
        """The leading axes of weight ``name`` as the file gave it (a conv's filters)."""
        return ()

    def reads_channels(self, given: dict[str, np.ndarray]) -> bool:
        """Whether its weights, as given, say that its input has a channel axis."""
        return False

    def work(self, layouts: dict, weights: dict) -> tuple[int, int]:
        """(loop steps, multiply-adds per image and step) of one pass through it: the
        size guard's estimate (see problem.check_network_size)."""
        return (0, 0)

    def forward(self, x, weights: dict, tracing: bool, overwrite: bool = False):
        """(output, cache) of this layer on ``x``; the cache holds what backward needs (in
        training, ``tracing`` False, no more). ``overwrite``: ``x`` is the pass's own and
        nothing else holds it (see Network.overwritable), so the layer may write its output
        into it."""
        raise NotImplementedError

    def backward(self, d_out, cache, weights: dict, *, need_input: bool, tracing: bool) -> dict:
        """The layer's backward stages in the trace's order, dL/d(input) last under its
        name (left out where ``need_input`` is False); in training (``tracing`` False) only
        what the pass goes on with."""
        raise NotImplementedError

    def local_factor(self) -> str:
        """This layer's factor in a chain rule: ∂Z2/∂F."""
        return f"∂{self.output}/∂{self.input}"

    def stages(self, ctx: Context) -> tuple[list[Stage], list[Stage]]:
        """(forward stages, backward stages) of this layer; a stage of the update section
        among the forward ones (a running statistic after the step) goes to the update."""
        raise NotImplementedError

    def kinks(self, cache) -> tuple[np.ndarray, ...]:
        """Its part of the activation pattern: where it is one smooth function."""
        return ()

    def annotate(self, view: View) -> dict[str, Annotation]:
        """Its marks on the stages, by stage name."""
        return {}

    def ambiguities(self, x) -> dict[str, int]:
        """What of its input ``x`` (general shapes) makes an exercise ambiguous by hand:
        {"zero": how many ReLU inputs are exactly 0} or {"tie": how many pool windows have
        tied maxima}; {} for a layer kind where nothing can be."""
        return {}

    def explain(self, t: View, name: str, index: tuple[int, ...]) -> Explained:
        """The arithmetic of entry ``index`` (general) of stage ``name``."""
        raise NotImplementedError

    def terms(self, layouts: dict, weights: dict, name: str, images: int) -> Terms:
        """How large ``explain`` of any one entry of its stage ``name`` is, at most, on a
        pass of ``images`` images (``layouts`` per image, ``weights`` on the general
        shapes): the size guard's estimate for explain and the page. An entry-by-entry
        kind reads a number or two."""
        return Terms(2)
    def recipe(self, t: View, name: str) -> Recipe | None:
        """How the page explains the entries of stage ``name`` by itself (see Recipe); None
        where it has none, and the page carries ``explain``'s text of each entry shown."""
        return None

    def has_recipe(self, name: str) -> bool:
        """Whether ``recipe`` gives one for stage ``name``, known before the pass: the page's
        size guard counts explanations only for the stages without (see budget.py)."""
        return type(self).recipe is not Layer.recipe

    # -- what some kinds need of the pass around them (batch norm, dropout) ------------------

    @property
    def running(self) -> tuple[str, ...]:
        """The names of the running statistics it keeps besides its weights (batch norm's
        mean{l}, var{l}): inputs that no gradient moves, which a training pass updates
        (see ``update_running``). They travel with the weights, on the general shapes."""
        return ()

    def start_running(self, weights: dict) -> dict:
        """Where training starts the running statistics the input leaves out (PyTorch's
        mean 0, variance 1), from the layer's general ``weights``."""
        return {}

    def update_running(self, cache, weights: dict) -> dict:
        """Its running statistics after a pass (``cache``) in training: {} for most kinds,
        and where ``weights`` hold none."""
        return {}

    def for_batch(self, layout: Layout, batched: bool, M: int) -> Layer:
        """The layer ready for a pass on ``M`` images whose input is ``layout``: a dropout's
        given mask checked against the batch (or its mask drawn from its seed); InputError
        where the batch cannot go through it (batch norm on one value per channel)."""
        return self

    @property
    def draws(self) -> bool:
        """Whether it draws at random in training (a dropout's mask): see ``for_step``."""
        return False

    def for_step(self, rng) -> Layer:
        """The layer for one step of training, its random draws (a dropout's mask) made
        from ``rng`` (numpy's Generator)."""
        return self

    def evaluating(self) -> Layer:
        """The layer as a trained network evaluates a test set: batch norm with its running
        statistics, dropout as the identity."""
        return self

    def shown(self, cache) -> dict:
        """The forward stages it shows besides its output, from its cache (batch norm's μ,
        σ² and x̂, a dropout's mask), by name."""
        return {}

    def forward_from(self, x, weights: dict, given: dict, **operands):
        """``forward`` with any of its ``shown`` stages taken from ``given`` and what follows
        from them inside the layer recomputed (verify resumes a pass from a learner's σ²);
        ``operands``: a merge's ``others``."""
        return self.forward(x, weights, True, **operands)

    def backward_from(self, d_out, cache, weights: dict, given: dict, *, need_input: bool) -> dict:
        """``backward`` with any of its stages taken from ``given``, and what follows from
        them inside the layer recomputed (see ``resume``)."""
        stages = self.backward(d_out, cache, weights, need_input=need_input, tracing=True)
        return self.resume(d_out, stages, given)

    def resume(self, d_out, stages: dict, given: dict) -> dict:
        """Its backward stages with those in ``given`` taken as given, and what follows from
        them inside the layer recomputed (see Activation)."""
        return {name: given.get(name, value) for name, value in stages.items()}

    def mistakes(self, values: dict, weights: dict) -> list[Mistake]:
        """The common mistakes at this layer, from the correct pass's ``values`` (general
        shapes, X included) and the weights."""
        return []

    # -- PyTorch and ONNX (cnntrace.bridge) -------------------------------------------------

    #: The torch.nn modules (class names) this kind reads, see ``from_torch``.
    TORCH: ClassVar[tuple[str, ...]] = ()
    #: The ONNX operators this kind reads, see ``from_onnx``.
    ONNX: ClassVar[tuple[str, ...]] = ()

    def torch_form(self, t: View) -> TorchForm:
        """The layer as a PyTorch module, from the pass ``t`` (its weights, the layout it
        receives, a dropout's mask); InputError naming the layer where PyTorch has none."""
        raise InputError(f"{self.describe()} has no PyTorch form", key=self.place.key())

    @classmethod
    def from_torch(cls, module, array) -> Imported:
        """The layer of torch.nn ``module`` (one of TORCH); ``array(tensor)`` gives a float64
        numpy array. Refused for what the kind cannot express."""
        raise Refused(f"{type(module).__name__} is not read")

    #: The ONNX opset its nodes need, where it is newer than the one export writes (GELU: 20).
    ONNX_OPSET: ClassVar[int] = 0
    #: Its ONNX forms as chains of elementwise nodes the reader reads as one layer, each step
    #: (op, its other operand): a number (a constant of that one value, as float32 keeps it),
    #: "x" (the chain's input) or None (an op of one input). SiLU: Sigmoid → ·x; GELU
    #: before opset 20's Gelu: x/√2 → Erf → +1 → ·x → ·0.5.
    ONNX_CHAINS: ClassVar[tuple[tuple[tuple[str, object], ...], ...]] = ()

    #: The functions (by name) a module's code calls for this kind, read from a torch.fx
    #: trace: ``add`` for ``out + identity``, ``relu`` for ``F.relu``; see ``from_torch_call``.
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_torch_call(cls, call: TorchCall) -> Imported:
        """The layer of a function call in a traced module's code; Refused for arguments the
        kind cannot express."""
        raise Refused(f"{call.function} is not read")

    @classmethod
    def from_state(cls, tensors: dict) -> Imported:
        """The weights of a layer of this kind from one module's entries of a PyTorch
        state_dict, by attribute ({"weight": …, "bias": …}, float64 arrays); Refused where
        they do not fit. The description is the --layers file's, not this one's."""
        raise Refused(f"{cls.type} has no weights, but the state_dict gives it {', '.join(tensors)}")

    @classmethod
    def from_onnx(cls, node: OnnxNode) -> Imported:
        """The layer of an ONNX ``node`` (one of ONNX); Refused for an attribute it cannot
        express."""
        raise Refused(f"{node.op} is not read")

    def onnx_nodes(self, t: View, x: str, y: str) -> tuple[list, dict]:
        """(nodes, initializers) that write this layer in ONNX from input ``x`` to output
        ``y``, from the pass ``t``: nodes as (op, inputs, outputs, attributes), initializers
        by name as float64 arrays (ONNX's layouts: a Gemm's B n_in×n_out)."""
        raise InputError(f"{self.describe()} has no ONNX form", key=self.place.key())

    def rules(self) -> tuple[str, ...]:
        """The conventions a learner working this layer by hand must know, one sentence
        each, as the worksheet's conventions box states them (its current choices)."""
        return ()

    def conventions(self) -> dict:
        """The switches of ``conventions`` where this layer differs from the default."""
        return {
            switch: getattr(self, c.option) for switch, c in self.CONVENTIONS.items()
            if getattr(self, c.option) != c.choices[0]
        }  # fmt: skip

    def with_conventions(self, conventions: dict) -> Layer:
        """This layer with the switches of ``conventions`` that it honours set."""
        chosen = {c.option: conventions[switch] for switch, c in self.CONVENTIONS.items() if switch in conventions}
        return replace(self, **chosen) if chosen else self


class WeightedLayer(Layer):
    """A kind with weights of its own (conv, dense, conv_transpose, batchnorm): it counts in
    the numbering, makes Z{l} and has W{l}, and B{l} unless it goes without a bias."""

    letter: ClassVar[str] = "Z"
    weighted: ClassVar[bool] = True

    def named(self, letters: str) -> str:
        """This layer's matrix ``letters`` by the naming scheme: W → W2, mean → mean2."""
        return numbered(letters, self.place.number)

    # Kept once named: training asks for them at every step.
    @cached_property
    def W(self) -> str:
        return self.named("W")

    @cached_property
    def B(self) -> str:
        return self.named("B")

    @property
    def has_bias(self) -> bool:
        return True

    @property
    def params(self) -> tuple[str, ...]:
        return (self.W, self.B) if self.has_bias else (self.W,)
