"""The published presets against hand-computed values, and our terms on hand-built episodes."""

from __future__ import annotations

import pytest
from reward_cases import build_record, gt_rect, rect

from medseg_agent.rewards import RewardParams, episode_facts, score_record
from medseg_agent.rewards.terms import evaluate_terms
from medseg_agent.vocabulary.stop import StopReason


def medsam_expected(fmt: float, iou: float, dice: float, overshoot: float, turns: int, gains: float) -> float:
    cost = 0.01 * turns if turns > 1 else 0.0
    quality = min(1.0, max(0.0, 0.5 * iou + 0.5 * dice - overshoot - cost + 0.1 * gains))
    return 0.2 * fmt + 0.8 * quality


def refine_past_best():
    """Box (IoU .8) -> positive click (IoU 1) -> negative click on background that leaks (IoU .8) -> stop."""
    gt = gt_rect()
    return build_record(
        gt,
        [
            ("box", (0, 0, 3, 3), rect(0, 3, 0, 3)),
            ("point", (4, 1, True), gt),
            ("point", (7, 7, False), rect(0, 4, 0, 4)),
            ("stop", None),
        ],
    )


def test_medsam_agent_refining_past_the_best_mask():
    b = score_record(refine_past_best(), "medsam_agent")
    # format 1; IoU .8, Dice 8/9; overshoot 1 - .8; 3 turns; gains between tool turns: +.2 then -.2
    expected = 0.2 * 1 + 0.8 * (0.5 * 0.8 + 0.5 * 8 / 9 - 0.2 - 0.03 + 0.1 * 0.2)
    assert b.total == pytest.approx(expected, abs=1e-9)
    assert b.total == pytest.approx(0.7075555556, abs=1e-9)
    assert b.terms["format_medsam"] == 1.0
    assert b.terms["overshoot"] == pytest.approx(0.2)
    assert b.terms["turn_cost_medsam"] == 3.0
    assert b.terms["improvement"] == pytest.approx(0.2)
    assert b.groups["quality"]["clipped"] == pytest.approx(0.19 + 4 / 9)


def test_medsam_agent_single_turn_without_stop_pays_no_turn_cost():
    gt = gt_rect()
    record = build_record(gt, [("box", (0, 0, 3, 3), rect(0, 3, 0, 3))], max_turns=1)
    b = score_record(record, "medsam_agent")
    assert b.terms["format_medsam"] == 0.5  # a tool call, but the last call is not stop_action
    assert b.terms["turn_cost_medsam"] == 0.0
    assert b.total == pytest.approx(0.2 * 0.5 + 0.8 * (0.4 + 4 / 9), abs=1e-9)
    assert b.total == pytest.approx(medsam_expected(0.5, 0.8, 8 / 9, 0.0, 1, 0.0))


def test_medsam_agent_quality_is_clipped_at_one():
    gt = gt_rect()
    record = build_record(gt, [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("point", (2, 3, True), gt), ("stop", None)])
    b = score_record(record, "medsam_agent")
    # raw quality 1 + 1 - 0 - 0.02 + 0.1 * 0.5 = 1.03 -> 1
    assert b.groups["quality"]["raw"] == pytest.approx(1.03)
    assert b.total == pytest.approx(1.0)


def test_medsam_agent_no_action_scores_zero():
    record = build_record(gt_rect(), [("error",), ("error",), ("error",)], stop_reason="too_many_errors")
    b = score_record(record, "medsam_agent")
    assert b.total == 0.0
    assert b.terms["format_medsam"] == 0.0


def ibis_episode():
    gt = gt_rect()
    why = {"reasoning": "the lower right part is missing"}
    return build_record(
        gt,
        [
            ("point", (1, 1, True), rect(0, 3, 0, 3), why),  # FN click, IoU .8 -> 1 + 2 + 1 + 1 + 1 = 6
            ("point", (1, 1, False), rect(0, 3, 0, 3), why),  # on a correct pixel -> 1 + 2 - 1 + 0 + 1 = 3
            ("error",),  # invalid -> 0 + 0 + 0 + 0 + 1 = 1
            ("point", (4, 2, True), gt),  # no <think> -> fmt 0: 0 + 3 + 1 + 1 + 1 = 6
            ("point", (9, 0, True), gt, why),  # background, no change -> 1 + 3 - 1 + 0 + 1 = 4
            ("point", (2, 2, False), gt & ~rect(2, 2, 2, 2), why),  # IoU .95, step 6 -> 1 + 3 - 1 + 0 - .2
            ("stop", "the box", why),  # step 7 -> 1 + 3 + 0 + 0 - .4 = 3.6
        ],
        protocol="ibis",
        max_turns=10,
    )


def test_ibis_agent_five_term_mean_over_steps():
    b = score_record(ibis_episode(), "ibis_agent", with_steps=True)
    steps = [sum(row["ibis"].values()) for row in b.steps]
    assert steps == pytest.approx([6, 3, 1, 6, 4, 2.8, 3.6])
    assert b.total == pytest.approx(26.4 / 35)
    assert b.terms["ibis_fmt"] == pytest.approx(5 / 7)
    assert b.terms["ibis_ans"] == pytest.approx(16 / 7)
    assert b.terms["ibis_click"] == pytest.approx(-1 / 7)
    assert b.terms["ibis_pseg"] == pytest.approx(2 / 7)
    assert b.terms["ibis_len"] == pytest.approx(4.4 / 7)


def test_ibis_agent_counts_a_rollout_ended_without_a_tool_call_as_one_more_invalid_reply():
    """A training engine ends the rollout when a reply calls no tool; that reply has no turn in the
    record, and scores what an invalid reply scores, as under ``format_valid``."""
    steps = ibis_episode().turns[:-1]  # the episode above without its stop
    ended = ibis_episode()
    ended.turns, ended.stop_reason = steps, StopReason.POLICY_ENDED
    b = score_record(ended, "ibis_agent")
    # six steps + the unrecorded reply (0 on all but len, which is -0.4 at step 7)
    assert b.terms["ibis_fmt"] == pytest.approx(4 / 7)
    assert b.terms["ibis_ans"] == pytest.approx(13 / 7)
    assert b.terms["ibis_click"] == pytest.approx(-1 / 7)
    assert b.terms["ibis_pseg"] == pytest.approx(2 / 7)
    assert b.terms["ibis_len"] == pytest.approx(4.4 / 7)
    truncated = ibis_episode()
    truncated.turns, truncated.stop_reason = steps, StopReason.TURN_LIMIT
    assert score_record(truncated, "ibis_agent").terms["ibis_fmt"] == pytest.approx(4 / 6)


def test_ibis_answer_levels_are_strict_thresholds():
    gt = gt_rect()
    # IoU exactly 0.8 is level 2 (the released code uses ">"), 0.5 exactly is level 0.
    for mask, level in ((rect(0, 3, 0, 3), 2.0), (rect(0, 1, 0, 4), 0.0), (gt, 3.0)):
        record = build_record(gt, [("point", (1, 1, True), mask)], protocol="medsam")
        assert score_record(record, "ibis_agent").terms["ibis_ans"] == level


def terms_of(record, *names: str) -> dict[str, float]:
    return evaluate_terms(episode_facts(record), list(names), RewardParams())


def test_process_terms_by_hand():
    t = terms_of(refine_past_best(), "format_valid", "redundant", "click_correctness", "turn_fraction", "stopping")
    assert t["format_valid"] == 1.0
    assert t["redundant"] == 1.0  # the negative click on an already-correct background pixel
    assert t["click_correctness"] == 0.0  # one good positive click, one wrong negative click
    assert t["turn_fraction"] == pytest.approx(3 / 5)
    # stopped after a losing step (not premature) = +1, minus one idle turn after the last gain / 5
    assert t["stopping"] == pytest.approx(0.8)


def test_medseg_preset_by_hand():
    b = score_record(refine_past_best(), "medseg")
    # 0.1 * valid + 0.9 * clip(0.8 * Dice + 0.2 * IoU - 0.5 * overshoot - 0.05 * 3/5 + 0.02 * clicks)
    quality = 0.8 * 8 / 9 + 0.2 * 0.8 - 0.5 * 0.2 - 0.05 * 0.6 + 0.02 * 0.0
    assert b.total == pytest.approx(0.1 + 0.9 * quality)
    assert b.total == pytest.approx(0.767, abs=1e-9)


def test_premature_stop_and_idle_tail():
    gt = gt_rect()
    premature = build_record(gt, [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("stop", None)])
    assert terms_of(premature, "stopping")["stopping"] == -1.0  # IoU .5, still gaining fast
    idle = build_record(
        gt,
        [("box", (0, 0, 4, 3), gt), ("point", (9, 9, False), gt), ("point", (8, 8, False), gt)],
        max_turns=3,
    )
    t = terms_of(idle, "stopping", "redundant")
    assert t["stopping"] == pytest.approx(-2 / 3)  # no stop (0) and two turns without gain
    assert t["redundant"] == 2.0


def test_repeated_box_is_redundant():
    gt = gt_rect()
    record = build_record(
        gt, [("box", (0, 0, 3, 3), rect(0, 3, 0, 3)), ("box", (0, 0, 3, 3), rect(0, 3, 0, 3)), ("stop", None)]
    )
    facts = episode_facts(record)
    assert facts.steps[1].redundant_reasons == ["no_change", "repeated_box"]
    assert facts.steps[0].redundant_reasons == []


def test_presets_need_ground_truth_for_outcome_terms():
    record = refine_past_best()
    record.gt_mask_rle = None
    with pytest.raises(ValueError, match="ground-truth mask"):
        score_record(record, "medsam_agent")


def test_better_trajectory_scores_higher_under_every_preset():
    gt = gt_rect()
    good = build_record(gt, [("box", (0, 0, 4, 3), gt), ("stop", None)])
    bad = build_record(gt, [("box", (0, 0, 4, 1), rect(0, 1, 0, 4)), ("stop", None)])
    for preset in ("medsam_agent", "ibis_agent", "medseg"):
        assert score_record(good, preset).total > score_record(bad, preset).total, preset


def test_click_correctness_without_clicks():
    gt = gt_rect()
    box_only = build_record(gt, [("box", (0, 0, 4, 3), gt), ("stop", None)])
    nothing = build_record(gt, [("error",), ("error",), ("error",)], stop_reason="too_many_errors")
    assert terms_of(box_only, "click_correctness")["click_correctness"] == 1.0  # no wrong click made
    assert terms_of(nothing, "click_correctness")["click_correctness"] == 0.0  # no action, no credit
