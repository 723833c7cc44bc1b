"""Input files for the I/O and CLI tests: the bundled reference sample and variations of it;
and the reference network's pass on the shapes the reference form writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
REFERENCE = SAMPLES / "reference.json"


def reference() -> dict:
    """A fresh copy of samples/reference.json as a dict."""
    return json.loads(REFERENCE.read_text())


def write(directory: Path, data, name: str = "in.json") -> Path:
    """Write ``data`` (a dict, or text written as it is) to directory/name and return the path."""
    path = directory / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def variant(directory: Path, name: str = "in.json", drop=(), **changes) -> Path:
    """The reference input with some keys changed or dropped, written to a file."""
    data = reference()
    for key in drop:
        del data[key]
    data.update(changes)
    return write(directory, data, name)


# -- the reference network's pass on the shapes the reference form writes ------------------


def reference_pass(
    X, Y, W1, B1, W2, B2, *, oracle=False, trace=True, stride=1, padding=0, pool=2, pool_stride=2
) -> dict:
    """The reference network's {name: array} for X (M, H, W), Y (M,), W1 (K, kh, kw),
    B1 (K,), W2 (n,), B2 (): the pass runs on the general shapes (a channel axis for X and
    W1, a unit axis for W2, Z2 and Y) and every result comes back in these shapes.
    ``oracle`` runs tests/naive.py's loop-based pass instead of cnntrace's."""
    from cnntrace.reference import ReferenceOptions, reference_network
    from tests import naive

    X, Y, W1, B1, W2, B2 = (np.asarray(a, dtype=np.float64) for a in (X, Y, W1, B1, W2, B2))
    weights = {"W1": W1[:, None], "B1": B1, "W2": W2[:, None], "B2": B2.reshape(1)}
    options = {"stride": stride, "padding": padding, "pool": pool, "pool_stride": pool_stride}
    if oracle:
        values = naive.forward_backward(X[:, None], Y[:, None], weights, **options)
    else:
        network = reference_network(ReferenceOptions(**options))
        values = network.forward_backward(X[:, None], Y[:, None], weights, tracing=trace)
    M = X.shape[0]
    shapes = {"X": X.shape, "W1": W1.shape, "B1": B1.shape, "W2": W2.shape, "B2": B2.shape}
    for name in ("Z2", "A2", "dA2_dZ2"):
        shapes[name] = (M,)
    back = {}
    for name, value in values.items():
        shape = shapes.get(name.removeprefix("dL_d"))
        back[name] = value if shape is None else np.reshape(value, shape)
    return back
