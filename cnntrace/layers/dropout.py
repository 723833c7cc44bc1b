"""Dropout: D = X·mask/(1 − p), the kept units scaled by 1/(1 − p) as PyTorch; the identity
in eval mode.

The mask (0/1, shaped like the layer's input for the whole batch) is the input's ``mask``, or
drawn reproducibly from ``seed``; the trace shows it as mask{l}. Training draws a fresh one
for every step (``for_step``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from cnntrace import checks, ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Annotation,
    Explained,
    Imported,
    Layer,
    Mistake,
    Option,
    Recipe,
    Rule,
    TorchForm,
    choice_option,
    grad_stage,
    stage,
)
from cnntrace.naming import grad, numbered
from cnntrace.terms import Factor, Term, constant
from cnntrace.text import number_text, shape_text


def _p(value, key):
    p = checks.finite_number(key, value, "p")
    if not 0 <= p < 1:
        raise InputError(f"p, the probability of dropping a unit, is at least 0 and below 1, got {number_text(value)}",
                         key=key)  # fmt: skip
    return p


def _mask(value, key):
    mask = checks.as_array(key, value)
    if not np.all((mask == 0) | (mask == 1)):
        raise InputError("a dropout mask holds 0 (dropped) and 1 (kept), nothing else", key=key)
    return mask


@dataclass(frozen=True)
class Dropout(Layer):
    """D = X·mask/(1 − p); mask like X, 0 or 1."""

    type: ClassVar[str] = "dropout"
    letter: ClassVar[str] = "D"
    DESCRIPTION: ClassVar[str] = ("D = input·mask/(1 − p), the mask given (0/1, shaped like the input for the "
                                  "whole batch) or drawn from seed; eval mode: the identity.")  # fmt: skip
    dropout: ClassVar[bool] = True
    OPTIONS: ClassVar[dict] = {
        "p": Option(_p, {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.5,
                         "description": "The probability of dropping a unit."}),
        "mask": Option(_mask, {"type": "array", "description": "0 (dropped) or 1 (kept) for every unit of the "
                               "layer's input, for the whole batch, shaped as the trace shows that input."}),
        "seed": Option(lambda value, key: checks.whole_number(key, value, 0),
                       {"type": "integer", "minimum": 0, "default": 0,
                        "description": "Where no mask is given, the mask is drawn from this seed."}),
        "mode": choice_option(("train", "eval"), "train: units dropped by the mask; eval: the identity."),
    }  # fmt: skip

    p: float = 0.5
    mask: Any = field(default=None, compare=False)  # as the input gave it
    seed: int = 0
    mode: str = "train"
    #: The given mask on the general shapes, for the batch (see for_batch); None: drawn from seed.
    _general: Any = field(default=None, compare=False, repr=False)

    @property
    def name_mask(self) -> str:
        return numbered("mask", self.place.number)

    @property
    def dropping(self) -> bool:
        return self.mode == "train"

    def options(self):
        out = {"type": self.type}
        if self.p != 0.5:
            out["p"] = self.p
        if self.mask is not None:
            out["mask"] = self.mask.tolist()
        if self.seed != 0:
            out["seed"] = self.seed
        if self.mode != "train":
            out["mode"] = self.mode
        return out if len(out) > 1 else self.type

    def describe(self):
        if not self.dropping:
            return "dropout (eval: the identity)"
        return f"dropout (p {self.p:g}, {'the given mask' if self.mask is not None else f'mask from seed {self.seed}'})"

    def for_batch(self, layout, batched, M):
        if not self.dropping:
            return self
        general = (M, *layout.shape)
        if self.mask is None:
            return self  # drawn from the seed as the pass reaches it (a dataset's mask would be large)
        expected = layout.user_shape(batched, M)
        if self.mask.shape != expected:
            raise InputError(f"the mask is shaped like {self.input}, {shape_text(expected)}; "
                             f"got {shape_text(self.mask.shape)}", key=self.place.key("mask"))  # fmt: skip
        return replace(self, _general=self.mask.reshape(general))

    @property
    def draws(self):
        return self.dropping

    def for_step(self, rng):
        if not self.dropping:
            return self
        return replace(self, mask=None, seed=int(rng.integers(2**31)), _general=None)

    def evaluating(self):
        return replace(self, mode="eval", mask=None, _general=None)

    def work(self, layouts, weights):
        size = 1
        for n in layouts[self.input].shape:
            size *= n
        return 1, size

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("Dropout",)
    ONNX: ClassVar[tuple[str, ...]] = ("Dropout",)

    def torch_form(self, t):
        if not self.dropping:
            return TorchForm("nn.Identity()", training=False)
        # The trace's mask, given to PyTorch: nn.Dropout would draw its own.
        return TorchForm(f"Apply(lambda x: x * CONSTANTS[{self.name_mask!r}] / (1 - {self.p!r}))",
                         constants=((self.name_mask, t.value(self.name_mask)),),
                         shown=((self.name_mask, f"CONSTANTS[{self.name_mask!r}]"),))  # fmt: skip

    @classmethod
    def from_torch(cls, module, array):
        description = {"type": cls.type, "p": float(module.p)}
        if not module.training:
            description["mode"] = "eval"
        return Imported(description)

    @classmethod
    def from_onnx(cls, node):
        ratio = node.inputs[0] if node.inputs and node.inputs[0] is not None else np.array(0.5)
        training = len(node.inputs) > 1 and node.inputs[1] is not None and bool(node.inputs[1])
        description = {"type": cls.type, "p": float(ratio)}
        if not training:
            description["mode"] = "eval"
        return Imported(description)

    def onnx_nodes(self, t, x, y):
        if self.dropping:
            raise InputError("a dropout in training has no ONNX form here: ONNX's Dropout draws its own mask",
                             key=self.place.key("mode"))  # fmt: skip
        return [("Identity", [x], [y], {})], {}

    def _mask_for(self, x):
        if self._general is not None and self._general.shape == x.shape:
            return self._general
        return ops.dropout_mask(self.seed, x.shape, self.p)

    def forward(self, x, weights, tracing, overwrite=False):
        if not self.dropping:
            return x, None
        mask = self._mask_for(x)
        return ops.dropout_forward(x, mask, self.p), mask

    def forward_from(self, x, weights, given):
        if not self.dropping:
            return x, None
        mask = given.get(self.name_mask, self._mask_for(x))
        return ops.dropout_forward(x, mask, self.p), mask

    def shown(self, cache):
        return {self.name_mask: cache} if self.dropping else {}

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        if not need_input:
            return {}
        return {self.input_gradient: d_out if not self.dropping else ops.dropout_backward(d_out, cache, self.p)}

    def stages(self, ctx):
        x, d = self.input, self.output
        if not self.dropping:
            return [stage(d, "forward", f"{x} (eval: dropout is the identity)")], [
                grad_stage(x, f"dL/d{d}", None, Rule(f"∂L/∂{x} = ∂L/∂{d} · ∂{d}/∂{x}", f"∂L/∂{d}", (grad(d),),
                                                     "in eval mode nothing is dropped")),
            ]  # fmt: skip
        scale = f"1/(1 − p) = {1 / (1 - self.p):g}"
        where = "given" if self.mask is not None else f"drawn from seed {self.seed}"
        forward = [
            stage(self.name_mask, "forward", f"1 (kept) or 0 (dropped), {where}", None, of=x),
            stage(d, "forward", f"{x}·{self.name_mask}/(1 − p)", None),
        ]
        backward = [
            grad_stage(x, f"dL/d{d}·{self.name_mask}/(1 − p)", None,
                       Rule(f"∂L/∂{x} = ∂L/∂{d} · ∂{d}/∂{x}", f"∂L/∂{d}·{self.name_mask}/(1 − p)",
                            (grad(d), self.name_mask),
                            f"a dropped unit sends nothing back; a kept one its gradient times {scale}")),
        ]  # fmt: skip
        return forward, backward

    def annotate(self, t):
        if not self.dropping:
            return {}
        x, d = self.input, self.output
        dropped = (t.value(self.name_mask) == 0).astype(int)
        n, total = int(dropped.sum()), dropped.size
        if not n:
            return {}
        return {
            d: Annotation(before=(f"{n} of {total} units dropped ({self.name_mask} = 0): {d} is 0 there, "
                                  f"a kept one is {x} times 1/(1 − p) = {1 / (1 - self.p):g}",)),  # fmt: skip
            grad(x): Annotation(dropped, f"dropped: no gradient flows back through this unit to {x}"),
        }

    def explain(self, t, name, index):
        x, d = self.input, self.output
        if not self.dropping:
            source = x if name == d else grad(d)
            return Explained(f"{source} (eval: the identity)", [Term((t.factor(source, index),))])
        scale = constant("1/(1 − p)", 1 / (1 - self.p))
        if name == self.name_mask:
            kept = float(t.value(self.name_mask)[index])
            how = "given in the input" if self.mask is not None else f"drawn from seed {self.seed}, kept with probability 1 − p"
            return Explained("1 (kept) or 0 (dropped)", [Term((Factor("mask", (), kept),))], None,
                             [f"p = {self.p:g}: {how}"])  # fmt: skip
        mask = t.factor(self.name_mask, index)
        if name == d:
            return Explained(f"{x}·{self.name_mask}/(1 − p)", [Term((t.factor(x, index), mask, scale))], None,
                             [f"p = {self.p:g}"])  # fmt: skip
        return Explained(f"dL/d{d}·{self.name_mask}/(1 − p)", [Term((t.factor(grad(d), index), mask, scale))], None,
                         [f"p = {self.p:g}"])  # fmt: skip

    def recipe(self, t, name):
        x, d = self.input, self.output
        source = x if name == d else grad(d)
        if not self.dropping:
            return Recipe(RECIPE, {"source": source, "formula": f"{source} (eval: the identity)"}, (source,))
        p = {"mask": self.name_mask, "scale": 1 / (1 - self.p), "notes": [f"p = {self.p:g}"]}
        if name == self.name_mask:
            how = "given in the input" if self.mask is not None else f"drawn from seed {self.seed}, kept with probability 1 − p"
            return Recipe(RECIPE, p | {"formula": "1 (kept) or 0 (dropped)", "notes": [f"p = {self.p:g}: {how}"]},
                          (self.name_mask,))  # fmt: skip
        formula = f"{x}·{self.name_mask}/(1 − p)" if name == d else f"dL/d{d}·{self.name_mask}/(1 − p)"
        return Recipe(RECIPE, p | {"source": source, "formula": formula}, (source, self.name_mask))

    def mistakes(self, values, weights):
        if not self.dropping or self.p == 0:
            return []
        x, d = self.input, self.output
        mask = values[self.name_mask]
        out = [Mistake("dropout_unscaled", f"{d} = {x}·mask: the 1/(1 − p) left out", {d: values[x] * mask})]
        if grad(x) in values:
            out.append(Mistake("dropout_unscaled", f"dL/d{x} = dL/d{d}·mask: the 1/(1 − p) left out",
                               {grad(x): values[grad(d)] * mask}))  # fmt: skip
            if not np.all(mask == 1):
                out.append(Mistake("dropout_mask_missing", f"dL/d{x} = dL/d{d}/(1 − p): the mask left out of the "
                                   "backward pass, as if no unit had been dropped",
                                   {grad(x): values[grad(d)] / (1 - self.p)}))  # fmt: skip
        return out


#: Dropout.explain in the page's JavaScript (layers.base.Recipe): eval's identity, the mask,
#: or the entry times the mask and 1/(1 − p).
RECIPE = """function (t, p, name, i) {
  if (!p.mask) { return { formula: p.formula, terms: [t.term([t.factor(p.source, i)])], notes: [] }; }
  if (name === p.mask) {
    return { formula: p.formula, terms: [t.term([t.constant("mask", t.value(p.mask, i))])], notes: p.notes };
  }
  var factors = [t.factor(p.source, i), t.factor(p.mask, i), t.constant("1/(1 − p)", p.scale)];
  return { formula: p.formula, terms: [t.term(factors)], notes: p.notes };
}"""
