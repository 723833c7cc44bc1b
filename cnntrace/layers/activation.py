"""Element-wise activations (and the softmax): A = f(Z), with dA/dZ a stage of its own."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from cnntrace import naming, ops
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
    Stage,
    Terms,
    TorchForm,
    convention_option,
    grad_stage,
    number_option,
    onnx_float,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import MINUS, Factor, Term, constant, sigmoid


class ActivationCache(NamedTuple):
    """What an activation keeps for its backward pass: its input and output (in training, a
    ReLU keeps only its mask, as ``z``)."""

    z: np.ndarray
    a: np.ndarray | None


class LocalDerivative(NamedTuple):
    """How the derivation writes an activation's dA/dZ."""

    equation: str  # "1 − A1²"
    chain: str  # the chain rule's right side: "tanh′(Z1)"
    simplified: str
    factors: tuple[str, ...]
    note: str


class Activation(Layer):
    """A = f(Z) element-wise; its local derivative dA/dZ is a stage of its own."""

    letter: ClassVar[str] = "A"
    activation: ClassVar[bool] = True
    keeps_output: ClassVar[bool] = True  # (Z, A): tanh′ and σ′ are read from A
    function: ClassVar[str]  # as equations write it: ReLU, σ, tanh
    @property
    def local(self) -> str:
        """The name of its local derivative: dA1_dZ1 (dA1_dP1 after a pooling)."""
        return naming.local(self.output, self.input)

    def value(self, z):
        raise NotImplementedError

    # -- PyTorch and ONNX ---------------------------------------------------------------

    def torch_module(self) -> str:
        """The source of its torch.nn module: nn.ReLU()."""
        if not self.TORCH:
            raise InputError(f"{self.describe()} has no PyTorch form yet", key=self.place.key())
        return f"nn.{self.TORCH[0]}()"

    #: How the script reads its local derivative from autograd (see bridge.repro): each
    #: entry's own, or each image's Jacobian.
    torch_local: ClassVar[str] = "elementwise"

    def torch_form(self, t):
        return TorchForm(self.torch_module(), shown=((self.local, f"{self.torch_local}(module, x)"),))

    @classmethod
    def from_torch(cls, module, array):
        return Imported(cls.type)

    @classmethod
    def from_torch_call(cls, call):
        if call.constants or set(call.options) - {"inplace"}:
            raise Refused(f"{call.function} with arguments {[*call.constants, *call.options]} "
                          f"(cnntrace's {cls.type} takes none)")  # fmt: skip
        return Imported(cls.type)

    @classmethod
    def from_onnx(cls, node):
        return Imported(cls.type)

    def onnx_attributes(self) -> dict:
        return {}

    def onnx_nodes(self, t, x, y):
        return [(self.ONNX[0], [x], [y], self.onnx_attributes())], {}

    def derivative(self, z, a):
        """dA/dZ, element-wise, from its input and output."""
        raise NotImplementedError

    def derivative_text(self) -> LocalDerivative:
        """How the derivation writes dA/dZ."""
        raise NotImplementedError

    def forward(self, x, weights, tracing, overwrite=False):
        a = self.value(x)
        return a, ActivationCache(x, a)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        z, a = cache
        local = self.derivative(z, a)
        out = {self.local: local} if tracing else {}
        if need_input:
            out[self.input_gradient] = d_out * local
        return out

    def through(self, d_out, local):
        """dL/dZ from dL/dA and dA/dZ: element-wise (softmax: the Jacobian's transpose)."""
        return d_out * local

    def resume(self, d_out, stages, given):
        out = super().resume(d_out, stages, given)
        d_in = self.input_gradient
        if self.local in given and d_in in out and d_in not in given:
            out[d_in] = self.through(d_out, given[self.local])
        return out

    def _local_mistake(self, values, id_: str, message: str, local) -> Mistake:
        """The local derivative dA/dZ taken as ``local``, and dL/dZ from it."""
        return Mistake(id_, message, {self.local: local, self.input_gradient: self.through(values[grad(self.output)], local)})

    def local_stage(self, ctx) -> Stage:
        z, a = self.input, self.output
        local = self.derivative_text()
        rule = Rule(f"∂{a}/∂{z} = {local.chain}", local.simplified, local.factors, local.note)
        return stage(self.local, "backward", local.equation, None, rule, of=z)

    def stages(self, ctx):
        z, a = self.input, self.output
        forward = [stage(a, "forward", f"{self.function}({z})", None)]
        backward = [
            self.local_stage(ctx),
            grad_stage(z, f"dL/d{a} ⊙ d{a}/d{z}", None,
                   Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", f"∂L/∂{a} ⊙ {self.function}′({z})",
                        (grad(a), self.local), self.flow_note())),
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
        terms = [Term((t.factor(grad(a), index), t.factor(self.local, index)))]
        return Explained(f"dL/d{a}[h,w]·d{a}/d{z}[h,w]", terms, None, [])

    def explain_value(self, t, z: Factor):
        return Explained(f"{self.function}({self.input})", [Term((z,))], self.function, [])

    def explain_local(self, t, index):
        raise NotImplementedError

    def recipe(self, t, name):
        if name in (self.output, self.local):
            return self.own_recipe(t, name)
        z, a = self.input, self.output
        return Recipe(THROUGH, {"formula": f"dL/d{a}[h,w]·d{a}/d{z}[h,w]", "ga": grad(a), "local": self.local},
                      (grad(a), self.local))  # fmt: skip

    def own_recipe(self, t, name: str) -> Recipe | None:
        """explain_value's (``name``, the output) or explain_local's recipe, where the kind
        has one."""
        return None

    def has_recipe(self, name):
        return name not in (self.output, self.local) or type(self).own_recipe is not Activation.own_recipe


@dataclass(frozen=True)
class ReLU(Activation):
    type: ClassVar[str] = "relu"
    function: ClassVar[str] = "ReLU"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("ReLU",)
    DESCRIPTION: ClassVar[str] = "max(Z, 0); ReLU′(0) = 0."
    HAND: ClassVar[Hand] = Hand(exact=True, both_signs=True, masks=True)
    CONVENTIONS: ClassVar[dict[str, Convention]] = {
        "relu_grad_at_zero": Convention("grad_at_zero", (0, 1), "ReLU′(0)."),
    }
    OPTIONS: ClassVar[dict] = {
        "grad_at_zero": convention_option(CONVENTIONS["relu_grad_at_zero"], "ReLU′(0): 0 (PyTorch) or 1."),
    }

    keeps_output: ClassVar[bool] = False  # in training, only its mask

    grad_at_zero: int = 0  # ReLU′(0): 0 (PyTorch) or 1

    TORCH: ClassVar[tuple[str, ...]] = ("ReLU",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("relu", "relu_")
    ONNX: ClassVar[tuple[str, ...]] = ("Relu",)

    def torch_module(self):
        # torch.relu's slope at 0 is 0; where(x >= 0) takes the x branch, slope 1, at 0.
        return "nn.ReLU()" if self.grad_at_zero == 0 else "Apply(lambda x: torch.where(x >= 0, x, torch.zeros_like(x)))"

    def onnx_nodes(self, t, x, y):
        if self.grad_at_zero:
            raise InputError("ONNX's Relu has no ReLU′(0) = 1", key=self.place.key("grad_at_zero"))
        return super().onnx_nodes(t, x, y)

    def options(self):
        return "relu" if self.grad_at_zero == 0 else {"type": "relu", "grad_at_zero": self.grad_at_zero}

    def describe(self):
        return "relu" if self.grad_at_zero == 0 else "relu (ReLU′(0) = 1)"

    def value(self, z):
        return ops.relu_forward(z)

    def forward(self, x, weights, tracing, overwrite=False):
        if tracing:
            a = self.value(x)
            return a, (x, a)
        # Training keeps only the mask, as booleans (an eighth of dA/dZ's memory): Z and A
        # can go as soon as the next layer is done with A; A takes Z's place when it may.
        mask = (ops.relu_mask if self.grad_at_zero == 0 else ops.relu_mask_inclusive)(x)
        return ops.relu_forward(x, out=x if overwrite else None), ActivationCache(mask, None)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        Z = values[z]
        at_zero = 1 - self.grad_at_zero
        local = ops.relu_grad_inclusive(Z) if at_zero else ops.relu_grad(Z)
        return [
            self._local_mistake(values, "relu_grad_at_zero", f"ReLU′(0) taken as {at_zero} where {z} = 0", local)
            ._replace(convention=("relu_grad_at_zero", at_zero)),
            Mistake("relu_mask_missing", f"dL/d{z} = dL/d{a}: the ReLU mask (1 where {z} > 0) was left out",
                    {self.input_gradient: values[grad(a)]}),
        ]  # fmt: skip

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        if tracing:
            return super().backward(d_out, cache, weights, need_input=need_input, tracing=tracing)
        mask, _ = cache
        # In training, dL/dA is the pass's own and read no more: dL/dZ takes its place.
        return {self.input_gradient: np.multiply(d_out, mask, out=d_out)} if need_input else {}

    def derivative(self, z, a):
        return ops.relu_grad(z) if self.grad_at_zero == 0 else ops.relu_grad_inclusive(z)

    def derivative_text(self):
        z = self.input
        return LocalDerivative(f"1 where {z} > 0, else 0", f"ReLU′({z})", f"1 where {z} > 0, 0 where {z} ≤ 0", (z,), f"the ReLU mask, read from {z}")  # fmt: skip

    def flow_note(self):
        z = self.input
        return f"the gradient passes where {z} > 0 and stops where {z} ≤ 0"

    def explain_value(self, t, z):
        a = self.output
        note = f"{z.label} {f'> 0, so {a} = {self.input}' if z.value > 0 else f'≤ 0, so {a} = 0'}"
        zz = self.input
        return Explained(f"ReLU({zz}[h,w]) = max({zz}[h,w], 0)", [Term((z,))], "ReLU", [note])

    def explain_local(self, t, index):
        z = t.factor(self.input, index)
        if self.grad_at_zero:
            note = f"{z.label} {'≥ 0, so 1 (ReLU′(0) = 1 by the convention)' if z.value >= 0 else '< 0, so 0'}"
            return Explained(f"1 if {self.input}[h,w] ≥ 0 else 0", [Term((z,))], "step at 0", [note])
        note = f"{z.label} {'> 0, so 1' if z.value > 0 else '≤ 0, so 0 (ReLU′(0) = 0)'}"
        return Explained(f"1 if {self.input}[h,w] > 0 else 0", [Term((z,))], "step", [note])

    def own_recipe(self, t, name):
        z, a = self.input, self.output
        p = {"z": z, "a": a, "local": self.local, "at_zero": self.grad_at_zero}
        if name == a:
            return Recipe(RELU, p | {"formula": f"ReLU({z}[h,w]) = max({z}[h,w], 0)"}, (z,))
        formula = f"1 if {z}[h,w] ≥ 0 else 0" if self.grad_at_zero else f"1 if {z}[h,w] > 0 else 0"
        return Recipe(RELU, p | {"formula": formula}, (z,))

    def kinks(self, cache):
        z, _ = cache
        return (z > 0,) if z.dtype != bool else (z,)

    def ambiguities(self, x):
        return {"zero": int(np.count_nonzero(np.abs(x) <= AMBIGUITY))}

    def rules(self):
        return (f"ReLU′(0) = {self.grad_at_zero}: the gradient through a {self.input} of exactly 0 is "
                f"{'stopped' if self.grad_at_zero == 0 else 'passed on'}.",)  # fmt: skip

    def annotate(self, t):
        z, a = self.input, self.output
        mask = t.value(self.local)
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
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("LeakyReLU",)
    DESCRIPTION: ClassVar[str] = "Z where Z > 0, alpha·Z elsewhere."
    HAND: ClassVar[Hand] = Hand(exact=True, both_signs=True)
    OPTIONS: ClassVar[dict] = {"alpha": number_option(0.01, "The slope where Z ≤ 0.", "alpha")}

    alpha: float = 0.01

    TORCH: ClassVar[tuple[str, ...]] = ("LeakyReLU",)
    ONNX: ClassVar[tuple[str, ...]] = ("LeakyRelu",)

    def torch_module(self):
        return f"nn.LeakyReLU({self.alpha!r})"

    @classmethod
    def from_torch(cls, module, array):
        return Imported({"type": cls.type, "alpha": float(module.negative_slope)})

    @classmethod
    def from_onnx(cls, node):
        return Imported({"type": cls.type, "alpha": onnx_float(node.attributes.get("alpha", 0.01))})

    def onnx_attributes(self):
        return {"alpha": self.alpha}

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
        return LocalDerivative(f"1 where {z} > 0, else {self.alpha:g}", f"LeakyReLU′({z})", f"1 where {z} > 0, α = {self.alpha:g} where {z} ≤ 0", (z,), f"read from {z}: the slope is α = {self.alpha:g} where {z} ≤ 0")  # fmt: skip

    def explain_value(self, t, z):
        zz, a = self.input, self.output
        note = f"{z.label} {f'> 0, so {a} = {zz}' if z.value > 0 else f'≤ 0, so {a} = {self.alpha:g}·{zz}'}"
        return Explained(f"LeakyReLU({zz}[h,w]) = {zz} if > 0 else {self.alpha:g}·{zz}", [Term((z,))], "LeakyReLU", [note], self.alpha)  # fmt: skip

    def explain_local(self, t, index):
        z = t.factor(self.input, index)
        note = f"{z.label} {'> 0, so 1' if z.value > 0 else f'≤ 0, so α = {self.alpha:g}'}"
        return Explained(f"1 if {self.input}[h,w] > 0 else α", [Term((z,))], "leaky step", [note], self.alpha)

    def own_recipe(self, t, name):
        zz, a, alpha = self.input, self.output, f"{self.alpha:g}"
        if name == a:
            p = {"formula": f"LeakyReLU({zz}[h,w]) = {zz} if > 0 else {alpha}·{zz}", "fn": "LeakyReLU",
                 "above": f" > 0, so {a} = {zz}", "below": f" ≤ 0, so {a} = {alpha}·{zz}"}  # fmt: skip
        else:
            p = {"formula": f"1 if {zz}[h,w] > 0 else α", "fn": "leaky step", "above": " > 0, so 1",
                 "below": f" ≤ 0, so α = {alpha}"}  # fmt: skip
        return Recipe(STEP, p | {"z": zz, "alpha": self.alpha}, (zz,))

    def kinks(self, cache):
        z, _ = cache
        return (z > 0,)

    def ambiguities(self, x):
        return {"zero": int(np.count_nonzero(np.abs(x) <= AMBIGUITY))}


class Tanh(Activation):
    type: ClassVar[str] = "tanh"
    function: ClassVar[str] = "tanh"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("tanh",)
    DESCRIPTION: ClassVar[str] = "tanh(Z)."
    HAND: ClassVar[Hand] = Hand(saturates=True)

    TORCH: ClassVar[tuple[str, ...]] = ("Tanh",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("tanh",)
    ONNX: ClassVar[tuple[str, ...]] = ("Tanh",)

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
        return LocalDerivative(f"1 − {a}²", f"tanh′({z})", f"1 − tanh²({z}) = 1 − {a}²", (a,), "")

    def explain_value(self, t, z):
        return Explained(f"tanh({self.input}) = (e^z − e^−z)/(e^z + e^−z)", [Term((z,))], "tanh", [])

    def explain_local(self, t, index):
        a = t.factor(self.output, index)
        return Explained(f"1 − {self.output}²", [Term((constant("1", 1.0),)), Term((MINUS, a, a))], None, [])

    def own_recipe(self, t, name):
        z, a = self.input, self.output
        if name == a:  # its value is math.tanh's, as explain's FUNCTIONS computes it
            tanh = f"tanh({z})"
            return Recipe(FUNCTION, {"formula": f"tanh({z}) = (e^z − e^−z)/(e^z + e^−z)", "z": z, "fn": "tanh",
                                     "value": tanh}, (z,), ((tanh, z, lambda: each(math.tanh, t.value(z))),))  # fmt: skip
        return Recipe(TANH_LOCAL, {"formula": f"1 − {a}²", "a": a}, (a,))


class Sigmoid(Activation):
    type: ClassVar[str] = "sigmoid"
    function: ClassVar[str] = "σ"
    DESCRIPTION: ClassVar[str] = "σ(Z) = 1 / (1 + e^−Z)."
    HAND: ClassVar[Hand] = Hand(saturates=True)
    pairs_with: ClassVar[str] = "bce"
    classifies: ClassVar[str] = "threshold"

    TORCH: ClassVar[tuple[str, ...]] = ("Sigmoid",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("sigmoid",)
    ONNX: ClassVar[tuple[str, ...]] = ("Sigmoid",)

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
        return LocalDerivative(f"{a}·(1 − {a})", f"σ′({z})", f"σ({z})·(1 − σ({z})) = {a}·(1 − {a})", (a,), "")

    def explain_value(self, t, z):
        return Explained(f"σ({self.input}) = 1 / (1 + e^(−{self.input}))", [Term((z,))], "σ", [])

    def explain_local(self, t, index):
        a = t.factor(self.output, index)
        z = float(t.value(self.input)[index])
        one_minus = Factor(f"(1 − {self.output})", a.index, float(ops.sigmoid(np.float64(-z))), self.output)
        return Explained(f"{self.output}·(1 − {self.output})", [Term((a, one_minus))], None, [])

    def own_recipe(self, t, name):
        z, a = self.input, self.output
        if name == a:  # its value is terms.sigmoid's, as explain's FUNCTIONS computes it
            s = f"σ({z})"
            return Recipe(FUNCTION, {"formula": f"σ({z}) = 1 / (1 + e^(−{z}))", "z": z, "fn": "σ", "value": s},
                          (z,), ((s, z, lambda: each(sigmoid, t.value(z))),))  # fmt: skip
        rest = f"σ(−{z})"
        return Recipe(SIGMOID_LOCAL, {"formula": f"{a}·(1 − {a})", "a": a, "rest": rest}, (a,),
                      ((rest, z, lambda: ops.sigmoid(-t.value(z))),))  # fmt: skip


class Softmax(Activation):
    """A = softmax(Z) over each image's units; its local derivative is the Jacobian
    diag(A) − A·Aᵀ of each image, (n, n)."""

    type: ClassVar[str] = "softmax"
    function: ClassVar[str] = "softmax"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("softmax", "exp", "diag")
    DESCRIPTION: ClassVar[str] = "exp(Z)/Σexp(Z) over the units; only as the last layer."
    HAND: ClassVar[Hand] = Hand(saturates=True, competes=True)
    input_form: ClassVar[str] = "vector"
    last_only: ClassVar[bool] = True
    pairs_with: ClassVar[str] = "cross_entropy"
    classifies: ClassVar[str] = "argmax"

    TORCH: ClassVar[tuple[str, ...]] = ("Softmax",)
    ONNX: ClassVar[tuple[str, ...]] = ("Softmax",)
    torch_local: ClassVar[str] = "jacobian"

    def torch_module(self):
        return "nn.Softmax(dim=1)"

    @classmethod
    def from_torch(cls, module, array):
        if module.dim not in (1, -1, None):
            raise Refused(f"Softmax over dimension {module.dim} (cnntrace's is over each image's units)")
        return Imported(cls.type)

    @classmethod
    def from_onnx(cls, node):
        if node.attributes.get("axis", -1) not in (1, -1):
            raise Refused(f"Softmax with axis {node.attributes['axis']}")
        return Imported(cls.type)

    def onnx_attributes(self):
        return {"axis": 1}

    def infer(self, layout, given):
        if layout.form != "vector":
            raise InputError(f"{self.type} works over a vector of units: it comes after a dense layer",
                             key=self.place.key())  # fmt: skip
        return Layout(layout.shape, True, sized_by=layout.sized_by), {}

    def value(self, z):
        return ops.softmax(z)

    def derivative(self, z, a):
        return ops.softmax_jacobian(a)

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        z, a = cache
        out = {self.local: self.derivative(z, a)} if tracing else {}
        if need_input:  # Jacobianᵀ·dL/dA without making the Jacobian
            out[self.input_gradient] = self.send_back(d_out, a)
        return out

    def send_back(self, d_out, a):
        """Jacobianᵀ·dL/dA, from the output, without making the Jacobian."""
        return ops.softmax_backward(d_out, a)

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
                    {self.input_gradient: values[grad(a)] * A * (1 - A)}),
            Mistake("softmax_target_missing", f"dL/d{z} = {a}/N: the −Y of softmax with cross-entropy left out",
                    {self.input_gradient: A / len(A)}),
        ]  # fmt: skip

    def derivative_text(self):
        a, z = self.output, self.input
        return LocalDerivative(f"diag({a}) − {a}·{a}ᵀ", f"softmax′({z})", f"∂{a}[i]/∂{z}[j] = {a}[i]·(δij − {a}[j])", (a,), "one n×n Jacobian per image: row i, column j")  # fmt: skip

    def local_stage(self, ctx) -> Stage:
        (n,) = ctx.layouts[self.input].shape
        return super().local_stage(ctx)._replace(layout=Layout((n, n), kind="jacobian"))

    def equations(self) -> tuple[str, str]:
        """The forward equation, and what dL/d(input) simplifies to."""
        z, a = self.input, self.output
        return f"exp({z}) / Σexp({z})", f"{a} ⊙ (∂L/∂{a} − Σ ∂L/∂{a}⊙{a})"

    def stages(self, ctx):
        z, a = self.input, self.output
        equation, simplified = self.equations()
        forward = [stage(a, "forward", equation, None)]
        backward = [
            self.local_stage(ctx),
            grad_stage(z, f"(d{a}/d{z})ᵀ·dL/d{a}", None,
                   Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", simplified,
                        (grad(a), self.local), "the Jacobian's transpose times the gradient, per image")),
        ]  # fmt: skip
        return forward, backward

    def terms(self, layouts, weights, name, images):
        (n,) = layouts[self.input].shape
        return Terms(2) if name == self.local else Terms(n)

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
            return Explained(f"exp({z}[i]) / Σ_j exp({z}[j])", terms, "share", notes, i)
        if name == self.local:
            m, i, j = index
            ai, aj = t.factor(a, (m, i)), t.factor(a, (m, j))
            terms = ([Term((ai,))] if i == j else []) + [Term((MINUS, ai, aj))]
            return Explained(f"{a}[i]·(δij − {a}[j])", terms, None, [f"i = {i}, j = {j}"])
        return self._through_jacobian(t, index)

    def _through_jacobian(self, t, index) -> Explained:
        """dL/d(input)[m,i]: image m's Jacobian's column i times dL/d(output)."""
        z, a = self.input, self.output
        m, i = index
        n = t.value(a).shape[1]
        terms = [Term((t.factor(self.local, (m, j, i)), t.factor(grad(a), (m, j)))) for j in range(n)]
        return Explained(f"Σ_j d{a}[j]/d{z}[i]·dL/d{a}[j]", terms, None, [])

    def recipe(self, t, name):
        z, a = self.input, self.output
        if name == a:
            shares = f"exp({z} − max)"  # np.exp's, as explain's
            return Recipe(SOFTMAX, {"z": z, "exp": shares, "formula": f"exp({z}[i]) / Σ_j exp({z}[j])"}, (z,),
                          ((shares, z, lambda: np.exp(t.value(z) - t.value(z).max(axis=1, keepdims=True))),))  # fmt: skip
        if name == self.local:
            return Recipe(SOFTMAX_LOCAL, {"a": a, "formula": f"{a}[i]·(δij − {a}[j])"}, (a,))
        return Recipe(JACOBIAN_THROUGH, {"a": a, "local": self.local, "ga": grad(a),
                                         "formula": f"Σ_j d{a}[j]/d{z}[i]·dL/d{a}[j]"}, (self.local, grad(a)))  # fmt: skip

    def has_recipe(self, name):
        return True


class LogSoftmax(Softmax):
    """A = log softmax(Z) = Z − log Σ exp(Z) over each image's units; its local derivative
    is the Jacobian I − 1·softmax(Z)ᵀ of each image, (n, n): ∂A[i]/∂Z[j] = δij − exp(A[j])."""

    type: ClassVar[str] = "log_softmax"
    TORCH: ClassVar[tuple[str, ...]] = ("LogSoftmax",)
    ONNX: ClassVar[tuple[str, ...]] = ("LogSoftmax",)

    def torch_module(self):
        return "nn.LogSoftmax(dim=1)"
    function: ClassVar[str] = "log_softmax"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("log_softmax", "exp", "softmax")  # log: LaTeX's own \log
    DESCRIPTION: ClassVar[str] = "Z − log Σexp(Z) over the units, the log-probabilities; only as the last layer, with nll."
    pairs_with: ClassVar[str] = "nll"

    def value(self, z):
        return ops.log_softmax(z)

    def derivative(self, z, a):
        return ops.log_softmax_jacobian(a)

    def send_back(self, d_out, a):
        return ops.log_softmax_backward(d_out, a)

    def mistakes(self, values, weights):
        z, a = self.input, self.output
        A = values[a]
        P = np.exp(A)
        # nll's dL/dA is −Y/M (−Y for its sum): each image's row sums to −1/M, which tells
        # the mean from the sum; Y is then exp(A) − M·dL/dZ. (Passing dL/dZ through the
        # Jacobian once more is no mistake to name: Jᵀ = I − exp(A)·1ᵀ is a projection, and
        # dL/dZ, whose entries sum to 0, is its own image.)
        M = len(A)
        sums = values[grad(a)].sum(axis=1)
        nll = np.allclose(sums, -1.0 / M) or np.allclose(sums, -1.0)
        mean = M if np.allclose(sums, -1.0 / M) else 1
        Y = P - values[self.input_gradient] * mean
        out = [
            Mistake("log_softmax_elementwise", f"dL/d{z} = dL/d{a} ⊙ (1 − exp({a})): the log-softmax taken "
                    f"element-wise, its Jacobian's off-diagonal terms −exp({a}[j]) left out",
                    {self.input_gradient: values[grad(a)] * (1 - P)}),
        ]  # fmt: skip
        if nll:  # the closed form's own slips
            out += [
                Mistake("log_softmax_probabilities", f"dL/d{z} = ({a} − Y)/M: the log-probabilities {a} taken for "
                        f"the probabilities exp({a}) = softmax({z})", {self.input_gradient: (A - Y) / mean}),
                Mistake("nll_target_missing", f"dL/d{z} = exp({a})/M: the −Y of log-softmax with nll left out",
                        {self.input_gradient: P / mean}),
            ]  # fmt: skip
        return out

    def derivative_text(self):
        a, z = self.output, self.input
        return LocalDerivative(f"I − 1·exp({a})ᵀ", f"log_softmax′({z})", f"∂{a}[i]/∂{z}[j] = δij − exp({a}[j]) = δij − softmax({z})[j]", (a,), "one n×n Jacobian per image: row i, column j")  # fmt: skip

    def equations(self):
        z, a = self.input, self.output
        return f"{z} − log Σexp({z})", f"∂L/∂{a} − exp({a})·Σ ∂L/∂{a}"

    def terms(self, layouts, weights, name, images):
        if name == self.output:  # Z[i] − max − log Σ exp(Z − max)
            return Terms(3)
        return super().terms(layouts, weights, name, images)

    def explain(self, t, name, index):
        z, a = self.input, self.output
        if name == a:
            m, i = index
            Z = t.value(z)[m]
            top = float(Z.max())
            log_sum = float(np.log(np.exp(Z - top).sum()))
            terms = [Term((t.factor(z, (m, i)),)), Term((MINUS, constant("max", top))),
                     Term((MINUS, Factor(f"log Σ exp({z} − max)", t.user_index(z, (m, 0))[:-1], log_sum, z)))]  # fmt: skip
            notes = [f"max = {top!r}, subtracted inside the exp so that it never overflows, and added back"]
            return Explained(f"{z}[i] − log Σ_j exp({z}[j])", terms, None, notes)
        if name == self.local:
            m, i, j = index
            p = Factor(f"exp({a})", t.user_index(a, (m, j)), float(np.exp(t.value(a)[m, j])), a)
            terms = ([Term((constant("1", 1.0),))] if i == j else []) + [Term((MINUS, p))]
            return Explained(f"δij − exp({a}[j])", terms, None, [f"i = {i}, j = {j}; exp({a}) = softmax({z})"])
        return self._through_jacobian(t, index)

    def recipe(self, t, name):
        z, a = self.input, self.output
        if name == a:
            log_sum = f"log Σ exp({z} − max)"

            def log_sums():  # each image's, as explain sums it
                Z = t.value(z)
                return np.array([np.log(np.exp(Z[m] - float(Z[m].max())).sum()) for m in range(len(Z))])

            return Recipe(LOG_SOFTMAX, {"z": z, "log_sum": log_sum, "formula": f"{z}[i] − log Σ_j exp({z}[j])"},
                          (z,), ((log_sum, z, log_sums),))  # fmt: skip
        if name == self.local:
            e = f"exp({a})"
            return Recipe(LOG_SOFTMAX_LOCAL, {"a": a, "z": z, "exp": e, "formula": f"δij − exp({a}[j])"}, (a,),
                          ((e, a, lambda: np.exp(t.value(a))),))  # fmt: skip
        return super().recipe(t, name)


#: Softmax's explain of A: each exp(Z[j] − max), the share of term i.
SOFTMAX = """function (t, p, name, i) {
  var m = i[0], n = t.shape(p.z)[1], top = -Infinity, terms = [];
  for (var j = 0; j < n; j++) { top = Math.max(top, t.value(p.z, [m, j])); }
  for (j = 0; j < n; j++) {
    var f = t.factor(p.exp, [m, j], "exp(" + p.z + "[" + j + "] − max)");
    f.source = p.z;
    terms.push(t.term([f]));
  }
  var notes = ["max = " + cnntraceRepr(top) + ", subtracted from every " + p.z + " entry so that exp never overflows",
               "the share of term " + i[1] + " in the sum"];
  return { formula: p.formula, terms: terms, fn: "share", notes: notes, parameter: i[1] };
}"""

#: Softmax's explain of dA/dZ: A[i]·(δij − A[j]).
SOFTMAX_LOCAL = """function (t, p, name, i) {
  var ai = t.factor(p.a, [i[0], i[1]]), aj = t.factor(p.a, [i[0], i[2]]);
  var terms = (i[1] === i[2] ? [t.term([ai])] : []).concat([t.term([t.constant("−1", -1), ai, aj])]);
  return { formula: p.formula, terms: terms, notes: ["i = " + i[1] + ", j = " + i[2]] };
}"""

#: Softmax's and log-softmax's explain of dL/dZ: the Jacobian's column i times dL/dA.
JACOBIAN_THROUGH = """function (t, p, name, i) {
  var m = i[0], n = t.shape(p.a)[1], terms = [];
  for (var j = 0; j < n; j++) { terms.push(t.term([t.factor(p.local, [m, j, i[1]]), t.factor(p.ga, [m, j])])); }
  return { formula: p.formula, terms: terms, notes: [] };
}"""

#: LogSoftmax's explain of A: Z[i] − max − log Σ exp(Z − max).
LOG_SOFTMAX = """function (t, p, name, i) {
  var m = i[0], n = t.shape(p.z)[1], top = -Infinity, minus = t.constant("−1", -1);
  for (var j = 0; j < n; j++) { top = Math.max(top, t.value(p.z, [m, j])); }
  var log = { symbol: p.log_sum, index: t.factor(p.z, [m, 0]).index.slice(0, -1), value: t.value(p.log_sum, [m]),
              source: p.z };
  var terms = [t.term([t.factor(p.z, i)]), t.term([minus, t.constant("max", top)]), t.term([minus, log])];
  return { formula: p.formula, terms: terms,
           notes: ["max = " + cnntraceRepr(top) + ", subtracted inside the exp so that it never overflows, and added back"] };
}"""

#: LogSoftmax's explain of dA/dZ: δij − exp(A[j]).
LOG_SOFTMAX_LOCAL = """function (t, p, name, i) {
  var e = t.factor(p.exp, [i[0], i[2]], "exp(" + p.a + ")");
  e.source = p.a;
  var terms = (i[1] === i[2] ? [t.term([t.constant("1", 1)])] : []).concat([t.term([t.constant("−1", -1), e])]);
  return { formula: p.formula, terms: terms, notes: ["i = " + i[1] + ", j = " + i[2] + "; exp(" + p.a + ") = softmax(" + p.z + ")"] };
}"""


#: Activation.explain of dL/dZ (dL/dA ⊙ dA/dZ), in the page's JavaScript (layers.base.Recipe).
THROUGH = """function (t, p, name, i) {
  return { formula: p.formula, terms: [t.term([t.factor(p.ga, i), t.factor(p.local, i)])], notes: [] };
}"""

def each(function, values: np.ndarray) -> np.ndarray:
    """``function`` (a float's: math.tanh) of each entry of ``values``, as explain applies it
    to one entry."""
    return np.frompyfunc(function, 1, 1)(values).astype(np.float64)


#: LeakyReLU's explain_value and explain_local (ELU's, softplus's branches alike), in the
#: page's JavaScript: the one term Z, and a note on its side of 0.
STEP = """function (t, p, name, i) {
  var z = t.factor(p.z, i);
  return { formula: p.formula, terms: [t.term([z])], fn: p.fn, notes: [t.label(z) + (z.value > 0 ? p.above : p.below)],
           parameter: p.alpha };
}"""

#: A function of the one term Z whose value Python makes (tanh's, σ's explain_value).
FUNCTION = """function (t, p, name, i) {
  return { formula: p.formula, terms: [t.term([t.factor(p.z, i)])], fn: p.fn, notes: [], value: t.value(p.value, i) };
}"""

#: Tanh's explain_local: 1 − A².
TANH_LOCAL = """function (t, p, name, i) {
  var a = t.factor(p.a, i);
  return { formula: p.formula, terms: [t.term([t.constant("1", 1)]), t.term([t.constant("−1", -1), a, a])], notes: [] };
}"""

#: Sigmoid's explain_local: A·(1 − A), 1 − A as σ(−Z).
SIGMOID_LOCAL = """function (t, p, name, i) {
  var a = t.factor(p.a, i), rest = t.factor(p.rest, i, "(1 − " + p.a + ")");
  rest.source = p.a;
  return { formula: p.formula, terms: [t.term([a, rest])], notes: [] };
}"""

#: ReLU's explain_value and explain_local, in the page's JavaScript.
RELU = """function (t, p, name, i) {
  var z = t.factor(p.z, i), label = t.label(z), note, fn;
  if (name === p.a) {
    note = label + (z.value > 0 ? " > 0, so " + p.a + " = " + p.z : " ≤ 0, so " + p.a + " = 0");
    fn = "ReLU";
  } else if (p.at_zero) {
    note = label + (z.value >= 0 ? " ≥ 0, so 1 (ReLU′(0) = 1 by the convention)" : " < 0, so 0");
    fn = "step at 0";
  } else {
    note = label + (z.value > 0 ? " > 0, so 1" : " ≤ 0, so 0 (ReLU′(0) = 0)");
    fn = "step";
  }
  return { formula: p.formula, terms: [t.term([z])], fn: fn, notes: [note] };
}"""
