"""The IBISAgent protocol: ``<think>…</think><action>Positive Point (x, y)</action>``, clicks only.

Coordinates are in [0, 1] with four decimals; ``Terminate`` ends the episode and is followed by
``<answer>…</answer>``.
"""

from __future__ import annotations

import re

from medseg_agent.protocols.base import (
    ActionProtocol,
    ParseFailure,
    action_block,
    build_action,
    extract_tag,
    parse_coordinates,
    quote,
    require_length,
)
from medseg_agent.vocabulary.actions import ADD_POINT, STOP_ACTION, Action, AddPoint, CoordinateSpace, Stop, ToolCall
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.errors import ErrorKind

# Each part can match in one way only, so a failed match costs time linear in the body: the
# coordinates are split and checked by parse_coordinates, not by the pattern.
_POINT = re.compile(r"\s*(positive|negative)\s+point\s*\(([^()]*)\)\s*", re.IGNORECASE)


class IbisProtocol(ActionProtocol):
    name = "ibis"
    default_space = CoordinateSpace.NORM1
    supported_tools = (ADD_POINT, STOP_ACTION)

    def _parse(self, text: str, frame: CoordinateFrame, tool_calls: list[ToolCall]) -> Action:
        if tool_calls:
            if len(tool_calls) > 1:
                raise ParseFailure(ErrorKind.MULTIPLE_ACTIONS, f"exactly one action per turn, got {len(tool_calls)}")
            return build_action(tool_calls[0].name, tool_calls[0].arguments, frame, self.supported_tools)
        how = (
            "no <action> found; answer with <action>Positive Point (x, y)</action>, "
            "<action>Negative Point (x, y)</action> or <action>Terminate</action>"
        )
        body = action_block(text, "action", how)
        require_length(body, "the <action>")
        if body.strip().lower() == "terminate":
            return Stop(answer=extract_tag(text, "answer"))
        match = _POINT.fullmatch(body)
        if not match:
            raise ParseFailure(
                ErrorKind.UNKNOWN_TOOL,
                f"unknown action {quote(body.strip())}; use Positive Point (x, y), Negative Point (x, y) or Terminate",
            )
        x, y = parse_coordinates(match.group(2).split(","), 2, "point", frame)
        return AddPoint(x, y, match.group(1).lower() == "positive")

    def format_action(self, action: Action, reasoning: str | None = None) -> str:
        think = f"<think>{reasoning}</think>" if reasoning else ""
        if isinstance(action, Stop):
            answer = action.answer or "The target is segmented."
            return f"{think}<action>Terminate</action><answer>{answer}</answer>"
        if isinstance(action, AddPoint):
            kind = "Positive" if action.positive else "Negative"
            return f"{think}<action>{kind} Point ({action.x:.4f}, {action.y:.4f})</action>"
        raise ValueError(f"the ibis protocol has no {action.name}; it takes clicks only")

    def system_prompt(self, frame_space: CoordinateSpace | None = None) -> str:
        return (
            "You are an expert medical image annotator using an interactive segmentation tool driven "
            "by clicks. After each click you see the image with the current mask as a semi-transparent "
            "green overlay, positive clicks in green and negative clicks in red. In every turn, first "
            "reason about what the mask still misses or wrongly covers inside <think></think>, then give "
            "exactly one action inside <action></action>: 'Positive Point (x, y)' to add a missed region, "
            "'Negative Point (x, y)' to remove a wrongly covered region, with x and y in [0, 1] (four "
            "decimals) relative to the image width and height, or 'Terminate' when the mask is accurate, "
            "followed by a short final description inside <answer></answer>."
        )

    def first_user_text(self, target: str) -> str:
        return f"Please segment the {target}. The mask is empty; give your first click."

    def followup_user_text(self, observation_text: str) -> str:
        return f"{observation_text} Here is the current mask. Give your next action."
