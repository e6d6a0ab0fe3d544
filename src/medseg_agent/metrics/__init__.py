"""Segmentation metrics: Dice, IoU, normalized surface Dice (NSD) and HD95.

:func:`segmentation_metrics` is the single entry point used by the evaluator and the episode records,
so every score in the project is computed with the same definitions and empty-mask conventions:

=====================  ======  =====  =====  ======
case                   dice    iou    nsd    hd95
=====================  ======  =====  =====  ======
both masks empty       1.0     1.0    1.0    0.0
exactly one empty      0.0     0.0    0.0    inf
=====================  ======  =====  =====  ======

Surface definitions match MONAI (see :mod:`medseg_agent.metrics.surface`). MONAI itself returns NaN
for NSD/HD95 in the both-empty row and for HD95 (``percentile=95``) in the one-empty row; with
``ignore_empty=False`` its Dice/IoU match this table.
"""

from __future__ import annotations

import numpy.typing as npt

from medseg_agent.metrics.overlap import as_mask_pair, box_iou, dice, iou
from medseg_agent.metrics.surface import (
    SpacingLike,
    SurfaceDistances,
    hd95,
    image_diagonal,
    mask_borders,
    normalized_surface_dice,
    surface_distances,
)

__all__ = [
    "SpacingLike",
    "SurfaceDistances",
    "as_mask_pair",
    "box_iou",
    "dice",
    "hd95",
    "image_diagonal",
    "iou",
    "mask_borders",
    "normalized_surface_dice",
    "segmentation_metrics",
    "surface_distances",
]


def segmentation_metrics(
    pred: npt.ArrayLike,
    gt: npt.ArrayLike,
    spacing: SpacingLike = None,
    nsd_tolerance: float = 2.0,
    *,
    hd95_empty_value: float | None = None,
) -> dict[str, float]:
    """All standard scores for one prediction/reference pair.

    Args:
        pred, gt: binary masks of equal shape (2-D or 3-D; bool or integer dtype).
        spacing: pixel size per array axis; ``None`` means distances in pixels.
        nsd_tolerance: NSD tolerance in the unit of ``spacing`` (pixels when ``spacing`` is None).
        hd95_empty_value: substitute for the ``inf`` HD95 when exactly one mask is empty.

    Returns:
        ``{"dice", "iou", "nsd", "hd95"}`` as Python floats. ``hd95`` may be ``inf`` (which
        ``json.dumps`` writes as the non-standard token ``Infinity``).
    """
    pred_arr, gt_arr = as_mask_pair(pred, gt)
    distances = surface_distances(pred_arr, gt_arr, spacing)
    return {
        "dice": dice(pred_arr, gt_arr),
        "iou": iou(pred_arr, gt_arr),
        "nsd": distances.nsd(nsd_tolerance),
        "hd95": distances.hd95(hd95_empty_value),
    }
