"""GrabCut (OpenCV) on a trimap: colour models of the box against its surroundings."""

from __future__ import annotations

import cv2
import numpy as np

from medseg_agent.tools.classic.seeds import FG, PR_BG, PR_FG

ITERATIONS = 4
#: GrabCut learns the background from the pixels outside the box; with fewer than this share of the
#: region there (a box over nearly the whole image, e.g. a field of nuclei) an Otsu split answers.
MIN_BACKGROUND = 0.1


def guide_image(feat: np.ndarray, gray: bool) -> np.ndarray:
    """The 3-channel uint8 image GrabCut models: Lab, or the gray intensity three times (an
    (intensity, local mean, local contrast) image measured worse: see docs/tools.md)."""
    chans = feat if not gray else np.dstack([feat[:, :, 0]] * 3)
    return np.clip(chans * 255.0 + 0.5, 0, 255).astype(np.uint8)


def grabcut(guide: np.ndarray, tri: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """The foreground GrabCut settles on; a box over (nearly) the whole region gets an Otsu split instead."""
    fgs = np.isin(tri, (FG, PR_FG))
    if fgs.sum() < 10:
        return tri == FG
    if (~fgs).sum() < max(10, MIN_BACKGROUND * tri.size):
        # (almost) no background to learn from, e.g. a box over the whole image: split the open
        # pixels by Otsu on the first channel; the class rarer on the region's rim is the object
        tri = tri.copy()
        g = guide[:, :, 0]
        open_ = tri == PR_FG
        t, _ = cv2.threshold(g[open_].reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        high = g > t
        rim = np.zeros(tri.shape, bool)
        rim[[0, -1], :] = rim[:, [0, -1]] = True
        fg_high = high[rim].mean() <= 0.5
        tri[open_ & (high != fg_high)] = PR_BG
        # GrabCut's colour models grow such a split over the blurred edges of many small parts
        return np.isin(tri, (FG, PR_FG))
    if not np.isin(tri, (PR_FG, PR_BG)).any():
        return tri == FG
    mask = tri.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.setRNGSeed(0)
        cv2.grabCut(guide, mask, None, bgd, fgd, max(1, iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models (e.g. a constant image): keep the trimap's guess
        return fgs
    return np.isin(mask, (FG, PR_FG))
