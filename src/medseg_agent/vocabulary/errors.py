"""What can go wrong, named: an invalid policy reply (:class:`ActionError` of an :class:`ErrorKind`)
and a tool that could not run (:class:`ToolError`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    NO_ACTION = "no_action"
    MULTIPLE_ACTIONS = "multiple_actions"
    BAD_JSON = "bad_json"
    UNKNOWN_TOOL = "unknown_tool"
    MISSING_ARGUMENT = "missing_argument"
    BAD_ARGUMENT = "bad_argument"
    OUT_OF_RANGE = "out_of_range"
    INVERTED_BOX = "inverted_box"
    UNSUPPORTED_ACTION = "unsupported_action"
    TOO_LONG = "too_long"  # a reply or tool call beyond the parsers' size bounds
    REJECTED = "rejected"  # valid syntax, refused by the episode (e.g. stop before any mask)


@dataclass(frozen=True)
class ActionError:
    kind: ErrorKind
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": str(self.kind), "message": self.message}


class ToolError(RuntimeError):
    """A tool could not be built or could not run (bad checkpoint, bad image, ...)."""


class ModelUnavailable(RuntimeError):
    """The model behind a tool can no longer answer (its process exited): the server's fault, not the
    request's, so a server answers 503 rather than 422."""
