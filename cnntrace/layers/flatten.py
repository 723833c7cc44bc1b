"""Flatten: each image's maps as one vector, in a stated order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
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
    TorchForm,
    convention_option,
    grad_stage,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import Term


@dataclass(frozen=True)
class Flatten(Layer):
    """F = flatten(P): each image's maps in row-major order, channel, then row, then column."""

    type: ClassVar[str] = "flatten"
    letter: ClassVar[str] = "F"
    DESCRIPTION: ClassVar[str] = "F: channel, then row, then column; between the last conv block and the first dense layer."
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand(exact=True)
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("flatten", "reshape")
    CONVENTIONS: ClassVar[dict[str, Convention]] = {
        "flatten": Convention("order", ("chw", "hwc"), "The flatten order: chw, or hwc (channels last)."),
    }
    OPTIONS: ClassVar[dict] = {
        "order": convention_option(CONVENTIONS["flatten"], "chw: channel, row, column (PyTorch); hwc: channels last (NHWC code)."),
    }

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
        return Layout((math.prod(layout.shape),), origin=layout.shape, sized_by=layout.sized_by), {}

    _ORDERS: ClassVar[dict] = {
        "chw": (ops.flatten_forward, ops.flatten_backward, "row-major order (channel, row, column)"),
        "hwc": (ops.flatten_channels_last_forward, ops.flatten_channels_last_backward,
                "channels last (row, column, channel), as NHWC code flattens"),
        "column-major": (ops.flatten_column_major_forward, ops.flatten_column_major_backward,
                         "column-major order (column, row, channel), as Fortran or MATLAB flattens"),
    }  # fmt: skip

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("Flatten",)
    #: Reshape only where it makes each image one vector (the ONNX reader checks that a
    #: dense layer follows).
    ONNX: ClassVar[tuple[str, ...]] = ("Flatten", "Reshape")

    #: Each order in PyTorch: the module, and how it reads a general x (M, C, H, W).
    _TORCH: ClassVar[dict] = {
        "chw": "nn.Flatten()",
        "hwc": "Apply(lambda x: x.permute(0, 2, 3, 1).flatten(1))",
        "column-major": "Apply(lambda x: x.permute(0, 3, 2, 1).flatten(1))",
    }

    def torch_form(self, t):
        return TorchForm(self._TORCH[self.order])

    @classmethod
    def from_torch(cls, module, array):
        if (module.start_dim, module.end_dim) != (1, -1):
            raise Refused(f"Flatten from dimension {module.start_dim} to {module.end_dim}")
        return Imported(cls.type)

    #: torch.flatten(x, 1) and x.flatten(1) in a traced module's code.
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("flatten",)

    @classmethod
    def from_torch_call(cls, call):
        start, end = (*call.constants, *(0, -1)[len(call.constants):])[:2]
        start, end = call.options.get("start_dim", start), call.options.get("end_dim", end)
        if (start, end) != (1, -1):
            raise Refused(f"flatten from dimension {start} to {end} (cnntrace flattens each image: 1 to -1)")
        return Imported(cls.type)

    @classmethod
    def from_onnx(cls, node):
        if node.op == "Flatten" and node.attributes.get("axis", 1) != 1:
            raise Refused(f"Flatten with axis {node.attributes['axis']}")
        if node.op == "Reshape":
            shape = node.inputs[0] if node.inputs else None
            if shape is None or shape.size != 2:
                raise Refused("Reshape to anything but one vector per image")
        return Imported(cls.type)

    def onnx_nodes(self, t, x, y):
        if self.order != "chw":
            raise InputError(f"a flatten in {self.order} order has no ONNX form here", key=self.place.key("order"))
        return [("Flatten", [x], [y], {"axis": 1})], {}

    def forward(self, x, weights, tracing, overwrite=False):
        return self._ORDERS[self.order][0](x), x.shape

    def backward(self, d_out, cache, weights, *, need_input, tracing):
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
                               {grad(x): backward(values[grad(f)], values[x].shape)}, switch))  # fmt: skip
        return out

    def stages(self, ctx):
        x, f = self.input, self.output
        return [stage(f, "forward", f"flatten({x})", None)], [
            grad_stage(x, f"reshape(dL/d{f})", None,
                   Rule(f"∂L/∂{x} = ∂L/∂{f} · ∂{f}/∂{x}", f"reshape(∂L/∂{f})", (grad(f),),
                        f"flatten only moves entries: each goes back to its place in {x}")),
        ]  # fmt: skip

    def rules(self):
        if self.order == "hwc":
            return (f"{self.output} reads the maps channels last: row, then column, then channel.",)
        return (f"{self.output} reads the maps in order: channel, then row, then column.",)

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
            return Explained(f"{x} in {words}", [Term((entry,))], None, [f"{f} entry {n} is {entry.label}"])  # fmt: skip
        m, c, h, w = index
        n = (h * W + w) * C + c if last else (c * H + h) * W + w
        words = "channels last" if last else "row-major order"
        return Explained(f"dL/d{f} at the same place in {words}", [Term((t.factor(grad(f), (m, n)),))], None, [])

    def recipe(self, t, name):
        x, f = self.input, self.output
        last = self.order == "hwc"
        if name == f:
            words = "channels last (row, column, filter)" if last else "row-major order (filter, row, column)"
            formula, reads = f"{x} in {words}", (x,)
        else:
            formula, reads = f"dL/d{f} at the same place in {'channels last' if last else 'row-major order'}", (grad(f),)
        p = {"x": x, "f": f, "gf": grad(f), "last": last, "formula": formula, "shape": list(t.value(x).shape)}
        return Recipe(RECIPE, p, reads)


#: Explain's arithmetic above, in the page's JavaScript (layers.base.Recipe).
RECIPE = """function (t, p, name, i) {
  var C = p.shape[1], H = p.shape[2], W = p.shape[3], n, entry;
  if (name === p.f) {
    n = i[1];
    var c, h, w;
    if (p.last) { h = Math.floor(n / (W * C)); w = Math.floor((n % (W * C)) / C); c = n % C; }
    else { c = Math.floor(n / (H * W)); h = Math.floor((n % (H * W)) / W); w = n % W; }
    entry = t.factor(p.x, [i[0], c, h, w]);
    return { formula: p.formula, terms: [t.term([entry])],
             notes: [p.f + " entry " + n + " is " + t.label(entry)] };
  }
  n = p.last ? (i[2] * W + i[3]) * C + i[1] : (i[1] * H + i[2]) * W + i[3];
  return { formula: p.formula, terms: [t.term([t.factor(p.gf, [i[0], n])])], notes: [] };
}"""


