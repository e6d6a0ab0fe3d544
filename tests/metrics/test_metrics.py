"""Metrics agree with MONAI on random blobs and edge cases, and follow our empty-mask conventions.

MONAI is the reference implementation (test-only dependency). Where MONAI returns NaN (both masks
empty) we intentionally return 1.0 / 0.0; that row is checked against our convention instead.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_iou, compute_surface_dice
from scipy import ndimage

from medseg_agent.metrics import (
    dice,
    hd95,
    image_diagonal,
    iou,
    mask_borders,
    normalized_surface_dice,
    segmentation_metrics,
    surface_distances,
)

FAST = settings(max_examples=60, deadline=None)
THOROUGH = settings(max_examples=100, deadline=None)

# --------------------------------------------------------------------------- MONAI references


def _tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def monai_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return float(metric(_tensor(pred), _tensor(gt)).item())


def monai_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(compute_iou(_tensor(pred), _tensor(gt), include_background=True, ignore_empty=False).item())


def monai_nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float, spacing=None) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks
        value = compute_surface_dice(
            _tensor(pred), _tensor(gt), [tolerance], include_background=True, spacing=spacing
        )
    return float(value.item())


def monai_hd95(pred: np.ndarray, gt: np.ndarray, spacing=None, percentile: float | None = 95) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            _tensor(pred), _tensor(gt), include_background=True, percentile=percentile, spacing=spacing
        )
    return float(value.item())


def assert_hd95_matches_monai(pred: np.ndarray, gt: np.ndarray, spacing=None) -> None:
    """Exactly one empty mask: MONAI's HD95 is NaN (the percentile of all-inf distances); its plain
    Hausdorff distance is inf, which is our documented HD95 there. Otherwise values must agree."""
    ours = hd95(pred, gt, spacing)
    if pred.any() != gt.any():
        assert ours == math.inf
        assert math.isnan(monai_hd95(pred, gt, spacing))
        assert monai_hd95(pred, gt, spacing, percentile=None) == math.inf
    else:
        assert ours == pytest.approx(monai_hd95(pred, gt, spacing), rel=1e-5, abs=1e-5)


# --------------------------------------------------------------------------- strategies


def _paint_blobs(draw: st.DrawFn, shape: tuple[int, int]) -> np.ndarray:
    """Union of random discs and rectangles; shapes may extend past the image border."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(draw(st.integers(0, 4))):
        cy = draw(st.integers(-4, h + 3))
        cx = draw(st.integers(-4, w + 3))
        if draw(st.booleans()):
            radius = draw(st.floats(0.0, max(h, w) / 2))
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        else:
            half_h = draw(st.integers(0, h // 2 + 1))
            half_w = draw(st.integers(0, w // 2 + 1))
            mask |= (abs(yy - cy) <= half_h) & (abs(xx - cx) <= half_w)
    return mask


def _perturb(draw: st.DrawFn, gt: np.ndarray) -> np.ndarray:
    """A prediction related to ``gt`` (shifted / dilated / eroded / noisy) or an independent blob."""
    kind = draw(st.sampled_from(["independent", "shift", "dilate", "erode", "noise"]))
    if kind == "independent":
        return _paint_blobs(draw, gt.shape)
    if kind == "shift":
        dy, dx = draw(st.integers(-3, 3)), draw(st.integers(-3, 3))
        return ndimage.shift(gt.astype(np.uint8), (dy, dx), order=0, mode="constant").astype(bool)
    if kind == "dilate":
        return ndimage.binary_dilation(gt, iterations=draw(st.integers(1, 3)))
    if kind == "erode":
        return ndimage.binary_erosion(gt, iterations=draw(st.integers(1, 2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return gt ^ (rng.random(gt.shape) < draw(st.floats(0.0, 0.1)))


@st.composite
def mask_pairs(draw: st.DrawFn, max_side: int = 64) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    gt = _paint_blobs(draw, shape)
    return _perturb(draw, gt), gt


spacings_2d = st.one_of(
    st.none(),
    st.tuples(st.floats(0.25, 4.0), st.floats(0.25, 4.0)),
)


# --------------------------------------------------------------------------- agreement with MONAI


@THOROUGH
@given(mask_pairs())
def test_overlap_matches_monai(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, gt = pair
    assert dice(pred, gt) == pytest.approx(monai_dice(pred, gt), abs=1e-6)
    assert iou(pred, gt) == pytest.approx(monai_iou(pred, gt), abs=1e-6)


@THOROUGH
@given(mask_pairs(), spacings_2d, st.floats(0.0, 6.0))
def test_surface_metrics_match_monai(pair, spacing, tolerance: float) -> None:
    pred, gt = pair
    assume(pred.any() or gt.any())  # both-empty is a documented difference, tested separately
    assert normalized_surface_dice(pred, gt, tolerance, spacing) == pytest.approx(
        monai_nsd(pred, gt, tolerance, spacing), abs=1e-6
    )
    assert_hd95_matches_monai(pred, gt, spacing)


@pytest.mark.parametrize("seed", range(6))
def test_3d_matches_monai(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 20, size=3))
    gt = ndimage.binary_opening(rng.random(shape) < 0.5)
    pred = ndimage.binary_dilation(gt) if seed % 2 else rng.random(shape) < 0.2
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, size=3))
    assert dice(pred, gt) == pytest.approx(monai_dice(pred, gt), abs=1e-6)
    assert iou(pred, gt) == pytest.approx(monai_iou(pred, gt), abs=1e-6)
    assert normalized_surface_dice(pred, gt, 1.7, spacing) == pytest.approx(
        monai_nsd(pred, gt, 1.7, spacing), abs=1e-6
    )
    assert hd95(pred, gt, spacing) == pytest.approx(monai_hd95(pred, gt, spacing), rel=1e-5)


@FAST
@given(st.integers(1, 24), st.integers(1, 24), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0))
def test_borders_match_scipy_erosion(h: int, w: int, seed: int, density: float) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < density
    np.testing.assert_array_equal(mask_borders(mask), mask ^ ndimage.binary_erosion(mask))


# --------------------------------------------------------------------------- edge cases


def _full(shape=(12, 15)) -> np.ndarray:
    return np.ones(shape, dtype=bool)


def _empty(shape=(12, 15)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _pixel(y: int, x: int, shape=(12, 15)) -> np.ndarray:
    mask = _empty(shape)
    mask[y, x] = True
    return mask


def _rect(y0: int, y1: int, x0: int, x1: int, shape=(12, 15)) -> np.ndarray:
    mask = _empty(shape)
    mask[y0:y1, x0:x1] = True
    return mask


EDGE_CASES = {
    "empty/full": (_empty(), _full()),
    "full/empty": (_full(), _empty()),
    "full/full": (_full(), _full()),
    "same single pixel": (_pixel(5, 5), _pixel(5, 5)),
    "distinct single pixels": (_pixel(0, 0), _pixel(3, 4)),
    "touching border": (_rect(0, 6, 0, 15), _rect(0, 7, 2, 15)),
    "identical": (_rect(2, 9, 3, 11), _rect(2, 9, 3, 11)),
    "disjoint": (_rect(0, 3, 0, 3), _rect(8, 12, 10, 15)),
    "nested": (_rect(4, 7, 4, 8), _rect(2, 10, 2, 12)),
    "one-pixel-wide line": (_rect(5, 6, 0, 15), _rect(4, 7, 0, 15)),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0), (0.6, 2.5)])
def test_edge_cases_match_monai(name: str, spacing) -> None:
    pred, gt = EDGE_CASES[name]
    assert dice(pred, gt) == pytest.approx(monai_dice(pred, gt), abs=1e-6)
    assert iou(pred, gt) == pytest.approx(monai_iou(pred, gt), abs=1e-6)
    for tolerance in (0.0, 1.0, 2.0, 3.3):
        assert normalized_surface_dice(pred, gt, tolerance, spacing) == pytest.approx(
            monai_nsd(pred, gt, tolerance, spacing), abs=1e-6
        )
    assert_hd95_matches_monai(pred, gt, spacing)


def test_both_empty_is_perfect_agreement() -> None:
    empty = _empty()
    assert segmentation_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    # MONAI leaves this case undefined; we document the difference.
    assert math.isnan(monai_nsd(empty, empty, 2.0))
    assert math.isnan(monai_hd95(empty, empty))


@pytest.mark.parametrize("other", [_full(), _pixel(3, 3), _rect(2, 5, 2, 9)])
@pytest.mark.parametrize("empty_is_pred", [True, False])
def test_exactly_one_empty_is_total_disagreement(other: np.ndarray, empty_is_pred: bool) -> None:
    pred, gt = (_empty(), other) if empty_is_pred else (other, _empty())
    assert segmentation_metrics(pred, gt) == {"dice": 0.0, "iou": 0.0, "nsd": 0.0, "hd95": math.inf}
    assert hd95(pred, gt, empty_value=17.0) == 17.0
    cap = image_diagonal(pred.shape, (0.5, 2.0))
    assert segmentation_metrics(pred, gt, (0.5, 2.0), hd95_empty_value=cap)["hd95"] == cap


def test_single_pixels_known_values() -> None:
    pred, gt = _pixel(0, 0), _pixel(3, 4)
    assert hd95(pred, gt) == pytest.approx(5.0)
    assert hd95(pred, gt, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(6.0, 2.0))
    assert normalized_surface_dice(pred, gt, 5.0) == 1.0  # tie d == tolerance counts as within
    assert normalized_surface_dice(pred, gt, 4.99) == 0.0


def test_exact_tie_with_inexact_float_spacing_counts_as_within() -> None:
    # 3 * 0.1 > 0.3 in float64; the boundary distance equals the tolerance mathematically.
    pred, gt = _pixel(0, 0), _pixel(3, 0)
    assert normalized_surface_dice(pred, gt, 0.3, spacing=(0.1, 0.1)) == 1.0
    assert monai_nsd(pred, gt, 0.3, spacing=(0.1, 0.1)) == 1.0


def test_integer_masks_are_accepted() -> None:
    gt = _rect(2, 9, 3, 11).astype(np.uint8) * 255
    pred = _rect(3, 9, 3, 11).astype(np.int64)
    assert segmentation_metrics(pred, gt) == segmentation_metrics(pred.astype(bool), gt.astype(bool))


# --------------------------------------------------------------------------- spacing semantics


def test_nsd_tolerance_is_in_spacing_units_with_anisotropic_spacing() -> None:
    gt = _rect(10, 30, 10, 30, shape=(40, 40))
    shifted_rows = np.roll(gt, 1, axis=0)  # boundary moves 1 pixel along axis 0
    shifted_cols = np.roll(gt, 1, axis=1)  # boundary moves 1 pixel along axis 1
    spacing = (2.0, 0.5)  # axis-0 pixels are 2 mm tall, axis-1 pixels 0.5 mm wide

    # In pixels both shifts are 1 px: fully within a 1.5 px tolerance.
    assert normalized_surface_dice(shifted_rows, gt, 1.5) == 1.0
    assert normalized_surface_dice(shifted_cols, gt, 1.5) == 1.0
    # In mm the row shift is 2 mm (outside 1.5 mm), the column shift 0.5 mm (inside).
    nsd_rows = normalized_surface_dice(shifted_rows, gt, 1.5, spacing)
    assert nsd_rows < 1.0
    assert normalized_surface_dice(shifted_cols, gt, 1.5, spacing) == 1.0
    assert normalized_surface_dice(shifted_rows, gt, 2.0, spacing) == 1.0
    assert nsd_rows == pytest.approx(monai_nsd(shifted_rows, gt, 1.5, spacing), abs=1e-6)
    assert hd95(shifted_rows, gt, spacing) == pytest.approx(2.0)
    assert hd95(shifted_cols, gt, spacing) == pytest.approx(0.5)


@FAST
@given(mask_pairs(max_side=40), st.floats(0.3, 3.0), st.integers(0, 30))
def test_isotropic_spacing_scales_distances(pair, scale: float, squared_px: int) -> None:
    pred, gt = pair
    # Squared pixel distances are integers; sqrt(k + 0.5) is never a tie, so rounding cannot flip a count.
    tolerance_px = math.sqrt(squared_px + 0.5)
    assert normalized_surface_dice(pred, gt, tolerance_px * scale, (scale, scale)) == normalized_surface_dice(
        pred, gt, tolerance_px
    )
    assert normalized_surface_dice(pred, gt, tolerance_px * scale, scale) == normalized_surface_dice(
        pred, gt, tolerance_px
    )
    expected = hd95(pred, gt) * scale
    assert hd95(pred, gt, (scale, scale)) == (math.inf if math.isinf(expected) else pytest.approx(expected))


# --------------------------------------------------------------------------- properties


@FAST
@given(mask_pairs(), spacings_2d, st.floats(0.0, 5.0))
def test_symmetry_and_bounds(pair, spacing, tolerance: float) -> None:
    pred, gt = pair
    forward = segmentation_metrics(pred, gt, spacing, tolerance)
    backward = segmentation_metrics(gt, pred, spacing, tolerance)
    assert forward["dice"] == backward["dice"]
    assert forward["iou"] == backward["iou"]
    assert forward["nsd"] == pytest.approx(backward["nsd"], abs=1e-12)
    assert forward["hd95"] == backward["hd95"]
    for key in ("dice", "iou", "nsd"):
        assert 0.0 <= forward[key] <= 1.0
    assert forward["hd95"] >= 0.0
    assert forward["iou"] <= forward["dice"] + 1e-12
    assert forward["iou"] == pytest.approx(forward["dice"] / (2.0 - forward["dice"]))
    if math.isfinite(forward["hd95"]):
        assert forward["hd95"] <= image_diagonal(pred.shape, spacing)


@FAST
@given(mask_pairs(), spacings_2d, st.floats(0.0, 5.0), st.floats(0.0, 5.0))
def test_nsd_is_monotone_in_tolerance(pair, spacing, t1: float, t2: float) -> None:
    pred, gt = pair
    low, high = sorted((t1, t2))
    distances = surface_distances(pred, gt, spacing)
    assert distances.nsd(low) <= distances.nsd(high)


@FAST
@given(mask_pairs(), spacings_2d)
def test_identical_masks_are_perfect(pair, spacing) -> None:
    _, gt = pair
    perfect = {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    assert segmentation_metrics(gt, gt.copy(), spacing, 0.0) == perfect


@FAST
@given(mask_pairs(), spacings_2d, st.floats(0.0, 5.0))
def test_segmentation_metrics_matches_individual_functions(pair, spacing, tolerance: float) -> None:
    pred, gt = pair
    combined = segmentation_metrics(pred, gt, spacing, tolerance)
    assert combined == {
        "dice": dice(pred, gt),
        "iou": iou(pred, gt),
        "nsd": normalized_surface_dice(pred, gt, tolerance, spacing),
        "hd95": hd95(pred, gt, spacing),
    }
    assert all(type(v) is float for v in combined.values())


# --------------------------------------------------------------------------- input validation


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        dice(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    for fn in (iou, hd95, segmentation_metrics):
        with pytest.raises(ValueError, match="shape"):
            fn(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        normalized_surface_dice(np.zeros((4, 5), bool), np.zeros((5, 4), bool), 1.0)


def test_rejects_float_masks_and_bad_ranks() -> None:
    with pytest.raises(TypeError, match="threshold"):
        dice(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        dice(np.zeros(4, bool), np.zeros(4, bool))
    with pytest.raises(ValueError, match="2-D"):
        hd95(np.zeros((2, 2, 2, 2), bool), np.zeros((2, 2, 2, 2), bool))


@pytest.mark.parametrize(
    "spacing", [(1.0,), (1.0, 1.0, 1.0), (0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), math.inf]
)
def test_rejects_bad_spacing(spacing) -> None:
    with pytest.raises(ValueError, match="spacing"):
        hd95(_pixel(1, 1), _pixel(2, 2), spacing)


@pytest.mark.parametrize("tolerance", [-0.1, math.inf, math.nan])
def test_rejects_bad_tolerance(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(_pixel(1, 1), _pixel(2, 2), tolerance)


def test_box_iou_values_and_the_empty_convention():
    from medseg_agent.metrics import box_iou

    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((3, 3, 3, 3), (3, 3, 3, 3)) == 1.0  # two boxes without area: the same box
    assert box_iou((3, 3, 3, 3), (0, 0, 10, 10)) == 0.0
