"""Parsers turn any model text into an action or a typed error, never an exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg_agent.protocols import get_protocol
from medseg_agent.vocabulary.actions import AddBox, AddPoint, CoordinateSpace, Stop, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.errors import ErrorKind

FRAME = CoordinateFrame(CoordinateSpace.NORM1000, (300, 400), (384, 512))
FRAME1 = CoordinateFrame(CoordinateSpace.NORM1, (300, 400), (384, 512))
medsam = get_protocol("medsam")
ibis = get_protocol("ibis")


def call(name, **arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_valid_medsam_calls_with_reasoning():
    text = "<think>the kidney is lower left</think>\n" + call("add_bbox", bbox_2d=[10, 20, 300, 400])
    result = medsam.parse(text, FRAME)
    assert result.action == AddBox(10, 20, 300, 400)
    assert result.reasoning == "the kidney is lower left"
    assert medsam.parse(call("add_point", point_2d=[5, 6], point_type="negative"), FRAME).action == AddPoint(
        5, 6, False
    )
    assert medsam.parse(call("stop_action"), FRAME).action == Stop()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("I think the mask is fine.", ErrorKind.NO_ACTION),
        (call("stop_action") + call("stop_action"), ErrorKind.MULTIPLE_ACTIONS),
        ("<tool_call>{name: add_bbox}</tool_call>", ErrorKind.BAD_JSON),
        ('<tool_call>["add_bbox"]</tool_call>', ErrorKind.BAD_JSON),
        (call("add_circle", centre=[1, 2]), ErrorKind.UNKNOWN_TOOL),
        (call("add_bbox"), ErrorKind.MISSING_ARGUMENT),
        (call("add_bbox", bbox_2d=[1, 2, 3]), ErrorKind.BAD_ARGUMENT),
        (call("add_bbox", bbox_2d=[1, 2, 3, 1000]), ErrorKind.OUT_OF_RANGE),
        (call("add_bbox", bbox_2d=[300, 20, 10, 400]), ErrorKind.INVERTED_BOX),
        (call("add_bbox", bbox_2d=[10, 20, 10, 400]), ErrorKind.INVERTED_BOX),
        (call("add_point", point_2d=[1, 2]), ErrorKind.MISSING_ARGUMENT),
        (call("add_point", point_2d=[1, 2], point_type="maybe"), ErrorKind.BAD_ARGUMENT),
        (call("add_point", point_2d=[-1, 2], point_type="positive"), ErrorKind.OUT_OF_RANGE),
        (call("add_point", point_2d=["a", 2], point_type="positive"), ErrorKind.BAD_ARGUMENT),
        (call("add_point", point_2d=[True, 2], point_type="positive"), ErrorKind.BAD_ARGUMENT),
        (call("add_point", point_2d=5, point_type="positive"), ErrorKind.BAD_ARGUMENT),
    ],
)
def test_malformed_medsam_replies_are_typed_errors(text, kind):
    result = medsam.parse(text, FRAME)
    assert result.action is None
    assert result.error.kind == kind
    assert result.error.message


def test_call_inside_reasoning_is_not_executed():
    point = call("add_point", point_2d=[1, 2], point_type="positive")
    text = "<think>maybe " + call("stop_action") + "</think>" + point
    assert medsam.parse(text, FRAME).action == AddPoint(1, 2, True)


def test_unclosed_final_tool_call_is_accepted():
    text = '<tool_call>\n{"name": "stop_action", "arguments": {}}'
    assert medsam.parse(text, FRAME).action == Stop()


def test_structured_tool_calls():
    calls = [ToolCall("add_bbox", '{"bbox_2d": [1, 2, 30, 40]}')]
    assert medsam.parse("", FRAME, calls).action == AddBox(1, 2, 30, 40)
    assert medsam.parse(None, FRAME, [ToolCall("add_point", {"point_2d": [3, 4], "point_type": "positive"})]).ok
    two = [ToolCall("stop_action"), ToolCall("stop_action")]
    assert medsam.parse("", FRAME, two).error.kind == ErrorKind.MULTIPLE_ACTIONS
    assert medsam.parse("", FRAME, [ToolCall("add_bbox", "{oops")]).error.kind == ErrorKind.BAD_JSON


def test_ibis_actions():
    result = ibis.parse("<think>missing top</think><action>Positive Point (0.25, 0.5)</action>", FRAME1)
    assert result.action == AddPoint(0.25, 0.5, True)
    assert result.reasoning == "missing top"
    assert ibis.parse("<action>negative point(0.1,0.9)</action>", FRAME1).action == AddPoint(0.1, 0.9, False)
    stop = ibis.parse("<think>done</think><action>Terminate</action><answer>left kidney</answer>", FRAME1)
    assert stop.action == Stop("left kidney")
    assert ibis.parse("<action>Positive Point (1.5, 0.5)</action>", FRAME1).error.kind == ErrorKind.OUT_OF_RANGE
    assert ibis.parse("<action>Box (0.1, 0.2)</action>", FRAME1).error.kind == ErrorKind.UNKNOWN_TOOL
    assert ibis.parse("no action", FRAME1).error.kind == ErrorKind.NO_ACTION
    boxed = ibis.parse("", FRAME1, [ToolCall("add_bbox", {"bbox_2d": [0, 0, 1, 1]})])
    assert boxed.error.kind == ErrorKind.UNSUPPORTED_ACTION
    with pytest.raises(ValueError, match="clicks only"):
        ibis.format_action(AddBox(0, 0, 1, 1))


# -- property-based ------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_medsam_parser_never_raises(text):
    result = medsam.parse(text, FRAME)
    assert (result.action is None) != (result.error is None)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_ibis_parser_never_raises(text):
    result = ibis.parse(text, FRAME1)
    assert (result.action is None) != (result.error is None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["add_bbox", "add_point", "stop_action", "zoom"]), st.dictionaries(
    st.sampled_from(["bbox_2d", "point_2d", "point_type", "x"]), json_values, max_size=3))
def test_arbitrary_arguments_never_raise(name, arguments):
    text = "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"
    result = medsam.parse(text, FRAME)
    assert (result.action is None) != (result.error is None)
    if result.action is not None and not isinstance(result.action, Stop):
        coords = [result.action.x, result.action.y] if isinstance(result.action, AddPoint) else [
            result.action.x1, result.action.y1, result.action.x2, result.action.y2]
        assert all(0 <= c <= 999 for c in coords)


coords1000 = st.integers(0, 999)


distinct_pair = st.lists(coords1000, min_size=2, max_size=2, unique=True)


@settings(max_examples=200, deadline=None)
@given(distinct_pair, distinct_pair, st.booleans(), st.text(max_size=40).filter(lambda s: "<" not in s))
def test_format_then_parse_round_trips(xs, ys, positive, reasoning):
    box = AddBox(min(xs), min(ys), max(xs), max(ys))
    for action in (box, AddPoint(xs[0], ys[0], positive), Stop()):
        text = medsam.format_action(action, reasoning.strip() or None)
        assert medsam.parse(text, FRAME).action == action


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.booleans())
def test_ibis_round_trip(x, y, positive):
    x, y = round(x, 4), round(y, 4)
    text = ibis.format_action(AddPoint(x, y, positive), "why")
    assert ibis.parse(text, FRAME1).action == AddPoint(x, y, positive)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(CoordinateSpace)),
    st.integers(2, 2000),
    st.integers(2, 2000),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_coordinate_round_trip_stays_close(space, h, w, fx, fy):
    from medseg_agent.vocabulary.coordinates import view_size_for

    frame = CoordinateFrame(space, (h, w), view_size_for((h, w), 512))
    px, py = fx * (w - 1), fy * (h - 1)
    x, y = frame.from_pixels(px, py)
    assert frame.in_range(x, y)
    bx, by = frame.to_pixels(x, y)
    # Rounding to the model grid moves a point by at most one grid cell.
    cell_x = {CoordinateSpace.NORM1000: w / 1000, CoordinateSpace.NORM1: w * 1e-4}.get(space, w / frame.view_size[1])
    cell_y = {CoordinateSpace.NORM1000: h / 1000, CoordinateSpace.NORM1: h * 1e-4}.get(space, h / frame.view_size[0])
    assert abs(bx - px) <= cell_x + 1e-6
    assert abs(by - py) <= cell_y + 1e-6
    assert 0 <= bx <= w - 1 and 0 <= by <= h - 1
