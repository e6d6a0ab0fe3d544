"""What the annotation app keeps on the server: opened volumes, where each image came from, live
episodes and the agents they use. The tool, its embedding cache and the model thread are the tool
server's (:class:`~medseg_agent.serving.state.ServerState`): the app adds no second model."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.from_thread
import numpy as np

from medseg_agent.annotation.episode import SharedEpisode
from medseg_agent.annotation.library import Library
from medseg_agent.annotation.store import AnnotationStore, SavedSession
from medseg_agent.annotation.volumes import Contrast, Volume
from medseg_agent.policies.base import Policy
from medseg_agent.serving.state import ServerState
from medseg_agent.tools.base import ImageEmbedding, Prediction, Prompt, SegmentationTool, ToolSession
from medseg_agent.vocabulary.sample import Sample

MAX_SOURCES = 4096


@dataclass(frozen=True)
class AppConfig:
    """Options of ``medseg-agent app`` (the server's own limits are in :class:`ServerConfig`)."""

    out_dir: Path = Path("runs/app")
    library: Library = field(default_factory=Library)
    library_warning: str | None = None
    annotator: str = ""
    max_turns: int = 20
    view_longest_side: int = 512
    agent_base_url: str | None = None
    agent_model: str | None = None
    agent_checkpoint: str | None = None
    agent_device: str = "auto"
    max_volumes: int = 8


@dataclass
class ImageSource:
    """Where an image of the image store came from: its sample (metadata, reference mask) and,
    for a slice, the volume, axis and index (to save the mask as NIfTI)."""

    sample: Sample
    has_reference: bool = False
    volume_id: str | None = None
    volume: Volume | None = None
    axis: str | None = None
    index: int | None = None
    contrast: Contrast | None = None


@dataclass
class LiveEpisode:
    id: str
    episode: SharedEpisode
    source: ImageSource
    image_id: str
    annotator: str
    agent: dict[str, Any]
    policy_lock: threading.Lock | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one operation at a time
    saved: list[tuple[SavedSession, str]] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class ServedToolSession(ToolSession):
    """A tool session whose decodes go through the server's model thread and embedding cache.

    Called from a worker thread (the episode runs off the event loop); each decode is handed to the
    loop, which batches it with the other sessions' decodes.
    """

    state: ServerState
    key: str
    image: np.ndarray

    def predict(self, prompt: Prompt) -> Prediction:
        # the server keeps masks run-length encoded; the episode needs the pixels (decoded off the loop)
        return anyio.from_thread.run(self.state.predict, self.key, self.image, prompt).to_prediction()


class AppState:
    def __init__(self, server: ServerState, config: AppConfig) -> None:
        self.server = server
        self.config = config
        self.store = AnnotationStore(config.out_dir)
        self.volumes: OrderedDict[str, Volume] = OrderedDict()
        self.sources: OrderedDict[str, ImageSource] = OrderedDict()
        self.episodes: dict[str, LiveEpisode] = {}
        self._policies: dict[tuple, tuple[Policy, threading.Lock]] = {}
        self._policies_lock = threading.Lock()

    @property
    def tool(self) -> SegmentationTool:
        return self.server.tool

    # -- volumes and image sources ------------------------------------------------------------------
    def add_volume(self, volume: Volume) -> str:
        volume_id = secrets.token_urlsafe(12)
        self.volumes[volume_id] = volume
        while len(self.volumes) > self.config.max_volumes:  # episodes keep their own reference
            self.volumes.popitem(last=False)
        return volume_id

    def remember_source(self, image_id: str, source: ImageSource) -> None:
        self.sources[image_id] = source
        self.sources.move_to_end(image_id)
        while len(self.sources) > MAX_SOURCES:
            self.sources.popitem(last=False)

    # -- episodes -------------------------------------------------------------------------------------
    def add_episode(self, live: LiveEpisode) -> None:
        self.expire()
        if len(self.episodes) >= self.server.config.max_sessions:
            raise RuntimeError(
                f"the server holds {len(self.episodes)} episodes (its --max-sessions limit); save or close some"
            )
        self.episodes[live.id] = live

    def episode(self, episode_id: str) -> LiveEpisode | None:
        live = self.episodes.get(episode_id)
        if live is not None:
            live.last_used = time.monotonic()
        return live

    def expire(self) -> int:
        """Forget episodes idle for longer than the server's session TTL (busy ones stay)."""
        now = time.monotonic()
        ttl = self.server.config.session_ttl_s
        stale = [k for k, e in self.episodes.items() if now - e.last_used > ttl and not e.lock.locked()]
        for key in stale:
            del self.episodes[key]
        return len(stale)

    async def session_for(self, image_id: str, image: np.ndarray) -> ServedToolSession:
        embedding: ImageEmbedding = await self.server.embedding(image_id, image)
        return ServedToolSession(self.tool, embedding, self.server, image_id, image)

    # -- agents ---------------------------------------------------------------------------------------
    def policy(self, key: tuple, build: Any) -> tuple[Policy, threading.Lock]:
        """One policy object per agent configuration (a local checkpoint is loaded once); its lock
        serialises the episodes that share it."""
        with self._policies_lock:
            found = self._policies.get(key)
        if found is not None:
            return found
        policy = build()
        with self._policies_lock:
            return self._policies.setdefault(key, (policy, threading.Lock()))
