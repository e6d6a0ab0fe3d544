"""Slicing one (image, label) pair of nibabel images into 2-D samples: one per (slice, label value)
where the label covers at least ``min_area`` pixels, every ``every_k``-th such slice per label; CT
windowed, other modalities percentile-normalised over the whole volume."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from medseg_agent.io.intensity import (
    DEFAULT_CT_WINDOW,
    WindowSpec,
    apply_window,
    gray_to_rgb,
    is_ct,
    percentile_range,
    rescale_to_uint8,
)

from ..common import build_sample, canonical_modality, describe_error, describe_target
from ..dataset import Item
from ..sample import SkippedSample
from .errors import read_errors
from .labels import humanize_label
from .orientation import AXES, axis_index, canonical, display_slice, slice_spacing


def _grids_match(a: Any, b: Any) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=0.05)


def _voxels(img: Any, what: str, path: str | None, case_id: str) -> tuple[Any, np.ndarray] | SkippedSample:
    """The image in canonical orientation and its voxels, or the skipped sample saying why they
    could not be read (a file cut short after its header, a corrupt stream, more than memory holds)."""
    try:
        oriented = canonical(img)
        return oriented, np.asanyarray(oriented.dataobj)
    except (*read_errors(), MemoryError) as exc:
        return SkippedSample(case_id, str(path or ""), f"unreadable {what}: {describe_error(exc)}")


def _as_int_labels(arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return arr.astype(np.int64, copy=False)
    return np.rint(np.nan_to_num(arr)).astype(np.int64)


def volume_samples(
    image_img: Any,
    label_img: Any,
    *,
    case_id: str,
    dataset: str,
    modality: str | None = None,
    label_names: Mapping[int, str] | None = None,
    include: list[int] | None = None,
    axis: str | int = "axial",
    every_k: int = 1,
    min_area: int = 1,
    window: WindowSpec | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    site: str | None = None,
    split: str = "test",
    channel: int = 0,
    image_path: str | None = None,
    label_path: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Iterator[Item]:
    """Slice one (image, label) pair of nibabel images into samples (see module docstring)."""
    every_k = max(1, int(every_k))
    ax = axis_index(axis)
    axis_name = [k for k, v in AXES.items() if v == ax][0]
    image_read = _voxels(image_img, "image volume", image_path, case_id)
    label_read = _voxels(label_img, "label volume", label_path, case_id)
    for read in (image_read, label_read):
        if isinstance(read, SkippedSample):
            yield read
            return
    (img_c, data), (lab_c, labels) = image_read, label_read
    if not _grids_match(img_c, lab_c):
        yield SkippedSample(
            case_id,
            str(label_path or ""),
            f"label grid {lab_c.shape[:3]} does not match image grid {img_c.shape[:3]} (or their affines differ)",
        )
        return
    if data.ndim == 4:
        data = data[..., channel]
    elif data.ndim != 3:
        yield SkippedSample(case_id, str(image_path or ""), f"expected a 3-D volume, got shape {data.shape}")
        return
    data = data.astype(np.float32, copy=False)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
    labels = _as_int_labels(labels)
    zooms = tuple(float(z) for z in img_c.header.get_zooms()[:3])
    spacing = slice_spacing(zooms, ax)
    mod = modality
    if mod is None:
        mod = "CT" if data.size and float(np.min(data)) <= -500 else "unknown"
    modality_c, sequence = canonical_modality(mod)
    ct = window is not None or is_ct(modality_c)
    eff_window = window if window is not None else DEFAULT_CT_WINDOW
    lo, hi = (0.0, 1.0) if ct else percentile_range(data, percentiles)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if include is not None:
        values = [v for v in values if v in set(include)]
    if not values:
        yield SkippedSample(case_id, str(label_path or ""), "label volume has no foreground labels")
        return
    lab_moved = np.moveaxis(labels, ax, 0)
    areas = _areas_per_slice(lab_moved, values)
    rows: list[tuple[int, int]] = []  # (slice, value)
    for v in values:
        present = np.nonzero(areas[v] >= max(1, min_area))[0]
        if present.size == 0:
            name = (label_names or {}).get(v, f"label {v}")
            yield SkippedSample(
                f"{case_id}_{v}", str(label_path or ""), f"{name}: no slice reaches min_area={min_area}"
            )
            continue
        rows.extend((int(k), v) for k in present[::every_k])
    rows.sort()
    cache: dict[int, np.ndarray] = {}
    for k, v in rows:
        if k not in cache:
            cache.clear()
            sl = display_slice(data, k, ax)
            gray = apply_window(sl, eff_window) if ct else rescale_to_uint8(sl, lo, hi)
            cache[k] = gray_to_rgb(gray)
        raw_name = (label_names or {}).get(v, f"label {v}")
        target = humanize_label(raw_name)
        mask = display_slice(labels, k, ax) == v
        smeta = {
            "case_id": case_id,
            "axis": axis_name,
            "slice_index": k,
            "label_value": v,
            "label_name": raw_name,
            "target_name": target,
            **({"site": site} if site else {}),
            **({"sequence": sequence} if sequence else {}),
            **({"window": eff_window} if ct else {}),
            **dict(meta or {}),
        }
        yield build_sample(
            sample_id=f"{case_id}_{axis_name}{k:03d}_{target.replace(' ', '+')}",
            image_path=image_path,
            mask_path=label_path,
            target=describe_target(target, modality_c, site),
            modality=modality_c,
            dataset=dataset,
            split=split,
            spacing=spacing,
            meta=smeta,
            image=cache[k],
            mask=mask,
        )


def _areas_per_slice(lab_moved: np.ndarray, values: list[int]) -> dict[int, np.ndarray]:
    """{value: pixel count of that value in each slice along axis 0}."""
    lo, hi = int(lab_moved.min()), int(lab_moved.max())
    if lo >= 0 and hi <= 1_000_000:
        counts = np.stack([np.bincount(sl.ravel(), minlength=hi + 1) for sl in lab_moved])
        return {v: counts[:, v] for v in values}
    return {v: (lab_moved == v).sum(axis=(1, 2)) for v in values}
