"""cnntrace: backpropagation through a small CNN, step by step, with every number shown.

>>> import cnntrace
>>> t = cnntrace.trace(X, Y, W1, B1, W2, B2)   # doctest: +SKIP
>>> t["dL_dW1"]                                 # doctest: +SKIP

The names are loaded on first use, so ``import cnntrace`` (and the CLI's --help and
--version) stays free of numpy.
"""

__version__ = "0.1.0"

__all__ = ["Trace", "trace", "trace_input", "from_torch", "run", "Problem", "CnntraceError", "InputError", "NumericError"]

_LAZY = {
    "Trace": "cnntrace.tracer",
    "trace": "cnntrace.api",
    "trace_input": "cnntrace.api",
    "from_torch": "cnntrace.api",
    "run": "cnntrace.tracer",
    "Problem": "cnntrace.problem",
    "CnntraceError": "cnntrace.errors",
    "InputError": "cnntrace.errors",
    "NumericError": "cnntrace.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        if _LAZY[name] in ("cnntrace.api", "cnntrace.tracer"):
            importlib.import_module("cnntrace.notebook")  # how a trace shows itself in a notebook
        return value
    raise AttributeError(f"module 'cnntrace' has no attribute {name!r}")
