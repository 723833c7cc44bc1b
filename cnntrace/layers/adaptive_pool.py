"""Adaptive average pooling: each map to a fixed output size, as PyTorch's AdaptiveAvgPool2d.

Output row i averages the input rows floor(i·H/oh) up to ceil((i + 1)·H/oh) (exclusive), and
likewise for the columns: the windows cover the map whatever its size, and overlap where the
size is not a multiple of the output's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cnntrace import ops
from cnntrace.checks import Pair
from cnntrace.errors import InputError
from cnntrace.layers.base import (
    Explained,
    Hand,
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
    onnx_window_attributes,
    pair_option,
    stage,
)
from cnntrace.naming import grad
from cnntrace.terms import Term, constant
from cnntrace.text import pair_text


@dataclass(frozen=True)
class AdaptiveAvgPool(Layer):
    """P = AdaptiveAvgPool(A): P[c,i,j] = mean of A[c, rows_i, cols_j].
    A (M, C, H, W) -> P (M, C, oh, ow)."""

    type: ClassVar[str] = "adaptive_avgpool"
    letter: ClassVar[str] = "P"
    DESCRIPTION: ClassVar[str] = ("The mean of adaptive windows that give each map the output size: row i "
                                  "averages rows floor(i·H/oh) to ceil((i+1)·H/oh) − 1, as PyTorch's AdaptiveAvgPool2d.")  # fmt: skip
    pooling: ClassVar[bool] = True
    input_form: ClassVar[str] = "map"
    HAND: ClassVar[Hand] = Hand()
    FUNCTIONS: ClassVar[tuple[str, ...]] = ("AdaptiveAvgPool",)
    OPTIONS: ClassVar[dict] = {
        "output_size": pair_option(1, 1, "The output's size, n×n or [rows, cols].", "output_size"),
    }

    output_size: Pair = (1, 1)

    def options(self):
        size = self.output_size
        return {"type": self.type, "output_size": size[0] if size[0] == size[1] else list(size)}

    def describe(self):
        return f"{self.type} to {pair_text(self.output_size)}"

    def infer(self, layout, given):
        if layout.form != "map":
            raise InputError(f"{self.type} needs maps, and it gets {layout.form}s; pool before "
                             "the flatten", key=self.place.key())  # fmt: skip
        C = layout.shape[0]
        return Layout((C, *self.output_size), layout.shown, layout.channel, sized_by=layout.sized_by), {}

    # -- PyTorch and ONNX ---------------------------------------------------------------

    #: After global_avgpool in the registry, which reads AdaptiveAvgPool2d(1) as its own.
    TORCH: ClassVar[tuple[str, ...]] = ("AdaptiveAvgPool2d",)
    #: ONNX has no adaptive pool: export writes an AveragePool where the windows tile the map.
    ONNX: ClassVar[tuple[str, ...]] = ()

    def torch_form(self, t):
        return TorchForm(f"nn.AdaptiveAvgPool2d({self.output_size})")

    @classmethod
    def from_torch(cls, module, array):
        size = module.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if None in size:
            raise Refused(f"AdaptiveAvgPool2d to {module.output_size} (None keeps the input's size)")
        return Imported({"type": cls.type, "output_size": list(size)})

    def onnx_nodes(self, t, x, y):
        _, H, W = t.layout(x).shape
        (oh, ow) = self.output_size
        if H % oh or W % ow:
            raise InputError(f"ONNX has no adaptive pool, and {H}×{W} maps do not split evenly into "
                             f"{oh}×{ow} windows (one AveragePool)", key=self.place.key("output_size"))  # fmt: skip
        size = (H // oh, W // ow)
        return [("AveragePool", [x], [y], onnx_window_attributes(size, size, (0, 0)))], {}

    def work(self, layouts, weights):
        C, H, W = layouts[self.input].shape
        oh, ow = self.output_size
        return 1, C * (oh * H * W + oh * W * ow)

    def forward(self, x, weights, tracing, overwrite=False):
        return ops.adaptive_avgpool_forward(x, self.output_size), x.shape

    def backward(self, d_out, cache, weights, *, need_input, tracing):
        return {self.input_gradient: ops.adaptive_avgpool_backward(d_out, cache)} if need_input else {}

    def windows(self, H: int, W: int):
        """((row starts, row ends), (column starts, column ends)) of the windows."""
        return ops.adaptive_windows(H, self.output_size[0]), ops.adaptive_windows(W, self.output_size[1])

    def stages(self, ctx):
        a, p = self.input, self.output
        return [stage(p, "forward", f"AdaptiveAvgPool({a})")], [
            grad_stage(a, f"dL/d{p} spread evenly over each window", None,
                       Rule(f"∂L/∂{a} = ∂L/∂{p} · ∂{p}/∂{a}", f"Σ over the windows of each cell of ∂L/∂{p}/(the window's cells)",
                            (grad(p),), f"window (i, j) covers rows floor(i·H/oh)..ceil((i+1)·H/oh) − 1 and the "
                            f"columns alike; each of its cells gets its dL/d{p} over its count; windows may overlap")),
        ]  # fmt: skip

    def mistakes(self, values, weights):
        a, p = self.input, self.output
        A, d = values[a], values[grad(p)]
        (rows, row_ends), (cols, col_ends) = self.windows(*A.shape[2:])
        undivided = ops.adaptive_avgpool_backward(d * ((row_ends - rows)[:, None] * (col_ends - cols)[None, :]), A.shape)
        out = [Mistake("adaptive_avgpool_undivided", f"dL/d{a}: dL/d{p} copied to every cell of its window, "
                       "without dividing by the window's count", {grad(a): undivided})]  # fmt: skip
        # The plain pool some write for it: stride floor(H/oh), window H − (oh − 1)·stride.
        H, W = A.shape[2:]
        (oh, ow) = self.output_size
        stride = (H // oh, W // ow)
        size = (H - (oh - 1) * stride[0], W - (ow - 1) * stride[1])
        if min(stride) >= 1:
            P, cache = ops.avgpool_forward(A, size, stride)
            if P.shape == values[p].shape and not np.allclose(P, values[p]):
                out.append(Mistake("adaptive_as_fixed_pool", f"{p}: an avgpool {pair_text(size)} with stride "
                                   f"{pair_text(stride)} in place of the adaptive windows (they agree only where "
                                   "the size is a multiple of the output's)", {p: P}))  # fmt: skip
        return out

    def terms(self, layouts, weights, name, images):
        _, H, W = layouts[self.input].shape
        oh, ow = self.output_size
        if name == self.output:  # a window spans at most ⌈H/oh⌉ + 1 rows, ⌈W/ow⌉ + 1 columns
            return Terms((-(-H // oh) + 1) * (-(-W // ow) + 1))
        return Terms(oh * ow)  # every window is asked whether it holds the cell

    def explain(self, t, name, index):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        (rows, row_ends), (cols, col_ends) = self.windows(H, W)
        oh, ow = self.output_size
        if name == p:
            m, c, i, j = index
            r0, r1, c0, c1 = int(rows[i]), int(row_ends[i]), int(cols[j]), int(col_ends[j])
            n = (r1 - r0) * (c1 - c0)
            share = constant(f"1/{n}", 1.0 / n)
            terms = [Term((share, t.factor(a, (m, c, r, col)))) for r in range(r0, r1) for col in range(c0, c1)]
            notes = [f"rows floor({i}·{H}/{oh}) = {r0} to ceil({i + 1}·{H}/{oh}) − 1 = {r1 - 1}, "
                     f"columns floor({j}·{W}/{ow}) = {c0} to ceil({j + 1}·{W}/{ow}) − 1 = {c1 - 1}: {n} cells"]  # fmt: skip
            return Explained(f"(1/{n})·Σ over the adaptive window of {a}", terms, None, notes)
        m, c, r, col = index
        terms = []
        for i in range(oh):
            for j in range(ow):
                if rows[i] <= r < row_ends[i] and cols[j] <= col < col_ends[j]:
                    n = int((row_ends[i] - rows[i]) * (col_ends[j] - cols[j]))
                    terms.append(Term((constant(f"1/{n}", 1.0 / n), t.factor(grad(p), (m, c, i, j)))))
        notes = [] if len(terms) <= 1 else [f"{len(terms)} windows overlap on this cell: their shares add up"]
        return Explained(f"Σ over the windows that contain this cell of dL/d{p}[window]/(its cells)", terms, None, notes)

    def recipe(self, t, name):
        a, p = self.input, self.output
        H, W = t.value(a).shape[2:]
        (rows, row_ends), (cols, col_ends) = self.windows(H, W)
        data = {"a": a, "p": p, "gp": grad(p), "H": int(H), "W": int(W), "oh": self.output_size[0],
                "ow": self.output_size[1], "rows": [int(k) for k in rows], "row_ends": [int(k) for k in row_ends],
                "cols": [int(k) for k in cols], "col_ends": [int(k) for k in col_ends]}  # fmt: skip
        return Recipe(RECIPE, data, (a,) if name == p else (grad(p),))


#: AdaptiveAvgPool.explain in the page's JavaScript (layers.base.Recipe).
RECIPE = """function (t, p, name, i) {
  var m = i[0], c = i[1], terms = [], n;
  if (name === p.p) {
    var h = i[2], w = i[3], r0 = p.rows[h], r1 = p.row_ends[h], c0 = p.cols[w], c1 = p.col_ends[w];
    n = (r1 - r0) * (c1 - c0);
    var share = t.constant("1/" + n, 1 / n);
    for (var r = r0; r < r1; r++) {
      for (var col = c0; col < c1; col++) { terms.push(t.term([share, t.factor(p.a, [m, c, r, col])])); }
    }
    var note = "rows floor(" + h + "·" + p.H + "/" + p.oh + ") = " + r0 + " to ceil(" + (h + 1) + "·" + p.H + "/" + p.oh +
      ") − 1 = " + (r1 - 1) + ", columns floor(" + w + "·" + p.W + "/" + p.ow + ") = " + c0 + " to ceil(" + (w + 1) + "·" +
      p.W + "/" + p.ow + ") − 1 = " + (c1 - 1) + ": " + n + " cells";
    return { formula: "(1/" + n + ")·Σ over the adaptive window of " + p.a, terms: terms, notes: [note] };
  }
  for (var a = 0; a < p.oh; a++) {
    for (var b = 0; b < p.ow; b++) {
      if (p.rows[a] <= i[2] && i[2] < p.row_ends[a] && p.cols[b] <= i[3] && i[3] < p.col_ends[b]) {
        n = (p.row_ends[a] - p.rows[a]) * (p.col_ends[b] - p.cols[b]);
        terms.push(t.term([t.constant("1/" + n, 1 / n), t.factor(p.gp, [m, c, a, b])]));
      }
    }
  }
  return { formula: "Σ over the windows that contain this cell of dL/d" + p.p + "[window]/(its cells)", terms: terms,
           notes: terms.length <= 1 ? [] : [terms.length + " windows overlap on this cell: their shares add up"] };
}"""
