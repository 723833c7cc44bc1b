"""The losses, and the given upstream gradient that can stand in for one.

Each is the mean PyTorch's ``reduction="mean"`` computes: bce and mse over every entry of
the output, cross-entropy and nll over the images; or, where a file writes the loss as an
object ``{"type": "mse", "reduction": "sum"}``, their sum. mse may also be ``"half"``: of
½·(A − Y)², as hand derivations write it. bce goes with a sigmoid last, cross-entropy with
a softmax last and nll with a log-softmax last; the backward pass goes straight to
dL/dZ = (A − Y)/N (nll: (exp(A) − Y)/M), where the activation's derivative cancels.
``Given`` is the "here is dL/dY" exercise: no L, the backward pass starts from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    ClosedForm,
    Explained,
    Layout,
    Mistake,
    Option,
    Rule,
    Stage,
    Terms,
    choice_option,
    flag_option,
    grad_stage,
    size_of,
)
from cnntrace.naming import grad
from cnntrace.terms import MINUS, Factor, Term, constant, sigmoid
from cnntrace.text import shape_text

#: The option every loss takes: its mean (PyTorch's default) or its sum.
REDUCTION = choice_option(("mean", "sum"), "The mean over the entries (over the images for cross_entropy and nll), as PyTorch's default, or the sum.")


@dataclass(frozen=True)
class Loss:
    """A loss on the network's output ``output`` (A2), whose input is ``logits`` (Z2).

    As a layer kind does, each loss declares its ``OPTIONS`` (the object form's keys, parsed
    by problem.parse_loss and listed by the schema) and writes itself back (``options``);
    ``targets`` tells what its Y holds (for ``init --like``), ``averages`` whether it is a
    mean, and ``mistakes`` the slips made at it (the 2 of mse, a sum divided as a mean).
    A loss with no options of its own is a plain subclass, as a layer kind is (see Layer)."""

    type: ClassVar[str]
    #: The last layer it needs and cancels against, as messages name it ("a sigmoid"); the
    #: layer kind says which loss it pairs with (Layer.pairs_with).
    needs: ClassVar[str | None] = None
    given: ClassVar[bool] = False  # the gradient is given, there is no L
    #: What its Y holds: "labels" in [0, 1], "classes" (an index per image), "targets".
    targets: ClassVar[str] = "targets"
    #: {option: Option} of its object form, {"type": "mse", "reduction": "sum"}
    OPTIONS: ClassVar[dict[str, Option]] = {"reduction": REDUCTION}
    #: The functions its equations write by name (mean), for the renderers to typeset.
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("mean",)

    #: The torch.nn loss modules (class names) that are this loss (see bridge.torch_in).
    TORCH: ClassVar[tuple[str, ...]] = ()
    #: L in PyTorch, an expression of the output A, the logits Z and the target Y on the
    #: general shapes (Y one-hot for class indices); computed from Z where the loss fuses.
    #: ``{reduction}`` stands for the reduction's name ('mean'), ``{per_image}`` for the
    #: division by the images' count a mean makes (see ``torch_expressions``).
    TORCH_VALUE: ClassVar[str] = ""
    #: L as a function of A alone, for dL/dA where the loss fuses (autograd then skips A).
    TORCH_OUTPUT: ClassVar[str] = ""

    def torch_expressions(self) -> tuple[str, str]:
        """(TORCH_VALUE, TORCH_OUTPUT) written for this loss's options."""
        fill = {"reduction": repr(self.reduction), "per_image": " / A.shape[0]" if self.averages else ""}
        return self.TORCH_VALUE.format(**fill), self.TORCH_OUTPUT.format(**fill)

    output: str = "A2"
    logits: str = "Z2"
    reduction: str = "mean"

    @property
    def averages(self) -> bool:
        """Whether it is a mean (PyTorch's default), not a sum."""
        return self.reduction == "mean"

    def options(self) -> str | dict:
        """The loss as an input file writes it: its type, or an object with its options."""
        chosen = {name: getattr(self, name) for name, option in self.OPTIONS.items()
                  if getattr(self, name) != option.schema["default"]}  # fmt: skip
        return {"type": self.type, **chosen} if chosen else self.type

    def describe(self) -> str:
        """'mse', 'mse (sum, ½)'."""
        chosen = self.options()
        if isinstance(chosen, str):
            return chosen
        words = [str(value) if name == "reduction" else name for name, value in chosen.items() if name != "type"]
        return f"{self.type} ({', '.join(words)})"

    def fuses(self, layer) -> bool:
        return self.needs is not None and layer.pairs_with == self.type

    def check(self, layers, key: str) -> None:
        """Refuse a network this loss does not fit (InputError naming ``key``)."""
        if self.needs is not None and not (layers and self.fuses(layers[-1])):
            raise InputError(f"{self.type} needs {self.needs} as the last layer", key=key)

    def target(self, Y: np.ndarray, layout: Layout, M: int, batched: bool) -> np.ndarray:
        """Y (or the given gradient) as the file wrote it -> the general shape of the output,
        (M, *layout.shape); InputError naming Y (grad) when it does not fit."""
        raise NotImplementedError

    def value(self, output, target, logits):
        raise NotImplementedError

    def gradient(self, output, target, logits):
        """dL/d(output): what the backward pass starts from (shown only, where it fuses)."""
        raise NotImplementedError

    def fused_backward(self, output, target):
        """dL/d(logits), straight from the output and the target."""
        raise NotImplementedError

    def rules(self) -> tuple[str, ...]:
        """The conventions of this loss a learner must know (see Layer.rules)."""
        return ()

    def gradient_by_hand(self, output, target):
        """dL/d(output) as a learner computes it, from the output alone (verify's rounding:
        how the output's rounding moves it)."""
        return self.gradient(output, target, None)

    def value_by_hand(self, output, target):
        """L as a learner computes it, from the output alone (see gradient_by_hand)."""
        return self.value(output, target, None)

    def entries(self, layout: Layout, M: int) -> int:
        """How many entries the mean divides by (1 for a sum)."""
        return M * int(np.prod(layout.shape, dtype=np.int64)) if self.averages else 1

    def mistakes(self, values: dict, start: str) -> list[Mistake]:
        """The common mistakes at the loss, from the correct pass's ``values``; ``start``
        names where the backward pass starts (dL_dA2, or dL_dZ2 where the loss fuses)."""
        return []

    # -- the derivation ---------------------------------------------------------------

    def expressions(self, output, target) -> dict[str, np.ndarray]:
        """Named expressions the chain rules use as factors: {"A2 − Y": A2 − Y}."""
        return {}

    def closed_form(self, mean: bool, divisor: str) -> ClosedForm | None:
        """dL/d(logits) for the layer before the activation, where the loss fuses with it:
        ("(A2 − Y)/M", "A2 − Y", True)."""
        return None

    def divisor(self, units: int) -> str:
        """What the mean divides by, as the equations write it."""
        return "M" if units == 1 else "N"

    def stages(self, mean: bool, divisor: str) -> tuple[list[Stage], list[Stage]]:
        """([L], [dL/d(output)]): what the loss adds to the trace; ``mean`` where it
        divides by more than one."""
        raise NotImplementedError

    def fused_stage(self, mean: bool, divisor: str) -> Stage | None:
        """The dL/d(logits) stage that replaces the fused activation's own."""
        return None

    def saturation(self) -> str:
        """What to say when the shown-only dL/d(output) of a fused loss exceeds float64
        while the pass itself is finite."""
        return ""

    def explain(self, t, name: str, index: tuple[int, ...]) -> Explained:
        """The arithmetic of an entry of L, dL/d(output) or, where the loss fuses with the
        activation, dL/d(logits)."""
        raise NotImplementedError

    def terms(self, layouts, weights, name: str, images: int) -> Terms:
        """How large ``explain`` of one entry of its stage ``name`` is, at most (see
        Layer.terms): L has a term or two for every entry of the output, of every image."""
        if name == "L":
            return Terms(2 * images * size_of(layouts[self.output].shape))
        return Terms(2)
    def recipe(self, t, name: str):
        """How the page explains stage ``name`` by itself (layers.base.Recipe); None: a
        loss's few entries carry explain's text."""
        return None

    def has_recipe(self, name: str) -> bool:
        return False

    def _cells(self, t):
        """Every general index of the output, in order."""
        return list(np.ndindex(t.value(self.output).shape))

    def _mean(self, t, N: int) -> tuple:
        return (constant(f"1/{'N' if N != t.M else 'M'}", 1.0 / N),) if N > 1 and self.averages else ()

    def _image_mean(self, t) -> tuple:
        """The 1/M of a mean over the images, as a factor; nothing for a sum."""
        return t.mean() if self.averages else ()

    def _delta(self, t, index, N):
        """(A − Y)/N as two terms."""
        mean = self._mean(t, N)
        a, y = t.factor(self.output, index), t.factor("Y", index)
        return [Term((*mean, a)), Term((MINUS, *mean, y))]


def _labels_like_output(Y, layout: Layout, M: int, batched: bool, what: str) -> np.ndarray:
    """Targets shaped like the output: a number per output, a list per image for a batch."""
    expected = layout.user_shape(batched, M)
    if Y.shape == expected:
        return Y.reshape(M, *layout.shape)
    if layout.shape == (1,) and Y.size == M and (Y.ndim == 1 or (Y.ndim == 0 and M == 1)):
        if batched and Y.ndim != 1:
            raise InputError(f"expected a list of {M} {what}s, one per image of X, found shape "
                             f"{shape_text(Y.shape)}", key="Y")  # fmt: skip
        return Y.reshape(M, 1)
    if not batched and layout.shape == (1,) and Y.ndim <= 2 and Y.size == 1:
        return Y.reshape(M, 1)
    if layout.shape == (1,):
        if batched:
            raise InputError(f"expected a list of {M} {what}s, one per image of X, found shape "
                             f"{shape_text(Y.shape)}", key="Y")  # fmt: skip
        found = f"{Y.size} entries" if Y.ndim else "a number"
        raise InputError(f"expected 1 {what}, found {found} (shape {shape_text(Y.shape)})", key="Y")
    raise InputError(
        f"expected {what}s shaped like the output, {shape_text(expected, 'a number')}; found "
        f"{shape_text(Y.shape, 'a number')}",
        key="Y",
    )


class BCE(Loss):
    """L = mean of −Y·log(A) − (1 − Y)·log(1 − A) over every entry, A = σ(Z)."""

    type: ClassVar[str] = "bce"
    needs: ClassVar[str] = "a sigmoid"
    targets: ClassVar[str] = "labels"

    TORCH: ClassVar[tuple[str, ...]] = ("BCEWithLogitsLoss", "BCELoss")
    TORCH_VALUE: ClassVar[str] = "F.binary_cross_entropy_with_logits(Z, Y, reduction={reduction})"
    TORCH_OUTPUT: ClassVar[str] = "F.binary_cross_entropy(A, Y, reduction={reduction})"

    def target(self, Y, layout, M, batched):
        general = _labels_like_output(Y, layout, M, batched, "label")
        if np.any((general < 0) | (general > 1)):
            bad = general.flat[np.argmax((general.ravel() < 0) | (general.ravel() > 1))]
            raise InputError(f"labels must lie in [0, 1], found {float(bad)!r}", key="Y")
        return general

    def value(self, output, target, logits):
        return ops.bce_loss(logits, target, self.reduction)

    def gradient(self, output, target, logits):
        return ops.bce_grad_A(logits, target, self.reduction)

    def value_by_hand(self, output, target):
        """mean of −Y·log A − (1 − Y)·log(1 − A), from A itself."""
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(target != 0, -target * np.log(output), 0.0)
            terms = terms + np.where(target != 1, -(1.0 - target) * np.log(1.0 - output), 0.0)
        return np.asarray(terms.sum() / output.size)

    def gradient_by_hand(self, output, target):
        """(−Y/A + (1 − Y)/(1 − A)) / N from A itself, 1/(1 − A) amplifying A's rounding."""
        with np.errstate(divide="ignore", invalid="ignore"):
            positive = np.where(target != 0, -target / output, 0.0)
            negative = np.where(target != 1, (1.0 - target) / (1.0 - output), 0.0)
        return (positive + negative) / output.size

    def fused_backward(self, output, target):
        return ops.bce_sigmoid_backward(output, target, self.reduction)

    def expressions(self, output, target):
        return {f"{self.output} − Y": output - target}

    def closed_form(self, mean, divisor):
        a = self.output
        return ClosedForm(f"({a} − Y)/{divisor}" if mean else f"{a} − Y", f"{a} − Y", mean)

    def saturation(self):
        a, z = self.output, self.logits
        return (f"exceeds float64: |{z}| is past about 709, where the sigmoid saturates and "
                f"1/(1 − {a}) or 1/{a} overflows; L and dL/d{z} = {a} − Y are still finite "
                f"(cnntrace check and train do not need dL/d{a})")  # fmt: skip

    def explain(self, t, name, index):
        a, z = self.output, self.logits
        N = t.value(a).size
        mean = self._mean(t, N)
        if name == "L":
            terms = []
            for cell in self._cells(t):
                y = t.factor("Y", cell)
                zc = float(t.value(z)[cell])
                if y.value != 0:
                    log_a = Factor(f"log({a})", t.user_index(z, cell), float(-np.logaddexp(0.0, -zc)), a)
                    terms.append(Term((MINUS, *mean, y, log_a)))
                if y.value != 1:
                    log_1a = Factor(f"log(1 − {a})", t.user_index(z, cell), float(-np.logaddexp(0.0, zc)), a)
                    terms.append(Term((MINUS, *mean, Factor("(1 − Y)", y.index, 1.0 - y.value, "Y"), log_1a)))
            formula = f"−Y·log({a}) − (1 − Y)·log(1 − {a})"
            if mean:
                formula = f"(1/{'M' if N == t.M else 'N'})·Σ_m ({formula})"
            return Explained(formula, terms, None, ["a term whose label weight (Y or 1 − Y) is 0 is left out"])
        if name == f"dL_d{a}":
            y = t.factor("Y", index)
            zc = float(t.value(z)[index])
            terms = []
            if y.value != 0:
                terms.append(Term((MINUS, *mean, y, Factor(f"1/{a}", y.index, 1.0 / sigmoid(zc), a))))
            if y.value != 1:
                terms.append(Term((*mean, Factor("(1 − Y)", y.index, 1.0 - y.value, "Y"),
                                   Factor(f"1/(1 − {a})", y.index, 1.0 / sigmoid(-zc), a))))  # fmt: skip
            dL_dA = f"−Y/{a} + (1 − Y)/(1 − {a})"
            formula = f"(1/{'M' if N == t.M else 'N'})·({dL_dA})" if mean else dL_dA
            return Explained(formula, terms, None, ["a term whose label weight is 0 is left out"])
        notes = [f"the chain rule dL/d{a}·d{a}/d{z} gives the same: {a}·(1 − {a}) cancels"]
        divisor = "M" if N == t.M else "N"
        return Explained(f"({a} − Y)/{divisor}" if mean else f"{a} − Y", self._delta(t, index, N), None, notes)

    def mistakes(self, values, start):
        return _sum_mistakes(self, values, start)

    def stages(self, mean, divisor):
        a = self.output
        loss = f"−Y·log({a}) − (1 − Y)·log(1 − {a})"
        gradient = f"−Y/{a} + (1 − Y)/(1 − {a})"
        L = Stage("L", "forward", "L", f"mean({loss})" if mean else loss, Layout(()))
        dL_dA = grad_stage(a, f"({gradient}) / {divisor}" if mean else gradient, None,
            Rule(f"∂L/∂{a} = ∂/∂{a} ({loss})",
                 f"(1/{divisor})·({gradient})" if mean else f"{gradient} = ({a} − Y)/({a}·(1 − {a}))",
                 ("Y", a)),
        )  # fmt: skip
        return [L], [dL_dA]

    def fused_stage(self, mean, divisor):
        a, z = self.output, self.logits
        result = f"({a} − Y) / {divisor}" if mean else f"{a} − Y"
        simplified = (f"({a} − Y)/{divisor}" if mean
                      else f"({a} − Y)/({a}·(1 − {a})) · {a}·(1 − {a}) = {a} − Y")  # fmt: skip
        return grad_stage(z, f"dL/d{a}·d{a}/d{z} = {result}", None,
            Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", simplified,
                 (grad(a), f"d{a}_d{z}", f"{a} − Y"), "the sigmoid's derivative cancels"),
        )  # fmt: skip


class CrossEntropy(Loss):
    """L = mean over the images of −Σ_i Y[i]·log(A[i]), A = softmax(Z); Y a class index or
    a probability vector per image."""

    type: ClassVar[str] = "cross_entropy"
    needs: ClassVar[str] = "a softmax"
    targets: ClassVar[str] = "classes"
    last: ClassVar[str] = "softmax"  # as messages name the last layer

    TORCH: ClassVar[tuple[str, ...]] = ("CrossEntropyLoss",)
    TORCH_VALUE: ClassVar[str] = "F.cross_entropy(Z, Y, reduction={reduction})"
    TORCH_OUTPUT: ClassVar[str] = "-(Y * A.log()).sum(){per_image}"

    def entries(self, layout, M):
        return M if self.averages else 1

    def divisor(self, units):
        return "M"

    def rules(self):
        return ("Y is the right class's index (counted from 0): the one-hot vector with 1 there.",)

    def target(self, Y, layout, M, batched):
        (n,) = layout.shape
        indices = Y.ndim == (1 if batched else 0) and Y.size == M  # else the shape error below
        if indices:
            return _one_hot(Y, n, M, self.last)
        if Y.shape != ((M, n) if batched else (n,)):
            per = "for each image " if batched else ""
            raise InputError(
                f"expected a class index or a probability vector of {n} {per}(the softmax has "
                f"{n} units); found shape {shape_text(Y.shape, 'a number')}",
                key="Y",
            )
        general = Y.reshape(M, n)
        if np.any(general < 0):
            raise InputError("probabilities cannot be negative", key="Y")
        sums = general.sum(axis=1)
        if np.any(np.abs(sums - 1) > 1e-9):
            raise InputError(f"the probabilities of an image sum to 1; found {float(sums[np.argmax(np.abs(sums - 1))])!r}",
                             key="Y")  # fmt: skip
        return general

    def value(self, output, target, logits):
        return ops.cross_entropy_loss(logits, target, self.reduction)

    def value_by_hand(self, output, target):
        """mean over the images of −Σ Y·log A, from A itself."""
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(target != 0, -target * np.log(output), 0.0)
        return np.asarray(terms.sum() / output.shape[0])

    def gradient(self, output, target, logits):
        return ops.cross_entropy_grad_A(output, target, self.reduction)

    def fused_backward(self, output, target):
        return ops.cross_entropy_softmax_backward(output, target, self.reduction)

    def mistakes(self, values, start):
        return _sum_mistakes(self, values, start)

    def expressions(self, output, target):
        return {f"{self.output} − Y": output - target}

    def closed_form(self, mean, divisor):
        a = self.output
        return ClosedForm(f"({a} − Y)/M" if mean else f"{a} − Y", f"{a} − Y", mean)

    def saturation(self):
        a, z = self.output, self.logits
        return (f"exceeds float64: a labelled class's {a} rounds to 0 (its {z} lies some 745 or "
                f"more below the largest), where −Y/{a} overflows; L and dL/d{z} = {a} − Y are "
                f"still finite (cnntrace check and train do not need dL/d{a})")  # fmt: skip

    def explain(self, t, name, index):
        a, z = self.output, self.logits
        mean = self._image_mean(t)
        if name == "L":
            terms = []
            log_A = ops.log_softmax(t.value(z))
            for cell in self._cells(t):
                y = t.factor("Y", cell)
                if y.value != 0:
                    log_a = Factor(f"log({a})", t.user_index(a, cell), float(log_A[cell]), a)
                    terms.append(Term((MINUS, *mean, y, log_a)))
            formula = f"−Σ_i Y[i]·log({a}[i])"
            if mean:
                formula = f"(1/M)·Σ_m ({formula})"
            return Explained(formula, terms, None, [f"a class of weight 0 is left out; log({a}) is taken from {z}"])
        if name == f"dL_d{a}":
            y = t.factor("Y", index)
            terms = []
            if y.value != 0:
                terms.append(Term((MINUS, *mean, y, Factor(f"1/{a}", y.index, 1.0 / float(t.value(a)[index]), a))))
            formula = f"(1/M)·(−Y/{a})" if mean else f"−Y/{a}"
            return Explained(formula, terms, None, ["a class of weight 0 gets 0"])
        a_factor, y = t.factor(a, index), t.factor("Y", index)
        terms = [Term((*mean, a_factor)), Term((MINUS, *mean, y))]
        notes = [f"the chain rule (d{a}/d{z})ᵀ·dL/d{a} gives the same: the Jacobian and −Y/{a} cancel"]
        return Explained(f"({a} − Y)/M" if mean else f"{a} − Y", terms, None, notes)

    def stages(self, mean, divisor):
        a = self.output
        loss = f"−Σ Y·log({a})"
        L = Stage("L", "forward", "L", f"mean({loss})" if mean else loss, Layout(()))
        dL_dA = grad_stage(a, f"−Y/{a} / M" if mean else f"−Y/{a}", None,
            Rule(f"∂L/∂{a} = ∂/∂{a} ({loss})", f"(1/M)·(−Y/{a})" if mean else f"−Y/{a}", ("Y", a)),
        )  # fmt: skip
        return [L], [dL_dA]

    def fused_stage(self, mean, divisor):
        a, z = self.output, self.logits
        result = f"({a} − Y) / M" if mean else f"{a} − Y"
        return grad_stage(z, f"(d{a}/d{z})ᵀ·dL/d{a} = {result}", None,
            Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", result.replace(" / ", "/"),
                 (grad(a), f"d{a}_d{z}", f"{a} − Y"),
                 f"the softmax's Jacobian and −Y/{a} cancel, since Σ Y = 1"),
        )  # fmt: skip


@dataclass(frozen=True)
class MSE(Loss):
    """L = mean of (A − Y)² over every entry; with ``half``, of ½·(A − Y)² (Matt Mazur's
    E = Σ ½(target − out)² is the half sum)."""

    type: ClassVar[str] = "mse"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "reduction": REDUCTION,
        "half": flag_option(False, "½·(A − Y)², as most hand derivations write it: its derivative has no 2.", "half"),
    }

    half: bool = False

    TORCH: ClassVar[tuple[str, ...]] = ("MSELoss",)
    TORCH_VALUE: ClassVar[str] = "F.mse_loss(A, Y, reduction={reduction})"
    TORCH_OUTPUT: ClassVar[str] = "F.mse_loss(A, Y, reduction={reduction})"

    def torch_expressions(self):
        value, output = super().torch_expressions()
        return (f"{value} / 2", f"{output} / 2") if self.half else (value, output)

    def target(self, Y, layout, M, batched):
        return _labels_like_output(Y, layout, M, batched, "target")

    def value(self, output, target, logits):
        return ops.mse_loss(output, target, self.reduction, self.half)

    def gradient(self, output, target, logits):
        return ops.mse_grad(output, target, self.reduction, self.half)

    def _square(self) -> str:
        return f"½·({self.output} − Y)²" if self.half else f"({self.output} − Y)²"

    def _derivative(self, mean: bool, divisor: str = "N") -> str:
        a = self.output
        if self.half:
            return f"({a} − Y)/{divisor}" if mean else f"{a} − Y"
        return f"2·({a} − Y)/{divisor}" if mean else f"2·({a} − Y)"

    def explain(self, t, name, index):
        a = self.output
        N = t.value(a).size
        mean = self._mean(t, N)
        half = (constant("½", 0.5),) if self.half else ()
        if name == "L":
            terms = []
            for cell in self._cells(t):
                d = float(t.value(a)[cell] - t.value("Y")[cell])
                difference = Factor(f"({a} − Y)", t.user_index(a, cell), d, a)
                terms.append(Term((*half, *mean, difference, difference)))
            total = "Σ " if N > 1 else ""
            return Explained(f"(1/N)·Σ {self._square()}" if mean else f"{total}{self._square()}", terms, None, [])
        two = () if self.half else (constant("2", 2.0),)
        terms = [Term((*two, *mean, t.factor(a, index))), Term((MINUS, *two, *mean, t.factor("Y", index)))]
        notes = [f"the ½ and the 2 of the square's derivative cancel: d/d{a} ½·({a} − Y)² = {a} − Y"] if self.half else []
        return Explained(self._derivative(bool(mean)), terms, None, notes)

    def stages(self, mean, divisor):
        a = self.output
        square = self._square()
        loss = f"mean({square})" if mean else (f"Σ {square}" if not self.averages else square)
        L = Stage("L", "forward", "L", loss, Layout(()))
        derivative = self._derivative(mean)
        note = "N: the number of entries the mean is over" if mean else ""
        if self.half:
            note = (note + "; " if note else "") + "the ½ cancels the 2 of the square's derivative"
        dL_dA = grad_stage(a, derivative.replace("/N", " / N"), None,
            Rule(f"∂L/∂{a} = ∂/∂{a} {loss}", derivative, ("Y", a), note),
        )  # fmt: skip
        return [L], [dL_dA]

    def mistakes(self, values, start):
        a = self.output
        first = grad(start)
        out = _sum_mistakes(self, values, start)
        if start != a:
            return out
        if self.half:
            out.append(Mistake("mse_half_twice", f"dL/d{a} = 2·({a} − Y): the loss is ½·({a} − Y)², whose "
                               "derivative has no 2 (the ½ cancels it)", {first: values[first] * 2}))  # fmt: skip
        else:
            out.append(Mistake("mse_half_assumed", f"dL/d{a} = ({a} − Y): the 2 of the square's derivative left "
                               "out, as if the loss were ½·(A − Y)²", {first: values[first] / 2}))  # fmt: skip
        return out


class NLL(Loss):
    """L = mean over the images of −A[class], A = log softmax(Z): the log-probability of
    each image's class, negated (PyTorch's nll_loss after log_softmax is cross-entropy)."""

    type: ClassVar[str] = "nll"
    needs: ClassVar[str] = "a log_softmax"
    TORCH: ClassVar[tuple[str, ...]] = ("NLLLoss",)
    # Y is one-hot here (a class index per image): its argmax is the index NLLLoss takes.
    TORCH_VALUE: ClassVar[str] = "F.nll_loss(A, Y.argmax(dim=1), reduction={reduction})"
    TORCH_OUTPUT: ClassVar[str] = TORCH_VALUE
    targets: ClassVar[str] = "classes"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("mean", "exp")

    def entries(self, layout, M):
        return M if self.averages else 1

    def divisor(self, units):
        return "M"

    def target(self, Y, layout, M, batched):
        (n,) = layout.shape
        if Y.ndim != (1 if batched else 0):
            per = f"a list of {M} class indices, one per image" if batched else "one class index"
            raise InputError(f"nll takes {per}; found shape {shape_text(Y.shape, 'a number')}", key="Y")
        return _one_hot(Y, n, M, "log_softmax")

    def value(self, output, target, logits):
        return ops.nll_loss(output, target, self.reduction)

    def gradient(self, output, target, logits):
        return ops.nll_grad_A(output, target, self.reduction)

    def fused_backward(self, output, target):
        return ops.nll_log_softmax_backward(output, target, self.reduction)

    def expressions(self, output, target):
        return {f"exp({self.output}) − Y": np.exp(output) - target}

    def closed_form(self, mean, divisor):
        a = self.output
        return ClosedForm(f"(exp({a}) − Y)/M" if mean else f"exp({a}) − Y", f"exp({a}) − Y", mean)

    def saturation(self):
        return ""  # −Y/M and δij − exp(A[j]) are finite wherever A is

    def explain(self, t, name, index):
        a, z = self.output, self.logits
        mean = self._image_mean(t)
        if name == "L":
            terms = [Term((MINUS, *mean, t.factor("Y", cell), t.factor(a, cell)))
                     for cell in self._cells(t) if t.value("Y")[cell] != 0]  # fmt: skip
            formula = f"−Σ_i Y[i]·{a}[i]"
            if mean:
                formula = f"(1/M)·Σ_m ({formula})"
            return Explained(formula, terms, None, [f"Y is one-hot: the term of each image's class, −{a}[class]"])
        if name == f"dL_d{a}":
            y = t.factor("Y", index)
            terms = [Term((MINUS, *mean, y))] if y.value != 0 else []
            return Explained("(1/M)·(−Y)" if mean else "−Y", terms, None, ["a class of weight 0 gets 0"])
        value = float(np.exp(t.value(a)[index]))
        p = Factor(f"exp({a})", t.user_index(a, index), value, a)
        terms = [Term((*mean, p)), Term((MINUS, *mean, t.factor("Y", index)))]
        notes = [f"exp({a}) = softmax({z}); the chain rule (d{a}/d{z})ᵀ·dL/d{a} = −Y + exp({a})·Σ Y gives the same, since Σ Y = 1"]
        return Explained(f"(exp({a}) − Y)/M" if mean else f"exp({a}) − Y", terms, None, notes)

    def stages(self, mean, divisor):
        a = self.output
        loss = f"−Σ Y·{a}"
        L = Stage("L", "forward", "L", f"mean({loss})" if mean else loss, Layout(()))
        dL_dA = grad_stage(a, "−Y / M" if mean else "−Y", None,
            Rule(f"∂L/∂{a} = ∂/∂{a} ({loss})", "(1/M)·(−Y)" if mean else "−Y", ("Y",)),
        )  # fmt: skip
        return [L], [dL_dA]

    def fused_stage(self, mean, divisor):
        a, z = self.output, self.logits
        result = f"(exp({a}) − Y) / M" if mean else f"exp({a}) − Y"
        return grad_stage(z, f"(d{a}/d{z})ᵀ·dL/d{a} = {result}", None,
            Rule(f"∂L/∂{z} = ∂L/∂{a} · ∂{a}/∂{z}", result.replace(" / ", "/"),
                 (grad(a), f"d{a}_d{z}", f"exp({a}) − Y"),
                 f"∂{a}[i]/∂{z}[j] = δij − exp({a}[j]), so Σ_i −Y[i]·(δij − exp({a}[j])) = −Y[j] + exp({a}[j])·Σ Y "
                 f"= exp({a}[j]) − Y[j], since Σ Y = 1; exp({a}) = softmax({z})"),
        )  # fmt: skip

    def mistakes(self, values, start):
        return _sum_mistakes(self, values, start)


class GivenGradient(Loss):
    """No loss: ``grad`` gives dL/d(output) itself, in the output's shape."""

    type: ClassVar[str] = "grad"
    given: ClassVar[bool] = True

    TORCH_VALUE: ClassVar[str] = "(A * Y).sum()"
    TORCH_OUTPUT: ClassVar[str] = "(A * Y).sum()"

    def target(self, grad, layout, M, batched):
        expected = layout.user_shape(batched, M)
        if grad.shape != expected and not (grad.size == 1 and np.prod(expected, dtype=np.int64) == 1):
            raise InputError(
                f"the gradient has the output's shape ({self.output}: "
                f"{shape_text(expected, 'a number')}); found {shape_text(grad.shape, 'a number')}",
                key="grad",
            )
        return grad.reshape(M, *layout.shape)

    def value(self, output, target, logits):
        return None

    def explain(self, t, name, index):
        return Explained("given", [Term((t.factor("grad", index, "grad"),))], None, ["the input's grad, where the backward pass starts"])

    def gradient(self, output, target, logits):
        return target

    def stages(self, mean, divisor):
        a = self.output
        return [], [
            grad_stage(a, "given", None,
                  Rule("", "the gradient the input gives", ("grad",),
                       "the backward pass starts from it"))  # fmt: skip
        ]


LOSSES: dict[str, type[Loss]] = {kind.type: kind for kind in (BCE, CrossEntropy, MSE, NLL)}


def _one_hot(Y, n: int, M: int, last: str) -> np.ndarray:
    """Class indices, one per image, as one-hot rows (M, n); InputError naming Y."""
    if Y.size != M:
        raise InputError(f"expected a class index for each of the {M} images of X, found {Y.size}", key="Y")
    classes = Y.reshape(M)
    bad = classes[(classes != np.round(classes)) | (classes < 0) | (classes >= n)]
    if bad.size:
        raise InputError(
            f"a class index is a whole number from 0 to {n - 1} (the {last} has {n} "
            f"units); found {float(bad[0])!r}",
            key="Y",
        )
    return np.eye(n)[classes.astype(np.int64)]


def _sum_mistakes(loss: Loss, values: dict, start: str) -> list[Mistake]:
    """A sum divided as if it were the mean: dL/d``start`` N times too small."""
    if loss.averages:
        return []  # the mean's 1/N left out is the network's batch_mean_missing
    first = grad(start)
    counts = {len(values[loss.output]): "images", values[loss.output].size: "entries"}
    return [
        Mistake("sum_divided", f"dL/d{start} divided by the {N} {what}: the loss is their sum "
                f'("reduction": "sum"), not their mean', {first: values[first] / N})
        for N, what in counts.items() if N > 1
    ]  # fmt: skip


def default_loss(layers) -> str | None:
    """The loss a network implies when the file leaves it out: the one its last layer pairs
    with (bce after a sigmoid, cross_entropy after a softmax); None when it implies none."""
    return layers[-1].pairs_with if layers else None


