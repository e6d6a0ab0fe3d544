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


def test_summary_reports_the_clicks_that_lowered_iou():
    curves = [
        # 4 clicks made, then padding: changes +0.3, -0.1 (lowered), +0.15
        ClickCurve("a", "d1", "MRI", "t", [0.5, 0.8, 0.7, 0.85] + [0.85] * 16, clicks=4),
        # a drop of 0.01 is within the tolerance; padding after 3 clicks is not counted
        ClickCurve("b", "d1", "MRI", "t", [0.6, 0.59, 0.9] + [0.9] * 17, clicks=3),
        # a curve written before the count was recorded: every value counts
        ClickCurve("c", "d2", "CT", "t", [0.9, 0.6] + [0.6] * 18),
    ]
    rows = {(r["group"], r["name"]): r for r in summarize_curves(curves, 20)}
    mri = rows[("modality", "MRI")]
    assert mri["lowered>0.02"] == pytest.approx(1 / 5)
    assert mri["mean drop"] == pytest.approx(0.1)
    overall = rows[("all", "all")]
    assert overall["lowered>0.02"] == pytest.approx(2 / (5 + 19))
    assert overall["mean drop"] == pytest.approx((0.1 + 0.3) / 2)
    assert rows[("dataset", "d2")]["lowered>0.02"] == pytest.approx(1 / 19)


def test_click_curve_runs_the_clicker_through_the_environment(shape_tool, disc):
    curve = click_curve(shape_tool, disc, max_clicks=6)
    assert len(curve.ious) == 6 and 1 <= curve.clicks <= 6
    assert curve.ious[-1] > curve.ious[0]
    assert shape_tool.encode_count == 1
    # clicks are exact pixels: the first click is the disc centre (interior-most point)
    first = shape_tool.prompts[0].points[0]
    assert abs(first[0] - 80) <= 1 and abs(first[1] - 60) <= 1
