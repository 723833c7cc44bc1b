"""Dense (fully connected): Z = F·W + B."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntrace import ops
from cnntrace.checks import vector
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Explained,
    Hand,
    Imported,
    Layout,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    WeightedLayer,
    grad_stage,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import Term
from cnntrace.text import shape_text


@dataclass(frozen=True)
class Dense(WeightedLayer):
    """Z = F·W + B. W (n_in, n_out), B (n_out,)."""

    type: ClassVar[str] = "dense"
    DESCRIPTION: ClassVar[str] = "Z = F·W + B; W is n_in×n_out, or n_in numbers for one output."
    HAND: ClassVar[Hand] = Hand(live_rows=True)
    input_form: ClassVar[str] = "vector"

    _one_output: bool = False  # the reference form's single sigmoid neuron: W2 a list

    def infer(self, layout, given):
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
                by = f"; {layout.sized_by}" if layout.sized_by and C > 1 else ""  # the key that set C
                per_entry += f" ({C} filter{'s' * (C > 1)} × {H}×{Wd}{by})"
            elif layout.sized_by:
                per_entry += layout.fixed_by()
            found = f"{W.size} entries" if W.ndim else "a number"
            raise InputError(
                f"expected {n} weight{'s' * (n > 1)}, {per_entry}, found {found} "
                f"(shape {shape_text(W.shape)})",
                key=self.W,
            )
        sized_by = f"{self.W} ({shape_text(W.shape)}) has {n_out} output{'s' * (n_out > 1)}"
        weights = {
            self.W: W_general,
            self.B: vector(self.B, B, n_out, "number" if n_out == 1 else "biases, one per output", sized_by).copy(),
        }
        return Layout((n_out,), shown=n_out > 1, sized_by=sized_by), weights

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("Linear",)
    #: Gemm, and MatMul with the Add after it, which the ONNX reader reads as one Gemm.
    ONNX: ClassVar[tuple[str, ...]] = ("Gemm",)

    def torch_form(self, t):
        n_in, n_out = t.weights[self.W].shape
        # nn.Linear keeps its weight out×in: W transposed.
        return TorchForm(f"nn.Linear({n_in}, {n_out})", ((self.W, "weight", True), (self.B, "bias", False)))

    @classmethod
    def _imported(cls, W, B) -> Imported:
        return Imported(cls.type, (W, np.zeros(W.shape[1]) if B is None else B), transposed=(True, False))

    @classmethod
    def from_torch(cls, module, array):
        return cls._imported(array(module.weight).T, None if module.bias is None else array(module.bias))

    @classmethod
    def from_state(cls, tensors):
        if "weight" not in tensors or tensors["weight"].ndim != 2:
            raise Refused("a dense layer's weight is out×in (nn.Linear's)")
        return cls._imported(tensors["weight"].T, tensors.get("bias"))

    @classmethod
    def from_onnx(cls, node):
        attributes = node.attributes
        if attributes.get("transA", 0):
            raise Refused("Gemm with transA 1")
        B, *rest = node.inputs
        C = rest[0] if rest else None
        if B is None or (rest and C is None):
            raise Refused(f"{node.op} whose weights are not constants")
        if B.ndim != 2:
            raise Refused(f"{node.op} with {B.ndim}-dimensional weights")
        W = (B.T if attributes.get("transB", 0) else B) * attributes.get("alpha", 1.0)
        if C is not None:
            C = np.broadcast_to(C * attributes.get("beta", 1.0), (W.shape[1],)).copy() if C.size in (1, W.shape[1]) else None
            if C is None:
                raise Refused(f"{node.op} whose bias is not one number per output")
        # Gemm's transB 1 keeps B out×in, as nn.Linear; MatMul's is in×out, as cnntrace.
        return cls._imported(W, C)._replace(transposed=(bool(attributes.get("transB", 0)), False))

    def onnx_nodes(self, t, x, y):
        return [("Gemm", [x, self.W, self.B], [y], {})], {self.W: t.weights[self.W], self.B: t.weights[self.B]}

    def work(self, layouts, weights):
        n_in, n_out = weights[self.W].shape
        return 1, n_in * n_out

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.dense_forward(x, weights[self.W], weights[self.B]), x

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        dL_dF, dL_dW, dL_dB = ops.dense_backward(d_out, cache, weights[self.W], need_input)
        out = {grad(self.W): dL_dW, grad(self.B): dL_dB}
        if need_input:
            out[self.input_gradient] = dL_dF
        return out

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        forward = [stage(z, "forward", f"{x}·{W} + {B}", None)]
        chain = ctx.full_chain(f"∂{z}/∂")
        if ctx.closed is None:
            dW = Rule(f"∂L/∂{W} = {chain}{W}", f"{x}ᵀ·∂L/∂{z}", (x, grad(z)), f"∂{z}/∂{W} = {x}")
            dB = Rule(f"∂L/∂{B} = {chain}{B}", f"Σ ∂L/∂{z}", (grad(z),), f"∂{z}/∂{B} = 1")
        else:
            text, factor, divided = ctx.closed
            dW = Rule(f"∂L/∂{W} = {chain}{W}", f"{x}ᵀ·{text}" if divided else f"({text})·{x}ᵀ",
                      (factor, x), f"∂{z}/∂{W} = {x}")  # fmt: skip
            dB = Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {text}" if divided else f"({text})·1",
                      (factor,), f"∂{z}/∂{B} = 1")  # fmt: skip
        backward = [
            grad_stage(W, f"{x}ᵀ·dL/d{z}", None, dW),
            grad_stage(B, f"ΣdL/d{z}", None, dB),
            grad_stage(x, f"dL/d{z}·{W}ᵀ", None,
                   Rule(f"∂L/∂{x} = {chain}{x}", f"∂L/∂{z}·{W}ᵀ", (grad(z), W), f"∂{z}/∂{x} = {W}ᵀ")),
        ]  # fmt: skip
        return forward, backward

    def terms(self, layouts, weights, name, images):
        n_in, n_out = weights[self.W].shape
        if name == self.output:
            return Terms(n_in + 1)
        if name in (grad(self.W), grad(self.B)):  # over the images
            return Terms(images)
        if name == grad(self.input):
            return Terms(n_out)
        return super().terms(layouts, weights, name, images)

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        n_in, n_out = t.value(W).shape
        one = n_out == 1
        if name == z:
            m, o = index
            terms = [Term((t.factor(x, (m, c)), t.factor(W, (c, o)))) for c in range(n_in)]
            terms.append(Term((t.factor(B, (o,)),)))
            if one:
                return Explained(f"Σ_c {x}[c]·{W}[c] + {B}", terms, None, [])
            return Explained(f"Σ_c {x}[c]·{W}[c,o] + {B}[o]", terms, None, [])
        M = t.value(x).shape[0]
        if name == grad(W):
            c, o = index
            terms = [Term((t.factor(x, (m, c)), t.factor(grad(z), (m, o)))) for m in range(M)]
            return Explained(f"Σ_m {x}[m,c]·dL/d{z}[m]  ({x}ᵀ·dL/d{z})", terms, None, [])
        if name == grad(B):
            (o,) = index
            terms = [Term((t.factor(grad(z), (m, o)),)) for m in range(M)]
            return Explained(f"Σ_m dL/d{z}[m]", terms, None, [])
        m, c = index
        terms = [Term((t.factor(grad(z), (m, o)), t.factor(W, (c, o)))) for o in range(n_out)]
        return Explained(f"dL/d{z}·{W}[c]" if one else f"Σ_o dL/d{z}[o]·{W}[c,o]", terms, None, [])

    def recipe(self, t, name):
        x, z, W, B = self.input, self.output, self.W, self.B
        one = t.value(W).shape[1] == 1
        formulas = {
            z: f"Σ_c {x}[c]·{W}[c] + {B}" if one else f"Σ_c {x}[c]·{W}[c,o] + {B}[o]",
            grad(W): f"Σ_m {x}[m,c]·dL/d{z}[m]  ({x}ᵀ·dL/d{z})",
            grad(B): f"Σ_m dL/d{z}[m]",
            grad(x): f"dL/d{z}·{W}[c]" if one else f"Σ_o dL/d{z}[o]·{W}[c,o]",
        }
        reads = {z: (x, W, B), grad(W): (x, grad(z)), grad(B): (grad(z),), grad(x): (grad(z), W)}[name]
        p = {"x": x, "z": z, "W": W, "B": B, "gz": grad(z), "gW": grad(W), "gB": grad(B), "formula": formulas[name]}
        return Recipe(RECIPE, p, reads)


#: Explain's loops above, in the page's JavaScript (layers.base.Recipe).
RECIPE = """function (t, p, name, i) {
  var n_in = t.shape(p.W)[0], n_out = t.shape(p.W)[1], terms = [], k;
  if (name === p.z) {
    for (k = 0; k < n_in; k++) { terms.push(t.term([t.factor(p.x, [i[0], k]), t.factor(p.W, [k, i[1]])])); }
    terms.push(t.term([t.factor(p.B, [i[1]])]));
  } else if (name === p.gW) {
    for (k = 0; k < t.shape(p.x)[0]; k++) { terms.push(t.term([t.factor(p.x, [k, i[0]]), t.factor(p.gz, [k, i[1]])])); }
  } else if (name === p.gB) {
    for (k = 0; k < t.shape(p.gz)[0]; k++) { terms.push(t.term([t.factor(p.gz, [k, i[0]])])); }
  } else {
    for (k = 0; k < n_out; k++) { terms.push(t.term([t.factor(p.gz, [i[0], k]), t.factor(p.W, [i[1], k])])); }
  }
  return { formula: p.formula, terms: terms, notes: [] };
}"""


