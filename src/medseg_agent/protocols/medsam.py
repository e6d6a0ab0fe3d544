"""The MedSAM-Agent protocol: Hermes/Qwen ``<tool_call>{json}</tool_call>`` text or native tool calls.

The system prompt, tool schemas and turn texts here are the single source used by inference, the
SFT exports and the RL data, so a model trained on our data sees exactly what it will see at test
time.
"""

from __future__ import annotations

import json
from typing import Any

from medseg_agent.protocols.base import ActionProtocol, ParseFailure, action_block, build_action, load_json
from medseg_agent.vocabulary.actions import (
    ADD_BBOX,
    ADD_POINT,
    STOP_ACTION,
    Action,
    CoordinateSpace,
    ToolCall,
    action_to_dict,
)
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.errors import ErrorKind


def coordinate_description(space: CoordinateSpace) -> str:
    if space is CoordinateSpace.NORM1000:
        return "integers on a 0-999 grid of the displayed image (0 = left/top edge, 999 = right/bottom edge)"
    if space is CoordinateSpace.NORM1:
        return "numbers in [0, 1] relative to the displayed image width and height"
    return "integer pixel coordinates of the displayed image"


def tool_schemas(space: CoordinateSpace = CoordinateSpace.NORM1000) -> list[dict[str, Any]]:
    """OpenAI function-calling schemas of the three actions (also listed in the system prompt)."""
    coords = coordinate_description(space)
    return [
        {
            "type": "function",
            "function": {
                "name": ADD_BBOX,
                "description": (
                    "Draw a bounding box around the target. It creates a new mask and replaces any "
                    "earlier box and points."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "bbox_2d": {
                            "type": "array",
                            "items": {"type": "number"},
                            "description": f"[x1, y1, x2, y2], top-left and bottom-right corners; {coords}.",
                        }
                    },
                    "required": ["bbox_2d"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": ADD_POINT,
                "description": (
                    "Click on the image to refine the mask: a positive point adds the region under it, "
                    "a negative point removes it."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "point_2d": {
                            "type": "array",
                            "items": {"type": "number"},
                            "description": f"[x, y]; {coords}.",
                        },
                        "point_type": {
                            "type": "string",
                            "enum": ["positive", "negative"],
                            "description": "positive to add the region, negative to remove it.",
                        },
                    },
                    "required": ["point_2d", "point_type"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": STOP_ACTION,
                "description": "Finish: the current mask covers exactly the target.",
                "parameters": {"type": "object", "properties": {}, "required": []},
            },
        },
    ]


class MedSamProtocol(ActionProtocol):
    name = "medsam"
    default_space = CoordinateSpace.NORM1000

    def _parse(self, text: str, frame: CoordinateFrame, tool_calls: list[ToolCall]) -> Action:
        if tool_calls:
            if len(tool_calls) > 1:
                raise ParseFailure(
                    ErrorKind.MULTIPLE_ACTIONS, f"exactly one tool call per turn, got {len(tool_calls)}"
                )
            call = tool_calls[0]
            return build_action(call.name, call.arguments, frame, self.supported_tools)
        # A final call without </tool_call> is accepted: generation often stops at that token.
        how = 'no tool call found; answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call>'
        payload = load_json(action_block(text, "tool_call", how, unclosed_runs_to_end=True).strip(), "the tool call")
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            raise ParseFailure(
                ErrorKind.BAD_JSON, 'the tool call must be an object {"name": ..., "arguments": {...}}'
            )
        return build_action(payload["name"], payload.get("arguments", {}), frame, self.supported_tools)

    def format_action(self, action: Action, reasoning: str | None = None) -> str:
        call = action_to_dict(action)
        call.pop("answer", None)
        body = f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
        return f"<think>\n{reasoning}\n</think>\n{body}" if reasoning else body

    def system_prompt(self, frame_space: CoordinateSpace | None = None) -> str:
        space = frame_space or self.default_space
        tools = "\n".join(json.dumps(schema) for schema in tool_schemas(space))
        return (
            "You are an expert medical image annotator working with an interactive segmentation tool. "
            "Your task is to segment the requested target. First create a mask with add_bbox (or a "
            "positive add_point), then refine it with positive and negative points until the mask "
            "covers exactly the target, then call stop_action. After every action you see the image "
            "with the current mask as a semi-transparent green overlay, positive points in green, "
            "negative points in red and the box outlined. Use as few actions as possible. Coordinates "
            f"are {coordinate_description(space)}. Call exactly one tool per turn.\n\n"
            "# Tools\n\nYou may call one function to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            f"{tools}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments within "
            "<tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )

    def first_user_text(self, target: str) -> str:
        return (
            f"The target to be segmented is: {target}. "
            "Look at the image and choose your first action to create the mask."
        )

    def followup_user_text(self, observation_text: str) -> str:
        return (
            f"{observation_text} Here is the image with the current mask. If the mask is accurate, "
            "call stop_action; otherwise choose the next action to refine it."
        )
