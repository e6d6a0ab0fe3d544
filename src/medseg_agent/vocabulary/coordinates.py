"""Conversion between the coordinates a policy writes and full-resolution image pixels.

The tool always works on the original image; the policy sees a resized view. Normalised spaces are
resolution-independent; ``pixel`` means pixels of the *view* (what the model was shown).
"""

from __future__ import annotations

from dataclasses import dataclass

from medseg_agent.vocabulary.actions import CoordinateSpace

NORM1000_MAX = 999


@dataclass(frozen=True)
class CoordinateFrame:
    space: CoordinateSpace
    image_size: tuple[int, int]  # (H, W) of the original image
    view_size: tuple[int, int]  # (H, W) of the image shown to the policy

    @property
    def upper(self) -> tuple[float, float]:
        """Largest valid (x, y) in this space, inclusive."""
        if self.space is CoordinateSpace.NORM1000:
            return float(NORM1000_MAX), float(NORM1000_MAX)
        if self.space is CoordinateSpace.NORM1:
            return 1.0, 1.0
        return float(self.view_size[1] - 1), float(self.view_size[0] - 1)

    def describe_range(self) -> str:
        ux, uy = self.upper
        if self.space is CoordinateSpace.NORM1:
            return "x and y in [0, 1]"
        return f"x in [0, {ux:g}] and y in [0, {uy:g}]"

    def in_range(self, x: float, y: float) -> bool:
        ux, uy = self.upper
        return 0.0 <= x <= ux and 0.0 <= y <= uy

    def to_pixels(self, x: float, y: float) -> tuple[float, float]:
        """Model coordinates -> full-resolution pixel coordinates (floats, inside the image)."""
        h, w = self.image_size
        if self.space is CoordinateSpace.NORM1000:
            px, py = x / (NORM1000_MAX + 1) * w, y / (NORM1000_MAX + 1) * h
        elif self.space is CoordinateSpace.NORM1:
            px, py = x * w, y * h
        else:
            vh, vw = self.view_size
            px, py = x * w / vw, y * h / vh
        return min(max(px, 0.0), w - 1.0), min(max(py, 0.0), h - 1.0)

    def from_pixels(self, px: float, py: float) -> tuple[float, float]:
        """Full-resolution pixels -> model coordinates, rounded the way a model would write them."""
        h, w = self.image_size
        if self.space is CoordinateSpace.NORM1000:
            x = min(round(px / w * (NORM1000_MAX + 1)), NORM1000_MAX)
            y = min(round(py / h * (NORM1000_MAX + 1)), NORM1000_MAX)
            return float(max(x, 0)), float(max(y, 0))
        if self.space is CoordinateSpace.NORM1:
            return round(min(max(px / w, 0.0), 1.0), 4), round(min(max(py / h, 0.0), 1.0), 4)
        vh, vw = self.view_size
        return float(min(round(px * vw / w), vw - 1)), float(min(round(py * vh / h), vh - 1))


def view_size_for(image_size: tuple[int, int], longest_side: int | None) -> tuple[int, int]:
    """Size of the policy's view: the longest side scaled to ``longest_side`` (None: unchanged)."""
    h, w = image_size
    if not longest_side:
        return h, w
    scale = longest_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))
