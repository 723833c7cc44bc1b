"""The layer kinds: one module per kind or family, and the registry, the one list to add a
kind to. Everything cnntrace knows about a kind lives in its module (see base.Layer); the
input's parser, the JSON Schema, the size guard, the hand exercises and the tests read it
from here.
"""

from cnntrace.layers.activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from cnntrace.layers.adaptive_pool import AdaptiveAvgPool
from cnntrace.layers.base import GivenLayout, Layer, Layout, Place, Stage
from cnntrace.layers.conv import Conv
from cnntrace.layers.conv_transpose import ConvTranspose
from cnntrace.layers.dense import Dense
from cnntrace.layers.dropout import Dropout
from cnntrace.layers.flatten import Flatten
from cnntrace.layers.global_pool import GlobalAvgPool
from cnntrace.layers.merge import Add, Concat
from cnntrace.layers.norm import BatchNorm
from cnntrace.layers.pool import AvgPool, MaxPool
from cnntrace.layers.smooth import ELU, GELU, SiLU, Softplus

#: Every layer kind by the name input files give it, in the order the schema lists them.
KINDS: dict[str, type[Layer]] = {
    kind.type: kind for kind in (
        Conv, ConvTranspose, Dense, Flatten, MaxPool, AvgPool, GlobalAvgPool, AdaptiveAvgPool,
        ReLU, LeakyReLU, Tanh, Sigmoid, Softmax, ELU, GELU, SiLU, Softplus, LogSoftmax,
        BatchNorm, Dropout, Add, Concat,
    )
}

__all__ = ["KINDS", "GivenLayout", "Layer", "Layout", "Place", "Stage"]
