"""Regressions from the hostile-reply corpus (issue 10): each reply here once raised, hung or was
accepted wrongly. Every one must now be a typed error, for both protocols, in text and in structured
tool calls, and its record must save and reload."""

from __future__ import annotations

import json
import time

import pytest
from adversarial_replies import SECONDS_PER_REPLY

from medseg_agent.environment.episode import EpisodeConfig, SegmentationEnv
from medseg_agent.environment.record import load_record, save_record
from medseg_agent.policies.chat import reply_from
from medseg_agent.protocols import get_protocol
from medseg_agent.protocols.base import MAX_REPLY_CHARS, clean_reply, quote
from medseg_agent.vocabulary.actions import AddPoint, CoordinateSpace, Stop, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.errors import ErrorKind

GRID = CoordinateFrame(CoordinateSpace.NORM1000, (300, 400), (384, 512))
UNIT = CoordinateFrame(CoordinateSpace.NORM1, (300, 400), (384, 512))
medsam = get_protocol("medsam")
ibis = get_protocol("ibis")


def point_call(x, y="1", point_type='"positive"'):
    arguments = f'{{"point_2d": [{x}, {y}], "point_type": {point_type}}}'
    return f'<tool_call>{{"name": "add_point", "arguments": {arguments}}}</tool_call>'


def nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def timed_parse(protocol, text, frame, tool_calls=None):
    start = time.perf_counter()
    result = protocol.parse(text, frame, tool_calls)
    assert time.perf_counter() - start < SECONDS_PER_REPLY
    assert (result.action is None) != (result.error is None)
    return result


# -- item 1: numbers and nesting that used to raise --------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (point_call("9" * 400), ErrorKind.BAD_ARGUMENT),  # OverflowError from math.isfinite
        (point_call("9" * 400 + ".5"), ErrorKind.BAD_ARGUMENT),  # a float literal that overflows to inf
        (point_call("1e400"), ErrorKind.BAD_ARGUMENT),
        (point_call("9" * 5000), ErrorKind.TOO_LONG),  # ValueError: Python's int-digit limit
        (point_call('"' + "9" * 5000 + '"'), ErrorKind.TOO_LONG),
        (point_call('"' + "9" * 400 + '"'), ErrorKind.BAD_ARGUMENT),
        ('<tool_call>{"name": "add_point", "arguments": ' + "[" * 1500 + "]" * 1500 + "}</tool_call>",
         ErrorKind.BAD_JSON),  # RecursionError
        ("<tool_call>" + "{" * 1500, ErrorKind.BAD_JSON),
    ],
)
def test_huge_numbers_and_deep_nesting_in_text_calls(text, kind):
    result = timed_parse(medsam, text, GRID)
    assert result.error.kind == kind, result.error
    assert len(result.error.message) < 300


@pytest.mark.parametrize(
    "arguments",
    [
        '{"point_2d": [' + "9" * 400 + ', 1], "point_type": "positive"}',
        '{"point_2d": [' + "9" * 5000 + ', 1], "point_type": "positive"}',
        '{"point_2d": ' + "[" * 1500 + "]" * 1500 + ', "point_type": "positive"}',
        {"point_2d": [10**400, 1], "point_type": "positive"},
        {"point_2d": [10**5000, 1], "point_type": "positive"},  # repr() of it would raise
        {"point_2d": [1e308 * 10, 1], "point_type": "positive"},
        {"point_2d": nested(3000), "point_type": "positive"},  # repr() of it would recurse
        {"point_2d": [1, 2], "point_type": nested(3000)},
        nested(3000),
    ],
)
@pytest.mark.parametrize("protocol", [medsam, ibis], ids=["medsam", "ibis"])
def test_huge_numbers_and_deep_nesting_in_structured_calls(protocol, arguments):
    frame = GRID if protocol is medsam else UNIT
    result = timed_parse(protocol, "", frame, [ToolCall("add_point", arguments)])
    assert result.error.kind in (ErrorKind.BAD_ARGUMENT, ErrorKind.OUT_OF_RANGE, ErrorKind.BAD_JSON, ErrorKind.TOO_LONG)
    assert len(result.error.message) < 300
    # The policy renders the same call into the conversation and the record without raising.
    assert reply_from(None, [ToolCall("add_point", arguments)]).text.startswith("<tool_call>")


@pytest.mark.parametrize(
    "text",
    [
        "<action>Positive Point (" + "9" * 400 + ", 0.5)</action>",
        "<action>Positive Point (" + "9" * 5000 + ", 0.5)</action>",
        "<action>Positive Point (1e400, 0.5)</action>",
        "<action>Positive Point (nan, 0.5)</action>",
        "<action>Positive Point (inf, 0.5)</action>",
    ],
)
def test_huge_numbers_in_ibis_text(text):
    assert timed_parse(ibis, text, UNIT).error.kind in (ErrorKind.BAD_ARGUMENT, ErrorKind.TOO_LONG)


# -- item 3: replies that took seconds -----------------------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "text"),
    [
        (ibis, "<action>Positive Point (" + " " * 3000 + ")</action>"),  # 25 s with the old, cubic regex
        (ibis, "<action>Positive Point (0.5" + " " * 3000 + "x, 0.5)</action>"),
        (ibis, "<action>" * 20_000),
        (ibis, "<think>" * 20_000 + "<action>Terminate</action>"),
        (medsam, "<think>" * 20_000),
        (medsam, "<tool_call>" * 20_000),
        (medsam, "<think>" * 150_000 + "</think>"),
        (medsam, "<think></think>" * 70_000),
        (medsam, "</think>" * 130_000 + "<tool_call>{}</tool_call>"),
        (medsam, "<tool_call>{}</tool_call>" * 40_000),
        (ibis, "<action>" + "x," * 400_000 + "</action>"),
        (medsam, "<tool_call>" + " " * (MAX_REPLY_CHARS - 30) + "</tool_call>"),
    ],
)
def test_adversarial_tag_and_whitespace_runs_are_linear(protocol, text):
    frame = GRID if protocol is medsam else UNIT
    assert timed_parse(protocol, text, frame).error is not None


def test_a_reply_is_one_reasoning_block_not_thousands():
    error = medsam.parse("<think>a</think>" * 40 + '<tool_call>{"name": "stop_action"}</tool_call>', GRID).error
    assert error.kind == ErrorKind.TOO_LONG and "80 <think>/</think> tags; at most 64" in error.message
    text = "<think>a</think>" * 31 + '<tool_call>{"name": "stop_action"}</tool_call>'
    assert medsam.parse(text, GRID).action == Stop()


def test_many_calls_are_counted_in_the_error():
    error = medsam.parse('<tool_call>{"name": "stop_action"}</tool_call>' * 5000, GRID).error
    assert error.kind == ErrorKind.MULTIPLE_ACTIONS and "got 5,000" in error.message


def test_replies_beyond_the_size_bound_are_refused_unread():
    text = "<tool_call>" + " " * MAX_REPLY_CHARS + '{"name": "stop_action"}</tool_call>'
    error = timed_parse(medsam, text, GRID).error
    assert error.kind == ErrorKind.TOO_LONG and f"{MAX_REPLY_CHARS:,}" in error.message
    # A reply of exactly the bound is still read.
    exact = '{"name": "stop_action"}</tool_call>'
    text = "<tool_call>" + exact + " " * (MAX_REPLY_CHARS - len(exact) - len("<tool_call>"))
    assert len(text) == MAX_REPLY_CHARS and timed_parse(medsam, text, GRID).action == Stop()


# -- item 5: malformed replies that used to be accepted -----------------------------------------
def test_duplicate_keys_are_refused():
    args = '{"point_2d": [1, 2], "point_type": "positive"}'
    text = f'<tool_call>{{"name": "add_bbox", "name": "add_point", "arguments": {args}}}</tool_call>'
    error = medsam.parse(text, GRID).error
    assert error.kind == ErrorKind.BAD_JSON and "'name' appears twice" in error.message
    args = '{"point_2d": [1, 2], "point_type": "positive", "point_type": "negative"}'
    assert medsam.parse(point_call(1).replace('"positive"', '"positive", "point_type": "negative"'), GRID).error.kind \
        == ErrorKind.BAD_JSON
    assert medsam.parse("", GRID, [ToolCall("add_point", args)]).error.kind == ErrorKind.BAD_JSON
    assert ibis.parse("", UNIT, [ToolCall("add_point", args)]).error.kind == ErrorKind.BAD_JSON


@pytest.mark.parametrize(
    ("protocol", "text", "frame"),
    [
        (medsam, '<think>the box is <tool_call>{"name": "stop_action", "arguments": {}}</tool_call>', GRID),
        (ibis, "<think>so I click <action>Positive Point (0.5, 0.5)</action>", UNIT),
    ],
)
def test_a_call_inside_an_unclosed_think_is_refused(protocol, text, frame):
    error = protocol.parse(text, frame).error
    assert error.kind == ErrorKind.NO_ACTION and "never closed" in error.message


def test_a_call_before_an_unclosed_think_still_runs():
    text = '<tool_call>{"name": "stop_action"}</tool_call><think>and afterwards'
    assert medsam.parse(text, GRID).action == Stop()


@pytest.mark.parametrize("digits", ["4_5_0", "٤٥٠", "۴۵۰", "４５０", "४५०", "0x1c2", " nan", "Infinity", "1.2.3", ""])
def test_only_plain_ascii_decimals_are_numbers(digits):
    error = medsam.parse(point_call(json.dumps(digits)), GRID).error
    assert error.kind == ErrorKind.BAD_ARGUMENT and "plain decimal numbers" in error.message
    error = ibis.parse(f"<action>Positive Point ({digits}, 0.5)</action>", UNIT).error
    assert error.kind == ErrorKind.BAD_ARGUMENT


def test_plain_decimals_in_text_still_parse():
    assert medsam.parse(point_call('" 450 "', '"+12.5"'), GRID).action == AddPoint(450, 12.5, True)
    assert ibis.parse("<action>Negative Point ( .25 ,5e-1 )</action>", UNIT).action == AddPoint(0.25, 0.5, False)


@pytest.mark.parametrize(
    "arguments",
    [{"point_2d": [0.25, 0.5], "point_type": "positive"}, {"bbox_2d": [0.1, 0.2, 0.6, 0.9]},
     {"bbox_2d": [0, 0, 0.5, 1]}],
)
def test_normalised_coordinates_on_the_grid_are_named(arguments):
    name = "add_point" if "point_2d" in arguments else "add_bbox"
    error = medsam.parse("", GRID, [ToolCall(name, arguments)]).error
    assert error.kind == ErrorKind.OUT_OF_RANGE and "looks normalised to [0, 1]" in error.message


def test_integer_corner_clicks_on_the_grid_are_not_mistaken_for_normalised():
    assert medsam.parse(point_call(0, 0), GRID).action == AddPoint(0, 0, True)
    assert medsam.parse(point_call(1, 1), GRID).action == AddPoint(1, 1, True)
    assert medsam.parse(point_call(1.5, 0.5), GRID).action == AddPoint(1.5, 0.5, True)


# -- item 2: lone surrogates reach the record escaped, never raw --------------------------------
def test_clean_reply_escapes_surrogates_and_keeps_everything_else():
    assert clean_reply("a\ud800b") == "a\\ud800b"
    assert clean_reply("x\udfff") == "x\\udfff"
    assert clean_reply("plain") == "plain" and clean_reply("é😀") == "é😀"


@pytest.mark.parametrize("protocol", ["medsam", "ibis"])
def test_a_reply_with_a_lone_surrogate_is_recorded_and_reloads(protocol, shape_tool, disc, tmp_path):
    env = SegmentationEnv(shape_tool, EpisodeConfig(protocol=protocol, max_consecutive_errors=5))
    env.reset(disc)
    env.step("<think>left \ud800 side</think> no action \udfff")
    env.step([ToolCall("add_\ud800point", '{"point_2d": ["\ud800"], "point_type": "\udc00"}')], text="")
    env.step([ToolCall("add_point", {"point_2d": ["\ud800", 1], "point_type": "positive"})])
    record = load_record(save_record(env.record, tmp_path / "r.json"))
    assert record.turns[0].raw_text == "<think>left \\ud800 side</think> no action \\udfff"
    assert record.turns[0].reasoning == "left \\ud800 side"
    assert all(t.error for t in record.turns)
    assert record.model_dump() == env.record.model_dump()


def test_error_messages_quote_values_briefly():
    assert "..." in quote("x" * 10_000) and len(quote("x" * 10_000)) < 80
    assert "digits" in quote(10**5000) and quote(12) == "12"
    assert len(quote(nested(5000))) < 40
    assert quote("\ud800") == "'\\ud800'"  # printable, UTF-8-safe
