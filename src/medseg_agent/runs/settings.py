"""A run folder remembers the settings it was started with, so that a resumed run never mixes
results made two ways: resuming with other settings is refused, naming each difference, and a
damaged settings file is named instead of read as a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg_agent.io.atomic import atomic_write_json
from medseg_agent.io.text import TextFileError, read_json_object


class SettingsMismatch(ValueError):
    """A run folder made with other settings, or whose settings file cannot be read."""


def as_stored(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as they read back from JSON (paths as text, tuples as lists)."""
    return json.loads(json.dumps(settings, default=str))


def read_settings(path: Path) -> dict[str, Any] | None:
    """The JSON object stored in ``path``; None when there is no such file."""
    try:
        return read_json_object(path, "run settings file")
    except TextFileError as exc:
        raise SettingsMismatch(f"{exc}; delete it to start the run afresh, or use another --out") from None


def check_same_settings(stored: Any, wanted: dict[str, Any], folder: Path) -> None:
    """Refuse to resume the run in ``folder`` when ``stored`` differs from ``wanted`` (both as JSON has them)."""
    old, new = _flat(stored if isinstance(stored, dict) else {}), _flat(wanted)
    changed = [
        f"{name} was {_short(old.get(name))}, now {_short(new.get(name))}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
    if changed:
        raise SettingsMismatch(
            f"{folder} holds a run made with other settings ({'; '.join(changed)}); use another --out, or the "
            "same settings to resume"
        )


def remember_settings(path: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` to ``path`` on a fresh run; on a resumed one, refuse other settings."""
    wanted = as_stored(settings)
    stored = read_settings(path)
    if stored is None:
        atomic_write_json(path, wanted)
    else:
        check_same_settings(stored, wanted, path.parent)


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted names (``episode.max_turns``), so a difference is named exactly."""
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else f"{text[:77]}..."
