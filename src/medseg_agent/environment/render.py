"""What the policy sees: the image with the current mask, clicks and box drawn on a resized view.

The base view (resized original) and its green-tinted twin are computed once per episode
(:func:`tinted`); each step only resizes the mask and copies tinted pixels under it, which keeps
rendering well under a millisecond for a 512 view of a 1024 image.
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


def tinted(base_view: np.ndarray) -> np.ndarray:
    """``base_view`` blended with the mask colour everywhere; masked pixels are copied from it."""
    colour = np.empty_like(base_view)
    colour[:] = MASK_COLOR.astype(np.uint8)
    return cv2.addWeighted(base_view, 1 - MASK_ALPHA, colour, MASK_ALPHA, 0)


def render_overlay(
    base_view: np.ndarray,
    mask: np.ndarray | None,
    image_size: tuple[int, int],
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] = (),
    labels: Sequence[int] = (),
    tinted_view: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``mask`` (full-res bool), ``box`` and ``points`` (full-res pixels) on ``base_view``.

    Pass ``tinted_view = tinted(base_view)`` when rendering many steps of one episode.
    """
    view = base_view.copy()
    vh, vw = view.shape[:2]
    h, w = image_size
    sx, sy = vw / w, vh / h
    if mask is not None and mask.any():
        mask_bytes = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
        small = mask_bytes if mask.shape == (vh, vw) else cv2.resize(
            mask_bytes, (vw, vh), interpolation=cv2.INTER_NEAREST
        )
        cv2.copyTo(tinted(base_view) if tinted_view is None else tinted_view, small, view)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
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
