"""Fuzzing the whole reply path with hostile replies (strategies in ``adversarial_replies``): the
parser answers within the time bound with an action or a typed error, the environment turns it into
an observation, and the record saves and reloads unchanged. Both protocols, text and tool calls."""

from __future__ import annotations

import math
import time

from adversarial_replies import SECONDS_PER_REPLY, ibis_replies, medsam_replies, tool_calls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import load_record, save_record
from medseg_agent.io.atomic import json_safe
from medseg_agent.policies.chat import reply_from
from medseg_agent.protocols import get_protocol
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace
from medseg_agent.vocabulary.coordinates import CoordinateFrame

FRAMES = {
    "medsam": CoordinateFrame(CoordinateSpace.NORM1000, (300, 400), (384, 512)),
    "ibis": CoordinateFrame(CoordinateSpace.NORM1, (300, 400), (384, 512)),
}
REPLIES = {"medsam": medsam_replies, "ibis": ibis_replies}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_parse(protocol_name, text, calls=None):
    protocol, frame = get_protocol(protocol_name), FRAMES[protocol_name]
    start = time.perf_counter()
    result = protocol.parse(text, frame, calls)
    seconds = time.perf_counter() - start
    assert seconds < SECONDS_PER_REPLY, f"{seconds:.2f} s for a {len(text or ''):,}-character reply"
    assert (result.action is None) != (result.error is None)
    if result.error is not None:
        assert 0 < len(result.error.message) < 1000
        result.error.message.encode("utf-8")  # printable anywhere, storable in a record
    elif isinstance(result.action, AddPoint | AddBox):
        coords = [getattr(result.action, a) for a in ("x", "y", "x1", "y1", "x2", "y2") if hasattr(result.action, a)]
        assert all(math.isfinite(c) for c in coords)
        assert all(frame.in_range(x, y) for x, y in zip(coords[0::2], coords[1::2], strict=True))
    return result


@FUZZ
@given(medsam_replies)
def test_medsam_text_replies(text):
    check_parse("medsam", text)


@FUZZ
@given(ibis_replies)
def test_ibis_text_replies(text):
    check_parse("ibis", text)


@FUZZ
@given(st.sampled_from(["medsam", "ibis"]), tool_calls())
def test_structured_tool_calls(protocol_name, calls):
    check_parse(protocol_name, None, calls)
    # What the openai policy records for the same calls renders without raising.
    reply = reply_from("", calls)
    check_parse(protocol_name, reply.text, reply.tool_calls)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), protocol_name=st.sampled_from(["medsam", "ibis"]))
def test_episodes_of_hostile_replies_save_and_reload(data, protocol_name, shape_tool, disc, tmp_path):
    env = SegmentationEnv(shape_tool, EpisodeConfig(protocol=protocol_name, max_consecutive_errors=3, max_turns=3))
    env.reset(disc)
    for _ in range(data.draw(st.integers(1, 4))):
        if env.done:
            break
        if data.draw(st.booleans()):
            text, calls = data.draw(REPLIES[protocol_name]), None
        else:
            reply = reply_from(data.draw(st.text(max_size=20)), data.draw(tool_calls()))
            text, calls = reply.text, reply.tool_calls
        start = time.perf_counter()
        observation = env.step(calls, text=text) if calls else env.step(text)
        assert time.perf_counter() - start < SECONDS_PER_REPLY
        assert observation.text and observation.image.shape[2] == 3
        observation.text.encode("utf-8")
    path = save_record(env.record, tmp_path / "record.json")
    assert load_record(path).model_dump(mode="json") == json_safe(env.record.model_dump(mode="json"))
