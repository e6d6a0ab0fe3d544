"""Finding (image, label) volume pairs in folders: MSD/nnU-Net ``dataset.json``, ``images*/labels*``
folder pairs, ``X.nii.gz`` + ``X_seg.nii.gz`` siblings, and ``<case>/image`` + ``<case>/label`` DICOM
case folders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medseg_agent.io.text import read_text_file

from .cases import VolumeCase
from .files import NIFTI_SUFFIXES
from .labels import labels_from_mapping

LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_gt", "_segmentation", "-label", "-seg")


def strip_nifti_suffix(name: str) -> str:
    """``case.nii.gz`` -> ``case`` (the case name shared by an image and its label)."""
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)


def _case_name(stem: str) -> str:
    return re.sub(r"_\d{4}$", "", stem)  # nnU-Net channel suffix


def _pair_dirs(image_dir: Path, label_dir: Path, split: str) -> list[VolumeCase]:
    labels = {strip_nifti_suffix(p.name): p for p in sorted(label_dir.iterdir()) if _is_nifti(p)}
    cases = []
    seen = set()
    for p in sorted(image_dir.iterdir()):
        if not _is_nifti(p):
            continue
        stem = strip_nifti_suffix(p.name)
        case = _case_name(stem)
        if case in seen:
            continue  # further channels of a multi-channel nnU-Net case
        seen.add(case)
        lab = labels.get(case) or labels.get(stem) or label_dir / p.name
        cases.append(VolumeCase(case, p, lab, split))
    return cases


def _split_of(dirname: str) -> str:
    low = dirname.lower()
    if low.endswith("tr") or "train" in low:
        return "train"
    if low.endswith("val") or "valid" in low:
        return "val"
    return "test"


_IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "volumes", "vol")
_LABEL_DIR_NAMES = ("labels", "label", "masks", "mask", "segmentations", "seg", "gt")


def discover_nifti_cases(root: Path) -> tuple[list[VolumeCase], dict[str, Any]]:
    """Find (image, label) NIfTI pairs under ``root``: MSD/nnU-Net ``dataset.json``,
    ``images*/labels*`` folder pairs, or ``X.nii.gz`` + ``X_seg.nii.gz`` (``_label``, ``_mask``, ...)."""
    info: dict[str, Any] = {}
    ds_json = root / "dataset.json"
    if ds_json.is_file():
        try:
            meta = json.loads(read_text_file(ds_json, "dataset description"))
        except json.JSONDecodeError as exc:  # its label names would be lost without a word
            raise ValueError(
                f"{ds_json} is not valid JSON ({exc}); mend it, or move it away to read the folder by its "
                "images*/labels* folders"
            ) from None
        if isinstance(meta, dict) and "labels" in meta:
            try:
                info["label_names"] = labels_from_mapping(meta["labels"])
            except (ValueError, TypeError) as exc:  # every target would be named "label N" without a word
                raise ValueError(f"{ds_json}: its 'labels' cannot be read as {{value: name}}: {exc}") from None
            mods = meta.get("modality") or meta.get("channel_names") or {}
            if isinstance(mods, dict) and mods:
                info["modality"] = str(mods.get("0", next(iter(mods.values()))))
            if isinstance(meta.get("name"), str):
                info["name"] = meta["name"]
            if isinstance(meta.get("training"), list) and meta["training"] and isinstance(meta["training"][0], dict):
                cases = []
                for i, entry in enumerate(meta["training"]):
                    img, lab = (entry.get("image"), entry.get("label")) if isinstance(entry, dict) else (0, 0)
                    if isinstance(entry, dict) and (not img or not lab):
                        continue  # an entry without a label has nothing to score
                    if not isinstance(img, str) or not isinstance(lab, str):
                        raise ValueError(
                            f"{ds_json}: training[{i}] must be {{\"image\": path, \"label\": path}}, got "
                            f"{str(entry)[:80]}"
                        )
                    cases.append(VolumeCase(strip_nifti_suffix(Path(img).name), root / img, root / lab, "train"))
                return cases, info
    cases: list[VolumeCase] = []
    subdirs = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    for name, d in subdirs.items():
        low = name.lower()
        for img_prefix in _IMAGE_DIR_NAMES:
            if low.startswith(img_prefix):
                suffix = name[len(img_prefix) :]
                for lab_prefix in _LABEL_DIR_NAMES:
                    match = next((q for n, q in subdirs.items() if n.lower() == lab_prefix + suffix.lower()), None)
                    if match is not None:
                        cases += _pair_dirs(d, match, _split_of(suffix or name))
                        break
                break
    if cases:
        return cases, info
    files = {strip_nifti_suffix(p.name): p for p in sorted(root.iterdir()) if _is_nifti(p)}
    for stem in files:
        for suf in LABEL_SUFFIXES:
            if stem.lower().endswith(suf) and stem[: -len(suf)] in files:
                base = stem[: -len(suf)]
                cases.append(VolumeCase(base, files[base], files[stem], "test"))
                break
    return cases, info


def looks_like_nifti_dir(root: Path) -> bool:
    if not root.is_dir():
        return False
    if any(_is_nifti(p) for p in root.iterdir()):
        return True
    return any(
        p.is_dir() and p.name.lower().startswith(_IMAGE_DIR_NAMES) and any(_is_nifti(q) for q in p.iterdir())
        for p in root.iterdir()
    )


def find_sibling_label(image: Path) -> Path | None:
    """``X_seg.nii.gz`` (or ``_label``, ``_mask``, ...) next to ``X.nii.gz``, when there is one."""
    stem = strip_nifti_suffix(image.name)
    for suf in LABEL_SUFFIXES:
        for ext in (".nii.gz", ".nii"):
            cand = image.with_name(stem + suf + ext)
            if cand.is_file():
                return cand
    return None


def discover_dicom_cases(root: Path) -> list[VolumeCase]:
    """``root/<case>/{image,images,dicom,ct,mr}/`` + ``root/<case>/{label*,mask*,seg*}`` (folder,
    NIfTI or .npy)."""
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        entries = {p.name.lower(): p for p in case_dir.iterdir()}
        img = next((entries[n] for n in ("image", "images", "dicom", "ct", "mr", "mri") if n in entries), None)
        lab = next(
            (p for n, p in sorted(entries.items()) if n.startswith(("label", "mask", "seg", "gt")) and p != img),
            None,
        )
        if img is not None and lab is not None:
            cases.append(VolumeCase(case_dir.name, img, lab, "test"))
    return cases
