"""PyTorch to cnntrace: ``from_torch`` reads an nn.Sequential (nested ones too) into an input
dict; ``from_state_dict`` pours a state_dict's tensors, in order, into the layers of a file.

Each layer kind reads its own modules (Layer.TORCH, from_torch, from_state); this module
walks the module tree, numbers the weights and picks the loss.
"""

from __future__ import annotations

import numpy as np

from cnntrace.bridge import need
from cnntrace.checks import plain
from cnntrace.errors import InputError
from cnntrace.layers import KINDS
from cnntrace.layers.base import Imported, Refused
from cnntrace.losses import LOSSES
from cnntrace.problem import parse_layers

#: Modules that change nothing in a pass (what an exported model keeps of a dropout).
PASS_THROUGH = ("Identity",)


def array(tensor) -> np.ndarray:
    """A torch tensor (or any array-like) as a float64 numpy array."""
    return np.asarray(plain(tensor), dtype=np.float64)


def kind_reading(name: str, attribute: str):
    """The layer kind that reads torch module (or ONNX operator) ``name`` (attribute "TORCH"
    or "ONNX"), or None."""
    return next((kind for kind in KINDS.values() if name in getattr(kind, attribute)), None)


def _leaves(module, path: str = ""):
    """(path, module) of every layer of an nn.Sequential, nested ones flattened, in order."""
    name = type(module).__name__
    if name == "Sequential":
        for child_name, child in module.named_children():
            yield from _leaves(child, f"{path}.{child_name}" if path else child_name)
        return
    if any(True for _ in module.children()):
        raise InputError(f"{path or 'the model'}: {name} is not an nn.Sequential: its forward is code, which "
                         "cnntrace does not read (a residual block waits for skip connections)")  # fmt: skip
    yield path or "0", module


def _loss_name(loss) -> str | None:
    """A cnntrace loss name from a name or a torch.nn loss module."""
    if loss is None or isinstance(loss, str):
        return loss
    name = type(loss).__name__
    for kind in LOSSES.values():
        if name in kind.TORCH:
            if getattr(loss, "reduction", "mean") != "mean":
                raise InputError(f"{name} with reduction {loss.reduction!r}: cnntrace's losses are means", key="loss")
            return kind.type
    raise InputError(f"{name} is not one of cnntrace's losses ({', '.join(LOSSES)})", key="loss")


def input_dict(layers: list[Imported], X, target=None, *, loss: str | None = None, given=None,
               lr: float = 0.1) -> dict:
    """An input dict (JSON-ready lists) from imported layers: the weights named W1, B1 …,
    mean2, var2 … as the network names them. A loss that goes with a last activation
    (cross-entropy with a softmax, bce with a sigmoid) gets it where the layers end without
    it: PyTorch's CrossEntropyLoss and BCEWithLogitsLoss apply it to the logits themselves."""
    pairing = next((kind for kind in KINDS.values() if loss and kind.pairs_with == loss), None)
    last = layers[-1].description
    if given is None and pairing is not None and (last if isinstance(last, str) else last["type"]) != pairing.type:
        layers = [*layers, Imported(pairing.type)]
    descriptions = [layer.description for layer in layers]
    network = parse_layers(descriptions, loss, given_gradient=given is not None)
    data: dict = {"X": array(X).tolist()}
    if given is not None:
        data["grad"] = array(given).tolist()
    elif target is not None:
        data["Y"] = array(target).tolist()
    data["layers"] = descriptions
    if loss is not None:
        data["loss"] = loss
    for layer, imported in zip(network.layers, layers):
        for name, value in zip((*layer.params, *layer.running), (*imported.weights, *imported.running)):
            data[name] = array(value).tolist()
    data["lr"] = lr
    return data


def layers_of(module) -> tuple[list[Imported], str | None]:
    """The imported layers of an nn.Sequential; InputError naming the module path."""
    out = []
    for path, leaf in _leaves(module):
        name = type(leaf).__name__
        if name in PASS_THROUGH:
            continue
        kind = kind_reading(name, "TORCH")
        if kind is None:
            raise InputError(f"{path}: {name} is not a layer kind cnntrace has")
        try:
            out.append(kind.from_torch(leaf, array))
        except Refused as refusal:
            raise InputError(f"{path}: {refusal}") from None
    if not out:
        raise InputError("the model has no layers")
    return out


def from_torch(module, X, Y=None, *, loss=None, grad=None, lr: float = 0.1) -> dict:
    """The input dict (layers and weights) of torch ``module``, an nn.Sequential of the
    layer kinds cnntrace has, on ``X`` (torch tensors, numpy arrays or lists), with target
    ``Y`` and ``loss`` (a cnntrace loss name or a torch.nn loss module: CrossEntropyLoss,
    BCEWithLogitsLoss, BCELoss, MSELoss), or the given gradient ``grad`` of its output.
    Ready for ``cnntrace.trace_input`` or ``json.dump``. nn.Linear's out×in weight is
    transposed to cnntrace's n_in×n_out; a cross-entropy or BCE-with-logits loss appends
    the softmax or sigmoid PyTorch applies inside the loss."""
    need("torch", "from_torch")
    name = _loss_name(loss)
    if grad is None and Y is None:
        raise InputError("give Y (with a loss) or grad", key="Y")
    return input_dict(layers_of(module), X, Y, loss=name, given=grad, lr=lr)


def from_state_dict(state: dict, layers: list, *, file: str = "") -> list[Imported]:
    """The state_dict's tensors, module by module in their order ("0.weight", "0.bias",
    "1.running_mean" …), poured into the weighted layers of ``layers`` (a file's list):
    one module's tensors to each. InputError naming the module or the layer that differs."""
    network = parse_layers(layers, given_gradient=True)
    groups: dict[str, dict] = {}
    for key, tensor in state.items():
        module, _, attribute = key.rpartition(".")
        if attribute == "num_batches_tracked":
            continue
        groups.setdefault(module, {})[attribute] = array(tensor)
    weighted = [layer for layer in network.layers if layer.params]
    if len(groups) != len(weighted):
        raise InputError(f"the state_dict has tensors for {len(groups)} module{'s' * (len(groups) != 1)} "
                         f"({', '.join(groups) or 'none'}); the layers have {len(weighted)} with weights",
                         key="layers", file=file)  # fmt: skip
    out, modules = [], iter(groups.items())
    for layer, description in zip(network.layers, layers):
        if not layer.params:
            out.append(Imported(description))
            continue
        module, tensors = next(modules)
        try:
            imported = type(layer).from_state(tensors)
        except Refused as refusal:
            raise InputError(f"{module}: {refusal}", key=layer.place.key(), file=file) from None
        out.append(imported._replace(description=description))
    return out
