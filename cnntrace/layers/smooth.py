"""The smooth activations of newer networks, element-wise: ELU, GELU, SiLU and softplus.

Each is an ``Activation`` (activation.py): A = f(Z) with dA/dZ a stage of its own; the
explanations write the value and the derivative as sums of named factors (Φ(Z), σ(Z),
exp(Z)) so that every number can be checked on a calculator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.layers.activation import Activation, LocalDerivative, each
from cnntrace.layers.base import (
    AMBIGUITY,
    Explained,
    Hand,
    Imported,
    Recipe,
    Refused,
    number_option,
    onnx_float,
)
from cnntrace.terms import MINUS, Factor, Term, constant


def _of(t, name: str, index, symbol: str, value: float) -> Factor:
    """A factor that is a function of entry ``index`` of ``name``: Φ(Z1)[0,1]."""
    return Factor(symbol, t.user_index(name, index), float(value), name)


def _recipe(layer, name: str, low: dict, high: dict | None = None, *, scale: float = 1.0, threshold: float = 0.0,
            made=()) -> Recipe:
    """SMOOTH's recipe for stage ``name`` of ``layer``: its ``low`` branch, and its ``high`` one
    where ``scale``·Z > ``threshold``."""
    return Recipe(SMOOTH, {"z": layer.input, "scale": scale, "threshold": threshold, "low": low, "high": high},
                  (layer.input,), tuple((key, layer.input, make) for key, make in made))  # fmt: skip


@dataclass(frozen=True)
class ELU(Activation):
    """A = Z where Z > 0, alpha·(exp(Z) − 1) elsewhere."""

    type: ClassVar[str] = "elu"
    function: ClassVar[str] = "ELU"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("ELU", "exp")
    DESCRIPTION: ClassVar[str] = "Z where Z > 0, alpha·(exp(Z) − 1) elsewhere; ELU′(0) = alpha, as PyTorch."
    HAND: ClassVar[Hand] = Hand(both_signs=True)
    OPTIONS: ClassVar[dict] = {"alpha": number_option(1.0, "The value ELU tends to, −alpha, as Z → −∞.", "alpha")}

    alpha: float = 1.0

    TORCH: ClassVar[tuple[str, ...]] = ("ELU",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("elu",)
    ONNX: ClassVar[tuple[str, ...]] = ("Elu",)

    def torch_module(self):
        return f"nn.ELU({self.alpha!r})"

    @classmethod
    def from_torch(cls, module, array):
        return Imported("elu" if module.alpha == 1.0 else {"type": "elu", "alpha": float(module.alpha)})

    @classmethod
    def from_onnx(cls, node):
        alpha = onnx_float(node.attributes.get("alpha", 1.0))
        return Imported("elu" if alpha == 1.0 else {"type": "elu", "alpha": alpha})

    def onnx_attributes(self):
        return {"alpha": self.alpha}

    def options(self):
        return "elu" if self.alpha == 1.0 else {"type": "elu", "alpha": self.alpha}

    def describe(self):
        return "elu" if self.alpha == 1.0 else f"elu (alpha {self.alpha:g})"

    def value(self, z):
        return ops.elu_forward(z, self.alpha)

    def derivative(self, z, a):
        return ops.elu_grad(z, self.alpha)

    def derivative_text(self):
        z, a = self.input, self.output
        return LocalDerivative(f"1 where {z} > 0, else {a} + α", f"ELU′({z})",
                               f"1 where {z} > 0, α·exp({z}) = {a} + α where {z} ≤ 0", (z, a),
                               f"α = {self.alpha:g}; read from {z} and {a}")  # fmt: skip

    def flow_note(self):
        return f"the gradient passes unchanged where {self.input} > 0 and scaled by α·exp({self.input}) elsewhere"

    def mistakes(self, values, weights):
        z = self.input
        Z = values[z]
        return [
            self._local_mistake(values, "elu_grad_as_relu", f"ELU′ taken as ReLU′: 0 where {z} ≤ 0, not α·exp({z})",
                                ops.relu_grad(Z)),
            self._local_mistake(values, "elu_grad_without_exp", f"ELU′ taken as α where {z} ≤ 0 (as leaky ReLU), "
                                f"not α·exp({z})", np.where(Z > 0, 1.0, self.alpha)),
        ]  # fmt: skip

    def kinks(self, cache):
        z, _ = cache
        return (z > 0,) if self.alpha != 1.0 else ()  # α = 1: ELU′ is continuous at 0

    def ambiguities(self, x):
        return {"zero": int(np.count_nonzero(np.abs(x) <= AMBIGUITY))} if self.alpha != 1.0 else {}

    def explain_value(self, t, z):
        zz, a = self.input, self.output
        if z.value > 0:
            return Explained(f"ELU({zz}) = {zz} where {zz} > 0", [Term((z,))], None, [f"{z.label} > 0, so {a} = {zz}"])
        e = Factor(f"exp({zz})", z.index, math.exp(z.value), zz)
        alpha = constant("α", self.alpha)
        return Explained(f"ELU({zz}) = α·(exp({zz}) − 1) where {zz} ≤ 0", [Term((alpha, e)), Term((MINUS, alpha))],
                         None, [f"{z.label} ≤ 0; α = {self.alpha:g}"])  # fmt: skip

    def explain_local(self, t, index):
        z = t.factor(self.input, index)
        if z.value > 0:
            return Explained(f"1 where {self.input} > 0", [Term((constant("1", 1.0),))], None, [f"{z.label} > 0"])
        e = _of(t, self.input, index, f"exp({self.input})", math.exp(z.value))
        return Explained(f"α·exp({self.input}) where {self.input} ≤ 0", [Term((constant("α", self.alpha), e))], None,
                         [f"{z.label} ≤ 0; α = {self.alpha:g}"])  # fmt: skip

    def own_recipe(self, t, name):
        zz, a, alpha = self.input, self.output, ["α", self.alpha]
        e = f"exp({zz})"
        made = ((e, lambda: each(math.exp, np.minimum(t.value(zz), 0.0))),)  # read where Z ≤ 0 alone
        low = {"terms": [[alpha, [e, e]]], "notes": [f"{{label}} ≤ 0; α = {self.alpha:g}"]}
        if name == a:
            return _recipe(self, name, low | {"formula": f"ELU({zz}) = α·(exp({zz}) − 1) where {zz} ≤ 0",
                                              "terms": [[alpha, [e, e]], [["−1", -1.0], alpha]]},
                           {"formula": f"ELU({zz}) = {zz} where {zz} > 0", "terms": [["z"]],
                            "notes": [f"{{label}} > 0, so {a} = {zz}"]}, made=made)  # fmt: skip
        return _recipe(self, name, low | {"formula": f"α·exp({zz}) where {zz} ≤ 0"},
                       {"formula": f"1 where {zz} > 0", "terms": [[["1", 1.0]]], "notes": ["{label} > 0"]},
                       made=made)  # fmt: skip


class GELU(Activation):
    """A = Z·Φ(Z), Φ the standard normal's distribution function (the erf form, PyTorch's
    default)."""

    type: ClassVar[str] = "gelu"
    function: ClassVar[str] = "GELU"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("GELU", "erf")
    DESCRIPTION: ClassVar[str] = "Z·Φ(Z) = Z·(1 + erf(Z/√2))/2, the erf form (PyTorch's default, not the tanh approximation)."
    HAND: ClassVar[Hand] = Hand(saturates=True)

    TORCH: ClassVar[tuple[str, ...]] = ("GELU",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("gelu",)
    #: ONNX's Gelu (opset 20), whose default is the erf form.
    ONNX: ClassVar[tuple[str, ...]] = ("Gelu",)
    ONNX_OPSET: ClassVar[int] = 20
    #: Before opset 20 (PyTorch's exports at opset 17 and 18): x/√2 (or x·(1/√2)) → Erf → +1,
    #: then ·x and ·0.5 in either order.
    ONNX_CHAINS: ClassVar[tuple[tuple[tuple[str, object], ...], ...]] = tuple(
        (scale, ("Erf", None), ("Add", 1.0), *product)
        for scale in (("Div", math.sqrt(2.0)), ("Mul", math.sqrt(0.5)))
        for product in ((("Mul", "x"), ("Mul", 0.5)), (("Mul", 0.5), ("Mul", "x")))
    )

    @classmethod
    def from_torch(cls, module, array):
        if module.approximate != "none":
            raise Refused(f"GELU with approximate {module.approximate!r} (cnntrace's is the erf form)")
        return Imported(cls.type)

    @classmethod
    def from_onnx(cls, node):
        if node.attributes.get("approximate", "none") != "none":
            raise Refused(f"Gelu with approximate {node.attributes['approximate']!r} (cnntrace's is the erf form)")
        return Imported(cls.type)

    def value(self, z):
        return ops.gelu_forward(z)

    def derivative(self, z, a):
        return ops.gelu_grad(z)

    def derivative_text(self):
        z = self.input
        return LocalDerivative(f"Φ({z}) + {z}·φ({z})", f"GELU′({z})",
                               f"Φ({z}) + {z}·φ({z}), φ({z}) = exp(−{z}²/2)/√(2π)", (z,),
                               "the product rule on Z·Φ(Z): Φ′ = φ, the normal density")  # fmt: skip

    def mistakes(self, values, weights):
        z = self.input
        Z = values[z]
        return [
            self._local_mistake(values, "gelu_tanh_approximation", f"GELU′ of the tanh approximation "
                                f"½·{z}·(1 + tanh(√(2/π)·({z} + 0.044715·{z}³))), not of the erf form",
                                ops.gelu_tanh_grad(Z)),
            self._local_mistake(values, "gelu_product_rule_missing", f"GELU′ taken as Φ({z}): the {z}·φ({z}) of "
                                "the product rule left out", ops.normal_cdf(Z)),
        ]  # fmt: skip

    def explain_value(self, t, z):
        zz = self.input
        phi = Factor(f"Φ({zz})", z.index, float(ops.normal_cdf(np.float64(z.value))), zz)
        return Explained(f"GELU({zz}) = {zz}·Φ({zz}), Φ(x) = (1 + erf(x/√2))/2", [Term((z, phi))], None, [])

    def explain_local(self, t, index):
        zz = self.input
        z = t.factor(zz, index)
        value = np.float64(z.value)
        cdf = _of(t, zz, index, f"Φ({zz})", ops.normal_cdf(value))
        pdf = _of(t, zz, index, f"φ({zz})", ops.normal_pdf(value))
        return Explained(f"Φ({zz}) + {zz}·φ({zz})", [Term((cdf,)), Term((z, pdf))], None,
                         ["φ(x) = exp(−x²/2)/√(2π), Φ(x) = (1 + erf(x/√2))/2"])  # fmt: skip

    def own_recipe(self, t, name):
        zz = self.input
        cdf, pdf = f"Φ({zz})", f"φ({zz})"
        made = ((cdf, lambda: ops.normal_cdf(t.value(zz))), (pdf, lambda: ops.normal_pdf(t.value(zz))))
        if name == self.output:
            return _recipe(self, name, {"formula": f"GELU({zz}) = {zz}·Φ({zz}), Φ(x) = (1 + erf(x/√2))/2",
                                        "terms": [["z", [cdf, cdf]]], "notes": []}, made=made[:1])  # fmt: skip
        return _recipe(self, name, {"formula": f"Φ({zz}) + {zz}·φ({zz})", "terms": [[[cdf, cdf]], ["z", [pdf, pdf]]],
                                    "notes": ["φ(x) = exp(−x²/2)/√(2π), Φ(x) = (1 + erf(x/√2))/2"]}, made=made)  # fmt: skip


class SiLU(Activation):
    """A = Z·σ(Z) (also called swish)."""

    type: ClassVar[str] = "silu"
    function: ClassVar[str] = "SiLU"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("SiLU",)
    DESCRIPTION: ClassVar[str] = "Z·σ(Z), the sigmoid-weighted linear unit (swish)."
    HAND: ClassVar[Hand] = Hand(saturates=True)

    TORCH: ClassVar[tuple[str, ...]] = ("SiLU",)
    TORCH_CALLS: ClassVar[tuple[str, ...]] = ("silu",)
    #: ONNX has no SiLU before opset 24's Swish: Z·Sigmoid(Z), two nodes, both ways.
    ONNX: ClassVar[tuple[str, ...]] = ()
    ONNX_CHAINS: ClassVar[tuple[tuple[tuple[str, object], ...], ...]] = ((("Sigmoid", None), ("Mul", "x")),)

    def onnx_nodes(self, t, x, y):
        return [("Sigmoid", [x], [f"{y}_sigmoid"], {}), ("Mul", [x, f"{y}_sigmoid"], [y], {})], {}

    def value(self, z):
        return ops.silu_forward(z)

    def derivative(self, z, a):
        return ops.silu_grad(z)

    def derivative_text(self):
        z = self.input
        return LocalDerivative(f"σ({z})·(1 + {z}·(1 − σ({z})))", f"SiLU′({z})",
                               f"σ({z}) + {z}·σ({z})·(1 − σ({z}))", (z,),
                               "the product rule on Z·σ(Z), with σ′ = σ·(1 − σ)")  # fmt: skip

    def mistakes(self, values, weights):
        z = self.input
        Z = values[z]
        return [
            self._local_mistake(values, "silu_product_rule_missing", f"SiLU′ taken as σ({z}): the "
                                f"{z}·σ′({z}) of the product rule left out", ops.sigmoid(Z)),
            self._local_mistake(values, "silu_grad_as_sigmoid", f"SiLU′ taken as σ′({z}) = σ({z})·(1 − σ({z}))",
                                ops.sigmoid_grad(Z)),
        ]  # fmt: skip

    def explain_value(self, t, z):
        zz = self.input
        s = Factor(f"σ({zz})", z.index, float(ops.sigmoid(np.float64(z.value))), zz)
        return Explained(f"SiLU({zz}) = {zz}·σ({zz})", [Term((z, s))], None, [])

    def explain_local(self, t, index):
        zz = self.input
        z = t.factor(zz, index)
        s = _of(t, zz, index, f"σ({zz})", ops.sigmoid(np.float64(z.value)))
        rest = _of(t, zz, index, f"(1 − σ({zz}))", ops.sigmoid(np.float64(-z.value)))
        return Explained(f"σ({zz}) + {zz}·σ({zz})·(1 − σ({zz}))", [Term((s,)), Term((z, s, rest))], None, [])

    def own_recipe(self, t, name):
        zz = self.input
        s, rest = f"σ({zz})", f"σ(−{zz})"
        made = ((s, lambda: ops.sigmoid(t.value(zz))), (rest, lambda: ops.sigmoid(-t.value(zz))))
        if name == self.output:
            return _recipe(self, name, {"formula": f"SiLU({zz}) = {zz}·σ({zz})", "terms": [["z", [s, s]]],
                                        "notes": []}, made=made[:1])  # fmt: skip
        return _recipe(self, name, {"formula": f"σ({zz}) + {zz}·σ({zz})·(1 − σ({zz}))",
                                    "terms": [[[s, s]], ["z", [s, s], [rest, f"(1 − σ({zz}))"]]], "notes": []},
                       made=made)  # fmt: skip


@dataclass(frozen=True)
class Softplus(Activation):
    """A = log(1 + exp(beta·Z))/beta, and Z itself where beta·Z > threshold (as PyTorch)."""

    type: ClassVar[str] = "softplus"
    function: ClassVar[str] = "softplus"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("softplus", "exp")  # log: LaTeX's own \log
    DESCRIPTION: ClassVar[str] = "log(1 + exp(beta·Z))/beta; Z itself where beta·Z > threshold, as PyTorch."
    HAND: ClassVar[Hand] = Hand(saturates=True)
    OPTIONS: ClassVar[dict] = {
        "beta": number_option(1.0, "The sharpness: softplus tends to ReLU as beta grows.", "beta"),
        "threshold": number_option(20.0, "Above beta·Z > threshold, A = Z (and dA/dZ = 1), as PyTorch.", "threshold"),
    }

    beta: float = 1.0
    threshold: float = 20.0

    TORCH: ClassVar[tuple[str, ...]] = ("Softplus",)
    #: ONNX's Softplus is log(1 + exp(Z)): no beta, and no threshold (above 20 it differs
    #: from PyTorch's Z by less than exp(−20) ≈ 2e−9).
    ONNX: ClassVar[tuple[str, ...]] = ("Softplus",)

    def torch_module(self):
        return f"nn.Softplus(beta={self.beta!r}, threshold={self.threshold!r})"

    @classmethod
    def from_torch(cls, module, array):
        chosen = {name: float(getattr(module, name)) for name, default in (("beta", 1.0), ("threshold", 20.0))
                  if getattr(module, name) != default}  # fmt: skip
        return Imported({"type": cls.type, **chosen} if chosen else cls.type)

    def onnx_nodes(self, t, x, y):
        if self.beta != 1.0:
            raise InputError(f"ONNX's Softplus has no beta; this one's is {self.beta:g}", key=self.place.key("beta"))
        return super().onnx_nodes(t, x, y)

    def options(self):
        chosen = {name: getattr(self, name) for name, default in (("beta", 1.0), ("threshold", 20.0))
                  if getattr(self, name) != default}  # fmt: skip
        return {"type": "softplus", **chosen} if chosen else "softplus"

    def describe(self):
        chosen = self.options()
        return chosen if isinstance(chosen, str) else "softplus (" + ", ".join(f"{k} {v:g}" for k, v in chosen.items() if k != "type") + ")"

    def value(self, z):
        return ops.softplus_forward(z, self.beta, self.threshold)

    def derivative(self, z, a):
        return ops.softplus_grad(z, self.beta, self.threshold)

    def derivative_text(self):
        z = self.input
        return LocalDerivative(f"σ(β·{z}); 1 where β·{z} > threshold", f"softplus′({z})",
                               f"exp(β·{z})/(1 + exp(β·{z})) = σ(β·{z})", (z,),
                               f"β = {self.beta:g}, threshold {self.threshold:g}")  # fmt: skip

    def mistakes(self, values, weights):
        z = self.input
        Z = values[z]
        out = []
        if self.beta != 1.0:
            out.append(self._local_mistake(values, "softplus_beta_missing", f"softplus′ taken as σ({z}), "
                                           f"without the β = {self.beta:g} inside", ops.sigmoid(Z)))  # fmt: skip
        out.append(self._local_mistake(values, "softplus_grad_as_exp", f"softplus′ taken as exp(β·{z}): the "
                                       f"1/(1 + exp(β·{z})) of the log's derivative left out",
                                       np.exp(np.minimum(self.beta * Z, 700.0))))  # fmt: skip
        return out

    def kinks(self, cache):
        z, _ = cache
        return (self.beta * z > self.threshold,)

    def explain_value(self, t, z):
        zz = self.input
        bz = self.beta * z.value
        if bz > self.threshold:
            return Explained(f"softplus({zz}) = {zz} where β·{zz} > threshold", [Term((z,))], None,
                             [f"β·{z.label} = {bz:g} > {self.threshold:g}: the linear branch, as PyTorch"])  # fmt: skip
        log = Factor(f"log(1 + exp(β·{zz}))", z.index, float(np.logaddexp(0.0, bz)), zz)
        return Explained(f"softplus({zz}) = log(1 + exp(β·{zz}))/β", [Term((constant("1/β", 1.0 / self.beta), log))],
                         None, [f"β = {self.beta:g}"])  # fmt: skip

    def explain_local(self, t, index):
        zz = self.input
        z = t.factor(zz, index)
        bz = self.beta * z.value
        if bz > self.threshold:
            return Explained(f"1 where β·{zz} > threshold", [Term((constant("1", 1.0),))], None,
                             [f"β·{z.label} = {bz:g} > {self.threshold:g}"])  # fmt: skip
        s = _of(t, zz, index, f"σ(β·{zz})", ops.sigmoid(np.float64(bz)))
        return Explained(f"σ(β·{zz}) = 1/(1 + exp(−β·{zz}))", [Term((s,))], None, [f"β = {self.beta:g}"])

    def own_recipe(self, t, name):
        zz, beta = self.input, self.beta
        branch = {"scale": beta, "threshold": self.threshold}
        if name == self.output:
            log = f"log(1 + exp(β·{zz}))"
            return _recipe(self, name, {"formula": f"softplus({zz}) = log(1 + exp(β·{zz}))/β",
                                        "terms": [[["1/β", 1.0 / beta], [log, log]]], "notes": [f"β = {beta:g}"]},
                           {"formula": f"softplus({zz}) = {zz} where β·{zz} > threshold", "terms": [["z"]],
                            "notes": [f"β·{{label}} = {{bz}} > {self.threshold:g}: the linear branch, as PyTorch"]},
                           made=((log, lambda: np.logaddexp(0.0, beta * t.value(zz))),), **branch)  # fmt: skip
        s = f"σ(β·{zz})"
        return _recipe(self, name, {"formula": f"σ(β·{zz}) = 1/(1 + exp(−β·{zz}))", "terms": [[[s, s]]],
                                    "notes": [f"β = {beta:g}"]},
                       {"formula": f"1 where β·{zz} > threshold", "terms": [[["1", 1.0]]],
                        "notes": [f"β·{{label}} = {{bz}} > {self.threshold:g}"]},
                       made=((s, lambda: ops.sigmoid(beta * t.value(zz))),), **branch)  # fmt: skip


#: The smooth activations' explain_value and explain_local, in the page's JavaScript
#: (layers.base.Recipe): the ``high`` branch where scale·Z > threshold (ELU's Z > 0,
#: softplus's β·Z > threshold), else the ``low`` one; each term a list of factors: "z",
#: [symbol, value] a constant, [key, symbol] an entry of a matrix made by Python (Φ(Z1)).
#: In the notes, {label} is Z's entry and {bz} scale·Z as Python's f"{x:g}" writes it.
SMOOTH = """function (t, p, name, i) {
  var z = t.factor(p.z, i), bz = p.scale * z.value, branch = p.high && bz > p.threshold ? p.high : p.low;
  function factor(spec) {
    if (spec === "z") { return z; }
    if (typeof spec[1] === "number") { return t.constant(spec[0], spec[1]); }
    var f = t.factor(spec[0], i, spec[1]);
    f.source = p.z;
    return f;
  }
  var notes = branch.notes.map(function (note) {
    return note.split("{label}").join(t.label(z)).split("{bz}").join(cnntraceGeneral(bz));
  });
  return { formula: branch.formula, terms: branch.terms.map(function (term) { return t.term(term.map(factor)); }),
           notes: notes };
}"""
