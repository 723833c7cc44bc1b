"""Fixtures the test modules share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def torch():
    """PyTorch on one thread (these tensors have tens of entries: its thread pool costs far more
    than the work), skipped where the optional extra is not installed; the thread count and
    the default dtype (the generated scripts set float64) restored after the module."""
    torch = pytest.importorskip("torch", reason="torch is an optional extra: pip install '.[torch]'")
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
