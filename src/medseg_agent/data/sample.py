"""What a dataset reader reports for a sample it could not use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SkippedSample:
    """A sample a reader could not use, with the file and the reason, so runs report it."""

    sample_id: str
    path: str
    reason: str
