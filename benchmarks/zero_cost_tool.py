"""A test double for measuring the tool server's own overhead: a tool whose model costs nothing.

``encode`` returns a 1 KiB placeholder and ``decode`` returns a mask, logits and score computed once
per image size, so whatever time a server spends per action with this tool is the server's own:
HTTP, validation, sessions, queueing, batching, the mask encoding and the answer. Benchmark use
only (``benchmarks/rollout_server.py --tool zero-cost``); it is not part of medseg-agent.

``mask_runs`` says where the server's masks are run-length encoded, as for a real backend:

* ``device`` (default): what the sam / sam2 backends do on a GPU. The run boundaries of each mask
  are found on the device with the model's forward (free here, like the rest of the model) and the
  host turns them into the RLE string and the area, per prediction, as it does for a real GPU tool.
* ``host``: what a CPU backend does: the full mask comes back and the server finds its runs on the
  CPU (:meth:`SegmentationTool.decode_encoded`'s default), one pass over the 1024^2 mask per action.

``mask`` says which mask every prompt gets:

* ``ellipse`` (default): an organ-sized ellipse, a few hundred runs: what a trained model returns.
* ``noisy``: what the random-weight MedSAM2 checkpoint of the GPU benchmark returns: about 93 % of
  the image set, with holes in 4x4 blocks, ~34,000 runs and ~47 kB of RLE at 1024^2 (the random-weight
  masks: a median of 32,124 runs covering 93 %, about 35 kB of RLE, docs/serving.md). With it the CPU proxy measures
  what such masks cost the server per action, apart from the model.

``launch_ms`` (default 0) makes every decoder call hold the interpreter lock for that long, in pure
Python, as a forward that is bound by launching its operators does (on one H100 a SAM 2 decoder
forward was ~1,700 operator calls, ~20 ms of host time whatever its rows; docs/serving.md). With it
the CPU proxy shows what the model thread's hold on the lock costs the server's event loop, and what
a model process (``--model-process``) gives back, without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from medseg_agent.io.masks import run_boundaries
from medseg_agent.tools.base import DecodeRequest, EncodedPrediction, ImageEmbedding, SegmentationTool
from medseg_agent.vocabulary.errors import ToolError
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


@lru_cache(maxsize=16)
def _fixed_boundaries(kind: str, height: int, width: int) -> np.ndarray:
    """What a device hands the host for the ``kind`` mask: its run boundaries."""
    found = run_boundaries(MASKS[kind](height, width))
    found.setflags(write=False)
    return found


@lru_cache(maxsize=8)
def _noisy_mask(height: int, width: int) -> np.ndarray:
    """A leak over the whole image with holes, like a random-weight SAM 2's masks (fixed seed)."""
    blocks = np.random.default_rng(0).random((-(-height // 4), -(-width // 4))) > 0.07
    mask = np.ascontiguousarray(blocks.repeat(4, axis=0).repeat(4, axis=1)[:height, :width])
    mask.setflags(write=False)
    return mask


MASKS = {"ellipse": _fixed_mask, "noisy": _noisy_mask}
MASK_RUNS = ("device", "host")
_LOGITS = np.zeros((1, *LOW_RES), np.float32)
_LOGITS.setflags(write=False)


class ZeroCostTool(SegmentationTool):
    """Answers every prompt with the same precomputed mask; ``decode_batch`` is free too."""

    name = NAME
    supports_batch_decode = True

    def __init__(self, mask_runs: str = "device", mask: str = "ellipse", launch_ms: float = 0.0) -> None:
        super().__init__()
        if mask_runs not in MASK_RUNS:
            raise ValueError(f"mask_runs must be one of {', '.join(MASK_RUNS)}, got {mask_runs!r}")
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if launch_ms < 0:
            raise ValueError(f"launch_ms must be >= 0, got {launch_ms}")
        self.mask_runs, self.mask, self.launch_ms = mask_runs, mask, float(launch_ms)
        self.launches = 0  # decoder calls

    def decode_many(self, requests: Sequence[DecodeRequest]) -> list[Prediction]:
        self._launch()
        return super().decode_many(requests)

    def decode_encoded(self, requests: Sequence[DecodeRequest]) -> list[EncodedPrediction]:
        if self.mask_runs == "host":
            return super().decode_encoded(requests)  # through decode_many: one launch
        start = time.perf_counter()
        self._launch()
        answers = []
        for i, (embedding, prompt) in enumerate(requests):
            if prompt.is_empty:
                raise ToolError(f"prompt {i}: a prediction needs a box or at least one point")
            size = embedding.image_size
            answers.append(EncodedPrediction.from_boundaries(_fixed_boundaries(self.mask, *size), size,
                                                             _LOGITS.copy(), 1.0))
        self.count_decodes(len(requests), time.perf_counter() - start)
        return answers

    def _launch(self) -> None:
        """Hold the interpreter for ``launch_ms`` (Python bytecode, which keeps the lock, as the
        dispatch of a forward's operators does)."""
        self.launches += 1
        deadline = time.perf_counter() + self.launch_ms / 1000
        while time.perf_counter() < deadline:
            pass

    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        return ImageEmbedding(data=None, image_size=(int(image.shape[0]), int(image.shape[1])), nbytes=1024)

    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        return Prediction(mask=MASKS[self.mask](*embedding.image_size), logits=_LOGITS.copy(), score=1.0)


def build_zero_cost_tool(checkpoint: object = None, device: str = "cpu", mask_runs: str = "device",
                         mask: str = "ellipse", launch_ms: float = 0.0, **options: object) -> ZeroCostTool:
    if options:
        raise ValueError(f"the zero-cost tool takes only mask_runs, mask and launch_ms, got {sorted(options)}")
    return ZeroCostTool(mask_runs, mask, launch_ms)


def register() -> None:
    """Make ``--tool zero-cost`` buildable by name in this process (server children call this)."""
    from medseg_agent.tools.registry import register_tool

    register_tool(NAME, build_zero_cost_tool)
