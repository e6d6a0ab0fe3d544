"""Where the classic tool works: the working frame of its logits and the region of interest (ROI).

Every algorithm runs on a crop around the prompt, resampled to a bounded side, so an action costs
about the same at 512 and 1024 px. These helpers convert between the full-resolution image, the
working frame (``logits`` live there) and the ROI grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from medseg_agent.vocabulary.errors import ToolError

#: Context added around the box on each side, as a fraction of its longest side (at least 6 px).
ROI_MARGIN = 0.25
#: Longest side a region of interest is processed at, per algorithm (bounds the latency).
ROI_SIDE = {"grabcut": 320, "random_walker": 192, "watershed": 384}
#: A smaller region is magnified to this side (at most ROI_MAX_ZOOM times): seeds, click discs and
#: smoothing are drawn in ROI pixels, and a 3-pixel click seed must not cover a 6-pixel lesion.
ROI_MIN_SIDE = 128
ROI_ZOOM_BELOW = 64
ROI_MAX_ZOOM = 8.0


@dataclass
class Embedded:
    """What the tool's ``encode`` precomputes for one image."""

    feat: np.ndarray  # (H, W, C) uint8 features at full resolution: gray (C=1) or CIE Lab (C=3)
    gray: bool
    work_size: tuple[int, int]  # (h, w) of the working frame (longest side <= max_side): logits live here

    @property
    def work_scale(self) -> tuple[float, float]:
        """(sy, sx): working pixels per full-resolution pixel."""
        return self.work_size[0] / self.feat.shape[0], self.work_size[1] / self.feat.shape[1]


@dataclass
class Roi:
    """A crop ``[y0:y1, x0:x1]`` of the full-resolution image, processed at ``(h, w)`` pixels."""

    y0: int
    y1: int
    x0: int
    x1: int
    h: int
    w: int

    @property
    def sy(self) -> float:
        return self.h / (self.y1 - self.y0)

    @property
    def sx(self) -> float:
        return self.w / (self.x1 - self.x0)

    def to_roi(self, xy: np.ndarray) -> np.ndarray:
        """Full-resolution (x, y) pixel coordinates -> ROI pixel coordinates (pixel centres kept)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        x = (xy[:, 0] + 0.5 - self.x0) * self.sx - 0.5
        y = (xy[:, 1] + 0.5 - self.y0) * self.sy - 0.5
        return np.stack([x, y], axis=1)


def roi_for(region: np.ndarray, side_cap: int, H: int, W: int) -> Roi:
    """The ROI around a box: the box plus a margin, processed at most ``side_cap`` pixels long."""
    x1, y1, x2, y2 = region
    side = max(x2 - x1, y2 - y1, 4.0)
    margin = max(ROI_MARGIN * side, 6.0)
    x0, y0 = max(0, math.floor(x1 - margin)), max(0, math.floor(y1 - margin))
    xe, ye = min(W, math.ceil(x2 + margin) + 1), min(H, math.ceil(y2 + margin) + 1)
    longest = max(ye - y0, xe - x0)
    f = min(1.0, side_cap / longest) if longest >= ROI_ZOOM_BELOW else min(ROI_MAX_ZOOM, ROI_MIN_SIDE / longest)
    return Roi(y0, ye, x0, xe, max(2, round((ye - y0) * f)), max(2, round((xe - x0) * f)))


def roi_features(emb: Embedded, roi: Roi, smooth: float) -> np.ndarray:
    """The ROI's features as float32 (h, w, C) in [0, 1], smoothed at ROI resolution."""
    crop = emb.feat[roi.y0 : roi.y1, roi.x0 : roi.x1]
    interp = cv2.INTER_AREA if crop.shape[0] >= roi.h else cv2.INTER_LINEAR
    f = cv2.resize(crop, (roi.w, roi.h), interpolation=interp).astype(np.float32) / 255.0
    if smooth > 0:
        f = cv2.GaussianBlur(f, (0, 0), smooth)
    return f.reshape(roi.h, roi.w, -1)


def crop_work(work_map: np.ndarray, roi: Roi, H: int, W: int) -> np.ndarray:
    """Resample a working-frame map onto the ROI grid."""
    wh, ww = work_map.shape
    sy, sx = wh / H, ww / W
    ys = ((np.arange(roi.h) + 0.5) / roi.sy + roi.y0) * sy - 0.5
    xs = ((np.arange(roi.w) + 0.5) / roi.sx + roi.x0) * sx - 0.5
    mx, my = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    return cv2.remap(work_map.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def box_mask(region: np.ndarray, roi: Roi) -> np.ndarray:
    """The (pseudo) box as a boolean mask on the ROI grid (never empty): the ROI pixels whose centre
    lies on one of the box's pixels (``x1..x2`` inclusive, so a magnified ROI keeps the whole box)."""
    inside = np.zeros((roi.h, roi.w), bool)
    x1, y1, x2, y2 = np.asarray(region, dtype=np.float64).reshape(4)
    xa = min(roi.w - 1, max(0, math.ceil((np.floor(x1 + 0.5) - roi.x0) * roi.sx - 0.5)))
    ya = min(roi.h - 1, max(0, math.ceil((np.floor(y1 + 0.5) - roi.y0) * roi.sy - 0.5)))
    xb = min(roi.w, max(math.ceil((np.floor(x2 + 0.5) + 1 - roi.x0) * roi.sx - 0.5), xa + 1))
    yb = min(roi.h, max(math.ceil((np.floor(y2 + 0.5) + 1 - roi.y0) * roi.sy - 0.5), ya + 1))
    inside[ya:yb, xa:xb] = True
    return inside


def box_fit(fg: np.ndarray, inside: np.ndarray) -> float:
    """IoU of the mask's bounding box with the box: a tight box touches the object on all sides."""
    if not fg.any():
        return 0.0
    ys, xs = np.nonzero(fg)
    by, bx = np.nonzero(inside)
    ih = max(0, min(ys.max(), by.max()) - max(ys.min(), by.min()) + 1)
    iw = max(0, min(xs.max(), bx.max()) - max(xs.min(), bx.min()) + 1)
    a = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    b = (by.max() - by.min() + 1) * (bx.max() - bx.min() + 1)
    return ih * iw / (a + b - ih * iw)


def clip_box(box: np.ndarray, H: int, W: int) -> np.ndarray:
    """A finite box as sorted (x1, y1, x2, y2) inside the image."""
    b = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(b).all():
        raise ToolError(f"box has non-finite coordinates: {box}")
    x1, x2 = sorted((b[0], b[2]))
    y1, y2 = sorted((b[1], b[3]))
    return np.array([np.clip(x1, 0, W - 1), np.clip(y1, 0, H - 1), np.clip(x2, 0, W - 1), np.clip(y2, 0, H - 1)])


def union_box(box: np.ndarray, pts: np.ndarray, pad: float, height: int, width: int) -> np.ndarray:
    """The box widened to hold the points that lie outside it (plus ``pad``)."""
    outside = (pts[:, 0] < box[0]) | (pts[:, 0] > box[2]) | (pts[:, 1] < box[1]) | (pts[:, 1] > box[3])
    if not outside.any():
        return box
    pts = pts[outside]
    lo = np.minimum(box[:2], pts.min(axis=0) - pad)
    hi = np.maximum(box[2:], pts.max(axis=0) + pad)
    return clip_box(np.concatenate([lo, hi]), height, width)


def grow_box(box: np.ndarray, factor: float, H: int, W: int) -> np.ndarray:
    """The box scaled about its centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = max(box[2] - box[0], 2.0) / 2 * factor, max(box[3] - box[1], 2.0) / 2 * factor
    return clip_box(np.array([cx - hw, cy - hh, cx + hw, cy + hh]), H, W)


def image_edge(roi: Roi, H: int, W: int) -> dict[str, bool]:
    """Which ROI sides are the image's own edges."""
    return {"top": roi.y0 == 0, "bottom": roi.y1 == H, "left": roi.x0 == 0, "right": roi.x1 == W}


def touches_border(fg: np.ndarray, roi: Roi, H: int, W: int) -> bool:
    """Whether the mask comes close to an ROI side that is not the image's own edge."""
    if not fg.any():
        return False
    r = max(2, round(0.03 * max(fg.shape)))
    sides = {"top": fg[:r], "bottom": fg[-r:], "left": fg[:, :r], "right": fg[:, -r:]}
    return any(sides[k].any() for k, at_edge in image_edge(roi, H, W).items() if not at_edge)
