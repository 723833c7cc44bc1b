"""ONNX and cnntrace: ``import`` reads a model's graph and initializers (the onnx package
parses the file; no pickle, no code run) into layers and weights; ``export --to onnx`` writes
a trace's network as a model with its weights.

Each layer kind reads its own operators (Layer.ONNX, from_onnx) and writes its own nodes
(onnx_nodes). This module walks the graph from its input to its output, skip connections
(Add, Concat) too: constants resolved, MatMul with the Add after it read as one Gemm,
Identity passed over, a chain of elementwise nodes a kind declares read as its one layer
(Layer.ONNX_CHAINS: SiLU as x·Sigmoid(x), GELU written with Erf before opset 20); a node no kind reads, or an attribute it cannot express, is one line
naming the node.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from cnntrace.bridge import need
from cnntrace.bridge.torch_in import append_layer, kind_reading
from cnntrace.errors import InputError, shown
from cnntrace.io import read_file
from cnntrace.layers import KINDS
from cnntrace.layers.base import Imported, OnnxNode, Refused

#: Operators that pass their input on unchanged.
PASS_THROUGH = ("Identity",)
#: The opset export writes (BatchNormalization's training_mode needs 14), or the newer one a
#: layer's nodes need (Layer.ONNX_OPSET).
OPSET = 17


def _attributes(node, onnx) -> dict:
    out = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        out[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _input_shape(graph, initializers) -> tuple[str, tuple]:
    """(name, shape) of the graph's one input that is not a weight; a symbolic batch is 1."""
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise InputError(f"the graph has {len(inputs)} inputs besides its weights; cnntrace reads one (X)")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    return inputs[0].name, shape


def _named(imported: Imported, weight_names: list[str], constants: dict, stored: set) -> Imported:
    """``imported`` with its weights' initializer names (PyTorch's parameter names, in a
    model torch.onnx.export wrote), each only where the weight is that initializer's values
    as they are (or transposed, where ``imported.transposed`` says): a Gemm's alpha, a bias
    broadcast, a zero bias filled in keep none."""
    flags = imported.transposed or (False,) * len(imported.weights)
    names = []
    for weight, stored_name, transposed in zip(imported.weights, weight_names, flags):
        value = constants.get(stored_name) if stored_name in stored else None
        same = value is not None and np.array_equal(value.T if transposed else value, weight)
        names.append(stored_name if same else "")
    return imported._replace(torch_names=tuple(names))


def _constant(node, onnx, numpy_helper) -> np.ndarray:
    """A Constant node's value, float64."""
    return numpy_helper.to_array(_attributes(node, onnx)["value"]).astype(np.float64)


def _chain(nodes: list, start: int, constants: dict, readers: Counter, constant_value):
    """(kind, the chain's input, its output, the index after its last node) where
    ``nodes[start:]`` begin a chain of elementwise nodes a kind reads as one layer
    (Layer.ONNX_CHAINS), Constant nodes between them read into ``constants`` (by
    ``constant_value(node)``); else None."""
    x = nodes[start].input[0] if nodes[start].input else None
    for kind in KINDS.values():
        for steps in kind.ONNX_CHAINS:
            found, previous, at = {}, x, start
            for offset, (op, operand) in enumerate(steps):
                while at < len(nodes) and nodes[at].op_type == "Constant" and offset:
                    found[nodes[at].output[0]] = constant_value(nodes[at])
                    at += 1
                node = nodes[at] if at < len(nodes) else None
                if node is None or node.op_type != op or previous not in node.input or (offset and readers[previous] != 1):
                    break
                others = list(node.input)
                others.remove(previous)
                if operand is None:
                    matched = not others
                elif operand == "x":
                    matched = others == [x]
                else:  # the one other input, a constant of that one value (Div's divisor)
                    value = found.get(others[0], constants.get(others[0])) if len(others) == 1 else None
                    matched = (value is not None and value.size == 1 and (op != "Div" or node.input[0] == previous)
                               and math.isclose(float(value.flat[0]), operand, rel_tol=1e-6))  # fmt: skip
                if not matched:
                    break
                previous, at = node.output[0], at + 1
            else:
                constants.update(found)
                return kind, x, previous, at
    return None


def read_model(path: str) -> tuple[list[Imported], tuple]:
    """(layers, the input's shape) of the ONNX model at ``path``; InputError naming the node
    cnntrace cannot express, or the file.

    The nodes run in the graph's order (ONNX keeps them sorted so): each becomes a layer
    reading the matrix its first input names, under cnntrace's name for it ("X", "Z4"); a
    layer that does not read the previous layer's output gets ``input``, and a merge (Add,
    Concat) the other matrices it reads as its ``from``."""
    onnx = need("onnx", "import of an ONNX model")
    from onnx import numpy_helper

    data = read_file(path)  # bounded, whatever the file is (a device, a FIFO)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # the parser's own errors: protobuf's DecodeError and others
        raise InputError(f"is not an ONNX model that onnx can read ({type(error).__name__})", file=path) from None
    graph = model.graph
    for init in graph.initializer:  # read from the one file only: another path is not followed
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise InputError(f"{shown(init.name)}: its values are in an external data file, which import does not "
                             "read; save the model with its weights inside (onnx.save, save_as_external_data=False)",
                             file=path)  # fmt: skip
    constants = {init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer}
    stored = set(constants)  # the initializers: a model from PyTorch names them as its parameters
    first_input, shape = _input_shape(graph, constants)
    names = {first_input: "X"}  # ONNX's name of a tensor -> cnntrace's name of the matrix
    previous = "X"  # the last layer's output: what a layer reads unless it says otherwise
    nodes = list(graph.node)
    readers = Counter(x for node in nodes for x in node.input)  # how many nodes read each tensor
    layers: list[Imported] = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        name = node.name or f"node {i} ({node.op_type})"
        attributes = _attributes(node, onnx)
        i += 1
        try:
            if node.op_type == "Constant":
                constants[node.output[0]] = _constant(node, onnx, numpy_helper)
                continue
            dynamic = [x for x in node.input if x and x not in constants]
            unknown = [x for x in dynamic if x not in names]
            if unknown or not dynamic:
                raise Refused(f"{node.op_type} that reads {', '.join(unknown) or 'only constants'}, which no layer "
                              "before it makes (cnntrace reads the graph from its one input)")  # fmt: skip
            if node.input[0] not in names:
                raise Refused(f"{node.op_type} whose first input is a constant")
            op, inputs = node.op_type, [constants.get(x) if x else None for x in node.input[1:]]
            weight_names = list(node.input[1:])
            sources = tuple(names[x] for x in node.input[1:] if x in names)
            output = node.output[0]
            if op == "MatMul" and not sources:
                # MatMul, and the Add of a bias after it, are one dense layer: a Gemm.
                following = nodes[i] if i < len(nodes) else None
                bias = None
                if following is not None and following.op_type == "Add" and output in following.input:
                    other = [x for x in following.input if x != output]
                    if len(other) == 1 and other[0] in constants:
                        bias, output, i = constants[other[0]], following.output[0], i + 1
                        weight_names.append(other[0])
                op, inputs = "Gemm", [*inputs, bias] if bias is not None else inputs
            if op in PASS_THROUGH:
                names[output] = names[node.input[0]]
                continue
            chain = _chain(nodes, i - 1, constants, readers, lambda node: _constant(node, onnx, numpy_helper))
            if chain is not None:  # elementwise nodes that make one layer (GELU before opset 20)
                kind, x, output, i = chain
                imported = kind.from_onnx(OnnxNode(name, op, {}, (), ()))
                previous = names[output] = append_layer(layers, imported, names[x], previous)
                continue
            kind = kind_reading(op, "ONNX")
            if kind is None:
                raise Refused(f"{op} is not an operator cnntrace reads")
            if sources and not kind.merge:
                raise Refused(f"{op} of {len(sources) + 1} matrices ({names[node.input[0]]}, {', '.join(sources)}): "
                              "cnntrace's layer reads one and weights that are constants")  # fmt: skip
            imported = kind.from_onnx(OnnxNode(name, op, attributes, tuple(inputs), sources))
            imported = _named(imported, weight_names, constants, stored)
            previous = names[output] = append_layer(layers, imported, names[node.input[0]], previous)
        except Refused as refusal:
            raise InputError(f"{name}: {refusal}", file=path) from None
    ends = [names.get(output.name) for output in graph.output]
    if previous not in ends:
        raise InputError(f"the graph's last layer makes {previous}, not the graph's output", file=path)
    if not layers:
        raise InputError("the model has no layers", file=path)
    return layers, shape


def onnx_bytes(trace, source: str) -> bytes:
    """The ONNX model (opset 17, or newer where a layer needs it; float64) of ``trace``'s
    network with its weights before the update: X in, the last layer's output out (the loss
    stays with cnntrace)."""
    onnx = need("onnx", "an export to ONNX")
    from onnx import TensorProto, helper, numpy_helper

    problem = trace.problem
    t = trace.general_pass()
    nodes, initializers = [], {}
    for layer in problem.network.layers:
        made, weights = layer.onnx_nodes(t, layer.input, layer.output)
        for op, inputs, outputs, attributes in made:
            nodes.append(helper.make_node(op, inputs, outputs, name=f"{layer.place.key()} {layer.output}", **attributes))
        initializers.update(weights)
    X = problem.general_X()
    output = problem.network.output
    shape = (X.shape[0], *problem.layouts[output].shape) if output != "X" else X.shape
    graph = helper.make_graph(
        nodes, f"cnntrace: {source}",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["M", *X.shape[1:]])],
        [helper.make_tensor_value_info(output, TensorProto.DOUBLE, ["M", *shape[1:]])],
        [numpy_helper.from_array(np.asarray(value, dtype=np.float64), name) for name, value in initializers.items()],
    )  # fmt: skip
    opset = max(OPSET, *(layer.ONNX_OPSET for layer in problem.network.layers))
    model = helper.make_model(graph, producer_name="cnntrace", opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model.SerializeToString()
