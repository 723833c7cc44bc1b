"""The Python functions the README documents: trace the reference network from its arrays,
or any input as a dict, the way an input file writes it."""

from __future__ import annotations

from cnntrace.io import problem_from_dict
from cnntrace.reference import reference_problem
from cnntrace.tracer import Trace, run

__all__ = ["Trace", "from_torch", "run", "trace", "trace_input"]


def trace(X, Y, W1, B1, W2, B2, *, stride=1, padding=0, pool=2, pool_stride=None, lr=0.1) -> Trace:
    """Run the reference network on these inputs and return every matrix of the pass.

    X: an H×W image or an M×H×W batch; Y: its label(s) in [0, 1]; W1: a kh×kw filter or
    K×kh×kw filters; B1: one bias per filter; W2: one weight per entry of F; B2: a number.
    Lists and numpy arrays both work. Raises InputError for values that don't fit and
    NumericError when a stage overflows float64. For any other network, see ``trace_input``.
    """
    problem = reference_problem(
        X, Y, W1, B1, W2, B2,
        stride=stride, padding=padding, pool=pool, pool_stride=pool_stride, lr=lr,
    )  # fmt: skip
    return run(problem)


def trace_input(data: dict) -> Trace:
    """Trace a whole input as a dict, the way an input file writes it: ``{"X": …, "Y": …,
    "layers": [...], "W1": …}`` (or the reference form without ``layers``)."""
    return run(problem_from_dict(data))


def from_torch(module, X, Y=None, *, loss=None, grad=None) -> dict:
    """The input dict (layers and weights) of a PyTorch ``module``, an nn.Sequential of the
    layer kinds cnntrace has or a module whose forward torch.fx traces (a residual block), on
    ``X`` with target ``Y`` and ``loss`` (a cnntrace loss name or a torch.nn loss module), or
    the given gradient ``grad``: ready for ``trace_input`` or ``json.dump``; its
    ``torch_names`` map PyTorch's parameter names to the weights. Needs torch (pip install
    'cnntrace[torch]')."""
    from cnntrace.bridge.torch_in import from_torch as read  # lazy: torch is an optional extra

    return read(module, X, Y, loss=loss, grad=grad)
