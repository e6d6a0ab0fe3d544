"""What a promptable segmenter is sent and what it answers, and how prompts accumulate over an episode.

:class:`Prompt` and :class:`Prediction` are the tool contract's data (full-resolution pixels);
:class:`PromptState` is the one prompt transition (SAM semantics) used by the environment, the tool
server's sessions and every replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medseg_agent.vocabulary.actions import AddBox, AddPoint
from medseg_agent.vocabulary.coordinates import CoordinateFrame


@dataclass
class Prompt:
    """Everything a tool may use for one prediction, in full-resolution pixel coordinates (x, y).

    ``mask_input`` is the previous prediction's low-resolution logits, exactly as the same tool
    returned them in :attr:`Prediction.logits`.
    """

    box: np.ndarray | None = None  # (4,) float x1, y1, x2, y2
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))  # 1 pos, 0 neg
    mask_input: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.points) != len(self.labels):
            raise ValueError(f"Prompt has {len(self.points)} points but {len(self.labels)} labels")
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float32).reshape(4)

    @property
    def is_empty(self) -> bool:
        return self.box is None and len(self.points) == 0


@dataclass
class Prediction:
    """A tool's answer: a full-resolution boolean mask, logits to feed back, and its own score."""

    mask: np.ndarray  # (H, W) bool
    logits: np.ndarray | None = None
    score: float = 0.0


@dataclass
class PromptState:
    """Prompts in full-resolution pixels, exactly what the tool is sent."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    logits: np.ndarray | None = None

    def after(self, action: AddBox | AddPoint, frame: CoordinateFrame | None = None) -> PromptState:
        """The state after ``action``, SAM-style; ``self`` is left unchanged. The action is in the
        model coordinates of ``frame``, or in full-resolution pixels when ``frame`` is None.

        A new box starts a new mask (earlier points and logits belonged to the old one); a point is
        added to the prompt and keeps the box and the previous logits. The environment, the tool
        server's sessions and replays all go through here.
        """
        def pixels(x: float, y: float) -> tuple[float, float]:
            return (x, y) if frame is None else frame.to_pixels(x, y)

        if isinstance(action, AddBox):
            return PromptState(box=(*pixels(action.x1, action.y1), *pixels(action.x2, action.y2)))
        px, py = pixels(action.x, action.y)
        return PromptState(
            box=self.box,
            points=[*self.points, (px, py)],
            labels=[*self.labels, 1 if action.positive else 0],
            logits=self.logits,
        )

    def to_prompt(self) -> Prompt:
        return Prompt(
            box=None if self.box is None else np.array(self.box, dtype=np.float32),
            points=np.array(self.points, dtype=np.float32).reshape(-1, 2),
            labels=np.array(self.labels, dtype=np.int64),
            mask_input=self.logits,
        )
