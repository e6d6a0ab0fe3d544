"""The action model shared by every protocol, policy and trainer.

Actions live in *model coordinates* (what the policy wrote, in the episode's coordinate space) and
are converted to full-resolution pixels by :class:`CoordinateFrame` at the environment boundary.
Tool names match the reference system exactly so trained models stay compatible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ADD_BBOX = "add_bbox"
ADD_POINT = "add_point"
STOP_ACTION = "stop_action"
TOOL_NAMES = (ADD_BBOX, ADD_POINT, STOP_ACTION)


class CoordinateSpace(StrEnum):
    """How a policy writes coordinates.

    ``norm1000``: integers on a 0–999 grid of the image the model sees (Qwen-VL agents, MedSAM-Agent).
    ``norm1``: floats in [0, 1] (IBISAgent). ``pixel``: pixels of the image shown to the model
    (the resized observation), as Qwen2.5-VL's absolute coordinates.
    """

    NORM1000 = "norm1000"
    NORM1 = "norm1"
    PIXEL = "pixel"


@dataclass(frozen=True)
class AddBox:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def name(self) -> str:
        return ADD_BBOX

    def arguments(self, exact: bool = False) -> dict[str, Any]:
        return {"bbox_2d": [_num(v, exact) for v in (self.x1, self.y1, self.x2, self.y2)]}


@dataclass(frozen=True)
class AddPoint:
    x: float
    y: float
    positive: bool = True

    @property
    def name(self) -> str:
        return ADD_POINT

    @property
    def point_type(self) -> str:
        return "positive" if self.positive else "negative"

    def arguments(self, exact: bool = False) -> dict[str, Any]:
        return {"point_2d": [_num(self.x, exact), _num(self.y, exact)], "point_type": self.point_type}


@dataclass(frozen=True)
class Stop:
    """End the episode; ``answer`` carries IBIS-style final text when the protocol has one."""

    answer: str | None = None

    @property
    def name(self) -> str:
        return STOP_ACTION

    def arguments(self, exact: bool = False) -> dict[str, Any]:
        return {}


Action = AddBox | AddPoint | Stop


@dataclass
class ToolCall:
    """A structured (OpenAI-style) tool call; ``arguments`` may be a JSON string or a dict."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)


def action_to_dict(action: Action, exact: bool = False) -> dict[str, Any]:
    """JSON form ``{"name": ..., "arguments": {...}}`` (+ ``"answer"`` for a stop with one).

    By default fractional coordinates keep 4 decimals, as a model writes them; ``exact`` keeps every
    digit (trajectory records, so a replay draws exactly what the episode drew).
    """
    out: dict[str, Any] = {"name": action.name, "arguments": action.arguments(exact)}
    if isinstance(action, Stop) and action.answer is not None:
        out["answer"] = action.answer
    return out


def action_from_dict(data: Any) -> Action:
    """Inverse of :func:`action_to_dict`, for records; a ValueError names what is malformed."""
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f'an action is a mapping {{"name": ..., "arguments": {{...}}}}, got {data!r}')
    name, args = data["name"], data.get("arguments") or {}
    try:
        if name == ADD_BBOX:
            x1, y1, x2, y2 = (float(v) for v in args["bbox_2d"])
            return AddBox(x1, y1, x2, y2)
        if name == ADD_POINT:
            x, y = (float(v) for v in args["point_2d"])
            point_type = args.get("point_type", "positive")
            if point_type not in ("positive", "negative"):
                raise ValueError(f'point_type must be "positive" or "negative", got {point_type!r}')
            return AddPoint(x, y, point_type == "positive")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name} arguments {args!r} are malformed ({type(exc).__name__}: {exc})") from None
    if name == STOP_ACTION:
        return Stop(data.get("answer"))
    raise ValueError(f"unknown action name {name!r}; expected one of {', '.join(TOOL_NAMES)}")


def _num(value: float, exact: bool = False) -> int | float:
    """Integers stay integers in JSON (the 0–999 grid); fractional values keep 4 decimals unless ``exact``."""
    if float(value).is_integer():
        return int(value)
    return float(value) if exact else round(float(value), 4)
