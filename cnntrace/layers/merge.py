"""Merges: an add (S = A + X, a residual connection) and a concat (C = [A, X] along the
channels, DenseNet's and U-Net's skips). Each reads its input and the earlier matrices its
``from`` names; the network hands it those as its ``others`` (see Layer.reads).

    S = A + X1 + …          dL/dA = dL/dS,  dL/dXi = dL/dS        (unchanged to each operand)
    C = [A, X1, …]          dL/dA = dL/dC[:C_A], dL/dX1 = the next C_X1 channels …
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Explained,
    Hand,
    Imported,
    Layer,
    Layout,
    Mistake,
    Option,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    grad_stage,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import Term
from cnntrace.text import shape_text


def parse_sources(value, key: str) -> tuple[str, ...]:
    """``from``: one earlier matrix's name, or a list of them (checked by Network.place)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise InputError(f'expected the name of an earlier matrix ("X", "A2") or a list of them, got {value!r}'[:200],
                         key=key)  # fmt: skip
    if len(set(names)) != len(names):
        raise InputError("names a matrix twice; each is read once", key=key)
    return tuple(names)


_FROM_SCHEMA = {
    "description": "The earlier matrices it merges with its input: \"X\" or a name the trace shows (\"A2\"), or a list.",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
    "examples": ["X", ["Z4"]],
}


@dataclass(frozen=True)
class Merge(Layer):
    """What an add and a concat share: the operands they read and their options."""

    merge: ClassVar[bool] = True
    HAND: ClassVar[Hand] = Hand(exact=True)
    OPTIONS: ClassVar[dict[str, Option]] = {"from": Option(parse_sources, _FROM_SCHEMA)}
    REQUIRED: ClassVar[tuple[str, ...]] = ("from",)

    sources: tuple[str, ...] = ()  # ``from``: the matrices it merges with its input

    @classmethod
    def from_options(cls, options):
        return cls(sources=options["from"])

    @property
    def reads(self) -> tuple[str, ...]:
        return self.sources

    @property
    def operands(self) -> tuple[str, ...]:
        return (self.input, *self.sources)

    def options(self):
        return {"type": self.type, "from": self.sources[0] if len(self.sources) == 1 else list(self.sources)}

    def describe(self):
        return f"{self.type} ({self.symbol_of()})"

    def symbol_of(self) -> str:
        raise NotImplementedError

    def _check_forms(self, layouts: dict) -> Layout:
        layout = layouts[self.input]
        for source in self.sources:
            if layouts[source].form != layout.form:
                raise InputError(f"{self.type} of {self.input} ({layout.form}s) and {source} "
                                 f"({layouts[source].form}s): both maps or both vectors",
                                 key=self.place.key("from"))  # fmt: skip
        return layout

    def work(self, layouts, weights):
        return 1, sum(math.prod(layouts[name].shape) for name in self.operands)

    # -- PyTorch and ONNX ---------------------------------------------------------------
    # A merge's operands are named by the reader (the ONNX graph's, the traced module's):
    # ``sources`` of an OnnxNode or a TorchCall, its input first.

    #: The script's module for it (see bridge.repro): the class and its source.
    _TORCH_CLASS: ClassVar[tuple[str, str]] = ("", "")

    def torch_form(self, t):
        name, source = self._TORCH_CLASS
        return TorchForm(f"{name}()", helpers=source)

    @classmethod
    def _imported(cls, sources: tuple[str, ...]) -> Imported:
        return Imported({"type": cls.type, "from": sources[0] if len(sources) == 1 else list(sources)})

    @classmethod
    def from_onnx(cls, node):
        if any(value is not None for value in node.inputs) or not node.sources:
            raise Refused(f"{node.op} of a constant (cnntrace merges earlier matrices only)")
        return cls._imported(node.sources)


class Add(Merge):
    """S = A + X1 + …, elementwise: operands of one shape (M, C, H, W) or (M, n) -> the same."""

    type: ClassVar[str] = "add"
    letter: ClassVar[str] = "S"
    DESCRIPTION: ClassVar[str] = ("S: its input plus the earlier matrices \"from\" names, elementwise (a residual "
                                  "connection); the shapes match exactly.")  # fmt: skip

    def symbol_of(self):
        return " + ".join(self.operands)

    TORCH: ClassVar[tuple[str, ...]] = ()
    #: The functions a traced module calls for it: ``out + identity``, ``out += identity``.
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("add", "iadd", "__add__", "__iadd__")
    ONNX: ClassVar[tuple[str, ...]] = ("Add", "Sum")
    _TORCH_CLASS = ("Add", '''
class Add(nn.Module):
    """S = x + the others, elementwise (a residual connection)."""

    def forward(self, x, *others):
        return sum(others, x)
''')

    @classmethod
    def from_torch_call(cls, call):
        if call.options.get("alpha", 1) != 1 or len(call.sources) < 1 or call.constants:
            raise Refused(f"{call.function} of anything but matrices the network made (a constant, an alpha)")
        return cls._imported(call.sources)

    def onnx_nodes(self, t, x, y):
        # ONNX's Add takes two operands; Sum any number.
        return [("Add" if len(self.sources) == 1 else "Sum", [x, *self.sources], [y], {})], {}

    def infer_from(self, layouts, given):
        layout = self._check_forms(layouts)
        for source in self.sources:
            if layouts[source].shape != layout.shape:
                raise InputError(f"add of {self.input} ({shape_text(layout.shape)}) and {source} "
                                 f"({shape_text(layouts[source].shape)}): the shapes must match exactly",
                                 key=self.place.key("from"))  # fmt: skip
        shown = layout.shown or any(layouts[s].shown for s in self.sources)
        return Layout(layout.shape, shown, layout.channel, sized_by=layout.sized_by), {}

    def forward(self, x, weights, tracing, overwrite=False, others=()):
        return ops.add_forward(x, others), len(others)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        d_input, *d_sources = ops.add_backward(d_out, cache)
        # dL/dS goes back unchanged to each operand: the input last, as every layer's.
        out = {grad(source): d.copy() for source, d in zip(self.sources, d_sources)}
        out[self.input_gradient] = d_input
        return out

    def mistakes(self, values, weights):
        d, n = values[grad(self.output)], len(self.operands)
        return [
            Mistake("add_gradient_split", f"dL/d{self.output} shared out, 1/{n} to each of {', '.join(self.operands)}: "
                    "an add passes its gradient whole to each operand", {grad(q): d / n for q in self.operands}),
        ]  # fmt: skip

    def stages(self, ctx):
        s = self.output
        backward = [
            grad_stage(q, f"dL/d{s}", None,
                       Rule(f"∂L/∂{q} = ∂L/∂{s} · ∂{s}/∂{q}", f"∂L/∂{s}", (grad(s),),
                            f"∂{s}/∂{q} = 1 entry by entry: an add passes its gradient unchanged to each operand"))
            for q in (*self.sources, self.input)
        ]  # fmt: skip
        return [stage(s, "forward", self.symbol_of())], backward

    def terms(self, layouts, weights, name, images):
        return Terms(len(self.operands))

    def explain(self, t, name, index):
        if name == self.output:
            terms = [Term((t.factor(q, index),)) for q in self.operands]
            return Explained(self.symbol_of(), terms, None, ["an add: entry by entry"])
        return Explained(f"dL/d{self.output}", [Term((t.factor(grad(self.output), index),))], None,
                         ["an add passes its gradient unchanged to each operand"])  # fmt: skip

    def recipe(self, t, name):
        reads = self.operands if name == self.output else (grad(self.output),)
        data = {"s": self.output, "gs": grad(self.output), "operands": list(self.operands), "formula": self.symbol_of()}
        return Recipe(ADD_RECIPE, data, tuple(reads))


#: Add.explain in the page's JavaScript (layers.base.Recipe).
ADD_RECIPE = """function (t, p, name, i) {
  if (name === p.s) {
    return { formula: p.formula, terms: p.operands.map(function (q) { return t.term([t.factor(q, i)]); }),
             notes: ["an add: entry by entry"] };
  }
  return { formula: "dL/d" + p.s, terms: [t.term([t.factor(p.gs, i)])],
           notes: ["an add passes its gradient unchanged to each operand"] };
}"""


class Concat(Merge):
    """C = [A, X1, …] along the channels of maps (M, C_i, H, W) -> (M, ΣC_i, H, W), or the
    units of vectors (M, n_i) -> (M, Σn_i); its input first."""

    type: ClassVar[str] = "concat"
    letter: ClassVar[str] = "C"
    DESCRIPTION: ClassVar[str] = ("C: its input and the earlier matrices \"from\" names, joined along the channels "
                                  "(the units of vectors), its input first; the maps' sizes match.")  # fmt: skip

    def symbol_of(self):
        return f"[{', '.join(self.operands)}]"

    TORCH: ClassVar[tuple[str, ...]] = ()
    #: torch.cat((out, skip), dim=1) in a traced module.
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("cat", "concat", "concatenate")
    ONNX: ClassVar[tuple[str, ...]] = ("Concat",)
    _TORCH_CLASS = ("Concat", '''
class Concat(nn.Module):
    """C = [x, the others] along axis 1 (the channels of maps, the units of vectors)."""

    def forward(self, x, *others):
        return torch.cat((x, *others), dim=1)
''')

    @classmethod
    def from_torch_call(cls, call):
        dim = call.options.get("dim", call.constants[0] if call.constants else 0)
        if dim != 1 or not call.sources:
            raise Refused(f"{call.function} along dim {dim} (cnntrace joins along the channels, dim 1)")
        return cls._imported(call.sources)

    @classmethod
    def from_onnx(cls, node):
        if node.attributes.get("axis") != 1:
            raise Refused(f"Concat along axis {node.attributes.get('axis')} (cnntrace joins along the channels, axis 1)")
        return super().from_onnx(node)

    def onnx_nodes(self, t, x, y):
        return [("Concat", [x, *self.sources], [y], {"axis": 1})], {}

    def infer_from(self, layouts, given):
        layout = self._check_forms(layouts)
        if layout.form == "map":
            for source in self.sources:
                if layouts[source].shape[1:] != layout.shape[1:]:
                    raise InputError(f"concat of {self.input}'s {shape_text(layout.shape[1:])} maps and "
                                     f"{source}'s {shape_text(layouts[source].shape[1:])}: the maps' sizes must match",
                                     key=self.place.key("from"))  # fmt: skip
            C = sum(layouts[q].shape[0] for q in self.operands)
            return Layout((C, *layout.shape[1:]), True, layout.channel), {}
        return Layout((sum(layouts[q].shape[0] for q in self.operands),)), {}

    def forward(self, x, weights, tracing, overwrite=False, others=()):
        return ops.concat_forward(x, others), tuple(a.shape[1] for a in (x, *others))

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        d_input, *d_sources = ops.concat_backward(d_out, cache)
        out = {grad(source): d for source, d in zip(self.sources, d_sources)}
        out[self.input_gradient] = d_input
        return out

    def _offsets(self, t) -> dict[str, int]:
        """Where each operand's channels (or units) start in C."""
        out, start = {}, 0
        for q in self.operands:
            out[q] = start
            start += t.value(q).shape[1]
        return out

    def stages(self, ctx):
        c = self.output
        backward = [
            grad_stage(q, f"dL/d{c}, {q}'s part", None,
                       Rule(f"∂L/∂{q} = ∂L/∂{c} · ∂{c}/∂{q}", f"∂L/∂{c} at {q}'s channels", (grad(c),),
                            "a concat splits its gradient by channel: each operand gets its own part"))
            for q in (*self.sources, self.input)
        ]  # fmt: skip
        return [stage(c, "forward", self.symbol_of())], backward

    def explain(self, t, name, index):
        offsets = self._offsets(t)
        if name == self.output:
            channel = index[1]
            q = max((q for q in self.operands if offsets[q] <= channel), key=lambda q: offsets[q])
            at = (index[0], channel - offsets[q], *index[2:])
            return Explained(f"{q}, channel {channel - offsets[q]}", [Term((t.factor(q, at),))], None,
                             [f"a concat: {q}'s channels start at {offsets[q]} of {self.output}"])  # fmt: skip
        q = name[len("dL_d"):]
        at = (index[0], index[1] + offsets[q], *index[2:])
        return Explained(f"dL/d{self.output}, channel {at[1]}", [Term((t.factor(grad(self.output), at),))], None,
                         [f"a concat splits its gradient by channel: {q}'s start at {offsets[q]}"])  # fmt: skip

    def recipe(self, t, name):
        reads = self.operands if name == self.output else (grad(self.output),)
        data = {"c": self.output, "gc": grad(self.output), "operands": list(self.operands), "offsets": self._offsets(t)}
        return Recipe(CONCAT_RECIPE, data, tuple(reads))


#: Concat.explain in the page's JavaScript (layers.base.Recipe).
CONCAT_RECIPE = """function (t, p, name, i) {
  var q, at;
  if (name === p.c) {
    p.operands.forEach(function (o) { if (p.offsets[o] <= i[1] && (q === undefined || p.offsets[o] > p.offsets[q])) { q = o; } });
    at = [i[0], i[1] - p.offsets[q]].concat(i.slice(2));
    return { formula: q + ", channel " + at[1], terms: [t.term([t.factor(q, at)])],
             notes: ["a concat: " + q + "'s channels start at " + p.offsets[q] + " of " + p.c] };
  }
  q = name.slice("dL_d".length);
  at = [i[0], i[1] + p.offsets[q]].concat(i.slice(2));
  return { formula: "dL/d" + p.c + ", channel " + at[1], terms: [t.term([t.factor(p.gc, at)])],
           notes: ["a concat splits its gradient by channel: " + q + "'s start at " + p.offsets[q]] };
}"""
