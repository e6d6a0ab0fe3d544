from __future__ import annotations

import numpy as np
import pytest
from expert_samples import bar, discs, sample_from_mask

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import turn_masks
from medseg_agent.experts.expert import ExpertPolicy
from medseg_agent.experts.generate import run_expert_episode
from medseg_agent.metrics import iou
from medseg_agent.policies.base import EpisodeContext
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.registry import build_policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.protocols import get_protocol
from medseg_agent.vocabulary.stop import StopReason


def names(record):
    return [t.action.name for t in record.turns]


def test_hybrid_expert_boxes_a_compact_target_and_every_reply_parses(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=5))
    expert = ExpertPolicy(reasoning=True, other_share=0.0)
    record = run_expert_episode(env, expert, disc, seed=3)
    assert names(record)[0] == "add_bbox" and set(names(record)[1:]) <= {"add_point", "stop_action"}
    trace = record.iou_trace()
    assert trace == sorted(trace) and trace[-1] > trace[0] + 0.05  # the box's square corners get cut away
    assert shape_tool.encode_count == 1  # look-ahead shares the environment's session
    info = record.meta["expert"]
    assert info["first"] == info["rule"] == "box" and info["reason"] == "compact"
    assert info["probe_mismatches"] == 0 and info["probes"] >= record.num_interactions
    protocol = get_protocol("medsam")
    for turn in record.turns:
        parsed = protocol.parse(turn.raw_text, env.frame)
        assert parsed.ok and parsed.reasoning and turn.raw_text.startswith("<think>")
    # without reasoning the replies are bare tool calls
    plain = run_expert_episode(env, ExpertPolicy(other_share=0.0), disc, seed=3)
    assert names(plain) == names(record)
    assert all(t.raw_text.startswith("<tool_call>") for t in plain.turns)


def test_probe_previews_exactly_what_the_environment_produces(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=6))
    expert = ExpertPolicy(delta=0.0, epsilon=0.0, tau=1.01, other_share=0.0)
    record = run_expert_episode(env, expert, disc, seed=1)
    assert record.num_interactions == 6 and record.meta["expert"]["probe_mismatches"] == 0


def test_parsimony_skips_actions_that_do_not_help(shape_tool):
    tiny_clicks = type(shape_tool)(radius=1)  # a click changes a handful of pixels
    sample = sample_from_mask(discs(120, 160, [(80, 60)], 30))
    env = SegmentationEnv(tiny_clicks, EpisodeConfig(max_turns=5))
    record = run_expert_episode(env, ExpertPolicy(other_share=0.0, box_jitter=0.0, tau=0.99), sample, seed=0)
    assert names(record) == ["add_bbox", "stop_action"]
    assert record.meta["expert"]["stop"] == "no_gain" and record.meta["expert"]["rejected"] >= 1
    # with no threshold the same expert keeps clicking up to the limit
    eager = ExpertPolicy(other_share=0.0, box_jitter=0.0, tau=0.99, delta=0.0, epsilon=0.0)
    record = run_expert_episode(env, eager, sample, seed=0)
    assert record.num_interactions == 5


def test_kept_corrections_gain_at_least_epsilon_and_never_repeat_a_click(shape_tool):
    sample = sample_from_mask(discs(120, 160, [(50, 60), (115, 60)], 22))
    env = SegmentationEnv(type(shape_tool)(radius=16), EpisodeConfig(max_turns=12))
    expert = ExpertPolicy(epsilon=0.01, delta=0.03, tau=0.97, other_share=0.0, first_min_iou=0.2)
    record = run_expert_episode(env, expert, sample, seed=0)
    assert record.meta["expert"]["first"] == "point" and names(record)[0] == "add_point"  # two parts
    trace = record.iou_trace()
    assert all(b - a >= 0.01 for a, b in zip(trace, trace[1:], strict=False))
    points = [(t.action_pixels.x, t.action_pixels.y) for t in record.action_turns()]
    assert len(points) == len(set(points))
    # both parts get clicked
    assert {x < 80 for x, _ in points} == {True, False}


def test_box_redraw_when_the_box_cuts_the_target(shape_tool):
    sample = sample_from_mask(discs(120, 160, [(80, 60)], 30))
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=5))
    kinds = []
    for seed in range(12):
        expert = ExpertPolicy(other_share=0.0, box_jitter=0.45, reasoning=True, first_min_iou=0.0)
        record = run_expert_episode(env, expert, sample, seed=seed)
        kinds += record.meta["expert"]["kinds"]
        for turn, kind in zip(record.action_turns(), record.meta["expert"]["kinds"], strict=True):
            if kind == "redraw":
                assert turn.action.name == "add_bbox" and "cuts off" in turn.reasoning
    assert "redraw" in kinds


def test_ibis_protocol_gets_clicks_only_and_think_reasoning(shape_tool, disc):
    env = SegmentationEnv(type(shape_tool)(radius=24), EpisodeConfig(max_turns=5, protocol="ibis"))
    record = run_expert_episode(env, ExpertPolicy(reasoning=True), disc, seed=0)
    assert "add_bbox" not in names(record) and names(record)[-1] == "stop_action"
    assert record.meta["expert"]["reason"] == "no box in protocol"
    assert all(t.raw_text.startswith("<think>") and "<action>" in t.raw_text for t in record.turns)
    assert "<answer>The target is segmented" not in record.turns[-1].raw_text  # the expert's own answer


def test_clicks_mode_reproduces_the_clicker_generator(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=20, protocol="ibis"))
    expert_record = run_episode(env, ExpertPolicy("clicks", reasoning=True), disc)
    clicker_record = run_episode(env, ClickerPolicy(stop_iou=0.8), disc)
    # this tool never reaches 0.8 here: both click 20 times, at the same places
    assert [t.action for t in expert_record.turns] == [t.action for t in clicker_record.turns]
    assert expert_record.num_interactions == 20 and expert_record.stop_reason is StopReason.TURN_LIMIT
    assert all(t.reasoning and t.raw_text.startswith("<think>") for t in expert_record.turns)
    # with a reachable threshold both stop at the same turn
    expert_record = run_episode(env, ExpertPolicy("clicks", tau=0.3), disc)
    clicker_record = run_episode(env, ClickerPolicy(stop_iou=0.3), disc)
    assert names(expert_record) == names(clicker_record) and names(expert_record)[-1] == "stop_action"
    assert expert_record.final_metrics["iou"] >= 0.3


def test_expert_needs_a_session_and_gets_the_episode_one_from_run_episode(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig())
    observation = env.reset(disc)
    context = EpisodeContext(disc.target, env.frame, env.protocol, env.image, disc.mask)
    with pytest.raises(ValueError, match="bind_session"):
        ExpertPolicy().reset(context, observation)
    with pytest.raises(ValueError, match="ground-truth"):
        ExpertPolicy().reset(EpisodeContext(disc.target, env.frame, env.protocol, env.image), observation)
    before = shape_tool.encode_count
    record = run_episode(env, build_policy("expert", other_share=0.0), disc)
    assert shape_tool.encode_count == before + 1 and record.final_metrics["iou"] > 0.6
    with pytest.raises(ValueError, match="epsilon"):
        ExpertPolicy(delta=0.01, epsilon=0.02)
    with pytest.raises(ValueError, match="mode"):
        ExpertPolicy("random")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"tau": -1.0}, r"tau must be a number > 0 \(above 1: never stop on IoU\), got -1\.0"),
        ({"tau": float("nan")}, r"tau must be a number > 0"),
        ({"box_jitter": -1.0}, r"box_jitter must be in \[0, 1\], got -1\.0"),
        ({"box_jitter": float("nan")}, r"box_jitter must be in \[0, 1\], got nan"),
        ({"first_min_iou": 2.0}, r"first_min_iou must be in \[0, 1\]"),
        ({"box_redraw_fraction": -0.1}, r"box_redraw_fraction must be in \[0, 1\]"),
        ({"delta": 3.0}, r"delta must be in \[0, 1\], got 3\.0"),
    ],
)
def test_expert_settings_that_cannot_work_are_refused_when_built(options, problem):
    with pytest.raises(ValueError, match=problem):
        build_policy("expert", **options)


def test_records_reproduce_and_trajectories_differ_by_seed(shape_tool):
    sample = sample_from_mask(bar(thickness=10))
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=5))
    first = run_expert_episode(env, ExpertPolicy(other_share=0.5), sample, seed=7)
    again = run_expert_episode(env, ExpertPolicy(other_share=0.5), sample, seed=7)
    assert [t.action for t in first.turns] == [t.action for t in again.turns]
    masks = turn_masks(first)
    assert iou(masks[-1], sample.mask) == pytest.approx(first.final_metrics["iou"])
    seen = {
        tuple(t.action for t in run_expert_episode(env, ExpertPolicy(other_share=0.5), sample, seed=s).turns)
        for s in range(6)
    }
    assert len(seen) > 1
    assert np.isfinite(first.final_metrics["dice"])


def test_on_the_classic_tool_previews_match_and_a_second_part_is_reached():
    from medseg_agent.tools.classic import ClassicTool

    tool = ClassicTool()
    env = SegmentationEnv(tool, EpisodeConfig(max_turns=5))
    # a compact target: box first, corrections until IoU >= tau, then stop, in fewer turns than the clicker
    disc = sample_from_mask(discs(96, 128, [(64, 48)], 24), seed=1)
    record = run_expert_episode(env, ExpertPolicy(other_share=0.0), disc, seed=0)
    info = record.meta["expert"]
    assert info["probe_mismatches"] == 0  # the classic tool is deterministic: previews are exact
    assert names(record)[0] == "add_bbox" and info["stop"] == "accurate"
    assert record.final_metrics["iou"] >= ExpertPolicy().tau and record.num_interactions < 5
    # two parts: a positive click on the second part adds it (the tool grows the mask there without
    # losing the first), so even the expert without look-ahead gets both
    pair = sample_from_mask(discs(96, 128, [(40, 48), (92, 48)], 14), seed=2)
    myopic = run_expert_episode(env, ExpertPolicy(other_share=0.0, lookahead=False), pair, seed=0)
    assert myopic.meta["expert"]["stop"] == "accurate"
    assert myopic.final_metrics["iou"] >= ExpertPolicy().tau


def test_expert_keeps_clicking_on_a_smaller_part_when_the_largest_error_is_not_worth_a_click(shape_tool):
    """Several parts: the largest error (a thin bar) gains nothing with a click, a small separate
    part does; the expert tries beyond its first candidates instead of stopping, and the record
    says why it stopped."""
    shape_tool.radius = 9

    yy, xx = np.mgrid[:120, :160]
    main = np.hypot(yy - 60, xx - 50) <= 8
    bar_part = (yy >= 20) & (yy < 22) & (xx >= 90) & (xx < 150)
    small = np.hypot(yy - 90, xx - 120) <= 6
    sample = sample_from_mask(main | bar_part | small, seed=0)
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=5, protocol="ibis"))
    record = run_expert_episode(env, ExpertPolicy(other_share=0.0, max_tries=1), sample, seed=0)
    points = [(round(t.action_pixels.x), round(t.action_pixels.y)) for t in record.action_turns()]
    assert points[:2] == [(50, 60), (120, 90)]  # the main part, then the small part, not the bar
    trace = record.iou_trace()
    assert trace[1] > trace[0] + 0.05
    assert record.meta["expert"]["stop"] == "no_gain"  # nothing left that a click improves


def test_the_record_says_the_budget_ended_the_episode(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=2, protocol="ibis"))
    record = run_expert_episode(env, ExpertPolicy(other_share=0.0, tau=0.999), disc, seed=0)
    assert record.stop_reason is StopReason.TURN_LIMIT and record.meta["expert"]["stop"] == "limit"
