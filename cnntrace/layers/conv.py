"""Convolution: Z = conv(X, W) + B, cross-correlation of K filters over C channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cnntrace import ops
from cnntrace.checks import Pair, vector
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Annotation,
    Explained,
    Extra,
    Hand,
    Layer,
    Layout,
    Mistake,
    Rule,
    flag_option,
    grad_stage,
    pair_option,
    stage,
)
from cnntrace.naming import grad, numbered
from cnntrace.ops import output_size
from cnntrace.terms import Term
from cnntrace.text import pair_text, shape_text


@dataclass(frozen=True)
class Conv(Layer):
    """Z = conv(X, W) + B: cross-correlation of K filters over C channels (flip: a true
    convolution, the kernel rotated 180°). W (K, C, kh, kw), B (K,)."""

    type: ClassVar[str] = "conv"
    letter: ClassVar[str] = "Z"
    DESCRIPTION: ClassVar[str] = "Z = conv(input, W) + B; W is K×C×kh×kw (PyTorch's order), K×kh×kw or kh×kw."
    weighted: ClassVar[bool] = True
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True, level_weights=True, live_filters=True)
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("conv", "conv_transpose", "rot180", "pad")
    OPTIONS: ClassVar[dict] = {
        "stride": pair_option(1, 1, "The convolution's stride.", "stride"),
        "padding": pair_option(0, 0, "Zeros added on every side of the input.", "padding"),
        "flip": flag_option(False, "A true convolution: the kernel rotated 180°; false is cross-correlation.", "flip"),
    }

    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    flip: bool = False

    @property
    def W(self) -> str:
        return numbered("W", self.place.number)

    @property
    def B(self) -> str:
        return numbered("B", self.place.number)

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

    def weight_leading(self, name, given):
        return ("filter", "channel")[: given.ndim - 2] if name == self.W else ()

    def reads_channels(self, given):
        return given[self.W].ndim == 4

    def work(self, layouts, weights):
        K, C, kh, kw = weights[self.W].shape
        cells = 1
        for n in layouts[self.output].shape:
            cells *= n
        return kh * kw, cells * C

    def kernel(self, weights):
        W = weights[self.W]
        return W[:, :, ::-1, ::-1] if self.flip else W

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.conv2d_forward(x, self.kernel(weights), weights[self.B], self.stride, self.padding)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        dL_dX, dL_dW, dL_dB = ops.conv2d_backward(d_out, cache, need_dL_dX=need_input)
        if self.flip:
            dL_dW = dL_dW[:, :, ::-1, ::-1]
        out = {grad(self.B): dL_dB, grad(self.W): dL_dW}
        if need_input:
            out[self.input_gradient] = dL_dX
        return out

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        kernel = f"rot180({W})" if self.flip else W
        padded = any(self.padding)
        p = pair_text(self.padding, " by ")
        xs = f"pad({x})" if padded else x
        forward = [stage(z, "forward", f"conv({x}, {kernel}) + {B}", None)]
        d_z = f"∂L/∂{z}"
        chain = ctx.full_chain(f"∂{z}/∂")
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
            grad_stage(B, f"ΣdL/d{z}", None,
                   Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {d_z}", (grad(z),),
                        f"∂{z}/∂{B} = 1 at every position of {z}")),
            grad_stage(W, f"conv({x}, dL/d{z})" if not self.flip else f"rot180(conv({x}, dL/d{z}))",
                   None, Rule(f"∂L/∂{W} = {chain}{W}", dW_simplified, (x, grad(z)), dW_note)),
            grad_stage(x, f"conv_transpose(dL/d{z}, {kernel})", None,
                   Rule(f"∂L/∂{x} = {chain}{x}", dX_simplified, (grad(z), W), dX_note)),
        ]  # fmt: skip
        return forward, backward

    def annotate(self, t):
        if not any(self.padding):
            return {}
        from cnntrace.ops import ConvCache, _pad

        X_padded = _pad(t.value(self.input), self.padding)
        cache = ConvCache(X_padded, self.kernel(t.weights), self.stride, self.padding)
        values = ops.padded_input_gradient(t.value(grad(self.output)), cache)
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
        layout = t.layout(self.input)
        shown = Layout((X_padded.shape[1], *X_padded.shape[2:]), layout.shown, layout.channel)
        presented = values.reshape(shown.user_shape(t.batched, values.shape[0]))
        extra = Extra(f"∂L/∂pad({self.input})", presented, shown, self.padding, outside)
        return {grad(self.input): Annotation(extra=extra)}

    def mistakes(self, values, weights):
        x, z, W = self.input, self.output, self.W
        other = "cross-correlation" if self.flip else "a true convolution (kernel rotated 180°)"
        flipped = {**weights, W: weights[W][:, :, ::-1, ::-1]}
        Z, _ = ops.conv2d_forward(values[x], self.kernel(flipped), weights[self.B], self.stride, self.padding)
        return [
            Mistake("kernel_flipped", f"{z} computed as {other}: the kernel {W} flipped", {z: Z}),
            Mistake("kernel_flipped", f"dL/d{W} flipped 180°, as {other} would give it",
                    {grad(W): values[grad(W)][:, :, ::-1, ::-1]}),
        ]  # fmt: skip

    def _offset(self, i: int, j: int, kh: int, kw: int) -> tuple[int, int]:
        """The kernel entry that meets window offset (i, j): itself, or rotated 180°."""
        return (kh - 1 - i, kw - 1 - j) if self.flip else (i, j)

    def rules(self):
        if self.flip:
            return (f"{self.output} is a true convolution: each kernel is rotated 180° before it slides.",)
        return (f"{self.output} is a cross-correlation: the kernel slides over the input as written, "
                "not flipped.",)  # fmt: skip

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
            return Explained(f"{B} + Σ_{over} {w_index}·{cell}", terms, None, notes)
        if name == grad(B):
            (k,) = index
            M, _, Ho, Wo = t.value(z).shape
            terms = [Term((t.factor(grad(z), (m, k, h, w)),))
                     for m in range(M) for h in range(Ho) for w in range(Wo)]  # fmt: skip
            return Explained(f"Σ_h,w dL/d{z}[h,w]", terms, None, [])
        if name == grad(W):
            k, c, i, j = index
            i, j = self._offset(i, j, kh, kw)  # the window offset this entry met
            M, _, Ho, Wo = t.value(z).shape
            terms = []
            for m in range(M):
                for h in range(Ho):
                    for w in range(Wo):
                        cell = t.padded(x, m, c, h * sh + i - ph, w * sw + j - pw)
                        terms.append(Term((cell, t.factor(grad(z), (m, k, h, w))),
                                          "padding" if cell.symbol != x else ""))  # fmt: skip
            notes = [f"i = {i}, j = {j}, stride s = {s}, padding p = {p}"]
            if any(term.note for term in terms):
                notes.append(padding_note)
            if self.flip:
                notes.append(f"the kernel is flipped: this entry met window offset ({i}, {j})")
            cell = f"{x}[c, h·s + i − p, w·s + j − p]" if channels else f"{x}[h·s + i − p, w·s + j − p]"
            return Explained(f"Σ_h,w {cell}·dL/d{z}[h,w]  (conv({x}, dL/d{z}))", terms, None, notes)
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
                        terms.append(Term((t.factor(grad(z), (m, k, h, w)), weight(k, c, i, j))))
        notes = [f"r = {r}, c = {col}, stride s = {s}, padding p = {p}"]
        if any(self.padding):
            what = "image" if self.place.first else "input"
            notes.append(f"{x}[{r},{col}] is cell [{row},{column}] of the {what} padded by {p}")
        if not terms:
            notes.append(f"no window of the convolution covers {x}[{r},{col}] (stride {s}): 0")
        formula = (f"Σ_k,h,w dL/d{z}[h,w]·{W}[r + p − h·s, c + p − w·s]  "
                   f"(conv_transpose(dL/d{z}, {W}))")  # fmt: skip
        return Explained(formula, terms, None, notes)


