"""An append-only store of results keyed by job, so killed runs resume with no duplicate.

Each result is one JSON line written with a single ``write`` + ``fsync`` (see
:func:`medseg_agent.io.atomic.append_jsonl`); a torn last line is ignored on reload and redone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg_agent.io.atomic import append_jsonl, read_jsonl


class ResultStore:
    def __init__(self, path: str | Path, key_field: str = "key") -> None:
        self.path = Path(path)
        self.key_field = key_field
        self._keys = {key for key in map(self._key_of, read_jsonl(self.path)) if key is not None}
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """Drop a partial last line left by a kill, so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as handle:
                handle.truncate(cut)

    def _key_of(self, row: dict[str, Any]) -> str | None:
        """A row's key; a row without a text key (damaged on disk) counts as not done."""
        key = row.get(self.key_field)
        return key if isinstance(key, str) else None

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> set[str]:
        return set(self._keys)

    def append(self, key: str, row: dict[str, Any]) -> None:
        if key in self._keys:
            raise ValueError(f"{self.path}: result {key!r} is already stored")
        append_jsonl(self.path, {self.key_field: key, **row})
        self._keys.add(key)

    def rows(self) -> Iterator[dict[str, Any]]:
        seen: set[str] = set()
        for row in read_jsonl(self.path):
            key = self._key_of(row)
            if key is not None and key not in seen:
                seen.add(key)
                yield row
