from __future__ import annotations

import numpy as np
from expert_samples import bar, discs

from medseg_agent.experts import rationale as why
from medseg_agent.experts.strategy import FirstChoice, analyse_target, error_regions


def test_rationale_names_the_missed_part_and_the_leak_side():
    gt = discs(120, 160, [(80, 60)], 30)
    bbox = analyse_target(gt).bbox
    mask = gt.copy()
    mask[75:, :] = False
    mask |= discs(120, 160, [(20, 60)], 8)
    missed, leaked = error_regions(mask, gt)
    text = why.click_rationale("left kidney in abdomen CT", missed, gt, bbox)
    assert "misses" in text and "lower part of the left kidney" in text and "positive point" in text
    assert "abdomen" not in text  # the structure, not the whole prompt
    text = why.click_rationale("left kidney in abdomen CT", leaked, gt, bbox)
    assert "leaks" in text and "to the left of the left kidney" in text and "negative point" in text
    assert "medium-sized" in text and "about 7%" in text  # (8 / 30)² of the target

    empty = np.zeros_like(gt)
    first = error_regions(empty, gt)[0]
    assert "mask is empty" in why.click_rationale("liver", first, gt, bbox)


def test_first_action_rationale_follows_the_rule():
    line = bar()
    shape = analyse_target(line)
    text = why.first_action_rationale(
        "vessel", shape, FirstChoice("point", "point", "elongated", False), line
    )
    assert "thin and elongated" in text and "positive point" in text
    blob = discs(120, 160, [(30, 30)], 20)
    text = why.first_action_rationale(
        "nodule", analyse_target(blob), FirstChoice("box", "box", "compact", False), blob
    )
    assert "compact" in text and "box" in text and "upper-left of the image" in text
    two = discs(120, 160, [(40, 60), (120, 60)], 15)
    text = why.first_action_rationale(
        "kidneys", analyse_target(two), FirstChoice("point", "point", "multi-part", False), two
    )
    assert "2 separate parts" in text


def test_redraw_rationale_names_the_cut_sides():
    bbox = (40, 30, 119, 89)
    text = why.redraw_rationale("liver", (55.0, 30.0, 119.0, 70.0), bbox, 0.3)
    assert "cuts off the lower and left parts of the liver" in text and "about 30%" in text
    assert "the upper part" in why.redraw_rationale("liver", (40.0, 45.0, 119.0, 89.0), bbox, 0.1)
    assert "upper, left and right parts" in why.redraw_rationale(
        "liver", (50.0, 45.0, 100.0, 89.0), bbox, 0.4
    )
    assert "on every side" in why.redraw_rationale("liver", (50.0, 45.0, 100.0, 80.0), bbox, 0.6)


def test_stop_rationale_by_reason():
    gt = discs(120, 160, [(80, 60)], 30)
    assert "closely" in why.stop_rationale("liver", "accurate", None, gt)
    mask = gt.copy()
    mask[85:, :] = False
    largest = error_regions(mask, gt)[0]
    assert "no further point improves" in why.stop_rationale("liver", "no_gain", largest, gt)
    assert "no actions left" in why.stop_rationale("liver", "limit", largest, gt)
    small = discs(120, 160, [(80, 60)], 10)
    flood = np.ones_like(small)  # the mask covers the whole image
    leak = error_regions(flood, small)[0]
    times = round(leak.area / small.sum())
    assert times > 10 and f"large (about {times} times the target's size)" in why.stop_rationale(
        "liver", "no_gain", leak, small
    )
    assert (
        why.short_target("nucleus at the image centre in fluorescence Microscopy")
        == "nucleus at the image centre"
    )
