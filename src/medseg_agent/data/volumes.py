"""3-D volumes (NIfTI via nibabel, DICOM series via pydicom) with label volumes, sliced to 2-D.

Every volume is first brought to RAS+ with :func:`nibabel.as_closest_canonical` and every slice is
then shown in the radiological convention (:func:`display_slice`):

- axial: anterior at the top, the patient's left on the image's right;
- coronal: superior at the top, the patient's left on the image's right;
- sagittal: superior at the top, anterior on the image's left.

One sample per (slice, label value) where the label covers at least ``min_area`` pixels; with
``every_k`` only every k-th of those slices (per label) is kept. CT is windowed (preset by name or
(width, level)), other modalities are percentile-normalised (0.5–99.5) over the whole volume so
all slices share one mapping. Label values get names from a ``{value: name}`` mapping, a labels
text file (``37 Hippocampus_L ...``, ITK-SNAP ``"name"`` lines, ``1: liver``) or ``dataset.json``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common import _describe_error, build_sample, canonical_modality, describe_target
from .dataset import Dataset, Item
from .intensity import (
    DEFAULT_CT_WINDOW,
    WindowSpec,
    apply_window,
    gray_to_rgb,
    is_ct,
    percentile_range,
    rescale_to_uint8,
)
from .sample import SkippedSample

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "_gt", "_segmentation", "-label", "-seg")
_DICOM_MODALITY = {"MR": "MRI", "CT": "CT", "PT": "PET", "US": "Ultrasound", "CR": "X-Ray", "DX": "X-Ray"}

LabelSpec = Mapping[int, str] | Mapping[str, str] | str | Path | None


class VolumeError(ValueError):
    """A volume or label volume that cannot be used (reported as a skipped case)."""


# ------------------------------------------------------------------------------------ orientation


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
    """A nibabel image reoriented to the closest RAS+ orientation."""
    import nibabel as nib

    return nib.as_closest_canonical(img)


# ------------------------------------------------------------------------------------ loading


def load_nifti(path: str | Path) -> Any:
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(str(p))
    return nib.load(str(p))


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
        except Exception:
            ignored += 1
            continue
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((p, ds))
    if not series:
        raise VolumeError(f"no DICOM images in {root}")
    if series_uid is not None:
        if series_uid not in series:
            raise VolumeError(f"series {series_uid} not found in {root}")
        items = series[series_uid]
    else:
        series_uid, items = max(series.items(), key=lambda kv: len(kv[1]))
    first = items[0][1]
    iop = getattr(first, "ImageOrientationPatient", None)
    has_geometry = iop is not None and all(getattr(d, "ImagePositionPatient", None) is not None for _, d in items)
    if has_geometry:
        row_cos = np.array([float(v) for v in iop[:3]])
        col_cos = np.array([float(v) for v in iop[3:6]])
        normal = np.cross(row_cos, col_cos)
        items.sort(key=lambda it: float(np.dot(normal, [float(v) for v in it[1].ImagePositionPatient])))
        positions = np.array([[float(v) for v in d.ImagePositionPatient] for _, d in items])
        if len(items) > 1 and np.min(np.diff(positions @ normal)) < 1e-4:
            raise VolumeError(f"DICOM series in {root} has several slices at the same position")
    else:
        row_cos, col_cos, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        items.sort(key=lambda it: (int(getattr(it[1], "InstanceNumber", 0) or 0), it[0].name))
        positions = np.array([[0.0, 0.0, float(i)] for i in range(len(items))])
    slices = []
    for p, _ in items:
        ds = pydicom.dcmread(str(p))
        arr = ds.pixel_array
        if arr.ndim != 2:
            raise VolumeError(f"{p}: multi-frame or colour DICOM is not supported (shape {arr.shape})")
        arr = arr.astype(np.float32)
        if rescale:
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
            arr = arr * slope + intercept
        slices.append(arr)
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise VolumeError(f"DICOM series in {root} mixes slice sizes {sorted(shapes)}")
    stack = np.stack(slices)  # (n, rows, cols)
    data = np.transpose(stack, (2, 1, 0))  # (cols, rows, n): i along a row, j down a column
    ps = getattr(first, "PixelSpacing", None) or [1.0, 1.0]
    row_spacing, col_spacing = float(ps[0]), float(ps[1])
    if len(items) > 1:
        step = (positions[-1] - positions[0]) / (len(items) - 1)
    else:
        step = normal * float(getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", 1) or 1)
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


def _load_any(path: Path, *, label: bool) -> tuple[Any, dict]:
    if path.is_dir():
        return read_dicom_series(path, rescale=not label)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES) or name.endswith((".mgz", ".mgh", ".img", ".hdr")):
        return load_nifti(path), {}
    if name.endswith(".dcm"):
        return read_dicom_series(path.parent, rescale=not label)
    raise VolumeError(f"unsupported volume file {path.name}")


# ------------------------------------------------------------------------------------ label names


def humanize_label(name: str) -> str:
    """``Hippocampus_L`` -> ``left hippocampus``; ``Left-Lateral-Ventricle`` -> ``left lateral
    ventricle``; ``right kidney`` stays; all-caps acronyms (``IVC``) keep their case."""
    tokens = [t for t in re.split(r"[_\-\s]+", name.strip()) if t]
    if not tokens:
        return name
    side = None
    if tokens[-1] in ("L", "R", "l", "r") and len(tokens) > 1:
        side = "left" if tokens.pop().lower() == "l" else "right"
    words = [t if (t.isupper() and len(t) > 1) else t.lower() for t in tokens]
    if side and words[0] not in ("left", "right"):
        words.insert(0, side)
    return " ".join(words)


def read_label_names(path: str | Path) -> dict[int, str]:
    """Parse a labels file: ``37 Hippocampus_L 4101`` (AAL), ``1: liver``, ``1,liver``, ITK-SNAP
    lines with a quoted name, or JSON (``{"1": "liver"}``, ``{"liver": 1}`` or a dataset.json)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "labels" in data:
            data = data["labels"]
        return _labels_from_mapping(data)
    out: dict[int, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\d+)\s*[:,=\t ]\s*(.+)$", line)
        if not m:
            continue
        value, rest = int(m.group(1)), m.group(2).strip()
        quoted = re.search(r'"([^"]*)"', rest)
        if quoted:
            name = quoted.group(1)
        else:
            parts = rest.split()
            while len(parts) > 1 and re.fullmatch(r"-?\d+(\.\d+)?", parts[-1]):
                parts.pop()
            name = " ".join(parts)
        if name:
            out[value] = name
    return out


def _labels_from_mapping(data: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    if not isinstance(data, Mapping):
        raise ValueError("label mapping must be a dict")
    for k, v in data.items():
        if isinstance(v, int | float) and not isinstance(v, bool):  # nnU-Net v2: {"liver": 1}
            out[int(v)] = str(k)
        elif isinstance(v, list | tuple) and v and isinstance(v[0], int):  # region-based: first value
            out[int(v[0])] = str(k)
        else:
            out[int(k)] = str(v)
    return out


def resolve_label_names(labels: LabelSpec) -> dict[int, str] | None:
    if labels is None:
        return None
    if isinstance(labels, str | Path):
        return read_label_names(labels)
    return _labels_from_mapping(labels)


def _find_label_names_file(label_path: Path) -> Path | None:
    base = label_path.name
    for ext in (".nii.gz", ".nii", ".mgz"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    folder = label_path.parent if label_path.is_file() or not label_path.exists() else label_path
    for cand in (
        f"{label_path.name}.txt",
        f"{base}.nii.txt",
        f"{base}.txt",
        f"{base}.json",
        "labels.txt",
        "labels.json",
    ):
        q = folder / cand
        if q.is_file() and q != label_path:
            return q
    return None


# ------------------------------------------------------------------------------------ slicing


@dataclass
class VolumeCase:
    """One image volume and its label volume."""

    case_id: str
    image: Path
    label: Path
    split: str = "test"
    label_names: dict[int, str] | None = None
    modality: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _grids_match(a: Any, b: Any) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=0.05)


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
    img_c, lab_c = canonical(image_img), canonical(label_img)
    if not _grids_match(img_c, lab_c):
        yield SkippedSample(
            case_id,
            str(label_path or ""),
            f"label grid {lab_c.shape[:3]} does not match image grid {img_c.shape[:3]} (or their affines differ)",
        )
        return
    data = np.asanyarray(img_c.dataobj)
    if data.ndim == 4:
        data = data[..., channel]
    elif data.ndim != 3:
        yield SkippedSample(case_id, str(image_path or ""), f"expected a 3-D volume, got shape {data.shape}")
        return
    data = data.astype(np.float32, copy=False)
    labels = np.asanyarray(lab_c.dataobj)
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


def _case_samples(case: VolumeCase, dataset: str, options: dict[str, Any]) -> Iterator[Item]:
    try:
        image_img, image_info = _load_any(case.image, label=False)
    except FileNotFoundError:
        yield SkippedSample(case.case_id, str(case.image), "image volume not found")
        return
    except Exception as exc:
        yield SkippedSample(case.case_id, str(case.image), f"unreadable image volume: {_describe_error(exc)}")
        return
    try:
        label_img = _load_label(case.label, image_img)
    except FileNotFoundError:
        yield SkippedSample(case.case_id, str(case.label), "label volume not found")
        return
    except Exception as exc:
        yield SkippedSample(case.case_id, str(case.label), f"unreadable label volume: {_describe_error(exc)}")
        return
    modality = options.get("modality") or case.modality
    if modality is None and image_info.get("modality"):
        modality = _DICOM_MODALITY.get(image_info["modality"], image_info["modality"])
    names = options.get("label_names") or case.label_names
    if names is None and case.label.exists():
        names_file = _find_label_names_file(case.label)
        if names_file is not None:
            try:
                names = read_label_names(names_file)
            except Exception as exc:
                yield SkippedSample(case.case_id, str(names_file), f"unreadable labels file: {_describe_error(exc)}")
    meta = dict(case.meta)
    if image_info.get("series_uid"):
        meta["series_uid"] = image_info["series_uid"]
    yield from volume_samples(
        image_img,
        label_img,
        case_id=case.case_id,
        dataset=dataset,
        modality=modality,
        label_names=names,
        include=options.get("include"),
        axis=options.get("axis", "axial"),
        every_k=options.get("every_k", 1),
        min_area=options.get("min_area", 1),
        window=options.get("window"),
        site=options.get("site"),
        split=case.split,
        channel=options.get("channel", 0),
        image_path=str(case.image),
        label_path=str(case.label),
        meta=meta,
    )


def _load_label(path: Path, image_img: Any) -> Any:
    """A label volume: NIfTI, a DICOM series folder, or ``.npy`` in the image's own voxel order."""
    import nibabel as nib

    if path.suffix.lower() in (".npy", ".npz"):
        if not path.exists():
            raise FileNotFoundError(str(path))
        arr = np.load(path)
        if isinstance(arr, np.lib.npyio.NpzFile):
            arr = arr[arr.files[0]]
        if arr.shape != image_img.shape[:3]:
            raise VolumeError(f"label array shape {arr.shape} differs from image volume {image_img.shape[:3]}")
        return nib.Nifti1Image(np.asarray(arr), image_img.affine)
    img, _ = _load_any(path, label=True)
    return img


# ------------------------------------------------------------------------------------ discovery


def _strip_nifti(name: str) -> str:
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
    labels = {_strip_nifti(p.name): p for p in sorted(label_dir.iterdir()) if _is_nifti(p)}
    cases = []
    seen = set()
    for p in sorted(image_dir.iterdir()):
        if not _is_nifti(p):
            continue
        stem = _strip_nifti(p.name)
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
            meta = json.loads(ds_json.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
        if isinstance(meta, dict) and "labels" in meta:
            with contextlib.suppress(ValueError, TypeError):
                info["label_names"] = _labels_from_mapping(meta["labels"])
            mods = meta.get("modality") or meta.get("channel_names") or {}
            if isinstance(mods, dict) and mods:
                info["modality"] = str(mods.get("0", next(iter(mods.values()))))
            if isinstance(meta.get("name"), str):
                info["name"] = meta["name"]
            if isinstance(meta.get("training"), list) and meta["training"] and isinstance(meta["training"][0], dict):
                cases = []
                for entry in meta["training"]:
                    img, lab = entry.get("image"), entry.get("label")
                    if not img or not lab:
                        continue
                    cases.append(VolumeCase(_strip_nifti(Path(img).name), root / img, root / lab, "train"))
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
    files = {_strip_nifti(p.name): p for p in sorted(root.iterdir()) if _is_nifti(p)}
    for stem in files:
        for suf in _LABEL_SUFFIXES:
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


def _find_sibling_label(image: Path) -> Path | None:
    stem = _strip_nifti(image.name)
    for suf in _LABEL_SUFFIXES:
        for ext in (".nii.gz", ".nii"):
            cand = image.with_name(stem + suf + ext)
            if cand.is_file():
                return cand
    return None


def _volume_dataset(
    cases: list[VolumeCase], name: str, source: str, fmt: str, split: str | None, options: dict[str, Any]
) -> Dataset:
    chosen = [c for c in cases if split is None or c.split == split]

    def produce() -> Iterator[Item]:
        for case in chosen:
            yield from _case_samples(case, name, options)

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
    axis_index(axis)  # validate early
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
    lab = Path(label) if label is not None else _find_sibling_label(root)
    if lab is None:
        raise ValueError(
            f"no label volume for {root}: pass label=... (or name it {_strip_nifti(root.name)}_seg.nii.gz)"
        )
    case = VolumeCase(_strip_nifti(root.name), root, lab, case_split)
    dname = name or root.resolve().parent.name
    return _volume_dataset([case], dname, str(root), "nifti", split, opts)


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
