"""The layer kinds: one module per kind or family, and the registry, the one list to add a
kind to. Everything cnntrace knows about a kind lives in its module (see base.Layer); the
input's parser, the JSON Schema, the size guard, the hand exercises and the tests read it
from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

from cnntrace.layers.base import GivenLayout, Layer, Layout, Place, Stage

#: Each layer kind's name in input files, its module in this package and its class, in the
#: order the schema lists them.
WHERE = {
    "conv": ("conv", "Conv"),
    "conv_transpose": ("conv_transpose", "ConvTranspose"),
    "dense": ("dense", "Dense"),
    "flatten": ("flatten", "Flatten"),
    "maxpool": ("pool", "MaxPool"),
    "avgpool": ("pool", "AvgPool"),
    "global_avgpool": ("global_pool", "GlobalAvgPool"),
    "adaptive_avgpool": ("adaptive_pool", "AdaptiveAvgPool"),
    "relu": ("activation", "ReLU"),
    "leaky_relu": ("activation", "LeakyReLU"),
    "tanh": ("activation", "Tanh"),
    "sigmoid": ("activation", "Sigmoid"),
    "softmax": ("activation", "Softmax"),
    "elu": ("smooth", "ELU"),
    "gelu": ("smooth", "GELU"),
    "silu": ("smooth", "SiLU"),
    "softplus": ("smooth", "Softplus"),
    "log_softmax": ("activation", "LogSoftmax"),
    "batchnorm": ("norm", "BatchNorm"),
    "dropout": ("dropout", "Dropout"),
    "add": ("merge", "Add"),
    "concat": ("merge", "Concat"),
}


class Kinds(Mapping):
    """The layer kinds by name, each kind's module imported when the kind is first asked
    for: a network of convolutions, ReLUs and max-pools never loads batch norm's or the
    transposed convolution's module (about 8 ms of `step`'s start-up on the reference network). Names, ``in`` and
    the order need no import; ``values()`` and ``items()`` import every kind."""

    def __init__(self, where: dict[str, tuple[str, str]]):
        self._where = where
        self._loaded: dict[str, type[Layer]] = {}

    def __getitem__(self, name: str) -> type[Layer]:
        kind = self._loaded.get(name)
        if kind is None:
            module, attribute = self._where[name]
            kind = self._loaded[name] = getattr(import_module(f"{__name__}.{module}"), attribute)
        return kind

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __repr__(self) -> str:
        return f"Kinds({', '.join(self._where)})"


#: Every layer kind by the name input files give it, in the order the schema lists them.
KINDS: Mapping[str, type[Layer]] = Kinds(WHERE)


def __getattr__(name: str):
    """A kind's class by its class name, as ``from cnntrace.layers import Conv`` asks for it,
    its module imported then."""
    for kind, (_, attribute) in WHERE.items():
        if attribute == name:
            return KINDS[kind]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["KINDS", "GivenLayout", "Layer", "Layout", "Place", "Stage"]
