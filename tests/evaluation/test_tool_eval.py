from __future__ import annotations

import pytest

from medseg_agent.evaluation.tool_eval import ClickCurve, click_curve, noc, summarize_curves


def test_noc_is_first_click_reaching_threshold_or_cap():
    assert noc([0.5, 0.86, 0.95], 0.85, 20) == 2
    assert noc([0.5, 0.86, 0.95], 0.90, 20) == 3
    assert noc([0.5, 0.6], 0.9, 20) == 20
    assert noc([0.95] * 3, 0.9, 20) == 1


def test_summary_groups_and_counts_failures():
    curves = [
        ClickCurve("a", "d1", "MRI", "t", [0.5, 0.9, 0.95] + [0.95] * 17),
        ClickCurve("b", "d1", "MRI", "t", [0.2, 0.3, 0.4] + [0.4] * 17),
        ClickCurve("c", "d2", "CT", "t", [0.9] * 20),
    ]
    rows = {(r["group"], r["name"]): r for r in summarize_curves(curves, 20)}
    overall = rows[("all", "all")]
    assert overall["samples"] == 3
    assert overall["mIoU@1"] == pytest.approx((0.5 + 0.2 + 0.9) / 3)
    assert overall["NoC@90"] == pytest.approx((2 + 20 + 1) / 3)
    assert overall[">=20@90"] == 1
    assert rows[("modality", "MRI")]["NoC@85"] == pytest.approx((2 + 20) / 2)
    assert rows[("dataset", "d2")]["mIoU@5"] == pytest.approx(0.9)


def test_click_curve_runs_the_clicker_through_the_environment(shape_tool, disc):
    curve = click_curve(shape_tool, disc, max_clicks=6)
    assert len(curve.ious) == 6
    assert curve.ious[-1] > curve.ious[0]
    assert shape_tool.encode_count == 1
    # clicks are exact pixels: the first click is the disc centre (interior-most point)
    first = shape_tool.prompts[0].points[0]
    assert abs(first[0] - 80) <= 1 and abs(first[1] - 60) <= 1
