"""A person and an agent share one episode: every turn names its actor, undo/redo rebuild the
environment so the record always matches the mask, and the agent reads a person's turns as its own."""

from __future__ import annotations

import numpy as np
import pytest

from medseg_agent.annotation.episode import (
    AGENT,
    PERSON,
    EpisodeClosed,
    InvalidPersonAction,
    NothingToUndo,
    SharedEpisode,
)
from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask, turn_masks
from medseg_agent.policies.base import PolicyReply
from medseg_agent.policies.chat import ChatPolicy
from medseg_agent.protocols.conversation import Conversation
from medseg_agent.vocabulary.errors import ErrorKind


class ScriptedChat(ChatPolicy):
    """A chat policy whose model answers from a list and keeps every conversation it was shown."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        super().__init__()
        self.replies_left = list(replies)
        self.seen: list[Conversation] = []

    def generate(self, conversation: Conversation) -> PolicyReply:
        self.seen.append(Conversation(list(conversation.messages)))
        return PolicyReply(text=self.replies_left.pop(0))


def call(name: str, **arguments) -> str:
    import json

    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def make_episode(tool, sample, policy=None, max_turns: int = 10) -> SharedEpisode:
    env = SegmentationEnv(tool, EpisodeConfig(max_turns=max_turns))
    return SharedEpisode(env, sample, tool.set_image(sample.image), policy, has_ground_truth=True)


def test_person_turns_are_marked_and_undo_redo_keep_the_record_consistent(shape_tool, disc):
    episode = make_episode(shape_tool, disc)
    episode.person_box(50, 30, 110, 90)
    after_box = episode.mask.copy()
    episode.person_point(60, 40, positive=False)
    after_negative = episode.mask.copy()
    assert not after_negative[40, 60] and after_box[40, 60]
    assert episode.actors == [PERSON, PERSON]
    assert [t.action.name for t in episode.record.turns] == ["add_bbox", "add_point"]
    assert episode.record.turns[1].action_pixels.positive is False

    episode.undo()
    assert len(episode.record.turns) == 1 and np.array_equal(episode.mask, after_box)
    assert turn_masks(episode.record)[-1].tolist() == after_box.tolist()
    assert episode.can_redo and len(episode.undone_steps) == 1
    episode.redo()
    assert np.array_equal(episode.mask, after_negative) and episode.actors == [PERSON, PERSON]
    assert episode.undone_steps == []  # redone: nothing of it stays undone
    with pytest.raises(NothingToUndo):
        episode.redo()

    episode.reset()
    assert episode.record.turns == [] and not episode.mask.any() and len(episode.undone_steps) == 2
    episode.undo()  # the reset itself is undone
    assert np.array_equal(episode.mask, after_negative) and len(episode.record.turns) == 2
    assert episode.undone_steps == []

    episode.person_stop()
    assert episode.done and episode.record.stop_reason == "stop_action"
    assert np.array_equal(final_mask(episode.record), after_negative)
    with pytest.raises(EpisodeClosed, match="undo to continue"):
        episode.person_point(10, 10, True)
    episode.undo()
    assert not episode.done
    episode.person_point(100, 60, True)  # a new action after undo drops the redo history
    assert not episode.can_redo


def test_person_actions_are_checked(shape_tool, disc):
    episode = make_episode(shape_tool, disc)
    with pytest.raises(InvalidPersonAction, match="nothing is segmented yet"):
        episode.person_stop()
    with pytest.raises(InvalidPersonAction, match="outside the image"):
        episode.person_point(500, 10, True)
    with pytest.raises(InvalidPersonAction, match="too small"):
        episode.person_box(11, 11, 11.05, 11.05)
    box = episode.person_box(90, 70, 30, 20)  # corners in any order
    assert box.mask[20:71, 30:91].all()
    assert episode.record.turns == episode.record.turns[:1] and episode.actors == [PERSON]


def test_the_agent_reads_a_persons_turn_as_its_own(shape_tool, disc):
    policy = ScriptedChat([call("add_bbox", bbox_2d=[300, 250, 700, 750]), "no tool call at all",
                           call("stop_action")])
    episode = make_episode(shape_tool, disc, policy)
    episode.agent_turn()
    episode.person_point(80, 60, positive=True)
    episode.agent_turn()  # an invalid reply: an error turn, still the agent's
    episode.person_point(70, 50, positive=False)
    episode.agent_turn()
    assert episode.actors == [AGENT, PERSON, AGENT, PERSON, AGENT]
    assert episode.done and episode.record.stop_reason == "stop_action"
    assert episode.record.turns[2].error.kind == ErrorKind.NO_ACTION

    # Before its second reply the model saw its box, then the person's click as an assistant turn.
    second = policy.seen[1]
    assistant = [m.text for m in second.messages if m.role == "assistant"]
    assert assistant[0] == episode.record.turns[0].raw_text
    assert '"point_type": "positive"' in assistant[1] and assistant[1] == episode.record.turns[1].raw_text
    assert second.messages[-1].role == "user" and second.messages[-1].image is not None
    third = policy.seen[2]
    assert [m.role for m in third.messages].count("assistant") == 4
    assert third.messages[-1].image is not None  # after the person's click: the new overlay

    # Undoing the agent's stop and correcting again: the agent's next reply is asked afresh.
    episode.undo()
    assert not episode.done and episode.actors == [AGENT, PERSON, AGENT, PERSON]


def test_the_record_replays_to_the_saved_mask(disc):
    """Replaying the raw texts of a mixed record through a fresh environment gives every mask again."""
    from medseg_agent.tools.registry import build_tool

    tool = build_tool("classic")
    policy = ScriptedChat([call("add_bbox", bbox_2d=[280, 230, 720, 770]), call("stop_action")])
    episode = make_episode(tool, disc, policy)
    episode.agent_turn()
    episode.person_point(80, 60, positive=True)
    episode.person_point(60, 45, positive=False)
    episode.undo()
    episode.person_point(100, 75, positive=False)
    episode.agent_turn()
    record = episode.record
    fresh = SegmentationEnv(tool, EpisodeConfig(max_turns=10))
    fresh.reset(disc)
    for turn in record.turns:
        observation = fresh.step(turn.raw_text, actor=turn.actor)
    assert observation.done
    assert np.array_equal(observation.mask, final_mask(record))
    assert np.array_equal(observation.mask, episode.mask)
    assert [(t.actor, t.action) for t in fresh.record.turns] == [(t.actor, t.action) for t in record.turns]
    assert record.policy == "scripted"
    annotated = episode.annotated_record({"annotator": "ann"})
    assert annotated.meta["annotation"] == {"person_turns": 2, "agent_turns": 2, "corrected": True,
                                            "undone_agent_turns": 0, "undone_person_turns": 1, "annotator": "ann"}
