"""What one running server holds (tool, caches, sessions, model worker) and the two paths to the
model every endpoint shares: the cached embedding of an image, and a (batched) prediction."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from medseg_agent.serving.batching import ModelWorker
from medseg_agent.serving.cache import EmbeddingCache
from medseg_agent.serving.config import ServerConfig
from medseg_agent.serving.images import ImageStore
from medseg_agent.serving.sessions import SessionStore
from medseg_agent.tools.base import EncodedPrediction, ImageEmbedding, SegmentationTool
from medseg_agent.vocabulary.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    tool: SegmentationTool
    config: ServerConfig
    images: ImageStore
    cache: EmbeddingCache
    worker: ModelWorker
    sessions: SessionStore
    started: float = field(default_factory=time.monotonic)
    #: decodes of uploads in progress, by upload digest: concurrent uploads of the same bytes share one
    uploads_in_flight: dict[str, asyncio.Future[tuple[str, np.ndarray, bool]]] = field(default_factory=dict)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def build(cls, tool: SegmentationTool, config: ServerConfig) -> ServerState:
        images = ImageStore(config.image_bytes)
        return cls(
            tool=tool,
            config=config,
            images=images,
            cache=EmbeddingCache(config.cache_bytes),
            worker=ModelWorker(tool, max_batch=config.max_batch),
            sessions=SessionStore(
                images, ttl_s=config.session_ttl_s, max_sessions=config.max_sessions, undo_depth=config.undo_depth
            ),
        )

    async def embedding(self, key: str, image: np.ndarray) -> ImageEmbedding:
        """The image's embedding: from the cache, or encoded once however many ask at once."""
        return await self.cache.get(key, lambda: self.worker.encode(image))

    async def predict(self, key: str, image: np.ndarray, prompt: Prompt) -> EncodedPrediction:
        """One prediction, its mask already run-length encoded (batched with whatever else waits)."""
        embedding = await self.embedding(key, image)
        return await self.worker.decode(key, embedding, prompt)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> None:
        """Run work nobody waits for (prefetching an embedding); failures are logged, not lost."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("%s failed: %s", what, finished.exception())

        task.add_done_callback(done)

    async def sweep_sessions(self) -> None:
        """Delete idle sessions every ``sweep_interval_s`` (runs for the server's lifetime)."""
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            self.sessions.expire()


def server_state(request: Request) -> ServerState:
    """The server state of the app serving ``request`` (for direct calls)."""
    return request.app.state.server


async def get_state(request: Request) -> ServerState:
    """Dependency: the server state. ``async`` so FastAPI runs it inline: a plain ``def`` dependency
    costs a thread-pool round trip per request."""
    return request.app.state.server


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` when the server has --token")


async def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)
) -> None:
    """401 unless the request carries the server's token (no-op for a server without one)."""
    expected = server_state(request).config.token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong token: send 'Authorization: Bearer <token>' with the server's --token",
            headers={"WWW-Authenticate": "Bearer"},
        )
