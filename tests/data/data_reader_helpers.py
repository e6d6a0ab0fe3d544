"""Helpers for the data-reader tests: tiny synthetic images, masks and DICOM series.

Plain functions (no conftest: other test folders import their own ``conftest`` by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb_image(h: int = 32, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def box_mask(h: int = 32, w: int = 40, box: tuple[int, int, int, int] = (5, 5, 15, 20)) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    r0, c0, r1, c1 = box
    m[r0:r1, c0:c1] = 255
    return m


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    *,
    spacing: tuple[float, float] = (0.8, 0.7),
    slice_step: float = 2.5,
    intercept: float = -1024.0,
    modality: str = "CT",
    series_uid: str | None = None,
    order: list[int] | None = None,
) -> Path:
    """Write ``volume`` (slices, rows, cols; stored values) as an axial DICOM series, slice k at
    z = -10 + k * slice_step, IOP (1,0,0,0,1,0); files named in ``order`` with InstanceNumbers that
    do NOT follow the geometry, so readers must sort by position."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = volume.shape
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    order = order if order is not None else list(range(n))
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for file_no, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.PatientName = "Synthetic^Test"
        ds.InstanceNumber = n - k  # deliberately reversed
        ds.ImagePositionPatient = [-20.0, -30.0, -10.0 + k * slice_step]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = slice_step
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = 1
        ds.RescaleIntercept = intercept
        ds.PixelData = np.ascontiguousarray(volume[k].astype(np.uint16)).tobytes()
        ds.save_as(folder / f"IM{file_no:04d}", enforce_file_format=True)
    return folder
