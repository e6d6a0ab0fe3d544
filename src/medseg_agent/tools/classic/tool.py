"""The classic tool: which algorithm runs on which turn, in which region."""

from __future__ import annotations

import cv2
import numpy as np

from medseg_agent.tools.base import ImageEmbedding, SegmentationTool
from medseg_agent.tools.classic.boxmodel import box_segment, ellipse_prior
from medseg_agent.tools.classic.frame import (
    ROI_SIDE,
    Embedded,
    Roi,
    box_fit,
    box_mask,
    clip_box,
    grow_box,
    roi_features,
    roi_for,
    touches_border,
    union_box,
)
from medseg_agent.tools.classic.grabcut import MIN_BACKGROUND, grabcut, guide_image
from medseg_agent.tools.classic.output import LOGIT_CLIP, assemble, edge_score, empty, settle_full
from medseg_agent.tools.classic.parts import look_alikes
from medseg_agent.tools.classic.random_walker import random_walker
from medseg_agent.tools.classic.seeds import Job, Seeds, clean, trimap
from medseg_agent.tools.classic.snap import snap
from medseg_agent.tools.classic.watershed import watershed
from medseg_agent.vocabulary.errors import ToolError
from medseg_agent.vocabulary.prompts import Prediction, Prompt

METHODS = ("grabcut", "random_walker", "watershed")

#: Longest side of the working frame in which ``logits`` are returned.
WORK_SIDE = 512
#: Gaussian sigma (ROI pixels) applied to the features before any algorithm.
SMOOTH = 1.0
#: GrabCut from a box is retried with the fallback when it keeps less than this share of the box
#: (and on gray images, an answer still that small gives way to the box's inscribed ellipse).
MIN_FILL = 0.15
#: Half-size of the first search window around clicks alone, as a fraction of the image side.
POINT_WINDOW = 0.2
#: On gray images the grey-level models' answer to a box replaces the cut's when the two overlap
#: less than this (IoU) and the cut's is doubtful: its bounding box fits the box worse than
#: TIGHT_FIT (a tight box touches the object on all four sides) or it fills more than FULL_BOX of it.
AGREEMENT = 0.6
TIGHT_FIT = 0.85
FULL_BOX = 0.9


class ClassicTool(SegmentationTool):
    """GrabCut / random-walker / watershed interactive segmentation driven by the prompt.

    A turn without a usable previous mask *initialises*: with a box, everything outside it is hard
    background and ``method`` segments the inside; with clicks alone, a window around the positive
    clicks is searched (grown while the object reaches its edge) with ``click_method``. A turn with
    ``mask_input`` *refines*: the previous mask changes only in a disc around each click that
    contradicts it (a positive click only adds, a negative one only removes), where
    ``refine_method`` re-decides. Clicks are hard seeds and the returned mask honours them. Small
    regions of interest are magnified so that seeds and discs stay smaller than a small target.

    ``method="auto"`` is the measured default (docs/tools.md): GrabCut from a box, retried with
    the watershed when it keeps too little of the box, the watershed from clicks alone and to
    refine; on gray images a box answer is also checked against grey-level models fitted where
    the target is and its contour, like a click's edit, is put halfway between the grey levels
    inside and outside it; a positive click on a part separate from the mask also brings back the
    parts of the region that look like it (targets of several parts). ``"grabcut"``,
    ``"random_walker"`` or ``"watershed"`` run that algorithm
    on every turn; ``click_method`` / ``refine_method`` override the algorithm for clicks-only
    initialisation / refinement; ``box_fallback`` names the algorithm a box is retried with when
    GrabCut keeps less than 15 % of it (the result whose bounding box fits the box better wins;
    ``None``: no retry).
    """

    name = "classic"
    supports_batch_decode = False

    def __init__(
        self,
        method: str = "auto",
        *,
        click_method: str | None = None,
        refine_method: str | None = None,
        box_fallback: str | None = "auto",
    ) -> None:
        super().__init__()
        self.auto = method == "auto"
        if method == "auto":
            method = "grabcut"
            click_method = click_method or "watershed"
            refine_method = refine_method or "watershed"
            box_fallback = "watershed" if box_fallback == "auto" else box_fallback
        elif box_fallback == "auto":
            box_fallback = None
        chosen = {"method": method, "click_method": click_method or method, "refine_method": refine_method or method}
        for key, value in chosen.items():
            if value not in METHODS:
                raise ToolError(f"unknown classic {key} {value!r}; choose one of {', '.join(METHODS)} or 'auto'")
        if box_fallback not in (None, *METHODS):
            raise ToolError(f"box_fallback must be one of {', '.join(METHODS)} or None, got {box_fallback!r}")
        self.method = chosen["method"]
        self.click_method = chosen["click_method"]
        self.refine_method = chosen["refine_method"]
        self.box_fallback = box_fallback

    # -- encode ------------------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> ImageEmbedding:
        h, w = image.shape[:2]
        spread = int(np.abs(image.astype(np.int16) - image[:, :, :1].astype(np.int16)).max())
        gray = spread <= 2
        feat = np.ascontiguousarray(image[:, :, :1]) if gray else cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        s = min(1.0, WORK_SIDE / max(h, w))
        work_size = (max(2, round(h * s)), max(2, round(w * s)))
        data = Embedded(feat=feat, gray=gray, work_size=work_size)
        return ImageEmbedding(data=data, image_size=(h, w), nbytes=int(feat.nbytes))

    # -- decode ------------------------------------------------------------------------------
    def _decode(self, embedding: ImageEmbedding, prompt: Prompt) -> Prediction:
        emb = embedding.data
        if not isinstance(emb, Embedded):
            raise ToolError("classic tool got an embedding made by another tool")
        H, W = embedding.image_size
        points = prompt.points.astype(np.float64)
        labels = prompt.labels
        pos = points[labels == 1]
        prior = _prior(prompt.mask_input, emb)  # working-frame logits, None when empty
        box = None if prompt.box is None else clip_box(prompt.box, H, W)
        if box is not None:
            if len(pos):  # a positive click outside the box widens it: clicks win over the box
                box = union_box(box, pos, pad=2.0 / min(emb.work_scale), height=H, width=W)
            region = box
        elif prior is not None or len(pos):
            region = _pseudo_box(prior, pos, emb, H, W)
        else:  # negative clicks only and nothing to refine: nothing to segment
            return empty(emb, H, W)

        if prior is not None:
            method = self.refine_method
        elif box is not None:
            method = self.method
        else:
            method = self.click_method
        job = Job(emb, region, box is not None, points, labels, prior, H, W)
        fg, roi, score, seeds = self._segment(job, method)
        if box is None and prior is None:
            # clicks alone: grow the window while the object runs into its edge
            for _ in range(3):
                if not touches_border(fg, roi, H, W):
                    break
                job.region = grow_box(job.region, 2.0, H, W)
                fg, roi, score, seeds = self._segment(job, method)
        prediction = assemble(emb, fg, roi, points, labels, score, H, W)
        if seeds.prev is not None:  # the full-resolution mask keeps the refinement's promise too
            prediction = settle_full(prediction, emb, prior, seeds, roi, points, labels)
        return prediction

    def _segment(self, job: Job, method: str) -> tuple[np.ndarray, Roi, float, Seeds]:
        roi = roi_for(job.region, ROI_SIDE[method], job.H, job.W)
        feat = roi_features(job.emb, roi, SMOOTH)
        seeds = trimap(job, roi, method, feat)
        fg = clean(_run(method, feat, seeds.tri, job.emb.gray), seeds.tri)
        grey_rules = self.auto and job.emb.gray
        clicks = [(x, y, int(lab)) for (x, y), lab in zip(roi.to_roi(job.points), job.labels, strict=True)]
        if seeds.prev is not None:  # a refinement changes the previous mask only around the clicks
            fg = seeds.settle(fg)
            if grey_rules and (seeds.grow | seeds.shrink).any():
                fg = seeds.settle(snap(feat[:, :, 0], fg, seeds.grow | seeds.shrink, roi.sy, clicks))
            fg = seeds.settle(clean(fg, seeds.tri))
            if self.auto and seeds.pos_seeds is not None:  # a click on a separate part: its look-alikes too
                extra = look_alikes(feat, fg, seeds.prev, seeds.pos_seeds, box_mask(job.region, roi), roi.sy)
                fg = fg | extra
                seeds.grow = seeds.grow | extra
        elif job.has_box:
            fg = self._from_box(job, roi, feat, seeds, fg, method, clicks)
        return fg, roi, edge_score(feat, fg), seeds

    def _from_box(
        self, job: Job, roi: Roi, feat: np.ndarray, seeds: Seeds, fg: np.ndarray, method: str,
        clicks: list[tuple[float, float, int]],
    ) -> np.ndarray:
        """The first answer to a box: the cut's, checked against what a tight box implies."""
        inside = box_mask(job.region, roi)
        if method == "grabcut" and self.box_fallback and fg.sum() < MIN_FILL * inside.sum():
            # GrabCut may lose a low-contrast object to a background model that explains it too
            retry = trimap(job, roi, self.box_fallback, feat).tri
            other = clean(_run(self.box_fallback, feat, retry, job.emb.gray), retry)
            if box_fit(other, inside) > box_fit(fg, inside):
                fg = other
        if not (self.auto and job.emb.gray):
            return fg
        # what a tight box implies needs the surroundings the models learn the background from: a box
        # over nearly the whole image (all nuclei of a field) has none, and its target many parts
        surrounded = (~inside).sum() >= MIN_BACKGROUND * inside.size
        # a small or faint target: when the cut's answer is doubtful and grey-level models fitted
        # where the target is disagree with it, they win; then the contour goes where the grey
        # levels say, and a speck gives way to the box's inscribed ellipse
        doubtful = box_fit(fg, inside) < TIGHT_FIT or fg.sum() > FULL_BOX * inside.sum()
        if surrounded and doubtful:
            model = clean(box_segment(feat[:, :, 0], inside, roi.sy), seeds.tri)
            if (model & fg).sum() < AGREEMENT * (model | fg).sum():
                fg = model
        fg = clean(snap(feat[:, :, 0], fg, inside, roi.sy, clicks), seeds.tri)
        if surrounded and fg.sum() < MIN_FILL * inside.sum():
            fg = clean(ellipse_prior(inside) >= 0.5, seeds.tri)
        return fg


def _run(method: str, feat: np.ndarray, tri: np.ndarray, gray: bool) -> np.ndarray:
    if method == "grabcut":
        return grabcut(guide_image(feat, gray), tri)
    if method == "random_walker":
        return random_walker(feat, tri, gray)
    return watershed(feat, tri)


def _prior(mask_input: np.ndarray | None, emb: Embedded) -> np.ndarray | None:
    """The previous logits in our working frame (another tool's are resampled); None when empty."""
    if mask_input is None:
        return None
    m = np.squeeze(np.asarray(mask_input, dtype=np.float32))
    if m.ndim != 2 or m.size == 0:
        raise ToolError(f"mask_input must be a 2-D logit map, got shape {np.shape(mask_input)}")
    wh, ww = emb.work_size
    if m.shape != (wh, ww):
        m = cv2.resize(m, (ww, wh), interpolation=cv2.INTER_LINEAR)
    m = np.nan_to_num(m, nan=-LOGIT_CLIP, posinf=LOGIT_CLIP, neginf=-LOGIT_CLIP)
    return m if (m > 0).any() else None


def _pseudo_box(prior: np.ndarray | None, pos: np.ndarray, emb: Embedded, H: int, W: int) -> np.ndarray:
    """A region to work in when there is no box: the previous mask's and the clicks' extent."""
    boxes = []
    if prior is not None:
        ys, xs = np.nonzero(prior > 0)
        sy, sx = emb.work_scale
        boxes.append(np.array([xs.min() / sx, ys.min() / sy, (xs.max() + 1) / sx, (ys.max() + 1) / sy]))
    if len(pos):
        half = 0.0 if prior is not None else POINT_WINDOW * min(H, W)
        boxes.append(
            np.array([pos[:, 0].min() - half, pos[:, 1].min() - half, pos[:, 0].max() + half, pos[:, 1].max() + half])
        )
    b = np.stack(boxes)
    return clip_box(np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]), H, W)


def build_classic_tool(checkpoint: object = None, device: str = "cpu", **options: object) -> ClassicTool:
    """Registry factory. The classic tool has no weights and runs on the CPU whatever ``device``."""
    if checkpoint not in (None, ""):
        raise ToolError("the classic tool takes no checkpoint")
    return ClassicTool(**options)  # type: ignore[arg-type]
