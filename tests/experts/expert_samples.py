"""Synthetic samples with known geometry for the expert tests."""

from __future__ import annotations

import numpy as np

from medseg_agent.vocabulary.sample import Sample


def sample_from_mask(
    mask: np.ndarray, target: str = "bright structure", sample_id: str = "s0", seed: int = 0
) -> Sample:
    """A noisy gray image where the target is bright: easy enough for the classic tool."""
    rng = np.random.default_rng(seed)
    image = np.clip(60 + 120 * mask + rng.normal(0, 10, mask.shape), 0, 255).astype(np.uint8)
    return Sample(np.stack([image] * 3, axis=2), mask, target, "CT", "synthetic", sample_id)


def discs(h: int, w: int, centres: list[tuple[int, int]], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros((h, w), dtype=bool)
    for cx, cy in centres:
        mask |= (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    return mask


def bar(h: int = 120, w: int = 160, thickness: int = 6) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[h // 2 - thickness // 2 : h // 2 + thickness // 2, 20 : w - 20] = True
    return mask
