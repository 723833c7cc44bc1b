"""PyTorch to cnntrace: ``from_torch`` reads an nn.Sequential (nested ones too), or a module
whose forward is code (a residual block) through its torch.fx trace, into an input dict;
``from_state_dict`` pours a state_dict's tensors, in order, into the layers of a file.

Each layer kind reads its own modules (Layer.TORCH, from_torch, from_state); this module
walks the module tree, numbers the weights and picks the loss.
"""

from __future__ import annotations

import numpy as np

from cnntrace.bridge import need
from cnntrace.checks import plain
from cnntrace.errors import InputError
from cnntrace.layers import KINDS
from cnntrace.layers.base import Imported, Refused, TorchCall
from cnntrace.losses import LOSSES
from cnntrace.naming import NAME
from cnntrace.problem import layer_outputs, parse_layers

#: Modules that change nothing in a pass (what an exported model keeps of a dropout).
PASS_THROUGH = ("Identity",)


def array(tensor) -> np.ndarray:
    """A torch tensor (or any array-like) as a float64 numpy array."""
    return np.asarray(plain(tensor), dtype=np.float64)


def read_by(name: str, attribute: str, read):
    """(kind, ``read(kind)``) for the first layer kind whose ``attribute`` ("TORCH",
    "TORCH_CALLS", "ONNX") lists ``name`` and that does not refuse it (AdaptiveAvgPool2d(1)
    is a global_avgpool, AdaptiveAvgPool2d(2) an adaptive_avgpool); the first refusal where
    every one refuses; None where no kind lists it."""
    refusals = []
    for kind in KINDS.values():
        if name in getattr(kind, attribute):
            try:
                return kind, read(kind)
            except Refused as refusal:
                refusals.append(refusal)
    if refusals:
        raise refusals[0]
    return None


def kind_reading(name: str, attribute: str):
    """The layer kind that reads torch module, function (or ONNX operator) ``name``
    (attribute "TORCH", "TORCH_CALLS" or "ONNX"), or None."""
    return next((kind for kind in KINDS.values() if name in getattr(kind, attribute)), None)


def _leaves(module, path: str = ""):
    """(path, module) of every layer of an nn.Sequential, nested ones flattened, in order."""
    name = type(module).__name__
    if name == "Sequential":
        for child_name, child in module.named_children():
            yield from _leaves(child, f"{path}.{child_name}" if path else child_name)
        return
    yield path or "0", module


def _loss_name(loss) -> str | dict | None:
    """A cnntrace loss (its name, or an object with its reduction) from a name or a torch.nn
    loss module."""
    if loss is None or isinstance(loss, (str, dict)):
        return loss
    name = type(loss).__name__
    for kind in LOSSES.values():
        if name in kind.TORCH:
            reduction = getattr(loss, "reduction", "mean")
            if reduction not in ("mean", "sum"):
                raise InputError(f"{name} with reduction {reduction!r}: cnntrace's losses are a mean or a sum",
                                 key="loss")  # fmt: skip
            if getattr(loss, "weight", None) is not None or getattr(loss, "pos_weight", None) is not None:
                raise InputError(f"{name} with class weights: cnntrace's losses weigh every class alike", key="loss")
            if getattr(loss, "label_smoothing", 0.0):
                raise InputError(f"{name} with label_smoothing {loss.label_smoothing}: give the smoothed Y instead",
                                 key="loss")  # fmt: skip
            return kind.type if reduction == "mean" else {"type": kind.type, "reduction": reduction}
    raise InputError(f"{name} is not one of cnntrace's losses ({', '.join(LOSSES)})", key="loss")


def input_dict(layers: list[Imported], X, target=None, *, loss: str | dict | None = None, given=None,
               lr: float = 0.1) -> dict:
    """An input dict (JSON-ready lists) from imported layers: the weights named W1, B1 …,
    mean2, var2 … as the network names them. A loss that goes with a last activation
    (cross-entropy with a softmax, bce with a sigmoid) gets it where the layers end without
    it: PyTorch's CrossEntropyLoss and BCEWithLogitsLoss apply it to the logits themselves."""
    loss_type = loss.get("type") if isinstance(loss, dict) else loss
    pairing = next((kind for kind in KINDS.values() if loss_type and kind.pairs_with == loss_type), None)
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
    torch_names = {}
    for layer, imported in zip(network.layers, layers):
        for name, value in zip((*layer.params, *layer.running), (*imported.weights, *imported.running)):
            data[name] = array(value).tolist()
        for torch_name, name, transposed in zip(imported.torch_names, layer.params,
                                                imported.transposed or (False,) * len(layer.params)):  # fmt: skip
            # cnntrace's own names (an ONNX model cnntrace wrote names its weights W1, B1) are
            # the trace's matrices in verify's answers, not PyTorch's.
            if torch_name and not NAME.fullmatch(torch_name):
                torch_names[torch_name] = name + ".T" * transposed
    data["lr"] = lr
    if torch_names:
        data["torch_names"] = torch_names
    return data


def _named(imported: Imported, path: str, has) -> Imported:
    """``imported`` with PyTorch's names of its weights: a module's are its weight and bias
    (a batch norm's γ and β), "" for one the module does not have (``has(attribute)``)."""
    names = tuple(f"{path}.{attribute}" if has(attribute) else "" for attribute in ("weight", "bias"))
    return imported._replace(torch_names=names[: len(imported.weights)])


def _has(module):
    """Whether ``module`` has a parameter called ``attribute`` (a bias=False conv has none)."""
    return lambda attribute: getattr(module, attribute, None) is not None


def _is_chain(module) -> bool:
    """Whether ``module`` is an nn.Sequential of leaves (nested ones too): read in order."""
    return type(module).__name__ == "Sequential" and all(
        _is_chain(child) or not any(True for _ in child.children()) for child in module.children()
    )


def append_layer(layers: list[Imported], imported: Imported, reading: str, previous: str) -> str:
    """Append ``imported``, reading ``reading`` (with ``input`` where that is not the previous
    layer's output), to ``layers``; the name cnntrace gives its output."""
    if reading != previous:
        description = imported.description
        description = {"type": description} if isinstance(description, str) else dict(description)
        imported = imported._replace(description={**description, "input": reading})
    layers.append(imported)
    try:
        return layer_outputs([layer.description for layer in layers])[-1]
    except InputError as error:
        raise Refused(str(error)) from None


def _operands(value, names: dict) -> tuple[list[str], list]:
    """(the cnntrace names of the traced values in an argument, lists flattened; the other
    positional values)."""
    found, constants = [], []
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, (list, tuple)):
            inner, rest = _operands(item, names)
            found += inner
            constants += rest
        elif hasattr(item, "op") and hasattr(item, "target"):  # an fx Node
            if item not in names:
                raise Refused(f"reads {item.name}, which is not a matrix of the network")
            found.append(names[item])
        else:
            constants.append(item)
    return found, constants


def traced_layers(module) -> list[Imported]:
    """The imported layers of a module whose forward is code (a residual block: ``out +=
    identity``, ``torch.cat``), from its torch.fx trace: each module or function call in the
    order it runs, reading the matrices it is given (``input`` and a merge's ``from``).
    InputError naming the module's path or the call."""
    fx = need("torch.fx", "from_torch")
    try:
        graph = fx.symbolic_trace(module).graph
    except Exception as error:  # fx's TraceError, and what a data-dependent forward raises
        raise InputError(f"{type(module).__name__}'s forward cannot be traced by torch.fx "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:120]})") from None  # fmt: skip
    modules = dict(module.named_modules())
    names: dict = {}  # fx node -> cnntrace's name of the matrix
    previous = "X"
    out: list[Imported] = []
    for node in graph.nodes:
        where = str(node.target) if node.op == "call_module" else node.name
        try:
            if node.op == "placeholder":
                if names:
                    raise Refused("a second input: cnntrace reads one (X)")
                names[node] = "X"
                continue
            if node.op == "output":
                if names.get(node.args[0]) != previous:
                    raise Refused("the module returns something other than its last layer's output")
                continue
            if node.op == "get_attr":
                raise Refused("reads a tensor the module keeps, outside a layer")
            args = [*node.args, *(v for v in node.kwargs.values() if isinstance(v, (list, tuple)))]
            operands, constants = _operands(args, names)
            options = {k: v for k, v in node.kwargs.items() if not isinstance(v, (list, tuple))}
            if not operands:
                raise Refused("computes from constants only")
            if node.op == "call_module":
                leaf = modules[node.target]
                name = type(leaf).__name__
                if name in PASS_THROUGH:
                    names[node] = operands[0]
                    continue
                found = read_by(name, "TORCH", lambda kind, leaf=leaf: kind.from_torch(leaf, array))
                if found is None:
                    raise Refused(f"{name} is not a layer kind cnntrace has")
            else:
                function = node.target if isinstance(node.target, str) else node.target.__name__
                call = TorchCall(function, tuple(operands[1:]), tuple(constants), options)
                found = read_by(function, "TORCH_CALLS", lambda kind, call=call: kind.from_torch_call(call))
                if found is None:
                    raise Refused(f"{function} is not a function cnntrace reads")
            kind, imported = found
            if len(operands) > 1 and not kind.merge:
                raise Refused(f"{kind.type} of {len(operands)} matrices ({', '.join(operands)}): it reads one")
            if node.op == "call_module":
                imported = _named(imported, str(node.target), _has(leaf))
            names[node] = previous = append_layer(out, imported, operands[0], previous)
        except Refused as refusal:
            raise InputError(f"{where}: {refusal}") from None
    if not out:
        raise InputError("the model has no layers")
    return out


def layers_of(module) -> list[Imported]:
    """The imported layers of an nn.Sequential, or of a module whose forward is code (read
    from its torch.fx trace); InputError naming the module path."""
    if not _is_chain(module):
        return traced_layers(module)
    out = []
    for path, leaf in _leaves(module):
        name = type(leaf).__name__
        if name in PASS_THROUGH:
            continue
        try:
            found = read_by(name, "TORCH", lambda kind, leaf=leaf: kind.from_torch(leaf, array))
        except Refused as refusal:
            raise InputError(f"{path}: {refusal}") from None
        if found is None:
            raise InputError(f"{path}: {name} is not a layer kind cnntrace has")
        out.append(_named(found[1], path, _has(leaf)))
    if not out:
        raise InputError("the model has no layers")
    return out


def from_torch(module, X, Y=None, *, loss=None, grad=None, lr: float = 0.1) -> dict:
    """The input dict (layers and weights) of torch ``module``, an nn.Sequential of the
    layer kinds cnntrace has or a module whose forward torch.fx traces (a ResNet block), on
    ``X`` (torch tensors, numpy arrays or lists), with target ``Y`` and ``loss`` (a cnntrace
    loss name or a torch.nn loss module: CrossEntropyLoss, BCEWithLogitsLoss, BCELoss,
    MSELoss, NLLLoss, a mean or a sum), or the given gradient ``grad`` of its output. Ready
    for ``cnntrace.trace_input`` or ``json.dump``. nn.Linear's out×in weight is transposed to
    cnntrace's n_in×n_out; a cross-entropy or BCE-with-logits loss appends the softmax or
    sigmoid PyTorch applies inside the loss; ``torch_names`` maps the parameters' names."""
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
        out.append(_named(imported._replace(description=description), module, tensors.__contains__))
    return out
