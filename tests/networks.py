"""Networks of every layer kind and option, with random numbers, for the table-driven tests.

Each entry of NETWORKS is (id, layers, loss, X shape, weight shapes); ``make(id, seed)``
fills it with random numbers into an input dict as a file would hold it. Every kind and
option appears at least once: conv (channels, stride, padding, rectangular, flip, dilation, groups,
four-sided and "same" padding, no bias), conv_transpose (its every option), dense,
flatten, maxpool and avgpool (overlapping, padded), relu, leaky_relu, tanh, sigmoid,
softmax, and the losses bce, cross_entropy, mse and a given grad.
"""

from __future__ import annotations

import numpy as np

NETWORKS = [
    # id, layers, loss (None: the default; "grad": a given gradient), X shape, {W: shape},
    # target kind, the output's shape as the user sees it
    ("reference-as-layers", ["conv", "relu", "maxpool", "flatten", "dense", "sigmoid"], None,
     (6, 6), {"W1": (3, 3), "B1": (), "W2": (4,), "B2": ()}, "bce", ()),
    ("rgb-softmax", [{"type": "conv", "stride": 1, "padding": 1}, "relu", {"type": "maxpool", "size": 2},
                     "conv", "tanh", {"type": "avgpool", "size": 2}, "flatten", "dense", "relu", "dense", "softmax"],
     "cross_entropy", (2, 3, 6, 6),
     {"W1": (2, 3, 3, 3), "B1": (2,), "W2": (2, 2, 2, 2), "B2": (2,), "W3": (2, 4), "B3": (4,),
      "W4": (4, 3), "B4": (3,)}, "classes", (2, 3)),
    ("strided-rect-flip", [{"type": "conv", "stride": [2, 1], "padding": [1, 0], "flip": True}, "sigmoid",
                           "flatten", "dense"], "mse", (2, 5, 6),
     {"W1": (2, 3, 2), "B1": (2,), "W2": (30, 2), "B2": (2,)}, "targets", (2, 2)),
    ("overlapping-padded-pools", ["conv", {"type": "leaky_relu", "alpha": 0.1},
                                  {"type": "maxpool", "size": 3, "stride": 1, "padding": 1}, "conv",
                                  {"type": "avgpool", "size": [2, 3], "stride": [1, 2], "padding": [1, 1]},
                                  "flatten", "dense", "sigmoid"], "bce", (3, 1, 5, 5),
     {"W1": (2, 1, 2, 2), "B1": (2,), "W2": (2, 2, 2, 2), "B2": (2,), "W3": (16, 1), "B3": (1,)}, "bce", (3,)),
    ("given-grad-one-conv", [{"type": "conv", "stride": 2, "padding": 1}], "grad", (2, 4, 5),
     {"W1": (3, 2, 2, 3), "B1": (3,)}, "grad", (3, 3, 3)),
    ("pool-first-then-tanh", [{"type": "avgpool", "size": 2}, "conv", "tanh", "maxpool", "flatten", "dense"],
     "mse", (2, 2, 8, 8), {"W1": (2, 2, 2, 2), "B1": (2,), "W2": (2, 1), "B2": ()}, "targets", (2,)),
    ("mlp", ["dense", "sigmoid", "dense", "sigmoid"], "mse", (2, 3),
     {"W1": (3, 2), "B1": (2,), "W2": (2, 2), "B2": (2,)}, "targets", (2, 2)),
    ("mlp-soft-labels", ["dense", "tanh", "dense", "softmax"], None, (3, 4),
     {"W1": (4, 3), "B1": (3,), "W2": (3, 2), "B2": (2,)}, "soft", (3, 2)),
    ("dilated-grouped-conv", [{"type": "conv", "dilation": [2, 1], "groups": 2, "padding": [1, 0, 2, 1]}, "relu",
                              {"type": "conv", "groups": 4, "padding": "same", "dilation": [1, 2], "bias": False},
                              "flatten", "dense"], "mse", (2, 4, 4, 3),
     {"W1": (4, 2, 3, 2), "B1": (4,), "W2": (4, 1, 2, 3), "W3": (20, 2), "B3": (2,)}, "targets", (2, 2)),
    ("conv-transpose-net", [{"type": "conv_transpose", "stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
                            "tanh", {"type": "conv_transpose", "stride": [1, 2], "dilation": [2, 1],
                                     "output_padding": [1, 0], "bias": False}, "flatten", "dense", "sigmoid"],
     "bce", (2, 2, 2, 1), {"W1": (2, 1, 3, 3), "B1": (2,), "W2": (2, 1, 2, 2), "W3": (28, 1), "B3": (1,)},
     "bce", (2,)),
    ("given-grad-conv-transpose", [{"type": "conv_transpose", "stride": 2}], "grad", (3, 3),
     {"W1": (2, 2), "B1": ()}, "grad", (6, 6)),
    ("one-image-multi-sigmoid", ["conv", "relu", "flatten", "dense", "sigmoid"], "bce", (1, 5, 5),
     {"W1": (2, 1, 3, 3), "B1": (2,), "W2": (18, 3), "B2": (3,)}, "bce", (3,)),
    # issue 19: the pools' new options, adaptive pooling, the smooth activations, log_softmax
    # with nll, and the losses' object form.
    ("ceil-dilated-maxpool-nll", ["conv", "elu", {"type": "maxpool", "size": 3, "stride": 2, "dilation": 2,
                                                   "padding": 1, "ceil_mode": True},
                                  "flatten", "dense", "log_softmax"], None, (2, 2, 9, 9),
     {"W1": (2, 2, 2, 2), "B1": (2,), "W2": (32, 3), "B2": (3,)}, "classes", (2, 3)),
    ("same-and-asymmetric-pools", [{"type": "maxpool", "size": 3, "stride": 2, "padding": "same"}, "conv", "gelu",
                                   {"type": "avgpool", "size": 3, "stride": 2, "padding": [1, 0, 0, 1],
                                    "ceil_mode": True, "count_include_pad": False},
                                   "flatten", "dense", "silu", "dense"],
     {"type": "mse", "reduction": "sum", "half": True}, (2, 1, 8, 9),
     {"W1": (2, 1, 2, 2), "B1": (2,), "W2": (8, 3), "B2": (3,), "W3": (3, 2), "B3": (2,)}, "targets", (2, 2)),
    ("adaptive-softplus-bce-sum", ["conv", {"type": "softplus", "beta": 2, "threshold": 3},
                                   {"type": "adaptive_avgpool", "output_size": [3, 2]}, "flatten", "dense", "sigmoid"],
     {"type": "bce", "reduction": "sum"}, (3, 1, 7, 6),
     {"W1": (2, 1, 2, 2), "B1": (2,), "W2": (12, 2), "B2": (2,)}, "bce", (3, 2)),
    ("ceil-avgpool-cross-entropy-sum", [{"type": "avgpool", "size": 2, "stride": 2, "padding": 1, "ceil_mode": True},
                                        "flatten", "dense", "softmax"],
     {"type": "cross_entropy", "reduction": "sum"}, (2, 2, 5, 4), {"W1": (18, 3), "B1": (3,)}, "classes", (2, 3)),
    ("mlp-elu-gelu-half-mse", ["dense", {"type": "elu", "alpha": 0.5}, "dense", "gelu", "dense"],
     {"type": "mse", "half": True}, (3, 4),
     {"W1": (4, 3), "B1": (3,), "W2": (3, 3), "B2": (3,), "W3": (3, 2), "B3": (2,)}, "targets", (3, 2)),
    ("log-softmax-nll-one-image", ["dense", "tanh", "dense", "log_softmax"], "nll", (4,),
     {"W1": (4, 3), "B1": (3,), "W2": (3, 3), "B2": (3,)}, "classes", (3,)),
]
IDS = [entry[0] for entry in NETWORKS]
BY_ID = {entry[0]: entry for entry in NETWORKS}


def make(network_id: str, seed: int = 0) -> dict:
    """An input dict for the network ``network_id`` with random numbers from ``seed``."""
    _, layers, loss, X_shape, shapes, target, shape = BY_ID[network_id]
    rng = np.random.default_rng(seed)
    data = {"X": rng.normal(size=X_shape).tolist(), "layers": layers}
    for name, weight_shape in shapes.items():
        scale = 0.1 if name.startswith("B") else 0.7
        data[name] = (rng.normal(size=weight_shape) * scale).tolist() if weight_shape else float(rng.normal() * scale)
    if loss is not None and loss != "grad":
        data["loss"] = loss
    data["lr"] = 0.1
    if target == "grad":
        data["grad"] = rng.normal(size=shape).tolist()
    elif target == "bce":
        data["Y"] = rng.uniform(0, 1, size=shape).round(2).tolist() if shape else 1.0
    elif target == "targets":
        data["Y"] = rng.normal(size=shape).tolist()
    elif target == "classes":
        n = shape[-1]
        data["Y"] = rng.integers(0, n, size=shape[:-1]).tolist()
    elif target == "soft":
        p = rng.uniform(0.1, 1, size=shape)
        data["Y"] = (p / p.sum(axis=-1, keepdims=True)).tolist()
    return data

