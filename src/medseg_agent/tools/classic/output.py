"""From an ROI mask to the tool's answer: a full-resolution mask that honours the clicks, signed-
distance logits in the working frame (what ``mask_input`` brings back next turn), and a score."""

from __future__ import annotations

import math

import cv2
import numpy as np

from medseg_agent.tools.classic.frame import Embedded, Roi
from medseg_agent.tools.classic.seeds import Seeds
from medseg_agent.tools.classic.watershed import gradient
from medseg_agent.vocabulary.prompts import Prediction

LOGIT_CLIP = 16.0


def signed_distance(fg: np.ndarray) -> np.ndarray:
    """Distance to the contour, positive inside, clipped to +-LOGIT_CLIP."""
    m = fg.astype(np.uint8)
    if not m.any():
        return np.full(fg.shape, -LOGIT_CLIP, np.float32)
    if m.all():
        return np.full(fg.shape, LOGIT_CLIP, np.float32)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    return np.clip(inside - outside, -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)


def edge_score(feat: np.ndarray, fg: np.ndarray) -> float:
    """Heuristic confidence in [0, 1): how much stronger the image edges are on the mask's contour
    than on average in the region (0.5: a contour that ignores the image; towards 1: sharp edges)."""
    if not fg.any() or fg.all():
        return 0.0
    m = fg.astype(np.uint8)
    contour = (m - cv2.erode(m, np.ones((3, 3), np.uint8))).astype(bool)
    grad = gradient(feat)
    ratio = float(grad[contour].mean()) / (float(grad.mean()) + 1e-6)
    return ratio / (ratio + 1.0)


def assemble(
    emb: Embedded,
    fg: np.ndarray,
    roi: Roi,
    points: np.ndarray,
    labels: np.ndarray,
    score: float,
    H: int,
    W: int,
) -> Prediction:
    """The ROI mask placed in the image (bilinear signed distance: smooth contours), its logits,
    and the clicked pixels forced to their labels."""
    sdf = signed_distance(fg)
    fh, fw = roi.y1 - roi.y0, roi.x1 - roi.x0
    mask = np.zeros((H, W), bool)
    mask[roi.y0 : roi.y1, roi.x0 : roi.x1] = cv2.resize(sdf, (fw, fh), interpolation=cv2.INTER_LINEAR) > 0
    # working-frame logits (signed distance in working pixels): what mask_input brings back
    wh, ww = emb.work_size
    sy, sx = emb.work_scale
    logits = np.full((wh, ww), -LOGIT_CLIP, np.float32)
    ya, yb = math.floor(roi.y0 * sy), min(wh, math.ceil(roi.y1 * sy))
    xa, xb = math.floor(roi.x0 * sx), min(ww, math.ceil(roi.x1 * sx))
    if yb > ya and xb > xa:
        ys = ((np.arange(ya, yb) + 0.5) / sy - roi.y0) * roi.sy - 0.5
        xs = ((np.arange(xa, xb) + 0.5) / sx - roi.x0) * roi.sx - 0.5
        mx, my = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        patch = cv2.remap(sdf, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-LOGIT_CLIP)
        logits[ya:yb, xa:xb] = np.clip(patch * float(sy / roi.sy), -LOGIT_CLIP, LOGIT_CLIP)
    # hard constraints at full resolution: the clicked pixels themselves
    r_full = max(0, round(0.5 / max(sy, sx) - 0.5))
    for (x, y), lab in zip(points, labels, strict=True):
        xi, yi = round(x), round(y)
        if not (0 <= xi < W and 0 <= yi < H):  # a click off the image constrains nothing
            continue
        mask[max(0, yi - r_full) : yi + r_full + 1, max(0, xi - r_full) : xi + r_full + 1] = bool(lab == 1)
        wy = min(wh - 1, int((yi + 0.5) * sy))
        wx = min(ww - 1, int((xi + 0.5) * sx))
        logits[wy, wx] = max(logits[wy, wx], 1.0) if lab == 1 else min(logits[wy, wx], -1.0)
    return Prediction(mask=mask, logits=logits, score=float(score) if mask.any() else 0.0)


def settle_full(
    prediction: Prediction,
    emb: Embedded,
    prior: np.ndarray,
    seeds: Seeds,
    roi: Roi,
    points: np.ndarray,
    labels: np.ndarray,
) -> Prediction:
    """A refinement's full-resolution mask held to the clicks' promise: the previous mask (read
    back from the logits it returned) outside the clicks' discs, only growing in a positive click's
    disc and only shrinking in a negative one's; the logits follow the mask when this changed it."""
    assert seeds.grow is not None and seeds.shrink is not None
    H, W = prediction.mask.shape
    prev = (cv2.resize(prior, (W, H), interpolation=cv2.INTER_LINEAR) if prior.shape != (H, W) else prior) > 0
    fh, fw = roi.y1 - roi.y0, roi.x1 - roi.x0
    grow, shrink = np.zeros((H, W), bool), np.zeros((H, W), bool)
    for full, part in ((grow, seeds.grow), (shrink, seeds.shrink & ~seeds.grow)):
        full[roi.y0 : roi.y1, roi.x0 : roi.x1] = cv2.resize(
            part.astype(np.uint8), (fw, fh), interpolation=cv2.INTER_NEAREST
        ).astype(bool)
    new = prediction.mask
    mask = (prev | (new & grow)) & ~(~new & shrink)
    for (x, y), lab in zip(points, labels, strict=True):  # the clicked pixels, as assemble set them
        xi, yi = round(x), round(y)
        if 0 <= xi < W and 0 <= yi < H:
            mask[yi, xi] = bool(lab == 1)
    if np.array_equal(mask, new):
        return prediction
    return Prediction(mask=mask, logits=_logits_of(mask, emb, points, labels), score=prediction.score)


def _logits_of(mask: np.ndarray, emb: Embedded, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Working-frame logits (signed distance in working pixels) of a full-resolution mask."""
    wh, ww = emb.work_size
    sy, sx = emb.work_scale
    sdf = signed_distance(mask)
    if (wh, ww) != mask.shape:
        sdf = cv2.resize(sdf, (ww, wh), interpolation=cv2.INTER_LINEAR) * float(sy)
    logits = np.clip(sdf, -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)
    for (x, y), lab in zip(points, labels, strict=True):
        xi, yi = round(x), round(y)
        if 0 <= xi < mask.shape[1] and 0 <= yi < mask.shape[0]:
            wy, wx = min(wh - 1, int((yi + 0.5) * sy)), min(ww - 1, int((xi + 0.5) * sx))
            logits[wy, wx] = max(logits[wy, wx], 1.0) if lab == 1 else min(logits[wy, wx], -1.0)
    return logits


def empty(emb: Embedded, H: int, W: int) -> Prediction:
    """Nothing segmented."""
    wh, ww = emb.work_size
    return Prediction(mask=np.zeros((H, W), bool), logits=np.full((wh, ww), -LOGIT_CLIP, np.float32), score=0.0)
