"""The standard simulated-click rule (RITM / SimpleClick evaluation), shared by clicker and expert."""

from __future__ import annotations

import math
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


def deepest_point(region: np.ndarray) -> tuple[float, int, int]:
    """(depth, x, y) of the region's interior-most pixel, the first in raster order on a tie.

    Computed on the region's bounding box only: the nearest outside pixel of any region pixel lies in
    that box or on the ring just around it, so the depths are those of the whole image, and a small
    error region on a 1024² image costs a small transform. Depths are compared as exact squared
    pixel distances (integers), so a tie is a tie whatever the transform's float rounding.
    """
    x0, y0, width, height = cv2.boundingRect(np.asarray(region, dtype=np.uint8))
    if width == 0 or height == 0:
        return 0.0, 0, 0
    dist = interior_distance(region[y0 : y0 + height, x0 : x0 + width])
    squared = np.rint(dist.astype(np.float64) ** 2)
    y, x = np.unravel_index(int(np.argmax(squared)), squared.shape)
    return math.sqrt(squared[y, x]), x0 + int(x), y0 + int(y)


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
    fn_max, fn_x, fn_y = deepest_point(fn)
    fp_max, fp_x, fp_y = deepest_point(fp)
    if fn_max <= 0 and fp_max <= 0:
        return None
    if fn_max > fp_max:
        return Click(fn_x, fn_y, True, fn_max)
    return Click(fp_x, fp_y, False, fp_max)
