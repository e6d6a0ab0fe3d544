"""Manifest files: one row per sample, paths relative to the manifest file.

CSV (``,``, or ``;`` as Excel writes it in most of Europe), TSV (``.tsv``), JSONL, or JSON (a list of
rows or ``{"samples": [...]}``) with columns

- required: ``image``, ``mask``, ``target``, ``modality``
- optional: ``dataset``, ``split``, ``sample_id``, ``spacing`` (``"0.8,0.8"``, ``"0.8x0.8"``, a
  number or a list), ``site``, ``window`` (CT preset or ``W400L40``), ``label`` (the mask value to
  use instead of "non-zero").

``image_path``/``mask_path`` and ``text``/``prompt`` are accepted as aliases.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg_agent.io.images import load_image, load_mask
from medseg_agent.io.intensity import resolve_window
from medseg_agent.io.text import TextFileError, read_text_file

from .common import build_sample, canonical_modality, parse_spacing
from .dataset import Dataset, Item
from .sample import SkippedSample

REQUIRED = ("image", "mask", "target", "modality")
_ALIASES = {
    "image": ("image", "image_path", "image_file", "img"),
    "mask": ("mask", "mask_path", "mask_file", "label_path", "seg"),
    "target": ("target", "text", "prompt", "sentence"),
    "modality": ("modality",),
}
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    text = read_text_file(path, "manifest")
    if suffix in (".jsonl", ".ndjson"):
        rows: list[dict[str, Any]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                row = {"__error__": f"line {n} is not valid JSON: {exc}"}
            rows.append(row if isinstance(row, dict) else {"__error__": f"line {n} is not an object"})
        return rows
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("samples")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of rows or {{'samples': [...]}}")
        return [r if isinstance(r, dict) else {"__error__": "row is not an object"} for r in data]
    lines = text.splitlines()
    reader = csv.DictReader(lines, dialect="excel", delimiter=_delimiter(lines[0] if lines else "", suffix))
    return [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()} for r in reader]


def _delimiter(header: str, suffix: str) -> str:
    """Tab for ``.tsv``; for ``.csv`` the separator its header uses, because Excel saves CSV with ``;``
    where a comma is the decimal mark (most of Europe). A tie goes to the comma."""
    if suffix == ".tsv":
        return "\t"
    return max((",", ";", "\t"), key=header.count)


def _column_map(rows: list[dict[str, Any]], path: Path) -> dict[str, str]:
    keys: set[str] = set()
    for r in rows:
        keys.update(r)
    found: dict[str, str] = {}
    for col, aliases in _ALIASES.items():
        for a in aliases:
            if a in keys:
                found[col] = a
                break
    missing = [c for c in REQUIRED if c not in found]
    if rows and missing:
        raise ValueError(f"manifest {path} lacks required column(s): {', '.join(missing)}")
    return found


def _label_value(label: Any) -> int | None:
    """The mask value a row names; 1.5 or a bool is a slip in the manifest, not a label."""
    if label is None or label == "":
        return None
    if isinstance(label, bool) or (isinstance(label, float) and not label.is_integer()):
        raise ValueError(f"label {label!r} is not a whole number")
    return int(label)


def _produce(rows: list[dict[str, Any]], cols: dict[str, str], base: Path, name: str) -> Iterator[Item]:
    for i, row in enumerate(rows):
        rid = str(row.get("sample_id") or f"row{i + 1}")
        if "__error__" in row:
            yield SkippedSample(rid, str(base), row["__error__"])
            continue
        image_rel = row.get(cols["image"])
        mask_rel = row.get(cols["mask"])
        target = row.get(cols["target"])
        mod_token = row.get(cols["modality"])
        where = str(base / str(mask_rel)) if mask_rel else str(base)
        missing = [c for c, v in (("image", image_rel), ("mask", mask_rel), ("target", target)) if not v]
        if missing:
            yield SkippedSample(rid, where, f"row {i + 1}: empty {', '.join(missing)}")
            continue
        image_path = Path(str(image_rel))
        mask_path = Path(str(mask_rel))
        image_path = image_path if image_path.is_absolute() else base / image_path
        mask_path = mask_path if mask_path.is_absolute() else base / mask_path
        try:
            spacing = parse_spacing(row.get("spacing") or None)
            label_value = _label_value(row.get("label"))
            window = row.get("window") or None
            if window is not None:
                resolve_window(window)
        except (TypeError, ValueError) as exc:
            yield SkippedSample(rid, str(mask_path), f"row {i + 1}: {exc}")
            continue
        modality, sequence = canonical_modality(str(mod_token) if mod_token else None)
        meta: dict[str, Any] = {"row": i + 1}
        for k in ("site", "window"):
            if row.get(k):
                meta[k] = row[k]
        if sequence:
            meta["sequence"] = sequence
        yield build_sample(
            sample_id=str(row.get("sample_id") or mask_path.stem),
            image_path=image_path,
            mask_path=mask_path,
            target=str(target),
            modality=modality,
            dataset=str(row.get("dataset") or name),
            split=str(row.get("split") or "test"),
            spacing=spacing,
            meta=meta,
            load_image_fn=lambda p=image_path, m=modality, w=window: load_image(p, m, w),
            load_mask_fn=lambda p=mask_path, v=label_value: load_mask(p, v),
        )


def read_manifest(path: str | Path, *, split: str | None = None, name: str | None = None) -> Dataset:
    """Open a CSV/TSV/JSONL/JSON manifest; a missing required column raises ``ValueError``."""
    mpath = Path(path)
    try:
        rows = _read_rows(mpath)
    except TextFileError:  # already names the file and its role
        raise
    except (OSError, ValueError, csv.Error) as exc:
        raise ValueError(f"cannot read manifest {mpath}: {exc}") from exc
    cols = _column_map([r for r in rows if "__error__" not in r], mpath)
    base = mpath.parent
    dname = name or (mpath.resolve().parent.name if mpath.stem in ("manifest", "samples") else mpath.stem)
    return Dataset(
        dname,
        lambda: _produce(rows, cols, base, dname),
        source=str(mpath),
        format="manifest",
        split=split,
        length_hint=len(rows),
    )
