"""The one interface every promptable segmentation backend implements.

The split into ``encode`` (expensive, once per image) and ``decode`` (cheap, once per prompt set)
is what lets the environment encode an image once per episode and lets the tool server share one
embedding across all rollouts of the same image.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg_agent.io.masks import area_from_boundaries, decode_rle, encode_rle_with_area, rle_from_boundaries
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.images import as_rgb_uint8
from medseg_agent.vocabulary.prompts import Prediction, Prompt


@dataclass
class EncodedPrediction:
    """A prediction with its mask already in compact exact form: COCO RLE and its area.

    What a server keeps and sends back. Tools on an accelerator find the runs there, so the full
    mask never crosses to the host (see :meth:`SegmentationTool.decode_encoded`).
    """

    rle: dict[str, Any]  # {"size": [H, W], "counts": str}, medseg_agent.io.masks.decode_rle reads it
    area: int
    logits: np.ndarray | None = None
    score: float = 0.0

    @classmethod
    def from_prediction(cls, prediction: Prediction) -> EncodedPrediction:
        rle, area = encode_rle_with_area(prediction.mask)
        return cls(rle=rle, area=area, logits=prediction.logits, score=float(prediction.score))

    def to_prediction(self) -> Prediction:
        """The full mask back (for callers that need pixels, e.g. an environment stepping on it)."""
        return Prediction(mask=decode_rle(self.rle), logits=self.logits, score=self.score)

    @classmethod
    def from_boundaries(cls, boundaries: np.ndarray, size: tuple[int, int], logits: np.ndarray | None,
                        score: float) -> EncodedPrediction:
        """From the mask's run boundaries (:func:`medseg_agent.io.masks.run_boundaries`), which an
        accelerator finds without sending the mask to the host."""
        return cls(rle=rle_from_boundaries(boundaries, *size), area=area_from_boundaries(boundaries, *size),
                   logits=logits, score=float(score))


@dataclass
class ImageEmbedding:
    """Opaque per-image state produced by :meth:`SegmentationTool.encode`.

    ``nbytes`` lets caches bound their memory; ``image_size`` is (H, W) of the original image.
    """

    data: Any
    image_size: tuple[int, int]
    nbytes: int


#: One prediction to make: the image's embedding and the prompt.
DecodeRequest = tuple[ImageEmbedding, Prompt]


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
        self.count_decodes(1, time.perf_counter() - start)
        h, w = embedding.image_size
        if prediction.mask.shape != (h, w):
            raise ToolError(f"{self.name} returned a mask of shape {prediction.mask.shape}, expected {(h, w)}")
        prediction.mask = prediction.mask.astype(bool, copy=False)
        return prediction

    def decode_batch(self, embedding: ImageEmbedding, prompts: list[Prompt]) -> list[Prediction]:
        """Decode several prompt sets for one image; backends override when they can batch."""
        return [self.decode(embedding, p) for p in prompts]

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[Prediction]:
        """Decode prompts on possibly different images (a server's queue), results in order.

        Default: the requests of each image go through :meth:`decode_batch` together. Backends that
        can run prompts of different images through one forward pass override it.
        """
        return _by_embedding(requests, self.decode_batch)

    def decode_encoded(self, requests: Sequence[DecodeRequest]) -> list[EncodedPrediction]:
        """:meth:`decode_many` with each mask returned as RLE and area (what a server sends back).

        Default: decode, then run-length encode each mask on the host. Backends on an accelerator
        override it to find the runs on the device for the whole batch.
        """
        return [EncodedPrediction.from_prediction(p) for p in self.decode_many(requests)]

    def set_image(self, image: np.ndarray) -> ToolSession:
        """Encode once and return a session that decodes any number of prompts against it."""
        return ToolSession(self, self.encode(image))

    def count_decodes(self, count: int, seconds: float) -> None:
        """Add decodes to the counters; batched backends that decode outside :meth:`decode` call it."""
        with self._stats_lock:
            self.decode_count += count
            self.decode_seconds += seconds

    def check_available(self) -> None:
        """Raise :class:`~medseg_agent.vocabulary.errors.ModelUnavailable` when this tool can no
        longer answer any call (a model process that died), so that health checks report it and an
        orchestrator restarts the server. A tool in this process lives as long as the process."""
        return None

    def close(self) -> None:
        """Release what the tool holds beyond this process's memory (a model process and its shared
        memory); a tool that holds nothing more has nothing to do."""
        return None

    def stats(self) -> dict[str, float]:
        """This tool's counters (a server shows them in ``/health`` and ``/metrics``); backends add
        their own."""
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


def _by_embedding(requests: Sequence[DecodeRequest], decode: Any) -> list[Any]:
    """Call ``decode(embedding, prompts)`` once per distinct embedding; results in request order."""
    groups: dict[int, list[int]] = {}
    for i, (embedding, _) in enumerate(requests):
        groups.setdefault(id(embedding), []).append(i)
    results: list[Any] = [None] * len(requests)
    for indices in groups.values():
        embedding = requests[indices[0]][0]
        for i, outcome in zip(indices, decode(embedding, [requests[i][1] for i in indices]), strict=True):
            results[i] = outcome
    return results

