"""Convolution: Z = conv(X, W) + B, cross-correlation of K filters over C channels, with
PyTorch's Conv2d options: stride, padding (also asymmetric, "valid", "same"), dilation,
groups and bias."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntrace import ops
from cnntrace.checks import Pair, vector, whole_number
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Annotation,
    Explained,
    Extra,
    Hand,
    Imported,
    Layout,
    Mistake,
    Option,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    WeightedLayer,
    flag_option,
    grad_stage,
    onnx_window,
    padding_option,
    pair_option,
    stage,
    torch_pair,
)
from cnntrace.naming import grad
from cnntrace.ops import output_size
from cnntrace.terms import Term
from cnntrace.text import pair_text, shape_text


def groups_option(description: str) -> Option:
    """A whole number ≥ 1 that divides the channels in and out (checked by the layer)."""
    return Option(lambda value, key: whole_number(key, value, 1),
                  {"type": "integer", "minimum": 1, "default": 1, "description": description})  # fmt: skip


def pair_or_number(pair: Pair):
    """A pair as an input file writes it: one number when both are the same."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def sides_text(sides: tuple[int, int, int, int]) -> str:
    top, bottom, left, right = sides
    return f"top {top}, bottom {bottom}, left {left}, right {right}"


def span(what: str, first: int, last: int) -> str:
    """'channel 2', or 'channels 2…3' of a run."""
    return f"{what} {first}" if first == last else f"{what}s {first}…{last}"


def tap_text(tap: str, stride: str, dilation: bool, padding: str) -> str:
    """One coordinate of the cell a tap meets: 'h·s + i − p', 'h·s + i·d − p'."""
    return f"{stride} + {tap}{'·d' if dilation else ''} − {padding}"


@dataclass(frozen=True)
class Conv(WeightedLayer):
    """Z = conv(X, W) + B: cross-correlation of K filters over C channels (flip: a true
    convolution, the kernel rotated 180°), the taps ``dilation`` apart; with ``groups`` G,
    filter k reads only its group's C/G channels. W (K, C/G, kh, kw), B (K,) unless no bias."""

    type: ClassVar[str] = "conv"
    DESCRIPTION: ClassVar[str] = ("Z = conv(input, W) + B; W is K×(C/groups)×kh×kw (PyTorch's order), "
                                  "K×kh×kw or kh×kw.")  # fmt: skip
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True, level_weights=True, live_filters=True)
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("conv", "conv_transpose", "rot180", "pad")
    OPTIONS: ClassVar[dict] = {
        "stride": pair_option(1, 1, "The convolution's stride.", "stride"),
        "padding": padding_option("Zeros added around the input: on every side, [rows, cols], [top, bottom, "
                                  "left, right], \"valid\" (none) or \"same\" (the output keeps the input's "
                                  "size, the odd row or column after; stride 1 only, as PyTorch)."),
        "dilation": pair_option(1, 1, "How far apart the kernel's taps are (1: adjacent).", "dilation"),
        "groups": groups_option("Channels and filters in this many groups, each filter reading only its group's "
                                "channels (groups = C: depthwise); it divides both."),
        "bias": flag_option(True, "Whether the layer adds a bias B (false: no B and no dL/dB).", "bias"),
        "flip": flag_option(False, "A true convolution: the kernel rotated 180°; false is cross-correlation.", "flip"),
    }  # fmt: skip

    stride: Pair = (1, 1)
    padding: Pair | tuple[int, int, int, int] | str = (0, 0)  # (rows, cols), four sides, "valid" or "same"
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True
    flip: bool = False

    @property
    def has_bias(self) -> bool:
        return self.bias

    def options(self):
        out = {"type": "conv"}
        if self.stride != (1, 1):
            out["stride"] = pair_or_number(self.stride)
        if isinstance(self.padding, str) or len(self.padding) == 4:
            out["padding"] = self.padding if isinstance(self.padding, str) else list(self.padding)
        elif any(self.padding):
            out["padding"] = pair_or_number(self.padding)
        if self.dilation != (1, 1):
            out["dilation"] = pair_or_number(self.dilation)
        if self.groups != 1:
            out["groups"] = self.groups
        if not self.bias:
            out["bias"] = False
        if self.flip:
            out["flip"] = True
        return out if len(out) > 1 else "conv"

    def describe(self) -> str:
        if isinstance(self.padding, str):
            padding = self.padding
        elif len(self.padding) == 4:
            padding = sides_text(self.padding)
        else:
            padding = pair_text(self.padding)
        text = f"conv (stride {pair_text(self.stride)}, padding {padding}"
        if self.dilation != (1, 1):
            text += f", dilation {pair_text(self.dilation)}"
        if self.groups != 1:
            text += f", {self.groups} groups"
        if not self.bias:
            text += ", no bias"
        return text + (", flipped kernel)" if self.flip else ")")

    # -- the padding and the kernel --------------------------------------------------------------

    def pad(self, kernel: Pair):
        """The padding ops.py takes, for a kh×kw kernel: (rows, cols) when every side is
        alike, else (top, bottom, left, right). "same" pads dilation·(k − 1) in all, the odd
        one after (below, to the right), as PyTorch and TensorFlow."""
        if self.padding == "valid":
            return (0, 0)
        if self.padding != "same":
            return self.padding
        totals = [d * (k - 1) for d, k in zip(self.dilation, kernel)]
        top, left = (total // 2 for total in totals)
        bottom, right = (total - before for total, before in zip(totals, (top, left)))
        return (top, left) if (top, left) == (bottom, right) else (top, bottom, left, right)

    def sides(self, weights) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the padding, for this layer's weights."""
        return ops.sides(self.pad(weights[self.W].shape[2:]))

    def kernel(self, weights):
        W = weights[self.W]
        return W[:, :, ::-1, ::-1] if self.flip else W

    def bias_of(self, weights):
        return weights[self.B] if self.bias else None

    # -- shapes ----------------------------------------------------------------------------------

    def infer(self, layout, given):
        W = given[self.W]
        if layout.form != "map":
            raise InputError(
                f"a conv layer needs maps (C×H×W per image), but it gets {layout.form}s of "
                f"{shape_text(layout.shape)}; a conv comes before the flatten",
                key=self.place.key(),
            )
        C, H, Wd = layout.shape
        G = self.groups
        if W.ndim not in (2, 3, 4) or 0 in W.shape:
            raise InputError(
                f"expected a kh×kw filter, K×kh×kw filters or K×C×kh×kw (PyTorch's order), "
                f"got shape {shape_text(W.shape)}",
                key=self.W,
            )
        what = "X has" if self.place.first else f"{self.input} has"
        channels = f"{C}{layout.fixed_by()}"  # the key that fixed them, too: one of the two is wrong
        if C % G:
            raise InputError(f"{G} groups must divide the channels, and {what} {channels}",
                             key=self.place.key("groups"))  # fmt: skip
        K = W.shape[0] if W.ndim >= 3 else 1
        if K % G:
            raise InputError(f"{G} groups must divide the filters, and W has {K} (W is "
                             f"{shape_text(W.shape)})", key=self.place.key("groups"))  # fmt: skip
        if W.ndim < 4 and C != 1:
            expected = f"K×{C}×kh×kw" if G == 1 else f"K×{C // G}×kh×kw (C/groups = {C}/{G})"
            raise InputError(f"the layer gets {channels} channels, so W is {expected}; got shape "
                             f"{shape_text(W.shape)}", key=self.W)  # fmt: skip
        if W.ndim == 4 and W.shape[1] != C // G:
            if G == 1:
                message = f"W is K×C×kh×kw with C = {W.shape[1]} channels, but {what} {channels}"
            else:
                message = (f"W is K×(C/groups)×kh×kw, and {what} {channels} channels in {G} groups: "
                           f"K×{C // G}×kh×kw, got shape {shape_text(W.shape)}")  # fmt: skip
            raise InputError(message, key=self.W)
        if self.padding == "same" and self.stride != (1, 1):
            raise InputError(f"\"same\" padding needs stride 1 (PyTorch refuses it for a strided convolution), "
                             f"and the stride is {pair_text(self.stride)}", key=self.place.key("padding"))  # fmt: skip
        kh, kw = W.shape[-2:]
        top, bottom, left, right = ops.sides(self.pad((kh, kw)))
        Hp, Wp = H + top + bottom, Wd + left + right
        reach = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, (kh, kw)))
        if reach[0] > Hp or reach[1] > Wp:
            pad = pair_text((top, left)) if (top, left) == (bottom, right) else sides_text((top, bottom, left, right))
            dilated = f", dilated {pair_text(self.dilation)} to {reach[0]}×{reach[1]}," if reach != (kh, kw) else ""
            raise InputError(
                f"the {kh}×{kw} kernel{dilated} is larger than the {Hp}×{Wp} padded "
                f"{'image' if self.place.first else 'input'} "
                f"({self.input} is {H}×{Wd}, padding {pad})",
                key=self.W,
            )
        weights = {self.W: W.reshape(K, C // G, kh, kw)}
        sized_by = f"{self.W} ({shape_text(W.shape)}) has {K} filter{'s' * (K > 1)}"
        if self.bias:
            weights[self.B] = vector(self.B, given[self.B], K, "bias" if K == 1 else "biases, one per filter",
                                     sized_by).copy()
        out = (K, output_size(Hp, kh, self.stride[0], self.dilation[0]),
               output_size(Wp, kw, self.stride[1], self.dilation[1]))  # fmt: skip
        return Layout(out, shown=W.ndim >= 3, sized_by=sized_by), weights

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

    # -- the pass --------------------------------------------------------------------------------

    def forward(self, x, weights, tracing, overwrite=False):
        W = self.kernel(weights)
        return ops.conv2d_forward(x, W, self.bias_of(weights), self.stride, self.pad(W.shape[2:]),
                                  self.dilation, self.groups)  # fmt: skip

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        dL_dX, dL_dW, dL_dB = ops.conv2d_backward(d_out, cache, need_dL_dX=need_input)
        if self.flip:
            dL_dW = dL_dW[:, :, ::-1, ::-1]
        out = {grad(self.B): dL_dB} if self.bias else {}
        out[grad(self.W)] = dL_dW
        if need_input:
            out[self.input_gradient] = dL_dX
        return out

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        kernel = f"rot180({W})" if self.flip else W
        padded = self.padding == "same" or any(self.pad((1, 1)))
        if self.padding == "same":
            p = "dilation·(k − 1) in all, the odd one after (\"same\")"
        elif len(self.padding) == 4:
            p = sides_text(self.padding)
        else:
            p = pair_text(self.padding, " by ")
        xs = f"pad({x})" if padded else x
        forward = [stage(z, "forward", f"conv({x}, {kernel})" + (f" + {B}" if self.bias else ""), None)]
        d_z = f"∂L/∂{z}"
        chain = ctx.full_chain(f"∂{z}/∂")
        dW_simplified = f"conv({xs}, {d_z})"
        dW_note = f"each entry of dL/d{W} is a sum of products of {x} and dL/d{z} (see `cnntrace explain`)"
        if self.flip:
            dW_simplified = f"rot180(conv({xs}, {d_z}))"
            dW_note += "; the kernel is flipped in the pass, so its gradient is flipped back"
        if padded:
            dW_note += f"; pad({x}) is {x} inside a border of zeros {p} wide, which add nothing"
        if self.dilation != (1, 1):
            dW_note += (f"; the taps are {pair_text(self.dilation)} cells apart, so each weight meets the "
                        f"cells of {x} that far from its neighbours'")  # fmt: skip
        if self.groups != 1:
            dW_note += (f"; in {self.groups} groups, a filter's weights meet only its group's channels of {x}")
        dX_simplified = f"conv_transpose({d_z}, {kernel})" + (" without its border" if padded else "")
        dX_note = f"each dL/d{z} entry is sent back to the cells of {x} its window covered, times {W}"
        if padded:
            dX_note += (f"; the windows also covered the padding, a border {p} wide: "
                        f"its share, the border of ∂L/∂pad({x}) below, is dropped")  # fmt: skip
        if self.dilation != (1, 1):
            dX_note += f"; the window's taps are {pair_text(self.dilation)} cells apart"
        if self.groups != 1:
            dX_note += f"; a channel of {x} takes back only from its group's filters"
        backward = [
            grad_stage(W, f"conv({x}, dL/d{z})" if not self.flip else f"rot180(conv({x}, dL/d{z}))",
                   None, Rule(f"∂L/∂{W} = {chain}{W}", dW_simplified, (x, grad(z)), dW_note)),
            grad_stage(x, f"conv_transpose(dL/d{z}, {kernel})", None,
                   Rule(f"∂L/∂{x} = {chain}{x}", dX_simplified, (grad(z), W), dX_note)),
        ]  # fmt: skip
        if self.bias:
            backward.insert(0, grad_stage(B, f"ΣdL/d{z}", None,
                                          Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {d_z}", (grad(z),),
                                               f"∂{z}/∂{B} = 1 at every position of {z}")))  # fmt: skip
        return forward, backward

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("Conv2d",)
    ONNX: ClassVar[tuple[str, ...]] = ("Conv",)

    _TORCH_HELPER: ClassVar[str] = '''
class PaddedConv2d(nn.Conv2d):
    """A conv whose padding differs by side, (top, bottom, left, right): F.pad first, as
    PyTorch's Conv2d pads opposite sides alike; with ``flip``, the kernel rotated 180 degrees."""

    def __init__(self, *args, sides, flip=False, **options):
        super().__init__(*args, padding=0, **options)
        self.sides, self.flip = sides, flip

    def forward(self, x):
        top, bottom, left, right = self.sides
        weight = self.weight.flip(-1, -2) if self.flip else self.weight
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), weight, self.bias)
'''

    def torch_form(self, t):
        K, C_group, kh, kw = t.weights[self.W].shape
        padding = self.pad((kh, kw))
        params = ((self.W, "weight", False), (self.B, "bias", False)) if self.bias else ((self.W, "weight", False),)
        shape = f"{C_group * self.groups}, {K}, ({kh}, {kw}), stride={self.stride}"
        options = f"dilation={self.dilation}, groups={self.groups}, bias={self.bias}"
        if len(padding) == 4:
            return TorchForm(f"PaddedConv2d({shape}, sides={tuple(padding)}, flip={self.flip}, {options})", params,
                             helpers=self._TORCH_HELPER)  # fmt: skip
        module = "FlippedConv2d" if self.flip else "nn.Conv2d"  # FlippedConv2d: the script's, W rotated 180°
        return TorchForm(f"{module}({shape}, padding={tuple(padding)}, {options})", params)

    @classmethod
    def _imported(cls, W, B, stride, padding, dilation=(1, 1), groups=1) -> Imported:
        description = {"type": cls.type}
        if tuple(stride) != (1, 1):
            description["stride"] = list(stride)
        if isinstance(padding, str) or any(padding):
            description["padding"] = padding if isinstance(padding, str) else list(padding)
        if tuple(dilation) != (1, 1):
            description["dilation"] = list(dilation)
        if groups != 1:
            description["groups"] = groups
        if B is None:  # Conv2d(bias=False)
            description["bias"] = False
        return Imported(description if len(description) > 1 else cls.type, (W,) if B is None else (W, B))

    @classmethod
    def from_torch(cls, module, array):
        if module.padding_mode != "zeros":
            raise Refused(f"Conv2d with padding_mode {module.padding_mode!r}")
        padding = module.padding
        padding = padding if isinstance(padding, str) else torch_pair(padding)
        W = array(module.weight)
        return cls._imported(W, None if module.bias is None else array(module.bias), torch_pair(module.stride),
                             padding, torch_pair(module.dilation), module.groups)  # fmt: skip

    @classmethod
    def from_state(cls, tensors):
        if "weight" not in tensors or tensors["weight"].ndim != 4:
            raise Refused("a conv's weight is K×C×kh×kw (Conv2d's)")
        # The file's layer says whether it has a bias: without one in the state_dict, zeros
        # stand for it where the file's conv has one.
        bias = tensors.get("bias", np.zeros(tensors["weight"].shape[0]))
        return cls._imported(tensors["weight"], bias, (1, 1), (0, 0))

    @classmethod
    def from_onnx(cls, node):
        window = onnx_window(node, allow=("dilations", "sides", "same"))
        if window["padding"] == "same" and window["stride"] != (1, 1):
            # ONNX's SAME_UPPER pads for ceil(size/stride); cnntrace's "same", as PyTorch's, for stride 1.
            raise Refused(f"Conv with auto_pad SAME_UPPER and strides {list(window['stride'])}")
        W, *rest = node.inputs
        if W is None or (rest and rest[0] is None):
            raise Refused("Conv whose weights are not constants")
        if tuple(window["kernel"]) != W.shape[2:]:
            raise Refused(f"Conv whose kernel_shape {list(window['kernel'])} is not its weights' {list(W.shape[2:])}")
        return cls._imported(W, rest[0] if rest else None, window["stride"], window["padding"], window["dilation"],
                             node.attributes.get("group", 1))  # fmt: skip

    def onnx_nodes(self, t, x, y):
        if self.flip:
            raise InputError("a conv with flip has no ONNX form: ONNX's Conv is a cross-correlation",
                             key=self.place.key("flip"))  # fmt: skip
        W = t.weights[self.W]
        top, bottom, left, right = self.sides(t.weights)
        attributes = {"kernel_shape": list(W.shape[2:]), "strides": list(self.stride),
                      "pads": [top, left, bottom, right], "dilations": list(self.dilation), "group": self.groups}  # fmt: skip
        weights = {self.W: W, **({self.B: t.weights[self.B]} if self.bias else {})}
        return [("Conv", [x, *weights], [y], attributes)], weights

    def annotate(self, t):
        padding = self.pad(t.weights[self.W].shape[2:])
        top, bottom, left, right = ops.sides(padding)
        if not (top or bottom or left or right):
            return {}
        # The cache a pass would keep, made here without windows, so that the padded input's
        # gradient comes from the offset loop as dL/dX does (the same sums, bit for bit).
        X_padded = ops._pad(t.value(self.input), padding)
        cache = ops.ConvCache(X_padded, self.kernel(t.weights), self.stride, padding, None, self.dilation, self.groups)
        values = ops.padded_input_gradient(t.value(grad(self.output)), cache)
        H, W = X_padded.shape[2] - top - bottom, X_padded.shape[3] - left - right
        outside = [f"{what} {' and '.join(spans)}" for what, spans in (
            ("rows", _border_spans(top, bottom, H)), ("columns", _border_spans(left, right, W))) if spans]  # fmt: skip
        layout = t.layout(self.input)
        shown = Layout((X_padded.shape[1], *X_padded.shape[2:]), layout.shown, layout.channel)
        presented = values.reshape(shown.user_shape(t.batched, values.shape[0]))
        extra = Extra(f"∂L/∂pad({self.input})", presented, shown, (top, bottom, left, right),
                      f"in italics, the padding: {', '.join(outside)}")  # fmt: skip
        return {grad(self.input): Annotation(extra=extra)}

    # -- mistakes --------------------------------------------------------------------------------

    def mistakes(self, values, weights):
        x, z, W = self.input, self.output, self.W
        X = values[x]
        padding = self.pad(weights[W].shape[2:])
        other = "cross-correlation" if self.flip else "a true convolution (kernel rotated 180°)"
        flipped = {**weights, W: weights[W][:, :, ::-1, ::-1]}
        Z, _ = ops.conv2d_forward(X, self.kernel(flipped), self.bias_of(weights), self.stride, padding,
                                  self.dilation, self.groups)  # fmt: skip
        # dL/dX sends each dL/dZ entry back through the kernel as the window met it: code that
        # writes it as a full cross-correlation and forgets to rotate W 180° gets this.
        unrotated = ops.ConvCache(ops._pad(X, padding), self.kernel(weights)[:, :, ::-1, ::-1], self.stride,
                                  padding, None, self.dilation, self.groups)  # fmt: skip
        dL_dX_unrotated, _, _ = ops.conv2d_backward(values[grad(z)], unrotated)
        found = [
            Mistake("kernel_flipped", f"{z} computed as {other}: the kernel {W} flipped", {z: Z}),
            Mistake("kernel_flipped", f"dL/d{W} flipped 180°, as {other} would give it",
                    {grad(W): values[grad(W)][:, :, ::-1, ::-1]}),
            Mistake("conv_input_gradient_kernel_not_rotated",
                    f"dL/d{x} as the full cross-correlation of dL/d{z} with {W} not rotated 180°",
                    {grad(x): dL_dX_unrotated}),
        ]  # fmt: skip
        if values[grad(W)].shape[-1] == values[grad(W)].shape[-2]:
            found.append(Mistake("conv_weight_gradient_transposed", f"dL/d{W} with each kernel's rows and columns swapped",
                                 {grad(W): values[grad(W)].swapaxes(-1, -2)}))  # fmt: skip
        d_z = values[grad(z)]
        if self.dilation != (1, 1):
            # The taps adjacent, at the right output positions: the undilated windows' corners.
            kernel = self.kernel(weights)
            Ho, Wo = d_z.shape[2:]
            Z_adjacent, _ = ops.conv2d_forward(X, kernel, self.bias_of(weights), self.stride, padding, (1, 1),
                                               self.groups)  # fmt: skip
            adjacent = ops.ConvCache(ops._pad(X, padding), kernel, self.stride, padding, None, (1, 1), self.groups)
            dL_dX, dL_dW, _ = ops.conv2d_backward(d_z, adjacent)
            if self.flip:
                dL_dW = dL_dW[:, :, ::-1, ::-1]
            message = f"the dilation {pair_text(self.dilation)} ignored: the kernel's taps taken adjacent"
            found += [
                Mistake("dilation_ignored", f"{z}: {message}", {z: Z_adjacent[:, :, :Ho, :Wo]}),
                Mistake("dilation_ignored", f"dL/d{W}: {message}", {grad(W): dL_dW}),
            ]
            if grad(x) in values:
                found.append(Mistake("dilation_ignored", f"dL/d{x}: {message}", {grad(x): dL_dX}))
        if self.groups != 1:
            # Every filter laid on the first group's channels: its weights' channel index
            # taken as the input's.
            C_group = weights[W].shape[1]
            first = X[:, :C_group]
            Z_first, cache = ops.conv2d_forward(first, self.kernel(weights), self.bias_of(weights), self.stride,
                                                padding, self.dilation)  # fmt: skip
            dL_dW = ops.conv2d_backward(d_z, cache, need_dL_dX=False)[1]
            if self.flip:
                dL_dW = dL_dW[:, :, ::-1, ::-1]
            message = (f"every filter read channels 0…{C_group - 1} of {x}, the first of the {self.groups} groups, "
                       f"not its own group's")  # fmt: skip
            found += [
                Mistake("groups_ignored", f"{z}: {message}", {z: Z_first}),
                Mistake("groups_ignored", f"dL/d{W}: {message}", {grad(W): dL_dW}),
            ]
        return found

    # -- explain ---------------------------------------------------------------------------------

    def _offset(self, i: int, j: int, kh: int, kw: int) -> tuple[int, int]:
        """The kernel entry that meets window offset (i, j): itself, or rotated 180°."""
        return (kh - 1 - i, kw - 1 - j) if self.flip else (i, j)

    def rules(self):
        if self.flip:
            return (f"{self.output} is a true convolution: each kernel is rotated 180° before it slides.",)
        return (f"{self.output} is a cross-correlation: the kernel slides over the input as written, "
                "not flipped.",)  # fmt: skip

    def terms(self, layouts, weights, name, images):
        K, C_group, kh, kw = weights[self.W].shape
        _, Ho, Wo = layouts[self.output].shape
        if name == self.output:  # the window: every channel of its group, every kernel entry
            return Terms(C_group * kh * kw + 1)
        if name in (grad(self.W), grad(self.B)):  # every output position of every image
            return Terms(images * Ho * Wo)
        if name == grad(self.input):  # the filters of its group over every output position
            return Terms(K // self.groups * kh * kw, K // self.groups * Ho * Wo)
        return super().terms(layouts, weights, name, images)

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        K, C_group, kh, kw = t.value(W).shape
        G = self.groups
        K_group = K // G
        (sh, sw), (dh, dw) = self.stride, self.dilation
        top, bottom, left, right = self.sides(t.weights)
        symmetric = (top, left) == (bottom, right)
        ph, pw = top, left
        s = pair_text(self.stride)
        p = pair_text((top, left)) if symmetric else sides_text((top, bottom, left, right))
        p_rows, p_cols = ("p", "p") if symmetric else ("top", "left")
        dilated = self.dilation != (1, 1)
        settings = f"stride s = {s}" + (f", dilation d = {pair_text(self.dilation)}" if dilated else "")
        settings += f", padding p = {p}" if symmetric else f", padding {p}"
        channels = t.value(x).shape[1] > 1
        grouped = G > 1
        w_index = f"{W}[c,i,j]" if channels else f"{W}[i,j]"
        if self.flip:
            w_index = f"{W}[c,kh−1−i,kw−1−j]" if channels else f"{W}[kh−1−i,kw−1−j]"
        padding_note = f"cells outside {x} are the zero padding"
        row_text = tap_text("i", "h·s", dilated, p_rows)
        col_text = tap_text("j", "w·s", dilated, p_cols)
        channel_text = "g·C/G + c" if grouped else "c"
        cell_text = f"{x}[{channel_text}, {row_text}, {col_text}]" if channels else f"{x}[{row_text}, {col_text}]"
        over_hw, image_cell_text = _over_images(t.value(z).shape[0], cell_text)

        def weight(k, c, i, j):
            return t.factor(W, (k, c, *self._offset(i, j, kh, kw)))

        def group_note(k):
            g = k // K_group
            return (f"filter {k} is in group g = {g} of G = {G}: it reads "
                    f"{span('channel', g * C_group, (g + 1) * C_group - 1)} of {x}")  # fmt: skip

        if name == z:
            m, k, h, w = index
            g = k // K_group
            terms = [Term((t.factor(B, (k,)),))] if self.bias else []
            for c in range(C_group):
                for i in range(kh):
                    for j in range(kw):
                        cell = t.padded(x, m, g * C_group + c, h * sh + i * dh - ph, w * sw + j * dw - pw)
                        terms.append(Term((weight(k, c, i, j), cell), "padding" if cell.symbol != x else ""))
            rows = f"{h * sh - ph}..{h * sh - ph + dh * (kh - 1)}"
            cols = f"{w * sw - pw}..{w * sw - pw + dw * (kw - 1)}"
            window = f"the window over {x} rows {rows}, columns {cols}"
            if dilated:
                window += f", its taps {pair_text(self.dilation, ' by ')} cells apart"
            notes = [f"h = {h}, w = {w}, {settings}: {window}"]
            if grouped:
                notes.append(group_note(k))
            if any(term.note == "padding" for term in terms):
                notes.append(padding_note)
            if self.flip:
                notes.append(f"a true convolution: the kernel is rotated 180° ({W}[kh−1−i,kw−1−j])")
            over = "c,i,j" if channels else "i,j"
            bias = f"{B} + " if self.bias else ""
            return Explained(f"{bias}Σ_{over} {w_index}·{cell_text}", terms, None, notes)
        if name == grad(B):
            (k,) = index
            M, _, Ho, Wo = t.value(z).shape
            terms = [Term((t.factor(grad(z), (m, k, h, w)),))
                     for m in range(M) for h in range(Ho) for w in range(Wo)]  # fmt: skip
            return Explained(f"Σ_{over_hw} dL/d{z}[{over_hw}]", terms, None, [])
        if name == grad(W):
            k, c, i, j = index
            i, j = self._offset(i, j, kh, kw)  # the window offset this entry met
            channel = k // K_group * C_group + c
            M, _, Ho, Wo = t.value(z).shape
            terms = []
            for m in range(M):
                for h in range(Ho):
                    for w in range(Wo):
                        cell = t.padded(x, m, channel, h * sh + i * dh - ph, w * sw + j * dw - pw)
                        terms.append(Term((cell, t.factor(grad(z), (m, k, h, w))),
                                          "padding" if cell.symbol != x else ""))  # fmt: skip
            notes = [f"i = {i}, j = {j}, {settings}"]
            if grouped:
                notes.append(group_note(k) + (f"; its channel c = {c} is channel {channel} of {x}" if C_group > 1 else ""))
            if any(term.note for term in terms):
                notes.append(padding_note)
            if self.flip:
                notes.append(f"the kernel is flipped: this entry met window offset ({i}, {j})")
            return Explained(f"Σ_{over_hw} {image_cell_text}·dL/d{z}[{over_hw}]  (conv({x}, dL/d{z}))", terms, None,
                             notes)  # fmt: skip
        # dL/d(input)
        m, c, r, col = index
        g, c_in_group = divmod(c, C_group)
        terms = []
        row, column = r + ph, col + pw  # in the padded input
        Ho, Wo = t.value(z).shape[2:]
        for k in range(g * K_group, (g + 1) * K_group):
            for h in range(Ho):
                for w in range(Wo):
                    i, i_rest = divmod(row - h * sh, dh)
                    j, j_rest = divmod(column - w * sw, dw)
                    if not (i_rest or j_rest) and 0 <= i < kh and 0 <= j < kw:
                        terms.append(Term((t.factor(grad(z), (m, k, h, w)), weight(k, c_in_group, i, j))))
        notes = [f"r = {r}, c = {col}, {settings}"]
        if grouped:
            notes.append(f"channel {c} of {x} is in group {g} of {G}: only "
                         f"{span('filter', g * K_group, (g + 1) * K_group - 1)} read it, with their channel "
                         f"{c_in_group}")  # fmt: skip
        if top or bottom or left or right:
            what = "image" if self.place.first else "input"
            notes.append(f"{x}[{r},{col}] is cell [{row},{column}] of the {what} padded by {p}")
        if not terms and dilated:
            notes.append(f"no tap of the convolution's windows lands on {x}[{r},{col}] (stride {s}, dilation "
                         f"{pair_text(self.dilation)}): 0")  # fmt: skip
        elif not terms:
            notes.append(f"no window of the convolution covers {x}[{r},{col}] (stride {s}): 0")
        i_text = f"(r + {p_rows} − h·s)/d" if dilated else f"r + {p_rows} − h·s"
        j_text = f"(c + {p_cols} − w·s)/d" if dilated else f"c + {p_cols} − w·s"
        formula = (f"Σ_k,h,w dL/d{z}[h,w]·{W}[{i_text}, {j_text}]  "
                   f"(conv_transpose(dL/d{z}, {W}))")  # fmt: skip
        if dilated:
            notes.append(f"only the taps that land on the cell count: where {i_text} and {j_text} are whole")
        return Explained(formula, terms, None, notes)

    def recipe(self, t, name):
        x, z, W, B = self.input, self.output, self.W, self.B
        top, bottom, left, right = self.sides(t.weights)
        symmetric = (top, left) == (bottom, right)
        s, dilated = pair_text(self.stride), self.dilation != (1, 1)
        p = pair_text((top, left)) if symmetric else sides_text((top, bottom, left, right))
        p_rows, p_cols = ("p", "p") if symmetric else ("top", "left")
        settings = f"stride s = {s}" + (f", dilation d = {pair_text(self.dilation)}" if dilated else "")
        settings += f", padding p = {p}" if symmetric else f", padding {p}"
        channels = t.value(x).shape[1] > 1
        w_index = f"{W}[c,i,j]" if channels else f"{W}[i,j]"
        if self.flip:
            w_index = f"{W}[c,kh−1−i,kw−1−j]" if channels else f"{W}[kh−1−i,kw−1−j]"
        row_text, col_text = tap_text("i", "h·s", dilated, p_rows), tap_text("j", "w·s", dilated, p_cols)
        channel_text = "g·C/G + c" if self.groups > 1 else "c"
        cell_text = f"{x}[{channel_text}, {row_text}, {col_text}]" if channels else f"{x}[{row_text}, {col_text}]"
        i_text = f"(r + {p_rows} − h·s)/d" if dilated else f"r + {p_rows} − h·s"
        j_text = f"(c + {p_cols} − w·s)/d" if dilated else f"c + {p_cols} − w·s"
        over = "c,i,j" if channels else "i,j"
        over_hw, image_cell_text = _over_images(t.value(z).shape[0], cell_text)
        formulas = {
            z: f"{B + ' + ' if self.bias else ''}Σ_{over} {w_index}·{cell_text}",
            grad(B): f"Σ_{over_hw} dL/d{z}[{over_hw}]",
            grad(W): f"Σ_{over_hw} {image_cell_text}·dL/d{z}[{over_hw}]  (conv({x}, dL/d{z}))",
            grad(x): f"Σ_k,h,w dL/d{z}[h,w]·{W}[{i_text}, {j_text}]  (conv_transpose(dL/d{z}, {W}))",
        }
        reads = {z: (x, W, B) if self.bias else (x, W), grad(B): (grad(z),), grad(W): (x, grad(z)),
                 grad(x): (grad(z), W)}[name]  # fmt: skip
        p = {"x": x, "z": z, "W": W, "B": B, "gz": grad(z), "gB": grad(B), "gW": grad(W), "bias": self.bias,
             "stride": list(self.stride), "dilation": list(self.dilation), "padding": [top, left],
             "padded": bool(top or bottom or left or right), "settings": settings, "p": p, "s": s,
             "dilated": dilated, "dilation_text": pair_text(self.dilation), "dilation_by": pair_text(self.dilation, " by "),
             "what": "image" if self.place.first else "input", "i_text": i_text, "j_text": j_text,
             "shape": list(t.value(z).shape), "kernel": list(t.value(W).shape), "formula": formulas[name],
             "groups": self.groups, "flip": self.flip}  # fmt: skip
        return Recipe(RECIPE, p, reads)


def _border_spans(before: int, after: int, size: int) -> list[str]:
    """The padded rows (or columns) on either side of ``size`` real ones: ["−2…−1", "5…5"]."""
    return ([f"−{before}…−1"] if before else []) + ([f"{size}…{size + after - 1}"] if after else [])


def _over_images(images: int, cell_text: str) -> tuple[str, str]:
    """What dL/dW's and dL/dB's sums run over, and the input cell a term reads: over every
    position of every image of a batch (``m,h,w``, the cell's index starting with ``m``)."""
    if images == 1:
        return "h,w", cell_text
    symbol, at = cell_text.split("[", 1)
    return "m,h,w", f"{symbol}[m, {at}"


#: Explain's loops above, in the page's JavaScript (layers.base.Recipe).
RECIPE = """function (t, p, name, i) {
  var sh = p.stride[0], sw = p.stride[1], dh = p.dilation[0], dw = p.dilation[1], ph = p.padding[0], pw = p.padding[1];
  var C = p.kernel[1], kh = p.kernel[2], kw = p.kernel[3], M = p.shape[0], K = p.shape[1], Ho = p.shape[2], Wo = p.shape[3];
  var G = p.groups, Kg = K / G, terms = [], notes = [], padding = false, m, k, h, w, c, a, b, cell;
  function span(what, first, last) { return first === last ? what + " " + first : what + "s " + first + "…" + last; }
  function weight(k, c, a, b) { return p.flip ? t.factor(p.W, [k, c, kh - 1 - a, kw - 1 - b]) : t.factor(p.W, [k, c, a, b]); }
  function groupNote(k) {
    var g = Math.floor(k / Kg);
    return "filter " + k + " is in group g = " + g + " of G = " + G + ": it reads " + span("channel", g * C, (g + 1) * C - 1) +
      " of " + p.x;
  }
  if (name === p.z) {
    m = i[0]; k = i[1]; h = i[2]; w = i[3];
    var g = Math.floor(k / Kg);
    if (p.bias) { terms.push(t.term([t.factor(p.B, [k])])); }
    for (c = 0; c < C; c++) {
      for (a = 0; a < kh; a++) {
        for (b = 0; b < kw; b++) {
          cell = t.padded(p.x, m, g * C + c, h * sh + a * dh - ph, w * sw + b * dw - pw);
          padding = padding || cell.symbol !== p.x;
          terms.push(t.term([weight(k, c, a, b), cell], cell.symbol !== p.x ? "padding" : ""));
        }
      }
    }
    var window = "the window over " + p.x + " rows " + (h * sh - ph) + ".." + (h * sh - ph + dh * (kh - 1)) +
      ", columns " + (w * sw - pw) + ".." + (w * sw - pw + dw * (kw - 1));
    if (p.dilated) { window += ", its taps " + p.dilation_by + " cells apart"; }
    notes.push("h = " + h + ", w = " + w + ", " + p.settings + ": " + window);
    if (G > 1) { notes.push(groupNote(k)); }
    if (padding) { notes.push("cells outside " + p.x + " are the zero padding"); }
    if (p.flip) { notes.push("a true convolution: the kernel is rotated 180° (" + p.W + "[kh−1−i,kw−1−j])"); }
  } else if (name === p.gB) {
    k = i[0];
    for (m = 0; m < M; m++) { for (h = 0; h < Ho; h++) { for (w = 0; w < Wo; w++) { terms.push(t.term([t.factor(p.gz, [m, k, h, w])])); } } }
  } else if (name === p.gW) {
    k = i[0]; c = i[1];
    a = p.flip ? kh - 1 - i[2] : i[2]; b = p.flip ? kw - 1 - i[3] : i[3];  // the window offset it met
    var channel = Math.floor(k / Kg) * C + c;
    for (m = 0; m < M; m++) {
      for (h = 0; h < Ho; h++) {
        for (w = 0; w < Wo; w++) {
          cell = t.padded(p.x, m, channel, h * sh + a * dh - ph, w * sw + b * dw - pw);
          padding = padding || cell.symbol !== p.x;
          terms.push(t.term([cell, t.factor(p.gz, [m, k, h, w])], cell.symbol !== p.x ? "padding" : ""));
        }
      }
    }
    notes.push("i = " + a + ", j = " + b + ", " + p.settings);
    if (G > 1) { notes.push(groupNote(k) + (C > 1 ? "; its channel c = " + c + " is channel " + channel + " of " + p.x : "")); }
    if (padding) { notes.push("cells outside " + p.x + " are the zero padding"); }
    if (p.flip) { notes.push("the kernel is flipped: this entry met window offset (" + a + ", " + b + ")"); }
  } else {
    m = i[0];
    var r = i[2], col = i[3], row = r + ph, column = col + pw, group = Math.floor(i[1] / C);
    c = i[1] - group * C;
    for (k = group * Kg; k < (group + 1) * Kg; k++) {
      for (h = 0; h < Ho; h++) {
        for (w = 0; w < Wo; w++) {
          var di = row - h * sh, dj = column - w * sw;
          a = Math.floor(di / dh); b = Math.floor(dj / dw);
          if (di - a * dh === 0 && dj - b * dw === 0 && a >= 0 && a < kh && b >= 0 && b < kw) {
            terms.push(t.term([t.factor(p.gz, [m, k, h, w]), weight(k, c, a, b)]));
          }
        }
      }
    }
    notes.push("r = " + r + ", c = " + col + ", " + p.settings);
    if (G > 1) {
      notes.push("channel " + i[1] + " of " + p.x + " is in group " + group + " of " + G + ": only " +
                 span("filter", group * Kg, (group + 1) * Kg - 1) + " read it, with their channel " + c);
    }
    if (p.padded) { notes.push(p.x + "[" + r + "," + col + "] is cell [" + row + "," + column + "] of the " + p.what + " padded by " + p.p); }
    if (!terms.length && p.dilated) {
      notes.push("no tap of the convolution's windows lands on " + p.x + "[" + r + "," + col + "] (stride " + p.s + ", dilation " + p.dilation_text + "): 0");
    } else if (!terms.length) {
      notes.push("no window of the convolution covers " + p.x + "[" + r + "," + col + "] (stride " + p.s + "): 0");
    }
    if (p.dilated) { notes.push("only the taps that land on the cell count: where " + p.i_text + " and " + p.j_text + " are whole"); }
  }
  return { formula: p.formula, terms: terms, notes: notes };
}"""
