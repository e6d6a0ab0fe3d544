"""How actions are written by a policy and read back: the interface each protocol implements.

One action model underneath (:mod:`medseg_agent.vocabulary.actions`); a protocol only decides the
surface syntax, the prompts and the coordinate space. Parsing never raises on model output: every
problem becomes an :class:`ActionError` the policy can read and recover from.

Model output is hostile input (a sampling loop can emit a megabyte of brackets or digits), so the
helpers here do linear work only: tags are found with ``str.find``, never with backtracking
regexes; JSON is read with bounded size, unique keys and short integers; numbers are plain ASCII
decimals; error messages quote values through a bounded ``repr``. The same helpers serve both
protocols, in text and in structured tool calls.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
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
        """Read one assistant reply. Never raises on malformed model output, and takes time
        linear in its length (replies over :data:`MAX_REPLY_CHARS` are refused unread)."""
        text = text or ""
        reasoning = None
        try:
            require_length(text, "the reply", MAX_REPLY_CHARS)
            reasoning = extract_tag(text, "think")
            action = self._parse(text, frame, tool_calls or [])
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
#: Longest reply the parsers read (1 MiB of text); longer ones are refused with ``too_long``.
MAX_REPLY_CHARS = 1 << 20
#: Longest JSON of one tool call (a real call is under 200 characters).
MAX_CALL_CHARS = 4096
#: Most ``<think>`` and ``</think>`` tags in one reply (one reasoning block needs two).
MAX_THINK_TAGS = 64
#: Longest number written as text (a coordinate needs a handful of characters).
MAX_NUMBER_CHARS = 32
#: Largest magnitude a coordinate may have before it is converted to float (any grid is far smaller).
MAX_NUMBER_MAGNITUDE = 10**15
# Plain ASCII decimals only: no "4_5_0", no Arabic-Indic or fullwidth digits, no "nan" or "inf"
# (all of which Python's float() accepts). Unambiguous, so a failed match is linear.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


class _BoundedRepr(reprlib.Repr):
    """``repr`` with bounded length and depth, safe on any value a JSON parser or a trainer hands
    us (a 1,500-deep list, a 5,000-digit integer, a string with a lone surrogate)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 6, 6, 4
        self.maxstring = self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        if abs(x) < MAX_NUMBER_MAGNITUDE:
            return repr(x)
        return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"


_quote = _BoundedRepr().repr


def quote(value: Any) -> str:
    """A short, printable quotation of ``value`` for error messages shown to a model or a user."""
    return _quote(value)


def clean_reply(text: str) -> str:
    """``text`` with every UTF-16 surrogate code point escaped as the six characters ``\\udXXX``.

    JSON decoders turn ``"\\ud800"`` escapes from a model server into lone surrogates, which no
    UTF-8 file can hold: left in, they make the trajectory record unsavable. The environment escapes
    them before the reply reaches the parser and the record (escaping, rather than replacing with
    U+FFFD, keeps which code unit it was, and runs in C at any density: under 70 ms for 1 MiB of
    surrogates); every other character stays as written.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def require_length(text: str, what: str, limit: int = MAX_CALL_CHARS) -> None:
    """Refuse text beyond a parser's size bound with a ``too_long`` error naming both lengths."""
    if len(text) > limit:
        raise ParseFailure(ErrorKind.TOO_LONG, f"{what} is {len(text):,} characters long; at most {limit:,} are read")


def tag_blocks(text: str, tag: str, *, unclosed_runs_to_end: bool = False, limit: int | None = None) -> list[str]:
    """Contents of the ``<tag>...</tag>`` blocks in order (nearest closing tag), at most ``limit``.

    With ``unclosed_runs_to_end`` a final opening tag without its closing tag takes the rest of the
    text (a generation cut at its stop token); otherwise it is ignored. ``str.find`` only: linear in
    the text (a lazy regex is quadratic on many unclosed tags and slow per character).
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    blocks: list[str] = []
    position = 0
    while (limit is None or len(blocks) < limit) and (start := text.find(opening, position)) >= 0:
        start += len(opening)
        end = text.find(closing, start)
        if end < 0:
            if unclosed_runs_to_end:
                blocks.append(text[start:])
            break
        blocks.append(text[start:end])
        position = end + len(closing)
    return blocks


def outside_reasoning(text: str) -> tuple[str, bool]:
    """The text outside ``<think>...</think>`` blocks, and whether a ``<think>`` is left open (raises
    :class:`ParseFailure`).

    Everything after an unclosed ``<think>`` is reasoning too: a call written there was never
    meant to run (the model was still thinking), so it is cut off with the rest. A reply is one
    reasoning block, not thousands: more than :data:`MAX_THINK_TAGS` tags are refused, counted in C,
    so the work per block below stays bounded.
    """
    tags = text.count("<think>") + text.count("</think>")
    if tags > MAX_THINK_TAGS:
        raise ParseFailure(
            ErrorKind.TOO_LONG, f"the reply holds {tags:,} <think>/</think> tags; at most {MAX_THINK_TAGS} are read"
        )
    *closed, tail = text.split("</think>")
    visible: list[str] = []
    for piece in closed:
        start = piece.find("<think>")
        # A piece with an opening tag ends a block; one without holds a stray closing tag, kept.
        visible.append(piece + "</think>" if start < 0 else piece[:start])
    start = tail.find("<think>")
    if start >= 0:
        return "".join(visible) + tail[:start], True
    return "".join(visible) + tail, False


def action_block(text: str, tag: str, how: str, *, unclosed_runs_to_end: bool = False) -> str:
    """The one ``<tag>`` block of a reply, outside its reasoning. None is a ``no_action`` error whose
    message is ``how`` (how to write one), or names the unclosed ``<think>`` that swallowed it;
    several are a ``multiple_actions`` error."""
    visible, open_think = outside_reasoning(text)
    blocks = tag_blocks(visible, tag, unclosed_runs_to_end=unclosed_runs_to_end, limit=2)
    if len(blocks) == 1:
        return blocks[0]
    if blocks:
        raise ParseFailure(
            ErrorKind.MULTIPLE_ACTIONS, f"exactly one <{tag}> per turn, got {visible.count(f'<{tag}>'):,}"
        )
    if open_think and f"<{tag}>" in text:
        raise ParseFailure(
            ErrorKind.NO_ACTION,
            f"the <{tag}> is inside a <think> that is never closed, so it is reasoning, not an action; "
            f"close </think> before <{tag}>",
        )
    raise ParseFailure(ErrorKind.NO_ACTION, how)


def extract_tag(text: str, tag: str) -> str | None:
    """Content of the first ``<tag>...</tag>`` (stripped), or None."""
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    end = text.find(f"</{tag}>", start)
    if end < 0:
        return None
    return text[start + len(tag) + 2 : end].strip()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a repeated key are refused: which of the two the model meant is unknown
    (Python's json keeps the last, other readers the first)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ParseFailure(ErrorKind.BAD_JSON, f"the key {quote(key)} appears twice in one object")
        out[key] = value
    return out


def _short_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_NUMBER_CHARS:
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f"a number with {digits:,} digits; numbers have at most {MAX_NUMBER_CHARS}"
        )
    return int(literal)


def load_json(text: str, what: str) -> Any:
    """Read model-written JSON (a tool call or its arguments); any problem is a ParseFailure.

    Bounded size, unique keys, integers of at most :data:`MAX_NUMBER_CHARS` digits (Python's int
    parser refuses over 4,300 and is quadratic below that), and nesting deep enough to exhaust the
    stack reported as such instead of raising RecursionError.
    """
    require_length(text, what)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_short_int)
    except json.JSONDecodeError as exc:
        raise ParseFailure(ErrorKind.BAD_JSON, f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ParseFailure(ErrorKind.BAD_JSON, f"{what} nests arrays or objects too deeply") from None


def parse_number(value: Any, field_name: str) -> float:
    """A coordinate as a finite float. Strings must be plain ASCII decimals of at most
    :data:`MAX_NUMBER_CHARS` characters; booleans are refused (JSON ``true`` is not 1)."""
    if isinstance(value, str):
        literal = value.strip()
        if len(literal) > MAX_NUMBER_CHARS or not _DECIMAL.fullmatch(literal):
            shown = quote(value) if len(literal) <= MAX_NUMBER_CHARS else f"a {len(literal):,}-character text"
            raise ParseFailure(
                ErrorKind.BAD_ARGUMENT, f"{field_name} must hold plain decimal numbers (0-9), got {shown}"
            )
        value = float(literal)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseFailure(ErrorKind.BAD_ARGUMENT, f"{field_name} must hold numbers, got {quote(value)}")
    elif isinstance(value, int) and not -MAX_NUMBER_MAGNITUDE < value < MAX_NUMBER_MAGNITUDE:
        raise ParseFailure(ErrorKind.OUT_OF_RANGE, f"{field_name} holds {quote(value)}, far outside any image")
    if not math.isfinite(value):
        raise ParseFailure(ErrorKind.BAD_ARGUMENT, f"{field_name} must hold finite numbers, got {value!r}")
    return float(value)


def parse_coordinates(values: Any, count: int, field_name: str, frame: CoordinateFrame) -> list[float]:
    if not isinstance(values, list | tuple):
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f"{field_name} must be a list of {count} numbers, got {quote(values)}"
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
    if looks_normalised(numbers, frame):
        raise ParseFailure(
            ErrorKind.OUT_OF_RANGE,
            f"{field_name} {numbers} looks normalised to [0, 1], but coordinates here are integers on the "
            f"0-999 grid ({frame.describe_range()}): multiply by 1000",
        )
    return numbers


def looks_normalised(numbers: list[float], frame: CoordinateFrame) -> bool:
    """On the 0-999 grid, coordinates that all lie in [0, 1] with a fraction among them are almost
    certainly [0, 1] coordinates (a model trained on another convention), not a click in the corner."""
    return (
        frame.space is CoordinateSpace.NORM1000
        and all(0.0 <= v <= 1.0 for v in numbers)
        and not all(v.is_integer() for v in numbers)
    )


def build_action(name: str, arguments: Any, frame: CoordinateFrame, supported: tuple[str, ...]) -> Action:
    """Validate a (name, arguments) pair into an Action, in model coordinates. ``arguments`` is a
    JSON string (read by :func:`load_json`), a mapping, or None."""
    if isinstance(arguments, str):
        arguments = load_json(arguments, f"the arguments of {quote(name)}") if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ParseFailure(
            ErrorKind.BAD_ARGUMENT, f"the arguments of {quote(name)} must be an object, got {quote(arguments)}"
        )
    if not isinstance(name, str) or name not in (ADD_BBOX, ADD_POINT, STOP_ACTION):
        raise ParseFailure(
            ErrorKind.UNKNOWN_TOOL, f"unknown tool {quote(name)}; use one of {', '.join(supported)}"
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
            ErrorKind.BAD_ARGUMENT, f'point_type must be "positive" or "negative", got {quote(point_type)}'
        )
    return AddPoint(x, y, point_type == "positive")
