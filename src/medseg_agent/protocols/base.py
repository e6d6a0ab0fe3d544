"""How actions are written by a policy and read back: the interface each protocol implements.

One action model underneath (:mod:`medseg_agent.vocabulary.actions`); a protocol only decides the
surface syntax, the prompts and the coordinate space. Parsing never raises on model output: every
problem becomes an :class:`ActionError` the policy can read and recover from.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from medseg_agent.vocabulary.actions import (
    ADD_BBOX,
    ADD_POINT,
    STOP_ACTION,
    Action,
    AddBox,
    AddPoint,
    CoordinateSpace,
    Stop,
    ToolCall,
)
from medseg_agent.vocabulary.coordinates import CoordinateFrame
from medseg_agent.vocabulary.errors import ActionError, ErrorKind


@dataclass
class ParseResult:
    action: Action | None
    error: ActionError | None = None
    reasoning: str | None = None

    @property
    def ok(self) -> bool:
        return self.action is not None


class ParseFailure(Exception):
    """Internal: raised inside parsers, turned into an ActionError at the boundary."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.error = ActionError(kind, message)


class ActionProtocol(ABC):
    """Surface syntax + prompts for one family of agents."""

    name: str
    default_space: CoordinateSpace
    #: Tool names this protocol can express.
    supported_tools: tuple[str, ...] = (ADD_BBOX, ADD_POINT, STOP_ACTION)

    def parse(
        self,
        text: str | None,
        frame: CoordinateFrame,
        tool_calls: list[ToolCall] | None = None,
    ) -> ParseResult:
        """Read one assistant reply. Never raises on malformed model output."""
        reasoning = extract_tag(text or "", "think")
        try:
            action = self._parse(text or "", frame, tool_calls or [])
        except ParseFailure as failure:
            return ParseResult(None, failure.error, reasoning)
        return ParseResult(action, None, reasoning)

    @abstractmethod
    def _parse(self, text: str, frame: CoordinateFrame, tool_calls: list[ToolCall]) -> Action: ...

    @abstractmethod
    def format_action(self, action: Action, reasoning: str | None = None) -> str:
        """The assistant text a perfect model would write for ``action`` (expert data, SFT)."""

    @abstractmethod
    def system_prompt(self, frame_space: CoordinateSpace | None = None) -> str: ...

    @abstractmethod
    def first_user_text(self, target: str) -> str: ...

    @abstractmethod
    def followup_user_text(self, observation_text: str) -> str: ...

    def error_text(self, error: ActionError) -> str:
        return f"Your last reply could not be executed ({error.kind}): {error.message}"


# -- helpers shared by protocols ---------------------------------------------------------------
def extract_tag(text: str, tag: str) -> str | None:
    """Content of the first ``<tag>...</tag>`` (stripped), or None."""
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    end = text.find(f"</{tag}>", start)
    if end < 0:
        return None
    return text[start + len(tag) + 2 : end].strip()


def parse_number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ParseFailure(
                    ErrorKind.BAD_ARGUMENT, f"{field_name} must hold numbers, got {value!r}"
                ) from None
        else:
            raise ParseFailure(ErrorKind.BAD_ARGUMENT, f"{field_name} must hold numbers, got {value!r}")
    if not math.isfinite(value):
        raise ParseFailure(ErrorKind.BAD_ARGUMENT, f"{field_name} must hold finite numbers, got {value!r}")
    return float(value)


def parse_coordinates(values: Any, count: int, field_name: str, frame: CoordinateFrame) -> list[float]:
    if not isinstance(values, list | tuple):
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f"{field_name} must be a list of {count} numbers, got {values!r}"
        )
    if len(values) != count:
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f"{field_name} must have {count} numbers, got {len(values)}"
        )
    numbers = [parse_number(v, field_name) for v in values]
    for x, y in zip(numbers[0::2], numbers[1::2], strict=True):
        if not frame.in_range(x, y):
            raise ParseFailure(
                ErrorKind.OUT_OF_RANGE,
                f"{field_name} {numbers} is outside the image: expected {frame.describe_range()}",
            )
    return numbers


def build_action(name: str, arguments: Any, frame: CoordinateFrame, supported: tuple[str, ...]) -> Action:
    """Validate a (name, arguments) pair into an Action, in model coordinates."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ParseFailure(ErrorKind.BAD_JSON, f"arguments of {name} are not valid JSON: {exc}") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ParseFailure(ErrorKind.BAD_ARGUMENT, f"arguments of {name} must be an object, got {arguments!r}")
    if name not in (ADD_BBOX, ADD_POINT, STOP_ACTION):
        raise ParseFailure(
            ErrorKind.UNKNOWN_TOOL, f"unknown tool {name!r}; use one of {', '.join(supported)}"
        )
    if name not in supported:
        raise ParseFailure(
            ErrorKind.UNSUPPORTED_ACTION, f"{name} is not available here; use one of {', '.join(supported)}"
        )
    if name == STOP_ACTION:
        return Stop()
    if name == ADD_BBOX:
        if "bbox_2d" not in arguments:
            raise ParseFailure(ErrorKind.MISSING_ARGUMENT, "add_bbox needs bbox_2d=[x1, y1, x2, y2]")
        x1, y1, x2, y2 = parse_coordinates(arguments["bbox_2d"], 4, "bbox_2d", frame)
        if x1 >= x2 or y1 >= y2:
            raise ParseFailure(
                ErrorKind.INVERTED_BOX,
                f"bbox_2d {[x1, y1, x2, y2]} is inverted or empty: need x1 < x2 and y1 < y2",
            )
        return AddBox(x1, y1, x2, y2)
    if "point_2d" not in arguments:
        raise ParseFailure(ErrorKind.MISSING_ARGUMENT, "add_point needs point_2d=[x, y]")
    if "point_type" not in arguments:
        raise ParseFailure(ErrorKind.MISSING_ARGUMENT, 'add_point needs point_type="positive" or "negative"')
    x, y = parse_coordinates(arguments["point_2d"], 2, "point_2d", frame)
    point_type = arguments["point_type"]
    if point_type not in ("positive", "negative"):
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f'point_type must be "positive" or "negative", got {point_type!r}'
        )
    return AddPoint(x, y, point_type == "positive")
