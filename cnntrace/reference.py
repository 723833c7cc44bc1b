"""The seeds' network, written as the list of layers it is:

    X → Z1 = conv(X, W1) + B1 → A1 = ReLU(Z1) → P1 = MaxPool(A1) → F = flatten(P1)
      → Z2 = F·W2 + B2 → A2 = σ(Z2) → L = BCE(Y, A2)

An input file without ``layers`` describes this network; its top-level stride, padding,
pool and pool_stride are the conv's and the max-pool's options.
"""

from __future__ import annotations

from cnntrace.layers import Conv, Dense, Flatten, MaxPool, ReLU, Sigmoid
from cnntrace.losses import BCE
from cnntrace.network import Network
from cnntrace.problem import ReferenceOptions, place_layers

#: The keys the reference form writes each layer's options under.
CONV_KEYS = (("stride", "stride"), ("padding", "padding"))
POOL_KEYS = (("size", "pool"), ("stride", "pool_stride"))


def reference_network(options: ReferenceOptions = ReferenceOptions()) -> Network:
    """conv → relu → maxpool → flatten → dense → sigmoid, loss bce."""
    stride, padding = (options.stride,) * 2, (options.padding,) * 2
    pool, pool_stride = (options.pool,) * 2, (options.pool_stride,) * 2
    layers = [
        Conv(stride=stride, padding=padding),
        ReLU(),
        MaxPool(size=pool, stride=pool_stride),
        Flatten(),
        Dense(_one_output=True),
        Sigmoid(),
    ]
    keys = ["W1", "W1", "pool", "W2", "W2", "W2"]
    placed = place_layers(layers, keys)
    from dataclasses import replace

    placed = tuple(
        replace(layer, place=replace(layer.place, option_keys=CONV_KEYS if layer.type == "conv"
                                     else POOL_KEYS if layer.type == "maxpool" else ()))
        for layer in placed
    )  # fmt: skip
    return Network(placed, BCE("A2", "Z2"))


def reference_stages(batched: bool = False):
    """The reference network's stages, in the derivation's order, for one 6×6 image (or a
    batch): Z1, A1, P1, F, Z2, A2, L, dL_dA2 … dL_dX, W1, B1, W2, B2."""
    from cnntrace.problem import Problem

    X = [[[0.0] * 6] * 6] * 2 if batched else [[0.0] * 6] * 6
    Y = [0.0, 1.0] if batched else 1.0
    return Problem.build(X, Y, [[0.0] * 3] * 3, 0.0, [0.0] * 4, 0.0).stages
