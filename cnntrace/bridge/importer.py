"""``import``: an input file from an ONNX model, or from a PyTorch state_dict (.pt/.pth read
with ``torch.load(weights_only=True)``, or .safetensors) poured into a file's layers; X from
a file (.npy, .npz, JSON, an image) or drawn from a seed, Y or the given gradient from a file
or a JSON value."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from cnntrace.bridge import need
from cnntrace.bridge.onnx_io import read_model
from cnntrace.bridge.torch_in import from_state_dict, input_dict
from cnntrace.errors import ArgumentError, InputError
from cnntrace.io import image_to_X, problem_from_dict, read_file, read_input

STATE_DICTS = (".pt", ".pth", ".safetensors")
IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff")


#: A module's tensors in the order its kind's weights take them.
_ATTRIBUTES = ("weight", "bias", "running_mean", "running_var")


def _module_order(key: str) -> tuple:
    """A state_dict key's place in the modules' order: "10.weight" after "3.bias"."""
    module, _, attribute = key.rpartition(".")
    path = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in module.split("."))
    return path, _ATTRIBUTES.index(attribute) if attribute in _ATTRIBUTES else len(_ATTRIBUTES)


def read_state_dict(path: Path) -> dict:
    """The tensors of a state_dict file, in their order, as float64 arrays."""
    if path.suffix == ".safetensors":
        need("safetensors", "a .safetensors state_dict")
        from safetensors.numpy import load

        data = read_file(path)  # bounded, whatever the file is (a device, a FIFO)
        try:
            tensors = load(data)
        except Exception as error:  # safetensors' own SafetensorError and others
            raise InputError(f"is not a safetensors file that can be read ({error})", file=str(path)) from None
        # safetensors keeps its keys sorted as text ("10.weight" before "3.weight"): the
        # modules' order is their paths' numbers; names (conv1, bn1) give no order.
        ordered = sorted(tensors, key=_module_order)
        modules = list(dict.fromkeys(key.rpartition(".")[0] for key in ordered))
        for first, second in zip(modules, modules[1:]):
            split = next(((a, b) for a, b in zip(first.split("."), second.split(".")) if a != b), None)
            if split is not None and not (split[0].isdigit() and split[1].isdigit()):
                raise InputError(f"keeps its tensors sorted by name, not in the modules' order: {first} and {second} "
                                 "cannot be put in order (save the state_dict with torch.save, .pt)",
                                 file=str(path))  # fmt: skip
        return {key: tensors[key] for key in ordered}
    torch = need("torch", "a .pt or .pth state_dict")
    data = read_file(path)  # bounded, whatever the file is (a device, a FIFO)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # no pickle of code
    except Exception as error:  # torch's UnpicklingError for anything but tensors, and others
        raise InputError(f"is not a state_dict torch.load(weights_only=True) reads ({type(error).__name__})",
                         file=str(path)) from None  # fmt: skip
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise InputError("holds no state_dict (a dict of tensors)", file=str(path))
    return state


def _array_file(path: Path, key: str, shape: tuple | None):
    """X (or Y, grad) from .npy, .npz (its ``key`` or its one array), JSON (a list, or an
    object with ``key``) or an image (resized to ``shape``'s last two axes)."""
    suffix = path.suffix.lower()
    if suffix in IMAGES:
        if shape is None or len(shape) < 3:
            raise ArgumentError("an image is X for a model whose input is maps", key="input")
        X = image_to_X(path, tuple(shape[-2:]))
        return X.reshape((1,) * (len(shape) - 2) + X.shape)
    if suffix == ".npy":
        data = read_file(path)  # bounded, whatever the file is (a device, a FIFO)
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"is not a .npy array numpy can read ({error})", file=str(path)) from None
    data = read_input(path) if suffix in (".npz", ".json") else None
    if data is None:
        raise InputError("is not .npy, .npz, JSON or an image", file=str(path))
    if isinstance(data, dict):
        if key in data:
            return data[key]
        if len(data) == 1:
            return next(iter(data.values()))
        raise InputError(f"has no {key}", key=key, file=str(path))
    return data


def _value(text: str | None, key: str, shape=None):
    """A value given on the command line: a file, or JSON (3, [0, 1])."""
    if text is None:
        return None
    path = Path(text)
    try:
        exists = path.exists()
    except OSError:  # a JSON value longer than a file's name can be
        exists = False
    if path.suffix and (exists or path.suffix.lower() in (".npy", ".npz", ".json", *IMAGES)):
        return _array_file(path, key, shape)
    try:
        return json.loads(text)
    except ValueError:
        message = f"expected a file or a JSON value, got {text!r}"
        if key == "grad":
            raise ArgumentError(message, key="grad") from None
        raise ArgumentError(message, key="Y") from None


def import_input(model: Path, *, layers_file: Path | None = None, input_file: Path | None = None,
                 target: str | None = None, given: str | None = None, loss: str | None = None,
                 seed: int = 0, lr: float | None = None) -> dict:
    """The input dict of ``model`` (an ONNX model, or a state_dict with ``layers_file``),
    checked by reading it back as cnntrace reads an input file."""
    if target is not None and given is not None:
        raise ArgumentError("give a target (with a loss) or a gradient, not both", key="grad")
    net = {}
    if model.suffix.lower() in STATE_DICTS:
        if layers_file is None:
            raise ArgumentError("a state_dict holds tensors, not the network: give the file of the layers they fill",
                                key="layers")  # fmt: skip
        net = read_input(layers_file)
        if "layers" not in net:
            raise InputError("missing: the layers the state_dict's tensors fill", key="layers", file=str(layers_file))
        layers = from_state_dict(read_state_dict(model), net["layers"], file=str(layers_file))
        shape = np.shape(net["X"]) if "X" in net else None
    elif model.suffix.lower() == ".onnx":
        if layers_file is not None:
            raise ArgumentError("goes with a state_dict; an ONNX model holds its network", key="layers")
        layers, shape = read_model(str(model))
    else:
        raise InputError("is neither an ONNX model (.onnx) nor a state_dict (.pt, .pth, .safetensors)", file=str(model))
    if input_file is not None:
        X = np.asarray(_array_file(input_file, "X", shape), dtype=np.float64)
        if shape is not None and X.ndim < len(shape) and X.size == np.prod(shape[1:]):
            X = X.reshape(shape[1:])  # one image, its channel axis as the model has it
    elif "X" in net:
        X = net["X"]
    elif shape is not None:
        X = np.round(np.random.default_rng(seed).normal(size=shape), 4)
        if X.shape[0] == 1:  # one image: no batch axis, so that Y is one label
            X = X[0]
    else:
        raise ArgumentError("a state_dict does not say the input's shape: give X", key="input")
    Y, grad = _value(target, "Y"), _value(given, "grad")
    if Y is None and grad is None:
        Y, grad = net.get("Y"), net.get("grad")
    if Y is None and grad is None:
        raise ArgumentError("missing: give the target (and {loss}), or the gradient {grad}", key="Y",
                            mentions=("loss", "grad"))  # fmt: skip
    loss = loss or net.get("loss")
    data = input_dict(layers, X, Y, loss=loss, given=grad, lr=lr if lr is not None else net.get("lr", 0.1))
    problem_from_dict(data)  # the file cnntrace will read: refused now, before it is written
    return data
