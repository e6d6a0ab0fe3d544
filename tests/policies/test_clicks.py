"""``next_click``: RITM's simulated-click rule, which every NoC / mIoU@k figure depends on.

The rule: take the false-negative (missed) and false-positive (leaked) regions, measure how deep
each goes (distance to its border, the image edge counting as border), click the interior-most
pixel of the deeper one, positive for a miss and negative for a leak, a tie going to the negative
click; pixels clicked before are never clicked again. The depth oracle here is scipy's exact
Euclidean distance transform, independent of the OpenCV one the rule uses.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import distance_transform_edt

from medseg_agent.policies.clicks import next_click


def depth_map(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel to the nearest pixel outside it, outside the image included."""
    return distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def test_nothing_to_correct_gives_no_click():
    empty = np.zeros((20, 30), dtype=bool)
    assert next_click(empty, empty) is None
    target = disc((20, 30), (15, 10), 5)
    assert next_click(target, target) is None
    # the only wrong pixel was clicked already
    pred = target.copy()
    pred[10, 15] = False
    assert next_click(pred, target, [(15, 10)]) is None


def test_a_miss_gets_a_positive_click_at_its_centre():
    target = disc((40, 50), (20, 18), 8)
    click = next_click(np.zeros_like(target), target)
    assert (click.x, click.y, click.positive) == (20, 18, True)
    assert click.depth == pytest.approx(depth_map(target).max())


def test_a_leak_gets_a_negative_click_at_its_centre():
    pred = disc((40, 50), (30, 22), 6)
    click = next_click(pred, np.zeros_like(pred))
    assert (click.x, click.y, click.positive) == (30, 22, False)


def test_the_deeper_error_region_wins_whatever_its_area():
    gt = np.zeros((60, 60), dtype=bool)
    gt[5:25, 5:25] = True  # a 20x20 miss: depth 10
    pred = np.zeros_like(gt)
    pred[40:44, 2:58] = True  # a 4x56 leak: larger (224 px) but only 2 deep
    click = next_click(pred, gt)
    assert click.positive and 5 <= click.x < 25 and 5 <= click.y < 25
    pred[30:58, 30:58] = True  # now a 28x28 leak, deeper than the miss
    click = next_click(pred, gt)
    assert not click.positive and 30 <= click.x < 58 and 30 <= click.y < 58


def test_a_tie_goes_to_the_negative_click():
    gt = np.zeros((30, 40), dtype=bool)
    pred = np.zeros_like(gt)
    gt[5:10, 5:10] = True  # 5x5 miss
    pred[15:20, 25:30] = True  # 5x5 leak: the same depth
    click = next_click(pred, gt)
    assert not click.positive and 25 <= click.x < 30 and 15 <= click.y < 20


def test_the_image_border_counts_as_outside():
    gt = np.zeros((20, 40), dtype=bool)
    gt[:, :10] = True  # the miss touches the top, bottom and left edges
    click = next_click(np.zeros_like(gt), gt)
    # without the border as outside, the deepest pixels would be on the left edge (10 from the right side)
    assert click.x in (4, 5) and 4 <= click.y <= 15 and click.depth == pytest.approx(5.0)


def test_clicks_are_never_repeated_even_when_the_mask_does_not_change():
    gt = disc((30, 30), (15, 15), 6)
    pred = np.zeros_like(gt)
    clicked: list[tuple[float, float]] = []
    for _ in range(int(gt.sum())):
        click = next_click(pred, gt, clicked)
        assert click is not None and (click.x, click.y) not in clicked and gt[click.y, click.x]
        clicked.append((click.x, click.y))
    assert next_click(pred, gt, clicked) is None  # every missed pixel has been clicked once


def test_clicks_at_rounded_positions_and_outside_the_image_are_handled():
    gt = disc((30, 30), (15, 15), 6)
    first = next_click(np.zeros_like(gt), gt)
    again = next_click(np.zeros_like(gt), gt, [(first.x + 0.4, first.y - 0.4), (-3.0, 99.0)])
    assert (again.x, again.y) != (first.x, first.y)


masks = arrays(np.bool_, st.tuples(st.integers(2, 14), st.integers(2, 14)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_rule_holds_on_any_masks(data):
    gt = data.draw(masks, label="gt")
    pred = data.draw(arrays(np.bool_, gt.shape), label="pred")
    h, w = gt.shape
    points = st.tuples(st.integers(0, w - 1), st.integers(0, h - 1))
    clicked = data.draw(st.lists(points, max_size=6), label="clicked")
    click = next_click(pred, gt, clicked)
    fn, fp = gt & ~pred, pred & ~gt
    for x, y in clicked:
        fn[y, x] = fp[y, x] = False
    if not (fn.any() or fp.any()):
        assert click is None
        return
    assert click is not None and (click.x, click.y) not in set(clicked)
    fn_depth = depth_map(fn).max() if fn.any() else 0.0
    fp_depth = depth_map(fp).max() if fp.any() else 0.0
    assert click.positive == (fn_depth > fp_depth)
    region = fn if click.positive else fp
    assert region[click.y, click.x]  # a miss is clicked positive, a leak negative
    assert click.depth == pytest.approx(max(fn_depth, fp_depth), rel=1e-5)
    assert depth_map(region)[click.y, click.x] == pytest.approx(click.depth, rel=1e-5)  # interior-most
    depths = depth_map(region)
    ys, xs = np.nonzero(depths == depths.max())
    assert (click.y, click.x) == (ys[0], xs[0])  # a tie goes to the first pixel in raster order


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_click_does_not_depend_on_the_image_around_the_error(data):
    """The rule works on each error region's bounding box: the same masks placed anywhere on a larger
    empty image (away from its border) give the same click, moved by the offset, at the same depth."""
    gt = data.draw(masks, label="gt")
    pred = data.draw(arrays(np.bool_, gt.shape), label="pred")
    dy, dx = data.draw(st.integers(1, 20), label="dy"), data.draw(st.integers(1, 20), label="dx")
    h, w = gt.shape

    def placed(mask: np.ndarray) -> np.ndarray:
        canvas = np.zeros((h + 40, w + 40), dtype=bool)
        canvas[dy : dy + h, dx : dx + w] = mask
        return canvas

    # on the larger image the small image's border is no longer an edge: keep the errors off it
    inner = np.zeros_like(gt)
    inner[1:-1, 1:-1] = True
    gt, pred = gt & inner, pred & inner
    small, large = next_click(pred, gt), next_click(placed(pred), placed(gt))
    if small is None:
        assert large is None
        return
    assert large is not None
    assert (large.x - dx, large.y - dy, large.positive) == (small.x, small.y, small.positive)
    assert large.depth == small.depth


def shapes_on(shape: tuple[int, int]) -> st.SearchStrategy[np.ndarray]:
    """Unions of discs and rectangles: deep regions with long ridges of tied depths, as real errors."""
    h, w = shape
    disc_shape = st.builds(disc, st.just(shape), st.tuples(st.integers(0, w - 1), st.integers(0, h - 1)),
                           st.floats(1, 120))

    def rectangle(x0: int, y0: int, rw: int, rh: int) -> np.ndarray:
        mask = np.zeros(shape, bool)
        mask[y0 : y0 + rh, x0 : x0 + rw] = True
        return mask

    rect_shape = st.builds(rectangle, st.integers(0, w - 1), st.integers(0, h - 1), st.integers(1, w),
                           st.integers(1, h))
    parts = st.lists(st.one_of(disc_shape, rect_shape), min_size=1, max_size=3)
    return parts.map(lambda masks: np.logical_or.reduce(masks))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_click_is_the_exact_interior_most_pixel_on_large_masks(data):
    """Depths of hundreds of pixels, where a float transform's rounding could split a tie or merge two
    depths: the click is still the first pixel in raster order at the exact largest depth."""
    shape = (301, 402)
    gt, pred = data.draw(shapes_on(shape), label="gt"), data.draw(shapes_on(shape), label="pred")
    click = next_click(pred, gt)
    fn, fp = gt & ~pred, pred & ~gt
    if not (fn.any() or fp.any()):
        assert click is None
        return
    squares = {name: np.rint(depth_map(region) ** 2) for name, region in (("fn", fn), ("fp", fp))}
    positive = squares["fn"].max() > squares["fp"].max()
    chosen = squares["fn" if positive else "fp"]
    ys, xs = np.nonzero(chosen == chosen.max())
    assert (click.x, click.y, click.positive) == (xs[0], ys[0], positive)
    assert click.depth**2 == pytest.approx(chosen.max())
