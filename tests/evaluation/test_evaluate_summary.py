"""Summary definitions: sample mean vs class mean, format errors, HD95 with empty masks, IoU curves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medseg_agent.evaluation.gallery import pick_cases
from medseg_agent.evaluation.summary import (
    SampleResult,
    aggregate,
    class_mean,
    iou_by_action,
    result_from_record,
    summarize,
    timing,
    write_summary,
)


def result(key, target, dice, *, modality="CT", hd95=3.0, turns=2, replies=2, errors=0, stop="stop_action",
           trace=(0.5,), failure=None):
    return SampleResult(
        key, "d1", modality, target, dice=dice, iou=dice / (2 - dice), nsd=dice, hd95=hd95, turns=turns,
        replies=replies, format_errors=errors, stop_reason=stop, iou_trace=list(trace),
        policy_seconds=[0.1] * replies, tool_seconds=[0.2] * replies, env_seconds=[0.01] * replies, failure=failure,
    )


RESULTS = [
    result("a", "liver", 0.9, turns=2, replies=3, errors=1),
    result("b", "liver", 0.7, hd95=math.inf, stop="turn_limit", trace=(0.3, 0.6)),
    result("c", "liver", 0.8),
    result("d", "kidney", 0.2, modality="MRI", stop="too_many_errors", turns=0, replies=3, errors=3, trace=()),
    SampleResult("e", "d1", "MRI", "kidney", failure="ToolError: bad image"),
]


def test_sample_mean_class_mean_and_rates():
    overall = aggregate(RESULTS)
    assert overall["n"] == 4 and overall["failed"] == 1
    assert overall["dice"] == pytest.approx((0.9 + 0.7 + 0.8 + 0.2) / 4)
    assert overall["hd95"] == pytest.approx(3.0) and overall["hd95_inf"] == 1  # inf counted, not averaged
    assert overall["format_error_rate"] == pytest.approx(4 / 10)  # invalid replies / replies
    assert overall["stop_rate"] == pytest.approx(0.5)
    assert overall["turns"] == pytest.approx(1.5) and overall["replies"] == pytest.approx(2.5)
    classes = class_mean(RESULTS)
    assert classes["n"] == 2 and classes["dice"] == pytest.approx((0.8 + 0.2) / 2)  # each class once
    rows = {(r["level"], r["name"]): r for r in summarize(RESULTS)}
    assert rows[("modality", "MRI")]["n"] == 1 and rows[("modality", "MRI")]["failed"] == 1
    assert rows[("target", "liver")]["dice"] == pytest.approx(0.8)


def test_iou_curves_carry_the_last_value_forward():
    curves = iou_by_action(RESULTS, 3)
    assert curves["CT"] == pytest.approx([(0.5 + 0.3 + 0.5) / 3, (0.5 + 0.6 + 0.5) / 3, (0.5 + 0.6 + 0.5) / 3])
    assert curves["MRI"] == [0.0, 0.0, 0.0]  # never acted: IoU 0
    assert len(curves["all"]) == 3


def test_timing_splits_each_reply():
    times = timing(RESULTS)
    assert times["replies"] == 10
    assert times["policy_per_reply"] == pytest.approx(0.1) and times["tool_per_reply"] == pytest.approx(0.2)
    assert times["total_per_reply"] == pytest.approx(0.31)


def test_turns_are_interaction_turns_everywhere(shape_tool, disc):
    """One definition (issue 10 item 10): a box, a click, an invalid reply and the stop are 2 turns and
    4 replies, in evaluate's summary as in the trajectory summary and the reward sandbox."""
    from medseg_agent.environment.episode import SegmentationEnv
    from medseg_agent.experts.generate import StoredSample
    from medseg_agent.experts.summary import group_stats
    from medseg_agent.rewards.facts import episode_facts
    from medseg_agent.vocabulary.actions import AddBox, AddPoint, Stop

    env = SegmentationEnv(shape_tool)
    env.reset(disc)
    env.step(AddBox(300, 200, 700, 800))
    env.step("no action here")
    env.step(AddPoint(500, 500, True))
    env.step(Stop())
    sample = result_from_record("k", env.record)
    assert (sample.turns, sample.replies, sample.format_errors) == (2, 4, 1)
    stored = StoredSample("k", "s", "d", "CT", "disc", "test", Path("x.png"), [env.record])
    assert group_stats([stored])["mean_turns"] == 2 and group_stats([stored])["mean_replies"] == 4
    assert episode_facts(env.record).num_tool_turns == 2


def test_written_tables_are_strict_json_csv_and_markdown(tmp_path):
    paths = write_summary(RESULTS, tmp_path, max_actions=3, title="t")
    payload = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert payload["summary"][0]["name"] == "sample mean" and payload["failures"][0]["key"] == "e"
    markdown = paths["markdown"].read_text()
    assert "| all | class mean | 2 |" in markdown and "(1 ∞)" in markdown and "ToolError: bad image" in markdown
    assert paths["csv"].read_text().splitlines()[0].startswith("level,name,n,failed,dice,dice_std")
    assert "inf" in paths["samples"].read_text()


def test_a_target_with_a_bar_or_a_line_break_keeps_its_markdown_row(tmp_path):
    markdown = write_summary([result("a", "cyst | left\nlobe", 0.9)], tmp_path, max_actions=3, title="t")["markdown"]
    rows = [line for line in markdown.read_text().splitlines() if "cyst" in line]
    assert rows and all(line.startswith("| target | cyst \\| left lobe |") for line in rows)
    assert all(line.count(" | ") == rows[0].count(" | ") for line in rows)


def test_gallery_rows_are_best_median_worst():
    cases = pick_cases(RESULTS, per_row=4)
    assert [r.key for r in cases["best"]] == ["a"] and [r.key for r in cases["worst"]] == ["d"]
    assert pick_cases([], 4) == {}
