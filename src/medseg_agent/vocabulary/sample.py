"""What every dataset reader yields: one 2-D image with one target mask and its description."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sample:
    """One segmentation task.

    ``image`` is display-ready RGB uint8 (H, W, 3): medical intensities are already windowed.
    ``mask`` is the (H, W) bool ground truth of ``target``, or None when there is none (segmenting a
    new image). ``spacing`` is (row, col) in mm when known, so surface metrics can be reported in mm.
    """

    image: np.ndarray
    mask: np.ndarray | None
    target: str
    modality: str
    dataset: str
    sample_id: str
    spacing: tuple[float, float] | None = None
    split: str = "test"
    image_path: str | None = None
    mask_path: str | None = None
    meta: dict = field(default_factory=dict)
