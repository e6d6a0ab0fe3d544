"""Test fixtures (a pytest plug-in of the root conftest): a host stand-in for CUDA graph capture,
and a check for operators that would wait for the host on a GPU (which a CUDA graph cannot hold)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


def replay_on_host(forward: Callable[..., Any], inputs: tuple, static: dict, pool: Any):
    """A capture with a CUDA graph's buffer semantics, on the host: the work is recorded on fixed
    input buffers; a replay reruns it on whatever those buffers hold and overwrites the same output
    buffers. A caller that forgot to copy its inputs in, or kept an output without copying it out,
    gets wrong answers from it just as from a CUDA graph."""
    outputs = tuple(forward(inputs, **static))

    def replay() -> None:
        for buffer, fresh in zip(outputs, forward(inputs, **static), strict=True):
            buffer.copy_(fresh)

    return replay, outputs, "host-pool"


@pytest.fixture
def host_capture() -> Callable[..., Any]:
    return replay_on_host


_aten = torch.ops.aten
#: Operators whose result the host must wait for on a GPU (a value, or a data-dependent size).
_WAITING = {getattr(_aten, name).default for name in
            ("nonzero", "_local_scalar_dense", "masked_select", "is_nonzero", "equal", "item")
            if hasattr(_aten, name)}
_INDEXING = {_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default}


class HostWaits(TorchDispatchMode):
    """Records every operator run inside it that would wait for the host on a GPU: the ones above,
    and indexing with a boolean mask (turned into ``nonzero``)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        indices = [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
        if func in _WAITING or (func in _INDEXING and any(t.dtype == torch.bool for t in indices)):
            self.found.append(str(func))
        return func(*args, **kwargs)


@pytest.fixture
def host_waits() -> Callable[[], HostWaits]:
    return HostWaits
