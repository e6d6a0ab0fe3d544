"""An append-only store of results keyed by job, so killed runs resume with no duplicate.

Each result is one JSON line written with a single ``write`` + ``fsync`` (see
:func:`medseg_agent.io.atomic.append_jsonl`); a torn last line is ignored on reload and redone. A line
damaged on disk later (a bad sector, a hand edit) is redone too, and said in a warning that names its
line numbers, because a silently shrinking result file would look like data loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg_agent.io.atomic import append_jsonl, numbered_jsonl

log = logging.getLogger(__name__)


class ResultStore:
    def __init__(self, path: str | Path, key_field: str = "key") -> None:
        self.path = Path(path)
        self.key_field = key_field
        self._keys: set[str] = set()
        #: 1-based numbers of the lines that hold no readable result; their jobs count as not done.
        self.damaged_lines: list[int] = []
        for number, row in numbered_jsonl(self.path):
            key = self._key_of(row)
            if key is None:
                self.damaged_lines.append(number)
            else:
                self._keys.add(key)
        if self.damaged_lines:
            log.warning("%s: %d damaged line(s) hold no readable result (%s) and are left out; "
                        "a resumed run redoes their jobs",
                        self.path, len(self.damaged_lines), _line_list(self.damaged_lines))
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

    def _key_of(self, row: dict[str, Any] | None) -> str | None:
        """A row's key; a damaged line or a row without a text key counts as not done."""
        key = None if row is None else row.get(self.key_field)
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
        for _, row in self.numbered_rows():
            yield row

    def numbered_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each stored result (the first one of a key) with its line number in the file, for error messages."""
        seen: set[str] = set()
        for number, row in numbered_jsonl(self.path):
            key = self._key_of(row)
            if key is not None and key not in seen:
                seen.add(key)
                yield number, row


def _line_list(numbers: list[int], shown: int = 10) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return f"lines {text}, ..." if len(numbers) > shown else f"line{'s' if len(numbers) > 1 else ''} {text}"
