"""Opening an image or label volume of any supported kind: NIfTI-like files, a DICOM series folder
(or one of its files), or a ``.npy`` label array in the image's own voxel order."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .dicom import read_dicom_series
from .errors import VolumeError
from .limits import check_voxel_count

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Suffixes nibabel opens through a decompressor: the stored size says nothing about the voxels.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".mgz")


def load_nifti(path: str | Path) -> Any:
    """A nibabel image (data read lazily); a missing file is ``FileNotFoundError``, not nibabel's,
    and a volume over the voxel limit or an uncompressed file shorter than its header says is a
    :class:`VolumeError`."""
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(str(p))
    img = nib.load(str(p))
    check_voxel_count(img.shape, p.name)
    check_stored_size(img)
    return img


def check_stored_size(img: Any) -> None:
    """Refuse an uncompressed volume whose file holds fewer bytes than its header describes.

    nibabel allocates the whole volume the header describes before it reads a byte, so a damaged
    header (or a truncated copy) costs that much memory, or the process, before the read fails.
    """
    from nibabel.arrayproxy import ArrayProxy

    proxy = img.dataobj
    if not isinstance(proxy, ArrayProxy) or not isinstance(proxy.file_like, str):
        return
    data_file = Path(proxy.file_like)
    if data_file.name.lower().endswith(COMPRESSED_SUFFIXES):
        return
    needed = int(proxy.offset) + math.prod(proxy.shape) * np.dtype(proxy.dtype).itemsize
    stored = data_file.stat().st_size
    if stored < needed:
        shape = "x".join(str(side) for side in proxy.shape)
        raise VolumeError(
            f"{data_file.name} holds {stored} bytes, but its header describes a {shape} {np.dtype(proxy.dtype)} "
            f"volume needing {needed}: the file is truncated or its header damaged"
        )


def load_volume(path: Path, *, label: bool) -> tuple[Any, dict]:
    """(nibabel image, info) for a volume file or DICOM folder; label volumes skip the DICOM
    rescale so label values stay integers."""
    if path.is_dir():
        return read_dicom_series(path, rescale=not label)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or name.endswith((".mgz", ".mgh", ".img", ".hdr")):
        return load_nifti(path), {}
    if name.endswith(".dcm"):
        return read_dicom_series(path.parent, rescale=not label)
    raise VolumeError(f"unsupported volume file {path.name}")


def load_label_volume(path: Path, image_img: Any) -> Any:
    """A label volume: NIfTI, a DICOM series folder, or ``.npy`` in the image's own voxel order."""
    import nibabel as nib

    if path.suffix.lower() in (".npy", ".npz"):
        if not path.exists():
            raise FileNotFoundError(str(path))
        arr = np.load(path, mmap_mode="r")  # the shape is checked before the labels are read
        if isinstance(arr, np.lib.npyio.NpzFile):
            arr = arr[arr.files[0]]
        if arr.shape != image_img.shape[:3]:
            raise VolumeError(f"label array shape {arr.shape} differs from image volume {image_img.shape[:3]}")
        return nib.Nifti1Image(np.asarray(arr), image_img.affine)
    img, _ = load_volume(path, label=True)
    return img
