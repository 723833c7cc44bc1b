"""cnntrace and PyTorch and ONNX, both ways (issue 21).

- ``repro``: ``export --to torch``, a standalone script that rebuilds a trace's network in
  PyTorch with its weights and checks every matrix of the trace against autograd;
- ``torch_in``: ``from_torch`` (an nn.Module to an input dict) and a state_dict's tensors
  poured into a file's layers;
- ``onnx_io``: ``import`` of an ONNX model and ``export --to onnx``.

What each layer kind is in PyTorch and ONNX is the kind's own knowledge (its TORCH and ONNX
names, ``torch_form``, ``from_torch``, ``from_onnx``, ``onnx_nodes``: see layers.base); these
modules walk the network and the graph. torch, onnx and safetensors are optional: each is
imported where it is used, and ``need`` says which extra installs it.
"""

from __future__ import annotations

import importlib

from cnntrace.errors import InputError

#: The extra that installs each optional package.
EXTRAS = {"torch": "torch", "torch.fx": "torch", "onnx": "onnx", "safetensors": "torch"}


def need(package: str, what: str):
    """The module ``package``, or InputError saying which extra installs it for ``what``."""
    try:
        return importlib.import_module(package)
    except ImportError:
        extra = EXTRAS.get(package, package)
        raise InputError(f"{what} needs {package}: pip install 'cnntrace[{extra}]'") from None
