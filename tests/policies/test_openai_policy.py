"""The openai policy against a real local OpenAI-compatible server, through the real openai SDK."""

from __future__ import annotations

import base64
import json
import socket
import time

import cv2
import numpy as np
import pytest
from fastapi.responses import HTMLResponse

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import final_mask
from medseg_agent.policies.chat import PolicyError
from medseg_agent.policies.registry import build_policy
from medseg_agent.policies.runner import run_episode
from medseg_agent.vocabulary.stop import StopReason

BOX = '<tool_call>\n{"name": "add_bbox", "arguments": {"bbox_2d": [300, 200, 700, 800]}}\n</tool_call>'
STOP = '<tool_call>\n{"name": "stop_action", "arguments": {}}\n</tool_call>'


def _env(tool, **config):
    return SegmentationEnv(tool, EpisodeConfig(view_longest_side=128, **config))


def _images(message):
    content = message["content"]
    if isinstance(content, str):
        return []
    return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]


def _decode(url):
    assert url.startswith("data:image/png;base64,")
    raw = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(raw, cv2.IMREAD_COLOR)


def test_text_tool_calls_recover_from_a_malformed_reply(server, shape_tool, disc):
    server.reply({"content": "<tool_call>{not json</tool_call>"}, {"content": BOX}, {"content": STOP})
    policy = build_policy("openai", base_url=server.base_url, model=server.model)
    record = run_episode(_env(shape_tool), policy, disc)

    assert [t.error.kind if t.error else t.action.name for t in record.turns] == [
        "bad_json",
        "add_bbox",
        "stop_action",
    ]
    assert record.stop_reason is StopReason.STOP_ACTION and record.final_metrics["iou"] > 0.3
    first, second, third = server.requests
    assert first["model"] == server.model and "tools" not in first and first["temperature"] == 0
    assert first["messages"][0]["role"] == "system" and "<tools>" in first["messages"][0]["content"]
    view = _decode(_images(first["messages"][1])[0])
    assert view.shape[:2] == tuple(record.view_size)
    # After the invalid reply: the error text, no image; after the box: the overlay.
    error_turn = second["messages"][-1]
    assert second["messages"][-2] == {"role": "assistant", "content": "<tool_call>{not json</tool_call>"}
    assert error_turn["role"] == "user" and _images(error_turn) == [] and "bad_json" in error_turn["content"]
    assert len(_images(third["messages"][-1])) == 1 and third["messages"][-2]["content"] == BOX


def test_native_tool_calls_reach_the_environment_and_the_history(server, shape_tool, disc):
    server.reply(
        {"content": None, "tool_calls": [("add_bbox", {"bbox_2d": [300, 200, 700, 800]})],
         "reasoning_content": "The disc is in the middle."},
        {"content": "", "tool_calls": [("add_point", {"point_2d": [500, 500], "point_type": "positive"})]},
        {"content": None, "tool_calls": [("add_point", '{"point_2d": [500')]},  # truncated arguments
        {"content": None, "tool_calls": [("stop_action", {})]},
    )
    policy = build_policy("openai", base_url=server.base_url, model=server.model, native_tools=True)
    record = run_episode(_env(shape_tool), policy, disc)

    assert [t.error.kind if t.error else t.action.name for t in record.turns] == [
        "add_bbox", "add_point", "bad_json", "stop_action",
    ]
    assert record.turns[0].reasoning == "The disc is in the middle."
    assert '"name": "add_bbox"' in record.turns[0].raw_text
    request = server.requests[0]
    assert [t["function"]["name"] for t in request["tools"]] == ["add_bbox", "add_point", "stop_action"]
    assert "<tools>" not in request["messages"][0]["content"]  # listed once, by the server
    # The call is kept in the history as Hermes text, as a Qwen chat template renders it.
    assert json.loads(server.requests[1]["messages"][-2]["content"].split("<tool_call>")[1].split("</tool_call>")[0])[
        "name"
    ] == "add_bbox"


def test_history_limit_bounds_images_per_request(server, shape_tool, disc):
    points = [
        {"content": f'<tool_call>{{"name": "add_point", "arguments": {{"point_2d": [{x}, 500], '
                    '"point_type": "positive"}}</tool_call>'}
        for x in (400, 450, 500, 550)
    ]
    server.reply(*points)
    policy = build_policy("openai", base_url=server.base_url, model=server.model, max_history_images=2)
    record = run_episode(_env(shape_tool, max_turns=4), policy, disc)
    assert record.stop_reason is StopReason.TURN_LIMIT and record.num_interactions == 4
    counts = [sum(len(_images(m)) for m in r["messages"]) for r in server.requests]
    assert counts == [1, 2, 2, 2]
    last = server.requests[-1]["messages"]
    assert last[0]["role"] == "system" and len(_images(last[1])) == 1  # the first view always stays
    assert last[2]["role"] == "assistant"


def test_a_policy_that_never_answers_validly_ends_with_an_empty_mask(server, shape_tool, disc):
    server.reply(*[{"content": "I think the disc is in the centre."}] * 5)
    policy = build_policy("openai", base_url=server.base_url, model=server.model)
    record = run_episode(_env(shape_tool, max_consecutive_errors=2), policy, disc)
    assert record.stop_reason is StopReason.TOO_MANY_ERRORS and record.num_errors == 2
    assert not final_mask(record).any() and record.final_metrics["dice"] == 0.0
    assert all(t.error.kind == "no_action" for t in record.turns)


def test_server_errors_are_retried_with_backoff(server, shape_tool, disc):
    server.reply({"status": 500}, {"status": 503}, {"content": BOX}, {"content": STOP})
    policy = build_policy("openai", base_url=server.base_url, model=server.model, max_retries=3)
    record = run_episode(_env(shape_tool), policy, disc)
    assert record.stop_reason is StopReason.STOP_ACTION and len(server.requests) == 4


def test_persistent_server_errors_raise_a_policy_error(server, shape_tool, disc):
    server.reply(*[{"status": 500}] * 3)
    policy = build_policy("openai", base_url=server.base_url, model=server.model, max_retries=2)
    with pytest.raises(PolicyError, match="HTTP 500 .*scripted failure"):
        run_episode(_env(shape_tool), policy, disc)
    assert len(server.requests) == 3


def test_slow_replies_time_out_then_fail_clearly(server, shape_tool, disc):
    server.reply({"content": BOX, "delay": 0.3}, {"content": STOP})
    policy = build_policy("openai", base_url=server.base_url, model=server.model, timeout=5)
    assert run_episode(_env(shape_tool), policy, disc).stop_reason is StopReason.STOP_ACTION

    server.reply({"content": BOX, "delay": 1.5}, {"content": BOX, "delay": 1.5})
    policy = build_policy("openai", base_url=server.base_url, model=server.model, timeout=0.4, max_retries=1)
    started = time.perf_counter()
    with pytest.raises(PolicyError, match=r"no reply within 0.4 s \(1 retries\)"):
        run_episode(_env(shape_tool), policy, disc)
    assert time.perf_counter() - started < 5


def test_wrong_model_name_is_reported_with_the_served_ones(server):
    with pytest.raises(PolicyError, match=f"'qwen-typo' is not served .* it serves: {server.model}"):
        build_policy("openai", base_url=server.base_url, model="qwen-typo")
    assert build_policy("openai", base_url=server.base_url).model == server.model  # the only served model


def test_wrong_model_404_at_request_time(server, shape_tool, disc):
    policy = build_policy("openai", base_url=server.base_url, model="qwen-typo", check_model=False)
    with pytest.raises(PolicyError, match="404 .*does not exist.*--model"):
        run_episode(_env(shape_tool), policy, disc)


def test_unreachable_server_fails_at_construction():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PolicyError, match=f"cannot reach the model server at http://127.0.0.1:{port}/v1"):
        build_policy("openai", base_url=f"http://127.0.0.1:{port}/v1", model="tiny-agent", max_retries=0)


def test_sampling_sends_a_per_turn_seed(server, shape_tool, disc):
    server.reply({"content": BOX}, {"content": STOP})
    policy = build_policy("openai", base_url=server.base_url, model=server.model, temperature=0.7)
    run_episode(_env(shape_tool), policy, disc, seed=3)
    assert [r["seed"] for r in server.requests] == [3000, 3001]
    assert all(r["temperature"] == 0.7 for r in server.requests)


def _completion(message, **extra):
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "tiny-agent", "choices": [choice], **extra}


@pytest.mark.parametrize(
    "body, why",
    [
        (HTMLResponse("<html>Jupyter</html>"), "no list of 'choices'"),
        ({}, "no list of 'choices'"),
        ({"choices": {"0": {}}}, "no list of 'choices'"),
        (_completion(None), "its first choice has no message"),
        (_completion("add_bbox"), "its first choice has no message"),
        (_completion({"role": "assistant", "content": 5}), "its message content is of type int"),
    ],
)
def test_an_answer_that_is_not_a_chat_completion_is_a_policy_error_showing_it(server, shape_tool, disc, body, why):
    server.reply({"body": body})
    policy = build_policy("openai", base_url=server.base_url, model=server.model, max_retries=0)
    with pytest.raises(PolicyError, match=f"not a chat completion \\({why}\\).*ending in /v1"):
        run_episode(_env(shape_tool), policy, disc)


def test_odd_but_usable_completions_still_drive_the_episode(server, shape_tool, disc):
    parts = [{"type": "text", "text": BOX}]
    odd_call = {"id": "1", "type": "function", "function": "stop_action"}  # no name: ignored, not fatal
    server.reply(
        {"body": _completion({"role": "assistant", "content": parts}, usage="n/a")},
        {"body": _completion({"role": "assistant", "content": None, "tool_calls": [odd_call]})},
        {"content": STOP},
    )
    policy = build_policy("openai", base_url=server.base_url, model=server.model)
    record = run_episode(_env(shape_tool), policy, disc)
    assert [t.error.kind.value if t.error else t.action.name for t in record.turns] == [
        "add_bbox",
        "no_action",
        "stop_action",
    ]


@pytest.mark.parametrize(
    "models_body, why",
    [
        (HTMLResponse("<html>Gradio</html>"), "a body that is not JSON"),
        ({"data": "tiny-agent"}, "no list of models with text ids"),
        ({"data": [{"object": "model"}]}, "no list of models with text ids"),
    ],
)
def test_a_model_list_of_the_wrong_shape_is_a_policy_error(chat_server, models_body, why):
    chat_server.models_body = models_body
    try:
        with pytest.raises(PolicyError, match=f"not a model list \\({why}\\)"):
            build_policy("openai", base_url=chat_server.base_url, model="tiny-agent")
    finally:
        chat_server.models_body = None
