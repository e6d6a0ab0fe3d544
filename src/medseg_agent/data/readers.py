"""One entry point for every dataset layout: :func:`open_dataset` (+ a small reader registry).

Auto-detection, in order, for a folder: ``<split>/`` + ``<split>_mask/`` pairs -> ``biomedparse``;
``dataset.json`` (COCO/RefCOCO-style -> ``json``, MSD/nnU-Net -> ``nifti``); one annotation
``*.json`` -> ``json``; one ``*.jsonl``/``*.csv``/``*.tsv`` (or ``manifest.json``) -> ``manifest``;
NIfTI files or ``images*/labels*`` folders -> ``nifti``; DICOM files or ``<case>/image`` folders ->
``dicom``. For a file: by extension and, for ``.json``, by content.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg_agent.io.text import read_text_file

from .biomedparse import looks_like_biomedparse, read_biomedparse
from .dataset import Dataset
from .json_annotations import is_annotation_json, read_json_annotations
from .manifest import MANIFEST_SUFFIXES, read_manifest
from .volumes import (
    NIFTI_SUFFIXES,
    discover_dicom_cases,
    looks_like_dicom_dir,
    looks_like_nifti_dir,
    read_dicom,
    read_nifti,
)

Reader = Callable[..., Dataset]

READERS: dict[str, Reader] = {
    "biomedparse": read_biomedparse,
    "json": read_json_annotations,
    "manifest": read_manifest,
    "nifti": read_nifti,
    "dicom": read_dicom,
}
_ALIASES = {"coco": "json", "refcoco": "json", "csv": "manifest", "jsonl": "manifest", "nii": "nifti", "dcm": "dicom"}


def register_reader(name: str, reader: Reader) -> None:
    """Add (or replace) a reader: ``reader(path, split=..., **options) -> Dataset``."""
    READERS[name] = reader


def available_formats() -> list[str]:
    return ["auto", *READERS]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_msd_json(data: Any) -> bool:
    return isinstance(data, dict) and "labels" in data and ("training" in data or "channel_names" in data)


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, path to hand to the reader) for a dataset file or folder; ``ValueError`` if unknown."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path does not exist: {p}")
    if p.is_file():
        name = p.name.lower()
        if name.endswith(".json"):
            try:
                data = json.loads(read_text_file(p, "dataset file"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p} is not valid JSON ({exc})") from None
            if is_annotation_json(data):
                return "json", p
            if _is_msd_json(data):
                return "nifti", p.parent
            if isinstance(data, list) or (isinstance(data, dict) and isinstance(data.get("samples"), list)):
                return "manifest", p
            raise ValueError(f"{p}: JSON is neither annotations, a manifest nor an MSD/nnU-Net dataset.json")
        if name.endswith(MANIFEST_SUFFIXES):
            return "manifest", p
        if name.endswith(NIFTI_SUFFIXES):
            return "nifti", p
        if name.endswith(".dcm"):
            return "dicom", p.parent
        raise ValueError(f"cannot tell the format of {p}; pass format= one of {', '.join(READERS)}")
    if looks_like_biomedparse(p):
        return "biomedparse", p
    ds_json = p / "dataset.json"
    if ds_json.is_file():
        data = _load_json(ds_json)
        if is_annotation_json(data):
            return "json", ds_json
        if _is_msd_json(data):
            return "nifti", p
    jsons = sorted(q for q in p.glob("*.json") if q.name != "dataset.json")
    ann = [q for q in jsons if is_annotation_json(_load_json(q))]
    if len(ann) == 1:
        return "json", ann[0]
    manifests = sorted(q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(MANIFEST_SUFFIXES))
    if not manifests and (p / "manifest.json").is_file():
        manifests = [p / "manifest.json"]
    if len(manifests) == 1:
        return "manifest", manifests[0]
    if len(ann) > 1 or len(manifests) > 1:
        names = ", ".join(q.name for q in ann + manifests)
        raise ValueError(f"{p} holds several annotation/manifest files ({names}); open one of them directly")
    if looks_like_nifti_dir(p):
        return "nifti", p
    if looks_like_dicom_dir(p) or discover_dicom_cases(p):
        return "dicom", p
    raise ValueError(
        f"cannot detect the dataset layout of {p} (expected train_mask/test_mask folders, an annotation "
        f"JSON, a CSV/JSONL manifest, NIfTI or DICOM); pass format= one of {', '.join(READERS)}"
    )


def open_dataset(path: str | Path, format: str = "auto", split: str | None = None, **options: Any) -> Dataset:
    """Open a dataset in any supported layout; ``options`` go to the reader (e.g. ``label=``,
    ``labels=``, ``modality=``, ``window=``, ``axis=``, ``every_k=``, ``min_area=`` for volumes,
    ``name=`` for all). Per-sample problems are collected in ``dataset.skipped`` while iterating;
    a path that is not a dataset at all raises ``ValueError`` / ``FileNotFoundError``."""
    fmt = _ALIASES.get(format, format)
    p = Path(path)
    if fmt == "auto":
        fmt, p = detect_format(p)
    elif not p.exists():
        raise FileNotFoundError(f"dataset path does not exist: {p}")
    if fmt not in READERS:
        raise ValueError(f"unknown dataset format {format!r}; use one of {', '.join(available_formats())}")
    return READERS[fmt](p, split=split, **options)


def summarize_skipped(dataset: Dataset, *, limit: int | None = 50) -> str:
    """A readable report of the samples ``dataset`` skipped (makes one full pass first if none was
    made yet), grouped by reason."""
    if not dataset.complete:
        for _ in dataset:
            pass
    skipped = dataset.skipped
    try:
        n = len(dataset)
    except TypeError:
        n = 0
    if not skipped:
        return f"{dataset.name}: {n} samples, none skipped"
    by_reason = Counter(_reason_key(s.reason) for s in skipped)
    lines = [f"{dataset.name}: {n} samples, {len(skipped)} skipped"]
    for reason, count in by_reason.most_common():
        lines.append(f"  {count} x {reason}")
    shown = skipped if limit is None else skipped[:limit]
    for s in shown:
        lines.append(f"  - {s.sample_id}: {s.reason} [{s.path}]")
    if limit is not None and len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)


def _reason_key(reason: str) -> str:
    """Group similar reasons (drop the per-file details after ':' / '(')."""
    for sep in (":", " ("):
        if sep in reason:
            return reason.split(sep, 1)[0]
    return reason
