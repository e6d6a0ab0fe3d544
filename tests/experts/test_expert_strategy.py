from __future__ import annotations

import numpy as np
import pytest
from expert_samples import bar, discs

from medseg_agent.experts.strategy import (
    BOX,
    POINT,
    StrategyRules,
    analyse_target,
    choose_first,
    error_region_at,
    error_regions,
    fraction_outside_box,
    jittered_box,
    rule_strategy,
)

RULES = StrategyRules()


def test_shapes_and_the_first_action_rule():
    disc = analyse_target(discs(120, 160, [(80, 60)], 25))
    assert disc.parts == 1 and 0.72 < disc.fill < np.pi / 4
    assert disc.elongation == pytest.approx(1.0, abs=0.05)
    assert rule_strategy(disc, RULES) == (BOX, "compact")

    line = analyse_target(bar())
    assert line.elongation > 10
    assert rule_strategy(line, RULES) == (POINT, "elongated")

    two = analyse_target(discs(120, 160, [(40, 60), (120, 60)], 15))
    assert two.parts == 2 and rule_strategy(two, RULES) == (POINT, "multi-part")

    many = analyse_target(
        discs(120, 160, [(20 + 30 * i, 30 + 60 * j) for i in range(5) for j in range(2)], 8)
    )
    assert many.parts == 10 and rule_strategy(many, RULES) == (BOX, "many parts")

    ring = discs(120, 160, [(80, 60)], 40) & ~discs(120, 160, [(80, 60)], 34)
    assert rule_strategy(analyse_target(ring), RULES) == (POINT, "sparse")

    with pytest.raises(ValueError, match="empty"):
        analyse_target(np.zeros((10, 10), bool))


def test_random_share_of_the_other_strategy_is_seeded_and_has_the_requested_rate():
    shape = analyse_target(discs(120, 160, [(80, 60)], 25))
    played = [choose_first(shape, np.random.default_rng(s), RULES, 0.25, True) for s in range(600)]
    explored = [c for c in played if c.explored]
    assert 0.19 < len(explored) / len(played) < 0.31
    assert all(c.strategy == POINT and c.rule == BOX for c in explored)
    again = [choose_first(shape, np.random.default_rng(s), RULES, 0.25, True) for s in range(600)]
    assert played == again
    assert not any(
        choose_first(shape, np.random.default_rng(s), RULES, 0.0, True).explored for s in range(100)
    )
    no_box = choose_first(shape, np.random.default_rng(0), RULES, 1.0, can_box=False)
    assert no_box.strategy == POINT and not no_box.explored


def test_jittered_box_stays_near_the_target_and_inside_the_image():
    bbox = (50, 40, 109, 79)  # 60 x 40
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1, x2, y2 = jittered_box(bbox, (120, 160), rng, 0.2)
        assert 0 <= x1 < x2 <= 159 and 0 <= y1 < y2 <= 119
        assert abs(x1 - 50) <= 0.2 * 60 + 1 and abs(x2 - 109) <= 0.2 * 60 + 1
        assert abs(y1 - 40) <= 0.2 * 40 + 1 and abs(y2 - 79) <= 0.2 * 40 + 1
    tight = jittered_box(bbox, (120, 160), rng, 0.0)
    assert np.allclose(tight, bbox, atol=1.0)
    assert fraction_outside_box(np.pad(np.ones((10, 10), bool), 5), (5, 5, 9.0, 14)) == pytest.approx(0.5)


def test_error_regions_are_largest_first_with_interior_points_and_skip_clicks():
    gt = discs(120, 160, [(80, 60)], 30)
    mask = gt.copy()
    mask[75:, :] = False  # misses the lower part of the disc
    leak = discs(120, 160, [(20, 60)], 8)
    mask |= leak  # leaks on the left
    regions = error_regions(mask, gt)
    assert [r.positive for r in regions] == [True, False]
    missed, leaked = regions
    assert missed.area == int((gt & ~mask).sum()) and missed.y > 75 and gt[missed.y, missed.x]
    assert (leaked.x, leaked.y) == (20, 60) and leaked.depth == pytest.approx(8.5, abs=0.6)
    # a clicked pixel is never proposed again
    again = error_regions(mask, gt, clicked=[(leaked.x, leaked.y)])
    assert (again[1].x, again[1].y) != (leaked.x, leaked.y)
    # one-pixel slivers are not worth a click
    sliver = gt.copy()
    sliver[60, 50] = False
    assert error_regions(sliver, gt, min_depth=2.0) == []
    at = error_region_at(mask, gt, leaked.x, leaked.y)
    assert at is not None and not at.positive and at.area == int(leak.sum())
    assert error_region_at(mask, gt, 80, 60) is None
