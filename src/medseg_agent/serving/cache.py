"""The image-embedding cache shared by every session of the server.

Keyed by the image's content hash (:func:`medseg_agent.serving.images.image_key`), bounded by a byte
budget (``ImageEmbedding.nbytes``, least recently used out first) and *single-flight*: when eight
rollouts of the same image ask at the same moment, one encode runs and the other seven wait for it.
That is what turns GRPO rollouts from encode-bound into decode-bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from medseg_agent.tools.base import ImageEmbedding

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    entries: int
    bytes: int
    max_bytes: int
    hits: int  # requests answered without starting an encode (cached or joined an encode in flight)
    misses: int  # requests that started an encode
    evictions: int
    in_flight: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EmbeddingCache:
    """LRU of :class:`ImageEmbedding` by content hash, with single-flight computation.

    Used from one asyncio event loop (no locks needed); the computation itself runs wherever
    ``compute`` puts it (the server's model thread). An embedding larger than the whole budget is
    returned to its callers but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[ImageEmbedding]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    async def get(self, key: str, compute: Callable[[], Awaitable[ImageEmbedding]]) -> ImageEmbedding:
        """The embedding of ``key``, computing it with ``compute()`` at most once at a time.

        A caller that is cancelled (client gone) does not cancel the computation others wait for.
        """
        cached = self._items.get(key)
        if cached is not None:
            self.hits += 1
            self._items.move_to_end(key)
            return cached
        task = self._in_flight.get(key)
        if task is None:
            self.misses += 1
            task = asyncio.ensure_future(self._compute(key, compute))
            self._in_flight[key] = task
            task.add_done_callback(_consume_exception)
        else:
            self.hits += 1
        return await asyncio.shield(task)

    def drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item.nbytes

    def stats(self) -> CacheStats:
        return CacheStats(
            entries=len(self._items),
            bytes=self._bytes,
            max_bytes=self.max_bytes,
            hits=self.hits,
            misses=self.misses,
            evictions=self.evictions,
            in_flight=len(self._in_flight),
        )

    async def _compute(self, key: str, compute: Callable[[], Awaitable[ImageEmbedding]]) -> ImageEmbedding:
        try:
            embedding = await compute()
        finally:
            self._in_flight.pop(key, None)
        self._store(key, embedding)
        return embedding

    def _store(self, key: str, embedding: ImageEmbedding) -> None:
        if embedding.nbytes > self.max_bytes:
            log.warning(
                "embedding of %d bytes exceeds the whole cache budget (%d bytes); not cached",
                embedding.nbytes,
                self.max_bytes,
            )
            return
        self._items[key] = embedding
        self._bytes += embedding.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
            self.evictions += 1


def _consume_exception(task: asyncio.Task[ImageEmbedding]) -> None:
    """Mark a failed computation's exception as seen even if every waiter went away."""
    if not task.cancelled():
        task.exception()
