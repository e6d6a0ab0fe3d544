from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import RecordError, final_mask, load_record, save_record, turn_masks
from medseg_agent.environment.render import NEGATIVE_COLOR
from medseg_agent.metrics import iou
from medseg_agent.policies.clicker import ClickerPolicy
from medseg_agent.policies.runner import run_episode
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace, Stop, ToolCall
from medseg_agent.vocabulary.errors import ErrorKind
from medseg_agent.vocabulary.stop import StopReason


def call(name, **arguments):
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def test_box_then_points_follow_sam_semantics(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=None, coordinate_space=CoordinateSpace.PIXEL))
    obs = env.reset(disc)
    assert obs.image.shape == disc.image.shape and not obs.mask.any()
    obs = env.step(AddBox(55, 35, 105, 85))
    assert obs.error is None and obs.mask[60, 80] and not obs.mask[10, 10]
    first = shape_tool.prompts[-1]
    assert first.mask_input is None and first.box is not None and len(first.points) == 0
    obs = env.step(call("add_point", point_2d=[56, 36], point_type="negative"))
    second = shape_tool.prompts[-1]
    # points refine: previous logits and the box are passed along with every point so far
    assert second.mask_input is not None and second.box is not None and second.labels.tolist() == [0]
    assert not obs.mask[36, 56]
    env.step(AddBox(0, 0, 20, 20))
    third = shape_tool.prompts[-1]
    # a new box replaces the old one and starts a new mask
    assert third.mask_input is None and len(third.points) == 0
    assert shape_tool.encode_count == 1 and shape_tool.decode_count == 3
    record = env.record
    assert [t.action.name for t in record.turns] == ["add_bbox", "add_point", "add_bbox"]
    assert record.turns[0].iou == pytest.approx(iou(turn_masks(record)[0], disc.mask))


def test_observation_is_resized_and_drawn(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=64))
    obs = env.reset(disc)
    assert obs.image.shape == (48, 64, 3)
    obs = env.step(AddBox(300, 200, 700, 800))
    assert obs.mask.shape == disc.mask.shape  # the tool works at full resolution
    view = obs.image.astype(int)
    inside = view[24, 32]
    assert inside[1] > inside[0] and inside[1] > inside[2]  # green overlay on the mask
    obs = env.step(AddPoint(100, 100, positive=False))
    y, x = round(0.1 * 48), round(0.1 * 64)
    assert tuple(obs.image[y, x]) == NEGATIVE_COLOR


def test_malformed_replies_become_errors_and_end_after_limit(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_consecutive_errors=3))
    env.reset(disc)
    obs = env.step("the kidney is there")
    assert obs.error.kind == ErrorKind.NO_ACTION and not obs.done
    assert "could not be executed" in obs.text and "try again" in obs.text
    obs = env.step(call("add_bbox", bbox_2d=[500, 10, 100, 20]))
    assert obs.error.kind == ErrorKind.INVERTED_BOX and not obs.done
    obs = env.step("<tool_call>{bad json</tool_call>")
    assert obs.done and env.record.stop_reason is StopReason.TOO_MANY_ERRORS and "episode ends" in obs.text
    assert env.record.num_errors == 3 and env.record.num_interactions == 0
    assert not final_mask(env.record).any()
    with pytest.raises(RuntimeError, match="over"):
        env.step(call("stop_action"))


def test_default_limit_ends_on_the_second_invalid_reply_in_a_row(shape_tool, disc):
    """README and docs: "after max_consecutive_errors (default 2) invalid replies in a row"."""
    env = SegmentationEnv(shape_tool)
    env.reset(disc)
    assert not env.step("nothing").done
    obs = env.step("still nothing")
    assert obs.done and env.record.stop_reason is StopReason.TOO_MANY_ERRORS and env.record.num_errors == 2


def test_errors_reset_after_a_valid_action(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_consecutive_errors=2))
    env.reset(disc)
    env.step("nothing")
    env.step(AddBox(100, 100, 600, 600))
    obs = env.step("nothing")
    assert not obs.done and env.record.num_errors == 2
    assert env.step("nothing").done


def test_first_stop_is_refused_once_then_accepted(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    env.reset(disc)
    obs = env.step(call("stop_action"))
    assert obs.error.kind == ErrorKind.REJECTED and not obs.done
    obs = env.step(call("stop_action"))
    assert obs.done and env.record.stop_reason is StopReason.STOP_ACTION


def test_turn_limit_ends_episode(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=2))
    env.reset(disc)
    assert not env.step(AddBox(100, 100, 600, 600)).done
    obs = env.step(AddPoint(500, 500, True))
    assert obs.done and env.record.stop_reason is StopReason.TURN_LIMIT and env.record.num_interactions == 2
    assert set(env.record.final_metrics) == {"dice", "iou", "nsd", "hd95"}


def test_ground_truth_shape_is_checked(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    with pytest.raises(ValueError, match="does not match"):
        env.reset(replace(disc, mask=disc.mask[:10]))


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
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="bad.json"):
        load_record(bad)
    bad.write_text(json.dumps({"image_size": "big", "view_size": [1, 2]}))
    with pytest.raises(RecordError, match="image_size"):
        load_record(bad)


@pytest.mark.parametrize(
    ("field", "damage", "problem"),
    [
        ("gt_mask_rle", {"counts": "3"}, r"field 'gt_mask_rle': RLE runs cover 3 pixels"),
        ("final_mask_rle", {"size": [-1, 5]}, r"field 'final_mask_rle': RLE size must be two whole numbers"),
        ("turns.0.mask_rle", {"counts": "\u00e9"}, r"field 'turns\.0\.mask_rle': .*alphabet"),
        ("gt_mask_rle", {"size": [7, 9], "counts": "o1"}, r"gt_mask_rle has size \[7, 9\], the image_size is"),
    ],
)
def test_a_damaged_mask_in_a_record_names_the_file_and_the_field(tmp_path, shape_tool, disc, field, damage, problem):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=3))
    path = save_record(run_episode(env, ClickerPolicy(stop_iou=0.99), disc), tmp_path / "rec.json")
    data = json.loads(path.read_text())
    rle = data["turns"][0]["mask_rle"] if field.startswith("turns") else data[field]
    rle.update(damage)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"rec\.json: .*{problem}"):
        load_record(path)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("turns", 0, "iou"), 1.5, r"field 'turns\.0\.iou': Input should be less than or equal to 1, got 1\.5"),
        (("turns", 0, "dice"), float("nan"), r"field 'turns\.0\.dice': Input should be a finite number, got nan"),
        (("turns", 0, "iou"), -0.2, r"field 'turns\.0\.iou': .*greater than or equal to 0, got -0\.2"),
        (("turns", 0, "turn"), 0, r"field 'turns\.0\.turn': .*greater than or equal to 1, got 0"),
        (("turns", 0, "tool_seconds"), -3, r"field 'turns\.0\.tool_seconds': .*greater than or equal to 0"),
        (("image_size",), [0, 64], r"field 'image_size\.0': .*greater than or equal to 1, got 0"),
        (("view_size",), [64, -1], r"field 'view_size\.1'"),
        (("num_errors",), -1, r"field 'num_errors'"),
    ],
)
def test_values_a_reward_would_be_computed_from_are_checked_when_a_record_is_read(
    tmp_path, shape_tool, disc, path, value, problem
):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=3))
    saved = save_record(run_episode(env, ClickerPolicy(stop_iou=0.99), disc), tmp_path / "rec.json")
    load_record(saved)  # as written, it is valid
    data = json.loads(saved.read_text())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    saved.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"rec\.json: {problem}"):
        load_record(saved)


def test_clicker_policy_improves_and_never_repeats(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=8, coordinate_space=CoordinateSpace.PIXEL,
                                                    view_longest_side=None))
    record = run_episode(env, ClickerPolicy(stop_iou=None), disc)
    points = [(t.action_pixels.x, t.action_pixels.y) for t in record.action_turns()]
    assert len(points) == len(set(points))
    trace = record.iou_trace()
    assert trace[-1] > trace[0]
    assert record.turns[0].action.positive


# -- the Gymnasium-shaped contract --------------------------------------------------------------
def test_observations_say_terminated_or_truncated(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=1, first_stop_retries=0))
    env.reset(disc)
    obs = env.step(Stop())
    assert obs.terminated and not obs.truncated and obs.done and env.record.stop_reason is StopReason.STOP_ACTION
    env.reset(disc)
    obs = env.step(AddBox(100, 100, 600, 600))
    assert obs.truncated and not obs.terminated and env.record.stop_reason is StopReason.TURN_LIMIT
    env = SegmentationEnv(shape_tool, EpisodeConfig(max_consecutive_errors=0))
    env.reset(disc)
    obs = env.step("no action here")
    assert obs.truncated and not obs.terminated and env.record.stop_reason is StopReason.TOO_MANY_ERRORS


def test_close_from_outside_finalises_the_record_once(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    assert env.record is None
    with pytest.raises(RuntimeError, match="reset"):
        env.close()
    env.reset(disc)
    assert env.record.turns == [] and env.record.stop_reason is None and not env.done
    obs = env.step(AddBox(300, 200, 700, 800))
    record = env.close(StopReason.POLICY_ENDED)
    assert record is env.record and env.done and record.stop_reason is StopReason.POLICY_ENDED
    assert np.array_equal(final_mask(record), obs.mask) and record.num_interactions == 1
    assert record.final_metrics["iou"] == pytest.approx(iou(obs.mask, disc.mask)) and record.wall_seconds > 0
    with pytest.raises(RuntimeError, match="over"):
        env.step(AddPoint(500, 500))
    assert env.close(StopReason.TURN_LIMIT).stop_reason is StopReason.POLICY_ENDED  # already closed: unchanged


def test_reset_takes_the_sample_and_options(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    env.reset(replace(disc, spacing=(0.5, 0.5), image_path="disc.png"), options={"policy": "mine", "seed": 3})
    record = env.record
    identity = (record.sample_id, record.dataset, record.modality, record.target)
    assert identity == ("disc-0", "synthetic", "CT", disc.target)
    assert record.spacing == (0.5, 0.5) and record.image_path == "disc.png"
    assert record.policy == "mine" and record.meta["seed"] == 3 and record.gt_mask_rle is not None
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(disc, options={"polcy": "typo"})
    env.reset(replace(disc, mask=None))
    env.step(AddBox(300, 200, 700, 800))
    assert env.record.gt_mask_rle is None and env.record.turns[0].iou is None


def test_step_takes_an_action_text_or_tool_calls(shape_tool, disc):
    env = SegmentationEnv(shape_tool)
    env.reset(disc)
    env.step(AddBox(300, 200, 700, 800), reasoning="around it")
    env.step([ToolCall("add_point", '{"point_2d": [500, 500], "point_type": "negative"}')], text="one more")
    env.step(call("add_point", point_2d=[510, 500], point_type="positive"), actor="person")
    first, second, third = env.record.turns
    assert first.raw_text == env.protocol.format_action(AddBox(300, 200, 700, 800), "around it")
    assert second.raw_text == "one more" and second.action == AddPoint(500, 500, positive=False)
    assert third.action == AddPoint(510, 500) and [t.actor for t in env.record.turns] == ["agent", "agent", "person"]
    with pytest.raises(ValueError, match="once"):
        env.step("some text", text="other text")


def test_typed_records_keep_every_digit_through_json(tmp_path, shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(coordinate_space=CoordinateSpace.NORM1))
    env.reset(disc)
    env.step(AddBox(0.123456789, 0.2, 0.7, 0.8))
    env.step("garbage")
    env.step(AddPoint(0.51234567, 0.5, positive=False), actor="person")
    loaded = load_record(save_record(env.record, tmp_path / "r.json"))
    assert loaded == env.record and loaded.schema_version == 2
    assert loaded.turns[0].action.x1 == 0.123456789
    assert loaded.turns[0].action_pixels == env.record.turns[0].action_pixels
    assert loaded.turns[1].error.kind is ErrorKind.NO_ACTION and loaded.turns[2].actor == "person"
    stored = json.loads((tmp_path / "r.json").read_text())
    assert stored["turns"][0]["action"] == {"name": "add_bbox", "arguments": {"bbox_2d": [0.123456789, 0.2, 0.7, 0.8]}}
    stored["turns"][0]["action"] = {"name": "add_bbox", "arguments": {"bbox_2d": [1, 2]}}
    (tmp_path / "bad.json").write_text(json.dumps(stored))
    with pytest.raises(RecordError, match=r"turns\.0\.action.*add_bbox arguments"):
        load_record(tmp_path / "bad.json")


def test_run_episode_binds_the_episode_session_only_for_policies_that_want_it(shape_tool, disc):
    class LookAhead(ClickerPolicy):
        wants_session = True

        def bind_session(self, session):
            self.session = session

    env = SegmentationEnv(shape_tool, EpisodeConfig(max_turns=2))
    policy = LookAhead(stop_iou=None)
    record = run_episode(env, policy, disc, seed=4)
    assert shape_tool.encode_count == 1 and policy.session.image_size == disc.mask.shape
    assert record.policy == "clicker" and record.meta["seed"] == 4
    run_episode(env, ClickerPolicy(stop_iou=None), disc)
    assert shape_tool.encode_count == 2
