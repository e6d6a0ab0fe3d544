"""Trimaps: what the prompt fixes (hard seeds) and what an algorithm may decide (open pixels).

A trimap uses OpenCV's GrabCut codes for every algorithm: ``BG`` / ``FG`` are hard seeds,
``PR_BG`` / ``PR_FG`` open pixels with an initial guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from medseg_agent.tools.classic.frame import Embedded, Roi, box_mask, crop_work, image_edge
from medseg_agent.tools.classic.snap import noise_sigma

BG, FG, PR_BG, PR_FG = cv2.GC_BGD, cv2.GC_FGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD

#: Radius (ROI pixels) of the seed drawn at each click.
CLICK_RADIUS = 3.0
#: Around a click that contradicts the previous mask, the disc re-decided, in multiples of the
#: click's distance to the previous contour.
REFINE_CLEAR = 2.0
#: Half-width (fraction of the ROI side) of the band along the previous contour that is open to the
#: algorithm (inside the discs of the clicks).
REFINE_BAND = 0.01
#: Seed ellipse (fraction of the box) that seeded algorithms start from when a box is all they have.
BOX_CORE = 0.15
#: With no seeded component, components at least this fraction of the largest one are kept.
KEEP_FRACTION = 0.1
#: A contradicting click's seed (up to half its distance to the previous contour) stays where the
#: gray level is within this many noise sigmas of the clicked pixel's.
HOMOGENEOUS = 15.0


@dataclass
class Job:
    """One decode's inputs, in full-resolution coordinates."""

    emb: Embedded
    region: np.ndarray  # box (or pseudo box) x1, y1, x2, y2
    has_box: bool
    points: np.ndarray
    labels: np.ndarray
    prior: np.ndarray | None  # working-frame logits
    H: int
    W: int


@dataclass
class Seeds:
    """A trimap at ROI resolution: hard seeds (BG/FG) and open pixels (PR_BG/PR_FG, the initial
    guess); on a refinement also the previous mask and where the clicks allow it to change."""

    tri: np.ndarray
    prev: np.ndarray | None = None
    grow: np.ndarray | None = None  # where positive clicks let the previous mask grow
    shrink: np.ndarray | None = None  # where negative clicks let it shrink
    pos_seeds: np.ndarray | None = None  # the seeds of those clicks
    neg_seeds: np.ndarray | None = None

    def settle(self, fg: np.ndarray) -> np.ndarray:
        """A refinement's answer limited to what the clicks allow: the previous mask, plus what
        ``fg`` adds in the positive discs, minus what it drops in the negative ones, each change
        connected to the click that asked for it (not a flood from elsewhere along the contour)."""
        assert self.prev is not None and self.grow is not None and self.shrink is not None
        assert self.pos_seeds is not None and self.neg_seeds is not None
        added = _reached(fg & self.grow & ~self.prev, self.pos_seeds)
        removed = _reached(~fg & self.shrink & ~self.grow & self.prev, self.neg_seeds)
        return (self.prev | added) & ~removed


def trimap(job: Job, roi: Roi, method: str, feat: np.ndarray) -> Seeds:
    """The seeds of one decode. A refinement may change the previous mask only in a disc around each
    click that contradicts it (radius REFINE_CLEAR times the click's distance to the contour): a
    positive click may only add to the mask there, a negative one only remove from it. Its seed
    grows with that distance but stays where the image looks like the clicked pixel (``feat``: the
    ROI features), so a click on a small separate part does not claim its surroundings."""
    h, w = roi.h, roi.w
    tri = np.full((h, w), PR_BG, np.uint8)
    inside = box_mask(job.region, roi)
    ys, xs = np.nonzero(inside)
    ya, yb, xa, xb = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    xy = roi.to_roi(job.points)
    radii = np.full(len(xy), CLICK_RADIUS)
    rim = max(1, round(0.01 * max(h, w)))

    prev = grow = shrink = None
    if job.prior is not None:
        prev = crop_work(job.prior, roi, job.H, job.W) > 0
        if job.has_box:
            prev &= inside
        if not prev.any():
            prev = None
    if prev is not None:
        noise = noise_sigma(feat[:, :, 0], max(1, round(roi.sy)))
        d_in = cv2.distanceTransform(prev.astype(np.uint8), cv2.DIST_L2, 3)
        d_out = cv2.distanceTransform((~prev).astype(np.uint8), cv2.DIST_L2, 3)
        band = max(1.0, REFINE_BAND * max(h, w))
        tri[prev] = PR_FG
        tri[prev & (d_in > band)] = FG
        tri[~prev & (d_out > band)] = BG
        yy, xx = np.ogrid[:h, :w]
        grow, shrink = np.zeros((h, w), bool), np.zeros((h, w), bool)
        contradicting = np.zeros(len(xy), bool)
        for i, ((x, y), lab) in enumerate(zip(xy, job.labels, strict=True)):
            xi, yi = round(x), round(y)
            if not (0 <= xi < w and 0 <= yi < h):
                continue
            # distance from the click to the previous contour, when the click corrects it
            wrong = (lab == 1 and not prev[yi, xi]) or (lab == 0 and prev[yi, xi])
            d = float(d_out[yi, xi] if lab == 1 else d_in[yi, xi]) if wrong else 0.0
            d = min(d, float(max(h, w)))
            reach = _homogeneous_radius(feat, xi, yi, HOMOGENEOUS * noise) if job.emb.gray else np.inf
            # (a click in a thin error band next to the contour: a seed no wider than the band)
            floor = CLICK_RADIUS if d == 0 else min(CLICK_RADIUS, max(1.0, d))
            radii[i] = max(floor, min(0.5 * d, reach))
            if d > 0:
                contradicting[i] = True
                r = REFINE_CLEAR * d + band
                disc = (yy - yi) ** 2 + (xx - xi) ** 2 <= r * r
                (grow if lab == 1 else shrink)[disc] = True
                # a positive click may only add to the mask, a negative one only remove from it
                tri[disc & (tri == (BG if lab == 1 else FG))] = PR_BG if lab == 1 else PR_FG
        if job.has_box:
            tri[~inside] = BG
        if not (tri == FG).any() and method != "grabcut":
            tri[prev & (d_in >= max(1.0, 0.5 * float(d_in.max())))] = FG
    elif job.has_box:
        tri[inside] = PR_FG
        tri[~inside] = BG
        if method != "grabcut":
            # algorithms that grow from seeds need a foreground seed: the box's central ellipse
            cy, cx = (ya + yb - 1) / 2, (xa + xb - 1) / 2
            ry, rx = max(1.0, BOX_CORE * (yb - ya) / 2), max(1.0, BOX_CORE * (xb - xa) / 2)
            yy, xx = np.ogrid[:h, :w]
            tri[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = FG
    # background rim on ROI sides that cut through the image; with no box on every side
    edge = image_edge(roi, job.H, job.W)
    sides = {"top": np.s_[:rim, :], "bottom": np.s_[-rim:, :], "left": np.s_[:, :rim], "right": np.s_[:, -rim:]}
    for side, at_image_edge in edge.items():
        if not at_image_edge or (not job.has_box and prev is None and method != "grabcut"):
            tri[sides[side]] = BG
    if not job.has_box and prev is None and method == "grabcut":
        # GrabCut from clicks alone: a disc around each positive click is the initial guess
        for (x, y), lab in zip(xy, job.labels, strict=True):
            if lab == 1:
                cv2.circle(tri, (round(x), round(y)), max(2, round(0.15 * max(h, w))), int(PR_FG), -1)
    # clicks: hard seeds, later clicks drawn over earlier ones
    click_seeds = {1: np.zeros((h, w), np.uint8), 0: np.zeros((h, w), np.uint8)}
    for i, ((x, y), lab, r) in enumerate(zip(xy, job.labels, radii, strict=True)):
        xi, yi = round(x), round(y)
        if 0 <= xi < w and 0 <= yi < h:
            cv2.circle(tri, (xi, yi), max(1, round(r)), int(FG if lab == 1 else BG), -1)
            tri[yi, xi] = FG if lab == 1 else BG
            if prev is not None and contradicting[i]:
                cv2.circle(click_seeds[int(lab)], (xi, yi), max(1, round(r)), 1, -1)
    if prev is None:
        return Seeds(tri)
    return Seeds(tri, prev, grow, shrink, click_seeds[1].astype(bool), click_seeds[0].astype(bool))


def _reached(change: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The parts of ``change`` connected to ``seeds`` (which count as part of it)."""
    region = change | seeds
    if not seeds.any():
        return np.zeros_like(change)
    n, lab = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(lab[seeds])] = True
    keep[0] = False
    return keep[lab] & change


def _homogeneous_radius(feat: np.ndarray, x: int, y: int, tolerance: float) -> float:
    """How far from (x, y) the features stay within ``tolerance`` of the clicked pixel's."""
    similar = np.linalg.norm(feat - feat[y, x], axis=2) < max(tolerance, 1e-3)
    return float(cv2.distanceTransform(similar.astype(np.uint8), cv2.DIST_L2, 3)[y, x])


def clean(fg: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Seeds win; keep the components that hold a foreground seed (or, with none, the large ones);
    fill holes."""
    fg = fg.copy()
    fg[tri == FG] = True
    fg[tri == BG] = False
    if fg.any():
        n, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        if n > 2:
            sizes = np.bincount(lab.ravel(), minlength=n)
            sizes[0] = 0
            keep = sizes >= KEEP_FRACTION * sizes.max()
            seeded = np.unique(lab[tri == FG])
            if len(seeded[seeded > 0]):
                keep = np.zeros(n, bool)
                keep[seeded] = True
            keep[0] = False
            fg = keep[lab]
        fg = ndi.binary_fill_holes(fg)
        fg[tri == BG] = False
    return fg
