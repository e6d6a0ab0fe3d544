"""All model work of the server, on one dedicated thread, with decode batching.

Model calls never run on the event loop, so ``/health`` and uploads answer while an encode runs.
One thread, because backends hold per-image state under a lock anyway and the CPU's cores are
already used by the model's own intra-op threads. Decode requests queue up while the thread is
busy; when it frees up, the waiting requests (up to ``max_batch``, of any images) go to
``tool.decode_encoded`` in one call: SAM 2 runs them through one forward pass whatever their image,
SAM and MedSAM one per image, and the masks come back run-length encoded (on the device, for a
GPU), so nothing on the event loop ever walks a full-resolution mask.

Waiting decodes go before waiting encodes: a decode is cheap and unblocks a rollout, while a queue
of encodes (a new GRPO batch of images) would otherwise hold every rollout of the first image
until the last image is encoded. Encodes still run between two decode batches, so none starves.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from medseg_agent.tools.base import EncodedPrediction, ImageEmbedding, SegmentationTool
from medseg_agent.vocabulary.prompts import Prompt

T = TypeVar("T")
DECODE, ENCODE = 0, 1  # priorities on the model thread: lower runs first
PRIORITIES = (DECODE, ENCODE)


class ModelThread:
    """One daemon thread running submitted calls by priority (FIFO within a priority), answering
    on the event loop that submitted them.

    The hand-off is a C-level ``SimpleQueue`` of wake-up tokens (one per call, the calls themselves
    wait in a deque per priority) and ``call_soon_threadsafe`` back: about a third of the CPU of a
    ``PriorityQueue`` (a Python condition variable) with ``asyncio.wrap_future``, which matters when
    every action of a rollout crosses to the model thread and back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str = "medseg-model") -> None:
        self._loop = loop
        self._calls: tuple[deque[_Call], ...] = tuple(deque() for _ in PRIORITIES)
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()  # one per call; False: stop
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)``; call from the loop's thread. Cancelling the future before the call
        starts skips it."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._calls[priority].append(_Call(fn, args, future))
        self._tokens.put(True)
        return future

    def stop(self) -> None:
        """Cancel what has not started; the call running now finishes in the background."""
        for calls in self._calls:
            while calls:
                calls.popleft().future.cancel()
        self._tokens.put(False)

    def _run(self) -> None:
        while self._tokens.get():
            call = next((calls.popleft() for calls in self._calls if calls), None)
            if call is None or call.future.cancelled():  # taken by stop(), or its caller went away
                continue
            try:
                outcome: tuple[bool, Any] = (True, call.fn(*call.args))
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (False, exc)
            try:
                self._loop.call_soon_threadsafe(_settle, call.future, outcome)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # cancelled while the call ran
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


@dataclass
class _DecodeJob:
    key: str
    embedding: ImageEmbedding
    prompt: Prompt
    future: asyncio.Future[EncodedPrediction]


@dataclass
class WorkerStats:
    encodes: int = 0
    encode_seconds: float = 0.0
    decode_batches: int = 0
    decoded_prompts: int = 0
    decode_seconds: float = 0.0
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches
    images_per_batch_max: int = 0  # most distinct images in one decode call


class ModelWorker:
    """Runs ``tool.encode`` and batched ``tool.decode_batch`` off the event loop.

    Start it inside the running loop (:meth:`start`) and :meth:`stop` it on shutdown.
    """

    def __init__(self, tool: SegmentationTool, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.tool = tool
        self.max_batch = max_batch
        self.stats = WorkerStats()
        self._thread: ModelThread | None = None
        self._pending: deque[_DecodeJob] = deque()
        self._wakeup: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._busy = 0  # model calls submitted and not finished (queued or running)

    @property
    def queue_depth(self) -> int:
        """Decode requests waiting plus model calls submitted to the thread."""
        return len(self._pending) + self._busy

    async def start(self) -> None:
        self._thread = ModelThread(asyncio.get_running_loop())
        self._wakeup = asyncio.Event()
        self._pump = asyncio.create_task(self._run(), name="medseg-decode-batcher")

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        if self._thread is not None:
            self._thread.stop()

    async def encode(self, image: np.ndarray) -> ImageEmbedding:
        return await self._submit(ENCODE, self._encode, image)

    async def decode(self, key: str, embedding: ImageEmbedding, prompt: Prompt) -> EncodedPrediction:
        """Queue one prediction; it may run together with others waiting at the same time."""
        if self._wakeup is None:
            raise RuntimeError("ModelWorker.start() was not called")
        future: asyncio.Future[EncodedPrediction] = asyncio.get_running_loop().create_future()
        self._pending.append(_DecodeJob(key, embedding, prompt, future))
        self._wakeup.set()
        return await future

    # -- internals --------------------------------------------------------------------------
    async def _submit(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise RuntimeError("ModelWorker.start() was not called")
        self._busy += 1
        try:
            return await self._thread.submit(priority, fn, *args)
        finally:
            self._busy -= 1

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        start = time.perf_counter()
        embedding = self.tool.encode(image)
        self.stats.encodes += 1
        self.stats.encode_seconds += time.perf_counter() - start
        return embedding

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    outcomes: list[EncodedPrediction | BaseException] = await self._submit(
                        DECODE, self._decode_batch, batch
                    )
                except Exception as exc:  # the batcher itself must survive anything
                    outcomes = [exc] * len(batch)
                for job, outcome in zip(batch, outcomes, strict=True):
                    if job.future.done():  # its caller went away
                        continue
                    if isinstance(outcome, BaseException):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)

    def _take_batch(self) -> list[_DecodeJob]:
        """The oldest live requests, up to ``max_batch`` (one if the tool cannot batch)."""
        limit = self.max_batch if self.tool.supports_batch_decode else 1
        batch: list[_DecodeJob] = []
        while self._pending and len(batch) < limit:
            job = self._pending.popleft()
            if not job.future.done():  # its caller went away
                batch.append(job)
        return batch

    def _decode_batch(self, batch: list[_DecodeJob]) -> list[EncodedPrediction | BaseException]:
        start = time.perf_counter()
        if len(batch) > 1:
            try:
                outcomes = list(self.tool.decode_encoded([(job.embedding, job.prompt) for job in batch]))
            except Exception:  # one bad prompt must not fail the others: retry them one by one
                outcomes = [self._decode_one(job) for job in batch]
        else:
            outcomes = [self._decode_one(batch[0])]
        stats = self.stats
        stats.decode_batches += 1
        stats.decoded_prompts += len(batch)
        stats.decode_seconds += time.perf_counter() - start
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.batch_sizes[len(batch)] = stats.batch_sizes.get(len(batch), 0) + 1
        stats.images_per_batch_max = max(stats.images_per_batch_max, len({job.key for job in batch}))
        return outcomes

    def _decode_one(self, job: _DecodeJob) -> EncodedPrediction | BaseException:
        try:
            return self.tool.decode_encoded([(job.embedding, job.prompt)])[0]
        except Exception as exc:  # handed to the waiting request, which turns it into an answer
            return exc
