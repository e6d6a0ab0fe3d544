"""The one interface every promptable segmentation backend implements.

The split into ``encode`` (expensive, once per image) and ``decode`` (cheap, once per prompt set)
is what lets the environment encode an image once per episode and lets the tool server share one
embedding across all rollouts of the same image.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
class ImageEmbedding:
    """Opaque per-image state produced by :meth:`SegmentationTool.encode`.

    ``nbytes`` lets caches bound their memory; ``image_size`` is (H, W) of the original image.
    """

    data: Any
    image_size: tuple[int, int]
    nbytes: int


class ToolError(RuntimeError):
    """A tool could not be built or could not run (bad checkpoint, bad image, ...)."""


class SegmentationTool(ABC):
    """A promptable segmenter. Subclasses implement ``_encode`` and ``_decode``.

    Images are RGB ``uint8`` arrays of shape (H, W, 3); grayscale (H, W) input is replicated to
    three channels. Counters (``encode_count``, ``decode_count`` and their seconds) are kept here so
    that benchmarks and the server can prove how often the image encoder ran.
    """

    name: str = "tool"
    #: Whether decode() can take several prompts for one embedding in a single call efficiently.
    supports_batch_decode: bool = False

    def __init__(self) -> None:
        self._stats_lock = threading.Lock()
        self.encode_count = 0
        self.decode_count = 0
        self.encode_seconds = 0.0
        self.decode_seconds = 0.0

    # -- public API -------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        image = as_rgb_uint8(image)
        start = time.perf_counter()
        embedding = self._encode(image)
        elapsed = time.perf_counter() - start
        with self._stats_lock:
            self.encode_count += 1
            self.encode_seconds += elapsed
        return embedding

    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        if prompt.is_empty:
            raise ToolError("a prediction needs a box or at least one point")
        start = time.perf_counter()
        prediction = self._decode(embedding, prompt)
        elapsed = time.perf_counter() - start
        with self._stats_lock:
            self.decode_count += 1
            self.decode_seconds += elapsed
        h, w = embedding.image_size
        if prediction.mask.shape != (h, w):
            raise ToolError(f"{self.name} returned a mask of shape {prediction.mask.shape}, expected {(h, w)}")
        prediction.mask = prediction.mask.astype(bool, copy=False)
        return prediction

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """Decode several prompt sets for one image; backends override when they can batch."""
        return [self.decode(embedding, p) for p in prompts]

    def set_image(self, image: np.ndarray) -> ToolSession:
        """Encode once and return a session that decodes any number of prompts against it."""
        return ToolSession(self, self.encode(image))

    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return {
                "encode_count": self.encode_count,
                "decode_count": self.decode_count,
                "encode_seconds": self.encode_seconds,
                "decode_seconds": self.decode_seconds,
            }

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _encode(self, image: np.ndarray) -> ImageEmbedding: ...

    @abstractmethod
    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction: ...


@dataclass
class ToolSession:
    """An image already encoded by ``tool``; ``predict`` only runs the (cheap) decoder."""

    tool: SegmentationTool
    embedding: ImageEmbedding

    @property
    def image_size(self) -> tuple[int, int]:
        return self.embedding.image_size

    def predict(self, prompt: Prompt) -> Prediction:
        return self.tool.decode(self.embedding, prompt)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate and normalise an image to contiguous (H, W, 3) uint8, the form every tool takes."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ToolError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ToolError(f"image is too small: {image.shape[:2]}")
    if image.dtype != np.uint8:
        raise ToolError(f"expected a uint8 image (window/normalise medical intensities first), got {image.dtype}")
    return np.ascontiguousarray(image)
