"""Seeded watershed (scikit-image) on the gradient magnitude: grows seeds to the strongest edges."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import watershed as _skimage_watershed

from medseg_agent.tools.classic.seeds import BG, FG


def gradient(feat: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude summed over channels."""
    grad = np.zeros(feat.shape[:2], np.float32)
    for c in range(feat.shape[2]):
        gx = cv2.Sobel(feat[:, :, c], cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(feat[:, :, c], cv2.CV_32F, 0, 1, ksize=3)
        grad += gx * gx + gy * gy
    return np.sqrt(grad)


def watershed(feat: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Foreground and background seeds flooded over the gradient; the trimap's guess without both."""
    markers = np.zeros(tri.shape, np.int32)
    markers[tri == FG] = 1
    markers[tri == BG] = 2
    if not (markers == 1).any() or not (markers == 2).any():
        return tri == FG
    return _skimage_watershed(gradient(feat), markers) == 1
