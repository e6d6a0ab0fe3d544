"""Shared helpers of the readers: modality names, target text, and (through the one image loader,
:mod:`medseg_agent.io.images`) turning an (image, mask) pair into a :class:`Sample` or a :class:`SkippedSample`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.io.images import ImageLoadError, ImageNotFoundError, load_image, load_mask
from medseg_agent.vocabulary.sample import Sample

from .sample import SkippedSample

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".dcm", ".nii", ".nii.gz")

# Canonical modality names follow BiomedParse's (CT, MRI, X-Ray, Ultrasound, Endoscope, Dermoscopy,
# Fundus, OCT, Pathology), plus Microscopy/PET/Mammography for data BiomedParse does not cover.
_MODALITY_ALIASES: dict[str, str] = {
    "ct": "CT",
    "cta": "CT",
    "mri": "MRI",
    "mr": "MRI",
    "x-ray": "X-Ray",
    "xray": "X-Ray",
    "x_ray": "X-Ray",
    "cxr": "X-Ray",
    "radiograph": "X-Ray",
    "ultrasound": "Ultrasound",
    "us": "Ultrasound",
    "echo": "Ultrasound",
    "endoscope": "Endoscope",
    "endoscopy": "Endoscope",
    "colonoscopy": "Endoscope",
    "dermoscopy": "Dermoscopy",
    "dermoscope": "Dermoscopy",
    "fundus": "Fundus",
    "oct": "OCT",
    "pathology": "Pathology",
    "histopathology": "Pathology",
    "histology": "Pathology",
    "microscopy": "Microscopy",
    "fluorescence": "Microscopy",
    "pet": "PET",
    "mammography": "Mammography",
    "mg": "Mammography",
}
_MRI_SEQUENCES = ("T1", "T2", "FLAIR", "ADC", "DWI", "PD", "T1GD", "T1CE", "SWI")


def canonical_modality(token: str | None) -> tuple[str, str | None]:
    """``"MRI-FLAIR"`` -> ``("MRI", "FLAIR")``; ``"x-ray"`` -> ``("X-Ray", None)``;
    ``"T2"`` -> ``("MRI", "T2")``; unknown tokens are returned unchanged."""
    if not token:
        return "unknown", None
    t = token.strip()
    low = t.lower()
    if low in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[low], None
    head, sep, rest = t.partition("-")
    if sep and head.lower() in ("mri", "mr"):
        return "MRI", rest or None
    if sep and head.lower() in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[head.lower()], rest or None
    if t.upper() in _MRI_SEQUENCES:
        return "MRI", t
    return t, None


def is_known_modality(token: str | None) -> bool:
    if not token:
        return False
    canon, _ = canonical_modality(token)
    return canon in set(_MODALITY_ALIASES.values())


def describe_target(target: str, modality: str | None = None, site: str | None = None) -> str:
    """BiomedParse-style prompt: ``"left kidney in abdomen CT"`` (parts left out when unknown)."""
    parts = [target.strip()]
    tail = " ".join(p for p in (site, modality) if p and p != "unknown")
    if tail:
        parts.append(f"in {tail}")
    return " ".join(parts)


def decode_name(token: str) -> str:
    """File-name token to words: ``left+kidney`` -> ``left kidney``."""
    return re.sub(r"\s+", " ", token.replace("+", " ")).strip()


def encode_name(words: str) -> str:
    """Words to a file-name token: ``left kidney`` -> ``left+kidney`` (no ``_`` or ``/`` left)."""
    token = re.sub(r"[\s_/\\]+", "+", words.strip())
    return re.sub(r"[^A-Za-z0-9+\-.]", "", token)


def strip_image_ext(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", *IMAGE_EXTENSIONS):
        if low.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def is_image_file(path: Path) -> bool:
    low = path.name.lower()
    return path.is_file() and not low.startswith(".") and low.endswith(IMAGE_EXTENSIONS)


def describe_error(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def check_pair(image: np.ndarray, mask: np.ndarray) -> str | None:
    """Why an (image, mask) pair is unusable, or None when fine."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return f"image is not RGB uint8 (shape {image.shape}, dtype {image.dtype})"
    if mask.ndim != 2:
        return f"mask is not 2-D (shape {mask.shape})"
    if image.shape[:2] != mask.shape:
        return (
            f"image/mask shape mismatch: image {image.shape[0]}x{image.shape[1]}, mask {mask.shape[0]}x{mask.shape[1]}"
        )
    if not mask.any():
        return "empty mask (no foreground pixels)"
    return None


def build_sample(
    *,
    sample_id: str,
    image_path: str | Path | None,
    mask_path: str | Path | None,
    target: str,
    modality: str,
    dataset: str,
    split: str = "test",
    spacing: tuple[float, float] | None = None,
    meta: dict[str, Any] | None = None,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    load_image_fn: Callable[[], np.ndarray] | None = None,
    load_mask_fn: Callable[[], np.ndarray] | None = None,
) -> Sample | SkippedSample:
    """Load (if needed) and validate one pair; any failure becomes a ``SkippedSample`` naming the file."""
    ipath = str(image_path) if image_path is not None else ""
    mpath = str(mask_path) if mask_path is not None else ""
    if image is None:
        if image_path is None and load_image_fn is None:
            return SkippedSample(sample_id, mpath, "no image file for this mask")
        try:
            image = load_image_fn() if load_image_fn else load_image(image_path, modality)  # type: ignore[arg-type]
        except ImageNotFoundError:
            return SkippedSample(sample_id, ipath, "image file not found")
        except ImageLoadError as exc:
            return SkippedSample(sample_id, ipath, f"unreadable image: {exc.problem}")
    if mask is None:
        if mask_path is None and load_mask_fn is None:
            return SkippedSample(sample_id, ipath, "no mask file for this image")
        try:
            mask = load_mask_fn() if load_mask_fn else load_mask(mask_path)  # type: ignore[arg-type]
        except ImageNotFoundError:
            return SkippedSample(sample_id, mpath, "mask file not found")
        except ImageLoadError as exc:
            return SkippedSample(sample_id, mpath, f"unreadable mask: {exc.problem}")
    problem = check_pair(image, mask)
    if problem is not None:
        if problem.startswith("image/mask") and ipath:
            problem = f"{problem} (image {ipath})"
        path = ipath if problem.startswith("image is") else (mpath or ipath)
        return SkippedSample(sample_id, path, problem)
    return Sample(
        image=np.ascontiguousarray(image),
        mask=np.ascontiguousarray(mask.astype(bool, copy=False)),
        target=target,
        modality=modality,
        dataset=dataset,
        sample_id=sample_id,
        spacing=spacing,
        split=split,
        image_path=ipath or None,
        mask_path=mpath or None,
        meta=dict(meta or {}),
    )


def parse_spacing(value: Any) -> tuple[float, float] | None:
    """``"0.7,0.7"`` / ``"0.7x0.7"`` / ``"[0.7, 0.7]"`` / ``0.7`` / ``[0.7, 0.7]`` -> (row, col) mm."""
    if value is None:
        return None
    if isinstance(value, int | float):
        v = float(value)
        return (v, v) if np.isfinite(v) and v > 0 else None
    try:
        if isinstance(value, list | tuple):
            vals = [float(v) for v in value]
        else:
            text = str(value).strip().strip("[]()")
            if not text:
                return None
            vals = [float(v) for v in re.split(r"[,x;\s]+", text) if v]
    except (TypeError, ValueError):
        raise ValueError(f"invalid spacing {value!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"invalid spacing {value!r}")
    return (vals[0], vals[1])
