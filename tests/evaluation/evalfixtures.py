"""Synthetic datasets for the evaluation tests: bright discs on noise, in the BiomedParse layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medseg_agent.vocabulary.sample import Sample


def write_disc_dataset(root: Path, count: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> Path:
    """``root/test/<id>_<CT|MRI>_abdomen.png`` + ``root/test_mask/<id>_<mod>_abdomen_bright+disc.png``."""
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "test_mask").mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(disc_samples(count, size, seed)):
        stem = f"s{i:03d}_{sample.modality}_abdomen"
        Image.fromarray(sample.image).save(root / "test" / f"{stem}.png")
        Image.fromarray((sample.mask * 255).astype(np.uint8)).save(root / "test_mask" / f"{stem}_bright+disc.png")
    return root


def disc_samples(count: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[Sample]:
    """The same discs as :func:`write_disc_dataset`, as in-memory samples (dataset ``synthetic``)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    samples = []
    for i in range(count):
        cx, cy, r = rng.integers(w // 3, 2 * w // 3), rng.integers(h // 3, 2 * h // 3), rng.integers(10, h // 4)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        image = np.clip(60 + 120 * mask + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
        modality = "CT" if i % 2 else "MRI"
        samples.append(
            Sample(np.stack([image] * 3, axis=2), mask, "bright disc", modality, "synthetic", f"disc-{i}")
        )
    return samples
