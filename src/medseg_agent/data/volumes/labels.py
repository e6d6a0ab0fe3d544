"""Label names: from a ``{value: name}`` mapping, a labels text file (``37 Hippocampus_L ...``,
ITK-SNAP ``"name"`` lines, ``1: liver``) or ``dataset.json``; and their human-readable form."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LabelSpec = Mapping[int, str] | Mapping[str, str] | str | Path | None


def humanize_label(name: str) -> str:
    """``Hippocampus_L`` -> ``left hippocampus``; ``Left-Lateral-Ventricle`` -> ``left lateral
    ventricle``; ``right kidney`` stays; all-caps acronyms (``IVC``) keep their case."""
    tokens = [t for t in re.split(r"[_\-\s]+", name.strip()) if t]
    if not tokens:
        return name
    side = None
    if tokens[-1] in ("L", "R", "l", "r") and len(tokens) > 1:
        side = "left" if tokens.pop().lower() == "l" else "right"
    words = [t if (t.isupper() and len(t) > 1) else t.lower() for t in tokens]
    if side and words[0] not in ("left", "right"):
        words.insert(0, side)
    return " ".join(words)


def read_label_names(path: str | Path) -> dict[int, str]:
    """Parse a labels file: ``37 Hippocampus_L 4101`` (AAL), ``1: liver``, ``1,liver``, ITK-SNAP
    lines with a quoted name, or JSON (``{"1": "liver"}``, ``{"liver": 1}`` or a dataset.json)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "labels" in data:
            data = data["labels"]
        return labels_from_mapping(data)
    out: dict[int, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\d+)\s*[:,=\t ]\s*(.+)$", line)
        if not m:
            continue
        value, rest = int(m.group(1)), m.group(2).strip()
        quoted = re.search(r'"([^"]*)"', rest)
        if quoted:
            name = quoted.group(1)
        else:
            parts = rest.split()
            while len(parts) > 1 and re.fullmatch(r"-?\d+(\.\d+)?", parts[-1]):
                parts.pop()
            name = " ".join(parts)
        if name:
            out[value] = name
    return out


def labels_from_mapping(data: Any) -> dict[int, str]:
    """``{value: name}`` from ``{"1": "liver"}``, nnU-Net v2 ``{"liver": 1}`` or region lists."""
    out: dict[int, str] = {}
    if not isinstance(data, Mapping):
        raise ValueError("label mapping must be a dict")
    for k, v in data.items():
        if isinstance(v, int | float) and not isinstance(v, bool):  # nnU-Net v2: {"liver": 1}
            if isinstance(v, float) and not v.is_integer():  # 1.5, Infinity, NaN: no voxel holds it
                raise ValueError(f"label {k!r} has the value {v}, not a whole number")
            out[int(v)] = str(k)
        elif isinstance(v, list | tuple) and v and isinstance(v[0], int):  # region-based: first value
            out[int(v[0])] = str(k)
        else:
            out[int(k)] = str(v)
    return out


def resolve_label_names(labels: LabelSpec) -> dict[int, str] | None:
    if labels is None:
        return None
    if isinstance(labels, str | Path):
        return read_label_names(labels)
    return labels_from_mapping(labels)


def find_label_names_file(label_path: Path) -> Path | None:
    """A labels file next to a label volume (``aal.nii.txt``, ``labels.txt``, ...), if any."""
    base = label_path.name
    for ext in (".nii.gz", ".nii", ".mgz"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    folder = label_path.parent if label_path.is_file() or not label_path.exists() else label_path
    for cand in (
        f"{label_path.name}.txt",
        f"{base}.nii.txt",
        f"{base}.txt",
        f"{base}.json",
        "labels.txt",
        "labels.json",
    ):
        q = folder / cand
        if q.is_file() and q != label_path:
            return q
    return None
