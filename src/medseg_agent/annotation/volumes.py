"""A 3-D volume opened for annotation: slices shown as the dataset readers show them, and a slice's
mask written back as a NIfTI label volume on the source volume's grid.

Slices follow :func:`medseg_agent.data.volumes.display_slice` (RAS+, radiological convention); CT is
shown through a window (presets of :data:`medseg_agent.io.intensity.CT_WINDOWS` or width/level),
everything else through percentiles of the whole volume, so all slices share one mapping, exactly
like the NIfTI and DICOM readers prepare training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg_agent.data.common import canonical_modality
from medseg_agent.data.volumes import (
    AXES,
    NIFTI_SUFFIXES,
    axis_index,
    canonical,
    display_slice,
    load_nifti,
    read_dicom_series,
    read_errors,
    slice_spacing,
)
from medseg_agent.io.intensity import (
    CT_WINDOWS,
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    apply_window,
    gray_to_rgb,
    is_ct,
    percentile_range,
    rescale_to_uint8,
    resolve_window,
)


class VolumeOpenError(ValueError):
    """A file or folder that cannot be opened as a volume; the message names it and says why."""


@dataclass(frozen=True)
class Contrast:
    """How raw intensities become display pixels: a CT window or percentiles of the whole volume.

    ``window``: a preset name (``abdomen``, ``lung``, ...) or ``(width, level)`` in HU. Without a
    window, ``percentiles`` (low, high) of the volume's values are stretched to 0..255.
    """

    window: str | tuple[float, float] | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        if self.window is not None:
            resolve_window(self.window)  # raises ValueError naming the bad window
        lo, hi = self.percentiles
        if not (0.0 <= lo < hi <= 100.0):
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got ({lo}, {hi})")

    def describe(self) -> dict[str, Any]:
        if self.window is None:
            return {"mode": "percentile", "percentiles": list(self.percentiles)}
        width, level = resolve_window(self.window)
        name = self.window if isinstance(self.window, str) else None
        return {"mode": "window", "preset": name, "width": width, "level": level}


class Volume:
    """One scalar volume, kept as float32 in RAS+ for slicing and as the source image for saving."""

    def __init__(self, image: Any, name: str, modality: str | None = None, source: str = "") -> None:
        self.source_image = image
        self.name = name
        self.source = source
        canon = canonical(image)
        data = np.asanyarray(canon.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise VolumeOpenError(f"{name}: expected a 3-D volume, got an array of shape {data.shape}")
        if min(data.shape) < 1 or data.shape[0] * data.shape[1] * data.shape[2] == 0:
            raise VolumeOpenError(f"{name}: the volume is empty (shape {data.shape})")
        self.data = np.asarray(data, dtype=np.float32)
        self.canonical_affine = np.asarray(canon.affine, dtype=np.float64)
        self.zooms = tuple(float(z) for z in canon.header.get_zooms()[:3])
        if modality is None or not modality.strip():
            modality = "CT" if float(np.nanmin(self.data)) <= -500 else "MRI"
        self.modality = canonical_modality(modality)[0]
        self._ranges: dict[tuple[float, float], tuple[float, float]] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def is_ct(self) -> bool:
        return is_ct(self.modality)

    def slices(self, axis: str | int) -> int:
        return self.shape[axis_index(axis)]

    def slice_size(self, axis: str | int) -> tuple[int, int]:
        """(H, W) of a displayed slice along ``axis``."""
        ax = axis_index(axis)
        a, b = (self.shape[i] for i in range(3) if i != ax)
        return b, a

    def spacing(self, axis: str | int) -> tuple[float, float]:
        return slice_spacing(self.zooms, axis)

    def default_contrast(self) -> Contrast:
        return Contrast(window=DEFAULT_CT_WINDOW) if self.is_ct else Contrast()

    def render(self, axis: str | int, index: int, contrast: Contrast | None = None) -> np.ndarray:
        """The displayed slice as RGB uint8."""
        contrast = contrast or self.default_contrast()
        index = self._check_index(axis, index)
        raw = display_slice(self.data, index, axis)
        if contrast.window is not None:
            return gray_to_rgb(apply_window(raw, contrast.window))
        lo, hi = self.percentile_range(contrast.percentiles)
        return gray_to_rgb(rescale_to_uint8(raw, lo, hi))

    def percentile_range(self, percentiles: tuple[float, float]) -> tuple[float, float]:
        """Intensity range of the whole volume at ``percentiles`` (computed once per pair)."""
        key = (float(percentiles[0]), float(percentiles[1]))
        if key not in self._ranges:
            self._ranges[key] = percentile_range(self.data, key)
        return self._ranges[key]

    def mask_image(self, mask: np.ndarray, axis: str | int, index: int) -> Any:
        """A uint8 NIfTI label volume on the source grid (shape and affine of the source image)
        holding ``mask`` (a displayed slice's mask) at slice ``index`` and zeros elsewhere."""
        import nibabel as nib
        from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

        ax = axis_index(axis)
        index = self._check_index(axis, index)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.slice_size(ax):
            raise ValueError(f"mask shape {mask.shape} does not match a {list(AXES)[ax]} slice {self.slice_size(ax)}")
        labels = np.zeros(self.shape, dtype=np.uint8)
        # display_slice shows sl[::-1, ::-1].T; its inverse puts the mask back into the RAS+ slice.
        labels[(slice(None),) * ax + (index,)] = mask.T[::-1, ::-1]
        canonical_labels = nib.Nifti1Image(labels, self.canonical_affine)
        to_source = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(self.source_image.affine))
        out = canonical_labels.as_reoriented(to_source)
        out.set_data_dtype(np.uint8)
        source_header = self.source_image.header
        if hasattr(source_header, "get_qform"):
            out.set_qform(self.source_image.affine, code=int(source_header["qform_code"]) or 1)
            out.set_sform(self.source_image.affine, code=int(source_header["sform_code"]) or 1)
        return out

    def _check_index(self, axis: str | int, index: int) -> int:
        count = self.slices(axis)
        if not 0 <= int(index) < count:
            raise IndexError(f"slice {index} is outside the volume: the {axis} axis has slices 0..{count - 1}")
        return int(index)


def ct_window_presets() -> list[str]:
    return sorted(CT_WINDOWS)


def is_volume_path(path: Path) -> bool:
    """A NIfTI file (the 2-D readers take PNG/JPEG/TIFF/single DICOM files instead)."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def open_volume(path: str | Path, name: str | None = None, modality: str | None = None) -> Volume:
    """A NIfTI file or a DICOM series folder as a :class:`Volume`."""
    path = Path(path)
    label = name or path.name
    try:
        if path.is_dir():
            image, info = read_dicom_series(path)
            return Volume(image, _series_label(label, info), modality or _dicom_modality(info), source=str(path))
        return Volume(load_nifti(path), label, modality, source=str(path))
    except VolumeOpenError:
        raise
    except FileNotFoundError:
        raise VolumeOpenError(f"{label}: no such file or folder") from None
    except read_errors() as exc:  # nibabel / pydicom refusals, truncated gzip
        raise VolumeOpenError(f"{label}: not a readable NIfTI volume or DICOM series: {exc}") from None


def _series_label(label: str, info: dict[str, Any]) -> str:
    """The volume's name, saying what of the folder was not read: a folder of a whole study holds
    several series and only the largest is shown."""
    notes = []
    if info.get("n_series", 1) > 1:
        notes.append(f"the largest of {info['n_series']} series, {info['n_files']} slices")
    if info.get("ignored"):
        notes.append(f"{info['ignored']} file(s) that are not DICOM images left out")
    return f"{label}: {'; '.join(notes)}" if notes else label


def _dicom_modality(info: dict[str, Any]) -> str | None:
    tag = str(info.get("modality") or "").upper()
    return {"CT": "CT", "MR": "MRI", "PT": "PET"}.get(tag)
