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
    return _padded_distance(region)[1:-1, 1:-1]


def _padded_distance(region: np.ndarray) -> np.ndarray:
    """The distance map of the region with a one-pixel ring of outside around it (distance 0)."""
    pixels = np.ascontiguousarray(region).view(np.uint8) if region.dtype == np.bool_ else region.astype(np.uint8)
    padded = cv2.copyMakeBorder(pixels, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def deepest_point(region: np.ndarray) -> tuple[float, int, int]:
    """(depth, x, y) of the region's interior-most pixel, the first in raster order on a tie.

    Computed on the region's bounding box only: the nearest outside pixel of any region pixel lies in
    that box or on the ring just around it, so the depths are those of the whole image, and a small
    error region on a 1024² image costs a small transform. Depths are compared as exact squared
    pixel distances (integers), so a tie is a tie whatever the transform's float rounding; only the
    pixels that can reach the largest square are squared, since squaring a whole 1024² map cost as
    much as half its transform (this rule runs for every corrective click of the expert and of the
    rollout benchmark's clients).
    """
    region = np.asarray(region)
    x0, y0, width, height = cv2.boundingRect(region.astype(np.uint8, copy=False))
    if width == 0 or height == 0:
        return 0.0, 0, 0
    dist = _padded_distance(region[y0 : y0 + height, x0 : x0 + width]).ravel()
    largest = float(np.rint(float(dist.max()) ** 2))  # rint of a square grows with the distance
    # every pixel whose rounded square is the largest lies at or above this distance (the ring's 0s never)
    candidates = np.flatnonzero(dist >= math.nextafter(math.sqrt(largest - 0.5), 0.0))
    squared = np.rint(dist[candidates].astype(np.float64) ** 2)
    first = int(candidates[int(np.argmax(squared))])  # candidates ascend, argmax takes the first
    y, x = divmod(first, width + 2)
    return math.sqrt(squared.max()), x0 + x - 1, y0 + y - 1


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
