"""3-D volumes (NIfTI via nibabel, DICOM series via pydicom) with label volumes, sliced to 2-D.

Every volume is first brought to RAS+ and every slice is shown in the radiological convention
(:mod:`.orientation`). One sample per (slice, label value) where the label covers at least
``min_area`` pixels; with ``every_k`` only every k-th of those slices (per label) is kept
(:mod:`.slicing`). CT is windowed (preset by name or (width, level)), other modalities are
percentile-normalised (0.5–99.5) over the whole volume so all slices share one mapping. Label values
get names from a ``{value: name}`` mapping, a labels text file or ``dataset.json`` (:mod:`.labels`).

Where each job lives: :mod:`.orientation` (RAS+, display slices), :mod:`.dicom` (series reading),
:mod:`.files` (opening an image or label volume of any supported kind), :mod:`.limits` (the voxel
limit, checked before reading), :mod:`.labels` (label names), :mod:`.discovery` (finding image/label
pairs in folders), :mod:`.cases` (one case to samples), :mod:`.slicing` (a volume pair to samples),
:mod:`.readers` (the ``nifti`` / ``dicom`` dataset readers).
"""

from .cases import VolumeCase
from .dicom import looks_like_dicom_dir, read_dicom_series
from .discovery import discover_dicom_cases, discover_nifti_cases, looks_like_nifti_dir
from .errors import VolumeError, read_errors
from .files import NIFTI_SUFFIXES, load_nifti
from .labels import LabelSpec, humanize_label, read_label_names, resolve_label_names
from .limits import MAX_VOXELS_ENV, max_volume_voxels
from .orientation import AXES, axis_index, canonical, display_slice, slice_spacing
from .readers import read_dicom, read_nifti
from .slicing import volume_samples

__all__ = [
    "AXES",
    "MAX_VOXELS_ENV",
    "NIFTI_SUFFIXES",
    "LabelSpec",
    "VolumeCase",
    "VolumeError",
    "read_errors",
    "axis_index",
    "canonical",
    "discover_dicom_cases",
    "discover_nifti_cases",
    "display_slice",
    "humanize_label",
    "load_nifti",
    "looks_like_dicom_dir",
    "looks_like_nifti_dir",
    "max_volume_voxels",
    "read_dicom",
    "read_dicom_series",
    "read_label_names",
    "read_nifti",
    "resolve_label_names",
    "slice_spacing",
    "volume_samples",
]
