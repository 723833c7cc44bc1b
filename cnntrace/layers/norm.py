"""Batch normalization: Z = γ·x̂ + β, x̂ = (X − μ)/√(σ² + ε), per channel (or unit).

γ is W{l} and β is B{l}, one per channel of maps (as PyTorch's BatchNorm2d) or per unit of
vectors (BatchNorm1d). In training (``mode`` "train") μ and σ² are the batch's, σ² biased
(divided by N, the values of a channel: M·H·W or M), and the trace shows them and x̂ as
stages of their own; the backward pass goes through x̂, σ² and μ as the derivation writes it:

    dL/dx̂ = dL/dZ·γ
    dL/dσ² = Σ dL/dx̂·(X − μ)·(−½)(σ² + ε)^(−3/2)
    dL/dμ  = Σ dL/dx̂·(−1/√(σ² + ε)) + dL/dσ²·Σ −2(X − μ)/N
    dL/dX  = dL/dx̂/√(σ² + ε) + dL/dσ²·2(X − μ)/N + dL/dμ/N
           = (γ/(N·√(σ² + ε)))·(N·dL/dZ − Σ dL/dZ − x̂·Σ dL/dZ·x̂)

and the update also holds the running statistics mean{l} and var{l} where the input gives
them (PyTorch's: σ² unbiased, N/(N − 1) of it). In evaluation (``mode`` "eval") x̂ is taken
with the given running statistics, and dL/dX = dL/dx̂/√(var + ε).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple

import numpy as np

from cnntrace import checks, ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Explained,
    Imported,
    Mistake,
    Option,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    WeightedLayer,
    choice_option,
    grad_stage,
    onnx_float,
    size_of,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import MINUS, Factor, Term, constant
from cnntrace.text import number_text, symbol


def _momentum(value, key):
    momentum = checks.finite_number(key, value, "momentum")
    if not 0 <= momentum <= 1:
        raise InputError(f"momentum is between 0 and 1, got {number_text(value)}", key=key)
    return momentum


class NormCache(NamedTuple):
    """What batch norm keeps for its backward pass: the op's cache, and the μ and σ² it
    normalized with (the batch's, or the running statistics)."""

    op: ops.BatchNormCache
    mu: np.ndarray  # (C,)
    sigmasq: np.ndarray  # (C,)


@dataclass(frozen=True)
class BatchNorm(WeightedLayer):
    """Z = γ·(X − μ)/√(σ² + ε) + β per channel; γ = W (C,), β = B (C,)."""

    type: ClassVar[str] = "batchnorm"
    DESCRIPTION: ClassVar[str] = ("Z = W·x̂ + B, x̂ = (input − μ)/√(σ² + ε) per channel (per unit of vectors): "
                                  "W is γ and B is β, C numbers each; eval mode reads mean{l} and var{l}.")  # fmt: skip
    input_form: ClassVar[str] = "either"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ()
    OPTIONS: ClassVar[dict] = {
        "eps": Option(lambda value, key: checks.positive_number(key, value), {"type": "number", "exclusiveMinimum": 0, "default": 1e-5,
                                               "description": "ε, added to the variance."}),
        "momentum": Option(_momentum, {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                                       "description": "The running statistics' update: (1 − momentum)·old + momentum·batch's."}),
        "mode": choice_option(("train", "eval"), "train: the batch's mean and (biased) variance, as PyTorch in "
                              "training; eval: the running statistics mean{l} and var{l} of the input."),
    }  # fmt: skip

    eps: float = 1e-5
    momentum: float = 0.1
    mode: str = "train"

    # -- names --------------------------------------------------------------------------

    @property
    def MEAN(self) -> str:
        return self.named("mean")

    @property
    def VAR(self) -> str:
        return self.named("var")

    @property
    def mu(self) -> str:
        return self.named("mu")

    @property
    def sigmasq(self) -> str:
        return self.named("sigmasq")

    @property
    def xhat(self) -> str:
        return self.named("xhat")

    @property
    def training(self) -> bool:
        return self.mode == "train"

    @property
    def running(self):
        return (self.MEAN, self.VAR)

    def options(self):
        out = {"type": self.type}
        if self.eps != 1e-5:
            out["eps"] = self.eps
        if self.momentum != 0.1:
            out["momentum"] = self.momentum
        if self.mode != "train":
            out["mode"] = self.mode
        return out if len(out) > 1 else self.type

    def describe(self):
        eps = f", eps {self.eps:g}" if self.eps != 1e-5 else ""
        momentum = f", momentum {self.momentum:g}" if self.training and self.momentum != 0.1 else ""
        return f"batchnorm ({self.mode}{eps}{momentum})"

    # -- shapes ---------------------------------------------------------------------------

    def infer(self, layout, given):
        C = layout.shape[0]
        per = "channel" if layout.form == "map" else "unit"
        # The channels (units) were fixed by X or by the weight before: a mismatch names both.
        sized_by = layout.sized_by or f"{self.input} has {C} {per}{'s' * (C > 1)}"
        weights = {
            self.W: checks.vector(self.W, given[self.W], C, f"numbers for γ, one per {per}", sized_by).copy(),
            self.B: checks.vector(self.B, given[self.B], C, f"numbers for β, one per {per}", sized_by).copy(),
        }
        for name, what in ((self.MEAN, "running mean"), (self.VAR, "running variance")):
            if name not in given:
                if not self.training:
                    raise InputError(f"missing: {self.place.key()} (batchnorm in eval mode) needs {name}, "
                                     f"the {what}, one per {per}", key=name)  # fmt: skip
                continue
            weights[name] = checks.vector(name, given[name], C, f"numbers, the {what}, one per {per}", sized_by).copy()
        if self.VAR in weights and np.any(weights[self.VAR] < 0):
            raise InputError("a variance is never negative", key=self.VAR)
        return layout, weights

    def reads_channels(self, given):
        return given[self.W].size > 1

    def for_batch(self, layout, batched, M):
        N = M * (layout.shape[1] * layout.shape[2] if layout.form == "map" else 1)
        if self.training and N == 1:
            where = "after a dense layer" if layout.form == "vector" else "of 1×1 maps"
            raise InputError(f"batch norm in training takes each {'unit' if layout.form == 'vector' else 'channel'}'s "
                             f"variance over the batch, and a batch of one image {where} has one value "
                             "(as PyTorch refuses it); give more images, or \"mode\": \"eval\"",
                             key=self.place.key())  # fmt: skip
        return self

    def work(self, layouts, weights):
        size = 1
        for n in layouts[self.input].shape:
            size *= n
        return 1, 12 * size

    # -- the pass -------------------------------------------------------------------------

    def evaluating(self):
        return replace(self, mode="eval")

    def start_running(self, weights):
        C = weights[self.W].shape[0]
        return {self.MEAN: np.zeros(C), self.VAR: np.ones(C)}

    def update_running(self, cache, weights):
        if not self.training or self.MEAN not in weights:
            return {}
        mean, var = ops.running_statistics(weights[self.MEAN], weights[self.VAR], cache.mu, cache.sigmasq,
                                           cache.op.N, self.momentum)  # fmt: skip
        return {self.MEAN: mean, self.VAR: var}

    # -- PyTorch and ONNX ---------------------------------------------------------------

    TORCH: ClassVar[tuple[str, ...]] = ("BatchNorm2d", "BatchNorm1d")
    ONNX: ClassVar[tuple[str, ...]] = ("BatchNormalization",)

    _TORCH_HELPER: ClassVar[str] = '''
def batchnorm_steps(module, x, dy):
    """Batch norm written out step by step (mu, sigmasq, xhat, then gamma*xhat + beta) so that
    autograd reaches each step: their values and the gradients dy sends back to them."""
    maps = x.dim() == 4
    over, shape = ((0, 2, 3), (1, -1, 1, 1)) if maps else ((0,), (1, -1))
    x = x.detach().requires_grad_(True)
    if module.training:
        mu, sigmasq = x.mean(dim=over), x.var(dim=over, unbiased=False)
        mu.retain_grad()
        sigmasq.retain_grad()
    else:
        mu, sigmasq = module.running_mean, module.running_var
    xhat = (x - mu.reshape(shape)) / torch.sqrt(sigmasq.reshape(shape) + module.eps)
    xhat.retain_grad()
    y = module.weight.detach().reshape(shape) * xhat + module.bias.detach().reshape(shape)
    if dy is not None:
        y.backward(dy)
    return {"mu": mu, "sigmasq": sigmasq, "xhat": xhat,
            "dL_dmu": mu.grad, "dL_dsigmasq": sigmasq.grad, "dL_dxhat": xhat.grad}
'''

    def torch_form(self, t):
        maps = t.layout(self.input).form == "map"
        C = t.weights[self.W].shape[0]
        shown = tuple((name, f"batchnorm_steps(module, x, dy)[{step!r}]")
                      for step, name in (("mu", self.mu), ("sigmasq", self.sigmasq), ("xhat", self.xhat)))
        shown += tuple((grad(name), f"batchnorm_steps(module, x, dy)['dL_d{step}']")
                       for step, name in (("mu", self.mu), ("sigmasq", self.sigmasq), ("xhat", self.xhat)))
        given = tuple((name, attribute) for name, attribute in ((self.MEAN, "running_mean"), (self.VAR, "running_var"))
                      if name in t.weights)  # fmt: skip
        return TorchForm(f"nn.BatchNorm{'2' if maps else '1'}d({C}, eps={self.eps!r}, momentum={self.momentum!r})",
                         ((self.W, "weight", False), (self.B, "bias", False)), buffers=given,
                         shown=shown, training=self.training, helpers=self._TORCH_HELPER)  # fmt: skip

    @classmethod
    def _imported(cls, gamma, beta, mean, var, eps, momentum, training) -> Imported:
        description = {"type": cls.type}
        if eps != 1e-5:
            description["eps"] = eps
        if momentum != 0.1:
            description["momentum"] = momentum
        if not training:
            description["mode"] = "eval"
        running = () if mean is None else (mean, var)
        return Imported(description if len(description) > 1 else cls.type, (gamma, beta), running)

    @classmethod
    def from_torch(cls, module, array):
        if module.momentum is None:
            raise Refused(f"{type(module).__name__} with momentum None (a cumulative average)")
        C = module.num_features
        gamma = array(module.weight) if module.affine else np.ones(C)
        beta = array(module.bias) if module.affine else np.zeros(C)
        mean = array(module.running_mean) if module.track_running_stats else None
        var = array(module.running_var) if module.track_running_stats else None
        training = module.training or not module.track_running_stats
        return cls._imported(gamma, beta, mean, var, float(module.eps), float(module.momentum), training)

    @classmethod
    def from_state(cls, tensors):
        missing = [name for name in ("weight", "bias") if name not in tensors]
        if missing:
            raise Refused(f"batch norm needs weight and bias (γ and β); missing {', '.join(missing)}")
        running = (tensors["running_mean"], tensors["running_var"]) if "running_mean" in tensors else ()
        return Imported(cls.type, (tensors["weight"], tensors["bias"]), running)

    @classmethod
    def from_onnx(cls, node):
        if any(value is None for value in node.inputs[:4]) or len(node.inputs) < 4:
            raise Refused("BatchNormalization whose scale, bias, mean or variance is not a constant")
        gamma, beta, mean, var = node.inputs[:4]
        attributes = node.attributes
        # ONNX's momentum weighs the old statistic: PyTorch's is 1 − ONNX's.
        momentum = 1.0 - onnx_float(attributes.get("momentum", 0.9))
        return cls._imported(gamma, beta, mean, var, onnx_float(attributes.get("epsilon", 1e-5)),
                             round(momentum, 12), bool(attributes.get("training_mode", 0)))  # fmt: skip

    def onnx_nodes(self, t, x, y):
        C = t.weights[self.W].shape[0]
        mean = t.weights.get(self.MEAN, np.zeros(C))
        var = t.weights.get(self.VAR, np.ones(C))
        attributes = {"epsilon": self.eps, "momentum": 1.0 - self.momentum}
        if self.training:
            attributes["training_mode"] = 1
        outputs = [y, f"{self.MEAN}_next", f"{self.VAR}_next"] if self.training else [y]
        return ([("BatchNormalization", [x, self.W, self.B, self.MEAN, self.VAR], outputs, attributes)],
                {self.W: t.weights[self.W], self.B: t.weights[self.B], self.MEAN: mean, self.VAR: var})  # fmt: skip

    def forward(self, x, weights, tracing, overwrite=False):
        return self.forward_from(x, weights, {})

    def forward_from(self, x, weights, given):
        gamma, beta = weights[self.W], weights[self.B]
        if not self.training:
            mu, sigmasq = weights[self.MEAN], weights[self.VAR]
        else:
            mu = given.get(self.mu)
            if mu is None:
                mu, sigmasq = ops.batchnorm_statistics(x)
            else:
                centred = x - ops.per_channel(mu, x)
                sigmasq = (centred * centred).mean(axis=ops.batchnorm_axes(x))
            sigmasq = given.get(self.sigmasq, sigmasq)
        Z, op = ops.batchnorm_forward(x, gamma, beta, mu, sigmasq, self.eps)
        if self.xhat in given:
            op = op._replace(xhat=given[self.xhat])
            Z = op.xhat * ops.per_channel(gamma, x) + ops.per_channel(beta, x)
        return Z, NormCache(op, mu, sigmasq)

    def shown(self, cache):
        if not self.training:
            return {self.xhat: cache.op.xhat}
        return {self.mu: cache.mu, self.sigmasq: cache.sigmasq, self.xhat: cache.op.xhat}

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        return self.backward_from(d_out, cache, weights, {}, need_input=need_input)

    def backward_from(self, d_out, cache, weights, given, *, need_input):
        op = cache.op
        dL_dgamma, dL_dbeta = ops.batchnorm_param_backward(d_out, op)
        out = {grad(self.W): given.get(grad(self.W), dL_dgamma), grad(self.B): given.get(grad(self.B), dL_dbeta)}
        if not need_input:
            return out
        dL_dxhat = out[grad(self.xhat)] = given.get(grad(self.xhat), ops.batchnorm_xhat_backward(d_out, weights[self.W]))
        if self.training:
            dL_dvar = out[grad(self.sigmasq)] = given.get(grad(self.sigmasq), ops.batchnorm_var_backward(dL_dxhat, op))
            dL_dmean = out[grad(self.mu)] = given.get(grad(self.mu), ops.batchnorm_mean_backward(dL_dxhat, dL_dvar, op))
        else:
            dL_dvar = dL_dmean = np.zeros_like(op.inv_std)
        dL_dx = ops.batchnorm_input_backward(dL_dxhat, dL_dvar, dL_dmean, op)
        out[self.input_gradient] = given.get(self.input_gradient, dL_dx)
        return out

    # -- the derivation -------------------------------------------------------------------

    def stages(self, ctx):
        x, z, W, B = self.input, self.output, self.W, self.B
        mu, var, xhat = symbol(self.mu), symbol(self.sigmasq), symbol(self.xhat)
        mean, running = (mu, var) if self.training else (self.MEAN, self.VAR)
        maps = bool(ctx.layouts) and ctx.layouts[x].form == "map"
        channel = "channel" if maps else "unit"
        forward = []
        if self.training:
            forward += [
                stage(self.mu, "forward", f"Σ {x}/N over each {channel}'s N values", None, of=W),
                stage(self.sigmasq, "forward", f"Σ ({x} − {mu})²/N over each {channel}'s N values", None, of=W),
            ]
        forward += [
            stage(self.xhat, "forward", f"({x} − {mean})/√({running} + ε)", None, of=x),
            stage(z, "forward", f"{W}·{xhat} + {B}", None),
        ]
        if self.training and ctx.layouts and self.MEAN in ctx.layouts:
            step = ("the running statistics, as PyTorch keeps them; momentum = "
                    f"{self.momentum:g}, N/(N − 1) makes the variance unbiased")  # fmt: skip
            forward += [
                stage(self.MEAN, "update", f"(1 − momentum)·{self.MEAN} + momentum·{mu}", None,
                      Rule("", "", (self.MEAN, self.mu), step)),
                stage(self.VAR, "update", f"(1 − momentum)·{self.VAR} + momentum·{var}·N/(N − 1)", None,
                      Rule("", "", (self.VAR, self.sigmasq), step)),
            ]  # fmt: skip
        chain = ctx.full_chain(f"∂{z}/∂")
        d_z, d_xhat = f"∂L/∂{z}", f"∂L/∂{xhat}"
        per = f"summed over each {channel}'s N values"
        backward = [
            grad_stage(W, f"Σ dL/d{z}·{xhat}", None,
                       Rule(f"∂L/∂{W} = {chain}{W}", f"Σ {d_z} ⊙ {xhat}", (grad(z), self.xhat),
                            f"∂{z}/∂{W} = {xhat} ({W} is γ), {per}")),
            grad_stage(B, f"Σ dL/d{z}", None,
                       Rule(f"∂L/∂{B} = {chain}{B}", f"Σ {d_z}", (grad(z),), f"∂{z}/∂{B} = 1 ({B} is β), {per}")),
            stage(grad(self.xhat), "backward", f"dL/d{z}·{W}", None,
                  Rule(f"{d_xhat} = {chain}{xhat}", f"{d_z}·{W}", (grad(z), W), f"∂{z}/∂{xhat} = {W} (γ)"), of=x),
        ]  # fmt: skip
        if self.training:
            d_var, d_mu = f"∂L/∂{var}", f"∂L/∂{mu}"
            backward += [
                stage(grad(self.sigmasq), "backward", f"Σ dL/d{xhat}·({x} − {mu})·(−½)({var} + ε)^(−3/2)", None,
                      Rule(f"{d_var} = {d_xhat} · ∂{xhat}/∂{var}", f"Σ {d_xhat}·({x} − {mu})·(−½)({var} + ε)^(−3/2)",
                           (grad(self.xhat), x, self.mu, self.sigmasq),
                           f"every {xhat} of the {channel} depends on {var}: {per}"), of=W),
                stage(grad(self.mu), "backward",
                      f"Σ dL/d{xhat}·(−1/√({var} + ε)) + dL/d{var}·Σ −2({x} − {mu})/N", None,
                      Rule(f"{d_mu} = {d_xhat} · ∂{xhat}/∂{mu} + {d_var} · ∂{var}/∂{mu}",
                           f"Σ {d_xhat}·(−1/√({var} + ε)) + {d_var}·Σ −2({x} − {mu})/N",
                           (grad(self.xhat), grad(self.sigmasq), x, self.mu, self.sigmasq),
                           f"μ reaches L through {xhat} and through {var}; Σ ({x} − {mu}) is 0, "
                           "so the second term vanishes but for rounding"), of=W),
                grad_stage(x, f"dL/d{xhat}/√({var} + ε) + dL/d{var}·2({x} − {mu})/N + dL/d{mu}/N", None,
                           Rule(f"∂L/∂{x} = {d_xhat} · ∂{xhat}/∂{x} + {d_var} · ∂{var}/∂{x} + {d_mu} · ∂{mu}/∂{x}",
                                f"({W}/(N·√({var} + ε)))·(N·{d_z} − Σ {d_z} − {xhat}·Σ {d_z}·{xhat})",
                                (grad(self.xhat), grad(self.sigmasq), grad(self.mu), x, self.mu),
                                f"each {x} reaches L three ways: through its own {xhat}, through {var} and "
                                f"through {mu}; the three come to the compact form, its sums over each {channel}'s N values")),
            ]  # fmt: skip
        else:
            backward.append(
                grad_stage(x, f"dL/d{xhat}/√({self.VAR} + ε)", None,
                           Rule(f"∂L/∂{x} = {d_xhat} · ∂{xhat}/∂{x}", f"{d_xhat}/√({self.VAR} + ε)",
                                (grad(self.xhat), self.VAR),
                                "the running statistics are inputs: nothing flows through them"))
            )  # fmt: skip
        return forward, backward

    # -- one entry ------------------------------------------------------------------------

    def _places(self, t, c: int):
        """Every index of channel c in the input: (m, c) of vectors, (m, c, h, w) of maps."""
        shape = t.value(self.input).shape
        if len(shape) == 2:
            return [(m, c) for m in range(shape[0])]
        M, _, H, W = shape
        return [(m, c, h, w) for m in range(M) for h in range(H) for w in range(W)]

    def _centred(self, t, index) -> Factor:
        """(X − μ)[index] as one factor."""
        c = index[1]
        mean = t.value(self.mu if self.training else self.MEAN)[c]
        value = float(t.value(self.input)[index] - mean)
        return Factor(f"({self.input} − {symbol(self.mu) if self.training else self.MEAN})",
                      t.user_index(self.input, index), value)  # fmt: skip

    def _statistics(self, t, c: int) -> tuple[Factor, float]:
        """(μ or the running mean at c as a factor, 1/√(σ² + ε))."""
        mean, var = (self.mu, self.sigmasq) if self.training else (self.MEAN, self.VAR)
        return t.factor(mean, (c,)), 1.0 / np.sqrt(float(t.value(var)[c]) + self.eps)

    def terms(self, layouts, weights, name, images):
        shape = layouts[self.input].shape
        N = images * size_of(shape[1:])  # the values of one channel (or unit): every entry visits them
        if name in (self.mu, self.sigmasq, grad(self.W), grad(self.B), grad(self.sigmasq)):
            return Terms(N)
        if name == grad(self.mu):  # through x̂ and through σ²
            return Terms(2 * N)
        return Terms(3, N)

    def explain(self, t, name, index):
        x, z, W, B = self.input, self.output, self.W, self.B
        mu, var, xhat = symbol(self.mu), symbol(self.sigmasq), symbol(self.xhat)
        eps = f"ε = {self.eps:g}"
        if name in (self.mu, self.sigmasq, grad(self.W), grad(self.B), grad(self.sigmasq), grad(self.mu),
                    self.MEAN, self.VAR):  # fmt: skip
            (c,) = index
        else:
            c = index[1]
        places = self._places(t, c)
        N = len(places)
        maps = len(places[0]) > 2
        over = f"over the {N} values of {'channel' if maps else 'unit'} {c}: every image{', row and column' if maps else ''}"
        one_over_N = constant("1/N", 1.0 / N)
        mean_factor, inv_std = self._statistics(t, c)
        running = self.sigmasq if self.training else self.VAR
        inv = constant(f"1/√({symbol(running)}[{c}] + ε)", inv_std)
        if name == self.mu:
            return Explained(f"Σ {x}/N", [Term((one_over_N, t.factor(x, q))) for q in places], None, [over])
        if name == self.sigmasq:
            terms = [Term((one_over_N, self._centred(t, q), self._centred(t, q))) for q in places]
            return Explained(f"Σ ({x} − {mu})²/N", terms, None, [over, "divided by N, not N − 1: the biased variance"])
        if name == self.xhat:
            terms = [Term((t.factor(x, index), inv)), Term((MINUS, mean_factor, inv))]
            return Explained(f"({x} − {mean_factor.symbol})/√({symbol(running)} + ε)", terms, None, [eps])
        if name == z:
            return Explained(f"{W}[c]·{xhat} + {B}[c]", [Term((t.factor(W, (c,)), t.factor(self.xhat, index))),
                                                          Term((t.factor(B, (c,)),))])  # fmt: skip
        if name == grad(W):
            terms = [Term((t.factor(grad(z), q), t.factor(self.xhat, q))) for q in places]
            return Explained(f"Σ dL/d{z}·{xhat}", terms, None, [over])
        if name == grad(B):
            return Explained(f"Σ dL/d{z}", [Term((t.factor(grad(z), q),)) for q in places], None, [over])
        if name == grad(self.xhat):
            return Explained(f"dL/d{z}·{W}[c]", [Term((t.factor(grad(z), index), t.factor(W, (c,))))])
        if name == grad(self.sigmasq):
            k = constant(f"−½({var}[{c}] + ε)^(−3/2)", -0.5 * inv_std**3)
            terms = [Term((t.factor(grad(self.xhat), q), self._centred(t, q), k)) for q in places]
            return Explained(f"Σ dL/d{xhat}·({x} − {mu})·(−½)({var} + ε)^(−3/2)", terms, None, [over, eps])
        if name == grad(self.mu):
            minus_inv = constant(f"−1/√({var}[{c}] + ε)", -inv_std)
            terms = [Term((t.factor(grad(self.xhat), q), minus_inv)) for q in places]
            terms += [Term((t.factor(grad(self.sigmasq), (c,)), constant("−2/N", -2.0 / N), self._centred(t, q)),
                           "through σ²") for q in places]  # fmt: skip
            return Explained(f"Σ dL/d{xhat}·(−1/√({var} + ε)) + dL/d{var}·Σ −2({x} − {mu})/N", terms, None,
                             [over, f"the terms through {var} add up to 0 but for rounding"])  # fmt: skip
        if name == grad(x):
            terms = [Term((t.factor(grad(self.xhat), index), inv))]
            if not self.training:
                return Explained(f"dL/d{xhat}/√({self.VAR} + ε)", terms, None, [eps])
            terms += [
                Term((t.factor(grad(self.sigmasq), (c,)), constant("2/N", 2.0 / N), self._centred(t, index)), "through σ²"),
                Term((t.factor(grad(self.mu), (c,)), one_over_N), "through μ"),
            ]  # fmt: skip
            return Explained(f"dL/d{xhat}/√({var} + ε) + dL/d{var}·2({x} − {mu})/N + dL/d{mu}/N", terms, None,
                             [f"N = {N}: the values of {'channel' if maps else 'unit'} {c}", eps])  # fmt: skip
        # the running statistics after the step
        m = self.momentum
        if name == self.MEAN:
            terms = [Term((constant("(1 − momentum)", 1 - m), t.factor(self.MEAN, (c,))), "before the step"),
                     Term((constant("momentum", m), t.factor(self.mu, (c,))))]  # fmt: skip
            return Explained(f"(1 − momentum)·{self.MEAN} + momentum·{mu}", terms)
        terms = [Term((constant("(1 − momentum)", 1 - m), t.factor(self.VAR, (c,))), "before the step"),
                 Term((constant("momentum", m), t.factor(self.sigmasq, (c,)), constant(f"N/(N − 1) = {N}/{N - 1}", N / (N - 1))),
                      "the unbiased variance")]  # fmt: skip
        return Explained(f"(1 − momentum)·{self.VAR} + momentum·{var}·N/(N − 1)", terms, None, [over])

    def recipe(self, t, name):
        x, z, W, B = self.input, self.output, self.W, self.B
        mean, running = (self.mu, self.sigmasq) if self.training else (self.MEAN, self.VAR)
        roles = {self.mu: "mu", self.sigmasq: "sigmasq", self.xhat: "xhat", z: "z", grad(W): "dW", grad(B): "dB",
                 grad(self.xhat): "dxhat", grad(self.sigmasq): "dsigmasq", grad(self.mu): "dmu", grad(x): "dx",
                 self.MEAN: "MEAN", self.VAR: "VAR"}  # fmt: skip
        reads = {"mu": (), "sigmasq": (mean,), "xhat": (mean,), "z": (W, self.xhat, B), "dW": (grad(z), self.xhat),
                 "dB": (grad(z),), "dxhat": (grad(z), W), "dsigmasq": (grad(self.xhat), mean),
                 "dmu": (grad(self.xhat), grad(self.sigmasq), mean), "dx": (grad(self.xhat),), "MEAN": (self.MEAN, self.mu),
                 "VAR": (self.VAR, self.sigmasq)}[roles[name]]  # fmt: skip
        if self.training and roles[name] == "dx":
            reads += (grad(self.sigmasq), grad(self.mu), mean)
        inv, k = f"1/√({symbol(running)} + ε)", f"−½({symbol(running)} + ε)^(−3/2)"

        def inverse():  # 1/√(σ² + ε) of each channel, as explain computes it
            return np.array([1.0 / np.sqrt(float(v) + self.eps) for v in t.value(running)])

        made = ((inv, running, inverse), (k, running, lambda: np.array([-0.5 * v**3 for v in inverse()])))
        p = {"role": roles[name], "x": x, "z": z, "W": W, "B": B, "mean": mean, "running": symbol(running),
             "mu": symbol(self.mu), "var": symbol(self.sigmasq), "xhat": symbol(self.xhat), "MEAN": self.MEAN,
             "VAR": self.VAR, "names": {"mu": self.mu, "sigmasq": self.sigmasq, "xhat": self.xhat, "gz": grad(z),
                                        "gxhat": grad(self.xhat), "gsigmasq": grad(self.sigmasq), "gmu": grad(self.mu)},
             "centred": f"({x} − {symbol(self.mu) if self.training else self.MEAN})", "training": self.training,
             "eps": f"ε = {self.eps:g}", "momentum": self.momentum, "inv": inv, "k": k}  # fmt: skip
        return Recipe(RECIPE, p, (x, *reads), made)

    # -- what goes wrong ----------------------------------------------------------------------

    def mistakes(self, values, weights):
        z, x = self.output, self.input
        xhat = symbol(self.xhat)
        gamma = weights[self.W]
        dL_dZ = values[grad(z)]
        out = [
            Mistake("batchnorm_gamma_forgotten", f"dL/d{xhat} = dL/d{z}: γ ({self.W}) was left out of it",
                    {grad(self.xhat): dL_dZ}),
        ]  # fmt: skip
        X = values[x]
        N = ops.batch_count(X)
        if not self.training:
            if N > 1:  # eval mode normalized with the batch's statistics, as in training
                mu, sigmasq = ops.batchnorm_statistics(X)
                _, op = ops.batchnorm_forward(X, gamma, weights[self.B], mu, sigmasq, self.eps)
                out.append(Mistake("batchnorm_batch_statistics_in_eval",
                                   f"{xhat} taken with the batch's mean and variance; in eval mode batch norm "
                                   f"normalizes with the running statistics {self.MEAN} and {self.VAR}",
                                   {self.xhat: op.xhat}))  # fmt: skip
            return out
        if grad(x) in values:
            inv_std = ops.per_channel(1.0 / np.sqrt(values[self.sigmasq] + self.eps), X)
            out.append(Mistake("batchnorm_mean_variance_dropped",
                               f"dL/d{x} = dL/d{xhat}/√(σ² + ε): the terms through μ and σ² were dropped, as if "
                               "the batch's statistics did not depend on it",
                               {grad(x): ops.batchnorm_xhat_backward(dL_dZ, gamma) * inv_std}))  # fmt: skip
        if N > 1:
            out.append(Mistake("batchnorm_unbiased_variance",
                               f"{symbol(self.sigmasq)} divided by N − 1 = {N - 1} (the unbiased variance); "
                               "batch norm normalizes with the biased one, divided by N",
                               {self.sigmasq: values[self.sigmasq] * (N / (N - 1))}))  # fmt: skip
        return out


#: BatchNorm.explain in the page's JavaScript (layers.base.Recipe); 1/√(σ² + ε) and
#: −½(σ² + ε)^(−3/2) of each channel are Python's (Recipe.made): x**3 is pow's.
RECIPE = """function (t, p, name, i) {
  var X = t.shape(p.x), maps = X.length > 2, c = i.length === 1 ? i[0] : i[1], places = [], n = p.names;
  for (var m = 0; m < X[0]; m++) {
    if (!maps) { places.push([m, c]); continue; }
    for (var h = 0; h < X[2]; h++) { for (var w = 0; w < X[3]; w++) { places.push([m, c, h, w]); } }
  }
  var N = places.length, oneOverN = t.constant("1/N", 1 / N), minus = t.constant("−1", -1);
  var over = "over the " + N + " values of " + (maps ? "channel" : "unit") + " " + c + ": every image" +
    (maps ? ", row and column" : "");
  var inv = t.constant("1/√(" + p.running + "[" + c + "] + ε)", t.value(p.inv, [c]));
  function centred(q) {
    return { symbol: p.centred, index: t.factor(p.x, q).index, value: t.value(p.x, q) - t.value(p.mean, [c]), source: "" };
  }
  function each(f) { return places.map(f); }
  function said(formula, terms, notes) { return { formula: formula, terms: terms, notes: notes || [] }; }
  switch (p.role) {
    case "mu": return said("Σ " + p.x + "/N", each(function (q) { return t.term([oneOverN, t.factor(p.x, q)]); }), [over]);
    case "sigmasq":
      return said("Σ (" + p.x + " − " + p.mu + ")²/N", each(function (q) { return t.term([oneOverN, centred(q), centred(q)]); }),
                  [over, "divided by N, not N − 1: the biased variance"]);
    case "xhat":
      var mean = t.factor(p.mean, [c]);
      return said("(" + p.x + " − " + mean.symbol + ")/√(" + p.running + " + ε)",
                  [t.term([t.factor(p.x, i), inv]), t.term([minus, mean, inv])], [p.eps]);
    case "z":
      return said(p.W + "[c]·" + p.xhat + " + " + p.B + "[c]",
                  [t.term([t.factor(p.W, [c]), t.factor(n.xhat, i)]), t.term([t.factor(p.B, [c])])]);
    case "dW":
      return said("Σ dL/d" + p.z + "·" + p.xhat, each(function (q) { return t.term([t.factor(n.gz, q), t.factor(n.xhat, q)]); }),
                  [over]);
    case "dB": return said("Σ dL/d" + p.z, each(function (q) { return t.term([t.factor(n.gz, q)]); }), [over]);
    case "dxhat": return said("dL/d" + p.z + "·" + p.W + "[c]", [t.term([t.factor(n.gz, i), t.factor(p.W, [c])])]);
    case "dsigmasq":
      var k = t.constant("−½(" + p.var + "[" + c + "] + ε)^(−3/2)", t.value(p.k, [c]));
      return said("Σ dL/d" + p.xhat + "·(" + p.x + " − " + p.mu + ")·(−½)(" + p.var + " + ε)^(−3/2)",
                  each(function (q) { return t.term([t.factor(n.gxhat, q), centred(q), k]); }), [over, p.eps]);
    case "dmu":
      var minusInv = t.constant("−1/√(" + p.var + "[" + c + "] + ε)", -inv.value), twoOverN = t.constant("−2/N", -2 / N);
      var terms = each(function (q) { return t.term([t.factor(n.gxhat, q), minusInv]); }).concat(
        each(function (q) { return t.term([t.factor(n.gsigmasq, [c]), twoOverN, centred(q)], "through σ²"); }));
      return said("Σ dL/d" + p.xhat + "·(−1/√(" + p.var + " + ε)) + dL/d" + p.var + "·Σ −2(" + p.x + " − " + p.mu + ")/N",
                  terms, [over, "the terms through " + p.var + " add up to 0 but for rounding"]);
    case "dx":
      var through = [t.term([t.factor(n.gxhat, i), inv])];
      if (!p.training) { return said("dL/d" + p.xhat + "/√(" + p.VAR + " + ε)", through, [p.eps]); }
      through.push(t.term([t.factor(n.gsigmasq, [c]), t.constant("2/N", 2 / N), centred(i)], "through σ²"));
      through.push(t.term([t.factor(n.gmu, [c]), oneOverN], "through μ"));
      return said("dL/d" + p.xhat + "/√(" + p.var + " + ε) + dL/d" + p.var + "·2(" + p.x + " − " + p.mu + ")/N + dL/d" +
                  p.mu + "/N", through, ["N = " + N + ": the values of " + (maps ? "channel" : "unit") + " " + c, p.eps]);
    case "MEAN":
      return said("(1 − momentum)·" + p.MEAN + " + momentum·" + p.mu,
                  [t.term([t.constant("(1 − momentum)", 1 - p.momentum), t.factor(p.MEAN, [c])], "before the step"),
                   t.term([t.constant("momentum", p.momentum), t.factor(n.mu, [c])])]);
    default:
      return said("(1 − momentum)·" + p.VAR + " + momentum·" + p.var + "·N/(N − 1)",
                  [t.term([t.constant("(1 − momentum)", 1 - p.momentum), t.factor(p.VAR, [c])], "before the step"),
                   t.term([t.constant("momentum", p.momentum), t.factor(n.sigmasq, [c]),
                           t.constant("N/(N − 1) = " + N + "/" + (N - 1), N / (N - 1))], "the unbiased variance")], [over]);
  }
}"""
