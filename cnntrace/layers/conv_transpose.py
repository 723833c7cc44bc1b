"""Transposed convolution: Z = conv_transpose(X, W) + B, PyTorch's ConvTranspose2d. Each input
cell scatters its value times the kernel onto the output, ``stride`` cells apart."""

from __future__ import annotations

import math
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
    Imported,
    Layout,
    Mistake,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    WeightedLayer,
    flag_option,
    grad_stage,
    onnx_window_attributes,
    pair_option,
    stage,
    torch_pair,
)
from cnntrace.layers.conv import groups_option, pair_or_number, span
from cnntrace.naming import grad
from cnntrace.ops import conv_transpose_size
from cnntrace.terms import Term
from cnntrace.text import pair_text, shape_text


@dataclass(frozen=True)
class ConvTranspose(WeightedLayer):
    """Z[m, g·K/G + k, h·s + i·d − p, w·s + j·d − p] += X[m,c,h,w]·W[c,k,i,j] for every channel c
    of group g, + B: the convolution's dL/dX with X in the place of dL/dZ. W (C, K/G, kh, kw)
    as PyTorch stores it, B (K,) unless no bias."""

    type: ClassVar[str] = "conv_transpose"
    DESCRIPTION: ClassVar[str] = ("Z = conv_transpose(input, W) + B, PyTorch's ConvTranspose2d; W is "
                                  "C×(K/groups)×kh×kw (PyTorch's order) or kh×kw.")  # fmt: skip
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True, level_weights=True)
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("conv", "conv_transpose", "pad")
    OPTIONS: ClassVar[dict] = {
        "stride": pair_option(1, 1, "How far apart two input cells' kernels land on the output.", "stride"),
        "padding": pair_option(0, 0, "Rows and columns cropped off every side of the output "
                               "(dilation·(k − 1) − padding zeros around the input, seen as a convolution).",
                               "padding"),
        "output_padding": pair_option(0, 0, "Rows and columns added at the bottom and right of the output; "
                                      "smaller than the stride or the dilation, as PyTorch.", "output_padding"),
        "dilation": pair_option(1, 1, "How far apart the kernel's taps land (1: adjacent).", "dilation"),
        "groups": groups_option("Channels and filters in this many groups, each input channel reaching only "
                                "its group's outputs; it divides both."),
        "bias": flag_option(True, "Whether the layer adds a bias B (false: no B and no dL/dB).", "bias"),
    }  # fmt: skip

    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True

    @property
    def has_bias(self) -> bool:
        return self.bias

    def options(self):
        out = {"type": self.type}
        for option, default in (("stride", (1, 1)), ("padding", (0, 0)), ("output_padding", (0, 0)),
                                ("dilation", (1, 1))):  # fmt: skip
            if getattr(self, option) != default:
                out[option] = pair_or_number(getattr(self, option))
        if self.groups != 1:
            out["groups"] = self.groups
        if not self.bias:
            out["bias"] = False
        return out if len(out) > 1 else self.type

    def describe(self) -> str:
        text = f"conv_transpose (stride {pair_text(self.stride)}, padding {pair_text(self.padding)}"
        if any(self.output_padding):
            text += f", output padding {pair_text(self.output_padding)}"
        if self.dilation != (1, 1):
            text += f", dilation {pair_text(self.dilation)}"
        if self.groups != 1:
            text += f", {self.groups} groups"
        return text + (", no bias)" if not self.bias else ")")

    def infer(self, layout, given):
        W = given[self.W]
        if layout.form != "map":
            raise InputError(f"a conv_transpose layer needs maps (C×H×W per image), but it gets {layout.form}s "
                             f"of {shape_text(layout.shape)}; it comes before the flatten",
                             key=self.place.key())  # fmt: skip
        C, H, Wd = layout.shape
        G = self.groups
        what = "X has" if self.place.first else f"{self.input} has"
        channels = f"{C}{layout.fixed_by()}"  # the key that fixed them, too: one of the two is wrong
        if W.ndim not in (2, 4) or 0 in W.shape:
            raise InputError(f"expected C×(K/groups)×kh×kw (PyTorch's ConvTranspose2d order) or one kh×kw "
                             f"filter, got shape {shape_text(W.shape)}", key=self.W)  # fmt: skip
        if C % G:
            raise InputError(f"{G} groups must divide the channels, and {what} {channels}",
                             key=self.place.key("groups"))  # fmt: skip
        if W.ndim == 2 and C != 1:
            raise InputError(f"the layer gets {channels} channels, so W is {C}×(K/groups)×kh×kw; got shape "
                             f"{shape_text(W.shape)}", key=self.W)  # fmt: skip
        if W.ndim == 4 and W.shape[0] != C:
            raise InputError(f"W is C×(K/groups)×kh×kw (PyTorch's order) with C = {W.shape[0]} channels, "
                             f"but {what} {channels}", key=self.W)  # fmt: skip
        for axis, side in enumerate(("rows", "columns")):
            if self.output_padding[axis] >= max(self.stride[axis], self.dilation[axis]):
                raise InputError(
                    f"output_padding must be smaller than the stride or the dilation (as PyTorch); its {side} "
                    f"are {self.output_padding[axis]}, the stride {self.stride[axis]}, the dilation "
                    f"{self.dilation[axis]}", key=self.place.key("output_padding"))  # fmt: skip
        K_group, kh, kw = (W.shape[1], *W.shape[2:]) if W.ndim == 4 else (1, *W.shape)
        K = K_group * G
        out = tuple(conv_transpose_size(n, k, s, p, o, d) for n, k, s, p, o, d in
                    zip((H, Wd), (kh, kw), self.stride, self.padding, self.output_padding, self.dilation))  # fmt: skip
        if min(out) < 1:
            raise InputError(f"the padding {pair_text(self.padding)} crops the whole output: (H − 1)·stride + "
                             f"dilation·(k − 1) + output_padding + 1 − 2·padding is {out[0]}×{out[1]}",
                             key=self.place.key("padding"))  # fmt: skip
        weights = {self.W: W.reshape(C, K_group, kh, kw)}
        sized_by = f"{self.W} ({shape_text(W.shape)}) has {K} filter{'s' * (K > 1)}"
        if self.bias:
            weights[self.B] = vector(self.B, given[self.B], K, "bias" if K == 1 else "biases, one per filter",
                                     sized_by).copy()
        return Layout((K, *out), shown=W.ndim == 4, sized_by=sized_by), weights

    def weight_leading(self, name, given):
        return ("channel", "filter")[: given.ndim - 2] if name == self.W else ()

    def reads_channels(self, given):
        return given[self.W].ndim == 4

    def work(self, layouts, weights):
        C, K_group, kh, kw = weights[self.W].shape
        C_, H, W = layouts[self.input].shape
        return kh * kw, H * W * C * K_group

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.conv_transpose2d_forward(x, weights[self.W], weights[self.B] if self.bias else None, self.stride,
                                            self.padding, self.output_padding, self.dilation, self.groups)  # fmt: skip

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        dL_dX, dL_dW, dL_dB = ops.conv_transpose2d_backward(d_out, cache, need_dL_dX=need_input)
        out = {grad(self.B): dL_dB} if self.bias else {}
        out[grad(self.W)] = dL_dW
        if need_input:
            out[self.input_gradient] = dL_dX
        return out

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("ConvTranspose2d",)
    ONNX: ClassVar[tuple[str, ...]] = ("ConvTranspose",)

    def torch_form(self, t):
        C, K_group, kh, kw = t.weights[self.W].shape
        params = ((self.W, "weight", False), (self.B, "bias", False)) if self.bias else ((self.W, "weight", False),)
        return TorchForm(f"nn.ConvTranspose2d({C}, {K_group * self.groups}, ({kh}, {kw}), stride={self.stride}, "
                         f"padding={self.padding}, output_padding={self.output_padding}, groups={self.groups}, "
                         f"bias={self.bias}, dilation={self.dilation})", params)  # fmt: skip

    @classmethod
    def _imported(cls, W, B, **options) -> Imported:
        description = {"type": cls.type}
        for option, value in options.items():
            if option == "groups" and value != 1:
                description[option] = value
            elif option != "groups" and tuple(value) != ((1, 1) if option in ("stride", "dilation") else (0, 0)):
                description[option] = list(value)
        if B is None:  # ConvTranspose2d(bias=False)
            description["bias"] = False
        return Imported(description if len(description) > 1 else cls.type, (W,) if B is None else (W, B))

    @classmethod
    def from_torch(cls, module, array):
        if module.padding_mode != "zeros":
            raise Refused(f"ConvTranspose2d with padding_mode {module.padding_mode!r}")
        return cls._imported(array(module.weight), None if module.bias is None else array(module.bias),
                             stride=torch_pair(module.stride), padding=torch_pair(module.padding),
                             output_padding=torch_pair(module.output_padding),
                             dilation=torch_pair(module.dilation), groups=module.groups)  # fmt: skip

    @classmethod
    def from_state(cls, tensors):
        if "weight" not in tensors or tensors["weight"].ndim != 4:
            raise Refused("a conv_transpose's weight is C×(K/groups)×kh×kw (ConvTranspose2d's)")
        return cls._imported(tensors["weight"], tensors.get("bias"))

    @classmethod
    def from_onnx(cls, node):
        attributes = node.attributes
        if attributes.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise Refused(f"ConvTranspose with auto_pad {attributes['auto_pad']}")
        if "output_shape" in attributes:
            raise Refused(f"ConvTranspose with output_shape {list(attributes['output_shape'])} (give pads instead)")
        W, *rest = node.inputs
        if W is None or (rest and rest[0] is None):
            raise Refused("ConvTranspose whose weights are not constants")
        if W.ndim != 4:
            raise Refused(f"ConvTranspose over {W.ndim - 2} dimensions (cnntrace's maps have 2)")
        if tuple(attributes.get("kernel_shape", W.shape[2:])) != W.shape[2:]:
            raise Refused(f"ConvTranspose whose kernel_shape {list(attributes['kernel_shape'])} is not its "
                          f"weights' {list(W.shape[2:])}")  # fmt: skip
        pads = tuple(attributes.get("pads", (0, 0, 0, 0)))
        if pads[:2] != pads[2:]:
            raise Refused(f"ConvTranspose with pads {list(pads)} (cnntrace crops each side alike)")
        return cls._imported(W, rest[0] if rest else None, stride=tuple(attributes.get("strides", (1, 1))),
                             padding=pads[:2], output_padding=tuple(attributes.get("output_padding", (0, 0))),
                             dilation=tuple(attributes.get("dilations", (1, 1))),
                             groups=attributes.get("group", 1))  # fmt: skip

    def onnx_nodes(self, t, x, y):
        W = t.weights[self.W]
        attributes = {**onnx_window_attributes(W.shape[2:], self.stride, self.padding),
                      "output_padding": list(self.output_padding), "dilations": list(self.dilation),
                      "group": self.groups}  # fmt: skip
        weights = {self.W: W, **({self.B: t.weights[self.B]} if self.bias else {})}
        return [("ConvTranspose", [x, *weights], [y], attributes)], weights

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        d_z = f"∂L/∂{z}"
        chain = ctx.full_chain(f"∂{z}/∂")
        scatter = (f"each cell of {x} sends itself times {W} to a window of {z}, the windows "
                   f"{pair_text(self.stride)} apart")  # fmt: skip
        cropped = any(self.padding) or any(self.output_padding)
        crop = ""
        if any(self.padding):
            crop += f"; the outer {pair_text(self.padding, ' by ')} rows and columns of the scatter are cropped off"
        if any(self.output_padding):
            crop += f"; {pair_text(self.output_padding, ' by ')} more rows and columns at the bottom and right"
        dZ = f"pad({d_z})" if cropped else d_z
        forward = [stage(z, "forward", f"conv_transpose({x}, {W})" + (f" + {B}" if self.bias else ""), None)]
        backward = [
            grad_stage(W, f"conv(dL/d{z}, {x})", None,
                       Rule(f"∂L/∂{W} = {chain}{W}", f"conv({dZ}, {x})", (grad(z), x),
                            f"each entry of dL/d{W} sums the cells of {x} times the dL/d{z} entries its tap "
                            f"sent them to (see `cnntrace explain`){crop}")),
            grad_stage(x, f"conv(dL/d{z}, {W})", None,
                       Rule(f"∂L/∂{x} = {chain}{x}", f"conv({dZ}, {W})", (grad(z), W),
                            f"{scatter}: each cell of {x} takes back the dL/d{z} entries of its window, "
                            f"times the taps that sent it there{crop}")),
        ]  # fmt: skip
        if self.bias:
            backward.insert(0, grad_stage(B, f"ΣdL/d{z}", None,
                                          Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {d_z}", (grad(z),),
                                               f"∂{z}/∂{B} = 1 at every position of {z}")))  # fmt: skip
        return forward, backward

    def annotate(self, t):
        """With padding: the scatter before its border is cropped off, after Z."""
        if not any(self.padding):
            return {}
        x, z = self.input, self.output
        weights = t.weights
        # Without the padding, the scatter is the output with its border: (Ho + 2ph) × (Wo + 2pw).
        full, _ = ops.conv_transpose2d_forward(t.value(x), weights[self.W], weights[self.B] if self.bias else None,
                                               self.stride, (0, 0), self.output_padding, self.dilation,
                                               self.groups)  # fmt: skip
        (ph, pw), (Ho, Wo) = self.padding, t.value(z).shape[2:]
        crops = []
        if ph:
            crops.append(f"rows −{ph}…−1 and {Ho}…{Ho + ph - 1}")
        if pw:
            crops.append(f"columns −{pw}…−1 and {Wo}…{Wo + pw - 1}")
        layout = t.layout(z)
        shown = Layout(full.shape[1:], layout.shown, layout.channel)
        presented = full.reshape(shown.user_shape(t.batched, full.shape[0]))
        note = f"in italics, what the padding {pair_text(self.padding)} crops off: {', '.join(crops)}"
        return {z: Annotation(extra=Extra(f"{z} before the crop", presented, shown, self.padding, note))}

    def mistakes(self, values, weights):
        x, z, W = self.input, self.output, self.W
        flipped = weights[W][:, :, ::-1, ::-1]
        Z, cache = ops.conv_transpose2d_forward(values[x], flipped, weights[self.B] if self.bias else None,
                                                self.stride, self.padding, self.output_padding, self.dilation,
                                                self.groups)  # fmt: skip
        message = (f"as a convolution of the spread-out {x} with the kernel {W} not flipped (the scatter "
                   f"lays {W} rotated 180°)")  # fmt: skip
        found = [Mistake("kernel_not_flipped", f"{z} computed {message}", {z: Z})]
        dL_dX, dL_dW, _ = ops.conv_transpose2d_backward(values[grad(z)], cache)
        found.append(Mistake("kernel_not_flipped", f"dL/d{W} computed {message}", {grad(W): dL_dW[:, :, ::-1, ::-1]}))
        if grad(x) in values:
            found.append(Mistake("kernel_not_flipped", f"dL/d{x} computed {message}", {grad(x): dL_dX}))
        return found

    def terms(self, layouts, weights, name, images):
        C, K_group, kh, kw = weights[self.W].shape
        _, H, Wd = layouts[self.input].shape
        _, Ho, Wo = layouts[self.output].shape
        C_group = C // self.groups
        if name == self.output:
            # The kernel entries that land on one output cell: every s/gcd(s, d)-th along each
            # axis, for each channel of its group; the loops visit every input cell and entry.
            taps = 1
            for k, s, d in zip((kh, kw), self.stride, self.dilation):
                taps *= -(-k // (s // math.gcd(s, d)))
            return Terms(C_group * taps + 1, C_group * H * Wd * kh * kw)
        if name == grad(self.B):
            return Terms(images * Ho * Wo)
        if name == grad(self.W):  # every input position of every image
            return Terms(images * H * Wd)
        if name == grad(self.input):
            return Terms(K_group * kh * kw)
        return super().terms(layouts, weights, name, images)

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        C, K_group, kh, kw = t.value(W).shape
        M, K, Ho, Wo = t.value(z).shape
        H, Wd = t.value(x).shape[2:]
        C_group = C // self.groups
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        settings = f"stride s = {pair_text(self.stride)}, padding p = {pair_text(self.padding)}"
        if self.dilation != (1, 1):
            settings += f", dilation d = {pair_text(self.dilation)}"
        if any(self.output_padding):
            settings += f", output padding {pair_text(self.output_padding)}"
        grouped = self.groups > 1

        def group_of_output(k):
            g = k // K_group
            return g, (f"output channel {k} is filter {k % K_group} of group {g}: it takes from "
                       f"{span('channel', g * C_group, (g + 1) * C_group - 1)} of {x}")  # fmt: skip

        def target(h, w, i, j):
            """The output cell input cell (h, w) sends tap (i, j) to, or None: cropped."""
            row, col = h * sh + i * dh - ph, w * sw + j * dw - pw
            return (row, col) if 0 <= row < Ho and 0 <= col < Wo else None

        if name == z:
            m, k, r, col = index
            g, note = group_of_output(k)
            terms = [Term((t.factor(B, (k,)),))] if self.bias else []
            for c in range(g * C_group, (g + 1) * C_group):
                for h in range(H):
                    for w in range(Wd):
                        for i in range(kh):
                            for j in range(kw):
                                if target(h, w, i, j) == (r, col):
                                    terms.append(Term((t.factor(x, (m, c, h, w)), t.factor(W, (c, k % K_group, i, j)))))
            notes = [f"{settings}: input cell (h, w) sends {x}[h,w]·{W}[i,j] to cell "
                     f"(h·s + i·d − p, w·s + j·d − p) of {z}; these are the ones that land on ({r}, {col})"]  # fmt: skip
            if grouped:
                notes.append(note)
            if len(terms) == self.bias:
                notes.append(f"no input cell's kernel reaches ({r}, {col})")
            bias = f"{B} + " if self.bias else ""
            return Explained(f"{bias}Σ {x}[c,h,w]·{W}[c,k,i,j] over h·s + i·d − p = {r}, w·s + j·d − p = {col}",
                             terms, None, notes)  # fmt: skip
        if name == grad(B):
            (k,) = index
            terms = [Term((t.factor(grad(z), (m, k, h, w)),))
                     for m in range(M) for h in range(Ho) for w in range(Wo)]  # fmt: skip
            return Explained(self._gradient_formulas(M)[0], terms, None, [])
        if name == grad(W):
            c, k_in_group, i, j = index
            k = c // C_group * K_group + k_in_group
            terms = []
            for m in range(M):
                for h in range(H):
                    for w in range(Wd):
                        cell = target(h, w, i, j)
                        if cell is not None:
                            terms.append(Term((t.factor(x, (m, c, h, w)), t.factor(grad(z), (m, k, *cell)))))
            notes = [f"i = {i}, j = {j}, {settings}: tap (i, j) sent {x}[h,w] to "
                     f"{z}[h·s + i·d − p, w·s + j·d − p]"]  # fmt: skip
            if grouped:
                notes.append(f"channel {c} of {x} is in group {c // C_group}: its filter {k_in_group} is "
                             f"output channel {k}")  # fmt: skip
            if len(terms) < M * H * Wd:
                notes.append("the cells whose tap landed in the cropped border add nothing")
            return Explained(self._gradient_formulas(M)[1], terms, None, notes)
        # dL/d(input)
        m, c, h, w = index
        g = c // C_group
        terms = []
        for k_in_group in range(K_group):
            for i in range(kh):
                for j in range(kw):
                    cell = target(h, w, i, j)
                    if cell is not None:
                        terms.append(Term((t.factor(grad(z), (m, g * K_group + k_in_group, *cell)),
                                           t.factor(W, (c, k_in_group, i, j)))))  # fmt: skip
        taps = f", its taps {pair_text(self.dilation, ' by ')} cells apart" if self.dilation != (1, 1) else ""
        notes = [f"h = {h}, w = {w}, {settings}: {x}[{h},{w}] was sent to the window of {z} from "
                 f"({h * sh - ph}, {w * sw - pw}){taps}"]  # fmt: skip
        if grouped:
            notes.append(f"channel {c} of {x} is in group {g}: it reached output "
                         f"{span('channel', g * K_group, (g + 1) * K_group - 1)}")  # fmt: skip
        if len(terms) < K_group * kh * kw:
            notes.append("taps that landed in the cropped border bring nothing back")
        return Explained(f"Σ_k,i,j dL/d{z}[k, h·s + i·d − p, w·s + j·d − p]·{W}[c,k,i,j]  (conv(dL/d{z}, {W}))",
                         terms, None, notes)  # fmt: skip

    def _gradient_formulas(self, images: int) -> tuple[str, str]:
        """dL/dB's and dL/dW's sums, over every position of every image of a batch."""
        x, z = self.input, self.output
        m = "m," if images > 1 else ""
        return (f"Σ_{m}h,w dL/d{z}[{m}h,w]",
                f"Σ_{m}h,w {x}[{m}c,h,w]·dL/d{z}[{m}k, h·s + i·d − p, w·s + j·d − p]")  # fmt: skip

    def recipe(self, t, name):
        x, z, W, B = self.input, self.output, self.W, self.B
        settings = f"stride s = {pair_text(self.stride)}, padding p = {pair_text(self.padding)}"
        if self.dilation != (1, 1):
            settings += f", dilation d = {pair_text(self.dilation)}"
        if any(self.output_padding):
            settings += f", output padding {pair_text(self.output_padding)}"
        formulas = {
            z: f"{B + ' + ' if self.bias else ''}Σ {x}[c,h,w]·{W}[c,k,i,j] over h·s + i·d − p = {{r}}, "
               "w·s + j·d − p = {col}",
            grad(B): self._gradient_formulas(t.value(z).shape[0])[0],
            grad(W): self._gradient_formulas(t.value(z).shape[0])[1],
            grad(x): f"Σ_k,i,j dL/d{z}[k, h·s + i·d − p, w·s + j·d − p]·{W}[c,k,i,j]  (conv(dL/d{z}, {W}))",
        }
        reads = {z: (x, W, B) if self.bias else (x, W), grad(B): (grad(z),), grad(W): (x, grad(z)),
                 grad(x): (grad(z), W)}[name]  # fmt: skip
        p = {"x": x, "z": z, "W": W, "B": B, "gz": grad(z), "gB": grad(B), "gW": grad(W), "bias": self.bias,
             "stride": list(self.stride), "dilation": list(self.dilation), "padding": list(self.padding),
             "groups": self.groups, "settings": settings, "taps": f", its taps {pair_text(self.dilation, ' by ')} cells apart"
             if self.dilation != (1, 1) else "", "formula": formulas[name], "input": list(t.value(x).shape),
             "shape": list(t.value(z).shape), "kernel": list(t.value(W).shape)}  # fmt: skip
        return Recipe(RECIPE, p, reads)


#: ConvTranspose.explain in the page's JavaScript (layers.base.Recipe): each input cell sends
#: X[h,w]·W[i,j] to cell (h·s + i·d − p, w·s + j·d − p) of Z, none past the crop.
RECIPE = """function (t, p, name, i) {
  var sh = p.stride[0], sw = p.stride[1], dh = p.dilation[0], dw = p.dilation[1], ph = p.padding[0], pw = p.padding[1];
  var C = p.kernel[0], Kg = p.kernel[1], kh = p.kernel[2], kw = p.kernel[3], M = p.shape[0], Ho = p.shape[2], Wo = p.shape[3];
  var H = p.input[2], Wd = p.input[3], Cg = C / p.groups, grouped = p.groups > 1, terms = [], notes = [];
  var m, k, c, g, h, w, a, b, cell;
  function span(what, first, last) { return first === last ? what + " " + first : what + "s " + first + "…" + last; }
  function target(h, w, a, b) {
    var row = h * sh + a * dh - ph, col = w * sw + b * dw - pw;
    return row >= 0 && row < Ho && col >= 0 && col < Wo ? [row, col] : null;
  }
  if (name === p.z) {
    m = i[0]; k = i[1]; g = Math.floor(k / Kg);
    var r = i[2], col = i[3];
    if (p.bias) { terms.push(t.term([t.factor(p.B, [k])])); }
    for (c = g * Cg; c < (g + 1) * Cg; c++) {
      for (h = 0; h < H; h++) {
        for (w = 0; w < Wd; w++) {
          for (a = 0; a < kh; a++) {
            for (b = 0; b < kw; b++) {
              cell = target(h, w, a, b);
              if (cell && cell[0] === r && cell[1] === col) {
                terms.push(t.term([t.factor(p.x, [m, c, h, w]), t.factor(p.W, [c, k % Kg, a, b])]));
              }
            }
          }
        }
      }
    }
    notes.push(p.settings + ": input cell (h, w) sends " + p.x + "[h,w]·" + p.W + "[i,j] to cell (h·s + i·d − p, w·s + j·d − p) of " +
               p.z + "; these are the ones that land on (" + r + ", " + col + ")");
    if (grouped) {
      notes.push("output channel " + k + " is filter " + (k % Kg) + " of group " + g + ": it takes from " +
                 span("channel", g * Cg, (g + 1) * Cg - 1) + " of " + p.x);
    }
    if (terms.length === (p.bias ? 1 : 0)) { notes.push("no input cell's kernel reaches (" + r + ", " + col + ")"); }
    return { formula: p.formula.replace("{r}", r).replace("{col}", col), terms: terms, notes: notes };
  }
  if (name === p.gB) {
    k = i[0];
    for (m = 0; m < M; m++) { for (h = 0; h < Ho; h++) { for (w = 0; w < Wo; w++) { terms.push(t.term([t.factor(p.gz, [m, k, h, w])])); } } }
    return { formula: p.formula, terms: terms, notes: [] };
  }
  if (name === p.gW) {
    c = i[0]; a = i[2]; b = i[3]; k = Math.floor(c / Cg) * Kg + i[1];
    for (m = 0; m < M; m++) {
      for (h = 0; h < H; h++) {
        for (w = 0; w < Wd; w++) {
          cell = target(h, w, a, b);
          if (cell) { terms.push(t.term([t.factor(p.x, [m, c, h, w]), t.factor(p.gz, [m, k, cell[0], cell[1]])])); }
        }
      }
    }
    notes.push("i = " + a + ", j = " + b + ", " + p.settings + ": tap (i, j) sent " + p.x + "[h,w] to " + p.z +
               "[h·s + i·d − p, w·s + j·d − p]");
    if (grouped) {
      notes.push("channel " + c + " of " + p.x + " is in group " + Math.floor(c / Cg) + ": its filter " + i[1] +
                 " is output channel " + k);
    }
    if (terms.length < M * H * Wd) { notes.push("the cells whose tap landed in the cropped border add nothing"); }
    return { formula: p.formula, terms: terms, notes: notes };
  }
  m = i[0]; c = i[1]; h = i[2]; w = i[3]; g = Math.floor(c / Cg);
  for (k = 0; k < Kg; k++) {
    for (a = 0; a < kh; a++) {
      for (b = 0; b < kw; b++) {
        cell = target(h, w, a, b);
        if (cell) { terms.push(t.term([t.factor(p.gz, [m, g * Kg + k, cell[0], cell[1]]), t.factor(p.W, [c, k, a, b])])); }
      }
    }
  }
  notes.push("h = " + h + ", w = " + w + ", " + p.settings + ": " + p.x + "[" + h + "," + w + "] was sent to the window of " +
             p.z + " from (" + (h * sh - ph) + ", " + (w * sw - pw) + ")" + p.taps);
  if (grouped) {
    notes.push("channel " + c + " of " + p.x + " is in group " + g + ": it reached output " +
               span("channel", g * Kg, (g + 1) * Kg - 1));
  }
  if (terms.length < Kg * kh * kw) { notes.push("taps that landed in the cropped border bring nothing back"); }
  return { formula: p.formula, terms: terms, notes: notes };
}"""
