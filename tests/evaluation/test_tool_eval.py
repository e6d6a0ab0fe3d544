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


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("ious", ["x", 0.5], r"field 'ious\.0': Input should be a valid number"),
        ("ious", [0.2, 1.7], r"field 'ious\.1': Input should be less than or equal to 1, got 1\.7"),
        ("clicks", -2, r"field 'clicks': Input should be greater than or equal to 0, got -2"),
    ],
)
def test_a_stored_curve_that_cannot_be_read_back_is_named_by_its_line(tmp_path, field, value, problem):
    import json

    from evalfixtures import disc_samples

    from medseg_agent.evaluation.tool_eval import evaluate_tool_to_folder
    from medseg_agent.tools.registry import build_tool

    samples = disc_samples(2)
    run = evaluate_tool_to_folder(samples, lambda: build_tool("classic"), tmp_path, max_clicks=2)
    assert run.ran == 2 and len(run.curves) == 2
    path = tmp_path / "curves.jsonl"
    first, second = path.read_text().splitlines()
    row = {**json.loads(second), field: value}
    path.write_text(first + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=rf"curves\.jsonl line 2 \(curve '{row['key']}'\): {problem}.*delete the line"):
        evaluate_tool_to_folder(samples, lambda: build_tool("classic"), tmp_path, max_clicks=2)
