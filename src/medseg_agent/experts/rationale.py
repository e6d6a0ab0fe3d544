"""Rationale text for every expert action, from the geometry actually observed.

The text names what an annotator sees on the overlay: which part of the target is missed or where
the mask leaks (position relative to the target, size relative to the target), why a box or a point
starts the episode, why it stops. It is used as ``<think>`` reasoning (IBISAgent-style interleaved
reasoning) or dropped (MedSAM-Agent-style direct tool calls).

Directions are as displayed (image left/right/up/down), not patient anatomy.
"""

from __future__ import annotations

import numpy as np

from medseg_agent.experts.strategy import ErrorRegion, FirstChoice, TargetShape


def short_target(target: str) -> str:
    """``"left kidney in abdomen CT"`` -> ``"left kidney"``: the structure, without the context."""
    head = target.split(" in ")[0].strip()
    return head or target.strip() or "target"


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def _thirds(value: float, low: str, mid: str, high: str) -> str:
    return low if value < 1 / 3 else high if value > 2 / 3 else mid


def _combine(vertical: str, horizontal: str, centre: str) -> str:
    if vertical and horizontal:
        return f"{vertical}-{horizontal}"
    return vertical or horizontal or centre


def place_in_image(mask: np.ndarray) -> str:
    """``"in the upper-left of the image"``, ``"near the centre of the image"``."""
    cx, cy = _centroid(mask)
    h, w = mask.shape
    where = _combine(_thirds(cy / h, "upper", "", "lower"), _thirds(cx / w, "left", "", "right"), "")
    return f"in the {where} of the image" if where else "near the centre of the image"


def part_of(region: np.ndarray, bbox: tuple[int, int, int, int]) -> str:
    """Which part of a box (the target's) a region sits in: ``"lower-right"``, ``"central"``."""
    cx, cy = _centroid(region)
    x1, y1, x2, y2 = bbox
    fx = (cx - x1 + 0.5) / (x2 - x1 + 1)
    fy = (cy - y1 + 0.5) / (y2 - y1 + 1)
    return _combine(_thirds(fy, "upper", "", "lower"), _thirds(fx, "left", "", "right"), "central")


def direction_from(region: np.ndarray, bbox: tuple[int, int, int, int]) -> str:
    """Where a region lies relative to a box: ``"above and to the left of"``, ``"past the upper-right
    border of"`` (inside the box, off its middle), ``"in the middle of"``."""
    cx, cy = _centroid(region)
    x1, y1, x2, y2 = bbox
    vertical = "above" if cy < y1 else "below" if cy > y2 else ""
    horizontal = "to the left of" if cx < x1 else "to the right of" if cx > x2 else ""
    if vertical and horizontal:
        return f"{vertical} and {horizontal}"
    if vertical or horizontal:
        return vertical or horizontal
    part = part_of(region, bbox)
    return "in the middle of" if part == "central" else f"past the {part} border of"


def size_word(fraction: float) -> str:
    """Size of a region relative to the target."""
    return "small" if fraction < 0.05 else "large" if fraction > 0.25 else "medium-sized"


def _percent(fraction: float) -> str:
    return f"{max(fraction * 100, 1):.0f}%"


def first_action_rationale(target: str, shape: TargetShape, choice: FirstChoice, gt: np.ndarray) -> str:
    name = short_target(target)
    where = place_in_image(gt)
    size = f"about {_percent(shape.area_fraction)} of the image"
    if choice.strategy == "box":
        if choice.reason == "many parts":
            return (
                f"The {name} is made of {shape.parts} separate parts {where}; one box around all of them "
                "is quicker than a point on each."
            )
        if choice.rule == "point":
            return (
                f"The {name} lies {where} and covers {size}; I start with a box around it and correct the "
                "mask with points afterwards."
            )
        return f"The {name} is a compact structure {where}, {size}; a box around it is the quickest start."
    if choice.reason == "multi-part" and choice.rule == "point":
        return (
            f"The {name} has {shape.parts} separate parts; a box would span the gaps between them, so I "
            "place a positive point inside the largest part."
        )
    if choice.reason == "elongated" and choice.rule == "point":
        return (
            f"The {name} is thin and elongated {where}; a box would hold mostly background, so I place a "
            "positive point inside its thickest part."
        )
    if choice.reason == "sparse" and choice.rule == "point":
        return (
            f"The {name} fills little of its bounding box {where}; a box would hold mostly background, so "
            "I place a positive point inside its thickest part."
        )
    return f"The mask is empty; I place a positive point inside the thickest part of the {name}, {where}."


def click_rationale(target: str, error: ErrorRegion, gt: np.ndarray, bbox: tuple[int, int, int, int]) -> str:
    name = short_target(target)
    fraction = error.area / max(int(gt.sum()), 1)
    size = size_word(fraction)
    if error.positive:
        if not (gt & ~error.region).any():  # nothing segmented yet: the whole target is missed
            return f"The mask is empty; I place a positive point inside the thickest part of the {name}."
        return (
            f"The mask misses a {size} region in the {part_of(error.region, bbox)} part of the {name} "
            f"(about {_percent(fraction)} of it); I add a positive point there."
        )
    return (
        f"The mask leaks into a {size} region {direction_from(error.region, bbox)} the {name} (about "
        f"{_percent(fraction)} of the target's size); I add a negative point there."
    )


def redraw_rationale(
    target: str, box: tuple[float, float, float, float], bbox: tuple[int, int, int, int], fraction: float
) -> str:
    """Which sides of the target the box cuts off (the box's edges inside the target's extent)."""
    x1, y1, x2, y2 = box
    sides = [
        side
        for side, cut in (
            ("upper", y1 > bbox[1] + 0.5),
            ("lower", y2 < bbox[3] - 0.5),
            ("left", x1 > bbox[0] + 0.5),
            ("right", x2 < bbox[2] - 0.5),
        )
        if cut
    ]
    name, amount = short_target(target), f"about {_percent(fraction)} of it lies outside the box"
    if len(sides) == 4:
        return (
            f"The box is too small: it cuts off the {name} on every side ({amount}); I redraw it around "
            "the whole target."
        )
    where = ", ".join(sides[:-1]) + f" and {sides[-1]}" if len(sides) > 1 else (sides or ["outer"])[0]
    parts = "parts" if len(sides) > 1 else "part"
    return (
        f"The box cuts off the {where} {parts} of the {name} ({amount}); I redraw the box around the "
        "whole target."
    )


def _amount(fraction: float) -> str:
    """Size relative to the target, in words a reader can picture."""
    if fraction >= 2:
        return f"about {fraction:.0f} times the target's size"
    return f"about {_percent(fraction)} of the target's size"


def stop_rationale(target: str, reason: str, largest: ErrorRegion | None, gt: np.ndarray) -> str:
    """``reason``: ``"accurate"`` (IoU reached), ``"no_gain"`` (no candidate helps) or ``"limit"``."""
    name = short_target(target)
    if reason == "accurate" or largest is None:
        return (
            f"The mask follows the {name} closely; only thin differences along its border remain, so I stop."
        )
    fraction = largest.area / max(int(gt.sum()), 1)
    kind = "missed part" if largest.positive else "leak"
    what = f"The largest remaining {kind} of the {name} mask is {size_word(fraction)} ({_amount(fraction)})"
    if reason == "limit":
        return f"{what}, but I have no actions left, so I stop."
    return f"{what}; no further point improves the mask, so I stop."
