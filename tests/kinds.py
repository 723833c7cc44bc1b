"""The table of layer kinds and losses: one row per kind registered in cnntrace.layers.KINDS
and one per loss in cnntrace.losses.LOSSES, from which tests/test_kinds.py runs every test
that must hold for every kind (PyTorch autograd, the naive twin, central differences,
explain of every entry, every output format, verify and the kind's mistakes).

A row holds:

- a small network around the kind, in the ``layers`` form of an input file, with ``SELF``
  where the kind's own layer goes (it gets each variant's options);
- one image's shape of X on the general shapes: (C, H, W) for maps, (n,) for vectors;
- the loss the network ends in;
- its **variants**: the options worth covering (stride, padding, flip, pool sizes, tie rules,
  leaky alpha …), each a small change of the row (options, another network around the layer,
  another loss, small whole numbers so that ReLU inputs hit 0 and pool windows tie);
- its **naive twin** (tests/naive.py): forward and backward with plain loops;
- its **torch** twin: the same layer in PyTorch, for autograd (imported only when installed);
- for a weighted kind, the shapes of its weights for the input it gets.

A new kind (a ``global_avgpool``) needs its row here and its twin in naive.py; the tests
then cover it, and test_kinds.py fails until both exist. ``make`` fills a case with random
numbers (its weights sized by walking the network with the naive twins), ``naive_pass`` and
``torch_pass`` run a whole parsed network through the twins, stage by stage, under the
trace's names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from cnntrace.network import place
from cnntrace.problem import parse_layer
from tests import naive

#: Where a row's own layer goes in its network.
SELF = "*"
#: An option's value drawn by ``make`` for the batch it makes (a dropout's mask: 0/1 shaped
#: like the layer's input for the whole batch).
BATCH = "<drawn for the batch>"


@dataclass(frozen=True)
class Variant:
    """One way to run a row: its layer's options and what else changes."""

    id: str
    options: dict = field(default_factory=dict)
    layers: tuple | None = None  # another network around the layer (SELF marks it)
    X: tuple | None = None  # another image shape
    loss: str | dict | None = None  # another loss ("grad": a given gradient), or its object form
    target: str | None = None  # another kind of Y: see ``target``
    weights: Callable | None = None  # other shapes for the row's own weighted layer
    discrete: bool = False  # small whole numbers: ReLU inputs at exactly 0, tied windows


@dataclass(frozen=True)
class Row:
    """A layer kind: its network, its twins and its variants."""

    kind: str
    layers: tuple
    X: tuple
    loss: str
    twin: naive.Twin | None
    torch: Callable | None  # torch(torch, x, *weights, **options) -> y
    variants: tuple[Variant, ...] = (Variant("default"),)
    weights: Callable | None = None  # (one image's input shape) -> shapes of (W, B)
    target: str = "real"
    #: The running statistics it reads besides its weights, named without the layer's number
    #: (batch norm's mean, var): ``make`` gives them, shaped as B, and the twins take them as options.
    running: tuple[str, ...] = ()


@dataclass(frozen=True)
class LossRow:
    """A loss: its network, its twins, the last activation it cancels against."""

    loss: str
    layers: tuple
    X: tuple
    twin: naive.LossTwin | None
    torch: Callable | None  # torch(torch, A, Z, Y) -> L; Y on the general shape
    target: str
    fuses: str | None = None
    variants: tuple[Variant, ...] = (Variant("default"),)


# -- the torch twins -------------------------------------------------------------------------


def _torch_conv(torch, x, W, B=None, *, stride, padding, dilation, groups, bias, flip):
    kernel = W.flip(-1, -2) if flip else W
    functional = torch.nn.functional
    if padding == "valid":
        padding = 0
    elif isinstance(padding, tuple) and len(padding) == 4:  # (top, bottom, left, right); F.pad's order differs
        top, bottom, left, right = padding
        x, padding = functional.pad(x, (left, right, top, bottom)), 0
    with warnings.catch_warnings():  # torch's note that "same" with an even kernel copies x to pad it
        warnings.simplefilter("ignore", UserWarning)
        return functional.conv2d(x, kernel, B, stride=stride, padding=padding, dilation=dilation, groups=groups)


def _torch_conv_transpose(torch, x, W, B=None, *, stride, padding, output_padding, dilation, groups, bias):
    return torch.nn.functional.conv_transpose2d(x, W, B, stride=stride, padding=padding,
                                                output_padding=output_padding, groups=groups, dilation=dilation)


def _torch_flatten(torch, x, *, order):
    return (x.permute(0, 2, 3, 1) if order == "hwc" else x).reshape(x.shape[0], -1)


def _torch_maxpool(torch, x, *, size, stride, padding, ceil_mode, dilation, ties):
    functional = torch.nn.functional
    top, bottom, left, right = naive.pool_sides(x.shape, size, stride, padding, dilation)
    if ties == "first" and (top, left) == (bottom, right):
        return functional.max_pool2d(x, size, stride, (top, left), dilation, ceil_mode)
    # Padding PyTorch cannot take (four sides, "same") as −∞ around x, the frame grown where
    # a ceil-mode window runs past it; the windows past ours (PyTorch's ceil rule then sees
    # the padding as input) cut off.
    Ho, Wo = naive.pool_out(x.shape, size, stride, (top, bottom, left, right), dilation, ceil_mode)
    rows = (Ho - 1) * stride[0] + dilation[0] * (size[0] - 1) + 1
    cols = (Wo - 1) * stride[1] + dilation[1] * (size[1] - 1) + 1
    M, C, H, W = x.shape
    frame = (left, max(right, cols - left - W), top, max(bottom, rows - top - H))
    padded = functional.pad(x, frame, value=-float("inf"))
    if ties == "first":
        return functional.max_pool2d(padded, size, stride, 0, dilation)[:, :, :Ho, :Wo]
    # Each window's tied maxima, from its cells: "all" gives each of them the whole
    # gradient, "split" an equal share. The value is the maximum either way.
    cells = functional.unfold(padded.reshape(M * C, 1, *padded.shape[2:]), size, dilation=dilation, stride=stride)
    top_value = cells.max(dim=1, keepdim=True).values.detach()
    tied = cells == top_value
    moves = torch.where(tied, cells - cells.detach(), torch.zeros_like(cells)).sum(dim=1)
    if ties == "split":
        moves = moves / tied.sum(dim=1)
    return (top_value.squeeze(1) + moves).reshape(M, C, Ho, Wo)


def _torch_avgpool(torch, x, *, size, stride, padding, ceil_mode, count_include_pad):
    functional = torch.nn.functional
    top, bottom, left, right = naive.pool_sides(x.shape, size, stride, padding)
    if (top, left) == (bottom, right):
        return functional.avg_pool2d(x, size, stride, (top, left), ceil_mode=ceil_mode,
                                     count_include_pad=count_include_pad)  # fmt: skip
    # Padding PyTorch cannot take as zeros around x; each window's sum divided by the sum of
    # a mask of its counted cells (ones on x, and on the padding where it counts).
    Ho, Wo = naive.pool_out(x.shape, size, stride, (top, bottom, left, right), (1, 1), ceil_mode)

    def sums(maps):
        return functional.avg_pool2d(maps, size, stride, 0, ceil_mode=ceil_mode, divisor_override=1)[:, :, :Ho, :Wo]

    sides = (left, right, top, bottom)
    mask = functional.pad(torch.ones_like(x[:1, :1]), sides, value=1.0 if count_include_pad else 0.0)
    return sums(functional.pad(x, sides)) / sums(mask)


def _torch_batchnorm(torch, x, W, B, *, eps, momentum, mode, mean=None, var=None):
    # torch updates mean and var in place in training, as the trace's update shows them.
    return torch.nn.functional.batch_norm(x, mean, var, W, B, mode == "train", momentum, eps)


def _torch_dropout(torch, x, *, p, mask, seed, mode):
    if mode != "train":
        return x
    return x * torch.tensor(naive.dropout_mask_of(tuple(x.shape), p, mask, seed)) / (1 - p)


def _torch_relu(torch, x, *, grad_at_zero):
    # torch.relu's slope at 0 is 0; where(x >= 0) takes the x branch, slope 1, at 0.
    return torch.where(x >= 0, x, torch.zeros_like(x)) if grad_at_zero else torch.relu(x)


def _torch_add(torch, x, *others):
    return x + sum(others)


def _torch_concat(torch, x, *others):
    return torch.cat((x, *others), dim=1)


# -- weight shapes ---------------------------------------------------------------------------


def conv_weights(K=2, kernel=(2, 2)):
    """K filters of ``kernel`` over the channels the layer gets."""
    return lambda shape: ((K, shape[0], *kernel), (K,))


def grouped_weights(K=4, kernel=(2, 2), groups=2):
    """K filters of ``kernel``, each over its group's C/groups channels."""
    return lambda shape: ((K, shape[0] // groups, *kernel), (K,))


def transpose_weights(K=2, kernel=(2, 2), groups=1):
    """C×(K/groups)×kh×kw, PyTorch's ConvTranspose2d order, for C channels in."""
    return lambda shape: ((shape[0], K // groups, *kernel), (K,))


def dense_weights(n_out=2):
    return lambda shape: ((shape[0], n_out), (n_out,))


def per_channel_weights(shape):
    """γ and β: one per channel of maps, per unit of vectors."""
    return ((shape[0],), (shape[0],))


# -- the table -------------------------------------------------------------------------------

ON_MAPS = (SELF, "flatten", "dense")
ON_VECTORS = (SELF, "dense")
BETWEEN_DENSE = ("dense", SELF, "dense")

ROWS: dict[str, Row] = {row.kind: row for row in (
    Row("conv", ON_MAPS, (2, 5, 5), "mse", naive.CONV, _torch_conv, (
        Variant("default"),
        Variant("stride-2x1-padding-1x0", {"stride": [2, 1], "padding": [1, 0]}, weights=conv_weights(3, (3, 2))),
        Variant("flip", {"flip": True, "padding": 1}),
        Variant("one-channel-stride-2", {"stride": 2}, X=(1, 6, 5), weights=conv_weights(1, (3, 3))),
        Variant("given-grad", {"padding": 1}, layers=(SELF,), loss="grad"),
        Variant("relu-zeros", {"stride": 1}, layers=(SELF, "relu", "flatten", "dense"), discrete=True),
        Variant("dilation-2x1-four-sides", {"dilation": [2, 1], "padding": [1, 0, 2, 1]}, X=(2, 6, 5),
                weights=conv_weights(2, (3, 2))),
        Variant("groups-2-dilated", {"groups": 2, "dilation": 2, "padding": 1}, X=(4, 6, 6),
                weights=grouped_weights(4, (2, 3), 2)),
        Variant("depthwise-same-no-bias", {"groups": 3, "padding": "same", "dilation": [1, 2], "bias": False},
                X=(3, 5, 5), weights=grouped_weights(3, (2, 3), 3)),
        Variant("valid-strided-grouped-flip", {"padding": "valid", "stride": 2, "groups": 2, "flip": True},
                X=(2, 5, 6), weights=grouped_weights(2, (2, 2), 2)),
    ), weights=conv_weights()),
    Row("conv_transpose", ON_MAPS, (2, 3, 3), "mse", naive.CONV_TRANSPOSE, _torch_conv_transpose, (
        Variant("default"),
        Variant("stride-2-padding-1-output-padding-1", {"stride": 2, "padding": 1, "output_padding": 1},
                weights=transpose_weights(2, (3, 3))),
        Variant("dilation-2-output-padding-1x0", {"dilation": 2, "output_padding": [1, 0], "stride": [1, 2]},
                weights=transpose_weights(3, (2, 3))),
        Variant("groups-2-no-bias", {"groups": 2, "bias": False, "stride": [2, 1]}, X=(4, 3, 2),
                weights=transpose_weights(4, (2, 2), 2)),
        Variant("given-grad", {"padding": [0, 1]}, layers=(SELF,), loss="grad"),
        Variant("after-conv-relu", {"stride": 2}, layers=("conv", "relu", SELF, "flatten", "dense"), X=(1, 4, 4)),
    ), weights=transpose_weights()),
    Row("dense", ON_VECTORS, (4,), "mse", naive.DENSE, lambda torch, x, W, B: x @ W + B, (
        Variant("default"),
        Variant("one-output", weights=dense_weights(1), layers=(SELF,)),
        Variant("three-outputs-then-dense", weights=dense_weights(3), layers=(SELF, "tanh", "dense")),
        Variant("after-flatten", layers=("flatten", SELF), X=(2, 2, 3)),
    ), weights=dense_weights()),
    Row("flatten", ("conv", SELF, "dense"), (1, 4, 4), "mse", naive.FLATTEN, _torch_flatten, (
        Variant("default"),
        Variant("channels-last", {"order": "hwc"}),
        Variant("on-the-input", {"order": "chw"}, layers=(SELF, "dense"), X=(3, 2, 3)),
    )),
    Row("maxpool", ON_MAPS, (2, 4, 4), "mse", naive.MAXPOOL, _torch_maxpool, (
        Variant("default"),
        Variant("dilated-ceil", {"size": 2, "dilation": 2, "ceil_mode": True}, X=(2, 6, 6)),
        Variant("dilated-rectangular-padded", {"size": [2, 3], "stride": 1, "dilation": [2, 1], "padding": [1, 1]}, X=(1, 5, 6)),
        Variant("same", {"size": 3, "stride": 2, "padding": "same"}, X=(1, 5, 6)),
        Variant("four-sides-ceil", {"size": 3, "stride": 2, "padding": [1, 0, 0, 1], "ceil_mode": True}, X=(2, 4, 5)),
        Variant("ties-all-dilated", {"size": 2, "stride": 1, "dilation": 2, "ties": "all"}, X=(1, 5, 5), discrete=True),
        Variant("overlapping-padded", {"size": 3, "stride": 1, "padding": 1}),
        Variant("rectangular", {"size": [2, 3], "stride": [1, 2]}, X=(1, 4, 7)),
        Variant("ties-first", {"size": 2, "stride": 1}, discrete=True),
        Variant("ties-all", {"size": 2, "stride": 1, "ties": "all"}, discrete=True),
        Variant("ties-split", {"ties": "split", "padding": 1}, discrete=True),
        Variant("after-conv-relu", layers=("conv", "relu", SELF, "flatten", "dense"), X=(1, 5, 5)),
    )),
    Row("avgpool", ON_MAPS, (2, 4, 4), "mse", naive.AVGPOOL, _torch_avgpool, (
        Variant("default"),
        Variant("overlapping-padded", {"size": 3, "stride": 1, "padding": 1}),
        Variant("rectangular-padded", {"size": [2, 3], "stride": [1, 2], "padding": [1, 1]}, X=(1, 4, 5)),
        Variant("after-conv", {"size": 2}, layers=("conv", SELF, "flatten", "dense"), X=(1, 5, 5)),
        Variant("ceil-padded", {"size": 2, "padding": 1, "ceil_mode": True}, X=(2, 5, 4)),
        Variant("padding-not-counted", {"size": 3, "stride": 2, "padding": 1, "count_include_pad": False}, X=(1, 5, 5)),
        Variant("four-sides-ceil-not-counted", {"size": 3, "stride": 2, "padding": [1, 0, 0, 1], "ceil_mode": True,
                                                "count_include_pad": False}, X=(2, 4, 5)),
        Variant("same", {"size": 3, "stride": 2, "padding": "same"}, X=(1, 5, 6)),
        Variant("valid", {"size": 3, "stride": 2, "padding": "valid"}, X=(1, 5, 5)),
    )),
    Row("adaptive_avgpool", ON_MAPS, (2, 5, 7), "mse", naive.ADAPTIVE_AVGPOOL,
        lambda torch, x, *, output_size: torch.nn.functional.adaptive_avg_pool2d(x, output_size), (
        Variant("default"),
        Variant("overlapping-3x2", {"output_size": [3, 2]}),
        Variant("larger-than-the-map", {"output_size": 4}, X=(1, 3, 3)),
        Variant("after-conv-relu", {"output_size": 2}, layers=("conv", "relu", SELF, "flatten", "dense"), X=(1, 6, 6)),
    )),
    Row("global_avgpool", ON_MAPS, (2, 3, 4), "mse", naive.GLOBAL_AVGPOOL,
        lambda torch, x: torch.nn.functional.adaptive_avg_pool2d(x, 1), (
        Variant("default"),
        Variant("after-conv-relu", layers=("conv", "relu", SELF, "flatten", "dense", "softmax"), X=(1, 5, 5),
                loss="cross_entropy", target="classes"),
    )),
    Row("relu", ON_VECTORS, (5,), "mse", naive.RELU, _torch_relu, (
        Variant("default"),
        Variant("zeros", discrete=True),
        Variant("grad-at-zero-1", {"grad_at_zero": 1}, discrete=True),
        Variant("between-dense", layers=BETWEEN_DENSE),
        Variant("on-maps", layers=ON_MAPS, X=(2, 3, 3), discrete=True),
    )),
    Row("leaky_relu", ON_VECTORS, (5,), "mse", naive.LEAKY_RELU,
        lambda torch, x, *, alpha: torch.nn.functional.leaky_relu(x, alpha), (
        Variant("default"),
        Variant("alpha-0.2-zeros", {"alpha": 0.2}, discrete=True),
        Variant("on-maps", {"alpha": 0.05}, layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("tanh", BETWEEN_DENSE, (3,), "mse", naive.TANH, lambda torch, x: torch.tanh(x), (
        Variant("default"),
        Variant("on-maps", layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("sigmoid", BETWEEN_DENSE, (3,), "mse", naive.SIGMOID, lambda torch, x: torch.sigmoid(x), (
        Variant("default"),
        Variant("last-with-bce", layers=("dense", SELF), loss="bce", target="labels"),
        Variant("last-with-mse", layers=("dense", SELF)),
        Variant("on-maps", layers=ON_MAPS, X=(1, 3, 3)),
    )),
    Row("elu", ON_VECTORS, (5,), "mse", naive.ELU, lambda torch, x, *, alpha: torch.nn.functional.elu(x, alpha), (
        Variant("default"),
        Variant("alpha-0.5-zeros", {"alpha": 0.5}, discrete=True),
        Variant("on-maps", {"alpha": 2.0}, layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("gelu", BETWEEN_DENSE, (3,), "mse", naive.GELU, lambda torch, x: torch.nn.functional.gelu(x), (
        Variant("default"),
        Variant("on-maps", layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("silu", BETWEEN_DENSE, (3,), "mse", naive.SILU, lambda torch, x: torch.nn.functional.silu(x), (
        Variant("default"),
        Variant("on-maps", layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("softplus", BETWEEN_DENSE, (3,), "mse", naive.SOFTPLUS,
        lambda torch, x, *, beta, threshold: torch.nn.functional.softplus(x, beta, threshold), (
        Variant("default"),
        Variant("beta-2-threshold-1", {"beta": 2.0, "threshold": 1.0}),
        Variant("on-maps", {"beta": 0.5}, layers=ON_MAPS, X=(2, 3, 3)),
    )),
    Row("log_softmax", ("dense", SELF), (3,), "nll", naive.LOG_SOFTMAX,
        lambda torch, x: torch.log_softmax(x, dim=1), (
        Variant("default", target="classes"),
        Variant("nll-sum", loss={"type": "nll", "reduction": "sum"}, target="classes"),
        Variant("with-mse", loss="mse", target="real"),
        Variant("given-grad", loss="grad"),
    ), target="classes"),
    Row("softmax", ("dense", SELF), (3,), "cross_entropy", naive.SOFTMAX,
        lambda torch, x: torch.softmax(x, dim=1), (
        Variant("default", target="classes"),
        Variant("soft-labels", target="soft"),
        Variant("with-mse", loss="mse", target="real"),
        Variant("given-grad", loss="grad"),
    ), target="classes"),
    # Batch norm on vectors in training needs two images at least: hypothesis draws batches of
    # one, so its vectors go through in eval mode here (tests/test_norm_dropout.py trains them).
    Row("batchnorm", ("conv", SELF, "flatten", "dense"), (2, 4, 4), "mse", naive.BATCHNORM, _torch_batchnorm, (
        Variant("default"),
        Variant("eps-0.1-momentum-0.3", {"eps": 0.1, "momentum": 0.3}),
        Variant("eval", {"mode": "eval"}),
        Variant("first-then-relu", layers=(SELF, "relu", "flatten", "dense"), X=(3, 3, 3), discrete=True),
        Variant("on-vectors-eval", {"mode": "eval"}, layers=("dense", SELF, "dense"), X=(4,)),
        Variant("before-softmax", layers=("conv", SELF, "flatten", "dense", "softmax"), loss="cross_entropy",
                target="classes"),
    ), weights=per_channel_weights, running=("mean", "var")),
    # A merge reads an earlier matrix as well as its input: its rows are small graphs, with a
    # fork (Z1 feeds the ReLU and the merge) whose gradient is the sum of two paths.
    Row("add", ("conv", "relu", SELF, "flatten", "dense"), (2, 4, 4), "mse", naive.ADD, _torch_add, (
        Variant("default", {"from": ["Z1"]}),
        Variant("residual-on-the-input", {"from": ["X"]}, layers=("relu", SELF, "flatten", "dense"), X=(1, 3, 3),
                discrete=True),
        Variant("two-branches", {"from": ["Z1"]}, layers=("dense", {"type": "dense", "input": "X"}, SELF, "dense"),
                X=(4,)),
        Variant("three-operands", {"from": ["Z1", "A1"]},
                layers=("dense", "relu", {"type": "dense", "input": "X"}, SELF, "dense"), X=(3,)),
    )),
    Row("concat", ("conv", "relu", SELF, "flatten", "dense"), (2, 4, 4), "mse", naive.CONCAT, _torch_concat, (
        Variant("default", {"from": ["Z1"]}),
        Variant("with-the-input", {"from": ["X"]}, layers=("relu", SELF, "flatten", "dense"), X=(2, 3, 3)),
        Variant("one-channel-input", {"from": ["X"]}, layers=("relu", SELF, "flatten", "dense"), X=(1, 3, 3)),
        Variant("vectors-two-branches", {"from": ["Z1"]},
                layers=("dense", {"type": "dense", "input": "X"}, SELF, "dense"), X=(4,)),
    )),
    Row("dropout", ON_MAPS, (2, 3, 3), "mse", naive.DROPOUT, _torch_dropout, (
        Variant("default"),
        Variant("p-0.3-seed-5", {"p": 0.3, "seed": 5}),
        Variant("given-mask", {"mask": BATCH, "p": 0.6}),
        Variant("eval", {"mode": "eval"}),
        Variant("after-dense-relu", layers=("dense", "relu", SELF, "dense"), X=(5,)),
    )),
)}  # fmt: skip


def _torch_bce(torch, A, Z, Y, reduction="mean"):
    return torch.nn.functional.binary_cross_entropy_with_logits(Z, Y, reduction=reduction)


def _torch_mse(torch, A, Z, Y, reduction="mean", half=False):
    return torch.nn.functional.mse_loss(A, Y, reduction=reduction) * (0.5 if half else 1.0)


def _sum(loss: str) -> Variant:
    return Variant("sum", loss={"type": loss, "reduction": "sum"})


LOSS_ROWS: dict[str, LossRow] = {row.loss: row for row in (
    LossRow("bce", ("dense", "sigmoid"), (3,), naive.BCE, _torch_bce, "labels", fuses="sigmoid",
            variants=(Variant("default"), _sum("bce"))),
    LossRow("cross_entropy", ("dense", "softmax"), (3,), naive.CROSS_ENTROPY,
            lambda torch, A, Z, Y, reduction="mean": torch.nn.functional.cross_entropy(Z, Y, reduction=reduction),
            "classes", fuses="softmax",
            variants=(Variant("default"), Variant("soft-labels", target="soft"), _sum("cross_entropy"))),
    LossRow("mse", ("dense",), (3,), naive.MSE, _torch_mse, "real",
            variants=(Variant("default"), Variant("after-sigmoid", layers=("dense", "sigmoid")),
                      Variant("after-softmax", layers=("dense", "softmax")), _sum("mse"),
                      Variant("half", loss={"type": "mse", "half": True}),
                      Variant("half-sum-after-sigmoid", layers=("dense", "sigmoid"),
                              loss={"type": "mse", "reduction": "sum", "half": True}))),
    LossRow("nll", ("dense", "log_softmax"), (3,), naive.NLL,
            lambda torch, A, Z, Y, reduction="mean": torch.nn.functional.nll_loss(A, Y.argmax(dim=1), reduction=reduction),
            "classes", fuses="log_softmax", variants=(Variant("default"), _sum("nll"))),
    # Not a loss: the gradient at the output given, as the "here is dL/dZ1" exercises do.
    LossRow("grad", ("conv",), (1, 4, 4), naive.GIVEN, lambda torch, A, Z, Y: (A * Y).sum(), "real"),
)}  # fmt: skip


# -- the cases: every variant of every row ---------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One variant of one row, ready to fill with numbers."""

    id: str
    row: Row | LossRow
    variant: Variant

    @property
    def kind(self) -> str | None:
        return self.row.kind if isinstance(self.row, Row) else None

    @property
    def loss(self) -> str:
        return self.variant.loss or self.row.loss

    @property
    def layers(self) -> list:
        own = {"type": self.row.kind, **self.variant.options} if self.kind else None
        described = []
        for layer in self.variant.layers or self.row.layers:
            if layer == SELF:
                described.append(own if len(own) > 1 else own["type"])
            else:
                described.append(layer)
        return described

    @property
    def X(self) -> tuple:
        return self.variant.X or self.row.X

    @property
    def target(self) -> str:
        return self.variant.target or self.row.target

    def weight_shapes(self, position: int, kind: str, shape: tuple):
        own = self.kind == kind and (self.variant.layers or self.row.layers)[position] == SELF
        maker = self.variant.weights if own and self.variant.weights else ROWS[kind].weights
        return maker(shape)


def _cases(rows) -> list[Case]:
    return [Case(row_id(row) if v.id == "default" else f"{row_id(row)}-{v.id}", row, v)
            for row in rows for v in row.variants]  # fmt: skip


def row_id(row) -> str:
    return row.kind if isinstance(row, Row) else f"loss-{row.loss}"


CASES = _cases(ROWS.values())
LOSS_CASES = _cases(LOSS_ROWS.values())
ALL_CASES = CASES + LOSS_CASES


#: A field that holds an option the file writes under another name: a merge's ``from``.
#: The twins get a merge's operands as arrays, not as an option.
WRITTEN = {"sources": "from"}


def options(layer) -> dict:
    """A parsed layer's options, as its fields name them (stride, padding, ties …)."""
    return {f.name: getattr(layer, f.name) for f in fields(layer) if f.name != "place" and not f.name.startswith("_")
            and f.name not in WRITTEN}  # fmt: skip


def written(layer) -> dict:
    """A parsed layer's options as the file writes them: its ``options`` and a merge's ``from``."""
    return {**options(layer), **{WRITTEN[f.name]: getattr(layer, f.name) for f in fields(layer) if f.name in WRITTEN}}


def kind_options(kind: type) -> set[str]:
    """The options a layer kind takes, as the file writes them: its fields but its place."""
    return {WRITTEN.get(f.name, f.name) for f in fields(kind) if f.name != "place" and not f.name.startswith("_")}


# -- random inputs -------------------------------------------------------------------------


def _numbers(rng, shape, discrete: bool, scale: float = 1.0):
    if discrete:
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    return rng.normal(size=shape) * scale


def _described_options(description) -> dict:
    """A description's options as its twin takes them: not its type, nor where it sits."""
    where = ("type", "input", "from")
    return {} if isinstance(description, str) else {k: v for k, v in description.items() if k not in where}


def placed(descriptions) -> tuple:
    """The layers of ``descriptions`` at their places (what each reads and makes), a mask
    still to draw left out."""
    keys = [f"layers[{i}]" for i in range(len(descriptions))]
    bare = [d if isinstance(d, str) else {k: v for k, v in d.items() if v != BATCH} for d in descriptions]
    inputs = [d.get("input") if isinstance(d, dict) else None for d in bare]
    return place([parse_layer(d, k) for d, k in zip(bare, keys)], keys, inputs)


def target(kind: str, output_shape: tuple, rng):
    """Y for an output of general shape (M, n): "real" numbers, "labels" in [0, 1] (some
    exactly 0 or 1), "classes" (an index per image), "soft" (a probability vector each)."""
    M, n = output_shape[0], int(np.prod(output_shape[1:]))
    user = (M, n) if n > 1 else (M,)
    if kind == "classes":
        return rng.integers(0, n, size=M).tolist()
    if kind == "soft":
        p = rng.uniform(0.1, 1, size=(M, n))
        return (p / p.sum(axis=1, keepdims=True)).tolist()
    if kind == "labels":
        labels = rng.uniform(0, 1, size=user)
        return np.where(rng.uniform(size=user) < 0.3, labels.round(), labels).tolist()
    return rng.normal(size=output_shape if len(output_shape) > 2 else user).tolist()


def make(case: Case, seed: int = 0, M: int = 2, grow: tuple[int, int] = (0, 0)) -> dict:
    """An input dict for ``case``: M images of its X shape (grown by ``grow`` cells along
    its last two axes, or its one axis), weights sized for the shapes each layer gets (found
    by running the naive twins), Y for its loss, lr 0.1."""
    rng = np.random.default_rng(seed)
    discrete = case.variant.discrete
    X_shape = list(case.X)
    X_shape[-1] += grow[-1]
    if len(X_shape) == 3:
        X_shape[-2] += grow[0]
    x = _numbers(rng, (M, *X_shape), discrete)
    data = {"X": x.tolist(), "layers": list(case.layers), "lr": 0.1}
    number = 0
    values = {"X": x}  # each layer's output by name: a merge reads earlier ones
    for position, (description, layer) in enumerate(zip(case.layers, placed(case.layers))):
        kind = description if isinstance(description, str) else description["type"]
        twin = ROWS[kind].twin
        x = values[layer.input]
        weights, running = (), {}
        if ROWS[kind].weights is not None:
            number += 1
            W_shape, B_shape = case.weight_shapes(position, kind, x.shape[1:])
            weights = (_numbers(rng, W_shape, discrete, 0.7), _numbers(rng, B_shape, discrete, 0.1))
            if not _described_options(description).get("bias", True):
                weights = weights[:1]  # no bias: W alone
            for name, w in zip("WB", weights):
                data[f"{name}{number}"] = w.tolist()
            for name in ROWS[kind].running:
                running[name] = rng.uniform(0.5, 2, size=B_shape)
                data[f"{name}{number}"] = running[name].tolist()
        described = _described_options(description)
        for option, value in described.items():
            if value == BATCH:  # a 0/1 mask shaped like this layer's input
                described[option] = rng.integers(0, 2, size=x.shape).tolist()
                data["layers"][position] = {**description, option: described[option]}
        others = tuple(values[name] for name in layer.reads)
        x = values[layer.output] = twin.forward(x, *weights, *others, **described, **running)
    if case.loss == "grad":
        data["grad"] = rng.normal(size=x.shape).tolist() if x.shape[1:] != (1,) else rng.normal(size=x.shape[0]).tolist()
    else:
        data["loss"] = case.loss
        data["Y"] = target(case.target, x.shape, rng)
    return data


# -- the twins' passes -----------------------------------------------------------------------


def _grad(name: str) -> str:
    return f"dL_d{name}"


def _loss_row(problem) -> LossRow:
    return LOSS_ROWS[problem.network.loss.type]


def loss_options(problem) -> dict:
    """The loss's options (reduction, half), for its twins; none for a given gradient."""
    loss = problem.network.loss
    return {} if loss.given else {name: getattr(loss, name) for name in loss.OPTIONS}


def running_options(layer, weights: dict) -> dict:
    """The running statistics ``layer`` reads (batch norm's), as its twins take them: mean=, var=."""
    return {name.rstrip("0123456789"): weights[name] for name in layer.running if name in weights}


def naive_pass(problem) -> dict:
    """Every stage of ``problem``'s trace, on the general shapes, by the naive twins: each
    layer's forward, the loss, each layer's backward (and an activation's own derivative),
    the update."""
    network = problem.network
    X, Y, weights = problem.general_X(), problem.general_target, problem.general_weights()
    values = {"X": X}
    for layer in network.layers:
        x = ROWS[layer.type].twin.forward(values[layer.input], *(weights[p] for p in layer.params),
                                          *(values[name] for name in layer.reads), **options(layer),
                                          **running_options(layer, weights))  # fmt: skip
        values[layer.output] = x
    loss, chosen = _loss_row(problem), loss_options(problem)
    last = network.layers[-1]
    logits = values[last.input]
    if loss.twin.value is not None:
        values["L"] = loss.twin.value(x, logits, Y, **chosen)
    sent = {}  # {matrix: {the layer's output that sent it: its gradient}}: a fork's paths
    sent[last.output] = {"L": loss.twin.gradient(x, logits, Y, **chosen)}
    steps = list(network.layers)
    if loss.fuses == last.type:
        # The loss cancels against the last activation: dL/dZ = (A − Y)/N straight away.
        steps.pop()
        values[_grad(last.output)] = sent.pop(last.output)["L"]
        values[f"d{last.output}_d{last.input}"] = ROWS[last.type].twin.local(logits, **options(last))
        sent[last.input] = {last.output: loss.twin.fused(x, Y, **chosen)}
    forks = network.forks

    def gradient(name):
        """The sum of the paths' gradients, each shown where ``name`` feeds several layers."""
        paths = sent.pop(name)
        if name in forks:
            for consumer, value in paths.items():
                values[f"dL_d{name}_via_{consumer}"] = value
            total = np.zeros(np.shape(values[name]))
            for consumer in forks[name].consumers:  # in list order, as the trace adds them
                total = total + paths[consumer]
            paths = {"": total}
        (values[_grad(name)],) = paths.values()
        return values[_grad(name)]

    for layer in reversed(steps):
        d = gradient(layer.output)
        twin = ROWS[layer.type].twin
        x_in = values[layer.input]
        others = [values[name] for name in layer.reads]
        own = [weights[p] for p in layer.params]
        kept = running_options(layer, weights)
        d_in, grads = twin.backward(d, x_in, *own, *others, **options(layer), **kept)
        if twin.stages is not None:
            number = layer.place.number
            values.update({f"{name}{number}": np.asarray(value)
                           for name, value in twin.stages(x_in, d, *own, **options(layer), **kept).items()})  # fmt: skip
        if twin.local is not None:
            values[f"d{layer.output}_d{layer.input}"] = twin.local(x_in, **options(layer))
        if layer.reads:  # a merge: the gradients are its operands'
            for name, g in zip(layer.reads, grads):
                sent.setdefault(name, {})[layer.output] = g
        else:
            values.update({_grad(p): g for p, g in zip(layer.params, grads)})
        sent.setdefault(layer.input, {})[layer.output] = d_in
    gradient("X")
    del values["X"]  # an input, not a stage
    values.update(naive.gradient_step({p: weights[p] for p in network.params}, values, problem.lr))
    return values


def torch_pass(torch, problem) -> dict:
    """L, every layer's output and every gradient torch's autograd gives, in float64 on the
    general shapes, under the trace's names (a fused last activation's dL/dA has none)."""

    def leaf(array):
        return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=True)

    network = problem.network
    X = leaf(problem.general_X())
    general = problem.general_weights()
    weights = {name: leaf(general[name]) for name in network.params}
    # The running statistics: no leaves, torch updates them in place in training.
    running = {name: torch.tensor(value) for name, value in general.items() if name not in weights}
    outputs, x, logits = {"X": X}, X, None
    for layer in network.layers:
        logits = outputs[layer.input]
        x = ROWS[layer.type].torch(torch, logits, *(weights[p] for p in layer.params),
                                   *(outputs[name] for name in layer.reads), **options(layer),
                                   **running_options(layer, running))  # fmt: skip
        x.retain_grad()
        outputs[layer.output] = x
    target = torch.tensor(problem.general_target, dtype=torch.float64)
    L = _loss_row(problem).torch(torch, x, logits, target, **loss_options(problem))
    L.backward()
    values = {"dL_dX": X.grad, **{_grad(p): w.grad for p, w in weights.items()}}
    if not network.loss.given:
        values["L"] = L
    values.update({name: value for name, value in running.items() if name in problem.stage})
    for name, output in outputs.items():
        if name == "X":
            continue
        values[name] = output
        if output.grad is not None:
            values[_grad(name)] = output.grad
    return {name: value.detach().numpy() for name, value in values.items()}
