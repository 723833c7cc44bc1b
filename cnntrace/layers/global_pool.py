"""Global average pooling: each channel's whole map to its mean, C maps in, C×1×1 out."""

from __future__ import annotations

from typing import ClassVar

from cnntrace import ops
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Explained,
    Imported,
    Layer,
    Layout,
    Mistake,
    Recipe,
    Refused,
    Rule,
    Terms,
    TorchForm,
    grad_stage,
    stage,
    torch_pair,
)
from cnntrace.naming import grad
from cnntrace.terms import Term, constant


class GlobalAvgPool(Layer):
    """P = GlobalAvgPool(A): P[c] = (1/(H·W))·Σ_h,w A[c,h,w]. A (M, C, H, W) -> P (M, C, 1, 1)."""

    type: ClassVar[str] = "global_avgpool"
    letter: ClassVar[str] = "P"
    DESCRIPTION: ClassVar[str] = "The mean of each channel's whole map: C maps in, C×1×1 out; a flatten follows."
    pooling: ClassVar[bool] = True
    input_form: ClassVar[str] = "map"
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("GlobalAvgPool",)

    def infer(self, layout, given):
        if layout.form != "map":
            raise InputError(f"{self.type} needs maps, and it gets {layout.form}s; pool before "
                             "the flatten", key=self.place.key())  # fmt: skip
        C = layout.shape[0]
        return Layout((C, 1, 1), layout.shown, layout.channel, sized_by=layout.sized_by), {}

    def work(self, layouts, weights):
        C, H, W = layouts[self.input].shape
        return 1, C * H * W

    TORCH: ClassVar[tuple[str, ...]] = ("AdaptiveAvgPool2d",)
    ONNX: ClassVar[tuple[str, ...]] = ("GlobalAveragePool",)

    def torch_form(self, t):
        return TorchForm("nn.AdaptiveAvgPool2d(1)")

    @classmethod
    def from_torch(cls, module, array):
        if torch_pair(module.output_size) != (1, 1):
            raise Refused(f"AdaptiveAvgPool2d to {module.output_size} (only to 1×1)")
        return Imported(cls.type)

    @classmethod
    def from_onnx(cls, node):
        return Imported(cls.type)

    def onnx_nodes(self, t, x, y):
        return [("GlobalAveragePool", [x], [y], {})], {}

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.global_avgpool_forward(x), x.shape

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        return {self.input_gradient: ops.global_avgpool_backward(d_out, cache)} if need_input else {}

    def stages(self, ctx):
        a, p = self.input, self.output
        return [stage(p, "forward", f"GlobalAvgPool({a})")], [
            grad_stage(a, f"dL/d{p} spread evenly over each map", None,
                       Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"∂L/∂{p}/(H·W) at every cell of its map",
                            (grad(p),), f"every cell of a map gets 1/(H·W) of its channel's dL/d{p}")),
        ]  # fmt: skip

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[grad(p)]
        n = A.shape[2] * A.shape[3]
        return [
            Mistake("global_avgpool_undivided", f"dL/d{a}: dL/d{p} copied to every cell of its map, "
                    f"without the 1/{n}", {grad(a): ops.global_avgpool_backward(d, A.shape) * n}),
        ]  # fmt: skip

    def terms(self, layouts, weights, name, images):
        _, H, W = layouts[self.input].shape
        return Terms(H * W) if name == self.output else Terms(1)  # the mean of a map; its share back

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        share = constant(f"1/{H * W}", 1.0 / (H * W))
        if name == p:
            m, c, _, _ = index
            terms = [Term((share, t.factor(a, (m, c, h, w)))) for h in range(H) for w in range(W)]
            return Explained(f"(1/(H·W))·Σ_h,w {a}[h,w]", terms, None, [f"H·W = {H}·{W} = {H * W} cells"])
        m, c, _, _ = index
        terms = [Term((share, t.factor(grad(p), (m, c, 0, 0))))]
        return Explained(f"dL/d{p}[c]/(H·W)", terms, None, ["every cell of the map gets the same share"])

    def recipe(self, t, name):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        data = {"a": a, "p": p, "gp": grad(p), "H": H, "W": W}
        return Recipe(RECIPE, data, (a,) if name == p else (grad(p),))


#: Explain's arithmetic above, in the page's JavaScript (layers.base.Recipe).
RECIPE = """function (t, p, name, i) {
  var n = p.H * p.W, share = t.constant("1/" + n, 1 / n), terms = [];
  if (name === p.p) {
    for (var h = 0; h < p.H; h++) {
      for (var w = 0; w < p.W; w++) { terms.push(t.term([share, t.factor(p.a, [i[0], i[1], h, w])])); }
    }
    return { formula: "(1/(H·W))·Σ_h,w " + p.a + "[h,w]", terms: terms,
             notes: ["H·W = " + p.H + "·" + p.W + " = " + n + " cells"] };
  }
  return { formula: "dL/d" + p.p + "[c]/(H·W)", terms: [t.term([share, t.factor(p.gp, [i[0], i[1], 0, 0])])],
           notes: ["every cell of the map gets the same share"] };
}"""
