"""ONNX and cnntrace: ``import`` reads a model's graph and initializers (the onnx package
parses the file; no pickle, no code run) into layers and weights; ``export --to onnx`` writes
a trace's network as a model with its weights.

Each layer kind reads its own operators (Layer.ONNX, from_onnx) and writes its own nodes
(onnx_nodes). This module walks the graph: a chain from the input to the output, constants
resolved, MatMul with the Add after it read as one Gemm, Identity passed over; a node no kind
reads, or an attribute it cannot express, is one line naming the node.
"""

from __future__ import annotations

import numpy as np

from cnntrace.bridge import need
from cnntrace.bridge.torch_in import kind_reading
from cnntrace.errors import InputError
from cnntrace.io import read_file
from cnntrace.layers.base import Imported, OnnxNode, Refused

#: Operators that pass their input on unchanged.
PASS_THROUGH = ("Identity",)
#: The opset export writes (BatchNormalization's training_mode needs 14).
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


def read_model(path: str) -> tuple[list[Imported], tuple]:
    """(layers, the input's shape) of the ONNX model at ``path``; InputError naming the node
    cnntrace cannot express, or the file."""
    onnx = need("onnx", "import of an ONNX model")
    from onnx import numpy_helper

    data = read_file(path)  # bounded, whatever the file is (a device, a FIFO)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # the parser's own errors: protobuf's DecodeError and others
        raise InputError(f"is not an ONNX model that onnx can read ({type(error).__name__})", file=path) from None
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer}
    current, shape = _input_shape(graph, constants)
    nodes = list(graph.node)
    layers: list[Imported] = []
    i = 0
    while i < len(nodes):
        node = nodes[i]
        name = node.name or f"node {i} ({node.op_type})"
        attributes = _attributes(node, onnx)
        i += 1
        try:
            if node.op_type == "Constant":
                constants[node.output[0]] = numpy_helper.to_array(attributes["value"]).astype(np.float64)
                continue
            dynamic = [x for x in node.input if x and x not in constants]
            if node.op_type in ("Add", "Concat", "Sum") and len(dynamic) > 1:
                raise Refused(f"{node.op_type} of two branches (a skip connection): not read before "
                              "cnntrace has skip connections")  # fmt: skip
            if dynamic != [current] or node.input[0] != current:
                raise Refused(f"{node.op_type} that does not continue the chain from the input "
                              f"(it reads {', '.join(dynamic) or 'only constants'})")  # fmt: skip
            op, inputs = node.op_type, [constants.get(x) if x else None for x in node.input[1:]]
            output = node.output[0]
            if op == "MatMul":
                # MatMul, and the Add of a bias after it, are one dense layer: a Gemm.
                following = nodes[i] if i < len(nodes) else None
                bias = None
                if following is not None and following.op_type == "Add" and output in following.input:
                    other = [x for x in following.input if x != output]
                    if len(other) == 1 and other[0] in constants:
                        bias, output, i = constants[other[0]], following.output[0], i + 1
                op, inputs = "Gemm", [*inputs, bias] if bias is not None else inputs
            current = output
            if op in PASS_THROUGH:
                continue
            kind = kind_reading(op, "ONNX")
            if kind is None:
                raise Refused(f"{op} is not an operator cnntrace reads")
            layers.append(kind.from_onnx(OnnxNode(name, op, attributes, tuple(inputs))))
        except Refused as refusal:
            raise InputError(f"{name}: {refusal}", file=path) from None
    if current not in {output.name for output in graph.output}:
        raise InputError(f"the chain from the input ends at {current}, not at the graph's output", file=path)
    if not layers:
        raise InputError("the model has no layers", file=path)
    return layers, shape


def onnx_bytes(trace, source: str) -> bytes:
    """The ONNX model (opset 17, float64) of ``trace``'s network with its weights before the
    update: X in, the last layer's output out (the loss stays with cnntrace)."""
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
    model = helper.make_model(graph, producer_name="cnntrace", opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model.SerializeToString()
