"""Pooling: the max or the mean of each window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from cnntrace import ops
from cnntrace.checks import Pair
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    AMBIGUITY,
    Annotation,
    Convention,
    Explained,
    Hand,
    Imported,
    Layer,
    Layout,
    Mistake,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    convention_option,
    flag_option,
    grad_stage,
    onnx_window,
    padding_option,
    padding_value,
    pair_option,
    stage,
    torch_pair,
)
from cnntrace.naming import grad
from cnntrace.terms import Term, constant
from cnntrace.text import number_text, pair_text, shape_text, symbol


@dataclass(frozen=True)
class Pool(Layer):
    """The options every pooling has: a size[0]×size[1] window moved by ``stride`` over the
    input inside ``padding`` (a pair, four sides or "same"), the last partial window kept in
    ``ceil_mode`` as PyTorch keeps it."""

    letter: ClassVar[str] = "P"
    pooling: ClassVar[bool] = True
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True)
    OPTIONS: ClassVar[dict] = {
        "size": pair_option(1, 2, "The window, size×size or [rows, cols].", "size"),
        "stride": pair_option(1, None, "How far the window moves; by default its size.", "stride"),
        "padding": padding_option("Added around the input, at most half the window on a side: a number, [rows, cols], [top, bottom, left, right], \"valid\" (none) or \"same\" (the output keeps ceil(size/stride)); −∞ for max-pooling, zeros for average pooling."),
        "ceil_mode": flag_option(False, "Keep a last partial window at the end when it starts inside the input or the padding before it (PyTorch's ceil_mode).", "ceil_mode"),
    }

    size: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair | tuple[int, int, int, int] | str = (0, 0)
    ceil_mode: bool = False
    #: How far apart a window's taps lie; only max-pooling has a dilation, as in PyTorch.
    dilation: ClassVar[Pair] = (1, 1)

    @classmethod
    def from_options(cls, options):
        if "size" in options and "stride" not in options:
            options = {**options, "stride": options["size"]}  # the stride is the window's size by default
        return cls(**options)

    def work(self, layouts, weights):
        cells = 1
        for n in layouts[self.output].shape:
            cells *= n
        return self.size[0] * self.size[1], cells

    def terms(self, layouts, weights, name, images):
        kh, kw = self.size
        if name == self.output:  # its window
            return Terms(kh * kw)
        if name == grad(self.input):  # the windows over the cell, found row by row and column by column
            _, Hp, Wp = layouts[self.output].shape
            over = -(-kh // self.stride[0]) * -(-kw // self.stride[1])
            return Terms(min(over, Hp * Wp), Hp + Wp)
        return super().terms(layouts, weights, name, images)

    # -- PyTorch and ONNX ---------------------------------------------------------------

    @classmethod
    def _imported(cls, size, stride, padding, **more) -> Imported:
        description = {"type": cls.type, "size": list(size), "stride": list(stride)}
        if isinstance(padding, str) or any(padding):
            description["padding"] = padding if isinstance(padding, str) else list(padding)
        return Imported({**description, **more})

    @classmethod
    def _torch_window(cls, module) -> tuple:
        stride = module.stride if module.stride is not None else module.kernel_size
        return torch_pair(module.kernel_size), torch_pair(stride), torch_pair(module.padding)

    _TORCH_HELPER: ClassVar[str] = '''
def padded_pool(x, kind, size, stride, sides, dilation, ceil_mode, count_padding, out):
    """A pool whose padding differs by side: F.pad (top, bottom, left, right) first, as
    PyTorch's own pools pad opposite sides alike; the windows past those of the trace's pool
    (ceil mode keeps none that starts in the padding after) cut off. An average divides by
    the cells its window covers, the padding's among them where they count."""
    top, bottom, left, right = sides
    frame = (left, right, top, bottom)
    if kind == "max":
        y = F.max_pool2d(F.pad(x, frame, value=-float("inf")), size, stride, 0, dilation, ceil_mode)
    else:
        padded = F.pad(x, frame)
        summed = F.avg_pool2d(padded, size, stride, 0, ceil_mode, divisor_override=1)
        # What each window divides by: its cells in the padded map where the padding counts
        # (a ceil-mode window clipped at the map's end, as PyTorch clips it), else in the input.
        cells = torch.ones_like(padded) if count_padding else F.pad(torch.ones_like(x), frame)
        y = summed / F.avg_pool2d(cells, size, stride, 0, ceil_mode, divisor_override=1)
    return y[:, :, :out[0], :out[1]]
'''

    def torch_form(self, t):
        """PyTorch's own pool where opposite sides are padded alike, else ``padded_pool``."""
        _, H, W = t.layout(self.input).shape
        top, bottom, left, right = self.sides(H, W)
        if (top, left) == (bottom, right):
            return TorchForm(self._torch_module((top, left)))
        out = t.layout(self.output).shape[1:]
        return TorchForm(f"Apply(lambda x: padded_pool(x, {self._torch_kind!r}, {self.size}, {self.stride}, "
                         f"{(top, bottom, left, right)}, {self.dilation}, {self.ceil_mode}, "
                         f"{getattr(self, 'count_include_pad', True)}, {tuple(out)}))",
                         helpers=self._TORCH_HELPER)  # fmt: skip

    _torch_kind: ClassVar[str] = ""

    def _torch_module(self, padding) -> str:
        raise NotImplementedError

    def onnx_nodes(self, t, x, y):
        _, H, W = t.layout(x).shape
        top, bottom, left, right = self.sides(H, W)
        attributes = {"kernel_shape": list(self.size), "strides": list(self.stride),
                      "pads": [top, left, bottom, right], **self._onnx_attributes()}  # fmt: skip
        if self.dilation != (1, 1):
            attributes["dilations"] = list(self.dilation)
        out = t.layout(y).shape[1:]
        spans = [n + before + after - self.span(axis)
                 for axis, (n, before, after) in enumerate(((H, top, bottom), (W, left, right)))]  # fmt: skip
        if tuple(out) != tuple(span // s + 1 for span, s in zip(spans, self.stride)):
            # A ceil-mode window that floor mode would not keep: ONNX's MaxPool keeps ceil's count.
            if not self._onnx_ceil or tuple(out) != tuple(-(-span // s) + 1 for span, s in zip(spans, self.stride)):
                raise InputError(f"ONNX's {self.ONNX[0]} in ceil mode keeps other windows than this pool's "
                                 f"{shape_text(tuple(out))}", key=self.place.key("ceil_mode"))  # fmt: skip
            attributes["ceil_mode"] = 1
        return [(self.ONNX[0], [x], [y], attributes)], {}

    #: Whether ONNX's pool divides a ceil-mode window as this kind does (max: nothing to divide).
    _onnx_ceil: ClassVar[bool] = False

    def _onnx_attributes(self) -> dict:
        return {}

    def options(self):
        out = {"type": self.type, "size": self.size[0] if self.size[0] == self.size[1] else list(self.size)}
        if self.stride != self.size:
            out["stride"] = self.stride[0] if self.stride[0] == self.stride[1] else list(self.stride)
        if self.padding == "same" or any(self.padding):
            out["padding"] = padding_value(self.padding)
        if self.ceil_mode:
            out["ceil_mode"] = True
        return out

    def describe(self):
        text = f"{self.type} {self.size[0]}×{self.size[1]} with stride {pair_text(self.stride)}"
        if isinstance(self.padding, str):
            text += f", padding {self.padding}"
        elif any(self.padding):
            text += f", padding {pair_text(self.padding) if len(self.padding) == 2 else list(self.padding)}"
        if self.dilation != (1, 1):
            text += f", dilation {pair_text(self.dilation)}"
        return text + (", ceil mode" if self.ceil_mode else "")

    def sides(self, H: int, W: int) -> tuple[int, int, int, int]:
        """The padding (top, bottom, left, right) around an H×W input; "same" pads so that
        the output keeps ceil(H/stride)×ceil(W/stride), the odd cell after."""
        if self.padding != "same":
            return self._given_sides()
        out = []
        for n, k, s, d in zip((H, W), self.size, self.stride, self.dilation):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)

    def _given_sides(self) -> tuple[int, int, int, int]:
        """The sides of a padding given in numbers ("valid": none)."""
        return (0, 0, 0, 0) if self.padding == "valid" else ops.sides(self.padding)

    def span(self, axis: int) -> int:
        """How many cells a window covers along ``axis``, its gaps included."""
        return self.dilation[axis] * (self.size[axis] - 1) + 1

    def infer(self, layout, given):
        if layout.form != "map":
            raise InputError(f"{self.type} needs maps, and it gets {layout.form}s; pool before "
                             "the flatten", key=self.place.key())  # fmt: skip
        C, H, W = layout.shape
        frame = self.sides(H, W)
        if self.padding != "same":
            for axis, what in ((0, "rows"), (1, "columns")):
                side = max(frame[2 * axis : 2 * axis + 2])
                if 2 * side > self.size[axis]:
                    raise InputError(f"padding {side} is more than half the window ({self.size[axis]} {what})",
                                     key=self.place.key("padding"))  # fmt: skip
        Hp, Wp = H + frame[0] + frame[1], W + frame[2] + frame[3]
        if self.span(0) > Hp or self.span(1) > Wp:
            window = f"{self.size[0]}×{self.size[1]}"
            spans = f" (spanning {self.span(0)}×{self.span(1)} with its dilation)" if self.dilation != (1, 1) else ""
            raise InputError(
                f"the {_window_text(window)} pool window{spans} is larger than {self.input} "
                f"({shape_text((Hp, Wp))})",
                key=self.place.key("size"),
            )
        out = ops.pool_output_shape((1, C, H, W), self.size, self.stride, frame, self.dilation, self.ceil_mode)[1:]
        for axis, (n, what) in enumerate(((H, "row"), (W, "column"))):
            for h in range(out[axis + 1]):
                taps = [h * self.stride[axis] + i * self.dilation[axis] - frame[2 * axis] for i in range(self.size[axis])]
                if not any(0 <= tap < n for tap in taps):
                    raise InputError(f"pool window {what} {h} holds padding only (taps at {taps}, {self.input} has "
                                     f"{n} {what}{'s' * (n != 1)})", key=self.place.key("padding"))  # fmt: skip
        return Layout(out, layout.shown, layout.channel, sized_by=layout.sized_by), {}

    def window_cells(self, h: int, w: int, frame=None):
        """The (row, col) cells of window (h, w), in row-major order, in the input's
        coordinates (padding cells outside 0..H-1); ``frame`` the padding's four sides
        (see ``sides``; a padding given in numbers needs no input to tell them)."""
        frame = self._given_sides() if frame is None else frame
        (sh, sw), (dh, dw), top, left = self.stride, self.dilation, frame[0], frame[2]
        return [(h * sh + a * dh - top, w * sw + b * dw - left) for a in range(self.size[0]) for b in range(self.size[1])]

    def windows_over(self, r: int, col: int, Hp: int, Wp: int, frame) -> list[tuple[int, int]]:
        """The windows (h, w) of an Hp×Wp output that contain cell (r, col) of the input, in
        row-major order."""

        def over(cell, n_out, stride, dilation, size, before):
            reach = [(cell + before - k * stride) for k in range(n_out)]
            return [k for k, offset in enumerate(reach) if 0 <= offset <= dilation * (size - 1) and offset % dilation == 0]

        rows = over(r, Hp, self.stride[0], self.dilation[0], self.size[0], frame[0])
        cols = over(col, Wp, self.stride[1], self.dilation[1], self.size[1], frame[2])
        return [(h, w) for h in rows for w in cols]

    def _window_note(self, cells) -> str:
        apart = f", dilation {pair_text(self.dilation)}" if self.dilation != (1, 1) else ""
        return (f"window rows {cells[0][0]}..{cells[-1][0]}, columns {cells[0][1]}..{cells[-1][1]} "
                f"(pool {pair_text(self.size)}, stride {pair_text(self.stride)}{apart})")  # fmt: skip


def _window_text(window: str) -> str:
    rows, _, cols = window.partition("×")
    return f"{number_text(int(rows))}×{number_text(int(cols))}"


@dataclass(frozen=True)
class MaxPool(Pool):
    """P = MaxPool(A): the largest entry of each window; ties go to the first in row-major
    order. Padding is −∞."""

    type: ClassVar[str] = "maxpool"
    DESCRIPTION: ClassVar[str] = "The largest entry of each window; ties go to the first in row-major order."
    HAND: ClassVar[Hand] = Hand(exact=True, ties=True)
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("MaxPool", "max", "route")
    CONVENTIONS: ClassVar[dict[str, Convention]] = {
        "pool_ties": Convention("ties", ("first", "all", "split"),
                                "Max-pool ties: the first maximum, every tied one, or shared equally."),
    }
    OPTIONS: ClassVar[dict] = {
        **Pool.OPTIONS,
        "dilation": pair_option(1, 1, "How far apart the window's taps lie: 1 adjacent, d leaves d − 1 cells between them.", "dilation"),
        "ties": convention_option(CONVENTIONS["pool_ties"], "Where dL/dP goes in a tied window: the first maximum (PyTorch), all of them, or shared."),
    }

    dilation: Pair = (1, 1)
    ties: str = "first"  # "all": every tied maximum gets the gradient; "split": shared equally

    def options(self):
        out = super().options()
        if self.ties != "first":
            out["ties"] = self.ties
        if self.dilation != (1, 1):
            out["dilation"] = self.dilation[0] if self.dilation[0] == self.dilation[1] else list(self.dilation)
        return out

    def describe(self):
        return super().describe() + (f", ties {self.ties}" if self.ties != "first" else "")

    TORCH: ClassVar[tuple[str, ...]] = ("MaxPool2d",)
    ONNX: ClassVar[tuple[str, ...]] = ("MaxPool",)

    _torch_kind: ClassVar[str] = "max"
    _onnx_ceil: ClassVar[bool] = True

    def torch_form(self, t):
        if self.ties != "first":
            raise InputError(f"PyTorch's max-pool sends dL/dP to the first maximum only, not ties {self.ties!r}",
                             key=self.place.key("ties"))  # fmt: skip
        return super().torch_form(t)

    def onnx_nodes(self, t, x, y):
        if self.ties != "first":
            raise InputError(f"ONNX's MaxPool sends the gradient to one maximum, not ties {self.ties!r}",
                             key=self.place.key("ties"))  # fmt: skip
        return super().onnx_nodes(t, x, y)

    def _torch_module(self, padding):
        return f"nn.MaxPool2d({self.size}, {self.stride}, {padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode})"

    @classmethod
    def _more(cls, dilation, ceil_mode) -> dict:
        more = {"dilation": list(dilation)} if tuple(dilation) != (1, 1) else {}
        return {**more, "ceil_mode": True} if ceil_mode else more

    @classmethod
    def from_torch(cls, module, array):
        if module.return_indices:
            raise Refused("MaxPool2d with return_indices")
        return cls._imported(*cls._torch_window(module), **cls._more(torch_pair(module.dilation), module.ceil_mode))

    @classmethod
    def from_onnx(cls, node):
        window = onnx_window(node, refuse_other=("storage_order",), allow=("dilations", "ceil_mode", "sides", "same"))
        return cls._imported(window["kernel"], window["stride"], window["padding"],
                             **cls._more(window["dilation"], window["ceil_mode"]))  # fmt: skip

    def pool(self, A):
        """ops.maxpool_forward with this layer's options: (P, PoolCache)."""
        return ops.maxpool_forward(A, self.size, self.stride, self.sides(*A.shape[2:]), self.dilation, self.ceil_mode)

    def forward(self, x, weights, tracing, overwrite=False):
        P, cache = self.pool(x)
        # Another tie rule needs the input to find the tied cells.
        return P, (cache if self.ties == "first" else TiedPool(cache, x))

    def backward(self, d_out, cache, weights, *, need_input, tracing):
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
        A, d = values[a], values[grad(p)]
        _, cache = self.pool(A)
        out = []
        for rule, (id_, words) in self._TIE_MISTAKES.items():
            if rule != self.ties:
                routed = ops.maxpool_backward(d, cache) if rule == "first" else ops.maxpool_backward_tied(d, A, cache, rule)
                out.append(Mistake(id_, f"dL/d{a}: {words}", {grad(a): routed}, ("pool_ties", rule)))
        n = self.size[0] * self.size[1]
        out.append(Mistake("pool_spread", f"dL/d{a}: dL/d{p} spread over the whole window (1/{n} to each "
                           "cell, as avg-pool would) instead of sent to its maximum",
                           {grad(a): ops.avgpool_backward(d, cache)}))  # fmt: skip
        out.append(Mistake("pool_copy_all", f"dL/d{a}: dL/d{p} copied undivided to every cell of its "
                           "window instead of sent to its maximum alone",
                           {grad(a): ops.avgpool_backward(d, cache) * n}))  # fmt: skip
        if self.dilation == (1, 1):
            average, _ = ops.avgpool_forward(A, self.size, self.stride, self.sides(*A.shape[2:]), self.ceil_mode)
            out.append(Mistake("avgpool_for_max", f"{p}: each window averaged, as avg-pool does, where "
                               "max-pool takes its maximum", {p: average}))  # fmt: skip
        if self.dilation != (1, 1):
            # The same window starts, the taps side by side: the max over the window's first
            # size[0]×size[1] cells of the padded input.
            framed = ops._pad(A, cache.padding, -np.inf)
            adjacent, _ = ops.maxpool_forward(framed, self.size, self.stride)
            Ho, Wo = values[p].shape[2:]
            out.append(Mistake("pool_dilation_ignored", f"{p}: the window's taps taken side by side, not "
                               f"{pair_text(self.dilation)} apart (dilation)", {p: adjacent[:, :, :Ho, :Wo]}))  # fmt: skip
        return out

    def stages(self, ctx):
        a, p = self.input, self.output
        return [stage(p, "forward", f"MaxPool({a})", None)], [
            grad_stage(a, f"dL/d{p} routed to each window's max", None,
                   Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"∂L/∂{p} at the max of each window, 0 elsewhere",
                        (grad(p),),
                        f"dL/d{p} goes to the cell of {a} that won each window (marked * in {a}), "
                        "0 to the others" + ("" if self.ties == "first" else f"; in a tie, {self._tie_words()}"))),
        ]  # fmt: skip

    def kinks(self, cache):
        return ((cache.pool if isinstance(cache, TiedPool) else cache).winner,)

    def ambiguities(self, x):
        # A window ties when its maximum occurs more than once; the tolerance sees 0.1 + 0.2
        # and 0.3 as the tie they are on paper.
        P, cache = self.pool(x)
        x_padded = ops._pad(x, cache.padding, -np.inf)
        at_max = np.zeros(P.shape, dtype=int)
        for _, _, rows, cols in ops._offsets(self.size, P.shape[2:], self.stride, self.dilation):
            at_max += np.abs(x_padded[:, :, rows, cols] - P) <= AMBIGUITY
        # A window of zeros (all masked by a ReLU before it) ties at 0: counted apart, as a
        # hand exercise wants one where the mask stops a gradient.
        tied = at_max > 1
        at_zero = tied & (np.abs(P) <= AMBIGUITY)
        return {"tie": int(np.count_nonzero(tied & ~at_zero)), "tie_at_zero": int(np.count_nonzero(at_zero))}

    def wins(self, t) -> np.ndarray:
        """How many windows each cell of the input won (under ``ties`` all and split, each
        tied maximum wins), in the input's user shape."""
        A = t.value(self.input)
        _, cache = self.pool(A)
        if self.ties == "first":
            won = ops.pool_wins(cache)
        else:
            won = ops.maxpool_backward_tied(np.ones(cache.winner.shape), A, cache, "all")
        return won.astype(int).reshape(t.user_shape(self.input))

    def annotate(self, t):
        wins = self.wins(t)
        if not wins.any():
            return {}
        legend = f"won its pool window: dL/d{self.output} flows back to this cell"
        many = "won {n} windows"
        return {self.input: Annotation(wins, legend, many), grad(self.input): Annotation(wins, many=many)}

    def _tie_words(self) -> str:
        return {"first": "the first in row-major order wins",
                "all": "every tied cell gets the whole gradient (conventions: pool_ties all)",
                "split": "the gradient is shared equally among them (conventions: pool_ties split)"}[self.ties]  # fmt: skip

    def _inside(self, t, h, w) -> list:
        """The cells of window (h, w) inside the input, in row-major order."""
        A = t.value(self.input)
        H, W = A.shape[2:]
        return [(r, col) for r, col in self.window_cells(h, w, self.sides(H, W)) if 0 <= r < H and 0 <= col < W]

    def winner(self, t, m, c, h, w):
        """The first maximum of window (h, w) in row-major order, as ops.maxpool_forward
        picks it; padding cells (−∞) never win."""
        A = t.value(self.input)
        best = None
        for r, col in self._inside(t, h, w):
            if best is None or A[m, c, r, col] > A[m, c, best[0], best[1]]:
                best = (r, col)
        return best

    def tied(self, t, m, c, h, w) -> list:
        """Every cell of window (h, w) that holds its maximum, in row-major order."""
        A = t.value(self.input)
        inside = self._inside(t, h, w)
        top = max(A[m, c, r, col] for r, col in inside)
        return [(r, col) for r, col in inside if A[m, c, r, col] == top]

    def rules(self):
        words = {"first": "the first maximum in row-major order takes all of it",
                 "all": "every tied maximum takes all of it", "split": "the tied maxima share it equally"}
        return (f"In a pool window whose maxima tie, {words[self.ties]} (dL/d{self.output} back to "
                f"{self.input}).",)  # fmt: skip

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        frame = self.sides(H, W)
        pool, ps = pair_text(self.size), pair_text(self.stride)
        if name == p:
            m, c, h, w = index
            cells = self.window_cells(h, w, frame)
            inside = self._inside(t, h, w)
            terms = [Term((t.factor(a, (m, c, r, col)),)) for r, col in inside]
            r, col = self.winner(t, m, c, h, w)
            won = t.factor(a, (m, c, r, col))
            ties = sum(1 for term in terms if term.value == won.value)
            notes = [
                self._window_note(cells),
                f"the max is {won.label}" + (f"; {ties} cells tie, {self._tie_words()}" if ties > 1 else ""),
            ]
            if len(inside) < len(cells):
                notes.append("cells outside the input are the padding, −∞, and never win")
            return Explained(f"max over the pool window of {a}", terms, "max", notes)
        m, c, r, col = index
        terms, notes, windows = [], [], 0
        Hp, Wp = t.value(p).shape[2:]
        for h, w in self.windows_over(r, col, Hp, Wp, frame):
            windows += 1
            d = t.factor(grad(p), (m, c, h, w))
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
                notes.append(f"window {d.label[len(symbol(grad(p))):]}: won by {by.label}, not this cell")
        here = t.factor(a, (m, c, r, col)).label
        if not windows:
            notes.append(f"{here} lies in no pool window (pool {pool}, stride {ps}): 0")
        elif not terms:
            notes.append(f"{here} won none of the {windows} window(s) that contain it: 0")
        return Explained(f"Σ over the pool windows this cell won of dL/d{p}[window]", terms, None, notes)

    def recipe(self, t, name):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        frame = self.sides(H, W)
        formula = (f"max over the pool window of {a}" if name == p else
                   f"Σ over the pool windows this cell won of dL/d{p}[window]")  # fmt: skip
        apart = f", dilation {pair_text(self.dilation)}" if self.dilation != (1, 1) else ""
        data = {"a": a, "p": p, "gp": grad(p), "formula": formula, "size": list(self.size), "stride": list(self.stride),
                "dilation": list(self.dilation), "frame": [frame[0], frame[2]], "output": list(t.value(p).shape[2:]),
                "settings": f"(pool {pair_text(self.size)}, stride {pair_text(self.stride)}{apart})",
                "pool": pair_text(self.size), "ps": pair_text(self.stride), "ties": self._tie_words(),
                "rule": self.ties}  # fmt: skip
        return Recipe(MAX_RECIPE, data, (a,) if name == p else (grad(p), a))


#: The windows (k along one axis, of n) whose taps land on a cell, for both pools' recipes:
#: the send-back's sources.
OVER = """
  function over(cell, n, stride, dilation, size, before) {
    var out = [];
    for (var k = 0; k < n; k++) {
      var offset = cell + before - k * stride;
      if (offset >= 0 && offset <= dilation * (size - 1) && offset % dilation === 0) { out.push(k); }
    }
    return out;
  }
"""

#: MaxPool.explain (under each tie rule) in the page's JavaScript (layers.base.Recipe).
MAX_RECIPE = "function (t, p, name, i) {" + OVER + """
  var A = t.shape(p.a), H = A[2], W = A[3], m = i[0], c = i[1];
  function cells(h, w) {
    var out = [];
    for (var a = 0; a < p.size[0]; a++) {
      for (var b = 0; b < p.size[1]; b++) {
        out.push([h * p.stride[0] + a * p.dilation[0] - p.frame[0], w * p.stride[1] + b * p.dilation[1] - p.frame[1]]);
      }
    }
    return out;
  }
  function inside(h, w) {
    return cells(h, w).filter(function (cell) { return cell[0] >= 0 && cell[0] < H && cell[1] >= 0 && cell[1] < W; });
  }
  function winner(h, w) {
    var best = null;
    inside(h, w).forEach(function (cell) {
      if (best === null || t.value(p.a, [m, c, cell[0], cell[1]]) > t.value(p.a, [m, c, best[0], best[1]])) { best = cell; }
    });
    return best;
  }
  var terms = [], notes = [];
  if (name === p.p) {
    var h = i[2], w = i[3], all = cells(h, w), within = inside(h, w), best = winner(h, w);
    within.forEach(function (cell) { terms.push(t.term([t.factor(p.a, [m, c, cell[0], cell[1]])])); });
    var won = t.factor(p.a, [m, c, best[0], best[1]]);
    var ties = terms.filter(function (term) { return term.factors[0].value === won.value; }).length;
    notes.push("window rows " + all[0][0] + ".." + all[all.length - 1][0] + ", columns " + all[0][1] + ".." +
               all[all.length - 1][1] + " " + p.settings);
    notes.push("the max is " + t.label(won) + (ties > 1 ? "; " + ties + " cells tie, " + p.ties : ""));
    if (within.length < all.length) { notes.push("cells outside the input are the padding, −∞, and never win"); }
    return { formula: p.formula, terms: terms, fn: "max", notes: notes };
  }
  var r = i[2], col = i[3], windows = 0;
  var rows = over(r, p.output[0], p.stride[0], p.dilation[0], p.size[0], p.frame[0]);
  var cols = over(col, p.output[1], p.stride[1], p.dilation[1], p.size[1], p.frame[1]);
  rows.forEach(function (h) {
    cols.forEach(function (w) {
      windows += 1;
      var d = t.factor(p.gp, [m, c, h, w]), best = winner(h, w), tied = [];
      if (p.rule !== "first") {  // every cell that holds the window's max
        var top = t.value(p.a, [m, c, best[0], best[1]]);
        tied = inside(h, w).filter(function (cell) { return t.value(p.a, [m, c, cell[0], cell[1]]) === top; });
      }
      var mine = tied.some(function (cell) { return cell[0] === r && cell[1] === col; });
      if (mine && p.rule === "split" && tied.length > 1) {
        terms.push(t.term([t.constant("1/" + tied.length, 1 / tied.length), d],
                          "tied for window " + t.label(d) + ", shared by " + tied.length));
      } else if (mine) {
        terms.push(t.term([d], "won window " + t.label(d) + (tied.length > 1 ? " (a tie: every tied cell gets it)" : "")));
      } else if (p.rule === "first" && best[0] === r && best[1] === col) {
        terms.push(t.term([d], "won window " + t.label(d)));
      } else {
        notes.push("window " + t.label(d).slice(d.symbol.length) + ": won by " +
                   t.label(t.factor(p.a, [m, c, best[0], best[1]])) + ", not this cell");
      }
    });
  });
  var here = t.label(t.factor(p.a, [m, c, r, col]));
  if (!windows) { notes.push(here + " lies in no pool window (pool " + p.pool + ", stride " + p.ps + "): 0"); }
  else if (!terms.length) { notes.push(here + " won none of the " + windows + " window(s) that contain it: 0"); }
  return { formula: p.formula, terms: terms, notes: notes };
}"""


@dataclass(frozen=True)
class AvgPool(Pool):
    """P = AvgPool(A): the mean of each window; the padding's zeros count in it unless
    ``count_include_pad`` is false, and a ceil-mode window's cells past the padding never."""

    type: ClassVar[str] = "avgpool"
    DESCRIPTION: ClassVar[str] = "The mean of each window."
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("AvgPool",)
    OPTIONS: ClassVar[dict] = {
        **Pool.OPTIONS,
        "count_include_pad": flag_option(True, "Whether the padding's zeros count in a window's mean (PyTorch's default) or only its cells inside the input.", "count_include_pad"),
    }

    count_include_pad: bool = True

    def options(self):
        out = super().options()
        return out if self.count_include_pad else {**out, "count_include_pad": False}

    def describe(self):
        return super().describe() + ("" if self.count_include_pad else ", the padding not counted")

    def pool(self, A, count_include_pad: bool | None = None):
        """ops.avgpool_forward with this layer's options: (P, PoolCache)."""
        counted = self.count_include_pad if count_include_pad is None else count_include_pad
        return ops.avgpool_forward(A, self.size, self.stride, self.sides(*A.shape[2:]), self.ceil_mode, counted)

    TORCH: ClassVar[tuple[str, ...]] = ("AvgPool2d",)
    ONNX: ClassVar[tuple[str, ...]] = ("AveragePool",)
    _torch_kind: ClassVar[str] = "avg"

    def _onnx_attributes(self):
        return {"count_include_pad": int(self.count_include_pad)}

    def _torch_module(self, padding):
        return (f"nn.AvgPool2d({self.size}, {self.stride}, {padding}, ceil_mode={self.ceil_mode}, "
                f"count_include_pad={self.count_include_pad})")  # fmt: skip

    @classmethod
    def _more(cls, padding, ceil_mode, count_include_pad) -> dict:
        more = {"ceil_mode": True} if ceil_mode else {}
        padded = isinstance(padding, str) or any(padding)
        return {**more, "count_include_pad": False} if padded and not count_include_pad else more

    @classmethod
    def from_torch(cls, module, array):
        size, stride, padding = cls._torch_window(module)
        if module.divisor_override is not None:
            raise Refused(f"AvgPool2d with divisor_override {module.divisor_override}")
        return cls._imported(size, stride, padding, **cls._more(padding, module.ceil_mode, module.count_include_pad))

    @classmethod
    def from_onnx(cls, node):
        window = onnx_window(node, allow=("sides", "same"))
        count = bool(node.attributes.get("count_include_pad", 0))
        return cls._imported(window["kernel"], window["stride"], window["padding"],
                             **cls._more(window["padding"], False, count))  # fmt: skip

    def forward(self, x, weights, tracing, overwrite=False):
        return self.pool(x)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        return {self.input_gradient: ops.avgpool_backward(d_out, cache)} if need_input else {}

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[grad(p)]
        n = self.size[0] * self.size[1]
        _, cache = self.pool(A)
        maxima, max_cache = ops.maxpool_forward(A, self.size, self.stride, self.sides(*A.shape[2:]), (1, 1), self.ceil_mode)
        uniform = np.ndim(cache.divisor) == 0
        undivided = ops.avgpool_backward(d, cache) * n if uniform else ops.avgpool_backward(d, cache._replace(divisor=1))
        out = [
            Mistake("avgpool_undivided", f"dL/d{a}: dL/d{p} copied to every cell of its window, "
                    + (f"without the 1/{n}" if uniform else "without dividing by its count"), {grad(a): undivided}),
            Mistake("avgpool_as_max", f"dL/d{a}: dL/d{p} sent to the window's maximum, as max-pool "
                    "would, instead of spread evenly", {grad(a): ops.maxpool_backward(d, max_cache)}),
            Mistake("maxpool_for_avg", f"{p}: each window's maximum taken, as max-pool does, where "
                    "avg-pool averages", {p: maxima}),
        ]  # fmt: skip
        # Another count of a window's cells: the full window, the padding counted or not.
        counted = ops.avgpool_divisor(A.shape, d.shape[2:], self.size, self.stride, self.sides(*A.shape[2:]),
                                      not self.count_include_pad)  # fmt: skip
        other = "avgpool_pad_not_counted" if self.count_include_pad else "avgpool_pad_counted"
        words = ("the padding left out of each window's count, as count_include_pad false would"
                 if self.count_include_pad else "the padding counted in each window's count, as count_include_pad true would")  # fmt: skip
        for id_, divisor, what in (("avgpool_full_window", n, f"each window divided by its full size {n}"),
                                   (other, counted, words)):  # fmt: skip
            if not np.array_equal(np.broadcast_to(divisor, d.shape[2:]), np.broadcast_to(cache.divisor, d.shape[2:])):
                out.append(Mistake(id_, f"dL/d{a}: {what}", {grad(a): ops.avgpool_backward(d, cache._replace(divisor=divisor))}))
        return out

    def stages(self, ctx):
        a, p = self.input, self.output
        n = self.size[0] * self.size[1]
        H, W = ctx.layouts[a].shape[1:] if ctx.layouts else (0, 0)
        Ho, Wo = ctx.layouts[p].shape[1:] if ctx.layouts else (0, 0)
        divisor = ops.avgpool_divisor((1, 1, H, W), (Ho, Wo), self.size, self.stride, self.sides(H, W),
                                      self.count_include_pad) if ctx.layouts else n  # fmt: skip
        if np.ndim(divisor) == 0:
            share, note = f"{n}", f"every cell of a window gets 1/{n} of its dL/d{p}; a cell in several windows gets the sum"
        else:
            share = "its window's count"
            note = (f"every cell of a window gets its dL/d{p} divided by the window's count: its cells inside {a}"
                    + (" and the padding" if self.count_include_pad else "") + "; a cell in several windows gets the sum")
        return [stage(p, "forward", f"AvgPool({a})", None)], [
            grad_stage(a, f"dL/d{p} spread evenly over each window", None,
                   Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"Σ over the windows of each cell of ∂L/∂{p}/{share}",
                        (grad(p),), note)),
        ]  # fmt: skip

    def counted(self, h: int, w: int, H: int, W: int) -> list[tuple[int, int]]:
        """The cells of window (h, w) its mean counts: inside the input, and inside the
        padding where count_include_pad; never past the padding (a ceil-mode window)."""
        top, bottom, left, right = frame = self.sides(H, W)
        if self.count_include_pad:
            rows, cols = (-top, H + bottom), (-left, W + right)
        else:
            rows, cols = (0, H), (0, W)
        return [(r, col) for r, col in self.window_cells(h, w, frame) if rows[0] <= r < rows[1] and cols[0] <= col < cols[1]]

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        frame = self.sides(H, W)
        full = self.size[0] * self.size[1]
        if name == p:
            m, c, h, w = index
            cells = self.window_cells(h, w, frame)
            counted = self.counted(h, w, H, W)
            n = len(counted)
            share = constant(f"1/{n}", 1.0 / n)
            terms = [Term((share, t.padded(a, m, c, r, col))) for r, col in counted]
            notes = [self._window_note(cells)]
            inside = sum(1 for r, col in cells if 0 <= r < H and 0 <= col < W)
            if self.count_include_pad and inside < n:
                notes.append("cells outside the input are the zero padding, counted in the mean")
            if not self.count_include_pad and inside < len(cells):
                notes.append(f"the window's cells outside the input are padding, not counted (count_include_pad "
                             f"false): the mean is over its {n} cells inside {a}")  # fmt: skip
            elif n < len(cells):
                notes.append(f"{len(cells) - n} of its cells lie past the padding (ceil mode's last window) and are "
                             f"not counted: the mean is over {n} cells")  # fmt: skip
            return Explained(f"(1/{n})·Σ over the pool window of {a}", terms, None, notes)
        m, c, r, col = index
        Hp, Wp = t.value(p).shape[2:]
        terms, counts = [], set()
        for h, w in self.windows_over(r, col, Hp, Wp, frame):
            n = len(self.counted(h, w, H, W))
            counts.add(n)
            terms.append(Term((constant(f"1/{n}", 1.0 / n), t.factor(grad(p), (m, c, h, w)))))
        notes = [] if terms else [f"{a}[{r},{col}] lies in no pool window: 0"]
        divisor = f"{full}" if counts <= {full} else "its count"
        if counts and not counts <= {full}:
            notes.append("each window divides by the cells its mean counts")
        return Explained(f"Σ over the windows that contain this cell of dL/d{p}[window]/{divisor}", terms, None, notes)

    def recipe(self, t, name):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        apart = f", dilation {pair_text(self.dilation)}" if self.dilation != (1, 1) else ""
        data = {"a": a, "p": p, "gp": grad(p), "size": list(self.size), "stride": list(self.stride),
                "dilation": list(self.dilation), "sides": list(self.sides(H, W)), "output": list(t.value(p).shape[2:]),
                "settings": f"(pool {pair_text(self.size)}, stride {pair_text(self.stride)}{apart})",
                "include": self.count_include_pad, "full": self.size[0] * self.size[1]}  # fmt: skip
        return Recipe(AVG_RECIPE, data, (a,) if name == p else (grad(p),))


#: AvgPool.explain in the page's JavaScript (layers.base.Recipe).
AVG_RECIPE = "function (t, p, name, i) {" + OVER + """
  var A = t.shape(p.a), H = A[2], W = A[3], m = i[0], c = i[1], side = p.sides;
  function cells(h, w) {
    var out = [];
    for (var a = 0; a < p.size[0]; a++) {
      for (var b = 0; b < p.size[1]; b++) {
        out.push([h * p.stride[0] + a * p.dilation[0] - side[0], w * p.stride[1] + b * p.dilation[1] - side[2]]);
      }
    }
    return out;
  }
  function within(lo, hi) {
    return function (cell) { return cell[0] >= lo[0] && cell[0] < hi[0] && cell[1] >= lo[1] && cell[1] < hi[1]; };
  }
  function counted(h, w) {  // inside the input, and inside the padding where it counts
    return cells(h, w).filter(p.include ? within([-side[0], -side[2]], [H + side[1], W + side[3]]) : within([0, 0], [H, W]));
  }
  var terms = [], notes = [];
  if (name === p.p) {
    var all = cells(i[2], i[3]), kept = counted(i[2], i[3]), n = kept.length, share = t.constant("1/" + n, 1 / n);
    kept.forEach(function (cell) { terms.push(t.term([share, t.padded(p.a, m, c, cell[0], cell[1])])); });
    notes.push("window rows " + all[0][0] + ".." + all[all.length - 1][0] + ", columns " + all[0][1] + ".." +
               all[all.length - 1][1] + " " + p.settings);
    var inside = all.filter(within([0, 0], [H, W])).length;
    if (p.include && inside < n) { notes.push("cells outside the input are the zero padding, counted in the mean"); }
    if (!p.include && inside < all.length) {
      notes.push("the window's cells outside the input are padding, not counted (count_include_pad false): the mean is " +
                 "over its " + n + " cells inside " + p.a);
    } else if (n < all.length) {
      notes.push((all.length - n) + " of its cells lie past the padding (ceil mode's last window) and are not counted: " +
                 "the mean is over " + n + " cells");
    }
    return { formula: "(1/" + n + ")·Σ over the pool window of " + p.a, terms: terms, notes: notes };
  }
  var r = i[2], col = i[3], others = false;
  over(r, p.output[0], p.stride[0], p.dilation[0], p.size[0], side[0]).forEach(function (h) {
    over(col, p.output[1], p.stride[1], p.dilation[1], p.size[1], side[2]).forEach(function (w) {
      var count = counted(h, w).length;
      others = others || count !== p.full;
      terms.push(t.term([t.constant("1/" + count, 1 / count), t.factor(p.gp, [m, c, h, w])]));
    });
  });
  if (!terms.length) { notes.push(p.a + "[" + r + "," + col + "] lies in no pool window: 0"); }
  if (others) { notes.push("each window divides by the cells its mean counts"); }
  return { formula: "Σ over the windows that contain this cell of dL/d" + p.p + "[window]/" + (others ? "its count" : p.full),
           terms: terms, notes: notes };
}"""


class TiedPool(NamedTuple):
    """A max-pool's cache under another tie rule: ops' cache and the pool's input."""

    pool: Any  # ops.PoolCache
    A: np.ndarray


