"""The ``nifti`` and ``dicom`` dataset readers: a single volume with its label, or a folder of cases,
as a lazy :class:`Dataset` of slice samples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg_agent.io.intensity import WindowSpec, resolve_window
from medseg_agent.vocabulary.numbers import is_whole_number

from ..dataset import Dataset, Item
from .cases import VolumeCase, case_samples
from .discovery import discover_dicom_cases, discover_nifti_cases, find_sibling_label, strip_nifti_suffix
from .labels import LabelSpec, resolve_label_names
from .orientation import axis_index


def _volume_dataset(
    cases: list[VolumeCase], name: str, source: str, fmt: str, split: str | None, options: dict[str, Any]
) -> Dataset:
    chosen = [c for c in cases if split is None or c.split == split]
    if cases and not chosen:
        raise ValueError(f"{source} has no split {split!r} (found: {', '.join(sorted({c.split for c in cases}))})")

    def produce() -> Iterator[Item]:
        for case in chosen:
            yield from case_samples(case, name, options)

    return Dataset(name, produce, source=source, format=fmt, split=split)


def _options(
    labels: LabelSpec,
    modality: str | None,
    window: WindowSpec | None,
    axis: str | int,
    every_k: int,
    min_area: int,
    include: list[int] | None,
    site: str | None,
    channel: int,
) -> dict[str, Any]:
    """The reader's options, checked before any volume is read: a slip in one would otherwise surface
    at the first case, mid-iteration, as a traceback."""
    axis_index(axis)
    if window is not None:
        resolve_window(window)
    for option, value, least in (("every_k", every_k, 1), ("min_area", min_area, 1)):
        if not is_whole_number(value) or value < least:
            raise ValueError(f"{option} must be a whole number >= {least}, got {value!r}")
    return {
        "label_names": resolve_label_names(labels),
        "modality": modality,
        "window": window,
        "axis": axis,
        "every_k": every_k,
        "min_area": min_area,
        "include": include,
        "site": site,
        "channel": channel,
    }


def read_nifti(
    path: str | Path,
    *,
    label: str | Path | None = None,
    labels: LabelSpec = None,
    modality: str | None = None,
    window: WindowSpec | None = None,
    axis: str | int = "axial",
    every_k: int = 1,
    min_area: int = 1,
    include: list[int] | None = None,
    site: str | None = None,
    channel: int = 0,
    split: str | None = None,
    name: str | None = None,
    case_split: str = "test",
) -> Dataset:
    """A NIfTI image file (with ``label=`` or a sibling ``X_seg.nii.gz``) or a folder of pairs.

    ``labels`` maps label values to names (dict or labels file); ``include`` keeps only those label
    values. ``modality`` "CT" windows with ``window`` (default abdomen); anything else uses
    percentiles. ``modality=None`` takes dataset.json's, else guesses CT from HU-like values.
    """
    root = Path(path)
    opts = _options(labels, modality, window, axis, every_k, min_area, include, site, channel)
    if root.is_dir():
        cases, info = discover_nifti_cases(root)
        if not cases:
            raise ValueError(f"no (image, label) NIfTI pairs found in {root}")
        for c in cases:
            c.label_names = c.label_names or info.get("label_names")
            c.modality = c.modality or info.get("modality")
        dname = name or info.get("name") or root.resolve().name
        return _volume_dataset(cases, dname, str(root), "nifti", split, opts)
    lab = Path(label) if label is not None else find_sibling_label(root)
    if lab is None:
        raise ValueError(
            f"no label volume for {root}: pass label=... (or name it {strip_nifti_suffix(root.name)}_seg.nii.gz)"
        )
    case = VolumeCase(strip_nifti_suffix(root.name), root, lab, case_split)
    dname = name or root.resolve().parent.name
    return _volume_dataset([case], dname, str(root), "nifti", split, opts)


def read_dicom(
    path: str | Path,
    *,
    label: str | Path | None = None,
    labels: LabelSpec = None,
    modality: str | None = None,
    window: WindowSpec | None = None,
    axis: str | int = "axial",
    every_k: int = 1,
    min_area: int = 1,
    include: list[int] | None = None,
    site: str | None = None,
    split: str | None = None,
    name: str | None = None,
    case_split: str = "test",
) -> Dataset:
    """A DICOM series folder with ``label=`` (NIfTI, DICOM folder, or .npy of shape (cols, rows,
    slices) in the sorted series' voxel order), or a folder of case folders (see
    :func:`discover_dicom_cases`). The modality comes from the DICOM Modality tag unless given."""
    root = Path(path)
    opts = _options(labels, modality, window, axis, every_k, min_area, include, site, 0)
    if label is not None:
        case = VolumeCase(root.name, root, Path(label), case_split)
        return _volume_dataset([case], name or root.name, str(root), "dicom", split, opts)
    cases = discover_dicom_cases(root) if root.is_dir() else []
    if not cases:
        raise ValueError(f"no label given for DICOM series {root} and no <case>/image + <case>/label folders in it")
    return _volume_dataset(cases, name or root.resolve().name, str(root), "dicom", split, opts)
