"""``export --to torch``: a standalone script (torch and numpy only) that builds a trace's
network as PyTorch modules with exactly its weights (float64), runs the forward pass, the
loss, ``backward()`` and one SGD step, and compares every matrix of the trace, embedded in the
script, with ``torch.testing.assert_close``: one line per matrix, exit status 1 on any
mismatch.

Each layer kind says how PyTorch writes it (Layer.torch_form), each loss its formula
(Loss.torch_expressions); this module only lays the script out.
"""

from __future__ import annotations

import numpy as np

from cnntrace import __version__
from cnntrace.errors import InputError
from cnntrace.naming import grad

#: torch.testing.assert_close's own tolerances for float64.
RTOL, ATOL = 1e-7, 1e-7

_PREAMBLE = '''\
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.set_default_dtype(torch.float64)
RTOL, ATOL = {rtol!r}, {atol!r}  # torch.testing.assert_close's float64 tolerances


def array(values, shape):
    return np.array(values, dtype=np.float64).reshape(shape)


class Apply(nn.Module):
    """A function as a module (a flatten in another order, ReLU'(0) = 1, a given dropout mask)."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


class FlippedConv2d(nn.Conv2d):
    """A true convolution: the kernel rotated 180 degrees, then cross-correlated."""

    def forward(self, x):
        return self._conv_forward(x, self.weight.flip(-1, -2), self.bias)


def elementwise(module, x):
    """d module(x)/dx of an element-wise function, entry by entry, from autograd."""
    x = x.detach().requires_grad_(True)
    y = module(x)
    return torch.autograd.grad(y, x, torch.ones_like(y))[0]


def jacobian(module, x):
    """Each image's Jacobian d module(x)/dx, (M, n, n): row j is the gradient of y[:, j]."""
    x = x.detach().requires_grad_(True)
    y = module(x)
    rows = [torch.autograd.grad(y[:, j].sum(), x, retain_graph=True)[0] for j in range(y.shape[1])]
    return torch.stack(rows, dim=1)
'''

_BODY = '''
model = nn.ModuleList(module for module, _ in LAYERS)
with torch.no_grad():
    for index, name, attribute, transposed in PARAMS:
        value = torch.tensor(WEIGHTS[name])
        target = getattr(model[index], attribute)
        assert target.shape == (value.T if transposed else value).shape, name
        target.copy_(value.T if transposed else value)
    for index, name, attribute in BUFFERS:
        getattr(model[index], attribute).copy_(torch.tensor(WEIGHTS[name]))

# Forward, keeping every matrix under the trace's name.
for index, module in enumerate(model):
    module.train(TRAINING[index])
x = torch.tensor(X, requires_grad=True)
Y = torch.tensor(TARGET)
values, paths = forward(model, x)
for module, name in LAYERS:
    values[name].retain_grad()
A, Z = values[OUTPUT], values[LOGITS]
L = loss(A, Z, Y)
values["L"] = L

# Backward: autograd from L to every layer's output, to X and to every weight.
L.backward(retain_graph=True)
values["dL_dX"] = x.grad.clone()
for module, name in LAYERS:
    if values[name].grad is not None:
        values["dL_d" + name] = values[name].grad.clone()
# Where a matrix feeds several layers, the gradient each of them sends back along its path.
for name, operand in paths.items():
    if operand.grad is not None:
        values[name] = operand.grad.clone()
for index, name, attribute, transposed in PARAMS:
    gradient = getattr(model[index], attribute).grad.clone()
    values["dL_d" + name] = gradient.T if transposed else gradient
for index, name, attribute in BUFFERS:
    values[name] = getattr(model[index], attribute).clone()
# Where the loss is computed from the logits (it fuses with the last activation), autograd
# passes by the output: dL/d(output) from L as a function of the output alone.
values[{output_grad!r}] = torch.autograd.grad(loss_of_output(A, Y), A, retain_graph=True)[0]
# The local derivatives and the other stages the trace shows, from the trace's own input to
# the layer and gradient of its output (at a kink, ReLU's 0, a last-bit difference in Z
# would flip the derivative).
for name, (index, given, upstream, expression) in SHOWN.items():
    x_in = torch.tensor(X if given == "X" else EXPECTED[given])
    dy = torch.tensor(EXPECTED[upstream]) if upstream in EXPECTED else None
    values[name] = expression(x_in, dy, model[index])

# One step of plain SGD.
torch.optim.SGD(model.parameters(), lr=LR).step()
for index, name, attribute, transposed in PARAMS:
    value = getattr(model[index], attribute).detach()
    values[name] = value.T if transposed else value

failed = 0
for name, expected in EXPECTED.items():
    expected = torch.tensor(expected)
    actual = values.get(name)
    try:
        if actual is None:
            raise AssertionError("PyTorch has no such matrix")
        actual = actual.detach()
        if actual.numel() != expected.numel():
            raise AssertionError(f"PyTorch's is shaped {{tuple(actual.shape)}}")
        actual = actual.reshape(expected.shape)
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
        verdict, detail = "ok", f"max |difference| {{(actual - expected).abs().max().item() if expected.numel() else 0:.2e}}"
    except AssertionError as error:
        failed += 1
        verdict, detail = "MISMATCH", " ".join(str(error).split())
    print(f"{{verdict:<9}} {{name:<12}} {{detail}}")
print(f"{{len(EXPECTED) - failed}} of {{len(EXPECTED)}} matrices agree with PyTorch (rtol {{RTOL}}, atol {{ATOL}})")
sys.exit(1 if failed else 0)
'''


def literal(values, per_line: int = 8) -> str:
    """A numpy array as the script's ``array([...], shape)``, every float at full precision
    (Python's repr round-trips)."""
    values = np.asarray(values, dtype=np.float64)
    numbers = [repr(float(v)) if np.isfinite(v) else f'float("{v}")' for v in values.ravel()]
    if len(numbers) <= per_line:
        body = ", ".join(numbers)
    else:
        rows = [", ".join(numbers[i:i + per_line]) for i in range(0, len(numbers), per_line)]
        body = "\n    " + ",\n    ".join(rows) + ",\n"
    return f"array([{body}], {tuple(values.shape)!r})"


def _dictionary(name: str, arrays: dict) -> str:
    lines = [f"{name} = {{"]
    lines += [f"    {key!r}: {literal(value)}," for key, value in arrays.items()]
    return "\n".join(lines + ["}"])


def forward_source(network) -> str:
    """The script's ``forward``: the network's pass in the trace's order, one line per layer,
    each matrix under the trace's name. Each layer reads its operands through a view of its
    own, so that where a matrix feeds several layers (a skip connection) autograd keeps the
    gradient each path sends back (dL_dX_via_S4) beside their sum (dL_dX)."""
    lines = [
        "def forward(model, X):",
        '    """The pass: {name: matrix}, and {path: the operand one layer read} for each path\'s gradient."""',
        '    values, paths = {"X": X}, {}',
        "",
        "    def operand(name, reader):",
        "        view = values[name].view_as(values[name])",
        "        view.retain_grad()",
        "        paths[f\"dL_d{name}_via_{reader}\"] = view",
        "        return view",
        "",
    ]
    for index, layer in enumerate(network.layers):
        operands = ", ".join(f"operand({q!r}, {layer.output!r})" for q in (layer.input, *layer.reads))
        lines.append(f"    values[{layer.output!r}] = model[{index}]({operands})  # {layer.describe()}")
    return "\n".join([*lines, "    return values, paths"])


def repro_script(trace, source: str) -> str:
    """The script that rebuilds ``trace``'s network in PyTorch and checks every one of its
    matrices; ``source`` names the input in the script's docstring. InputError naming the
    layer that PyTorch cannot write."""
    problem = trace.problem
    network = problem.network
    t = trace.general_pass()
    forms = [layer.torch_form(t) for layer in network.layers]
    loss = network.loss
    if not loss.TORCH_VALUE:
        raise InputError(f"{loss.describe()} has no PyTorch form", key="loss")
    loss_value, loss_of_output = loss.torch_expressions()

    expected = {}
    for stage in trace.stages:
        value = np.asarray(trace[stage.name], dtype=np.float64)
        if stage.section == "update":
            value = value.reshape(t.weights[stage.name].shape)
        else:
            value = value.reshape(t.value(stage.name).shape)
        expected[stage.name] = value

    inputs = {name: t.weights[name] for name in t.weights}
    constants = {name: value for form in forms for name, value in form.constants}
    layers = "\n".join(f"    ({form.module}, {layer.output!r}),  # {layer.describe()}"
                       for layer, form in zip(network.layers, forms))  # fmt: skip
    params = [(i, *param) for i, form in enumerate(forms) for param in form.params]
    buffers = [(i, *buffer) for i, form in enumerate(forms) for buffer in form.buffers]
    shown = [f"    {name!r}: ({i}, {layer.input!r}, {grad(layer.output)!r}, lambda x, dy, module: {expression}),"
             for i, (layer, form) in enumerate(zip(network.layers, forms))
             for name, expression in form.shown if name in expected]  # fmt: skip
    loss = network.loss
    parts = [
        "#!/usr/bin/env python3",
        f'"""{source}, rebuilt in PyTorch: the forward pass, the loss, backward() and one SGD step, each',
        "matrix of cnntrace's trace (below, at full precision) checked against PyTorch's.",
        "",
        f"Written by cnntrace {__version__} (its export to PyTorch). Needs only torch and numpy;",
        'one line per matrix, exit status 1 when any differs."""',
        "",
        _PREAMBLE.format(rtol=RTOL, atol=ATOL),
        *dict.fromkeys(form.helpers for form in forms if form.helpers),
        "",
        "# -- the input: X, the target, the weights (cnntrace's layouts), the learning rate ------",
        "",
        f"X = {literal(problem.general_X())}",
        f"TARGET = {literal(problem.general_target)}  # {problem.target_key}, on the output's shape",
        f"LR = {float(problem.lr)!r}",
        _dictionary("WEIGHTS", inputs),
        _dictionary("CONSTANTS", constants),
        "CONSTANTS = {name: torch.tensor(value) for name, value in CONSTANTS.items()}",
        "",
        "# -- the network: each layer's module and the name of its output -------------------",
        "",
        f"LAYERS = [\n{layers}\n]",
        f"TRAINING = {[form.training for form in forms]!r}",
        "# (layer, weight, the module's attribute, transposed: nn.Linear keeps W as out×in)",
        f"PARAMS = {params!r}",
        f"OUTPUT, LOGITS = {network.output!r}, {network.layers[-1].input!r}  # A and the last layer's input Z",
        f"BUFFERS = {buffers!r}",
        "# the trace's other matrices, from the trace's input x to a layer, the gradient dy of its",
        "# output, and its module",
        "SHOWN = {" + ("\n" + "\n".join(shown) + "\n" if shown else "") + "}",
        "",
        "",
        forward_source(network),
        "",
        "",
        "def loss(A, Z, Y):",
        f'    """{loss.type}: L from the output A (or the logits Z, where the loss fuses with it)."""',
        f"    return {loss_value}",
        "",
        "",
        "def loss_of_output(A, Y):",
        f"    return {loss_of_output}",
        "",
        "",
        "# -- cnntrace's trace ------------------------------------------------------------",
        "",
        _dictionary("EXPECTED", expected),
        _BODY.format(output_grad=grad(network.output)),
    ]
    return "\n".join(parts)
