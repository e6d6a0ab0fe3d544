"""Orientation: every volume is brought to RAS+ with :func:`nibabel.as_closest_canonical`, and every
slice is then shown in the radiological convention (:func:`display_slice`):

- axial: anterior at the top, the patient's left on the image's right;
- coronal: superior at the top, the patient's left on the image's right;
- sagittal: superior at the top, anterior on the image's left.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import VolumeError

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def axis_index(axis: str | int) -> int:
    if isinstance(axis, int):
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        return axis
    key = axis.strip().lower()
    if key not in AXES:
        raise ValueError(f"unknown axis {axis!r}; use one of {', '.join(AXES)}")
    return AXES[key]


def display_slice(volume: np.ndarray, index: int, axis: str | int = "axial") -> np.ndarray:
    """One slice of a RAS+ volume, oriented for display (see module docstring).

    In RAS+ the remaining two axes (a, b), a < b, both point towards the patient's
    right/anterior/superior; flipping both and transposing puts b (anterior or superior) at the top
    and a (right or anterior) on the image's left, which is the radiological convention.
    """
    ax = axis_index(axis)
    sl = volume[(slice(None),) * ax + (index,)]  # a view (np.take would copy the whole volume)
    return np.ascontiguousarray(sl[::-1, ::-1].T)


def slice_spacing(zooms: tuple[float, ...], axis: str | int = "axial") -> tuple[float, float]:
    """(row, col) pixel spacing of :func:`display_slice` slices from a RAS+ volume's zooms."""
    ax = axis_index(axis)
    a, b = (i for i in range(3) if i != ax)
    return (round(float(zooms[b]), 6), round(float(zooms[a]), 6))  # drop float32 header noise


def canonical(img: Any) -> Any:
    """A nibabel image reoriented to the closest RAS+ orientation; a voxel-to-world matrix that
    cannot orient the voxels (singular, not finite: a damaged header) is a :class:`VolumeError`."""
    import nibabel as nib

    rotation = np.asarray(img.affine, dtype=float)[:3, :3]
    if not np.isfinite(rotation).all() or abs(np.linalg.det(rotation)) < 1e-12:
        matrix = np.array2string(rotation, precision=3, separator=", ").replace("\n", "")
        raise VolumeError(f"the voxel-to-world matrix {matrix} cannot orient the volume: a damaged header")
    return nib.as_closest_canonical(img)
