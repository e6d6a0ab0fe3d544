"""What the policy sees: the image with the current mask, clicks and box drawn on a resized view.

The base view (resized original) is computed once per episode; each step only resizes the mask and
blends, which keeps rendering at about a millisecond for a 512 view of a 1024 image.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MASK_COLOR = np.array([0, 255, 0], dtype=np.float32)  # green, as the prompts describe
POSITIVE_COLOR = (0, 255, 0)
NEGATIVE_COLOR = (255, 0, 0)
BOX_COLOR = (255, 215, 0)
MASK_ALPHA = 0.4


def resize_view(image: np.ndarray, view_size: tuple[int, int]) -> np.ndarray:
    h, w = view_size
    if image.shape[:2] == (h, w):
        return image.copy()
    interpolation = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interpolation)


def render_overlay(
    base_view: np.ndarray,
    mask: np.ndarray | None,
    image_size: tuple[int, int],
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] = (),
    labels: Sequence[int] = (),
) -> np.ndarray:
    """Draw ``mask`` (full-res bool), ``box`` and ``points`` (full-res pixels) on ``base_view``."""
    view = base_view.copy()
    vh, vw = view.shape[:2]
    h, w = image_size
    sx, sy = vw / w, vh / h
    if mask is not None and mask.any():
        small = mask if mask.shape == (vh, vw) else cv2.resize(
            mask.astype(np.uint8), (vw, vh), interpolation=cv2.INTER_NEAREST
        )
        sel = small.astype(bool)
        view[sel] = (view[sel].astype(np.float32) * (1 - MASK_ALPHA) + MASK_COLOR * MASK_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(view, contours, -1, POSITIVE_COLOR, 1)
    thickness = max(1, round(max(vh, vw) / 256))
    if box is not None:
        x1, y1, x2, y2 = box
        cv2.rectangle(view, (round(x1 * sx), round(y1 * sy)), (round(x2 * sx), round(y2 * sy)), BOX_COLOR, thickness)
    radius = max(3, round(max(vh, vw) / 100))
    for (x, y), label in zip(points, labels, strict=True):
        centre = (round(x * sx), round(y * sy))
        cv2.circle(view, centre, radius + 1, (255, 255, 255), -1)
        cv2.circle(view, centre, radius, POSITIVE_COLOR if label else NEGATIVE_COLOR, -1)
    return view
