"""A decoder forward replayed from CUDA graphs, one graph per input shape.

Why: on a GPU a SAM-family decoder forward is bound by launching its operators from Python (SAM 2's
prompt encoder and mask decoder: ~1,700, ~20 ms of host time on an H100 whatever its rows), and
each launch takes the interpreter lock the server's event loop needs too. A CUDA graph captured
once per input shape launches all of them with one call. Bucketed decoder calls
(:func:`medseg_agent.tools.sam_family.batch_bucket`) keep the shapes few: a power-of-two row count per
prompt structure.

A graph reads its inputs from, and writes its outputs to, fixed buffers: each call copies its inputs
into the buffers captured for its shape, replays, and returns copies of the outputs (the next
replay overwrites them). Calls are serialised by a lock, so one tool can still be called from
several threads. A shape whose capture fails (an operator that synchronises with the host, which a
graph cannot hold) runs eagerly from then on, with one warning. So does a shape whose first replay
does not give the answer the same call gets eagerly (:func:`replay_agrees`): a graph that reads
memory it does not own, or a library that behaves differently under capture, costs speed, never a
wrong mask.

Captured graphs share one memory pool, and graphs whose inputs have the same shapes share their
input buffers: replays are serialised, each copies its inputs in just before and its outputs out
just after, so no graph reads memory another graph has written since.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from medseg_agent.vocabulary.errors import ToolError

#: ``forward(inputs, **static) -> outputs``: tensors in (``None`` for an absent input), tensors out.
Forward = Callable[..., tuple[torch.Tensor, ...]]
Inputs = Sequence[torch.Tensor | None]


class Capture(Protocol):
    """Records ``forward`` on fixed input buffers; returns (replay, output buffers, memory pool).
    ``replay()`` reruns the recorded work on whatever the input buffers hold and writes the output
    buffers; the pool (``None`` for the first capture) is handed to the next capture."""

    def __call__(self, forward: Forward, inputs: tuple[torch.Tensor | None, ...], static: dict[str, Any],
                 pool: Any) -> tuple[Callable[[], None], tuple[torch.Tensor, ...], Any]: ...


def capture_cuda_graph(forward: Forward, inputs: tuple[torch.Tensor | None, ...], static: dict[str, Any],
                       pool: Any) -> tuple[Callable[[], None], tuple[torch.Tensor, ...], Any]:
    """The CUDA capture, as PyTorch documents it: warm-up runs on a side stream (cuBLAS and cuDNN
    pick their kernels and workspaces outside the graph), then one run under ``torch.cuda.graph``.
    Autocast caches weight casts across operators; during a capture that cache would free tensors
    the graph still reads, so it is off inside (the same casts are recorded in the graph instead)."""
    device_type = "cuda"
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    device = next(t for t in inputs if t is not None).device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.autocast(device_type, dtype=dtype, enabled=autocast, cache_enabled=False):
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                forward(inputs, **static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: only this thread's calls are checked during the capture; a server's event
        # loop may run on another thread meanwhile.
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            outputs = forward(inputs, **static)
    return graph.replay, tuple(outputs), graph.pool() if pool is None else pool


#: Eager runs before a capture (PyTorch's examples use 3; one fills the kernel caches, one more
#: checks that nothing allocates differently the second time).
WARMUP_RUNS = 2


@dataclass
class _Captured:
    inputs: tuple[torch.Tensor | None, ...]
    replay: Callable[[], None]
    outputs: tuple[torch.Tensor, ...]


class GraphedForward:
    """``forward`` replayed from one captured graph per input shape, or run as it is when off.

    ``capture`` records the graphs (:func:`capture_cuda_graph`; tests give a host stand-in with the
    same buffer semantics). ``max_graphs`` bounds the memory the graphs hold: past it, new shapes
    run eagerly.
    """

    def __init__(self, forward: Forward, *, enabled: bool, capture: Capture = capture_cuda_graph,
                 max_graphs: int = 128) -> None:
        self.forward = forward
        self.enabled = enabled
        self.max_graphs = max_graphs
        self._capture = capture
        self._graphs: dict[Hashable, _Captured] = {}
        self._buffers: dict[Hashable, torch.Tensor] = {}  # input buffers, shared by graphs (see _buffer)
        self._eager: set[Hashable] = set()
        self._lock = threading.Lock()
        self._pool: Any = None
        #: Calls answered by a replay, and by running ``forward`` eagerly (for the server's metrics);
        #: graphs dropped because their first replay disagreed with the eager answer.
        self.replays = 0
        self.eager_calls = 0
        self.rejected = 0

    @property
    def graphs(self) -> int:
        """Shapes captured so far."""
        return len(self._graphs)

    @property
    def buffer_bytes(self) -> int:
        """Memory held by the graphs' input buffers."""
        return sum(t.element_size() * t.nelement() for t in self._buffers.values())

    def stats(self) -> dict[str, int]:
        """Counters for a tool's :meth:`~medseg_agent.tools.base.SegmentationTool.stats` (none when
        off), so that a server's ``/health`` and ``/metrics`` show whether its graphs are used."""
        if not self.enabled:
            return {}
        return {"decoder_graphs": self.graphs, "decoder_graph_replays": self.replays,
                "decoder_graph_eager_calls": self.eager_calls, "decoder_graphs_rejected": self.rejected}

    def __call__(self, inputs: Inputs, **static: Any) -> tuple[torch.Tensor, ...]:
        if not self.enabled:
            return tuple(self.forward(tuple(inputs), **static))
        key = shape_key(inputs, static)
        with self._lock:
            captured = self._graphs.get(key)
            eager: tuple[torch.Tensor, ...] | None = None
            if captured is None and key not in self._eager:
                eager = tuple(self.forward(tuple(inputs), **static))  # what the first replay must give
                captured = self._capture_for(key, inputs, static)
            if captured is None:
                self.eager_calls += 1
                return eager if eager is not None else tuple(self.forward(tuple(inputs), **static))
            for buffer, value in zip(captured.inputs, inputs, strict=True):
                if buffer is not None:
                    buffer.copy_(value)
            captured.replay()
            answer = tuple(output.clone() for output in captured.outputs)
            if eager is not None and not replay_agrees(answer, eager):
                del self._graphs[key]
                self._eager.add(key)
                self.rejected += 1
                self.eager_calls += 1
                warnings.warn(f"decoder shape {key}: the CUDA graph's first replay differs from the eager answer, "
                              "this shape runs eagerly", RuntimeWarning, stacklevel=2)
                return eager
            self.replays += 1
            return answer

    def _capture_for(self, key: Hashable, inputs: Inputs, static: dict[str, Any]) -> _Captured | None:
        if len(self._graphs) >= self.max_graphs:
            self._eager.add(key)
            return None
        buffers = tuple(None if t is None else self._buffer(slot, t) for slot, t in enumerate(inputs))
        try:
            replay, outputs, self._pool = self._capture(self.forward, buffers, static, self._pool)
        except RuntimeError as exc:  # e.g. an operator that waits for the host cannot be captured
            self._eager.add(key)
            warnings.warn(f"decoder shape {key} cannot be captured in a CUDA graph, it runs eagerly: {exc}",
                          RuntimeWarning, stacklevel=3)
            return None
        captured = _Captured(buffers, replay, outputs)
        self._graphs[key] = captured
        return captured

    def _buffer(self, slot: int, like: torch.Tensor) -> torch.Tensor:
        """The input buffer for argument ``slot`` of ``like``'s shape: one per (slot, shape, dtype,
        device), shared by every graph that takes such an input there. Replays are serialised and
        each copies its inputs in just before, so sharing is safe, and the image features of a 32-row
        call (~256 MB for SAM 2 at 1024) are held once, not once per prompt structure."""
        key = (slot, tuple(like.shape), like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = like.clone(memory_format=torch.contiguous_format)
        return buffer


#: How far a replayed value may be from the eager one (``|a - b| <= atol + rtol * |b|``): a graph runs
#: the kernels of its capture, and reduced-precision libraries may pick other kernels there than in
#: an eager call, as the GPU test allows (bf16 logits).
REPLAY_RTOL, REPLAY_ATOL = 2e-2, 5e-2
#: The share of an output's values that may lie beyond that (rounding lands on a few; a buffer read
#: before it is written, or a row from another call, changes nearly all of them).
REPLAY_OUTLIERS = 1e-3


def replay_agrees(replayed: Sequence[torch.Tensor], eager: Sequence[torch.Tensor]) -> bool:
    """Whether a graph's answer is the eager answer to the same call: the same shapes and dtypes,
    integers and booleans equal, floats within the tolerance nearly everywhere."""
    if len(replayed) != len(eager):
        return False
    for got, want in zip(replayed, eager, strict=True):
        if got.shape != want.shape or got.dtype != want.dtype:
            return False
        if not got.is_floating_point():
            if not torch.equal(got, want):
                return False
            continue
        got, want = got.float(), want.float()
        beyond = ~torch.isclose(got, want, rtol=REPLAY_RTOL, atol=REPLAY_ATOL, equal_nan=True)
        if int(beyond.sum()) > REPLAY_OUTLIERS * max(want.numel(), 1):
            return False
    return True


def shape_key(inputs: Inputs, static: dict[str, Any]) -> Hashable:
    """What a captured graph is specific to: every input's shape, dtype and device, the non-tensor
    arguments, and the autocast in force (the casts are recorded in the graph). Strides are not: a
    call's inputs are copied into the graph's own buffers, whatever their layout."""
    present = [t for t in inputs if t is not None]
    device_type = present[0].device.type if present else "cpu"
    autocast = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type)
    tensors = tuple(None if t is None else (tuple(t.shape), t.dtype, str(t.device)) for t in inputs)
    return tensors, tuple(sorted(static.items())), autocast


def resolve_cuda_graphs(cuda_graphs: bool | None, device: torch.device) -> bool:
    """``None`` (the default): off. The graphs were built against the H100 profile's launch cost
    but not yet measured on a GPU; ``benchmarks/gpu_check.sh`` compares them with eager calls.
    ``True`` needs a CUDA device."""
    if cuda_graphs and device.type != "cuda":
        raise ToolError(f"cuda_graphs needs a CUDA device; this tool runs on {device}")
    return bool(cuda_graphs)
