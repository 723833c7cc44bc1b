"""One class per layer kind: everything cnntrace knows about it, in one place.

Each kind has the same small interface (see ``Layer``):

- ``infer``: check its weights and the shape it receives, and give the shape it makes;
- ``forward`` and ``backward`` on the general shapes of ops.py, pure, with a cache between;
- ``stages``: the names, symbols and equations of what it adds to the trace, each backward
  stage with its chain-rule step;
- ``explain``: the arithmetic of one entry of one of its stages;
- ``kinks``: what of its pattern (a ReLU mask, a pool window's winner) the gradient check
  must see unchanged;
- ``annotate``: its marks on the trace (pool winners, the ReLU count);
- ``mistakes``: the wrong turns a learner commonly takes at this layer, each as the values
  of the stages where it is made (``verify`` resumes the pass from them to name a mistake);
- ``CONVENTIONS``: the switches of the input's ``conventions`` key it honours, each an
  option of the layer (a max-pool's ``ties``, a ReLU's ``grad_at_zero``, a flatten's ``order``).

A layer sits at a ``Place`` in a network: the number of its weighted layer and the names of
what it reads and writes (X → Z1, Z1 → A1 …), which is all it needs to name its stages.
Add a layer kind by copying its nearest neighbour and adding it to ``KINDS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import numpy as np

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.ops import Pair, output_size
from cnntrace.terms import MINUS, Factor, Term, constant

#: Two numbers of a hand exercise this close are one number on paper (a ReLU input at 0,
#: a tie in a pool window): its entries have at most two decimals.
AMBIGUITY = 1e-9


def shape_text(dims, scalar: str = "scalar") -> str:
    """(3, 3) -> '3×3'; no dimensions -> ``scalar``."""
    return "×".join(str(n) for n in dims) if len(dims) else scalar


def symbol(name: str) -> str:
    """The derivation's symbol of a JSON name: dL_dW1 -> dL/dW1, dA1_dZ1 -> dA1/dZ1."""
    return name.replace("_d", "/d") if name.startswith("d") else name


def partial(name: str) -> str:
    """dL_dW1 -> ∂L/∂W1."""
    return "∂" + symbol(name).replace("/d", "/∂")[1:]


def pair_text(pair: Pair, joiner: str = "×") -> str:
    """(2, 2) -> '2'; (2, 3) -> '2×3'."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}{joiner}{pair[1]}"


# -- shapes as the user writes them ---------------------------------------------------------


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
class Given:
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
    """One named matrix of the trace: where it belongs and how it was made."""

    name: str  # the key in the JSON output, a valid identifier
    section: str  # "forward", "backward" or "update"
    symbol: str  # as the derivation writes it
    equation: str
    layout: Any  # Layout or Given
    rule: Rule | None = None


class Context(NamedTuple):
    """What a layer's stages need to know of the rest of the network."""

    batched: bool
    chain: tuple[str, ...]  # ∂-factors from L down to this layer's output: ("∂L/∂A2", "∂A2/∂Z2")
    closed: Any = None  # the loss's closed form of dL/d(this output), where it has one
    layouts: dict | None = None  # every matrix's layout, by name


class Annotation(NamedTuple):
    """A layer's marks on one of the stages: counts to mark cells with (pool wins), what a
    mark means, and lines of prose to show before and after the derivation."""

    marks: np.ndarray | None = None  # ints in the stage's user shape; 0 = no mark
    legend: str = ""  # "won its pool window: dL/dP1 flows back to this cell"
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    extra: Any = None  # a further matrix to show after the stage: (symbol, values, border, note)


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


class Convention(NamedTuple):
    """One switch of the input's ``conventions`` key: the layer option it sets."""

    option: str  # the layer's field
    choices: tuple  # the default first


def _grad(name: str) -> str:
    return f"dL_d{name}"


# -- the interface -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A layer kind with its options; ``place`` is set when the network is built."""

    type: ClassVar[str]
    letter: ClassVar[str]  # what its output is called: Z, A, P or F
    weighted: ClassVar[bool] = False
    activation: ClassVar[bool] = False
    pooling: ClassVar[bool] = False
    #: Whether its cache holds its output in training: then nothing may write over it.
    keeps_output: ClassVar[bool] = False
    #: Whether its output is a view of its input (flatten): a write to one is a write to both.
    views_input: ClassVar[bool] = False

    #: {switch of the ``conventions`` key: Convention} this kind honours
    CONVENTIONS: ClassVar[dict[str, Convention]] = {}

    place: Place = field(default=Place(), compare=False, repr=False)

    @property
    def input(self) -> str:
        return self.place.input

    @property
    def output(self) -> str:
        return self.place.output

    @property
    def params(self) -> tuple[str, ...]:
        """The names of its weights, in the order of the update."""
        return ()

    @cached_property
    def gradients(self) -> tuple[str, ...]:
        """The names of its weights' gradients: dL_dW1, dL_dB1."""
        return tuple(_grad(p) for p in self.params)

    @cached_property
    def input_gradient(self) -> str:
        """The name of the gradient it sends back: dL_dX, dL_dP1 …"""
        return _grad(self.input)

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

    def forward(self, x, weights: dict, trace: bool, overwrite: bool = False):
        """(output, cache) of this layer on ``x``; the cache holds what backward needs (in
        training, ``trace`` False, no more). ``overwrite``: ``x`` is the pass's own and
        nothing else holds it (see Network.overwritable), so the layer may write its output
        into it."""
        raise NotImplementedError

    def backward(self, d_out, cache, weights: dict, *, need_input: bool, trace: bool) -> dict:
        """The layer's backward stages in the trace's order, dL/d(input) last under its
        name (left out where ``need_input`` is False); in training (``trace`` False) only
        what the pass goes on with."""
        raise NotImplementedError

    def local_factor(self) -> str:
        """This layer's factor in a chain rule: ∂Z2/∂F."""
        return f"∂{self.output}/∂{self.input}"

    def stages(self, ctx: Context) -> tuple[list[Stage], list[Stage]]:
        """(forward stages, backward stages) of this layer."""
        raise NotImplementedError

    def kinks(self, cache) -> tuple[np.ndarray, ...]:
        """Its part of the activation pattern: where it is one smooth function."""
        return ()

    def annotate(self, trace) -> dict[str, Annotation]:
        return {}

    def ambiguities(self, x) -> dict[str, int]:
        """What of its input ``x`` (general shapes) makes an exercise ambiguous by hand:
        {"zero": how many ReLU inputs are exactly 0} or {"tie": how many pool windows have
        tied maxima}; {} for a layer kind where nothing can be."""
        return {}

    def explain(self, t, name: str, index: tuple[int, ...]):
        """(formula, terms, function, notes) of entry ``index`` (general) of stage ``name``."""
        raise NotImplementedError

    def resume(self, d_out, stages: dict, given: dict) -> dict:
        """Its backward stages with those in ``given`` taken as given, and what follows from
        them inside the layer recomputed (see Activation)."""
        return {name: given.get(name, value) for name, value in stages.items()}

    def mistakes(self, values: dict, weights: dict) -> list[Mistake]:
        """The common mistakes at this layer, from the correct pass's ``values`` (general
        shapes, X included) and the weights."""
        return []

    def conventions(self) -> dict:
        """The switches of ``conventions`` where this layer differs from the default."""
        return {
            switch: getattr(self, c.option) for switch, c in self.CONVENTIONS.items()
            if getattr(self, c.option) != c.choices[0]
        }  # fmt: skip

    def with_conventions(self, conventions: dict) -> Layer:
        """This layer with the switches of ``conventions`` that it honours set."""
        from dataclasses import replace

        chosen = {c.option: conventions[switch] for switch, c in self.CONVENTIONS.items() if switch in conventions}
        return replace(self, **chosen) if chosen else self


def _stage(name, section, equation, layout, rule=None) -> Stage:
    return Stage(name, section, symbol(name), equation, layout, rule)


def _full_chain(ctx: Context, *tail: str) -> str:
    return " · ".join((*ctx.chain, *tail))


# -- conv ----------------------------------------------------------------------------------------


def _size_option(value, key: str, minimum: int, what: str) -> Pair:
    """A whole number or [rows, cols] of whole numbers ≥ minimum, as a pair."""
    from cnntrace.problem import whole_number

    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise InputError(f"{what} is a number or [rows, cols], got {len(value)} numbers", key=key)
        return (whole_number(key, value[0], minimum), whole_number(key, value[1], minimum))
    n = whole_number(key, value, minimum)
    return (n, n)


@dataclass(frozen=True)
class Conv(Layer):
    """Z = conv(X, W) + B: cross-correlation of K filters over C channels (flip: a true
    convolution, the kernel rotated 180°). W (K, C, kh, kw), B (K,)."""

    type: ClassVar[str] = "conv"
    letter: ClassVar[str] = "Z"
    weighted: ClassVar[bool] = True

    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    flip: bool = False

    @property
    def W(self) -> str:
        return f"W{self.place.number}"

    @property
    def B(self) -> str:
        return f"B{self.place.number}"

    @property
    def params(self):
        return (self.W, self.B)

    def options(self):
        out = {"type": "conv"}
        if self.stride != (1, 1):
            out["stride"] = self.stride[0] if self.stride[0] == self.stride[1] else list(self.stride)
        if any(self.padding):
            out["padding"] = self.padding[0] if self.padding[0] == self.padding[1] else list(self.padding)
        if self.flip:
            out["flip"] = True
        return out if len(out) > 1 else "conv"

    def describe(self) -> str:
        text = f"conv (stride {pair_text(self.stride)}, padding {pair_text(self.padding)}"
        return text + (", flipped kernel)" if self.flip else ")")

    def infer(self, layout, given):
        from cnntrace.problem import vector

        W, B = given[self.W], given[self.B]
        if layout.form != "map":
            raise InputError(
                f"a conv layer needs maps (C×H×W per image), but it gets {layout.form}s of "
                f"{shape_text(layout.shape)}; a conv comes before the flatten",
                key=self.place.key(),
            )
        C, H, Wd = layout.shape
        if W.ndim not in (2, 3, 4) or 0 in W.shape:
            raise InputError(
                f"expected a kh×kw filter, K×kh×kw filters or K×C×kh×kw (PyTorch's order), "
                f"got shape {shape_text(W.shape)}",
                key=self.W,
            )
        if W.ndim < 4 and C != 1:
            raise InputError(
                f"the layer gets {C} channels, so W is K×{C}×kh×kw; got shape {shape_text(W.shape)}",
                key=self.W,
            )
        if W.ndim == 4 and W.shape[1] != C:
            what = "X has" if self.place.first else f"{self.input} has"
            raise InputError(
                f"W is K×C×kh×kw with C = {W.shape[1]} channels, but {what} {C}",
                key=self.W,
            )
        K = W.shape[0] if W.ndim >= 3 else 1
        kh, kw = W.shape[-2:]
        Hp, Wp = H + 2 * self.padding[0], Wd + 2 * self.padding[1]
        if kh > Hp or kw > Wp:
            pad = pair_text(self.padding)
            raise InputError(
                f"the {kh}×{kw} kernel is larger than the {Hp}×{Wp} padded "
                f"{'image' if self.place.first else 'input'} "
                f"({self.input} is {H}×{Wd}, padding {pad})",
                key=self.W,
            )
        weights = {
            self.W: W.reshape(K, C, kh, kw),
            self.B: vector(self.B, B, K, "bias" if K == 1 else "biases, one per filter").copy(),
        }
        out = (K, output_size(Hp, kh, self.stride[0]), output_size(Wp, kw, self.stride[1]))
        return Layout(out, shown=W.ndim >= 3), weights

    def kernel(self, weights):
        W = weights[self.W]
        return W[:, :, ::-1, ::-1] if self.flip else W

    def forward(self, x, weights, trace, overwrite=False):
        return ops.conv2d_forward(x, self.kernel(weights), weights[self.B], self.stride, self.padding)

    def backward(self, d_out, cache, weights, *, need_input, trace):
        dL_dX, dL_dW, dL_dB = ops.conv2d_backward(d_out, cache, need_dL_dX=need_input)
        if self.flip:
            dL_dW = dL_dW[:, :, ::-1, ::-1]
        out = {_grad(self.B): dL_dB, _grad(self.W): dL_dW}
        if need_input:
            out[self.input_gradient] = dL_dX
        return out

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        kernel = f"rot180({W})" if self.flip else W
        padded = any(self.padding)
        p = pair_text(self.padding, " by ")
        xs = f"pad({x})" if padded else x
        forward = [_stage(z, "forward", f"conv({x}, {kernel}) + {B}", None)]
        d_z = f"∂L/∂{z}"
        chain = _full_chain(ctx, f"∂{z}/∂")
        dW_simplified = f"conv({xs}, {d_z})"
        dW_note = f"each entry of dL/d{W} is a sum of products of {x} and dL/d{z} (see `cnntrace explain`)"
        if self.flip:
            dW_simplified = f"rot180(conv({xs}, {d_z}))"
            dW_note += "; the kernel is flipped in the pass, so its gradient is flipped back"
        if padded:
            dW_note += f"; pad({x}) is {x} inside a border of zeros {p} wide, which add nothing"
        dX_simplified = f"conv_transpose({d_z}, {kernel})" + (" without its border" if padded else "")
        dX_note = f"each dL/d{z} entry is sent back to the cells of {x} its window covered, times {W}"
        if padded:
            dX_note += (f"; the windows also covered the padding, a border {p} wide: "
                        f"its share, the border of ∂L/∂pad({x}) below, is dropped")  # fmt: skip
        backward = [
            _stage(_grad(B), "backward", f"ΣdL/d{z}", None,
                   Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {d_z}", (_grad(z),),
                        f"∂{z}/∂{B} = 1 at every position of {z}")),
            _stage(_grad(W), "backward", f"conv({x}, dL/d{z})" if not self.flip else f"rot180(conv({x}, dL/d{z}))",
                   None, Rule(f"∂L/∂{W} = {chain}{W}", dW_simplified, (x, _grad(z)), dW_note)),
            _stage(_grad(x), "backward", f"conv_transpose(dL/d{z}, {kernel})", None,
                   Rule(f"∂L/∂{x} = {chain}{x}", dX_simplified, (_grad(z), W), dX_note)),
        ]  # fmt: skip
        return forward, backward

    def annotate(self, trace):
        if not any(self.padding):
            return {}
        t = trace.general_pass()
        from cnntrace.ops import ConvCache, _pad

        X_padded = _pad(t.value(self.input), self.padding)
        cache = ConvCache(X_padded, self.kernel(t.weights), self.stride, self.padding)
        values = ops.padded_input_gradient(t.value(_grad(self.output)), cache)
        ph, pw = self.padding
        H, W = X_padded.shape[2] - 2 * ph, X_padded.shape[3] - 2 * pw
        outside = (
            f"in italics, the padding: rows −{ph}…−1 and {H}…{H + ph - 1}, "
            f"columns −{pw}…−1 and {W}…{W + pw - 1}"
        )
        if not ph:
            outside = f"in italics, the padding: columns −{pw}…−1 and {W}…{W + pw - 1}"
        elif not pw:
            outside = f"in italics, the padding: rows −{ph}…−1 and {H}…{H + ph - 1}"
        layout = trace.stage(_grad(self.input)).layout
        shown = Layout((X_padded.shape[1], *X_padded.shape[2:]), layout.shown, layout.channel)
        presented = values.reshape(shown.user_shape(trace.problem.batched, values.shape[0]))
        extra = (f"∂L/∂pad({self.input})", presented, shown, self.padding, outside)
        return {_grad(self.input): Annotation(extra=extra)}

    def mistakes(self, values, weights):
        x, z, W = self.input, self.output, self.W
        other = "cross-correlation" if self.flip else "a true convolution (kernel rotated 180°)"
        flipped = {**weights, W: weights[W][:, :, ::-1, ::-1]}
        Z, _ = ops.conv2d_forward(values[x], self.kernel(flipped), weights[self.B], self.stride, self.padding)
        return [
            Mistake("kernel_flipped", f"{z} computed as {other}: the kernel {W} flipped", {z: Z}),
            Mistake("kernel_flipped", f"dL/d{W} flipped 180°, as {other} would give it",
                    {_grad(W): values[_grad(W)][:, :, ::-1, ::-1]}),
        ]  # fmt: skip

    def _offset(self, i: int, j: int, kh: int, kw: int) -> tuple[int, int]:
        """The kernel entry that meets window offset (i, j): itself, or rotated 180°."""
        return (kh - 1 - i, kw - 1 - j) if self.flip else (i, j)

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        K, C, kh, kw = t.value(W).shape
        (sh, sw), (ph, pw) = self.stride, self.padding
        s, p = pair_text(self.stride), pair_text(self.padding)
        channels = C > 1
        w_index = f"{W}[c,i,j]" if channels else f"{W}[i,j]"
        if self.flip:
            w_index = f"{W}[c,kh−1−i,kw−1−j]" if channels else f"{W}[kh−1−i,kw−1−j]"
        padding_note = f"cells outside {x} are the zero padding"

        def weight(k, c, i, j):
            return t.factor(W, (k, c, *self._offset(i, j, kh, kw)))

        if name == z:
            m, k, h, w = index
            terms = [Term((t.factor(B, (k,)),))]
            for c in range(C):
                for i in range(kh):
                    for j in range(kw):
                        cell = t.padded(x, m, c, h * sh + i - ph, w * sw + j - pw)
                        terms.append(Term((weight(k, c, i, j), cell), "padding" if cell.symbol != x else ""))
            rows = f"{h * sh - ph}..{h * sh - ph + kh - 1}"
            cols = f"{w * sw - pw}..{w * sw - pw + kw - 1}"
            notes = [f"h = {h}, w = {w}, stride s = {s}, padding p = {p}: "
                     f"the window over {x} rows {rows}, columns {cols}"]  # fmt: skip
            if any(term.note == "padding" for term in terms):
                notes.append(padding_note)
            if self.flip:
                notes.append(f"a true convolution: the kernel is rotated 180° ({W}[kh−1−i,kw−1−j])")
            over = "c,i,j" if channels else "i,j"
            cell = f"{x}[c, h·s + i − p, w·s + j − p]" if channels else f"{x}[h·s + i − p, w·s + j − p]"
            return f"{B} + Σ_{over} {w_index}·{cell}", terms, None, notes
        if name == _grad(B):
            (k,) = index
            M, _, Ho, Wo = t.value(z).shape
            terms = [Term((t.factor(_grad(z), (m, k, h, w)),))
                     for m in range(M) for h in range(Ho) for w in range(Wo)]  # fmt: skip
            return f"Σ_h,w dL/d{z}[h,w]", terms, None, []
        if name == _grad(W):
            k, c, i, j = index
            i, j = self._offset(i, j, kh, kw)  # the window offset this entry met
            M, _, Ho, Wo = t.value(z).shape
            terms = []
            for m in range(M):
                for h in range(Ho):
                    for w in range(Wo):
                        cell = t.padded(x, m, c, h * sh + i - ph, w * sw + j - pw)
                        terms.append(Term((cell, t.factor(_grad(z), (m, k, h, w))),
                                          "padding" if cell.symbol != x else ""))  # fmt: skip
            notes = [f"i = {i}, j = {j}, stride s = {s}, padding p = {p}"]
            if any(term.note for term in terms):
                notes.append(padding_note)
            if self.flip:
                notes.append(f"the kernel is flipped: this entry met window offset ({i}, {j})")
            cell = f"{x}[c, h·s + i − p, w·s + j − p]" if channels else f"{x}[h·s + i − p, w·s + j − p]"
            return f"Σ_h,w {cell}·dL/d{z}[h,w]  (conv({x}, dL/d{z}))", terms, None, notes
        # dL/d(input)
        m, c, r, col = index
        terms = []
        row, column = r + ph, col + pw  # in the padded input
        Ho, Wo = t.value(z).shape[2:]
        for k in range(K):
            for h in range(Ho):
                for w in range(Wo):
                    i, j = row - h * sh, column - w * sw
                    if 0 <= i < kh and 0 <= j < kw:
                        terms.append(Term((t.factor(_grad(z), (m, k, h, w)), weight(k, c, i, j))))
        notes = [f"r = {r}, c = {col}, stride s = {s}, padding p = {p}"]
        if any(self.padding):
            what = "image" if self.place.first else "input"
            notes.append(f"{x}[{r},{col}] is cell [{row},{column}] of the {what} padded by {p}")
        if not terms:
            notes.append(f"no window of the convolution covers {x}[{r},{col}] (stride {s}): 0")
        formula = (f"Σ_k,h,w dL/d{z}[h,w]·{W}[r + p − h·s, c + p − w·s]  "
                   f"(conv_transpose(dL/d{z}, {W}))")  # fmt: skip
        return formula, terms, None, notes


# -- dense ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense(Layer):
    """Z = F·W + B. W (n_in, n_out), B (n_out,)."""

    type: ClassVar[str] = "dense"
    letter: ClassVar[str] = "Z"
    weighted: ClassVar[bool] = True

    _one_output: bool = False  # the reference form's single sigmoid neuron: W2 a list

    @property
    def W(self) -> str:
        return f"W{self.place.number}"

    @property
    def B(self) -> str:
        return f"B{self.place.number}"

    @property
    def params(self):
        return (self.W, self.B)

    def infer(self, layout, given):
        from cnntrace.problem import vector

        W, B = given[self.W], given[self.B]
        if layout.form != "vector":
            raise InputError(
                f"a dense layer needs vectors, but it gets maps of {shape_text(layout.shape)}; "
                "put a flatten before it",
                key=self.place.key(),
            )
        (n,) = layout.shape
        if W.ndim == 2 and W.shape[0] == n and W.shape[1] > 1 and not self._one_output:
            n_out, W_general = W.shape[1], W
        elif W.ndim <= 2 and W.size == n and (W.ndim < 2 or 1 in W.shape):
            n_out, W_general = 1, W.reshape(n, 1)
        elif W.ndim == 2 and W.shape[1] > 1 and not self._one_output:
            raise InputError(f"expected n_in×n_out with n_in = {n}, one row per entry of "
                             f"{self.input}; found shape {shape_text(W.shape)}", key=self.W)  # fmt: skip
        else:
            per_entry = f"one per entry of {self.input}"
            if layout.origin:
                C, H, Wd = layout.origin
                per_entry += f" ({C} filter{'s' * (C > 1)} × {H}×{Wd})"
            found = f"{W.size} entries" if W.ndim else "a number"
            raise InputError(
                f"expected {n} weight{'s' * (n > 1)}, {per_entry}, found {found} "
                f"(shape {shape_text(W.shape)})",
                key=self.W,
            )
        weights = {
            self.W: W_general,
            self.B: vector(self.B, B, n_out, "number" if n_out == 1 else "biases, one per output").copy(),
        }
        return Layout((n_out,), shown=n_out > 1), weights

    def forward(self, x, weights, trace, overwrite=False):
        return ops.dense_forward(x, weights[self.W], weights[self.B]), x

    def backward(self, d_out, cache, weights, *, need_input, trace):
        dL_dF, dL_dW, dL_dB = ops.dense_backward(d_out, cache, weights[self.W], need_input)
        out = {_grad(self.W): dL_dW, _grad(self.B): dL_dB}
        if need_input:
            out[self.input_gradient] = dL_dF
        return out

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        forward = [_stage(z, "forward", f"{x}·{W} + {B}", None)]
        chain = _full_chain(ctx, f"∂{z}/∂")
        if ctx.closed is None:
            dW = Rule(f"∂L/∂{W} = {chain}{W}", f"{x}ᵀ·∂L/∂{z}", (x, _grad(z)), f"∂{z}/∂{W} = {x}")
            dB = Rule(f"∂L/∂{B} = {chain}{B}", f"Σ ∂L/∂{z}", (_grad(z),), f"∂{z}/∂{B} = 1")
        else:
            text, factor, divided = ctx.closed
            dW = Rule(f"∂L/∂{W} = {chain}{W}", f"{x}ᵀ·{text}" if divided else f"({text})·{x}ᵀ",
                      (factor, x), f"∂{z}/∂{W} = {x}")  # fmt: skip
            dB = Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {text}" if divided else f"({text})·1",
                      (factor,), f"∂{z}/∂{B} = 1")  # fmt: skip
        backward = [
            _stage(_grad(W), "backward", f"{x}ᵀ·dL/d{z}", None, dW),
            _stage(_grad(B), "backward", f"ΣdL/d{z}", None, dB),
            _stage(_grad(x), "backward", f"dL/d{z}·{W}ᵀ", None,
                   Rule(f"∂L/∂{x} = {chain}{x}", f"∂L/∂{z}·{W}ᵀ", (_grad(z), W), f"∂{z}/∂{x} = {W}ᵀ")),
        ]  # fmt: skip
        return forward, backward

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        n_in, n_out = t.value(W).shape
        one = n_out == 1
        if name == z:
            m, o = index
            terms = [Term((t.factor(x, (m, c)), t.factor(W, (c, o)))) for c in range(n_in)]
            terms.append(Term((t.factor(B, (o,)),)))
            if one:
                return f"Σ_c {x}[c]·{W}[c] + {B}", terms, None, []
            return f"Σ_c {x}[c]·{W}[c,o] + {B}[o]", terms, None, []
        M = t.value(x).shape[0]
        if name == _grad(W):
            c, o = index
            terms = [Term((t.factor(x, (m, c)), t.factor(_grad(z), (m, o)))) for m in range(M)]
            return f"Σ_m {x}[m,c]·dL/d{z}[m]  ({x}ᵀ·dL/d{z})", terms, None, []
        if name == _grad(B):
            (o,) = index
            terms = [Term((t.factor(_grad(z), (m, o)),)) for m in range(M)]
            return f"Σ_m dL/d{z}[m]", terms, None, []
        m, c = index
        terms = [Term((t.factor(_grad(z), (m, o)), t.factor(W, (c, o)))) for o in range(n_out)]
        return (f"dL/d{z}·{W}[c]" if one else f"Σ_o dL/d{z}[o]·{W}[c,o]"), terms, None, []


# -- flatten -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flatten(Layer):
    """F = flatten(P): each image's maps in row-major order, channel, then row, then column."""

    type: ClassVar[str] = "flatten"
    letter: ClassVar[str] = "F"
    CONVENTIONS: ClassVar[dict[str, Convention]] = {"flatten": Convention("order", ("chw", "hwc"))}

    views_input: ClassVar[bool] = True  # in row-major order, F is P reshaped

    order: str = "chw"  # "hwc": channels last, as NHWC code flattens

    def options(self):
        return "flatten" if self.order == "chw" else {"type": "flatten", "order": self.order}

    def describe(self):
        return "flatten" if self.order == "chw" else f"flatten ({self.order}, channels last)"

    def infer(self, layout, given):
        if layout.form != "map":
            raise InputError("flatten needs maps (it comes after the last conv block), and "
                             f"it gets {layout.form}s", key=self.place.key())  # fmt: skip
        return Layout((math.prod(layout.shape),), origin=layout.shape), {}

    _ORDERS: ClassVar[dict] = {
        "chw": (ops.flatten_forward, ops.flatten_backward, "row-major order (channel, row, column)"),
        "hwc": (ops.flatten_channels_last_forward, ops.flatten_channels_last_backward,
                "channels last (row, column, channel), as NHWC code flattens"),
        "column-major": (ops.flatten_column_major_forward, ops.flatten_column_major_backward,
                         "column-major order (column, row, channel), as Fortran or MATLAB flattens"),
    }  # fmt: skip

    def forward(self, x, weights, trace, overwrite=False):
        return self._ORDERS[self.order][0](x), x.shape

    def backward(self, d_out, cache, weights, *, need_input, trace):
        return {self.input_gradient: self._ORDERS[self.order][1](d_out, cache)} if need_input else {}

    def mistakes(self, values, weights):
        x, f = self.input, self.output
        out = []
        for order, (forward, backward, words) in self._ORDERS.items():
            if order == self.order:
                continue
            switch = ("flatten", order) if order in self.CONVENTIONS["flatten"].choices else None
            out.append(Mistake("flatten_order", f"{f} flattened in {words}", {f: forward(values[x])}, switch))
            out.append(Mistake("flatten_order", f"dL/d{x} put back from dL/d{f} in {words}",
                               {_grad(x): backward(values[_grad(f)], values[x].shape)}, switch))  # fmt: skip
        return out

    def stages(self, ctx):
        x, f = self.input, self.output
        return [_stage(f, "forward", f"flatten({x})", None)], [
            _stage(_grad(x), "backward", f"reshape(dL/d{f})", None,
                   Rule(f"∂L/∂{x} = ∂L/∂{f} · ∂{f}/∂{x}", f"reshape(∂L/∂{f})", (_grad(f),),
                        f"flatten only moves entries: each goes back to its place in {x}")),
        ]  # fmt: skip

    def explain(self, t, name, index):
        x, f = self.input, self.output
        _, C, H, W = t.value(x).shape
        last = self.order == "hwc"
        words = "channels last (row, column, filter)" if last else "row-major order (filter, row, column)"
        if name == f:
            m, n = index
            if last:
                h, rest = divmod(n, W * C)
                w, c = divmod(rest, C)
            else:
                c, rest = divmod(n, H * W)
                h, w = divmod(rest, W)
            entry = t.factor(x, (m, c, h, w))
            return (f"{x} in {words}", [Term((entry,))], None,
                    [f"{f} entry {n} is {entry.label}"])  # fmt: skip
        m, c, h, w = index
        n = (h * W + w) * C + c if last else (c * H + h) * W + w
        words = "channels last" if last else "row-major order"
        return f"dL/d{f} at the same place in {words}", [Term((t.factor(_grad(f), (m, n)),))], None, []


# -- pooling -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool(Layer):
    """The options every pooling has: a size[0]×size[1] window moved by ``stride``."""

    letter: ClassVar[str] = "P"
    pooling: ClassVar[bool] = True
    name: ClassVar[str]

    size: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)

    def options(self):
        out = {"type": self.type, "size": self.size[0] if self.size[0] == self.size[1] else list(self.size)}
        if self.stride != self.size:
            out["stride"] = self.stride[0] if self.stride[0] == self.stride[1] else list(self.stride)
        if any(self.padding):
            out["padding"] = self.padding[0] if self.padding[0] == self.padding[1] else list(self.padding)
        return out

    def describe(self):
        text = f"{self.type} {self.size[0]}×{self.size[1]} with stride {pair_text(self.stride)}"
        return text + (f", padding {pair_text(self.padding)}" if any(self.padding) else "")

    def infer(self, layout, given):
        if layout.form != "map":
            raise InputError(f"{self.type} needs maps, and it gets {layout.form}s; pool before "
                             "the flatten", key=self.place.key())  # fmt: skip
        C, H, W = layout.shape
        for axis, what in ((0, "rows"), (1, "columns")):
            if 2 * self.padding[axis] > self.size[axis]:
                raise InputError(
                    f"padding {self.padding[axis]} is more than half the window "
                    f"({self.size[axis]} {what})",
                    key=self.place.key("padding"),
                )
        Hp, Wp = H + 2 * self.padding[0], W + 2 * self.padding[1]
        if self.size[0] > Hp or self.size[1] > Wp:
            window = f"{self.size[0]}×{self.size[1]}"
            raise InputError(
                f"the {_window_text(window)} pool window is larger than {self.input} "
                f"({shape_text((Hp, Wp))})",
                key=self.place.key("size"),
            )
        out = (C, output_size(Hp, self.size[0], self.stride[0]), output_size(Wp, self.size[1], self.stride[1]))
        return Layout(out, layout.shown, layout.channel), {}

    def window_cells(self, h: int, w: int):
        """The (row, col) cells of window (h, w), in row-major order, in the input's
        coordinates (padding cells outside 0..H-1)."""
        (sh, sw), (ph, pw) = self.stride, self.padding
        return [(h * sh + a - ph, w * sw + b - pw) for a in range(self.size[0]) for b in range(self.size[1])]


    def windows_over(self, r: int, col: int, Hp: int, Wp: int) -> list[tuple[int, int]]:
        """The windows (h, w) of an Hp×Wp output that contain cell (r, col) of the input, in
        row-major order; only those whose span can reach it are looked at."""
        (sh, sw), (ph, pw), (kh, kw) = self.stride, self.padding, self.size
        rows = range(max(0, -(-(r + ph - kh + 1) // sh)), min(Hp - 1, (r + ph) // sh) + 1)
        cols = range(max(0, -(-(col + pw - kw + 1) // sw)), min(Wp - 1, (col + pw) // sw) + 1)
        return [(h, w) for h in rows for w in cols if (r, col) in self.window_cells(h, w)]


def _window_text(window: str) -> str:
    from cnntrace.problem import number_text

    rows, _, cols = window.partition("×")
    return f"{number_text(int(rows))}×{number_text(int(cols))}"


@dataclass(frozen=True)
class MaxPool(Pool):
    """P = MaxPool(A): the largest entry of each window; ties go to the first in row-major
    order. Padding is −∞."""

    type: ClassVar[str] = "maxpool"
    CONVENTIONS: ClassVar[dict[str, Convention]] = {"pool_ties": Convention("ties", ("first", "all", "split"))}

    ties: str = "first"  # "all": every tied maximum gets the gradient; "split": shared equally

    def options(self):
        out = super().options()
        return out if self.ties == "first" else {**out, "ties": self.ties}

    def describe(self):
        return super().describe() + (f", ties {self.ties}" if self.ties != "first" else "")

    def forward(self, x, weights, trace, overwrite=False):
        P, cache = ops.maxpool_forward(x, self.size, self.stride, self.padding)
        # Another tie rule needs the input to find the tied cells.
        return P, (cache if self.ties == "first" else TiedPool(cache, x))

    def backward(self, d_out, cache, weights, *, need_input, trace):
        if not need_input:
            return {}
        if self.ties == "first":
            return {self.input_gradient: ops.maxpool_backward(d_out, cache)}
        return {self.input_gradient: ops.maxpool_backward_tied(d_out, cache.A, cache.pool, self.ties)}

    _TIE_MISTAKES: ClassVar[dict] = {
        "first": ("pool_first_tie", "only the first tied maximum (row-major) got the gradient"),
        "all": ("pool_all_ties", "the whole gradient went to every tied maximum of a window"),
        "split": ("pool_split_ties", "the gradient was shared equally among a window's tied maxima"),
    }

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[_grad(p)]
        _, cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
        out = []
        for rule, (id_, words) in self._TIE_MISTAKES.items():
            if rule != self.ties:
                routed = ops.maxpool_backward(d, cache) if rule == "first" else ops.maxpool_backward_tied(d, A, cache, rule)
                out.append(Mistake(id_, f"dL/d{a}: {words}", {_grad(a): routed}, ("pool_ties", rule)))
        n = self.size[0] * self.size[1]
        out.append(Mistake("pool_spread", f"dL/d{a}: dL/d{p} spread over the whole window (1/{n} to each "
                           "cell, as avg-pool would) instead of sent to its maximum",
                           {_grad(a): ops.avgpool_backward(d, cache)}))  # fmt: skip
        return out

    def stages(self, ctx):
        a, p = self.input, self.output
        return [_stage(p, "forward", f"MaxPool({a})", None)], [
            _stage(_grad(a), "backward", f"dL/d{p} routed to each window's max", None,
                   Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"∂L/∂{p} at the max of each window, 0 elsewhere",
                        (_grad(p),),
                        f"dL/d{p} goes to the cell of {a} that won each window (marked * in {a}), "
                        "0 to the others" + ("" if self.ties == "first" else f"; in a tie, {self._tie_words()}"))),
        ]  # fmt: skip

    def kinks(self, cache):
        return ((cache.pool if isinstance(cache, TiedPool) else cache).winner,)

    def ambiguities(self, x):
        # A window ties when its maximum occurs more than once; the tolerance sees 0.1 + 0.2
        # and 0.3 as the tie they are on paper.
        P, _ = self.forward(x, {}, False)
        x_padded = np.pad(x, ((0, 0), (0, 0), *((p, p) for p in self.padding)), constant_values=-np.inf)
        at_max = np.zeros(P.shape, dtype=int)
        for _, _, rows, cols in ops._offsets(self.size, P.shape[2:], self.stride):
            at_max += np.abs(x_padded[:, :, rows, cols] - P) <= AMBIGUITY
        return {"tie": int(np.count_nonzero(at_max > 1))}

    def wins(self, trace) -> np.ndarray:
        """How many windows each cell of the input won (under ``ties`` all and split, each
        tied maximum wins), in the input's user shape."""
        t = trace.general_pass()
        A = t.value(self.input)
        _, cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
        if self.ties == "first":
            won = ops.pool_wins(cache)
        else:
            won = ops.maxpool_backward_tied(np.ones(cache.winner.shape), A, cache, "all")
        shape = np.shape(trace.problem.X if self.place.first else trace[self.input])  # X is no stage
        return won.astype(int).reshape(shape)

    def annotate(self, trace):
        wins = self.wins(trace)
        if not wins.any():
            return {}
        legend = f"won its pool window: dL/d{self.output} flows back to this cell"
        return {self.input: Annotation(wins, legend), _grad(self.input): Annotation(wins)}

    def _tie_words(self) -> str:
        return {"first": "the first in row-major order wins",
                "all": "every tied cell gets the whole gradient (conventions: pool_ties all)",
                "split": "the gradient is shared equally among them (conventions: pool_ties split)"}[self.ties]  # fmt: skip

    def winner(self, t, m, c, h, w):
        """The first maximum of window (h, w) in row-major order, as ops.maxpool_forward
        picks it; padding cells (−∞) never win."""
        A = t.value(self.input)
        H, W = A.shape[2:]
        best = None
        for r, col in self.window_cells(h, w):
            if 0 <= r < H and 0 <= col < W and (best is None or A[m, c, r, col] > A[m, c, best[0], best[1]]):
                best = (r, col)
        return best

    def tied(self, t, m, c, h, w) -> list:
        """Every cell of window (h, w) that holds its maximum, in row-major order."""
        A = t.value(self.input)
        H, W = A.shape[2:]
        inside = [(r, col) for r, col in self.window_cells(h, w) if 0 <= r < H and 0 <= col < W]
        top = max(A[m, c, r, col] for r, col in inside)
        return [(r, col) for r, col in inside if A[m, c, r, col] == top]

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        pool, ps = pair_text(self.size), pair_text(self.stride)
        if name == p:
            m, c, h, w = index
            cells = self.window_cells(h, w)
            inside = [(r, col) for r, col in cells if 0 <= r < H and 0 <= col < W]
            terms = [Term((t.factor(a, (m, c, r, col)),)) for r, col in inside]
            r, col = self.winner(t, m, c, h, w)
            won = t.factor(a, (m, c, r, col))
            ties = sum(1 for term in terms if term.value == won.value)
            notes = [
                f"window rows {cells[0][0]}..{cells[-1][0]}, columns {cells[0][1]}..{cells[-1][1]} "
                f"(pool {pool}, stride {ps})",
                f"the max is {won.label}" + (f"; {ties} cells tie, {self._tie_words()}" if ties > 1 else ""),
            ]
            if len(inside) < len(cells):
                notes.append("cells outside the input are the padding, −∞, and never win")
            return f"max over the pool window of {a}", terms, "max", notes
        m, c, r, col = index
        terms, notes, windows = [], [], 0
        Hp, Wp = t.value(p).shape[2:]
        for h, w in self.windows_over(r, col, Hp, Wp):
            windows += 1
            d = t.factor(_grad(p), (m, c, h, w))
            winner = self.winner(t, m, c, h, w)
            tied = self.tied(t, m, c, h, w)
            if self.ties != "first" and (r, col) in tied:
                if self.ties == "split" and len(tied) > 1:
                    share = constant(f"1/{len(tied)}", 1.0 / len(tied))
                    terms.append(Term((share, d), f"tied for window {d.label}, shared by {len(tied)}"))
                else:
                    terms.append(Term((d,), f"won window {d.label}" + (" (a tie: every tied cell gets it)" if len(tied) > 1 else "")))
            elif winner == (r, col) and self.ties == "first":
                terms.append(Term((d,), f"won window {d.label}"))
            else:
                by = t.factor(a, (m, c, *winner))
                notes.append(f"window {d.label[len(symbol(_grad(p))):]}: won by {by.label}, not this cell")
        here = t.factor(a, (m, c, r, col)).label
        if not windows:
            notes.append(f"{here} lies in no pool window (pool {pool}, stride {ps}): 0")
        elif not terms:
            notes.append(f"{here} won none of the {windows} window(s) that contain it: 0")
        return f"Σ over the pool windows this cell won of dL/d{p}[window]", terms, None, notes


@dataclass(frozen=True)
class AvgPool(Pool):
    """P = AvgPool(A): the mean of each window, padding zeros counted in it."""

    type: ClassVar[str] = "avgpool"

    def forward(self, x, weights, trace, overwrite=False):
        return ops.avgpool_forward(x, self.size, self.stride, self.padding)

    def backward(self, d_out, cache, weights, *, need_input, trace):
        return {self.input_gradient: ops.avgpool_backward(d_out, cache)} if need_input else {}

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[_grad(p)]
        n = self.size[0] * self.size[1]
        _, cache = ops.avgpool_forward(A, self.size, self.stride, self.padding)
        _, max_cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
        return [
            Mistake("avgpool_undivided", f"dL/d{a}: dL/d{p} copied to every cell of its window, "
                    f"without the 1/{n}", {_grad(a): ops.avgpool_backward(d, cache) * n}),
            Mistake("avgpool_as_max", f"dL/d{a}: dL/d{p} sent to the window's maximum, as max-pool "
                    "would, instead of spread evenly", {_grad(a): ops.maxpool_backward(d, max_cache)}),
        ]  # fmt: skip

    def stages(self, ctx):
        a, p = self.input, self.output
        n = self.size[0] * self.size[1]
        return [_stage(p, "forward", f"AvgPool({a})", None)], [
            _stage(_grad(a), "backward", f"dL/d{p} spread evenly over each window", None,
                   Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"Σ over the windows of each cell of ∂L/∂{p}/{n}",
                        (_grad(p),),
                        f"every cell of a window gets 1/{n} of its dL/d{p}; a cell in several "
                        "windows gets the sum")),
        ]  # fmt: skip

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        n = self.size[0] * self.size[1]
        share = constant(f"1/{n}", 1.0 / n)
        if name == p:
            m, c, h, w = index
            cells = self.window_cells(h, w)
            terms = [Term((share, t.padded(a, m, c, r, col))) for r, col in cells]
            notes = [f"window rows {cells[0][0]}..{cells[-1][0]}, columns {cells[0][1]}..{cells[-1][1]} "
                     f"(pool {pair_text(self.size)}, stride {pair_text(self.stride)})"]  # fmt: skip
            if any(term.factors[1].symbol != a for term in terms):
                notes.append("cells outside the input are the zero padding, counted in the mean")
            return f"(1/{n})·Σ over the pool window of {a}", terms, None, notes
        m, c, r, col = index
        Hp, Wp = t.value(p).shape[2:]
        terms = [
            Term((share, t.factor(_grad(p), (m, c, h, w))))
            for h, w in self.windows_over(r, col, Hp, Wp)
        ]  # fmt: skip
        notes = [] if terms else [f"{a}[{r},{col}] lies in no pool window: 0"]
        return f"Σ over the windows that contain this cell of dL/d{p}[window]/{n}", terms, None, notes


class TiedPool(NamedTuple):
    """A max-pool's cache under another tie rule: ops' cache and the pool's input."""

    pool: Any  # ops.PoolCache
    A: np.ndarray


# -- activations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation(Layer):
    """A = f(Z) element-wise; its local derivative dA/dZ is a stage of its own."""

    letter: ClassVar[str] = "A"
    activation: ClassVar[bool] = True
    keeps_output: ClassVar[bool] = True  # (Z, A): tanh′ and σ′ are read from A
    function: ClassVar[str]  # as equations write it: ReLU, σ, tanh

    @property
    def local(self) -> str:
        """The name of its local derivative: dA1_dZ1 (dA1_dP1 after a pooling)."""
        return f"d{self.output}_d{self.input}"

    def value(self, z):
        raise NotImplementedError

    def derivative(self, z, a):
        """dA/dZ, element-wise, from its input and output."""
        raise NotImplementedError

    def derivative_text(self) -> tuple[str, str, str, tuple[str, ...], str]:
        """(equation, chain's right side, simplified, factors, note) of dA/dZ."""
        raise NotImplementedError

    def forward(self, x, weights, trace, overwrite=False):
        a = self.value(x)
        return a, (x, a)

    def backward(self, d_out, cache, weights, *, need_input, trace):
        z, a = cache
        local = self.derivative(z, a)
        out = {self.local: local} if trace else {}
        if need_input:
            out[self.input_gradient] = d_out * local
        return out

    def through(self, d_out, local):
        """dL/dZ from dL/dA and dA/dZ: element-wise (softmax: the Jacobian's transpose)."""
        return d_out * local

    def resume(self, d_out, stages, given):
        out = super().resume(d_out, stages, given)
        grad = self.input_gradient
        if self.local in given and grad in out and grad not in given:
            out[grad] = self.through(d_out, given[self.local])
        return out

    def _local_mistake(self, values, id_: str, message: str, local) -> Mistake:
        """The local derivative dA/dZ taken as ``local``, and dL/dZ from it."""
        return Mistake(id_, message, {self.local: local, self.input_gradient: self.through(values[_grad(self.output)], local)})

    def local_stage(self, ctx) -> Stage:
        z, a = self.input, self.output
        equation, chain, simplified, factors, note = self.derivative_text()
        return _stage(self.local, "backward", equation, None,
                      Rule(f"∂{a}/∂{z} = {chain}", simplified, factors, note))  # fmt: skip

    def stages(self, ctx):
        z, a = self.input, self.output
        forward = [_stage(a, "forward", f"{self.function}({z})", None)]
        backward = [
            self.local_stage(ctx),
            _stage(_grad(z), "backward", f"dL/d{a} ⊙ d{a}/d{z}", None,
                   Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", f"∂L/∂{a} ⊙ {self.function}′({z})",
                        (_grad(a), self.local), self.flow_note())),
        ]  # fmt: skip
        return forward, backward

    def flow_note(self) -> str:
        return ""

    def explain(self, t, name, index):
        z, a = self.input, self.output
        if name == a:
            return self.explain_value(t, t.factor(z, index))
        if name == self.local:
            return self.explain_local(t, index)
        terms = [Term((t.factor(_grad(a), index), t.factor(self.local, index)))]
        return f"dL/d{a}[h,w]·d{a}/d{z}[h,w]", terms, None, []

    def explain_value(self, t, z: Factor):
        return f"{self.function}({self.input})", [Term((z,))], self.function, []

    def explain_local(self, t, index):
        raise NotImplementedError


@dataclass(frozen=True)
class ReLU(Activation):
    type: ClassVar[str] = "relu"
    function: ClassVar[str] = "ReLU"
    CONVENTIONS: ClassVar[dict[str, Convention]] = {"relu_grad_at_zero": Convention("grad_at_zero", (0, 1))}

    keeps_output: ClassVar[bool] = False  # in training, only its mask

    grad_at_zero: int = 0  # ReLU′(0): 0 (PyTorch) or 1

    def options(self):
        return "relu" if self.grad_at_zero == 0 else {"type": "relu", "grad_at_zero": self.grad_at_zero}

    def describe(self):
        return "relu" if self.grad_at_zero == 0 else "relu (ReLU′(0) = 1)"

    def value(self, z):
        return ops.relu_forward(z)

    def forward(self, x, weights, trace, overwrite=False):
        if trace:
            a = self.value(x)
            return a, (x, a)
        # Training keeps only the mask, as booleans (an eighth of dA/dZ's memory): Z and A
        # can go as soon as the next layer is done with A; A takes Z's place when it may.
        mask = (ops.relu_mask if self.grad_at_zero == 0 else ops.relu_mask_inclusive)(x)
        return ops.relu_forward(x, out=x if overwrite else None), (mask, None)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        Z = values[z]
        at_zero = 1 - self.grad_at_zero
        local = ops.relu_grad_inclusive(Z) if at_zero else ops.relu_grad(Z)
        return [
            self._local_mistake(values, "relu_grad_at_zero", f"ReLU′(0) taken as {at_zero} where {z} = 0", local)
            ._replace(convention=("relu_grad_at_zero", at_zero)),
            Mistake("relu_mask_missing", f"dL/d{z} = dL/d{a}: the ReLU mask (1 where {z} > 0) was left out",
                    {self.input_gradient: values[_grad(a)]}),
        ]  # fmt: skip

    def backward(self, d_out, cache, weights, *, need_input, trace):
        if trace:
            return super().backward(d_out, cache, weights, need_input=need_input, trace=trace)
        mask, _ = cache
        # In training, dL/dA is the pass's own and read no more: dL/dZ takes its place.
        return {self.input_gradient: np.multiply(d_out, mask, out=d_out)} if need_input else {}

    def derivative(self, z, a):
        return ops.relu_grad(z) if self.grad_at_zero == 0 else ops.relu_grad_inclusive(z)

    def derivative_text(self):
        z = self.input
        return (f"1 where {z} > 0, else 0", f"ReLU′({z})", f"1 where {z} > 0, 0 where {z} ≤ 0", (z,),
                f"the ReLU mask, read from {z}")  # fmt: skip

    def flow_note(self):
        z = self.input
        return f"the gradient passes where {z} > 0 and stops where {z} ≤ 0"

    def explain_value(self, t, z):
        a = self.output
        note = f"{z.label} {f'> 0, so {a} = {self.input}' if z.value > 0 else f'≤ 0, so {a} = 0'}"
        zz = self.input
        return f"ReLU({zz}[h,w]) = max({zz}[h,w], 0)", [Term((z,))], "ReLU", [note]

    def explain_local(self, t, index):
        z = t.factor(self.input, index)
        if self.grad_at_zero:
            note = f"{z.label} {'≥ 0, so 1 (ReLU′(0) = 1 by the convention)' if z.value >= 0 else '< 0, so 0'}"
            return f"1 if {self.input}[h,w] ≥ 0 else 0", [Term((z,))], "step", [note]
        note = f"{z.label} {'> 0, so 1' if z.value > 0 else '≤ 0, so 0 (ReLU′(0) = 0)'}"
        return f"1 if {self.input}[h,w] > 0 else 0", [Term((z,))], "step", [note]

    def kinks(self, cache):
        z, _ = cache
        return (z > 0,) if z.dtype != bool else (z,)

    def ambiguities(self, x):
        return {"zero": int(np.count_nonzero(np.abs(x) <= AMBIGUITY))}

    def annotate(self, trace):
        z, a = self.input, self.output
        mask = np.asarray(trace[self.local])
        passed, total = int(mask.sum()), mask.size
        return {
            a: Annotation(before=(f"{z} > 0 in {passed} of {total} cells: {a} = {z} there, 0 elsewhere "
                                  f"(the ReLU mask d{a}/d{z})",)),  # fmt: skip
            self.local: Annotation(after=(f"{passed} of {total} cells of {z} are > 0 and pass the gradient",)),
        }


@dataclass(frozen=True)
class LeakyReLU(Activation):
    type: ClassVar[str] = "leaky_relu"
    function: ClassVar[str] = "LeakyReLU"

    alpha: float = 0.01

    def options(self):
        return {"type": "leaky_relu", "alpha": self.alpha}

    def describe(self):
        return f"leaky_relu (alpha {self.alpha:g})"

    def value(self, z):
        return ops.leaky_relu_forward(z, self.alpha)

    def derivative(self, z, a):
        return ops.leaky_relu_grad(z, self.alpha)

    def derivative_text(self):
        z = self.input
        return (f"1 where {z} > 0, else {self.alpha:g}", f"LeakyReLU′({z})",
                f"1 where {z} > 0, α = {self.alpha:g} where {z} ≤ 0", (z,),
                f"read from {z}: the slope is α = {self.alpha:g} where {z} ≤ 0")  # fmt: skip

    def explain_value(self, t, z):
        zz, a = self.input, self.output
        note = f"{z.label} {f'> 0, so {a} = {zz}' if z.value > 0 else f'≤ 0, so {a} = {self.alpha:g}·{zz}'}"
        return (f"LeakyReLU({zz}[h,w]) = {zz} if > 0 else {self.alpha:g}·{zz}", [Term((z,))], "LeakyReLU",
                [note], self.alpha)  # fmt: skip

    def explain_local(self, t, index):
        z = t.factor(self.input, index)
        note = f"{z.label} {'> 0, so 1' if z.value > 0 else f'≤ 0, so α = {self.alpha:g}'}"
        return (f"1 if {self.input}[h,w] > 0 else α", [Term((z,))], "leaky step", [note], self.alpha)

    def kinks(self, cache):
        z, _ = cache
        return (z > 0,)

    def ambiguities(self, x):
        return {"zero": int(np.count_nonzero(np.abs(x) <= AMBIGUITY))}


@dataclass(frozen=True)
class Tanh(Activation):
    type: ClassVar[str] = "tanh"
    function: ClassVar[str] = "tanh"

    def value(self, z):
        return ops.tanh_forward(z)

    def derivative(self, z, a):
        return ops.tanh_grad(a)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        Z, A = values[z], values[a]
        return [
            self._local_mistake(values, "tanh_grad_from_input", f"tanh′ taken as 1 − {z}² (from {z}, "
                                f"not from {a} = tanh({z}))", 1 - Z * Z),
            self._local_mistake(values, "tanh_grad_unsquared", f"tanh′ taken as 1 − {a} (the square left out)", 1 - A),
        ]  # fmt: skip

    def derivative_text(self):
        a, z = self.output, self.input
        return (f"1 − {a}²", f"tanh′({z})", f"1 − tanh²({z}) = 1 − {a}²", (a,), "")

    def explain_value(self, t, z):
        return f"tanh({self.input}) = (e^z − e^−z)/(e^z + e^−z)", [Term((z,))], "tanh", []

    def explain_local(self, t, index):
        a = t.factor(self.output, index)
        return f"1 − {self.output}²", [Term((constant("1", 1.0),)), Term((MINUS, a, a))], None, []


@dataclass(frozen=True)
class Sigmoid(Activation):
    type: ClassVar[str] = "sigmoid"
    function: ClassVar[str] = "σ"

    def value(self, z):
        return ops.sigmoid(z)

    def derivative(self, z, a):
        return ops.sigmoid_grad(z)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        A = values[a]
        twice = values[self.input_gradient] * A * (1 - A)
        return [
            Mistake("sigmoid_derivative_twice", f"the right dL/d{z} times {a}·(1 − {a}) again, with BCE "
                    f"(({a} − Y)/N)·{a}·(1 − {a}): the sigmoid's derivative was applied twice; with BCE "
                    f"it cancels, dL/d{z} = ({a} − Y)/N",
                    {self.input_gradient: twice}),
            self._local_mistake(values, "sigmoid_grad_from_input", f"σ′ taken as {z}·(1 − {z}) (from {z}, "
                                f"not from {a} = σ({z}))", values[z] * (1 - values[z])),
        ]  # fmt: skip

    def derivative_text(self):
        a, z = self.output, self.input
        return (f"{a}·(1 − {a})", f"σ′({z})", f"σ({z})·(1 − σ({z})) = {a}·(1 − {a})", (a,), "")

    def explain_value(self, t, z):
        return f"σ({self.input}) = 1 / (1 + e^(−{self.input}))", [Term((z,))], "σ", []

    def explain_local(self, t, index):
        a = t.factor(self.output, index)
        z = float(t.value(self.input)[index])
        one_minus = Factor(f"(1 − {self.output})", a.index, float(ops.sigmoid(np.float64(-z))), self.output)
        return f"{self.output}·(1 − {self.output})", [Term((a, one_minus))], None, []


@dataclass(frozen=True)
class Softmax(Activation):
    """A = softmax(Z) over each image's units; its local derivative is the Jacobian
    diag(A) − A·Aᵀ of each image, (n, n)."""

    type: ClassVar[str] = "softmax"
    function: ClassVar[str] = "softmax"

    def infer(self, layout, given):
        if layout.form != "vector":
            raise InputError("softmax works over a vector of units: it comes after a dense layer",
                             key=self.place.key())  # fmt: skip
        return Layout(layout.shape, True), {}

    def value(self, z):
        return ops.softmax(z)

    def derivative(self, z, a):
        return ops.softmax_jacobian(a)

    def backward(self, d_out, cache, weights, *, need_input, trace):
        z, a = cache
        out = {self.local: self.derivative(z, a)} if trace else {}
        if need_input:  # Jacobianᵀ·dL/dA without making the Jacobian
            out[self.input_gradient] = ops.softmax_backward(d_out, a)
        return out

    def through(self, d_out, local):
        return np.einsum("mji,mj->mi", local, d_out)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        A = values[a]
        return [
            Mistake("softmax_derivative_twice", f"dL/d{z} passed through the softmax's Jacobian once more: "
                    f"with cross-entropy it cancels, dL/d{z} = ({a} − Y)/N",
                    {self.input_gradient: ops.softmax_backward(values[self.input_gradient], A)}),
            Mistake("softmax_diagonal_only", f"dL/d{z} = dL/d{a} ⊙ {a}·(1 − {a}): the softmax taken "
                    "element-wise, its Jacobian's off-diagonal terms −A[i]·A[j] left out",
                    {self.input_gradient: values[_grad(a)] * A * (1 - A)}),
            Mistake("softmax_target_missing", f"dL/d{z} = {a}/N: the −Y of softmax with cross-entropy left out",
                    {self.input_gradient: A / len(A)}),
        ]  # fmt: skip

    def derivative_text(self):
        a, z = self.output, self.input
        return (f"diag({a}) − {a}·{a}ᵀ", f"softmax′({z})",
                f"∂{a}[i]/∂{z}[j] = {a}[i]·(δij − {a}[j])", (a,),
                "one n×n Jacobian per image: row i, column j")  # fmt: skip

    def local_stage(self, ctx) -> Stage:
        (n,) = ctx.layouts[self.input].shape
        return super().local_stage(ctx)._replace(layout=Layout((n, n), kind="jacobian"))

    def stages(self, ctx):
        z, a = self.input, self.output
        forward = [_stage(a, "forward", f"exp({z}) / Σexp({z})", None)]
        backward = [
            self.local_stage(ctx),
            _stage(_grad(z), "backward", f"(d{a}/d{z})ᵀ·dL/d{a}", None,
                   Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", f"{a} ⊙ (∂L/∂{a} − Σ ∂L/∂{a}⊙{a})",
                        (_grad(a), self.local), "the Jacobian's transpose times the gradient, per image")),
        ]  # fmt: skip
        return forward, backward

    def explain(self, t, name, index):
        z, a = self.input, self.output
        if name == a:
            m, i = index
            Z = t.value(z)[m]
            top = float(Z.max())
            terms = [Term((Factor(f"exp({z}[{j}] − max)", t.user_index(z, (m, j)), float(np.exp(Z[j] - top)), z),))
                     for j in range(Z.shape[0])]  # fmt: skip
            notes = [f"max = {top!r}, subtracted from every {z} entry so that exp never overflows",
                     f"the share of term {i} in the sum"]  # fmt: skip
            return f"exp({z}[i]) / Σ_j exp({z}[j])", terms, "share", notes, i
        if name == self.local:
            m, i, j = index
            ai, aj = t.factor(a, (m, i)), t.factor(a, (m, j))
            terms = ([Term((ai,))] if i == j else []) + [Term((MINUS, ai, aj))]
            return f"{a}[i]·(δij − {a}[j])", terms, None, [f"i = {i}, j = {j}"]
        m, i = index
        n = t.value(a).shape[1]
        terms = [Term((t.factor(self.local, (m, j, i)), t.factor(_grad(a), (m, j)))) for j in range(n)]
        return f"Σ_j d{a}[j]/d{z}[i]·dL/d{a}[j]", terms, None, []


KINDS: dict[str, type[Layer]] = {
    kind.type: kind for kind in (Conv, Dense, Flatten, MaxPool, AvgPool, ReLU, LeakyReLU, Tanh, Sigmoid, Softmax)
}
