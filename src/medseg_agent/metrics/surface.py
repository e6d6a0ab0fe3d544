"""Boundary metrics: normalized surface Dice (NSD) and 95th-percentile Hausdorff distance (HD95).

Definitions follow MONAI (``monai.metrics.compute_surface_dice`` with its default
``use_subvoxels=False`` and ``compute_hausdorff_distance(percentile=95)``, euclidean distance), so
numbers are comparable with published MONAI-based results:

* **Border** of a mask: foreground pixels that have at least one background neighbour in the
  4-neighbourhood (6-neighbourhood in 3-D); everything outside the image counts as background, so a
  mask touching the image edge has a border there. This is ``mask ^ binary_erosion(mask)`` with
  SciPy's default cross-shaped structuring element, exactly as ``monai.metrics.utils.get_mask_edges``.
* **Surface distances**: for every border pixel of one mask, the euclidean distance (in units of
  ``spacing``) to the nearest border pixel of the other mask. Computed with
  a ``scipy.spatial.cKDTree`` over the border pixels, as MONAI does (exact).
* **NSD(τ)**: fraction of border pixels of *both* masks whose distance is ``<= τ``; each border pixel
  counts once (no sub-pixel surface areas).
* **HD95**: ``max(p95(pred->gt), p95(gt->pred))`` with linear-interpolated percentiles, i.e. the
  larger of the two *directed* 95th percentiles (not the percentile of the pooled distances).

Units: ``spacing`` gives the physical size of a pixel per array axis, in the same order as
``mask.shape`` (rows first). NSD ``tolerance`` and HD95 are in the same unit as ``spacing``: pixels when
``spacing`` is ``None``/``(1, 1)``, millimetres when spacing is in mm.

Empty-mask conventions (same as :mod:`medseg_agent.metrics.overlap`):

* both empty -> NSD 1.0, HD95 0.0 (MONAI returns NaN for both);
* exactly one empty -> NSD 0.0 (as MONAI), HD95 ``inf``. MONAI's plain Hausdorff distance is
  ``inf`` here too, but with ``percentile=95`` it returns NaN (a percentile of all-``inf`` distances);
  we keep ``inf`` so a missed structure is never mistaken for an undefined case. ``inf`` cannot be averaged
  meaningfully; pass ``empty_value`` (e.g. :func:`image_diagonal`) to substitute a cap, or have
  aggregators report the number of infinite values separately.

NSD compares distances and tolerance at float32 precision, as MONAI does. This keeps exact ties
(``d == τ``) inside the tolerance even when float64 rounding makes them differ by one ulp
(e.g. ``3 * 0.1 > 0.3``).

Speed: distance transforms only run on the bounding box of ``pred | gt``. No margin is needed: every
border pixel of either mask lies inside that box and everything outside it is background, so both the
borders and the nearest-border distances are identical to the full-image computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from medseg_agent.metrics.overlap import as_mask_pair

__all__ = [
    "SpacingLike",
    "SurfaceDistances",
    "hd95",
    "image_diagonal",
    "mask_borders",
    "normalized_surface_dice",
    "surface_distances",
]

SpacingLike = float | Sequence[float] | None
"""Pixel size per array axis; a scalar means isotropic, ``None`` means 1 (distances in pixels)."""


def _resolve_spacing(spacing: SpacingLike, ndim: int) -> tuple[float, ...]:
    """Return one positive finite spacing value per axis, or raise ``ValueError``."""
    if spacing is None:
        values: tuple[float, ...] = (1.0,) * ndim
    elif isinstance(spacing, int | float | np.number):
        values = (float(spacing),) * ndim
    else:
        values = tuple(float(s) for s in spacing)
        if len(values) != ndim:
            raise ValueError(f"spacing {tuple(spacing)} has {len(values)} values but the masks are {ndim}-D")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {values}")
    return values


def _union_bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the foreground as slices, or ``None`` when the mask is empty."""
    box: list[slice] = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=other_axes))
        if occupied.size == 0:
            return None
        box.append(slice(int(occupied[0]), int(occupied[-1]) + 1))
    return tuple(box)


def mask_borders(mask: np.ndarray) -> np.ndarray:
    """Border pixels of a boolean mask (MONAI's ``get_mask_edges`` definition, see module docstring).

    Implemented with shifted views of a zero-padded copy, which is several times faster than
    ``scipy.ndimage.binary_erosion`` and gives the identical result.
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    interior = mask.copy()
    centre = [slice(1, n + 1) for n in mask.shape]
    for axis, n in enumerate(mask.shape):
        for start in (0, 2):
            neighbour = list(centre)
            neighbour[axis] = slice(start, start + n)
            interior &= padded[tuple(neighbour)]
    return mask & ~interior


def _directed_distances(
    from_border: np.ndarray, to_border: np.ndarray, spacing: tuple[float, ...]
) -> np.ndarray:
    """Distance from each ``from_border`` pixel to the nearest ``to_border`` pixel (both non-empty).

    A k-d tree over the border pixels (in physical units) answers exactly what a Euclidean distance
    transform of the whole crop would, but its cost grows with the border length instead of the area:
    about 10x faster for organ-sized masks at 1024x1024, which matters because every episode's final
    step computes it.
    """
    scale = np.asarray(spacing, dtype=np.float64)
    targets = np.argwhere(to_border) * scale
    queries = np.argwhere(from_border) * scale
    distances, _ = cKDTree(targets).query(queries, k=1)
    return np.asarray(distances, dtype=np.float64)


@dataclass(frozen=True)
class SurfaceDistances:
    """Border-to-border distances of a prediction/reference pair; NSD and HD95 derive from these.

    Computing these once and deriving both metrics halves the cost of
    :func:`medseg_agent.metrics.segmentation_metrics`.

    Attributes:
        pred_to_gt: for each border pixel of ``pred``, distance to the nearest border pixel of ``gt``
            (``inf`` when ``gt`` is empty; empty array when ``pred`` is empty).
        gt_to_pred: the same in the other direction.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray

    def nsd(self, tolerance: float) -> float:
        """Normalized surface Dice at ``tolerance`` (same unit as the spacing used)."""
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"NSD tolerance must be finite and >= 0, got {tolerance}")
        total = self.pred_to_gt.size + self.gt_to_pred.size
        if total == 0:
            return 1.0  # both masks empty
        tol32 = np.float32(tolerance)
        within = np.count_nonzero(self.pred_to_gt.astype(np.float32) <= tol32) + np.count_nonzero(
            self.gt_to_pred.astype(np.float32) <= tol32
        )
        return int(within) / total

    def hd95(self, empty_value: float | None = None) -> float:
        """Symmetric 95th-percentile Hausdorff distance.

        Args:
            empty_value: returned instead of ``inf`` when exactly one mask is empty.
        """
        if self.pred_to_gt.size == 0 and self.gt_to_pred.size == 0:
            return 0.0  # both masks empty
        if self.pred_to_gt.size == 0 or self.gt_to_pred.size == 0:
            return math.inf if empty_value is None else float(empty_value)
        return float(max(np.percentile(self.pred_to_gt, 95.0), np.percentile(self.gt_to_pred, 95.0)))


def surface_distances(
    pred: npt.ArrayLike, gt: npt.ArrayLike, spacing: SpacingLike = None
) -> SurfaceDistances:
    """Compute border-to-border distances for a mask pair (see module docstring for definitions).

    Raises:
        TypeError / ValueError: on invalid masks (see :func:`~medseg_agent.metrics.overlap.as_mask_pair`)
            or invalid spacing.
    """
    pred_arr, gt_arr = as_mask_pair(pred, gt)
    sampling = _resolve_spacing(spacing, pred_arr.ndim)
    box = _union_bounding_box(pred_arr | gt_arr)
    if box is None:
        empty = np.empty(0, dtype=np.float64)
        return SurfaceDistances(empty, empty)
    border_pred = mask_borders(pred_arr[box])
    border_gt = mask_borders(gt_arr[box])
    n_pred, n_gt = int(np.count_nonzero(border_pred)), int(np.count_nonzero(border_gt))
    if n_pred == 0 or n_gt == 0:
        # Distance to the border of an empty mask is infinite, as in MONAI.
        return SurfaceDistances(np.full(n_pred, np.inf), np.full(n_gt, np.inf))
    return SurfaceDistances(
        _directed_distances(border_pred, border_gt, sampling),
        _directed_distances(border_gt, border_pred, sampling),
    )


def normalized_surface_dice(
    pred: npt.ArrayLike, gt: npt.ArrayLike, tolerance: float, spacing: SpacingLike = None
) -> float:
    """Normalized surface Dice in ``[0, 1]``: share of border pixels within ``tolerance`` of the other border.

    Args:
        pred, gt: binary masks of equal shape (2-D or 3-D).
        tolerance: accepted boundary deviation, in the unit of ``spacing`` (pixels if ``spacing`` is None).
        spacing: pixel size per array axis (see module docstring).

    Both empty -> 1.0; exactly one empty -> 0.0.
    """
    return surface_distances(pred, gt, spacing).nsd(tolerance)


def hd95(
    pred: npt.ArrayLike,
    gt: npt.ArrayLike,
    spacing: SpacingLike = None,
    empty_value: float | None = None,
) -> float:
    """95th-percentile symmetric Hausdorff distance, in the unit of ``spacing``.

    Both empty -> 0.0; exactly one empty -> ``inf``, or ``empty_value`` when given (a finite cap such
    as :func:`image_diagonal` makes averages meaningful; otherwise report the count of infinities).
    """
    return surface_distances(pred, gt, spacing).hd95(empty_value)


def image_diagonal(shape: Sequence[int], spacing: SpacingLike = None) -> float:
    """Length of the image diagonal: an upper bound on any finite HD95, usable as ``empty_value``."""
    sampling = _resolve_spacing(spacing, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sampling, strict=True))))
