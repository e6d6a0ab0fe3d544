"""DICOM series folders read into one nibabel image with a RAS+ affine (pydicom)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VolumeError, read_errors
from .limits import check_voxel_count

#: DICOM Modality tag -> our modality names.
DICOM_MODALITY_NAMES = {"MR": "MRI", "CT": "CT", "PT": "PET", "US": "Ultrasound", "CR": "X-Ray", "DX": "X-Ray"}


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def looks_like_dicom_dir(folder: Path, limit: int = 20) -> bool:
    if not folder.is_dir():
        return False
    for i, p in enumerate(_dicom_files(folder)):
        if i >= limit:
            break
        if p.suffix.lower() == ".dcm" or _is_dicom(p):
            return True
    return False


#: Largest difference between two gaps of one series, as a share of the usual gap, that is still
#: one even step (scanners round positions; a missing slice doubles a gap).
SPACING_TOLERANCE = 0.1


def _check_even_spacing(root: Path, files: list[Path], along_normal: np.ndarray, ignored: int) -> None:
    """One volume needs one slice step: a missing or unreadable file leaves a gap that would
    otherwise put every slice after it at the wrong place."""
    if len(files) < 3:
        return
    gaps = np.diff(along_normal)
    usual = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - usual)))
    if abs(gaps[worst] - usual) > SPACING_TOLERANCE * usual:
        unread = f" ({ignored} file(s) in the folder are not readable DICOM images)" if ignored else ""
        raise VolumeError(
            f"DICOM series in {root} is not evenly spaced: {gaps[worst]:.3g} mm between {files[worst].name} and "
            f"{files[worst + 1].name}, {usual:.3g} mm between the others; is a slice missing?{unread}"
        )


def _numbers(ds: Any, keyword: str, count: int, path: Path) -> list[float] | None:
    """The ``count`` numbers of one element, None when it is absent or empty; a damaged element
    (pydicom reads each one when it is first used) names its file instead of failing deep inside."""
    try:
        value = getattr(ds, keyword, None)
        if value is None or value == "":
            return None
        items = list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else [value]
        numbers = [float(item) for item in items]
    except (*read_errors(), TypeError) as exc:
        raise VolumeError(f"{path.name}: {keyword} is not a readable number ({exc})") from None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        raise VolumeError(f"{path.name}: {keyword} must be {count} finite number(s), got {str(value)[:80]}")
    return numbers


def _slice(path: Path, rescale: bool) -> np.ndarray:
    """One slice's pixels as float32, through its own RescaleSlope and RescaleIntercept."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except (*read_errors(), AttributeError, RuntimeError) as exc:  # cut short, a pixel tag missing, no codec
        raise VolumeError(f"{path.name} in {path.parent}: unreadable pixel data: {exc}") from None
    if pixels.ndim != 2:
        raise VolumeError(f"{path}: multi-frame or colour DICOM is not supported (shape {pixels.shape})")
    pixels = pixels.astype(np.float32)
    if not rescale:
        return pixels
    slope = (_numbers(ds, "RescaleSlope", 1, path) or [1.0])[0] or 1.0
    intercept = (_numbers(ds, "RescaleIntercept", 1, path) or [0.0])[0]
    return pixels * slope + intercept


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *, rescale: bool = True) -> tuple[Any, dict]:
    """Read one DICOM series folder into a nibabel image with a RAS+ affine.

    Slices are ordered along the slice normal by ImagePositionPatient (falling back to
    InstanceNumber), RescaleSlope/Intercept are applied per slice. Returns (image, info) where info
    has ``modality`` (DICOM Modality tag), ``series_uid`` and ``n_files`` / ``ignored`` counts.
    """
    import nibabel as nib
    import pydicom

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(str(root))
    series: dict[str, list[tuple[Path, Any]]] = {}
    ignored = 0
    for p in _dicom_files(root):
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=p.suffix.lower() == ".dcm")
            if "PixelData" not in ds and not hasattr(ds, "Rows"):
                ignored += 1
                continue
            uid = str(getattr(ds, "SeriesInstanceUID", ""))
        except read_errors():  # not a DICOM file, or a broken one: counted, not read
            ignored += 1
            continue
        series.setdefault(uid, []).append((p, ds))
    if not series:
        raise VolumeError(f"no DICOM images in {root}")
    if series_uid is not None:
        if series_uid not in series:
            raise VolumeError(f"series {series_uid} not found in {root}")
        items = series[series_uid]
    else:
        series_uid, items = max(series.items(), key=lambda kv: len(kv[1]))
    first_path, first = items[0]
    iop = _numbers(first, "ImageOrientationPatient", 6, first_path)
    found = [_numbers(d, "ImagePositionPatient", 3, p) for p, d in items]
    if iop is not None and all(position is not None for position in found):
        row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])
        normal = np.cross(row_cos, col_cos)
        order = np.argsort([float(np.dot(normal, position)) for position in found], kind="stable")
        items = [items[i] for i in order]
        positions = np.array([found[i] for i in order])
        if len(items) > 1 and np.min(np.diff(positions @ normal)) < 1e-4:
            raise VolumeError(f"DICOM series in {root} has several slices at the same position")
        _check_even_spacing(root, [p for p, _ in items], positions @ normal, ignored)
    else:
        row_cos, col_cos, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        numbers = [(_numbers(d, "InstanceNumber", 1, p) or [0.0])[0] for p, d in items]
        order = sorted(range(len(items)), key=lambda i: (numbers[i], items[i][0].name))
        items = [items[i] for i in order]
        positions = np.array([[0.0, 0.0, float(i)] for i in range(len(items))])
    rows, columns = ((_numbers(first, tag, 1, first_path) or [0.0])[0] for tag in ("Rows", "Columns"))
    check_voxel_count((int(columns), int(rows), len(items)), f"DICOM series in {root}")
    slices = [_slice(p, rescale) for p, _ in items]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise VolumeError(f"DICOM series in {root} mixes slice sizes {sorted(shapes)}")
    stack = np.stack(slices)  # (n, rows, cols)
    data = np.transpose(stack, (2, 1, 0))  # (cols, rows, n): i along a row, j down a column
    row_spacing, col_spacing = _numbers(first, "PixelSpacing", 2, first_path) or [1.0, 1.0]
    if len(items) > 1:
        step = (positions[-1] - positions[0]) / (len(items) - 1)
    else:
        thickness = _numbers(first, "SpacingBetweenSlices", 1, first_path) or _numbers(
            first, "SliceThickness", 1, first_path)
        step = normal * (thickness[0] if thickness and thickness[0] > 0 else 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    info = {
        "modality": str(getattr(first, "Modality", "") or ""),
        "series_uid": series_uid,
        "n_files": len(items),
        "ignored": ignored,
        "n_series": len(series),
    }
    return nib.Nifti1Image(data, affine), info
