"""How a demo build talks to its caller: progress lines, and the one error it raises."""

from __future__ import annotations

from collections.abc import Callable


class DemoBuildError(RuntimeError):
    """The demo data could not be obtained or written (the message says what to do)."""


Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    pass
