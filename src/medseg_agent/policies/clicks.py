"""The standard simulated-click rule (RITM / SimpleClick evaluation), shared by clicker and expert."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    positive: bool
    depth: float  # distance to the error region's border, in pixels


def interior_distance(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel to the nearest non-region pixel; the image border counts as
    outside (padding), as in RITM, so clicks stay away from image edges."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(
    pred: np.ndarray, gt: np.ndarray, clicked: Iterable[tuple[float, float]] = ()
) -> Click | None:
    """Interior-most point of the larger error region; positive for misses, negative for leaks.

    Positive wins only when the false-negative depth is strictly larger (RITM's rule). Pixels
    already clicked are excluded. Returns None when nothing is left to correct.
    """
    fn = np.logical_and(gt, np.logical_not(pred))
    fp = np.logical_and(pred, np.logical_not(gt))
    for x, y in clicked:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= yi < gt.shape[0] and 0 <= xi < gt.shape[1]:
            fn[yi, xi] = fp[yi, xi] = False
    fn_dist = interior_distance(fn) if fn.any() else None
    fp_dist = interior_distance(fp) if fp.any() else None
    fn_max = float(fn_dist.max()) if fn_dist is not None else 0.0
    fp_max = float(fp_dist.max()) if fp_dist is not None else 0.0
    if fn_max <= 0 and fp_max <= 0:
        return None
    positive = fn_max > fp_max
    dist = fn_dist if positive else fp_dist
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x), int(y), positive, fn_max if positive else fp_max)
