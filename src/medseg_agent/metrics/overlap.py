"""Region-overlap metrics (Dice, IoU) for binary masks.

Masks are 2-D ``(H, W)`` or 3-D ``(D, H, W)`` arrays of ``bool`` or integer dtype (any non-zero value
is foreground). Floating-point inputs are rejected on purpose: a probability map must be thresholded by
the caller, because silently treating ``0.3`` as foreground would inflate every score.

Empty-mask conventions (shared by every metric in :mod:`medseg_agent.metrics`):

* both masks empty -> perfect agreement: Dice = IoU = NSD = 1.0, HD95 = 0.0;
* exactly one mask empty -> total disagreement: Dice = IoU = NSD = 0.0, HD95 = ``inf``.

Both cases are common in interactive segmentation (a slice without the organ; an agent that has not
yet clicked), so the metrics return a defined number instead of NaN. MONAI's defaults differ here
(``ignore_empty=True`` gives NaN when the ground truth is empty); with ``ignore_empty=False`` MONAI's
Dice/IoU agree with ours exactly.

These functions run every agent turn on masks up to 1024x1024, so they use ``np.count_nonzero`` on a
single logical AND instead of float sums.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["as_mask_pair", "dice", "iou"]

_SUPPORTED_NDIM = (2, 3)


def _as_mask(mask: npt.ArrayLike, name: str) -> np.ndarray:
    """Convert ``mask`` to a boolean array, rejecting float dtypes and unsupported ranks."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"{name} must be a boolean or integer mask, got dtype {arr.dtype}; "
                "threshold probability maps before computing metrics"
            )
        arr = arr != 0
    if arr.ndim not in _SUPPORTED_NDIM:
        raise ValueError(f"{name} must be 2-D (H, W) or 3-D (D, H, W), got shape {arr.shape}")
    return arr


def as_mask_pair(pred: npt.ArrayLike, gt: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction/reference pair and return them as boolean arrays of equal shape.

    Raises:
        TypeError: if either input has a non-boolean, non-integer dtype.
        ValueError: if either input is not 2-D/3-D, or the shapes differ (both shapes are named).
    """
    pred_arr = _as_mask(pred, "pred")
    gt_arr = _as_mask(gt, "gt")
    if pred_arr.shape != gt_arr.shape:
        raise ValueError(f"shape mismatch: pred has shape {pred_arr.shape}, gt has shape {gt_arr.shape}")
    return pred_arr, gt_arr


def _overlap_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """Return ``(|pred & gt|, |pred|, |gt|)`` for validated boolean masks."""
    return (
        int(np.count_nonzero(np.logical_and(pred, gt))),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(gt)),
    )


def _dice_from_counts(intersection: int, n_pred: int, n_gt: int) -> float:
    denominator = n_pred + n_gt
    return 1.0 if denominator == 0 else 2.0 * intersection / denominator


def _iou_from_counts(intersection: int, n_pred: int, n_gt: int) -> float:
    union = n_pred + n_gt - intersection
    return 1.0 if union == 0 else intersection / union


def dice(pred: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """Dice coefficient ``2|P∩G| / (|P|+|G|)`` in ``[0, 1]``.

    Both empty -> 1.0; exactly one empty -> 0.0 (see module docstring).
    """
    return _dice_from_counts(*_overlap_counts(*as_mask_pair(pred, gt)))


def iou(pred: npt.ArrayLike, gt: npt.ArrayLike) -> float:
    """Intersection over union (Jaccard) ``|P∩G| / |P∪G|`` in ``[0, 1]``.

    Both empty -> 1.0; exactly one empty -> 0.0 (see module docstring).
    """
    return _iou_from_counts(*_overlap_counts(*as_mask_pair(pred, gt)))


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two boxes ``(x1, y1, x2, y2)``; two boxes without area are the same box (1.0), like
    two empty masks."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 1.0 if union <= 0 else inter / union
