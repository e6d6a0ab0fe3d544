"""pydantic's first complaint about a file's content, as one sentence naming the field and the value."""

from __future__ import annotations

from pydantic import ValidationError


def first_problem(exc: ValidationError) -> str:
    """``field 'turns.0.iou': Input should be less than or equal to 1, got 5.0``: the field by its dotted
    path, and the value unless the message already shows it or it is a whole mapping or list."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] != "value_error" and not isinstance(first.get("input"), dict | list):
        message += f", got {first.get('input')!r}"
    return f"field {where!r}: {message}" if where else message
