"""Interactive sessions: one image, its prompts, the previous logits and an undo history.

Prompt semantics are the environment's (:class:`~medseg_agent.environment.episode.SegmentationEnv`):
a new box starts a new mask (earlier box, points and logits are dropped); a point is added to the
prompt and the previous low-resolution logits go with it. Session ids are unguessable
(``secrets.token_urlsafe``) and a session is only reachable through its id; idle sessions expire.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg_agent.io.masks import decode_rle, rle_from_boundaries
from medseg_agent.serving.images import ImageStore
from medseg_agent.tools.base import EncodedPrediction
from medseg_agent.vocabulary.actions import AddBox, AddPoint
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.prompts import PromptState


class SessionNotFound(KeyError):
    """Unknown, deleted or expired session (answered as 404)."""

    @property
    def detail(self) -> str:
        return f"session {self.args[0]!r} does not exist (deleted, expired or never created)"


class SessionLimit(RuntimeError):
    """Too many live sessions (answered as 503)."""


@dataclass
class _Snapshot:
    state: PromptState
    rle: dict[str, Any]
    area: int
    score: float | None
    actions: int


@dataclass
class Session:
    id: str
    image_key: str
    image: np.ndarray
    frame: CoordinateFrame
    undo_depth: int
    state: PromptState = field(default_factory=PromptState)
    score: float | None = None
    actions: int = 0
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one action at a time per session

    def __post_init__(self) -> None:
        self.rle = self._empty_rle()  # the current mask, COCO RLE: compact and exact
        self.area = 0
        self._history: deque[_Snapshot] = deque(maxlen=self.undo_depth)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def undo_available(self) -> int:
        return len(self._history)

    def mask(self) -> np.ndarray:
        """The current mask as a (H, W) bool array (decoded from its RLE)."""
        return decode_rle(self.rle)

    def mask_area(self) -> int:
        return self.area

    def next_state(self, action: AddBox | AddPoint) -> PromptState:
        """The prompt state after ``action`` (nothing changes until :meth:`commit`)."""
        return self.state.after(action, self.frame)

    def commit(self, state: PromptState, prediction: EncodedPrediction) -> None:
        """Make ``state`` current with its prediction; the previous state can be undone."""
        self._history.append(self._snapshot())
        state.logits = prediction.logits
        self.state = state
        self.rle, self.area = prediction.rle, int(prediction.area)
        self.score = float(prediction.score)
        self.actions += 1

    def undo(self) -> bool:
        if not self._history:
            return False
        snap = self._history.pop()
        self.state, self.rle, self.area, self.score, self.actions = (
            snap.state, snap.rle, snap.area, snap.score, snap.actions)
        return True

    def reset(self) -> None:
        """Back to an empty prompt and mask; the reset itself can be undone."""
        if self.actions == 0 and self.state.box is None and not self.state.points:
            return
        self._history.append(self._snapshot())
        self.state = PromptState()
        self.rle, self.area = self._empty_rle(), 0
        self.score = None
        self.actions = 0

    def _empty_rle(self) -> dict[str, Any]:
        h, w = self.size
        return rle_from_boundaries(np.zeros(0, np.int64), h, w)

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(self.state, self.rle, self.area, self.score, self.actions)


class SessionStore:
    """Live sessions by id. Each session pins its image in ``images`` until it is removed."""

    def __init__(self, images: ImageStore, *, ttl_s: float, max_sessions: int, undo_depth: int) -> None:
        self.images = images
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.undo_depth = undo_depth
        self._sessions: dict[str, Session] = {}
        self.created_total = 0
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, image_key: str, frame: CoordinateFrame) -> Session:
        """A new session on a stored image; KeyError if the image is not stored (any more)."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            raise SessionLimit(
                f"the server holds {len(self._sessions)} sessions (its limit); delete finished sessions"
            )
        image = self.images.pin(image_key)
        if image is None:
            raise KeyError(image_key)
        # The id starts with the image id's first 16 hex digits: a cluster's ingress routes the
        # session's requests by it (medseg_agent.serving.cluster); the random part keeps it unguessable.
        session_id = f"{image_key[:16]}{secrets.token_urlsafe(24)}"
        session = Session(session_id, image_key, image, frame, self.undo_depth)
        self._sessions[session.id] = session
        self.created_total += 1
        return session

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        now = time.monotonic()
        if session is None:
            raise SessionNotFound(session_id)
        if now - session.last_used > self.ttl_s and not session.lock.locked():
            self._remove(session_id)
            self.expired_total += 1
            raise SessionNotFound(session_id)
        session.last_used = now
        return session

    def delete(self, session_id: str) -> bool:
        return self._remove(session_id)

    def expire(self) -> int:
        """Delete sessions idle for longer than the TTL (a session busy with an action is kept)."""
        now = time.monotonic()
        stale = [
            sid for sid, s in self._sessions.items() if now - s.last_used > self.ttl_s and not s.lock.locked()
        ]
        for sid in stale:
            self._remove(sid)
        self.expired_total += len(stale)
        return len(stale)

    def expires_in(self, session: Session) -> float:
        return max(0.0, self.ttl_s - (time.monotonic() - session.last_used))

    def clear(self) -> None:
        for sid in list(self._sessions):
            self._remove(sid)

    def _remove(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        self.images.unpin(session.image_key)
        return True
