"""Geometry the simulated expert decides from: the target's shape, the first box, error regions.

Everything here works on the ground-truth mask and the current mask in full-resolution pixels and
is deterministic given a random generator, so the rules can be stated, tested and measured
(``benchmarks/expert_vs_baselines.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from medseg_agent.policies.clicks import deepest_point, interior_distance

BOX = "box"
POINT = "point"


@dataclass(frozen=True)
class TargetShape:
    """What a glance at the target tells an annotator.

    ``parts``: connected components holding at least ``min_part_fraction`` of the target;
    ``fill``: target area over its bounding-box area (low for thin, curved or scattered targets);
    ``elongation``: major over minor axis of the largest part (second moments).
    """

    area: int
    area_fraction: float
    parts: int
    fill: float
    elongation: float
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2, inclusive pixels


@dataclass(frozen=True)
class StrategyRules:
    """When the first action is a point rather than a box.

    A box is the quickest start for a compact target; for a thin or elongated one it encloses
    mostly background, and for a target in a few separate parts it spans the gaps between them.
    Targets made of many parts (``many_parts`` or more, e.g. all nuclei of a field) get a box again:
    one click per part would never end. The thresholds are stated judgement, not tuned: a first action
    that falls short is replaced by the expert's parsimony rule whatever the rule said.
    """

    max_elongation: float = 3.0  # above: thin/elongated -> point
    min_fill: float = 0.35  # below: sparse in its box -> point
    few_parts: int = 2  # from this many parts up ...
    many_parts: int = 6  # ... to below this many: multi-part -> point
    min_part_fraction: float = 0.05


@dataclass(frozen=True)
class FirstChoice:
    strategy: str  # BOX or POINT, what is played
    rule: str  # what the rule alone says
    reason: str  # "compact", "elongated", "sparse", "multi-part", "many parts", "no box in protocol"
    explored: bool  # the seeded random share picked the other strategy


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label image and stats (cv2 layout) of the 8-connected components of ``mask``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, stats[1:count]


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("the mask is empty: it has no bounding box")
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def elongation(mask: np.ndarray) -> float:
    """Ratio of the principal axes' lengths (1 for a disc, large for a line)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # pixel extent
    low, high = np.linalg.eigvalsh(cov)
    return float(np.sqrt(high / max(low, 1e-9)))


def analyse_target(gt: np.ndarray, min_part_fraction: float = 0.05) -> TargetShape:
    gt = np.asarray(gt, dtype=bool)
    area = int(gt.sum())
    if area == 0:
        raise ValueError("the ground-truth mask is empty: there is nothing to segment")
    labels, stats = _components(gt)
    areas = stats[:, cv2.CC_STAT_AREA]
    parts = int((areas >= min_part_fraction * area).sum())
    largest = labels == 1 + int(np.argmax(areas))
    x1, y1, x2, y2 = bounding_box(gt)
    return TargetShape(
        area=area,
        area_fraction=area / gt.size,
        parts=max(parts, 1),
        fill=area / float((x2 - x1 + 1) * (y2 - y1 + 1)),
        elongation=elongation(largest),
        bbox=(x1, y1, x2, y2),
    )


def rule_strategy(shape: TargetShape, rules: StrategyRules) -> tuple[str, str]:
    """(strategy, reason) that :class:`StrategyRules` gives for ``shape``."""
    if rules.few_parts <= shape.parts < rules.many_parts:
        return POINT, "multi-part"
    if shape.parts >= rules.many_parts:
        return BOX, "many parts"
    if shape.elongation > rules.max_elongation:
        return POINT, "elongated"
    if shape.fill < rules.min_fill:
        return POINT, "sparse"
    return BOX, "compact"


def choose_first(
    shape: TargetShape, rng: np.random.Generator, rules: StrategyRules, other_share: float, can_box: bool
) -> FirstChoice:
    """The rule's strategy, or with probability ``other_share`` the other one (data diversity)."""
    if not can_box:
        return FirstChoice(POINT, POINT, "no box in protocol", False)
    strategy, reason = rule_strategy(shape, rules)
    explored = bool(rng.random() < other_share)
    played = (POINT if strategy == BOX else BOX) if explored else strategy
    return FirstChoice(played, strategy, reason, explored)


def jittered_box(
    bbox: tuple[int, int, int, int], image_size: tuple[int, int], rng: np.random.Generator, jitter: float
) -> tuple[float, float, float, float]:
    """The ground-truth box with each side moved by up to ``jitter`` x the box side (plus one pixel),
    as a human draws it: sometimes loose, sometimes cutting the target a little."""
    x1, y1, x2, y2 = bbox
    h, w = image_size
    bw, bh = x2 - x1 + 1.0, y2 - y1 + 1.0
    dx = rng.uniform(-1.0, 1.0, 2) * (jitter * bw + 1.0)
    dy = rng.uniform(-1.0, 1.0, 2) * (jitter * bh + 1.0)
    nx1, nx2 = np.clip([x1 + dx[0], x2 + dx[1]], 0, w - 1)
    ny1, ny2 = np.clip([y1 + dy[0], y2 + dy[1]], 0, h - 1)
    if nx2 - nx1 < 1:
        nx1, nx2 = max(0.0, x1 - 0.5), min(w - 1.0, x2 + 0.5)
    if ny2 - ny1 < 1:
        ny1, ny2 = max(0.0, y1 - 0.5), min(h - 1.0, y2 + 0.5)
    return float(nx1), float(ny1), float(nx2), float(ny2)


def outside_box(gt: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part of the target lying outside ``box`` (pixels): what a wrong box cuts off."""
    x1, y1, x2, y2 = box
    outside = np.asarray(gt, dtype=bool).copy()
    outside[int(np.floor(y1)) : int(np.ceil(y2)) + 1, int(np.floor(x1)) : int(np.ceil(x2)) + 1] = False
    return outside


def fraction_outside_box(gt: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of the target lying outside ``box``."""
    total = int(np.count_nonzero(gt))
    return float(np.count_nonzero(outside_box(gt, box))) / total if total else 0.0


@dataclass(frozen=True)
class ErrorRegion:
    """A connected region where the mask is wrong, and the interior-most point to click in it."""

    region: np.ndarray  # (H, W) bool
    positive: bool  # True: missed target (click positive); False: leak (click negative)
    area: int
    x: int
    y: int
    depth: float  # distance of (x, y) to the region's border, pixels


def error_regions(
    mask: np.ndarray,
    gt: np.ndarray,
    clicked: Sequence[tuple[float, float]] = (),
    limit: int = 4,
    min_depth: float = 1.0,
) -> list[ErrorRegion]:
    """The ``limit`` largest missed/leaked components, largest first, each with its click point.

    Clicked pixels are removed first, so a point never lands where an earlier click is; components
    thinner than ``min_depth`` (one-pixel slivers along the border) are not worth a click.
    """
    fn = np.logical_and(gt, np.logical_not(mask))
    fp = np.logical_and(mask, np.logical_not(gt))
    h, w = gt.shape
    for x, y in clicked:
        xi, yi = int(round(x)), int(round(y))
        if 0 <= yi < h and 0 <= xi < w:
            fn[yi, xi] = fp[yi, xi] = False
    components = []  # (area, positive, labels, index, stats row)
    for error, positive in ((fn, True), (fp, False)):
        if error.any():
            labels, stats = _components(error)
            components += [(int(row[4]), positive, labels, i, row) for i, row in enumerate(stats, start=1)]
    components.sort(key=lambda c: -c[0])
    found: list[ErrorRegion] = []
    for area, positive, labels, index, row in components:
        if len(found) == limit:
            break
        x0, y0, bw, bh = (int(v) for v in row[:4])
        crop = labels[y0 : y0 + bh, x0 : x0 + bw] == index
        depth, cx, cy = deepest_point(crop)  # the tight box's edge is outside the component anyway
        if depth < min_depth:
            continue
        region = np.zeros((h, w), dtype=bool)
        region[y0 : y0 + bh, x0 : x0 + bw] = crop
        found.append(ErrorRegion(region, positive, area, x0 + int(cx), y0 + int(cy), depth))
    return found


def error_region_at(mask: np.ndarray, gt: np.ndarray, x: int, y: int) -> ErrorRegion | None:
    """The missed or leaked component holding pixel (x, y), or None if the mask is right there."""
    positive = bool(gt[y, x])
    if bool(mask[y, x]) == positive:
        return None
    error = np.logical_and(gt, ~mask) if positive else np.logical_and(mask, ~gt)
    labels, stats = _components(error)
    index = int(labels[y, x])
    region = labels == index
    depth = float(interior_distance(region)[y, x])
    return ErrorRegion(region, positive, int(stats[index - 1][cv2.CC_STAT_AREA]), x, y, depth)
