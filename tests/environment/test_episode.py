from __future__ import annotations

import json

import numpy as np
import pytest

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask, load_record, save_record, turn_masks
from medseg_agent.environment.render import NEGATIVE_COLOR
from medseg_agent.environment.runner import run_episode
from medseg_agent.metrics import iou
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace
from medseg_agent.vocabulary.errors import ErrorKind


def call(name, **arguments):
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_box_then_points_follow_sam_semantics(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=None, coordinate_space=CoordinateSpace.PIXEL))
    obs = env.reset(disc.image, disc.target, disc.mask)
    assert obs.image.shape == disc.image.shape and not obs.mask.any()
    obs = env.step(action=AddBox(55, 35, 105, 85))
    assert obs.error is None and obs.mask[60, 80] and not obs.mask[10, 10]
    first = shape_tool.prompts[-1]
    assert first.mask_input is None and first.box is not None and len(first.points) == 0
    obs = env.step(call("add_point", point_2d=[56, 36], point_type="negative"))
    second = shape_tool.prompts[-1]
    # points refine: previous logits and the box are passed along with every point so far
    assert second.mask_input is not None and second.box is not None and second.labels.tolist() == [0]
    assert not obs.mask[36, 56]
    env.step(action=AddBox(0, 0, 20, 20))
    third = shape_tool.prompts[-1]
    # a new box replaces the old one and starts a new mask
    assert third.mask_input is None and len(third.points) == 0
    assert shape_tool.encode_count == 1 and shape_tool.decode_count == 3
    record = env.record
    assert [t.action["name"] for t in record.turns] == ["add_bbox", "add_point", "add_bbox"]
    assert record.turns[0].iou == pytest.approx(iou(turn_masks(record)[0], disc.mask))


def test_observation_is_resized_and_drawn(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64))
    obs = env.reset(disc.image, disc.target, disc.mask)
    assert obs.image.shape == (48, 64, 3)
    obs = env.step(action=AddBox(300, 200, 700, 800))
    assert obs.mask.shape == disc.mask.shape  # the tool works at full resolution
    view = obs.image.astype(int)
    inside = view[24, 32]
    assert inside[1] > inside[0] and inside[1] > inside[2]  # green overlay on the mask
    obs = env.step(action=AddPoint(100, 100, positive=False))
    y, x = round(0.1 * 48), round(0.1 * 64)
    assert tuple(obs.image[y, x]) == NEGATIVE_COLOR


def test_malformed_replies_become_errors_and_end_after_limit(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_consecutive_errors=2))
    env.reset(disc.image, disc.target, disc.mask)
    obs = env.step("the kidney is there")
    assert obs.error.kind == ErrorKind.NO_ACTION and not obs.done
    assert "could not be executed" in obs.text
    obs = env.step(call("add_bbox", bbox_2d=[500, 10, 100, 20]))
    assert obs.error.kind == ErrorKind.INVERTED_BOX and not obs.done
    obs = env.step("<tool_call>{bad json</tool_call>")
    assert obs.done and env.record.stop_reason == "too_many_errors"
    assert env.record.num_errors == 3 and env.record.num_interactions == 0
    assert not final_mask(env.record).any()
    with pytest.raises(RuntimeError, match="over"):
        env.step(call("stop_action"))


def test_errors_reset_after_a_valid_action(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_consecutive_errors=1))
    env.reset(disc.image, disc.target, disc.mask)
    env.step("nothing")
    env.step(action=AddBox(100, 100, 600, 600))
    obs = env.step("nothing")
    assert not obs.done and env.record.num_errors == 2


def test_first_stop_is_refused_once_then_accepted(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    env.reset(disc.image, disc.target, disc.mask)
    obs = env.step(call("stop_action"))
    assert obs.error.kind == ErrorKind.REJECTED and not obs.done
    obs = env.step(call("stop_action"))
    assert obs.done and env.record.stop_reason == "stop_action"


def test_turn_limit_ends_episode(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=2))
    env.reset(disc.image, disc.target, disc.mask)
    assert not env.step(action=AddBox(100, 100, 600, 600)).done
    obs = env.step(action=AddPoint(500, 500, True))
    assert obs.done and env.record.stop_reason == "turn_limit" and env.record.num_interactions == 2
    assert set(env.record.final_metrics) == {"dice", "iou", "nsd", "hd95"}


def test_ground_truth_shape_is_checked(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    with pytest.raises(ValueError, match="does not match"):
        env.reset(disc.image, disc.target, disc.mask[:10])


@pytest.mark.parametrize("as_png", [False, True])
def test_record_round_trip_reproduces_masks(tmp_path, shape_tool, disc, as_png):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=6))
    record = run_episode(env, ClickerPolicy(stop_iou=0.99), disc)
    masks = turn_masks(record)
    assert len(masks) == record.num_interactions >= 2
    path = save_record(record, tmp_path / "rec.json", masks_as_png=as_png)
    loaded = load_record(path)
    for a, b in zip(turn_masks(loaded, tmp_path), masks, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(final_mask(loaded, tmp_path), final_mask(record))
    assert [t.iou for t in loaded.turns] == [t.iou for t in record.turns]


def test_bad_record_files_name_the_problem(tmp_path):
    from medseg_agent.environment.record import RecordError

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        load_record(bad)
    bad.write_text(json.dumps({"image_size": "big", "view_size": [1, 2]}))
    with pytest.raises(RecordError, match="image_size"):
        load_record(bad)


def test_clicker_policy_improves_and_never_repeats(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=8, coordinate_space=CoordinateSpace.PIXEL,
                                                    view_longest_side=None))
    record = run_episode(env, ClickerPolicy(stop_iou=None), disc)
    points = [tuple(t.action_pixels["arguments"]["point_2d"]) for t in record.action_turns()]
    assert len(points) == len(set(points))
    trace = record.iou_trace()
    assert trace[-1] > trace[0]
    assert record.turns[0].action["arguments"]["point_type"] == "positive"
