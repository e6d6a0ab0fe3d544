"""Writes that never leave a half-written file behind: long runs must lose no data when killed."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The process umask, read once (Python 3.11 can only read it by setting it).
_UMASK = os.umask(0)
os.umask(_UMASK)


def temporary_sibling(path: Path) -> tuple[int, str]:
    """An open temporary file next to ``path`` (to rename over it), with the permissions a plain
    ``open`` would give (0644 under the usual umask): ``mkstemp``'s 0600 would survive the rename and
    leave results unreadable to the rest of a team on a shared cluster."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = temporary_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, utf8_bytes(text))


def utf8_bytes(text: str) -> bytes:
    """``text`` as UTF-8. A lone surrogate (a path whose file name has bytes that are not UTF-8, kept by
    Python as ``\\udce9``) is written as that escape: in JSON it reads back as the same path."""
    return text.encode("utf-8", "backslashreplace")


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (e.g. HD95 against an empty mask) by None: standard JSON has no Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(data: Any, indent: int | None = None) -> str:
    return json.dumps(json_safe(data), indent=indent, ensure_ascii=False, allow_nan=False)


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, dumps(data, indent) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write + fsync.

    A kill can at worst leave a truncated *last* line, which :func:`read_jsonl` drops, so a resumed
    run redoes exactly that record and no other.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = utf8_bytes(dumps(record) + "\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Each complete line with its 1-based number: the JSON object it holds, or ``None`` for a line damaged
    on disk (bytes that are not UTF-8, a value that is not an object). A torn final line (from a kill) is
    not yielded at all: it was never a result."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
            except ValueError:  # JSONDecodeError, UnicodeDecodeError
                record = None
            yield number, record if isinstance(record, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete JSON objects, one per line; torn and damaged lines are left out (see :func:`numbered_jsonl`)."""
    return [record for _, record in numbered_jsonl(path) if record is not None]
