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
    Layer,
    Layout,
    Mistake,
    Rule,
    convention_option,
    grad_stage,
    pair_option,
    stage,
)
from cnntrace.naming import grad
from cnntrace.ops import output_size
from cnntrace.terms import Term, constant
from cnntrace.text import number_text, pair_text, shape_text, symbol


@dataclass(frozen=True)
class Pool(Layer):
    """The options every pooling has: a size[0]×size[1] window moved by ``stride``."""

    letter: ClassVar[str] = "P"
    pooling: ClassVar[bool] = True
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True)
    OPTIONS: ClassVar[dict] = {
        "size": pair_option(1, 2, "The window, size×size or [rows, cols].", "size"),
        "stride": pair_option(1, None, "How far the window moves; by default its size.", "stride"),
        "padding": pair_option(0, 0, "Added on every side, at most half the window: −∞ for max-pooling, zeros that count in the mean for average pooling.", "padding"),
    }

    size: Pair = (2, 2)
    stride: Pair = (2, 2)
    padding: Pair = (0, 0)

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
        "ties": convention_option(CONVENTIONS["pool_ties"], "Where dL/dP goes in a tied window: the first maximum (PyTorch), all of them, or shared."),
    }

    ties: str = "first"  # "all": every tied maximum gets the gradient; "split": shared equally

    def options(self):
        out = super().options()
        return out if self.ties == "first" else {**out, "ties": self.ties}

    def describe(self):
        return super().describe() + (f", ties {self.ties}" if self.ties != "first" else "")

    def forward(self, x, weights, tracing, overwrite=False):
        P, cache = ops.maxpool_forward(x, self.size, self.stride, self.padding)
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
        _, cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
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
        average, _ = ops.avgpool_forward(A, self.size, self.stride, self.padding)
        out.append(Mistake("avgpool_for_max", f"{p}: each window averaged, as avg-pool does, where "
                           "max-pool takes its maximum", {p: average}))  # fmt: skip
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
        P, _ = self.forward(x, {}, False)
        x_padded = np.pad(x, ((0, 0), (0, 0), *((p, p) for p in self.padding)), constant_values=-np.inf)
        at_max = np.zeros(P.shape, dtype=int)
        for _, _, rows, cols in ops._offsets(self.size, P.shape[2:], self.stride):
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
        _, cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
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

    def rules(self):
        words = {"first": "the first maximum in row-major order takes all of it",
                 "all": "every tied maximum takes all of it", "split": "the tied maxima share it equally"}
        return (f"In a pool window whose maxima tie, {words[self.ties]} (dL/d{self.output} back to "
                f"{self.input}).",)  # fmt: skip

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
            return Explained(f"max over the pool window of {a}", terms, "max", notes)
        m, c, r, col = index
        terms, notes, windows = [], [], 0
        Hp, Wp = t.value(p).shape[2:]
        for h, w in self.windows_over(r, col, Hp, Wp):
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


@dataclass(frozen=True)
class AvgPool(Pool):
    """P = AvgPool(A): the mean of each window, padding zeros counted in it."""

    type: ClassVar[str] = "avgpool"
    DESCRIPTION: ClassVar[str] = "The mean of each window."
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("AvgPool",)

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.avgpool_forward(x, self.size, self.stride, self.padding)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        return {self.input_gradient: ops.avgpool_backward(d_out, cache)} if need_input else {}

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[grad(p)]
        n = self.size[0] * self.size[1]
        _, cache = ops.avgpool_forward(A, self.size, self.stride, self.padding)
        _, max_cache = ops.maxpool_forward(A, self.size, self.stride, self.padding)
        return [
            Mistake("avgpool_undivided", f"dL/d{a}: dL/d{p} copied to every cell of its window, "
                    f"without the 1/{n}", {grad(a): ops.avgpool_backward(d, cache) * n}),
            Mistake("avgpool_as_max", f"dL/d{a}: dL/d{p} sent to the window's maximum, as max-pool "
                    "would, instead of spread evenly", {grad(a): ops.maxpool_backward(d, max_cache)}),
            Mistake("maxpool_for_avg", f"{p}: each window's maximum taken, as max-pool does, where "
                    "avg-pool averages", {p: ops.maxpool_forward(A, self.size, self.stride, self.padding)[0]}),
        ]  # fmt: skip

    def stages(self, ctx):
        a, p = self.input, self.output
        n = self.size[0] * self.size[1]
        return [stage(p, "forward", f"AvgPool({a})", None)], [
            grad_stage(a, f"dL/d{p} spread evenly over each window", None,
                   Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"Σ over the windows of each cell of ∂L/∂{p}/{n}",
                        (grad(p),),
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
            return Explained(f"(1/{n})·Σ over the pool window of {a}", terms, None, notes)
        m, c, r, col = index
        Hp, Wp = t.value(p).shape[2:]
        terms = [
            Term((share, t.factor(grad(p), (m, c, h, w))))
            for h, w in self.windows_over(r, col, Hp, Wp)
        ]  # fmt: skip
        notes = [] if terms else [f"{a}[{r},{col}] lies in no pool window: 0"]
        return Explained(f"Σ over the windows that contain this cell of dL/d{p}[window]/{n}", terms, None, notes)


class TiedPool(NamedTuple):
    """A max-pool's cache under another tie rule: ops' cache and the pool's input."""

    pool: Any  # ops.PoolCache
    A: np.ndarray


