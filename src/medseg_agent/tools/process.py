"""A tool whose model runs in a process of its own.

Why: on a GPU a SAM 2 decoder call is bound by launching its ~1,700 operators from Python, one after
the other, each needing the interpreter lock. In a server, the event loop (HTTP, JSON, sessions)
needs the same lock, so the two take turns: on one H100 the server's decode batches took twice as
long as the same calls outside it (docs/serving.md). With the model in its own process, each side
has an interpreter of its own; this side only sends prompts and receives run-length encoded masks,
and waits on a pipe without holding the lock.

:class:`ProcessTool` is a :class:`~medseg_agent.tools.base.SegmentationTool` like any other, so the
server, the annotation app and the environment use it unchanged. Embeddings stay in the model
process; this side holds a handle per embedding, and when a handle is garbage collected (the
server's cache evicted it) the model process drops the embedding with the next call.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from medseg_agent.tools.base import (
    DecodeRequest,
    EncodedPrediction,
    ImageEmbedding,
    SegmentationTool,
)
from medseg_agent.tools.spec import ToolSpec
from medseg_agent.vocabulary.errors import ModelUnavailable, ToolError
from medseg_agent.vocabulary.prompts import Prediction, Prompt

#: arrays at least this large cross through shared memory instead of the pipe (logits: 256 KiB a row)
OUT_OF_BAND_BYTES = 64 * 1024


class Channel:
    """One end of the pipe between a server and its model process, with large arrays beside it.

    Messages are pickled (protocol 5); every array of at least :data:`OUT_OF_BAND_BYTES` is copied
    into a shared-memory block of the sending end and only its place crosses the pipe. A 32-row
    batch of SAM 2 logits is 8 MiB each way; through the pipe itself that took 35 to 50 ms per call
    on the 2-core sandbox (64 KiB at a time, a context switch each), through shared memory two
    copies. Calls are strictly one at a time, so a block is reused only after the other end has
    copied the previous message out of it.
    """

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self._outgoing: SharedMemory | None = None  # ours, written by send
        self._incoming: SharedMemory | None = None  # the other end's, read by recv

    def send(self, message: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            if buffer.raw().nbytes < OUT_OF_BAND_BYTES:
                return True  # in the pickle itself
            buffers.append(buffer)
            return False

        data = pickle.dumps(message, protocol=5, buffer_callback=out_of_band)
        spans: list[tuple[int, int]] = []
        name = None
        if buffers:
            raws = [buffer.raw() for buffer in buffers]
            block = self._block(sum(raw.nbytes for raw in raws))
            offset = 0
            for raw in raws:
                block.buf[offset:offset + raw.nbytes] = raw
                spans.append((offset, raw.nbytes))
                offset += raw.nbytes
            name = block.name
        self.conn.send((data, name, spans))

    def recv(self) -> Any:
        data, name, spans = self.conn.recv()
        if not spans:
            return pickle.loads(data)
        if self._incoming is None or self._incoming.name != name:
            if self._incoming is not None:
                self._incoming.close()
            self._incoming = SharedMemory(name)
        view = self._incoming.buf
        return pickle.loads(data, buffers=[bytearray(view[start:start + size]) for start, size in spans])

    @property
    def shared_block(self) -> str | None:
        """The name of this end's shared-memory block (None until a message needed one)."""
        return self._outgoing.name if self._outgoing is not None else None

    def poll(self, timeout_s: float) -> bool:
        return self.conn.poll(timeout_s)

    def close(self) -> None:
        if self._incoming is not None:
            self._incoming.close()
            self._incoming = None
        if self._outgoing is not None:
            self._outgoing.close()
            self._outgoing.unlink()
            self._outgoing = None
        self.conn.close()

    def _block(self, size: int) -> SharedMemory:
        """Our block, replaced by one twice as large when a message does not fit."""
        if self._outgoing is None or self._outgoing.size < size:
            old = self._outgoing
            self._outgoing = SharedMemory(create=True, size=max(size, 2 * old.size if old else 1 << 20))
            if old is not None:  # the other end still maps it until it sees the new name; unlinking is safe
                old.close()
                old.unlink()
        return self._outgoing


class RemoteEmbedding:
    """The ``data`` of an :class:`ImageEmbedding` that lives in a model process."""

    __slots__ = ("__weakref__", "handle", "owner")

    def __init__(self, handle: int, owner: int) -> None:
        self.handle = handle
        self.owner = owner  # id() of the ProcessTool whose process holds it

    def __repr__(self) -> str:
        return f"RemoteEmbedding(handle={self.handle})"


class ProcessTool(SegmentationTool):
    """``spec.build()`` run in a spawned process, called through a pipe, one call at a time.

    Build errors (a missing checkpoint, an unknown tool) are raised here, from the constructor, as
    :class:`ToolError` with the model process's message. Errors of a call are raised with their own
    type (a bad prompt stays a :class:`ToolError`). If the model process dies, every later call raises
    :class:`ModelUnavailable` (a server answers 503). :meth:`close` stops it; so does exiting or
    garbage collection.
    """

    def __init__(self, spec: ToolSpec, *, start_timeout_s: float = 900.0) -> None:
        super().__init__()
        self.spec = spec
        context = multiprocessing.get_context("spawn")  # fork would copy CUDA state and threads
        ours, theirs = context.Pipe()
        self._process = context.Process(target=serve_tool, args=(theirs, spec), daemon=True,
                                        name=f"medseg-model-{spec.name}")
        self._process.start()
        theirs.close()
        self._channel = Channel(ours)
        self._lock = threading.Lock()
        self._released: deque[int] = deque()  # handles collected here, dropped there with the next call
        self._remote_stats: dict[str, float] = {}  # the model process's tool counters, as of its last answer
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_process, self._channel, self._process)
        if not self._channel.poll(start_timeout_s):
            self.close()
            raise ToolError(f"the model process for {spec.name!r} did not start within {start_timeout_s:.0f} s")
        ok, value = self._receive()
        if not ok:
            self.close()
            raise ToolError(f"could not build tool {spec.name!r} in its model process: {value}") from value
        self.name, self.supports_batch_decode = value

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def check_available(self) -> None:
        if self._closed or not self.is_alive():
            raise ModelUnavailable(f"the {self.name} model process exited; restart the server")

    def close(self) -> None:
        """Stop the model process (waits briefly for it to exit)."""
        self._closed = True
        self._finalizer()

    def held_embeddings(self) -> int:
        """How many embeddings the model process holds (a leak check)."""
        return int(self._call("held"))

    def stats(self) -> dict[str, float]:
        """The counts of the calls made here, and beside them the model process's own counters (its
        tool's, e.g. its decoder graphs), as of its last answer: every answer brings them along."""
        return {**self._remote_stats, **super().stats()}

    # -- SegmentationTool ---------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        handle, image_size, nbytes = self._call("encode", image)
        remote = RemoteEmbedding(handle, id(self))
        weakref.finalize(remote, self._released.append, handle)
        return ImageEmbedding(data=remote, image_size=tuple(image_size), nbytes=int(nbytes))

    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return self._call("decode_many", [(self._handle(embedding), prompt)])[0]

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        return self.decode_many([(embedding, prompt) for prompt in prompts])

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[Prediction]:
        return self._decode_remote("decode_many", requests)

    def decode_encoded(self, requests: Sequence[DecodeRequest]) -> list[EncodedPrediction]:
        return self._decode_remote("decode_encoded", requests)

    # -- internals ------------------------------------------------------------------------------
    def _decode_remote(self, op: str, requests: Sequence[DecodeRequest]) -> list[Any]:
        pairs = [(self._handle(embedding), prompt) for embedding, prompt in requests]
        for _, prompt in pairs:
            if prompt.is_empty:
                raise ToolError("a prediction needs a box or at least one point")
        start = time.perf_counter()
        outcomes = self._call(op, pairs)
        self.count_decodes(len(pairs), time.perf_counter() - start)
        return outcomes

    def _handle(self, embedding: ImageEmbedding) -> int:
        remote = embedding.data
        if not isinstance(remote, RemoteEmbedding) or remote.owner != id(self):
            raise ToolError(f"this embedding was not made by this {self.name} model process; encode the image "
                            "with the same tool")
        return remote.handle

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise ModelUnavailable(f"the {self.name} model process was closed")
            released = []
            while self._released:
                released.append(self._released.popleft())
            try:
                self._channel.send((op, args, released))
            except OSError as exc:  # the pipe is closed or broken (an argument that does not pickle is raised as is)
                raise self._gone() from exc
            ok, value = self._receive()
        if not ok:
            raise value
        return value

    def _receive(self) -> tuple[bool, Any]:
        try:
            ok, value, self._remote_stats = self._channel.recv()
        except (EOFError, OSError) as exc:
            raise self._gone() from exc
        return ok, value

    def _gone(self) -> ModelUnavailable:
        self._process.join(timeout=5)
        self._closed = True
        return ModelUnavailable(f"the model process of {self.spec.name!r} exited (exit code "
                                f"{self._process.exitcode}); restart the server (its log says why it ended)")


def _stop_process(channel: Channel, process: multiprocessing.process.BaseProcess) -> None:
    with contextlib.suppress(OSError, ValueError):  # already gone
        channel.send(("close", (), []))
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join(timeout=5)
    channel.close()


# -- the model process ------------------------------------------------------------------------------
@dataclass
class _Held:
    tool: SegmentationTool
    embeddings: dict[int, ImageEmbedding]
    handles: itertools.count


def serve_tool(conn: multiprocessing.connection.Connection, spec: ToolSpec) -> None:
    """The model process: build the tool, then answer calls until told to close or the pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes us
    # SIGTERM (an orchestrator, or multiprocessing ending its daemon children when the server exits
    # before it closed us) still closes the channel, so that our shared-memory block is removed
    # rather than left to the resource tracker's "leaked shared_memory objects" clean-up.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    channel = Channel(conn)
    try:
        _answer_calls(channel, spec)
    finally:
        channel.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _answer_calls(channel: Channel, spec: ToolSpec) -> None:
    try:
        tool = spec.build()
    except BaseException as exc:
        channel.send((False, _sendable(exc), {}))
        return
    channel.send((True, (tool.name, tool.supports_batch_decode), tool.stats()))
    held = _Held(tool, {}, itertools.count(1))
    while True:
        try:
            op, args, released = channel.recv()
        except (EOFError, OSError):
            return
        for handle in released:
            held.embeddings.pop(handle, None)
        if op == "close":
            return
        try:
            reply: tuple[bool, Any] = (True, _OPERATIONS[op](held, *args))
        except Exception as exc:
            reply = (False, _sendable(exc))
        stats = tool.stats()  # every answer carries the tool's counters
        try:
            channel.send((*reply, stats))
        except Exception as exc:  # an answer that does not pickle; nothing was written yet
            channel.send((False, ToolError(f"the answer to {op!r} could not be sent back: {exc}"), stats))


def _encode(held: _Held, image: np.ndarray) -> tuple[int, tuple[int, int], int]:
    embedding = held.tool.encode(image)
    handle = next(held.handles)
    held.embeddings[handle] = embedding
    return handle, embedding.image_size, embedding.nbytes


def _requests(held: _Held, pairs: list[tuple[int, Prompt]]) -> list[DecodeRequest]:
    try:
        return [(held.embeddings[handle], prompt) for handle, prompt in pairs]
    except KeyError as exc:
        raise ToolError(f"embedding {exc.args[0]} is no longer held by the model process") from None


_OPERATIONS: dict[str, Any] = {
    "encode": _encode,
    "decode_many": lambda held, pairs: held.tool.decode_many(_requests(held, pairs)),
    "decode_encoded": lambda held, pairs: held.tool.decode_encoded(_requests(held, pairs)),
    "held": lambda held: len(held.embeddings),
}


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a ToolError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return ToolError(f"{type(exc).__name__}: {exc}")
