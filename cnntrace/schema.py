"""The JSON Schema of cnntrace's input files (``cnntrace schema``)."""

from __future__ import annotations

_NUMBER = {"type": "number"}
_VECTOR = {"type": "array", "items": _NUMBER, "minItems": 1}
_MATRIX = {"type": "array", "items": _VECTOR, "minItems": 1}
_MATRICES = {"type": "array", "items": _MATRIX, "minItems": 1}


def _size(minimum: int, default: int | None, description: str) -> dict:
    schema = {"type": "integer", "minimum": minimum, "description": description}
    if default is not None:
        schema["default"] = default
    return schema


INPUT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cnntrace input",
    "description": (
        "One problem for the reference CNN: X → conv(W1, B1) → ReLU → MaxPool → flatten → "
        "dense(W2, B2) → sigmoid → binary cross-entropy with Y. Rows must all have the same "
        "length; the sizes must fit together (see the README)."
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
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.1, "description": "Learning rate of the update."},
        "comment": {"type": "string", "description": "Free text, ignored."},
        "$schema": {"type": "string", "description": "The schema's address, ignored."},
    },
}
