from __future__ import annotations

import json

import numpy as np

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.replay import conversation_from_record, replay_views
from medseg_agent.protocols.conversation import Conversation, to_hf, to_openai, to_sharegpt
from medseg_agent.vocabulary.actions import AddBox, AddPoint


def test_replay_reproduces_live_views_and_conversation(shape_tool, disc):
    env = SegmentationEnv(shape_tool, EpisodeConfig(view_longest_side=100))
    obs = env.reset(disc)
    live = Conversation.start(env.protocol, disc.target, obs.image, env.space)
    replies = [
        env.protocol.format_action(AddBox(300, 200, 700, 800), "box around the disc"),
        "no tool call here",
        env.protocol.format_action(AddPoint(480, 500, False)),
        json.dumps({"name": "stop_action"}),  # malformed: not wrapped
    ]
    views = []
    for reply in replies:
        live.add_assistant(reply)
        obs = env.step(reply)
        views.append(obs.image)
        live.add_user(obs.text, None if obs.error else obs.image)
    record = env.record
    replayed = replay_views(record, disc.image)
    assert len(replayed) == len(views)
    for a, b in zip(replayed, views, strict=True):
        assert np.array_equal(a, b)
    conversation = conversation_from_record(record, disc.image, include_final_user=True)
    assert [m.role for m in conversation.messages] == [m.role for m in live.messages]
    for a, b in zip(conversation.messages, live.messages, strict=True):
        assert a.text == b.text
        assert (a.image is None) == (b.image is None)
        if a.image is not None:
            assert np.array_equal(a.image, b.image)
    # renderers agree on the number of images
    hf_messages, images = to_hf(conversation)
    assert sum(p["type"] == "image" for m in hf_messages for p in m["content"]) == len(images) == 3
    share, images = to_sharegpt(conversation)
    assert sum(m["content"].count("<image>") for m in share) == len(images)
    openai_messages = to_openai(conversation)
    assert openai_messages[1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_trimmed_conversation_keeps_first_image_and_latest_turns(shape_tool, disc):
    conversation = Conversation.start(SegmentationEnv(shape_tool).protocol, "x", disc.image)
    for i in range(5):
        conversation.add_assistant(f"reply {i}")
        conversation.add_user(f"obs {i}", disc.image)
    trimmed = conversation.trimmed(3)
    assert len(trimmed.images()) == 3
    assert trimmed.messages[1].image is not None and trimmed.messages[2].text == "reply 3"
    assert trimmed.messages[-1].text == "obs 4"
