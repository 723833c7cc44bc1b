"""The JSON Schema of cnntrace's input files (``cnntrace schema``): the reference form, or a
network written as a list of layers. The layers' part, the conventions, the losses and the
weights' names come from the registries (layers.KINDS, losses.LOSSES, naming.WEIGHT, naming.RUNNING)."""

from __future__ import annotations

from cnntrace.layers import KINDS
from cnntrace.losses import LOSSES
from cnntrace.naming import MATRIX, RUNNING, WEIGHT

_NUMBER = {"type": "number"}
_VECTOR = {"type": "array", "items": _NUMBER, "minItems": 1}
_MATRIX = {"type": "array", "items": _VECTOR, "minItems": 1}
_MATRICES = {"type": "array", "items": _MATRIX, "minItems": 1}
_TENSOR4 = {"type": "array", "items": _MATRICES, "minItems": 1}
#: A number or a rectangular array of numbers up to four axes deep.
_ARRAY = {"oneOf": [_NUMBER, _VECTOR, _MATRIX, _MATRICES, _TENSOR4]}


def _size(minimum: int, default: int | None, description: str) -> dict:
    schema = {"type": "integer", "minimum": minimum, "description": description}
    if default is not None:
        schema["default"] = default
    return schema


#: Any layer's ``input``: where it sits in a network that is not a straight list.
INPUT = {"type": "string", "pattern": f"^(?:{MATRIX.pattern})$",
         "description": "The earlier matrix it reads (\"X\" or a name the trace shows, like \"A2\") instead of "
                        "the previous layer's output."}  # fmt: skip


def _layer(kind) -> dict:
    """One layer kind's object form, from its description and its options."""
    return {
        "type": "object",
        "description": kind.DESCRIPTION,
        "required": ["type", *kind.REQUIRED],
        "additionalProperties": False,
        "properties": {"type": {"const": kind.type}, **{name: option.schema for name, option in kind.OPTIONS.items()},
                       "input": INPUT},
    }


LAYER_SCHEMA = {
    "oneOf": [
        {"enum": list(KINDS), "description": "A layer type with its default options."},
        *(_layer(kind) for kind in KINDS.values()),
    ]
}


def _loss(kind) -> dict:
    """One loss's object form, from its options."""
    return {
        "type": "object",
        "description": (kind.__doc__ or "").split("\n")[0],
        "required": ["type"],
        "additionalProperties": False,
        "properties": {"type": {"const": kind.type}, **{name: option.schema for name, option in kind.OPTIONS.items()}},
    }


LOSS_SCHEMA = {
    "description": "The mean, as PyTorch computes it; by default bce after a sigmoid, cross_entropy after a softmax, nll after a log_softmax.",
    "oneOf": [
        {"enum": list(LOSSES), "description": "A loss with its default options (the mean)."},
        *(_loss(kind) for kind in LOSSES.values()),
    ],
}

_COMMON = {
    "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.1, "description": "Learning rate of the update."},
    "conventions": {
        "type": "object", "additionalProperties": False,
        "description": "Conventions other than PyTorch's, set on every layer they concern.",
        "properties": {
            switch: convention.schema() for kind in KINDS.values() for switch, convention in kind.CONVENTIONS.items()
        },
    },
    "comment": {"type": "string", "description": "Free text, ignored."},
    "$schema": {"type": "string", "description": "The schema's address, ignored."},
}

REFERENCE_FORM = {
    "title": "the reference network",
    "description": (
        "X → conv(W1, B1) → ReLU → MaxPool → flatten → dense(W2, B2) → sigmoid → binary "
        "cross-entropy with Y. Rows must all have the same length; the sizes must fit "
        "together (see the README)."
    ),
    "type": "object",
    "required": ["X", "Y", "W1", "B1", "W2", "B2"],
    "additionalProperties": False,
    "properties": {
        "X": {"description": "An H×W image, or an M×H×W batch of M images.", "oneOf": [_MATRIX, _MATRICES]},
        "Y": {
            "description": "The label in [0, 1], or a list of M labels for a batch.",
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 1},
            ],
        },
        "W1": {"description": "A kh×kw filter, or K×kh×kw for K filters.", "oneOf": [_MATRIX, _MATRICES]},
        "B1": {"description": "One bias per filter: a number, or a list of K.", "oneOf": [_NUMBER, _VECTOR]},
        "W2": {
            "description": "One weight per entry of F (K·Hp·Wp of them): a list, an n×1 or a 1×n matrix.",
            "oneOf": [_VECTOR, _MATRIX],
        },
        "B2": {"description": "The output neuron's bias.", "oneOf": [_NUMBER, _VECTOR, _MATRIX]},
        "stride": _size(1, 1, "The convolution's stride."),
        "padding": _size(0, 0, "Zeros added on every side of X."),
        "pool": _size(1, 2, "The max-pool window, pool×pool; 1 means no pooling."),
        "pool_stride": _size(1, None, "The max-pool stride; by default the same as pool."),
        **_COMMON,
    },
}

LAYERS_FORM = {
    "title": "a network of layers",
    "description": (
        "Any small CNN: the layers in order, the l-th conv or dense layer with weights Wl and "
        "Bl; Y with a loss, or grad, the gradient of the loss at the network's output."
    ),
    "type": "object",
    "required": ["X", "layers"],
    "oneOf": [{"required": ["Y"]}, {"required": ["grad"]}],
    "additionalProperties": False,
    "properties": {
        "X": {"description": "H×W or M×H×W; C×H×W or M×C×H×W with a K×C×kh×kw W1; n or M×n for a network that starts with dense.",
              **_ARRAY},
        "layers": {"type": "array", "items": LAYER_SCHEMA, "minItems": 1},
        "loss": LOSS_SCHEMA,
        "Y": {"description": "bce: labels in [0, 1] shaped like the output; cross_entropy: a class index or a probability vector per image; mse: targets shaped like the output.",
              **_ARRAY},
        "grad": {"description": "dL/d(output) in the output's shape, instead of Y and a loss.", **_ARRAY},
        "torch_names": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "PyTorch's parameter names of the weights (\"0.weight\": \"W1\", with .T where "
                                       "nn.Linear keeps it transposed), written by import and from_torch: verify reads "
                                       "gradients given under these names."},
        **_COMMON,
    },
    "patternProperties": {
        f"^{WEIGHT.pattern}$": {"description": "The weights of the l-th conv or dense layer (a batchnorm's γ and β).",
                                **_ARRAY},
        f"^{RUNNING.pattern}$": {"description": "The running mean and variance of the l-th layer, a batchnorm: one "
                                 "per channel (or unit); eval mode reads them, training updates them.", **_ARRAY},
    },
}  # fmt: skip

INPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cnntrace input",
    "description": "An input file: the reference network (without layers) or a network written as layers.",
    "oneOf": [REFERENCE_FORM, LAYERS_FORM],
}
