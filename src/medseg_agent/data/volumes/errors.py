"""The one error of the volume readers."""

from __future__ import annotations


class VolumeError(ValueError):
    """A volume or label volume that cannot be used (reported as a skipped case)."""
