"""A test double for measuring the tool server's own overhead: a tool whose model costs nothing.

``encode`` returns a 1 KiB placeholder and ``decode`` returns a mask, logits and score computed once
per image size, so whatever time a server spends per action with this tool is the server's own:
HTTP, validation, sessions, queueing, batching, the mask encoding and the answer. Benchmark use
only (``benchmarks/rollout_server.py --tool zero-cost``); it is not part of medseg-agent.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from medseg_agent.tools.base import ImageEmbedding, SegmentationTool
from medseg_agent.vocabulary.prompts import Prediction, Prompt

NAME = "zero-cost"
LOW_RES = (256, 256)  # the logits shape of SAM / SAM 2, so mask_input round-trips like a real model's


@lru_cache(maxsize=8)
def _fixed_mask(height: int, width: int) -> np.ndarray:
    """An organ-sized ellipse (about 5 % of the image): its RLE costs what a real mask's does."""
    yy, xx = np.ogrid[:height, :width]
    mask = ((xx - 0.45 * width) / (0.15 * width)) ** 2 + ((yy - 0.5 * height) / (0.1 * height)) ** 2 <= 1.0
    mask.setflags(write=False)
    return mask


_LOGITS = np.zeros((1, *LOW_RES), np.float32)
_LOGITS.setflags(write=False)


class ZeroCostTool(SegmentationTool):
    """Answers every prompt with the same precomputed mask; ``decode_batch`` is free too."""

    name = NAME
    supports_batch_decode = True

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        return ImageEmbedding(data=None, image_size=(int(image.shape[0]), int(image.shape[1])), nbytes=1024)

    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return Prediction(mask=_fixed_mask(*embedding.image_size), logits=_LOGITS, score=1.0)


def build_zero_cost_tool(checkpoint: object = None, device: str = "cpu", **options: object) -> ZeroCostTool:
    if options:
        raise ValueError(f"the zero-cost tool takes no options, got {sorted(options)}")
    return ZeroCostTool()


def register() -> None:
    """Make ``--tool zero-cost`` buildable by name in this process (server children call this)."""
    from medseg_agent.tools.registry import register_tool

    register_tool(NAME, build_zero_cost_tool)
