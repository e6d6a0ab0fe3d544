"""Targets made of several separate parts (nuclei in a field, a lesion with satellites).

A positive click on a part that is separate from the mask says the target has several parts, and
what the clicked part looks like. The other parts in the prompt's region that look like it (closer
in grey level or colour to the clicked part than to what lies around it) come back with it, so
that one click does not add one nucleus of forty. A click that only extends a part of the mask says
nothing of the kind and adds nothing more: a single lesion stays as it is.
"""

from __future__ import annotations

import cv2
import numpy as np

from medseg_agent.tools.classic.snap import disc, noise_sigma

#: The clicked part must stand this many noise sigmas out of its surroundings (a faint part's
#: look-alikes would be noise).
MIN_CONTRAST = 4.0
#: A look-alike's mean lies at least this far from the surroundings towards the clicked part (0: the
#: surroundings' level, 1: the clicked part's).
MIN_LIKENESS = 0.6
#: A look-alike is at least this fraction of the clicked part (smaller ones are noise)...
MIN_SIZE = 0.15
#: ...and at most this many times its size (a larger one is another structure that happens to look alike).
MAX_SIZE = 3.0


def look_alikes(
    feat: np.ndarray, fg: np.ndarray, prev: np.ndarray, clicked: np.ndarray, region: np.ndarray, zoom: float
) -> np.ndarray:
    """The parts of ``region`` (beyond a one-pixel ring around ``fg``, not cut by the region's edge)
    that look like the parts of ``fg`` holding ``clicked`` pixels and separate from ``prev``; empty
    when there are none. ``feat``: ROI features (h, w, C) in [0, 1]; ``zoom``: ROI pixels per image
    pixel."""
    none = np.zeros(fg.shape, bool)
    n, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    ids = np.unique(lab[clicked & fg])
    ids = ids[ids > 0]
    touching_prev = np.unique(lab[prev & fg])
    ids = ids[~np.isin(ids, touching_prev)]
    if not len(ids):
        return none
    part = np.isin(lab, ids)
    halo = cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    around = region & ~cv2.dilate(part.astype(np.uint8), disc(3.0 * max(zoom, 1.0))).astype(bool) & ~halo
    if part.sum() < 4 or around.sum() < 4:
        return none
    mu_part, mu_around = feat[part].mean(axis=0), feat[around].mean(axis=0)
    axis = mu_part - mu_around
    contrast = float(np.linalg.norm(axis))
    if contrast < MIN_CONTRAST * noise_sigma(feat[:, :, 0], max(1, round(zoom))) + 1e-3:
        return none
    # where a pixel lies between the surroundings (0) and the clicked part (1)
    likeness = ((feat - mu_around) @ axis) / (contrast * contrast)
    candidate = (likeness > 0.5) & region & ~halo
    m, comp = cv2.connectedComponents(candidate.astype(np.uint8), connectivity=8)
    if m < 2:
        return none
    sizes = np.bincount(comp.ravel(), minlength=m)
    means = np.bincount(comp.ravel(), likeness.ravel(), minlength=m) / np.maximum(sizes, 1)
    one = part.sum() / len(ids)
    keep = (sizes >= MIN_SIZE * one) & (sizes <= MAX_SIZE * one) & (means >= MIN_LIKENESS)
    # a part cut by the region's edge is something larger that runs out of it (the ROI's own sides
    # are the image's edges where the region reaches them)
    edge = region & ~cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=1).astype(bool)
    keep[np.unique(comp[edge])] = False
    keep[0] = False
    return keep[comp]

